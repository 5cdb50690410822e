//! Heap budget of a 10,000-Service node (issue #7's RSS goal, counted natively): the first load, the trackers and the first full plan, measured by a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_ipvs::changes::{Hooks, Sources};
use kube_ipvs::health::ProxyHealth;
use kube_ipvs::metrics::Metrics;
use kube_ipvs::model::node::NodeInfo;
use kube_ipvs::reconcile::Proxier;
use kube_ipvs::runner::Trigger;
use kube_ipvs::source::files::load_and_feed;
use kube_ipvs::source::synthetic::{Cluster, Format};

/// Bytes allocated and not freed, and their high-water mark since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const MIB: usize = 1 << 20;

/// (live, peak) in MiB since the last call; the peak restarts from live.
fn step() -> (f64, f64) {
    let live = LIVE.load(Relaxed);
    let peak = PEAK.swap(live, Relaxed);
    (live as f64 / MIB as f64, peak as f64 / MIB as f64)
}

// The only test in this binary: the allocator counts every thread.
#[test]
fn ten_thousand_services_fit_the_heap_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(10_000, 10, "node-a")
        .unwrap()
        .with_format(Format::Json);
    cluster.write(dir.path()).unwrap();
    let hooks = Hooks {
        trigger: Trigger::new(),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(ProxyHealth::new(Duration::from_secs(30))),
    };
    let base = LIVE.load(Relaxed);
    step();

    let sources = Mutex::new(Sources::new(Default::default(), "node-a"));
    let (files, kept) = load_and_feed(dir.path(), &sources, &hooks, "node-a").unwrap();
    let (loaded, load_peak) = step();
    let node = kube_ipvs::node::node_info("node-a", &kept, Vec::new);
    let mut p = Proxier::new(Default::default(), node);
    let batch = sources.lock().unwrap().take_batch().unwrap();
    assert_eq!((batch.services.len(), batch.slices.len()), (10_000, 10_000));
    batch.apply_to(&mut p, NodeInfo::from_node);
    drop(batch);
    let _ = p.desired_iptables();
    let plan = p.adopt(Default::default(), 0);
    let ops = plan.ops.len();
    let (_, plan_peak) = step();
    drop(plan);
    let (steady, _) = step();
    let over = |x: f64| x - base as f64 / MIB as f64;
    println!(
        "10,000 x 10: load peak {:.1} MiB, loaded (trackers + file cache) {:.1} MiB, \
         first plan ({ops} ops) peak {:.1} MiB, after it {:.1} MiB",
        over(load_peak),
        over(loaded),
        over(plan_peak),
        over(steady)
    );
    assert!(ops > 140_000, "the plan programs everything: {ops} ops");
    // Budgets with ~20% headroom over what was measured (20.8 / 26.9 / 78.5 / 47.7
    // MiB). The objects themselves were ~75 MiB before the trackers kept them parsed.
    assert!(
        over(load_peak) < 33.0,
        "first load peaked at {:.1} MiB",
        over(load_peak)
    );
    assert!(
        over(loaded) < 26.0,
        "trackers + file cache {:.1} MiB",
        over(loaded)
    );
    assert!(
        over(plan_peak) < 95.0,
        "first plan peaked at {:.1} MiB",
        over(plan_peak)
    );
    assert!(over(steady) < 58.0, "steady state {:.1} MiB", over(steady));
    drop((files, sources, p));
}
