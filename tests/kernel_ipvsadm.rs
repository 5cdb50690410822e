//! Kernel tests: `kube-ipvs ipvs` against the real ipvsadm on the same kernel state, byte for byte.

mod common;

use common::{netns, sh, try_sh};
use ipvs_netlink::ipvs::IpvsClient;
use kube_ipvs::ipvsadm;

const BIN: &str = env!("CARGO_BIN_EXE_kube-ipvs");

/// A varied table: every scheduler, protocol, forwarding method, tunnel type and service option.
const CORPUS: &str = include_str!("../src/ipvsadm/golden/corpus.txt");

/// Runs kube-ipvs with `args`, feeding `stdin`; returns (success, stdout, stderr).
fn kube_ipvs(args: &[&str], stdin: &str) -> (bool, String, String) {
    common::run(BIN, args, stdin)
}

fn ours(args: &[&str]) -> String {
    let (ok, out, err) = kube_ipvs(args, "");
    assert!(ok, "kube-ipvs {args:?} failed: {err}");
    out
}

/// Feeds `input` to `ipvsadm -R`, asserting success.
fn ipvsadm_restore(input: &str) {
    common::sh_stdin("ipvsadm -R", input);
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
    let _serial = common::ipvs_serial();
    netns();
    load_optional_modules();
    ipvsadm_restore(CORPUS);
    assert_all_formats_match();
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn listings_match_ipvsadm_with_traffic_counters() {
    let _serial = common::ipvs_serial();
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
    // One bash for all of them: every process start is slow in the emulated lab.
    let _ = try_sh(
        "timeout 20 bash -c 'for i in 1 2 3 4 5 6 7 8; do \
           (exec 3<>/dev/tcp/10.96.9.1/80) 2>/dev/null; \
           (exec 3<>/dev/tcp/2001:db8:9::1/80) 2>/dev/null; \
           echo hi 2>/dev/null >/dev/udp/10.96.9.1/53; \
         done'",
    );
    // The kernel folds per-CPU counters into what it reports every 2 s.
    std::thread::sleep(std::time::Duration::from_secs(3));
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
    let _serial = common::ipvs_serial();
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
    let _serial = common::ipvs_serial();
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
    let _serial = common::ipvs_serial();
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
    let _serial = common::ipvs_serial();
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
    let _serial = common::ipvs_serial();
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
    let _serial = common::ipvs_serial();
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

/// The table, including what -S leaves out (thresholds), read in-process: the
/// other tests prove these formatters print what ipvsadm prints, and skipping
/// two ipvsadm runs per case keeps this test fast under an emulated CPU.
fn snapshot(client: &mut IpvsClient) -> String {
    let info = client.info().expect("IPVS info");
    let table = ipvsadm::read_table(client).expect("read table");
    ipvsadm::save(&table) + &ipvsadm::list(&info, &table, ipvsadm::ListFormat::Thresholds, false)
}

/// Lines ipvsadm accepts, each on its own service or real server so they can
/// share one restore; a few are refused by the kernel, which both tools
/// report and step over.
const ACCEPTED: &str = "\
-A -t 10.9.9.9:80 -s rr
-C
-A -t 10.1.0.1:80
-A -t 10.1.0.2:80 -p
-A -t 10.1.0.3 -p 10
-A -u 10.1.0.4:53 -o
-A -f 3 -o -s rr
-A -t 10.1.0.5:80 -s sh -b sh-port,sh-fallback
-A -t 10.1.0.6:80 -s mh -b mh-port
-A -t 10.1.0.7:80 -s rr -b flag-3,flag-1
-A -f 5 -6 -s rr -p -M 48
-A -t [2001:db8::1]:80 -p 5 -M 64
-A -t 10.1.0.8:80 -p 5 -M 255.255.255.128
-A -t 10.1.0.9:80 -p 2678400
-A --sctp-service 10.1.0.10:80
-A -u [::ffff:10.0.0.1]:53 -s lc
--add-service --tcp-service 10.1.0.11:80 --scheduler rr --persistent 20 --netmask 255.255.0.0
-A -u 10.1.0.12:5060 -s rr -p 60 --pe sip
-A -f 4294967295 -s rr
ipvsadm -A -t 10.1.0.13:80 -s wrr
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.0.0.2:8080
-a -t 10.0.0.1:80 -r 10.0.0.3
-a -t 10.0.0.1:80 -r 10.0.0.4:8080 -m -w 0 -x 10 -y 5
-a -t 10.0.0.1:80 -r 10.0.0.5:8080 -m -w 2147483647
-a -t 10.0.0.1:80 -r 10.0.0.6 -i
-a -t 10.0.0.1:80 -r 10.0.0.7 -i --tun-type ipip
-a -t 10.0.0.1:80 -r 10.0.0.8 -i --tun-type gue --tun-port 5000 --tun-csum
-a -t 10.0.0.1:80 -r 10.0.0.9 -i --tun-type gue --tun-port 5000
-a -t 10.0.0.1:80 -r 10.0.0.10 -i --tun-type gre --tun-csum
-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -i
-a -t 10.0.0.1:80 -r 10.0.0.11 --weight 3 --masquerading --u-threshold 4 --l-threshold 2
-a -t 10.0.0.1:80 --real-server 10.0.0.12 --gatewaying
-a -t 10.0.0.1:80 -r 10.0.0.13 --ipip
-a -t 10.0.0.99:80 -r 10.0.0.2 -m
-e -t 10.0.0.1:80 -r 10.0.0.99 -m
-d -t 10.0.0.1:80 -r 10.0.0.99
-A -t 10.2.0.1:80 -s rr
-E -t 10.2.0.1:80 -s wrr -p
-A -t 10.2.0.2:80 -s rr -p 30
-E -t 10.2.0.2:80
-E -t 10.2.0.99:80 -s rr
-A -t 10.2.0.1:80 -s rr
-A -t 10.2.0.3:80 -s rr
-D -t 10.2.0.3:80
-A -u 10.2.0.4:53 -s nosuchsched
-A -f 7 -s rr
-a -f 7 -r 10.0.0.2 -m
-a -f 7 -r 10.0.0.3:99 -g
-A -f 7 -6 -s rr
-a -f 7 -6 -r [2001:db8::5]:99 -m
-A -t 10.3.0.1:80 -s rr
-a -t 10.3.0.1:80 -r 10.0.0.2:80 -m -w 2
-a -t 10.3.0.1:80 -r 10.0.0.3:80 -m -w 2
-a -t 10.3.0.1:80 -r 10.0.0.4:80 -m -w 2
-e -t 10.3.0.1:80 -r 10.0.0.2
-e -t 10.3.0.1:80 -r 10.0.0.3:80 -m -w 9 -x 3
-d -t 10.3.0.1:80 -r 10.0.0.4
-d -t 10.3.0.1:80 -r 10.0.0.4:81
";

/// Lines ipvsadm refuses before touching the kernel.
const REJECTED: &[&str] = &[
    "-A -t 10.0.0.1:0 -s rr",
    "-A -t 10.0.0.1:80 -o",
    "-A -t 10.0.0.1:80 -b sh-port",
    "-A -t 10.0.0.1:80 -s mh -b sh-port",
    "-A -t 10.0.0.1:80 -s rr -b nosuchflag",
    "-A -f 5 -6 -s rr -p -M 129",
    "-A -t 10.0.0.1:80 -p 0",
    "-A -t 10.0.0.1:80 -p 2678401",
    "-A -t 10.0.0.1:80 -s rr -x 5",
    "-A -t 10.0.0.1:80 -r 10.0.0.2",
    "-A -t 10.0.0.1:65536",
    "-A -f 0",
    "-A -t 10.0.0.1:80 -s rr -s wrr",
    "-A -t 10.0.0.1:80 -6",
    "-C -t 10.0.0.1:80",
    "-D -t 10.0.0.1:80 -s rr",
    "-d -t 10.0.0.1:80 -r 10.0.0.2 -w 3",
    "-a -t 10.0.0.1:80",
    "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 2147483648",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -x -1",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 5 --tun-csum --tun-nocsum",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-port 5",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 5",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -m --tun-type gre",
    "-a -t 10.0.0.1:80 -r [2001:db8::2] -m",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -g",
    "-a -t 10.0.0.1:80 -r 10.0.0.2 -s rr",
];

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn restore_lines_do_what_ipvsadm_does_with_them() {
    let _serial = common::ipvs_serial();
    netns();
    load_optional_modules();
    let mut client = IpvsClient::new().expect("IPVS client");
    // One restore each way (spawning is slow in the emulated lab).
    let (_, _, theirs_err) = common::run("ipvsadm", &["-R"], ACCEPTED);
    assert!(
        !theirs_err.contains("Try `"),
        "ipvsadm refused to parse a line meant to be accepted: {theirs_err}"
    );
    let theirs = snapshot(&mut client);
    client.flush().expect("flush");
    let (ours_ok, _, ours_err) = kube_ipvs(&["ipvs", "restore"], ACCEPTED);
    let mine = snapshot(&mut client);
    assert_eq!(
        mine, theirs,
        "ipvsadm said: {theirs_err}\nwe said: {ours_err}"
    );
    // The kernel refused some lines: say which, by number.
    assert!(!ours_ok);
    let refused: Vec<usize> = ours_err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("kube-ipvs: ")
                .unwrap_or(l)
                .strip_prefix("line ")
        })
        .filter_map(|l| l.split(':').next()?.parse().ok())
        .collect();
    let want: Vec<usize> = ACCEPTED
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            ["10.0.0.99", "-E -t 10.2.0.99", "nosuchsched", "10.0.0.4:81"]
                .iter()
                .any(|m| l.contains(m))
        })
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(
            1 + ACCEPTED
                .lines()
                .enumerate()
                .filter(|(_, l)| *l == "-A -t 10.2.0.1:80 -s rr")
                .nth(1)
                .map(|(i, _)| i)
                .unwrap_or(0),
        ))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(refused, want, "{ours_err}");

    // Refused lines: ipvsadm rejects them and so does our parser; nothing changes.
    let before = snapshot(&mut client);
    let mut mismatches = Vec::new();
    for line in REJECTED {
        let (theirs_ok, _, _) = try_sh(&format!("ipvsadm {line}"));
        let ours = ipvsadm::parse_restore(line);
        if theirs_ok || ours.is_ok() {
            mismatches.push(format!(
                "`{line}`: ipvsadm ok={theirs_ok}, ours {:?}",
                ours.map(|_| ())
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert_eq!(snapshot(&mut client), before);
}
