//! Conntrack cleanup over nfnetlink (ctnetlink): delete the UDP/SCTP flows still pointing at a removed backend.
//!
//! A UDP "connection" to a backend that is gone keeps being NATed to it until
//! its conntrack entry times out (DNS failures while CoreDNS rolls, kubernetes
//! #71514). Upstream lists the whole table with the `conntrack` tool; we ask
//! the kernel for a filtered dump (CTA_FILTER, kernel 5.8+) of just the flows
//! whose reply comes from that backend, then delete those by tuple and id in
//! one batch. Every dumped flow is re-checked against the filter here too, so
//! a kernel that ignores CTA_FILTER can never make us delete a stranger's flow
//! (and IPv6 addresses are only checked here: the kernel's IPv6 filter is inverted).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::NlasIterator;

use crate::error::{NetlinkError, errno};
use crate::netlink::{MsgHeader, NLMSG_HDRLEN, NetlinkSocket, Replies, SocketConfig, align};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;

const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;

// Kernel-internal filter bits (net/netfilter/nf_internals.h), stable ABI since 5.8.
const F_IP_SRC: u32 = 1 << 0;
const F_IP_DST: u32 = 1 << 1;
const F_PROTO_NUM: u32 = 1 << 3;
const F_PROTO_SRC_PORT: u32 = 1 << 4;
const F_PROTO_DST_PORT: u32 = 1 << 5;

const NLA_F_NESTED: u16 = 0x8000;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Transport protocols whose flows need cleaning (TCP ones end by themselves).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Errors of conntrack operations, naming the filter or flow concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error(
        "{op}: permission denied: conntrack needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied { op: String },
    #[error("invalid conntrack filter: {0}")]
    InvalidFilter(String),
    #[error(
        "{op}: the kernel does not support filtered conntrack dumps (CTA_FILTER needs Linux 5.8 or later) or nf_conntrack_netlink is missing: load it with `modprobe nf_conntrack_netlink`"
    )]
    Unsupported { op: String },
    #[error("cannot decode {context}: {message}")]
    Decode { context: String, message: String },
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: NetlinkError,
    },
}

impl ConntrackError {
    fn from_netlink(op: impl Into<String>, source: NetlinkError) -> Self {
        let op = op.into();
        match source {
            NetlinkError::Kernel {
                errno: errno::EPERM | errno::EACCES,
                ..
            } => ConntrackError::PermissionDenied { op },
            NetlinkError::Kernel {
                errno: errno::EOPNOTSUPP,
                ..
            } => ConntrackError::Unsupported { op },
            NetlinkError::Decode(message) => ConntrackError::Decode {
                context: format!("reply to {op}"),
                message,
            },
            source => ConntrackError::Netlink { op, source },
        }
    }
}

pub type Result<T, E = ConntrackError> = std::result::Result<T, E>;

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A conntrack entry, as much of it as cleanup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub proto: u8,
    /// Client → service address, as the client sent it.
    pub orig: Tuple,
    /// Backend → client, after IPVS/NAT: `reply.src` is the backend.
    pub reply: Tuple,
    /// The entry's id, so a delete never hits a newer flow with the same tuple.
    pub id: Option<u32>,
    /// The raw CTA_TUPLE_ORIG and CTA_ZONE values, sent back to delete it.
    orig_raw: Vec<u8>,
    zone_raw: Option<Vec<u8>>,
}

/// Which flows to delete: those of `proto` whose reply comes from `backend`
/// (IP, and port if non-zero), optionally only those addressed to `service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFilter {
    pub proto: u8,
    pub backend: SocketAddr,
    pub service: Option<SocketAddr>,
}

impl FlowFilter {
    /// Flows of `proto` answered by `backend` (port 0 matches any port).
    pub fn backend(proto: u8, backend: SocketAddr) -> Self {
        FlowFilter {
            proto,
            backend,
            service: None,
        }
    }

    /// Flows of `proto` sent to `service` and answered by `backend`.
    pub fn service_backend(proto: u8, service: SocketAddr, backend: SocketAddr) -> Self {
        FlowFilter {
            proto,
            backend,
            service: Some(service),
        }
    }

    fn family(&self) -> Result<u8> {
        if let Some(s) = self.service
            && s.is_ipv4() != self.backend.is_ipv4()
        {
            return Err(ConntrackError::InvalidFilter(format!(
                "service {s} and backend {} are of different families",
                self.backend
            )));
        }
        Ok(if self.backend.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        })
    }

    /// The same test the kernel applies, done again on every dumped flow.
    pub fn matches(&self, f: &Flow) -> bool {
        let port_ok = |want: u16, got: u16| want == 0 || want == got;
        f.proto == self.proto
            && f.reply.src.ip() == self.backend.ip()
            && port_ok(self.backend.port(), f.reply.src.port())
            && self
                .service
                .is_none_or(|s| f.orig.dst.ip() == s.ip() && port_ok(s.port(), f.orig.dst.port()))
    }
}

impl std::fmt::Display for FlowFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            IPPROTO_UDP => "UDP".to_string(),
            IPPROTO_SCTP => "SCTP".to_string(),
            IPPROTO_TCP => "TCP".to_string(),
            n => format!("protocol {n}"),
        };
        write!(f, "{p} flows from backend {}", self.backend)?;
        if let Some(s) = self.service {
            write!(f, " for service {s}")?;
        }
        Ok(())
    }
}

/// What a cleanup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Flows the filtered dump returned that matched.
    pub matched: usize,
    pub deleted: usize,
    /// Matched but gone before the delete arrived (expired or deleted by someone else).
    pub already_gone: usize,
}

// ---- message building ----------------------------------------------------

fn begin(buf: &mut Vec<u8>, msg: u16, family: u8) -> usize {
    let start = buf.len();
    buf.resize(start + NLMSG_HDRLEN, 0);
    MsgHeader {
        len: 0,
        msg_type: (NFNL_SUBSYS_CTNETLINK << 8) | msg,
        flags: 0,
        seq: 0,
        pid: 0,
    }
    .emit(&mut buf[start..]);
    // struct nfgenmsg: family, version NFNETLINK_V0, res_id (big endian) 0.
    buf.extend_from_slice(&[family, 0, 0, 0]);
    start
}

fn finish(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    buf.resize(start + align(buf.len() - start), 0);
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
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

/// A filter tuple: only the fields whose flags are set matter to the kernel.
fn tuple_attr(
    buf: &mut Vec<u8>,
    kind: u16,
    proto: u8,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
) {
    let t = nest_begin(buf, kind);
    let ip = nest_begin(buf, CTA_TUPLE_IP);
    for (a, v4, v6) in [
        (src, CTA_IP_V4_SRC, CTA_IP_V6_SRC),
        (dst, CTA_IP_V4_DST, CTA_IP_V6_DST),
    ] {
        match a.map(|a| a.ip()) {
            Some(IpAddr::V4(x)) => attr(buf, v4, &x.octets()),
            Some(IpAddr::V6(x)) => attr(buf, v6, &x.octets()),
            None => {}
        }
    }
    nest_end(buf, ip);
    let p = nest_begin(buf, CTA_TUPLE_PROTO);
    attr(buf, CTA_PROTO_NUM, &[proto]);
    if let Some(a) = src.filter(|a| a.port() != 0) {
        attr(buf, CTA_PROTO_SRC_PORT, &a.port().to_be_bytes());
    }
    if let Some(a) = dst.filter(|a| a.port() != 0) {
        attr(buf, CTA_PROTO_DST_PORT, &a.port().to_be_bytes());
    }
    nest_end(buf, p);
    nest_end(buf, t);
}

/// The filtered dump request for `f`.
fn append_dump_request(buf: &mut Vec<u8>, f: &FlowFilter) -> Result<()> {
    let family = f.family()?;
    let start = begin(buf, IPCTNL_MSG_CT_GET, family);
    // Kernels up to at least 6.1 invert the IPv6 address test of CTA_FILTER
    // (`!ipv6_addr_cmp` drops equal addresses), so for IPv6 the kernel filters
    // by protocol and ports only and the address test is ours (`matches`).
    let ip_flag = |f: u32| if family == AF_INET { f } else { 0 };
    let mut reply_flags = F_PROTO_NUM | ip_flag(F_IP_SRC);
    if f.backend.port() != 0 {
        reply_flags |= F_PROTO_SRC_PORT;
    }
    tuple_attr(buf, CTA_TUPLE_REPLY, f.proto, Some(f.backend), None);
    let mut orig_flags = 0;
    if let Some(s) = f.service {
        orig_flags = F_PROTO_NUM | ip_flag(F_IP_DST);
        if s.port() != 0 {
            orig_flags |= F_PROTO_DST_PORT;
        }
        tuple_attr(buf, CTA_TUPLE_ORIG, f.proto, None, Some(s));
    }
    let n = nest_begin(buf, CTA_FILTER);
    if orig_flags != 0 {
        attr(buf, CTA_FILTER_ORIG_FLAGS, &orig_flags.to_ne_bytes());
    }
    attr(buf, CTA_FILTER_REPLY_FLAGS, &reply_flags.to_ne_bytes());
    nest_end(buf, n);
    finish(buf, start);
    Ok(())
}

/// The delete of one dumped flow: its original tuple, id and zone, verbatim.
fn append_delete(buf: &mut Vec<u8>, flow: &Flow) {
    let family = if flow.orig.src.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    let start = begin(buf, IPCTNL_MSG_CT_DELETE, family);
    attr(buf, CTA_TUPLE_ORIG | NLA_F_NESTED, &flow.orig_raw);
    if let Some(id) = flow.id {
        attr(buf, CTA_ID, &id.to_be_bytes());
    }
    if let Some(z) = &flow.zone_raw {
        attr(buf, CTA_ZONE, z);
    }
    finish(buf, start);
}

// ---- reply parsing ---------------------------------------------------------

fn decode(context: &str, message: impl ToString) -> ConntrackError {
    ConntrackError::Decode {
        context: context.to_string(),
        message: message.to_string(),
    }
}

fn parse_tuple(v: &[u8]) -> Result<(u8, Tuple)> {
    let mut src_ip = None;
    let mut dst_ip = None;
    let mut proto = None;
    let (mut sport, mut dport) = (0u16, 0u16);
    for nla in NlasIterator::new(v) {
        let nla = nla.map_err(|e| decode("conntrack tuple", e))?;
        match nla.kind() {
            CTA_TUPLE_IP => {
                for a in NlasIterator::new(nla.value()) {
                    let a = a.map_err(|e| decode("CTA_TUPLE_IP", e))?;
                    let ip = match a.value().len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(a.value()).unwrap_or_default()),
                        16 => IpAddr::from(<[u8; 16]>::try_from(a.value()).unwrap_or_default()),
                        n => return Err(decode("CTA_TUPLE_IP", format!("address of {n} bytes"))),
                    };
                    match a.kind() {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src_ip = Some(ip),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst_ip = Some(ip),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in NlasIterator::new(nla.value()) {
                    let a = a.map_err(|e| decode("CTA_TUPLE_PROTO", e))?;
                    let be16 = |v: &[u8]| <[u8; 2]>::try_from(v).map(u16::from_be_bytes).ok();
                    match a.kind() {
                        CTA_PROTO_NUM => proto = a.value().first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a.value()).unwrap_or(0),
                        CTA_PROTO_DST_PORT => dport = be16(a.value()).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match (src_ip, dst_ip, proto) {
        (Some(s), Some(d), Some(p)) => Ok((
            p,
            Tuple {
                src: SocketAddr::new(s, sport),
                dst: SocketAddr::new(d, dport),
            },
        )),
        _ => Err(decode("conntrack tuple", "address or protocol missing")),
    }
}

/// Parses one IPCTNL_MSG_CT_NEW payload (nfgenmsg + attributes).
pub fn parse_flow(payload: &[u8]) -> Result<Flow> {
    let attrs = payload
        .get(4..)
        .ok_or_else(|| decode("conntrack entry", "shorter than nfgenmsg"))?;
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut zone_raw = None;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| decode("conntrack entry", e))?;
        match nla.kind() {
            CTA_TUPLE_ORIG => orig = Some((parse_tuple(nla.value())?, nla.value().to_vec())),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(nla.value())?.1),
            CTA_ID => {
                id = <[u8; 4]>::try_from(nla.value())
                    .ok()
                    .map(u32::from_be_bytes)
            }
            CTA_ZONE => zone_raw = Some(nla.value().to_vec()),
            _ => {}
        }
    }
    let ((proto, orig), orig_raw) =
        orig.ok_or_else(|| decode("conntrack entry", "no CTA_TUPLE_ORIG"))?;
    let reply = reply.ok_or_else(|| decode("conntrack entry", "no CTA_TUPLE_REPLY"))?;
    Ok(Flow {
        proto,
        orig,
        reply,
        id,
        orig_raw,
        zone_raw,
    })
}

// ---- client -----------------------------------------------------------------

/// A blocking ctnetlink client keeping one socket.
pub struct ConntrackClient {
    sock: NetlinkSocket,
    buf: Vec<u8>,
    replies: Replies,
    /// Entries the kernel returned in the last dump, before our own re-check.
    last_dump: usize,
}

impl ConntrackClient {
    pub fn new() -> Result<Self> {
        Self::with_config(SocketConfig::default())
    }

    pub fn with_config(config: SocketConfig) -> Result<Self> {
        let sock = NetlinkSocket::with_config(netlink_sys::protocols::NETLINK_NETFILTER, config)
            .map_err(|e| ConntrackError::from_netlink("open nfnetlink socket", e))?;
        Ok(ConntrackClient {
            sock,
            buf: Vec::with_capacity(4096),
            replies: Replies::new(),
            last_dump: 0,
        })
    }

    pub fn netlink_stats(&self) -> crate::netlink::NetlinkStats {
        self.sock.stats()
    }

    /// How many entries the kernel sent in the last dump: equal to the matches
    /// when the kernel filtered (CTA_FILTER), the whole table when it did not.
    pub fn last_dump_entries(&self) -> usize {
        self.last_dump
    }

    /// The flows matching `f`, from one kernel-filtered dump.
    pub fn flows(&mut self, f: &FlowFilter) -> Result<Vec<Flow>> {
        self.buf.clear();
        append_dump_request(&mut self.buf, f)?;
        self.sock
            .dump(&mut self.buf, &mut self.replies)
            .map_err(|e| ConntrackError::from_netlink(format!("list {f}"), e))?;
        let mut out = Vec::new();
        self.last_dump = 0;
        for r in self.replies.iter() {
            if r.msg_type != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
                continue;
            }
            self.last_dump += 1;
            let flow = parse_flow(r.payload)?;
            if f.matches(&flow) {
                out.push(flow);
            }
        }
        Ok(out)
    }

    /// Deletes every flow matching any of `filters`: one filtered dump per
    /// filter, then all deletes in one batch. Results are per filter, in order.
    pub fn clear(&mut self, filters: &[FlowFilter]) -> Vec<Result<Cleared>> {
        let mut results: Vec<Result<Cleared>> = Vec::with_capacity(filters.len());
        let mut flows: Vec<(usize, Flow)> = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            match self.flows(f) {
                Ok(fs) => {
                    results.push(Ok(Cleared {
                        matched: fs.len(),
                        ..Cleared::default()
                    }));
                    flows.extend(fs.into_iter().map(|fl| (i, fl)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if flows.is_empty() {
            return results;
        }
        self.buf.clear();
        for (_, fl) in &flows {
            append_delete(&mut self.buf, fl);
        }
        let acks = match self.sock.batch(&mut self.buf) {
            Ok(a) => a,
            Err(e) => {
                let msg = e.to_string();
                for (i, _) in &flows {
                    results[*i] = Err(ConntrackError::Netlink {
                        op: format!("delete {}", filters[*i]),
                        source: NetlinkError::InvalidRequest(msg.clone()),
                    });
                }
                return results;
            }
        };
        for ((i, fl), ack) in flows.iter().zip(acks) {
            let Ok(c) = &mut results[*i] else { continue };
            match ack {
                Ok(()) => c.deleted += 1,
                Err(e) if e.errno() == Some(errno::ENOENT) => c.already_gone += 1,
                Err(e) => {
                    results[*i] = Err(ConntrackError::from_netlink(
                        format!(
                            "delete flow {} -> {} of {}",
                            fl.orig.src, fl.orig.dst, filters[*i]
                        ),
                        e,
                    ));
                }
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Messages;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Builds a CT_NEW payload the way the kernel does.
    fn entry(proto: u8, orig: (&str, &str), reply: (&str, &str), id: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        let start = begin(&mut buf, IPCTNL_MSG_CT_NEW, AF_INET);
        tuple_attr(
            &mut buf,
            CTA_TUPLE_ORIG,
            proto,
            Some(sa(orig.0)),
            Some(sa(orig.1)),
        );
        tuple_attr(
            &mut buf,
            CTA_TUPLE_REPLY,
            proto,
            Some(sa(reply.0)),
            Some(sa(reply.1)),
        );
        attr(&mut buf, CTA_ID, &id.to_be_bytes());
        finish(&mut buf, start);
        buf[NLMSG_HDRLEN..].to_vec()
    }

    #[test]
    fn flows_parse_and_filters_match_on_the_reply_source() {
        let p = entry(
            IPPROTO_UDP,
            ("10.0.0.1:40000", "10.96.0.10:53"),
            ("10.244.1.5:53", "10.0.0.1:40000"),
            77,
        );
        let f = parse_flow(&p).unwrap();
        assert_eq!(f.proto, IPPROTO_UDP);
        assert_eq!(f.orig.dst, sa("10.96.0.10:53"));
        assert_eq!(f.reply.src, sa("10.244.1.5:53"));
        assert_eq!(f.id, Some(77));

        assert!(FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.5:53")).matches(&f));
        assert!(FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.5:0")).matches(&f));
        assert!(!FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.5:54")).matches(&f));
        assert!(!FlowFilter::backend(IPPROTO_SCTP, sa("10.244.1.5:53")).matches(&f));
        assert!(!FlowFilter::backend(IPPROTO_UDP, sa("10.244.1.6:53")).matches(&f));
        let sb = |s| FlowFilter::service_backend(IPPROTO_UDP, sa(s), sa("10.244.1.5:53"));
        assert!(sb("10.96.0.10:53").matches(&f));
        assert!(!sb("10.96.0.11:53").matches(&f));
        assert!(!sb("10.96.0.10:5353").matches(&f));
    }

    #[test]
    fn dump_request_carries_the_filter() {
        let mut buf = Vec::new();
        let f = FlowFilter::service_backend(IPPROTO_UDP, sa("10.96.0.10:53"), sa("10.244.1.5:53"));
        append_dump_request(&mut buf, &f).unwrap();
        let (h, payload) = Messages::new(&buf).next().unwrap().unwrap();
        assert_eq!(h.msg_type, (1 << 8) | IPCTNL_MSG_CT_GET);
        assert_eq!(payload[0], AF_INET);
        let mut kinds = Vec::new();
        for nla in NlasIterator::new(&payload[4..]) {
            let nla = nla.unwrap();
            kinds.push(nla.kind());
            if nla.kind() == CTA_FILTER {
                let flags: Vec<(u16, u32)> = NlasIterator::new(nla.value())
                    .map(|a| {
                        let a = a.unwrap();
                        (a.kind(), u32::from_ne_bytes(a.value().try_into().unwrap()))
                    })
                    .collect();
                assert_eq!(
                    flags,
                    [
                        (
                            CTA_FILTER_ORIG_FLAGS,
                            F_PROTO_NUM | F_IP_DST | F_PROTO_DST_PORT
                        ),
                        (
                            CTA_FILTER_REPLY_FLAGS,
                            F_PROTO_NUM | F_IP_SRC | F_PROTO_SRC_PORT
                        )
                    ]
                );
            }
        }
        assert_eq!(kinds, [CTA_TUPLE_REPLY, CTA_TUPLE_ORIG, CTA_FILTER]);

        // IPv6: no address flags for the kernel (its IPv6 test is inverted).
        let mut buf = Vec::new();
        let f6 = FlowFilter::backend(IPPROTO_UDP, sa("[fd00:244::5]:53"));
        append_dump_request(&mut buf, &f6).unwrap();
        let (_, payload) = Messages::new(&buf).next().unwrap().unwrap();
        assert_eq!(payload[0], AF_INET6);
        let filter = NlasIterator::new(&payload[4..])
            .map(|a| a.unwrap())
            .find(|a| a.kind() == CTA_FILTER)
            .unwrap();
        let reply = NlasIterator::new(filter.value()).next().unwrap().unwrap();
        assert_eq!(
            reply.value(),
            (F_PROTO_NUM | F_PROTO_SRC_PORT).to_ne_bytes()
        );

        let mixed =
            FlowFilter::service_backend(IPPROTO_UDP, sa("[fd00::10]:53"), sa("10.244.1.5:53"));
        assert!(matches!(
            append_dump_request(&mut Vec::new(), &mixed),
            Err(ConntrackError::InvalidFilter(_))
        ));
    }

    #[test]
    fn delete_echoes_the_tuple_and_id() {
        let p = entry(
            IPPROTO_UDP,
            ("10.0.0.1:40000", "10.96.0.10:53"),
            ("10.244.1.5:53", "10.0.0.1:40000"),
            0x01020304,
        );
        let flow = parse_flow(&p).unwrap();
        let mut buf = Vec::new();
        append_delete(&mut buf, &flow);
        let (h, payload) = Messages::new(&buf).next().unwrap().unwrap();
        assert_eq!(h.msg_type, (1 << 8) | IPCTNL_MSG_CT_DELETE);
        let back = parse_flow(&[payload, &entry_reply_tail(&p)].concat());
        assert!(back.is_ok(), "{back:?}");
        assert_eq!(back.unwrap().orig, flow.orig);
        assert!(
            payload.windows(4).any(|w| w == [1, 2, 3, 4]),
            "CTA_ID big-endian"
        );
    }

    /// The CTA_TUPLE_REPLY attribute of an entry payload, to complete a delete for parsing.
    fn entry_reply_tail(p: &[u8]) -> Vec<u8> {
        for nla in NlasIterator::new(&p[4..]) {
            let nla = nla.unwrap();
            if nla.kind() == CTA_TUPLE_REPLY {
                let mut v = Vec::new();
                attr(&mut v, CTA_TUPLE_REPLY, nla.value());
                return v;
            }
        }
        unreachable!()
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..64 {
            let _ = parse_flow(&vec![0xab; n]);
            let _ = parse_flow(&vec![0x04; n]);
        }
        assert!(parse_flow(&[2, 0, 0, 0]).is_err());
    }
}
