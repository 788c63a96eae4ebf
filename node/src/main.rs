//! `vigil`: parse the command line, run the subcommand, map errors to an exit code.

use std::process::ExitCode;

use clap::Parser;
use vigil_node::cli::Cli;

/// mimalloc instead of glibc's malloc: allocation and free were ~14% of the
/// node's CPU on the bus's durable publish path (`perf`, docs/benchmarks.md).
/// Built without transparent huge pages (`no_thp`): with them an idle node's
/// RSS was 82 MiB instead of 38.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match vigil_node::commands::dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let top = e.to_string();
            eprintln!("error: {top}");
            // Many errors already quote their cause; print only what is new.
            for cause in e
                .chain()
                .skip(1)
                .map(|c| c.to_string())
                .filter(|c| !top.contains(c.as_str()))
            {
                eprintln!("  caused by: {cause}");
            }
            // Stable codes (docs/operator-guide.md): 3 config, 4 key, 5 address
            // in use, 6 genesis, 7 data dir, 1 anything else.
            ExitCode::from(vigil_node::exit::Exit::of(&e).code())
        }
    }
}
