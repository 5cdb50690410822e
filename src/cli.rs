//! The `kube-ipvs` command line: clap definitions and the `ipvs` (ipvsadm-compatible) subcommands.

use std::io::{Read, Write};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use ipvs_netlink::ipvs::IpvsClient;

use crate::ipvsadm::{self, ListFormat};

/// Kubernetes service proxy that programs Linux IPVS over netlink.
///
/// Without a subcommand, kube-ipvs is the proxy (kube-proxy --proxy-mode=ipvs),
/// configured by --config and kube-proxy's flags.
#[derive(Debug, Parser)]
#[command(
    name = "kube-ipvs",
    version,
    propagate_version = true,
    after_help = crate::config::flags::EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub oneshot: crate::commands::OneshotFlags,
    #[command(flatten)]
    pub daemon: crate::config::flags::DaemonFlags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and change the kernel's IPVS table, ipvsadm-compatible.
    #[command(subcommand)]
    Ipvs(IpvsCommand),
    /// Inspect the kernel's ipsets, ipset-compatible.
    #[command(subcommand)]
    Ipset(IpsetCommand),
    /// Print the desired kernel state, without touching the kernel: for --manifests, or
    /// for the live cluster (--kubeconfig, else in-cluster), which is only read.
    Plan(crate::commands::OneshotArgs),
    /// One full sync (objects from --manifests or the API server): adopt, apply, verify; exit 0 only if converged.
    SyncOnce(crate::commands::OneshotArgs),
    /// Show how the kernel differs from the desired state (reads only; objects as for `plan`).
    Diff(crate::commands::OneshotArgs),
    /// Remove everything kube-ipvs created (our IPVS services, kube-ipvs0, KUBE-* sets and chains).
    Cleanup(crate::commands::OneshotArgs),
    /// Apply the node settings the proxy needs (sysctls, conntrack limits) and exit: for a
    /// privileged init container, so the proxy itself runs without write access to /proc/sys.
    #[command(
        after_help = "Example (the DaemonSet's init container, with the proxy's own flags):
  kube-ipvs --config=/etc/kube-ipvs/config.yaml --hostname-override=$(NODE_NAME) setup-host"
    )]
    SetupHost,
}

#[derive(Debug, Subcommand)]
pub enum IpsetCommand {
    /// Print sets exactly as `ipset list [NAME]` does.
    #[command(after_help = "Examples:
  kube-ipvs ipset list                  # same bytes as `ipset list`
  kube-ipvs ipset list KUBE-CLUSTER-IP  # one set
  kube-ipvs ipset list --terse          # headers only, as `ipset list -t`")]
    List {
        /// Only this set.
        name: Option<String>,
        /// Headers only (`ipset list -t`).
        #[arg(short, long)]
        terse: bool,
    },
    /// Print sets as `ipset restore` input, exactly as `ipset save [NAME]` does.
    Save {
        /// Only this set.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IpvsCommand {
    /// Print the table exactly as `ipvsadm -Ln` does.
    #[command(after_help = "Examples:
  kube-ipvs ipvs list               # same bytes as `ipvsadm -Ln`
  kube-ipvs ipvs list --stats       # same bytes as `ipvsadm -Ln --stats`
  kube-ipvs ipvs list --rate --exact

Services and real servers are sorted the way ipvsadm sorts them.")]
    List(ListArgs),
    /// Print the table as rules, exactly as `ipvsadm -Sn` does.
    #[command(after_help = "Examples:
  kube-ipvs ipvs save > rules       # same bytes as `ipvsadm -Sn`
  kube-ipvs ipvs save | ipvsadm -R  # the rules are ipvsadm -R input

Thresholds (-x/-y) are not saved, as in ipvsadm.")]
    Save,
    /// Apply `ipvsadm -R` rules read from standard input.
    #[command(after_help = "Input: one command per line, in ipvsadm syntax:
  -A|-E  -t|-u|--sctp-service ADDR:PORT | -f MARK [-6]  [-s SCHED] [-p [SECS]] [-M MASK] [--pe NAME] [-o] [-b FLAGS]
  -D     SERVICE
  -a|-e  SERVICE -r ADDR[:PORT] [-g|-i|-m] [-w WEIGHT] [-x UPPER] [-y LOWER]
         [--tun-type ipip|gue|gre] [--tun-port PORT] [--tun-nocsum|--tun-csum|--tun-remcsum]
  -d     SERVICE -r ADDR[:PORT]
  -C
Long forms (--add-service, --scheduler, --persistent, --real-server, --weight, ...) are
accepted too. Defaults are ipvsadm's: scheduler wlc, -p alone is 360 s, real servers use
direct routing (-g) with weight 1. Addresses and ports must be numeric; `#` starts a comment.

The whole input is checked first: if any line is wrong, every bad line is reported with its
number and nothing is applied. Then the lines are applied in order, in batches; each line the
kernel refuses is reported with its number, and the exit status is non-zero.

Examples:
  ipvsadm -Sn | kube-ipvs ipvs restore
  kube-ipvs ipvs save > rules && kube-ipvs ipvs restore --check < rules
  printf '%s\\n' '-A -t 10.96.0.1:443 -s rr' '-a -t 10.96.0.1:443 -r 10.244.1.5:6443 -m' | kube-ipvs ipvs restore")]
    Restore(RestoreArgs),
    /// Delete every virtual service and real server (`ipvsadm -C`).
    #[command(after_help = "Example:
  kube-ipvs ipvs clear && kube-ipvs ipvs list")]
    Clear,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Traffic counters (`ipvsadm -Ln --stats`).
    #[arg(long, group = "columns")]
    pub stats: bool,
    /// Traffic rates (`ipvsadm -Ln --rate`).
    #[arg(long, group = "columns")]
    pub rate: bool,
    /// Connection thresholds (`ipvsadm -Ln --thresholds`).
    #[arg(long, group = "columns")]
    pub thresholds: bool,
    /// Persistent connection counts (`ipvsadm -Ln --persistent-conn`).
    #[arg(long, group = "columns")]
    pub persistent_conn: bool,
    /// Tunnel settings of real servers (`ipvsadm -Ln --tun-info`).
    #[arg(long, group = "columns")]
    pub tun_info: bool,
    /// Exact numbers instead of K/M/G/T (`--exact`).
    #[arg(long)]
    pub exact: bool,
}

impl ListArgs {
    fn format(&self) -> ListFormat {
        if self.stats {
            ListFormat::Stats
        } else if self.rate {
            ListFormat::Rate
        } else if self.thresholds {
            ListFormat::Thresholds
        } else if self.persistent_conn {
            ListFormat::PersistentConn
        } else if self.tun_info {
            ListFormat::TunInfo
        } else {
            ListFormat::Plain
        }
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Only check the input; change nothing.
    #[arg(long)]
    pub check: bool,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let Cli {
        command,
        oneshot,
        daemon,
    } = cli;
    match command {
        Some(Command::Ipvs(cmd)) => run_ipvs(cmd),
        Some(Command::Ipset(cmd)) => run_ipset(cmd),
        // `kube-ipvs plan --config FILE --nodeport-addresses=...` (flags before or
        // after the subcommand): the one-shot commands use the configured proxy.
        Some(Command::Plan(a)) => {
            let (a, cfg) = oneshot_config(&daemon, &oneshot, a)?;
            crate::commands::plan(&a, cfg)
        }
        Some(Command::SyncOnce(a)) => {
            let (a, cfg) = oneshot_config(&daemon, &oneshot, a)?;
            crate::commands::sync_once(&a, cfg)
        }
        Some(Command::Diff(a)) => {
            let (a, cfg) = oneshot_config(&daemon, &oneshot, a)?;
            crate::commands::diff(&a, cfg)
        }
        Some(Command::SetupHost) => {
            daemon.init_logging();
            let (settings, warnings) = daemon.load()?;
            for w in &warnings {
                tracing::warn!("{w}");
            }
            crate::commands::setup_host(&settings)
        }
        Some(Command::Cleanup(a)) => {
            let (a, cfg) = oneshot_config(&daemon, &oneshot, a)?;
            crate::commands::cleanup(&a, cfg)
        }
        None => {
            daemon.init_logging();
            let (settings, warnings) = daemon.load()?;
            for w in &warnings {
                tracing::warn!("{w}");
            }
            if oneshot.sync_once || oneshot.cleanup {
                let a = crate::commands::OneshotArgs {
                    manifests: oneshot.manifests,
                    kubeconfig: settings.kubeconfig.clone(),
                    node: settings.hostname_override.clone(),
                };
                if oneshot.cleanup {
                    crate::commands::cleanup(&a, settings.proxy)
                } else {
                    crate::commands::sync_once(&a, settings.proxy)
                }
            } else {
                run_daemon(settings, oneshot.manifests)
            }
        }
    }
}

/// `--config`, the proxy flags and `--manifests` for a one-shot subcommand;
/// file warnings go to stderr, and the configured hostname override names the
/// node unless `--node` does.
fn oneshot_config(
    flags: &crate::config::flags::DaemonFlags,
    top: &crate::commands::OneshotFlags,
    mut args: crate::commands::OneshotArgs,
) -> Result<(
    crate::commands::OneshotArgs,
    crate::model::config::ProxyConfig,
)> {
    if top.sync_once || top.cleanup {
        bail!(
            "--sync-once and --cleanup are the daemon's one-shot modes; with a subcommand, use `kube-ipvs sync-once` or `kube-ipvs cleanup` instead"
        );
    }
    // The one-shot commands print their results; logs only when asked for.
    if flags.verbosity.is_some() || flags.log_format.is_some() {
        flags.init_logging();
    }
    let (settings, warnings) = flags.load()?;
    for w in &warnings {
        eprintln!("kube-ipvs: warning: {w}");
    }
    args.manifests.clone_from(&top.manifests);
    args.kubeconfig.clone_from(&settings.kubeconfig);
    if args.node.is_none() {
        args.node = settings.hostname_override;
    }
    Ok((args, settings.proxy))
}

/// The long-running proxy (API watch, or `--manifests` files, and the sync loop).
pub fn run_daemon(
    settings: crate::config::Settings,
    manifests: Option<std::path::PathBuf>,
) -> Result<()> {
    crate::daemon::run(settings, manifests)
}

fn client() -> Result<IpvsClient> {
    IpvsClient::new().context("cannot open the kernel's IPVS over netlink")
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `kube-ipvs ipvs list | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

fn run_ipset(cmd: IpsetCommand) -> Result<()> {
    let mut c = ipvs_netlink::ipset::IpsetClient::new()
        .context("cannot open the kernel's ipset over netlink")?;
    let text = match cmd {
        IpsetCommand::List { name, terse: true } => {
            crate::ipset_cmd::list_headers(&c.headers(name.as_deref())?)
        }
        IpsetCommand::List { name, terse: false } => {
            crate::ipset_cmd::list(&c.list(name.as_deref())?)
        }
        IpsetCommand::Save { name } => crate::ipset_cmd::save(&c.list(name.as_deref())?),
    };
    write_stdout(&text)
}

fn run_ipvs(cmd: IpvsCommand) -> Result<()> {
    match cmd {
        IpvsCommand::List(args) => {
            let mut c = client()?;
            let info = c.info().context("cannot read IPVS version")?;
            let table = ipvsadm::read_table(&mut c).context("cannot read the IPVS table")?;
            write_stdout(&ipvsadm::list(&info, &table, args.format(), args.exact))
        }
        IpvsCommand::Save => {
            let table =
                ipvsadm::read_table(&mut client()?).context("cannot read the IPVS table")?;
            write_stdout(&ipvsadm::save(&table))
        }
        IpvsCommand::Clear => client()?.flush().context("cannot clear the IPVS table"),
        IpvsCommand::Restore(args) => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read restore rules from standard input (it must be UTF-8 text)")?;
            restore(&input, args.check, client)
        }
    }
}

/// Parses everything, then applies; `connect` is only called when there is something to apply.
fn restore(input: &str, check: bool, connect: impl FnOnce() -> Result<IpvsClient>) -> Result<()> {
    let lines = ipvsadm::parse_restore(input).map_err(|errors| {
        let mut msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        msg.push(format!(
            "nothing applied: fix the {} line(s) above and run the restore again",
            errors.len()
        ));
        anyhow!(msg.join("\n"))
    })?;
    if check || lines.is_empty() {
        return Ok(());
    }
    let mut c = connect()?;
    let failures = ipvsadm::apply_restore(&mut c, &lines);
    if failures.is_empty() {
        return Ok(());
    }
    let mut msg: Vec<String> = failures
        .iter()
        .map(|f| {
            let err = f.error.to_string();
            let hint = fix_hint(&f.error);
            if err.contains(&f.what) {
                format!("line {}: {err}{hint}", f.line)
            } else {
                format!("line {}: {}: {err}{hint}", f.line, f.what)
            }
        })
        .collect();
    let unsure = failures.iter().any(|f| f.error.is_unconfirmed());
    msg.push(format!(
        "{} of {} line(s) failed; the other lines were applied{}",
        failures.len(),
        lines.len(),
        if unsure {
            " (some outcomes are unknown: check with `kube-ipvs ipvs save`)"
        } else {
            ""
        }
    ));
    Err(anyhow!(msg.join("\n")))
}

/// How to fix a line the kernel refused, where the error itself does not say.
fn fix_hint(e: &ipvs_netlink::Error) -> &'static str {
    use ipvs_netlink::Error;
    match e {
        Error::ServiceExists(_) => " (change it with -E, or delete it with -D first)",
        Error::DestinationExists { .. } => " (change it with -e, or delete it with -d first)",
        Error::ServiceNotFound(_) => " (add the service with -A first)",
        Error::DestinationNotFound { .. } => " (add the real server with -a first)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_options_parse_and_conflict() {
        let cli = Cli::try_parse_from(["kube-ipvs", "ipvs", "list", "--rate", "--exact"]).unwrap();
        match cli.command {
            Some(Command::Ipvs(IpvsCommand::List(a))) => {
                assert_eq!(a.format(), ListFormat::Rate);
                assert!(a.exact);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["kube-ipvs", "ipvs", "list", "--stats", "--rate"]).is_err());
        assert!(Cli::try_parse_from(["kube-ipvs", "ipvs", "restore", "--check"]).is_ok());
        assert!(Cli::try_parse_from(["kube-ipvs", "ipvs", "bogus"]).is_err());
    }

    #[test]
    fn kernel_refusals_come_with_a_fix() {
        let k = ipvs_netlink::ipvs::ServiceKey::Tcp("10.0.0.1:80".parse().unwrap());
        assert!(fix_hint(&ipvs_netlink::Error::ServiceExists(k)).contains("-E"));
        assert!(fix_hint(&ipvs_netlink::Error::ServiceNotFound(k)).contains("-A"));
    }

    #[test]
    fn no_subcommand_is_an_honest_error() {
        // The daemon checks its inputs before touching the kernel.
        let err = run(Cli::try_parse_from(["kube-ipvs", "--kubeconfig=/nonexistent/kc"]).unwrap())
            .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/kc"), "{err:#}");
        // Settings are checked first: a bad config file is reported as such.
        let err = run(Cli::try_parse_from(["kube-ipvs", "--config=/nonexistent/kp.conf"]).unwrap())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/kp.conf"),
            "{err:#}"
        );
    }

    #[test]
    fn daemon_flags_live_beside_subcommands() {
        let cli =
            Cli::try_parse_from(["kube-ipvs", "--ipvs-scheduler=wlc", "--masquerade-all"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.daemon.masquerade_all, Some(true));
        let e = Cli::try_parse_from(["kube-ipvs", "--ipvs-scheduler=fast"]).unwrap_err();
        assert!(e.to_string().contains("accepted: rr"), "{e}");
        assert!(Cli::try_parse_from(["kube-ipvs", "ipvs", "list"]).is_ok());
        // One-shot subcommands see the configuration given before them.
        let cli = Cli::try_parse_from([
            "kube-ipvs",
            "--ipvs-scheduler=sh",
            "--hostname-override=N1",
            "plan",
        ])
        .unwrap();
        let a = crate::commands::OneshotArgs {
            manifests: None,
            kubeconfig: None,
            node: None,
        };
        let (a, cfg) = oneshot_config(&cli.daemon, &cli.oneshot, a).unwrap();
        assert_eq!(cfg.scheduler.name(), "sh");
        assert_eq!(a.node.as_deref(), Some("n1"));
        let cli =
            Cli::try_parse_from(["kube-ipvs", "--config=/nonexistent/kp.conf", "plan"]).unwrap();
        assert!(run(cli).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--ipvs-sync-period") && help.contains("Examples:"),
            "{help}"
        );
    }

    /// The one-shot subcommand's arguments and the configuration it would run with.
    fn oneshot_of(argv: &[&str]) -> (crate::commands::OneshotArgs, ProxyConfig) {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let a = match cli.command {
            Some(
                Command::Plan(a) | Command::SyncOnce(a) | Command::Diff(a) | Command::Cleanup(a),
            ) => a,
            other => panic!("{argv:?}: {other:?}"),
        };
        oneshot_config(&cli.daemon, &cli.oneshot, a).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"))
    }

    use crate::model::config::ProxyConfig;

    #[test]
    fn proxy_flags_are_accepted_before_or_after_every_oneshot_subcommand() {
        let flags = [
            "--nodeport-addresses",
            "100.101.102.0/24",
            "--ipvs-scheduler=wlc",
            "--masquerade-all",
            "--ipvs-strict-arp=false",
            "--ipvs-sync-period=1m",
            "--hostname-override=Node-A",
            "--v=2",
        ];
        let mut seen = Vec::new();
        for sub in ["plan", "sync-once", "diff", "cleanup"] {
            let mut after = vec!["kube-ipvs", sub, "--manifests", "M"];
            after.extend(flags);
            let mut before = vec!["kube-ipvs"];
            before.extend(flags);
            before.extend(["--manifests", "M", sub]);
            // Split: some flags before, the rest after the subcommand.
            let mut split = vec!["kube-ipvs"];
            split.extend(&flags[..3]);
            split.extend([sub, "--manifests", "M"]);
            split.extend(&flags[3..]);
            for argv in [after, before, split] {
                let (a, cfg) = oneshot_of(&argv);
                assert_eq!(
                    a.manifests.as_deref(),
                    Some(std::path::Path::new("M")),
                    "{argv:?}"
                );
                assert_eq!(a.node.as_deref(), Some("node-a"), "{argv:?}");
                assert_eq!(cfg.scheduler.name(), "wlc", "{argv:?}");
                assert!(cfg.masquerade_all, "{argv:?}");
                assert!(!cfg.strict_arp, "{argv:?}");
                seen.push(cfg);
            }
        }
        // Same flags, same configuration, wherever they stand.
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
        // ...and it differs from the defaults in the node port addresses.
        let (_, plain) = oneshot_of(&["kube-ipvs", "plan", "--manifests", "M"]);
        assert_ne!(plain.node_port_addresses, seen[0].node_port_addresses);
        assert_ne!(plain, seen[0]);
        // --node still names the node over --hostname-override.
        let (a, _) = oneshot_of(&["kube-ipvs", "--hostname-override=x", "plan", "--node", "y"]);
        assert_eq!(a.node.as_deref(), Some("y"));
    }

    #[test]
    fn optional_values_and_verbosity_after_a_subcommand() {
        let daemon = |argv: &[&str]| {
            Cli::try_parse_from(argv)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
                .daemon
        };
        // A bare boolean flag does not swallow the next argument (values need `=`).
        let d = daemon(&["kube-ipvs", "plan", "--masquerade-all", "--manifests", "M"]);
        assert_eq!(d.masquerade_all, Some(true));
        let d = daemon(&["kube-ipvs", "diff", "--masquerade-all=false"]);
        assert_eq!(d.masquerade_all, Some(false));
        let d = daemon(&["kube-ipvs", "--conntrack-tcp-be-liberal", "cleanup"]);
        assert_eq!(d.conntrack_tcp_be_liberal, Some(true));
        assert!(Cli::try_parse_from(["kube-ipvs", "plan", "--ipvs-strict-arp", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["kube-ipvs", "plan", "--ipvs-strict-arp=maybe"]).is_err());
        for v in [
            &["kube-ipvs", "plan", "--v=4"][..],
            &["kube-ipvs", "plan", "--v", "4"],
            &["kube-ipvs", "plan", "-v", "4"],
            &["kube-ipvs", "plan", "-v4"],
            &["kube-ipvs", "-v4", "plan"],
        ] {
            assert_eq!(daemon(v).verbosity, Some(4), "{v:?}");
        }
        let d = daemon(&["kube-ipvs", "sync-once", "--log-format=json", "--config=c"]);
        assert_eq!(d.log_format, Some(crate::config::flags::LogFormat::Json));
        assert_eq!(d.config.as_deref(), Some(std::path::Path::new("c")));
        // Bad values are refused wherever they stand.
        let e = Cli::try_parse_from(["kube-ipvs", "plan", "--ipvs-scheduler=fast"]).unwrap_err();
        assert!(e.to_string().contains("accepted: rr"), "{e}");
        // Accepted, though meaningless, under the kernel inspection commands.
        assert!(
            Cli::try_parse_from(["kube-ipvs", "ipvs", "list", "--nodeport-addresses=all"]).is_ok()
        );
        // The daemon's modes are not mixed with a subcommand.
        let cli =
            Cli::try_parse_from(["kube-ipvs", "--manifests=M", "--sync-once", "plan"]).unwrap();
        let e = run(cli).unwrap_err();
        assert!(format!("{e:#}").contains("kube-ipvs sync-once"), "{e:#}");
    }

    #[test]
    fn subcommand_help_lists_the_proxy_flags() {
        for sub in ["plan", "sync-once", "diff", "cleanup"] {
            let e = Cli::try_parse_from(["kube-ipvs", sub, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
            let help = e.to_string();
            for flag in [
                "--nodeport-addresses",
                "--config",
                "--ipvs-scheduler",
                "--masquerade-all",
                "--manifests",
                "--node",
                "--v",
                "Proxy options",
            ] {
                assert!(help.contains(flag), "{sub} --help lacks {flag}:\n{help}");
            }
        }
    }

    #[test]
    fn plan_honours_nodeport_addresses_given_after_the_subcommand() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/manifests");
        let text = |argv: &[&str]| {
            let (a, cfg) = oneshot_of(argv);
            crate::commands::plan_text(&a, cfg).unwrap()
        };
        let base = [
            "kube-ipvs",
            "plan",
            "--manifests",
            dir,
            "--node",
            "lab-node",
        ];
        let all = text(&base);
        assert!(all.contains("192.168.100.10:30080"), "{all}");
        // The node's only address is outside this range: no NodePort on it.
        let mut narrowed = base.to_vec();
        narrowed.extend(["--nodeport-addresses", "100.101.102.0/24"]);
        let none = text(&narrowed);
        assert!(!none.contains("192.168.100.10:30080"), "{none}");
        assert!(none.contains("10.96.0.20:80"), "{none}");
        // Before the subcommand: the same plan.
        let before = [
            "kube-ipvs",
            "--nodeport-addresses",
            "100.101.102.0/24",
            "plan",
            "--manifests",
            dir,
            "--node",
            "lab-node",
        ];
        assert_eq!(text(&before), none);
    }

    #[test]
    fn bad_input_is_reported_without_touching_the_kernel() {
        let input = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w heavy\n";
        let err = restore(input, false, || panic!("must not connect"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: invalid weight 'heavy'"), "{err}");
        assert!(err.contains("nothing applied"), "{err}");
        assert!(restore("-A -t 10.0.0.1:80\n", true, || panic!("must not connect")).is_ok());
        assert!(restore("\n# nothing\n", false, || panic!("must not connect")).is_ok());
    }
}
