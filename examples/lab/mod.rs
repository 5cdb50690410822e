//! Shared by the lab benchmarks: shell commands and fresh network namespaces.
#![allow(dead_code)]

pub mod api;
pub mod uplink;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The release `kube-ipvs` next to the running example
/// (target/release/examples/..), or `KUBE_IPVS_BIN`.
pub fn kube_ipvs_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("KUBE_IPVS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kube-ipvs"))
        .ok_or("no target directory")?;
    if !bin.exists() {
        return Err(format!(
            "{} not found: cargo build --release --bin kube-ipvs (or set KUBE_IPVS_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Moves the calling thread into a fresh network namespace with `lo` up, so
/// each tool measured starts from an empty kernel state.
pub fn fresh_netns() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}: run as root"))?;
    sh("ip link set lo up", None).map(|_| ())
}

/// Runs a shell command (in the calling thread's namespace), optionally
/// feeding stdin; its stdout, or an error naming the command and its stderr.
pub fn sh(cmd: &str, input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn `{cmd}`: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    if let Some(text) = input {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("write to `{cmd}`: {e}"))?;
    }
    // Closing stdin lets the command see EOF.
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for `{cmd}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
