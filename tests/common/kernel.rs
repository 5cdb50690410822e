//! The node's kernel state as the standard tools print it (ipvsadm -Sn, ipset save, iptables-save, ip addr), and waits on it.

use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::try_sh;

/// What the node's kernel holds, as the standard tools print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub ipvs: String,
    pub ipset: String,
    /// iptables-save without comments and chain counters (traffic to the
    /// fake API server moves the built-in chains' counters).
    pub iptables: String,
    pub addrs: String,
}

impl Kernel {
    pub fn read() -> Kernel {
        let iptables = try_sh("iptables-save")
            .1
            .lines()
            .filter(|l| l.starts_with("-A ") || l.starts_with('*') || l.starts_with(":KUBE"))
            .collect::<Vec<_>>()
            .join("\n");
        Kernel {
            ipvs: try_sh("ipvsadm -Sn").1,
            ipset: try_sh("ipset save").1,
            iptables,
            addrs: try_sh("ip -o addr show dev kube-ipvs0").1,
        }
    }

    pub fn ipvs_has(&self, line: &str) -> bool {
        self.ipvs.lines().any(|l| l.trim() == line)
    }

    pub fn ipset_has(&self, line: &str) -> bool {
        self.ipset.lines().any(|l| l.trim() == line)
    }

    pub fn addr_has(&self, a: &str) -> bool {
        self.addrs.contains(&format!(" {a} "))
    }
}

/// Waits until the kernel satisfies `check`, with the kernel in the panic message.
pub fn converge(d: &mut Daemon, what: &str, check: impl Fn(&Kernel) -> bool) -> Kernel {
    let mut last = None;
    d.wait_for(what, || {
        let k = Kernel::read();
        let ok = check(&k);
        last = Some(k);
        ok
    });
    last.expect("read at least once")
}

/// Samples the kernel every `every` for `total`; each sample must equal `want`.
pub fn unchanged_for(
    d: &mut Daemon,
    want: &Kernel,
    total: Duration,
    every: Duration,
    what: &str,
) -> usize {
    let end = Instant::now() + total;
    let mut samples = 0;
    loop {
        let k = Kernel::read();
        samples += 1;
        assert_eq!(&k, want, "kernel changed {what} (sample {samples})");
        if Instant::now() >= end {
            return samples;
        }
        d.assert_running();
        std::thread::sleep(every);
    }
}
