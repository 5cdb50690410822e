//! IPVS bulk create, full dump and delete-all: our batched client vs ipvsadm, in one boot.
//!
//! Run as root on a kernel with IPVS (scripts/bench-kernel.sh runs it in the
//! lab): `cargo run --release --example bench_ipvs -- [N,N,...]` (default
//! 1000,10000). For each N it builds N TCP services (rr) with 10 masquerading
//! real servers each. Each tool works in a fresh network namespace, and the
//! other tool's table is cleared first: the kernel's service hash table is
//! shared by all namespaces, and deleted real servers linger in a
//! per-namespace trash list that slows later adds. Times cover whole batches
//! (reading the clock is a syscall in the VM). Prints a markdown table with the
//! ratio ipvsadm / ours, plus netlink messages and syscalls per operation,
//! and the command line's bulk create (`kube-ipvs ipvs restore`, the release
//! binary next to this example or `KUBE_IPVS_BIN`) against `ipvsadm -R`.

mod lab;
use lab::{fresh_netns, sh};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipvs_netlink::ipvs::{Destination, IpvsClient, Operation, Service, ServiceKey};
use ipvs_netlink::netlink::NetlinkStats;

const DESTS: u32 = 10;

fn addr(base: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(base, (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn table(n: u32) -> (Vec<Operation>, String) {
    let mut ops = Vec::with_capacity((n * (DESTS + 1)) as usize);
    let mut text = String::new();
    for i in 0..n {
        let vip = SocketAddr::new(IpAddr::V4(addr(10, i)), 80);
        let key = ServiceKey::Tcp(vip);
        ops.push(Operation::AddService(Service::new(key)));
        let _ = writeln!(text, "-A -t {vip} -s rr");
        for j in 0..DESTS {
            let rip = SocketAddr::new(IpAddr::V4(addr(11, i * DESTS + j)), 8080);
            ops.push(Operation::AddDestination(key, Destination::masq(rip)));
            let _ = writeln!(text, "-a -t {vip} -r {rip} -m -w 1");
        }
    }
    (ops, text)
}

fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(Duration, T), String> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

#[derive(Default)]
struct Row {
    create: Duration,
    dump: Duration,
    clear: Duration,
    lines: usize,
}

/// Counts (messages, sendmsg/recvmsg syscalls) of an ipvsadm command with strace.
fn ipvsadm_syscalls(cmd: &str, input: &str) -> Result<(u64, u64), String> {
    let log = std::env::temp_dir().join(format!("bench_ipvs-strace-{}", std::process::id()));
    sh(
        &format!(
            "strace -f -c -e trace=sendmsg,recvmsg,sendto,recvfrom -o {} {cmd} >/dev/null",
            log.display()
        ),
        Some(input),
    )?;
    let out = std::fs::read_to_string(&log).map_err(|e| format!("read strace log: {e}"))?;
    let _ = std::fs::remove_file(&log);
    // strace -c: "% time seconds usecs/call calls errors syscall"
    let mut sends = 0;
    let mut recvs = 0;
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let Some(name) = cols.last() else { continue };
        let calls = cols.get(3).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
        match *name {
            "sendmsg" | "sendto" => sends += calls,
            "recvmsg" | "recvfrom" => recvs += calls,
            _ => {}
        }
    }
    Ok((sends, recvs))
}

fn run(n: u32, out: &mut String) -> Result<(), String> {
    let (ops, text) = table(n);
    let total = n as usize * (DESTS as usize + 1);

    // ipvsadm, in its own namespace.
    let theirs = std::thread::scope(|s| {
        s.spawn(|| -> Result<Row, String> {
            fresh_netns()?;
            let (create, _) = timed(|| sh("ipvsadm -R", Some(&text)))?;
            let (dump, saved) = timed(|| sh("ipvsadm -Sn", None))?;
            let (clear, _) = timed(|| sh("ipvsadm -C", None))?;
            Ok(Row {
                create,
                dump,
                clear,
                lines: saved.lines().count(),
            })
        })
        .join()
        .map_err(|_| "ipvsadm thread panicked".to_string())?
    })?;

    // Ours, in another fresh namespace.
    let (ours, stats) = std::thread::scope(|s| {
        s.spawn(|| -> Result<_, String> {
            fresh_netns()?;
            let mut c = IpvsClient::new().map_err(|e| e.to_string())?;
            let s0 = c.netlink_stats();
            let (create, results) = timed(|| Ok(c.apply(&ops)))?;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(format!("apply failed: {e}"));
            }
            let s1 = c.netlink_stats();
            let (dump, tbl) = timed(|| c.table().map_err(|e| e.to_string()))?;
            let s2 = c.netlink_stats();
            let lines = tbl.len() + tbl.iter().map(|(_, d)| d.len()).sum::<usize>();
            let (clear, _) = timed(|| c.flush().map_err(|e| e.to_string()))?;
            Ok((
                Row {
                    create,
                    dump,
                    clear,
                    lines,
                },
                (s0, s1, s2),
            ))
        })
        .join()
        .map_err(|_| "our thread panicked".to_string())?
    })?;

    // The command line (#17 point 6): `kube-ipvs ipvs restore` of the same
    // text as a process, like `ipvsadm -R`; `--check` alone is its start,
    // reading and parsing, without the kernel.
    let (cli_check, cli_create) = std::thread::scope(|s| {
        s.spawn(|| -> Result<(Duration, Duration), String> {
            fresh_netns()?;
            let cmd = format!("{} ipvs restore", lab::kube_ipvs_binary()?.display());
            let (check, _) = timed(|| sh(&format!("{cmd} --check"), Some(&text)))?;
            let (create, _) = timed(|| sh(&cmd, Some(&text)))?;
            let saved = sh("ipvsadm -Sn", None)?;
            if saved.lines().count() != total {
                return Err(format!(
                    "N={n}: `{cmd}` left {} entries, expected {total}",
                    saved.lines().count()
                ));
            }
            sh("ipvsadm -C", None)?;
            Ok((check, create))
        })
        .join()
        .map_err(|_| "command-line thread panicked".to_string())?
    })?;

    if ours.lines != total || theirs.lines != total {
        return Err(format!(
            "N={n}: expected {total} entries, ours dumped {}, ipvsadm -Sn printed {}",
            ours.lines, theirs.lines
        ));
    }
    let (s0, s1, s2) = stats;
    let traffic = |a: &NetlinkStats, b: &NetlinkStats| {
        format!(
            "{} msgs, {} sendmsg, {} recvmsg",
            b.messages_sent - a.messages_sent,
            b.sendmsg_calls - a.sendmsg_calls,
            b.recvmsg_calls - a.recvmsg_calls
        )
    };
    let rows = [
        (
            "bulk create",
            "ipvsadm -R",
            ours.create,
            theirs.create,
            traffic(&s0, &s1),
        ),
        (
            "full dump",
            "ipvsadm -Sn",
            ours.dump,
            theirs.dump,
            traffic(&s1, &s2),
        ),
        (
            "delete all",
            "ipvsadm -C",
            ours.clear,
            theirs.clear,
            "1 msg (FLUSH)".to_string(),
        ),
    ];
    for (op, tool, mine, base, traffic) in rows {
        let _ = writeln!(
            out,
            "| {n} × {DESTS} | {op} | {:.1} ms | `{tool}` {:.1} ms | **{:.1}×** | {traffic} |",
            mine.as_secs_f64() * 1e3,
            base.as_secs_f64() * 1e3,
            base.as_secs_f64() / mine.as_secs_f64().max(1e-9),
        );
    }
    let _ = writeln!(
        out,
        "| {n} × {DESTS} | bulk create, command line: `kube-ipvs ipvs restore` | {:.1} ms | `ipvsadm -R` {:.1} ms | **{:.1}×** | of which start, read and parse (`--check`) {:.1} ms |",
        cli_create.as_secs_f64() * 1e3,
        theirs.create.as_secs_f64() * 1e3,
        theirs.create.as_secs_f64() / cli_create.as_secs_f64().max(1e-9),
        cli_check.as_secs_f64() * 1e3,
    );
    Ok(())
}

fn main() {
    let sizes: Vec<u32> = match std::env::args().nth(1) {
        Some(arg) => match arg.split(',').map(str::parse).collect() {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "bench_ipvs: sizes must be a comma-separated list of numbers ({e}): e.g. 1000,10000"
                );
                std::process::exit(2);
            }
        },
        None => vec![1000, 10_000],
    };
    let mut out = String::new();
    out.push_str("## IPVS: kube-ipvs (ipvs-netlink) vs ipvsadm\n\n");
    out.push_str(
        "| services × dests | operation | ours | baseline | speed-up | our netlink traffic |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    let mut failed = false;
    for &n in &sizes {
        if let Err(e) = run(n, &mut out) {
            eprintln!("bench_ipvs: {e}");
            failed = true;
        }
    }
    // ipvsadm's own syscalls for the smallest size (strace slows it; counts don't vary).
    if let Some(&n) = sizes.iter().min() {
        let (_, text) = table(n);
        let r = std::thread::spawn(move || -> Result<(u64, u64), String> {
            fresh_netns()?;
            ipvsadm_syscalls("ipvsadm -R", &text)
        })
        .join();
        match r {
            Ok(Ok((s, r))) => {
                let _ = writeln!(
                    out,
                    "\n`ipvsadm -R` at {n} × {DESTS} ({} operations): {s} send and {r} receive syscalls (strace -c).",
                    n * (DESTS + 1)
                );
            }
            Ok(Err(e)) => eprintln!("bench_ipvs: strace of ipvsadm: {e}"),
            Err(_) => eprintln!("bench_ipvs: strace thread panicked"),
        }
        let (_, text) = table(n);
        let r = std::thread::spawn(move || -> Result<(u64, u64), String> {
            fresh_netns()?;
            let cmd = format!("{} ipvs restore", lab::kube_ipvs_binary()?.display());
            ipvsadm_syscalls(&cmd, &text)
        })
        .join();
        match r {
            Ok(Ok((s, r))) => {
                let _ = writeln!(
                    out,
                    "`kube-ipvs ipvs restore` of the same: {s} send and {r} receive syscalls (strace -c)."
                );
            }
            Ok(Err(e)) => eprintln!("bench_ipvs: strace of kube-ipvs ipvs restore: {e}"),
            Err(_) => eprintln!("bench_ipvs: strace thread panicked"),
        }
    }
    print!("{out}");
    if failed {
        std::process::exit(1);
    }
}
