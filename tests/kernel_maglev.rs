//! Kernel test of Maglev (`mh`) with real flows: a draining real server gets no new flow and keeps its established ones, which takes mh-fallback (kube-ipvs's default; upstream's mh-port alone refuses the flows hashed to it), and removing one of four real servers moves only its own share.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::traffic::{Conn, annotated, node_yaml, ready, tcp_service, terminating, topology};
use common::{netns, sh};

/// kube-ipvs's default flags for mh (mh-fallback,mh-port).
const VIP: &str = "10.96.8.10";
/// The same Service annotated with upstream's flags only (mh-port).
const VIP_UPSTREAM: &str = "10.96.8.20";
/// Flows per round: one connection per source port, each its own hash key
/// under mh-port.
const FLOWS: u16 = 120;
const PORT_BASE: u16 = 41000;
const PORT_BASE_UPSTREAM: u16 = 42000;
const FLOW_TIMEOUT: Duration = Duration::from_secs(1);

/// The Service on pods 1–3 ready and pod 4 `pod4` ("ready", "terminating", "gone").
fn service(name: &str, ip: &str, flags: Option<&str>, pod4: &str) -> String {
    let mut eps = ready(&[1, 2, 3], "lab-node");
    match pod4 {
        "ready" => eps += &ready(&[4], "lab-node"),
        "terminating" => eps += &terminating(4, "lab-node"),
        _ => {}
    }
    let yaml = annotated(
        &tcp_service(name, ip, "", "", &eps),
        "kube-ipvs.io/scheduler",
        "mh",
    );
    match flags {
        Some(f) => yaml.replacen(
            "    kube-ipvs.io/scheduler: mh\n",
            &format!("    kube-ipvs.io/scheduler: mh\n    kube-ipvs.io/scheduler-flags: {f}\n"),
            1,
        ),
        None => yaml,
    }
}

fn program(dir: &Path, pod4: &str) {
    std::fs::write(dir.join("maglev.yaml"), service("maglev", VIP, None, pod4)).unwrap();
    std::fs::write(
        dir.join("upstream.yaml"),
        service("upstream", VIP_UPSTREAM, Some("mh-port"), pod4),
    )
    .unwrap();
    common::kube_ipvs(&["sync-once", "--manifests", dir.to_str().unwrap()]);
}

/// One round: a connection from each of the `FLOWS` source ports from
/// `base`; the pod each landed on, or the error. Each is reset at once.
fn round(vip: &str, base: u16) -> BTreeMap<u16, Result<String, String>> {
    (base..base + FLOWS)
        .map(|port| {
            let r = Conn::open_from_port(&format!("{vip}:80"), port, FLOW_TIMEOUT)
                .map(|c| {
                    let pod = c.pod.clone();
                    c.reset();
                    pod
                })
                .map_err(|e| format!("{e:?}"));
            (port, r)
        })
        .collect()
}

/// Waits until IPVS holds no connection entry from the rounds' source ports,
/// so the next round's flows are scheduled afresh (a reset connection stays
/// in IPVS's table for its CLOSE timeout, 10 s, and a new SYN on its tuple
/// may be sent where it went before).
fn wait_rounds_forgotten() {
    let t = Instant::now();
    loop {
        let conns = sh("ipvsadm -Lnc");
        let left = conns
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|src| src.rsplit_once(':'))
                    .is_some_and(|(_, p)| {
                        p.parse::<u16>().is_ok_and(|p| {
                            (PORT_BASE..PORT_BASE + FLOWS).contains(&p)
                                || (PORT_BASE_UPSTREAM..PORT_BASE_UPSTREAM + FLOWS).contains(&p)
                        })
                    })
            })
            .count();
        if left == 0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "IPVS still holds {left} connections of the rounds after 60 s:\n{conns}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn count(r: &BTreeMap<u16, Result<String, String>>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for v in r.values() {
        let k = match v {
            Ok(p) => p.clone(),
            Err(e) => format!("error {e}"),
        };
        *c.entry(k).or_default() += 1;
    }
    c
}

/// Flows of `before` that were on a pod other than pod4 and are now elsewhere.
fn moved_off_survivors(
    before: &BTreeMap<u16, Result<String, String>>,
    after: &BTreeMap<u16, Result<String, String>>,
) -> Vec<u16> {
    before
        .iter()
        .filter(|(p, b)| b.as_ref().is_ok_and(|pod| pod != "pod4") && after.get(*p) != Some(*b))
        .map(|(p, _)| *p)
        .collect()
}

/// A connection held open on pod4 (tries source ports from `base`).
fn hold_on_pod4(vip: &str, base: u16) -> Conn {
    for port in base..base + 200 {
        if let Ok(c) = Conn::open_from_port(&format!("{vip}:80"), port, FLOW_TIMEOUT) {
            if c.pod == "pod4" {
                return c;
            }
            c.reset();
        }
    }
    panic!("no connection to {vip} landed on pod4 in 200 source ports");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn maglev_drains_with_fallback_and_moves_only_the_removed_share() {
    netns();
    let _serial = common::ipvs_serial();
    let t = topology("m", 4);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-node.yaml"), node_yaml()).unwrap();
    program(dir.path(), "ready");
    let saved = sh("ipvsadm -Sn");
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            fails.push(msg);
        }
    };
    check(
        saved.contains(&format!("-A -t {VIP}:80 -s mh -b mh-fallback,mh-port"))
            && saved.contains(&format!("-A -t {VIP_UPSTREAM}:80 -s mh -b mh-port")),
        format!("mh flags: kube-ipvs's default and the annotated one:\n{saved}"),
    );

    // Four real servers: every flow answered, each pod a fair share.
    let a = round(VIP, PORT_BASE);
    let a_up = round(VIP_UPSTREAM, PORT_BASE_UPSTREAM);
    for (name, r) in [("default flags", &a), ("mh-port only", &a_up)] {
        let c = count(r);
        check(
            c.len() == 4
                && c.iter()
                    .all(|(k, n)| k.starts_with("pod") && *n >= usize::from(FLOWS) / 10),
            format!("{name}: {FLOWS} flows over four pods: {c:?}"),
        );
    }
    let on_pod4 = |r: &BTreeMap<u16, Result<String, String>>| -> Vec<u16> {
        r.iter()
            .filter(|(_, v)| v.as_deref() == Ok("pod4"))
            .map(|(p, _)| *p)
            .collect()
    };
    let (pod4_flows, pod4_flows_up) = (on_pod4(&a), on_pod4(&a_up));

    // Pod 4 terminates (still serving): weight 0. Its established
    // connections live on; no new flow may reach it.
    let mut held = hold_on_pod4(VIP, 43000);
    let mut held_up = hold_on_pod4(VIP_UPSTREAM, 44000);
    wait_rounds_forgotten();
    program(dir.path(), "terminating");
    let saved = sh("ipvsadm -Sn");
    check(
        saved.contains(&format!("-a -t {VIP}:80 -r 10.244.4.2:8080 -m -w 0")),
        format!("pod4 terminating: weight 0 expected:\n{saved}"),
    );
    let b = round(VIP, PORT_BASE);
    let b_up = round(VIP_UPSTREAM, PORT_BASE_UPSTREAM);
    let (cb, cb_up) = (count(&b), count(&b_up));
    // With mh-fallback: every flow answered, none by pod4, and only pod4's
    // flows moved (mh's table still holds pod4's slots: last_weight).
    check(
        b.values().all(|v| v.as_ref().is_ok_and(|p| p != "pod4")),
        format!("default flags, pod4 draining: {cb:?}"),
    );
    let moved = moved_off_survivors(&a, &b);
    check(
        moved.is_empty(),
        format!("default flags, pod4 draining: flows of other pods moved: {moved:?}"),
    );
    // Upstream's mh-port alone: the flows hashed to pod4 find no destination
    // and fail; the others keep their pods. This is why mh-fallback is the default.
    let failed_up: Vec<u16> = b_up
        .iter()
        .filter(|(_, v)| v.is_err())
        .map(|(p, _)| *p)
        .collect();
    check(
        failed_up == pod4_flows_up && !b_up.values().any(|v| v.as_deref() == Ok("pod4")),
        format!(
            "mh-port only, pod4 draining: the failed flows {failed_up:?} must be exactly pod4's {pod4_flows_up:?}: {cb_up:?}"
        ),
    );
    let moved_up = moved_off_survivors(&a_up, &b_up);
    check(
        moved_up.is_empty(),
        format!("mh-port only, pod4 draining: flows of other pods moved: {moved_up:?}"),
    );
    for (name, c) in [("default flags", &mut held), ("mh-port only", &mut held_up)] {
        let r = c.exchange("still there");
        check(
            r.as_deref() == Ok("pod4"),
            format!("{name}: the connection established on draining pod4: {r:?}"),
        );
    }

    // Pod 4 leaves the slice once its connections are gone: its real
    // server is deleted and mh rebuilds its table without it. Only pod4's
    // share moves; Maglev keeps the others' slots (near-minimal disruption).
    held.reset();
    held_up.reset();
    wait_rounds_forgotten();
    let t0 = Instant::now();
    loop {
        program(dir.path(), "gone");
        if !sh("ipvsadm -Sn").contains("10.244.4.2") {
            break;
        }
        // The reset connections count as inactive until their CLOSE timeout.
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "pod4's real servers not deleted 60 s after their connections ended:\n{}",
            sh("ipvsadm -Lnc")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let c = round(VIP, PORT_BASE);
    let cc = count(&c);
    check(
        c.values().all(|v| v.as_ref().is_ok_and(|p| p != "pod4")),
        format!("pod4 removed: every flow answered by pods 1–3: {cc:?}"),
    );
    let moved_c = moved_off_survivors(&a, &c);
    let moved_total = a.iter().filter(|(p, v)| c.get(*p) != Some(*v)).count();
    // Maglev's table (251 slots for 4 servers) is rebuilt by preference
    // lists: a few slots of the survivors can change hands; at most 5% of
    // their flows may move.
    let survivors = usize::from(FLOWS) - pod4_flows.len();
    check(
        moved_c.len() * 20 <= survivors,
        format!(
            "pod4 removed: {} of the survivors' {survivors} flows moved: {moved_c:?}",
            moved_c.len()
        ),
    );
    eprintln!(
        "mh: four pods {:?} (mh-port only: {:?}); pod4 draining: default flags {cb:?} (other pods' flows moved: {}), \
         mh-port only {cb_up:?} ({} failed, pod4 had {}); pod4 removed: {cc:?}, {moved_total} of \
         {FLOWS} flows moved ({} pod4's, {} of the survivors' {survivors})",
        count(&a),
        count(&a_up),
        moved.len(),
        failed_up.len(),
        pod4_flows_up.len(),
        pod4_flows.len(),
        moved_c.len()
    );
    assert!(
        fails.is_empty(),
        "Maglev checks failed:\n{}",
        fails.join("\n")
    );
    drop(t);
}
