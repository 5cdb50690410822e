//! The pure model: Kubernetes objects + node + config → per-Service desired contributions.

pub mod config;
pub mod contribution;
pub mod endpoints;
pub mod input;
pub mod iptables;
pub mod node;
pub mod sysctls;

pub use config::{Cidr, NodePortAddresses, ProxyConfig};
pub use contribution::{Contribution, HealthCheck, Refusal, VirtualServer, contribution};
pub use input::{ParsedService, ServiceInput, SliceInput, SvcId, parse_service, parse_slice};
pub use node::NodeInfo;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
