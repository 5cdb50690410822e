//! `ipvsadm -Ln` (and its `--stats`/`--rate`/... variants) and `ipvsadm -Sn`, byte for byte.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs_netlink::ipvs::{
    DestinationEntry, Family, ForwardMethod, Info, Protocol, Service, ServiceFlags, ServiceKey,
    TunnelChecksum, TunnelType,
};

use super::TableEntry;
use super::order::{sort_destinations, sort_services};

/// Which `ipvsadm -Ln` variant to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// `ipvsadm -Ln`
    #[default]
    Plain,
    /// `ipvsadm -Ln --stats`
    Stats,
    /// `ipvsadm -Ln --rate`
    Rate,
    /// `ipvsadm -Ln --thresholds`
    Thresholds,
    /// `ipvsadm -Ln --persistent-conn`
    PersistentConn,
    /// `ipvsadm -Ln --tun-info`
    TunInfo,
}

/// IPv6 text exactly as glibc's `inet_ntop` writes it (it differs from Rust's
/// `Display` for IPv4-compatible addresses such as `::1.2.3.4`).
fn ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    // Longest run of at least two zero words; the first one wins a tie.
    // (start, length) of zero-word runs.
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &x) in w.iter().enumerate() {
        if x == 0 {
            cur = Some(cur.map_or((i, 1), |(b, l)| (b, l + 1)));
        } else {
            cur = None;
        }
        if let Some((b, l)) = cur
            && l >= 2
            && best.is_none_or(|(_, bl)| l > bl)
        {
            best = Some((b, l));
        }
    }
    let mut s = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best
            && i >= b
            && i < b + l
        {
            if i == b {
                s.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            s.push(':');
        }
        if i == 6
            && let Some((0, l)) = best
            && (l == 6 || (l == 5 && w[5] == 0xffff))
        {
            let o = a.octets();
            let _ = write!(s, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            i = 8;
            break;
        }
        let _ = write!(s, "{:x}", w[i]);
        i += 1;
    }
    if let Some((b, l)) = best
        && b + l == 8
        && i == 8
    {
        s.push(':');
    }
    s
}

/// `addrport_to_anyname` with `-n`: `1.2.3.4:80`, `[2001:db8::1]:80`.
fn addrport(a: &SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port()),
        IpAddr::V6(v6) => format!("[{}]:{}", ntop6(&v6), a.port()),
    }
}

fn v4_mask(prefix: u8) -> Ipv4Addr {
    let bits = match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(bits)
}

/// The persistence mask suffix, printed only when it is not the host mask.
fn mask_text(svc: &Service) -> Option<String> {
    match svc.key.family() {
        Family::Inet if svc.netmask < 32 => Some(v4_mask(svc.netmask).to_string()),
        Family::Inet6 if svc.netmask < 128 => Some(svc.netmask.to_string()),
        _ => None,
    }
}

const SCHED_FLAGS: ServiceFlags = ServiceFlags::SCHED1
    .union(ServiceFlags::SCHED2)
    .union(ServiceFlags::SCHED3);

/// `print_sched_flags`: named flags for sh and mh, numbered ones otherwise.
fn sched_flags(svc: &Service) -> Option<String> {
    if svc.flags.bits() & SCHED_FLAGS.bits() == 0 {
        return None;
    }
    let names: [&str; 3] = match svc.scheduler.name() {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    let bits = [
        ServiceFlags::SCHED1,
        ServiceFlags::SCHED2,
        ServiceFlags::SCHED3,
    ];
    let set: Vec<&str> = names
        .iter()
        .zip(bits)
        .filter(|(_, b)| svc.flags.contains(*b))
        .map(|(n, _)| *n)
        .collect();
    Some(set.join(","))
}

/// C `%d` of a kernel u32 (fwmark, weight): values above `i32::MAX` print negative.
fn c_int(v: u32) -> i32 {
    v as i32
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

fn protocol_option(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
        Protocol::Sctp => "--sctp-service",
    }
}

/// The service as the listing names it: `TCP  10.0.0.1:80`, `FWM  7 IPv6`.
pub(super) fn list_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::FwMark { mark, family } => {
            let v6 = if *family == Family::Inet6 {
                " IPv6"
            } else {
                ""
            };
            format!("FWM  {}{v6}", c_int(*mark))
        }
        other => match (other.protocol(), other.addr()) {
            (Some(p), Some(a)) => format!("{:<4} {}", protocol_name(p), addrport(&a)),
            _ => String::new(),
        },
    }
}

/// The service as a rule names it: `-t 10.0.0.1:80`, `-f 7 -6`.
fn rule_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::FwMark { mark, family } => {
            let v6 = if *family == Family::Inet6 { " -6" } else { "" };
            format!("-f {}{v6}", c_int(*mark))
        }
        other => match (other.protocol(), other.addr()) {
            (Some(p), Some(a)) => format!("{} {}", protocol_option(p), addrport(&a)),
            _ => String::new(),
        },
    }
}

/// `fwd_name`; ipvsadm has no name for bypass and glibc prints a NULL `%s` as `(null)`.
fn fwd_name(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Masq => "Masq",
        ForwardMethod::Local => "Local",
        ForwardMethod::Tunnel => "Tunnel",
        ForwardMethod::DirectRoute => "Route",
        ForwardMethod::Bypass => "(null)",
    }
}

/// `fwd_switch`: local node is saved as `-g`, as ipvsadm does.
fn fwd_switch(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Masq => "-m",
        ForwardMethod::Tunnel => "-i",
        ForwardMethod::Local | ForwardMethod::DirectRoute => "-g",
        ForwardMethod::Bypass => "(null)",
    }
}

fn tun_name(t: TunnelType) -> &'static str {
    match t {
        TunnelType::IpIp => "ipip",
        TunnelType::Gue => "gue",
        TunnelType::Gre => "gre",
    }
}

fn csum_short(c: TunnelChecksum) -> &'static str {
    match c {
        TunnelChecksum::NoChecksum => "-c",
        TunnelChecksum::Checksum => "+c",
        TunnelChecksum::RemoteChecksum => "r+c",
    }
}

fn csum_option(c: TunnelChecksum) -> &'static str {
    match c {
        TunnelChecksum::NoChecksum => "--tun-nocsum",
        TunnelChecksum::Checksum => "--tun-csum",
        TunnelChecksum::RemoteChecksum => "--tun-remcsum",
    }
}

/// `print_largenum`: 9 columns, scaled with K/M/G/T unless `exact`.
fn largenum(out: &mut String, i: u64, exact: bool) {
    let _ = if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        write!(out, "{i:>width$}")
    } else if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

fn title(out: &mut String, format: ListFormat) {
    let head = "Prot LocalAddress:Port";
    let _ = match format {
        ListFormat::Stats => writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        ListFormat::Rate => writeln!(
            out,
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        ListFormat::Thresholds => writeln!(
            out,
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        ListFormat::PersistentConn => writeln!(
            out,
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        ListFormat::TunInfo => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"
        ),
        ListFormat::Plain => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ),
    };
}

/// The plain service line: `TCP  10.0.0.1:80 sh (sh-port) persistent 60 mask 255.255.255.0 pe sip ops`.
fn service_line(out: &mut String, svc: &Service) {
    let _ = write!(out, "{} {}", list_name(&svc.key), svc.scheduler.name());
    if let Some(f) = sched_flags(svc) {
        let _ = write!(out, " ({f})");
    }
    if svc.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " persistent {}", svc.timeout);
        if let Some(m) = mask_text(svc) {
            let _ = write!(out, " mask {m}");
        }
        if let Some(pe) = svc.pe_name.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(out, " pe {pe}");
        }
    }
    if svc.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" ops");
    }
    out.push('\n');
}

fn tun_info(d: &DestinationEntry) -> String {
    let dest = &d.destination;
    if dest.forward != ForwardMethod::Tunnel {
        return "n/a".to_string();
    }
    match dest.tunnel_type {
        TunnelType::IpIp => "ipip".to_string(),
        TunnelType::Gue => format!(
            "gue:{}:{}",
            dest.tunnel_port,
            csum_short(dest.tunnel_checksum)
        ),
        TunnelType::Gre => format!("gre:{}", csum_short(dest.tunnel_checksum)),
    }
}

fn destination_line(out: &mut String, d: &DestinationEntry, format: ListFormat, exact: bool) {
    let name = addrport(&d.destination.addr);
    let s = &d.stats;
    let weight = c_int(d.destination.weight);
    let _ = match format {
        ListFormat::Stats => {
            let _ = write!(out, "  -> {name:<28}");
            for v in [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes] {
                largenum(out, v, exact);
            }
            writeln!(out)
        }
        ListFormat::Rate => {
            let _ = write!(
                out,
                "  -> {name:<28} {:>8} {:>8} {:>8}",
                s.cps, s.inpps, s.outpps
            );
            largenum(out, s.inbps, exact);
            largenum(out, s.outbps, exact);
            writeln!(out)
        }
        ListFormat::Thresholds => writeln!(
            out,
            "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
            d.destination.upper_threshold,
            d.destination.lower_threshold,
            d.active_conns,
            d.inactive_conns
        ),
        ListFormat::PersistentConn => writeln!(
            out,
            "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}",
            d.destination.weight, d.persist_conns, d.active_conns, d.inactive_conns
        ),
        ListFormat::TunInfo => writeln!(
            out,
            "  -> {name:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
            fwd_name(d.destination.forward),
            tun_info(d),
            weight,
            d.active_conns,
            d.inactive_conns
        ),
        ListFormat::Plain => writeln!(
            out,
            "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
            fwd_name(d.destination.forward),
            weight,
            d.active_conns,
            d.inactive_conns
        ),
    };
}

/// Sorted copy of the table, services and their real servers in ipvsadm's order.
fn sorted(table: &[TableEntry]) -> Vec<TableEntry> {
    let mut t = table.to_vec();
    sort_services(&mut t);
    for (_, dests) in &mut t {
        sort_destinations(dests);
    }
    t
}

/// What `ipvsadm -Ln` prints (with `format`'s option, and `--exact` if `exact`).
///
/// `table` must be in kernel dump order; see [`super`] for why.
pub fn list(info: &Info, table: &[TableEntry], format: ListFormat, exact: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {} (size={})",
        info.version_string(),
        c_int(info.conn_table_size)
    );
    title(&mut out, format);
    for (se, dests) in sorted(table) {
        match format {
            ListFormat::Stats | ListFormat::Rate => {
                let _ = write!(out, "{:<33}", list_name(&se.service.key));
                let s = &se.stats;
                let vals = if format == ListFormat::Stats {
                    [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
                } else {
                    [s.cps, s.inpps, s.outpps, s.inbps, s.outbps]
                };
                for v in vals {
                    largenum(&mut out, v, exact);
                }
                out.push('\n');
            }
            _ => service_line(&mut out, &se.service),
        }
        for d in &dests {
            destination_line(&mut out, d, format, exact);
        }
    }
    out
}

/// One `-A` rule as `ipvsadm -Sn` writes it.
fn service_rule(out: &mut String, svc: &Service) {
    let _ = write!(
        out,
        "-A {} -s {}",
        rule_name(&svc.key),
        svc.scheduler.name()
    );
    if svc.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " -p {}", svc.timeout);
        if let Some(m) = mask_text(svc) {
            let _ = write!(out, " -M {m}");
        }
    }
    if let Some(pe) = svc.pe_name.as_deref().filter(|p| !p.is_empty()) {
        let _ = write!(out, " --pe {pe}");
    }
    if svc.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" -o");
    }
    if let Some(f) = sched_flags(svc) {
        let _ = write!(out, " -b {f}");
    }
    out.push('\n');
}

/// One `-a` rule; thresholds are not saved (ipvsadm 1.31 drops them too).
fn destination_rule(out: &mut String, key: &ServiceKey, d: &DestinationEntry) {
    let dest = &d.destination;
    let _ = write!(
        out,
        "-a {} -r {} {} -w {}",
        rule_name(key),
        addrport(&dest.addr),
        fwd_switch(dest.forward),
        c_int(dest.weight)
    );
    if dest.forward == ForwardMethod::Tunnel {
        let _ = write!(out, " --tun-type {}", tun_name(dest.tunnel_type));
        match dest.tunnel_type {
            TunnelType::IpIp => {}
            TunnelType::Gue => {
                let _ = write!(
                    out,
                    " --tun-port {} {}",
                    dest.tunnel_port,
                    csum_option(dest.tunnel_checksum)
                );
            }
            TunnelType::Gre => {
                let _ = write!(out, " {}", csum_option(dest.tunnel_checksum));
            }
        }
    }
    out.push('\n');
}

/// What `ipvsadm -Sn` prints. `table` must be in kernel dump order.
pub fn save(table: &[TableEntry]) -> String {
    let mut out = String::new();
    for (se, dests) in sorted(table) {
        service_rule(&mut out, &se.service);
        for d in &dests {
            destination_rule(&mut out, &se.service.key, d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntop6_matches_glibc() {
        for (a, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("2001:db8::1", "2001:db8::1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::2", "::2"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("fd00:0:0:0:0:0:0:0", "fd00::"),
            ("0:0:0:0:0:1:2:3", "::1:2:3"),
            ("::ffff:0:1", "::ffff:0.0.0.1"),
        ] {
            assert_eq!(ntop6(&a.parse().unwrap()), want, "{a}");
        }
    }

    #[test]
    fn largenum_scales_like_ipvsadm() {
        let f = |i, exact| {
            let mut s = String::new();
            largenum(&mut s, i, exact);
            s
        };
        assert_eq!(f(0, false), "        0");
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(100_000_000, false), "  100000K");
        assert_eq!(f(1_234_567_890, false), "    1234M");
        assert_eq!(f(123_456_789_012, false), "     123G");
        assert_eq!(f(123_456_789_012_345, false), "     123T");
        assert_eq!(f(123_456_789_012, true), " 123456789012");
        assert_eq!(f(5, true), "        5");
    }

    #[test]
    fn v4_masks() {
        assert_eq!(v4_mask(24).to_string(), "255.255.255.0");
        assert_eq!(v4_mask(0).to_string(), "0.0.0.0");
        assert_eq!(v4_mask(17).to_string(), "255.255.128.0");
    }
}
