//! Adding (and removing) N service addresses on kube-ipvs0: our batched rtnetlink client vs `ip -batch`.
//!
//! Run as root on a kernel with the dummy module (scripts/bench-kernel.sh runs
//! it in the lab): `cargo run --release --example bench_addr -- [N] [ROUNDS]`.
//! Every measurement gets a fresh network namespace, so no run inherits
//! another's addresses or routes. Prints one line per round and the median ratio.

use std::io::Write;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use ipvs_netlink::link::{DUMMY_NAME, RtnlClient};

fn ips(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            IpAddr::from([10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8])
        })
        .collect()
}

fn fresh_netns() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}: run as root"))
}

fn count_addrs(c: &mut RtnlClient, index: u32) -> Result<usize, String> {
    c.addresses(index)
        .map(|a| a.len())
        .map_err(|e| e.to_string())
}

/// Ours: one client, all adds in batches, then all removes. Returns (add, del, sendmsg calls of the add).
fn ours(addrs: &[IpAddr]) -> Result<(Duration, Duration, u64), String> {
    fresh_netns()?;
    let mut c = RtnlClient::new().map_err(|e| e.to_string())?;
    let (link, _) = c.ensure_dummy(DUMMY_NAME).map_err(|e| e.to_string())?;
    let s0 = c.netlink_stats().sendmsg_calls;
    let t = Instant::now();
    let res = c.add_addresses(link.index, addrs);
    let add = t.elapsed();
    let sends = c.netlink_stats().sendmsg_calls - s0;
    if let Some(e) = res.into_iter().find_map(Result::err) {
        return Err(format!("ours: add failed: {e}"));
    }
    let n = count_addrs(&mut c, link.index)?;
    if n != addrs.len() {
        return Err(format!("ours: {n} addresses after adding {}", addrs.len()));
    }
    let t = Instant::now();
    let res = c.remove_addresses(link.index, addrs);
    let del = t.elapsed();
    if let Some(e) = res.into_iter().find_map(Result::err) {
        return Err(format!("ours: remove failed: {e}"));
    }
    Ok((add, del, sends))
}

fn ip_batch(lines: &str, dir: &std::path::Path, name: &str) -> Result<Duration, String> {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    let t = Instant::now();
    let out = Command::new("ip")
        .arg("-batch")
        .arg(&path)
        .output()
        .map_err(|e| format!("run ip: {e} (install iproute2)"))?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "ip -batch {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(d)
}

/// `ip -batch`: the same adds, then the same removes, each one process.
fn iproute2(addrs: &[IpAddr], dir: &std::path::Path) -> Result<(Duration, Duration), String> {
    fresh_netns()?;
    let mut c = RtnlClient::new().map_err(|e| e.to_string())?;
    let (link, _) = c.ensure_dummy(DUMMY_NAME).map_err(|e| e.to_string())?;
    let mut add = String::with_capacity(addrs.len() * 40);
    let mut del = String::with_capacity(addrs.len() * 40);
    for a in addrs {
        let p = if a.is_ipv4() { 32 } else { 128 };
        add.push_str(&format!("addr add {a}/{p} dev {DUMMY_NAME}\n"));
        del.push_str(&format!("addr del {a}/{p} dev {DUMMY_NAME}\n"));
    }
    let t_add = ip_batch(&add, dir, "add.batch")?;
    let n = count_addrs(&mut c, link.index)?;
    if n != addrs.len() {
        return Err(format!("ip: {n} addresses after adding {}", addrs.len()));
    }
    let t_del = ip_batch(&del, dir, "del.batch")?;
    Ok((t_add, t_del))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let addrs = ips(n);
    let dir = std::env::temp_dir().join(format!("bench_addr.{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("bench_addr: cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let (mut add_ratio, mut del_ratio) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate who goes first, so neither always gets the warmer kernel.
        let run = || -> Result<_, String> {
            if round % 2 == 1 {
                let o = ours(&addrs)?;
                Ok((o, iproute2(&addrs, &dir)?))
            } else {
                let i = iproute2(&addrs, &dir)?;
                Ok((ours(&addrs)?, i))
            }
        };
        match run() {
            Ok(((oa, od, sends), (ia, id))) => {
                let ra = ia.as_secs_f64() / oa.as_secs_f64();
                let rd = id.as_secs_f64() / od.as_secs_f64();
                println!(
                    "bench_addr: round {round} N={n}: add ours {:.3} s ({sends} sendmsg) vs ip -batch {:.3} s = {ra:.1}x; \
                     remove ours {:.3} s vs ip -batch {:.3} s = {rd:.1}x",
                    oa.as_secs_f64(),
                    ia.as_secs_f64(),
                    od.as_secs_f64(),
                    id.as_secs_f64()
                );
                add_ratio.push(ra);
                del_ratio.push(rd);
            }
            Err(e) => {
                eprintln!("bench_addr: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                std::process::exit(1);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "bench_addr: N={n} median over {rounds} rounds: add {:.1}x faster than ip -batch, remove {:.1}x",
        median(add_ratio),
        median(del_ratio)
    );
}
