//! The `KubeProxyConfiguration` reader: strict on fields we know, warning on upstream fields we don't implement.
//!
//! The document is read into a YAML-shaped value tree (YAML through
//! serde-saphyr, JSON through serde_json), then walked by hand so every error
//! names its field path and accepted values, as upstream's strict decoding
//! rejects unknown fields.

use std::path::PathBuf;
use std::time::Duration;

use super::value::Value;
use super::{
    ConfigError, ConfigValues, HEALTHZ_PORT, METRICS_PORT, Parsed, duration, parse_bind_address,
    parse_cidr_list, parse_cluster_cidrs, parse_node_port_addresses, parse_scheduler,
};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

type Result<T> = std::result::Result<T, ConfigError>;

/// Parses a `KubeProxyConfiguration` document (YAML or JSON).
pub fn parse_str(text: &str) -> Result<Parsed> {
    let root: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| ConfigError::new("(document)", format!("invalid JSON: {e}")))?
    } else {
        serde_saphyr::from_str_with_options(text, crate::yaml::options())
            .map_err(|e| ConfigError::new("(document)", format!("invalid YAML: {e}")))?
    };
    if matches!(root, Value::Null) {
        return Err(ConfigError::new(
            "(document)",
            format!("empty; expected a {KIND} with apiVersion {API_VERSION}"),
        ));
    }
    let mut w = Vec::new();
    let values = read_root(&root, &mut w)?;
    Ok(Parsed {
        values,
        warnings: w,
    })
}

/// One JSON object of the document, with its path.
struct Obj<'v> {
    path: String,
    entries: Vec<(String, &'v Value)>,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "an object",
    }
}

impl<'v> Obj<'v> {
    fn new(v: Option<&'v Value>, path: &str) -> Result<Self> {
        let mut entries = Vec::new();
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, val) in m {
                    match k {
                        Value::String(k) => entries.push((k.clone(), val)),
                        other => {
                            return Err(ConfigError::new(
                                path_or_doc(path),
                                format!("field names must be strings, found {}", kind_of(other)),
                            ));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    path_or_doc(path),
                    format!("expected an object, found {}", kind_of(other)),
                ));
            }
        }
        Ok(Obj {
            path: path.to_string(),
            entries,
        })
    }

    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; null counts as unset, as in Go's JSON decoding.
    fn get(&self, key: &str) -> Option<&'v Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v, Value::Null))
    }

    /// Rejects unknown fields (upstream decodes strictly) and warns about
    /// upstream fields kube-ipvs does not implement.
    fn check(&self, known: &[&str], unimplemented: &[&str], w: &mut Vec<String>) -> Result<()> {
        for (k, v) in &self.entries {
            if known.contains(&k.as_str()) {
                continue;
            }
            if unimplemented.contains(&k.as_str()) {
                if !is_empty(v) {
                    w.push(format!(
                        "{} is not implemented by kube-ipvs and is ignored",
                        self.child(k)
                    ));
                }
                continue;
            }
            let hint = known
                .iter()
                .chain(unimplemented)
                .find(|f| f.eq_ignore_ascii_case(k))
                .map(|f| format!(" (did you mean {f:?}? field names are case-sensitive)"))
                .unwrap_or_default();
            let mut accepted: Vec<&str> = known.to_vec();
            accepted.extend(unimplemented);
            let scope = if self.path.is_empty() {
                KIND.to_string()
            } else {
                self.path.clone()
            };
            return Err(ConfigError::new(
                self.child(k),
                format!(
                    "unknown field{hint}; {scope} accepts: {}",
                    accepted.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Result<Option<&'v str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ConfigError::new(
                self.child(key),
                format!("expected a string, found {}", kind_of(other)),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ConfigError::new(
                self.child(key),
                format!("expected true or false, found {}", kind_of(other)),
            )),
        }
    }

    /// An int32 within `min..=max` (upstream's *int32 fields and their validation).
    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                _ => Err(ConfigError::new(
                    self.child(key),
                    format!("{n} is out of range; accepted: an integer from {min} to {max}"),
                )),
            },
            Some(other) => Err(ConfigError::new(
                self.child(key),
                format!(
                    "expected an integer from {min} to {max}, found {}",
                    kind_of(other)
                ),
            )),
        }
    }

    /// metav1.Duration: a Go duration string, never negative here.
    fn duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => duration::parse(s)
                .map(Some)
                .map_err(|e| ConfigError::new(self.child(key), e)),
            Some(other) => Err(ConfigError::new(
                self.child(key),
                format!(
                    "expected a Go duration string such as \"30s\" or \"1m0s\", found {}",
                    kind_of(other)
                ),
            )),
        }
    }

    fn str_list(&self, key: &str) -> Result<Option<Vec<&'v str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(ConfigError::new(
                        format!("{}[{i}]", self.child(key)),
                        format!("expected a string, found {}", kind_of(other)),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(ConfigError::new(
                self.child(key),
                format!("expected a list of strings, found {}", kind_of(other)),
            )),
        }
    }

    fn sub(&self, key: &str) -> Result<Obj<'v>> {
        Obj::new(self.get(key), &self.child(key))
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.child(key), message)
    }
}

fn path_or_doc(path: &str) -> String {
    if path.is_empty() {
        "(document)".into()
    } else {
        path.into()
    }
}

/// Values that configure nothing: an unimplemented field set like this needs no warning
/// (kubeadm writes `featureGates: {}`, `portRange: ""`, `syncPeriod: 0s`...).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        // Zero durations are upstream's "use the default".
        Value::String(s) => s.is_empty() || s == "0s" || s == "0",
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.iter().all(|(_, v)| is_empty(v)),
        Value::Number(_) => false,
    }
}

fn u32_of(i: Option<i64>) -> Option<u32> {
    i.and_then(|i| u32::try_from(i).ok())
}

fn read_root(root: &Value, w: &mut Vec<String>) -> Result<ConfigValues> {
    let top = Obj::new(Some(root), "")?;
    top.check(
        &[
            "apiVersion",
            "kind",
            "clientConnection",
            "hostnameOverride",
            "healthzBindAddress",
            "metricsBindAddress",
            "mode",
            "iptables",
            "ipvs",
            "detectLocalMode",
            "detectLocal",
            "clusterCIDR",
            "nodePortAddresses",
            "conntrack",
        ],
        &[
            "featureGates",
            "logging",
            "bindAddress",
            "bindAddressHardFail",
            "enableProfiling",
            "showHiddenMetricsForVersion",
            "nftables",
            "winkernel",
            "oomScoreAdj",
            "configSyncPeriod",
            "portRange",
            "windowsRunAsService",
        ],
        w,
    )?;

    // Upstream's decoder needs the type; a different version would mean different fields.
    match top.str("apiVersion")? {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(top.err(
                "apiVersion",
                format!("unsupported version {other:?}; accepted: {API_VERSION}"),
            ));
        }
        None => return Err(top.err("apiVersion", format!("missing; set it to {API_VERSION}"))),
    }
    match top.str("kind")? {
        Some(KIND) => {}
        Some(other) => {
            return Err(top.err(
                "kind",
                format!("unsupported kind {other:?}; accepted: {KIND}"),
            ));
        }
        None => return Err(top.err("kind", format!("missing; set it to {KIND}"))),
    }

    // kube-ipvs is the ipvs mode only; any other mode is another proxy.
    match top.str("mode")? {
        None | Some("") | Some("ipvs") => {}
        Some(other) => {
            return Err(top.err(
                "mode",
                format!(
                    "kube-ipvs implements only the \"ipvs\" proxy mode, not {other:?}; set mode to \"ipvs\" (or leave it empty), or run kube-proxy for that mode"
                ),
            ));
        }
    }

    let mut v = ConfigValues {
        hostname_override: top.str("hostnameOverride")?.map(str::to_string),
        ..ConfigValues::default()
    };
    if let Some(s) = top.str("healthzBindAddress")?
        && !s.trim().is_empty()
    {
        v.healthz_bind_address = Some(
            parse_bind_address(s, HEALTHZ_PORT).map_err(|e| top.err("healthzBindAddress", e))?,
        );
    }
    if let Some(s) = top.str("metricsBindAddress")?
        && !s.trim().is_empty()
    {
        v.metrics_bind_address = Some(
            parse_bind_address(s, METRICS_PORT).map_err(|e| top.err("metricsBindAddress", e))?,
        );
    }
    if let Some(s) = top.str("clusterCIDR")? {
        v.cluster_cidrs = Some(parse_cluster_cidrs(s).map_err(|e| top.err("clusterCIDR", e))?);
    }
    if let Some(list) = top.str_list("nodePortAddresses")? {
        v.node_port_addresses =
            Some(parse_node_port_addresses(&list).map_err(|e| top.err("nodePortAddresses", e))?);
    }

    // Only ClusterCIDR detection is implemented (the model detects local traffic by pod CIDR).
    const MODES: &[&str] = &[
        "ClusterCIDR",
        "NodeCIDR",
        "BridgeInterface",
        "InterfaceNamePrefix",
    ];
    match top.str("detectLocalMode")? {
        None | Some("") | Some("ClusterCIDR") => {}
        Some(m) if MODES.contains(&m) => {
            return Err(top.err(
                "detectLocalMode",
                format!(
                    "{m:?} is not implemented by kube-ipvs yet; accepted: ClusterCIDR (with clusterCIDR)"
                ),
            ));
        }
        Some(m) => {
            return Err(top.err(
                "detectLocalMode",
                format!("unknown mode {m:?}; accepted: {}", MODES.join(", ")),
            ));
        }
    }
    let dl = top.sub("detectLocal")?;
    dl.check(&["bridgeInterface", "interfaceNamePrefix"], &[], w)?;
    dl.str("bridgeInterface")?;
    dl.str("interfaceNamePrefix")?;

    let cc = top.sub("clientConnection")?;
    cc.check(
        &["kubeconfig"],
        &["acceptContentTypes", "contentType", "qps", "burst"],
        w,
    )?;
    v.kubeconfig = cc.str("kubeconfig")?.map(PathBuf::from);

    let ipt = top.sub("iptables")?;
    ipt.check(
        &["masqueradeBit", "masqueradeAll"],
        &[
            "localhostNodePorts",
            "snatNodeInternalIP",
            "syncPeriod",
            "minSyncPeriod",
        ],
        w,
    )?;
    v.masquerade_bit = ipt.int("masqueradeBit", 0, 31)?.map(|b| b as u8);
    v.masquerade_all = ipt.bool("masqueradeAll")?;

    let ipvs = top.sub("ipvs")?;
    ipvs.check(
        &[
            "syncPeriod",
            "minSyncPeriod",
            "scheduler",
            "excludeCIDRs",
            "strictARP",
            "tcpTimeout",
            "tcpFinTimeout",
            "udpTimeout",
        ],
        &[],
        w,
    )?;
    // Upstream's defaulting turns 0 into 30s (kubeadm writes `syncPeriod: 0s`).
    v.sync_period = ipvs.duration("syncPeriod")?.filter(|d| !d.is_zero());
    v.min_sync_period = ipvs.duration("minSyncPeriod")?;
    if let Some(s) = ipvs.str("scheduler")? {
        v.scheduler = Some(parse_scheduler(s).map_err(|e| ipvs.err("scheduler", e))?);
    }
    if let Some(list) = ipvs.str_list("excludeCIDRs")? {
        v.exclude_cidrs = Some(parse_cidr_list(&list).map_err(|e| ipvs.err("excludeCIDRs", e))?);
    }
    v.strict_arp = ipvs.bool("strictARP")?;
    v.tcp_timeout = ipvs.duration("tcpTimeout")?;
    v.tcp_fin_timeout = ipvs.duration("tcpFinTimeout")?;
    v.udp_timeout = ipvs.duration("udpTimeout")?;

    let ct = top.sub("conntrack")?;
    ct.check(
        &[
            "maxPerCore",
            "min",
            "tcpEstablishedTimeout",
            "tcpCloseWaitTimeout",
            "tcpBeLiberal",
            "udpTimeout",
            "udpStreamTimeout",
        ],
        &[],
        w,
    )?;
    v.conntrack_max_per_core = u32_of(ct.int("maxPerCore", 0, i32::MAX.into())?);
    v.conntrack_min = u32_of(ct.int("min", 0, i32::MAX.into())?);
    v.conntrack_tcp_established_timeout = ct.duration("tcpEstablishedTimeout")?;
    v.conntrack_tcp_close_wait_timeout = ct.duration("tcpCloseWaitTimeout")?;
    v.conntrack_tcp_be_liberal = ct.bool("tcpBeLiberal")?;
    v.conntrack_udp_timeout = ct.duration("udpTimeout")?;
    v.conntrack_udp_stream_timeout = ct.duration("udpStreamTimeout")?;
    Ok(v)
}
