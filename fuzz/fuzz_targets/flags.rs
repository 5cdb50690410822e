//! Fuzzes the command line: NUL-separated arguments (any bytes) parsed by clap
//! as `kube-ipvs ARGS...`, then the daemon flags resolved into settings.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::{CommandFactory, FromArgMatches};
use kube_ipvs::cli::Cli;
use kube_ipvs::config::ConfigValues;
use libfuzzer_sys::fuzz_target;

/// The command, built once, and every long flag name any subcommand knows.
struct Parser {
    cmd: clap::Command,
    longs: HashSet<Vec<u8>>,
}

/// Every long name and alias of `cmd` and its subcommands.
fn longs(cmd: &clap::Command, into: &mut HashSet<Vec<u8>>) {
    for arg in cmd.get_arguments() {
        into.extend(arg.get_long().map(|l| l.as_bytes().to_vec()));
        into.extend(
            arg.get_all_aliases()
                .into_iter()
                .flatten()
                .map(|a| a.as_bytes().to_vec()),
        );
    }
    for sub in cmd.get_subcommands() {
        longs(sub, into);
    }
}

thread_local! {
    /// Built once and reused: `Cli::try_parse_from` builds and validates
    /// clap's whole command (every flag of every subcommand) per call, and a
    /// clone per input costs nearly as much. Parsing through
    /// `try_get_matches_from_mut` leaves a built command as it was.
    static PARSER: RefCell<Parser> = RefCell::new({
        let mut cmd = Cli::command();
        cmd.build();
        let mut set = HashSet::from([b"help".to_vec(), b"version".to_vec()]);
        longs(&cmd, &mut set);
        Parser { cmd, longs: set }
    });
}

fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    PARSER.with_borrow_mut(|p| {
        // An unknown `--name` only reaches clap's "did you mean" search, a
        // string-similarity score against every flag: it took over 80% of
        // each run (and of the run rate) and reaches none of our code, so
        // such inputs are skipped. Known flags with any value still go
        // through clap and then our own value parsing.
        let unknown = args.iter().any(|a| {
            a.strip_prefix(b"--").is_some_and(|rest| {
                let name = rest.split(|&b| b == b'=').next().unwrap_or(rest);
                !name.is_empty() && !p.longs.contains(name)
            })
        });
        if unknown {
            return;
        }
        let argv = std::iter::once(OsString::from("kube-ipvs"))
            .chain(args.iter().map(|a| OsString::from_vec(a.to_vec())));
        // --help and --version are errors of try_get_matches_from, not exits.
        let Ok(matches) = p.cmd.try_get_matches_from_mut(argv) else {
            return;
        };
        let Ok(cli) = Cli::from_arg_matches(&matches) else {
            return;
        };
        if let Ok(values) = cli.daemon.values() {
            let _ = ConfigValues::default().overlay(values).resolve();
        }
    });
});
