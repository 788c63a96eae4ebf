//! TLS for the admin RPC (remote access): a certificate chain and key from
//! PEM files, read again on [`Tls::reload`] (the node calls it on SIGHUP) so
//! that a renewed certificate takes effect without a restart. A reload that
//! fails keeps the certificate in use and says why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// The certificate in use and where it comes from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let bad = |what: &Path, why: String| Error::Invalid(format!("rpc TLS: {}: {why}", what.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("cannot read a PEM certificate chain ({e})")))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(bad(
            cert,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            key,
            format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| bad(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        bad(
            key,
            format!("does not match the certificate in {} ({e})", cert.display()),
        )
    })?;
    Ok(ck)
}

impl Tls {
    /// Reads `cert` (PEM chain, leaf first) and `key` (PEM private key).
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Self>> {
        let ck = load(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<()> {
        let ck = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        Ok(())
    }

    /// The acceptor for incoming connections (TLS 1.2 and 1.3, HTTP/1.1).
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<Tls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_say_what_is_wrong_and_a_failed_reload_keeps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = Tls::open(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("cannot read"), "{e}");
        std::fs::write(&cert, "hello").unwrap();
        std::fs::write(&key, "hello").unwrap();
        let e = Tls::open(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");

        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, a.cert.pem()).unwrap();
        let e = Tls::open(&cert, &key).unwrap_err().to_string();
        assert!(
            e.contains("key.pem") && e.contains("not a PEM private key"),
            "{e}"
        );
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&key, b.key_pair.serialize_pem()).unwrap();
        let e = Tls::open(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("does not match the certificate"), "{e}");

        std::fs::write(&key, a.key_pair.serialize_pem()).unwrap();
        let tls = Tls::open(&cert, &key).unwrap();
        std::fs::write(&cert, "broken").unwrap();
        assert!(tls.reload().is_err());
        let before = tls.current.read().unwrap().cert[0].clone();
        assert_eq!(
            before.as_ref(),
            a.cert.der().as_ref(),
            "the old certificate stays"
        );
        std::fs::write(&cert, b.cert.pem()).unwrap();
        std::fs::write(&key, b.key_pair.serialize_pem()).unwrap();
        tls.reload().unwrap();
        assert_eq!(
            tls.current.read().unwrap().cert[0].as_ref(),
            b.cert.der().as_ref()
        );
    }
}
