//! A proxy's answer to HTTP CONNECT (issue 14), as a node parses it: never a panic, a
//! complete header block only with status 200 and within the buffer, and the bound holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::wire::http_connect::{parse_answer, MAX_ANSWER};

fuzz_target!(|data: &[u8]| {
    match parse_answer(data) {
        Ok(Some(n)) => assert!(n <= data.len() && data[..n].ends_with(b"\n")),
        Ok(None) => assert!(data.len() < MAX_ANSWER),
        Err(_) => {}
    }
});
