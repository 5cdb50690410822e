//! What the trackers keep of each watched kind: object keys, and Services and slices parsed against this node.

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use crate::metrics::last_change_trigger_time;
use crate::model::config::ProxyConfig;
use crate::model::input::{ParsedService, ServiceInput, SliceInput, parse_service, parse_slice};

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

pub fn key_of<K: Resource>(obj: &K) -> ObjKey {
    ObjKey {
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
    }
}

/// Drops bookkeeping fields that change without changing what the proxy
/// programs, so an update back to an earlier state is recognised as a no-op
/// (and managedFields do not sit in memory).
pub fn normalize<K: Resource>(mut obj: K) -> K {
    let m = obj.meta_mut();
    m.managed_fields = None;
    m.resource_version = None;
    m.generation = None;
    obj
}

/// What the objects are read against: fixed for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct ParseContext {
    pub cfg: ProxyConfig,
    /// Slices mark endpoints on this node as local when they are read.
    pub node_name: String,
}

/// A watched kind and what its tracker keeps of each object. Services and
/// slices are kept parsed, as upstream's trackers keep processed
/// ServicePorts and endpoints: 10,000 Services' objects take ~75 MB, their
/// parsed forms a fraction, shared with the proxier.
pub trait Tracked: Resource + Clone {
    type Value: PartialEq + Clone + std::fmt::Debug;
    fn value(self, ctx: &ParseContext) -> Self::Value;
}

/// A Service as tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedService {
    /// For the Events that report a rejected Service.
    pub uid: Option<String>,
    /// `None`: not ours to program (headless, ExternalName, another proxy's).
    pub input: Option<Arc<ServiceInput>>,
}

impl Tracked for Service {
    type Value = TrackedService;
    fn value(self, ctx: &ParseContext) -> TrackedService {
        let input = match parse_service(&self, &ctx.cfg) {
            ParsedService::Proxied(i) => Some(Arc::new(i)),
            ParsedService::Ignored(_) => None,
        };
        TrackedService {
            uid: self.metadata.uid,
            input,
        }
    }
}

/// An EndpointSlice as tracked.
#[derive(Debug, Clone)]
pub struct TrackedSlice {
    /// `None`: names no Service, or is not for this proxy.
    pub input: Option<Arc<SliceInput>>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, for the
    /// network programming latency.
    pub trigger: Option<SystemTime>,
}

/// A new trigger time alone is no change (upstream's endpointSliceCache
/// compares the endpoints, not the annotation).
impl PartialEq for TrackedSlice {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input
    }
}

impl Tracked for EndpointSlice {
    type Value = TrackedSlice;
    fn value(self, ctx: &ParseContext) -> TrackedSlice {
        TrackedSlice {
            input: parse_slice(&self, &ctx.node_name).map(Arc::new),
            trigger: last_change_trigger_time(&self),
        }
    }
}

/// The Node is one object: kept whole (normalised).
impl Tracked for Node {
    type Value = Arc<Node>;
    fn value(self, _: &ParseContext) -> Arc<Node> {
        Arc::new(normalize(self))
    }
}
