//! The control socket: bytes in arbitrary chunks through the line framer, each line through
//! the request decoder. A decoded request must encode and decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_proto::{LineBuffer, decode_request};

fuzz_target!(|data: &[u8]| {
    let mut lines = LineBuffer::new();
    // The first byte picks the chunk size, as reads of any size can split a request.
    let (size, rest) = match data.split_first() {
        Some((&n, rest)) => (usize::from(n).max(1), rest),
        None => return,
    };
    for chunk in rest.chunks(size) {
        lines.extend(chunk);
        loop {
            match lines.next_line() {
                Ok(Some(line)) => {
                    if let Ok(request) = decode_request(&line) {
                        let text = serde_json::to_string(&request).expect("encodes");
                        assert_eq!(decode_request(&text), Ok(request));
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
