//! Fuzzes the IPVS reply path: a datagram of netlink messages, each parsed as
//! an IPVS generic-netlink message and decoded into typed entries. No input may panic.
#![no_main]

use ipvs_netlink::ipvs::Family;
use ipvs_netlink::ipvs::message::{
    IpvsMessage, destination_from_attrs, info_from_attrs, service_from_attrs, timeouts_from_attrs,
};
use ipvs_netlink::netlink::Messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Messages::new(data) {
        let Ok((_header, payload)) = item else { break };
        let Ok(msg) = IpvsMessage::parse(payload) else {
            continue;
        };
        if let Some(svc) = msg.service() {
            let _ = service_from_attrs(svc);
        }
        if let Some(dest) = msg.dest() {
            let _ = destination_from_attrs(dest, Family::Inet);
            let _ = destination_from_attrs(dest, Family::Inet6);
        }
        let _ = info_from_attrs(&msg.attrs);
        let _ = timeouts_from_attrs(&msg.attrs);
    }
});
