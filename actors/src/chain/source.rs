//! Chain sources: a blockchain-agnostic trait, the EVM JSON-RPC source
//! (poll + `eth_subscribe newHeads`), and a vigil node's epoch chain.

use std::time::Duration;

use async_trait::async_trait;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::Value;
use tokio::sync::mpsc;
use vigil_protocols::chain::BlockRef;

/// Heights above this are refused as absurd (2^48: far beyond any chain).
pub const MAX_HEIGHT: u64 = 1 << 48;

/// A chain the node follows.
#[async_trait]
pub trait ChainSource: Send + Sync + std::fmt::Debug + 'static {
    /// Its configured name.
    fn name(&self) -> &str;
    /// Checks the source is the chain configured (chain id); called on (re)connect.
    async fn check(&self) -> Result<(), String>;
    /// The current head.
    async fn head(&self) -> Result<BlockRef, String>;
    /// The canonical block at `height`.
    async fn block(&self, height: u64) -> Result<BlockRef, String>;
    /// The finalized height, where the source knows one.
    async fn finalized(&self) -> Result<Option<u64>, String>;
    /// Pushes a hint on every new head, if the source can subscribe.
    fn subscribe(&self, _hint: mpsc::Sender<()>) {}
}

/// An EVM chain over JSON-RPC: HTTP for queries, WebSocket for `newHeads`.
#[derive(Debug)]
pub struct EvmSource {
    name: String,
    http: HttpClient,
    ws_url: Option<String>,
    chain_id: Option<u64>,
}

fn hex_u64(v: &Value, what: &str) -> Result<u64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{what} is not a hex string: {v}"))?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{what} `{s}` lacks 0x"))?;
    let n = u64::from_str_radix(digits, 16).map_err(|e| format!("{what} `{s}`: {e}"))?;
    Ok(n)
}

fn hash(v: &Value, what: &str) -> Result<String, String> {
    let s = v.as_str().ok_or_else(|| format!("{what} is not a string: {v}"))?;
    let ok = s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{what} `{s}` is not a 32-byte hex hash"))
    }
}

/// A block object from `eth_getBlockByNumber`.
pub fn parse_block(v: &Value) -> Result<BlockRef, String> {
    if v.is_null() {
        return Err("no such block".into());
    }
    let height = hex_u64(&v["number"], "block number")?;
    if height > MAX_HEIGHT {
        return Err(format!("absurd block height {height} (over 2^48)"));
    }
    Ok(BlockRef {
        height,
        hash: hash(&v["hash"], "block hash")?,
        parent: hash(&v["parentHash"], "parent hash")?,
    })
}

impl EvmSource {
    /// A source at `http_url` (and `ws_url` for subscriptions), expecting `chain_id` if given.
    pub fn new(
        name: &str,
        http_url: &str,
        ws_url: Option<String>,
        chain_id: Option<u64>,
    ) -> Result<Self, String> {
        let http = HttpClientBuilder::default()
            .request_timeout(Duration::from_secs(5))
            .build(http_url)
            .map_err(|e| format!("chain source {name}: bad URL {http_url}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            http,
            ws_url,
            chain_id,
        })
    }

    async fn get(&self, tag: Value) -> Result<BlockRef, String> {
        let v: Value = self
            .http
            .request("eth_getBlockByNumber", rpc_params![tag, false])
            .await
            .map_err(|e| e.to_string())?;
        parse_block(&v)
    }
}

#[async_trait]
impl ChainSource for EvmSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        let v: Value = self
            .http
            .request("eth_chainId", rpc_params![])
            .await
            .map_err(|e| e.to_string())?;
        let id = hex_u64(&v, "chain id")?;
        match self.chain_id {
            Some(want) if want != id => Err(format!("wrong chain id {id}; configured {want}")),
            _ => Ok(()),
        }
    }

    async fn head(&self) -> Result<BlockRef, String> {
        self.get(Value::from("latest")).await
    }

    async fn block(&self, height: u64) -> Result<BlockRef, String> {
        self.get(Value::from(format!("0x{height:x}"))).await
    }

    async fn finalized(&self) -> Result<Option<u64>, String> {
        match self.get(Value::from("finalized")).await {
            Ok(b) => Ok(Some(b.height)),
            Err(e) if e.contains("no such block") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn subscribe(&self, hint: mpsc::Sender<()>) {
        let Some(url) = self.ws_url.clone() else { return };
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let sub = async {
                    let ws = WsClientBuilder::default()
                        .build(&url)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut s = ws
                        .subscribe::<Value, _>("eth_subscribe", rpc_params!["newHeads"], "eth_unsubscribe")
                        .await
                        .map_err(|e| e.to_string())?;
                    while let Some(_h) = s.next().await {
                        if hint.send(()).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err::<(), String>("subscription ended".into())
                };
                if let Err(e) = sub.await {
                    tracing::debug!(source = %name, error = %e, "newHeads subscription lost; polling meanwhile");
                }
                if hint.is_closed() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    }
}

/// Another vigil node's epoch chain through its admin RPC: height = epoch,
/// hash = output.
#[derive(Debug)]
pub struct VigilSource {
    name: String,
    http: HttpClient,
}

impl VigilSource {
    /// `url` of the node's admin RPC, authenticated with the cookie `token`.
    pub fn new(name: &str, url: &str, token: &str) -> Result<Self, String> {
        let mut headers = http::HeaderMap::new();
        let v = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        headers.insert(http::header::AUTHORIZATION, v);
        let http = HttpClientBuilder::default()
            .set_headers(headers)
            .request_timeout(Duration::from_secs(5))
            .build(url)
            .map_err(|e| format!("chain source {name}: bad URL {url}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            http,
        })
    }

    async fn output(&self, n: u64) -> Result<String, String> {
        if n == 0 {
            return Ok("genesis".into());
        }
        let v: Value = self
            .http
            .request("epoch_get", rpc_params![n])
            .await
            .map_err(|e| e.to_string())?;
        v["output"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("epoch {n} has no output"))
    }
}

#[async_trait]
impl ChainSource for VigilSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        let _: Value = self
            .http
            .request("node_info", rpc_params![])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn head(&self) -> Result<BlockRef, String> {
        let v: Value = self
            .http
            .request("epoch_head", rpc_params![])
            .await
            .map_err(|e| e.to_string())?;
        let n = v["head"].as_u64().ok_or("no head")?;
        self.block(n).await
    }

    async fn block(&self, n: u64) -> Result<BlockRef, String> {
        Ok(BlockRef {
            height: n,
            hash: self.output(n).await?,
            parent: self.output(n.saturating_sub(1)).await?,
        })
    }

    async fn finalized(&self) -> Result<Option<u64>, String> {
        Ok(None)
    }
}
