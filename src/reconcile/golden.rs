//! Golden tests: manifests in tests/golden/<case>/input.yaml → the exact first
//! plan and the resulting `ipvsadm -Sn`, `ipset save` and iptables-restore text.
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files.

use std::fmt::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::proxier::Proxier;
use crate::model::config::ProxyConfig;
use crate::model::node::NodeInfo;
use crate::state::KernelState;

enum Doc {
    Node(NodeInfo),
    Service(Box<Service>),
    Slice(Box<EndpointSlice>),
    /// `{kind: Delete, object: Service|EndpointSlice, namespace, name}`.
    Delete(String, String, String),
}

fn read_docs(path: &Path) -> Vec<Doc> {
    let input = std::fs::read_to_string(path).expect("yaml file");
    let mut out = Vec::new();
    crate::yaml::for_each_document(&input, |_, v| {
        let v = v.expect("yaml");
        let s = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        out.push(match v.get("kind").and_then(|k| k.as_str()) {
            Some("Node") => Doc::Node(NodeInfo::from_node(
                &serde_json::from_value::<Node>(v).expect("Node"),
            )),
            Some("Service") => Doc::Service(Box::new(serde_json::from_value(v).expect("Service"))),
            Some("EndpointSlice") => {
                Doc::Slice(Box::new(serde_json::from_value(v).expect("EndpointSlice")))
            }
            Some("Delete") => Doc::Delete(s("object"), s("namespace"), s("name")),
            other => panic!("unexpected kind {other:?}"),
        });
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|e| match e {});
    out
}

fn feed(p: &mut Proxier, docs: &[Doc]) {
    for d in docs {
        match d {
            Doc::Node(n) => p.set_node(n.clone()),
            Doc::Service(s) => p.upsert_service(s),
            Doc::Slice(s) => p.upsert_slice(s),
            Doc::Delete(o, ns, name) if o == "Service" => p.delete_service(ns, name),
            Doc::Delete(_, ns, name) => p.delete_slice(ns, name),
        }
    }
}

fn plan_text(p: &Proxier, plan: &super::plan::Plan) -> String {
    let mut t = String::new();
    for op in &plan.ops {
        let _ = writeln!(t, "{op}");
    }
    for (svc, ws) in p.warnings() {
        for w in ws {
            let _ = writeln!(t, "# warning {svc}: {w}");
        }
    }
    let mut health: Vec<_> = p.health_checks().iter().collect();
    health.sort_by_key(|(id, _)| id.to_string());
    for (id, h) in health {
        let _ = writeln!(
            t,
            "# health {id}: port {} local endpoints {}",
            h.node_port, h.local_endpoints
        );
    }
    t
}

/// input.yaml → first plan and state; optional update.yaml (applied 60 s
/// later) → the incremental plan, and the state once drains finished.
fn run_case(dir: &Path) -> Vec<(&'static str, String)> {
    let docs = read_docs(&dir.join("input.yaml"));
    let node = docs
        .iter()
        .find_map(|d| match d {
            Doc::Node(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let cfg = ProxyConfig {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        ..Default::default()
    };
    let mut p = Proxier::new(cfg, node);
    feed(&mut p, &docs);
    let plan = p.sync(0);
    assert!(
        plan.internal_errors.is_empty(),
        "{:?}",
        plan.internal_errors
    );
    let mut k = KernelState::default();
    k.apply_all(&plan.ops)
        .expect("strict kernel accepts the plan");
    let mut out = vec![
        ("plan.txt", plan_text(&p, &plan)),
        ("ipvsadm.txt", k.ipvsadm_save()),
        ("ipset.txt", k.ipset_save()),
        ("iptables.txt", k.iptables_save()),
    ];
    let update = dir.join("update.yaml");
    if update.exists() {
        feed(&mut p, &read_docs(&update));
        let plan = p.sync(60);
        assert!(
            plan.internal_errors.is_empty(),
            "{:?}",
            plan.internal_errors
        );
        k.apply_all(&plan.ops)
            .expect("strict kernel accepts the update");
        let mut t = plan_text(&p, &plan);
        // Drains finish once their connections are gone.
        let drained = p.tick(120, |_, _| Some(crate::state::ConnCounts::default()));
        k.apply_all(&drained.ops)
            .expect("strict kernel accepts the drain");
        for op in &drained.ops {
            let _ = writeln!(t, "# after drain: {op}");
        }
        assert_eq!(k, p.desired_state());
        out.push(("update-plan.txt", t));
        out.push(("update-ipvsadm.txt", k.ipvsadm_save()));
    }
    out
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
