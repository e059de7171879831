//! The socket chores every connection on the loop shares (control, hub clients, hub links):
//! reading what has arrived until `WouldBlock` (mio is edge-triggered), writing what waits
//! until the socket is full, and asking for writability only while output waits.

use mio::event::Source;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};

/// Appends everything readable now to `into`, up to `limit` bytes held. Returns whether the
/// peer closed (or the connection failed).
pub fn read_available(stream: &mut impl Read, into: &mut Vec<u8>, limit: usize) -> bool {
    let mut chunk = [0u8; 4096];
    while into.len() <= limit {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// After a request bad enough to end the connection: reads and drops what has arrived, so that
/// closing later does not make the kernel reset the connection (and lose our error reply).
/// Returns true once the peer has closed, or has sent more than `limit` bytes in all.
pub fn discard_available(stream: &mut impl Read, dropped: &mut usize, limit: usize) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if *dropped > limit {
            return true;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => *dropped += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// How much of a bad connection's input is read and dropped before it is cut hard.
pub const DISCARD_LIMIT_BYTES: usize = 16 << 20;

/// Writes as much of `pending` as the socket takes now. `Err`: the connection is broken.
pub fn write_pending(stream: &mut impl Write, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Registers for writability while output waits and drops it when the output is gone;
/// `registered` remembers which, so the common case costs no syscall.
pub fn want_writable(
    registry: &Registry,
    source: &mut impl Source,
    token: Token,
    output_waiting: bool,
    registered: &mut bool,
) {
    if output_waiting == *registered {
        return;
    }
    let interest = if output_waiting {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if registry.reregister(source, token, interest).is_ok() {
        *registered = output_waiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then would block.
    struct Narrow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_socket_keeps_the_rest_for_later() {
        let mut w = Narrow {
            taken: Vec::new(),
            room: 3,
        };
        let mut pending = b"OK 12\n".to_vec();
        write_pending(&mut w, &mut pending).expect("no error");
        assert_eq!(w.taken, b"OK ");
        assert_eq!(pending, b"12\n");
    }

    #[test]
    fn reading_stops_at_would_block_and_reports_eof() {
        let mut data: &[u8] = b"DEVICE a TYPE b\n";
        let mut into = Vec::new();
        assert!(
            read_available(&mut data, &mut into, 1024),
            "a slice ends like a closed peer"
        );
        assert_eq!(into, b"DEVICE a TYPE b\n");
    }
}
