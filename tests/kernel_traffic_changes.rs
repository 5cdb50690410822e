//! Kernel tests of traffic while the daemon changes things: a long-lived TCP
//! connection through drains, scaling, `kill -9` and restart, and a UDP backend
//! replaced DNS-style (then its Service deleted and recreated) without
//! black-holing its client.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, PATIENCE};
use common::traffic::{
    Conn, TIMEOUT, in_ns, node_yaml, pod_ip, pod_number, ready, tcp_service, terminating, topology,
    udp_service, udp_socket_in, write_atomically,
};
use common::{sh, try_sh};

const VIP: &str = "10.96.0.10:80";

/// The web Service with ready endpoints on `pods`, and pod `ending` terminating.
fn web(pods: &[usize], ending: Option<usize>) -> String {
    let mut eps = ready(pods, "lab-node");
    if let Some(p) = ending {
        eps += &terminating(p, "lab-node");
    }
    tcp_service("web", "10.96.0.10", "", "", &eps)
}

fn real_server(pod: usize, weight: u8) -> String {
    format!("-a -t {VIP} -r {}:8080 -m -w {weight}", pod_ip(pod))
}

fn ipvs() -> String {
    try_sh("ipvsadm -Sn").1
}

/// A long-lived connection exchanging a line every 150 ms on its own thread.
struct Ticker {
    exchanges: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Conn, Duration)>,
}

impl Ticker {
    fn start(mut conn: Conn) -> Ticker {
        let exchanges = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, errs, halt) = (exchanges.clone(), errors.clone(), stop.clone());
        let pod = conn.pod.clone();
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            while !halt.load(Ordering::Relaxed) {
                let i = n.load(Ordering::Relaxed);
                match conn.exchange(&format!("tick{i}")) {
                    Ok(p) if p == pod => {
                        max_gap = max_gap.max(last.elapsed());
                        last = Instant::now();
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(p) => {
                        errs.lock()
                            .unwrap()
                            .push(format!("tick{i} answered by {p}"));
                        break;
                    }
                    Err(e) => {
                        errs.lock().unwrap().push(format!("tick{i}: {e}"));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            (conn, max_gap)
        });
        Ticker {
            exchanges,
            errors,
            stop,
            thread,
        }
    }

    /// Whether the connection exchanges `n` more lines (bounded wait); a
    /// failed check names `after`.
    fn advances(&self, n: usize, after: &str, fails: &mut Vec<String>) {
        let start = self.exchanges.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.exchanges.load(Ordering::Relaxed) < start + n {
            if Instant::now() > deadline || !self.errors.lock().unwrap().is_empty() {
                fails.push(format!(
                    "long-lived connection stalled after {after}: {} exchanges, errors {:?}",
                    self.exchanges.load(Ordering::Relaxed),
                    self.errors.lock().unwrap()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(self) -> (Conn, Duration, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (conn, gap) = self.thread.join().expect("ticker thread");
        let errors = self.errors.lock().unwrap().clone();
        (conn, gap, self.exchanges.load(Ordering::Relaxed), errors)
    }
}

/// `n` new connections from `ns` to the VIP: which pods answered. Each ends
/// with a reset, so it leaves no TIME_WAIT entry that would hold up the drain
/// of a pod removed later.
fn new_connections(ns: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let answer = in_ns(ns, || {
            Conn::open(VIP, TIMEOUT).map(|c| {
                let pod = c.pod.clone();
                c.reset();
                pod
            })
        });
        let key = match answer {
            Ok(pod) => pod,
            Err(e) => format!("error {e:?}"),
        };
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// Checks that `n` new connections all reach one of `allowed` (and each of them).
fn only_reach(ns: &str, allowed: &[usize], step: &str, fails: &mut Vec<String>) -> String {
    let seen = new_connections(ns, 4 * allowed.len());
    let names: Vec<String> = allowed.iter().map(|i| format!("pod{i}")).collect();
    if !(seen.keys().all(|k| names.contains(k)) && names.iter().all(|p| seen.contains_key(p))) {
        fails.push(format!(
            "after {step}: new connections reached {seen:?}, expected exactly {names:?}"
        ));
    }
    format!("{step}: {seen:?}")
}

/// The `ipvsadm -Ln` row of a real server: (weight, active, inactive).
fn counters(pod: usize) -> Option<(u32, u32, u32)> {
    let list = try_sh(&format!("ipvsadm -Ln -t {VIP}")).1;
    let row = list
        .lines()
        .find(|l| l.contains(&format!("-> {}:8080", pod_ip(pod))))?;
    let f: Vec<u32> = row
        .split_whitespace()
        .skip(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*f.first()?, *f.get(1)?, *f.get(2)?))
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn long_lived_connection_survives_drain_scaling_and_restart() {
    common::netns();
    let _serial = common::ipvs_serial();
    // Pods 1-4 are backends; pod 5 is the client.
    let t = topology("l", 5);
    let client = t.pod(5).to_string();
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-node.yaml"), node_yaml()).unwrap();
    std::fs::write(dir.path().join("web.yaml"), web(&[1, 2, 3], None)).unwrap();
    let source = ["--manifests", dir.path().to_str().unwrap()];
    let (metrics, healthz) = ("127.0.0.1:19349", "127.0.0.1:19356");
    let mut d = Daemon::start(&source, metrics, healthz, logs.path().join("first.log"));
    d.wait_for("web's three real servers", || {
        let s = ipvs();
        [1, 2, 3].iter().all(|i| s.contains(&real_server(*i, 1)))
    });
    d.wait_for("the ClusterIP answering", || {
        new_connections(&client, 1)
            .keys()
            .all(|k| k.starts_with("pod"))
    });
    let mut fails: Vec<String> = Vec::new();
    let mut spreads: Vec<String> = Vec::new();
    let started = Instant::now();

    let conn = Conn::open_from(&client, VIP, PATIENCE).expect("long-lived connection");
    let held = pod_number(&conn.pod);
    let ticker = Ticker::start(conn);
    ticker.advances(3, "opening", &mut fails);
    let mut others: Vec<usize> = [1, 2, 3].into_iter().filter(|i| *i != held).collect();

    // Drain: the held pod is terminating; it stays at weight 0 with its connection.
    write_atomically(dir.path(), "web.yaml", &web(&others, Some(held)));
    d.wait_for("the held pod at weight 0", || {
        ipvs().contains(&real_server(held, 0))
    });
    let row = counters(held);
    if !row.is_some_and(|(w, active, _)| w == 0 && active >= 1) {
        fails.push(format!(
            "draining pod{held}: ipvsadm -Ln (weight, active, inactive) = {row:?}"
        ));
    }
    ticker.advances(5, "the drain", &mut fails);
    spreads.push(only_reach(&client, &others, "drain", &mut fails));
    spreads.push(format!("at {:.1?}", started.elapsed()));

    // Scale up: pod 4 joins.
    others.push(4);
    write_atomically(dir.path(), "web.yaml", &web(&others, Some(held)));
    d.wait_for("pod4 added", || ipvs().contains(&real_server(4, 1)));
    ticker.advances(5, "adding pod4", &mut fails);
    spreads.push(only_reach(&client, &others, "adding pod4", &mut fails));
    spreads.push(format!("at {:.1?}", started.elapsed()));

    // Scale down: an idle pod leaves and is deleted once IPVS forgets its
    // (reset) test connections; the held pod leaves the slice too, and keeps
    // draining.
    let gone = others.remove(0);
    write_atomically(dir.path(), "web.yaml", &web(&others, None));
    d.wait_for("the idle removed pod deleted", || {
        !ipvs().contains(&format!("{}:8080", pod_ip(gone)))
    });
    if !ipvs().contains(&real_server(held, 0)) {
        fails.push(format!("pod{held} left the drain early:\n{}", ipvs()));
    }
    ticker.advances(5, &format!("removing pod{gone}"), &mut fails);
    spreads.push(only_reach(
        &client,
        &others,
        &format!("removing pod{gone}"),
        &mut fails,
    ));
    spreads.push(format!("at {:.1?}", started.elapsed()));

    // kill -9: the kernel state stays as it was, traffic flows on.
    let before = sh("ipvsadm -Sn");
    d.kill9();
    ticker.advances(10, "kill -9", &mut fails);
    let during = sh("ipvsadm -Sn");
    if during != before {
        fails.push(format!(
            "IPVS changed while kube-ipvs was down:\n{before}\n---\n{during}"
        ));
    }
    spreads.push(only_reach(&client, &others, "kill -9", &mut fails));
    spreads.push(format!("at {:.1?}", started.elapsed()));

    // Restart: adoption changes nothing; the drain carries on.
    let mut d = Daemon::start(&source, metrics, healthz, logs.path().join("second.log"));
    let second = logs.path().join("second.log");
    d.wait_for("adoption after the restart", || {
        std::fs::read_to_string(&second)
            .is_ok_and(|l| l.contains("adopted the existing kernel state"))
    });
    // Two periodic verifications (2 s apart) must leave everything alone.
    std::thread::sleep(Duration::from_secs(5));
    d.assert_running();
    let after = sh("ipvsadm -Sn");
    if after != before {
        fails.push(format!(
            "IPVS changed by the restarted daemon:\n{before}\n---\n{after}"
        ));
    }
    let adoption = d
        .log()
        .lines()
        .find(|l| l.contains("adopted the existing kernel state"))
        .unwrap_or_default()
        .to_string();
    if !adoption.contains("differences=0") {
        fails.push(format!("the restart adopted with changes: {adoption}"));
    }
    ticker.advances(5, "the restart", &mut fails);
    spreads.push(only_reach(&client, &others, "restart", &mut fails));
    spreads.push(format!("at {:.1?}", started.elapsed()));

    // Closing the connection ends the drain: the held pod is deleted.
    let (conn, max_gap, exchanges, errors) = ticker.finish();
    fails.extend(errors);
    conn.reset();
    d.wait_for("the drained pod deleted once its connection closed", || {
        !ipvs().contains(&format!("{}:8080", pod_ip(held)))
    });
    let last = sh("ipvsadm -Sn");
    if !others.iter().all(|i| last.contains(&real_server(*i, 1))) {
        fails.push(format!(
            "remaining pods {others:?} not all at weight 1:\n{last}"
        ));
    }
    spreads.push(format!("at {:.1?}", started.elapsed()));
    d.terminate();

    eprintln!(
        "held pod{held}; {exchanges} exchanges, longest gap {max_gap:?}; removed pod{gone}; \
         {}; adoption: {adoption}",
        spreads.join("; ")
    );
    assert!(
        fails.is_empty(),
        "checks failed:\n{}\nlog of the restarted daemon:\n{}",
        fails.join("\n"),
        d.log()
    );
    drop(t);
}

/// Sends a query every 100 ms from one fixed source port until stopped;
/// each entry is (when sent, the pod that answered or None).
fn udp_client(
    ns: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Option<String>)>> {
    let sock = udp_socket_in(ns, 40053);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 512];
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let _ = sock.send_to(format!("q{i}").as_bytes(), "10.96.0.53:53");
            i += 1;
            // A late answer may be read for the next query: harmless, since
            // only the answering pod's name is used.
            let answer = sock.recv_from(&mut buf).ok().map(|(n, _)| {
                String::from_utf8_lossy(&buf[..n])
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            });
            log.push((sent, answer));
            std::thread::sleep(Duration::from_millis(100));
        }
        log
    })
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn udp_backend_replaced_without_black_hole() {
    common::netns();
    let _serial = common::ipvs_serial();
    // Pods 1 and 2 serve DNS in turn; pod 3 is the client.
    let t = topology("u", 3);
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-node.yaml"), node_yaml()).unwrap();
    let dns = |pod: usize| udp_service("dns", "10.96.0.53", &ready(&[pod], "lab-node"));
    std::fs::write(dir.path().join("dns.yaml"), dns(1)).unwrap();
    let mut d = Daemon::start(
        &["--manifests", dir.path().to_str().unwrap()],
        "127.0.0.1:19449",
        "127.0.0.1:19456",
        logs.path().join("daemon.log"),
    );
    let rs = |pod: usize| format!("-a -u 10.96.0.53:53 -r {}:5353", pod_ip(pod));
    d.wait_for("the DNS service on pod1", || ipvs().contains(&rs(1)));
    let bound = || {
        try_sh("ip -o addr show dev kube-ipvs0")
            .1
            .contains("10.96.0.53/32")
    };
    d.wait_for("the DNS address bound", bound);

    let stop = Arc::new(AtomicBool::new(false));
    let client = udp_client(t.pod(3), stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let has_flows_of = |pod: usize| {
        let (ok, out, err) = try_sh(&format!(
            "conntrack -L -p udp --orig-dst 10.96.0.53 --reply-src {}",
            pod_ip(pod)
        ));
        assert!(ok, "conntrack -L failed: {err}");
        out.contains(&pod_ip(pod))
    };

    // Replace pod1 by pod2, as a DNS rollout does.
    let replaced = Instant::now();
    write_atomically(dir.path(), "dns.yaml", &dns(2));
    d.wait_for("pod1 replaced by pod2", || {
        let s = ipvs();
        s.contains(&rs(2)) && !s.contains(&rs(1))
    });
    let switched = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let pod1_flows = has_flows_of(1);
    // Control: the live flow is listed (IPVS keeps conntrack's reply tuple
    // pointing at the real server).
    let pod2_flows_live = has_flows_of(2);

    // Delete the Service: its flows go with it, though the client keeps
    // sending; then it comes back on pod1.
    let deleted = Instant::now();
    std::fs::remove_file(dir.path().join("dns.yaml")).unwrap();
    d.wait_for("the DNS service deleted", || {
        !ipvs().contains("10.96.0.53:53")
    });
    std::thread::sleep(Duration::from_secs(2));
    let pod2_flows = has_flows_of(2);
    write_atomically(dir.path(), "dns.yaml", &dns(1));
    // Addresses are bound last in a sync.
    d.wait_for("the DNS service back on pod1", || {
        ipvs().contains(&rs(1)) && bound()
    });
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let log = client.join().expect("UDP client");

    let mut fails: Vec<String> = Vec::new();
    let answers = |from: Instant, to: Instant| -> Vec<Option<String>> {
        log.iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let pod = |name: &str| Some(name.to_string());
    // Queries sent from a second after IPVS showed the change (conntrack
    // cleanup ends the same sync) must all be answered by the new pod. A
    // black hole lasts as long as the client keeps sending, so the second
    // hides none. Within it at most one query may be lost: one caught
    // between the IPVS and the conntrack update of the sync meets its old
    // flow, which IPVS drops once and then expires (expire_nodest_conn).
    let settle = Duration::from_secs(1);
    let first = log.first().map_or(replaced, |(at, _)| *at);
    let phases = [
        ("before", first, replaced, None, "pod1"),
        ("replaced", replaced, switched + settle, Some(1), ""),
        ("on pod2", switched + settle, deleted, None, "pod2"),
        ("recreated", back, back + settle, Some(1), ""),
        ("back on pod1", back + settle, Instant::now(), None, "pod1"),
    ];
    let mut summary = Vec::new();
    for (name, from, to, lost_max, want) in phases {
        let a = answers(from, to);
        let lost = a.iter().filter(|x| x.is_none()).count();
        let ok = match lost_max {
            Some(m) => lost <= m,
            None => a.len() >= 5 && a.iter().all(|x| *x == pod(want)),
        };
        if !ok {
            fails.push(format!("UDP queries {name}: {a:?}"));
        }
        summary.push(format!("{name}: {} queries, {lost} lost", a.len()));
    }
    if pod1_flows {
        fails.push("conntrack flows to pod1 left after it was replaced".into());
    }
    if !pod2_flows_live {
        fails.push("conntrack lists no flow to pod2 while it serves (the check is blind)".into());
    }
    if pod2_flows {
        fails.push("conntrack flows to pod2 left after the Service was deleted".into());
    }
    d.terminate();
    eprintln!("UDP: {}", summary.join("; "));
    assert!(
        fails.is_empty(),
        "checks failed:\n{}\nlog:\n{}",
        fails.join("\n"),
        d.log()
    );
    drop(t);
}
