//! Kernel tests against a real control plane (scripts/control-plane.sh: upstream's etcd, kube-apiserver and EndpointSlice controller) with kube-ipvs as its own ServiceAccount: a Service's life in the kernel, Events, RBAC, a compacting outage, bookmarks and network programming latency.
//!
//! `scripts/test.sh` brings the control plane and its agent up on the host
//! and boots the lab with `--net`; the guest reaches them as 10.0.2.2. This
//! test creates objects as an administrator would (kubectl's requests,
//! through kube's client: kubectl itself takes ~15 s a call under TCG) and
//! plays the kubelet by patching pod status, so the real controller writes
//! the slices.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{client, env};
use common::daemon::{Daemon, PATIENCE, http_get as get, metric_in as metric};
use common::kernel::{Kernel, converge, unchanged_for};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:19369";
const HEALTHZ: &str = "127.0.0.1:19376";
const NS: &str = "kube-ipvs-lab";
const VIP: &str = "10.96.100.10";
/// Shared with the benchmarks: one copy of the uplink's addressing.
#[path = "../examples/lab/uplink.rs"]
mod uplink;
use uplink::{NODE_IP, uplink};

/// The cluster as its administrator sees it; blocking calls for a sync test.
struct Cluster {
    rt: tokio::runtime::Runtime,
    admin: Client,
    kube_ipvs: Client,
}

impl Cluster {
    fn connect() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(client(&env("KUBE_IPVS_CP_ADMIN_KUBECONFIG")));
        let kube_ipvs = rt.block_on(client(&env("KUBE_IPVS_CP_KUBECONFIG")));
        Cluster {
            rt,
            admin,
            kube_ipvs,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.admin.clone(), NS)
    }

    /// A fresh namespace: what a previous run (the other kernel of the
    /// matrix, same control plane) left is deleted first. There is no
    /// namespace controller, so the namespace itself stays.
    fn reset(&self) {
        self.rt.block_on(async {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
            match Api::<Namespace>::all(self.admin.clone())
                .create(&PostParams::default(), &ns)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("create namespace {NS}: {e}"),
            }
            let svcs: Api<Service> = Api::namespaced(self.admin.clone(), NS);
            for s in svcs.list(&ListParams::default()).await.unwrap() {
                let name = s.metadata.name.unwrap();
                svcs.delete(&name, &DeleteParams::default()).await.unwrap();
            }
            let pods: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
            for p in pods.list(&ListParams::default()).await.unwrap() {
                let name = p.metadata.name.unwrap();
                let _ = pods
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            }
        });
        // Pods need the namespace's `default` ServiceAccount (its controller makes it).
        let deadline = Instant::now() + PATIENCE;
        while self
            .rt
            .block_on(
                Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                    self.admin.clone(),
                    NS,
                )
                .get_opt("default"),
            )
            .unwrap()
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "no default ServiceAccount in {NS}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates a Service; returns how far the guest's clock is ahead of the
    /// apiserver's (its creationTimestamp; whole seconds).
    fn create_service(&self, v: Value) -> f64 {
        let s: Service = serde_json::from_value(v).expect("valid Service");
        let made = self
            .rt
            .block_on(self.api::<Service>().create(&PostParams::default(), &s))
            .expect("create Service");
        let stamp = made
            .metadata
            .creation_timestamp
            .expect("creationTimestamp")
            .0;
        let now = k8s_openapi::jiff::Timestamp::now();
        (now - stamp)
            .total(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(f64::NAN)
    }

    fn patch_service(&self, name: &str, patch: Value) {
        self.rt
            .block_on(self.api::<Service>().patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            ))
            .expect("patch Service");
    }

    fn delete_service(&self, name: &str) {
        self.rt
            .block_on(self.api::<Service>().delete(name, &DeleteParams::default()))
            .expect("delete Service");
    }

    /// A pod of `app` on the lab Node, made Running and Ready at `ip` as a
    /// kubelet would report it.
    fn ready_pod(&self, name: &str, app: &str, ip: &str) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "lab-node", "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "c", "image": "registry.invalid/none"}]}
        }))
        .unwrap();
        let pods = self.api::<Pod>();
        self.rt
            .block_on(pods.create(&PostParams::default(), &p))
            .expect("create Pod");
        // The kubelet stamps the transition with its node's clock; the
        // controller's last-change-trigger-time annotation is taken from it.
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        self.rt
            .block_on(pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status)))
            .expect("patch Pod status");
    }

    /// Deletes a pod with `grace` seconds. With no kubelet to confirm, a
    /// graceful delete leaves it terminating, as a real pod is while it drains.
    fn delete_pod(&self, name: &str, grace: u32) {
        self.rt
            .block_on(
                self.api::<Pod>()
                    .delete(name, &DeleteParams::default().grace_period(grace)),
            )
            .expect("delete Pod");
    }

    /// `(ip, ready, serving, terminating)` of every endpoint of `svc`'s slices.
    fn slice_endpoints(&self, svc: &str) -> Vec<(String, bool, bool, bool)> {
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let slices = self
            .rt
            .block_on(self.api::<EndpointSlice>().list(&lp))
            .unwrap();
        let mut out: Vec<_> = slices
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Notes of the Events regarding Service `name`, with their reason.
    fn events_for(&self, name: &str) -> Vec<(String, String)> {
        let evs = self
            .rt
            .block_on(self.api::<Event>().list(&ListParams::default()))
            .unwrap();
        evs.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// What kube-ipvs's own identity may do, asked of the authorizer.
    fn kube_ipvs_can(&self, verb: &str, group: &str, resource: &str) -> bool {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource}}
        }))
        .unwrap();
        let r = self
            .rt
            .block_on(
                Api::<SelfSubjectAccessReview>::all(self.kube_ipvs.clone())
                    .create(&PostParams::default(), &review),
            )
            .expect("SelfSubjectAccessReview");
        r.status.is_some_and(|s| s.allowed)
    }

    /// Every Service and EndpointSlice, and the lab Node, as a multi-document
    /// manifest (JSON documents: YAML reads them), unfiltered: what
    /// `kubectl get -o json` would save.
    fn dump(&self) -> String {
        self.rt.block_on(async {
            let lp = ListParams::default();
            let mut docs: Vec<String> = Vec::new();
            for s in Api::<Service>::all(self.admin.clone())
                .list(&lp)
                .await
                .unwrap()
            {
                docs.push(serde_json::to_string(&s).unwrap());
            }
            for s in Api::<EndpointSlice>::all(self.admin.clone())
                .list(&lp)
                .await
                .unwrap()
            {
                docs.push(serde_json::to_string(&s).unwrap());
            }
            let node = Api::<k8s_openapi::api::core::v1::Node>::all(self.admin.clone())
                .get("lab-node")
                .await
                .unwrap();
            docs.push(serde_json::to_string(&node).unwrap());
            docs.join("\n---\n")
        })
    }

    /// The newest `endpoints.kubernetes.io/last-change-trigger-time` of `svc`'s slices.
    fn trigger_time(&self, svc: &str) -> Option<k8s_openapi::jiff::Timestamp> {
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let slices = self
            .rt
            .block_on(self.api::<EndpointSlice>().list(&lp))
            .unwrap();
        slices
            .items
            .iter()
            .filter_map(|s| {
                s.metadata
                    .annotations
                    .as_ref()?
                    .get("endpoints.kubernetes.io/last-change-trigger-time")?
                    .parse()
                    .ok()
            })
            .max()
    }

    /// Whether the apiserver answers /readyz (2 s timeout).
    fn ready(&self) -> bool {
        self.rt.block_on(async {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            tokio::time::timeout(Duration::from_secs(2), self.admin.request_text(req))
                .await
                .is_ok_and(|r| r.is_ok())
        })
    }
}

/// One request to the host's control-plane agent: (status, body).
fn agent(method: &str, path: &str) -> (u16, String) {
    let addr = env("KUBE_IPVS_CP_AGENT");
    let mut s =
        TcpStream::connect(&addr).unwrap_or_else(|e| panic!("control-plane agent {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    (code, body)
}

fn metrics() -> String {
    get(METRICS, "/metrics").map(|(_, b)| b).unwrap_or_default()
}

/// The sum of every sample of `name` whose labels contain `label` ("" for any).
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A log line reporting a 403: "forbidden" in any case, or 403 as a number
/// of its own (not inside a timestamp such as `27.403597Z`).
fn refused_by_rbac(line: &str) -> bool {
    // The timestamp is the first field.
    let rest = line.split_once(' ').map_or(line, |(_, r)| r);
    rest.to_ascii_lowercase().contains("forbidden")
        || rest
            .split(|c: char| !c.is_ascii_digit())
            .any(|n| n == "403")
}

#[test]
fn a_403_is_found_and_a_timestamp_is_not() {
    assert!(!refused_by_rbac(
        "2026-12-07T04:37:27.403597Z  INFO kube_ipvs::watch: initial list complete kind=Slices"
    ));
    assert!(refused_by_rbac(
        "2026-12-07T04:37:27.1Z  WARN kube_ipvs::watch: watch failed; re-listing with backoff kind=Services reason=forbidden"
    ));
    assert!(refused_by_rbac(
        "2026-12-07T04:37:27.1Z  WARN kube::runtime: watcher error 403: Api(Status { code: 403 })"
    ));
    assert!(!refused_by_rbac(
        "2026-12-07T04:37:27.1Z  INFO synced ops=4031"
    ));
}

fn web(ip: &str, port: &str) -> String {
    format!("-a -t {VIP}:80 -r {ip}:{port} -m -w 1")
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn a_services_life_an_outage_and_rbac_against_the_real_control_plane() {
    let _serial = common::ipvs_serial();
    common::netns();
    uplink().expect("an uplink to the host");
    let cluster = Cluster::connect();
    cluster.reset();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_with_sync_period(
        &["--kubeconfig", &env("KUBE_IPVS_CP_KUBECONFIG")],
        METRICS,
        HEALTHZ,
        dir.path().join("kube-ipvs.log"),
        "30s",
    );

    // Create: two ready pods, then their Service; the real controller writes the slice.
    cluster.ready_pod("web-0", "web", "10.244.1.1");
    cluster.ready_pod("web-1", "web", "10.244.1.2");
    let skew = cluster.create_service(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": VIP, "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    eprintln!("guest clock minus apiserver's creationTimestamp: {skew:.1} s");
    let k = converge(&mut d, "web with two real servers", |k| {
        k.ipvs_has(&format!("-A -t {VIP}:80 -s rr"))
            && k.ipvs_has(&web("10.244.1.1", "8080"))
            && k.ipvs_has(&web("10.244.1.2", "8080"))
            && k.ipset_has(&format!("add KUBE-CLUSTER-IP {VIP},tcp:80"))
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1")
            && k.addr_has(&format!("{VIP}/32"))
    });
    // The hairpin rule for the set (iptables-save of the namespace).
    assert!(
        k.iptables
            .lines()
            .any(|l| l.starts_with("-A KUBE-POSTROUTING")
                && l.ends_with("--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE")),
        "{}",
        k.iptables
    );

    // Scale up.
    cluster.ready_pod("web-2", "web", "10.244.1.3");
    converge(&mut d, "web scaled to three", |k| {
        k.ipvs_has(&web("10.244.1.3", "8080"))
    });

    // A graceful delete: the controller marks the endpoint terminating (not
    // ready, still serving); its real server takes no new connections at
    // once (weight 0, or gone: `web()` is the weight-1 line), and leaves
    // IPVS when its connections are gone (the periodic verification).
    cluster.delete_pod("web-0", 30);
    let deadline = Instant::now() + PATIENCE;
    while !cluster
        .slice_endpoints("web")
        .contains(&("10.244.1.1".into(), false, true, true))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            cluster.slice_endpoints("web")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    converge(&mut d, "web-0 terminating, out of IPVS", |k| {
        !k.ipvs_has(&web("10.244.1.1", "8080"))
            && k.ipvs_has(&web("10.244.1.2", "8080"))
            && k.ipvs_has(&web("10.244.1.3", "8080"))
    });
    // Scale down: web-1 deleted at once; web-0's grace cut short.
    cluster.delete_pod("web-1", 0);
    cluster.delete_pod("web-0", 0);
    converge(&mut d, "web scaled to one", |k| {
        !k.ipvs_has(&web("10.244.1.2", "8080")) && k.ipvs_has(&web("10.244.1.3", "8080"))
    });

    // Headless, another proxy's and a rejected Service, then a type change.
    cluster.create_service(json!({
        "metadata": {"name": "headless"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }));
    cluster.create_service(json!({
        "metadata": {"name": "other-proxy",
                     "labels": {"service.kubernetes.io/service-proxy-name": "someone-else"}},
        "spec": {"clusterIP": "10.96.100.20", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }));
    cluster.create_service(json!({
        "metadata": {"name": "bad", "annotations": {"kube-ipvs.io/scheduler": "bogus"}},
        "spec": {"clusterIP": "10.96.100.30", "selector": {"app": "bad"},
                 "ports": [{"port": 81, "targetPort": 8080}]}
    }));
    cluster.patch_service(
        "web",
        json!({"spec": {"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}}),
    );
    let k = converge(&mut d, "web as a NodePort, bad programmed with rr", |k| {
        k.ipvs_has(&format!("-A -t {NODE_IP}:30080 -s rr"))
            && k.ipvs_has(&format!("-a -t {NODE_IP}:30080 -r 10.244.1.3:8080 -m -w 1"))
            && k.ipset_has("add KUBE-NODE-PORT-TCP 30080")
            && k.ipvs_has("-A -t 10.96.100.30:81 -s rr")
    });
    assert!(
        !k.ipvs.contains("10.96.100.20"),
        "another proxy's Service programmed:\n{}",
        k.ipvs
    );
    assert!(!k.addrs.contains("10.96.100.20"), "{}", k.addrs);
    let headless = cluster
        .rt
        .block_on(cluster.api::<Service>().get("headless"))
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    // Ours only (the cluster may hold others' Services, such as the selftest's).
    let ours: Vec<&str> = k
        .ipvs
        .lines()
        .filter(|l| l.starts_with("-A ") && (l.contains(" 10.96.100.") || l.contains(NODE_IP)))
        .collect();
    assert_eq!(
        ours,
        [
            format!("-A -t {NODE_IP}:30080 -s rr"),
            format!("-A -t {VIP}:80 -s rr"),
            "-A -t 10.96.100.30:81 -s rr".to_string(),
        ],
        "only web (ClusterIP and NodePort) and bad:\n{}",
        k.ipvs
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let evs = cluster.events_for("bad");
        if evs
            .iter()
            .any(|(reason, note)| reason == "ServiceRejected" && note.contains("bogus"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ServiceRejected Event for bad: {evs:?}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // `plan --kubeconfig` (the operator's look before a swap, with
    // kube-ipvs's token) prints exactly what `plan --manifests` prints for
    // the same objects saved from the API.
    let saved = dir.path().join("saved.yaml");
    std::fs::write(&saved, cluster.dump()).unwrap();
    let kc = env("KUBE_IPVS_CP_KUBECONFIG");
    let from_api = common::kube_ipvs(&["plan", "--kubeconfig", &kc, "--node", "lab-node"]);
    let from_files = common::kube_ipvs(&[
        "plan",
        "--manifests",
        saved.to_str().unwrap(),
        "--node",
        "lab-node",
    ]);
    assert_eq!(
        from_api, from_files,
        "plan --kubeconfig differs from plan --manifests"
    );
    assert!(from_api.contains(&format!("{NODE_IP}:30080")), "{from_api}");

    // And back to ClusterIP: the node port goes.
    cluster.patch_service(
        "web",
        json!({"spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
    );
    converge(&mut d, "web back to ClusterIP", |k| {
        !k.ipvs.contains(":30080")
            && !k.ipset_has("add KUBE-NODE-PORT-TCP 30080")
            && k.ipvs_has(&web("10.244.1.3", "8080"))
    });

    // Least privilege, asked of the authorizer as kube-ipvs's own token.
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("update", "", "services"),
        ("patch", "", "services"),
        ("delete", "discovery.k8s.io", "endpointslices"),
    ] {
        assert!(
            !cluster.kube_ipvs_can(verb, group, resource),
            "kube-ipvs can {verb} {resource}"
        );
    }
    for (verb, group, resource) in [
        ("watch", "", "services"),
        ("list", "discovery.k8s.io", "endpointslices"),
        ("create", "events.k8s.io", "events"),
    ] {
        assert!(
            cluster.kube_ipvs_can(verb, group, resource),
            "kube-ipvs cannot {verb} {resource}"
        );
    }

    // Bookmarks: the apiserver sends one about every minute to a watch that
    // asked for them; by now the watches have been open that long.
    let deadline = Instant::now() + PATIENCE;
    while metric_sum(&metrics(), "kube_ipvs_watch_bookmarks_total", "") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no bookmark received:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Quiescent first: a drained real server leaves at the first periodic
    // verification that finds it idle (syncPeriod 30 s here, counted from the
    // last run), which would otherwise be a correct change during the outage.
    let deadline = Instant::now() + PATIENCE;
    while metric(&metrics(), "kube_ipvs_draining_real_servers").is_none_or(|n| n > 0.0) {
        assert!(
            Instant::now() < deadline,
            "real servers still draining:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The outage: etcd compacted, then etcd and the apiserver down for 60 s.
    // Nothing in the kernel may change, and nothing may be written.
    let before = Kernel::read();
    let m = metrics();
    let writes =
        metric(&m, "kube_ipvs_netlink_operations_total").expect("netlink operations metric");
    let expired_before = metric_sum(&m, "kube_ipvs_watch_errors_total", "reason=\"expired\"");
    let (code, body) = agent("POST", "/outage?seconds=60");
    assert_eq!(code, 202, "agent: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.ready() {
        assert!(
            Instant::now() < deadline,
            "the apiserver still answers after the outage began"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let down_at = Instant::now();
    let samples = unchanged_for(
        &mut d,
        &before,
        Duration::from_secs(50),
        Duration::from_secs(5),
        "during the outage",
    );
    assert!(samples >= 5, "{samples} samples");
    assert_eq!(
        metric(&metrics(), "kube_ipvs_netlink_operations_total"),
        Some(writes),
        "kube-ipvs wrote to the kernel while the control plane was down"
    );
    assert_eq!(
        get(HEALTHZ, "/livez").map(|(c, _)| c),
        Some(200),
        "livez during the outage"
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, s) = agent("GET", "/outage");
        if s.starts_with("done") {
            assert_eq!(s, "done 0", "the outage script failed");
            break;
        }
        assert!(Instant::now() < deadline, "the outage never ended: {s}");
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("control plane down for {:?}", down_at.elapsed());

    // Convergence after it: a change made after the restart reaches the
    // kernel, and its network programming latency is measured from the
    // controller's real last-change-trigger-time annotation (the new pod's
    // Ready transition; a terminating pod without a kubelet keeps its old
    // one, so earlier observations may be long).
    // Every family's samples (labelled `ip_family`, as upstream's).
    let latency = |m: &str| {
        (
            metric_sum(
                m,
                "kubeproxy_network_programming_duration_seconds_count",
                "",
            ),
            metric_sum(m, "kubeproxy_network_programming_duration_seconds_sum", ""),
        )
    };
    let (count0, sum0) = latency(&metrics());
    cluster.ready_pod("web-3", "web", "10.244.1.4");
    converge(&mut d, "web-3 after the outage", |k| {
        k.ipvs_has(&web("10.244.1.4", "8080"))
    });
    let m = metrics();
    let expired = metric_sum(&m, "kube_ipvs_watch_errors_total", "reason=\"expired\"");
    assert!(
        expired > expired_before,
        "no 410 Gone on resuming a watch after the compaction:\n{m}\nlog:\n{}",
        d.log()
    );
    let deadline = Instant::now() + PATIENCE;
    let (count, sum) = loop {
        let (c, s) = latency(&metrics());
        if c > count0 {
            break (c - count0, s - sum0);
        }
        assert!(
            Instant::now() < deadline,
            "no network programming latency observed for web-3:\n{}",
            metrics()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The controller's trigger time is its own to pick (after the outage it
    // may be older than the pod's transition); what is checked is that the
    // observation is "programmed minus that annotation", bounded by now.
    let trigger = cluster
        .trigger_time("web")
        .expect("web's slice has a last-change-trigger-time");
    let bound = (k8s_openapi::jiff::Timestamp::now() - trigger)
        .total(k8s_openapi::jiff::Unit::Second)
        .unwrap();
    eprintln!(
        "network programming latency after web-3: {:.2} s ({count} observations); now minus the annotation {trigger}: {bound:.2} s",
        sum / count
    );
    assert_eq!(count, 1.0, "one slice change, one observation");
    // The annotation has whole seconds, and the kernel was read after the sync.
    assert!(
        sum >= 0.0 && sum <= bound + 1.0 && sum >= bound - 20.0,
        "observed {sum:.2} s, but the annotation says {bound:.2} s ago"
    );

    // Delete: everything of web goes.
    cluster.delete_service("web");
    converge(&mut d, "web deleted", |k| {
        !k.ipvs.contains(VIP)
            && !k.addr_has(&format!("{VIP}/32"))
            && !k.ipset_has(&format!("add KUBE-CLUSTER-IP {VIP},tcp:80"))
    });

    let log = d.log();
    let refused: Vec<&str> = log.lines().filter(|l| refused_by_rbac(l)).collect();
    assert!(
        refused.is_empty(),
        "kube-ipvs was refused something by RBAC:\n{refused:#?}"
    );
    d.terminate();
    cluster.reset();
}
