//! The kernel's ipset over nfnetlink (subsystem 6): typed model, codec, errors and client.

pub mod client;
pub mod error;
pub mod message;
pub mod nla;
pub mod types;

pub use client::{IpsetClient, Operation};
pub use error::IpsetError;
pub use types::*;

#[cfg(test)]
mod tests;
