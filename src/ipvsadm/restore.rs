//! The `ipvsadm -R` input language (the `-S` rule syntax), parsed whole into typed commands.
//!
//! Defaults and checks follow ipvsadm 1.31: scheduler `wlc`, `-p` alone means
//! 360 seconds, real servers default to direct routing (`-g`) with weight 1,
//! and direct-routing and tunnel servers take the service's port. Unlike
//! ipvsadm, which applies each line as it reads it, nothing is returned unless
//! every line parses, so a typo never leaves a half-applied table.
//!
//! Deliberate differences: addresses and ports must be numeric (no DNS or
//! /etc/services lookups), lines starting with `#` are comments, an IPv4
//! persistence mask must be contiguous (the typed model stores a prefix length),
//! and a negative firewall mark is read as ipvsadm -S writes marks above 2^31
//! (`-f -1` is mark 4294967295), so saved tables always restore.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

mod options;

use options::{Arg, Name, lookup, unsupported};

use ipvs_netlink::ipvs::{
    Destination, Family, ForwardMethod, Protocol, Scheduler, Service, ServiceFlags, ServiceKey,
    TunnelChecksum, TunnelType,
};

/// ipvsadm's `IPVS_SVC_PERSISTENT_TIMEOUT`: `-p` without a value.
pub const DEFAULT_PERSISTENCE: u32 = 360;
/// ipvsadm's `MAX_TIMEOUT`: 31 days.
pub const MAX_PERSISTENCE: u32 = 86400 * 31;
/// ipvsadm's `DEF_SCHED`.
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// One change to the IPVS table, as a restore line asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`
    AddService(Service),
    /// `-E`: replaces every setting (absent options take their defaults, as in ipvsadm).
    EditService(Service),
    /// `-D`
    DeleteService(ServiceKey),
    /// `-a`
    AddDestination(ServiceKey, Destination),
    /// `-e`: replaces every setting of the real server.
    EditDestination(ServiceKey, Destination),
    /// `-d`
    DeleteDestination(ServiceKey, SocketAddr),
    /// `-C`
    Clear,
}

/// A parsed command and the 1-based input line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreLine {
    pub line: usize,
    pub command: Command,
}

/// A line that does not parse, with a message that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole restore input; on any bad line returns every error and no commands.
pub fn parse_restore(input: &str) -> Result<Vec<RestoreLine>, Vec<ParseError>> {
    let mut commands = Vec::new();
    let mut errors = Vec::new();
    // One buffer for every line's words: a restore is often 100,000 lines.
    let mut tokens: Vec<&str> = Vec::new();
    for (idx, text) in input.lines().enumerate() {
        let line = idx + 1;
        if text.trim_start().starts_with('#') {
            continue;
        }
        // ipvsadm's reader drops the word "ipvsadm", so `ipvsadm -A ...` lines work.
        tokens.clear();
        tokens.extend(text.split_whitespace().filter(|t| *t != "ipvsadm"));
        if tokens.is_empty() {
            continue;
        }
        match parse_line(&tokens) {
            Ok(command) => commands.push(RestoreLine { line, command }),
            Err(message) => errors.push(ParseError { line, message }),
        }
    }
    if errors.is_empty() {
        Ok(commands)
    } else {
        Err(errors)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Delete,
    Clear,
    AddDest,
    EditDest,
    DeleteDest,
}

impl Cmd {
    fn flag(self) -> &'static str {
        match self {
            Cmd::Add => "-A",
            Cmd::Edit => "-E",
            Cmd::Delete => "-D",
            Cmd::Clear => "-C",
            Cmd::AddDest => "-a",
            Cmd::EditDest => "-e",
            Cmd::DeleteDest => "-d",
        }
    }
}

/// Options that take part in ipvsadm's command/option legality table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Ops,
    Pe,
    SchedFlags,
    Ipv6,
    TunType,
    TunPort,
    TunCsum,
}

impl Opt {
    fn name(self) -> &'static str {
        match self {
            Opt::Service => "-t/-u/--sctp-service/-f",
            Opt::Scheduler => "-s",
            Opt::Persistent => "-p",
            Opt::Netmask => "-M",
            Opt::Server => "-r",
            Opt::Forward => "-g/-i/-m",
            Opt::Weight => "-w",
            Opt::UThreshold => "-x",
            Opt::LThreshold => "-y",
            Opt::Ops => "-o",
            Opt::Pe => "--pe",
            Opt::SchedFlags => "-b",
            Opt::Ipv6 => "-6",
            Opt::TunType => "--tun-type",
            Opt::TunPort => "--tun-port",
            Opt::TunCsum => "--tun-nocsum/--tun-csum/--tun-remcsum",
        }
    }

    /// Which commands accept this option (ipvsadm's `commands_v_options`).
    fn allowed(self, cmd: Cmd) -> bool {
        use Cmd::*;
        match self {
            Opt::Service => cmd != Clear,
            Opt::Ipv6 => cmd != Clear,
            Opt::Scheduler | Opt::Persistent | Opt::Netmask | Opt::Ops | Opt::Pe => {
                matches!(cmd, Add | Edit)
            }
            Opt::SchedFlags => matches!(cmd, Add | Edit),
            Opt::Server => matches!(cmd, AddDest | EditDest | DeleteDest),
            Opt::Forward
            | Opt::Weight
            | Opt::UThreshold
            | Opt::LThreshold
            | Opt::TunType
            | Opt::TunPort
            | Opt::TunCsum => matches!(cmd, AddDest | EditDest),
        }
    }

    /// Where the option belongs, for the error message.
    fn belongs_to(self) -> &'static str {
        match self {
            Opt::Scheduler
            | Opt::Persistent
            | Opt::Netmask
            | Opt::Ops
            | Opt::Pe
            | Opt::SchedFlags => "it configures a service: use it with -A or -E",
            Opt::Server => "it names a real server: use it with -a, -e or -d",
            Opt::Service | Opt::Ipv6 => "-C takes no other option",
            _ => "it configures a real server: use it with -a or -e",
        }
    }
}

/// Everything one line said, before defaults and cross-checks; values are
/// slices of the input (no copy per option).
#[derive(Default)]
struct Raw<'a> {
    cmd: Option<Cmd>,
    seen: Vec<Opt>,
    service: Option<(Option<Protocol>, &'a str)>,
    scheduler: Option<&'a str>,
    persistent: Option<Option<&'a str>>,
    netmask: Option<&'a str>,
    server: Option<&'a str>,
    forward: Option<ForwardMethod>,
    weight: Option<&'a str>,
    u_threshold: Option<&'a str>,
    l_threshold: Option<&'a str>,
    ops: bool,
    pe: Option<&'a str>,
    sched_flags: Option<&'a str>,
    ipv6: bool,
    tun_type: Option<&'a str>,
    tun_port: Option<&'a str>,
    tun_csum: Option<TunnelChecksum>,
}

fn parse_line<'a>(tokens: &[&'a str]) -> Result<Command, String> {
    let mut raw = Raw::default();
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i];
        i += 1;
        let (name, inline) = if let Some(long) = tok.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            }
        } else if let Some(short) = tok.strip_prefix('-').filter(|s| !s.is_empty()) {
            // popt also accepts the value glued on: `-srr`, `-p600`.
            let split = short.char_indices().nth(1).map_or(short.len(), |(i, _)| i);
            let (n, v) = short.split_at(split);
            (n, (!v.is_empty()).then_some(v))
        } else {
            return Err(format!(
                "unexpected argument '{tok}': values follow their option, as in `-s rr`"
            ));
        };
        if let Some(why) = unsupported(name) {
            return Err(format!(
                "'{tok}' is not allowed in restore input ({why}); remove the line"
            ));
        }
        let Some((opt, arg)) = lookup(name) else {
            return Err(format!(
                "unknown option '{tok}'; see `kube-ipvs ipvs restore --help` for the accepted options"
            ));
        };
        let value: Option<&'a str> = match arg {
            Arg::None => {
                if inline.is_some() {
                    return Err(format!("option '{tok}' takes no value; write it alone"));
                }
                None
            }
            Arg::Required => match inline {
                Some(v) => Some(v),
                None => match tokens.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(*v)
                    }
                    None => {
                        return Err(format!(
                            "option '{tok}' needs a value; add it after '{tok}'"
                        ));
                    }
                },
            },
            // Like popt: an optional value is the next word unless that is an option.
            Arg::Optional => match inline {
                Some(v) => Some(v),
                None => match tokens.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(*v)
                    }
                    _ => None,
                },
            },
        };
        apply_option(&mut raw, opt, tok, value)?;
    }
    build(raw)
}

fn set_cmd(raw: &mut Raw<'_>, cmd: Cmd) -> Result<(), String> {
    if let Some(prev) = raw.cmd {
        return Err(format!(
            "two commands on one line ({} and {}); put each on its own line",
            prev.flag(),
            cmd.flag()
        ));
    }
    raw.cmd = Some(cmd);
    Ok(())
}

fn mark(raw: &mut Raw<'_>, opt: Opt) -> Result<(), String> {
    if raw.seen.contains(&opt) {
        return Err(format!("option {} given twice; keep one", opt.name()));
    }
    raw.seen.push(opt);
    Ok(())
}

fn apply_option<'a>(
    raw: &mut Raw<'a>,
    opt: Name,
    tok: &str,
    value: Option<&'a str>,
) -> Result<(), String> {
    let v = || value.unwrap_or_default();
    match opt {
        Name::AddService => set_cmd(raw, Cmd::Add)?,
        Name::EditService => set_cmd(raw, Cmd::Edit)?,
        Name::DeleteService => set_cmd(raw, Cmd::Delete)?,
        Name::Clear => set_cmd(raw, Cmd::Clear)?,
        Name::AddServer => set_cmd(raw, Cmd::AddDest)?,
        Name::EditServer => set_cmd(raw, Cmd::EditDest)?,
        Name::DeleteServer => set_cmd(raw, Cmd::DeleteDest)?,
        Name::TcpService | Name::UdpService | Name::SctpService | Name::FwmarkService => {
            mark(raw, Opt::Service)?;
            let proto = match opt {
                Name::TcpService => Some(Protocol::Tcp),
                Name::UdpService => Some(Protocol::Udp),
                Name::SctpService => Some(Protocol::Sctp),
                _ => None,
            };
            raw.service = Some((proto, v()));
        }
        Name::Scheduler => {
            mark(raw, Opt::Scheduler)?;
            raw.scheduler = Some(v());
        }
        Name::Persistent => {
            mark(raw, Opt::Persistent)?;
            raw.persistent = Some(value);
        }
        Name::Netmask => {
            mark(raw, Opt::Netmask)?;
            raw.netmask = Some(v());
        }
        Name::RealServer => {
            mark(raw, Opt::Server)?;
            raw.server = Some(v());
        }
        Name::Masquerading | Name::Ipip | Name::Gatewaying => {
            if raw.seen.contains(&Opt::Forward) {
                return Err(format!(
                    "'{tok}' conflicts with an earlier forwarding option; give one of -g, -i, -m"
                ));
            }
            raw.seen.push(Opt::Forward);
            raw.forward = Some(match opt {
                Name::Masquerading => ForwardMethod::Masq,
                Name::Ipip => ForwardMethod::Tunnel,
                _ => ForwardMethod::DirectRoute,
            });
        }
        Name::Weight => {
            mark(raw, Opt::Weight)?;
            raw.weight = Some(v());
        }
        Name::UThreshold => {
            mark(raw, Opt::UThreshold)?;
            raw.u_threshold = Some(v());
        }
        Name::LThreshold => {
            mark(raw, Opt::LThreshold)?;
            raw.l_threshold = Some(v());
        }
        Name::Ipv6 => {
            mark(raw, Opt::Ipv6)?;
            raw.ipv6 = true;
        }
        Name::Ops => {
            mark(raw, Opt::Ops)?;
            raw.ops = true;
        }
        Name::Pe => {
            mark(raw, Opt::Pe)?;
            raw.pe = Some(v());
        }
        Name::SchedFlags => {
            mark(raw, Opt::SchedFlags)?;
            raw.sched_flags = Some(v());
        }
        Name::TunType => {
            mark(raw, Opt::TunType)?;
            raw.tun_type = Some(v());
        }
        Name::TunPort => {
            mark(raw, Opt::TunPort)?;
            raw.tun_port = Some(v());
        }
        Name::TunNocsum | Name::TunCsum | Name::TunRemcsum => {
            if raw.seen.contains(&Opt::TunCsum) {
                return Err(format!(
                    "'{tok}' conflicts with an earlier checksum option; give one of --tun-nocsum, --tun-csum, --tun-remcsum"
                ));
            }
            raw.seen.push(Opt::TunCsum);
            raw.tun_csum = Some(match opt {
                Name::TunNocsum => TunnelChecksum::NoChecksum,
                Name::TunCsum => TunnelChecksum::Checksum,
                _ => TunnelChecksum::RemoteChecksum,
            });
        }
    }
    Ok(())
}

/// `string_to_number`: decimal only, within [min, max].
fn number(value: &str, min: u64, max: u64, what: &str) -> Result<u64, String> {
    number_named(value, min, max, || what.to_string())
}

/// [`number`], naming the value only on failure (ports: every line has one).
fn number_named(
    value: &str,
    min: u64,
    max: u64,
    what: impl FnOnce() -> String,
) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && !value.starts_with('+') => Ok(n),
        _ => Err(format!(
            "invalid {} '{value}'; give a whole number from {min} to {max}",
            what()
        )),
    }
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`.
fn parse_addr(value: &str, what: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad = || {
        format!(
            "invalid {what} '{value}'; write a numeric address with an optional port, \
             as 10.0.0.1:80 or [2001:db8::1]:80"
        )
    };
    // The message is only built for a bad port: this runs for every line.
    let port = |p: &str| -> Result<u16, String> {
        number_named(p, 0, 65535, || format!("port in {what} '{value}'")).map(|n| n as u16)
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(bad)?;
        let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let p = tail.strip_prefix(':').ok_or_else(bad)?;
        return Ok((IpAddr::V6(ip), Some(port(p)?)));
    }
    // A bare IPv6 address has at least two colons; `a.b.c.d:port` one.
    if value.bytes().filter(|&b| b == b':').nth(1).is_some()
        && let Ok(ip) = value.parse::<std::net::Ipv6Addr>()
    {
        return Ok((IpAddr::V6(ip), None));
    }
    match value.rsplit_once(':') {
        Some((a, p)) => {
            let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
            Ok((IpAddr::V4(ip), Some(port(p)?)))
        }
        None => {
            let ip: Ipv4Addr = value.parse().map_err(|_| bad())?;
            Ok((IpAddr::V4(ip), None))
        }
    }
}

/// The service key and whether its address carried an explicit port.
fn parse_key(raw: &Raw<'_>) -> Result<ServiceKey, String> {
    let Some((proto, value)) = &raw.service else {
        return Err(
            "no service given; add -t ADDR:PORT, -u ADDR:PORT, --sctp-service ADDR:PORT or -f MARK"
                .into(),
        );
    };
    match proto {
        None => {
            // ipvsadm -S prints marks with %d, so marks above 2^31 come back negative.
            let mark = match value.strip_prefix('-') {
                Some(neg) => {
                    let n = number(neg, 1, 1 << 31, "firewall mark")?;
                    (n as u32).wrapping_neg()
                }
                None => number(value, 1, u64::from(u32::MAX), "firewall mark")? as u32,
            };
            let family = if raw.ipv6 {
                Family::Inet6
            } else {
                Family::Inet
            };
            Ok(ServiceKey::FwMark { mark, family })
        }
        Some(p) => {
            if raw.ipv6 {
                return Err(
                    "-6 only applies to firewall-mark services (-f); an IPv6 address already makes the service IPv6: drop -6".into(),
                );
            }
            let (ip, port) = parse_addr(value, "service address")?;
            Ok(ServiceKey::new(*p, SocketAddr::new(ip, port.unwrap_or(0))))
        }
    }
}

/// `-M`: a contiguous dotted mask for IPv4, a prefix length 1..128 for IPv6.
fn parse_netmask(value: &str, family: Family) -> Result<u8, String> {
    match family {
        Family::Inet6 => {
            Ok(number(value, 1, 128, "IPv6 persistence netmask (prefix length)")? as u8)
        }
        Family::Inet => {
            let bad = || {
                format!(
                    "invalid IPv4 persistence netmask '{value}'; write a contiguous dotted mask such as 255.255.255.0"
                )
            };
            let mask: Ipv4Addr = value.parse().map_err(|_| bad())?;
            let bits = u32::from(mask);
            let prefix = bits.leading_ones();
            if bits.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(bad());
            }
            Ok(prefix as u8)
        }
    }
}

fn parse_sched_flags(value: &str, scheduler: &str) -> Result<ServiceFlags, String> {
    let mut flags = ServiceFlags::empty();
    for name in value.split(',') {
        let (bit, needs) = match name {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SH_FALLBACK, Some("sh")),
            "sh-port" => (ServiceFlags::SH_PORT, Some("sh")),
            "mh-fallback" => (ServiceFlags::MH_FALLBACK, Some("mh")),
            "mh-port" => (ServiceFlags::MH_PORT, Some("mh")),
            other => {
                return Err(format!(
                    "invalid scheduler flag '{other}'; use flag-1, flag-2, flag-3, sh-fallback, sh-port, mh-fallback or mh-port"
                ));
            }
        };
        if let Some(s) = needs
            && s != scheduler
        {
            return Err(format!(
                "scheduler flag '{name}' needs scheduler {s}, not {scheduler}; add `-s {s}` or drop the flag"
            ));
        }
        flags.insert(bit);
    }
    Ok(flags)
}

fn check_allowed(raw: &Raw<'_>, cmd: Cmd) -> Result<(), String> {
    for opt in &raw.seen {
        if !opt.allowed(cmd) {
            return Err(format!(
                "option {} is not allowed with {} ({})",
                opt.name(),
                cmd.flag(),
                opt.belongs_to()
            ));
        }
    }
    Ok(())
}

fn build(raw: Raw<'_>) -> Result<Command, String> {
    let Some(cmd) = raw.cmd else {
        return Err("no command; start the line with -A, -E, -D, -a, -e, -d or -C".into());
    };
    check_allowed(&raw, cmd)?;
    if cmd == Cmd::Clear {
        return Ok(Command::Clear);
    }
    let key = parse_key(&raw)?;
    match cmd {
        Cmd::Clear => Ok(Command::Clear),
        Cmd::Delete => Ok(Command::DeleteService(key)),
        Cmd::Add | Cmd::Edit => {
            let svc = build_service(&raw, key)?;
            Ok(if cmd == Cmd::Add {
                Command::AddService(svc)
            } else {
                Command::EditService(svc)
            })
        }
        Cmd::AddDest | Cmd::EditDest | Cmd::DeleteDest => {
            let Some(server) = &raw.server else {
                return Err(format!(
                    "{} needs a real server; add -r ADDR[:PORT]",
                    cmd.flag()
                ));
            };
            let (ip, port) = parse_addr(server, "real server address")?;
            // Without a port the real server listens on the service's port.
            let svc_port = key.addr().map_or(0, |a| a.port());
            let addr = SocketAddr::new(ip, port.unwrap_or(svc_port));
            if cmd == Cmd::DeleteDest {
                return Ok(Command::DeleteDestination(key, addr));
            }
            let dest = build_destination(&raw, &key, addr)?;
            Ok(if cmd == Cmd::AddDest {
                Command::AddDestination(key, dest)
            } else {
                Command::EditDestination(key, dest)
            })
        }
    }
}

fn build_service(raw: &Raw<'_>, key: ServiceKey) -> Result<Service, String> {
    let mut svc = Service::new(key);
    let sched = raw.scheduler.unwrap_or(DEFAULT_SCHEDULER);
    if sched.is_empty() || sched.len() >= Scheduler::NAME_MAXLEN {
        return Err(format!(
            "invalid scheduler name '{sched}'; use a kernel scheduler such as rr, wrr, lc, wlc, sh, mh"
        ));
    }
    svc.scheduler = Scheduler::from_name(sched);
    if let Some(p) = &raw.persistent {
        svc.flags.insert(ServiceFlags::PERSISTENT);
        svc.timeout = match p {
            None => DEFAULT_PERSISTENCE,
            Some(v) => number(v, 1, u64::from(MAX_PERSISTENCE), "persistence timeout")? as u32,
        };
    }
    if let Some(m) = &raw.netmask {
        svc.netmask = parse_netmask(m, key.family())?;
    }
    if let Some(pe) = &raw.pe {
        if pe.is_empty() || pe.len() >= Scheduler::NAME_MAXLEN {
            return Err(format!(
                "invalid persistence engine '{pe}'; use a kernel engine such as sip"
            ));
        }
        svc.pe_name = Some(pe.to_string());
    }
    if raw.ops {
        if key.protocol().is_some_and(|p| p != Protocol::Udp) {
            return Err(format!(
                "one-packet scheduling (-o) is only for UDP or firewall-mark services; drop -o from {key}"
            ));
        }
        svc.flags.insert(ServiceFlags::ONEPACKET);
    }
    if let Some(f) = &raw.sched_flags {
        svc.flags.insert(parse_sched_flags(f, sched)?);
    }
    if key.addr().is_some_and(|a| a.port() == 0) && !svc.flags.contains(ServiceFlags::PERSISTENT) {
        return Err(format!(
            "port 0 is only allowed for persistent services; give {key} a port or add -p"
        ));
    }
    Ok(svc)
}

fn build_destination(
    raw: &Raw<'_>,
    key: &ServiceKey,
    addr: SocketAddr,
) -> Result<Destination, String> {
    let forward = raw.forward.unwrap_or(ForwardMethod::DirectRoute);
    let mut dest = Destination::masq(addr);
    dest.forward = forward;
    // ipvsadm: direct-routing and tunnel servers take the service's port.
    if let Some(sa) = key.addr()
        && matches!(forward, ForwardMethod::DirectRoute | ForwardMethod::Tunnel)
    {
        dest.addr.set_port(sa.port());
    }
    if dest.family() != key.family() && forward != ForwardMethod::Tunnel {
        return Err(format!(
            "real server {} is not in the address family of {key}; only tunnel (-i) servers may differ",
            dest.addr.ip()
        ));
    }
    if let Some(w) = &raw.weight {
        // ipvsadm 1.31 takes any non-negative int (1.29 stopped at 65535).
        dest.weight = number(w, 0, i32::MAX as u64, "weight")? as u32;
    }
    if let Some(x) = &raw.u_threshold {
        dest.upper_threshold = number(x, 0, i32::MAX as u64, "upper threshold")? as u32;
    }
    if let Some(y) = &raw.l_threshold {
        dest.lower_threshold = number(y, 0, i32::MAX as u64, "lower threshold")? as u32;
    }
    let tunnel_opts = raw.tun_type.is_some() || raw.tun_port.is_some() || raw.tun_csum.is_some();
    if tunnel_opts && forward != ForwardMethod::Tunnel {
        return Err(
            "tunnel options need tunnel forwarding; add -i or drop the --tun-* options".into(),
        );
    }
    if let Some(t) = &raw.tun_type {
        dest.tunnel_type = match *t {
            "ipip" => TunnelType::IpIp,
            "gue" => TunnelType::Gue,
            "gre" => TunnelType::Gre,
            other => {
                return Err(format!(
                    "invalid tunnel type '{other}'; use ipip, gue or gre"
                ));
            }
        };
    }
    // ipvsadm's tunnel_types_v_options.
    match dest.tunnel_type {
        TunnelType::IpIp => {
            if raw.tun_port.is_some() || raw.tun_csum.is_some() {
                return Err(
                    "ipip tunnels take no --tun-port or checksum option; drop them or use --tun-type gue".into(),
                );
            }
        }
        TunnelType::Gue => {
            let Some(p) = &raw.tun_port else {
                return Err("gue tunnels need a UDP port; add --tun-port PORT".into());
            };
            dest.tunnel_port = number(p, 1, 65535, "tunnel port")? as u16;
        }
        TunnelType::Gre => {
            if raw.tun_port.is_some() {
                return Err("gre tunnels take no --tun-port; drop it or use --tun-type gue".into());
            }
            if raw.tun_csum == Some(TunnelChecksum::RemoteChecksum) {
                return Err(
                    "gre tunnels do not support --tun-remcsum; use --tun-csum or --tun-nocsum"
                        .into(),
                );
            }
        }
    }
    if let Some(c) = raw.tun_csum {
        dest.tunnel_checksum = c;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Command {
        match parse_restore(line) {
            Ok(v) if v.len() == 1 => v[0].command.clone(),
            other => panic!("{line}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse_restore(line) {
            Err(e) => {
                assert_eq!(e.len(), 1);
                assert_eq!(e[0].line, 1);
                e[0].message.clone()
            }
            Ok(v) => panic!("{line} parsed: {v:?}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn svc(cmd: Command) -> Service {
        match cmd {
            Command::AddService(s) | Command::EditService(s) => s,
            other => panic!("not a service: {other:?}"),
        }
    }

    fn dest(cmd: Command) -> (ServiceKey, Destination) {
        match cmd {
            Command::AddDestination(k, d) | Command::EditDestination(k, d) => (k, d),
            other => panic!("not a destination: {other:?}"),
        }
    }

    #[test]
    fn add_service_defaults_to_wlc() {
        let s = svc(one("-A -t 10.0.0.1:80"));
        assert_eq!(s.key, ServiceKey::Tcp(sa("10.0.0.1:80")));
        assert_eq!(s.scheduler, Scheduler::WeightedLeastConnection);
        assert_eq!(s.flags, ServiceFlags::empty());
        assert_eq!(s.netmask, 32);
        assert_eq!(s.pe_name, None);
    }

    #[test]
    fn long_forms_and_glued_values() {
        let a = one(
            "--add-service --tcp-service 10.0.0.1:80 --scheduler rr --persistent 600 --netmask 255.255.255.0",
        );
        let b = one("-A -t 10.0.0.1:80 -srr -p600 -M 255.255.255.0");
        let c = one(
            "ipvsadm -A --tcp-service=10.0.0.1:80 --scheduler=rr --persistent=600 -M 255.255.255.0",
        );
        assert_eq!(a, b);
        assert_eq!(a, c);
        let s = svc(a);
        assert_eq!(s.timeout, 600);
        assert_eq!(s.netmask, 24);
        assert!(s.flags.contains(ServiceFlags::PERSISTENT));
    }

    #[test]
    fn persistence_without_value_is_360() {
        let s = svc(one("-A -t 10.0.0.1:0 -s rr -p"));
        assert_eq!(s.timeout, 360);
        let s = svc(one("-A -t 10.0.0.1:0 -p -s rr"));
        assert_eq!(s.timeout, 360);
        assert_eq!(s.scheduler, Scheduler::RoundRobin);
    }

    #[test]
    fn every_service_kind() {
        assert_eq!(
            svc(one("-A -u 10.0.0.1:53 -s rr")).key,
            ServiceKey::Udp(sa("10.0.0.1:53"))
        );
        assert_eq!(
            svc(one("-A --sctp-service [2001:db8::1]:9 -s rr")).key,
            ServiceKey::Sctp(sa("[2001:db8::1]:9"))
        );
        assert_eq!(
            svc(one("-A -f 7 -s rr")).key,
            ServiceKey::FwMark {
                mark: 7,
                family: Family::Inet
            }
        );
        let s = svc(one("-A -f 4294967295 -6 -s rr -p 300 -M 64"));
        assert_eq!(
            s.key,
            ServiceKey::FwMark {
                mark: u32::MAX,
                family: Family::Inet6
            }
        );
        assert_eq!(s.netmask, 64);
        assert!(err("-A -f 0 -s rr").contains("firewall mark"));
        assert!(err("-A -f 4294967296 -s rr").contains("firewall mark"));
        assert_eq!(
            svc(one("-A -f -1 -s rr")).key,
            ServiceKey::FwMark {
                mark: u32::MAX,
                family: Family::Inet
            }
        );
        assert_eq!(
            svc(one("-A -f -2147483648 -s rr")).key,
            ServiceKey::FwMark {
                mark: 1 << 31,
                family: Family::Inet
            }
        );
        assert!(err("-A -f -2147483649 -s rr").contains("firewall mark"));
        assert!(err("-A -t 10.0.0.1:80 -6").contains("-6 only applies"));
    }

    #[test]
    fn every_scheduler_name() {
        for name in [
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf",
        ] {
            let s = svc(one(&format!("-A -t 10.0.0.1:80 -s {name}")));
            assert_eq!(s.scheduler.name(), name);
        }
        assert!(err("-A -t 10.0.0.1:80 -s averyveryverylongname").contains("scheduler"));
    }

    #[test]
    fn scheduler_flags() {
        let s = svc(one("-A -t 10.0.0.1:80 -s sh -b sh-fallback,sh-port"));
        assert_eq!(s.flags, ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT);
        let s = svc(one("-A -t 10.0.0.1:80 -s mh --sched-flags mh-port"));
        assert_eq!(s.flags, ServiceFlags::MH_PORT);
        let s = svc(one("-A -t 10.0.0.1:80 -s rr -b flag-1,flag-2,flag-3"));
        assert_eq!(
            s.flags,
            ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3
        );
        assert!(err("-A -t 10.0.0.1:80 -s rr -b sh-port").contains("needs scheduler sh"));
        // Without -s the scheduler is wlc, so sh flags are refused, as ipvsadm does.
        assert!(err("-A -t 10.0.0.1:80 -b sh-port").contains("not wlc"));
        assert!(err("-A -t 10.0.0.1:80 -s sh -b bogus").contains("invalid scheduler flag"));
    }

    #[test]
    fn ops_pe_and_masks() {
        let s = svc(one("-A -u 10.0.0.1:5060 -s rr -p 120 --pe sip -o"));
        assert_eq!(s.pe_name.as_deref(), Some("sip"));
        assert!(s.flags.contains(ServiceFlags::ONEPACKET));
        assert!(err("-A -t 10.0.0.1:80 -o").contains("only for UDP"));
        assert!(
            svc(one("-A -f 3 -o"))
                .flags
                .contains(ServiceFlags::ONEPACKET)
        );
        assert!(err("-A -t 10.0.0.1:80 -p -M 255.0.255.0").contains("contiguous"));
        assert!(err("-A -t [::1]:80 -p -M 129").contains("prefix length"));
        assert_eq!(svc(one("-A -t 10.0.0.1:80 -p -M 0.0.0.0")).netmask, 0);
        assert_eq!(svc(one("-A -t [::1]:80 -p -M 96")).netmask, 96);
    }

    #[test]
    fn zero_port_needs_persistence() {
        assert!(err("-A -t 10.0.0.1:0 -s rr").contains("port 0"));
        assert!(err("-A -t 10.0.0.1 -s rr").contains("port 0"));
        assert_eq!(
            svc(one("-A -t 10.0.0.1 -s rr -p 10")).key,
            ServiceKey::Tcp(sa("10.0.0.1:0"))
        );
    }

    #[test]
    fn edit_and_delete_service() {
        let s = svc(one("-E -t 10.0.0.1:80 -p"));
        assert_eq!(s.scheduler.name(), "wlc");
        assert_eq!(
            one("-D -t 10.0.0.1:80"),
            Command::DeleteService(ServiceKey::Tcp(sa("10.0.0.1:80")))
        );
        assert!(err("-D -t 10.0.0.1:80 -s rr").contains("not allowed with -D"));
        assert_eq!(one("-C"), Command::Clear);
        assert!(err("-C -t 10.0.0.1:80").contains("not allowed with -C"));
    }

    #[test]
    fn real_server_defaults_to_direct_routing_on_the_service_port() {
        let (k, d) = dest(one("-a -t 10.0.0.1:80 -r 10.0.1.1:8080"));
        assert_eq!(k, ServiceKey::Tcp(sa("10.0.0.1:80")));
        assert_eq!(d.forward, ForwardMethod::DirectRoute);
        assert_eq!(d.addr, sa("10.0.1.1:80"));
        assert_eq!(d.weight, 1);
        let (_, d) = dest(one("-a -t 10.0.0.1:80 -r 10.0.1.1"));
        assert_eq!(d.addr, sa("10.0.1.1:80"));
    }

    #[test]
    fn every_forwarding_method_and_setting() {
        let (_, d) = dest(one(
            "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 5 -x 100 -y 50",
        ));
        assert_eq!(d.forward, ForwardMethod::Masq);
        assert_eq!(d.addr, sa("10.0.1.1:8080"));
        assert_eq!(
            (d.weight, d.upper_threshold, d.lower_threshold),
            (5, 100, 50)
        );
        let (_, d) = dest(one(
            "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 --masquerading --weight 0",
        ));
        assert_eq!((d.forward, d.weight), (ForwardMethod::Masq, 0));
        let (_, d) = dest(one(
            "-e -t 10.0.0.1:80 -r 10.0.1.1 --gatewaying --u-threshold 3 --l-threshold 1",
        ));
        assert_eq!(d.forward, ForwardMethod::DirectRoute);
        assert_eq!((d.upper_threshold, d.lower_threshold), (3, 1));
        let (_, d) = dest(one("-a -t 10.0.0.1:80 -r 10.0.1.1:99 --ipip"));
        assert_eq!(d.forward, ForwardMethod::Tunnel);
        assert_eq!(d.addr, sa("10.0.1.1:80"));
        assert_eq!(d.tunnel_type, TunnelType::IpIp);
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -m -g").contains("conflicts"));
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -w 2147483648").contains("weight"));
        let (_, d) = dest(one("-a -t 10.0.0.1:80 -r 10.0.1.1 -w 2147483647"));
        assert_eq!(d.weight, i32::MAX as u32);
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -w -1").contains("weight"));
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -x 2147483648").contains("upper threshold"));
        assert!(err("-a -t 10.0.0.1:80").contains("add -r"));
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -s rr").contains("not allowed with -a"));
    }

    #[test]
    fn fwmark_real_servers_keep_their_own_port() {
        let (k, d) = dest(one("-a -f 7 -r 10.0.1.1:80 -g"));
        assert_eq!(
            k,
            ServiceKey::FwMark {
                mark: 7,
                family: Family::Inet
            }
        );
        assert_eq!(d.addr, sa("10.0.1.1:80"));
        let (k, d) = dest(one("-a -f 8 -6 -r [2001:db8::7]:80 -m"));
        assert_eq!(k.family(), Family::Inet6);
        assert_eq!(d.addr, sa("[2001:db8::7]:80"));
    }

    #[test]
    fn families_may_differ_only_for_tunnels() {
        assert!(err("-a -t [2001:db8::1]:80 -r 10.0.0.1 -m").contains("only tunnel"));
        let (_, d) = dest(one("-a -t [2001:db8::1]:80 -r 10.0.0.1 -i"));
        assert_eq!(d.addr, sa("10.0.0.1:80"));
        assert!(err("-a -f 7 -r [2001:db8::1]:80 -m").contains("only tunnel"));
    }

    #[test]
    fn tunnel_options() {
        let (_, d) = dest(one(
            "-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 6080 --tun-remcsum",
        ));
        assert_eq!(d.tunnel_type, TunnelType::Gue);
        assert_eq!(d.tunnel_port, 6080);
        assert_eq!(d.tunnel_checksum, TunnelChecksum::RemoteChecksum);
        let (_, d) = dest(one(
            "-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gre --tun-csum",
        ));
        assert_eq!(
            (d.tunnel_type, d.tunnel_checksum),
            (TunnelType::Gre, TunnelChecksum::Checksum)
        );
        let (_, d) = dest(one(
            "-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 1 --tun-nocsum",
        ));
        assert_eq!(d.tunnel_checksum, TunnelChecksum::NoChecksum);
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -m --tun-type gue").contains("add -i"));
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue").contains("--tun-port"));
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-port 5").contains("ipip"));
        assert!(
            err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gre --tun-port 5").contains("gre")
        );
        assert!(
            err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gre --tun-remcsum")
                .contains("remcsum")
        );
        assert!(err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type vxlan").contains("tunnel type"));
        assert!(
            err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 5 --tun-csum --tun-nocsum")
                .contains("conflicts")
        );
        assert!(
            err("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 0")
                .contains("tunnel port")
        );
    }

    #[test]
    fn delete_real_server_takes_the_service_port_by_default() {
        assert_eq!(
            one("-d -t 10.0.0.1:80 -r 10.0.1.1"),
            Command::DeleteDestination(ServiceKey::Tcp(sa("10.0.0.1:80")), sa("10.0.1.1:80"))
        );
        assert_eq!(
            one("--delete-server -u [::1]:53 --real-server [::2]:5353"),
            Command::DeleteDestination(ServiceKey::Udp(sa("[::1]:53")), sa("[::2]:5353"))
        );
        assert!(err("-d -t 10.0.0.1:80 -r 10.0.1.1 -w 3").contains("not allowed with -d"));
    }

    #[test]
    fn bad_addresses_name_the_fix() {
        assert!(err("-A -t example.com:80").contains("numeric address"));
        assert!(err("-A -t 10.0.0.1:http").contains("port"));
        assert!(err("-A -t 10.0.0.1:65536").contains("port"));
        assert!(err("-A -t [2001:db8::1]80").contains("numeric address"));
        // Like ipvsadm, an unbracketed IPv6 address has no port.
        assert_eq!(
            svc(one("-A -t 2001:db8::1:80 -p")).key,
            ServiceKey::Tcp(sa("[2001:db8::1:80]:0"))
        );
    }

    #[test]
    fn malformed_lines() {
        assert!(err("-A -t 10.0.0.1:80 -s").contains("needs a value"));
        assert!(err("-A -t 10.0.0.1:80 rr").contains("unexpected argument 'rr'"));
        assert!(err("-A -a -t 10.0.0.1:80").contains("two commands"));
        assert!(err("-A -t 10.0.0.1:80 -s rr -s wrr").contains("given twice"));
        assert!(err("-A -t 10.0.0.1:80 --bogus").contains("unknown option"));
        assert!(err("-t 10.0.0.1:80").contains("no command"));
        assert!(err("-A -s rr").contains("no service"));
        assert!(err("-L -n").contains("not allowed in restore input"));
        assert!(err("--set 1 2 3").contains("not allowed in restore input"));
        assert!(err("-A -t 10.0.0.1:80 -n").contains("unknown option"));
        assert!(err("-C -m").contains("not allowed"));
        assert!(err("-A -t 10.0.0.1:80 -o=1").contains("takes no value"));
    }

    #[test]
    fn all_errors_are_reported_with_line_numbers_and_nothing_is_returned() {
        let input = "-A -t 10.0.0.1:80 -s rr\n\n# comment\n-a -t 10.0.0.1:80 -r 10.0.1.1 -w x\n-C\n-A -u 1.2.3.4:53 -s rr -b sh-port\n";
        let errs = parse_restore(input).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), [4, 6]);
        assert!(
            errs[0]
                .to_string()
                .starts_with("line 4: invalid weight 'x'")
        );
    }

    #[test]
    fn good_input_keeps_line_numbers() {
        let input =
            "\n-C\n   \n-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 1\n";
        let lines = parse_restore(input).unwrap();
        assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), [2, 4, 5]);
        assert_eq!(lines[0].command, Command::Clear);
    }
}
