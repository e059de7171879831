//! The control socket `sitectl` talks to: a Unix stream socket, one JSON request per line and
//! one response line back (`ctl/proto`). Anyone who can connect may observe; operating needs
//! root, sited's own user or the operator group, checked with SO_PEERCRED on every request.
//! Bad requests get a one-line error; oversized or undecodable ones also close the connection.

use crate::conn_io;
use crate::event_loop::Tok;
use crate::rate_limit::RateLimit;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry};
use site_proto::{ErrorKind, FrameError, LineBuffer, Request, Response};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// More simultaneous `sitectl`s than this are turned away.
pub const MAX_CONNECTIONS: usize = 64;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// A request ready to be carried out, with who asked.
#[derive(Debug)]
pub struct Incoming {
    pub conn: usize,
    /// Tells this connection from a later one in the same slot (for answers that come later).
    pub generation: u64,
    pub peer: Peer,
    pub request: Request,
}

struct Conn {
    stream: UnixStream,
    generation: u64,
    peer: Peer,
    input: LineBuffer,
    output: Vec<u8>,
    /// Close once the output is flushed (after a framing error).
    closing: bool,
    writable_registered: bool,
    /// `sitectl log -f`: new event-log lines are pushed to it.
    following: bool,
    /// After an oversized request: the error is sent, our side shut down, and the rest of the
    /// peer's input read and dropped until it closes. Closing with unread input would make the
    /// kernel reset the connection and the peer might never see the error.
    discarding: Option<usize>,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Option<Conn>>,
    operator_gid: Option<u32>,
    /// Bad requests are logged, but a local user must not be able to flood the journal.
    log_limit: RateLimit,
    next_generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control socket {path}: {what}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("control socket {path} exists and is not a socket; refusing to remove it", path = path.display())]
    NotASocket { path: PathBuf },
    #[error("control socket {path} is in use: another sited is running", path = path.display())]
    InUse { path: PathBuf },
    #[error("operator-group \"{0}\" does not exist")]
    NoSuchGroup(String),
}

/// Resolves the operator group's gid.
pub fn operator_gid(group: Option<&str>) -> Result<Option<u32>, Error> {
    match group {
        None => Ok(None),
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
            _ => Err(Error::NoSuchGroup(name.to_string())),
        },
    }
}

impl ControlServer {
    /// Creates the socket safely: a stale socket is removed only if it is a socket nobody
    /// listens on; the file is created mode 0660 (group: the operator group, if any).
    pub fn bind(
        path: &Path,
        operator_gid: Option<u32>,
        registry: &Registry,
    ) -> Result<Self, Error> {
        let io_err = |what, source| Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|e| io_err("creating its directory", e))?;
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(Error::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(|e| io_err("removing the stale socket", e))?;
            }
            Ok(_) => {
                return Err(Error::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("checking the path", e)),
        }
        // Bind with a umask that leaves at most rw-rw----, so the socket is never briefly open
        // to everyone between bind and chmod.
        // SAFETY: umask only swaps the process mask; we restore it right after.
        let old = unsafe { libc::umask(0o117) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let mut listener = bound.map_err(|e| io_err("binding", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| io_err("setting its mode", e))?;
        if let Some(gid) = operator_gid
            && let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        {
            log::warn!("control socket: could not give it to the operator group (gid {gid}): {e}");
        }
        registry
            .register(
                &mut listener,
                Tok::ControlListener.into(),
                Interest::READABLE,
            )
            .map_err(|e| io_err("registering", e))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: Vec::new(),
            operator_gid,
            log_limit: RateLimit::new(10, std::time::Duration::from_secs(60)),
            next_generation: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_operator_gid(&mut self, gid: Option<u32>) {
        self.operator_gid = gid;
    }

    /// Accepts every pending connection.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(peer) = peer_of(&stream) else {
                        log::warn!(
                            "control: could not read the peer's credentials; connection closed"
                        );
                        continue;
                    };
                    let free = self.conns.iter().position(Option::is_none);
                    let live = self.conns.iter().filter(|c| c.is_some()).count();
                    if live >= MAX_CONNECTIONS {
                        let _ = stream.write_all(&site_proto::encode(&Response::err(
                            ErrorKind::Failed,
                            "too many control connections; try again",
                        )));
                        continue;
                    }
                    let index = free.unwrap_or(self.conns.len());
                    if let Err(e) = registry.register(
                        &mut stream,
                        Tok::ControlConn(index).into(),
                        Interest::READABLE,
                    ) {
                        log::warn!("control: could not register a connection: {e}");
                        continue;
                    }
                    let conn = Conn {
                        stream,
                        peer,
                        input: LineBuffer::new(),
                        output: Vec::new(),
                        closing: false,
                        writable_registered: false,
                        following: false,
                        generation: {
                            self.next_generation += 1;
                            self.next_generation
                        },
                        discarding: None,
                    };
                    if index == self.conns.len() {
                        self.conns.push(Some(conn));
                    } else {
                        self.conns[index] = Some(conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what connection `index` sent; returns the complete requests. Requests that need
    /// an operator from someone who is not one are answered here with `denied`.
    pub fn readable(&mut self, index: usize, registry: &Registry) -> Vec<Incoming> {
        let mut out = Vec::new();
        let operator_gid = self.operator_gid;
        let log_limit = &mut self.log_limit;
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return out;
        };
        let mut eof = false;
        let mut chunk = [0u8; 4096];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if let Some(dropped) = conn.discarding.as_mut() {
                        *dropped += n;
                        if *dropped > conn_io::DISCARD_LIMIT_BYTES {
                            eof = true;
                            break;
                        }
                        continue;
                    }
                    conn.input.extend(&chunk[..n]);
                    if conn.input.pending() > site_proto::MAX_LINE_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        while !conn.closing {
            match conn.input.next_line() {
                Ok(Some(line)) => match site_proto::decode_request(&line) {
                    Ok(request) => {
                        if request.operates() && !may_operate(conn.peer, operator_gid) {
                            crate::warn_limited!(
                                log_limit,
                                "control: uid {} (pid {}) may not operate; refused {:?}",
                                conn.peer.uid,
                                conn.peer.pid,
                                request
                            );
                            queue(
                                conn,
                                &Response::err(ErrorKind::Denied, denied_message(operator_gid)),
                            );
                        } else {
                            out.push(Incoming {
                                conn: index,
                                generation: conn.generation,
                                peer: conn.peer,
                                request,
                            });
                        }
                    }
                    Err(reason) => {
                        crate::warn_limited!(
                            log_limit,
                            "control: bad request from uid {}: {reason}",
                            conn.peer.uid
                        );
                        queue(conn, &Response::err(ErrorKind::BadRequest, reason));
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let reason = match e {
                        FrameError::TooLong => {
                            format!("request longer than {} bytes", site_proto::MAX_LINE_BYTES)
                        }
                        FrameError::NotUtf8 => "request is not UTF-8".to_string(),
                    };
                    crate::warn_limited!(
                        log_limit,
                        "control: closing a connection from uid {}: {reason}",
                        conn.peer.uid
                    );
                    queue(conn, &Response::err(ErrorKind::BadRequest, reason));
                    conn.closing = true;
                    conn.discarding = Some(0);
                    conn.input = LineBuffer::new();
                }
            }
        }
        // Reading stopped at the size limit; drop the rest of what is already there.
        if !eof
            && let Some(dropped) = conn.discarding.as_mut()
            && conn_io::discard_available(&mut conn.stream, dropped, conn_io::DISCARD_LIMIT_BYTES)
        {
            eof = true;
        }
        if eof {
            conn.discarding = None;
            conn.closing = true;
        }
        self.flush(index, registry);
        out
    }

    /// Queues the response to a request and sends what can be sent now.
    /// Answers a request that completed later (`sitectl send`), if its connection is still
    /// the one that asked.
    pub fn respond_later(
        &mut self,
        index: usize,
        generation: u64,
        response: &Response,
        registry: &Registry,
    ) {
        if matches!(self.conns.get(index), Some(Some(c)) if c.generation == generation) {
            self.respond(index, response, registry);
        }
    }

    pub fn respond(&mut self, index: usize, response: &Response, registry: &Registry) {
        if let Some(Some(conn)) = self.conns.get_mut(index) {
            queue(conn, response);
        }
        self.flush(index, registry);
    }

    /// Writes pending output; closes the connection when it is done and closing.
    pub fn flush(&mut self, index: usize, registry: &Registry) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        let failed = conn_io::write_pending(&mut conn.stream, &mut conn.output).is_err();
        if conn.closing && conn.output.is_empty() && conn.discarding.is_some() {
            // Said our piece; wait for the peer to finish and close (see `discarding`).
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        let done = failed || (conn.closing && conn.output.is_empty() && conn.discarding.is_none());
        if done {
            self.close(index, registry);
            return;
        }
        let token = Tok::ControlConn(index).into();
        conn_io::want_writable(
            registry,
            &mut conn.stream,
            token,
            !conn.output.is_empty(),
            &mut conn.writable_registered,
        );
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(slot) = self.conns.get_mut(index)
            && let Some(mut conn) = slot.take()
        {
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Marks a connection as following the event log.
    pub fn follow(&mut self, index: usize) {
        if let Some(Some(conn)) = self.conns.get_mut(index) {
            conn.following = true;
        }
    }

    /// Sends `response` to every connection following the event log.
    pub fn broadcast(&mut self, response: &Response, registry: &Registry) {
        for index in 0..self.conns.len() {
            let following = matches!(&self.conns[index], Some(c) if c.following);
            if following {
                self.respond(index, response, registry);
            }
        }
    }

    /// Removes the socket file at stop.
    pub fn remove_socket(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.file_type().is_socket()
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn queue(conn: &mut Conn, response: &Response) {
    conn.output.extend_from_slice(&site_proto::encode(response));
}

fn denied_message(operator_gid: Option<u32>) -> String {
    match operator_gid {
        Some(gid) => {
            let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_else(|| gid.to_string());
            format!("permission denied: operating sited needs root, the sited user or the \"{name}\" group")
        }
        None => "permission denied: operating sited needs root or the sited user (no operator-group is configured)".into(),
    }
}

fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let cred =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// Root, sited's own user, or a member of the operator group (primary or supplementary).
pub fn may_operate(peer: Peer, operator_gid: Option<u32>) -> bool {
    if peer.uid == 0 || peer.uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Some(gid) = operator_gid else {
        return false;
    };
    if peer.gid == gid {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|groups| groups.iter().any(|g| g.as_raw() == gid))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_own_user_may_operate_others_not_without_group() {
        let me = nix::unistd::geteuid().as_raw();
        assert!(may_operate(
            Peer {
                uid: 0,
                gid: 0,
                pid: 1
            },
            None
        ));
        assert!(may_operate(
            Peer {
                uid: me,
                gid: 0,
                pid: 1
            },
            None
        ));
        assert!(!may_operate(
            Peer {
                uid: 4242,
                gid: 4242,
                pid: 1
            },
            None
        ));
    }

    #[test]
    fn primary_group_member_may_operate() {
        assert!(may_operate(
            Peer {
                uid: 4242,
                gid: 777,
                pid: 1
            },
            Some(777)
        ));
        assert!(!may_operate(
            Peer {
                uid: 4242,
                gid: 778,
                pid: 1
            },
            Some(777)
        ));
    }

    #[test]
    fn bind_refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"precious").expect("write");
        let poll = mio::Poll::new().expect("poll");
        let err = ControlServer::bind(&path, None, poll.registry())
            .err()
            .expect("must refuse");
        assert!(matches!(err, Error::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_sets_mode_0660() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        let poll = mio::Poll::new().expect("poll");
        let server = ControlServer::bind(&path, None, poll.registry()).expect("bind");
        let mode = std::fs::metadata(server.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[test]
    fn bind_refuses_a_socket_someone_listens_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).expect("live");
        let poll = mio::Poll::new().expect("poll");
        let err = ControlServer::bind(&path, None, poll.registry())
            .err()
            .expect("must refuse");
        assert!(matches!(err, Error::InUse { .. }), "{err}");
    }
}
