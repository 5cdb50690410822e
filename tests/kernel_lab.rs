//! Kernel tests that prove the lab itself: IPVS is there, kube-ipvs0 can be made, ipvsadm works.

mod common;

use common::{netns, sh};

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ipvs_is_present() {
    let _serial = common::ipvs_serial();
    netns();
    let text =
        std::fs::read_to_string("/proc/net/ip_vs").expect("/proc/net/ip_vs exists in the lab");
    assert!(
        text.starts_with("IP Virtual Server version"),
        "unexpected /proc/net/ip_vs: {text}"
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn dummy_kube_ipvs0_can_be_created() {
    let _serial = common::ipvs_serial();
    netns();
    sh("ip link add kube-ipvs0 type dummy");
    sh("ip addr add 10.96.0.1/32 dev kube-ipvs0");
    let link = sh("ip -d link show kube-ipvs0");
    assert!(link.contains("dummy"), "not a dummy link: {link}");
    let addr = sh("ip -4 addr show dev kube-ipvs0");
    assert!(addr.contains("10.96.0.1/32"), "address missing: {addr}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ipvsadm_adds_and_lists_a_service() {
    let _serial = common::ipvs_serial();
    netns();
    sh("ipvsadm -A -t 10.96.0.10:80 -s rr");
    sh("ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1");
    let saved = sh("ipvsadm -Sn");
    assert_eq!(
        saved,
        "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n"
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn namespaces_isolate_ipvs_state() {
    let _serial = common::ipvs_serial();
    netns();
    assert_eq!(
        sh("ipvsadm -Sn"),
        "",
        "a fresh namespace starts with an empty IPVS table"
    );
    sh("ipvsadm -A -u 10.96.0.11:53 -s rr");
    assert_eq!(sh("ipvsadm -Sn"), "-A -u 10.96.0.11:53 -s rr\n");
}
