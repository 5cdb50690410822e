//! API watches (Services, EndpointSlices, this Node) turned into changes for the trackers; errors re-list and never flush.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::changes::{CONFIRM_AFTER, Eligibility, Events, Hooks, Sources, feed, lock};
use crate::metrics::Metrics;
use crate::source::manifests::Manifests;

pub mod observe;

/// Objects with this label belong to another proxy (upstream informer filter).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Set by the EndpointSlice controller on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's label selector, sent with the Service and EndpointSlice lists
/// and watches alike (kube-proxy builds one informer factory with it).
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Field selector watching only this node.
pub fn node_selector(node_name: &str) -> String {
    format!("metadata.name={node_name}")
}

/// An API client from `kubeconfig`, else from the in-cluster service account;
/// with `metrics`, it counts the bookmarks its watches receive.
pub async fn client(
    kubeconfig: Option<&Path>,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("cannot use kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig given and not running in a cluster (no service account); \
             pass --kubeconfig FILE, or --manifests PATH to run from files",
        )?,
    };
    let builder =
        kube::client::ClientBuilder::try_from(config).context("cannot build the API client")?;
    Ok(match metrics {
        Some(m) => builder.with_layer(&observe::BookmarkLayer::new(m)).build(),
        None => builder.build(),
    })
}

/// Objects per list page: a 10,000-Service cluster lists in 20 requests,
/// none of which holds the API server long (client-go's informers page too).
const LIST_PAGE: u32 = 500;

/// Everything the watches would see, listed once: Services and EndpointSlices
/// with upstream's label selector, and this Node. Reads only; the one-shot
/// commands' view of a live cluster.
pub async fn list_once(client: &Client, node_name: &str) -> anyhow::Result<Manifests> {
    let labels = ListParams::default().labels(LABEL_SELECTOR);
    let node = ListParams::default().fields(&node_selector(node_name));
    Ok(Manifests {
        services: list_all(Api::<Service>::all(client.clone()), labels.clone())
            .await
            .context("cannot list Services")?,
        slices: list_all(Api::<EndpointSlice>::all(client.clone()), labels)
            .await
            .context("cannot list EndpointSlices")?,
        nodes: list_all(Api::<Node>::all(client.clone()), node)
            .await
            .with_context(|| format!("cannot read Node {node_name}"))?,
        warnings: Vec::new(),
    })
}

async fn list_all<K>(api: Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + Resource<DynamicType = ()> + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = params.limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services,
    Slices,
    Node,
}

impl Kind {
    /// The `resource` label of the watch metrics.
    fn resource(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Slices => "endpointslices",
            Kind::Node => "nodes",
        }
    }
}

/// Feeds one event of `kind` (wrapped by `wrap`) and reports it; true when
/// it completed a list that is held.
fn on_event<K>(
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node_name: &str,
    kind: Kind,
    wrap: fn(Event<K>) -> Events,
    event: Event<K>,
) -> bool {
    let eligibility = match kind {
        Kind::Node => Eligibility::Tracked(node_name),
        Kind::Services | Kind::Slices => Eligibility::Keep,
    };
    let fed = feed(sources, hooks, wrap(event), eligibility);
    if fed.first_sync {
        tracing::info!(?kind, "initial list complete");
    }
    fed.held
}

/// Runs one watch forever. kube's watcher re-lists after errors (API server
/// down, 410 Gone) and `default_backoff` spaces the retries; errors are only
/// logged here, and state changes only at a completed list.
async fn run_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    sources: Arc<Mutex<Sources>>,
    hooks: Hooks,
    node_name: String,
    kind: Kind,
    wrap: fn(Event<K>) -> Events,
) where
    K: Clone + Resource<DynamicType = ()> + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let start = || {
        watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let mut stream = start();
    // A held list (see `ListGuard`) asks for a fresh one after a while.
    let mut relist_at: Option<tokio::time::Instant> = None;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = tokio::time::sleep_until(relist_at.unwrap_or_else(tokio::time::Instant::now)), if relist_at.is_some() => {
                relist_at = None;
                tracing::info!(?kind, "asking for a second list to confirm the held one");
                stream = start();
                continue;
            }
        };
        let Some(item) = item else { return };
        match item {
            Ok(ev) => {
                if on_event(&sources, &hooks, &node_name, kind, wrap, ev) {
                    relist_at = Some(tokio::time::Instant::now() + CONFIRM_AFTER);
                }
            }
            Err(e) => {
                let reason = observe::error_reason(&e);
                hooks.metrics.watch_error(kind.resource(), reason);
                tracing::warn!(?kind, reason, error = %e, "watch failed; re-listing with backoff");
            }
        }
    }
}

/// Watches Services, EndpointSlices and this Node until the future is dropped.
/// Lists are consistent reads (kube's default): a re-list after 410 Gone with
/// `resourceVersion=0` could return a lagging cache and resurrect deleted
/// endpoints (client-go also relists with `""` after expiry). API servers
/// with ConsistentListFromCache serve these from their cache anyway.
pub async fn watch_all(
    client: Client,
    node_name: String,
    sources: Arc<Mutex<Sources>>,
    hooks: Hooks,
) {
    // The API server's Service lists pass the guard; manifests are the
    // operator's own files (an emptied directory is their decision).
    lock(&sources).services.guard_lists();
    let svc_cfg = watcher::Config::default().labels(LABEL_SELECTOR);
    let slice_cfg = watcher::Config::default().labels(LABEL_SELECTOR);
    let node_cfg = watcher::Config::default().fields(&node_selector(&node_name));
    tokio::join!(
        run_watch(
            Api::<Service>::all(client.clone()),
            svc_cfg,
            sources.clone(),
            hooks.clone(),
            node_name.clone(),
            Kind::Services,
            |e| Events::services(vec![e]),
        ),
        run_watch(
            Api::<EndpointSlice>::all(client.clone()),
            slice_cfg,
            sources.clone(),
            hooks.clone(),
            node_name.clone(),
            Kind::Slices,
            |e| Events::slices(vec![e]),
        ),
        run_watch(
            Api::<Node>::all(client),
            node_cfg,
            sources,
            hooks,
            node_name.clone(),
            Kind::Node,
            |e| Events::nodes(vec![e]),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_upstreams() {
        assert_eq!(
            LABEL_SELECTOR,
            format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}")
        );
        assert_eq!(node_selector("n1"), "metadata.name=n1");
    }
}
