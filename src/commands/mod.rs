//! The one-shot subcommands (`plan`, `sync-once`, `diff`, `cleanup`) behind the CLI: arguments and output.

pub mod oneshot;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::apply::Applier;
use crate::config::Settings;
use crate::model::config::ProxyConfig;
use crate::node;
use crate::reconcile::Proxier;
use crate::source::files;
use crate::source::manifests::Manifests;
use crate::watch;

/// Where the objects come from and which node this is.
#[derive(Debug, Clone, Args)]
pub struct OneshotArgs {
    /// The global `--manifests` (given before or after the subcommand), filled in by the CLI.
    #[arg(skip)]
    pub manifests: Option<PathBuf>,
    /// Without manifests, the objects are listed from the API server this
    /// kubeconfig names (`--kubeconfig` or `clientConnection.kubeconfig`),
    /// else from the in-cluster service account; filled in by the CLI.
    #[arg(skip)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (default: --hostname-override, else $NODE_NAME, else the hostname).
    #[arg(long = "node", value_name = "NAME")]
    pub node: Option<String>,
}

/// Top-level flag form: `kube-ipvs --manifests PATH --sync-once`.
#[derive(Debug, Clone, Default, Args)]
pub struct OneshotFlags {
    /// Read objects (Service, EndpointSlice, Node) from a YAML/JSON manifest file, or a
    /// directory of them, instead of the API server.
    #[arg(long, value_name = "PATH", global = true)]
    pub manifests: Option<PathBuf>,
    /// One full sync, then exit: 0 only if the kernel now equals the desired state.
    #[arg(long, requires = "manifests")]
    pub sync_once: bool,
    /// Remove everything kube-ipvs created, then exit (as kube-proxy --cleanup).
    #[arg(long, conflicts_with = "sync_once")]
    pub cleanup: bool,
}

fn stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// Where a command's objects come from when no manifests are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Without {
    /// Listed once from the API server.
    Api,
    /// None (cleanup needs no objects).
    Nothing,
}

/// The objects: from `--manifests`, else as `without` says.
fn load(args: &OneshotArgs, node_name: &str, without: Without) -> Result<Manifests> {
    let Some(path) = &args.manifests else {
        return match without {
            Without::Api => list_from_api(args.kubeconfig.as_deref(), node_name),
            Without::Nothing => Ok(Manifests::default()),
        };
    };
    let m = files::load(path)?;
    for w in &m.warnings {
        tracing::warn!("{w}");
        eprintln!("kube-ipvs: warning: {w}");
    }
    Ok(m)
}

/// Services and EndpointSlices (with upstream's label selector) and this
/// Node, read once from the API server: what the daemon would program here.
fn list_from_api(kubeconfig: Option<&Path>, node_name: &str) -> Result<Manifests> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let client = watch::client(kubeconfig, None).await.context(
            "no objects: pass --manifests PATH (a YAML file or a directory of them), or --kubeconfig FILE to list them from the API server",
        )?;
        watch::list_once(&client, node_name).await
    })
}

fn build(args: &OneshotArgs, cfg: ProxyConfig, without: Without) -> Result<Proxier> {
    let name = node::node_name(args.node.as_deref()).unwrap_or_else(|| "localhost".to_string());
    let m = load(args, &name, without)?;
    let node = node::node_info(&name, &m, node::local_addresses);
    Ok(node::proxier(cfg, node, &m))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `kube-ipvs plan`: the desired kernel state, without touching the kernel
/// (node addresses are read only when no Node object names this node).
pub fn plan(args: &OneshotArgs, cfg: ProxyConfig) -> Result<()> {
    stdout(&plan_text(args, cfg)?)
}

/// The text `kube-ipvs plan` prints.
pub fn plan_text(args: &OneshotArgs, cfg: ProxyConfig) -> Result<String> {
    let mut p = build(args, cfg, Without::Api)?;
    Ok(oneshot::plan_text(&mut p))
}

/// `kube-ipvs sync-once`: adopt, apply, verify; fails unless the kernel converged.
pub fn sync_once(args: &OneshotArgs, cfg: ProxyConfig) -> Result<()> {
    let mut p = build(args, cfg, Without::Api)?;
    let mut applier = Applier::new();
    let s = oneshot::sync_once(&mut applier, &mut p, now()).context("sync failed")?;
    stdout(&s.text())?;
    if !s.converged() {
        bail!(
            "the kernel does not equal the desired state after the sync ({} failed operations, {} differences)",
            s.report.failed.len(),
            s.remaining.len()
        );
    }
    Ok(())
}

/// `kube-ipvs diff`: kernel vs desired; reads only.
pub fn diff(args: &OneshotArgs, cfg: ProxyConfig) -> Result<()> {
    let mut p = build(args, cfg, Without::Api)?;
    let lines = oneshot::diff_kernel(&mut Applier::new(), &mut p)?;
    if lines.is_empty() {
        return stdout("kernel state equals the desired state\n");
    }
    stdout(&(lines.join("\n") + "\n"))
}

/// `kube-ipvs --cleanup`: removes what kube-ipvs created, nothing else.
pub fn cleanup(args: &OneshotArgs, cfg: ProxyConfig) -> Result<()> {
    let p = build(args, cfg, Without::Nothing)?;
    let (done, errors) = oneshot::cleanup(&mut Applier::new(), &p);
    let mut text: String = done.iter().map(|l| format!("removed: {l}\n")).collect();
    if done.is_empty() {
        text.push_str("nothing of kube-ipvs was left\n");
    }
    stdout(&text)?;
    if !errors.is_empty() {
        bail!("cleanup incomplete: {}", errors.join("; "));
    }
    Ok(())
}

/// `kube-ipvs setup-host`: writes the node settings the proxy needs and
/// prints each one changed (see [`node::setup_host`]).
pub fn setup_host(settings: &Settings) -> Result<()> {
    let changed = node::setup_host(settings)?;
    if changed.is_empty() {
        return stdout("every node setting already holds\n");
    }
    stdout(
        &changed
            .iter()
            .map(|c| format!("set: {c}\n"))
            .collect::<String>(),
    )
}
