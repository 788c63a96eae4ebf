//! What each subcommand does; `main` only dispatches here.

use std::path::Path;

use anyhow::{Context, Result};
use vigil_genesis::Genesis;

use crate::cli::{Command, GenesisCommand, InitArgs, NodeFlags, VdfCommand};
use crate::config::{self, Config, Overrides};
use crate::datadir::{self, DataDir, KeyProtection};
use crate::exit::{Classify, Exit};
use crate::keys::{read_passphrase, KdfParams};
use crate::node::{self, RunOptions};

/// Runs one subcommand.
pub fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init(args) => init(args),
        Command::Run(args) => run_node(DataDir::new(args.data_dir), args.flags, false),
        Command::Dev(args) => dev(DataDir::new(args.data_dir), args.flags),
        Command::Genesis(cmd) => genesis(cmd),
        Command::Vdf(VdfCommand::Calibrate(args)) => crate::calibrate::run(args),
        Command::Completions(args) => {
            args.run(<crate::cli::Cli as clap::CommandFactory>::command());
            Ok(())
        }
        Command::Man(args) => args.run(<crate::cli::Cli as clap::CommandFactory>::command()),
    }
}

fn init(args: InitArgs) -> Result<()> {
    let genesis = Genesis::load(&args.genesis).class(Exit::Genesis)?;
    let passphrase = match read_passphrase(args.passphrase_file.as_deref()).class(Exit::Key)? {
        Some(p) => p,
        None => crate::keys::prompt_passphrase(true)
            .class(Exit::Key)?
            .context(
                "no passphrase: pass --passphrase-file FILE or set VIGIL_PASSPHRASE, or run on a terminal to be asked (the node key is always encrypted; `vigil dev` makes a throwaway key instead)",
            )
            .class(Exit::Key)?,
    };
    let dir = DataDir::new(args.data_dir);
    let report = datadir::init(
        &dir,
        &genesis,
        KeyProtection::Passphrase(&passphrase, KdfParams::default()),
    )
    .class(Exit::DataDir)?;
    println!("initialized {}", report.dir.display());
    println!("  peer id  {}", report.peer_id);
    println!(
        "  account  {} (settlement chain; account.key, encrypted)",
        report.evm_address
    );
    println!("  genesis  {} ({})", genesis.network, genesis.hash());
    match &args.passphrase_file {
        Some(f) => println!(
            "  next     vigil run --data-dir {} --passphrase-file {}",
            report.dir.display(),
            f.display()
        ),
        None => println!(
            "  next     vigil run --data-dir {}   (asks for the passphrase on a terminal; else --passphrase-file FILE or VIGIL_PASSPHRASE)",
            report.dir.display()
        ),
    }
    Ok(())
}

/// Loads the effective config for a data dir and the flags.
fn effective_config(dir: &DataDir, flags: &NodeFlags) -> Result<Config> {
    let default_file = dir.config();
    let file = match &flags.config {
        Some(f) => Some(f.as_path()),
        None => default_file.exists().then_some(default_file.as_path()),
    };
    let overrides = Overrides {
        rpc_addr: flags.rpc_addr,
        listen: flags.listen.clone(),
        log_format: flags.log_format,
        bus_addr: flags.bus_addr,
        metrics_addr: flags.metrics_addr,
    };
    let vars: Vec<(String, String)> = std::env::vars().collect();
    Ok(config::load(file, &vars, &overrides)?)
}

fn run_node(dir: DataDir, flags: NodeFlags, dev: bool) -> Result<()> {
    let mut cfg = effective_config(&dir, &flags)?;
    let base = cfg.clone();
    if dev {
        free_dev_ports(&mut cfg);
    }
    if flags.dump_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let log = crate::logging::init(&cfg.log);
    let reload = {
        let (dir, flags) = (DataDir::new(dir.root()), flags.clone());
        crate::node::Reload {
            load: Box::new(move || effective_config(&dir, &flags)),
            base,
            log,
        }
    };
    let expect_genesis = match (&flags.genesis, dev) {
        (Some(spec), _) => Some(Genesis::load(spec).class(Exit::Genesis)?),
        (None, true) => Some(Genesis::load("dev").class(Exit::Genesis)?),
        (None, false) => None,
    };
    let mut passphrase = read_passphrase(flags.passphrase_file.as_deref()).class(Exit::Key)?;
    if passphrase.is_none() && !dev && crate::keys::key_is_encrypted(&dir.key()) {
        passphrase = crate::keys::prompt_passphrase(false).class(Exit::Key)?;
    }
    crate::keys::warn_if_readable_by_others(&dir.key(), "node key");
    crate::keys::warn_if_readable_by_others(&dir.account_key(), "account key");
    node::run(RunOptions {
        dir,
        config: cfg,
        passphrase,
        expect_genesis,
        dev_banner: dev,
        reload: Some(reload),
    })
}

/// `vigil dev` is a standalone node: when a default port it would use is
/// taken (another dev node on the machine), it takes a free one instead of
/// failing, and says so. Ports set by config, environment or flags are
/// used as given.
fn free_dev_ports(cfg: &mut Config) {
    let defaults = Config::default();
    let p2p = crate::config::DEFAULT_P2P_PORT;
    if cfg.network.listen == defaults.network.listen
        && (std::net::TcpListener::bind(("0.0.0.0", p2p)).is_err()
            || std::net::UdpSocket::bind(("0.0.0.0", p2p)).is_err())
    {
        eprintln!("vigil dev: p2p port {p2p} is taken (another node?): listening on free ports instead (set --listen to choose)");
        cfg.network.listen = vec!["/ip4/0.0.0.0/tcp/0".into(), "/ip4/0.0.0.0/udp/0/quic-v1".into()];
    }
    if cfg.bus.enabled
        && cfg.bus.addr == defaults.bus.addr
        && std::net::TcpListener::bind(cfg.bus.addr).is_err()
    {
        eprintln!(
            "vigil dev: bus port {} is taken (another node?): using a free one, written to DIR/bus.url (set --bus-addr to choose)",
            cfg.bus.addr.port()
        );
        cfg.bus.addr.set_port(0);
    }
}

fn dev(dir: DataDir, flags: NodeFlags) -> Result<()> {
    let missing = dir.missing_parts();
    if !missing.is_empty() {
        anyhow::bail!("{}", crate::node::damaged(&dir, &missing));
    }
    if !flags.dump_config && !dir.is_initialized() {
        let genesis = match &flags.genesis {
            Some(spec) => Genesis::load(spec)?,
            None => Genesis::load("dev")?,
        };
        eprintln!(
            "WARNING: creating {} with an UNENCRYPTED throwaway node key and anvil's well-known funded account {} as its settlement-chain key; for a real node use `vigil init`",
            dir.root().display(),
            vigil_layer2::Account::anvil_dev().address()
        );
        datadir::init(&dir, &genesis, KeyProtection::Plaintext)?;
    }
    run_node(dir, flags, true)
}

fn genesis(cmd: GenesisCommand) -> Result<()> {
    match cmd {
        GenesisCommand::New {
            from,
            network,
            bootnodes,
            created_at,
            out,
        } => {
            let mut g = Genesis::load(&from)?;
            if let Some(n) = network {
                g.network = n;
            }
            if !bootnodes.is_empty() {
                g.bootnodes = bootnodes;
            }
            g.created_at = created_at.unwrap_or_else(humantime_now);
            // Re-validate the edited genesis with the same rules as loading.
            let g = Genesis::from_toml_str(&g.to_toml(), Some("(new)".into()))?;
            let text = format!(
                "# genesis of network `{}`\n# hash {}\n{}",
                g.network,
                g.hash(),
                g.to_toml()
            );
            match out {
                Some(path) => {
                    write_new(&path, &text)?;
                    eprintln!("wrote {} (hash {})", path.display(), g.hash());
                }
                None => print!("{text}"),
            }
        }
        GenesisCommand::Show { genesis, json } => {
            let g = Genesis::load(&genesis)?;
            if json {
                let mut v = serde_json::to_value(&g)?;
                v["hash"] = g.hash().to_hex().into();
                v["g8"] = g.hash().short().into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "# hash {}\n# g8   {}\n{}",
                    g.hash(),
                    g.hash().short(),
                    g.to_toml()
                );
            }
        }
        GenesisCommand::Hash { genesis } => println!("{}", Genesis::load(&genesis)?.hash()),
    }
    Ok(())
}

fn humantime_now() -> String {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
