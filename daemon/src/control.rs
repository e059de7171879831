//! The control socket `sitectl` talks to: a Unix stream socket, one JSON request per line and
//! one response line back (`ctl/proto`). Anyone who can connect may observe; operating needs
//! root, sited's own user or the operator group (the peer's groups come from SO_PEERGROUPS,
//! so a supplementary group given to the process counts), checked on every request.
//! Bad requests get a one-line error; oversized or undecodable ones also close the connection.
//!
//! A local user must not be able to exhaust it: connections are limited per uid (root and
//! sited's own user have room of their own, so an observer cannot lock out an operator), a
//! connection takes its next request only once the answer to the last has gone out (a client
//! that never reads holds at most one answer, and one over [`MAX_QUEUED_OUTPUT_BYTES`] is
//! closed), and a request left half-sent for [`REQUEST_TIMEOUT`] closes its connection.

use crate::conn_io::{Chunk, Flushed, LineConn, Overlong, TokenRange};
use crate::rate_limit::RateLimit;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use site_proto::{ErrorKind, Request, Response};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connections in all (the token range is sized for it).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one ordinary uid may hold (observers, operator-group members).
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Connections root and sited's own user may hold each; ordinary users together never take
/// the room these need.
pub const MAX_CONNECTIONS_PRIVILEGED: usize = 64;
/// Answers queued for one connection beyond this close it: it is not reading (a `log -f`
/// that stopped, say). One answer is always allowed in full (`status` on a big hub).
pub const MAX_QUEUED_OUTPUT_BYTES: usize = site_proto::MAX_RESPONSE_BYTES;
/// A connection takes no new request while more than this waits to go out.
const BACKPRESSURE_BYTES: usize = 64 * 1024;
/// A request started but not finished within this long closes its connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests taken from one connection per wake-up before the other sources get a turn.
pub const REQUESTS_PER_WAKEUP: usize = 16;

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups of the peer process (SO_PEERGROUPS), when the kernel says.
    pub groups: Option<Vec<u32>>,
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
    /// The socket, its framing and its output (`conn_io`).
    io: LineConn<UnixStream>,
    generation: u64,
    peer: Peer,
    /// Reading stopped at the input limit with more in the socket: read again once lines
    /// are taken (edge-triggered: no new event will say so).
    unread: bool,
    /// Since when a request has been half there.
    partial_since: Option<Instant>,
    /// A request waits behind answers that have not gone out (backpressure); the loop is told
    /// when they have.
    held: bool,
    /// `sitectl log -f`: new event-log lines are pushed to it.
    following: bool,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The connections, each in the slot its token names.
    conns: Slab<Conn>,
    tokens: TokenRange,
    per_uid: HashMap<u32, usize>,
    /// Connections whose held requests may be taken now (see `Conn::held`).
    resumed: Vec<usize>,
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

/// Root and sited's own user.
fn privileged(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

impl ControlServer {
    /// Creates the socket safely: a stale socket is removed only if it is a socket nobody
    /// listens on; the file is created mode 0660 (group: the operator group, if any). The
    /// listener is registered as `listener`, connections in `conns` (at least
    /// [`MAX_CONNECTIONS`] tokens).
    pub fn bind(
        path: &Path,
        operator_gid: Option<u32>,
        registry: &Registry,
        listener_token: Token,
        conns: TokenRange,
    ) -> Result<Self, Error> {
        assert!(conns.len >= MAX_CONNECTIONS, "too few control tokens");
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
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let mut listener = bound.map_err(|e| io_err("binding", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| io_err("setting its mode", e))?;
        if let Some(gid) = operator_gid
            && let Err(e) = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        {
            log::warn!("control socket: could not give it to the operator group (gid {gid}): {e}");
        }
        registry
            .register(&mut listener, listener_token, Interest::READABLE)
            .map_err(|e| io_err("registering", e))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: Slab::with_capacity(MAX_CONNECTIONS),
            tokens: conns,
            per_uid: HashMap::new(),
            resumed: Vec::new(),
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

    /// Accepts pending connections (a bounded number per wake-up); true if more may wait.
    pub fn accept(&mut self, registry: &Registry) -> bool {
        for _ in 0..MAX_CONNECTIONS {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(peer) = peer_of(&stream) else {
                        crate::warn_limited!(
                            self.log_limit,
                            "control: could not read the peer's credentials; connection closed"
                        );
                        continue;
                    };
                    if let Err(reason) = self.room_for(peer.uid) {
                        crate::warn_limited!(
                            self.log_limit,
                            "control: turned away uid {} (pid {}): {reason}",
                            peer.uid,
                            peer.pid
                        );
                        let _ = stream.write_all(&site_proto::encode(&Response::err(
                            ErrorKind::Failed,
                            reason,
                        )));
                        continue;
                    }
                    // `room_for` keeps the table within MAX_CONNECTIONS, so the slot is in range.
                    let slot = self.conns.vacant_entry();
                    let token = self.tokens.token(slot.key());
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        log::warn!("control: could not register a connection: {e}");
                        continue;
                    }
                    *self.per_uid.entry(peer.uid).or_default() += 1;
                    self.next_generation += 1;
                    slot.insert(Conn {
                        // A request is at most MAX_LINE_BYTES with its newline.
                        io: LineConn::new(
                            stream,
                            token,
                            site_proto::MAX_LINE_BYTES - 1,
                            BACKPRESSURE_BYTES,
                            false,
                        ),
                        peer,
                        unread: false,
                        partial_since: None,
                        held: false,
                        following: false,
                        generation: self.next_generation,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn_limited!(self.log_limit, "control: accept failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// May `uid` open one more connection? `Err` says why not.
    fn room_for(&self, uid: u32) -> Result<(), String> {
        let live = self.conns.len();
        let mine = self.per_uid.get(&uid).copied().unwrap_or(0);
        let ordinary: usize = self
            .per_uid
            .iter()
            .filter(|(u, _)| !privileged(**u))
            .map(|(_, n)| n)
            .sum();
        let (cap, reserved) = if privileged(uid) {
            (MAX_CONNECTIONS_PRIVILEGED, 0)
        } else {
            (MAX_CONNECTIONS_PER_UID, 2 * MAX_CONNECTIONS_PRIVILEGED)
        };
        if mine >= cap {
            return Err(format!(
                "too many control connections from uid {uid} (at most {cap}); close some and try again"
            ));
        }
        if live >= MAX_CONNECTIONS || (!privileged(uid) && ordinary >= MAX_CONNECTIONS - reserved) {
            return Err("too many control connections; try again".into());
        }
        Ok(())
    }

    /// Reads what connection `index` sent, up to the input limit. Call [`Self::next_request`]
    /// after it for the requests.
    pub fn readable(&mut self, index: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        fill(conn);
        self.flush(index, registry);
    }

    /// The connection's next complete request, if it may take one now: not while an earlier
    /// answer waits to go out (backpressure). Bad requests and refusals are answered here.
    pub fn next_request(&mut self, index: usize, registry: &Registry) -> Option<Incoming> {
        let operator_gid = self.operator_gid;
        let log_limit = &mut self.log_limit;
        let conn = self.conns.get_mut(index)?;
        let mut found = None;
        while !conn.io.is_closing() && !conn.io.backed_up(0) {
            let framed = match conn.io.next_line() {
                Some(framed) => framed,
                None if conn.io.overflowed() => Err(Overlong),
                None if conn.unread => {
                    // The limit stopped reading; there is room again.
                    fill(conn);
                    continue;
                }
                None => {
                    if conn.io.peer_closed() {
                        conn.io.close_when_drained();
                    }
                    break;
                }
            };
            let line = match framed.map(String::from_utf8) {
                Ok(Ok(line)) => Ok(line),
                Ok(Err(_)) => Err("request is not UTF-8".to_string()),
                Err(Overlong) => Err(format!(
                    "request longer than {} bytes",
                    site_proto::MAX_LINE_BYTES
                )),
            };
            let line = match line {
                Ok(line) => line,
                Err(reason) => {
                    crate::warn_limited!(
                        log_limit,
                        "control: closing a connection from uid {}: {reason}",
                        conn.peer.uid
                    );
                    queue(conn, &Response::err(ErrorKind::BadRequest, reason));
                    // Drop what is already there, and the rest as it comes.
                    conn.unread = false;
                    conn.io.discard_input();
                    break;
                }
            };
            match site_proto::decode_request(&line) {
                Ok(request) => {
                    if request.operates() && !may_operate(&conn.peer, operator_gid) {
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
                        continue;
                    }
                    found = Some(Incoming {
                        conn: index,
                        generation: conn.generation,
                        peer: conn.peer.clone(),
                        request,
                    });
                    break;
                }
                Err(reason) => {
                    crate::warn_limited!(
                        log_limit,
                        "control: bad request from uid {}: {}",
                        conn.peer.uid,
                        crate::rate_limit::escape(&reason)
                    );
                    queue(conn, &Response::err(ErrorKind::BadRequest, reason));
                }
            }
        }
        // Only a request that is not all there yet is "half-sent"; whole ones held back by
        // backpressure are the daemon's to answer.
        let half_sent = conn.io.pending() > 0 && !conn.io.has_line() && !conn.unread;
        conn.partial_since = match (half_sent, conn.partial_since) {
            (false, _) => None,
            (true, Some(at)) => Some(at),
            (true, None) => Some(Instant::now()),
        };
        if found.is_none() && !conn.io.is_closing() && conn.io.backed_up(0) {
            conn.held = conn.unread || conn.io.has_line();
        }
        self.flush(index, registry);
        found
    }

    /// Connections whose held requests may be taken now: edge-triggered, nothing else would
    /// bring the loop back to them.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resumed)
    }

    /// Does the connection hold a complete request it could not take yet (the per-wake-up
    /// budget ran out)? Then the loop comes back for it.
    pub fn has_request_waiting(&self, index: usize) -> bool {
        matches!(self.conns.get(index), Some(c)
            if !c.io.is_closing() && !c.io.backed_up(0) && (c.unread || c.io.has_line()))
    }

    /// Closes connections whose request has been half-sent for [`REQUEST_TIMEOUT`]; returns
    /// when the next one is due, if any request is half there.
    pub fn expire_partial(&mut self, registry: &Registry) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let half_sent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.partial_since.is_some())
            .map(|(index, _)| index)
            .collect();
        for index in half_sent {
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            let Some(since) = conn.partial_since else {
                continue;
            };
            let due = since + REQUEST_TIMEOUT;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            crate::warn_limited!(
                self.log_limit,
                "control: closing a connection from uid {}: request not finished within {} s",
                conn.peer.uid,
                REQUEST_TIMEOUT.as_secs()
            );
            queue(
                conn,
                &Response::err(
                    ErrorKind::BadRequest,
                    format!(
                        "request not finished within {} s; closing",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                ),
            );
            conn.partial_since = None;
            conn.io.drop_input();
            self.flush(index, registry);
        }
        next
    }

    /// When the earliest half-sent request times out, if any.
    pub fn next_partial_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|(_, c)| c.partial_since)
            .min()
            .map(|at| at + REQUEST_TIMEOUT)
    }

    /// Answers a request that completed later (`sitectl send`), if its connection is still
    /// the one that asked.
    pub fn respond_later(
        &mut self,
        index: usize,
        generation: u64,
        response: &Response,
        registry: &Registry,
    ) {
        if matches!(self.conns.get(index), Some(c) if c.generation == generation) {
            self.respond(index, response, registry);
        }
    }

    /// Queues the response to a request and sends what can be sent now.
    pub fn respond(&mut self, index: usize, response: &Response, registry: &Registry) {
        self.respond_line(index, &site_proto::encode(response), registry);
    }

    /// Queues an encoded response line (see `site_proto::encode_ok`) and sends what can be
    /// sent now.
    pub fn respond_line(&mut self, index: usize, line: &[u8], registry: &Registry) {
        if let Some(conn) = self.conns.get_mut(index) {
            conn.io.queue(line);
        }
        self.flush(index, registry);
    }

    /// Writes pending output; closes the connection when it is done and closing, or when more
    /// is queued than [`MAX_QUEUED_OUTPUT_BYTES`].
    pub fn flush(&mut self, index: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let flushed = conn.io.flush(registry, false);
        if conn.io.queued() > MAX_QUEUED_OUTPUT_BYTES {
            crate::warn_limited!(
                self.log_limit,
                "control: closing a connection from uid {} (pid {}): {} bytes of answers wait and it is not reading",
                conn.peer.uid,
                conn.peer.pid,
                conn.io.queued()
            );
            self.close(index, registry);
            return;
        }
        if flushed == Flushed::Done {
            self.close(index, registry);
            return;
        }
        if conn.held && !conn.io.backed_up(0) {
            conn.held = false;
            self.resumed.push(index);
        }
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.try_remove(index) {
            conn.io.deregister(registry);
            if let Some(n) = self.per_uid.get_mut(&conn.peer.uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_uid.remove(&conn.peer.uid);
                }
            }
        }
    }

    /// Marks a connection as following the event log.
    pub fn follow(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index) {
            conn.following = true;
        }
    }

    /// Sends `response` to every connection following the event log.
    pub fn broadcast(&mut self, response: &Response, registry: &Registry) {
        let following: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.following)
            .map(|(index, _)| index)
            .collect();
        for index in following {
            self.respond(index, response, registry);
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

/// Reads what has arrived into the connection's input, up to the request size limit (the
/// rest stays in the socket until lines are taken). At the peer's end (or a discarded
/// connection's limit), marks it: what it sent is answered, then it closes.
fn fill(conn: &mut Conn) {
    conn.unread = false;
    loop {
        if !conn.io.is_discarding() && conn.io.pending() > site_proto::MAX_LINE_BYTES {
            conn.unread = true;
            return;
        }
        match conn.io.read_chunk() {
            Chunk::Got(_) => {}
            Chunk::Empty => return,
            Chunk::Eof => break,
        }
    }
    if !conn.io.has_line() {
        conn.io.close_when_drained();
    }
}

fn queue(conn: &mut Conn, response: &Response) {
    conn.io.queue(&site_proto::encode(response));
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
        groups: peer_groups(stream),
    })
}

/// The peer process's supplementary groups (SO_PEERGROUPS, Linux 4.13+): what the process
/// really holds, including groups given to it outside /etc/group (`setpriv --groups`,
/// systemd's `SupplementaryGroups=`). None if the kernel does not say.
///
/// The one `unsafe` outside `plugin_host/`, `plugins/api` and `hw/`: neither nix nor rustix
/// wraps SO_PEERGROUPS, and reading `/proc/<pid>/status` instead would fail under the unit's
/// `ProtectProc=invisible` and race a reused pid.
fn peer_groups(stream: &UnixStream) -> Option<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `groups`, which holds that many,
        // and sets `len` to the bytes it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Some(groups);
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE) && n > groups.len() {
            groups.resize(n, 0);
            continue;
        }
        return None;
    }
}

/// Root, sited's own user, or a member of the operator group: its primary group, one of the
/// supplementary groups the peer process holds (SO_PEERGROUPS), or, where the kernel cannot
/// say, one /etc/group lists the user in.
pub fn may_operate(peer: &Peer, operator_gid: Option<u32>) -> bool {
    if privileged(peer.uid) {
        return true;
    }
    let Some(gid) = operator_gid else {
        return false;
    };
    if peer.gid == gid {
        return true;
    }
    if let Some(groups) = &peer.groups {
        return groups.contains(&gid);
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

    const TOKENS: TokenRange = TokenRange::new(1, MAX_CONNECTIONS);

    #[test]
    fn root_and_own_user_may_operate_others_not_without_group() {
        let me = nix::unistd::geteuid().as_raw();
        assert!(may_operate(&peer(0, 0, None), None));
        assert!(may_operate(&peer(me, 0, None), None));
        assert!(!may_operate(&peer(4242, 4242, None), None));
    }

    #[test]
    fn primary_group_member_may_operate() {
        assert!(may_operate(&peer(4242, 777, None), Some(777)));
        assert!(!may_operate(&peer(4242, 778, None), Some(777)));
    }

    #[test]
    fn a_supplementary_group_the_process_holds_counts() {
        assert!(may_operate(&peer(4242, 778, Some(vec![5, 777])), Some(777)));
        assert!(!may_operate(&peer(4242, 778, Some(vec![5])), Some(777)));
    }

    fn peer(uid: u32, gid: u32, groups: Option<Vec<u32>>) -> Peer {
        Peer {
            uid,
            gid,
            pid: 1,
            groups,
        }
    }

    #[test]
    fn peer_groups_are_read_from_the_kernel() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let a = UnixStream::from_std(a);
        let groups = peer_groups(&a).expect("SO_PEERGROUPS (Linux 4.13+)");
        let mine: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        for g in &mine {
            assert!(groups.contains(g), "{groups:?} lacks {g}");
        }
    }

    #[test]
    fn bind_refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"precious").expect("write");
        let poll = mio::Poll::new().expect("poll");
        let err = ControlServer::bind(&path, None, poll.registry(), Token(0), TOKENS)
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
        let server =
            ControlServer::bind(&path, None, poll.registry(), Token(0), TOKENS).expect("bind");
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
        let err = ControlServer::bind(&path, None, poll.registry(), Token(0), TOKENS)
            .err()
            .expect("must refuse");
        assert!(matches!(err, Error::InUse { .. }), "{err}");
    }
}
