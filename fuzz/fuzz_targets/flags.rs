//! Fuzzes the command line: NUL-separated arguments (any bytes) parsed by clap
//! as `kube-ipvs ARGS...`, then the daemon flags resolved into settings.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use kube_ipvs::cli::Cli;
use kube_ipvs::config::ConfigValues;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = std::iter::once(OsString::from("kube-ipvs")).chain(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    // --help and --version are errors of try_parse_from, not exits.
    let Ok(cli) = Cli::try_parse_from(args) else {
        return;
    };
    if let Ok(values) = cli.daemon.values() {
        let _ = ConfigValues::default().overlay(values).resolve();
    }
});
