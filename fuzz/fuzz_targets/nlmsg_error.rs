//! Fuzzes NLMSG_ERROR (ACKs with extended-ACK attributes, capped or not) and
//! NLMSG_DONE (a dump's error code and extended ACK) decoding.
#![no_main]

use ipvs_netlink::netlink::{Messages, parse_ack, parse_done};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Messages::new(data) {
        let Ok((header, payload)) = item else { break };
        if let Err(e) = parse_ack(&header, payload) {
            let _ = (e.to_string(), e.errno());
        }
        if let Err(e) = parse_done(payload) {
            let _ = e.to_string();
        }
    }
});
