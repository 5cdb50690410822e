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

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn estimator_sysctls_only_from_6_2_and_left_alone() {
    netns();
    let s = Sysctl::new();
    let kernel = s.kernel_version().unwrap();
    // 6.2 moved IPVS rate estimation to kthreads and added est_cpulist and
    // est_nice (Documentation/networking/ipvs-sysctl.rst); 6.1 has neither.
    // kube-ipvs, like upstream, leaves them at the node's choice.
    let keys = ["net.ipv4.vs.est_cpulist", "net.ipv4.vs.est_nice"];
    let before: Vec<Option<String>> = keys.iter().map(|k| s.get(k).ok()).collect();
    let has = kernel >= sysctl::KernelVersion::new(6, 2, 0);
    for (k, v) in keys.iter().zip(&before) {
        assert_eq!(v.is_some(), has, "{k} on {kernel}: {v:?}");
    }
    s.apply_proxy_settings(true).unwrap();
    let after: Vec<Option<String>> = keys.iter().map(|k| s.get(k).ok()).collect();
    assert_eq!(before, after, "estimator settings changed on {kernel}");
    // run_estimation (5.16) is on both kernels and stays on.
    assert_eq!(s.get("net.ipv4.vs.run_estimation").unwrap(), "1");
}
