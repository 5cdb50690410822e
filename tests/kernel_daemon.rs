//! Kernel test of the daemon from a manifests directory: programs, follows file changes, repairs drift, serves health and metrics, survives SIGTERM and restart without changes.

mod common;

use std::path::Path;

use common::daemon::{Daemon, http_get as get};
use common::{sh, try_sh};

const METRICS: &str = "127.0.0.1:19249";
const HEALTHZ: &str = "127.0.0.1:19256";

fn has_all(text: &str, lines: &[&str]) -> bool {
    lines.iter().all(|l| text.lines().any(|t| t.trim() == *l))
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn daemon_follows_manifests_and_restarts_without_changes() {
    common::netns();
    let _serial = common::ipvs_serial();
    sh(
        "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
    );
    // Foreign state: never adopted, never touched.
    sh("ipvsadm -A -t 192.0.2.1:80 -s wrr");
    let dir = common::example_manifests();
    let logs = tempfile::tempdir().unwrap();

    let mut d = Daemon::start(
        &["--manifests", dir.path().to_str().unwrap()],
        METRICS,
        HEALTHZ,
        logs.path().join("first.log"),
    );
    d.wait_for("the example services in IPVS", || {
        has_all(&try_sh("ipvsadm -Sn").1, common::EXAMPLE_IPVS)
    });
    // Addresses are bound last in a sync (after their services are complete).
    d.wait_for("the service addresses on kube-ipvs0", || {
        try_sh("ip -o addr show dev kube-ipvs0")
            .1
            .contains("10.96.0.53/32")
    });
    assert!(sh("ipvsadm -Sn").contains("-A -t 192.0.2.1:80 -s wrr"));

    d.wait_for("/healthz 200", || {
        get(HEALTHZ, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let (status, body) = get(METRICS, "/metrics").expect("metrics server");
    assert_eq!(status, 200);
    assert!(
        body.contains("kubeproxy_sync_proxy_rules_duration_seconds"),
        "{body}"
    );
    // Prometheus text 0.0.4 by default, as upstream (not OpenMetrics).
    assert!(
        body.contains("# TYPE kube_ipvs_drift_repairs_total counter\n") && !body.contains("# EOF"),
        "{body}"
    );

    // Scale web by replacing its file atomically: .3 goes, .4 comes.
    let web = dir.path().join("web.yaml");
    let text = std::fs::read_to_string(&web).unwrap();
    let tmp = dir.path().join(".web.yaml.tmp");
    std::fs::write(&tmp, text.replace("10.244.1.3", "10.244.1.4")).unwrap();
    std::fs::rename(&tmp, &web).unwrap();
    d.wait_for("the scaled endpoints (.4 in, .3 drained out)", || {
        let ipvs = try_sh("ipvsadm -Sn").1;
        ipvs.contains("-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 1")
            && !ipvs.contains("10.244.1.3")
    });

    // Drift behind our back, every kind at once, repaired by the periodic
    // verifications (syncPeriod 2 s here), which read the sets and addresses
    // each time and IPVS, IPv4's and IPv6's iptables in turn
    // (apply::quick::cycle, 3 here): all within 3 of them but scheduler flags
    // (not in /proc), found within 3 × VERIFY_SLICES (10) as their service's
    // slice is read exactly.
    let want_ipvs = sh("ipvsadm -Sn");
    let want_sets = sh("ipset save KUBE-CLUSTER-IP");
    let want_nat = sh("iptables-save -t nat | grep -c '^-A KUBE-POSTROUTING'");
    let injected = std::time::Instant::now();
    sh("ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.1:8080"); // a real server deleted
    sh("ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 7"); // a weight changed
    sh("ipvsadm -D -t 10.96.0.30:443"); // a service deleted
    sh("ipvsadm -E -u 10.96.0.53:53 -s wrr"); // a scheduler changed
    sh("ipvsadm -E -t 192.168.100.10:30080 -s rr -b flag-3"); // a scheduler flag added
    sh("ip addr del 10.96.0.20/32 dev kube-ipvs0"); // an address removed
    sh("ipset del KUBE-CLUSTER-IP 10.96.0.10,tcp:80"); // a set member removed
    sh("iptables -t nat -F KUBE-POSTROUTING"); // rules deleted
    let mut first = None;
    d.wait_for("every drift repaired", || {
        let ipvs = try_sh("ipvsadm -Sn").1;
        let seen = ipvs.contains("-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1")
            && ipvs.contains("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1")
            && ipvs.contains("-A -t 10.96.0.30:443")
            && ipvs.contains("-A -u 10.96.0.53:53 -s rr")
            && try_sh("ip -o addr show dev kube-ipvs0")
                .1
                .contains("10.96.0.20/32")
            && try_sh("ipset save KUBE-CLUSTER-IP").1 == want_sets
            && try_sh("iptables-save -t nat | grep -c '^-A KUBE-POSTROUTING'").1 == want_nat;
        if seen && first.is_none() {
            first = Some(injected.elapsed());
        }
        seen && ipvs == want_ipvs
    });
    eprintln!(
        "drift: all but the scheduler flag repaired {:.1} s after injection, the flag {:.1} s after",
        first.unwrap_or_default().as_secs_f64(),
        injected.elapsed().as_secs_f64()
    );
    d.wait_for("the repair counted", || {
        get(METRICS, "/metrics").is_some_and(|(_, b)| {
            b.lines()
                .any(|l| l.starts_with("kube_ipvs_drift_repairs_total ") && !l.ends_with(" 0"))
        })
    });
    // What the verifications cost, by part, and in CPU (#17).
    let (_, body) = get(METRICS, "/metrics").expect("metrics server");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    for part in ["ipvs", "sets", "addresses", "iptables"] {
        let secs = value(&format!(
            "kube_ipvs_verification_read_seconds_total{{part=\"{part}\"}}"
        ));
        assert!(secs > 0.0, "{part}: {secs}");
    }
    assert!(value("kube_ipvs_verification_cpu_seconds_total") > 0.0);

    // SIGTERM: exit 0, kernel state untouched.
    let before = sh("ipvsadm -Sn");
    let sets = sh("ipset save");
    d.terminate();
    assert_eq!(sh("ipvsadm -Sn"), before, "SIGTERM changed IPVS");
    assert_eq!(sh("ipset save"), sets, "SIGTERM changed ipsets");
    assert!(sh("ip -o addr show dev kube-ipvs0").contains("10.96.0.10/32"));

    // Restart: adoption finds nothing to change.
    let mut d = Daemon::start(
        &["--manifests", dir.path().to_str().unwrap()],
        METRICS,
        HEALTHZ,
        logs.path().join("second.log"),
    );
    d.wait_for("adoption after the restart", || {
        d_log_has(
            &logs.path().join("second.log"),
            "adopted the existing kernel state",
        )
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("adopted the existing kernel state"))
        .unwrap_or_default();
    assert!(line.contains("differences=0"), "{log}");
    assert_eq!(sh("ipvsadm -Sn"), before, "restart changed IPVS");
    d.terminate();
}

fn d_log_has(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|l| l.contains(text))
}
