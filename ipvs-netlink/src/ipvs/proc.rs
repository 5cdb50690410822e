//! `/proc/net/ip_vs`: every virtual and real server of a namespace in one sequential read, without a netlink request per service.
//!
//! The kernel prints it in `ip_vs_info_seq_show` (net/netfilter/ipvs/ip_vs_ctl.c):
//! a service line `TCP  0A60000A:0050 rr ` (IPv4: address and port in hex,
//! then `ops ` for one-packet scheduling), `TCP  [fd00::10]:0050 rr ` (IPv6:
//! no `ops`), or `FWM  0000002A rr ` (no family), followed by `persistent T
//! MASK` when persistent; then one `  -> ADDR:PORT Forward Weight ActiveConn
//! InActConn` line per real server. What it does not show: scheduler flags
//! (sh-port, mh-fallback, …), thresholds, tunnel settings, the persistence
//! engine, and a firewall-mark service's family.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::types::{ForwardMethod, Protocol, Scheduler, ServiceKey};
use crate::error::{Error, Result};

/// A virtual service as `/proc/net/ip_vs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcService {
    pub id: ProcServiceId,
    pub scheduler: Scheduler,
    /// `ops` (shown for IPv4 services only).
    pub one_packet: bool,
    /// Persistence timeout in jiffies (the kernel keeps `timeout * HZ` and
    /// prints that; netlink divides by HZ) and netmask as a prefix length.
    pub persistence: Option<(u32, u8)>,
    pub destinations: Vec<ProcDestination>,
}

/// A service's identity as printed: firewall-mark services show no family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcServiceId {
    Key(ServiceKey),
    FwMark(u32),
}

/// A real server as `/proc/net/ip_vs` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcDestination {
    pub addr: SocketAddr,
    /// `Masq` is printed for bypass too (`ip_vs_fwd_name`'s default).
    pub forward: ForwardMethod,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// The calling thread's namespace's table (`/proc/net` follows the process's
/// first thread; netlink sockets and `thread-self` follow the caller).
pub const PROC_IP_VS: &str = "/proc/thread-self/net/ip_vs";

/// Reads [`PROC_IP_VS`], handing each service to `each` as it is parsed.
/// The kernel hands out at most a page per `read` (seq_file's buffer grows
/// only for a record larger than it), and each `read` restarts
/// `ip_vs_info_seq_start`'s walk of the service table from its first bucket
/// up to the position reached: the kernel's side grows as services × pages,
/// whatever the buffer. The large buffer saves our side's copies only.
pub fn read_each(each: impl FnMut(ProcService)) -> Result<()> {
    let file = File::open(PROC_IP_VS).map_err(|source| Error::File {
        path: PROC_IP_VS,
        source,
    })?;
    parse_each(BufReader::with_capacity(1 << 20, file), each)
}

/// Parses `/proc/net/ip_vs` text from `r`.
pub fn parse_each(r: impl BufRead, mut each: impl FnMut(ProcService)) -> Result<()> {
    let mut current: Option<ProcService> = None;
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(|source| Error::File {
            path: PROC_IP_VS,
            source,
        })?;
        let bad = |what: &str| Error::Decode {
            context: format!("{PROC_IP_VS} line {}", n + 1),
            message: format!("malformed {what}: {line:?}"),
        };
        if n < 3 {
            // "IP Virtual Server version …", then two header lines.
            continue;
        }
        if let Some(rest) = line.strip_prefix("  -> ") {
            let svc = current
                .as_mut()
                .ok_or_else(|| bad("real server before any service"))?;
            svc.destinations
                .push(parse_destination(rest).ok_or_else(|| bad("real server"))?);
        } else if !line.trim().is_empty() {
            if let Some(done) = current.take() {
                each(done);
            }
            current = Some(parse_service(&line).ok_or_else(|| bad("service"))?);
        }
    }
    if let Some(done) = current {
        each(done);
    }
    Ok(())
}

fn parse_service(line: &str) -> Option<ProcService> {
    let mut w = line.split_whitespace();
    let proto = w.next()?;
    let id = if proto == "FWM" {
        ProcServiceId::FwMark(u32::from_str_radix(w.next()?, 16).ok()?)
    } else {
        let protocol = match proto {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => return None,
        };
        ProcServiceId::Key(ServiceKey::new(protocol, parse_addr(w.next()?)?))
    };
    let scheduler = Scheduler::from_name(w.next()?);
    let mut one_packet = false;
    let mut persistence = None;
    while let Some(tok) = w.next() {
        match tok {
            "ops" => one_packet = true,
            "persistent" => {
                let timeout = w.next()?.parse().ok()?;
                let mask = u32::from_str_radix(w.next()?, 16).ok()?;
                // IPv4 prints the mask (FFFFFF00). IPv6 keeps a prefix length
                // in host order there and prints it through ntohl: 128 shows
                // as 80000000 on a little-endian machine, 00000080 on a big-endian one.
                let prefix = match id {
                    ProcServiceId::Key(k) if k.family() == super::types::Family::Inet6 => {
                        let p = if mask <= 128 { mask } else { mask.swap_bytes() };
                        u8::try_from(p).ok().filter(|p| *p <= 128)?
                    }
                    _ if mask.leading_ones() + mask.trailing_zeros() == 32 => {
                        u8::try_from(mask.leading_ones()).ok()?
                    }
                    _ => return None,
                };
                persistence = Some((timeout, prefix));
            }
            _ => return None,
        }
    }
    Some(ProcService {
        id,
        scheduler,
        one_packet,
        persistence,
        destinations: Vec::new(),
    })
}

fn parse_destination(rest: &str) -> Option<ProcDestination> {
    let mut w = rest.split_whitespace();
    let addr = parse_addr(w.next()?)?;
    let forward = match w.next()? {
        "Masq" => ForwardMethod::Masq,
        "Local" => ForwardMethod::Local,
        "Tunnel" => ForwardMethod::Tunnel,
        "Route" => ForwardMethod::DirectRoute,
        _ => return None,
    };
    let weight = w.next()?.parse().ok()?;
    let active_conns = w.next()?.parse().ok()?;
    let inactive_conns = w.next()?.parse().ok()?;
    Some(ProcDestination {
        addr,
        forward,
        weight,
        active_conns,
        inactive_conns,
    })
}

/// `0A60000A:0050` (IPv4, hex) or `[fd00::10]:0050` (IPv6, port in hex).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
        Some(v6) => IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?),
        None if ip.len() == 8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?)),
        None => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::types::Family;

    /// Captured from Debian's 6.1 kernel (HZ 250) in the lab: `cat
    /// /proc/net/ip_vs` after `ipvsadm -R` of `-A -t 10.96.0.10:80 -s rr`
    /// (two real servers), `-A -u 10.96.0.30:53 -s rr -p 10800`, `-A -t
    /// 10.96.0.40:443 -s sh -b sh-port -p 60 -M 255.255.255.0` (a direct-route
    /// real server of weight 5), `-A -u 10.96.0.60:53 -s rr -o`, `-A -t
    /// [fd00:96::10]:80 -s wrr -p 3600` (an IPv6 real server of weight 0),
    /// `-A --sctp-service 10.96.0.50:7777 -s mh -b mh-fallback,mh-port` (a
    /// tunnelled real server) and `-A -f 42 -s wlc`.
    const CAPTURED: &str = include_str!("proc_ip_vs.txt");

    fn parsed(text: &str) -> Vec<ProcService> {
        let mut out = Vec::new();
        parse_each(text.as_bytes(), |s| out.push(s)).unwrap();
        out
    }

    #[test]
    fn parses_the_captured_table() {
        let s = parsed(CAPTURED);
        let key = |k: &str| {
            s.iter()
                .find(|x| match x.id {
                    ProcServiceId::Key(key) => key.to_string() == k,
                    ProcServiceId::FwMark(m) => format!("fwmark {m}") == k,
                })
                .unwrap_or_else(|| panic!("{k} not parsed from {s:#?}"))
        };
        let rr = key("TCP 10.96.0.10:80");
        assert_eq!(rr.scheduler, Scheduler::RoundRobin);
        assert_eq!(rr.persistence, None);
        assert_eq!(rr.destinations.len(), 2);
        assert_eq!(rr.destinations[0].weight, 1);
        assert_eq!(rr.destinations[0].forward, ForwardMethod::Masq);
        // Timeouts in jiffies: HZ is 250 on Debian's kernels.
        let p = key("UDP 10.96.0.30:53");
        assert_eq!(p.persistence, Some((10800 * 250, 32)));
        let m = key("TCP 10.96.0.40:443");
        assert_eq!(m.persistence, Some((60 * 250, 24)));
        assert!(!m.one_packet);
        assert_eq!(m.destinations[0].forward, ForwardMethod::DirectRoute);
        assert_eq!(m.destinations[0].weight, 5);
        assert!(key("UDP 10.96.0.60:53").one_packet);
        let v6 = key("TCP [fd00:96::10]:80");
        assert_eq!(v6.persistence, Some((3600 * 250, 128)));
        assert_eq!(
            v6.destinations[0].addr,
            "[fd00:10:244:1::2]:8080".parse().unwrap()
        );
        assert_eq!(v6.destinations[0].weight, 0);
        let sctp = key("SCTP 10.96.0.50:7777");
        assert_eq!(sctp.scheduler, Scheduler::Maglev);
        assert_eq!(sctp.destinations[0].forward, ForwardMethod::Tunnel);
        assert_eq!(s.len(), 7);
        let fw = key("fwmark 42");
        assert_eq!(fw.scheduler, Scheduler::WeightedLeastConnection);
        assert!(matches!(
            key("UDP 10.96.0.30:53").id,
            ProcServiceId::Key(k) if k.family() == Family::Inet
        ));
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let head = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n";
        for bad in [
            "  -> 0AF40102:1F90      Masq    1      0          0\n",
            "TCP  0A60000A rr\n",
            "TCP  0A60000A:zz rr\n",
            "XYZ  0A60000A:0050 rr\n",
            "TCP  0A60000A:0050 rr persistent\n",
            "TCP  0A60000A:0050 rr\n  -> 0AF40102:1F90 Teleport 1 0 0\n",
            "TCP  [fd00::1:0050 rr\n",
            "TCP  0A60000A:0050 rr persistent 60 FF00FF00\n",
        ] {
            let text = format!("{head}{bad}");
            assert!(
                parse_each(text.as_bytes(), |_| {}).is_err(),
                "accepted {bad:?}"
            );
        }
        // Truncated anywhere: an error or fewer services, never a panic.
        for cut in 0..CAPTURED.len() {
            let _ = parse_each(&CAPTURED.as_bytes()[..cut], |_| {});
        }
    }
}
