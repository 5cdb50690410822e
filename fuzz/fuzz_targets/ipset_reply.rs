//! Fuzzes the ipset (nfnetlink) reply path: a datagram of netlink messages, each
//! parsed as an ipset message, then grouped into sets with their members as `list` does.
#![no_main]

use ipvs_netlink::ipset::client::sets_from_messages;
use ipvs_netlink::ipset::message::IpsetMessage;
use ipvs_netlink::netlink::Messages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut msgs = Vec::new();
    for item in Messages::new(data) {
        let Ok((header, payload)) = item else { break };
        if let Ok(msg) = IpsetMessage::parse(header.msg_type, payload) {
            let _ = msg.set_name();
            msgs.push(msg);
        }
    }
    for set in sets_from_messages(&msgs) {
        let _ = (set.header.set_type(), set.header.has_counters(), set.name());
    }
});
