//! Scale benchmark of the real daemon on generated manifests (N services × 10 endpoints, or `NxE`), with `ipvsadm -R` as baseline, in one lab boot.
//!
//! Run as root on a kernel with IPVS (`scripts/bench-scale.sh` runs it in the
//! lab): `bench_scale [--api] [--sizes 1000,5000,10000,2000x250] [--changes 100] [--warmup 200] [--slowest 3] [--idle SECS] [--json PATH] [--png PATH]`.
//!
//! With `--api` the same cluster lives in a real kube-apiserver
//! (scripts/control-plane.sh, reached over the lab's `--net`): the Services
//! and slices are created through it before the daemon starts (timed, not
//! part of the first sync), kube-ipvs runs with `--kubeconfig` (its
//! ServiceAccount token) as node lab-node, a change is one PATCH of a slice
//! and an add is a Service and its slice created; the `kubernetes` Service is
//! the one extra IPVS service.
//! After each size it prints a `results: [...]` line (JSON, every size so far),
//! since the lab cannot write to the host; `bench_scale plot JSON PNG` prints
//! the table and draws the plot from such results.
//!
//! For each N, in a fresh network namespace, it writes the cluster with
//! `source::synthetic` (one JSON file per service) and starts `kube-ipvs --manifests`
//! (the release binary next to this example), then measures from outside:
//! - first full sync: from spawning the process until its metrics report the
//!   first successful sync (IPVS, ipsets, iptables and kube-ipvs0 addresses are
//!   programmed in that one run); the kernel is then checked to hold all of it;
//! - no-change resync: the periodic verification that follows, with nothing
//!   changed: its duration (the daemon's sync-duration histogram) and its
//!   writes (netlink operations counter, plus any "synced" line with changes
//!   in its log), which must be 0;
//! - one endpoint change, `--changes` times on different services: from just
//!   before the file is written aside and renamed into place until a netlink
//!   GET of that IPVS service's destinations shows the new real server;
//! - adding one service, 10 times: until the new IPVS service has its 10 real servers;
//! - peak RSS: VmHWM of the daemon at the end.
//!
//! The baseline loads the IPVS part of the same desired state (`kube-ipvs plan`,
//! in `ipvsadm -Sn` form) with `ipvsadm -R` in another fresh namespace. Each
//! namespace's IPVS table is flushed before the next run: the kernel's service
//! hash table is shared by all namespaces.

mod lab;
use lab::api::ApiCluster;
use lab::uplink::uplink;
use lab::{fresh_netns, sh};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipvs_netlink::ipvs::{Family, IpvsClient, ServiceKey};
use kube_ipvs::source::synthetic::{Cluster, Format, SERVICE_PORT, TARGET_PORT};
use serde::{Deserialize, Serialize};

/// Endpoints per Service unless a size says otherwise (`--sizes 2000x250`).
const ENDPOINTS: usize = 10;
const NODE: &str = "bench-node";
const METRICS: &str = "127.0.0.1:10249";
const HEALTHZ: &str = "127.0.0.1:10256";
/// Long enough that no periodic verification runs during the change loop
/// (syncPeriod counts from the last run), short enough to wait for one.
const SYNC_PERIOD: &str = "20s";
const ADDS: usize = 10;
/// Periodic verifications averaged per reading method in the A/B: one
/// cycle of the parts the `proc` verification reads in turn (IPVS, then each
/// family's iptables: the daemon here serves both families).
const VERIFICATIONS: usize =
    kube_ipvs::apply::quick::cycle(&[Family::Inet, Family::Inet6]) as usize;
/// `--idle SECS`: how long the `proc` daemon is left idle, its CPU measured.
static IDLE_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// JSON, the API server's wire format: parsing 10,000 YAML files would
/// measure the YAML parser more than the proxy (see the README).
const FORMAT: Format = Format::Json;
/// Bound on every wait; a TCG guest at 10,000 services is slow.
const PATIENCE: Duration = Duration::from_secs(1200);

/// One size's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    /// "manifests" or "api" (older results have none: manifests).
    #[serde(default)]
    source: String,
    /// API mode: creating the Services and slices through the apiserver, seconds.
    #[serde(default)]
    load_s: f64,
    services: usize,
    endpoints: usize,
    /// Process start to first successful sync, seconds.
    first_sync_s: f64,
    /// The first sync run alone (daemon's own histogram), seconds.
    first_sync_run_s: f64,
    /// `ipvsadm -R` of the IPVS part, seconds.
    ipvsadm_restore_s: f64,
    change_p50_ms: f64,
    change_p99_ms: f64,
    change_max_ms: f64,
    changes: usize,
    add_p50_ms: f64,
    add_max_ms: f64,
    /// The periodic verification with `--verify-read=netlink` and `proc`
    /// (the default), on the same kernel state, means of VERIFICATIONS (0 in
    /// older results).
    #[serde(default)]
    verify_netlink_s: f64,
    #[serde(default)]
    verify_proc_s: f64,
    /// The slowest single `proc` verification, seconds.
    #[serde(default)]
    verify_proc_max_s: f64,
    /// Idle window (`--idle SECS`, 0: not measured): its length, the
    /// daemon's CPU seconds in it (its own and its children's), and the part
    /// of them spent in verifications (`kube_ipvs_verification_cpu_seconds`).
    #[serde(default)]
    idle_s: f64,
    #[serde(default)]
    idle_cpu_s: f64,
    #[serde(default)]
    idle_verify_cpu_s: f64,
    /// Duration of the no-change periodic verification, seconds.
    resync_s: f64,
    /// Writes during it (netlink operations + iptables-restore runs).
    resync_writes: u64,
    peak_rss_mb: f64,
}

/// Runs `f` on a thread of its own in a fresh network namespace.
fn in_netns<T: Send>(f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            fresh_netns()?;
            f()
        })
        .join()
        .map_err(|_| "benchmark thread panicked".to_string())?
    })
}

/// Where the daemon reads the cluster from.
enum Src<'a> {
    /// Generated manifests in this directory.
    Files(&'a Path),
    /// The real apiserver.
    Api(&'a ApiCluster),
}

impl Src<'_> {
    /// The node kube-ipvs runs as: the Node control-plane.sh made, in API mode.
    fn node(&self) -> &'static str {
        match self {
            Src::Files(_) => NODE,
            Src::Api(_) => "lab-node",
        }
    }

    /// IPVS services besides the generated ones: `kubernetes` (one real server).
    fn extra(&self) -> usize {
        match self {
            Src::Files(_) => 0,
            Src::Api(_) => 1,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Src::Files(_) => "manifests",
            Src::Api(_) => "api",
        }
    }

    /// Writes service `i` with `endpoints`: its file, or one PATCH of its slice.
    fn change(
        &self,
        cluster: &Cluster,
        i: usize,
        endpoints: &[std::net::Ipv4Addr],
    ) -> Result<(), String> {
        match self {
            Src::Files(dir) => cluster
                .write_service(dir, i, endpoints)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Src::Api(api) => api.write_slice(cluster, i, endpoints),
        }
    }

    /// Adds service `i` with its initial endpoints.
    fn add(&self, cluster: &Cluster, i: usize) -> Result<(), String> {
        match self {
            Src::Files(dir) => cluster
                .write_service(dir, i, &cluster.initial_endpoints(i))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Src::Api(api) => api.create(cluster, i),
        }
    }
}

/// The daemon child, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, src: &Src, log: PathBuf, extra: &[&str]) -> Result<Self, String> {
        let err = std::fs::File::create(&log).map_err(|e| format!("create log: {e}"))?;
        let source: Vec<&std::ffi::OsStr> = match src {
            Src::Files(dir) => vec!["--manifests".as_ref(), dir.as_os_str()],
            Src::Api(api) => vec!["--kubeconfig".as_ref(), api.kube_ipvs_kubeconfig.as_ref()],
        };
        let child = Command::new(bin)
            .args(source)
            .args(["--hostname-override", src.node()])
            .args(["--metrics-bind-address", METRICS])
            .args(["--healthz-bind-address", HEALTHZ])
            .arg(format!("--ipvs-sync-period={SYNC_PERIOD}"))
            // nf_conntrack_max is read-only outside the initial namespace.
            .arg("--conntrack-max-per-core=0")
            .args(extra)
            // Debug for the manifests source: its re-scans are printed with the slowest changes.
            .env(
                "RUST_LOG",
                "info,kube_ipvs::source::files=debug,kube_ipvs::daemon=debug",
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        Ok(Daemon { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "kube-ipvs exited ({st}); log:\n{}",
                tail(&self.log())
            )),
            Err(e) => Err(format!("wait for kube-ipvs: {e}")),
        }
    }

    /// Peak resident set size (VmHWM), MiB.
    fn peak_rss_mb(&self) -> Result<f64, String> {
        status_mib(self.child.id(), "VmHWM:")
    }

    /// Resident set size now (VmRSS), MiB.
    fn rss_mb(&self) -> Result<f64, String> {
        status_mib(self.child.id(), "VmRSS:")
    }
}

/// A size field of /proc/PID/status, in MiB.
fn status_mib(pid: u32, field: &str) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc status: {e}"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// GET /metrics; None while the server is not up.
fn scrape() -> Option<String> {
    let mut s = TcpStream::connect_timeout(&METRICS.parse().ok()?, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains(" 200 ").then_some(body)
}

/// The value of the sample `name` (with its labels as printed, if any).
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The counters a window is measured with.
#[derive(Debug, Clone, Copy)]
struct Counters {
    last_sync: f64,
    last_verification: f64,
    syncs: f64,
    sync_seconds: f64,
    netlink_ops: f64,
    /// kube_ipvs_verification_read_seconds_total: ipvs, sets, addresses, iptables.
    read: [f64; 4],
    verify_cpu: f64,
}

fn counters() -> Option<Counters> {
    let b = scrape()?;
    Some(Counters {
        last_sync: metric(
            &b,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
        )?,
        last_verification: metric(&b, "kube_ipvs_last_verification_timestamp_seconds")?,
        syncs: metric(
            &b,
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
        )?,
        sync_seconds: metric(
            &b,
            "kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family=\"IPv4\"}",
        )?,
        netlink_ops: metric(&b, "kube_ipvs_netlink_operations_total")?,
        // Absent until the first kernel read.
        read: ["ipvs", "sets", "addresses", "iptables"].map(|part| {
            metric(
                &b,
                &format!("kube_ipvs_verification_read_seconds_total{{part=\"{part}\"}}"),
            )
            .unwrap_or(0.0)
        }),
        verify_cpu: metric(&b, "kube_ipvs_verification_cpu_seconds_total").unwrap_or(0.0),
    })
}

/// Polls `f` every `every` until it yields, the daemon dies, or PATIENCE runs out.
fn wait_for<T>(
    d: &mut Daemon,
    what: &str,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        d.alive()?;
        if start.elapsed() > PATIENCE {
            return Err(format!(
                "timed out waiting for {what}; log:\n{}",
                tail(&d.log())
            ));
        }
        std::thread::sleep(every);
    }
}

fn key(i: usize) -> ServiceKey {
    ServiceKey::Tcp(SocketAddr::new(
        IpAddr::V4(Cluster::service_ip(i)),
        SERVICE_PORT,
    ))
}

fn has_dest(c: &mut IpvsClient, i: usize, ip: std::net::Ipv4Addr) -> bool {
    let want = SocketAddr::new(IpAddr::V4(ip), TARGET_PORT);
    c.destinations(&key(i))
        .is_ok_and(|d| d.iter().any(|e| e.destination.addr == want))
}

/// The time of day of `t`, as the daemon's log prints it (HH:MM:SS.mmm, UTC).
fn clock(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Memory the guest has in use (MemTotal − MemAvailable of /proc/meminfo), as text.
fn guest_memory_used() -> Result<String, String> {
    let info =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let kib = |key: &str| {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or(format!("/proc/meminfo has no {key}"))
    };
    let (total, available) = (kib("MemTotal:")?, kib("MemAvailable:")?);
    Ok(format!(
        "{} MiB of {} MiB",
        total.saturating_sub(available) / 1024,
        total / 1024
    ))
}

/// Checks the first sync programmed everything: IPVS, the ClusterIP ipset,
/// addresses, iptables; `n` services of which `extra` have one real server.
fn check_kernel(c: &mut IpvsClient, (n, e): (usize, usize), extra: usize) -> Result<(), String> {
    let table = c.table().map_err(|e| format!("IPVS dump: {e}"))?;
    let dests: usize = table.iter().map(|(_, d)| d.len()).sum();
    let want = (n - extra) * e + extra;
    if table.len() != n || dests != want {
        return Err(format!(
            "IPVS holds {} services and {dests} real servers, expected {n} and {want}",
            table.len(),
        ));
    }
    let set = sh("ipset list KUBE-CLUSTER-IP -t", None)?;
    if !set.contains(&format!("Number of entries: {n}\n")) {
        return Err(format!("KUBE-CLUSTER-IP is not complete:\n{set}"));
    }
    let addrs = sh("ip -o -4 addr show dev kube-ipvs0", None)?;
    if addrs.lines().count() != n {
        return Err(format!(
            "kube-ipvs0 has {} addresses, expected {n}",
            addrs.lines().count()
        ));
    }
    let nat = sh("iptables-save -t nat", None)?;
    if !nat.contains("--match-set KUBE-CLUSTER-IP") {
        return Err("no KUBE-CLUSTER-IP rule in the nat table".into());
    }
    Ok(())
}

/// Our run for one size, in the calling thread's (fresh) namespace.
fn ours(
    bin: &Path,
    (n, e): (usize, usize),
    (changes, slowest): (usize, usize),
    src: &Src,
    logs: &Path,
) -> Result<Row, String> {
    let cluster = Cluster::new(n, e, src.node())
        .map_err(|e| e.to_string())?
        .with_format(FORMAT);
    let mut c = IpvsClient::new().map_err(|e| format!("IPVS client: {e}"))?;
    c.flush().map_err(|e| format!("IPVS flush: {e}"))?;

    let start = Instant::now();
    let mut d = Daemon::start(bin, src, logs.join(format!("kube-ipvs-{n}.log")), &[])?;
    let log_path = logs.join(format!("kube-ipvs-{n}.log"));
    if let Src::Files(_) = src {
        wait_for(
            &mut d,
            "the manifests load",
            Duration::from_millis(20),
            || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                log.contains("serving from manifests").then_some(())
            },
        )?;
    }
    // API mode has no separate load to wait for: the lists are part of the first sync.
    let load_peak = match src {
        Src::Files(_) => format!("{:.1} MiB", d.peak_rss_mb()?),
        Src::Api(_) => "(API lists: part of the sync)".to_string(),
    };
    let first = wait_for(&mut d, "the first sync", Duration::from_millis(50), || {
        counters().filter(|m| m.last_sync > 0.0)
    })?;
    let first_sync = start.elapsed();
    // What the first sync did, by the daemon's own account (stderr, beside the table).
    for l in d.log().lines().filter(|l| !l.contains(" DEBUG ")).take(20) {
        eprintln!("  kube-ipvs[{n}]: {l}");
    }
    // Where the peak is: by the end of the first sync, or later (a resync).
    eprintln!(
        "  kube-ipvs[{n}]: peak RSS after the load {load_peak}; after the first sync: peak RSS {:.1} MiB, RSS {:.1} MiB",
        d.peak_rss_mb()?,
        d.rss_mb()?
    );
    check_kernel(&mut c, (n + src.extra(), e), src.extra())?;
    // What the guest holds now (#17 point 1: the lab's memory): the daemon,
    // the kernel's IPVS, sets, addresses and rules, and the manifests' tmpfs.
    eprintln!(
        "  kube-ipvs[{n}]: guest memory in use after the first sync: {}",
        guest_memory_used()?
    );

    // A verification pass with nothing changed: it must write nothing.
    let Verification {
        secs: resync_s,
        writes: resync_writes,
        ..
    } = verification(&mut d)?;

    // One endpoint change at a time, each on another service.
    let mut lat = Vec::with_capacity(changes);
    let mut when = Vec::with_capacity(changes);
    for k in 0..changes {
        let i = k * n / changes;
        let eps = cluster
            .replace_endpoint(i, 0, e)
            .map_err(|e| e.to_string())?;
        let new_ip = eps[0];
        let t = Instant::now();
        let written = std::time::SystemTime::now();
        src.change(&cluster, i, &eps)?;
        wait_for(
            &mut d,
            "an endpoint change in IPVS",
            Duration::from_millis(2),
            || has_dest(&mut c, i, new_ip).then_some(()),
        )?;
        lat.push(t.elapsed());
        when.push((start.elapsed(), written));
        // Let that sync finish, so changes are measured one at a time.
        std::thread::sleep(Duration::from_millis(100));
    }
    // The slowest changes and when they happened (since the daemon started,
    // and by the clock of its log, to line them up with its re-scans and syncs).
    let mut slow: Vec<(Duration, (Duration, std::time::SystemTime))> =
        lat.iter().copied().zip(when).collect();
    slow.sort_by_key(|s| std::cmp::Reverse(s.0));
    // What the daemon logged while each of them was under way.
    let log = d.log();
    for (l, (_, at)) in slow.iter().take(slowest) {
        let (from, to) = (clock(*at), clock(*at + *l));
        eprintln!(
            "  kube-ipvs[{n}]: while the change written at {from} took {:.0} ms:",
            ms(*l)
        );
        for line in log.lines().filter(|line| {
            line.get(11..23)
                .is_some_and(|t| *t >= *from.as_str() && *t <= *to.as_str())
        }) {
            eprintln!("  kube-ipvs[{n}]:   {line}");
        }
    }
    let slow: Vec<String> = slow
        .iter()
        .take(slowest)
        .map(|(l, (w, at))| {
            format!(
                "{:.0} ms at {:.1} s (written {} UTC)",
                ms(*l),
                w.as_secs_f64(),
                clock(*at)
            )
        })
        .collect();
    if !slow.is_empty() {
        eprintln!("  kube-ipvs[{n}]: slowest changes: {}", slow.join(", "));
    }
    for l in log.lines().filter(|l| l.contains("manifests re-scanned")) {
        eprintln!("  kube-ipvs[{n}]: {l}");
    }
    lat.sort();

    // New services, one at a time.
    let mut adds = Vec::with_capacity(ADDS);
    for a in 0..ADDS {
        let i = n + a;
        let t = Instant::now();
        src.add(&cluster, i)?;
        wait_for(
            &mut d,
            "an added service in IPVS",
            Duration::from_millis(2),
            || {
                c.destinations(&key(i))
                    .is_ok_and(|v| v.len() == e)
                    .then_some(())
            },
        )?;
        adds.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    adds.sort();

    let peak_rss_mb = d.peak_rss_mb()?;
    eprintln!(
        "  kube-ipvs[{n}]: at the end: peak RSS {peak_rss_mb:.1} MiB, RSS {:.1} MiB",
        d.rss_mb()?
    );
    let first_sync_run_s = first.sync_seconds;
    drop(d);
    // The periodic verification A/B (#17 point 2): the same kernel state,
    // adopted by a daemon reading IPVS over netlink (one request per
    // service, as before), then by one reading /proc (the default); each
    // measured over VERIFICATIONS verifications.
    let mut ab = Vec::new();
    let mut idle = (0.0, 0.0, 0.0);
    for how in ["netlink", "proc"] {
        let log = logs.join(format!("kube-ipvs-{n}-verify-{how}.log"));
        let mut d = Daemon::start(bin, src, log, &[&format!("--verify-read={how}")])?;
        wait_for(&mut d, "adoption", Duration::from_millis(50), || {
            counters().filter(|m| m.last_sync > 0.0)
        })?;
        let (mut secs, mut max, mut writes, mut read) = (0.0, 0.0f64, 0, [0.0; 4]);
        for _ in 0..VERIFICATIONS {
            let v = verification(&mut d)?;
            secs += v.secs;
            max = max.max(v.secs);
            writes += v.writes;
            for (r, p) in read.iter_mut().zip(v.read) {
                *r += p / VERIFICATIONS as f64;
            }
        }
        eprintln!(
            "  kube-ipvs[{n}]: --verify-read={how}: mean kernel read per verification: ipvs {:.2} s, sets {:.2} s, addresses {:.2} s, iptables {:.2} s",
            read[0], read[1], read[2], read[3]
        );
        ab.push((secs / VERIFICATIONS as f64, max, writes));
        let idle_secs = IDLE_SECS.load(std::sync::atomic::Ordering::Relaxed);
        if how == "proc" && idle_secs > 0 {
            // #17 point 7: what the daemon costs when nothing changes.
            let pid = d.child.id();
            let (cpu0, before) = (process_cpu_s(pid)?, counters().ok_or("metrics gone")?);
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs(idle_secs));
            d.alive()?;
            let (cpu1, after) = (process_cpu_s(pid)?, counters().ok_or("metrics gone")?);
            idle = (
                t.elapsed().as_secs_f64(),
                cpu1 - cpu0,
                after.verify_cpu - before.verify_cpu,
            );
            eprintln!(
                "  kube-ipvs[{n}]: idle {:.0} s: {:.2} CPU s ({:.2} in {} verifications, {:.2} elsewhere)",
                idle.0,
                idle.1,
                idle.2,
                after.syncs - before.syncs,
                idle.1 - idle.2
            );
        }
    }
    let [
        (verify_netlink_s, _, netlink_writes),
        (verify_proc_s, verify_proc_max_s, proc_writes),
    ] = ab[..]
    else {
        unreachable!("two runs")
    };
    eprintln!(
        "  kube-ipvs[{n}]: periodic verification, mean of {VERIFICATIONS}: --verify-read=netlink {verify_netlink_s:.2} s ({netlink_writes} writes), proc {verify_proc_s:.2} s (slowest {verify_proc_max_s:.2} s; {proc_writes} writes): {:.1}x",
        verify_netlink_s / verify_proc_s
    );
    c.flush().map_err(|e| format!("IPVS flush: {e}"))?;
    Ok(Row {
        source: src.name().to_string(),
        load_s: 0.0,
        services: n,
        endpoints: e,
        first_sync_s: first_sync.as_secs_f64(),
        first_sync_run_s,
        ipvsadm_restore_s: 0.0,
        change_p50_ms: ms(percentile(&lat, 50.0)),
        change_p99_ms: ms(percentile(&lat, 99.0)),
        change_max_ms: ms(*lat.last().ok_or("no changes measured")?),
        changes,
        add_p50_ms: ms(percentile(&adds, 50.0)),
        add_max_ms: ms(*adds.last().ok_or("no adds measured")?),
        resync_s,
        resync_writes,
        verify_netlink_s,
        verify_proc_s,
        verify_proc_max_s,
        idle_s: idle.0,
        idle_cpu_s: idle.1,
        idle_verify_cpu_s: idle.2,
        peak_rss_mb,
    })
}

/// Waits for the next periodic verification of `d`; returns its duration
/// (seconds per sync run, from the daemon's metrics) and its writes (netlink
/// operations plus logged changes: a no-change verification writes nothing).
/// One periodic verification: its duration and writes, and the seconds it
/// spent reading each part of the kernel (ipvs, sets, addresses, iptables).
struct Verification {
    secs: f64,
    writes: u64,
    read: [f64; 4],
}

fn verification(d: &mut Daemon) -> Result<Verification, String> {
    let log_before = d.log().len();
    let before = counters().ok_or("metrics gone")?;
    let after = wait_for(
        d,
        "a periodic verification",
        Duration::from_millis(200),
        || counters().filter(|m| m.last_verification > before.last_verification),
    )?;
    let log = d.log();
    let logged_changes = log
        .get(log_before..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("synced") && l.contains("changes="))
        .count() as u64;
    let writes = (after.netlink_ops - before.netlink_ops) as u64 + logged_changes;
    let runs = after.syncs - before.syncs;
    Ok(Verification {
        secs: (after.sync_seconds - before.sync_seconds) / runs.max(1.0),
        writes,
        read: std::array::from_fn(|i| after.read[i] - before.read[i]),
    })
}

/// CPU seconds of process `pid` so far, its own and its waited-for
/// children's (utime, stime, cutime, cstime of /proc/PID/stat).
fn process_cpu_s(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc stat: {e}"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').ok_or("no ')' in /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f
        .get(11..15)
        .ok_or("short /proc stat")?
        .iter()
        .map(|v| v.parse::<f64>().map_err(|e| format!("/proc stat: {e}")))
        .sum::<Result<f64, String>>()?;
    // Clock ticks: USER_HZ, which Linux fixes at 100 for userspace.
    Ok(ticks / 100.0)
}

/// The IPVS section of `kube-ipvs plan` (ipvsadm -Sn form) for the manifests in `dir`.
fn ipvs_plan(bin: &Path, dir: &Path, n: usize) -> Result<String, String> {
    let plan = sh(
        &format!(
            "{} plan --manifests {} --node {NODE}",
            bin.display(),
            dir.display()
        ),
        None,
    )?;
    let text: String = plan
        .lines()
        .skip_while(|l| !l.starts_with("# IPVS"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let services = text.lines().filter(|l| l.starts_with("-A ")).count();
    if services != n {
        return Err(format!(
            "the plan has {services} IPVS services, expected {n}"
        ));
    }
    Ok(text)
}

/// `ipvsadm -R` of `text`, in the calling thread's (fresh) namespace.
fn ipvsadm_restore(text: &str, n: usize) -> Result<Duration, String> {
    let mut c = IpvsClient::new().map_err(|e| format!("IPVS client: {e}"))?;
    c.flush().map_err(|e| format!("IPVS flush: {e}"))?;
    let t = Instant::now();
    sh("ipvsadm -R", Some(text))?;
    let took = t.elapsed();
    let loaded = c.services().map_err(|e| format!("IPVS dump: {e}"))?.len();
    c.flush().map_err(|e| format!("IPVS flush: {e}"))?;
    if loaded != n {
        return Err(format!("ipvsadm -R loaded {loaded} services, expected {n}"));
    }
    Ok(took)
}

/// Measures N services; `changes` endpoint changes, the `slowest` of them shown with the daemon's log.
fn run(
    bin: &Path,
    (n, e): (usize, usize),
    changes: (usize, usize),
    api: bool,
) -> Result<Row, String> {
    let work = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let dir = work.path().join("manifests");
    Cluster::new(n, e, NODE)
        .and_then(|c| c.with_format(FORMAT).write(&dir))
        .map_err(|e| e.to_string())?;
    // The baseline's input comes from the pristine manifests (before changes and adds).
    let text = ipvs_plan(bin, &dir, n)?;
    let logs = std::env::var_os("BENCH_SCALE_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().to_path_buf());
    let mut row = if api {
        let cluster = ApiCluster::connect()?;
        let cleared = cluster.clear()?;
        let generated = Cluster::new(n, e, "lab-node").map_err(|e| e.to_string())?;
        let load = cluster.load(&generated, 0..n)?;
        eprintln!(
            "  kube-ipvs[{n}]: {n} Services and EndpointSlices created through the apiserver in {:.1} s (the previous ones deleted in {:.1} s)",
            load.as_secs_f64(),
            cleared.as_secs_f64()
        );
        let mut row = in_netns(|| {
            uplink()?;
            ours(bin, (n, e), changes, &Src::Api(&cluster), &logs)
        })?;
        row.load_s = load.as_secs_f64();
        // Leave the apiserver as found: 10,000 Services would otherwise be
        // programmed by every kube-ipvs that watches it next (the lab tests').
        let cleared = cluster.clear()?;
        eprintln!(
            "  kube-ipvs[{n}]: deleted through the apiserver in {:.1} s",
            cleared.as_secs_f64()
        );
        row
    } else {
        in_netns(|| ours(bin, (n, e), changes, &Src::Files(&dir), &logs))?
    };
    row.ipvsadm_restore_s = in_netns(|| ipvsadm_restore(&text, n))?.as_secs_f64();
    Ok(row)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| services × endpoints | first full sync | `ipvsadm -R` (IPVS only) | ipvsadm / ours | one change p50 | p99 | max | add a service p50 | no-change resync | its writes | verify: netlink / proc | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} × {} | {:.2} s (sync run {:.2} s) | {:.2} s | **{:.2}×** | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} s | {} | {} | {:.1} MiB |",
            r.services,
            r.endpoints,
            r.first_sync_s,
            r.first_sync_run_s,
            r.ipvsadm_restore_s,
            r.ipvsadm_restore_s / r.first_sync_s.max(1e-9),
            r.change_p50_ms,
            r.change_p99_ms,
            r.change_max_ms,
            r.add_p50_ms,
            r.resync_s,
            r.resync_writes,
            if r.verify_proc_s > 0.0 {
                format!(
                    "{:.2} / {:.2} s (**{:.1}×**)",
                    r.verify_netlink_s,
                    r.verify_proc_s,
                    r.verify_netlink_s / r.verify_proc_s
                )
            } else {
                "-".to_string()
            },
            r.peak_rss_mb,
        );
    }
    if let (Some(small), Some(big)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let _ = writeln!(
            out,
            "\nFrom {} to {} services: first sync ×{:.1}, one-change p50 ×{:.2}, p99 ×{:.2}.",
            small.services,
            big.services,
            big.first_sync_s / small.first_sync_s.max(1e-9),
            big.change_p50_ms / small.change_p50_ms.max(1e-9),
            big.change_p99_ms / small.change_p99_ms.max(1e-9),
        );
    }
    out
}

/// Goals of issue #7, checked on the results: one line each.
fn goals(rows: &[Row]) -> String {
    let mut out = String::new();
    let Some(big) = rows.iter().max_by_key(|r| r.services) else {
        return out;
    };
    let small = rows.iter().min_by_key(|r| r.services).unwrap_or(big);
    let mut line = |ok: bool, text: String| {
        let _ = writeln!(out, "- {} {text}", if ok { "met:" } else { "NOT met:" });
    };
    line(
        big.first_sync_s <= big.ipvsadm_restore_s,
        format!(
            "full sync at {} services {:.2} s vs `ipvsadm -R` of the IPVS part {:.2} s",
            big.services, big.first_sync_s, big.ipvsadm_restore_s
        ),
    );
    // TCG timing noise: "does not grow" allows 1.5× between the smallest and largest size.
    line(
        big.change_p99_ms <= 1.5 * small.change_p99_ms,
        format!(
            "one-change p99 {:.0} ms at {} vs {:.0} ms at {} services (limit 1.5×)",
            big.change_p99_ms, big.services, small.change_p99_ms, small.services
        ),
    );
    // The goal is in decimal megabytes: 100 MB is 95.4 MiB.
    let peak_mb = big.peak_rss_mb * 1.048_576;
    line(
        peak_mb < 100.0,
        format!(
            "peak RSS {:.1} MiB = {peak_mb:.1} MB at {} × {} (limit 100 MB)",
            big.peak_rss_mb, big.services, big.endpoints
        ),
    );
    line(
        rows.iter().all(|r| r.resync_writes == 0),
        "no-change resync writes nothing at every size".to_string(),
    );
    if big.verify_proc_s > 0.0 {
        line(
            big.verify_proc_s * 4.0 <= big.verify_netlink_s,
            format!(
                "periodic verification at {} services {:.2} s reading /proc vs {:.2} s over netlink (goal: at most 1/4)",
                big.services, big.verify_proc_s, big.verify_netlink_s
            ),
        );
    }
    for r in rows.iter().filter(|r| r.idle_s > 0.0) {
        // "Close to 0": under 1 % of one CPU outside verifications.
        let elsewhere = r.idle_cpu_s - r.idle_verify_cpu_s;
        line(
            elsewhere <= 0.01 * r.idle_s,
            format!(
                "idle at {} services: {:.2} CPU s in {:.0} s, {:.2} of them in verifications, {elsewhere:.2} elsewhere (goal: elsewhere under 1 % of a CPU)",
                r.services, r.idle_cpu_s, r.idle_s, r.idle_verify_cpu_s
            ),
        );
    }
    out
}

/// Fonts looked for, in order, for the plot's text (plotters draws text with ab_glyph).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    let path = std::env::var("BENCH_SCALE_FONT")
        .ok()
        .or_else(|| {
            FONTS
                .iter()
                .find(|p| Path::new(p).exists())
                .map(|p| p.to_string())
        })
        .ok_or("no TTF font for the plot: install fonts-dejavu-core or set BENCH_SCALE_FONT")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("read {path}: {e}"))?;
    // plotters keeps fonts for the process's lifetime.
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| format!("{path} is not a usable font"))
}

/// One plotted line: legend, colour, value of a row.
type Series = (&'static str, plotters::style::RGBColor, fn(&Row) -> f64);

fn plot_err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// One panel: the series against N, from 0.
fn panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    rows: &[Row],
    caption: &str,
    unit: &str,
    series: &[Series],
) -> Result<(), String> {
    use plotters::prelude::*;
    let max_n = rows.iter().map(|r| r.services).max().unwrap_or(1) as f64 * 1.05;
    let max_y = rows
        .iter()
        .flat_map(|r| series.iter().map(move |(_, _, f)| f(r)))
        .fold(0.0, f64::max)
        * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_n, 0.0..max_y.max(1e-3))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("services (× 10 endpoints)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(unit)
        .draw()
        .map_err(plot_err)?;
    for &(name, color, f) in series {
        let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.services as f64, f(r))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(plot_err)
}

/// Full-sync time (ours and ipvsadm -R) and change latency against N, side by side
/// (sizes of 10 endpoints per Service: the x axis is services).
fn plot(rows: &[Row], png: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let rows: Vec<Row> = rows
        .iter()
        .filter(|r| r.endpoints == ENDPOINTS)
        .cloned()
        .collect();
    let rows = &rows[..];
    register_font()?;
    let root = BitMapBackend::new(png, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    panel(
        &left,
        rows,
        "Full sync time",
        "seconds",
        &[
            ("kube-ipvs: first full sync (all kernel state)", BLUE, |r| {
                r.first_sync_s
            }),
            ("ipvsadm -R: IPVS part only", RED, |r| r.ipvsadm_restore_s),
        ],
    )?;
    panel(
        &right,
        rows,
        "One change, file to kernel",
        "milliseconds",
        &[
            ("endpoint change p50", BLUE, |r| r.change_p50_ms),
            ("endpoint change p99", MAGENTA, |r| r.change_p99_ms),
            ("service added p50", GREEN, |r| r.add_p50_ms),
        ],
    )?;
    root.present().map_err(plot_err)
}

struct Args {
    api: bool,
    /// Services × endpoints per Service.
    sizes: Vec<(usize, usize)>,
    changes: usize,
    warmup: usize,
    slowest: usize,
    /// Seconds each measured size's daemon is left idle (not the warm-up's).
    idle: u64,
    json: Option<PathBuf>,
    png: Option<PathBuf>,
}

/// One `--sizes` entry: `N` (N services × 10 endpoints) or `NxE`.
fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (n, e) = s.split_once('x').unwrap_or((s, ""));
    let num = |v: &str| {
        v.parse::<usize>()
            .map_err(|e| format!("--sizes {s:?}: {e} (want N or NxE)"))
    };
    let (n, e) = (num(n)?, if e.is_empty() { ENDPOINTS } else { num(e)? });
    // Checked here, not after an hour of smaller sizes.
    Cluster::new(n, e, NODE).map_err(|err| format!("--sizes {s:?}: {err}"))?;
    Ok((n, e))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        api: false,
        sizes: vec![(1000, ENDPOINTS), (5000, ENDPOINTS), (10_000, ENDPOINTS)],
        changes: 100,
        warmup: 200,
        slowest: 3,
        idle: 0,
        json: None,
        png: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => {
                a.sizes = value()?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<_, _>>()?;
            }
            "--changes" => {
                a.changes = value()?.parse().map_err(|e| format!("--changes: {e}"))?;
            }
            "--warmup" => {
                a.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?;
            }
            "--slowest" => {
                a.slowest = value()?.parse().map_err(|e| format!("--slowest: {e}"))?;
            }
            "--idle" => a.idle = value()?.parse().map_err(|e| format!("--idle: {e}"))?,
            "--api" => a.api = true,
            "--json" => a.json = Some(value()?.into()),
            "--png" => a.png = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.changes == 0 || a.sizes.iter().any(|&(n, _)| n < a.changes) {
        return Err("--changes must be at least 1 and at most the smallest size".into());
    }
    Ok(a)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("plot") {
        let (Some(json), Some(png)) = (args.nth(1), args.next()) else {
            eprintln!("usage: bench_scale plot RESULTS.json OUT.png");
            std::process::exit(2);
        };
        let rows: Vec<Row> = match std::fs::read_to_string(&json)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bench_scale: {json}: {e}");
                std::process::exit(1);
            }
        };
        print!("{}\n{}", table(&rows), goals(&rows));
        if let Err(e) = plot(&rows, Path::new(&png)) {
            eprintln!("bench_scale: {e}");
            std::process::exit(1);
        }
        return;
    }
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_scale: {e}");
            std::process::exit(2);
        }
    };
    let bin = match lab::kube_ipvs_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench_scale: {e}");
            std::process::exit(2);
        }
    };
    // The first daemon of a boot pays one-time kernel costs (ipset and
    // nf_tables modules autoloaded on first use: about 25 s under TCG), which
    // a node pays once, not per sync: a small unreported run takes them.
    if a.warmup > 0 {
        let t = Instant::now();
        match run(&bin, (a.warmup, ENDPOINTS), (a.warmup.min(10), 0), false) {
            Ok(r) => eprintln!(
                "bench_scale: warm-up with {} services in {:.0} s (first sync {:.1} s), not reported",
                a.warmup,
                t.elapsed().as_secs_f64(),
                r.first_sync_s
            ),
            Err(e) => eprintln!("bench_scale: warm-up failed: {e}"),
        }
    }
    IDLE_SECS.store(a.idle, std::sync::atomic::Ordering::Relaxed);
    let mut rows = Vec::new();
    let mut failed = false;
    for &(n, e) in &a.sizes {
        let t = Instant::now();
        match run(&bin, (n, e), (a.changes, a.slowest), a.api) {
            Ok(r) => {
                eprintln!(
                    "bench_scale: {n} services × {e} done in {:.0} s",
                    t.elapsed().as_secs_f64()
                );
                rows.push(r);
                // After every size, so a later failure keeps what was measured.
                let json = serde_json::to_string(&rows).unwrap_or_default();
                println!("results: {json}");
                if let Some(path) = &a.json
                    && let Err(e) = std::fs::write(path, &json)
                {
                    eprintln!("bench_scale: write {}: {e}", path.display());
                }
            }
            Err(err) => {
                eprintln!("bench_scale: {n} × {e}: {err}");
                failed = true;
            }
        }
    }
    if a.api {
        println!("## Scale: kube-ipvs daemon from the real apiserver (v1.37.2) vs ipvsadm -R\n");
        for r in &rows {
            println!(
                "- {} × {}: creating the Services and slices through the apiserver took {:.1} s (before the daemon started)",
                r.services, r.endpoints, r.load_s
            );
        }
        println!();
    } else {
        println!("## Scale: kube-ipvs daemon on generated manifests vs ipvsadm -R\n");
    }
    print!("{}\n{}", table(&rows), goals(&rows));
    if let Some(png) = &a.png
        && !rows.is_empty()
        && let Err(e) = plot(&rows, png)
    {
        eprintln!("bench_scale: {e}");
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
}
