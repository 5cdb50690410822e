//! The kernel's IPVS (generic netlink family "IPVS"): typed model, codec and client.

#[cfg(test)]
mod captured;
pub mod client;
pub mod message;
pub mod nla;
pub mod proc;
#[cfg(test)]
mod proptests;
pub mod types;

pub use client::{IpvsClient, Operation};
pub use types::*;
