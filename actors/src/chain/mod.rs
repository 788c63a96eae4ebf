//! Chain monitoring and emergency response: sources ([`source`]), one
//! following task per source ([`monitor`]), and the security rules, hooks
//! and pause switches ([`security`]) that react to what they detect.

pub mod monitor;
pub mod security;
pub mod source;

use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

pub use monitor::{Followed, SourceSettings, SourceStatus};
pub use security::{Action, Detection, Pauses, RuleConfig, SecurityHook, SecurityHub};
pub use source::{ChainSource, EvmSource, VigilSource};

/// `[[chain.sources]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name in alerts and status.
    pub name: String,
    /// `evm` or `vigil`.
    pub kind: String,
    /// HTTP URL (EVM JSON-RPC, or a vigil node's admin RPC).
    pub url: String,
    /// WebSocket URL for `eth_subscribe newHeads` (EVM).
    #[serde(default)]
    pub ws_url: Option<String>,
    /// Expected chain id (EVM); a node answering another is unhealthy.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// Cookie file of the vigil node (vigil kind).
    #[serde(default)]
    pub cookie_file: Option<std::path::PathBuf>,
    /// Expected block time, ms.
    #[serde(default = "default_block_time")]
    pub block_time_ms: u64,
    /// Stall after this many block times without a head.
    #[serde(default = "default_stall")]
    pub stall_factor: f64,
    /// Confirmations before a block counts as final where no `finalized` tag exists.
    #[serde(default)]
    pub confirmations: u64,
}

fn default_block_time() -> u64 {
    12_000
}

fn default_stall() -> f64 {
    3.0
}

impl SourceConfig {
    /// Builds the source.
    pub fn build(&self) -> Result<Arc<dyn ChainSource>, String> {
        match self.kind.as_str() {
            "evm" => Ok(Arc::new(EvmSource::new(
                &self.name,
                &self.url,
                self.ws_url.clone(),
                self.chain_id,
            )?)),
            "vigil" => {
                let cookie = self
                    .cookie_file
                    .as_ref()
                    .ok_or_else(|| format!("chain source {}: a vigil source needs cookie_file", self.name))?;
                let token = std::fs::read_to_string(cookie)
                    .map_err(|e| format!("chain source {}: {}: {e}", self.name, cookie.display()))?;
                Ok(Arc::new(VigilSource::new(&self.name, &self.url, token.trim())?))
            }
            k => Err(format!(
                "chain source {}: kind `{k}`; allowed evm, vigil",
                self.name
            )),
        }
    }

    /// Follow settings.
    pub fn settings(&self) -> SourceSettings {
        SourceSettings {
            block_time: std::time::Duration::from_millis(self.block_time_ms.max(10)),
            stall_factor: self.stall_factor.max(1.0),
            keep_blocks: 128,
            outage_after: 2,
        }
    }
}

/// The monitor: every followed source and the hub.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// Followed sources.
    pub sources: Vec<Arc<Followed>>,
    /// Rules, pauses, alerts.
    pub hub: Arc<SecurityHub>,
}

impl Monitor {
    /// Spawns one following task per source; abort the handles to stop.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.sources
            .iter()
            .map(|f| tokio::spawn(monitor::follow(f.clone(), self.hub.clone())))
            .collect()
    }
}

/// The supervised `chain` actor owning the following tasks.
#[derive(Debug)]
pub struct ChainActor {
    monitor: Monitor,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl ChainActor {
    /// An actor for `monitor`.
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor,
            tasks: Vec::new(),
        }
    }

    fn stop_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Actor for ChainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for t in self.monitor.spawn() {
            self.tasks.push(t.abort_handle());
            crate::supervision::watch_task(ctx, t, "a chain monitor task");
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.stop_tasks();
    }
}

impl Supervised for ChainActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.stop_tasks();
    }
}
