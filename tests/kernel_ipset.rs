//! Kernel tests of ipset over nfnetlink, cross-checked both ways with the `ipset` tool.

mod common;

use std::net::IpAddr;

use common::{netns, sh, sh_stdin};
use ipvs_netlink::ipset::message::{IpsetCmd, IpsetMessage, NETLINK_NETFILTER};
use ipvs_netlink::ipset::nla::CmdAttr;
use ipvs_netlink::ipset::{
    Entry, Family, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IpsetClient, IpsetError,
    Member, Operation, SetSpec, SetType,
};
use ipvs_netlink::netlink::{NetlinkSocket, Replies};
use kube_ipvs::ipset_cmd;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Drops the random `initval 0x...` so a create line can be compared to a constant.
fn strip_initval(text: &str) -> String {
    text.lines()
        .map(|l| match l.find(" initval 0x") {
            Some(i) => format!("{}{}", &l[..i], &l[i + 19..]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ops_ok(results: Vec<Result<(), IpsetError>>) {
    for (i, r) in results.into_iter().enumerate() {
        if let Err(e) = r {
            panic!("operation {i}: {e}");
        }
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn protocol_and_type_revisions_come_from_the_kernel() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    assert_eq!(c.protocol(), 7);
    for t in SetType::ALL {
        let (min, max) = c.type_revisions(t, Family::Inet).expect("type");
        assert!(min <= max, "{t}: {min}..{max}");
    }
    // The newest revision is the kernel's: hash:ip,port goes to 6 on Debian's
    // 6.1 and to 7 (the bitmask option, after 6.1) on 6.12. `ipset create` picks
    // the newest that both it and the kernel know; ipset 7.17 knows 7.
    let ours = c
        .type_revisions(SetType::HashIpPort, Family::Inet6)
        .unwrap()
        .1;
    sh("ipset create rev-probe hash:ip,port family inet6");
    let listed = sh("ipset list rev-probe");
    sh("ipset destroy rev-probe");
    let tools = listed
        .lines()
        .find_map(|l| l.strip_prefix("Revision: "))
        .and_then(|r| r.trim().parse::<u8>().ok())
        .unwrap_or_else(|| panic!("no Revision line in:\n{listed}"));
    assert_eq!(
        ours,
        tools,
        "hash:ip,port newest revision on {}",
        sh("uname -r").trim()
    );
    assert!(ours >= 6, "{ours}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn our_writes_are_what_ipset_save_prints() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    let a = ip("10.0.0.1");
    let v6 = ip("fd00::1");
    let mut sp = SetSpec::hash(SetType::HashIp, Family::Inet).with_comment();
    sp.hashsize = Some(64);
    sp.maxelem = Some(1000);
    let ops = vec![
        Operation::Create {
            name: "KUBE-CLUSTER-IP".into(),
            spec: SetSpec::hash(SetType::HashIpPort, Family::Inet).with_comment(),
            exist: false,
        },
        Operation::Create {
            name: "ip".into(),
            spec: sp,
            exist: false,
        },
        Operation::Create {
            name: "ipi6".into(),
            spec: SetSpec::hash(SetType::HashIpPortIp, Family::Inet6),
            exist: false,
        },
        Operation::Create {
            name: "ipn".into(),
            spec: SetSpec::hash(SetType::HashIpPortNet, Family::Inet),
            exist: false,
        },
        Operation::Create {
            name: "net".into(),
            spec: SetSpec::hash(SetType::HashNet, Family::Inet),
            exist: false,
        },
        Operation::Create {
            name: "ports".into(),
            spec: SetSpec::bitmap_port(0, 65535).with_comment(),
            exist: false,
        },
        Operation::Add {
            set: "KUBE-CLUSTER-IP".into(),
            members: vec![
                Member::with_comment(Entry::tcp(a, 80), "Kubernetes service cluster ip + port"),
                Member::from(Entry::udp(a, 53)),
                Member::from(Entry::IpPort {
                    ip: a,
                    proto: IPPROTO_SCTP,
                    port: 9,
                }),
                Member::from(Entry::IpPort {
                    ip: a,
                    proto: IPPROTO_ICMP,
                    port: 8 << 8,
                }),
            ],
            exist: false,
        },
        Operation::Add {
            set: "ip".into(),
            members: vec![Member::with_comment(Entry::Ip(a), "one")],
            exist: false,
        },
        Operation::Add {
            set: "ipi6".into(),
            members: vec![Member::from(Entry::IpPortIp {
                ip: v6,
                proto: IPPROTO_TCP,
                port: 443,
                ip2: ip("fd00::2"),
            })],
            exist: false,
        },
        Operation::Add {
            set: "ipn".into(),
            members: vec![
                Member::from(Entry::IpPortNet {
                    ip: a,
                    proto: IPPROTO_TCP,
                    port: 80,
                    net: (ip("10.1.0.0"), 16),
                }),
                Member::from(Entry::IpPortNet {
                    ip: a,
                    proto: IPPROTO_UDP,
                    port: 80,
                    net: (ip("10.2.0.1"), 32),
                }),
            ],
            exist: false,
        },
        Operation::Add {
            set: "net".into(),
            members: vec![
                Member::from(Entry::Net(ip("10.0.0.0"), 8)),
                Member::from(Entry::Net(ip("192.168.1.1"), 32)),
            ],
            exist: false,
        },
        Operation::Add {
            set: "ports".into(),
            members: vec![
                Member::with_comment(Entry::Port(80), "http"),
                Member::from(Entry::Port(30000)),
            ],
            exist: false,
        },
    ];
    ops_ok(c.apply(&ops));
    let stats = c.netlink_stats();
    // 6 TYPE lookups + PROTOCOL, one request each; then the whole batch in one sendmsg.
    assert!(stats.sendmsg_calls <= 8, "{stats:?}");

    let saved = sh("ipset save");
    let mut creates: Vec<String> = strip_initval(&saved)
        .lines()
        .filter(|l| l.starts_with("create"))
        .map(str::to_owned)
        .collect();
    creates.sort();
    assert_eq!(
        creates,
        [
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment bucketsize 12",
            "create ip hash:ip family inet hashsize 64 maxelem 1000 comment bucketsize 12",
            "create ipi6 hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536 bucketsize 12",
            "create ipn hash:ip,port,net family inet hashsize 1024 maxelem 65536 bucketsize 12",
            "create net hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12",
            "create ports bitmap:port range 0-65535 comment",
        ]
    );
    let mut adds: Vec<&str> = saved.lines().filter(|l| l.starts_with("add")).collect();
    adds.sort();
    assert_eq!(
        adds,
        [
            "add KUBE-CLUSTER-IP 10.0.0.1,icmp:echo-request",
            "add KUBE-CLUSTER-IP 10.0.0.1,sctp:9",
            "add KUBE-CLUSTER-IP 10.0.0.1,tcp:80 comment \"Kubernetes service cluster ip + port\"",
            "add KUBE-CLUSTER-IP 10.0.0.1,udp:53",
            "add ip 10.0.0.1 comment \"one\"",
            "add ipi6 fd00::1,tcp:443,fd00::2",
            "add ipn 10.0.0.1,tcp:80,10.1.0.0/16",
            "add ipn 10.0.0.1,udp:80,10.2.0.1",
            "add net 10.0.0.0/8",
            "add net 192.168.1.1",
            "add ports 30000",
            "add ports 80 comment \"http\"",
        ]
    );
    // And our own reading of the same state prints the same bytes as the tool.
    let sets = c.list(None).expect("list");
    assert_eq!(ipset_cmd::save(&sets), saved);
    assert_eq!(ipset_cmd::list(&sets), sh("ipset list"));
}

/// A varied corpus: every supported type, both families, extensions, ICMP names.
const CORPUS: &str = "\
create a hash:ip family inet hashsize 1024 maxelem 65536 comment
add a 10.0.0.1 comment \"hello world\"
add a 10.0.0.2
add a 10.255.255.255 comment \"x\"
create b hash:ip,port family inet hashsize 64 maxelem 100000
add b 10.0.0.1,tcp:80
add b 10.0.0.1,udp:53
add b 10.0.0.1,sctp:99
add b 10.0.0.1,udplite:7
add b 10.0.0.1,icmp:ping
add b 10.0.0.2,icmp:3/4
add b 10.0.0.2,icmp:255/255
add b 10.0.0.3,gre:0
add b 10.0.0.3,255:0
create b6 hash:ip,port family inet6
add b6 fd00::2,icmpv6:1/4
add b6 fd00::2,icmpv6:200/0
add b6 ::ffff:1.2.3.4,tcp:1
add b6 2001:db8::1:0:0:1,udp:65535
create c hash:ip,port,ip family inet6 comment
add c fd00::1,tcp:80,fd00::2 comment \"c1\"
create d hash:ip,port,net family inet timeout 600
add d 10.0.0.1,tcp:80,10.1.0.0/16 timeout 500
add d 10.0.0.1,tcp:80,10.2.0.1
create d6 hash:ip,port,net family inet6 counters
add d6 fd00::1,udp:53,fd00::/64 packets 5 bytes 500
create e hash:net family inet
add e 10.0.0.0/8
add e 10.1.2.3
add e 192.168.0.0/16 nomatch
create e6 hash:net family inet6 comment
add e6 fd00::/8 comment \"ula\"
create f bitmap:port range 0-65535 comment
add f 80 comment \"x\"
add f 0
add f 65535
create g bitmap:port range 1000-2000 timeout 100 counters
add g 1500 timeout 50 packets 1 bytes 2
create h hash:ip family inet6 timeout 300 counters comment skbinfo
create i hash:net family inet skbinfo
add i 10.0.0.0/24 skbmark 0x1/0xff skbqueue 3
add i 10.0.1.0/24 skbmark 0x5
";

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn after_ipset_restore_our_list_prints_what_ipset_prints() {
    netns();
    sh_stdin("ipset restore", CORPUS);
    let mut c = IpsetClient::new().expect("ipset client");
    let sets = c.list(None).expect("list");
    assert_eq!(sets.len(), 12);
    for s in &sets {
        assert!(s.undecoded.is_empty(), "{}: {:?}", s.name(), s.undecoded);
    }
    // Timeouts count down between two dumps: compare with them masked.
    let mask = |t: &str| {
        t.split(' ')
            .scan(false, |after, w| {
                let out = if *after { "T" } else { w };
                *after = w == "timeout";
                Some(out.to_owned())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(mask(&ipset_cmd::list(&sets)), mask(&sh("ipset list")));
    assert_eq!(mask(&ipset_cmd::save(&sets)), mask(&sh("ipset save")));
    let headers = c.headers(None).expect("headers");
    assert!(headers.iter().all(|s| s.members.is_empty()));
    assert_eq!(ipset_cmd::list_headers(&headers), sh("ipset list -t"));
    let names = c.names().expect("names");
    assert_eq!(names.join("\n") + "\n", sh("ipset list -n"));
    // One set by name.
    let b = c.list(Some("b")).expect("list b");
    assert_eq!(ipset_cmd::list(&b), sh("ipset list b"));
    assert_eq!(b[0].members.len(), 9);
    // The typed view of what the tool wrote.
    let a = &sets[0];
    assert_eq!(a.header.type_name, "hash:ip");
    assert_eq!(a.header.references, Some(0));
    assert!(a.header.memsize.unwrap_or(0) > 0);
    assert!(a.members.contains(&Member::with_comment(
        Entry::Ip(ip("10.0.0.1")),
        "hello world"
    )));
    let e = sets.iter().find(|s| s.name() == "e").unwrap();
    assert!(
        e.members
            .iter()
            .any(|m| m.nomatch && m.entry == Entry::Net(ip("192.168.0.0"), 16))
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn a_large_set_spans_many_messages_both_ways() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    c.create(
        "big",
        &SetSpec::hash(SetType::HashIpPort, Family::Inet).with_comment(),
        false,
    )
    .unwrap();
    let members: Vec<Member> = (0..5_000u32)
        .map(|i| {
            let e = Entry::tcp(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 80);
            if i % 7 == 0 {
                Member::with_comment(e, format!("svc-{i}"))
            } else {
                Member::from(e)
            }
        })
        .collect();
    let before = c.netlink_stats();
    c.add("big", &members, false).expect("add 5000");
    let after = c.netlink_stats();
    // Many entries per message, many messages per sendmsg.
    let msgs = after.messages_sent - before.messages_sent;
    assert!((3..20).contains(&msgs), "{msgs} messages");
    assert!(after.sendmsg_calls - before.sendmsg_calls <= 5);
    let sets = c.list(Some("big")).unwrap();
    assert_eq!(sets.len(), 1, "continuation messages merge into one set");
    assert_eq!(sets[0].members.len(), 5_000);
    assert_eq!(sets[0].header.elements, Some(5_000));
    assert_eq!(ipset_cmd::save(&sets), sh("ipset save big"));
    // Delete half in one go.
    let half: Vec<Entry> = members.iter().step_by(2).map(|m| m.entry).collect();
    c.del("big", &half, false).unwrap();
    assert_eq!(
        c.headers(Some("big")).unwrap()[0].header.elements,
        Some(2_500)
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn exist_semantics_and_test() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    let spec = SetSpec::hash(SetType::HashIp, Family::Inet);
    c.create("s", &spec, false).unwrap();
    // Creating it again: EEXIST, unless exist is given.
    let e = c.create("s", &spec, false).unwrap_err();
    assert!(matches!(e, IpsetError::SetExists { .. }), "{e}");
    c.create("s", &spec, true).unwrap();
    let one = Member::from(Entry::Ip(ip("10.0.0.1")));
    c.add("s", std::slice::from_ref(&one), false).unwrap();
    let e = c.add("s", std::slice::from_ref(&one), false).unwrap_err();
    assert!(matches!(e, IpsetError::EntryExists { .. }), "{e}");
    assert!(e.to_string().contains("set s"), "{e}");
    c.add("s", std::slice::from_ref(&one), true).unwrap();
    assert!(c.test("s", &one.entry).unwrap());
    assert!(!c.test("s", &Entry::Ip(ip("10.0.0.2"))).unwrap());
    c.del("s", &[one.entry], false).unwrap();
    let e = c.del("s", &[one.entry], false).unwrap_err();
    assert!(matches!(e, IpsetError::EntryMissing { .. }), "{e}");
    c.del("s", &[one.entry], true).unwrap();
    // In a multi-entry ADD without exist, the kernel stops at the existing entry.
    c.add("s", &[Member::from(Entry::Ip(ip("10.0.0.5")))], false)
        .unwrap();
    let batch: Vec<Member> = ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
        .iter()
        .map(|a| Member::from(Entry::Ip(ip(a))))
        .collect();
    let e = c.add("s", &batch, false).unwrap_err();
    assert!(matches!(e, IpsetError::EntryExists { .. }), "{e}");
    assert!(c.test("s", &Entry::Ip(ip("10.0.0.4"))).unwrap());
    assert!(!c.test("s", &Entry::Ip(ip("10.0.0.6"))).unwrap());
    c.add("s", &batch, true).unwrap();
    assert!(c.test("s", &Entry::Ip(ip("10.0.0.6"))).unwrap());
    // Wrong family for the set.
    let e = c
        .add("s", &[Member::from(Entry::Ip(ip("fd00::1")))], true)
        .unwrap_err();
    assert!(matches!(e, IpsetError::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("address family"), "{e}");
    // Mixed families in one batch never reach the kernel.
    let mixed = [
        Member::from(Entry::Ip(ip("10.0.0.7"))),
        Member::from(Entry::Ip(ip("fd00::7"))),
    ];
    let e = c.add("s", &mixed, true).unwrap_err();
    assert!(matches!(e, IpsetError::InvalidArgument(_)), "{e}");
    // A comment on a set without the comment extension.
    let e = c
        .add(
            "s",
            &[Member::with_comment(Entry::Ip(ip("10.9.9.9")), "x")],
            true,
        )
        .unwrap_err();
    assert!(e.to_string().contains("comment extension"), "{e}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn set_in_use_by_an_iptables_rule_cannot_be_destroyed() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    c.create(
        "KUBE-LOOP-BACK",
        &SetSpec::hash(SetType::HashIpPortIp, Family::Inet),
        false,
    )
    .unwrap();
    sh("iptables -w -A INPUT -m set --match-set KUBE-LOOP-BACK dst,dst,src -j ACCEPT");
    let sets = c.headers(Some("KUBE-LOOP-BACK")).unwrap();
    assert_eq!(sets[0].header.references, Some(1));
    let e = c.destroy("KUBE-LOOP-BACK").unwrap_err();
    assert!(matches!(e, IpsetError::Referenced { .. }), "{e}");
    assert!(e.to_string().contains("KUBE-LOOP-BACK"), "{e}");
    assert!(e.to_string().contains("iptables"), "{e}");
    sh("iptables -w -F INPUT");
    c.destroy("KUBE-LOOP-BACK").unwrap();
    let e = c.destroy("KUBE-LOOP-BACK").unwrap_err();
    assert!(matches!(e, IpsetError::SetNotFound { .. }), "{e}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn unsupported_type_revision_is_a_typed_error() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    let mut spec = SetSpec::hash(SetType::HashIp, Family::Inet);
    spec.revision = Some(200);
    let e = c.create("x", &spec, false).unwrap_err();
    match &e {
        IpsetError::TypeNotSupported {
            set_type, revision, ..
        } => {
            assert_eq!(set_type, "hash:ip");
            assert_eq!(*revision, Some(200));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("revision 200"), "{e}");
    // The oldest revision the kernel offers works.
    let (min, _) = c.type_revisions(SetType::HashIp, Family::Inet).unwrap();
    spec.revision = Some(min);
    c.create("x", &spec, false).unwrap();
    assert_eq!(c.headers(Some("x")).unwrap()[0].header.revision, min);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn a_full_set_reports_its_name_and_the_fix() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    let mut spec = SetSpec::hash(SetType::HashIp, Family::Inet);
    spec.maxelem = Some(2);
    c.create("small", &spec, false).unwrap();
    let members: Vec<Member> = ["1.1.1.1", "1.1.1.2", "1.1.1.3"]
        .iter()
        .map(|a| Member::from(Entry::Ip(ip(a))))
        .collect();
    let e = c.add("small", &members, true).unwrap_err();
    assert!(matches!(e, IpsetError::SetFull { .. }), "{e}");
    assert!(e.to_string().contains("small"), "{e}");
    assert!(e.to_string().contains("maxelem"), "{e}");
    // bitmap:port: a port outside the range.
    c.create("bp", &SetSpec::bitmap_port(1000, 2000), false)
        .unwrap();
    let e = c
        .add("bp", &[Member::from(Entry::Port(80))], true)
        .unwrap_err();
    assert!(matches!(e, IpsetError::OutOfRange { .. }), "{e}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn rename_swap_flush_destroy() {
    netns();
    let mut c = IpsetClient::new().expect("ipset client");
    let ip4 = SetSpec::hash(SetType::HashIp, Family::Inet);
    c.create("a", &ip4, false).unwrap();
    c.create("b", &ip4, false).unwrap();
    c.create("n", &SetSpec::hash(SetType::HashNet, Family::Inet), false)
        .unwrap();
    c.add("a", &[Member::from(Entry::Ip(ip("10.0.0.1")))], false)
        .unwrap();
    let e = c.rename("a", "b").unwrap_err();
    assert!(matches!(e, IpsetError::NameTaken { .. }), "{e}");
    c.rename("a", "a2").unwrap();
    let e = c.swap("a2", "missing").unwrap_err();
    assert!(matches!(e, IpsetError::SwapTargetMissing { .. }), "{e}");
    let e = c.swap("a2", "n").unwrap_err();
    assert!(matches!(e, IpsetError::TypeMismatch { .. }), "{e}");
    c.swap("a2", "b").unwrap();
    assert_eq!(sh("ipset save b | grep ^add"), "add b 10.0.0.1\n");
    c.flush("b").unwrap();
    assert_eq!(sh("ipset list b | tail -1"), "Members:\n");
    let e = c.flush("nope").unwrap_err();
    assert!(matches!(e, IpsetError::SetNotFound { .. }), "{e}");
    ops_ok(c.apply(&[
        Operation::Destroy("a2".into()),
        Operation::Destroy("b".into()),
        Operation::Destroy("n".into()),
    ]));
    assert_eq!(sh("ipset list -n"), "");
    // Batch results line up with operations, failures in the middle included.
    let r = c.apply(&[
        Operation::Create {
            name: "x".into(),
            spec: ip4.clone(),
            exist: false,
        },
        Operation::Destroy("nope".into()),
        Operation::Add {
            set: "x".into(),
            members: vec![Member::from(Entry::Ip(ip("10.0.0.9")))],
            exist: false,
        },
        Operation::Create {
            name: "this-name-is-far-too-long-for-ipset".into(),
            spec: ip4,
            exist: false,
        },
    ]);
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert!(matches!(r[1], Err(IpsetError::SetNotFound { .. })), "{r:?}");
    assert!(matches!(r[3], Err(IpsetError::InvalidArgument(_))), "{r:?}");
}

/// Prints the raw bytes of a LIST reply (for the captured-bytes unit test).
#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn capture_list_reply_bytes() {
    netns();
    sh_stdin(
        "ipset restore",
        "create cap hash:ip,port,net family inet hashsize 64 maxelem 128 comment\n\
         add cap 10.0.0.1,tcp:80,10.1.0.0/16 comment \"svc a\"\n\
         create cap6 hash:ip,port family inet6 timeout 300\n\
         add cap6 fd00::1,udp:53 timeout 100\n\
         create capp bitmap:port range 10-20 counters\n\
         add capp 15 packets 1 bytes 2\n",
    );
    let mut sock = NetlinkSocket::new(NETLINK_NETFILTER).expect("socket");
    let mut buf = Vec::new();
    IpsetMessage::new(IpsetCmd::List, vec![CmdAttr::Protocol(7)]).append(0, &mut buf);
    let mut replies = Replies::new();
    sock.dump(&mut buf, &mut replies).expect("dump");
    for r in replies.iter() {
        let hex: Vec<String> = r.payload.iter().map(|b| format!("{b:02x}")).collect();
        println!("CAPTURE type={:#06x} payload={}", r.msg_type, hex.join(""));
    }
    assert_eq!(replies.len(), 3);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn kube_ipvs_ipset_list_and_save_print_what_ipset_prints() {
    netns();
    sh_stdin(
        "ipset restore",
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment\n\
         add KUBE-CLUSTER-IP 10.96.0.1,tcp:443 comment \"default/kubernetes:https\"\n\
         add KUBE-CLUSTER-IP 10.96.0.10,udp:53\n\
         create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n\
         add KUBE-NODE-PORT-TCP 30080\n",
    );
    let bin = env!("CARGO_BIN_EXE_kube-ipvs");
    assert_eq!(sh(&format!("{bin} ipset list")), sh("ipset list"));
    assert_eq!(
        sh(&format!("{bin} ipset list KUBE-CLUSTER-IP")),
        sh("ipset list KUBE-CLUSTER-IP")
    );
    assert_eq!(sh(&format!("{bin} ipset list -t")), sh("ipset list -t"));
    assert_eq!(sh(&format!("{bin} ipset save")), sh("ipset save"));
    let (ok, _, err) = common::try_sh(&format!("{bin} ipset list NOPE"));
    assert!(!ok);
    assert!(err.contains("set NOPE does not exist"), "{err}");
}
