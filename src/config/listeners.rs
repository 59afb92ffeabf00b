//! `[[listeners]]` and `[admin]`: where the gateway accepts connections, and the admin API's
//! token. The admin listener never shares a public listener's address.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::defaults as d;
use super::error::Reporter;
use super::fields::{readable_file, secret_value, socket_addr, span};
use super::file;
use super::model::{ListenerSettings, TlsFiles};
use super::secret::Secret;

/// Every `[[listeners]]`, or the default one when none is configured.
pub(super) fn listeners(rep: &mut Reporter, list: &[file::Listener]) -> Vec<ListenerSettings> {
    let mut listeners = Vec::new();
    let mut seen_addrs = HashSet::new();
    for (i, l) in list.iter().enumerate() {
        let key = |k: &str| format!("listeners[{i}].{k}");
        let Some(address) = socket_addr(rep, &key("address"), &l.address) else {
            continue;
        };
        // Port 0: a free port each, picked at start, so no clash.
        if address.port() != 0 && !seen_addrs.insert(address) {
            rep.error(
                key("address"),
                span(&l.address),
                "address used by another listener",
            );
        }
        let tls = tls_files(rep, i, l);
        if tls.is_some() && l.h2c {
            rep.error(
                key("h2c"),
                span(&l.address),
                "h2c is for plain listeners; TLS listeners negotiate HTTP/2 by ALPN",
            );
        }
        listeners.push(ListenerSettings {
            address,
            h2c: l.h2c,
            tls,
        });
    }
    if list.is_empty() {
        listeners.push(ListenerSettings {
            address: default_addr(d::LISTEN),
            h2c: false,
            tls: None,
        });
    }
    listeners
}

fn tls_files(rep: &mut Reporter, i: usize, l: &file::Listener) -> Option<TlsFiles> {
    let key = |k: &str| format!("listeners[{i}].{k}");
    match (&l.tls_cert_file, &l.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            match (
                readable_file(rep, &key("tls_cert_file"), c),
                readable_file(rep, &key("tls_key_file"), k),
            ) {
                (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                    cert_file,
                    key_file,
                }),
                _ => None,
            }
        }
        (Some(c), None) => {
            rep.error(
                key("tls_key_file"),
                span(c),
                "tls_cert_file needs tls_key_file",
            );
            None
        }
        (None, Some(k)) => {
            rep.error(
                key("tls_cert_file"),
                span(k),
                "tls_key_file needs tls_cert_file",
            );
            None
        }
    }
}

/// `[admin]`: its address (not one of the configured `listeners`', empty when none is
/// configured) and the optional API token.
pub(super) fn admin(
    rep: &mut Reporter,
    f: &file::Admin,
    listeners: &[ListenerSettings],
) -> (SocketAddr, Option<Secret>) {
    let address = match &f.address {
        None => default_addr(d::ADMIN_ADDRESS),
        Some(a) => {
            let addr = socket_addr(rep, "admin.address", a)
                .unwrap_or_else(|| default_addr(d::ADMIN_ADDRESS));
            // Port 0: each gets its own free port at start.
            if addr.port() != 0 && listeners.iter().any(|l| l.address == addr) {
                rep.error(
                    "admin.address",
                    span(a),
                    "the admin listener must not share a public listener's address",
                );
            }
            addr
        }
    };
    let token = secret_value(
        rep,
        "admin.token",
        &f.token,
        "admin.token_file",
        &f.token_file,
    );
    if token
        .as_ref()
        .is_some_and(|t| t.expose().len() < d::ADMIN_TOKEN_MIN_BYTES)
    {
        rep.error(
            "admin.token",
            f.token.as_ref().or(f.token_file.as_ref()).and_then(span),
            format!("must be at least {} bytes", d::ADMIN_TOKEN_MIN_BYTES),
        );
    }
    (address, token)
}

fn default_addr(s: &str) -> SocketAddr {
    s.parse().expect("valid default address")
}
