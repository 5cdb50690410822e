//! Fuzzes `--manifests` input: YAML or JSON documents loaded into Services,
//! EndpointSlices and Nodes, each parsed by the model, then a whole proxier
//! sync and the plan text, so the model and reconciler see arbitrary objects.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use kube_ipvs::commands::oneshot::plan_text;
use kube_ipvs::model::{ProxyConfig, parse_service, parse_slice};
use kube_ipvs::node::{node_info, proxier};
use kube_ipvs::source::manifests::{Manifests, load_str};
use libfuzzer_sys::fuzz_target;

const NODE: &str = "node-a";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut m = Manifests::default();
    if load_str(text, Path::new("fuzz.yaml"), &mut m).is_err() {
        return;
    }
    let cfg = ProxyConfig::default();
    for svc in &m.services {
        let _ = parse_service(svc, &cfg);
    }
    for slice in &m.slices {
        let _ = parse_slice(slice, NODE);
    }
    // The node's own addresses when no Node object names it (never read from this machine).
    let node = node_info(NODE, &m, || {
        vec![
            IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 10)),
        ]
    });
    let mut p = proxier(cfg, node, &m);
    let plan = p.sync(0);
    // The model rejecting its own operations is a bug whatever the input.
    assert!(
        plan.internal_errors.is_empty(),
        "{:?}",
        plan.internal_errors
    );
    let _ = plan_text(&mut p);
});
