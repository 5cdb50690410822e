//! The daemon's kube-proxy-compatible flags (clap), and loading `--config` with flags on top.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipvs_netlink::ipvs::Scheduler;

use super::{
    ConfigError, ConfigValues, HEALTHZ_PORT, METRICS_PORT, Settings, duration, load_file,
    parse_bind_address, parse_cidr_list, parse_cluster_cidrs, parse_node_port_addresses,
    parse_scheduler,
};
use crate::model::config::Cidr;

/// Examples for `kube-ipvs --help`.
pub const EXAMPLES: &str = "Examples:
  kube-ipvs --config /var/lib/kube-ipvs/config.conf      # kube-proxy's KubeProxyConfiguration
  kube-ipvs --config config.conf --ipvs-scheduler=wlc    # flags override the file
  kube-ipvs --cluster-cidr=10.244.0.0/16,fd00:10:244::/56 --ipvs-strict-arp --v=2
  kube-ipvs --manifests ./cluster.yaml --sync-once       # one sync from files, no API server
  kube-ipvs --cleanup                                    # remove what kube-ipvs created
  kube-ipvs ipvs list                                    # ipvsadm -Ln, same bytes

Durations are Go durations (30s, 1m0s, 1h30m, 500ms). Boolean flags take an optional
=true/=false (--masquerade-all=false).";

/// Log output format (`--log-format`, upstream `--logging-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags of the daemon; each is `None` unless given, so the file's value stays.
///
/// Every one is global: kube-proxy's flags are accepted before or after any
/// subcommand (`kube-ipvs plan --nodeport-addresses=...`) and listed in each
/// subcommand's `--help`, since the one-shot subcommands build the same
/// proxy configuration as the daemon.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Proxy options (kube-proxy's names; they override --config)")]
pub struct DaemonFlags {
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON).
    #[arg(global = true, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Path to a kubeconfig file (default: in-cluster service account).
    #[arg(global = true, long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Node name to use instead of the hostname.
    #[arg(global = true, long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// IPVS scheduler [default: rr] [accepted: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh].
    #[arg(global = true, long, value_name = "NAME", value_parser = parse_scheduler)]
    pub ipvs_scheduler: Option<Scheduler>,
    /// Full resync interval, > 0 [default: 30s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_sync_period: Option<Duration>,
    /// Minimum interval between syncs, <= --ipvs-sync-period [default: 0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_min_sync_period: Option<Duration>,
    /// Comma-separated CIDRs where IPVS services kube-ipvs did not make are never adopted or deleted (Services inside are still programmed).
    #[arg(global = true, long, value_name = "CIDR,...", value_parser = parse_cidrs)]
    pub ipvs_exclude_cidrs: Option<CidrList>,
    /// Set arp_ignore=1 and arp_announce=2 (needed by MetalLB/kube-vip L2).
    #[arg(global = true, long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub ipvs_strict_arp: Option<bool>,
    /// IPVS idle TCP timeout; 0 keeps the kernel's [default: 0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// IPVS TCP timeout after FIN; 0 keeps the kernel's [default: 0s].
    #[arg(global = true, long = "ipvs-tcpfin-timeout", value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// IPVS UDP timeout; 0 keeps the kernel's [default: 0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub ipvs_udp_timeout: Option<Duration>,
    /// Proxy mode; kube-ipvs is the ipvs mode only (accepted for kube-proxy DaemonSet compatibility).
    #[arg(global = true, long, value_name = "MODE", value_parser = parse_proxy_mode)]
    pub proxy_mode: Option<String>,
    /// Bit of the packet mark that requests SNAT, 0-31 [default: 14].
    #[arg(global = true, long, value_name = "BIT", value_parser = clap::value_parser!(u8).range(0..=31))]
    pub iptables_masquerade_bit: Option<u8>,
    /// SNAT all traffic to Service IPs.
    #[arg(global = true, long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub masquerade_all: Option<bool>,
    /// Pod CIDR, or an IPv4,IPv6 pair, for detecting local traffic.
    #[arg(global = true, long, value_name = "CIDR[,CIDR]", value_parser = parse_cluster)]
    pub cluster_cidr: Option<CidrList>,
    /// Node addresses NodePorts listen on: CIDRs, "primary" or "all" [default: all].
    #[arg(global = true, long, value_name = "CIDR,...", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    /// Health check server address [default: 0.0.0.0:10256].
    #[arg(global = true, long, value_name = "IP:PORT", value_parser = |s: &str| parse_bind_address(s, HEALTHZ_PORT))]
    pub healthz_bind_address: Option<SocketAddr>,
    /// Metrics server address [default: 127.0.0.1:10249].
    #[arg(global = true, long, value_name = "IP:PORT", value_parser = |s: &str| parse_bind_address(s, METRICS_PORT))]
    pub metrics_bind_address: Option<SocketAddr>,
    /// Conntrack entries per CPU; 0 leaves nf_conntrack_max alone [default: 32768].
    #[arg(global = true, long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
    pub conntrack_max_per_core: Option<u32>,
    /// Lower bound of nf_conntrack_max [default: 131072].
    #[arg(global = true, long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
    pub conntrack_min: Option<u32>,
    /// Idle established TCP conntrack timeout; 0 keeps the kernel's [default: 24h0m0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// CLOSE_WAIT conntrack timeout; 0 keeps the kernel's [default: 1h0m0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Conntrack liberal TCP mode (out-of-window packets are not INVALID).
    #[arg(global = true, long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle unreplied UDP conntrack timeout; 0 keeps the kernel's [default: 0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub conntrack_udp_timeout: Option<Duration>,
    /// Idle assured UDP conntrack timeout; 0 keeps the kernel's [default: 0s].
    #[arg(global = true, long, value_name = "DURATION", value_parser = duration::parse)]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// How the periodic verification reads IPVS: `proc` (one read of /proc/net/ip_vs, plus a tenth of the services over netlink each period) or `netlink` (every service over netlink, every period) [default: proc].
    #[arg(global = true, long, value_name = "HOW", value_enum)]
    pub verify_read: Option<crate::config::VerifyRead>,
    /// Refuse a Service needing more IPVS virtual servers than this on a node (ports × its addresses and NodePort node addresses); 0 = no cap [default: 100000].
    #[arg(global = true, long, value_name = "N")]
    pub max_virtual_servers_per_service: Option<u64>,
    /// Log format.
    #[arg(
        global = true,
        long,
        value_name = "FORMAT",
        visible_alias = "logging-format"
    )]
    pub log_format: Option<LogFormat>,
    /// Log verbosity as klog's: 0-2 info, 3-4 debug, 5+ trace (RUST_LOG overrides).
    #[arg(global = true, short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,
}

/// A CIDR list given as one comma-separated flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

fn parse_proxy_mode(s: &str) -> Result<String, String> {
    match s {
        "" | "ipvs" => Ok(s.to_string()),
        other => Err(format!(
            "kube-ipvs implements only the \"ipvs\" proxy mode, not {other:?}; accepted: ipvs"
        )),
    }
}

fn parse_cidrs(s: &str) -> Result<CidrList, String> {
    let parts: Vec<&str> = s.split(',').filter(|p| !p.trim().is_empty()).collect();
    parse_cidr_list(&parts).map(CidrList)
}

fn parse_cluster(s: &str) -> Result<CidrList, String> {
    parse_cluster_cidrs(s).map(CidrList)
}

impl DaemonFlags {
    /// The values the flags set; `None` for every flag not given.
    pub fn values(&self) -> Result<ConfigValues, ConfigError> {
        let node_port_addresses = match &self.nodeport_addresses {
            None => None,
            Some(list) => Some(
                parse_node_port_addresses(list)
                    .map_err(|e| ConfigError::new("--nodeport-addresses", e))?,
            ),
        };
        Ok(ConfigValues {
            scheduler: self.ipvs_scheduler.clone(),
            sync_period: self.ipvs_sync_period,
            min_sync_period: self.ipvs_min_sync_period,
            exclude_cidrs: self.ipvs_exclude_cidrs.clone().map(|c| c.0),
            strict_arp: self.ipvs_strict_arp,
            tcp_timeout: self.ipvs_tcp_timeout,
            tcp_fin_timeout: self.ipvs_tcpfin_timeout,
            udp_timeout: self.ipvs_udp_timeout,
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.iptables_masquerade_bit,
            cluster_cidrs: self.cluster_cidr.clone().map(|c| c.0),
            node_port_addresses,
            healthz_bind_address: self.healthz_bind_address,
            metrics_bind_address: self.metrics_bind_address,
            hostname_override: self.hostname_override.clone(),
            kubeconfig: self.kubeconfig.clone(),
            conntrack_max_per_core: self.conntrack_max_per_core,
            conntrack_min: self.conntrack_min,
            conntrack_tcp_established_timeout: self.conntrack_tcp_timeout_established,
            conntrack_tcp_close_wait_timeout: self.conntrack_tcp_timeout_close_wait,
            conntrack_tcp_be_liberal: self.conntrack_tcp_be_liberal,
            conntrack_udp_timeout: self.conntrack_udp_timeout,
            conntrack_udp_stream_timeout: self.conntrack_udp_timeout_stream,
            max_virtual_servers_per_service: self.max_virtual_servers_per_service,
            verify_read: self.verify_read,
        })
    }

    /// `--config` (if any) with the given flags on top, resolved; plus the
    /// file's warnings about upstream fields kube-ipvs ignores.
    pub fn load(&self) -> anyhow::Result<(Settings, Vec<String>)> {
        let parsed = match &self.config {
            Some(path) => load_file(path)?,
            None => Default::default(),
        };
        let settings = parsed.values.overlay(self.values()?).resolve()?;
        Ok((settings, parsed.warnings))
    }

    /// Installs the tracing subscriber for `--log-format` and `-v`; a
    /// subscriber already installed (tests) is left in place.
    pub fn init_logging(&self) {
        use tracing_subscriber::EnvFilter;
        let level = match self.verbosity.unwrap_or(0) {
            0..=2 => "info",
            3..=4 => "debug",
            _ => "trace",
        };
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        // Colour only on a terminal: log collectors would store the escapes.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr);
        let _ = match self.log_format.unwrap_or_default() {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}
