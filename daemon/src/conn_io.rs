//! One line-oriented connection, the one type every connection on the loop uses: the control
//! socket's, the hub's clients' and the hub links'. [`LineConn`] owns the byte stream and does
//! the socket chores they share:
//!
//! - **framing**: lines are cut from the input by `site_proto::LineBuffer`, the one framer
//!   (sitectl reads with it too), with a single scan per byte and a line-length limit;
//! - **a bounded write queue**: answers wait in the connection's output until the socket
//!   takes them, and writability is asked for only while output waits (mio is
//!   edge-triggered, so an idle connection costs no syscall);
//! - **backpressure**: [`LineConn::backed_up`] says when so much waits to go out that the
//!   owner should stop taking the peer's input; a peer that sends and never reads stalls only
//!   itself;
//! - **the drained close**: a connection marked [`LineConn::close_when_drained`] closes once
//!   its output is out; after a fatal framing error, [`LineConn::discard_input`] sends the
//!   error, shuts our side and reads and drops the rest until the peer closes, so that closing
//!   with unread input does not make the kernel reset the connection before the peer has read
//!   our error.
//!
//! It works over any [`ByteStream`] (a mio TCP or Unix stream today; issue 12's TLS wraps one
//! and is added here once). What a line means, and who may send it, is the owner's business.
//!
//! The loop hands each component its tokens ([`TokenRange`] for connection tables), so no
//! component needs to know the loop's token layout.

use mio::event::Source;
use mio::{Interest, Registry, Token};
use site_proto::{FrameError, LineBuffer};
use std::io::{self, Read, Write};

/// A byte stream a [`LineConn`] can own: readable, writable, registrable with mio, and able
/// to shut its sending side (for the drained close). A stream that keeps bytes of its own
/// (TLS records the socket has not taken yet) says so with
/// [`ByteStream::pending_output`], and sends them on `flush`.
pub trait ByteStream: Read + Write + Source {
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Bytes the stream holds that have not gone out yet.
    fn pending_output(&self) -> bool {
        false
    }

    /// Why the stream failed, when it knows more than "closed" (a TLS alert).
    fn failure(&self) -> Option<String> {
        None
    }
}

impl ByteStream for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl ByteStream for mio::net::UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A block of tokens the loop set aside for one component's connection table: slot `i` is
/// token `base + i`, for `i < len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRange {
    pub base: usize,
    pub len: usize,
}

impl TokenRange {
    pub const fn new(base: usize, len: usize) -> TokenRange {
        TokenRange { base, len }
    }

    /// Slot `index`'s token. Panics on a slot outside the range: the table's size limit
    /// keeps its slots inside it, so that is a bug, not an input.
    pub fn token(&self, index: usize) -> Token {
        assert!(
            index < self.len,
            "slot {index} outside a range of {}",
            self.len
        );
        Token(self.base + index)
    }

    /// The slot a token names, if it is one of this range's.
    pub fn slot(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(self.base)
            .filter(|&index| index < self.len)
    }

    /// The first token after this range.
    pub const fn end(&self) -> usize {
        self.base + self.len
    }
}

/// How much of a bad connection's input is read and dropped before it is cut hard.
pub const DISCARD_LIMIT_BYTES: usize = 16 << 20;
/// Bytes taken from the socket per read call.
const CHUNK_BYTES: usize = 4096;

/// What one read from the socket gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes (appended to the input, or dropped while discarding).
    Got(usize),
    /// Nothing more for now (`WouldBlock`).
    Empty,
    /// The peer closed, the connection failed, or a discarded connection sent too much.
    Eof,
}

/// A complete line longer than the connection's limit. It has been taken off the input; the
/// stream is still framed, and the owner decides whether that ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlong;

/// Whether the connection is still open after a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Flushed {
    Open,
    /// Broken, or closing with everything said: the owner deregisters it and drops it.
    Done,
}

pub struct LineConn<S> {
    stream: S,
    token: Token,
    /// Bytes read and not yet taken as lines.
    input: LineBuffer,
    /// Bytes waiting to go out: `output[sent..]`.
    output: Vec<u8>,
    sent: usize,
    /// [`LineConn::backed_up`] above this much output.
    backpressure: usize,
    writable_registered: bool,
    /// The peer closed its side (or the connection failed).
    eof: bool,
    /// Close once the output is out (see [`Flushed::Done`]).
    closing: bool,
    /// After a fatal framing error: input read and dropped so far.
    discarding: Option<usize>,
    /// Our sending side has been shut (discarding, everything said).
    shut: bool,
}

impl<S: ByteStream> LineConn<S> {
    /// Takes a stream the owner has registered under `token` (readable; writable too while
    /// `writable_registered`, as a connecting client registers it).
    pub fn new(
        stream: S,
        token: Token,
        max_line: usize,
        backpressure: usize,
        writable_registered: bool,
    ) -> Self {
        LineConn {
            stream,
            token,
            input: LineBuffer::with_limit(max_line + 1),
            output: Vec::new(),
            sent: 0,
            backpressure,
            writable_registered,
            eof: false,
            closing: false,
            discarding: None,
            shut: false,
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn token(&self) -> Token {
        self.token
    }

    /// Reads once from the socket, at most one chunk. While discarding, what comes is
    /// counted and dropped.
    pub fn read_chunk(&mut self) -> Chunk {
        if self.eof {
            return Chunk::Eof;
        }
        let mut chunk = [0u8; CHUNK_BYTES];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => self.ended(),
                Ok(n) => match self.discarding.as_mut() {
                    Some(dropped) => {
                        *dropped += n;
                        if *dropped > DISCARD_LIMIT_BYTES {
                            return self.ended();
                        }
                        Chunk::Got(n)
                    }
                    None => {
                        self.input.extend(&chunk[..n]);
                        Chunk::Got(n)
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Chunk::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.ended(),
            };
        }
    }

    fn ended(&mut self) -> Chunk {
        self.eof = true;
        self.discarding = None;
        Chunk::Eof
    }

    /// The next complete line, without its newline; `None` if none is complete yet.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, Overlong>> {
        self.input
            .next_raw()
            .map(|line| line.map_err(|_: FrameError| Overlong))
    }

    /// Does the input hold a complete line?
    pub fn has_line(&self) -> bool {
        self.input.has_line()
    }

    /// Bytes held that are not yet taken as lines.
    pub fn pending(&self) -> usize {
        self.input.pending()
    }

    /// The unterminated input, as it stands.
    pub fn partial(&self) -> &[u8] {
        self.input.partial()
    }

    /// Takes the unterminated input as it stands (a seed client's message that ends without
    /// a newline, or what a peer sent before closing).
    pub fn take_partial(&mut self) -> Vec<u8> {
        self.input.take_partial()
    }

    /// Unterminated input longer than any line may be: the stream cannot be framed any more.
    pub fn overflowed(&self) -> bool {
        self.input.overflowed()
    }

    /// Queues bytes to go out (sent by the next [`LineConn::flush`]).
    pub fn queue(&mut self, bytes: &[u8]) {
        if self.sent > 0 && self.sent >= self.output.len() / 2 {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
        self.output.extend_from_slice(bytes);
    }

    /// Bytes waiting to go out.
    pub fn queued(&self) -> usize {
        self.output.len() - self.sent
    }

    /// So much waits to go out (with `extra` the owner holds for this peer elsewhere) that
    /// the owner should take no more of the peer's input for now.
    pub fn backed_up(&self, extra: usize) -> bool {
        self.queued() + extra > self.backpressure
    }

    /// The peer has closed its side.
    pub fn peer_closed(&self) -> bool {
        self.eof
    }

    /// Closes the connection once its output is out (and nothing is `owed`, see
    /// [`LineConn::flush`]).
    pub fn close_when_drained(&mut self) {
        self.closing = true;
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn is_discarding(&self) -> bool {
        self.discarding.is_some()
    }

    /// Drops the input and closes once the output is out, without waiting for the peer (a
    /// peer that stalled mid-request is not waited for again).
    pub fn drop_input(&mut self) {
        self.input.clear();
        self.closing = true;
    }

    /// After a fatal framing error (whose answer the owner has queued): the input is dropped,
    /// the connection closes once the answer is out, and until then the peer's input is read
    /// and dropped (up to [`DISCARD_LIMIT_BYTES`]) so that the close does not reset the
    /// connection before the peer has read the answer.
    pub fn discard_input(&mut self) {
        self.input.clear();
        self.closing = true;
        if !self.eof {
            self.discarding = Some(0);
            while let Chunk::Got(_) = self.read_chunk() {}
        }
    }

    /// Writes what the socket takes now and asks for writability while output waits.
    /// [`Flushed::Done`] when the connection is broken, or closing with its output out and
    /// nothing `owed` (answers the owner will still queue, such as reports waiting for the
    /// disk): the owner then deregisters it and drops it.
    pub fn flush(&mut self, registry: &Registry, owed: bool) -> Flushed {
        if self.write_pending().is_err() {
            return Flushed::Done;
        }
        let said_all = self.queued() == 0 && !owed && !self.stream.pending_output();
        if self.closing && said_all {
            if self.discarding.is_none() {
                return Flushed::Done;
            }
            if !self.shut {
                // Said our piece; wait for the peer to close.
                let _ = self.stream.shutdown_write();
                self.shut = true;
            }
        }
        self.want_writable(registry);
        Flushed::Open
    }

    fn write_pending(&mut self) -> io::Result<()> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.sent = 0;
        // What the stream keeps of its own (TLS records) goes now, or at the next writability.
        match self.stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Registers for writability while output waits and drops it when the output is gone;
    /// the common case costs no syscall.
    fn want_writable(&mut self, registry: &Registry) {
        let waiting = self.queued() > 0 || self.stream.pending_output();
        if waiting == self.writable_registered {
            return;
        }
        let interest = if waiting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if registry
            .reregister(&mut self.stream, self.token, interest)
            .is_ok()
        {
            self.writable_registered = waiting;
        }
    }

    /// Takes the connection off the loop (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UnixStream;
    use mio::{Events, Poll};

    fn pair(max_line: usize) -> (Poll, LineConn<UnixStream>, std::os::unix::net::UnixStream) {
        let poll = Poll::new().expect("poll");
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut ours = UnixStream::from_std(ours);
        poll.registry()
            .register(&mut ours, Token(7), Interest::READABLE)
            .expect("register");
        (
            poll,
            LineConn::new(ours, Token(7), max_line, 64, false),
            theirs,
        )
    }

    fn read_all(conn: &mut LineConn<UnixStream>) -> Chunk {
        loop {
            match conn.read_chunk() {
                Chunk::Got(_) => continue,
                other => return other,
            }
        }
    }

    #[test]
    fn lines_split_across_reads_come_out_whole_and_in_order() {
        let (_poll, mut conn, mut peer) = pair(100);
        peer.write_all(b"DEVICE a TY").unwrap();
        assert_eq!(read_all(&mut conn), Chunk::Empty);
        assert_eq!(conn.next_line(), None);
        assert_eq!(conn.partial(), b"DEVICE a TY");
        peer.write_all(b"PE b\nEVENT 1 ENTRY\nEV").unwrap();
        read_all(&mut conn);
        assert_eq!(conn.next_line(), Some(Ok(b"DEVICE a TYPE b".to_vec())));
        assert_eq!(conn.next_line(), Some(Ok(b"EVENT 1 ENTRY".to_vec())));
        assert_eq!(conn.next_line(), None);
        assert_eq!(conn.take_partial(), b"EV");
        assert_eq!(conn.pending(), 0);
    }

    #[test]
    fn a_long_line_is_refused_and_the_stream_stays_framed() {
        let (_poll, mut conn, mut peer) = pair(8);
        peer.write_all(b"123456789\nshort\n").unwrap();
        read_all(&mut conn);
        assert_eq!(conn.next_line(), Some(Err(Overlong)));
        assert_eq!(conn.next_line(), Some(Ok(b"short".to_vec())));
        peer.write_all(b"123456789").unwrap();
        read_all(&mut conn);
        assert!(conn.overflowed(), "unterminated input past the limit");
    }

    #[test]
    fn output_waits_for_a_full_socket_and_backpressure_says_so() {
        let (poll, mut conn, mut peer) = pair(100);
        let big = vec![b'y'; 4 << 20];
        conn.queue(&big);
        assert_eq!(conn.flush(poll.registry(), false), Flushed::Open);
        assert!(conn.queued() > 0, "a socket buffer is smaller than 4 MiB");
        assert!(conn.backed_up(0));
        let mut got = vec![0u8; big.len()];
        let reader = std::thread::spawn(move || {
            peer.read_exact(&mut got).unwrap();
            got
        });
        let mut poll = poll;
        let mut events = Events::with_capacity(8);
        while conn.queued() > 0 {
            poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let _ = conn.flush(poll.registry(), false);
        }
        assert_eq!(reader.join().unwrap(), big);
        assert!(!conn.backed_up(0));
    }

    #[test]
    fn a_drained_close_waits_for_the_output_and_for_what_is_owed() {
        let (poll, mut conn, mut peer) = pair(100);
        conn.queue(b"ERR bye\n");
        conn.close_when_drained();
        assert_eq!(conn.flush(poll.registry(), true), Flushed::Open, "owed");
        assert_eq!(conn.flush(poll.registry(), false), Flushed::Done);
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ERR bye\n");
    }

    #[test]
    fn discarding_shuts_our_side_and_reads_until_the_peer_closes() {
        let (poll, mut conn, mut peer) = pair(4);
        peer.write_all(b"far too long").unwrap();
        read_all(&mut conn);
        assert!(conn.overflowed());
        conn.queue(b"ERR line too long\n");
        conn.discard_input();
        assert_eq!(conn.pending(), 0);
        assert_eq!(conn.flush(poll.registry(), false), Flushed::Open);
        let mut answer = String::new();
        peer.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ERR line too long\n", "our side was shut after it");
        peer.write_all(b"more junk").unwrap();
        assert_eq!(read_all(&mut conn), Chunk::Empty);
        drop(peer);
        assert_eq!(read_all(&mut conn), Chunk::Eof);
        assert_eq!(conn.flush(poll.registry(), false), Flushed::Done);
    }

    #[test]
    fn token_ranges_map_both_ways_and_only_their_own() {
        let range = TokenRange::new(100, 10);
        assert_eq!(range.token(3), Token(103));
        assert_eq!(range.slot(Token(109)), Some(9));
        assert_eq!(range.slot(Token(110)), None);
        assert_eq!(range.slot(Token(99)), None);
        assert_eq!(range.end(), 110);
    }
}
