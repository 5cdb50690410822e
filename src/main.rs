//! The `kube-ipvs` binary: parses the command line and reports errors as one readable message.

use clap::Parser;
use kube_ipvs::cli::{Cli, run};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("kube-ipvs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
