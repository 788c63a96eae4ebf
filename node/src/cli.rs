//! Command-line interface of the `vigil` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

/// vigil: a peer-to-peer node that proves it stores what it claims.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "vigil: a peer-to-peer node runtime",
    long_about = "vigil: a peer-to-peer node runtime.\n\n\
        Quick start:   vigil dev                       (one node on the embedded dev genesis)\n\
        Real node:     vigil init --data-dir DIR --passphrase-file FILE\n\
        \u{20}              vigil run  --data-dir DIR --passphrase-file FILE\n\
        Inspect:       vigilctl --data-dir DIR status\n\n\
        Configuration precedence: defaults < DIR/config.toml (or --config) < VIGIL_* environment\n\
        (VIGIL_RPC__ADDR=127.0.0.1:9000) < flags. `vigil run --data-dir DIR --dump-config` shows the result."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir: encrypted node key, genesis, commented config.toml, database.
    Init(InitArgs),
    /// Run a node from an initialized data dir until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Run one node on the embedded dev genesis; creates the data dir (throwaway unencrypted key) if absent.
    Dev(DevArgs),
    /// Create, show and hash genesis files.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// The VDF: `calibrate` measures this machine's rate.
    #[command(subcommand)]
    Vdf(VdfCommand),
    /// Print a shell completion script, e.g. `vigil completions bash > /etc/bash_completion.d/vigil`.
    Completions(CompletionsArgs),
    /// Write man pages (vigil.1 and one per subcommand) into --out, or print vigil(1).
    Man(ManArgs),
}

/// `vigil completions SHELL` (also `vigilctl` and `vigil-testnet`).
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `vigil man [--out DIR]` (also `vigilctl` and `vigil-testnet`).
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder for NAME.1 and NAME-SUBCOMMAND.1 pages (e.g. /usr/local/share/man/man1);
    /// without it the top page is printed.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ManArgs {
    /// Writes the pages of `cmd` as asked; prints what was written.
    pub fn run(&self, cmd: clap::Command) -> anyhow::Result<()> {
        match &self.out {
            Some(dir) => {
                let files = crate::cli_assets::man_pages(cmd, dir)?;
                println!("wrote {} man pages to {}", files.len(), dir.display());
            }
            None => crate::cli_assets::man_page(cmd, &mut std::io::stdout().lock())?,
        }
        Ok(())
    }
}

impl CompletionsArgs {
    /// Prints the completion script of `cmd`.
    pub fn run(&self, cmd: clap::Command) {
        crate::cli_assets::completions(cmd, self.shell, &mut std::io::stdout().lock());
    }
}

/// `vigil vdf ...`
#[derive(Debug, Subcommand)]
pub enum VdfCommand {
    /// Measure this machine's VDF rate and print the vdf_iterations that make
    /// an epoch last the target time here (the figure a genesis holds).
    Calibrate(CalibrateArgs),
}

/// `vigil vdf calibrate`
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Genesis whose mode, dataset size and epoch_target_secs are the defaults.
    #[arg(long, default_value = "testnet", value_name = "dev|testnet|PATH")]
    pub genesis: String,
    /// Step construction (default: the genesis's).
    #[arg(long, value_parser = parse_mode, value_name = "hash|memory-hard")]
    pub mode: Option<vigil_genesis::VdfMode>,
    /// Dataset MiB in memory-hard mode (default: the genesis's).
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u32>,
    /// Target epoch time, seconds (default: the genesis's epoch_target_secs).
    #[arg(long, value_name = "SECS")]
    pub target_secs: Option<u32>,
    /// Seconds to measure.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub secs: u64,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

fn parse_mode(s: &str) -> Result<vigil_genesis::VdfMode, String> {
    match s {
        "hash" => Ok(vigil_genesis::VdfMode::Hash),
        "memory-hard" => Ok(vigil_genesis::VdfMode::MemoryHard),
        other => Err(format!("`{other}`: allowed hash, memory-hard")),
    }
}

/// `vigil init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data directory to create; must be absent or empty.
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Genesis: `dev`, `testnet`, or the path of a genesis TOML file.
    #[arg(long, default_value = "testnet", value_name = "dev|testnet|PATH")]
    pub genesis: String,
    /// File holding the passphrase that encrypts the node key (else VIGIL_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Flags shared by `run` and `dev`.
#[derive(Debug, Clone, Args, Default)]
pub struct NodeFlags {
    /// Config file (default: DIR/config.toml when present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin RPC address (overrides rpc.addr): loopback, or any with rpc.tls_cert and rpc.tls_key. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub rpc_addr: Option<SocketAddr>,
    /// Bus WebSocket address (overrides bus.addr); loopback. Port 0 picks a free port (written to DIR/bus.url).
    #[arg(long, value_name = "HOST:PORT")]
    pub bus_addr: Option<SocketAddr>,
    /// Serve GET /metrics (only) on this address too, e.g. 0.0.0.0:9645 for a Prometheus server elsewhere (overrides metrics.addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// p2p listen multiaddr (repeatable; overrides network.listen).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Log format (overrides log.format). The filter comes from RUST_LOG or log.level.
    #[arg(long, value_enum, value_name = "pretty|json")]
    pub log_format: Option<LogFormat>,
    /// File holding the key passphrase (else VIGIL_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Refuse to start unless the data dir was created for this genesis (dev, testnet or PATH).
    #[arg(long, value_name = "dev|testnet|PATH")]
    pub genesis: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub dump_config: bool,
}

/// `vigil run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Data directory made by `vigil init`.
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub flags: NodeFlags,
}

/// `vigil dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory; created with the dev genesis and an unencrypted key if absent.
    #[arg(long, default_value = ".vigil-dev", value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub flags: NodeFlags,
}

/// `vigil genesis ...`
#[derive(Debug, Subcommand)]
pub enum GenesisCommand {
    /// Write a new genesis, starting from a preset or file.
    New {
        /// Preset or file to start from.
        #[arg(long, default_value = "testnet", value_name = "dev|testnet|PATH")]
        from: String,
        /// Network name (a-z, 0-9, -).
        #[arg(long)]
        network: Option<String>,
        /// Bootnode multiaddr ending in `/p2p/<peer id>` (repeatable; replaces the base's list).
        #[arg(long = "bootnode", value_name = "MULTIADDR")]
        bootnodes: Vec<String>,
        /// Creation time, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        created_at: Option<String>,
        /// Output file (default: stdout); never overwritten.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a genesis and its hash.
    Show {
        /// `dev`, `testnet` or a path.
        #[arg(value_name = "dev|testnet|PATH")]
        genesis: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print a genesis hash (hex).
    Hash {
        /// `dev`, `testnet` or a path.
        #[arg(value_name = "dev|testnet|PATH")]
        genesis: String,
    },
}
