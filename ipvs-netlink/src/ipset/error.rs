//! ipset errors: the kernel's errno and ipset's own codes (above 4096) turned into readable errors.

use crate::error::{NetlinkError, errno};

use super::types::SetType;

/// Not in `crate::error::errno`: nfnetlink's answer when no ipset subsystem is registered.
const EPROTONOSUPPORT: i32 = 93;

/// ipset's private error codes (`enum ipset_errno` and the type-specific ones).
pub mod code {
    pub const IPSET_ERR_PRIVATE: i32 = 4096;
    pub const IPSET_ERR_PROTOCOL: i32 = 4097;
    pub const IPSET_ERR_FIND_TYPE: i32 = 4098;
    pub const IPSET_ERR_MAX_SETS: i32 = 4099;
    pub const IPSET_ERR_BUSY: i32 = 4100;
    pub const IPSET_ERR_EXIST_SETNAME2: i32 = 4101;
    pub const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
    pub const IPSET_ERR_EXIST: i32 = 4103;
    pub const IPSET_ERR_INVALID_CIDR: i32 = 4104;
    pub const IPSET_ERR_INVALID_NETMASK: i32 = 4105;
    pub const IPSET_ERR_INVALID_FAMILY: i32 = 4106;
    pub const IPSET_ERR_TIMEOUT: i32 = 4107;
    pub const IPSET_ERR_REFERENCED: i32 = 4108;
    pub const IPSET_ERR_IPADDR_IPV4: i32 = 4109;
    pub const IPSET_ERR_IPADDR_IPV6: i32 = 4110;
    pub const IPSET_ERR_COUNTER: i32 = 4111;
    pub const IPSET_ERR_COMMENT: i32 = 4112;
    pub const IPSET_ERR_INVALID_MARKMASK: i32 = 4113;
    pub const IPSET_ERR_SKBINFO: i32 = 4114;
    pub const IPSET_ERR_TYPE_SPECIFIC: i32 = 4352;
    // hash types
    pub const IPSET_ERR_HASH_FULL: i32 = 4352;
    pub const IPSET_ERR_HASH_ELEM: i32 = 4353;
    pub const IPSET_ERR_INVALID_PROTO: i32 = 4354;
    pub const IPSET_ERR_MISSING_PROTO: i32 = 4355;
    pub const IPSET_ERR_HASH_RANGE_UNSUPPORTED: i32 = 4356;
    pub const IPSET_ERR_HASH_RANGE: i32 = 4357;
    // bitmap types
    pub const IPSET_ERR_BITMAP_RANGE: i32 = 4352;
    pub const IPSET_ERR_BITMAP_RANGE_SIZE: i32 = 4353;
}

/// What an operation was doing, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// e.g. "add 3 entries to set KUBE-CLUSTER-IP".
    pub op: String,
    pub set: String,
    /// The type involved, when known: type-specific codes depend on it.
    pub set_type: Option<SetType>,
    pub kind: OpKind,
}

/// The kind of request, which decides what ambiguous codes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Create,
    Destroy,
    Flush,
    Rename,
    Swap,
    Add,
    Del,
    Test,
    List,
    Type,
    Protocol,
}

/// An ipset error naming the set concerned and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error(
        "ipset is not available in this kernel: load the ip_set module (scripts/load-modules.sh)"
    )]
    Unavailable,
    #[error(
        "{op}: permission denied: ipset needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied { op: String },
    #[error(
        "{op}: the kernel speaks ipset protocol {kernel} (oldest {kernel_min}), this client {ours} (oldest {ours_min}): upgrade the older side"
    )]
    ProtocolMismatch {
        op: String,
        kernel: u8,
        kernel_min: u8,
        ours: u8,
        ours_min: u8,
    },
    /// The kernel also answers this for an entry of the wrong address family
    /// or kind for the set: it checks the attribute layout before the set's type.
    #[error(
        "{op}: the kernel refused the message as malformed (IPSET_ERR_PROTOCOL): check that the entries' address family and kind match set {set}'s family and type"
    )]
    Protocol { op: String, set: String },
    #[error(
        "{op}: set type {set_type}{} is not supported by this kernel: load the ip_set_{} module or pick another revision",
        revision.map(|r| format!(" revision {r}")).unwrap_or_default(),
        set_type.replace(':', "_").replace(',', "")
    )]
    TypeNotSupported {
        op: String,
        set_type: String,
        revision: Option<u8>,
    },
    #[error(
        "{op}: the kernel's maximum number of sets is reached: raise ip_set's max_sets module parameter or destroy unused sets"
    )]
    MaxSets { op: String },
    #[error("{op}: set {set} does not exist")]
    SetNotFound { op: String, set: String },
    #[error(
        "{op}: set {set} already exists with another type or options: destroy it first or create with exist"
    )]
    SetExists { op: String, set: String },
    #[error(
        "{op}: set {set} is busy (in use by a kernel component, or being dumped): remove its users or retry"
    )]
    Busy { op: String, set: String },
    #[error(
        "{op}: set {set} is in use by a kernel component (an iptables `-m set` rule or a list:set): delete the rule first"
    )]
    Referenced { op: String, set: String, code: i32 },
    #[error("rename set {set}: a set named {other} already exists: destroy or rename it first")]
    NameTaken { set: String, other: String },
    #[error("swap set {set}: the second set {other} does not exist")]
    SwapTargetMissing { set: String, other: String },
    #[error(
        "swap set {set} with {other}: the sets have different types or families, the kernel swaps only like with like"
    )]
    TypeMismatch { set: String, other: String },
    #[error("{op}: an entry is already in set {set}: add with exist to ignore it")]
    EntryExists { op: String, set: String },
    #[error("{op}: an entry is not in set {set}: delete with exist to ignore it")]
    EntryMissing { op: String, set: String },
    #[error("{op}: set {set} is full (maxelem reached): create it with a larger maxelem")]
    SetFull { op: String, set: String },
    #[error("{op}: a port range of set {set} lies outside the bitmap's range")]
    OutOfRange { op: String, set: String },
    #[error("{op}: {reason} (set {set})")]
    InvalidEntry {
        op: String,
        set: String,
        reason: &'static str,
        code: i32,
    },
    /// Any other refusal: the kernel's code, ipset's name for it, the extended ACK text.
    #[error("{op}: kernel error {code} ({name}){}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        op: String,
        code: i32,
        name: String,
        message: Option<String>,
    },
    /// The outcome is unknown (ACK lost or timeout): re-read kernel state.
    #[error("{op}: outcome unknown: {source}")]
    Unconfirmed {
        op: String,
        #[source]
        source: NetlinkError,
    },
    #[error("cannot decode {context}: {message}")]
    Decode { context: String, message: String },
    /// A value the kernel cannot take (a name over 31 bytes, a comment over 255...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Socket-level failures.
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: NetlinkError,
    },
}

impl IpsetError {
    /// The kernel's code behind this error (errno or ipset's own above 4096), if any.
    pub fn code(&self) -> Option<i32> {
        use code::*;
        use errno::*;
        Some(match self {
            IpsetError::PermissionDenied { .. } => EPERM,
            IpsetError::Protocol { .. } => IPSET_ERR_PROTOCOL,
            IpsetError::TypeNotSupported { .. } => IPSET_ERR_FIND_TYPE,
            IpsetError::MaxSets { .. } => IPSET_ERR_MAX_SETS,
            IpsetError::SetNotFound { .. } => ENOENT,
            IpsetError::SetExists { .. } => EEXIST,
            IpsetError::Busy { .. } => IPSET_ERR_BUSY,
            IpsetError::NameTaken { .. } | IpsetError::SwapTargetMissing { .. } => {
                IPSET_ERR_EXIST_SETNAME2
            }
            IpsetError::TypeMismatch { .. } => IPSET_ERR_TYPE_MISMATCH,
            IpsetError::EntryExists { .. } | IpsetError::EntryMissing { .. } => IPSET_ERR_EXIST,
            IpsetError::SetFull { .. } => IPSET_ERR_HASH_FULL,
            IpsetError::OutOfRange { .. } => IPSET_ERR_BITMAP_RANGE,
            IpsetError::Kernel { code, .. }
            | IpsetError::InvalidEntry { code, .. }
            | IpsetError::Referenced { code, .. } => *code,
            IpsetError::Unconfirmed { source, .. } | IpsetError::Netlink { source, .. } => {
                return source.errno();
            }
            _ => return None,
        })
    }

    pub fn is_unconfirmed(&self) -> bool {
        matches!(self, IpsetError::Unconfirmed { .. })
    }
}

/// ipset's name for a private code (type-specific ones need the set type).
pub fn code_name(code: i32, set_type: Option<SetType>) -> String {
    use code::*;
    let s = match code {
        IPSET_ERR_PROTOCOL => "IPSET_ERR_PROTOCOL",
        IPSET_ERR_FIND_TYPE => "IPSET_ERR_FIND_TYPE",
        IPSET_ERR_MAX_SETS => "IPSET_ERR_MAX_SETS",
        IPSET_ERR_BUSY => "IPSET_ERR_BUSY",
        IPSET_ERR_EXIST_SETNAME2 => "IPSET_ERR_EXIST_SETNAME2",
        IPSET_ERR_TYPE_MISMATCH => "IPSET_ERR_TYPE_MISMATCH",
        IPSET_ERR_EXIST => "IPSET_ERR_EXIST",
        IPSET_ERR_INVALID_CIDR => "IPSET_ERR_INVALID_CIDR",
        IPSET_ERR_INVALID_NETMASK => "IPSET_ERR_INVALID_NETMASK",
        IPSET_ERR_INVALID_FAMILY => "IPSET_ERR_INVALID_FAMILY",
        IPSET_ERR_TIMEOUT => "IPSET_ERR_TIMEOUT",
        IPSET_ERR_REFERENCED => "IPSET_ERR_REFERENCED",
        IPSET_ERR_IPADDR_IPV4 => "IPSET_ERR_IPADDR_IPV4",
        IPSET_ERR_IPADDR_IPV6 => "IPSET_ERR_IPADDR_IPV6",
        IPSET_ERR_COUNTER => "IPSET_ERR_COUNTER",
        IPSET_ERR_COMMENT => "IPSET_ERR_COMMENT",
        IPSET_ERR_INVALID_MARKMASK => "IPSET_ERR_INVALID_MARKMASK",
        IPSET_ERR_SKBINFO => "IPSET_ERR_SKBINFO",
        c if c >= IPSET_ERR_TYPE_SPECIFIC => {
            let hash = set_type.is_none_or(|t| t.is_hash());
            match (c, hash) {
                (IPSET_ERR_HASH_FULL, true) => "IPSET_ERR_HASH_FULL",
                (IPSET_ERR_HASH_ELEM, true) => "IPSET_ERR_HASH_ELEM",
                (IPSET_ERR_INVALID_PROTO, true) => "IPSET_ERR_INVALID_PROTO",
                (IPSET_ERR_MISSING_PROTO, true) => "IPSET_ERR_MISSING_PROTO",
                (IPSET_ERR_HASH_RANGE_UNSUPPORTED, true) => "IPSET_ERR_HASH_RANGE_UNSUPPORTED",
                (IPSET_ERR_HASH_RANGE, true) => "IPSET_ERR_HASH_RANGE",
                (IPSET_ERR_BITMAP_RANGE, false) => "IPSET_ERR_BITMAP_RANGE",
                (IPSET_ERR_BITMAP_RANGE_SIZE, false) => "IPSET_ERR_BITMAP_RANGE_SIZE",
                _ => return format!("type-specific error {c}"),
            }
        }
        c if c > IPSET_ERR_PRIVATE => return format!("ipset error {c}"),
        c => return std::io::Error::from_raw_os_error(c).to_string(),
    };
    s.to_owned()
}

/// Maps a netlink failure of the operation described by `ctx` to an [`IpsetError`].
///
/// `other` is the second set of RENAME/SWAP; `revision` the one asked for at create.
pub fn map_error(
    ctx: &Context,
    other: Option<&str>,
    revision: Option<u8>,
    e: NetlinkError,
) -> IpsetError {
    use code::*;
    use errno::*;
    let (code, message) = match e {
        NetlinkError::Kernel { errno, message } => (errno, message),
        NetlinkError::Timeout(_) | NetlinkError::Unconfirmed { .. } => {
            return IpsetError::Unconfirmed {
                op: ctx.op.clone(),
                source: e,
            };
        }
        NetlinkError::Decode(message) => {
            return IpsetError::Decode {
                context: format!("reply to {}", ctx.op),
                message,
            };
        }
        source => {
            return IpsetError::Netlink {
                op: ctx.op.clone(),
                source,
            };
        }
    };
    let op = ctx.op.clone();
    let set = ctx.set.clone();
    let other = other.unwrap_or_default().to_owned();
    let hash = ctx.set_type.is_none_or(|t| t.is_hash());
    let invalid = |reason| IpsetError::InvalidEntry {
        op: op.clone(),
        set: set.clone(),
        reason,
        code,
    };
    match (code, ctx.kind) {
        (EPERM | EACCES, _) => IpsetError::PermissionDenied { op },
        // nfnetlink answers EOPNOTSUPP when the ip_set module is not loaded.
        (EOPNOTSUPP | EPROTONOSUPPORT, OpKind::Protocol) => IpsetError::Unavailable,
        (IPSET_ERR_PROTOCOL, _) => IpsetError::Protocol { op, set },
        (IPSET_ERR_FIND_TYPE, _) => IpsetError::TypeNotSupported {
            op,
            set_type: ctx
                .set_type
                .map(|t| t.name().to_owned())
                .unwrap_or_else(|| "?".into()),
            revision,
        },
        (IPSET_ERR_MAX_SETS, _) => IpsetError::MaxSets { op },
        (ENOENT, _) => IpsetError::SetNotFound { op, set },
        (EEXIST, _) => IpsetError::SetExists { op, set },
        // ip_set_destroy() answers BUSY for a set with kernel references.
        (IPSET_ERR_BUSY, OpKind::Destroy) => IpsetError::Referenced { op, set, code },
        (IPSET_ERR_BUSY, _) => IpsetError::Busy { op, set },
        (IPSET_ERR_REFERENCED, _) => IpsetError::Referenced { op, set, code },
        (IPSET_ERR_EXIST_SETNAME2, OpKind::Rename) => IpsetError::NameTaken { set, other },
        (IPSET_ERR_EXIST_SETNAME2, OpKind::Swap) => IpsetError::SwapTargetMissing { set, other },
        (IPSET_ERR_TYPE_MISMATCH, _) => IpsetError::TypeMismatch { set, other },
        (IPSET_ERR_EXIST, OpKind::Add) => IpsetError::EntryExists { op, set },
        (IPSET_ERR_EXIST, OpKind::Del | OpKind::Test) => IpsetError::EntryMissing { op, set },
        (IPSET_ERR_HASH_FULL, _) if hash => IpsetError::SetFull { op, set },
        (IPSET_ERR_BITMAP_RANGE, _) if !hash => IpsetError::OutOfRange { op, set },
        (IPSET_ERR_INVALID_CIDR, _) => invalid("invalid prefix length for the set"),
        (IPSET_ERR_INVALID_NETMASK, _) => invalid("invalid netmask"),
        (IPSET_ERR_INVALID_FAMILY, _) => invalid("the set's family does not allow this"),
        (IPSET_ERR_TIMEOUT, _) => {
            invalid("a timeout needs a set created with the timeout extension")
        }
        (IPSET_ERR_IPADDR_IPV4, _) => {
            invalid("the set holds IPv4 addresses, the entry has another kind")
        }
        (IPSET_ERR_IPADDR_IPV6, _) => {
            invalid("the set holds IPv6 addresses, the entry has another kind")
        }
        (IPSET_ERR_COUNTER, _) => {
            invalid("counters need a set created with the counters extension")
        }
        (IPSET_ERR_COMMENT, _) => {
            invalid("a comment needs a set created with the comment extension")
        }
        (IPSET_ERR_SKBINFO, _) => invalid("skbinfo needs a set created with the skbinfo extension"),
        (IPSET_ERR_INVALID_PROTO, _) if hash => invalid("invalid protocol for the set"),
        (IPSET_ERR_MISSING_PROTO, _) if hash => {
            invalid("the protocol must be given for a port entry")
        }
        (IPSET_ERR_HASH_ELEM, _) if hash => invalid("invalid element for the hash set"),
        (IPSET_ERR_BITMAP_RANGE_SIZE, _) if !hash => invalid("bitmap range too large"),
        (code, _) => IpsetError::Kernel {
            op,
            code,
            name: code_name(code, ctx.set_type),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(kind: OpKind, set_type: Option<SetType>) -> Context {
        Context {
            op: "op".into(),
            set: "S".into(),
            set_type,
            kind,
        }
    }

    fn k(errno: i32) -> NetlinkError {
        NetlinkError::Kernel {
            errno,
            message: None,
        }
    }

    #[test]
    fn codes_map_to_named_errors() {
        use code::*;
        let hip = Some(SetType::HashIp);
        let cases: Vec<(OpKind, Option<SetType>, i32, &str)> = vec![
            (OpKind::Add, hip, IPSET_ERR_EXIST, "already in set S"),
            (OpKind::Del, hip, IPSET_ERR_EXIST, "not in set S"),
            (
                OpKind::Destroy,
                None,
                IPSET_ERR_REFERENCED,
                "in use by a kernel component",
            ),
            (OpKind::Add, hip, IPSET_ERR_HASH_FULL, "set S is full"),
            (
                OpKind::Add,
                Some(SetType::BitmapPort),
                4352,
                "outside the bitmap's range",
            ),
            (
                OpKind::Create,
                hip,
                IPSET_ERR_FIND_TYPE,
                "hash:ip is not supported",
            ),
            (
                OpKind::Rename,
                None,
                IPSET_ERR_EXIST_SETNAME2,
                "named T already exists",
            ),
            (
                OpKind::Swap,
                None,
                IPSET_ERR_EXIST_SETNAME2,
                "second set T does not exist",
            ),
            (
                OpKind::Swap,
                None,
                IPSET_ERR_TYPE_MISMATCH,
                "different types",
            ),
            (OpKind::Flush, None, errno::ENOENT, "set S does not exist"),
            (OpKind::Create, hip, errno::EEXIST, "already exists"),
            (OpKind::Add, hip, IPSET_ERR_COMMENT, "comment extension"),
            (OpKind::Add, hip, IPSET_ERR_IPADDR_IPV6, "holds IPv6"),
            (
                OpKind::Add,
                hip,
                IPSET_ERR_PROTOCOL,
                "address family and kind match set S",
            ),
            (OpKind::Add, hip, 4999, "type-specific error 4999"),
            (OpKind::Add, hip, errno::ENOMEM, "kernel error 12"),
            (OpKind::Add, hip, errno::EPERM, "CAP_NET_ADMIN"),
        ];
        for (kind, t, code, want) in cases {
            let e = map_error(&ctx(kind, t), Some("T"), None, k(code));
            let s = e.to_string();
            assert!(s.contains(want), "{code}: {s}");
            assert_eq!(e.code(), Some(code), "{s}");
        }
        let e = map_error(
            &ctx(OpKind::Add, None),
            None,
            None,
            NetlinkError::Unconfirmed { seq: 1 },
        );
        assert!(e.is_unconfirmed());
        assert_eq!(
            code_name(4352, Some(SetType::BitmapPort)),
            "IPSET_ERR_BITMAP_RANGE"
        );
        assert_eq!(
            code_name(4352, Some(SetType::HashNet)),
            "IPSET_ERR_HASH_FULL"
        );
        assert_eq!(code_name(4200, None), "ipset error 4200");
    }
}
