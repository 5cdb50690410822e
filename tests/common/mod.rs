//! Shared support for kernel tests: each test gets its own network namespace.
//!
//! Kernel tests are `#[ignore]`d so that a native `cargo test` lists them as
//! ignored, never as passed (every one carries
//! `#[ignore = "kernel test: runs in the lab via scripts/test.sh"]`); the lab (`scripts/kernel-lab.sh`, driven by
//! `scripts/test.sh`) runs them with `--ignored` and `KUBE_IPVS_KERNEL_TESTS=1`.
#![allow(dead_code)]

pub mod cluster;
pub mod daemon;
pub mod gen_cluster;
pub mod kernel;
pub mod sched;
pub mod traffic;
pub mod upstream;

use std::io::Write;
use std::process::{Command, Stdio};
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

/// The IPVS rules (`ipvsadm -Sn` lines) that examples/manifests program.
pub const EXAMPLE_IPVS: &[&str] = &[
    "-A -t 10.96.0.10:80 -s rr",
    "-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
    "-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
    "-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1",
    "-A -t 192.168.100.10:30080 -s rr",
    "-a -t 192.168.100.10:30080 -r 10.244.2.1:8080 -m -w 1",
    "-A -u 10.96.0.53:53 -s rr",
    "-a -u 10.96.0.53:53 -r 10.244.3.2:53 -m -w 1",
    "-A -t 10.96.0.30:443 -s rr -p 3600",
];

/// A copy of examples/manifests that a test may rewrite.
pub fn example_manifests() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests");
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    d
}

/// This package's `kube-ipvs` binary.
pub const KUBE_IPVS: &str = env!("CARGO_BIN_EXE_kube-ipvs");

/// Runs `kube-ipvs` as node `lab-node`, its log at warn; returns (success, stdout, stderr).
/// Children inherit the calling thread's network namespace.
pub fn try_kube_ipvs(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(KUBE_IPVS);
    cmd.args(args)
        .env("NODE_NAME", "lab-node")
        .env("RUST_LOG", "warn");
    run_command(cmd, "")
}

/// [`try_kube_ipvs`] that must succeed; returns its stdout.
pub fn kube_ipvs(args: &[&str]) -> String {
    let (ok, out, err) = try_kube_ipvs(args);
    assert!(
        ok,
        "kube-ipvs {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Runs `program` with `args`, feeding `input` on stdin; returns (success, stdout, stderr).
/// Children inherit the calling thread's network namespace.
pub fn run(program: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(cmd, input)
}

/// Runs `cmd`, feeding `input` on stdin; returns (success, stdout, stderr).
pub fn run_command(mut cmd: Command, input: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    // Dropping stdin after writing closes it, so the child sees EOF.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a shell command with `input` on stdin; panics with its output on failure.
pub fn sh_stdin(cmd: &str, input: &str) -> String {
    let (ok, out, err) = run("sh", &["-c", cmd], input);
    assert!(ok, "`{cmd}` failed:\nstdout: {out}\nstderr: {err}");
    out
}

/// Runs a shell command in the current namespace; panics with its output on failure.
pub fn sh(cmd: &str) -> String {
    sh_stdin(cmd, "")
}

/// Runs a shell command and returns (success, stdout, stderr) without asserting.
pub fn try_sh(cmd: &str) -> (bool, String, String) {
    run("sh", &["-c", cmd], "")
}
