//! kube-ipvs beside upstream kube-proxy v1.37.2 (`ipvs` and `nftables` modes) on one cluster in the real apiserver, in one lab boot: first sync, endpoint-change latency, adding a Service, idle CPU and peak RSS (issue #15 point 4).
//!
//! Run by `scripts/bench-upstream.sh`. Each proxy runs in a fresh network
//! namespace with the lab uplink, as node `lab-node`, on one
//! KubeProxyConfiguration (only `mode` differs). Latencies are what each
//! proxy itself reports in `kubeproxy_network_programming_duration_seconds`
//! (from the slice's `last-change-trigger-time`, written with the change, to
//! the end of the sync that programmed it): the same definition and code
//! path for all three, read one change at a time from `_sum` and `_count`.

mod lab;
use lab::api::ApiCluster;
use lab::uplink::uplink;
use lab::{fresh_netns, sh};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_ipvs::source::synthetic::Cluster;
use serde::Serialize;

const ENDPOINTS: usize = 10;
const NODE: &str = "lab-node";
const METRICS: &str = "127.0.0.1:10249";
const HEALTHZ: &str = "127.0.0.1:10256";
const PATIENCE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proxy {
    KubeIpvs,
    Ipvs,
    Nftables,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::KubeIpvs => "kube-ipvs",
            Proxy::Ipvs => "kube-proxy ipvs",
            Proxy::Nftables => "kube-proxy nftables",
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Proxy::Nftables => "nftables",
            _ => "ipvs",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    proxy: &'static str,
    services: usize,
    first_sync_s: f64,
    change_p50_ms: f64,
    change_p99_ms: f64,
    changes: usize,
    add_ms: f64,
    idle_s: u64,
    idle_cpu_s: f64,
    peak_rss_mb: f64,
}

struct Args {
    sizes: Vec<usize>,
    changes: usize,
    idle: u64,
    proxies: Vec<Proxy>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sizes: vec![1000, 5000, 10000],
        changes: 100,
        idle: 300,
        proxies: vec![Proxy::KubeIpvs, Proxy::Ipvs, Proxy::Nftables],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = value()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse()
                            .map_err(|_| format!("--sizes: not a number: {s}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--changes" => a.changes = value()?.parse().map_err(|_| "--changes: a number")?,
            "--idle" => a.idle = value()?.parse().map_err(|_| "--idle: seconds")?,
            "--proxies" => {
                a.proxies = value()?
                    .split(',')
                    .map(|p| match p.trim() {
                        "kube-ipvs" => Ok(Proxy::KubeIpvs),
                        "ipvs" => Ok(Proxy::Ipvs),
                        "nftables" => Ok(Proxy::Nftables),
                        o => Err(format!("--proxies: kube-ipvs, ipvs or nftables, not {o}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            o => {
                return Err(format!(
                    "unknown argument {o} (--sizes, --changes, --idle, --proxies)"
                ));
            }
        }
    }
    if a.changes == 0 {
        return Err("--changes must be at least 1".into());
    }
    Ok(a)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set: run through scripts/bench-upstream.sh"))
}

/// The same KubeProxyConfiguration for all three; only `mode` differs.
fn config(dir: &Path, mode: &str, kubeconfig: &str) -> Result<PathBuf, String> {
    let path = dir.join(format!("config-{mode}.yaml"));
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: {mode}\n\
         hostnameOverride: {NODE}\nclientConnection:\n  kubeconfig: {kubeconfig}\n\
         metricsBindAddress: {METRICS}\nhealthzBindAddress: {HEALTHZ}\n\
         clusterCIDR: 10.0.0.0/8\nconntrack:\n  maxPerCore: 0\n\
         ipvs:\n  syncPeriod: 30s\nnftables:\n  syncPeriod: 30s\n"
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// /metrics through curl (kube-proxy answers in chunks).
fn scrape() -> Option<String> {
    sh(
        &format!("curl -sf --max-time 10 http://{METRICS}/metrics"),
        None,
    )
    .ok()
}

fn metric(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// (count, sum) of the network programming latency histogram.
fn programming() -> Option<(f64, f64)> {
    let b = scrape()?;
    Some((
        metric(&b, "kubeproxy_network_programming_duration_seconds_count").unwrap_or(0.0),
        metric(&b, "kubeproxy_network_programming_duration_seconds_sum").unwrap_or(0.0),
    ))
}

fn alive(child: &mut Child, log: &Path) -> Result<(), String> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        _ => Err(format!(
            "the proxy exited; its log ends:\n{}",
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// Waits for one more observation; its latency.
fn one_change(
    child: &mut Child,
    log: &Path,
    write: impl FnOnce() -> Result<(), String>,
) -> Result<Duration, String> {
    let (c0, s0) = programming().ok_or("no metrics")?;
    write()?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        alive(child, log)?;
        if let Some((c, s)) = programming()
            && c > c0
        {
            return Ok(Duration::from_secs_f64(((s - s0) / (c - c0)).max(0.0)));
        }
        if Instant::now() > deadline {
            return Err("no network programming observation within the patience".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().map_err(|e| e.to_string())?
        + f[12].parse::<f64>().map_err(|e| e.to_string())?;
    // /proc reports clock ticks in USER_HZ, 100 on every Linux ABI.
    Ok(ticks / 100.0)
}

fn peak_rss_mb(pid: u32) -> Result<f64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no VmHWM")?;
    Ok(kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// One proxy on the loaded cluster; `k` (0, 1, 2) picks the spare endpoint
/// slot and the added Service, so each proxy makes real changes.
fn measure(
    p: Proxy,
    k: usize,
    n: usize,
    cluster: &Cluster,
    args: &Args,
    dir: &Path,
) -> Result<Row, String> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Row, String> {
            fresh_netns()?;
            uplink()?;
            let api = ApiCluster::connect()?;
            let admin = env("KUBE_IPVS_CP_ADMIN_KUBECONFIG")?;
            let cfg = config(dir, p.mode(), &admin)?;
            let log = dir.join(format!("{}-{n}.log", p.name().replace(' ', "-")));
            let err = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let mut cmd = match p {
                Proxy::KubeIpvs => {
                    let mut c = Command::new(env("KUBE_IPVS_BIN")?);
                    c.arg("--config")
                        .arg(&cfg)
                        .args(["--kubeconfig", &api.kube_ipvs_kubeconfig]);
                    c
                }
                _ => {
                    let mut c = Command::new(env("KUBE_IPVS_CP_KUBE_PROXY")?);
                    c.arg("--config").arg(&cfg);
                    c
                }
            };
            let t0 = Instant::now();
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::from(err))
                .spawn()
                .map_err(|e| format!("start {}: {e}", p.name()))?;
            let pid = child.id();
            let result = (|| {
                let deadline = Instant::now() + PATIENCE;
                loop {
                    alive(&mut child, &log)?;
                    if scrape().is_some_and(|b| {
                        metric(
                            &b,
                            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
                        )
                        .is_some()
                    }) {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err("no first sync".to_string());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let first_sync_s = t0.elapsed().as_secs_f64();
                eprintln!("  {}[{n}]: first sync {first_sync_s:.1} s", p.name());
                let mut lat = Vec::with_capacity(args.changes);
                for c in 0..args.changes {
                    let i = c * n / args.changes;
                    let eps = cluster
                        .replace_endpoint(i, 0, ENDPOINTS + k)
                        .map_err(|e| e.to_string())?;
                    lat.push(one_change(&mut child, &log, || {
                        api.write_slice_triggered(cluster, i, &eps)
                    })?);
                }
                lat.sort();
                let add = one_change(&mut child, &log, || api.create_triggered(cluster, n + k))?;
                let cpu0 = cpu_seconds(pid)?;
                std::thread::sleep(Duration::from_secs(args.idle));
                alive(&mut child, &log)?;
                let idle_cpu_s = cpu_seconds(pid)? - cpu0;
                Ok(Row {
                    proxy: p.name(),
                    services: n,
                    first_sync_s,
                    change_p50_ms: percentile(&lat, 0.5),
                    change_p99_ms: percentile(&lat, 0.99),
                    changes: lat.len(),
                    add_ms: add.as_secs_f64() * 1000.0,
                    idle_s: args.idle,
                    idle_cpu_s,
                    peak_rss_mb: peak_rss_mb(pid)?,
                })
            })();
            let _ = child.kill();
            let _ = child.wait();
            result
        })
        .join()
        .map_err(|_| "benchmark thread panicked".to_string())?
    })
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| Services | proxy | first sync | change p50 / p99 | add a Service | CPU idle | peak RSS |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.services == r.services && b.proxy == "kube-ipvs");
        let ratio = |ours: f64, theirs: f64| {
            if r.proxy == "kube-ipvs" || ours <= 0.0 {
                String::new()
            } else {
                format!(" ({:.1}×)", theirs / ours)
            }
        };
        let (fs, p50, add, cpu, rss) = base.map_or((0.0, 0.0, 0.0, 0.0, 0.0), |b| {
            (
                b.first_sync_s,
                b.change_p50_ms,
                b.add_ms,
                b.idle_cpu_s,
                b.peak_rss_mb,
            )
        });
        s.push_str(&format!(
            "| {} | {} | {:.1} s{} | {:.0} / {:.0} ms{} | {:.0} ms{} | {:.1} s / {} s{} | {:.1} MiB{} |\n",
            r.services,
            r.proxy,
            r.first_sync_s,
            ratio(fs, r.first_sync_s),
            r.change_p50_ms,
            r.change_p99_ms,
            ratio(p50, r.change_p50_ms),
            r.add_ms,
            ratio(add, r.add_ms),
            r.idle_cpu_s,
            r.idle_s,
            ratio(cpu, r.idle_cpu_s),
            r.peak_rss_mb,
            ratio(rss, r.peak_rss_mb),
        ));
    }
    s
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_upstream: {e}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &args.sizes {
        let result = (|| -> Result<(), String> {
            let api = ApiCluster::connect()?;
            api.clear()?;
            // Spare Services n, n+1, n+2: the one each proxy adds.
            let cluster = Cluster::new(n + 3, ENDPOINTS, NODE).map_err(|e| e.to_string())?;
            let load = api.load(&cluster, 0..n)?;
            eprintln!(
                "{n} Services × {ENDPOINTS} endpoints created through the apiserver in {:.1} s",
                load.as_secs_f64()
            );
            for (k, &p) in args.proxies.iter().enumerate() {
                let row = measure(p, k, n, &cluster, &args, dir.path())?;
                eprintln!("  {row:?}");
                rows.push(row);
            }
            api.clear()?;
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("bench_upstream: {n} Services: {e}");
            failed = true;
            break;
        }
        println!(
            "results: {}",
            serde_json::to_string(&rows).unwrap_or_default()
        );
    }
    println!("{}", table(&rows));
    if failed {
        std::process::exit(1);
    }
}
