//! rtnetlink links and addresses: the `kube-ipvs0` dummy, its service addresses, node addresses.
//!
//! Requests are netlink-packet-route's typed messages (`LinkMessage`,
//! `AddressMessage`), serialised back to back into one buffer and sent through
//! [`NetlinkSocket::batch`], so ten thousand address changes cost a few dozen
//! `sendmsg` calls, with one result per address. Replies are decoded with the
//! same crate.

use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, NLM_F_CREATE, NLM_F_EXCL, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeader, AddressMessage,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{NetlinkError, errno};
use crate::netlink::{NetlinkSocket, Replies, SocketConfig, align};

/// The dummy link that carries service addresses, as upstream names it.
pub const DUMMY_NAME: &str = "kube-ipvs0";

/// Reply types this client reads (netlink-packet-route keeps its constants private).
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;

/// `ifi_flags` bits.
pub const IFF_UP: u32 = LinkFlags::Up.bits();
pub const IFF_LOOPBACK: u32 = LinkFlags::Loopback.bits();
pub const IFF_NOARP: u32 = LinkFlags::Noarp.bits();
/// `IFA_F_NODAD`: no duplicate address detection (a VIP is ours by definition).
pub const IFA_F_NODAD: u32 = AddressFlags::Nodad.bits();
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

/// Appends `msg` to `buf` as one complete netlink message, its header's length
/// and type filled in and the whole padded to 4 bytes, as
/// [`NetlinkSocket::batch`] expects. The socket sets the sequence number and
/// the request/ACK/dump flags when it sends; `flags` adds the rest.
fn append(buf: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    msg.finalize();
    let start = buf.len();
    let len = msg.buffer_len();
    buf.resize(start + align(len), 0);
    msg.serialize(&mut buf[start..start + len]);
}

/// A link message addressing the link `name` (by `IFLA_IFNAME`).
fn link_by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg
}

/// RTM_NEWLINK creating the dummy link `name`. The kernel creates dummies
/// down with NOARP set (`dummy_setup`).
fn new_dummy(name: &str) -> RouteNetlinkMessage {
    let mut msg = link_by_name(name);
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Dummy,
        )]));
    RouteNetlinkMessage::NewLink(msg)
}

/// RTM_NEWLINK setting link `index` down with NOARP, leaving its other flags alone.
fn set_down_noarp(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Noarp;
    msg.header.change_mask = LinkFlags::Up | LinkFlags::Noarp;
    RouteNetlinkMessage::NewLink(msg)
}

/// An address message for `ip` as a host prefix (/32 or /128) on link `index`.
/// IPv4 carries `IFA_LOCAL` and `IFA_ADDRESS`, as `ip addr add` sends them.
fn host_address(index: u32, ip: IpAddr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    match ip {
        IpAddr::V4(_) => {
            msg.header.family = AddressFamily::Inet;
            msg.header.prefix_len = 32;
            msg.attributes.push(AddressAttribute::Local(ip));
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.header.prefix_len = 128;
        }
    }
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

/// RTM_NEWADDR for a host-prefix address; IPv6 ones skip duplicate address
/// detection (a VIP is ours by definition, and DAD would leave it tentative).
fn new_address(index: u32, ip: IpAddr) -> RouteNetlinkMessage {
    let mut msg = host_address(index, ip);
    if ip.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(msg)
}

/// RTM_DELADDR for a host-prefix address.
fn del_address(index: u32, ip: IpAddr) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelAddress(host_address(index, ip))
}

// ---- reply parsing ---------------------------------------------------------

fn decode(context: &str, message: impl ToString) -> LinkError {
    LinkError::Decode {
        context: context.to_string(),
        message: message.to_string(),
    }
}

/// Parses an RTM_NEWLINK payload.
///
/// The attribute stream must be well formed, but each attribute is decoded on
/// its own and only the name and link kind are read: unknown attributes come
/// back as netlink-packet-route's `Other` variants, and one this crate version
/// cannot decode (a newer kernel's layout of statistics, say) is skipped rather
/// than failing the whole link.
pub fn parse_link(payload: &[u8]) -> Result<Link> {
    let header = LinkHeader::parse(payload).map_err(|e| decode("RTM_NEWLINK header", e))?;
    let mut name = None;
    let mut kind = None;
    for nla in NlasIterator::new(&payload[header.buffer_len()..]) {
        let nla = nla.map_err(|e| decode("RTM_NEWLINK attributes", e))?;
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::IfName(n)) => name = Some(n),
            Ok(LinkAttribute::LinkInfo(infos)) => {
                kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::trace!(
                kind = nla.kind(),
                "skipping undecodable link attribute: {e}"
            ),
        }
    }
    let name = name.ok_or_else(|| decode("RTM_NEWLINK", "no IFLA_IFNAME"))?;
    Ok(Link {
        index: header.index,
        name,
        kind,
        flags: header.flags.bits(),
    })
}

/// Parses an RTM_NEWADDR payload; `None` for families other than IPv4/IPv6
/// (whose attributes are not looked at: MCTP's `IFA_LOCAL` is one byte long).
/// As in [`parse_link`], attributes other than the addresses are not needed
/// and one that does not decode is skipped.
pub fn parse_address(payload: &[u8]) -> Result<Option<Address>> {
    let header = AddressHeader::parse(payload).map_err(|e| decode("RTM_NEWADDR header", e))?;
    let v4 = match header.family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return Ok(None),
    };
    let mut local = None;
    let mut address = None;
    for nla in NlasIterator::new(&payload[header.buffer_len()..]) {
        let nla = nla.map_err(|e| decode("RTM_NEWADDR attributes", e))?;
        match AddressAttribute::parse(&nla) {
            Ok(AddressAttribute::Local(ip)) if ip.is_ipv4() == v4 => local = Some(ip),
            Ok(AddressAttribute::Address(ip)) if ip.is_ipv4() == v4 => address = Some(ip),
            Ok(_) => {}
            Err(e) => tracing::trace!(
                kind = nla.kind(),
                "skipping undecodable address attribute: {e}"
            ),
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
    // point-to-point links, so prefer the former.
    let addr = local
        .or(address)
        .ok_or_else(|| decode("RTM_NEWADDR", "no IFA_LOCAL or IFA_ADDRESS"))?;
    Ok(Some(Address {
        index: header.index,
        addr,
        prefix_len: header.prefix_len,
        scope: header.scope.into(),
    }))
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
        append(
            &mut self.buf,
            RouteNetlinkMessage::GetLink(link_by_name(name)),
            0,
        );
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
        append(
            &mut self.buf,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            0,
        );
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
                append(&mut self.buf, new_dummy(name), NLM_F_CREATE | NLM_F_EXCL);
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
            append(&mut self.buf, set_down_noarp(link.index), 0);
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
        append(
            &mut self.buf,
            RouteNetlinkMessage::DelLink(link_by_name(name)),
            0,
        );
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
            append(
                &mut self.buf,
                new_address(index, ip),
                NLM_F_CREATE | NLM_F_EXCL,
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
            append(&mut self.buf, del_address(index, ip), 0);
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
        append(
            &mut self.buf,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            0,
        );
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
    use crate::netlink::{Messages, NLMSG_HDRLEN};

    const RTM_DELADDR: u16 = 21;

    #[test]
    fn address_messages_are_well_formed_and_round_trip() {
        let mut buf = Vec::new();
        let v4: IpAddr = "10.96.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        append(&mut buf, new_address(7, v4), NLM_F_CREATE | NLM_F_EXCL);
        append(&mut buf, new_address(7, v6), NLM_F_CREATE | NLM_F_EXCL);
        append(&mut buf, del_address(7, v6), 0);
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
        assert_eq!(msgs[2].0.msg_type, RTM_DELADDR);
        // IPv4 gets no flags; the IPv6 add asks for no DAD.
        let flags = |payload| {
            AddressMessage::parse(payload)
                .unwrap()
                .attributes
                .into_iter()
                .find_map(|a| match a {
                    AddressAttribute::Flags(f) => Some(f.bits()),
                    _ => None,
                })
        };
        assert_eq!(flags(msgs[0].1), None);
        assert_eq!(flags(msgs[1].1), Some(IFA_F_NODAD));
        assert_eq!(flags(msgs[2].1), None);
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn link_requests_have_the_kernel_layout() {
        let mut buf = Vec::new();
        append(&mut buf, set_down_noarp(9), 0);
        let (h, payload) = Messages::new(&buf).next().unwrap().unwrap();
        assert_eq!(
            (h.msg_type, h.flags, h.len as usize),
            (RTM_NEWLINK, 0, buf.len())
        );
        let mut ifinfomsg = vec![0u8; 4];
        for v in [9, IFF_NOARP, IFF_UP | IFF_NOARP] {
            ifinfomsg.extend_from_slice(&u32::to_ne_bytes(v));
        }
        assert_eq!(payload, &ifinfomsg[..]);

        // The name is NUL-terminated and the message padded: 15 + 1 bytes of IFLA_IFNAME.
        buf.clear();
        append(&mut buf, new_dummy(DUMMY_NAME), NLM_F_CREATE | NLM_F_EXCL);
        append(&mut buf, RouteNetlinkMessage::DelLink(link_by_name("a")), 0);
        let msgs: Vec<_> = Messages::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(&msgs[0].1[16..20], &[15, 0, 3, 0]);
        assert_eq!(&msgs[0].1[20..31], b"kube-ipvs0\0");
        assert_eq!(msgs[1].0.msg_type, 17);
        assert_eq!(&msgs[1].1[16..], &[6, 0, 3, 0, b'a', 0, 0, 0]);
        assert_eq!(buf.len() % 4, 0);
    }

    /// Appends one attribute the way the kernel lays it out.
    fn raw_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
        buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(align(buf.len()), 0);
    }

    #[test]
    fn unknown_and_undecodable_attributes_are_skipped() {
        // ifinfomsg of an up loopback, then: an attribute type no crate knows,
        // IFLA_MTU with a short value, IFLA_IFNAME, IFLA_LINKINFO{IFLA_INFO_KIND}.
        let mut link = vec![0, 0, 4, 3];
        for v in [1, IFF_UP | IFF_LOOPBACK, 0] {
            link.extend_from_slice(&u32::to_ne_bytes(v));
        }
        raw_attr(&mut link, 0x7ff0, &[1, 2, 3]);
        raw_attr(&mut link, 4, &[0, 1]);
        raw_attr(&mut link, 3, b"lo\0");
        let mut info = Vec::new();
        raw_attr(&mut info, 1, b"newkind\0");
        raw_attr(&mut link, 18, &info);
        let l = parse_link(&link).unwrap();
        assert_eq!((l.index, l.name.as_str()), (1, "lo"));
        assert_eq!(l.kind.as_deref(), Some("newkind"));
        assert!(l.is_up() && !l.is_noarp());

        // ifaddrmsg AF_INET /8 host scope on link 1, then an unknown attribute,
        // a short IFA_CACHEINFO, IFA_ADDRESS and IFA_LOCAL.
        let mut addr = vec![2, 8, 0x80, RT_SCOPE_HOST];
        addr.extend_from_slice(&1u32.to_ne_bytes());
        raw_attr(&mut addr, 0x7ff0, &[9; 5]);
        raw_attr(&mut addr, 6, &[0; 3]);
        raw_attr(&mut addr, 1, &[127, 0, 0, 2]);
        raw_attr(&mut addr, 2, &[127, 0, 0, 1]);
        let a = parse_address(&addr).unwrap().unwrap();
        assert_eq!(a.addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((a.index, a.prefix_len, a.scope), (1, 8, RT_SCOPE_HOST));

        // A broken attribute stream is still an error.
        link.extend_from_slice(&[200, 0, 3, 0]);
        assert!(parse_link(&link).is_err());
    }

    #[test]
    fn link_messages_parse() {
        let mut buf = Vec::new();
        let RouteNetlinkMessage::NewLink(mut msg) = new_dummy(DUMMY_NAME) else {
            unreachable!()
        };
        msg.header.index = 5;
        msg.header.flags = LinkFlags::Noarp;
        append(&mut buf, RouteNetlinkMessage::NewLink(msg), 0);
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
