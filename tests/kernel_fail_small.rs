//! Kernel test: one Service the kernel refuses (a scheduler the node lacks, a real server it rejects) stays that Service's problem: the others sync, health stays 200, the fallback shows in ipvsadm, and an Event and a metric say so.

mod common;
mod fakeapi;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, http_get as get};
use common::{sh, try_sh};
use fakeapi::{FakeApi, to_json};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:19449";
const HEALTHZ: &str = "127.0.0.1:19456";
const HEALTH_CHECK_PORT: u16 = 30998;

/// A ClusterIP Service `name` on `ip`:80 with `annotations`.
fn cluster_ip(name: &str, ip: &str, annotations: Value) -> Value {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name, "annotations": annotations},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("valid Service");
    to_json(&s)
}

/// `web`: a LoadBalancer with externalTrafficPolicy Local and a health-check node port.
fn web() -> Value {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "externalTrafficPolicy": "Local", "healthCheckNodePort": HEALTH_CHECK_PORT,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}},
    }))
    .expect("valid Service");
    to_json(&s)
}

/// The slice of `svc` with ready endpoints on `node`.
fn slice(svc: &str, ips: &[&str], node: &str) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-1"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .expect("valid EndpointSlice");
    to_json(&s)
}

fn metric(sample: &str) -> Option<f64> {
    let (_, text) = get(METRICS, "/metrics")?;
    common::daemon::metric_in(&text, sample)
}

fn failures(reason: &str) -> f64 {
    metric(&format!(
        "kube_ipvs_service_failures_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

fn ipvs_has(ipvs: &str, lines: &[&str]) -> bool {
    lines.iter().all(|l| ipvs.lines().any(|t| t.trim() == *l))
}

/// The Warning Events posted about Service `name`, by their notes.
fn event_notes(api: &FakeApi, name: &str) -> Vec<String> {
    api.events()
        .iter()
        .filter(|e| e["regarding"]["name"] == name && e["type"] == "Warning")
        .filter_map(|e| e["note"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn one_refused_service_disturbs_nothing_else() {
    common::netns();
    let _serial = common::ipvs_serial();
    sh(
        "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
    );
    // A scheduler this kernel cannot load: missing on 6.1, hidden on 6.12.
    let missing = common::sched::missing_scheduler();
    eprintln!("missing scheduler: {} ({})", missing.name, missing.how);
    let (rt, api) = fakeapi::start_for_lab();
    api.apply(web());
    api.apply(slice("web", &["10.244.1.1"], "lab-node"));
    api.apply(cluster_ip(
        "twos",
        "10.96.0.77",
        json!({"kube-ipvs.io/scheduler": missing.name}),
    ));
    api.apply(slice("twos", &["10.244.1.7"], "other-node"));
    // A multicast real server: ip_vs_new_dest answers EINVAL.
    api.apply(cluster_ip("bad", "10.96.0.78", json!({})));
    api.apply(slice("bad", &["224.0.0.5", "10.244.1.8"], "other-node"));

    let logs = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig();
    let mut d = Daemon::start(
        &["--kubeconfig", kc.to_str().unwrap()],
        METRICS,
        HEALTHZ,
        logs.path().join("fail-small.log"),
    );
    let expected = [
        "-A -t 10.96.0.10:80 -s rr",
        "-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
        "-A -t 203.0.113.7:80 -s rr",
        "-A -t 10.96.0.77:80 -s rr",
        "-a -t 10.96.0.77:80 -r 10.244.1.7:8080 -m -w 1",
        "-A -t 10.96.0.78:80 -s rr",
        "-a -t 10.96.0.78:80 -r 10.244.1.8:8080 -m -w 1",
    ];
    // Addresses are bound after the IPVS batch of the same sync (plan
    // phases), so wait for them too rather than race the daemon.
    d.wait_for("every Service programmed, the refused parts aside", || {
        ipvs_has(&try_sh("ipvsadm -Sn").1, &expected)
            && try_sh("ip -o addr show dev kube-ipvs0")
                .1
                .contains("10.96.0.78/32")
    });
    assert!(!sh("ipvsadm -Sn").contains("224.0.0.5"));
    // The fallback as operators look at it.
    let listing = sh("ipvsadm -Ln");
    assert!(
        listing
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["TCP", "10.96.0.77:80", "rr"]),
        "{listing}"
    );
    assert!(
        try_sh("ipset save")
            .1
            .contains("add KUBE-CLUSTER-IP 10.96.0.78,tcp:80")
    );

    // Health: 200 through several sync periods (2 s) of retried refusals;
    // before, /healthz turned 503 two periods in.
    let end = Instant::now() + Duration::from_secs(10);
    let mut samples = 0;
    while Instant::now() < end {
        let h = get(HEALTHZ, "/healthz");
        assert_eq!(h.as_ref().map(|(s, _)| *s), Some(200), "{h:?}\n{}", d.log());
        let hc = get(&format!("127.0.0.1:{HEALTH_CHECK_PORT}"), "/");
        assert_eq!(hc.as_ref().map(|(s, _)| *s), Some(200), "{hc:?}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(samples >= 10);

    // The metric, per reason; the refused real server is retried with backoff.
    d.wait_for("kernel_refused counted at least twice (a retry)", || {
        failures("kernel_refused") >= 2.0
    });
    assert!(failures("scheduler_unavailable") >= 1.0, "{}", d.log());
    assert_eq!(metric("kube_ipvs_failing_services"), Some(1.0));

    // The Events on the Services concerned, and on no other.
    d.wait_for("the Warning Events", || {
        let bad = event_notes(&api, "bad");
        let twos = event_notes(&api, "twos");
        bad.iter()
            .any(|n| n.contains("the kernel refused add real server 224.0.0.5:8080"))
            && twos.iter().any(|n| {
                n.contains(&format!(
                    "scheduler {} is not available on this node",
                    missing.name
                ))
            })
    });
    assert!(event_notes(&api, "web").is_empty());

    // Other changes keep flowing.
    api.apply(slice("web", &["10.244.1.1", "10.244.1.2"], "lab-node"));
    d.wait_for("web scaled", || {
        try_sh("ipvsadm -Sn")
            .1
            .contains("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1")
    });

    // Fixing the Service clears it.
    api.apply(slice("bad", &["10.244.1.9", "10.244.1.8"], "other-node"));
    d.wait_for("bad programmed once fixed", || {
        try_sh("ipvsadm -Sn")
            .1
            .contains("-a -t 10.96.0.78:80 -r 10.244.1.9:8080 -m -w 1")
    });
    d.wait_for("no Service failing", || {
        metric("kube_ipvs_failing_services") == Some(0.0)
    });
    d.terminate();
    drop(rt);
    drop(missing);
}
