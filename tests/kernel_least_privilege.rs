//! The DaemonSet's privilege split on a real kernel: `setup-host` (privileged) writes the node settings, then the proxy runs with a read-only /proc/sys and only NET_ADMIN and NET_RAW, and still programs everything.

mod common;

use common::daemon::{Daemon, http_get, metric_in};
use common::{kube_ipvs, sh, try_sh};

const METRICS: &str = "127.0.0.1:19349";
const HEALTHZ: &str = "127.0.0.1:19356";

/// What an unprivileged container gets: its own mount namespace with
/// `/proc/sys` read-only, and no capability but NET_ADMIN and NET_RAW
/// (root's capabilities after exec are limited by the bounding set).
const UNPRIVILEGED: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys \
     && exec setpriv --bounding-set=-all,+net_admin,+net_raw --inh-caps=-all -- \"$@\"",
    "sh",
];

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status prints them.
const NET_ADMIN_AND_RAW: &str = "0000000000003000";

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn setup_host_then_an_unprivileged_proxy_programs_everything() {
    common::netns();
    let _serial = common::ipvs_serial();
    sh(
        "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
    );
    let dir = common::example_manifests();
    let manifests = ["--manifests", dir.path().to_str().unwrap()];
    let logs = tempfile::tempdir().unwrap();
    // A setting the proxy needs and does not find.
    sh("sysctl -qw net.ipv4.vs.expire_nodest_conn=0");

    let unprivileged = |log: &str| {
        Daemon::start_wrapped(
            UNPRIVILEGED,
            &manifests,
            METRICS,
            HEALTHZ,
            logs.path().join(log),
            "2s",
        )
    };

    // Unprivileged before setup-host: it cannot write, and says what to do.
    let mut d = unprivileged("before.log");
    let st = d.wait_exit();
    let log = d.log();
    assert!(!st.success(), "{log}");
    assert!(log.contains("read-only"), "{log}");
    assert!(log.contains("kube-ipvs setup-host"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !try_sh("ipvsadm -Sn").1.contains("10.96.0.10"),
        "nothing programmed"
    );

    // The privileged step, with the proxy's flags; a second run changes nothing.
    let out = kube_ipvs(&["--conntrack-max-per-core=0", "setup-host"]);
    assert!(
        out.contains("set: net.ipv4.vs.expire_nodest_conn = 1 (was 0)"),
        "{out}"
    );
    assert_eq!(sh("sysctl -n net.ipv4.vs.conntrack").trim(), "1");
    let again = kube_ipvs(&["--conntrack-max-per-core=0", "setup-host"]);
    assert_eq!(again, "every node setting already holds\n");

    // Now the unprivileged proxy programs the examples and is healthy.
    let mut d = unprivileged("after.log");
    // The wrappers exec in turn; read the process once it is kube-ipvs.
    let pid = d.pid();
    d.wait_for("the wrappers to exec kube-ipvs", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "kube-ipvs")
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim);
    assert_eq!(cap_eff, Some(NET_ADMIN_AND_RAW), "{status}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /proc/sys ") && l.contains(" ro,")),
        "{mounts}"
    );
    d.wait_for("the example services in IPVS", || {
        let s = try_sh("ipvsadm -Sn").1;
        common::EXAMPLE_IPVS.iter().all(|l| s.contains(l))
    });
    d.wait_for("the service addresses on kube-ipvs0", || {
        try_sh("ip -o addr show dev kube-ipvs0")
            .1
            .contains("10.96.0.53/32")
    });
    d.wait_for("/readyz and /healthz 200", || {
        ["/readyz", "/healthz"]
            .iter()
            .all(|p| http_get(HEALTHZ, p).is_some_and(|(s, _)| s == 200))
    });
    assert!(sh("ipset save").contains("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80"));
    assert!(sh("iptables-save -t nat").contains(":KUBE-SERVICES"));
    // Two periodic verifications later (sync period 2 s): nothing drifted,
    // nothing failed, no sysctl written.
    let verified = || {
        http_get(METRICS, "/metrics")
            .and_then(|(_, t)| metric_in(&t, "kube_ipvs_last_verification_timestamp_seconds"))
            .unwrap_or(0.0)
    };
    let first = verified();
    d.wait_for("two more periodic verifications", || {
        verified() >= first + 4.0
    });
    let log = d.log();
    for bad in ["read-only", "ERROR", "drifted", "failed=1"] {
        assert!(!log.contains(bad), "{bad}: {log}");
    }
    assert_eq!(http_get(HEALTHZ, "/healthz").map(|(s, _)| s), Some(200));
    d.terminate();
}
