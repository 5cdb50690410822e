//! The real control plane as a benchmark's cluster: the synthetic Services and EndpointSlices created, changed and deleted through kube-apiserver (scripts/control-plane.sh).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_ipvs::source::synthetic::{Cluster, Format, NAMESPACE};
use serde_json::{Value, json};

/// The EndpointSlice controller's trigger-time annotation.
const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// RFC 3339 with nanoseconds, as the controller writes it.
fn rfc3339(t: std::time::SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Requests in flight while loading or clearing.
const PARALLEL: usize = 32;

/// The administrator's client (objects are written as a user would) and
/// kube-ipvs's own kubeconfig (its ServiceAccount token).
pub struct ApiCluster {
    rt: tokio::runtime::Runtime,
    admin: Client,
    /// For `kube-ipvs --kubeconfig`.
    pub kube_ipvs_kubeconfig: String,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: run through scripts/bench-scale.sh --api (control-plane.sh up, kernel-lab.sh --net)")
    })
}

/// Runs `requests` with `PARALLEL` in flight; the first error, if any.
async fn in_flight<F>(requests: impl Iterator<Item = F>) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let results: Vec<Result<(), String>> = stream::iter(requests)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

fn err(what: &str) -> impl Fn(kube::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl ApiCluster {
    /// From `KUBE_IPVS_CP_ADMIN_KUBECONFIG` and `KUBE_IPVS_CP_KUBECONFIG`.
    pub fn connect() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let path = env("KUBE_IPVS_CP_ADMIN_KUBECONFIG")?;
        let admin = rt.block_on(async {
            let kc =
                kube::config::Kubeconfig::read_from(&path).map_err(|e| format!("{path}: {e}"))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            Client::try_from(cfg).map_err(|e| format!("client: {e}"))
        })?;
        Ok(ApiCluster {
            rt,
            admin,
            kube_ipvs_kubeconfig: env("KUBE_IPVS_CP_KUBECONFIG")?,
        })
    }

    /// Service `i` and its slice with `endpoints`, as the synthetic cluster renders them.
    fn objects(
        cluster: &Cluster,
        i: usize,
        endpoints: &[Ipv4Addr],
    ) -> Result<(Service, EndpointSlice), String> {
        let c = cluster.clone().with_format(Format::Json);
        let text = c.render_service(i, endpoints).map_err(|e| e.to_string())?;
        let list: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let svc = serde_json::from_value(list["items"][0].clone()).map_err(|e| e.to_string())?;
        let slice = serde_json::from_value(list["items"][1].clone()).map_err(|e| e.to_string())?;
        Ok((svc, slice))
    }

    /// Creates the namespace (if needed) and services `range` with their
    /// initial endpoints; how long the creation took.
    pub fn load(
        &self,
        cluster: &Cluster,
        range: std::ops::Range<usize>,
    ) -> Result<Duration, String> {
        let t = Instant::now();
        self.rt.block_on(async {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
            match Api::<Namespace>::all(self.admin.clone())
                .create(&PostParams::default(), &ns)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(format!("create namespace {NAMESPACE}: {e}")),
            }
            in_flight(range.map(|i| self.create_async(cluster, i))).await
        })?;
        Ok(t.elapsed())
    }

    async fn create_async(&self, cluster: &Cluster, i: usize) -> Result<(), String> {
        self.create_at(cluster, i, None).await
    }

    /// Creates service `i`; its slice carries `trigger` as the EndpointSlice
    /// controller's `last-change-trigger-time` annotation, from which both
    /// kube-proxy and kube-ipvs observe network programming latency.
    async fn create_at(
        &self,
        cluster: &Cluster,
        i: usize,
        trigger: Option<std::time::SystemTime>,
    ) -> Result<(), String> {
        let (svc, mut slice) = Self::objects(cluster, i, &cluster.initial_endpoints(i))?;
        if let Some(t) = trigger {
            slice
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(TRIGGER.into(), rfc3339(t));
        }
        let pp = PostParams::default();
        Api::<Service>::namespaced(self.admin.clone(), NAMESPACE)
            .create(&pp, &svc)
            .await
            .map_err(err("create Service"))?;
        Api::<EndpointSlice>::namespaced(self.admin.clone(), NAMESPACE)
            .create(&pp, &slice)
            .await
            .map_err(err("create EndpointSlice"))?;
        Ok(())
    }

    /// Adds service `i` (Service, then its slice).
    pub fn create(&self, cluster: &Cluster, i: usize) -> Result<(), String> {
        self.rt.block_on(self.create_async(cluster, i))
    }

    /// [`Self::create`] with the slice's trigger time set to now.
    pub fn create_triggered(&self, cluster: &Cluster, i: usize) -> Result<(), String> {
        self.rt
            .block_on(self.create_at(cluster, i, Some(std::time::SystemTime::now())))
    }

    /// [`Self::write_slice`] with the trigger time set to now, as the
    /// EndpointSlice controller stamps the change of a pod.
    pub fn write_slice_triggered(
        &self,
        cluster: &Cluster,
        i: usize,
        endpoints: &[Ipv4Addr],
    ) -> Result<(), String> {
        self.patch_slice(cluster, i, endpoints, Some(std::time::SystemTime::now()))
    }

    /// Writes service `i`'s slice with `endpoints` (one PATCH, as the
    /// EndpointSlice controller's update is one write).
    pub fn write_slice(
        &self,
        cluster: &Cluster,
        i: usize,
        endpoints: &[Ipv4Addr],
    ) -> Result<(), String> {
        self.patch_slice(cluster, i, endpoints, None)
    }

    /// One merge PATCH of service `i`'s slice: its endpoints, and the
    /// trigger-time annotation when `trigger` is given.
    fn patch_slice(
        &self,
        cluster: &Cluster,
        i: usize,
        endpoints: &[Ipv4Addr],
        trigger: Option<std::time::SystemTime>,
    ) -> Result<(), String> {
        let (_, slice) = Self::objects(cluster, i, endpoints)?;
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut patch = json!({"endpoints": slice.endpoints});
        if let Some(t) = trigger {
            patch["metadata"] = json!({"annotations": {TRIGGER: rfc3339(t)}});
        }
        self.rt
            .block_on(
                Api::<EndpointSlice>::namespaced(self.admin.clone(), NAMESPACE).patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                ),
            )
            .map(|_| ())
            .map_err(err("patch EndpointSlice"))
    }

    /// Deletes every Service and EndpointSlice of the benchmark's namespace.
    pub fn clear(&self) -> Result<Duration, String> {
        let t = Instant::now();
        self.rt.block_on(async {
            let slices = Api::<EndpointSlice>::namespaced(self.admin.clone(), NAMESPACE);
            match slices
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(format!("delete EndpointSlices: {e}")),
            }
            let svcs = Api::<Service>::namespaced(self.admin.clone(), NAMESPACE);
            let names: Vec<String> = match svcs.list(&ListParams::default()).await {
                Ok(l) => l
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect(),
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(e) => return Err(format!("list Services: {e}")),
            };
            in_flight(names.into_iter().map(|n| {
                let svcs = svcs.clone();
                async move {
                    svcs.delete(&n, &DeleteParams::default())
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("delete Service {n}: {e}"))
                }
            }))
            .await
        })?;
        Ok(t.elapsed())
    }
}
