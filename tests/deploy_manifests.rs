//! The manifests in deploy/: every YAML document parses into its k8s-openapi
//! type and has the properties the daemon relies on; the Grafana dashboard is
//! valid JSON and queries only metrics kube-ipvs exports.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const FILES: &[(&str, &str)] = &[
    ("configmap.yaml", include_str!("../deploy/configmap.yaml")),
    ("daemonset.yaml", include_str!("../deploy/daemonset.yaml")),
    ("rbac.yaml", include_str!("../deploy/rbac.yaml")),
];
const DASHBOARD: &str = include_str!("../deploy/grafana-dashboard.json");
const METRICS_RS: &str = include_str!("../src/metrics.rs");
const DOCKERFILE: &str = include_str!("../deploy/Dockerfile");

#[derive(Default)]
struct Manifests {
    daemonsets: Vec<DaemonSet>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
}

/// The document as `T`; a field `T` does not know (a typo, a wrong level)
/// would be dropped silently, so the value must survive the round trip.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, v: serde_json::Value) -> T {
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let t: T =
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: invalid {kind}: {e}"));
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        v,
        "{file}: {kind} has fields its type does not know"
    );
    t
}

/// Every document of every deploy/*.yaml file, typed by its kind.
fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for (file, text) in FILES {
        // The same reader (and limits) as the daemon's manifests; empty documents are skipped.
        kube_ipvs::yaml::for_each_document(text, |_, v| {
            let v = v.unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: a document without kind"))
                .to_string();
            match kind.as_str() {
                "DaemonSet" => m.daemonsets.push(typed(file, v)),
                "ServiceAccount" => m.service_accounts.push(typed(file, v)),
                "ClusterRole" => m.cluster_roles.push(typed(file, v)),
                "ClusterRoleBinding" => m.bindings.push(typed(file, v)),
                "ConfigMap" => m.config_maps.push(typed(file, v)),
                other => panic!("{file}: unexpected kind {other}"),
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|e| match e {});
    }
    m
}

#[test]
fn deploy_dir_has_no_untested_yaml() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    let tested: BTreeSet<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, tested, "every deploy/*.yaml must be in FILES");
}

#[test]
fn one_of_each_kind() {
    let m = manifests();
    assert_eq!(m.daemonsets.len(), 1);
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    assert_eq!(m.bindings.len(), 1);
    assert_eq!(m.config_maps.len(), 1);
    for ns in [
        m.daemonsets[0].metadata.namespace.as_deref(),
        m.service_accounts[0].metadata.namespace.as_deref(),
        m.config_maps[0].metadata.namespace.as_deref(),
    ] {
        assert_eq!(ns, Some("kube-system"));
    }
}

fn daemonset() -> DaemonSet {
    manifests().daemonsets.remove(0)
}

fn main_container(ds: &DaemonSet) -> Container {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = pod
        .containers
        .iter()
        .find(|c| c.name == "kube-ipvs")
        .expect("container kube-ipvs");
    c.clone()
}

/// The container's command line (command, then args).
fn argv(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

#[test]
fn daemonset_pod_runs_in_the_host_network_on_every_node() {
    let ds = daemonset();
    let spec = ds.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("kube-ipvs"));
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations.iter().any(|t| t.key.is_none()
            && t.operator.as_deref() == Some("Exists")
            && t.effect.is_none()),
        "tolerates every taint"
    );
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("CriticalAddonsOnly")
                && t.operator.as_deref() == Some("Exists"))
    );

    // The selector selects the template.
    let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
    for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(labels.and_then(|l| l.get(k)), Some(v), "label {k}");
    }

    let strategy = spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy.rolling_update.as_ref().unwrap().max_unavailable,
        Some(IntOrString::String("10%".into()))
    );
}

#[test]
fn daemonset_main_container() {
    let ds = daemonset();
    let c = main_container(&ds);
    let args = argv(&c);
    assert_eq!(args[0], "kube-ipvs");
    assert!(args.contains(&"--config=/etc/kube-ipvs/config.yaml".to_string()));
    assert!(args.contains(&"--hostname-override=$(NODE_NAME)".to_string()));
    // Only the daemon's own flags, which the binary accepts.
    parse_cli(&args);

    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("env NODE_NAME");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");

    // Not privileged (deploy/README.md "Privileges"): NET_ADMIN and NET_RAW
    // only, seccomp RuntimeDefault, a read-only root filesystem.
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..])
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );

    // The sysctls are written before it starts, by the same binary with the
    // same flags, in the only privileged container, which then exits.
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let inits = pod.init_containers.as_ref().expect("init containers");
    let setup = inits
        .iter()
        .find(|i| argv(i).last().map(String::as_str) == Some("setup-host"))
        .expect("an init container running `kube-ipvs setup-host`");
    let setup_args = argv(setup);
    assert_eq!(setup_args[..setup_args.len() - 1], args[..]);
    use clap::Parser;
    let parsed = kube_ipvs::cli::Cli::try_parse_from(&setup_args)
        .unwrap_or_else(|e| panic!("kube-ipvs rejects {setup_args:?}: {e}"));
    assert!(matches!(
        parsed.command,
        Some(kube_ipvs::cli::Command::SetupHost)
    ));
    assert_eq!(setup.env, c.env);
    assert_eq!(
        setup.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let loads = inits
        .iter()
        .position(|i| argv(i).iter().any(|a| a.ends_with("load-modules.sh")));
    let sets = inits.iter().position(|i| i.name == setup.name);
    assert!(loads < sets, "the IPVS sysctls exist once ip_vs is loaded");

    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/livez"));
    assert_eq!(live.port, IntOrString::Int(10256));
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    // Not ready before the first successful sync; held for minReadySeconds.
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::Int(10256));
    assert!(ds.spec.as_ref().unwrap().min_ready_seconds.unwrap_or(0) >= 10);

    let res = c.resources.as_ref().unwrap();
    let requests = res.requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu"));
    let mem = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| -> u64 {
        let q = &q.expect("memory set").0;
        q.strip_suffix("Mi").expect("memory in Mi").parse().unwrap()
    };
    let request = mem(requests.get("memory"));
    let limit = mem(res.limits.as_ref().and_then(|l| l.get("memory")));
    // The scale benchmark's peak RSS at 10,000 Services x 10 endpoints.
    assert!(
        request as f64 >= 89.2,
        "request {request}Mi under the 10k-Service peak"
    );
    assert!(
        limit >= 2 * request,
        "limit {limit}Mi leaves no headroom over {request}Mi"
    );
}

/// The binary's CLI accepts the command line, as the daemon (no subcommand).
fn parse_cli(args: &[String]) {
    use clap::Parser;
    let cli = kube_ipvs::cli::Cli::try_parse_from(args)
        .unwrap_or_else(|e| panic!("kube-ipvs rejects {args:?}: {e}"));
    assert!(
        cli.command.is_none(),
        "the daemon runs without a subcommand"
    );
}

#[test]
fn init_container_loads_the_modules() {
    let ds = daemonset();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let inits = pod.init_containers.unwrap();
    let init = inits
        .iter()
        .find(|c| argv(c).iter().any(|a| a.ends_with("load-modules.sh")))
        .expect("an init container running load-modules.sh");
    assert_eq!(argv(init)[0], "/usr/local/bin/load-modules.sh");
    assert!(
        DOCKERFILE.contains("scripts/load-modules.sh /usr/local/bin/load-modules.sh"),
        "the image ships the script where the init container runs it"
    );
    // Not privileged: SYS_MODULE and nothing else.
    let sc = init.security_context.as_ref().expect("a securityContext");
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(caps.add.as_deref(), Some(&["SYS_MODULE".to_string()][..]));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let mount = init
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/lib/modules")
        .expect("/lib/modules mounted");
    assert_eq!(mount.read_only, Some(true));
    let volumes = pod.volumes.unwrap();
    let v = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let hp = v.host_path.as_ref().expect("hostPath /lib/modules");
    assert_eq!(hp.path, "/lib/modules");
}

#[test]
fn host_volumes() {
    let ds = daemonset();
    let c = main_container(&ds);
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let volumes = pod.volumes.unwrap();
    let host_path = |mount_path: &str| {
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == mount_path)
            .unwrap_or_else(|| panic!("{mount_path} not mounted"));
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        (m.read_only, v.host_path.clone().expect("a hostPath volume"))
    };
    let (ro, lock) = host_path("/run/xtables.lock");
    assert_ne!(ro, Some(true), "iptables must be able to take the lock");
    assert_eq!(lock.path, "/run/xtables.lock");
    assert_eq!(lock.type_.as_deref(), Some("FileOrCreate"));
    let (ro, modules) = host_path("/lib/modules");
    assert_eq!(ro, Some(true));
    assert_eq!(modules.path, "/lib/modules");
}

/// The file `--config` names is a key of the mounted ConfigMap, and the
/// project's own parser accepts it.
#[test]
fn config_path_is_the_configmaps_key_and_parses() {
    let m = manifests();
    let ds = &m.daemonsets[0];
    let c = main_container(ds);
    let config = argv(&c)
        .iter()
        .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        .expect("--config=PATH");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_vol = vol.config_map.as_ref().expect("a configMap volume");
    let cm = &m.config_maps[0];
    assert_eq!(Some(cm_vol.name.as_str()), cm.metadata.name.as_deref());
    // With items, only the listed keys appear, under their paths.
    let key = match &cm_vol.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .unwrap_or_else(|| panic!("no item with path {file}"))
            .key
            .clone(),
        None => file.to_string(),
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .unwrap_or_else(|| panic!("ConfigMap has no key {key}"));
    let parsed = kube_ipvs::config::parse_str(text).expect("the ConfigMap's config parses");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    parsed
        .values
        .resolve()
        .expect("the ConfigMap's config resolves");
}

#[test]
fn rbac_is_least_privilege() {
    let m = manifests();
    let sa = &m.service_accounts[0];
    assert_eq!(sa.metadata.name.as_deref(), Some("kube-ipvs"));
    let role = &m.cluster_roles[0];
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.non_resource_urls.is_none());
        assert!(rule.resource_names.is_none());
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(
                        !g.contains('*') && !r.contains('*') && !v.contains('*'),
                        "wildcard in {rule:?}"
                    );
                    granted.insert((g.as_str(), r.as_str(), v.as_str()));
                }
            }
        }
    }
    // Exactly the watches (list + watch, no get) and the Recorder's
    // events.k8s.io/v1 Events (create, patch for a series).
    let mut want = BTreeSet::new();
    for (g, r) in [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for v in ["list", "watch"] {
            want.insert((g, r, v));
        }
    }
    for v in ["create", "patch"] {
        want.insert(("events.k8s.io", "events", v));
    }
    assert_eq!(granted, want);

    let b = &m.bindings[0];
    assert_eq!(b.role_ref.kind, "ClusterRole");
    assert_eq!(b.role_ref.name, role.metadata.name.clone().unwrap());
    let subjects = b.subjects.as_ref().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);

    let ds = &m.daemonsets[0];
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
}

/// Metric names in a PromQL expression: identifiers starting with our prefixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if starts_word && (rest.starts_with("kubeproxy_") || rest.starts_with("kube_ipvs_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_uses_only_exported_metrics() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
    }

    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();

    // What /metrics actually exposes (counters gain _total, histograms
    // _bucket/_sum/_count).
    // A label family shows up once it has a member, as after the first sync.
    let metrics = kube_ipvs::metrics::Metrics::new();
    metrics.set_families(vec!["IPv4"]);
    metrics.set_no_local_endpoints(&[("IPv4", 0, 0)]);
    metrics.sync_done(
        std::time::Duration::from_millis(1),
        std::time::SystemTime::now(),
    );
    metrics.queued(std::time::SystemTime::now());
    let now = std::time::SystemTime::now();
    metrics.observe_network_programming(
        now - std::time::Duration::from_secs(1),
        "IPv4",
        now,
        std::time::SystemTime::UNIX_EPOCH,
    );
    let exposition = metrics.encode();
    let exposed = |name: &str| {
        exposition.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
                || l.strip_prefix("# TYPE ")
                    .and_then(|r| r.strip_prefix(name))
                    .is_some_and(|r| r.starts_with(' '))
        })
    };
    for name in &used {
        assert!(
            exposed(name),
            "{name} is not in the exposition:\n{exposition}"
        );
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| METRICS_RS.contains(&format!("\"{b}\"")))
            })
            .unwrap_or(name);
        assert!(
            METRICS_RS.contains(&format!("\"{base}\"")),
            "{name} ({base}) is not registered in src/metrics.rs"
        );
    }

    for required in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_network_programming_duration_seconds_bucket",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kube_ipvs_drift_repairs_total",
        "kube_ipvs_draining_real_servers",
        "kube_ipvs_netlink_operations_total",
        "kube_ipvs_netlink_batches_total",
        "kube_ipvs_last_verification_timestamp_seconds",
    ] {
        assert!(used.contains(required), "the dashboard lacks {required}");
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.5, sum by (le) (rate(kubeproxy_a_bucket{x=\"y\"}[5m]))) + my_kube_ipvs_x + kube_ipvs_y"
        ),
        ["kubeproxy_a_bucket", "kube_ipvs_y"]
    );
}
