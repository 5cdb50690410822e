//! Kernel test of the proxier's sysctls on the real /proc/sys of a fresh network namespace.

mod common;

use common::{netns, sh};
use kube_ipvs::sysctl::{self, Sysctl};

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn proxy_settings_apply_in_the_namespace_then_are_a_noop() {
    netns();
    let s = Sysctl::new();
    let kernel = s.kernel_version().unwrap();
    sh("sysctl -qw net.ipv4.vs.conntrack=0 net.ipv4.ip_forward=0 net.ipv4.conf.all.arp_ignore=0");
    let reuse_before = s.get(sysctl::VS_CONN_REUSE_MODE).unwrap();
    let changed = s.apply_proxy_settings(true).unwrap();
    let keys: Vec<_> = changed.iter().map(|c| c.key).collect();
    assert!(keys.contains(&sysctl::VS_CONNTRACK), "{keys:?}");
    assert!(keys.contains(&sysctl::IP_FORWARD), "{keys:?}");
    for (key, want) in [
        ("net.ipv4.vs.conntrack", "1"),
        ("net.ipv4.vs.expire_nodest_conn", "1"),
        ("net.ipv4.vs.expire_quiescent_template", "1"),
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ] {
        assert_eq!(sh(&format!("sysctl -n {key}")).trim(), want, "{key}");
    }
    if kernel >= sysctl::KernelVersion::new(5, 9, 0) {
        assert_eq!(
            s.get(sysctl::VS_CONN_REUSE_MODE).unwrap(),
            reuse_before,
            "left alone on {kernel}"
        );
    } else {
        assert_eq!(s.get(sysctl::VS_CONN_REUSE_MODE).unwrap(), "0");
    }
    assert!(
        s.apply_proxy_settings(true).unwrap().is_empty(),
        "second run changes nothing"
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn settings_are_per_namespace() {
    netns();
    let s = Sysctl::new();
    s.set(sysctl::VS_CONNTRACK, "1").unwrap();
    assert_eq!(s.get(sysctl::VS_CONNTRACK).unwrap(), "1");
    // A second fresh namespace starts from the kernel default again.
    netns();
    assert_eq!(Sysctl::new().get(sysctl::VS_CONNTRACK).unwrap(), "0");
}
