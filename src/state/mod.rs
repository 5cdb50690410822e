//! The node's kernel state as plain values, and the operations on it: the vocabulary the planner speaks and apply executes.
//!
//! Nothing here knows Kubernetes or does I/O. The model and the reconciler
//! build these values; the apply layer turns them into netlink messages,
//! iptables-restore payloads and sysctl writes, and reads the kernel back
//! into them.

pub mod cidr;
pub mod ipset;
pub mod kernel;
pub mod op;

pub use cidr::Cidr;
pub use ipset::{IpsetEntry, SetKind, SetName, SetType};
pub use kernel::{ConnCounts, KService, KernelError, KernelParts, KernelState};
pub use op::{ConntrackFilter, IpvsOp, Op, Refusal};
