//! Fuzzes the command line: NUL-separated arguments (any bytes) parsed by clap
//! as `kube-ipvs ARGS...`, then the daemon flags resolved into settings.
#![no_main]

use std::cell::RefCell;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::{CommandFactory, FromArgMatches};
use kube_ipvs::cli::Cli;
use kube_ipvs::config::ConfigValues;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The command, built once and reused: `Cli::try_parse_from` builds and
    /// validates clap's whole command (every flag of every subcommand) per
    /// call, and a clone per input costs nearly as much. Parsing through
    /// `try_get_matches_from_mut` leaves a built command as it was.
    static COMMAND: RefCell<clap::Command> = RefCell::new({
        let mut cmd = Cli::command();
        cmd.build();
        cmd
    });
}

fuzz_target!(|data: &[u8]| {
    let args = std::iter::once(OsString::from("kube-ipvs")).chain(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    // --help and --version are errors of try_get_matches_from, not exits.
    let Ok(matches) = COMMAND.with_borrow_mut(|cmd| cmd.try_get_matches_from_mut(args)) else {
        return;
    };
    let Ok(cli) = Cli::from_arg_matches(&matches) else {
        return;
    };
    if let Ok(values) = cli.daemon.values() {
        let _ = ConfigValues::default().overlay(values).resolve();
    }
});
