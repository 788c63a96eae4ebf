//! The admin RPC's listener: accepts TCP connections itself (instead of
//! leaving it to the JSON-RPC server) so that it knows each client's address
//! and can refuse by it: outside `rpc.allowed_networks`, or past
//! `rpc.max_connections_per_ip` open at once. With TLS configured it runs the
//! handshake (bounded in time) before any HTTP is read. Each request then
//! carries the client's address ([`ClientAddr`]) to the HTTP layer, for the
//! rate limits and the cookie's loopback-only rule.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::Tls;
use crate::metrics as m;

/// The address a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may connect, and how often at once.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    /// Networks clients may connect from; empty = any.
    pub(super) allowed_networks: Vec<IpNet>,
    /// Connections one address may hold open at once.
    pub(super) max_per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection's place in its address's count; freed on drop.
#[derive(Debug)]
pub(super) struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Admission for `allowed_networks` and `max_per_ip`.
    pub(super) fn new(allowed_networks: Vec<IpNet>, max_per_ip: usize) -> Self {
        Self {
            allowed_networks,
            max_per_ip,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or why it is refused.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Slot, String> {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if !self.allowed_networks.is_empty() && !self.allowed_networks.iter().any(|n| n.contains(&ip)) {
            return Err(format!("{ip} is not in rpc.allowed_networks"));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(format!(
                "{ip} has {} connections open already (rpc.max_connections_per_ip); close one",
                self.max_per_ip
            ));
        }
        *n += 1;
        Ok(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

/// A connection ready for HTTP: plain, or after the TLS handshake.
pub(super) enum Conn {
    /// Plain TCP (loopback).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Runs the TLS handshake when `tls` is set.
pub(super) async fn secure(sock: TcpStream, tls: Option<&Arc<Tls>>, peer: SocketAddr) -> Option<Conn> {
    let Some(tls) = tls else {
        return Some(Conn::Plain(sock));
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(sock)).await {
        Ok(Ok(s)) => Some(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => {
            metrics::counter!(m::RPC_REFUSED_CONNECTIONS, "reason" => "tls").increment(1);
            tracing::debug!(%peer, error = %e, "admin RPC: TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!(m::RPC_REFUSED_CONNECTIONS, "reason" => "tls").increment(1);
            tracing::debug!(%peer, "admin RPC: TLS handshake timed out");
            None
        }
    }
}

/// Answers a refused connection with a plain HTTP 403 or 503 and closes it.
pub(super) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, status: &str, why: &str) {
    let body = format!("{why}\n");
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = io.write_all(resp.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_of_connections_back_as_they_close() {
        let a = Admission::new(Vec::new(), 2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (s1, _s2) = (a.admit(ip).unwrap(), a.admit(ip).unwrap());
        let e = a.admit(ip).unwrap_err();
        assert!(e.contains("rpc.max_connections_per_ip"), "{e}");
        a.admit("127.0.0.2".parse().unwrap())
            .expect("another address has its own share");
        drop(s1);
        let _s3 = a.admit(ip).expect("a closed connection frees its slot");
        // The same client over IPv4-mapped IPv6 is the same address.
        assert!(a.admit("::ffff:127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn only_allowed_networks_get_in_when_some_are_set() {
        let a = Admission::new(vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()], 4);
        assert!(a.admit("10.2.3.4".parse().unwrap()).is_ok());
        assert!(a.admit("::1".parse().unwrap()).is_ok());
        let e = a.admit("192.168.1.1".parse().unwrap()).unwrap_err();
        assert!(e.contains("rpc.allowed_networks"), "{e}");
    }
}
