//! `vigil`: parse the command line, run the subcommand, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser;
use vigil_node::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match vigil_node::commands::dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
