//! Kernel tests of the IPVS netlink client: every request against a real kernel, cross-checked with ipvsadm.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use common::{ipvs_serial as serial, netns, sh, try_sh};
use ipvs_netlink::Error;
use ipvs_netlink::ipvs::*;
use ipvs_netlink::netlink::{AckMode, NetlinkSocket, Replies, SocketConfig};

fn client() -> IpvsClient {
    IpvsClient::new().expect("IPVS client (the lab loads ip_vs)")
}

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp(s: &str) -> ServiceKey {
    ServiceKey::Tcp(v4(s))
}

fn sorted_services(c: &mut IpvsClient) -> Vec<Service> {
    let mut v: Vec<Service> = c
        .services()
        .expect("dump services")
        .into_iter()
        .map(|e| e.service)
        .collect();
    v.sort_by_key(|s| s.key);
    v
}

/// The i-th of many distinct IPv4 addresses in 10.0.0.0/8.
fn nth_addr(base: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(base, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn info_matches_proc() {
    let _serial = serial();
    netns();
    let info = client().info().unwrap();
    let proc = std::fs::read_to_string("/proc/net/ip_vs").unwrap();
    let first = proc.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "IP Virtual Server version {} (size={})",
            info.version_string(),
            info.conn_table_size
        )
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn timeouts_get_and_set() {
    let _serial = serial();
    netns();
    let mut c = client();
    let before = c.timeouts().unwrap();
    assert!(
        before.tcp > 0 && before.tcp_fin > 0 && before.udp > 0,
        "{before:?}"
    );
    c.set_timeouts(Timeouts {
        tcp: 901,
        tcp_fin: 121,
        udp: 301,
    })
    .unwrap();
    assert_eq!(
        c.timeouts().unwrap(),
        Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 301
        }
    );
    assert!(sh("ipvsadm -L --timeout").contains("901 121 301"));
    // Zero leaves a value unchanged.
    c.set_timeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 55,
    })
    .unwrap();
    assert_eq!(
        c.timeouts().unwrap(),
        Timeouts {
            tcp: 901,
            tcp_fin: 121,
            udp: 55
        }
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn services_add_dump_get_edit_delete() {
    let _serial = serial();
    netns();
    let mut c = client();
    let keys = [
        tcp("10.96.0.1:80"),
        ServiceKey::Udp(v4("10.96.0.10:53")),
        ServiceKey::Sctp(v4("10.96.0.20:3868")),
        ServiceKey::Tcp("[fd00::1]:443".parse().unwrap()),
        ServiceKey::Udp("[fd00::a]:53".parse().unwrap()),
        ServiceKey::FwMark {
            mark: 7,
            family: Family::Inet,
        },
        ServiceKey::FwMark {
            mark: 8,
            family: Family::Inet6,
        },
    ];
    let mut want: Vec<Service> = keys.iter().map(|k| Service::new(*k)).collect();
    for s in &want {
        c.add_service(s)
            .unwrap_or_else(|e| panic!("add {}: {e}", s.key));
    }
    want.sort_by_key(|s| s.key);
    assert_eq!(sorted_services(&mut c), want);
    for s in &want {
        let got = c.service(&s.key).unwrap().expect("service exists");
        assert_eq!(&got.service, s);
    }
    assert!(c.service(&tcp("10.96.0.99:80")).unwrap().is_none());

    let saved = sh("ipvsadm -Sn");
    for line in [
        "-A -t 10.96.0.1:80 -s rr",
        "-A -u 10.96.0.10:53 -s rr",
        "-A --sctp-service 10.96.0.20:3868 -s rr",
        "-A -t [fd00::1]:443 -s rr",
        "-A -f 7 -s rr",
        "-A -f 8 -6 -s rr",
    ] {
        assert!(saved.contains(line), "missing {line:?} in:\n{saved}");
    }

    // Edit: scheduler, persistence and a flag.
    let mut edited = Service::new(tcp("10.96.0.1:80"));
    edited.scheduler = Scheduler::WeightedLeastConnection;
    edited.flags = ServiceFlags::PERSISTENT | ServiceFlags::ONEPACKET;
    edited.timeout = 600;
    c.edit_service(&edited).unwrap();
    assert_eq!(c.service(&edited.key).unwrap().unwrap().service, edited);
    // And back: flags are replaced, not merged.
    let plain = Service::new(edited.key);
    c.edit_service(&plain).unwrap();
    assert_eq!(c.service(&plain.key).unwrap().unwrap().service, plain);

    for s in &want {
        c.delete_service(&s.key).unwrap();
    }
    assert!(c.services().unwrap().is_empty());
    assert_eq!(sh("ipvsadm -Sn"), "");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn destinations_with_every_forward_method() {
    let _serial = serial();
    netns();
    let mut c = client();
    let key = tcp("10.96.0.1:80");
    c.add_service(&Service::new(key)).unwrap();
    let mut want = Vec::new();
    for (i, fwd) in [
        ForwardMethod::Masq,
        ForwardMethod::Local,
        ForwardMethod::Tunnel,
        ForwardMethod::DirectRoute,
        ForwardMethod::Bypass,
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = Destination::masq(v4(&format!("10.244.0.{}:8080", i + 1)));
        d.forward = fwd;
        d.weight = i as u32 + 1;
        c.add_destination(&key, &d)
            .unwrap_or_else(|e| panic!("add {fwd:?}: {e}"));
        want.push(d);
    }
    let mut got: Vec<Destination> = c
        .destinations(&key)
        .unwrap()
        .into_iter()
        .map(|e| e.destination)
        .collect();
    got.sort_by_key(|d| d.addr);
    assert_eq!(got, want);
    let saved = sh("ipvsadm -Sn");
    for line in [
        "-a -t 10.96.0.1:80 -r 10.244.0.1:8080 -m -w 1",
        "-a -t 10.96.0.1:80 -r 10.244.0.3:8080 -i -w 3",
        "-a -t 10.96.0.1:80 -r 10.244.0.4:8080 -g -w 4",
    ] {
        assert!(saved.contains(line), "missing {line:?} in:\n{saved}");
    }

    // Edit weight (0 = drain), then delete.
    let mut d = want[0];
    d.weight = 0;
    c.edit_destination(&key, &d).unwrap();
    let e = c
        .destinations(&key)
        .unwrap()
        .into_iter()
        .find(|e| e.destination.addr == d.addr)
        .unwrap();
    assert_eq!(e.destination.weight, 0);
    assert_eq!(e.active_conns, 0);
    for d in &want {
        c.delete_destination(&key, d.addr).unwrap();
    }
    assert!(c.destinations(&key).unwrap().is_empty());
    // A service that does not exist has no destinations.
    assert!(c.destinations(&tcp("10.96.9.9:1")).unwrap().is_empty());
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn thresholds_tunnels_and_mixed_family() {
    let _serial = serial();
    netns();
    let mut c = client();
    let key = tcp("10.96.0.1:80");
    c.add_service(&Service::new(key)).unwrap();
    let mut t = Destination::masq(v4("10.244.0.1:80"));
    t.upper_threshold = 100;
    t.lower_threshold = 10;
    c.add_destination(&key, &t).unwrap();

    let mut gue = Destination::masq(v4("10.244.0.2:80"));
    gue.forward = ForwardMethod::Tunnel;
    gue.tunnel_type = TunnelType::Gue;
    gue.tunnel_port = 6080;
    gue.tunnel_checksum = TunnelChecksum::Checksum;
    c.add_destination(&key, &gue).unwrap();

    let mut gre = Destination::masq(v4("10.244.0.3:80"));
    gre.forward = ForwardMethod::Tunnel;
    gre.tunnel_type = TunnelType::Gre;
    gre.tunnel_checksum = TunnelChecksum::RemoteChecksum;
    let gre_result = c.add_destination(&key, &gre);

    // An IPv6 real server behind an IPv4 service: only with tunnelling.
    let mut mixed = Destination::masq("[fd00::5]:80".parse().unwrap());
    mixed.forward = ForwardMethod::Tunnel;
    c.add_destination(&key, &mixed).unwrap();

    let got: BTreeMap<SocketAddr, Destination> = c
        .destinations(&key)
        .unwrap()
        .into_iter()
        .map(|e| (e.destination.addr, e.destination))
        .collect();
    assert_eq!(got[&t.addr], t);
    assert_eq!(got[&gue.addr], gue);
    assert_eq!(got[&mixed.addr], mixed);
    match gre_result {
        Ok(()) => assert_eq!(got[&gre.addr], gre),
        // GRE with remote checksum offload is refused by some kernels.
        Err(e) => assert!(matches!(e, Error::Invalid { .. }), "{e}"),
    }
    let saved = sh("ipvsadm -Sn");
    // ipvsadm's save format omits thresholds; its listing shows them.
    let listed = sh("ipvsadm -Ln --thresholds | grep 10.244.0.1:80");
    let cols: Vec<&str> = listed.split_whitespace().collect();
    // "-> addr Uthreshold Lthreshold ActiveConn InActConn"
    assert_eq!(cols.get(2..4), Some(&["100", "10"][..]), "{listed}");
    assert!(
        saved.contains("-r 10.244.0.2:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum"),
        "{saved}"
    );
    assert!(saved.contains("-r [fd00::5]:80 -i -w 1"), "{saved}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn persistence_netmask_and_scheduler_flags() {
    let _serial = serial();
    netns();
    let mut c = client();
    let mut p4 = Service::new(tcp("10.96.0.1:443"));
    p4.flags = ServiceFlags::PERSISTENT;
    p4.timeout = 10800;
    p4.netmask = 24;
    let mut p6 = Service::new(ServiceKey::Tcp("[fd00::1]:443".parse().unwrap()));
    p6.flags = ServiceFlags::PERSISTENT;
    p6.timeout = 300;
    p6.netmask = 64;
    let mut sh_svc = Service::new(tcp("10.96.0.2:80"));
    sh_svc.scheduler = Scheduler::SourceHashing;
    sh_svc.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    let mut mh = Service::new(tcp("10.96.0.3:80"));
    mh.scheduler = Scheduler::Maglev;
    mh.flags = ServiceFlags::MH_PORT;
    let mut one = Service::new(ServiceKey::Udp(v4("10.96.0.4:53")));
    one.flags = ServiceFlags::ONEPACKET;
    for s in [&p4, &p6, &sh_svc, &mh, &one] {
        c.add_service(s)
            .unwrap_or_else(|e| panic!("add {}: {e}", s.key));
        assert_eq!(&c.service(&s.key).unwrap().unwrap().service, s);
    }
    let saved = sh("ipvsadm -Sn");
    for line in [
        "-A -t 10.96.0.1:443 -s rr -p 10800 -M 255.255.255.0",
        "-A -t [fd00::1]:443 -s rr -p 300 -M 64",
        "-A -t 10.96.0.2:80 -s sh -b sh-fallback,sh-port",
        "-A -t 10.96.0.3:80 -s mh -b mh-port",
        "-A -u 10.96.0.4:53 -s rr -o",
    ] {
        assert!(saved.contains(line), "missing {line:?} in:\n{saved}");
    }
    // Every scheduler this kernel has round-trips by name, and one it lacks is
    // SchedulerNotFound: kernels differ (6.12 has twos, 6.1 does not).
    for (i, name) in [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf",
        "twos",
    ]
    .iter()
    .enumerate()
    {
        let module = format!("ip_vs_{name}");
        let present = std::path::Path::new(&format!("/sys/module/{module}")).exists()
            || try_sh(&format!("modprobe -n {module}")).0;
        let mut s = Service::new(tcp(&format!("10.97.0.{}:80", i + 1)));
        s.scheduler = Scheduler::from_name(name);
        match c.add_service(&s) {
            Ok(()) if present => assert_eq!(c.service(&s.key).unwrap().unwrap().service, s),
            Err(Error::SchedulerNotFound { name: n }) if !present => assert_eq!(n, *name),
            r => panic!("{name} (module {module} present: {present}): {r:?}"),
        }
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn zero_and_flush() {
    let _serial = serial();
    netns();
    let mut c = client();
    let key = tcp("10.96.0.1:80");
    c.add_service(&Service::new(key)).unwrap();
    c.add_destination(&key, &Destination::masq(v4("10.244.0.1:80")))
        .unwrap();
    c.zero(Some(&key)).unwrap();
    c.zero(None).unwrap();
    let e = c.service(&key).unwrap().unwrap();
    assert_eq!(e.stats, Stats::default());
    match c.zero(Some(&tcp("10.96.0.2:80"))) {
        Err(Error::ServiceNotFound(k)) => assert_eq!(k, tcp("10.96.0.2:80")),
        other => panic!("{other:?}"),
    }
    c.add_service(&Service::new(ServiceKey::Udp(v4("10.96.0.1:53"))))
        .unwrap();
    c.flush().unwrap();
    assert!(c.services().unwrap().is_empty());
    assert_eq!(sh("ipvsadm -Sn"), "");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn error_paths_name_the_object() {
    let _serial = serial();
    netns();
    let mut c = client();
    let key = tcp("10.0.0.1:80");
    c.add_service(&Service::new(key)).unwrap();

    let e = c.add_service(&Service::new(key)).unwrap_err();
    assert!(matches!(e, Error::ServiceExists(k) if k == key), "{e:?}");
    assert_eq!(e.to_string(), "service TCP 10.0.0.1:80 already exists");

    let missing = tcp("10.0.0.2:80");
    for e in [
        c.delete_service(&missing).unwrap_err(),
        c.edit_service(&Service::new(missing)).unwrap_err(),
        c.add_destination(&missing, &Destination::masq(v4("10.1.0.1:80")))
            .unwrap_err(),
    ] {
        assert!(
            matches!(e, Error::ServiceNotFound(k) if k == missing),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "service TCP 10.0.0.2:80 does not exist");
    }

    let mut foo = Service::new(tcp("10.0.0.3:80"));
    foo.scheduler = Scheduler::Other("foo".into());
    let e = c.add_service(&foo).unwrap_err();
    assert_eq!(e.to_string(), "scheduler 'foo' not found: load ip_vs_foo");

    // IPv6 masquerading real server behind an IPv4 service: EINVAL.
    let v6 = Destination::masq("[fd00::1]:80".parse().unwrap());
    let e = c.add_destination(&key, &v6).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("add destination [fd00::1]:80 to service TCP 10.0.0.1:80"),
        "{e}"
    );

    let d = Destination::masq(v4("10.1.0.1:80"));
    c.add_destination(&key, &d).unwrap();
    let e = c.add_destination(&key, &d).unwrap_err();
    assert!(matches!(e, Error::DestinationExists { .. }), "{e:?}");
    let e = c.delete_destination(&key, v4("10.1.0.9:80")).unwrap_err();
    assert!(matches!(e, Error::DestinationNotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "destination 10.1.0.9:80 of service TCP 10.0.0.1:80 does not exist"
    );
    let e = c
        .edit_destination(&key, &Destination::masq(v4("10.1.0.9:80")))
        .unwrap_err();
    assert!(matches!(e, Error::DestinationNotFound { .. }), "{e:?}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn partial_failure_in_a_batch_with_an_ack_per_message() {
    let _serial = serial();
    netns();
    partial_failure(
        &mut IpvsClient::with_config(SocketConfig {
            ack_mode: AckMode::EveryMessage,
            ..SocketConfig::default()
        })
        .unwrap(),
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn partial_failure_in_a_batch_with_acks_on_last_only() {
    let _serial = serial();
    netns();
    partial_failure(
        &mut IpvsClient::with_config(SocketConfig {
            ack_mode: AckMode::ErrorsAndLast,
            ..SocketConfig::default()
        })
        .unwrap(),
    );
}

fn partial_failure(c: &mut IpvsClient) {
    let dup = tcp("10.96.0.50:80");
    c.add_service(&Service::new(dup)).unwrap();
    let ops: Vec<Operation> = (0..100)
        .map(|i| Operation::AddService(Service::new(tcp(&format!("10.96.0.{i}:80")))))
        .collect();
    let results = c.apply(&ops);
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        if i == 50 {
            let e = r.as_ref().unwrap_err();
            assert!(matches!(e, Error::ServiceExists(k) if *k == dup), "{e:?}");
        } else {
            assert!(r.is_ok(), "op {i}: {r:?}");
        }
    }
    assert_eq!(c.services().unwrap().len(), 100);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn lost_acks_are_reported_unconfirmed_never_ok() {
    let _serial = serial();
    netns();
    // The smallest receive buffer the kernel allows: the ACK storm (one ACK
    // per message) overflows it.
    let mut c = IpvsClient::with_config(SocketConfig {
        recv_buffer: 0,
        ack_mode: AckMode::EveryMessage,
        ..SocketConfig::default()
    })
    .unwrap();
    let ops: Vec<Operation> = (0..2000)
        .map(|i| {
            Operation::AddService(Service::new(ServiceKey::Tcp(SocketAddr::new(
                IpAddr::V4(nth_addr(10, i)),
                80,
            ))))
        })
        .collect();
    let results = c.apply(&ops);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let unconfirmed = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_unconfirmed()))
        .count();
    eprintln!("ACK overflow: {ok} confirmed, {unconfirmed} unconfirmed");
    assert_eq!(
        ok + unconfirmed,
        ops.len(),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert!(
        unconfirmed > 0,
        "expected ENOBUFS with a tiny receive buffer"
    );
    // The kernel applied them all anyway: re-reading state is the recovery.
    assert_eq!(c.services().unwrap().len(), ops.len());
}

/// n services × m destinations as one apply(), then dumped and compared.
fn big_table(n: u32, m: u32) -> (Vec<Operation>, BTreeMap<ServiceKey, BTreeSet<SocketAddr>>) {
    let mut ops = Vec::with_capacity((n * (m + 1)) as usize);
    let mut want = BTreeMap::new();
    for i in 0..n {
        let key = ServiceKey::Tcp(SocketAddr::new(IpAddr::V4(nth_addr(10, i)), 80));
        ops.push(Operation::AddService(Service::new(key)));
        let mut dests = BTreeSet::new();
        for j in 0..m {
            let addr = SocketAddr::new(IpAddr::V4(nth_addr(11, i * m + j)), 8080);
            ops.push(Operation::AddDestination(key, Destination::masq(addr)));
            dests.insert(addr);
        }
        want.insert(key, dests);
    }
    (ops, want)
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn batch_of_2000_services_with_10_destinations() {
    let _serial = serial();
    netns();
    let mut c = client();
    let (ops, want) = big_table(2000, 10);
    let before = c.netlink_stats();
    let t = Instant::now();
    let results = c.apply(&ops);
    let apply_time = t.elapsed();
    let after = c.netlink_stats();
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "op {i} ({}): {r:?}", ops[i]);
    }
    eprintln!(
        "apply {} ops: {:?}, {} sendmsg, {} recvmsg, {} messages",
        ops.len(),
        apply_time,
        after.sendmsg_calls - before.sendmsg_calls,
        after.recvmsg_calls - before.recvmsg_calls,
        after.messages_sent - before.messages_sent
    );

    let t = Instant::now();
    let got: BTreeMap<ServiceKey, BTreeSet<SocketAddr>> = c
        .table()
        .unwrap()
        .into_iter()
        .map(|(s, d)| {
            let addrs = d.into_iter().map(|d| d.destination.addr).collect();
            (s.service.key, addrs)
        })
        .collect();
    eprintln!("dump 2000 services + their destinations: {:?}", t.elapsed());
    assert_eq!(got, want);
    let lines = sh("ipvsadm -Sn | wc -l");
    assert_eq!(lines.trim(), "22000");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn dump_of_10000_services_is_complete() {
    let _serial = serial();
    netns();
    let mut c = client();
    let (ops, want) = big_table(10_000, 0);
    let t = Instant::now();
    let results = c.apply(&ops);
    let apply_time = t.elapsed();
    assert!(results.iter().all(|r| r.is_ok()));
    let stats = c.netlink_stats();
    let t = Instant::now();
    let services = c.services().unwrap();
    let dump_time = t.elapsed();
    let got: BTreeSet<ServiceKey> = services.iter().map(|s| s.service.key).collect();
    assert_eq!(got, want.keys().copied().collect());
    eprintln!(
        "10000 services: apply {apply_time:?} ({} sendmsg, {} recvmsg), dump {dump_time:?}",
        stats.sendmsg_calls, stats.recvmsg_calls
    );
    let t = Instant::now();
    let saved = sh("ipvsadm -Sn | wc -l");
    eprintln!("ipvsadm -Sn of 10000 services: {:?}", t.elapsed());
    assert_eq!(saved.trim(), "10000");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn permission_denied_without_cap_net_admin() {
    if std::env::var("KUBE_IPVS_AS_NOBODY").as_deref() == Ok("1") {
        // Re-executed below as an unprivileged user, in the parent's namespace.
        let mut c = IpvsClient::new().expect("resolving the family needs no privilege");
        let e = c
            .add_service(&Service::new(tcp("10.96.0.1:80")))
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = c.services().unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        return;
    }
    let _serial = serial();
    netns();
    let exe = std::env::current_exe().unwrap();
    let out = sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
         env KUBE_IPVS_AS_NOBODY=1 {} --ignored --exact permission_denied_without_cap_net_admin 2>&1",
        exe.display()
    ));
    assert!(out.contains("1 passed"), "{out}");
}

/// Prints raw kernel replies as hex, to refresh the captured-bytes unit tests
/// (run with --nocapture). Also checks they decode.
#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn capture_kernel_replies() {
    let _serial = serial();
    netns();
    let mut c = client();
    let mut svc = Service::new(tcp("10.96.0.1:80"));
    svc.flags = ServiceFlags::PERSISTENT;
    svc.timeout = 300;
    svc.netmask = 24;
    c.add_service(&svc).unwrap();
    let fw = Service::new(ServiceKey::FwMark {
        mark: 7,
        family: Family::Inet6,
    });
    c.add_service(&fw).unwrap();
    let mut d = Destination::masq(v4("10.244.0.1:8080"));
    d.weight = 3;
    d.upper_threshold = 100;
    d.lower_threshold = 10;
    c.add_destination(&svc.key, &d).unwrap();

    let family = c.family_id();
    let mut sock = NetlinkSocket::new(ipvs_netlink::netlink::protocols::NETLINK_GENERIC).unwrap();
    let mut replies = Replies::new();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut run = |name: &str, msg: message::IpvsMessage, dump: bool| {
        let mut buf = Vec::new();
        msg.append_request(family, &mut buf);
        if dump {
            sock.dump(&mut buf, &mut replies).unwrap();
        } else {
            sock.request(&mut buf, &mut replies).unwrap();
        }
        for (i, r) in replies.iter().enumerate() {
            println!("CAPTURE {name} {i} flags={:#x} {}", r.flags, hex(r.payload));
            message::IpvsMessage::parse(r.payload).unwrap();
        }
    };
    use message::{IpvsCmd, IpvsMessage, service_key_attrs};
    use nla::CmdAttr;
    run(
        "service_dump",
        IpvsMessage::new(IpvsCmd::GetService, vec![]),
        true,
    );
    run(
        "dest_dump",
        IpvsMessage::new(
            IpvsCmd::GetDest,
            vec![CmdAttr::Service(service_key_attrs(&svc.key))],
        ),
        true,
    );
    run(
        "get_info",
        IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
        false,
    );
    run(
        "get_config",
        IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
        false,
    );
}
