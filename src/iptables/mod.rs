//! Applies our iptables chains with `iptables-restore --noflush`, ensures the jumps into them, verifies with `iptables-save`.
//!
//! Debian's iptables tools do the work: one restore process per apply, one
//! save process to read back. We only ever write chains listed in
//! [`OwnedChains`] and our jump rules; every other chain and rule on the host
//! is left as it was. The backend (nft or legacy) is detected once, the way
//! kube-proxy's iptables-wrapper does, so we write where the host's other
//! rules already live.

pub mod chains;
pub mod payload;
pub mod verify;

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ipvs_netlink::ipvs::Family;

pub use chains::{FILTER_CHAINS, JUMPS, NAT_CHAINS, owned_chains};
pub use payload::{
    Backend, Jump, OwnedChains, PayloadError, SavedTable, check_payload, choose_backend, parse_save,
};
pub use verify::{iptables_in_sync, normalize_rule};

/// How long restore waits for the xtables lock (legacy; nft needs no lock).
pub const DEFAULT_WAIT_SECS: u32 = 5;

/// How long one iptables-restore or iptables-save may run before it is
/// killed: the lock wait above plus far more than a 10,000-Service ruleset
/// takes. A tool stuck past it (a hung nft transaction, a lock holder that
/// ignores --wait) would otherwise stall the sync loop for good.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What failed while running the iptables tools, quoting what the tool said.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(
        "{binary} not found{}: install Debian's iptables package (apt-get install iptables)",
        in_dir(dir)
    )]
    MissingBinary {
        binary: String,
        dir: Option<PathBuf>,
    },
    #[error("could not run {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} rejected line {line} of the ruleset `{text}`: {stderr}")]
    Rejected {
        binary: String,
        line: usize,
        text: String,
        stderr: String,
    },
    #[error(
        "{binary} is still waiting for the xtables lock: another iptables user holds /run/xtables.lock; retry later"
    )]
    LockHeld { binary: String },
    #[error(
        "{binary} did not finish within {}s and was killed: another process may hold the xtables lock (/run/xtables.lock) or the kernel's netfilter is stuck; the sync is retried with backoff",
        timeout.as_secs_f32()
    )]
    TimedOut { binary: String, timeout: Duration },
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        binary: String,
        status: String,
        stderr: String,
    },
    /// Refused before running anything: the payload would touch a chain we don't own.
    #[error("refusing to apply: {0}")]
    Payload(#[from] PayloadError),
    #[error(
        "after applying, {table} chain {chain} holds {found} rules instead of {expected}: another program rewrote it; the next sync restores it"
    )]
    Verify {
        table: String,
        chain: String,
        expected: usize,
        found: usize,
    },
    #[error("{table} jump from {from} to {to} is still missing after adding it: check `{binary}`")]
    JumpMissing {
        binary: String,
        table: String,
        from: String,
        to: String,
    },
}

fn in_dir(dir: &Option<PathBuf>) -> String {
    dir.as_ref()
        .map(|d| format!(" in {}", d.display()))
        .unwrap_or_default()
}

pub type Result<T, E = IptablesError> = std::result::Result<T, E>;

/// The iptables tools of one backend and family.
#[derive(Debug, Clone)]
pub struct Iptables {
    backend: Backend,
    family: Family,
    /// Where the tools live; `None` searches `PATH`.
    bin_dir: Option<PathBuf>,
    wait_secs: u32,
    timeout: Duration,
}

impl Iptables {
    pub fn new(backend: Backend, family: Family) -> Self {
        Iptables {
            backend,
            family,
            bin_dir: None,
            wait_secs: DEFAULT_WAIT_SECS,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Uses the tools in `dir` instead of those on `PATH` (tests use fakes).
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    pub fn with_wait_secs(mut self, secs: u32) -> Self {
        self.wait_secs = secs;
        self
    }

    /// Kills a tool still running after `timeout` ([`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Detects the backend the host already uses from the save output of
    /// both backends (IPv4 and IPv6 together); nft when neither has rules.
    pub fn detect(bin_dir: Option<&Path>) -> Backend {
        let read = |backend| {
            let mut all: Option<String> = None;
            for family in [Family::Inet, Family::Inet6] {
                let mut t = Iptables::new(backend, family);
                t.bin_dir = bin_dir.map(Path::to_path_buf);
                match t.save() {
                    Ok(s) => all.get_or_insert_with(String::new).push_str(&s),
                    Err(e) => tracing::debug!(%backend, error = %e, "cannot read iptables rules"),
                }
            }
            all
        };
        let nft = read(Backend::Nft);
        let legacy = read(Backend::Legacy);
        let backend = choose_backend(nft.as_deref(), legacy.as_deref());
        tracing::info!(%backend, "iptables backend detected");
        backend
    }

    /// The binary name for `tool` ("restore", "save", or "" for the main one).
    pub fn binary(&self, tool: &str) -> String {
        let prefix = match self.family {
            Family::Inet => "iptables",
            Family::Inet6 => "ip6tables",
        };
        let mut s = format!("{prefix}-{}", self.backend);
        if !tool.is_empty() {
            s.push('-');
            s.push_str(tool);
        }
        s
    }

    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(String, String)> {
        let binary = self.binary(tool);
        let path = match &self.bin_dir {
            Some(d) => d.join(&binary),
            None => PathBuf::from(&binary),
        };
        let spawned = Command::new(&path)
            .args(args)
            .env("LC_ALL", "C")
            // Its own process group, so a kill on timeout reaches whatever
            // it started too (a wrapper script's children hold the pipes).
            .process_group(0)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IptablesError::MissingBinary {
                    binary,
                    dir: self.bin_dir.clone(),
                });
            }
            Err(source) => return Err(IptablesError::Spawn { binary, source }),
        };
        let out = match wait_output(child, stdin, self.timeout) {
            Ok(Some(out)) => out,
            Ok(None) => {
                return Err(IptablesError::TimedOut {
                    binary,
                    timeout: self.timeout,
                });
            }
            Err(source) => return Err(IptablesError::Spawn { binary, source }),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            return Ok((stdout, stderr));
        }
        if stderr.contains("xtables lock") {
            return Err(IptablesError::LockHeld { binary });
        }
        if let Some(input) = stdin
            && let Some(line) = payload::failed_line(&stderr)
        {
            let text = input.lines().nth(line - 1).unwrap_or("").to_string();
            return Err(IptablesError::Rejected {
                binary,
                line,
                text,
                stderr,
            });
        }
        Err(IptablesError::Failed {
            binary,
            status: out.status.to_string(),
            stderr,
        })
    }

    /// All tables as `iptables-save` prints them.
    pub fn save(&self) -> Result<String> {
        self.run("save", &[], None).map(|(out, _)| out)
    }

    /// Feeds `payload` to `iptables-restore --noflush`, waiting for the xtables lock.
    pub fn restore(&self, payload: &str) -> Result<()> {
        let wait = format!("--wait={}", self.wait_secs);
        self.run("restore", &["--noflush", &wait], Some(payload))
            .map(|_| ())
    }

    /// Applies our chains: checks that `payload` only touches chains in
    /// `owned` (nothing runs otherwise), restores it with `--noflush` (each
    /// declared chain is rewritten whole, others untouched), then reads back
    /// and checks every chain holds the number of rules we wrote. (A rule with
    /// comma-separated addresses saves as several rules: render one per address.)
    pub fn apply(&self, payload: &str, owned: &OwnedChains) -> Result<()> {
        let counts = check_payload(payload, owned)?;
        self.restore(payload)?;
        let saved = parse_save(&self.save()?);
        for ((table, chain), expected) in counts {
            let t = saved.get(&table);
            let exists = t.is_some_and(|t| t.chains.contains(&chain));
            let found = t.and_then(|t| t.rules.get(&chain)).map_or(0, |r| r.len());
            if !exists || found != expected {
                return Err(IptablesError::Verify {
                    table,
                    chain,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Adds whichever of `jumps` are missing (one save, at most one restore),
    /// creating their target chains if needed; returns how many were added.
    /// Jumps already there, and everything else in the built-in chains, stay.
    pub fn ensure_jumps(&self, jumps: &[Jump<'_>]) -> Result<usize> {
        let saved = parse_save(&self.save()?);
        let Some(p) = payload::missing_jumps_payload(jumps, &saved) else {
            return Ok(0);
        };
        let added = p.lines().filter(|l| l.starts_with("-I ")).count();
        self.restore(&p)?;
        let saved = parse_save(&self.save()?);
        if let Some(j) = jumps.iter().find(|j| {
            let spec = j.spec();
            !saved
                .get(j.table)
                .and_then(|t| t.rules.get(j.from))
                .is_some_and(|rs| rs.contains(&spec))
        }) {
            return Err(IptablesError::JumpMissing {
                binary: self.binary("save"),
                table: j.table.to_string(),
                from: j.from.to_string(),
                to: j.to.to_string(),
            });
        }
        Ok(added)
    }

    /// Removes our jumps and chains (for `--cleanup`); `false` if none were there.
    pub fn cleanup(&self, owned: &OwnedChains, jumps: &[Jump<'_>]) -> Result<bool> {
        let saved = parse_save(&self.save()?);
        match payload::cleanup_payload(owned, jumps, &saved) {
            Some(p) => self.restore(&p).map(|()| true),
            None => Ok(false),
        }
    }
}

/// What a finished tool wrote and how it exited.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Feeds `stdin` to `child` and collects its output, on threads of their
/// own so that neither a full pipe nor a hung tool can block us; `None`
/// when it ran past `timeout`, after killing its process group.
fn wait_output(
    mut child: Child,
    stdin: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Option<Output>> {
    let deadline = Instant::now() + timeout;
    let input = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    std::thread::scope(|scope| {
        if let (Some(text), Some(mut pipe)) = (stdin, input) {
            // restore reads all of its input before writing much; a write
            // error (it exited early) shows up in its status and stderr.
            scope.spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        let out = scope.spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = stdout.as_mut() {
                let _ = p.read_to_end(&mut v);
            }
            v
        });
        let err = scope.spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = stderr.as_mut() {
                let _ = p.read_to_end(&mut v);
            }
            v
        });
        // Polled: std has no wait with a timeout. Short first (a restore
        // usually takes milliseconds), then at most every 20 ms.
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(Some(status)),
                Ok(None) if Instant::now() < deadline => {}
                other => {
                    // Timed out (or cannot be waited for): kill the group,
                    // so the pipes close and the threads above end.
                    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.kill();
                    let _ = child.wait();
                    break other.map(|_| None);
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        status.map(|s| {
            s.map(|status| Output {
                status,
                stdout,
                stderr,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable fake tool into `dir`.
    fn fake(dir: &Path, name: &str, script: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn binary_names_follow_debian() {
        let t = Iptables::new(Backend::Nft, Family::Inet);
        assert_eq!(t.binary("restore"), "iptables-nft-restore");
        let t = Iptables::new(Backend::Legacy, Family::Inet6);
        assert_eq!(t.binary("save"), "ip6tables-legacy-save");
        assert_eq!(t.binary(""), "ip6tables-legacy");
    }

    #[test]
    fn missing_binary_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let t = Iptables::new(Backend::Nft, Family::Inet).with_bin_dir(dir.path());
        let e = t.save().unwrap_err();
        assert!(matches!(e, IptablesError::MissingBinary { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("iptables-nft-save not found") && s.contains("apt-get install iptables"),
            "{s}"
        );
        // Detection with no tools at all falls back to nft.
        assert_eq!(Iptables::detect(Some(dir.path())), Backend::Nft);
    }

    #[test]
    fn rejected_payload_quotes_the_failing_line() {
        let dir = tempfile::tempdir().unwrap();
        fake(
            dir.path(),
            "iptables-nft-restore",
            "cat >/dev/null; echo 'iptables-nft-restore: line 3 failed' >&2; exit 1",
        );
        let t = Iptables::new(Backend::Nft, Family::Inet).with_bin_dir(dir.path());
        let owned = OwnedChains::new().with("nat", ["KUBE-SERVICES"]);
        let p = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m bogus -j RETURN\nCOMMIT\n";
        let e = t.apply(p, &owned).unwrap_err();
        match &e {
            IptablesError::Rejected { line, text, .. } => {
                assert_eq!(*line, 3);
                assert_eq!(text, "-A KUBE-SERVICES -m bogus -j RETURN");
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("-m bogus"), "{e}");
    }

    #[test]
    fn restore_gets_noflush_and_wait_and_foreign_payloads_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("args");
        fake(
            dir.path(),
            "ip6tables-legacy-restore",
            &format!("echo \"$@\" >{}; cat >/dev/null", log.display()),
        );
        fake(
            dir.path(),
            "ip6tables-legacy-save",
            "printf '*nat\\n:KUBE-SERVICES - [0:0]\\n-A KUBE-SERVICES -j RETURN\\nCOMMIT\\n'",
        );
        let t = Iptables::new(Backend::Legacy, Family::Inet6)
            .with_bin_dir(dir.path())
            .with_wait_secs(7);
        let owned = OwnedChains::new().with("nat", ["KUBE-SERVICES"]);
        t.apply(
            "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n",
            &owned,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "--noflush --wait=7\n"
        );

        // Read-back disagrees with what we wrote.
        let e = t
            .apply("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n", &owned)
            .unwrap_err();
        assert!(
            matches!(
                e,
                IptablesError::Verify {
                    expected: 0,
                    found: 1,
                    ..
                }
            ),
            "{e}"
        );

        std::fs::remove_file(&log).unwrap();
        let e = t
            .apply("*nat\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n", &owned)
            .unwrap_err();
        assert!(matches!(e, IptablesError::Payload(_)), "{e}");
        assert!(
            !log.exists(),
            "restore ran for a payload touching PREROUTING"
        );
    }

    #[test]
    fn a_hung_tool_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores its input and hangs in a child of its own, which holds
        // the output pipes: only a kill of the whole group ends it.
        fake(dir.path(), "iptables-nft-restore", "sleep 60 & wait");
        fake(dir.path(), "iptables-nft-save", "sleep 60");
        let t = Iptables::new(Backend::Nft, Family::Inet)
            .with_bin_dir(dir.path())
            .with_timeout(Duration::from_millis(300));
        // More than a pipe's 64 KiB of input, which nobody reads.
        let payload = format!("*nat\n{}COMMIT\n", "# filler\n".repeat(20_000));
        let start = Instant::now();
        let e = t.restore(&payload).unwrap_err();
        assert!(matches!(e, IptablesError::TimedOut { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("iptables-nft-restore")
                && msg.contains("0.3s")
                && msg.contains("xtables lock"),
            "{msg}"
        );
        let e = t.save().unwrap_err();
        assert!(matches!(e, IptablesError::TimedOut { .. }), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}: the kill did not end the tools",
            start.elapsed()
        );
    }

    #[test]
    fn lock_contention_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fake(
            dir.path(),
            "iptables-legacy-restore",
            "cat >/dev/null; echo 'Another app is currently holding the xtables lock. Stopped waiting after 5s.' >&2; exit 4",
        );
        let t = Iptables::new(Backend::Legacy, Family::Inet).with_bin_dir(dir.path());
        let e = t.restore("*nat\nCOMMIT\n").unwrap_err();
        assert!(matches!(e, IptablesError::LockHeld { .. }), "{e}");
    }
}
