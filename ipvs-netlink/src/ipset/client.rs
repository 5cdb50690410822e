//! A blocking ipset client on one nfnetlink socket: many entries per message, many messages per `sendmsg`.

use std::collections::HashMap;
use std::fmt;

use netlink_packet_core::Emitable;

use super::error::{Context, IpsetError, OpKind, map_error};
use super::message::*;
use super::nla::{AdtAttr, CmdAttr};
use super::types::*;
use crate::error::NetlinkError;
use crate::netlink::{NetlinkSocket, NetlinkStats, Replies, SocketConfig};

pub type Result<T, E = IpsetError> = std::result::Result<T, E>;

/// `NLM_F_EXCL`: without it the kernel sets IPSET_FLAG_EXIST (`flag_exist()` in ip_set_core.c).
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

/// Bytes of entry attributes per ADT nest: a netlink attribute's length is a
/// u16, so one nest holds under 64 KiB; 48 KiB leaves headroom.
pub const MAX_ADT_BYTES: usize = 48 << 10;

/// One change to the kernel's sets; [`IpsetClient::apply`] sends many per `sendmsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `exist`: succeed if an identical set already exists.
    Create {
        name: String,
        spec: SetSpec,
        exist: bool,
    },
    Destroy(String),
    Flush(String),
    Rename {
        from: String,
        to: String,
    },
    Swap(String, String),
    /// `exist`: entries already present are not an error.
    Add {
        set: String,
        members: Vec<Member>,
        exist: bool,
    },
    /// `exist`: entries already absent are not an error.
    Del {
        set: String,
        entries: Vec<Entry>,
        exist: bool,
    },
}

impl Operation {
    pub fn set(&self) -> &str {
        match self {
            Operation::Create { name, .. } => name,
            Operation::Destroy(s) | Operation::Flush(s) | Operation::Swap(s, _) => s,
            Operation::Rename { from, .. } => from,
            Operation::Add { set, .. } | Operation::Del { set, .. } => set,
        }
    }

    fn kind(&self) -> OpKind {
        match self {
            Operation::Create { .. } => OpKind::Create,
            Operation::Destroy(_) => OpKind::Destroy,
            Operation::Flush(_) => OpKind::Flush,
            Operation::Rename { .. } => OpKind::Rename,
            Operation::Swap(..) => OpKind::Swap,
            Operation::Add { .. } => OpKind::Add,
            Operation::Del { .. } => OpKind::Del,
        }
    }

    fn other(&self) -> Option<&str> {
        match self {
            Operation::Rename { to, .. } => Some(to),
            Operation::Swap(_, b) => Some(b),
            _ => None,
        }
    }

    fn set_type(&self) -> Option<SetType> {
        match self {
            Operation::Create { spec, .. } => Some(spec.set_type),
            Operation::Add { members, .. } => members.first().map(|m| m.entry.set_type()),
            Operation::Del { entries, .. } => entries.first().map(Entry::set_type),
            _ => None,
        }
    }

    fn context(&self, op: String) -> Context {
        Context {
            op,
            set: self.set().to_owned(),
            set_type: self.set_type(),
            kind: self.kind(),
        }
    }

    /// Checks what the kernel would refuse with a less helpful code.
    fn validate(&self) -> Result<()> {
        let name = |n: &str| {
            if n.is_empty() || n.len() >= IPSET_MAXNAMELEN || n.contains('\0') {
                Err(IpsetError::InvalidArgument(format!(
                    "set name {n:?} must have 1 to {} bytes and no NUL",
                    IPSET_MAXNAMELEN - 1
                )))
            } else {
                Ok(())
            }
        };
        name(self.set())?;
        if let Some(o) = self.other() {
            name(o)?;
        }
        match self {
            Operation::Create { spec, name: n, .. } => {
                if spec.set_type == SetType::BitmapPort && spec.port_range.is_none() {
                    return Err(IpsetError::InvalidArgument(format!(
                        "create set {n}: bitmap:port needs a port range"
                    )));
                }
                if let Some((a, b)) = spec.port_range
                    && a > b
                {
                    return Err(IpsetError::InvalidArgument(format!(
                        "create set {n}: port range {a}-{b} is reversed"
                    )));
                }
            }
            Operation::Add { set, members, .. } => {
                mixed(set, members.iter().map(|m| &m.entry))?;
                for m in members {
                    if let Some(c) = &m.comment
                        && (c.len() > IPSET_MAX_COMMENT_SIZE || c.contains('\0'))
                    {
                        return Err(IpsetError::InvalidArgument(format!(
                            "add to set {set}: comment of {} bytes (at most {IPSET_MAX_COMMENT_SIZE}, no NUL)",
                            c.len()
                        )));
                    }
                }
            }
            Operation::Del { set, entries, .. } => mixed(set, entries.iter())?,
            _ => {}
        }
        Ok(())
    }
}

/// One set holds one kind and family of entry; the kernel would answer a
/// mixed batch with a bare IPSET_ERR_PROTOCOL midway.
fn mixed<'a>(set: &str, mut entries: impl Iterator<Item = &'a Entry>) -> Result<()> {
    let Some(first) = entries.next() else {
        return Ok(());
    };
    let key = |e: &Entry| (e.set_type(), e.family());
    let want = key(first);
    match entries.find(|e| key(e) != want) {
        Some(e) => Err(IpsetError::InvalidArgument(format!(
            "set {set}: entries mix kinds or families ({first:?} and {e:?})"
        ))),
        None => Ok(()),
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Create { name, spec, .. } => {
                write!(f, "create set {name} of type {}", spec.set_type)
            }
            Operation::Destroy(s) => write!(f, "destroy set {s}"),
            Operation::Flush(s) => write!(f, "flush set {s}"),
            Operation::Rename { from, to } => write!(f, "rename set {from} to {to}"),
            Operation::Swap(a, b) => write!(f, "swap sets {a} and {b}"),
            Operation::Add { set, members, .. } => {
                write!(f, "add {} entries to set {set}", members.len())
            }
            Operation::Del { set, entries, .. } => {
                write!(f, "delete {} entries from set {set}", entries.len())
            }
        }
    }
}

/// A blocking client of the kernel's ipset over one nfnetlink socket.
pub struct IpsetClient {
    sock: NetlinkSocket,
    buf: Vec<u8>,
    replies: Replies,
    protocol: u8,
    /// (min, max) revision per (type, NFPROTO family), from the TYPE command.
    revisions: HashMap<(SetType, u8), (u8, u8)>,
}

impl IpsetClient {
    /// Opens a socket and negotiates the protocol with the kernel.
    pub fn new() -> Result<Self> {
        Self::with_config(SocketConfig::default())
    }

    pub fn with_config(config: SocketConfig) -> Result<Self> {
        let sock = NetlinkSocket::with_config(NETLINK_NETFILTER, config).map_err(|e| match e {
            // No nfnetlink at all: EPROTONOSUPPORT from socket().
            NetlinkError::Io { .. } => IpsetError::Unavailable,
            source => IpsetError::Netlink {
                op: "open nfnetlink socket".into(),
                source,
            },
        })?;
        let mut c = IpsetClient {
            sock,
            buf: Vec::with_capacity(64 << 10),
            replies: Replies::new(),
            protocol: IPSET_PROTOCOL,
            revisions: HashMap::new(),
        };
        c.negotiate()?;
        Ok(c)
    }

    /// The protocol version in use (7, or 6 with an older kernel).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    pub fn netlink_stats(&self) -> NetlinkStats {
        self.sock.stats()
    }

    fn ctx(op: &str, set: &str, kind: OpKind, set_type: Option<SetType>) -> Context {
        Context {
            op: op.to_owned(),
            set: set.to_owned(),
            set_type,
            kind,
        }
    }

    /// Sends one request; returns its parsed replies.
    fn request(
        &mut self,
        ctx: &Context,
        msg: IpsetMessage,
        flags: u16,
        revision: Option<u8>,
    ) -> Result<Vec<IpsetMessage>> {
        self.buf.clear();
        msg.append(flags, &mut self.buf);
        self.sock
            .request(&mut self.buf, &mut self.replies)
            .map_err(|e| map_error(ctx, None, revision, e))?;
        self.parse_replies(&ctx.op)
    }

    fn parse_replies(&self, op: &str) -> Result<Vec<IpsetMessage>> {
        self.replies
            .iter()
            .enumerate()
            .map(|(i, r)| {
                IpsetMessage::parse(r.msg_type, r.payload).map_err(|e| IpsetError::Decode {
                    context: format!("reply {i} to {op}"),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// IPSET_CMD_PROTOCOL: the kernel answers its protocol and, since protocol 7,
    /// the oldest it still accepts (PROTOCOL_MIN). We speak 7 and can fall back to 6.
    fn negotiate(&mut self) -> Result<()> {
        let ctx = Self::ctx("negotiate ipset protocol", "", OpKind::Protocol, None);
        let msg = IpsetMessage::new(IpsetCmd::Protocol, vec![CmdAttr::Protocol(IPSET_PROTOCOL)]);
        let replies = self.request(&ctx, msg, 0, None)?;
        let mut kernel = None;
        let mut kernel_min = None;
        for a in replies.iter().flat_map(|m| &m.attrs) {
            match a {
                CmdAttr::Protocol(p) => kernel = Some(*p),
                CmdAttr::ProtocolMin(p) => kernel_min = Some(*p),
                _ => {}
            }
        }
        let kernel = kernel.ok_or_else(|| IpsetError::Decode {
            context: "reply to the PROTOCOL command".into(),
            message: "no PROTOCOL attribute".into(),
        })?;
        let kernel_min = kernel_min.unwrap_or(kernel);
        if kernel < IPSET_PROTOCOL_MIN || kernel_min > IPSET_PROTOCOL {
            return Err(IpsetError::ProtocolMismatch {
                op: ctx.op,
                kernel,
                kernel_min,
                ours: IPSET_PROTOCOL,
                ours_min: IPSET_PROTOCOL_MIN,
            });
        }
        self.protocol = kernel.min(IPSET_PROTOCOL);
        Ok(())
    }

    /// The (oldest, newest) revision of `set_type` the kernel supports for
    /// `family` (TYPE command; cached per type and family).
    pub fn type_revisions(&mut self, set_type: SetType, family: Family) -> Result<(u8, u8)> {
        let nfproto = if set_type.is_hash() {
            family.nfproto()
        } else {
            NFPROTO_UNSPEC
        };
        if let Some(r) = self.revisions.get(&(set_type, nfproto)) {
            return Ok(*r);
        }
        let op = format!("look up set type {set_type}");
        let ctx = Self::ctx(&op, "", OpKind::Type, Some(set_type));
        let msg = IpsetMessage::new(
            IpsetCmd::Type,
            vec![
                CmdAttr::Protocol(self.protocol),
                CmdAttr::TypeName(set_type.name().into()),
                CmdAttr::Family(nfproto),
            ],
        );
        let replies = self.request(&ctx, msg, 0, None)?;
        let (mut max, mut min) = (None, None);
        for a in replies.iter().flat_map(|m| &m.attrs) {
            match a {
                CmdAttr::Revision(r) => max = Some(*r),
                CmdAttr::ProtocolMin(r) => min = Some(*r),
                _ => {}
            }
        }
        let max = max.ok_or_else(|| IpsetError::Decode {
            context: format!("reply to {op}"),
            message: "no REVISION attribute".into(),
        })?;
        let r = (min.unwrap_or(max), max);
        self.revisions.insert((set_type, nfproto), r);
        Ok(r)
    }

    fn apply_one(&mut self, op: Operation) -> Result<()> {
        self.apply(std::slice::from_ref(&op))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Creates a set; the revision is the kernel's newest unless `spec.revision` says otherwise.
    pub fn create(&mut self, name: &str, spec: &SetSpec, exist: bool) -> Result<()> {
        self.apply_one(Operation::Create {
            name: name.into(),
            spec: spec.clone(),
            exist,
        })
    }

    pub fn destroy(&mut self, name: &str) -> Result<()> {
        self.apply_one(Operation::Destroy(name.into()))
    }

    pub fn flush(&mut self, name: &str) -> Result<()> {
        self.apply_one(Operation::Flush(name.into()))
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.apply_one(Operation::Rename {
            from: from.into(),
            to: to.into(),
        })
    }

    pub fn swap(&mut self, a: &str, b: &str) -> Result<()> {
        self.apply_one(Operation::Swap(a.into(), b.into()))
    }

    pub fn add(&mut self, set: &str, members: &[Member], exist: bool) -> Result<()> {
        self.apply_one(Operation::Add {
            set: set.into(),
            members: members.to_vec(),
            exist,
        })
    }

    pub fn del(&mut self, set: &str, entries: &[Entry], exist: bool) -> Result<()> {
        self.apply_one(Operation::Del {
            set: set.into(),
            entries: entries.to_vec(),
            exist,
        })
    }

    /// Whether `entry` is in `set` (the kernel answers IPSET_ERR_EXIST for "no").
    pub fn test(&mut self, set: &str, entry: &Entry) -> Result<bool> {
        let op = format!("test set {set}");
        let ctx = Self::ctx(&op, set, OpKind::Test, Some(entry.set_type()));
        let msg = IpsetMessage::new(
            IpsetCmd::Test,
            vec![
                CmdAttr::Protocol(self.protocol),
                CmdAttr::SetName(set.into()),
                CmdAttr::AdtData(entry.attrs()),
            ],
        );
        match self.request(&ctx, msg, 0, None) {
            Ok(_) => Ok(true),
            Err(IpsetError::EntryMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every set with its members (`ipset list`), or only `name`.
    pub fn list(&mut self, name: Option<&str>) -> Result<Vec<IpSet>> {
        self.dump_sets(name, 0)
    }

    /// Headers only (`ipset list -t`).
    pub fn headers(&mut self, name: Option<&str>) -> Result<Vec<IpSet>> {
        self.dump_sets(name, IPSET_FLAG_LIST_HEADER)
    }

    /// Set names only (`ipset list -n`).
    pub fn names(&mut self) -> Result<Vec<String>> {
        Ok(self
            .dump_sets(None, IPSET_FLAG_LIST_SETNAME)?
            .into_iter()
            .map(|s| s.header.name)
            .collect())
    }

    /// The raw LIST dump: one message per kernel skb part.
    pub fn list_messages(&mut self, name: Option<&str>, flags: u32) -> Result<Vec<IpsetMessage>> {
        let op = match name {
            Some(n) => format!("list set {n}"),
            None => "list sets".to_owned(),
        };
        let ctx = Self::ctx(&op, name.unwrap_or_default(), OpKind::List, None);
        let mut attrs = vec![CmdAttr::Protocol(self.protocol)];
        if let Some(n) = name {
            attrs.push(CmdAttr::SetName(n.into()));
        }
        if flags != 0 {
            attrs.push(CmdAttr::Flags(flags));
        }
        self.buf.clear();
        IpsetMessage::new(IpsetCmd::List, attrs).append(0, &mut self.buf);
        self.sock
            .dump(&mut self.buf, &mut self.replies)
            .map_err(|e| map_error(&ctx, None, None, e))?;
        self.parse_replies(&op)
    }

    fn dump_sets(&mut self, name: Option<&str>, flags: u32) -> Result<Vec<IpSet>> {
        let msgs = self.list_messages(name, flags)?;
        Ok(sets_from_messages(&msgs))
    }

    /// Applies many operations and returns one result per operation, in order.
    ///
    /// Entries travel many per message (an ADT nest of up to [`MAX_ADT_BYTES`])
    /// and messages many per `sendmsg`. Not a transaction: the kernel handles
    /// messages one by one and goes on after a failure; inside one ADT nest it
    /// stops at the first failing entry, keeping those before it. An
    /// [`IpsetError::Unconfirmed`] result means the ACK was lost: re-read state.
    pub fn apply(&mut self, ops: &[Operation]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = ops.iter().map(|_| None).collect();
        // (operation index, context, revision) for each message in the buffer.
        let mut sent: Vec<(usize, Context, Option<u8>)> = Vec::new();
        self.buf.clear();
        let mut buf = std::mem::take(&mut self.buf);
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = op.validate() {
                results[i] = Some(Err(e));
                continue;
            }
            match self.append_op(op, &mut buf) {
                Ok(msgs) => sent.extend(msgs.into_iter().map(|(c, r)| (i, c, r))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let acks = self.sock.batch(&mut buf);
        self.buf = buf;
        match acks {
            Ok(acks) => {
                for ((i, ctx, rev), ack) in sent.into_iter().zip(acks) {
                    if let Err(e) = ack
                        && !matches!(results[i], Some(Err(_)))
                    {
                        results[i] = Some(Err(map_error(&ctx, ops[i].other(), rev, e)));
                    }
                }
            }
            // Only if we built a malformed message: nothing was sent.
            Err(e) => {
                let text = e.to_string();
                for (i, ctx, _) in sent {
                    results[i] = Some(Err(IpsetError::Netlink {
                        op: ctx.op,
                        source: NetlinkError::InvalidRequest(text.clone()),
                    }));
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// Appends the messages of `op`; returns each message's context and revision.
    fn append_op(
        &mut self,
        op: &Operation,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<(Context, Option<u8>)>> {
        let p = CmdAttr::Protocol(self.protocol);
        let excl = |exist: bool| if exist { 0 } else { NLM_F_EXCL };
        let whole = |op: &Operation| vec![(op.context(op.to_string()), None)];
        match op {
            Operation::Create { name, spec, exist } => {
                let revision = match spec.revision {
                    Some(r) => r,
                    None => self.type_revisions(spec.set_type, spec.family)?.1,
                };
                let msg = IpsetMessage::new(
                    IpsetCmd::Create,
                    vec![
                        p,
                        CmdAttr::SetName(name.clone()),
                        CmdAttr::TypeName(spec.set_type.name().into()),
                        CmdAttr::Revision(revision),
                        CmdAttr::Family(spec.nfproto()),
                        CmdAttr::CreateData(spec.data_attrs()),
                    ],
                );
                msg.append(NLM_F_CREATE | excl(*exist), buf);
                Ok(vec![(op.context(op.to_string()), Some(revision))])
            }
            Operation::Destroy(s) | Operation::Flush(s) => {
                let cmd = if matches!(op, Operation::Destroy(_)) {
                    IpsetCmd::Destroy
                } else {
                    IpsetCmd::Flush
                };
                // Without NLM_F_EXCL the kernel destroys a missing set "successfully"
                // (flag_exist); like the ipset tool, we want to hear about it.
                let flags = if cmd == IpsetCmd::Destroy {
                    NLM_F_EXCL
                } else {
                    0
                };
                IpsetMessage::new(cmd, vec![p, CmdAttr::SetName(s.clone())]).append(flags, buf);
                Ok(whole(op))
            }
            Operation::Rename { from: a, to: b } | Operation::Swap(a, b) => {
                let cmd = if matches!(op, Operation::Swap(..)) {
                    IpsetCmd::Swap
                } else {
                    IpsetCmd::Rename
                };
                IpsetMessage::new(
                    cmd,
                    vec![p, CmdAttr::SetName(a.clone()), CmdAttr::TypeName(b.clone())],
                )
                .append(0, buf);
                Ok(whole(op))
            }
            Operation::Add {
                set,
                members,
                exist,
            } => {
                let entries: Vec<Vec<AdtAttr>> = members.iter().map(Member::attrs).collect();
                Ok(self.append_entries(op, IpsetCmd::Add, set, entries, excl(*exist), buf))
            }
            Operation::Del {
                set,
                entries,
                exist,
            } => {
                let entries: Vec<Vec<AdtAttr>> = entries.iter().map(Entry::attrs).collect();
                Ok(self.append_entries(op, IpsetCmd::Del, set, entries, excl(*exist), buf))
            }
        }
    }

    /// Packs entries into ADT nests of at most [`MAX_ADT_BYTES`] each.
    fn append_entries(
        &self,
        op: &Operation,
        cmd: IpsetCmd,
        set: &str,
        entries: Vec<Vec<AdtAttr>>,
        flags: u16,
        buf: &mut Vec<u8>,
    ) -> Vec<(Context, Option<u8>)> {
        let total = entries.len();
        let verb = if cmd == IpsetCmd::Add {
            "add"
        } else {
            "delete"
        };
        let prep = if cmd == IpsetCmd::Add { "to" } else { "from" };
        let mut out = Vec::new();
        let mut chunk: Vec<Vec<AdtAttr>> = Vec::new();
        let mut bytes = 0;
        let mut first = 0;
        let mut flush = |chunk: &mut Vec<Vec<AdtAttr>>, first: usize, buf: &mut Vec<u8>| {
            let n = chunk.len();
            let mut attrs = vec![
                CmdAttr::Protocol(self.protocol),
                CmdAttr::SetName(set.into()),
            ];
            if n == 1 {
                attrs.push(CmdAttr::AdtData(chunk.pop().unwrap_or_default()));
            } else {
                // ip_set_ad() refuses an ADT nest without a top-level LINENO
                // (IPSET_ERR_PROTOCOL). Entries carry no CADT_LINENO, so a failure
                // comes back as a plain error ACK rather than ipset's lineno echo.
                attrs.push(CmdAttr::LineNo(0));
                attrs.push(CmdAttr::Adt(std::mem::take(chunk)));
            }
            IpsetMessage::new(cmd, attrs).append(flags, buf);
            let what = if n == total {
                format!("{verb} {n} entries {prep} set {set}")
            } else {
                format!(
                    "{verb} entries {}..{} (of {total}) {prep} set {set}",
                    first,
                    first + n
                )
            };
            out.push((op.context(what), None));
        };
        for e in entries {
            let len = 4 + e.as_slice().buffer_len();
            if !chunk.is_empty() && bytes + len > MAX_ADT_BYTES {
                let n = chunk.len();
                flush(&mut chunk, first, buf);
                first += n;
                bytes = 0;
            }
            bytes += len;
            chunk.push(e);
        }
        if !chunk.is_empty() {
            flush(&mut chunk, first, buf);
        }
        out
    }
}

/// Groups LIST/SAVE dump messages into sets: the kernel starts a set with its
/// header (TYPENAME, DATA) and continues a large one in further messages that
/// repeat only SETNAME before the next ADT nest.
pub fn sets_from_messages(msgs: &[IpsetMessage]) -> Vec<IpSet> {
    let mut sets: Vec<IpSet> = Vec::new();
    for m in msgs {
        let Some(name) = m.set_name() else { continue };
        let starts = m.attrs.iter().any(|a| matches!(a, CmdAttr::TypeName(_)));
        let same = sets.last().is_some_and(|s| s.header.name == name);
        if starts || !same {
            sets.push(IpSet::default());
        }
        if let Some(set) = sets.last_mut() {
            set.header.update(&m.attrs);
            for a in &m.attrs {
                if let CmdAttr::Adt(adt) = a {
                    set.push_members(adt);
                }
            }
        }
    }
    sets
}
