//! Kernel conntrack sizing and timeouts, computed and written the way kube-proxy's conntrack setup does.

use std::time::Duration;

use crate::sysctl::{Sysctl, SysctlError};

pub const NF_CONNTRACK_MAX: &str = "net.netfilter.nf_conntrack_max";
pub const TCP_TIMEOUT_ESTABLISHED: &str = "net.netfilter.nf_conntrack_tcp_timeout_established";
pub const TCP_TIMEOUT_CLOSE_WAIT: &str = "net.netfilter.nf_conntrack_tcp_timeout_close_wait";
pub const TCP_BE_LIBERAL: &str = "net.netfilter.nf_conntrack_tcp_be_liberal";
pub const UDP_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout";
pub const UDP_TIMEOUT_STREAM: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";
/// The hash table size is a module parameter, not a sysctl.
pub const HASHSIZE_DIR: &str = "/sys/module/nf_conntrack/parameters";
pub const HASHSIZE: &str = "hashsize";

/// `conntrack.*` of the configuration, with upstream's v1alpha1 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// 0 leaves nf_conntrack_max alone (and ignores `min`).
    pub max_per_core: u32,
    pub min: u32,
    /// Zero durations leave the kernel's value.
    pub tcp_established_timeout: Duration,
    pub tcp_close_wait_timeout: Duration,
    pub tcp_be_liberal: bool,
    pub udp_timeout: Duration,
    pub udp_stream_timeout: Duration,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

impl ConntrackSettings {
    /// nf_conntrack_max = max(maxPerCore × CPUs, min), or `None` when
    /// maxPerCore is 0 (upstream's getConntrackMax).
    pub fn max(&self, ncpu: u32) -> Option<u32> {
        if self.max_per_core == 0 {
            return None;
        }
        let scaled = u64::from(self.max_per_core) * u64::from(ncpu.max(1));
        let max = scaled.max(u64::from(self.min));
        Some(u32::try_from(max).unwrap_or(u32::MAX))
    }

    /// The sysctls to write, in upstream's order; timeouts only when > 0,
    /// be_liberal only when true (upstream never resets them).
    pub fn sysctls(&self, ncpu: u32) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(max) = self.max(ncpu) {
            v.push((NF_CONNTRACK_MAX, max.to_string()));
        }
        let secs = |d: Duration| d.as_secs();
        if secs(self.tcp_established_timeout) > 0 {
            v.push((
                TCP_TIMEOUT_ESTABLISHED,
                secs(self.tcp_established_timeout).to_string(),
            ));
        }
        if secs(self.tcp_close_wait_timeout) > 0 {
            v.push((
                TCP_TIMEOUT_CLOSE_WAIT,
                secs(self.tcp_close_wait_timeout).to_string(),
            ));
        }
        if self.tcp_be_liberal {
            v.push((TCP_BE_LIBERAL, "1".into()));
        }
        if secs(self.udp_timeout) > 0 {
            v.push((UDP_TIMEOUT, secs(self.udp_timeout).to_string()));
        }
        if secs(self.udp_stream_timeout) > 0 {
            v.push((
                UDP_TIMEOUT_STREAM,
                secs(self.udp_stream_timeout).to_string(),
            ));
        }
        v
    }

    /// The hash size upstream writes with a new max: max/4, only when the
    /// current size is smaller (writing it fails outside the initial netns).
    pub fn hashsize(&self, ncpu: u32, current: u32) -> Option<u32> {
        let want = self.max(ncpu)? / 4;
        (current < want).then_some(want)
    }
}

/// What [`apply`] did: the sysctls it changed and non-fatal warnings.
#[derive(Debug, Default)]
pub struct Applied {
    pub changed: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
}

/// Writes the settings: sysctls through `proc` (normally `/proc/sys`), the
/// hash size through `sysmodule` (normally [`HASHSIZE_DIR`]). A hash size that
/// cannot be written is a warning, as upstream treats a read-only /sys.
pub fn apply(
    s: &ConntrackSettings,
    ncpu: u32,
    proc: &Sysctl,
    sysmodule: &Sysctl,
) -> Result<Applied, SysctlError> {
    let mut out = Applied::default();
    for (key, value) in s.sysctls(ncpu) {
        if proc.set(key, &value)?.is_some() {
            out.changed.push((key, value));
        }
    }
    if s.max(ncpu).is_some() {
        let current = sysmodule
            .get(HASHSIZE)
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        match current {
            None => out.warnings.push(format!(
                "cannot read {HASHSIZE_DIR}/{HASHSIZE}; conntrack hash size left as is"
            )),
            Some(cur) => {
                if let Some(want) = s.hashsize(ncpu, cur) {
                    match sysmodule.set(HASHSIZE, &want.to_string()) {
                        Ok(_) => out.changed.push((HASHSIZE, want.to_string())),
                        Err(e) => out.warnings.push(format!(
                            "conntrack hash size left at {cur} (wanted {want}): {e}"
                        )),
                    }
                }
            }
        }
    }
    Ok(out)
}

/// [`apply`] on this host: `/proc/sys`, [`HASHSIZE_DIR`], all online CPUs.
pub fn apply_host(s: &ConntrackSettings) -> Result<Applied, SysctlError> {
    apply(
        s,
        online_cpus(),
        &Sysctl::new(),
        &Sysctl::with_root(HASHSIZE_DIR),
    )
}

/// CPUs as upstream counts them (all online CPUs of the machine, not this
/// process's affinity), from `/sys/devices/system/cpu/online`.
pub fn online_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(&s))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1)
}

/// Counts a kernel CPU list such as "0-3,6,8-9"; `None` if malformed.
pub fn count_cpu_list(s: &str) -> Option<u32> {
    let mut n: u32 = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}
