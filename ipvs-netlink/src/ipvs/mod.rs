//! The kernel's IPVS (generic netlink family "IPVS"): typed model, codec and client.

pub mod types;

pub use types::*;
