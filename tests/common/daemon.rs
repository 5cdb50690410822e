//! The real `kube-ipvs` daemon as a child process of a kernel test, killed whatever happens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{sh, try_sh};

/// TCG guests are slow, and slower still on a busy host (a wait of 60 s once
/// ran out there); every wait is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// A running daemon; killed and reaped on drop.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `kube-ipvs` with `source` (`--manifests DIR` or `--kubeconfig FILE`) on
    /// node lab-node, serving metrics and healthz on the given addresses; stderr goes to `log`.
    pub fn start(source: &[&str], metrics: &str, healthz: &str, log: PathBuf) -> Self {
        Self::start_with_sync_period(source, metrics, healthz, log, "2s")
    }

    /// As [`Daemon::start`] with another `--ipvs-sync-period`: a periodic
    /// verification of thousands of services takes seconds under TCG.
    pub fn start_with_sync_period(
        source: &[&str],
        metrics: &str,
        healthz: &str,
        log: PathBuf,
        sync_period: &str,
    ) -> Self {
        Self::start_wrapped(&[], source, metrics, healthz, log, sync_period)
    }

    /// As [`Daemon::start_with_sync_period`], run through `wrapper` (a
    /// command line that ends by executing the command appended to it, e.g.
    /// one that takes capabilities away); empty runs kube-ipvs directly.
    pub fn start_wrapped(
        wrapper: &[&str],
        source: &[&str],
        metrics: &str,
        healthz: &str,
        log: PathBuf,
        sync_period: &str,
    ) -> Self {
        let err = std::fs::File::create(&log).expect("create the daemon's log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(super::KUBE_IPVS);
                c
            }
            None => Command::new(super::KUBE_IPVS),
        };
        let child = cmd
            .args(source)
            .args(["--hostname-override", "lab-node"])
            .args(["--metrics-bind-address", metrics])
            .args(["--healthz-bind-address", healthz])
            // Periodic verification (by default often enough to see drains finish and drift repaired).
            .arg(format!("--ipvs-sync-period={sync_period}"))
            // nf_conntrack_max is read-only outside the initial namespace.
            .arg("--conntrack-max-per-core=0")
            .env("RUST_LOG", "info")
            // Plain log lines, so tests can match fields like `differences=0`.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start kube-ipvs");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Runs any long-lived process (`cmd`, fully set up but for its output)
    /// under the same care: stdout discarded, stderr to `log`, killed on drop.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let err = std::fs::File::create(&log).expect("create the process's log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status must be success.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        sh(&format!("kill -TERM {}", child.id()));
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = child.try_wait().expect("wait for kube-ipvs") {
                assert!(st.success(), "exit {st:?}; log:\n{}", self.log());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: no chance to clean up anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            sh(&format!("kill -KILL {}", c.id()));
            let _ = c.wait();
        }
    }

    /// The process id (after any wrapper's `exec`, the daemon's own).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to PATIENCE for the daemon to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = child.try_wait().expect("wait for kube-ipvs") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kube-ipvs did not exit; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn assert_running(&mut self) {
        if let Some(c) = &mut self.child
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!("kube-ipvs exited ({st:?}); log:\n{}", self.log());
        }
    }

    /// Polls `check` until it returns true; panics with `what`, IPVS and the log after PATIENCE.
    pub fn wait_for(&mut self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check() {
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nipvsadm -Sn:\n{}\nlog:\n{}",
                    try_sh("ipvsadm -Sn").1,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tiny HTTP/1.1 GET: (status, body); None while nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A metric sample's value from the exposition text (`name{labels}` as printed).
pub fn metric_in(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
