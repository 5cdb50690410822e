//! Bounded-frequency runner: kube-proxy's BoundedFrequencyRunner (minSyncPeriod / syncPeriod / retry) on tokio time.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

/// Why a run happened; `Periodic` runs are the syncPeriod verification runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    /// Something queued a change (`Trigger::run`).
    Triggered,
    /// No run for `max_interval`: re-verify the kernel state.
    Periodic,
    /// The previous run failed.
    Retry,
    /// A Service's retry after a kernel refusal is due (`Runner::wake_at`);
    /// the node is fine, so nothing is re-read.
    Backoff,
}

/// Timing of the runner. Upstream: `minInterval` = minSyncPeriod,
/// `maxInterval` = syncPeriod; a failed sync calls `RetryAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Minimum time between the starts of two runs (0 = no limit).
    pub min_interval: Duration,
    /// A run happens at least this often even without triggers.
    pub max_interval: Duration,
    /// First retry delay after a failure; doubles per consecutive failure.
    pub retry_initial: Duration,
    /// Upper bound of the retry delay.
    pub retry_max: Duration,
}

impl RunnerConfig {
    /// Upstream defaults: syncPeriod 30 s, minSyncPeriod from config,
    /// retries from 1 s capped at syncPeriod.
    pub fn new(min_interval: Duration, max_interval: Duration) -> Self {
        RunnerConfig {
            min_interval,
            max_interval,
            retry_initial: Duration::from_secs(1).min(max_interval),
            retry_max: max_interval,
        }
    }
}

/// Cheap, clonable handle that requests a run. Any number of triggers before
/// the next run starts collapse into that one run.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    inner: Arc<TriggerInner>,
}

#[derive(Debug, Default)]
struct TriggerInner {
    pending: AtomicBool,
    notify: Notify,
}

impl Trigger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a run. Returns true if no run was pending yet (the caller
    /// may record the "last queued" timestamp only then, as upstream does).
    pub fn run(&self) -> bool {
        let first = !self.inner.pending.swap(true, Ordering::AcqRel);
        self.inner.notify.notify_one();
        first
    }

    /// Whether a run has been requested and not started yet.
    pub fn is_pending(&self) -> bool {
        self.inner.pending.load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        self.inner.pending.swap(false, Ordering::AcqRel)
    }

    /// What a starting run does to the trigger (tests elsewhere).
    #[cfg(test)]
    pub(crate) fn take_for_test(&self) -> bool {
        self.take()
    }
}

/// `t + d`, saturating (a configured period of years must not panic).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86400)))
        .unwrap_or(t)
}

/// Decides when the sync runs, under the timing rules of `RunnerConfig`.
/// Use `run` with a closure, or drive it by hand: `wait` for the next run,
/// sync, then report with `finished` (this keeps `&mut` state in the caller).
#[derive(Debug)]
pub struct Runner {
    cfg: RunnerConfig,
    trigger: Trigger,
    last_start: Option<Instant>,
    next_periodic: Instant,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// A run for Services' backoff retries (`wake_at`).
    wake_at: Option<Instant>,
}

impl Runner {
    /// The first run happens only when triggered (the caller triggers once
    /// every informer has synced) or after `max_interval`.
    pub fn new(cfg: RunnerConfig) -> Self {
        Runner {
            cfg,
            trigger: Trigger::new(),
            last_start: None,
            next_periodic: after(Instant::now(), cfg.max_interval),
            retry_at: None,
            retry_delay: cfg.retry_initial,
            wake_at: None,
        }
    }

    /// Asks for a `Backoff` run at `at` (None: no such run). Replaces any
    /// earlier request; a run for another reason does not clear it.
    pub fn wake_at(&mut self, at: Option<Instant>) {
        self.wake_at = at;
    }

    pub fn trigger(&self) -> Trigger {
        self.trigger.clone()
    }

    /// Waits until the next run may start and says why it runs. Cancel-safe:
    /// dropping the future loses no trigger.
    pub async fn wait(&mut self) -> RunReason {
        let cfg = self.cfg;
        loop {
            // Wait for a trigger, the retry deadline or the periodic deadline.
            let mut reason = if self.trigger.is_pending() {
                RunReason::Triggered
            } else {
                let retry_deadline = self.retry_at.unwrap_or(self.next_periodic);
                tokio::select! {
                    biased;
                    _ = self.trigger.inner.notify.notified() => {
                        // A stale permit from a trigger already served: wait again.
                        if !self.trigger.is_pending() {
                            continue;
                        }
                        RunReason::Triggered
                    }
                    _ = sleep_until(retry_deadline), if self.retry_at.is_some() => RunReason::Retry,
                    _ = sleep_until(self.next_periodic) => RunReason::Periodic,
                    _ = sleep_until(self.wake_at.unwrap_or(self.next_periodic)), if self.wake_at.is_some() => {
                        self.wake_at = None;
                        RunReason::Backoff
                    }
                }
            };
            // minSyncPeriod: never start two runs closer than min_interval;
            // triggers arriving meanwhile are absorbed by this run.
            if let Some(last) = self.last_start {
                sleep_until(after(last, cfg.min_interval)).await;
            }
            // Changes queued until now are all handled by this run.
            if self.trigger.take() && matches!(reason, RunReason::Periodic | RunReason::Backoff) {
                reason = RunReason::Triggered;
            }
            let start = Instant::now();
            self.last_start = Some(start);
            // syncPeriod counts from the last run, whatever caused it.
            self.next_periodic = after(start, cfg.max_interval);
            return reason;
        }
    }

    /// Reports the outcome of the run `wait` allowed: a failure schedules a
    /// retry (exponential backoff up to `retry_max`), a success clears it.
    pub fn finished(&mut self, ok: bool) {
        if ok {
            self.retry_at = None;
            self.retry_delay = self.cfg.retry_initial;
        } else {
            self.retry_at = Some(after(Instant::now(), self.retry_delay));
            self.retry_delay = self
                .retry_delay
                .saturating_mul(2)
                .min(self.cfg.retry_max.max(self.cfg.retry_initial));
        }
    }

    /// Loops until `shutdown` completes; `f` is never called concurrently
    /// with itself.
    pub async fn run<F, Fut, E>(mut self, mut f: F, shutdown: impl Future<Output = ()>)
    where
        F: FnMut(RunReason) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        tokio::pin!(shutdown);
        loop {
            let reason = tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = self.wait() => r,
            };
            let res = f(reason).await;
            if let Err(e) = &res {
                tracing::warn!(error = %e, retry_in = ?self.retry_delay, "sync failed, retrying");
            }
            self.finished(res.is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    type Log = Arc<Mutex<Vec<(Duration, RunReason)>>>;

    /// Starts a runner whose sync records (elapsed, reason) and fails while
    /// `fail` is set; returns the log, the trigger and a shutdown sender.
    fn start(
        cfg: RunnerConfig,
        fail: Arc<AtomicBool>,
        run_time: Duration,
    ) -> (
        Log,
        Trigger,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let log: Log = Arc::default();
        let runner = Runner::new(cfg);
        let trigger = runner.trigger();
        let (tx, rx) = oneshot::channel::<()>();
        let t0 = Instant::now();
        let l = log.clone();
        let h = tokio::spawn(runner.run(
            move |reason| {
                let l = l.clone();
                let fail = fail.clone();
                async move {
                    l.lock().unwrap().push((t0.elapsed(), reason));
                    tokio::time::sleep(run_time).await;
                    if fail.load(Ordering::SeqCst) {
                        Err("boom")
                    } else {
                        Ok(())
                    }
                }
            },
            async move {
                let _ = rx.await;
            },
        ));
        (log, trigger, tx, h)
    }

    fn cfg(min: u64, max: u64) -> RunnerConfig {
        RunnerConfig::new(Duration::from_secs(min), Duration::from_secs(max))
    }

    fn secs(log: &Log) -> Vec<(u64, RunReason)> {
        log.lock()
            .unwrap()
            .iter()
            .map(|(d, r)| (d.as_secs(), *r))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn burst_coalesces() {
        let (log, trigger, tx, h) = start(cfg(1, 30), Arc::default(), Duration::from_millis(100));
        for _ in 0..10_000 {
            trigger.run();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = log.lock().unwrap().len();
        assert_eq!(n, 1, "{:?}", secs(&log));
        // A burst spread over a run: at most one more run.
        for i in 0..10_000u64 {
            trigger.run();
            if i % 1000 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = log.lock().unwrap().len();
        assert!((2..=3).contains(&n), "{:?}", secs(&log));
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn min_interval_rate_limits() {
        let (log, trigger, tx, h) = start(cfg(10, 1000), Arc::default(), Duration::ZERO);
        // Trigger every second for 35 s: runs at 0, 10, 20, 30.
        for _ in 0..35 {
            trigger.run();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let got = secs(&log);
        assert_eq!(
            got.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 10, 20, 30],
            "{got:?}"
        );
        assert!(got.iter().all(|x| x.1 == RunReason::Triggered));
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_runs_without_triggers() {
        let (log, trigger, tx, h) = start(cfg(1, 30), Arc::default(), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert_eq!(
            secs(&log),
            vec![
                (30, RunReason::Periodic),
                (60, RunReason::Periodic),
                (90, RunReason::Periodic)
            ]
        );
        // A triggered run restarts the period.
        trigger.run();
        tokio::time::sleep(Duration::from_secs(40)).await;
        let got = secs(&log);
        assert_eq!(got[3], (95, RunReason::Triggered));
        assert_eq!(got[4], (125, RunReason::Periodic));
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failure_retries_with_backoff() {
        let fail = Arc::new(AtomicBool::new(true));
        let (log, trigger, tx, h) = start(cfg(0, 60), fail.clone(), Duration::ZERO);
        trigger.run();
        // Runs at 0, retries at 1, 3, 7, 15 (1, 2, 4, 8 s backoff).
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let got = secs(&log);
        assert_eq!(got[0], (0, RunReason::Triggered));
        assert_eq!(
            got[1..5],
            [
                (1, RunReason::Retry),
                (3, RunReason::Retry),
                (7, RunReason::Retry),
                (15, RunReason::Retry)
            ]
        );
        // 15 failed; 31 succeeds; then nothing until the period (31 + 60).
        assert_eq!(got[5], (31, RunReason::Retry));
        assert_eq!(got.len(), 6, "{got:?}");
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn retry_respects_min_interval_and_trigger_preempts_retry() {
        let fail = Arc::new(AtomicBool::new(true));
        let mut c = cfg(5, 100);
        c.retry_initial = Duration::from_secs(1);
        let (log, trigger, tx, h) = start(c, fail.clone(), Duration::ZERO);
        trigger.run();
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        // The retry due at 1 s waits for min_interval: second run at 5.
        assert_eq!(
            secs(&log),
            vec![(0, RunReason::Triggered), (5, RunReason::Retry)]
        );
        fail.store(false, Ordering::SeqCst);
        trigger.run();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Run 3 at 10: triggered (pending work beats the retry label).
        assert_eq!(secs(&log)[2].0, 10);
        assert_eq!(secs(&log).len(), 3);
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn trigger_during_run_runs_again() {
        let (log, trigger, tx, h) = start(cfg(0, 1000), Arc::default(), Duration::from_secs(2));
        trigger.run();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            trigger.run(),
            "the pending flag is cleared when a run starts"
        );
        assert!(!trigger.run());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            secs(&log),
            vec![(0, RunReason::Triggered), (2, RunReason::Triggered)]
        );
        tx.send(()).unwrap();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn manual_wait_and_finished() {
        let mut r = Runner::new(cfg(2, 10));
        let t = r.trigger();
        let t0 = Instant::now();
        let mut state = Vec::new(); // owned &mut state, no locks
        t.run();
        state.push((r.wait().await, t0.elapsed().as_secs()));
        r.finished(false);
        state.push((r.wait().await, t0.elapsed().as_secs()));
        r.finished(true);
        state.push((r.wait().await, t0.elapsed().as_secs()));
        // A cancelled wait keeps the trigger.
        t.run();
        let _ = tokio::time::timeout(Duration::from_millis(1), r.wait()).await;
        state.push((r.wait().await, t0.elapsed().as_secs()));
        assert_eq!(
            state,
            vec![
                (RunReason::Triggered, 0),
                (RunReason::Retry, 2),
                (RunReason::Periodic, 12),
                (RunReason::Triggered, 14)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn huge_intervals_do_not_panic() {
        let mut r = Runner::new(RunnerConfig {
            min_interval: Duration::MAX,
            max_interval: Duration::MAX,
            retry_initial: Duration::MAX,
            retry_max: Duration::MAX,
        });
        r.trigger().run();
        assert_eq!(r.wait().await, RunReason::Triggered);
        r.finished(false);
        r.finished(false);
        r.trigger().run();
        let waited = tokio::time::timeout(Duration::from_secs(3600), r.wait()).await;
        assert!(waited.is_err(), "min_interval holds the second run back");
    }
}
