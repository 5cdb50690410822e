//! Generated clusters of N services × E endpoints as manifest files, for scale benchmarks and tests.
//!
//! The layout is deterministic: service `i` has ClusterIP [`Cluster::service_ip`]`(i)`, port
//! 80/TCP to targetPort 8080, and its endpoints are pod IPs [`Cluster::endpoint_ip`]`(i, slot)`.
//! Each service lives alone in its own file (Service + EndpointSlice), so one change rewrites
//! one small file, the way a watcher of a real cluster would see it; the Node lives in
//! `00-node.yaml`. Variants are written with [`Cluster::write_service`] (atomic rename).
//! Files are YAML, or JSON ([`Format::Json`], the API server's wire format) as a `List`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Namespace of every generated object.
pub const NAMESPACE: &str = "bench";
/// Service port and protocol of every generated service.
pub const SERVICE_PORT: u16 = 80;
/// Endpoint (target) port of every generated service.
pub const TARGET_PORT: u16 = 8080;
/// InternalIP of the generated Node.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 10);
/// Most services a cluster can have (ClusterIPs stay in 10.96.0.0/12).
pub const MAX_SERVICES: usize = 100_000;
/// Most endpoints per service (Kubernetes' per-slice limit is 1,000).
pub const MAX_ENDPOINTS: usize = 1_000;
/// Pod-IP slots per service of a cluster of up to 32 endpoints: `endpoint_ip(i, slot)` for
/// `slot < SLOTS_PER_SERVICE`; the spare slots above the initial endpoints give variants fresh
/// addresses. Clusters with more endpoints get twice their count, rounded up to a power of two.
pub const SLOTS_PER_SERVICE: usize = 32;
/// Pod IPs of clusters that fit 10.244.0.1–10.255.255.255 (every cluster of up to 23,000
/// services of up to 32 endpoints: the layout tests and older results know).
const PODS: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 244, 0, 1), (12 << 16) - 2);
/// Pod IPs of larger clusters (50,000 × 10, 2,000 × 250): 100.64.0.0/10.
const BIG_PODS: (Ipv4Addr, u32) = (Ipv4Addr::new(100, 64, 0, 1), (1 << 22) - 2);
/// Services past the end a benchmark may add, counted in the address plan.
const ADD_ROOM: usize = 1_000;
/// Node names the endpoints are spread over (`nodeName`); none of them is required to be the local node.
const WORKERS: usize = 8;

/// Why a synthetic cluster could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("{services} services: at most {MAX_SERVICES} can be generated")]
    TooManyServices { services: usize },
    #[error("{endpoints} endpoints per service: at most {MAX_ENDPOINTS} can be generated")]
    TooManyEndpoints { endpoints: usize },
    #[error(
        "{services} services × {endpoints} endpoints do not fit the pod address plan (100.64.0.0/10)"
    )]
    TooManyPods { services: usize, endpoints: usize },
    #[error("service index {index} is out of range (at most {MAX_SERVICES})")]
    NoSuchService { index: usize },
    #[error("endpoint slot {slot} is out of range (at most {slots} per service)")]
    NoSuchSlot { slot: usize, slots: usize },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Yaml,
    /// One `List` per file (the Service, then its EndpointSlice).
    Json,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// A generated cluster: `services` services of `endpoints` ready endpoints each, seen by node `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    services: usize,
    endpoints: usize,
    node: String,
    format: Format,
    /// Pod-IP slots per service.
    slots: usize,
    /// First pod IP.
    pods: Ipv4Addr,
}

impl Cluster {
    /// Checks the sizes against the address plan ([`MAX_SERVICES`], [`MAX_ENDPOINTS`], and
    /// room for every pod IP with its spare slots).
    pub fn new(
        services: usize,
        endpoints: usize,
        node: impl Into<String>,
    ) -> Result<Self, SyntheticError> {
        if services > MAX_SERVICES {
            return Err(SyntheticError::TooManyServices { services });
        }
        if endpoints > MAX_ENDPOINTS {
            return Err(SyntheticError::TooManyEndpoints { endpoints });
        }
        let slots = if endpoints <= SLOTS_PER_SERVICE {
            SLOTS_PER_SERVICE
        } else {
            (2 * endpoints).next_power_of_two()
        };
        let need = (services + ADD_ROOM) * slots;
        let pods = [PODS, BIG_PODS]
            .into_iter()
            .find(|(_, room)| need <= *room as usize)
            .ok_or(SyntheticError::TooManyPods {
                services,
                endpoints,
            })?
            .0;
        Ok(Cluster {
            services,
            endpoints,
            node: node.into(),
            format: Format::Yaml,
            slots,
            pods,
        })
    }

    /// The same cluster written as `format`.
    pub fn with_format(self, format: Format) -> Self {
        Cluster { format, ..self }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn services(&self) -> usize {
        self.services
    }

    pub fn endpoints_per_service(&self) -> usize {
        self.endpoints
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Name of service `i` (also its file stem), zero-padded so files sort in index order.
    pub fn service_name(i: usize) -> String {
        format!("svc-{i:05}")
    }

    /// ClusterIP of service `i`: 10.96.1.0 + i (10.96.0.x is left for hand-written services).
    pub fn service_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + i as u32)
    }

    /// Pod IP in slot `slot` of service `i` of a cluster of up to 23,000 services of up to 32
    /// endpoints (every test's): 10.244.0.1 + i × [`SLOTS_PER_SERVICE`] + slot.
    pub fn endpoint_ip(i: usize, slot: usize) -> Ipv4Addr {
        pod_ip(PODS.0, SLOTS_PER_SERVICE, i, slot)
    }

    /// Pod IP in slot `slot` of service `i` of this cluster: [`Cluster::endpoint_ip`] for
    /// the clusters it covers, 100.64.0.1 + i × slots + slot for larger ones.
    pub fn pod_ip(&self, i: usize, slot: usize) -> Ipv4Addr {
        pod_ip(self.pods, self.slots, i, slot)
    }

    /// Pod-IP slots per service: spare slots are `endpoints..slots()`.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The endpoints service `i` starts with: slots `0..endpoints`.
    pub fn initial_endpoints(&self, i: usize) -> Vec<Ipv4Addr> {
        (0..self.endpoints)
            .map(|slot| self.pod_ip(i, slot))
            .collect()
    }

    /// The Node's file in `dir`; sorts before every service file.
    pub fn node_file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("00-node.{}", self.format.extension()))
    }

    /// File of service `i` in `dir`.
    pub fn service_file(&self, dir: &Path, i: usize) -> PathBuf {
        dir.join(format!(
            "{}.{}",
            Self::service_name(i),
            self.format.extension()
        ))
    }

    /// Writes the Node file and every service file with its initial endpoints into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), SyntheticError> {
        std::fs::create_dir_all(dir).map_err(|source| SyntheticError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomically(&self.node_file(dir), &self.render_node())?;
        for i in 0..self.services {
            let text = self.render_service(i, &self.initial_endpoints(i))?;
            write_atomically(&self.service_file(dir, i), &text)?;
        }
        Ok(())
    }

    /// Rewrites service `i`'s file with `endpoints` (written aside, then renamed over the old file,
    /// so a reader never sees half a file). Indices past the cluster's size add services.
    pub fn write_service(
        &self,
        dir: &Path,
        i: usize,
        endpoints: &[Ipv4Addr],
    ) -> Result<PathBuf, SyntheticError> {
        let path = self.service_file(dir, i);
        write_atomically(&path, &self.render_service(i, endpoints)?)?;
        Ok(path)
    }

    /// The Node object, with [`NODE_IP`] as InternalIP.
    pub fn render_node(&self) -> String {
        if self.format == Format::Json {
            let node = serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node},
                "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP.to_string()}]},
            });
            return format!("{node}\n");
        }
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n",
            node = yaml_str(&self.node),
        )
    }

    /// Service `i` and one EndpointSlice holding `endpoints` (ready, spread over worker nodes).
    pub fn render_service(
        &self,
        i: usize,
        endpoints: &[Ipv4Addr],
    ) -> Result<String, SyntheticError> {
        // Past the end is allowed (that is how a benchmark adds services), past the address plan not.
        if i >= MAX_SERVICES {
            return Err(SyntheticError::NoSuchService { index: i });
        }
        let name = Self::service_name(i);
        let ip = Self::service_ip(i);
        if self.format == Format::Json {
            return Ok(self.render_json(i, endpoints));
        }
        let mut s = format!(
            "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  clusterIP: {ip}
  ports:
  - name: http
    port: {SERVICE_PORT}
    protocol: TCP
    targetPort: {TARGET_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {TARGET_PORT}
  protocol: TCP
endpoints:"
        );
        s.push_str(if endpoints.is_empty() { " []\n" } else { "\n" });
        for (j, ep) in endpoints.iter().enumerate() {
            let _ = write!(
                s,
                "- addresses: [{ep}]\n  conditions: {{ready: true}}\n  nodeName: worker-{}\n",
                (i + j) % WORKERS
            );
        }
        Ok(s)
    }

    fn render_json(&self, i: usize, endpoints: &[Ipv4Addr]) -> String {
        let name = Self::service_name(i);
        let eps: Vec<serde_json::Value> = endpoints
            .iter()
            .enumerate()
            .map(|(j, ep)| {
                serde_json::json!({
                    "addresses": [ep.to_string()],
                    "conditions": {"ready": true},
                    "nodeName": format!("worker-{}", (i + j) % WORKERS),
                })
            })
            .collect();
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {
                        "clusterIP": Self::service_ip(i).to_string(),
                        "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP", "targetPort": TARGET_PORT}],
                    },
                },
                {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {
                        "name": format!("{name}-1"), "namespace": NAMESPACE,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
                    "endpoints": eps,
                },
            ],
        });
        format!("{list}\n")
    }

    /// The initial endpoints of service `i` with the one in `slot` moved to spare slot `spare`
    /// (≥ the endpoint count): a single-endpoint change, as a rolling restart makes.
    pub fn replace_endpoint(
        &self,
        i: usize,
        slot: usize,
        spare: usize,
    ) -> Result<Vec<Ipv4Addr>, SyntheticError> {
        let slots = self.slots;
        if spare >= slots || spare < self.endpoints {
            return Err(SyntheticError::NoSuchSlot { slot: spare, slots });
        }
        let mut eps = self.initial_endpoints(i);
        let old = eps
            .get_mut(slot)
            .ok_or(SyntheticError::NoSuchSlot { slot, slots })?;
        *old = self.pod_ip(i, spare);
        Ok(eps)
    }
}

/// Address `slot` of service `i` in a pool starting at `base`, `slots` per service.
fn pod_ip(base: Ipv4Addr, slots: usize, i: usize, slot: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + (i * slots + slot) as u32)
}

/// Quotes a string for YAML (JSON strings are valid YAML scalars).
fn yaml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Writes `text` next to `path` under a hidden name without a manifest extension, then renames it
/// into place: readers of the directory skip the temporary file and see the old or the new content.
fn write_atomically(path: &Path, text: &str) -> Result<(), SyntheticError> {
    let err = |source| SyntheticError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::manifests;

    fn addresses(m: &manifests::Manifests, service: &str) -> Vec<String> {
        m.slices
            .iter()
            .filter(|s| s.metadata.name.as_deref() == Some(&format!("{service}-1")))
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
            .collect()
    }

    #[test]
    fn written_cluster_loads_back_with_the_planned_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(3, 4, "lab-node").unwrap();
        c.write(dir.path()).unwrap();
        let m = crate::source::files::load(dir.path()).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.services.len(), 3);
        assert_eq!(m.slices.len(), 3);
        let node = m.node("lab-node").expect("node object");
        let ip = &node.status.as_ref().unwrap().addresses.as_ref().unwrap()[0];
        assert_eq!(
            (ip.type_.as_str(), ip.address.as_str()),
            ("InternalIP", "192.168.100.10")
        );

        let svc = &m.services[2];
        assert_eq!(svc.metadata.name.as_deref(), Some("svc-00002"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some(NAMESPACE));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.1.2"));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.port, port.protocol.as_deref()), (80, Some("TCP")));

        let slice = &m.slices[2];
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
            "svc-00002"
        );
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        assert!(slice.endpoints.iter().all(|e| {
            e.conditions.as_ref().and_then(|c| c.ready) == Some(true) && e.node_name.is_some()
        }));
        // Service 2's slots start at 2 × 32 past 10.244.0.1.
        assert_eq!(
            addresses(&m, "svc-00002"),
            ["10.244.0.65", "10.244.0.66", "10.244.0.67", "10.244.0.68"]
        );
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".yaml")), "{names:?}");
    }

    #[test]
    fn json_files_load_to_the_same_objects_as_yaml() {
        let y = tempfile::tempdir().unwrap();
        let j = tempfile::tempdir().unwrap();
        let c = Cluster::new(4, 3, "lab-node").unwrap();
        c.write(y.path()).unwrap();
        let cj = c.clone().with_format(Format::Json);
        cj.write(j.path()).unwrap();
        assert!(cj.service_file(j.path(), 0).ends_with("svc-00000.json"));
        let (my, mj) = (
            crate::source::files::load(y.path()).unwrap(),
            crate::source::files::load(j.path()).unwrap(),
        );
        assert_eq!(my.services, mj.services);
        assert_eq!(my.slices, mj.slices);
        assert_eq!(my.nodes, mj.nodes);
        assert!(mj.warnings.is_empty(), "{:?}", mj.warnings);
        cj.write_service(j.path(), 1, &[]).unwrap();
        assert!(addresses(&crate::source::files::load(j.path()).unwrap(), "svc-00001").is_empty());
    }

    #[test]
    fn output_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = Cluster::new(5, 3, "n").unwrap();
        c.write(a.path()).unwrap();
        c.write(b.path()).unwrap();
        for i in 0..5 {
            let fa = std::fs::read(c.service_file(a.path(), i)).unwrap();
            let fb = std::fs::read(c.service_file(b.path(), i)).unwrap();
            assert_eq!(fa, fb, "service {i}");
        }
        // Different services differ (no copy-paste of one file).
        assert_ne!(
            std::fs::read(c.service_file(a.path(), 0)).unwrap(),
            std::fs::read(c.service_file(a.path(), 1)).unwrap()
        );
    }

    #[test]
    fn variants_rewrite_one_service_and_add_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(2, 3, "n").unwrap();
        c.write(dir.path()).unwrap();
        let eps = c.replace_endpoint(1, 0, 5).unwrap();
        assert_eq!(eps[0], Cluster::endpoint_ip(1, 5));
        assert_eq!(&eps[1..], &c.initial_endpoints(1)[1..]);
        c.write_service(dir.path(), 1, &eps).unwrap();
        c.write_service(dir.path(), 2, &[Cluster::endpoint_ip(2, 0)])
            .unwrap();
        c.write_service(dir.path(), 0, &[]).unwrap();

        let m = crate::source::files::load(dir.path()).unwrap();
        assert_eq!(m.services.len(), 3);
        assert!(addresses(&m, "svc-00000").is_empty());
        assert_eq!(
            addresses(&m, "svc-00001"),
            ["10.244.0.38", "10.244.0.34", "10.244.0.35"]
        );
        assert_eq!(addresses(&m, "svc-00002"), ["10.244.0.65"]);
    }

    #[test]
    fn sizes_and_indices_outside_the_address_plan_are_refused() {
        assert!(matches!(
            Cluster::new(MAX_SERVICES + 1, 1, "n"),
            Err(SyntheticError::TooManyServices { .. })
        ));
        assert!(matches!(
            Cluster::new(1, MAX_ENDPOINTS + 1, "n"),
            Err(SyntheticError::TooManyEndpoints { .. })
        ));
        assert!(matches!(
            Cluster::new(MAX_SERVICES, MAX_ENDPOINTS, "n"),
            Err(SyntheticError::TooManyPods { .. })
        ));
        let c = Cluster::new(2, 2, "n").unwrap();
        assert!(c.render_service(3, &[]).is_ok(), "services can be added");
        assert!(matches!(
            c.render_service(MAX_SERVICES, &[]),
            Err(SyntheticError::NoSuchService { .. })
        ));
        assert!(c.replace_endpoint(0, 0, 1).is_err(), "slot 1 is in use");
        assert!(
            c.replace_endpoint(0, 2, 4).is_err(),
            "no endpoint in slot 2"
        );
        assert!(c.replace_endpoint(0, 0, SLOTS_PER_SERVICE).is_err());
        // The last addresses of the largest clusters stay inside the documented ranges.
        assert_eq!(
            Cluster::service_ip(MAX_SERVICES - 1),
            Ipv4Addr::new(10, 97, 135, 159)
        );
        assert!(Cluster::service_ip(MAX_SERVICES - 1) < Ipv4Addr::new(10, 112, 0, 0));
        let last = |c: &Cluster| c.pod_ip(c.services() + ADD_ROOM - 1, c.slots() - 1);
        let small = Cluster::new(23_000, 32, "n").unwrap();
        assert_eq!(small.slots(), SLOTS_PER_SERVICE);
        assert_eq!(small.pod_ip(7, 9), Cluster::endpoint_ip(7, 9));
        assert!(
            last(&small) <= Ipv4Addr::new(10, 255, 255, 254),
            "{}",
            last(&small)
        );
        for (services, endpoints, slots) in [
            (MAX_SERVICES, 10, 32),
            (2_000, 250, 512),
            (1_000, 1_000, 2_048),
        ] {
            let big = Cluster::new(services, endpoints, "n").unwrap();
            assert_eq!(big.slots(), slots);
            assert_eq!(big.pod_ip(0, 0), Ipv4Addr::new(100, 64, 0, 1));
            assert!(
                last(&big) <= Ipv4Addr::new(100, 127, 255, 254),
                "{}",
                last(&big)
            );
            assert!(big.replace_endpoint(1, 0, slots - 1).is_ok());
            assert!(big.replace_endpoint(1, 0, slots).is_err());
        }
    }

    #[test]
    fn endpoints_of_a_big_cluster_are_distinct() {
        let c = Cluster::new(3, 250, "n").unwrap();
        let all: std::collections::HashSet<Ipv4Addr> =
            (0..3).flat_map(|i| c.initial_endpoints(i)).collect();
        assert_eq!(all.len(), 750);
    }
}
