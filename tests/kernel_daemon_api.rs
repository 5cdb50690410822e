//! Kernel tests of the daemon against a fake API server: each step of a Service's life checked with ipvsadm, ipset, iptables-save and ip addr, health-check node ports and metrics scraped, and the kernel state kept through a minute-long outage, 410 Gone and kill -9.

mod common;
mod fakeapi;

use std::net::TcpStream;
use std::time::Duration;

use common::daemon::{Daemon, http_get as get, metric_in as metric};
use common::kernel::{Kernel, converge, unchanged_for};
use common::sh;
use fakeapi::{FakeApi, to_json};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:19349";
const HEALTHZ: &str = "127.0.0.1:19356";
const HEALTH_CHECK_PORT: u16 = 30999;

/// The Service `web` as `kind`: ClusterIP, NodePort, or a LoadBalancer with
/// externalTrafficPolicy Local, a health-check node port and source ranges
/// that exclude the node.
fn service(kind: &str) -> Value {
    let mut spec = json!({"type": kind, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                          "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    if kind != "ClusterIP" {
        spec["ports"][0]["nodePort"] = 30080.into();
    }
    let mut status = json!({});
    if kind == "LoadBalancer" {
        spec["externalTrafficPolicy"] = "Local".into();
        spec["healthCheckNodePort"] = HEALTH_CHECK_PORT.into();
        spec["loadBalancerSourceRanges"] = json!(["198.51.100.0/24"]);
        status = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}});
    }
    let s: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": spec,
        "status": status,
    }))
    .expect("valid Service");
    to_json(&s)
}

/// The slice of `web` with ready endpoints `(ip, node)`.
fn slice_on(eps: &[(&str, &str)]) -> Value {
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
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

/// Another slice of `web`, labelled so that upstream's selector leaves it out.
fn foreign_slice(name: &str, label: &str, ip: &str) -> Value {
    let mut v = slice(&[ip]);
    v["metadata"]["name"] = name.into();
    v["metadata"]["labels"][label] = "someone-else".into();
    v
}

/// The slice with every endpoint on this node.
fn slice(ips: &[&str]) -> Value {
    let eps: Vec<(&str, &str)> = ips.iter().map(|ip| (*ip, "lab-node")).collect();
    slice_on(&eps)
}

/// The #119656 rule dropping the node's own traffic to the LB IP.
fn lb_out_filter(k: &Kernel) -> bool {
    k.iptables.lines().any(|l| {
        l.starts_with("-A KUBE-IPVS-OUT-FILTER") && l.contains("203.0.113.7") && l.contains("DROP")
    })
}

fn no_local(policy: &str) -> Option<f64> {
    let (_, body) = get(METRICS, "/metrics")?;
    metric(
        &body,
        &format!(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{ip_family=\"IPv4\",traffic_policy=\"{policy}\"}}"
        ),
    )
}

/// The health-check node port's answer: (status, localEndpoints, serviceProxyHealthy).
fn health_check(ip: &str) -> Option<(u16, u64, bool)> {
    let (code, body) = get(&format!("{ip}:{HEALTH_CHECK_PORT}"), "/")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["service"]["namespace"], "default", "{body}");
    assert_eq!(v["service"]["name"], "web", "{body}");
    Some((
        code,
        v["localEndpoints"].as_u64()?,
        v["serviceProxyHealthy"].as_bool()?,
    ))
}

/// A network namespace with the node address, a runtime in it, the fake API
/// server holding the Node, and the daemon watching it.
struct Lab {
    rt: tokio::runtime::Runtime,
    api: std::sync::Arc<FakeApi>,
    logs: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        sh(
            "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
        );
        // Built after netns(): the runtime's threads and sockets live in it.
        let (rt, api) = fakeapi::start_for_lab();
        Lab {
            rt,
            api,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    fn daemon(&self, log: &str) -> Daemon {
        let kc = self.api.kubeconfig();
        Daemon::start(
            &["--kubeconfig", kc.to_str().unwrap()],
            METRICS,
            HEALTHZ,
            self.logs.path().join(log),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn daemon_programs_each_step_of_a_service_from_the_api() {
    common::netns();
    let _serial = common::ipvs_serial();
    let lab = Lab::new();
    let api = &lab.api;
    let mut d = lab.daemon("steps.log");

    // Create. Two more slices of web carry the headless and proxy-name
    // labels: only the API server's selection keeps them out (the proxier
    // takes any slice naming web), so their endpoints must never show.
    api.apply(foreign_slice(
        "web-headless",
        "service.kubernetes.io/headless",
        "10.244.9.1",
    ));
    api.apply(foreign_slice(
        "web-elsewhere",
        "service.kubernetes.io/service-proxy-name",
        "10.244.9.2",
    ));
    api.apply(service("ClusterIP"));
    api.apply(slice(&["10.244.1.1", "10.244.1.2"]));
    let created = converge(&mut d, "the created service", |k| {
        k.ipvs_has("-A -t 10.96.0.10:80 -s rr")
            && k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1")
            && k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1")
            && k.ipset_has("add KUBE-CLUSTER-IP 10.96.0.10,tcp:80")
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1")
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2")
            && k.addr_has("10.96.0.10/32")
    });
    assert!(
        created.iptables.contains("-j KUBE-SERVICES")
            && created.iptables.contains("--match-set KUBE-CLUSTER-IP"),
        "{}",
        created.iptables
    );
    assert!(!lb_out_filter(&created), "{}", created.iptables);
    assert!(!created.ipvs.contains("10.244.9."), "{}", created.ipvs);
    assert!(!created.ipset.contains("10.244.9."), "{}", created.ipset);
    assert!(!created.ipvs.contains(":30080"), "{}", created.ipvs);
    assert!(!created.ipset.contains("KUBE-NODE-PORT-TCP 30080"));

    // Scale: .1 goes (drained, then deleted: it has no connections), .3 and .4 come.
    api.apply(slice(&["10.244.1.2", "10.244.1.3", "10.244.1.4"]));
    let scaled = converge(&mut d, "the scaled endpoints", |k| {
        k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1")
            && k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 1")
            && !k.ipvs.contains("10.244.1.1:")
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.4,tcp:8080,10.244.1.4")
            && !k.ipset.contains("10.244.1.1,")
    });
    assert!(scaled.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1"));
    assert!(!scaled.ipvs.contains("10.244.9."), "{}", scaled.ipvs);
    assert_eq!(scaled.addrs, created.addrs, "addresses moved on a scale");
    assert_eq!(
        scaled.iptables, created.iptables,
        "iptables moved on a scale"
    );

    // Type change: a LoadBalancer with externalTrafficPolicy Local.
    api.apply(service("LoadBalancer"));
    let lb = converge(&mut d, "the LoadBalancer", |k| {
        k.ipvs_has("-A -t 192.168.100.10:30080 -s rr")
            && k.ipvs_has("-a -t 192.168.100.10:30080 -r 10.244.1.4:8080 -m -w 1")
            && k.ipvs_has("-A -t 203.0.113.7:80 -s rr")
            && k.ipvs_has("-a -t 203.0.113.7:80 -r 10.244.1.3:8080 -m -w 1")
            && k.ipset_has("add KUBE-NODE-PORT-TCP 30080")
            && k.ipset_has("add KUBE-NODE-PORT-LOCAL-TCP 30080")
            && k.ipset_has("add KUBE-LOAD-BALANCER 203.0.113.7,tcp:80")
            && k.ipset_has("add KUBE-LOAD-BALANCER-LOCAL 203.0.113.7,tcp:80")
            && k.ipset_has("add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.7,tcp:80,198.51.100.0/24")
            && k.ipset_has(&format!(
                "add KUBE-HEALTH-CHECK-NODE-PORT {HEALTH_CHECK_PORT}"
            ))
            && lb_out_filter(k)
            && k.addr_has("203.0.113.7/32")
    });
    assert!(lb.addr_has("10.96.0.10/32"));
    // The health-check node port, on every address (nodePortAddresses unset).
    d.wait_for("the health-check node port", || {
        health_check("127.0.0.1") == Some((200, 3, true))
    });
    assert_eq!(health_check("192.168.100.10"), Some((200, 3, true)));
    d.wait_for("no_local_endpoints_total 0", || {
        no_local("external") == Some(0.0) && no_local("internal") == Some(0.0)
    });

    // Endpoints move off this node: external traffic has no local endpoint.
    api.apply(slice_on(&[
        ("10.244.2.1", "node-b"),
        ("10.244.2.2", "node-b"),
    ]));
    let remote = converge(&mut d, "the endpoints on another node", |k| {
        k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1")
            && !k.ipvs.contains("-a -t 203.0.113.7:80")
            && !k.ipvs.contains("-a -t 192.168.100.10:30080")
            && !k.ipset.contains("KUBE-LOOP-BACK 10.")
    });
    assert!(
        remote.ipvs_has("-A -t 203.0.113.7:80 -s rr"),
        "{}",
        remote.ipvs
    );
    d.wait_for("the health check failing", || {
        health_check("127.0.0.1") == Some((503, 0, true))
    });
    d.wait_for("no_local_endpoints_total{external} 1", || {
        no_local("external") == Some(1.0) && no_local("internal") == Some(0.0)
    });

    // Delete.
    api.delete(slice(&[]));
    api.delete(service("LoadBalancer"));
    let gone = converge(&mut d, "the service gone", |k| {
        !k.ipvs.contains("10.96.0.10")
            && !k.ipvs.contains("203.0.113.7")
            && !k.ipvs.contains(":30080")
            && !k.ipset.contains("10.96.0.10")
            && !k.ipset.contains("203.0.113.7")
            && !k.ipset.contains("30080")
            && !k.ipset.contains(&HEALTH_CHECK_PORT.to_string())
            && !lb_out_filter(k)
            && !k.addr_has("10.96.0.10/32")
            && !k.addr_has("203.0.113.7/32")
    });
    assert_eq!(gone.iptables, created.iptables, "iptables after delete");
    d.wait_for("the health-check node port closed", || {
        TcpStream::connect(("127.0.0.1", HEALTH_CHECK_PORT)).is_err()
    });
    d.wait_for("no_local_endpoints_total back to 0", || {
        no_local("external") == Some(0.0)
    });
    d.terminate();
    drop(lab);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn daemon_keeps_the_kernel_through_api_outage_410_and_kill() {
    common::netns();
    let _serial = common::ipvs_serial();
    let lab = Lab::new();
    let api = &lab.api;
    let mut d = lab.daemon("first.log");
    api.apply(service("NodePort"));
    api.apply(slice(&["10.244.1.1", "10.244.1.2"]));
    converge(&mut d, "the service", |k| {
        k.ipvs_has("-a -t 192.168.100.10:30080 -r 10.244.1.2:8080 -m -w 1")
            && k.ipset_has("add KUBE-NODE-PORT-TCP 30080")
            && k.addr_has("10.96.0.10/32")
    });
    // Settled: a few verification passes (every 2 s) change nothing.
    std::thread::sleep(Duration::from_secs(5));

    // The API server gone for a full minute: the kernel stays as it was,
    // while a change made meanwhile waits.
    let before = Kernel::read();
    api.stop();
    api.apply(slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"]));
    let samples = unchanged_for(
        &mut d,
        &before,
        Duration::from_secs(60),
        Duration::from_secs(5),
        "during the outage",
    );
    eprintln!("outage: {samples} kernel samples over 60 s, all unchanged");
    lab.rt.block_on(api.restart());
    let after = converge(&mut d, "convergence after the outage", |k| {
        k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1")
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.3,tcp:8080,10.244.1.3")
    });
    assert_eq!(after.addrs, before.addrs);
    assert_eq!(after.iptables, before.iptables);

    // 410 Gone on every watch, and on the next two lists of Services: the
    // re-list is retried with backoff; the kernel unchanged, then a change applies.
    std::thread::sleep(Duration::from_secs(3));
    let before = Kernel::read();
    let lists = api.lists(fakeapi::SERVICES);
    api.fail_lists(fakeapi::SERVICES, 2);
    api.expire();
    d.wait_for("a successful re-list after 410s", || {
        api.lists(fakeapi::SERVICES) > lists + 2
    });
    unchanged_for(
        &mut d,
        &before,
        Duration::from_secs(6),
        Duration::from_secs(2),
        "after 410 Gone",
    );
    api.apply(slice(&["10.244.1.1", "10.244.1.2", "10.244.1.5"]));
    converge(&mut d, "convergence after 410", |k| {
        k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1")
            && !k.ipvs.contains("10.244.1.3:")
            && !k.ipset.contains("10.244.1.3,")
    });

    // kill -9: the kernel unchanged while it is dead; a restart adopts it
    // with no difference and changes nothing; a change then applies.
    std::thread::sleep(Duration::from_secs(3));
    let before = Kernel::read();
    d.kill9();
    unchanged_for(
        &mut d,
        &before,
        Duration::from_secs(6),
        Duration::from_secs(2),
        "after kill -9",
    );
    let mut d = lab.daemon("second.log");
    d.wait_for("adoption after kill -9", || {
        lab.log("second.log")
            .contains("adopted the existing kernel state")
    });
    let log = lab.log("second.log");
    let adopted = log
        .lines()
        .find(|l| l.contains("adopted the existing kernel state"))
        .unwrap_or_default();
    assert!(adopted.contains("differences=0"), "{log}");
    unchanged_for(
        &mut d,
        &before,
        Duration::from_secs(6),
        Duration::from_secs(2),
        "after the restart",
    );
    api.apply(slice(&[
        "10.244.1.1",
        "10.244.1.2",
        "10.244.1.5",
        "10.244.1.6",
    ]));
    converge(&mut d, "convergence after the restart", |k| {
        k.ipvs_has("-a -t 10.96.0.10:80 -r 10.244.1.6:8080 -m -w 1")
            && k.ipset_has("add KUBE-LOOP-BACK 10.244.1.6,tcp:8080,10.244.1.6")
    });
    d.terminate();
    drop(lab);
}
