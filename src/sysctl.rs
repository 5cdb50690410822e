//! The kernel settings the proxier needs, written through `/proc/sys` with errors naming the key and the fix.
//!
//! The root is injectable so the logic is unit-tested on a temporary
//! directory; in production it is `/proc/sys`, whose `net.*` entries belong
//! to the network namespace of the calling thread.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// IPVS must hand forwarded connections to conntrack, or iptables NAT
/// (MASQUERADE) never sees them.
pub const VS_CONNTRACK: &str = "net.ipv4.vs.conntrack";
/// Drop a connection whose real server was deleted at its next packet, so
/// clients reconnect at once instead of timing out.
pub const VS_EXPIRE_NODEST_CONN: &str = "net.ipv4.vs.expire_nodest_conn";
/// Expire persistence templates of a quiesced (weight 0) real server.
pub const VS_EXPIRE_QUIESCENT_TEMPLATE: &str = "net.ipv4.vs.expire_quiescent_template";
/// Before 5.9, reuse mode 1 dropped the first SYN of a reused port for one
/// second (kubernetes #81775); upstream sets 0 on those kernels only.
pub const VS_CONN_REUSE_MODE: &str = "net.ipv4.vs.conn_reuse_mode";
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";
/// strictARP: answer ARP only for addresses on the asking interface, so
/// VIPs on kube-ipvs0 are not announced on the node's network.
pub const ARP_IGNORE: &str = "net.ipv4.conf.all.arp_ignore";
pub const ARP_ANNOUNCE: &str = "net.ipv4.conf.all.arp_announce";

/// A sysctl that cannot be read or set, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {key} does not exist ({}): {hint}", path.display())]
    Missing {
        key: String,
        path: PathBuf,
        hint: &'static str,
    },
    #[error(
        "cannot set sysctl {key} to {value} ({}): {reason}: run kube-ipvs as root with CAP_NET_ADMIN and /proc/sys mounted read-write (a privileged pod)",
        path.display()
    )]
    NotWritable {
        key: String,
        value: String,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("cannot access sysctl {key} ({}): {source}", path.display())]
    Io {
        key: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "sysctl {key} reads {found} after writing {wanted}: something else manages it; stop that or leave {key} at {wanted}"
    )]
    NotApplied {
        key: String,
        wanted: String,
        found: String,
    },
    #[error("sysctl key {0:?} is not of the form a.b.c")]
    BadKey(String),
    #[error("kernel release {0:?} does not start with MAJOR.MINOR")]
    BadRelease(String),
}

pub type Result<T, E = SysctlError> = std::result::Result<T, E>;

/// A kernel version from `uname -r`; only major and minor matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses a release such as "6.1.0-13-amd64", "5.8.0-63-generic" or "4.19+".
    pub fn parse(release: &str) -> Result<Self> {
        let bad = || SysctlError::BadRelease(release.to_string());
        let mut parts = release.trim().splitn(3, '.');
        let num = |s: Option<&str>| -> Option<u32> {
            let s = s?;
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            s[..end].parse().ok()
        };
        let major = num(parts.next()).ok_or_else(bad)?;
        let minor = num(parts.next()).ok_or_else(bad)?;
        let patch = num(parts.next()).unwrap_or(0);
        Ok(KernelVersion::new(major, minor, patch))
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The settings the proxier needs on `kernel`, in the order they are applied.
pub fn required(kernel: KernelVersion, strict_arp: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (VS_CONNTRACK, "1"),
        (VS_EXPIRE_NODEST_CONN, "1"),
        (VS_EXPIRE_QUIESCENT_TEMPLATE, "1"),
    ];
    if kernel < KernelVersion::new(5, 9, 0) {
        v.push((VS_CONN_REUSE_MODE, "0"));
    }
    v.push((IP_FORWARD, "1"));
    if strict_arp {
        v.push((ARP_IGNORE, "1"));
        v.push((ARP_ANNOUNCE, "2"));
    }
    v
}

/// One setting that was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub old: String,
    pub new: String,
}

/// Reads and writes sysctls below a root directory (normally `/proc/sys`).
#[derive(Debug, Clone)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Sysctl {
    pub fn new() -> Self {
        Self::with_root("/proc/sys")
    }

    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Sysctl { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key` ("net.ipv4.ip_forward" → `<root>/net/ipv4/ip_forward`).
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key
                .split('.')
                .any(|p| p.is_empty() || p == ".." || p.contains('/'))
        {
            return Err(SysctlError::BadKey(key.to_string()));
        }
        Ok(key.split('.').fold(self.root.clone(), |p, c| p.join(c)))
    }

    /// The current value, trimmed.
    pub fn get(&self, key: &str) -> Result<String> {
        let path = self.path(key)?;
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(e) => Err(self.error(key, &path, None, e)),
        }
    }

    /// Sets `key` to `value` unless it already has it; returns the old value
    /// when it changed. Reads back to catch writes the kernel ignored.
    pub fn set(&self, key: &str, value: &str) -> Result<Option<String>> {
        let path = self.path(key)?;
        let old = self.get(key)?;
        if old == value {
            return Ok(None);
        }
        if let Err(e) = std::fs::write(&path, format!("{value}\n")) {
            return Err(self.error(key, &path, Some(value), e));
        }
        let now = self.get(key)?;
        if now != value {
            return Err(SysctlError::NotApplied {
                key: key.to_string(),
                wanted: value.to_string(),
                found: now,
            });
        }
        Ok(Some(old))
    }

    /// The running kernel's version, from `<root>/kernel/osrelease`.
    pub fn kernel_version(&self) -> Result<KernelVersion> {
        KernelVersion::parse(&self.get("kernel.osrelease")?)
    }

    /// Applies every setting the proxier needs (see [`required`]) and returns
    /// those it changed. Stops at the first failure, naming the key.
    pub fn apply_proxy_settings(&self, strict_arp: bool) -> Result<Vec<Change>> {
        let kernel = self.kernel_version()?;
        let mut changed = Vec::new();
        for (key, value) in required(kernel, strict_arp) {
            if let Some(old) = self.set(key, value)? {
                tracing::info!(key, old, new = value, "sysctl set");
                changed.push(Change {
                    key,
                    old,
                    new: value.to_string(),
                });
            }
        }
        Ok(changed)
    }

    fn error(&self, key: &str, path: &Path, value: Option<&str>, e: io::Error) -> SysctlError {
        const EROFS: i32 = 30;
        let key = key.to_string();
        let path = path.to_path_buf();
        if e.kind() == io::ErrorKind::NotFound {
            let hint = if key.starts_with("net.ipv4.vs.") {
                "load IPVS first (modprobe ip_vs, or scripts/load-modules.sh)"
            } else if key.starts_with("net.") {
                "this kernel or network namespace does not provide it"
            } else {
                "is /proc mounted?"
            };
            return SysctlError::Missing { key, path, hint };
        }
        if let Some(value) = value {
            let reason = if e.raw_os_error() == Some(EROFS) {
                Some("/proc/sys is read-only")
            } else if e.kind() == io::ErrorKind::PermissionDenied {
                Some("permission denied")
            } else {
                None
            };
            if let Some(reason) = reason {
                return SysctlError::NotWritable {
                    key,
                    value: value.to_string(),
                    path,
                    reason,
                };
            }
        }
        SysctlError::Io {
            key,
            path,
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(release: &str) -> (tempfile::TempDir, Sysctl) {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysctl::with_root(dir.path());
        for (key, v) in [
            ("kernel.osrelease", release),
            (VS_CONNTRACK, "0"),
            (VS_EXPIRE_NODEST_CONN, "0"),
            (VS_EXPIRE_QUIESCENT_TEMPLATE, "0"),
            (VS_CONN_REUSE_MODE, "1"),
            (IP_FORWARD, "1"),
            (ARP_IGNORE, "0"),
            (ARP_ANNOUNCE, "0"),
        ] {
            let p = s.path(key).unwrap();
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        }
        (dir, s)
    }

    #[test]
    fn kernel_releases_parse() {
        for (r, want) in [
            ("6.1.0-13-amd64", (6, 1, 0)),
            ("6.12.118+deb12-amd64", (6, 12, 118)),
            ("5.8.0-63-generic", (5, 8, 0)),
            ("4.19+", (4, 19, 0)),
            ("5.10.0-rc1", (5, 10, 0)),
            ("6.18.44-fc-v657\n", (6, 18, 44)),
        ] {
            let v = KernelVersion::parse(r).unwrap();
            assert_eq!((v.major, v.minor, v.patch), want, "{r}");
        }
        for bad in ["", "6", "x.y", "6-1"] {
            assert!(KernelVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conn_reuse_mode_only_before_5_9_and_arp_only_when_strict() {
        let keys = |v, strict| {
            required(v, strict)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(keys(KernelVersion::new(5, 8, 18), false).contains(&VS_CONN_REUSE_MODE));
        assert!(!keys(KernelVersion::new(5, 9, 0), false).contains(&VS_CONN_REUSE_MODE));
        assert!(!keys(KernelVersion::new(6, 1, 0), false).contains(&ARP_IGNORE));
        let strict = required(KernelVersion::new(6, 1, 0), true);
        assert!(strict.contains(&(ARP_IGNORE, "1")) && strict.contains(&(ARP_ANNOUNCE, "2")));
    }

    #[test]
    fn apply_sets_what_differs_then_nothing() {
        let (_d, s) = fake_proc("5.4.0-42-generic");
        let changed = s.apply_proxy_settings(true).unwrap();
        let keys: Vec<_> = changed.iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            [
                VS_CONNTRACK,
                VS_EXPIRE_NODEST_CONN,
                VS_EXPIRE_QUIESCENT_TEMPLATE,
                VS_CONN_REUSE_MODE,
                ARP_IGNORE,
                ARP_ANNOUNCE
            ],
            "ip_forward was already 1"
        );
        assert_eq!(s.get(VS_CONN_REUSE_MODE).unwrap(), "0");
        assert_eq!(s.get(ARP_ANNOUNCE).unwrap(), "2");
        assert!(s.apply_proxy_settings(true).unwrap().is_empty());
    }

    #[test]
    fn newer_kernels_keep_conn_reuse_mode() {
        let (_d, s) = fake_proc("6.1.0-13-amd64");
        s.apply_proxy_settings(false).unwrap();
        assert_eq!(s.get(VS_CONN_REUSE_MODE).unwrap(), "1");
        assert_eq!(s.get(ARP_IGNORE).unwrap(), "0");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let (d, s) = fake_proc("6.1.0");
        std::fs::remove_file(s.path(VS_CONNTRACK).unwrap()).unwrap();
        let e = s.apply_proxy_settings(false).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("net.ipv4.vs.conntrack") && m.contains("modprobe ip_vs"),
            "{m}"
        );

        // A directory where the file should be: an I/O error naming the key.
        std::fs::create_dir(d.path().join("net/ipv4/vs/conntrack")).unwrap();
        let e = s.get(VS_CONNTRACK).unwrap_err();
        assert!(e.to_string().contains("net.ipv4.vs.conntrack"), "{e}");

        assert!(matches!(s.path("net..x"), Err(SysctlError::BadKey(_))));
        assert!(matches!(s.path("net./etc"), Err(SysctlError::BadKey(_))));
        let e = Sysctl::with_root("/nonexistent")
            .kernel_version()
            .unwrap_err();
        assert!(e.to_string().contains("kernel.osrelease"), "{e}");
    }

    #[test]
    fn read_only_proc_says_run_privileged() {
        let (_d, s) = fake_proc("6.1.0");
        let e = s.error(
            IP_FORWARD,
            Path::new("/proc/sys/net/ipv4/ip_forward"),
            Some("1"),
            io::Error::from_raw_os_error(30),
        );
        let m = e.to_string();
        assert!(m.contains("read-only") && m.contains("privileged"), "{m}");
        assert!(m.contains("net.ipv4.ip_forward"), "{m}");
    }
}
