//! Admin RPC client: endpoint discovery, auth header, errors that say what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClientBuilder};
use serde_json::Value;

/// Where and how to reach a node.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port`.
    pub url: String,
    cookie: String,
    /// Where the credential came from: the cookie file, or `None` for an
    /// API key given with [`Endpoint::with_key`].
    cookie_path: Option<PathBuf>,
    /// TLS roots for an `https://` node, from [`Endpoint::with_ca`]; the
    /// system's roots otherwise.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How long a call may take.
    timeout: Duration,
}

/// How long a call may take unless [`Endpoint::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Endpoint {
    /// Resolves the endpoint: `rpc` and `cookie` win; otherwise `DIR/rpc.url` and `DIR/.cookie`.
    pub fn resolve(data_dir: Option<&Path>, rpc: Option<&str>, cookie: Option<&Path>) -> Result<Self> {
        let dir = data_dir.unwrap_or(Path::new(".vigil-dev"));
        let url = Self::url(data_dir, rpc)?;
        let cookie_path = cookie
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(".cookie"));
        let cookie = std::fs::read_to_string(&cookie_path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| {
                anyhow!(
                    "cannot read the cookie {}: {e} (the node writes it at start; pass --cookie FILE or --data-dir DIR)",
                    cookie_path.display()
                )
            })?;
        Ok(Self {
            url,
            cookie,
            cookie_path: Some(cookie_path),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Calls may take `timeout` (a slow call is not a dead node).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts the PEM certificate(s) in `ca` for an `https://` node (a
    /// self-signed certificate, or a private CA) instead of the system's roots.
    pub fn with_ca(mut self, ca: &Path) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("{} is not a PEM certificate file", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{}: a certificate rustls cannot use", ca.display()))?;
        }
        if roots.is_empty() {
            bail!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                ca.display()
            );
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Some(std::sync::Arc::new(config));
        Ok(self)
    }

    /// The endpoint at `DIR/rpc.url` (or `rpc`) called with the API key
    /// `key` instead of the node's cookie (which it does not read).
    pub fn with_key(data_dir: Option<&Path>, rpc: Option<&str>, key: &str) -> Result<Self> {
        let url = Self::url(data_dir, rpc)?;
        Ok(Self {
            url,
            cookie: key.trim().to_owned(),
            cookie_path: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    fn url(data_dir: Option<&Path>, rpc: Option<&str>) -> Result<String> {
        let dir = data_dir.unwrap_or(Path::new(".vigil-dev"));
        match rpc {
            Some(u) => Ok(u.trim_end_matches('/').to_owned()),
            None => {
                let file = dir.join("rpc.url");
                std::fs::read_to_string(&file)
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| {
                        anyhow!(
                            "is the node running? no rpc.url in {} (a running node writes it at start; pass --data-dir DIR or --rpc URL)",
                            dir.display()
                        )
                    })
            }
        }
    }

    /// Calls `method` with positional `params` (a JSON array) and returns the result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.cookie))
            .context("the cookie is not a valid header value")?;
        headers.insert("authorization", bearer);
        let mut builder = HttpClientBuilder::default()
            .set_headers(headers)
            .request_timeout(self.timeout);
        if let Some(tls) = &self.tls {
            builder = builder.with_custom_cert_store((**tls).clone());
        }
        let client = builder
            .build(&self.url)
            .with_context(|| format!("invalid RPC URL {}", self.url))?;
        let mut p = ArrayParams::new();
        match params {
            Value::Array(items) => {
                for item in items {
                    p.insert(item).context("cannot encode params")?;
                }
            }
            Value::Null => {}
            other => bail!("params must be a JSON array, got {other}"),
        }
        client
            .request::<Value, _>(method, p)
            .await
            .map_err(|e| self.explain(method, e))
    }

    fn explain(&self, method: &str, e: ClientError) -> anyhow::Error {
        let text = e.to_string();
        if text.contains("401") {
            match &self.cookie_path {
                Some(path) => anyhow!(
                    "the node at {} refused the cookie from {} (HTTP 401): the node writes a new cookie at every start; point --data-dir or --cookie at the running node's",
                    self.url,
                    path.display()
                ),
                None => anyhow!(
                    "the node at {} refused the API key (HTTP 401): it is wrong or was revoked; an admin lists keys with `vigilctl keys list`",
                    self.url
                ),
            }
        } else if matches!(e, ClientError::RequestTimeout) {
            anyhow!(
                "{method}: no answer from {} within {} s (the node is up but busy, or the call is slow; it may still finish there): raise --timeout",
                self.url,
                self.timeout.as_secs_f64()
            )
        } else if let ClientError::Call(obj) = &e {
            // `error -32051: no epoch 999999 ...`, with the data when there is some.
            let data = obj
                .data()
                .map(|d| format!(" (data: {})", d.get()))
                .unwrap_or_default();
            anyhow!("{method}: error {}: {}{data}", obj.code(), obj.message())
        } else {
            anyhow!(
                "cannot reach the node at {}: {text}. Is the node running?",
                self.url
            )
        }
    }
}
