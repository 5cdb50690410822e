//! Reconcile: desired node state → minimal ordered plan, with drains, drift repair and adoption.

pub mod blame;
pub mod desired;
pub mod failing;
pub mod kernel;
pub mod plan;
pub mod proxier;
pub mod undo;

pub use blame::{Blame, FailureReason, Refusal};
pub use failing::Settled;
pub use kernel::{KService, KernelError, KernelState};
pub use plan::{ConntrackFilter, IpvsOp, Op, Plan};
pub use proxier::{ConnCounts, Proxier};

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
