//! The watch layer and sync loop (`watch::watch_all` + `Runner`) against a fake API server: readiness gating, coalescing, 410 Gone and outages.

mod fakeapi;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fakeapi::{FakeApi, NODES, to_json};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_ipvs::changes::{Hooks, Sources};
use kube_ipvs::health::ProxyHealth;
use kube_ipvs::metrics::Metrics;
use kube_ipvs::runner::{Runner, RunnerConfig};
use kube_ipvs::watch::watch_all;
use serde_json::{Value, json};

fn service(name: &str, ip: &str) -> Value {
    let s: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .expect("valid Service");
    to_json(&s)
}

fn slice(svc: &str, ip: &str) -> Value {
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-1"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}]
    }))
    .expect("valid EndpointSlice");
    to_json(&s)
}

fn node(name: &str) -> Value {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}
    }))
    .expect("valid Node");
    to_json(&n)
}

/// What the sync loop programmed: a stand-in for the kernel.
#[derive(Debug, Default)]
struct Programmed {
    syncs: usize,
    /// What the trackers hand over, as Debug text.
    services: BTreeMap<String, String>,
    slices: BTreeMap<String, String>,
    /// Services ever deleted (a re-list or outage must delete nothing).
    deleted: Vec<String>,
}

/// The watches and a sync loop shaped like the daemon's, with a recording sink.
struct Harness {
    programmed: Arc<Mutex<Programmed>>,
    hooks: Hooks,
    sources: Arc<Mutex<Sources>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn harness(api: &FakeApi, min_sync: Duration) -> Harness {
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let mut runner = Runner::new(RunnerConfig::new(min_sync, Duration::from_secs(3600)));
    let hooks = Hooks {
        trigger: runner.trigger(),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(ProxyHealth::new(Duration::from_secs(30))),
    };
    let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "node-a")));
    let programmed = Arc::new(Mutex::new(Programmed::default()));
    let watch = tokio::spawn(watch_all(
        client,
        "node-a".into(),
        sources.clone(),
        hooks.clone(),
    ));
    let (src, prog) = (sources.clone(), programmed.clone());
    let sync = tokio::spawn(async move {
        loop {
            runner.wait().await;
            let batch = src.lock().unwrap().take_batch();
            let Some(batch) = batch else {
                runner.finished(true);
                continue;
            };
            let mut p = prog.lock().unwrap();
            p.syncs += 1;
            for (k, c) in batch.services {
                let name = format!("{}/{}", k.namespace, k.name);
                // The API server's own Service (see fakeapi::kubernetes_service).
                if name == "default/kubernetes" {
                    continue;
                }
                match c.current {
                    Some(s) => {
                        p.services.insert(name, format!("{s:?}"));
                    }
                    None => {
                        p.services.remove(&name);
                        p.deleted.push(name);
                    }
                }
            }
            for (k, c) in batch.slices {
                let name = format!("{}/{}", k.namespace, k.name);
                match c.current {
                    Some(s) => {
                        p.slices.insert(name, format!("{s:?}"));
                    }
                    None => {
                        p.slices.remove(&name);
                    }
                }
            }
            drop(p);
            runner.finished(true);
        }
    });
    Harness {
        programmed,
        hooks,
        sources,
        tasks: vec![watch, sync],
    }
}

impl Harness {
    /// Waits (≤ `secs`) until `f` holds for what was programmed.
    async fn until(&self, secs: u64, what: &str, f: impl Fn(&Programmed) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if f(&self.programmed.lock().unwrap()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; programmed: {:?}",
                self.programmed.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn snapshot(&self) -> (Vec<String>, Vec<String>) {
        let p = self.programmed.lock().unwrap();
        (
            p.services.keys().cloned().collect(),
            p.slices.keys().cloned().collect(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_programmed_until_every_list_completes() {
    let api = FakeApi::start().await;
    api.apply(service("a", "10.0.0.1"));
    api.apply(slice("a", "10.1.0.1"));
    api.apply(node("node-a"));
    api.apply(node("node-b"));
    api.slow(NODES, Duration::from_secs(2));
    let h = harness(&api, Duration::from_millis(10)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(h.programmed.lock().unwrap().syncs, 0, "synced before ready");
    assert!(!h.sources.lock().unwrap().ready());
    assert!(!h.hooks.trigger.is_pending());
    h.until(20, "first sync", |p| p.syncs >= 1).await;
    let p = h.programmed.lock().unwrap();
    assert_eq!(p.services.len(), 1);
    assert_eq!(p.slices.len(), 1);
    drop(p);
    let reqs = api.requests().join("\n");
    assert!(
        reqs.contains("fieldSelector=metadata.name%3Dnode-a"),
        "{reqs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_coalesces_into_a_few_syncs() {
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    let h = harness(&api, Duration::from_millis(500)).await;
    h.until(20, "first sync", |p| p.syncs >= 1).await;
    let before = h.programmed.lock().unwrap().syncs;
    for i in 0..1200u32 {
        let ip = format!("10.{}.{}.{}", 2 + i / 65536, (i / 256) % 256, i % 256);
        api.apply(service(&format!("s{i}"), &ip));
        if i % 2 == 0 {
            api.apply(slice(&format!("s{i}"), "10.200.0.1"));
        }
    }
    h.until(30, "1200 services", |p| p.services.len() == 1200)
        .await;
    h.until(30, "600 slices", |p| p.slices.len() == 600).await;
    let syncs = h.programmed.lock().unwrap().syncs - before;
    assert!((1..=8).contains(&syncs), "1,800 events took {syncs} syncs");
    let changes = h.hooks.metrics.service_changes_total.get();
    assert!(changes >= 1200, "{changes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_without_deleting_anything() {
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    for i in 0..20 {
        api.apply(service(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
    }
    let h = harness(&api, Duration::from_millis(50)).await;
    h.until(20, "20 services", |p| p.services.len() == 20).await;
    let lists = api.lists(fakeapi::SERVICES);
    api.expire();
    // Changes after the 410 arrive through the re-list.
    api.apply(service("late", "10.0.1.1"));
    api.delete(service("s0", "10.0.0.1"));
    h.until(30, "re-list", |p| {
        p.services.contains_key("default/late") && !p.services.contains_key("default/s0")
    })
    .await;
    assert!(api.lists(fakeapi::SERVICES) > lists, "{:?}", api.requests());
    let p = h.programmed.lock().unwrap();
    assert_eq!(p.deleted, vec!["default/s0".to_string()], "only s0 deleted");
    assert_eq!(p.services.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_changes_nothing_and_converges_after() {
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    for i in 0..5 {
        api.apply(service(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
    }
    api.apply(slice("s1", "10.1.0.1"));
    let h = harness(&api, Duration::from_millis(50)).await;
    h.until(20, "5 services", |p| {
        p.services.len() == 5 && p.slices.len() == 1
    })
    .await;
    let before = h.snapshot();
    api.stop();
    // Changes made while the server is unreachable are seen after it returns.
    api.apply(service("during", "10.0.1.1"));
    api.delete(service("s4", "10.0.0.5"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.snapshot(), before, "state changed during the outage");
    assert!(h.programmed.lock().unwrap().deleted.is_empty());
    api.restart().await;
    h.until(60, "convergence after the outage", |p| {
        p.services.contains_key("default/during") && !p.services.contains_key("default/s4")
    })
    .await;
    let p = h.programmed.lock().unwrap();
    assert_eq!(p.deleted, vec!["default/s4".to_string()]);
    assert_eq!(p.services.len(), 5);
    assert_eq!(p.slices.len(), 1, "slices untouched by the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_after_an_outage_deletes_nothing_until_a_second_list_agrees() {
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    for i in 0..4 {
        api.apply(service(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
    }
    let h = harness(&api, Duration::from_millis(50)).await;
    h.until(20, "the services", |p| p.services.len() == 4).await;
    let before = h.snapshot();
    api.stop();
    // A broken or restored-from-empty API server comes back with nothing.
    for i in 0..4 {
        api.delete(service(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
    }
    api.delete(fakeapi::kubernetes_service());
    // History compacted meanwhile: the watch cannot resume, it re-lists.
    api.expire();
    api.restart().await;
    let back = std::time::Instant::now();
    // The re-list completes within a second or two; the hold lasts until the
    // second list, asked for 10 s after it.
    while back.elapsed() < Duration::from_secs(7) {
        assert_eq!(
            h.snapshot(),
            before,
            "a single empty list deleted something"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.programmed.lock().unwrap().deleted.is_empty());
    assert_eq!(h.hooks.metrics.held_lists_total.get(), 1);
    // The second list agrees: the deletions go ahead.
    h.until(40, "the confirmed deletions", |p| p.services.is_empty())
        .await;
    assert_eq!(h.programmed.lock().unwrap().deleted.len(), 4);
    assert!(
        api.lists("/api/v1/services") >= 3,
        "initial, re-list, confirming list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_service_gets_a_warning_event() {
    let api = FakeApi::start().await;
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let rec = kube_ipvs::daemon::recorder(client, "node-a");
    let key = kube_ipvs::changes::ObjKey {
        namespace: "default".into(),
        name: "bad".into(),
    };
    kube_ipvs::daemon::publish_warning(&rec, &key, Some("u-1"), "invalid clusterIP 10.0.0.300")
        .await
        .expect("event posted");
    let evs = api.events();
    assert_eq!(evs.len(), 1, "{:?}", api.requests());
    let ev = &evs[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "ServiceRejected");
    assert_eq!(ev["note"], "invalid clusterIP 10.0.0.300");
    assert_eq!(ev["reportingController"], "kube-ipvs");
    assert_eq!(ev["reportingInstance"], "node-a");
    assert_eq!(ev["regarding"]["kind"], "Service");
    assert_eq!(ev["regarding"]["name"], "bad");
    assert_eq!(ev["regarding"]["uid"], "u-1");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/events.k8s.io/v1/namespaces/default/events")),
        "{:?}",
        api.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_on_lists_relists_with_backoff_and_deletes_nothing() {
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    for i in 0..5 {
        api.apply(service(&format!("s{i}"), &format!("10.0.0.{}", i + 1)));
    }
    let h = harness(&api, Duration::from_millis(50)).await;
    h.until(20, "5 services", |p| p.services.len() == 5).await;
    let lists = api.lists(fakeapi::SERVICES);
    // The watch expires, and the next three lists answer 410 Gone too.
    api.fail_lists(fakeapi::SERVICES, 3);
    api.expire();
    api.apply(service("late", "10.0.1.1"));
    api.delete(service("s0", "10.0.0.1"));
    h.until(60, "the re-list after three 410s", |p| {
        p.services.contains_key("default/late") && !p.services.contains_key("default/s0")
    })
    .await;
    let times = api.list_times(fakeapi::SERVICES);
    let relists = &times[lists..];
    assert!(relists.len() >= 4, "{:?}", api.requests());
    // kube's default backoff (client-go's): 800 ms, doubling, with jitter.
    for w in relists.windows(2).take(3) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(700), "re-listed after {gap:?}");
    }
    let p = h.programmed.lock().unwrap();
    assert_eq!(p.deleted, vec!["default/s0".to_string()], "only s0 deleted");
    assert_eq!(p.services.len(), 5);
}

fn labelled(mut obj: Value, labels: Value) -> Value {
    for (k, v) in labels.as_object().unwrap() {
        obj["metadata"]["labels"][k] = v.clone();
    }
    obj
}

fn unlabelled(mut obj: Value, key: &str) -> Value {
    if let Some(l) = obj["metadata"]["labels"].as_object_mut() {
        l.remove(key);
    }
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_are_sent_and_keep_other_proxies_and_headless_out() {
    const PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
    const HEADLESS: &str = "service.kubernetes.io/headless";
    let api = FakeApi::start().await;
    api.apply(node("node-a"));
    let other = labelled(
        service("other", "10.0.0.2"),
        json!({PROXY_NAME: "someone-else"}),
    );
    api.apply(service("mine", "10.0.0.1"));
    api.apply(other.clone());
    api.apply(slice("mine", "10.1.0.1"));
    api.apply(labelled(
        slice("other", "10.1.0.2"),
        json!({PROXY_NAME: "someone-else"}),
    ));
    api.apply(labelled(slice("hl", "10.1.0.3"), json!({HEADLESS: ""})));
    let h = harness(&api, Duration::from_millis(50)).await;
    h.until(20, "the first sync", |p| p.syncs >= 1).await;
    // The harness has no client-side filter: only the server's selection arrives.
    assert_eq!(
        h.snapshot(),
        (
            vec!["default/mine".to_string()],
            vec!["default/mine-1".to_string()]
        )
    );
    for path in [fakeapi::SERVICES, fakeapi::SLICES] {
        let sels = api.label_selectors(path);
        assert!(!sels.is_empty(), "no request of {path}");
        for s in sels {
            let mut reqs: Vec<&str> = s.split(',').collect();
            reqs.sort_unstable();
            assert_eq!(
                reqs,
                vec![&format!("!{HEADLESS}")[..], &format!("!{PROXY_NAME}")]
            );
        }
    }

    // Objects moving in and out of the selection, through the open watches.
    api.apply(labelled(
        service("mine", "10.0.0.1"),
        json!({PROXY_NAME: "someone-else"}),
    ));
    api.apply(unlabelled(other, PROXY_NAME));
    api.apply(labelled(slice("mine", "10.1.0.1"), json!({HEADLESS: ""})));
    h.until(20, "the selection to follow the labels", |p| {
        p.services.keys().eq(["default/other"]) && p.slices.is_empty()
    })
    .await;
    assert_eq!(
        h.programmed.lock().unwrap().deleted,
        vec!["default/mine".to_string()]
    );
}
