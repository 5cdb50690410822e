//! kube-proxy's `KubeProxyConfiguration` (v1alpha1): parsing, flag overrides, and the resulting settings.
//!
//! The file is read into typed optional values ([`ConfigValues`]); command-line
//! flags produce the same type, and [`ConfigValues::overlay`] lets explicitly
//! set flags win, as upstream's `--config` plus flags do. [`ConfigValues::resolve`]
//! applies upstream's defaults and cross-field checks.

pub mod conntrack;
pub mod duration;
pub mod flags;
mod parse;
#[cfg(test)]
mod tests;
mod value;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipvs_netlink::ipvs::{Family, Scheduler, Timeouts};

use crate::model::config::{Cidr, NodePortAddresses, ProxyConfig};

pub use conntrack::ConntrackSettings;
pub use parse::{API_VERSION, KIND, parse_str};

/// A configuration value that cannot be used, named by its path (`ipvs.syncPeriod`)
/// or flag (`--ipvs-sync-period`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The configuration file's result: the values it sets, and warnings naming
/// upstream fields kube-ipvs does not implement (they are ignored, never silently).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub values: ConfigValues,
    pub warnings: Vec<String>,
}

/// Every setting kube-ipvs takes from the file or the flags; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigValues {
    pub scheduler: Option<Scheduler>,
    pub sync_period: Option<Duration>,
    pub min_sync_period: Option<Duration>,
    pub exclude_cidrs: Option<Vec<Cidr>>,
    pub strict_arp: Option<bool>,
    pub tcp_timeout: Option<Duration>,
    pub tcp_fin_timeout: Option<Duration>,
    pub udp_timeout: Option<Duration>,
    pub masquerade_all: Option<bool>,
    pub masquerade_bit: Option<u8>,
    pub cluster_cidrs: Option<Vec<Cidr>>,
    pub node_port_addresses: Option<NodePortAddresses>,
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub hostname_override: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub conntrack_max_per_core: Option<u32>,
    pub conntrack_min: Option<u32>,
    pub conntrack_tcp_established_timeout: Option<Duration>,
    pub conntrack_tcp_close_wait_timeout: Option<Duration>,
    pub conntrack_tcp_be_liberal: Option<bool>,
    pub conntrack_udp_timeout: Option<Duration>,
    pub conntrack_udp_stream_timeout: Option<Duration>,
    /// kube-ipvs only (`--max-virtual-servers-per-service`; no file field).
    pub max_virtual_servers_per_service: Option<u64>,
    /// kube-ipvs only (`--verify-read`; no file field).
    pub verify_read: Option<VerifyRead>,
}

/// How the periodic verification reads IPVS (`--verify-read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VerifyRead {
    /// `/proc/net/ip_vs` in one read, what it does not show from the applied
    /// state, and a rolling tenth of the services exactly over netlink.
    #[default]
    Proc,
    /// Every service and its real servers over netlink, every period.
    Netlink,
}

/// What the daemon runs with: the model's config plus daemon-level settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proxy: ProxyConfig,
    /// Full resync interval (`ipvs.syncPeriod`, upstream default 30s).
    pub sync_period: Duration,
    /// Minimum interval between syncs (`ipvs.minSyncPeriod`, upstream default 0).
    pub min_sync_period: Duration,
    pub healthz_bind_address: SocketAddr,
    pub metrics_bind_address: SocketAddr,
    /// Node name to use instead of the hostname.
    pub hostname_override: Option<String>,
    /// `clientConnection.kubeconfig` / `--kubeconfig`; `None` = in-cluster.
    pub kubeconfig: Option<PathBuf>,
    pub conntrack: ConntrackSettings,
    /// How the periodic verification reads IPVS.
    pub verify_read: VerifyRead,
}

/// Upstream's ports (pkg/cluster/ports): healthz 10256, metrics 10249.
pub const HEALTHZ_PORT: u16 = 10256;
pub const METRICS_PORT: u16 = 10249;
/// Upstream's default `ipvs.syncPeriod`.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);

/// The schedulers upstream's validation accepts ("" means rr).
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh",
];

/// Validates a scheduler name ("" = rr, as upstream).
pub fn parse_scheduler(s: &str) -> Result<Scheduler, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Scheduler::RoundRobin);
    }
    if SCHEDULERS.contains(&s) {
        Ok(Scheduler::from_name(s))
    } else {
        Err(format!(
            "unknown IPVS scheduler {s:?}; accepted: {}",
            SCHEDULERS.join(", ")
        ))
    }
}

/// `clusterCIDR`: one CIDR, or a comma-separated dual-stack pair (upstream's rule).
pub fn parse_cluster_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let cidrs = s
        .split(',')
        .map(|p| {
            let p = p.trim();
            // A bare address is a valid Cidr for us, but upstream wants a prefix here.
            if !p.contains('/') {
                return Err(format!(
                    "invalid CIDR {p:?}: expected a prefix such as 10.244.0.0/16"
                ));
            }
            p.parse::<Cidr>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dual = cidrs.len() == 2 && cidrs[0].family() != cidrs[1].family();
    if cidrs.len() > 2 || (cidrs.len() == 2 && !dual) {
        return Err(format!(
            "{s:?}: accepted: one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma (e.g. 10.244.0.0/16,fd00:10:244::/56)"
        ));
    }
    Ok(cidrs)
}

/// A list of CIDRs (`ipvs.excludeCIDRs`).
pub fn parse_cidr_list<S: AsRef<str>>(list: &[S]) -> Result<Vec<Cidr>, String> {
    list.iter()
        .map(|s| {
            s.as_ref()
                .parse::<Cidr>()
                .map_err(|e| format!("{e}: expected a CIDR such as 10.0.0.0/8"))
        })
        .collect()
}

/// `nodePortAddresses`: CIDRs, or the keywords "primary" or "all" (upstream's
/// "localhost" keyword is iptables/nftables only, so it is refused here).
pub fn parse_node_port_addresses<S: AsRef<str>>(list: &[S]) -> Result<NodePortAddresses, String> {
    let list: Vec<String> = list
        .iter()
        .map(|s| s.as_ref().trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.iter().any(|s| s == "all") {
        return Ok(NodePortAddresses::All);
    }
    if list.iter().any(|s| s == "localhost") {
        return Err(
            "\"localhost\" NodePorts are only supported by kube-proxy's iptables and nftables modes, not ipvs"
                .into(),
        );
    }
    NodePortAddresses::parse(&list).ok_or_else(|| {
        format!(
            "invalid value {list:?}; accepted: a list of CIDRs (e.g. 10.0.0.0/8), the single keyword \"primary\", or \"all\""
        )
    })
}

/// A bind address "IP:port"; a bare IP gets `default_port` as upstream's
/// AppendPortIfNeeded does; empty means the default.
pub fn parse_bind_address(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "invalid address {s:?}; accepted: IP:port such as 0.0.0.0:{default_port} or [::]:{default_port}, or a bare IP (port {default_port})"
    ))
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl ConfigValues {
    /// `flags` over `self`: a value set in `flags` wins, as upstream applies
    /// explicitly set flags on top of `--config`.
    pub fn overlay(self, flags: ConfigValues) -> ConfigValues {
        macro_rules! pick {
            ($($f:ident),*) => { ConfigValues { $($f: flags.$f.or(self.$f)),* } };
        }
        pick!(
            scheduler,
            sync_period,
            min_sync_period,
            exclude_cidrs,
            strict_arp,
            tcp_timeout,
            tcp_fin_timeout,
            udp_timeout,
            masquerade_all,
            masquerade_bit,
            cluster_cidrs,
            node_port_addresses,
            healthz_bind_address,
            metrics_bind_address,
            hostname_override,
            kubeconfig,
            conntrack_max_per_core,
            conntrack_min,
            conntrack_tcp_established_timeout,
            conntrack_tcp_close_wait_timeout,
            conntrack_tcp_be_liberal,
            conntrack_udp_timeout,
            conntrack_udp_stream_timeout,
            max_virtual_servers_per_service,
            verify_read
        )
    }

    /// Applies upstream's defaults and cross-field validation.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let sync_period = self.sync_period.unwrap_or(DEFAULT_SYNC_PERIOD);
        // Upstream: "must be greater than 0".
        if sync_period.is_zero() {
            return Err(ConfigError::new(
                "ipvs.syncPeriod (--ipvs-sync-period)",
                "must be greater than 0, e.g. \"30s\"",
            ));
        }
        let min_sync_period = self.min_sync_period.unwrap_or(Duration::ZERO);
        // Upstream: minSyncPeriod "must be less than or equal to ipvs.syncPeriod".
        if min_sync_period > sync_period {
            return Err(ConfigError::new(
                "ipvs.minSyncPeriod (--ipvs-min-sync-period)",
                format!(
                    "{} must be less than or equal to ipvs.syncPeriod ({})",
                    duration::format(min_sync_period),
                    duration::format(sync_period)
                ),
            ));
        }
        let defaults = ProxyConfig::default();
        let cluster_cidrs = self.cluster_cidrs.unwrap_or_default();
        let proxy = ProxyConfig {
            scheduler: self.scheduler.unwrap_or_default(),
            masquerade_all: self.masquerade_all.unwrap_or(false),
            masquerade_bit: self.masquerade_bit.unwrap_or(defaults.masquerade_bit),
            cluster_cidrs,
            node_port_addresses: self.node_port_addresses.unwrap_or_default(),
            strict_arp: self.strict_arp.unwrap_or(false),
            exclude_cidrs: self.exclude_cidrs.unwrap_or_default(),
            // kube-proxy passes whole seconds to the kernel; 0 keeps its value.
            timeouts: Timeouts {
                tcp: self.tcp_timeout.map_or(0, secs_u32),
                tcp_fin: self.tcp_fin_timeout.map_or(0, secs_u32),
                udp: self.udp_timeout.map_or(0, secs_u32),
            },
            drain_timeout_secs: defaults.drain_timeout_secs,
            families: vec![Family::Inet, Family::Inet6],
            node_port_range: defaults.node_port_range,
            max_virtual_servers_per_service: self
                .max_virtual_servers_per_service
                .unwrap_or(defaults.max_virtual_servers_per_service),
        };
        let d = ConntrackSettings::default();
        let conntrack = ConntrackSettings {
            max_per_core: self.conntrack_max_per_core.unwrap_or(d.max_per_core),
            min: self.conntrack_min.unwrap_or(d.min),
            tcp_established_timeout: self
                .conntrack_tcp_established_timeout
                .unwrap_or(d.tcp_established_timeout),
            tcp_close_wait_timeout: self
                .conntrack_tcp_close_wait_timeout
                .unwrap_or(d.tcp_close_wait_timeout),
            tcp_be_liberal: self.conntrack_tcp_be_liberal.unwrap_or(d.tcp_be_liberal),
            udp_timeout: self.conntrack_udp_timeout.unwrap_or(d.udp_timeout),
            udp_stream_timeout: self
                .conntrack_udp_stream_timeout
                .unwrap_or(d.udp_stream_timeout),
        };
        Ok(Settings {
            proxy,
            sync_period,
            min_sync_period,
            verify_read: self.verify_read.unwrap_or_default(),
            healthz_bind_address: self
                .healthz_bind_address
                .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HEALTHZ_PORT)),
            metrics_bind_address: self
                .metrics_bind_address
                .unwrap_or(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), METRICS_PORT)),
            // Upstream's GetHostname: trimmed and lower-cased, empty = unset.
            hostname_override: self
                .hostname_override
                .map(|h| h.trim().to_lowercase())
                .filter(|h| !h.is_empty()),
            kubeconfig: self.kubeconfig.filter(|p| !p.as_os_str().is_empty()),
            conntrack,
        })
    }
}

/// Reads and parses a configuration file (YAML or JSON).
pub fn load_file(path: &std::path::Path) -> anyhow::Result<Parsed> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
