//! Typed, batched netlink clients for the kernel's IPVS, ipset and rtnetlink families.
//!
//! Knows nothing of Kubernetes and never shells out: every request is a netlink
//! message built from typed values, and many requests travel in one `sendmsg`.

pub mod conntrack;
pub mod error;
pub mod genl;
pub mod ipset;
pub mod ipvs;
pub mod link;
pub mod netlink;

pub use error::{Error, NetlinkError};
