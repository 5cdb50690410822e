//! rtnetlink links and addresses: the `kube-ipvs0` dummy, its service addresses, node addresses.
//!
//! Requests are hand-built (an `ifinfomsg`/`ifaddrmsg` and a few attributes)
//! straight into one buffer and sent through [`NetlinkSocket::batch`], so ten
//! thousand address changes cost a few dozen `sendmsg` calls, with one result
//! per address.

use std::net::IpAddr;

use netlink_packet_core::NlasIterator;

use crate::error::{NetlinkError, errno};
use crate::netlink::{MsgHeader, NLMSG_HDRLEN, NetlinkSocket, Replies, SocketConfig, align};

/// The dummy link that carries service addresses, as upstream names it.
pub const DUMMY_NAME: &str = "kube-ipvs0";

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `ifi_flags` bits.
pub const IFF_UP: u32 = 0x1;
pub const IFF_LOOPBACK: u32 = 0x8;
pub const IFF_NOARP: u32 = 0x80;
/// `IFA_F_NODAD`: no duplicate address detection (a VIP is ours by definition).
pub const IFA_F_NODAD: u32 = 0x02;
/// `RT_SCOPE_HOST`: addresses only valid on this host (those of `lo`).
pub const RT_SCOPE_HOST: u8 = 254;

const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// Errors of link and address operations, naming the link or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "{op}: permission denied: links and addresses need CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied { op: String },
    #[error("link {0} does not exist")]
    NotFound(String),
    #[error(
        "link {name} exists but is {kind}, not a dummy: delete it (ip link del {name}) so kube-ipvs can create its own"
    )]
    NotDummy { name: String, kind: String },
    #[error("{op}: the kernel has no dummy link type: load it with `modprobe dummy`")]
    DummyUnavailable { op: String },
    #[error("invalid interface name {0:?}: use 1 to 15 bytes without '/', ':' or whitespace")]
    InvalidName(String),
    #[error("cannot decode {context}: {message}")]
    Decode { context: String, message: String },
    /// The outcome is unknown (ACK lost or timeout): re-read the addresses.
    #[error("{op}: outcome unknown, re-read the kernel state: {source}")]
    Unconfirmed {
        op: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: NetlinkError,
    },
}

impl LinkError {
    fn from_netlink(op: impl Into<String>, source: NetlinkError) -> Self {
        let op = op.into();
        match source {
            NetlinkError::Kernel {
                errno: errno::EPERM | errno::EACCES,
                ..
            } => LinkError::PermissionDenied { op },
            NetlinkError::Timeout(_) | NetlinkError::Unconfirmed { .. } => {
                LinkError::Unconfirmed { op, source }
            }
            NetlinkError::Decode(message) => LinkError::Decode {
                context: format!("reply to {op}"),
                message,
            },
            source => LinkError::Netlink { op, source },
        }
    }

    /// The kernel errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkError::PermissionDenied { .. } => Some(errno::EPERM),
            LinkError::NotFound(_) => Some(ENODEV),
            LinkError::Unconfirmed { source, .. } | LinkError::Netlink { source, .. } => {
                source.errno()
            }
            _ => None,
        }
    }
}

pub type Result<T, E = LinkError> = std::result::Result<T, E>;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("dummy", "veth", ...); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// `ifi_flags` (IFF_UP, IFF_NOARP, ...).
    pub flags: u32,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }

    pub fn is_noarp(&self) -> bool {
        self.flags & IFF_NOARP != 0
    }
}

/// One address of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `ifa_scope` (0 universe, 253 link, 254 host).
    pub scope: u8,
}

/// What [`RtnlClient::ensure_dummy`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DummyChange {
    /// The link did not exist and was created.
    Created,
    /// It existed but was up or answered ARP; it was set down with NOARP.
    Fixed,
    /// It was already right; nothing was sent.
    Unchanged,
}

/// Outcome of one address add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyPresent,
}

/// Outcome of one address removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    NotPresent,
}

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn valid_link_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// True for addresses NodePort must not listen on: loopback and IPv6 link-local.
pub fn is_excluded_node_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    }
}

// ---- message building ----------------------------------------------------

/// Starts a message at the end of `buf`; returns its offset for [`finish`].
fn begin(buf: &mut Vec<u8>, msg_type: u16, flags: u16) -> usize {
    let start = buf.len();
    buf.resize(start + NLMSG_HDRLEN, 0);
    MsgHeader {
        len: 0,
        msg_type,
        flags,
        seq: 0,
        pid: 0,
    }
    .emit(&mut buf[start..]);
    start
}

/// Writes the final length into the header of the message at `start` and pads it.
fn finish(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    buf.resize(start + align(buf.len() - start), 0);
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = (4 + value.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align(buf.len()), 0);
}

fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let len = (4 + s.len() + 1) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    buf.resize(align(buf.len()), 0);
}

fn nest_begin(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfomsg(buf: &mut Vec<u8>, index: u32, flags: u32, change: u32) {
    buf.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

/// `struct ifaddrmsg`: family, prefixlen, flags, scope, index.
fn ifaddrmsg(buf: &mut Vec<u8>, family: u8, prefix_len: u8, index: u32) {
    buf.extend_from_slice(&[family, prefix_len, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
}

/// Appends one RTM_NEWADDR/RTM_DELADDR for a host-prefix address to `buf`.
fn append_addr_msg(buf: &mut Vec<u8>, msg_type: u16, flags: u16, index: u32, ip: IpAddr) {
    let start = begin(buf, msg_type, flags);
    match ip {
        IpAddr::V4(v4) => {
            ifaddrmsg(buf, AF_INET, 32, index);
            attr(buf, IFA_LOCAL, &v4.octets());
            attr(buf, IFA_ADDRESS, &v4.octets());
        }
        IpAddr::V6(v6) => {
            ifaddrmsg(buf, AF_INET6, 128, index);
            attr(buf, IFA_ADDRESS, &v6.octets());
            if msg_type == RTM_NEWADDR {
                attr(buf, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
            }
        }
    }
    finish(buf, start);
}

// ---- reply parsing ---------------------------------------------------------

fn decode(context: &str, message: impl ToString) -> LinkError {
    LinkError::Decode {
        context: context.to_string(),
        message: message.to_string(),
    }
}

/// Parses an RTM_NEWLINK payload.
pub fn parse_link(payload: &[u8]) -> Result<Link> {
    if payload.len() < 16 {
        return Err(decode(
            "RTM_NEWLINK",
            format!("ifinfomsg needs 16 bytes, got {}", payload.len()),
        ));
    }
    let index = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let flags = u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]);
    let mut name = None;
    let mut kind = None;
    for nla in NlasIterator::new(&payload[16..]) {
        let nla = nla.map_err(|e| decode("RTM_NEWLINK attributes", e))?;
        match nla.kind() {
            IFLA_IFNAME => name = Some(c_string(nla.value())),
            IFLA_LINKINFO => {
                for inner in NlasIterator::new(nla.value()) {
                    let inner = inner.map_err(|e| decode("IFLA_LINKINFO", e))?;
                    if inner.kind() == IFLA_INFO_KIND {
                        kind = Some(c_string(inner.value()));
                    }
                }
            }
            _ => {}
        }
    }
    let name = name.ok_or_else(|| decode("RTM_NEWLINK", "no IFLA_IFNAME"))?;
    Ok(Link {
        index,
        name,
        kind,
        flags,
    })
}

/// Parses an RTM_NEWADDR payload; `None` for families other than IPv4/IPv6.
pub fn parse_address(payload: &[u8]) -> Result<Option<Address>> {
    if payload.len() < 8 {
        return Err(decode(
            "RTM_NEWADDR",
            format!("ifaddrmsg needs 8 bytes, got {}", payload.len()),
        ));
    }
    let family = payload[0];
    let prefix_len = payload[1];
    let scope = payload[3];
    let index = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let mut local = None;
    let mut address = None;
    for nla in NlasIterator::new(&payload[8..]) {
        let nla = nla.map_err(|e| decode("RTM_NEWADDR attributes", e))?;
        let v = nla.value();
        let ip = match (family, v.len()) {
            (AF_INET, 4) => IpAddr::from(<[u8; 4]>::try_from(v).unwrap_or_default()),
            (AF_INET6, 16) => IpAddr::from(<[u8; 16]>::try_from(v).unwrap_or_default()),
            _ => continue,
        };
        match nla.kind() {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
    // point-to-point links, so prefer the former.
    let addr = local
        .or(address)
        .ok_or_else(|| decode("RTM_NEWADDR", "no IFA_LOCAL or IFA_ADDRESS"))?;
    Ok(Some(Address {
        index,
        addr,
        prefix_len,
        scope,
    }))
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

// ---- client -----------------------------------------------------------------

/// A blocking rtnetlink client that keeps one socket and one message buffer.
pub struct RtnlClient {
    sock: NetlinkSocket,
    buf: Vec<u8>,
    replies: Replies,
}

impl RtnlClient {
    pub fn new() -> Result<Self> {
        Self::with_config(SocketConfig::default())
    }

    pub fn with_config(config: SocketConfig) -> Result<Self> {
        let sock = NetlinkSocket::with_config(netlink_sys::protocols::NETLINK_ROUTE, config)
            .map_err(|e| LinkError::from_netlink("open rtnetlink socket", e))?;
        Ok(RtnlClient {
            sock,
            buf: Vec::with_capacity(4096),
            replies: Replies::new(),
        })
    }

    pub fn netlink_stats(&self) -> crate::netlink::NetlinkStats {
        self.sock.stats()
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        if !valid_link_name(name) {
            return Err(LinkError::InvalidName(name.to_string()));
        }
        self.buf.clear();
        let start = begin(&mut self.buf, RTM_GETLINK, 0);
        ifinfomsg(&mut self.buf, 0, 0, 0);
        attr_str(&mut self.buf, IFLA_IFNAME, name);
        finish(&mut self.buf, start);
        match self.sock.request(&mut self.buf, &mut self.replies) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(ENODEV) => return Ok(None),
            Err(e) => return Err(LinkError::from_netlink(format!("get link {name}"), e)),
        }
        for r in self.replies.iter() {
            if r.msg_type == RTM_NEWLINK {
                return parse_link(r.payload).map(Some);
            }
        }
        Ok(None)
    }

    /// Every link, in one dump.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        self.buf.clear();
        let start = begin(&mut self.buf, RTM_GETLINK, 0);
        ifinfomsg(&mut self.buf, 0, 0, 0);
        finish(&mut self.buf, start);
        self.sock
            .dump(&mut self.buf, &mut self.replies)
            .map_err(|e| LinkError::from_netlink("dump links", e))?;
        self.replies
            .iter()
            .filter(|r| r.msg_type == RTM_NEWLINK)
            .map(|r| parse_link(r.payload))
            .collect()
    }

    /// Makes sure the dummy link `name` exists, down and with NOARP, as upstream
    /// keeps `kube-ipvs0`: addresses on it are local (IPVS sees the packets) but
    /// the link never answers ARP nor gets routes through it. A link that is
    /// already right is left alone. A non-dummy link of that name is an error:
    /// it belongs to someone else.
    pub fn ensure_dummy(&mut self, name: &str) -> Result<(Link, DummyChange)> {
        let op = || format!("create dummy link {name}");
        let mut change = DummyChange::Unchanged;
        let link = match self.link(name)? {
            Some(l) => l,
            None => {
                self.buf.clear();
                let start = begin(&mut self.buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
                // The kernel creates dummies down with NOARP set (dummy_setup).
                ifinfomsg(&mut self.buf, 0, 0, 0);
                attr_str(&mut self.buf, IFLA_IFNAME, name);
                let nest = nest_begin(&mut self.buf, IFLA_LINKINFO);
                attr_str(&mut self.buf, IFLA_INFO_KIND, "dummy");
                nest_end(&mut self.buf, nest);
                finish(&mut self.buf, start);
                match self.sock.request(&mut self.buf, &mut self.replies) {
                    Ok(()) => change = DummyChange::Created,
                    // Someone created it meanwhile: check it below like any other.
                    Err(e) if e.errno() == Some(errno::EEXIST) => {}
                    Err(e) if e.errno() == Some(errno::EOPNOTSUPP) => {
                        return Err(LinkError::DummyUnavailable { op: op() });
                    }
                    Err(e) => return Err(LinkError::from_netlink(op(), e)),
                }
                self.link(name)?
                    .ok_or_else(|| LinkError::NotFound(name.to_string()))?
            }
        };
        if link.kind.as_deref() != Some("dummy") {
            return Err(LinkError::NotDummy {
                name: name.to_string(),
                kind: match &link.kind {
                    Some(k) => format!("a {k} link"),
                    None => "a device without a link kind".to_string(),
                },
            });
        }
        if link.is_up() || !link.is_noarp() {
            self.buf.clear();
            let start = begin(&mut self.buf, RTM_NEWLINK, 0);
            ifinfomsg(&mut self.buf, link.index, IFF_NOARP, IFF_UP | IFF_NOARP);
            finish(&mut self.buf, start);
            self.sock
                .request(&mut self.buf, &mut self.replies)
                .map_err(|e| LinkError::from_netlink(format!("set {name} down with NOARP"), e))?;
            if change == DummyChange::Unchanged {
                change = DummyChange::Fixed;
            }
            let link = self
                .link(name)?
                .ok_or_else(|| LinkError::NotFound(name.to_string()))?;
            return Ok((link, change));
        }
        Ok((link, change))
    }

    /// Deletes the link `name`; `false` if it did not exist.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        if !valid_link_name(name) {
            return Err(LinkError::InvalidName(name.to_string()));
        }
        self.buf.clear();
        let start = begin(&mut self.buf, RTM_DELLINK, 0);
        ifinfomsg(&mut self.buf, 0, 0, 0);
        attr_str(&mut self.buf, IFLA_IFNAME, name);
        finish(&mut self.buf, start);
        match self.sock.request(&mut self.buf, &mut self.replies) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(ENODEV) => Ok(false),
            Err(e) => Err(LinkError::from_netlink(format!("delete link {name}"), e)),
        }
    }

    /// Adds each address as a host prefix (/32 or /128) to link `index`, many
    /// per sendmsg. Returns one result per address, in order; an address that
    /// is already there is [`Added::AlreadyPresent`], not an error. Not a
    /// transaction: some may succeed while others fail.
    pub fn add_addresses(&mut self, index: u32, addrs: &[IpAddr]) -> Vec<Result<Added>> {
        self.buf.clear();
        for &ip in addrs {
            append_addr_msg(
                &mut self.buf,
                RTM_NEWADDR,
                NLM_F_CREATE | NLM_F_EXCL,
                index,
                ip,
            );
        }
        match self.sock.batch(&mut self.buf) {
            Ok(results) => results
                .into_iter()
                .zip(addrs)
                .map(|(r, ip)| match r {
                    Ok(()) => Ok(Added::Added),
                    Err(e) if e.errno() == Some(errno::EEXIST) => Ok(Added::AlreadyPresent),
                    Err(e) => Err(addr_error("add", *ip, index, e)),
                })
                .collect(),
            Err(e) => addrs
                .iter()
                .map(|ip| Err(addr_error("add", *ip, index, clone_err(&e))))
                .collect(),
        }
    }

    /// Removes each host-prefix address from link `index`, many per sendmsg;
    /// one result per address, an absent one is [`Removed::NotPresent`].
    pub fn remove_addresses(&mut self, index: u32, addrs: &[IpAddr]) -> Vec<Result<Removed>> {
        self.buf.clear();
        for &ip in addrs {
            append_addr_msg(&mut self.buf, RTM_DELADDR, 0, index, ip);
        }
        match self.sock.batch(&mut self.buf) {
            Ok(results) => results
                .into_iter()
                .zip(addrs)
                .map(|(r, ip)| match r {
                    Ok(()) => Ok(Removed::Removed),
                    Err(e) if e.errno() == Some(EADDRNOTAVAIL) => Ok(Removed::NotPresent),
                    Err(e) => Err(addr_error("remove", *ip, index, e)),
                })
                .collect(),
            Err(e) => addrs
                .iter()
                .map(|ip| Err(addr_error("remove", *ip, index, clone_err(&e))))
                .collect(),
        }
    }

    /// Every IPv4/IPv6 address of every link, in one RTM_GETADDR dump.
    pub fn all_addresses(&mut self) -> Result<Vec<Address>> {
        self.buf.clear();
        let start = begin(&mut self.buf, RTM_GETADDR, 0);
        ifaddrmsg(&mut self.buf, AF_UNSPEC, 0, 0);
        finish(&mut self.buf, start);
        self.sock
            .dump(&mut self.buf, &mut self.replies)
            .map_err(|e| LinkError::from_netlink("dump addresses", e))?;
        let mut out = Vec::with_capacity(self.replies.len());
        for r in self.replies.iter() {
            if r.msg_type == RTM_NEWADDR
                && let Some(a) = parse_address(r.payload)?
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The addresses of link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Address>> {
        // Without strict checking the kernel ignores ifa_index on dumps; filter here.
        let mut all = self.all_addresses()?;
        all.retain(|a| a.index == index);
        Ok(all)
    }

    /// The node's addresses NodePort services listen on: every address except
    /// those on `exclude_link` (normally `kube-ipvs0`), loopback addresses and
    /// IPv6 link-local ones. Like upstream the filter is by address, so a
    /// routable address someone put on `lo` counts. One link lookup, one dump.
    pub fn node_addresses(&mut self, exclude_link: &str) -> Result<Vec<IpAddr>> {
        let excluded = self.link(exclude_link)?.map(|l| l.index);
        let mut out: Vec<IpAddr> = self
            .all_addresses()?
            .into_iter()
            .filter(|a| Some(a.index) != excluded)
            .filter(|a| !is_excluded_node_address(a.addr))
            .map(|a| a.addr)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn addr_error(verb: &str, ip: IpAddr, index: u32, e: NetlinkError) -> LinkError {
    if e.errno() == Some(ENODEV) {
        return LinkError::NotFound(format!("with index {index}"));
    }
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    LinkError::from_netlink(format!("{verb} address {ip}/{prefix} on link {index}"), e)
}

/// A batch-level error copied into each per-address result.
fn clone_err(e: &NetlinkError) -> NetlinkError {
    match e {
        NetlinkError::InvalidRequest(m) => NetlinkError::InvalidRequest(m.clone()),
        other => NetlinkError::Decode(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Messages;

    #[test]
    fn address_messages_are_well_formed_and_round_trip() {
        let mut buf = Vec::new();
        let v4: IpAddr = "10.96.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        append_addr_msg(&mut buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 7, v4);
        append_addr_msg(&mut buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 7, v6);
        append_addr_msg(&mut buf, RTM_DELADDR, 0, 7, v6);
        let msgs: Vec<_> = Messages::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].0.msg_type, RTM_NEWADDR);
        assert_eq!(msgs[0].0.flags, NLM_F_CREATE | NLM_F_EXCL);
        // ifaddrmsg(8) + IFA_LOCAL(8) + IFA_ADDRESS(8)
        assert_eq!(msgs[0].0.len as usize, NLMSG_HDRLEN + 24);
        let a = parse_address(msgs[0].1).unwrap().unwrap();
        assert_eq!((a.addr, a.prefix_len, a.index), (v4, 32, 7));
        let a = parse_address(msgs[1].1).unwrap().unwrap();
        assert_eq!((a.addr, a.prefix_len), (v6, 128));
        // The delete carries no flags attribute.
        assert_eq!(msgs[2].0.len as usize, NLMSG_HDRLEN + 8 + 20);
    }

    #[test]
    fn link_messages_parse() {
        let mut buf = Vec::new();
        let start = begin(&mut buf, RTM_NEWLINK, 0);
        ifinfomsg(&mut buf, 5, IFF_NOARP, 0);
        attr_str(&mut buf, IFLA_IFNAME, DUMMY_NAME);
        let nest = nest_begin(&mut buf, IFLA_LINKINFO);
        attr_str(&mut buf, IFLA_INFO_KIND, "dummy");
        nest_end(&mut buf, nest);
        finish(&mut buf, start);
        let (h, payload) = Messages::new(&buf).next().unwrap().unwrap();
        assert_eq!(h.len as usize, buf.len());
        let l = parse_link(payload).unwrap();
        assert_eq!(l.name, "kube-ipvs0");
        assert_eq!(l.kind.as_deref(), Some("dummy"));
        assert_eq!(l.index, 5);
        assert!(l.is_noarp() && !l.is_up());
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..40 {
            let junk = vec![0xffu8; n];
            let _ = parse_link(&junk);
            let _ = parse_address(&junk);
        }
        assert!(parse_link(&[0; 16]).is_err(), "no name is an error");
        // Unknown family: skipped, not an error.
        assert_eq!(parse_address(&[7, 0, 0, 0, 1, 0, 0, 0]).unwrap(), None);
    }

    #[test]
    fn names_and_node_address_filter() {
        assert!(valid_link_name("kube-ipvs0"));
        for bad in ["", "a/b", "a b", "0123456789abcdef", "a:1", ".."] {
            assert!(!valid_link_name(bad), "{bad}");
        }
        for ip in ["127.0.0.1", "::1", "fe80::1"] {
            assert!(is_excluded_node_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "2001:db8::1", "fd00::1"] {
            assert!(!is_excluded_node_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = LinkError::from_netlink(
            "add address 10.0.0.1/32",
            NetlinkError::Kernel {
                errno: errno::EPERM,
                message: None,
            },
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = LinkError::NotDummy {
            name: "kube-ipvs0".into(),
            kind: "a veth link".into(),
        };
        assert!(e.to_string().contains("ip link del kube-ipvs0"), "{e}");
    }
}
