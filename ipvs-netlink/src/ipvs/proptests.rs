//! Property tests: domain values survive attributes → bytes → parse → domain, and no bytes panic the parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::Emitable;
use proptest::prelude::*;

use super::message::*;
use super::nla::*;
use super::types::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn sock_addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        sock_addr().prop_map(ServiceKey::Tcp),
        sock_addr().prop_map(ServiceKey::Udp),
        sock_addr().prop_map(ServiceKey::Sctp),
        // Mark 0 means "not a fwmark service" to the kernel.
        (1..=u32::MAX, any::<bool>()).prop_map(|(mark, v6)| ServiceKey::FwMark {
            mark,
            family: if v6 { Family::Inet6 } else { Family::Inet },
        }),
    ]
}

fn name() -> impl Strategy<Value = String> {
    // Kernel names hold at most 15 bytes plus NUL.
    "[a-z0-9_]{1,15}"
}

fn service() -> impl Strategy<Value = Service> {
    (
        service_key(),
        name(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        proptest::option::of(name()),
    )
        .prop_map(|(key, sched, flags, timeout, mask, pe)| Service {
            netmask: mask % (key.family().max_prefix() + 1),
            key,
            scheduler: Scheduler::from_name(&sched),
            flags: ServiceFlags::from_kernel(flags),
            timeout,
            pe_name: pe,
        })
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        sock_addr(),
        0..5u32,
        any::<(u32, u32, u32)>(),
        0..3u8,
        any::<u16>(),
        0..3u16,
    )
        .prop_map(|(addr, fwd, (w, u, l), tt, tp, tc)| Destination {
            addr,
            forward: ForwardMethod::from_raw(fwd).unwrap_or_default(),
            weight: w,
            upper_threshold: u,
            lower_threshold: l,
            tunnel_type: TunnelType::from_raw(tt).unwrap_or_default(),
            tunnel_port: tp,
            tunnel_checksum: TunnelChecksum::from_raw(1 << tc >> 1).unwrap_or_default(),
        })
}

fn stats() -> impl Strategy<Value = Stats> {
    any::<[u64; 10]>().prop_map(|v| Stats {
        conns: v[0],
        inpkts: v[1],
        outpkts: v[2],
        inbytes: v[3],
        outbytes: v[4],
        cps: v[5],
        inpps: v[6],
        outpps: v[7],
        inbps: v[8],
        outbps: v[9],
    })
}

/// Emits a message's payload and parses it back.
fn through_bytes(msg: &IpvsMessage) -> IpvsMessage {
    let mut buf = Vec::new();
    msg.append_request(0x1e, &mut buf);
    IpvsMessage::parse(&buf[16..]).expect("own bytes parse")
}

proptest! {
    #[test]
    fn service_request_round_trip(svc in service()) {
        let msg = IpvsMessage::new(IpvsCmd::NewService, vec![CmdAttr::Service(service_attrs(&svc))]);
        let back = through_bytes(&msg);
        prop_assert_eq!(&back, &msg);
        let entry = service_from_attrs(back.service().unwrap()).unwrap();
        prop_assert_eq!(entry.service, svc);
    }

    #[test]
    fn service_reply_round_trip(svc in service(), stats in stats()) {
        let entry = ServiceEntry { service: svc, stats };
        let msg = IpvsMessage::new(IpvsCmd::NewService, vec![CmdAttr::Service(service_reply_attrs(&entry))]);
        let back = through_bytes(&msg);
        prop_assert_eq!(&back, &msg);
        // STATS64 wins over the truncated 32-bit STATS.
        prop_assert_eq!(service_from_attrs(back.service().unwrap()).unwrap(), entry);
    }

    #[test]
    fn service_key_round_trip(key in service_key()) {
        let attrs = service_key_attrs(&key);
        let mut buf = vec![0; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut buf);
        let back: Vec<ServiceAttr> = parse_nested(&buf, "test").unwrap();
        prop_assert_eq!(&back, &attrs);
        let mut full = back;
        full.push(ServiceAttr::SchedName("rr".into()));
        prop_assert_eq!(service_from_attrs(&full).unwrap().service.key, key);
    }

    #[test]
    fn destination_round_trip(svc in service_key(), d in destination()) {
        let msg = IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![CmdAttr::Service(service_key_attrs(&svc)), CmdAttr::Dest(destination_attrs(&d))],
        );
        let back = through_bytes(&msg);
        prop_assert_eq!(&back, &msg);
        // ADDR_FAMILY decides, whatever the service's family.
        let entry = destination_from_attrs(back.dest().unwrap(), svc.family()).unwrap();
        prop_assert_eq!(entry.destination, d);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = IpvsMessage::parse(&bytes) {
            if let Some(s) = m.service() {
                let _ = service_from_attrs(s);
            }
            if let Some(d) = m.dest() {
                let _ = destination_from_attrs(d, Family::Inet6);
            }
            let _ = info_from_attrs(&m.attrs);
            // Whatever parsed re-emits to something that parses again.
            let mut buf = Vec::new();
            m.append_request(1, &mut buf);
            prop_assert!(IpvsMessage::parse(&buf[16..]).is_ok());
        }
    }
}
