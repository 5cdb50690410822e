//! Shared by the lab benchmarks: shell commands and fresh network namespaces.
#![allow(dead_code)]

pub mod api;
pub mod uplink;

use std::io::Write;
use std::process::{Command, Stdio};

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
