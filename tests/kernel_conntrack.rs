//! Kernel tests of conntrack cleanup: flows of a removed UDP backend go, every other flow stays.

mod common;

use std::net::SocketAddr;

use common::{netns, sh};
use ipvs_netlink::conntrack::{ConntrackClient, FlowFilter, IPPROTO_TCP, IPPROTO_UDP};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Inserts a flow client → service answered by backend (as IPVS+conntrack records it).
fn insert(proto: &str, client: &str, service: &str, backend: &str) {
    let (c, cp) = client.split_once(':').unwrap();
    let (s, sp) = service.split_once(':').unwrap();
    let (b, bp) = backend.split_once(':').unwrap();
    let state = match proto {
        "tcp" => " --state ESTABLISHED",
        "sctp" => " --state ESTABLISHED --orig-vtag 1 --reply-vtag 2",
        _ => "",
    };
    sh(&format!(
        "conntrack -I -p {proto} -s {c} -d {s} --sport {cp} --dport {sp} \
         -r {b} -q {c} --reply-port-src {bp} --reply-port-dst {cp} -t 300{state} 2>&1"
    ));
}

fn table() -> String {
    let mut lines: Vec<String> = sh("conntrack -L 2>/dev/null")
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter(|w| {
                    w.contains('=')
                        && !w.starts_with("id=")
                        && !w.starts_with("mark=")
                        && !w.starts_with("use=")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn removed_udp_backend_loses_its_flows_and_nothing_else() {
    netns();
    insert("udp", "10.0.0.1:40000", "10.96.0.10:53", "10.244.1.5:53");
    insert("udp", "10.0.0.2:40001", "10.96.0.10:53", "10.244.1.5:53");
    insert("udp", "10.0.0.3:40002", "10.96.0.10:53", "10.244.2.6:53");
    // Same backend IP, other port (another service's pod port): stays.
    insert(
        "udp",
        "10.0.0.4:40003",
        "10.96.0.20:5353",
        "10.244.1.5:5353",
    );
    // TCP to the same backend: stays, TCP ends by itself.
    insert("tcp", "10.0.0.5:40004", "10.96.0.10:53", "10.244.1.5:53");
    let before = table();
    assert_eq!(before.lines().count(), 5, "{before}");

    let mut c = ConntrackClient::new().unwrap();
    let f = FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.5:53"));
    let flows = c.flows(&f).unwrap();
    assert_eq!(flows.len(), 2, "{flows:?}");
    assert_eq!(
        c.last_dump_entries(),
        2,
        "the kernel filtered the dump (CTA_FILTER)"
    );
    assert!(flows.iter().all(|fl| fl.reply.src == sa("10.244.1.5:53")));

    let res = c.clear(&[f]);
    let cleared = res[0].as_ref().unwrap();
    assert_eq!(
        (cleared.matched, cleared.deleted, cleared.already_gone),
        (2, 2, 0)
    );

    let after = table();
    assert_eq!(after.lines().count(), 3, "{after}");
    assert!(
        !after.contains("src=10.0.0.1 ") && !after.contains("src=10.0.0.2 "),
        "{after}"
    );
    for kept in ["src=10.0.0.3 ", "src=10.0.0.4 ", "src=10.0.0.5 "] {
        assert!(after.contains(kept), "{kept} missing:\n{after}");
    }
    // Idempotent: nothing left to match.
    let again = c.clear(&[FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.5:53"))]);
    assert_eq!(again[0].as_ref().unwrap().matched, 0);
    assert_eq!(table(), after);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn service_scoped_and_batched_cleanup() {
    netns();
    insert("udp", "10.0.0.1:40000", "10.96.0.10:53", "10.244.1.5:53");
    insert("udp", "10.0.0.1:40001", "10.96.0.11:53", "10.244.1.5:53");
    insert("udp", "10.0.0.1:40002", "10.96.0.12:53", "10.244.3.7:53");
    insert("tcp", "10.0.0.1:40003", "10.96.0.12:80", "10.244.3.7:80");
    let mut c = ConntrackClient::new().unwrap();
    let before = c.netlink_stats().sendmsg_calls;
    let res = c.clear(&[
        // Only the flow to service .10, not the one to .11 through the same backend.
        FlowFilter::service_backend(IPPROTO_UDP, sa("10.96.0.10:53"), sa("10.244.1.5:53")),
        // Any port of that backend, UDP only.
        FlowFilter::backend(IPPROTO_UDP, sa("10.244.3.7:0")),
        FlowFilter::backend(IPPROTO_TCP, sa("10.244.9.9:80")),
    ]);
    let got: Vec<_> = res.iter().map(|r| r.as_ref().unwrap().deleted).collect();
    assert_eq!(got, [1, 1, 0]);
    assert_eq!(
        c.netlink_stats().sendmsg_calls - before,
        4,
        "3 dumps, 1 delete batch"
    );
    let after = table();
    assert_eq!(after.lines().count(), 2, "{after}");
    assert!(after.contains("dst=10.96.0.11 "), "{after}");
    assert!(after.contains("dport=80 "), "{after}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ipv6_and_sctp_flows_are_cleared_too() {
    use ipvs_netlink::conntrack::IPPROTO_SCTP;
    netns();
    sh(
        "conntrack -I -p udp -s fd00::1 -d fd00:96::10 --sport 40000 --dport 53 \
        -r fd00:244::5 -q fd00::1 --reply-port-src 53 --reply-port-dst 40000 -t 300",
    );
    sh(
        "conntrack -I -p udp -s fd00::2 -d fd00:96::10 --sport 40001 --dport 53 \
        -r fd00:244::6 -q fd00::2 --reply-port-src 53 --reply-port-dst 40001 -t 300",
    );
    insert(
        "sctp",
        "10.0.0.1:40000",
        "10.96.0.30:3868",
        "10.244.1.5:3868",
    );
    let mut c = ConntrackClient::new().unwrap();
    let res = c.clear(&[
        FlowFilter::backend(IPPROTO_UDP, sa("[fd00:244::5]:53")),
        FlowFilter::backend(IPPROTO_SCTP, sa("10.244.1.5:3868")),
    ]);
    let got: Vec<_> = res.iter().map(|r| r.as_ref().unwrap().deleted).collect();
    assert_eq!(got, [1, 1], "{res:?}");
    let after = table();
    assert_eq!(after.lines().count(), 1, "{after}");
    assert!(after.contains("fd00:244::6"), "{after}");
}
