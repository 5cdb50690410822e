//! Kernel tests: `kube-ipvs ipvs` against the real ipvsadm on the same kernel state, byte for byte.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{netns, sh, try_sh};

const BIN: &str = env!("CARGO_BIN_EXE_kube-ipvs");

/// A varied table: every scheduler, protocol, forwarding method, tunnel type and service option.
const CORPUS: &str = include_str!("../src/ipvsadm/golden/corpus.txt");

/// Runs kube-ipvs with `args`, feeding `stdin`; returns (success, stdout, stderr).
fn kube_ipvs(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kube-ipvs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait kube-ipvs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ours(args: &[&str]) -> String {
    let (ok, out, err) = kube_ipvs(args, "");
    assert!(ok, "kube-ipvs {args:?} failed: {err}");
    out
}

/// Feeds `input` to `ipvsadm -R`, asserting success.
fn ipvsadm_restore(input: &str) {
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipvsadm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait ipvsadm");
    assert!(
        out.status.success(),
        "ipvsadm -R failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load_optional_modules() {
    // The kernel would request these itself; loading them first keeps the first add fast.
    let _ = try_sh("modprobe ip_vs_pe_sip");
}

/// Compares our output with ipvsadm's, retrying while the kernel state moves
/// underneath (rate estimators tick every 2 s, connections expire): a
/// comparison counts only when ipvsadm printed the same before and after ours.
fn assert_same(ipvsadm_args: &str, our_args: &[&str]) {
    let mut last = None;
    for _ in 0..20 {
        let before = sh(&format!("ipvsadm {ipvsadm_args}"));
        let mine = ours(our_args);
        let after = sh(&format!("ipvsadm {ipvsadm_args}"));
        if before == after {
            assert_eq!(
                mine, before,
                "kube-ipvs {our_args:?} differs from ipvsadm {ipvsadm_args}"
            );
            return;
        }
        last = Some((before, after));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    panic!("ipvsadm {ipvsadm_args} never settled: {last:?}");
}

/// Every listing variant we implement, against ipvsadm's.
fn assert_all_formats_match() {
    assert_same("-Sn", &["ipvs", "save"]);
    assert_same("-Ln", &["ipvs", "list"]);
    assert_same("-Ln --stats", &["ipvs", "list", "--stats"]);
    assert_same("-Ln --rate", &["ipvs", "list", "--rate"]);
    assert_same(
        "-Ln --stats --exact",
        &["ipvs", "list", "--stats", "--exact"],
    );
    assert_same("-Ln --rate --exact", &["ipvs", "list", "--rate", "--exact"]);
    assert_same("-Ln --thresholds", &["ipvs", "list", "--thresholds"]);
    assert_same(
        "-Ln --persistent-conn",
        &["ipvs", "list", "--persistent-conn"],
    );
    assert_same("-Ln --tun-info", &["ipvs", "list", "--tun-info"]);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn save_and_list_match_ipvsadm_on_the_corpus() {
    netns();
    load_optional_modules();
    ipvsadm_restore(CORPUS);
    assert_all_formats_match();
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn listings_match_ipvsadm_with_traffic_counters() {
    netns();
    // A local real server: the kernel reports it as "Local", saves it as -g.
    sh("ip addr add 10.96.9.1/32 dev lo");
    sh("ip -6 addr add 2001:db8:9::1/128 dev lo nodad");
    ipvsadm_restore(
        "-A -t 10.96.9.1:80 -s rr\n\
         -a -t 10.96.9.1:80 -r 10.96.9.1:80 -g -w 1\n\
         -A -t [2001:db8:9::1]:80 -s wrr -p 30\n\
         -a -t [2001:db8:9::1]:80 -r [2001:db8:9::1]:80 -g -w 2\n\
         -A -u 10.96.9.1:53 -s rr\n\
         -a -u 10.96.9.1:53 -r 10.96.9.1:53 -g -w 1\n",
    );
    // Connections to nothing listening: refused, but counted in the statistics.
    for _ in 0..20 {
        let _ = try_sh("timeout 1 bash -c 'exec 3<>/dev/tcp/10.96.9.1/80' 2>/dev/null");
        let _ = try_sh("timeout 1 bash -c 'exec 3<>/dev/tcp/2001:db8:9::1/80' 2>/dev/null");
        let _ = try_sh("timeout 1 bash -c 'echo hi >/dev/udp/10.96.9.1/53' 2>/dev/null");
    }
    let stats = sh("ipvsadm -Ln --stats --exact");
    // The Conns column of the TCP service must have moved.
    let conns = stats
        .lines()
        .find(|l| l.starts_with("TCP  10.96.9.1:80"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("0");
    assert_ne!(conns, "0", "no traffic was counted:\n{stats}");
    assert_all_formats_match();
}

/// Deterministic pseudo-random numbers (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn order_matches_ipvsadm_on_a_large_scattered_table() {
    // Addresses across the whole space make ipvsadm's wrapping comparator
    // inconsistent, so only an exact replay of its merge sort matches.
    netns();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rules = String::new();
    for i in 0..150 {
        let r = rng.next();
        let v6 = i % 5 == 0;
        let addr = if v6 {
            let a = std::net::Ipv6Addr::from(u128::from(r) << 64 | u128::from(rng.next()));
            format!("[{a}]")
        } else {
            std::net::Ipv4Addr::from((r >> 32) as u32).to_string()
        };
        let port = 1 + (r % 65535);
        let proto = ["-t", "-u", "--sctp-service"][(r % 3) as usize];
        let svc = if i % 17 == 0 {
            format!("-f {}", 1 + (r >> 8) as u32 % u32::MAX)
        } else {
            format!("{proto} {addr}:{port}")
        };
        rules.push_str(&format!("-A {svc} -s rr\n"));
        for _ in 0..(r % 6) {
            let d = rng.next();
            // Real servers must be unicast (the kernel refuses the rest): 1-222 but 127, 2000::/3.
            let daddr = if v6 && !svc.starts_with("-f") {
                let low = u128::from(d) << 64 | u128::from(rng.next());
                let a = (low & !(0xe000_u128 << 112)) | (0x2000_u128 << 112);
                format!("[{}]", std::net::Ipv6Addr::from(a))
            } else {
                let first = match 1 + (d >> 56) % 222 {
                    127 => 128,
                    n => n,
                };
                let rest = (d >> 32) as u32 & 0x00ff_ffff;
                std::net::Ipv4Addr::from((first as u32) << 24 | rest).to_string()
            };
            rules.push_str(&format!(
                "-a {svc} -r {daddr}:{} -m -w {}\n",
                1 + d % 65535,
                d % 100
            ));
        }
    }
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], &rules);
    assert!(ok, "restore failed: {err}");
    assert_same("-Sn", &["ipvs", "save"]);
    assert_same("-Ln", &["ipvs", "list"]);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn our_restore_builds_what_ipvsadm_restore_builds() {
    netns();
    load_optional_modules();
    let (ok, out, err) = kube_ipvs(&["ipvs", "restore"], CORPUS);
    assert!(ok, "restore failed: {err}");
    assert_eq!(out, "");
    let ours_saved = sh("ipvsadm -Sn");
    let ours_thresholds = sh("ipvsadm -Ln --thresholds");
    let ours_tun = sh("ipvsadm -Ln --tun-info");
    sh("ipvsadm -C");
    ipvsadm_restore(CORPUS);
    assert_eq!(ours_saved, sh("ipvsadm -Sn"));
    assert_eq!(ours_thresholds, sh("ipvsadm -Ln --thresholds"));
    assert_eq!(ours_tun, sh("ipvsadm -Ln --tun-info"));
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn saved_rules_restore_to_the_same_table() {
    netns();
    load_optional_modules();
    ipvsadm_restore(CORPUS);
    let before = sh("ipvsadm -Sn");
    let saved = ours(&["ipvs", "save"]);
    ours(&["ipvs", "clear"]);
    assert_eq!(sh("ipvsadm -Sn"), "");
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], &saved);
    assert!(ok, "restoring our own save failed: {err}");
    assert_eq!(sh("ipvsadm -Sn"), before);
    // And ipvsadm -Sn output is valid restore input too (including `-f -1`).
    ours(&["ipvs", "clear"]);
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], &before);
    assert!(ok, "restoring ipvsadm -Sn output failed: {err}");
    assert_eq!(sh("ipvsadm -Sn"), before);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn a_bad_line_applies_nothing() {
    netns();
    let input = "-A -t 10.96.0.1:443 -s rr\n\
                 -a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 1\n\
                 -a -t 10.96.0.1:443 -r 10.244.1.6:6443 -m -w lots\n\
                 -A -u 10.96.0.10:53 -s rr\n";
    let (ok, out, err) = kube_ipvs(&["ipvs", "restore"], input);
    assert!(!ok, "a bad line must fail the restore");
    assert_eq!(out, "");
    assert!(err.contains("line 3: invalid weight 'lots'"), "{err}");
    assert!(err.contains("nothing applied"), "{err}");
    assert_eq!(sh("ipvsadm -Sn"), "", "nothing may be applied");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn kernel_refusals_name_the_line_and_the_rest_applies() {
    netns();
    let input = "-A -t 10.96.0.1:443 -s rr\n\
                 -A -t 10.96.0.1:443 -s rr\n\
                 -a -t 10.96.0.2:80 -r 10.244.1.6:80 -m\n\
                 -A -u 10.96.0.10:53 -s nosuchsched\n\
                 -A -u 10.96.0.11:53 -s rr\n";
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], input);
    assert!(!ok, "refused lines must fail the restore");
    assert!(
        err.contains("line 2:") && err.contains("already exists"),
        "{err}"
    );
    assert!(err.contains("line 3:"), "{err}");
    assert!(
        err.contains("line 4:") && err.contains("nosuchsched"),
        "{err}"
    );
    assert!(err.contains("3 of 5 line(s) failed"), "{err}");
    assert_eq!(
        sh("ipvsadm -Sn"),
        "-A -t 10.96.0.1:443 -s rr\n-A -u 10.96.0.11:53 -s rr\n"
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn edit_delete_and_clear_lines() {
    netns();
    let input = "-A -t 10.96.0.1:443 -s rr\n\
                 -a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 1\n\
                 -a -t 10.96.0.1:443 -r 10.244.1.6:6443 -m -w 1\n\
                 -A -u 10.96.0.10:53 -s rr\n\
                 -E -t 10.96.0.1:443 -s sh -b sh-port -p 30\n\
                 -e -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 7\n\
                 -d -t 10.96.0.1:443 -r 10.244.1.6:6443\n\
                 -D -u 10.96.0.10:53\n";
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], input);
    assert!(ok, "{err}");
    assert_eq!(
        sh("ipvsadm -Sn"),
        "-A -t 10.96.0.1:443 -s sh -p 30 -b sh-port\n-a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m -w 7\n"
    );
    let (ok, _, err) = kube_ipvs(&["ipvs", "restore"], "-C\n-A -u 10.96.0.12:53 -s rr\n");
    assert!(ok, "{err}");
    assert_eq!(sh("ipvsadm -Sn"), "-A -u 10.96.0.12:53 -s rr\n");
    ours(&["ipvs", "clear"]);
    assert_eq!(sh("ipvsadm -Sn"), "");
    // An empty table lists as ipvsadm lists it: header and titles only.
    assert_same("-Ln", &["ipvs", "list"]);
    assert_same("-Sn", &["ipvs", "save"]);
}
