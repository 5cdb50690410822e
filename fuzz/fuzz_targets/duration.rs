//! Fuzzes Go-style durations ("1h30m", "500ms", "-2.5us"), as flags and the
//! config file read them, and formats what parses.
#![no_main]

use kube_ipvs::config::duration::{format, parse, parse_signed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse(text) {
        let _ = format(d);
    }
    let _ = parse_signed(text);
});
