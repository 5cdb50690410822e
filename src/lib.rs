//! kube-ipvs: a Kubernetes service proxy that programs Linux IPVS over netlink.
//!
//! The flow is watch → model → reconcile → apply; the model and the reconciler
//! are pure functions, and only the apply step touches the kernel.

pub mod apply;
pub mod changes;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod health;
pub mod heap;
pub mod http;
pub mod ipset_cmd;
pub mod iptables;
pub mod ipvsadm;
pub mod metrics;
pub mod model;
pub mod node;
pub mod reconcile;
pub mod runner;
pub mod source;
pub mod state;
pub mod sysctl;
pub mod watch;
pub mod yaml;
