//! Listener certificates that a reload replaces without a restart.
//!
//! Each TLS listener answers handshakes with whatever [`ListenerCert`] holds now: the
//! certificate chain and key are read at start and again at every reload (SIGHUP, or
//! `--watch` seeing the files change), so a renewed certificate (cert-manager, certbot)
//! is served from the next handshake on; connections already up keep theirs. A pair that
//! does not load (unreadable, not PEM, key not matching the certificate) refuses the reload
//! whole, and the running certificate stays.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// The certificate one TLS listener serves, and the files it comes from.
pub(crate) struct ListenerCert {
    cert_file: String,
    key_file: String,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for ListenerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCert")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// A chain and key read from their files, checked to belong together.
#[derive(Debug)]
pub(crate) struct Loaded(Arc<CertifiedKey>);

impl ListenerCert {
    pub(crate) fn load(cert_file: &str, key_file: &str) -> Result<Self, String> {
        let Loaded(key) = read(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_string(),
            key_file: key_file.to_string(),
            current: ArcSwap::new(key),
        })
    }

    /// Read the files again (a reload's first step: nothing changes yet).
    pub(crate) fn reread(&self) -> Result<Loaded, String> {
        read(&self.cert_file, &self.key_file)
    }

    /// Serve `loaded` from the next handshake on.
    pub(crate) fn install(&self, loaded: Loaded) {
        self.current.store(loaded.0);
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(cert_file: &str, key_file: &str) -> Result<Loaded, String> {
    let (chain, key) = pingora::tls::load_certs_and_key_files(cert_file, key_file)
        .map_err(|e| format!("{cert_file}, {key_file}: {e}"))?
        .ok_or_else(|| format!("{cert_file}, {key_file}: no certificate or no private key"))?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{cert_file}, {key_file}: {e}"))?;
    Ok(Loaded(Arc::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &std::path::Path, name: &str) -> (String, String, Vec<u8>) {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, p) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, k.cert.pem()).unwrap();
        std::fs::write(&p, k.key_pair.serialize_pem()).unwrap();
        let der = k.cert.der().to_vec();
        (c.display().to_string(), p.display().to_string(), der)
    }

    fn served(c: &ListenerCert) -> Vec<u8> {
        c.current.load().cert[0].to_vec()
    }

    #[test]
    fn a_reread_pair_is_served_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = pair(dir.path(), "a");
        let c = ListenerCert::load(&cert, &key).unwrap();
        assert_eq!(served(&c), first);

        // Renewed in place.
        let (new_cert, new_key, second) = pair(dir.path(), "b");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        let loaded = c.reread().unwrap();
        assert_eq!(served(&c), first, "nothing changes before install");
        c.install(loaded);
        assert_eq!(served(&c), second);

        // A key that is not the certificate's, a truncated file, a missing one: refused.
        let (_, other_key, _) = pair(dir.path(), "c");
        std::fs::copy(&other_key, &key).unwrap();
        assert!(c.reread().unwrap_err().contains(&key));
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap();
        assert!(c.reread().is_err());
        std::fs::remove_file(&cert).unwrap();
        assert!(c.reread().is_err());
        assert_eq!(served(&c), second, "the running certificate stays");
    }
}
