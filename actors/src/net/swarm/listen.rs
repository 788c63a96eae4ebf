//! Listen addresses: why one cannot be bound, and which port a `:0` got.

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use crate::Error;

/// What to do when a listen address is taken.
const LISTEN_HINT: &str = "is another node using this port? pick a free one with --listen or network.listen (port 0 picks one; `vigil dev` does by itself)";

/// An error and its causes, `: `-separated; libp2p's transport errors
/// often display as nothing at the top (the OS error is a source).
/// Why the swarm cannot listen on `addr`: [`Error::AddrInUse`] when the
/// port is taken (the node exits with its own code for that), else invalid.
pub(super) fn listen_error(addr: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    let msg = format!("cannot listen on {addr}: {}: {LISTEN_HINT}", error_chain(e));
    if in_use(e) {
        Error::AddrInUse(msg)
    } else {
        Error::Invalid(msg)
    }
}

/// Whether an `AddrInUse` I/O error is in `e`'s chain (also inside an
/// `io::Error` that wraps another: its `source()` skips the wrapped one).
fn in_use(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::AddrInUse {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                if in_use(inner) {
                    return true;
                }
            }
        }
        cur = err.source();
    }
    // libp2p's transports wrap the OS error in `Either`s whose `source()`
    // skips it: only its text (std's "(os error N)") is left to read.
    error_chain(e).contains(&format!("(os error {})", libc::EADDRINUSE))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.trim().is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        format!("{e:?}")
    } else {
        parts.join(": ")
    }
}

/// `asked` with port 0 replaced by the port actually bound for it.
pub(super) fn pin_port(asked: &Multiaddr, bound: &[(Multiaddr, Multiaddr)]) -> Multiaddr {
    let Some((_, got)) = bound.iter().find(|(a, _)| a == asked) else {
        return asked.clone();
    };
    let port_of = |a: &Multiaddr| {
        a.iter().find_map(|p| match p {
            Protocol::Tcp(p) | Protocol::Udp(p) => Some(p),
            _ => None,
        })
    };
    let Some(port) = port_of(got) else {
        return asked.clone();
    };
    asked
        .iter()
        .map(|p| match p {
            Protocol::Tcp(0) => Protocol::Tcp(port),
            Protocol::Udp(0) => Protocol::Udp(port),
            other => other,
        })
        .collect()
}
