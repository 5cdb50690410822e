//! The real control plane (scripts/control-plane.sh) from a lab test: its settings, clients, and loading whole manifests into it.

use std::time::{Duration, Instant};

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// A variable test.sh sets for the lab; its absence fails the test: a
/// control-plane suite that did not run is a failure, never a skip.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the control-plane tests need scripts/test.sh (control-plane.sh up \
             and agent on the host, kernel-lab.sh --net)"
        )
    })
}

/// A client from a kubeconfig file.
pub async fn client(path: &str) -> Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("use kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// The field manager of objects this module loads.
const MANAGER: &str = "kube-ipvs-lab";

/// The API resource of a kind the proxies read (and Namespace).
fn resource(kind: &str) -> Option<(ApiResource, bool)> {
    let (group, version, plural, namespaced) = match kind {
        "Service" => ("", "v1", "services", true),
        "EndpointSlice" => ("discovery.k8s.io", "v1", "endpointslices", true),
        "Node" => ("", "v1", "nodes", false),
        "Namespace" => ("", "v1", "namespaces", false),
        _ => return None,
    };
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some((
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        },
        namespaced,
    ))
}

fn api_for(client: &Client, obj: &Value) -> Option<(Api<DynamicObject>, String)> {
    let kind = obj.get("kind")?.as_str()?;
    let (ar, namespaced) = resource(kind)?;
    let name = obj.pointer("/metadata/name")?.as_str()?.to_string();
    let api = if namespaced {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    Some((api, name))
}

/// Loads `objs` as `kubectl apply --server-side` and then a status update
/// would: each object's spec and metadata, then its `status` (a Node's
/// addresses, a load balancer's ingress) through the status subresource.
/// Namespaces they name are made first. Kinds the proxies do not read are
/// skipped. Fields the objects do not set keep the server's defaults.
pub async fn load(client: &Client, objs: &[Value]) {
    let mut namespaces: Vec<&str> = objs
        .iter()
        .filter(|o| resource(o["kind"].as_str().unwrap_or("")).is_some_and(|(_, n)| n))
        .filter_map(|o| o.pointer("/metadata/namespace").and_then(Value::as_str))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let pp = PatchParams::apply(MANAGER).force();
    for ns in namespaces {
        let o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let (api, name) = api_for(client, &o).unwrap();
        api.patch(&name, &pp, &Patch::Apply(&o))
            .await
            .unwrap_or_else(|e| panic!("apply Namespace {ns}: {e}"));
    }
    for o in objs {
        let Some((api, name)) = api_for(client, o) else {
            continue;
        };
        let mut body = o.clone();
        let status = body.as_object_mut().and_then(|m| m.remove("status"));
        // Server-side apply refuses these; they are the server's to set.
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
                "generation",
            ] {
                m.remove(f);
            }
        }
        api.patch(&name, &pp, &Patch::Apply(&body))
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}\n{body:#}", o["kind"]));
        if let Some(status) = status {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {} {name}: {e}", o["kind"]));
        }
    }
}

/// Deletes the Services and EndpointSlices among `objs`, and waits until
/// they are gone (Nodes and Namespaces stay).
pub async fn unload(client: &Client, objs: &[Value]) {
    for o in objs {
        let kind = o["kind"].as_str().unwrap_or("");
        if !matches!(kind, "Service" | "EndpointSlice") {
            continue;
        }
        let Some((api, name)) = api_for(client, o) else {
            continue;
        };
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete {kind} {name}: {e}"),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.get_opt(&name).await.ok().flatten().is_some() {
            assert!(Instant::now() < deadline, "{kind} {name} not deleted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the differential tests need of the lab's control plane: a runtime,
/// the administrator's client, both kubeconfigs and upstream's kube-proxy.
pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    pub admin: Client,
    pub admin_kubeconfig: String,
    pub kube_ipvs_kubeconfig: String,
    pub kube_proxy: String,
}

impl Lab {
    /// From the variables scripts/test.sh sets; connects the administrator
    /// from the calling thread's network namespace.
    pub fn connect() -> Lab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let admin_kubeconfig = env("KUBE_IPVS_CP_ADMIN_KUBECONFIG");
        let admin = rt.block_on(client(&admin_kubeconfig));
        Lab {
            rt,
            admin,
            admin_kubeconfig,
            kube_ipvs_kubeconfig: env("KUBE_IPVS_CP_KUBECONFIG"),
            kube_proxy: env("KUBE_IPVS_CP_KUBE_PROXY"),
        }
    }
}
