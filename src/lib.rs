//! kube-ipvs: a Kubernetes service proxy that programs Linux IPVS over netlink.
//!
//! The flow is watch → model → reconcile → apply; the model and the reconciler
//! are pure functions, and only the apply step touches the kernel.
//!
//! # Layers
//!
//! Top to bottom. A module imports only from its own layer or a lower one,
//! and modules of one layer never import each other in a cycle
//! (`tests/layout.rs` checks this, and that no file holds more than 800
//! lines of non-test code).
//!
//! 1. `cli`: the command line (`main.rs` only calls it).
//! 2. `commands`, `daemon`: the one-shot commands (`plan`, `sync-once`, `diff`, `cleanup`) and the long-running proxy.
//! 3. `node`, `config`: this node's identity and a proxier built for it; flags and the configuration file.
//! 4. `watch`, `source`: where objects come from: the API server, or manifest files.
//! 5. `changes`, `health`, `runner`: change trackers and their batches, and what they report to (health, the bounded-frequency runner).
//! 6. `model`, `reconcile`: pure: objects → desired node state → a minimal ordered plan.
//! 7. `apply`, `iptables`, `sysctl`, `ipvsadm`, `ipset_cmd`: the kernel: executing plans and reading state back; the ipvsadm/ipset-compatible commands.
//! 8. `state`: the node's kernel state and its operations as plain values, the vocabulary between the planner and apply.
//! 9. `yaml`, `http`, `metrics`, `heap`: support shared by every layer.
//!
//! Below them all is the `ipvs-netlink` crate, which knows nothing of Kubernetes.

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
