//! Fuzzes the conntrack (ctnetlink) reply path: every message of a datagram
//! decoded as a flow, as a conntrack dump is.
#![no_main]

use ipvs_netlink::conntrack::parse_flow;
use ipvs_netlink::netlink::Messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Messages::new(data) {
        let Ok((_header, payload)) = item else { break };
        if let Ok(flow) = parse_flow(payload) {
            let _ = format!("{flow:?}");
        }
    }
});
