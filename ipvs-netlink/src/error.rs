//! Errors of the netlink layer and of the IPVS client, with the kernel's errno mapped to context.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ipvs::ServiceKey;

/// `errno` values the IPVS and netlink code paths return (asm-generic numbering, as on x86/arm).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENOBUFS: i32 = 105;
    pub const EAFNOSUPPORT: i32 = 97;
}

/// What went wrong below the family: socket, kernel errno, lost or garbled replies.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (positive errno) and maybe said why (extended ACK).
    #[error("kernel error: {}{}", io::Error::from_raw_os_error(*errno), fmt_ext(message))]
    Kernel { errno: i32, message: Option<String> },
    /// No reply within the receive timeout; the request may or may not have been applied.
    #[error("no reply from the kernel within {0:?}; state is unknown, re-read it")]
    Timeout(Duration),
    /// The receive queue overflowed (ENOBUFS): this request's ACK was lost, so whether
    /// the kernel applied it is unknown. Re-read state before trusting it.
    #[error("acknowledgement lost (ENOBUFS): request {seq} unconfirmed, re-read kernel state")]
    Unconfirmed { seq: u32 },
    /// The kernel sent bytes we cannot parse (truncated or malformed).
    #[error("malformed netlink reply: {0}")]
    Decode(String),
    /// A dump kept being interrupted by concurrent changes (NLM_F_DUMP_INTR).
    #[error("dump interrupted by concurrent changes {0} times in a row")]
    DumpInterrupted(u32),
    /// Never sent: an earlier part of the batch could not be completed.
    #[error("not sent: an earlier part of the batch failed")]
    NotSent,
    /// A caller-built message is not a well-formed netlink message.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

fn fmt_ext(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(" ({m})"),
        _ => String::new(),
    }
}

impl NetlinkError {
    /// The kernel errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether a batch stops at this error: after a lost or garbled reply
    /// `NetlinkSocket::batch` sends nothing more (the rest is `NotSent`).
    /// A caller splitting a long batch into several calls stops there too.
    pub fn ends_batch(&self) -> bool {
        match self {
            NetlinkError::Timeout(_) | NetlinkError::Decode(_) | NetlinkError::NotSent => true,
            NetlinkError::Io { op, .. } => *op == "recvmsg",
            _ => false,
        }
    }

    /// A copy, to report one failure against several messages of a batch.
    pub fn duplicate(&self) -> Self {
        match self {
            NetlinkError::Io { op, source } => NetlinkError::Io {
                op,
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            NetlinkError::Kernel { errno, message } => NetlinkError::Kernel {
                errno: *errno,
                message: message.clone(),
            },
            NetlinkError::Timeout(d) => NetlinkError::Timeout(*d),
            NetlinkError::Unconfirmed { seq } => NetlinkError::Unconfirmed { seq: *seq },
            NetlinkError::Decode(m) => NetlinkError::Decode(m.clone()),
            NetlinkError::DumpInterrupted(n) => NetlinkError::DumpInterrupted(*n),
            NetlinkError::NotSent => NetlinkError::NotSent,
            NetlinkError::InvalidRequest(m) => NetlinkError::InvalidRequest(m.clone()),
        }
    }

    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        NetlinkError::Io { op, source }
    }
}

impl From<netlink_packet_core::DecodeError> for NetlinkError {
    fn from(e: netlink_packet_core::DecodeError) -> Self {
        NetlinkError::Decode(e.to_string())
    }
}

/// An IPVS client error, naming the service, destination or attribute concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("IPVS is not available: load it with scripts/load-modules.sh")]
    IpvsUnavailable,
    #[error(
        "{op}: permission denied: IPVS needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied { op: String },
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    #[error("service {0} does not exist")]
    ServiceNotFound(ServiceKey),
    #[error("destination {dest} of service {service} already exists")]
    DestinationExists {
        service: ServiceKey,
        dest: SocketAddr,
    },
    #[error("destination {dest} of service {service} does not exist")]
    DestinationNotFound {
        service: ServiceKey,
        dest: SocketAddr,
    },
    #[error("scheduler '{name}' not found: load ip_vs_{name}")]
    SchedulerNotFound { name: String },
    #[error("persistence engine '{name}' not found: load ip_vs_pe_{name}")]
    PersistenceEngineNotFound { name: String },
    /// EINVAL and friends: the kernel rejected the request's contents.
    #[error("{op}: invalid request: {source}")]
    Invalid {
        op: String,
        #[source]
        source: NetlinkError,
    },
    /// The operation's outcome is unknown (ACK lost or timeout): re-read kernel state.
    #[error("{op}: outcome unknown: {source}")]
    Unconfirmed {
        op: String,
        #[source]
        source: NetlinkError,
    },
    /// A kernel reply that does not decode; `context` names the message and attribute.
    #[error("cannot decode {context}: {message}")]
    Decode { context: String, message: String },
    /// A file of the kernel's (`/proc/net/ip_vs`) could not be read.
    #[error("cannot read {path}: {source}; is ip_vs loaded (scripts/load-modules.sh)?")]
    File {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    /// A value the kernel cannot represent (e.g. a scheduler name over 15 bytes).
    #[error("{0}")]
    InvalidArgument(String),
    /// Any other failure, with the operation it happened in.
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: NetlinkError,
    },
}

impl Error {
    /// The kernel errno behind this error, if any (EEXIST for `ServiceExists`, ...).
    pub fn errno(&self) -> Option<i32> {
        use errno::*;
        match self {
            Error::IpvsUnavailable => Some(ENOENT),
            Error::PermissionDenied { .. } => Some(EPERM),
            Error::ServiceExists(_) | Error::DestinationExists { .. } => Some(EEXIST),
            Error::ServiceNotFound(_) => Some(ESRCH),
            Error::DestinationNotFound { .. } => Some(ENOENT),
            Error::SchedulerNotFound { .. } | Error::PersistenceEngineNotFound { .. } => {
                Some(ENOENT)
            }
            Error::Invalid { source, .. }
            | Error::Unconfirmed { source, .. }
            | Error::Netlink { source, .. } => source.errno(),
            Error::File { source, .. } => source.raw_os_error(),
            Error::Decode { .. } | Error::InvalidArgument(_) => None,
        }
    }

    /// True when the kernel may or may not have applied the request (ACK lost
    /// or no answer in time). Of an `apply` result, only `Ok` means applied and
    /// an error carrying a kernel errno means refused; treat anything else
    /// (decode or socket failures) as unknown too and re-read state.
    pub fn is_unconfirmed(&self) -> bool {
        matches!(self, Error::Unconfirmed { .. })
    }

    pub(crate) fn decode(context: impl Into<String>, message: impl ToString) -> Self {
        Error::Decode {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// Maps errors that mean the same for every IPVS request; `op` names the request.
    pub(crate) fn generic(op: impl Into<String>, source: NetlinkError) -> Self {
        use errno::*;
        let op = op.into();
        match source {
            NetlinkError::Kernel {
                errno: EPERM | EACCES,
                ..
            } => Error::PermissionDenied { op },
            NetlinkError::Timeout(_) | NetlinkError::Unconfirmed { .. } => {
                Error::Unconfirmed { op, source }
            }
            NetlinkError::Decode(message) => Error::Decode {
                context: format!("reply to {op}"),
                message,
            },
            NetlinkError::Kernel {
                errno: EINVAL | EAFNOSUPPORT | EOPNOTSUPP,
                ..
            } => Error::Invalid { op, source },
            source => Error::Netlink { op, source },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_ends_where_replies_are_lost() {
        use std::time::Duration;
        assert!(NetlinkError::Timeout(Duration::from_secs(1)).ends_batch());
        assert!(NetlinkError::NotSent.ends_batch());
        assert!(NetlinkError::Decode("short".into()).ends_batch());
        let recv = NetlinkError::io("recvmsg", io::Error::from_raw_os_error(104));
        assert!(recv.ends_batch());
        // A failed sendmsg processed nothing; the batch goes on with the next one.
        let send = NetlinkError::io("sendmsg", io::Error::from_raw_os_error(105));
        assert!(!send.ends_batch());
        let refused = NetlinkError::Kernel {
            errno: 17,
            message: None,
        };
        assert!(!refused.ends_batch());
    }

    use super::*;

    #[test]
    fn messages_name_the_object() {
        let k = ServiceKey::Tcp("10.0.0.1:80".parse().unwrap());
        assert_eq!(
            Error::ServiceExists(k).to_string(),
            "service TCP 10.0.0.1:80 already exists"
        );
        assert_eq!(
            Error::ServiceNotFound(k).to_string(),
            "service TCP 10.0.0.1:80 does not exist"
        );
        assert_eq!(
            Error::SchedulerNotFound { name: "foo".into() }.to_string(),
            "scheduler 'foo' not found: load ip_vs_foo"
        );
        assert_eq!(
            Error::IpvsUnavailable.to_string(),
            "IPVS is not available: load it with scripts/load-modules.sh"
        );
        let e = Error::generic(
            "add service TCP 10.0.0.1:80",
            NetlinkError::Kernel {
                errno: errno::EPERM,
                message: None,
            },
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        assert_eq!(e.errno(), Some(errno::EPERM));
    }

    #[test]
    fn kernel_error_shows_errno_and_extack() {
        let e = NetlinkError::Kernel {
            errno: errno::EINVAL,
            message: Some("Attribute failed policy validation".into()),
        };
        let s = e.to_string();
        assert!(s.contains("Invalid argument"), "{s}");
        assert!(s.contains("policy validation"), "{s}");
    }
}
