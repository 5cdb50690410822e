//! Shared support for kernel tests: each test gets its own network namespace.
//!
//! Kernel tests are `#[ignore]`d so that a native `cargo test` lists them as
//! ignored, never as passed (every one carries
//! `#[ignore = "kernel test: runs in the lab via scripts/test.sh"]`); the lab (`scripts/kernel-lab.sh`, driven by
//! `scripts/test.sh`) runs them with `--ignored` and `KUBE_IPVS_KERNEL_TESTS=1`.
#![allow(dead_code)]

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// IPVS service hash tables are shared by all namespaces and a dump resumes by
/// position in them, so a change in one test's namespace can make another
/// test's dump (ours or ipvsadm's) skip or repeat entries. Tests that dump
/// IPVS therefore run one at a time within a binary, each holding this lock.
static IPVS_LOCK: Mutex<()> = Mutex::new(());

/// Serialises IPVS tests of one binary; hold the guard for the whole test.
pub fn ipvs_serial() -> MutexGuard<'static, ()> {
    IPVS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves the calling thread into a fresh network namespace with `lo` up.
///
/// IPVS, ipsets, links and iptables are per namespace, so tests are isolated
/// and leave nothing behind. `lo` must be up or adding a real server fails
/// with EINVAL. Child processes started from this thread inherit the namespace.
pub fn netns() {
    assert_eq!(
        std::env::var("KUBE_IPVS_KERNEL_TESTS").as_deref(),
        Ok("1"),
        "kernel test run outside the lab: use scripts/test.sh (or scripts/kernel-lab.sh -- scripts/kernel-suite.sh)"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): the lab runs tests as root");
    sh("ip link set lo up");
}

/// Runs a shell command in the current namespace; panics with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a shell command and returns (success, stdout, stderr) without asserting.
pub fn try_sh(cmd: &str) -> (bool, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
