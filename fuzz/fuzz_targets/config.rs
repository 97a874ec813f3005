//! Config files: `Config::parse` on any text (the daemon reads `pilot.toml` as text). A config
//! that parses is written back as TOML and must parse to the same config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pilot::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(cfg) = Config::parse(text, path) else {
        return;
    };
    let again = toml::to_string(&cfg).expect("a parsed config serializes");
    let back = Config::parse(&again, path)
        .unwrap_or_else(|e| panic!("written back, refused: {e}\n{again}"));
    assert_eq!(back, cfg, "{again}");
});
