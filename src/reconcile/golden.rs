//! Golden tests: manifests in tests/golden/<case>/input.yaml → the exact first
//! plan and the resulting `ipvsadm -Sn`, `ipset save` and iptables-restore text.
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files.

use std::fmt::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

use super::kernel::KernelState;
use super::proxier::Proxier;
use crate::model::config::ProxyConfig;
use crate::model::node::NodeInfo;

fn run_case(dir: &Path) -> Vec<(&'static str, String)> {
    let input = std::fs::read_to_string(dir.join("input.yaml")).expect("input.yaml");
    let mut node = NodeInfo::default();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&input) {
        let v = serde_yaml::Value::deserialize(doc).expect("yaml");
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("Node") => {
                node = NodeInfo::from_node(&serde_yaml::from_value::<Node>(v).expect("Node"))
            }
            Some("Service") => {
                services.push(serde_yaml::from_value::<Service>(v).expect("Service"))
            }
            Some("EndpointSlice") => {
                slices.push(serde_yaml::from_value::<EndpointSlice>(v).expect("EndpointSlice"))
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    let cfg = ProxyConfig {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        ..Default::default()
    };
    let mut p = Proxier::new(cfg, node);
    for s in &services {
        p.upsert_service(s);
    }
    for s in &slices {
        p.upsert_slice(s);
    }
    let plan = p.sync(0);
    assert!(
        plan.internal_errors.is_empty(),
        "{:?}",
        plan.internal_errors
    );
    let mut k = KernelState::default();
    k.apply_all(&plan.ops)
        .expect("strict kernel accepts the plan");
    let mut plan_txt = String::new();
    for op in &plan.ops {
        let _ = writeln!(plan_txt, "{op}");
    }
    for (svc, ws) in p.warnings() {
        for w in ws {
            let _ = writeln!(plan_txt, "# warning {svc}: {w}");
        }
    }
    let mut health: Vec<_> = p.health_checks().iter().collect();
    health.sort_by_key(|(id, _)| id.to_string());
    for (id, h) in health {
        let _ = writeln!(
            plan_txt,
            "# health {id}: port {} local endpoints {}",
            h.node_port, h.local_endpoints
        );
    }
    vec![
        ("plan.txt", plan_txt),
        ("ipvsadm.txt", k.ipvsadm_save()),
        ("ipset.txt", k.ipset_save()),
        ("iptables.txt", k.iptables_save()),
    ]
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    let mut failures = Vec::new();
    for dir in dirs {
        for (file, got) in run_case(&dir) {
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &got).expect("write golden");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != got {
                failures.push(format!("{}: differs; got:\n{got}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
