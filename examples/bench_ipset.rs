//! Benchmark: adding N entries to a hash:ip,port set with our batched netlink client,
//! with `ipset restore`, and with one `ipset add` process per entry (extrapolated).
//!
//! Runs as root on a kernel with ipset (the lab): `scripts/kernel-lab.sh --
//! target/release/examples/bench_ipset [ENTRIES] [SINGLE_ADDS]`. Each
//! measurement gets a fresh network namespace, so the sets start empty. The
//! whole batch is timed, never single operations (reading the clock is a
//! syscall in the VM).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvs_netlink::ipset::{Entry, Family, IpsetClient, Member, SetSpec, SetType};

fn fresh_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): run as root (scripts/kernel-lab.sh)");
}

/// The ipset tool looks up protocol and service names for every entry it
/// parses or prints (getprotobyname/getservbyname re-read /etc/protocols and
/// /etc/services each time, getaddrinfo stats /etc/resolv.conf). In the lab /etc sits on 9p, where each open costs
/// milliseconds a real node's page cache does not. In a private mount
/// namespace, bind tmpfs copies over those files so the tool is measured, not
/// the lab's filesystem. Best effort: without it the tool only looks slower.
fn local_name_databases() -> bool {
    use nix::sched::{CloneFlags, unshare};
    if unshare(CloneFlags::CLONE_NEWNS).is_err() {
        return false;
    }
    let ok = |c: &mut Command| {
        c.stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !ok(Command::new("mount").args(["--make-rprivate", "/"])) {
        return false;
    }
    let dir = std::env::temp_dir().join(format!("bench-ipset-{}", std::process::id()));
    if !ok(Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&dir)
        .arg("-o")
        .arg("size=8m"))
        && (std::fs::create_dir_all(&dir).is_err()
            || !ok(Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=8m", "none"])
                .arg(&dir)))
    {
        return false;
    }
    let mut all = true;
    // getaddrinfo (every address the tool parses) also re-checks resolv.conf.
    for f in [
        "protocols",
        "services",
        "nsswitch.conf",
        "resolv.conf",
        "hosts",
        "host.conf",
        "gai.conf",
    ] {
        if !Path::new("/etc").join(f).exists() {
            continue;
        }
        let src = format!("/etc/{f}");
        let copy = dir.join(f);
        all &= std::fs::copy(&src, &copy).is_ok()
            && ok(Command::new("mount").arg("--bind").arg(&copy).arg(&src));
    }
    all
}

fn entry(i: u32) -> Entry {
    // 10.0.0.0/8 addresses, ports 1..=1000: distinct entries.
    let ip = IpAddr::from((0x0a00_0000 + i / 1000).to_be_bytes());
    Entry::tcp(ip, (i % 1000) as u16 + 1)
}

fn restore_line(set: &str, i: u32) -> String {
    match entry(i) {
        Entry::IpPort { ip, port, .. } => format!("add {set} {ip},tcp:{port}\n"),
        _ => unreachable!("entry() makes hash:ip,port entries"),
    }
}

fn run(cmd: &mut Command, input: Option<&str>) {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ipset");
    if let Some(text) = input
        && let Some(mut stdin) = child.stdin.take()
    {
        stdin.write_all(text.as_bytes()).expect("write to ipset");
    }
    let out = child.wait_with_output().expect("wait for ipset");
    assert!(
        out.status.success(),
        "ipset failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count(set: &str) -> usize {
    let mut c = IpsetClient::new().expect("ipset client");
    let sets = c.headers(Some(set)).expect("header");
    sets.first()
        .and_then(|s| s.header.elements)
        .unwrap_or_default() as usize
}

fn per_entry_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let singles: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let spec = || {
        let mut s = SetSpec::hash(SetType::HashIpPort, Family::Inet);
        // Room for every entry; hashsize as a large Kubernetes set would get.
        s.maxelem = Some(n.max(65_536));
        s.hashsize = Some(4096);
        s
    };

    let local_names = local_name_databases();

    // Ours: one client, entries packed into ADT nests, many messages per sendmsg.
    fresh_netns();
    let members: Vec<Member> = (0..n).map(|i| Member::from(entry(i))).collect();
    let t = Instant::now();
    let mut c = IpsetClient::new().expect("ipset client");
    c.create("bench", &spec(), false).expect("create");
    c.add("bench", &members, false).expect("add");
    let ours = t.elapsed();
    let stats = c.netlink_stats();
    assert_eq!(count("bench"), n as usize);
    let t = Instant::now();
    let listed = c.list(Some("bench")).expect("list");
    let ours_list = t.elapsed();
    assert_eq!(listed[0].members.len(), n as usize);

    // `ipset save` of the same set, for the read side.
    let t = Instant::now();
    run(Command::new("ipset").args(["save", "bench"]), None);
    let tool_save = t.elapsed();

    // ipset restore: one process, the tool's own batching.
    fresh_netns();
    let mut input = format!(
        "create bench hash:ip,port family inet hashsize 4096 maxelem {}\n",
        n.max(65_536)
    );
    for i in 0..n {
        input.push_str(&restore_line("bench", i));
    }
    let t = Instant::now();
    run(Command::new("ipset").arg("restore"), Some(&input));
    let restore = t.elapsed();
    assert_eq!(count("bench"), n as usize);

    // One `ipset add` process per entry, as a naive proxy would do.
    fresh_netns();
    let mut c = IpsetClient::new().expect("ipset client");
    c.create("bench", &spec(), false).expect("create");
    let t = Instant::now();
    for i in 0..singles {
        let Entry::IpPort { ip, port, .. } = entry(i) else {
            unreachable!()
        };
        run(
            Command::new("ipset").args(["add", "bench", &format!("{ip},tcp:{port}")]),
            None,
        );
    }
    let single = t.elapsed();
    assert_eq!(count("bench"), singles as usize);
    let single_us = per_entry_us(single, singles as usize);
    let single_total = Duration::from_secs_f64(single_us * n as f64 / 1e6);

    let ours_us = per_entry_us(ours, n as usize);
    println!("ipset: add {n} entries to a hash:ip,port set (fresh namespace each)");
    if !local_names {
        println!(
            "(could not bind local copies of /etc/protocols and /etc/services: tool times include their slow lookups)"
        );
    }
    println!(
        "{:<34} {:>12} {:>14} {:>10}",
        "method", "total", "per entry", "vs ours"
    );
    let row = |name: &str, total: Duration, us: f64| {
        println!(
            "{:<34} {:>10.3} s {:>11.2} µs {:>9.1}x",
            name,
            total.as_secs_f64(),
            us,
            us / ours_us
        );
    };
    row("kube-ipvs (netlink, batched)", ours, ours_us);
    row(
        "ipset restore (one process)",
        restore,
        per_entry_us(restore, n as usize),
    );
    row(
        &format!("ipset add x{singles} (extrapolated)"),
        single_total,
        single_us,
    );
    println!(
        "kube-ipvs netlink: {} messages in {} sendmsg calls, {} bytes sent, {} recvmsg calls",
        stats.messages_sent, stats.sendmsg_calls, stats.bytes_sent, stats.recvmsg_calls
    );
    println!(
        "read back {n} entries: kube-ipvs list {:.3} s, `ipset save` {:.3} s",
        ours_list.as_secs_f64(),
        tool_save.as_secs_f64()
    );
}
