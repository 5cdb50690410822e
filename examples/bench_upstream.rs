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
use serde::{Deserialize, Serialize};

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

/// One proxy at one size. A proxy without a first sync within
/// `--first-sync-limit` has `synced: false`, that limit as `first_sync_s`,
/// and nothing else measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    proxy: String,
    services: usize,
    first_sync_s: f64,
    synced: bool,
    change_p50_ms: Option<f64>,
    change_p99_ms: Option<f64>,
    /// Changes measured: `--changes`, or fewer if `--change-budget` ran out.
    changes: usize,
    add_ms: Option<f64>,
    idle_s: u64,
    idle_cpu_s: Option<f64>,
    peak_rss_mb: f64,
}

struct Args {
    sizes: Vec<usize>,
    changes: usize,
    /// Seconds a proxy may spend on its endpoint changes (at least one is
    /// made): upstream's IPVS mode rebuilds everything per sync, minutes
    /// each at 10,000 Services under TCG.
    change_budget: u64,
    /// Seconds a proxy may take for its first sync.
    first_sync_limit: u64,
    idle: u64,
    proxies: Vec<Proxy>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        sizes: vec![1000, 5000, 10000],
        changes: 100,
        change_budget: 1200,
        first_sync_limit: 3600,
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
            "--change-budget" => {
                a.change_budget = value()?.parse().map_err(|_| "--change-budget: seconds")?
            }
            "--first-sync-limit" => {
                a.first_sync_limit = value()?
                    .parse()
                    .map_err(|_| "--first-sync-limit: seconds")?
            }
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
                    "unknown argument {o} (--sizes, --changes, --change-budget, --first-sync-limit, --idle, --proxies)"
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

/// Every sample of `name`, whatever its labels, summed.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (count, sum) of the network programming latency histogram, over both
/// families (upstream labels it `ip_family` since 1.30, and so does
/// kube-ipvs).
fn programming() -> Option<(f64, f64)> {
    let b = scrape()?;
    Some((
        metric_sum(&b, "kubeproxy_network_programming_duration_seconds_count"),
        metric_sum(&b, "kubeproxy_network_programming_duration_seconds_sum"),
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
                let deadline = t0 + Duration::from_secs(args.first_sync_limit);
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
                        eprintln!(
                            "  {}[{n}]: no first sync within {} s; not measured further",
                            p.name(),
                            args.first_sync_limit
                        );
                        return Ok(Row {
                            proxy: p.name().to_string(),
                            services: n,
                            first_sync_s: args.first_sync_limit as f64,
                            synced: false,
                            change_p50_ms: None,
                            change_p99_ms: None,
                            changes: 0,
                            add_ms: None,
                            idle_s: 0,
                            idle_cpu_s: None,
                            peak_rss_mb: peak_rss_mb(pid)?,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let first_sync_s = t0.elapsed().as_secs_f64();
                eprintln!("  {}[{n}]: first sync {first_sync_s:.1} s", p.name());
                let mut lat = Vec::with_capacity(args.changes);
                let budget = Instant::now() + Duration::from_secs(args.change_budget);
                for c in 0..args.changes {
                    if c > 0 && Instant::now() > budget {
                        eprintln!(
                            "  {}[{n}]: change budget of {} s spent after {c} changes",
                            p.name(),
                            args.change_budget
                        );
                        break;
                    }
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
                    proxy: p.name().to_string(),
                    services: n,
                    first_sync_s,
                    synced: true,
                    change_p50_ms: Some(percentile(&lat, 0.5)),
                    change_p99_ms: Some(percentile(&lat, 0.99)),
                    changes: lat.len(),
                    add_ms: Some(add.as_secs_f64() * 1000.0),
                    idle_s: args.idle,
                    idle_cpu_s: Some(idle_cpu_s),
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

/// `theirs` over `ours` as " (N×)" for an upstream row, "" for kube-ipvs's
/// or without both figures.
fn ratio(r: &Row, ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if r.proxy != "kube-ipvs" && o > 0.0 => format!(" ({:.1}×)", t / o),
        _ => String::new(),
    }
}

fn table(rows: &[Row], requested_changes: usize) -> String {
    let mut s = String::from(
        "| Services | proxy | first sync | change p50 / p99 | add a Service | CPU idle | peak RSS |\n|---|---|---|---|---|---|---|\n",
    );
    let or_dash = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("–".to_string(), f);
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.services == r.services && b.proxy == "kube-ipvs" && b.synced);
        let b = |f: fn(&Row) -> Option<f64>| base.and_then(f);
        let first = if r.synced {
            format!("{:.1} s", r.first_sync_s)
        } else {
            format!("> {:.0} s", r.first_sync_s)
        };
        let n = if r.synced && r.changes < requested_changes {
            format!(" (n={})", r.changes)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "| {} | {} | {first}{} | {}{n}{} | {}{} | {}{} | {:.1} MiB{} |\n",
            r.services,
            r.proxy,
            ratio(r, b(|b| Some(b.first_sync_s)), Some(r.first_sync_s)),
            match (r.change_p50_ms, r.change_p99_ms) {
                (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0} ms"),
                _ => "–".into(),
            },
            ratio(r, b(|b| b.change_p50_ms), r.change_p50_ms),
            or_dash(r.add_ms, &|v| format!("{v:.0} ms")),
            ratio(r, b(|b| b.add_ms), r.add_ms),
            or_dash(r.idle_cpu_s, &|v| format!("{v:.1} s / {} s", r.idle_s)),
            ratio(r, b(|b| b.idle_cpu_s), r.idle_cpu_s),
            r.peak_rss_mb,
            ratio(r, b(|b| Some(b.peak_rss_mb)), Some(r.peak_rss_mb)),
        ));
    }
    s
}

/// The README's plot: first sync and change p50 per size and proxy, bars
/// on log scales, as SVG.
fn plot(rows: &[Row]) -> String {
    const PROXIES: [(&str, &str); 3] = [
        ("kube-ipvs", "#2b8a3e"),
        ("kube-proxy ipvs", "#c92a2a"),
        ("kube-proxy nftables", "#1971c2"),
    ];
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.services).collect();
    sizes.sort();
    sizes.dedup();
    type Figure = fn(&Row) -> Option<f64>;
    let panels: [(&str, Figure); 2] = [
        ("first full sync (s)", |r| Some(r.first_sync_s)),
        ("one endpoint change, p50 (ms)", |r| r.change_p50_ms),
    ];
    let (pw, ph, top, left) = (420.0, 260.0, 40.0, 50.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * (pw + left) + 20.0,
        ph + top + 70.0
    );
    for (k, (title, value)) in panels.iter().enumerate() {
        let x0 = left + k as f64 * (pw + left);
        let vals: Vec<f64> = rows.iter().filter_map(value).filter(|v| *v > 0.0).collect();
        let lo = vals
            .iter()
            .cloned()
            .fold(f64::MAX, f64::min)
            .max(1e-3)
            .log10()
            .floor();
        let hi = vals
            .iter()
            .cloned()
            .fold(1.0, f64::max)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let y = |v: f64| top + ph - (v.max(1e-9).log10() - lo) / (hi - lo) * ph;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{title}, log scale</text>\n",
            x0 + pw / 2.0,
            top - 20.0
        ));
        for d in lo as i32..=hi as i32 {
            let yy = y(10f64.powi(d));
            svg.push_str(&format!(
                "<line x1=\"{x0}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                x0 + pw,
                x0 - 4.0,
                yy + 4.0,
                10f64.powi(d)
            ));
        }
        let group = pw / sizes.len().max(1) as f64;
        let bar = group / 4.0;
        for (g, n) in sizes.iter().enumerate() {
            let gx = x0 + g as f64 * group;
            svg.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{n} Services</text>\n",
                gx + group / 2.0,
                top + ph + 16.0
            ));
            for (i, (proxy, colour)) in PROXIES.iter().enumerate() {
                let Some(r) = rows.iter().find(|r| r.services == *n && r.proxy == *proxy) else {
                    continue;
                };
                let bx = gx + bar * (0.5 + i as f64);
                let label_x = bx + bar / 2.0;
                match value(r) {
                    Some(v) if v > 0.0 => {
                        let yy = y(v);
                        let unfinished = k == 0 && !r.synced;
                        svg.push_str(&format!(
                            "<rect x=\"{bx:.1}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"{}\"/><text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}{}</text>\n",
                            bar * 0.9,
                            top + ph - yy,
                            if unfinished { "0.35" } else { "1" },
                            yy - 3.0,
                            if unfinished { "&gt;" } else { "" },
                            if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
                        ));
                    }
                    _ => svg.push_str(&format!(
                        "<text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">n/a</text>\n",
                        top + ph - 4.0
                    )),
                }
            }
        }
    }
    for (i, (proxy, colour)) in PROXIES.iter().enumerate() {
        let lx = left + i as f64 * 220.0;
        svg.push_str(&format!(
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{proxy}</text>\n",
            top + ph + 34.0,
            lx + 16.0,
            top + ph + 44.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn main() {
    // `--plot RESULTS.json`: the SVG of a finished run, on the host.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--plot") {
        let Some(path) = argv.get(2) else {
            eprintln!("bench_upstream: --plot needs the results JSON (target/bench-upstream.json)");
            std::process::exit(2);
        };
        let rows: Vec<Row> = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bench_upstream: {path}: {e}");
                std::process::exit(2);
            }
        };
        print!("{}", plot(&rows));
        return;
    }
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
    println!("{}", table(&rows, args.changes));
    if failed {
        std::process::exit(1);
    }
}
