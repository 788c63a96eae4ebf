//! What keeps a web page out of the admin RPC: on every HTTP endpoint
//! (`/metrics`, `/health` and `/ready` included) the `Host` header must name
//! the node (a DNS-rebinding page reaches 127.0.0.1 under its own domain
//! name, and says so in `Host`), and a request with an `Origin` header (a
//! browser's) is refused unless that origin is configured, which also turns
//! CORS on for it. Anchors: geth's `--http.vhosts` and `--http.corsdomain`.

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderMap, HeaderValue};

/// The names and origins a request may carry.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Host names (without port) accepted besides the loopback names and
    /// the bound address; `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed to call, with CORS; `*`
    /// allows any.
    pub cors_origins: Vec<String>,
}

/// Why a request was refused (the 403's body).
pub(super) type Refusal = String;

impl BrowserPolicy {
    /// Checks `Host` and `Origin`; `Ok(Some(origin))` when CORS headers
    /// should be added for an allowed origin.
    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        bound: SocketAddr,
    ) -> Result<Option<HeaderValue>, Refusal> {
        // A browser always sends Host; a request without one (HTTP/1.0
        // probes, scripts) cannot be a rebinding page.
        if let Some(h) = headers.get(header::HOST) {
            let host = h.to_str().unwrap_or("");
            let name = host_name(host);
            if !self.host_allowed(name, bound) {
                return Err(format!(
                    "Host `{host}` is not this node's: add `{name}` to rpc.allowed_hosts if you reach the node by that name (this refuses DNS-rebinding pages)"
                ));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let text = origin.to_str().unwrap_or("");
        if self
            .cors_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(text))
        {
            Ok(Some(origin.clone()))
        } else {
            Err(format!(
                "Origin `{text}` is not allowed: browsers may call the admin RPC only from an origin in rpc.cors_origins (empty by default)"
            ))
        }
    }

    fn host_allowed(&self, name: &str, bound: SocketAddr) -> bool {
        if name.eq_ignore_ascii_case("localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(name))
        {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address: loopback, or the one the node is bound to.
            Ok(ip) => ip.is_loopback() || ip == bound.ip(),
            Err(_) => false,
        }
    }
}

/// `Host` without its port (`[::1]:8645` → `[::1]`, `node.example:443` →
/// `node.example`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Adds the CORS answer for an allowed `origin` to `headers`.
pub(super) fn add_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_nodes_own_names_pass_as_host() {
        let bound: SocketAddr = "127.0.0.1:8645".parse().unwrap();
        let p = BrowserPolicy::default();
        for ok in [
            "127.0.0.1:8645",
            "localhost:8645",
            "LOCALHOST",
            "[::1]:8645",
            "127.0.0.2",
        ] {
            assert!(p.check(&headers(&[("host", ok)]), bound).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8645",
            "evil.example",
            "10.0.0.1:8645",
            "localhost.evil.example",
        ] {
            let e = p.check(&headers(&[("host", bad)]), bound).unwrap_err();
            assert!(
                e.contains("rpc.allowed_hosts") && e.contains("is not this node's"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            p.check(&HeaderMap::new(), bound),
            Ok(None),
            "no Host: not a browser"
        );
        let named = BrowserPolicy {
            allowed_hosts: vec!["node.example".into()],
            ..Default::default()
        };
        assert!(named
            .check(&headers(&[("host", "node.example:443")]), bound)
            .is_ok());
        // The bound address is always the node's.
        let public: SocketAddr = "10.1.2.3:8645".parse().unwrap();
        assert!(p.check(&headers(&[("host", "10.1.2.3:8645")]), public).is_ok());
    }

    #[test]
    fn a_browser_origin_is_refused_unless_configured_and_then_gets_cors() {
        let bound: SocketAddr = "127.0.0.1:8645".parse().unwrap();
        let p = BrowserPolicy::default();
        let e = p
            .check(
                &headers(&[("host", "127.0.0.1"), ("origin", "https://evil.example")]),
                bound,
            )
            .unwrap_err();
        assert!(e.contains("rpc.cors_origins"), "{e}");
        assert_eq!(p.check(&headers(&[("host", "127.0.0.1")]), bound), Ok(None));
        let p = BrowserPolicy {
            cors_origins: vec!["https://ops.example".into()],
            ..Default::default()
        };
        let ok = p
            .check(
                &headers(&[("host", "127.0.0.1"), ("origin", "https://ops.example")]),
                bound,
            )
            .unwrap();
        assert_eq!(ok, Some(HeaderValue::from_static("https://ops.example")));
        assert!(p
            .check(
                &headers(&[("host", "127.0.0.1"), ("origin", "https://ops.example.evil")]),
                bound
            )
            .is_err());
    }
}
