//! Fuzzes the `/proc/net/ip_vs` reader (the periodic verification's IPVS
//! reading): any text is parsed into services and real servers or refused
//! with an error. No input may panic.
#![no_main]

use ipvs_netlink::ipvs::proc::parse_each;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut services = 0usize;
    let _ = parse_each(data, |s| {
        services += 1;
        let _ = s.destinations.len();
    });
});
