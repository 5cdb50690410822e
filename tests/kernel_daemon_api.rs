//! Kernel test of the daemon against a fake API server: follows creates, scaling, type changes and deletes, and keeps kernel state through outages, 410 Gone and kill -9.

mod common;
mod fakeapi;

use std::time::Duration;

use common::daemon::Daemon;
use common::{sh, try_sh};
use fakeapi::{FakeApi, to_json};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:19349";
const HEALTHZ: &str = "127.0.0.1:19356";

fn ipvs() -> String {
    try_sh("ipvsadm -Sn").1
}

fn service(kind: &str) -> Value {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"type": kind, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}
    }))
    .expect("valid Service");
    let mut v = to_json(&s);
    if kind == "ClusterIP" {
        v["spec"]["ports"][0]
            .as_object_mut()
            .map(|p| p.remove("nodePort"));
    }
    v
}

fn slice(ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "lab-node"}))
        .collect();
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web-1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .expect("valid EndpointSlice");
    to_json(&s)
}

fn node() -> Value {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": "lab-node"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.100.10"}]}
    }))
    .expect("valid Node");
    to_json(&n)
}

/// Kernel state that must not move while the API is unreachable.
fn kernel() -> (String, String) {
    (sh("ipvsadm -Sn"), sh("ipset save"))
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn daemon_follows_the_api_and_survives_outages() {
    common::netns();
    let _serial = common::ipvs_serial();
    sh(
        "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
    );
    // Built after netns(): the runtime's threads and sockets live in it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = rt.block_on(FakeApi::start());
    let kc = api.kubeconfig();
    let logs = tempfile::tempdir().unwrap();
    api.apply(node());

    let mut d = Daemon::start(
        &["--kubeconfig", kc.to_str().unwrap()],
        METRICS,
        HEALTHZ,
        logs.path().join("first.log"),
    );
    // Create.
    api.apply(service("ClusterIP"));
    api.apply(slice(&["10.244.1.1", "10.244.1.2"]));
    d.wait_for("the service in IPVS", || {
        let s = ipvs();
        s.contains("-A -t 10.96.0.10:80 -s rr")
            && s.contains("-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1")
            && s.contains("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1")
    });
    d.wait_for("the cluster IP on kube-ipvs0", || {
        try_sh("ip -o addr show dev kube-ipvs0")
            .1
            .contains("10.96.0.10/32")
    });

    // Scale: .1 goes, .3 comes.
    api.apply(slice(&["10.244.1.2", "10.244.1.3"]));
    d.wait_for("the scaled endpoints", || {
        let s = ipvs();
        s.contains("-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1") && !s.contains("10.244.1.1")
    });

    // Type change to NodePort.
    api.apply(service("NodePort"));
    d.wait_for("the node port", || {
        ipvs().contains(":30080 -s rr") && try_sh("ipset save").1.contains("30080")
    });

    // Outage: nothing changes while the API is gone, and it converges after.
    let before = kernel();
    api.stop();
    api.apply(slice(&["10.244.1.2", "10.244.1.3", "10.244.1.4"]));
    std::thread::sleep(Duration::from_secs(15));
    d.assert_running();
    assert_eq!(kernel(), before, "kernel changed during the outage");
    rt.block_on(api.restart());
    d.wait_for("convergence after the outage", || {
        ipvs().contains("-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 1")
    });

    // 410 Gone on every watch: a re-list, nothing deleted, converges.
    std::thread::sleep(Duration::from_secs(3));
    let before = kernel();
    let lists = api.lists(fakeapi::SERVICES);
    api.expire();
    d.wait_for("the re-list after 410", || {
        api.lists(fakeapi::SERVICES) > lists
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(kernel(), before, "a 410 re-list changed the kernel");
    api.apply(slice(&["10.244.1.2", "10.244.1.3", "10.244.1.5"]));
    d.wait_for("convergence after 410", || {
        let s = ipvs();
        s.contains("-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1")
            && !s.contains("10.244.1.4:8080 -m -w 1")
    });

    // kill -9 and restart: nothing changes, then changes apply again.
    std::thread::sleep(Duration::from_secs(3));
    let before = kernel();
    d.kill9();
    assert_eq!(kernel(), before, "kill -9 changed the kernel");
    let mut d = Daemon::start(
        &["--kubeconfig", kc.to_str().unwrap()],
        METRICS,
        HEALTHZ,
        logs.path().join("second.log"),
    );
    let second = logs.path().join("second.log");
    d.wait_for("adoption after kill -9", || {
        std::fs::read_to_string(&second)
            .is_ok_and(|l| l.contains("adopted the existing kernel state"))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(kernel(), before, "restart changed the kernel");

    // Delete.
    api.delete(slice(&[]));
    api.delete(service("NodePort"));
    d.wait_for("the service gone", || !ipvs().contains("10.96.0.10"));
    d.wait_for("the address gone", || {
        !try_sh("ip -o addr show dev kube-ipvs0")
            .1
            .contains("10.96.0.10/32")
    });
    drop(d);
    drop(api);
    rt.shutdown_timeout(Duration::from_secs(1));
}
