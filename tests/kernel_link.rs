//! Kernel tests of the rtnetlink client: the kube-ipvs0 dummy, batched addresses, node addresses.

mod common;

use std::net::IpAddr;

use common::{netns, sh};
use ipvs_netlink::link::{Added, DUMMY_NAME, DummyChange, LinkError, Removed, RtnlClient};

fn ips(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::from([10, 96, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect()
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ensure_dummy_creates_down_noarp_then_leaves_it_alone() {
    netns();
    let mut c = RtnlClient::new().unwrap();
    let (link, change) = c.ensure_dummy(DUMMY_NAME).unwrap();
    assert_eq!(change, DummyChange::Created);
    assert!(!link.is_up() && link.is_noarp(), "{link:?}");
    let shown = sh("ip -d link show kube-ipvs0");
    assert!(
        shown.contains("NOARP") && shown.contains("dummy"),
        "{shown}"
    );
    assert!(!shown.contains(",UP"), "{shown}");

    let (again, change) = c.ensure_dummy(DUMMY_NAME).unwrap();
    assert_eq!(change, DummyChange::Unchanged);
    assert_eq!(again, link);
    assert_eq!(
        c.netlink_stats().sendmsg_calls,
        4,
        "create + 2 reads, then 1 read only"
    );

    // Someone set it up and turned ARP on: put back, same link.
    sh("ip link set kube-ipvs0 up arp on");
    let (fixed, change) = c.ensure_dummy(DUMMY_NAME).unwrap();
    assert_eq!(change, DummyChange::Fixed);
    assert_eq!(fixed.index, link.index);
    assert!(!fixed.is_up() && fixed.is_noarp(), "{fixed:?}");
    let shown = sh("ip link show kube-ipvs0");
    assert!(shown.contains("<BROADCAST,NOARP>"), "{shown}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ensure_dummy_refuses_a_foreign_link_of_that_name() {
    netns();
    sh("ip link add kube-ipvs0 type veth peer name other0");
    let mut c = RtnlClient::new().unwrap();
    match c.ensure_dummy(DUMMY_NAME) {
        Err(e @ LinkError::NotDummy { .. }) => {
            assert!(e.to_string().contains("veth"), "{e}")
        }
        other => panic!("expected NotDummy, got {other:?}"),
    }
    assert!(sh("ip -d link show kube-ipvs0").contains("veth"));
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn addresses_are_added_and_removed_in_batches() {
    netns();
    let mut c = RtnlClient::new().unwrap();
    let (link, _) = c.ensure_dummy(DUMMY_NAME).unwrap();
    let mut want = ips(2000);
    want.push("fd00:96::1".parse().unwrap());
    want.push("fd00:96::2".parse().unwrap());
    let before = c.netlink_stats().sendmsg_calls;
    let res = c.add_addresses(link.index, &want);
    let sends = c.netlink_stats().sendmsg_calls - before;
    assert_eq!(res.len(), want.len());
    assert!(res.iter().all(|r| matches!(r, Ok(Added::Added))), "{res:?}");
    assert!(sends < 50, "2002 addresses took {sends} sendmsg calls");

    let v4 = sh("ip -4 -o addr show dev kube-ipvs0 | wc -l");
    assert_eq!(v4.trim(), "2000");
    let v6 = sh("ip -6 -o addr show dev kube-ipvs0");
    assert!(
        v6.contains("fd00:96::1/128") && v6.contains("fd00:96::2/128"),
        "{v6}"
    );
    assert!(sh("ip -4 -o addr show dev kube-ipvs0").contains("10.96.0.1/32"));

    let mut listed: Vec<IpAddr> = c
        .addresses(link.index)
        .unwrap()
        .into_iter()
        .map(|a| a.addr)
        .collect();
    listed.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(listed, sorted);

    // Re-adding is not an error, and a mix reports each one.
    let mixed = vec![want[0], "10.97.0.1".parse().unwrap()];
    let res = c.add_addresses(link.index, &mixed);
    assert!(matches!(res[0], Ok(Added::AlreadyPresent)), "{res:?}");
    assert!(matches!(res[1], Ok(Added::Added)), "{res:?}");

    let gone = &want[..1000];
    let res = c.remove_addresses(link.index, gone);
    assert!(
        res.iter().all(|r| matches!(r, Ok(Removed::Removed))),
        "{res:?}"
    );
    let res = c.remove_addresses(link.index, &gone[..3]);
    assert!(
        res.iter().all(|r| matches!(r, Ok(Removed::NotPresent))),
        "{res:?}"
    );
    let left = c.addresses(link.index).unwrap();
    assert_eq!(left.len(), want.len() - 1000 + 1);
    assert!(left.iter().all(|a| !gone.contains(&a.addr)));
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn address_ops_on_a_missing_link_fail_per_address() {
    netns();
    let mut c = RtnlClient::new().unwrap();
    let res = c.add_addresses(9999, &ips(3));
    assert_eq!(res.len(), 3);
    for r in res {
        let e = r.unwrap_err();
        assert!(matches!(e, LinkError::NotFound(_)), "{e}");
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn node_addresses_skip_kube_ipvs0_loopback_and_link_local() {
    netns();
    sh("ip link add eth9 type dummy && ip link set eth9 up");
    sh("ip addr add 192.168.5.1/24 dev eth9");
    sh("ip addr add 2001:db8::5/64 dev eth9 nodad");
    sh("ip addr add fe80::5/64 dev eth9 nodad");
    sh("ip addr add 10.1.2.3/8 dev lo");
    let mut c = RtnlClient::new().unwrap();
    let (link, _) = c.ensure_dummy(DUMMY_NAME).unwrap();
    let res = c.add_addresses(link.index, &ips(5));
    assert!(res.iter().all(|r| r.is_ok()));
    let before = c.netlink_stats().sendmsg_calls;
    let got = c.node_addresses(DUMMY_NAME).unwrap();
    assert_eq!(
        c.netlink_stats().sendmsg_calls - before,
        2,
        "one link lookup, one dump"
    );
    // 10.1.2.3 is routable even though it sits on lo: upstream counts it too.
    let want: Vec<IpAddr> = vec![
        "10.1.2.3".parse().unwrap(),
        "192.168.5.1".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
    ];
    assert_eq!(got, want, "all: {}", sh("ip -o addr"));
    // Without kube-ipvs0 the VIPs are node addresses like any other.
    c.delete_link(DUMMY_NAME).unwrap();
    assert_eq!(c.node_addresses(DUMMY_NAME).unwrap(), want);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn delete_link_is_idempotent() {
    netns();
    let mut c = RtnlClient::new().unwrap();
    c.ensure_dummy(DUMMY_NAME).unwrap();
    assert!(c.delete_link(DUMMY_NAME).unwrap());
    assert!(!c.delete_link(DUMMY_NAME).unwrap());
    assert!(c.link(DUMMY_NAME).unwrap().is_none());
    let (ok, _, _) = common::try_sh("ip link show kube-ipvs0");
    assert!(!ok, "kube-ipvs0 still exists");
}
