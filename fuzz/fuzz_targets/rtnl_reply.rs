//! Fuzzes the rtnetlink reply path: every message of a datagram decoded as a
//! link (RTM_NEWLINK) and as an address (RTM_NEWADDR), as the client does.
#![no_main]

use ipvs_netlink::link::{parse_address, parse_link};
use ipvs_netlink::netlink::Messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Messages::new(data) {
        let Ok((_header, payload)) = item else { break };
        if let Ok(link) = parse_link(payload) {
            let _ = (link.is_up(), link.is_noarp());
        }
        let _ = parse_address(payload);
    }
});
