//! Where Kubernetes objects come from when not from the API server: manifest files.

pub mod files;
pub mod manifests;
pub mod synthetic;
