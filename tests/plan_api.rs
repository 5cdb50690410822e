//! `kube-ipvs plan --kubeconfig` lists the live objects (paged, with upstream's selectors, reading only) and prints exactly what `plan --manifests` prints for the same objects.

mod fakeapi;

use std::process::{Command, Output};

use fakeapi::{FakeApi, SERVICES, SLICES, kubernetes_service};
use serde_json::{Value, json};

const NODE: &str = "node-a";
/// More than two of the client's 500-object pages.
const SERVICES_N: usize = 1_100;

fn service(i: usize, labels: Value) -> Value {
    let ip = format!("10.96.{}.{}", 10 + i / 250, 1 + i % 250);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": format!("svc-{i}"), "labels": labels,
                     "uid": format!("uid-{i}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30000 + (i % 2000)}]}
    })
}

fn slice(i: usize) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": format!("svc-{i}-abc"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [format!("10.244.{}.{}", i / 250, 1 + i % 250)],
                       "conditions": {"ready": true}, "nodeName": NODE}]
    })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}
    })
}

fn kube_ipvs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-ipvs"))
        .args(args)
        // Not in a cluster: no in-cluster fallback.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run kube-ipvs")
}

fn text(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kube-ipvs failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

#[test]
fn plan_from_the_api_equals_plan_from_the_same_manifests() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt.block_on(FakeApi::start());
    let mut objects = vec![kubernetes_service(), node()];
    for i in 0..SERVICES_N {
        objects.push(service(i, json!({})));
        objects.push(slice(i));
    }
    // Another proxy's Service: the API leaves it out by the label selector,
    // the model by the label (the manifests hold it).
    let other = service(
        SERVICES_N,
        json!({"service.kubernetes.io/service-proxy-name": "other"}),
    );
    objects.push(other);
    for o in &objects {
        api.apply(o.clone());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, list.to_string()).expect("write manifests");

    let kubeconfig = api.kubeconfig();
    let from_api = text(&kube_ipvs(&[
        "plan",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node",
        NODE,
    ]));
    let from_files = text(&kube_ipvs(&[
        "plan",
        "--manifests",
        file.to_str().unwrap(),
        "--node",
        NODE,
    ]));
    assert_eq!(from_api, from_files);
    let vs = from_api.lines().filter(|l| l.starts_with("-A -t")).count();
    // Each Service: its ClusterIP and a NodePort on the node's address; and kubernetes.
    assert_eq!(vs, 2 * SERVICES_N + 1, "{from_api}");
    let last = format!(
        "10.96.{}.{}:80",
        10 + (SERVICES_N - 1) / 250,
        1 + (SERVICES_N - 1) % 250
    );
    assert!(from_api.contains(&last), "the last page is planned too");
    let others = format!(
        "10.96.{}.{}:80",
        10 + SERVICES_N / 250,
        1 + SERVICES_N % 250
    );
    assert!(
        !from_api.contains(&others),
        "another proxy's Service is left out"
    );

    // Reads only, in pages, with upstream's selectors.
    let requests = api.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
    let service_lists: Vec<&String> = requests.iter().filter(|r| r.contains(SERVICES)).collect();
    assert_eq!(service_lists.len(), 3, "{service_lists:?}");
    assert!(service_lists.iter().all(|r| r.contains("limit=500")));
    assert!(service_lists.iter().any(|r| r.contains("continue=")));
    assert_eq!(api.label_selectors(SERVICES).len(), 3);
    assert!(
        api.label_selectors(SLICES)
            .iter()
            .all(|s| s.contains("!service.kubernetes.io/headless"))
    );
}

#[test]
fn without_objects_or_a_reachable_api_the_error_says_what_to_pass() {
    let o = kube_ipvs(&["plan", "--node", NODE]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--manifests") && e.contains("--kubeconfig"),
        "{e}"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt.block_on(FakeApi::start());
    let kubeconfig = api.kubeconfig();
    api.stop();
    let o = kube_ipvs(&["diff", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot list Services"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}
