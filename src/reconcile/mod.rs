//! Reconcile: desired node state → minimal ordered plan, with drains, drift repair and adoption.

pub mod blame;
pub mod desired;
pub mod failing;
mod partial;
pub mod plan;
pub mod proxier;
pub mod undo;

pub use blame::{Blame, FailureReason};
pub use failing::Settled;
pub use plan::Plan;
pub use proxier::Proxier;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
