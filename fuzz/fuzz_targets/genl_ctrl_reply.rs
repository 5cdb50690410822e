//! Fuzzes the generic-netlink control (nlctrl) reply path: the family id
//! looked up in each NEWFAMILY message of a datagram.
#![no_main]

use ipvs_netlink::genl::family_id_from_reply;
use ipvs_netlink::netlink::Messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in Messages::new(data) {
        let Ok((_header, payload)) = item else { break };
        let _ = family_id_from_reply(payload);
    }
});
