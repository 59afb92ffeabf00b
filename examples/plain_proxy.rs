//! The benchmark baseline: a plain Pingora reverse proxy to one upstream, built from the same
//! `pingora` dependency (and features) as authgate, with nothing else on the request path.
//!
//!     cargo run --release --example plain_proxy -- 127.0.0.1:8081 127.0.0.1:3000 [THREADS] [fair]
//!         [--tls 127.0.0.1:8443 CERT_PEM KEY_PEM]
//!
//! `benches/load.sh` measures it next to authgate, so the gateway's cost is a ratio to what the
//! proxy engine costs on its own. With `fair`, it is configured as a production proxy would
//! be, with authgate's defaults: upstream connect (5 s, 10 s in all), read, write and pool idle
//! timeouts (60 s), and a 60 s keep-alive timeout for idle client connections. The ratio to the
//! fair proxy is then authgate's own work; the bare one (no timeouts) is kept as a second line.
//! `--tls` adds a TLS listener with HTTP/2 by ALPN, as authgate's TLS listeners have. It uses the system allocator, as Pingora does by default;
//! `plain_proxy_mimalloc` is the same proxy with authgate's allocator.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

struct Plain {
    upstream: String,
    /// `fair`: a peer template with production timeouts, cloned per request as authgate does.
    fair: Option<HttpPeer>,
}

/// Seconds an idle client connection is kept (authgate's `server.keepalive_timeout`).
const KEEPALIVE_SECS: u64 = 60;

fn fair_peer(upstream: &str) -> HttpPeer {
    use std::time::Duration;
    let mut peer = HttpPeer::new(upstream, false, String::new());
    let o = &mut peer.options;
    o.connection_timeout = Some(Duration::from_secs(5));
    o.total_connection_timeout = Some(Duration::from_secs(10));
    o.read_timeout = Some(Duration::from_secs(60));
    o.write_timeout = Some(Duration::from_secs(60));
    o.idle_timeout = Some(Duration::from_secs(60));
    peer
}

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _: &mut ()) -> Result<bool> {
        if self.fair.is_some() {
            session.set_keepalive(Some(KEEPALIVE_SECS));
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        if let Some(peer) = &self.fair {
            return Ok(Box::new(peer.clone()));
        }
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

pub(crate) fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: plain_proxy LISTEN_ADDR UPSTREAM_ADDR [THREADS] [fair]");
        std::process::exit(2);
    };
    let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(2);
    let fair = args.get(3).is_some_and(|a| a == "fair");
    let tls = args
        .iter()
        .position(|a| a == "--tls")
        .and_then(|i| Some((args.get(i + 1)?, args.get(i + 2)?, args.get(i + 3)?)));
    let dir = std::env::temp_dir();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: dir
            .join(format!("plain-proxy-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: dir
            .join(format!("plain-proxy-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Plain {
            upstream: upstream.clone(),
            fair: fair.then(|| fair_peer(upstream)),
        },
    );
    svc.add_tcp(listen);
    if let Some((addr, cert, key)) = tls {
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate(cert, key)
            .unwrap_or_else(|e| {
                eprintln!("plain_proxy: TLS listener {addr}: {e}");
                std::process::exit(2);
            });
        settings.enable_h2();
        svc.add_tls_with_settings(addr, None, settings);
    }
    server.add_service(svc);
    server.run_forever();
}
