//! Reconcile: desired node state → minimal ordered plan, with drains, drift repair and adoption.

pub mod desired;
pub mod kernel;
pub mod plan;
pub mod proxier;

pub use kernel::{KService, KernelError, KernelState};
pub use plan::{ConntrackFilter, IpvsOp, Op, Plan};
pub use proxier::{ConnCounts, Proxier};

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
