//! The WebSocket upgrade of the TLS transport (issue 14): a node's request as the registry
//! checks it, and a registry's answer as a node checks it. Never a panic; a complete header
//! block only within the buffer and the bound; an accepted request always gets an answer the
//! node accepts, and a refused one an HTTP error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::wire::websocket::{
    accept_response, error_response, parse_request, parse_response, MAX_HEAD,
};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Some((n, key))) => {
            assert!(n <= data.len() && n <= MAX_HEAD);
            let answer = accept_response(&key);
            assert_eq!(parse_response(&answer, &key), Ok(Some(answer.len())));
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(e) => assert!(error_response(&e).starts_with(b"HTTP/1.1 4")),
    }
    match parse_response(data, "dGhlIHNhbXBsZSBub25jZQ==") {
        Ok(Some(n)) => assert!(n <= data.len()),
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(_) => {}
    }
});
