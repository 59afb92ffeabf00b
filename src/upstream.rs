//! Upstream pools: which server gets the next request, and how it is reached.
//!
//! Each upstream holds its servers with a ready-made [`HttpPeer`] template (TLS, CA, SNI,
//! timeouts), so picking a peer is an atomic increment and a clone. Passive health checking
//! follows nginx's `max_fails`/`fail_timeout`: after `max_fails` consecutive failures a server
//! is skipped for `fail_timeout`; when every server is marked down they are all tried anyway,
//! because a guess that they recovered beats a certain 502.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::model::UpstreamSettings;

/// Milliseconds on a process-local monotonic clock (0 = "not marked down").
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
struct Server {
    peer: HttpPeer,
    addr: SocketAddr,
    /// `Host` value when the client's Host is not passed through.
    authority: HeaderValue,
    consecutive_fails: AtomicU32,
    down_until_ms: AtomicU64,
}

/// A named group of servers; shared by routes through `Arc`.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    servers: Vec<Server>,
    next: AtomicUsize,
    max_fails: u32,
    fail_timeout: Duration,
    pub(crate) pass_host_header: bool,
}

impl Upstream {
    pub(crate) fn new(s: &UpstreamSettings) -> Self {
        let ca: Option<Arc<[WrappedX509]>> = s.ca_der.as_ref().map(|ders| {
            ders.iter()
                .map(|d| WrappedX509::new(d.clone(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let servers = s
            .servers
            .iter()
            .map(|srv| {
                let sni = s.server_name.clone().unwrap_or_else(|| srv.host.clone());
                let mut peer = HttpPeer::new(srv.addr, s.tls, sni);
                let o = &mut peer.options;
                o.connection_timeout = Some(s.connect_timeout);
                o.total_connection_timeout = Some(s.connect_timeout * 2);
                o.read_timeout = Some(s.read_timeout);
                o.write_timeout = Some(s.write_timeout);
                o.idle_timeout = Some(s.idle_timeout);
                o.verify_cert = s.verify_tls;
                o.verify_hostname = s.verify_tls;
                o.alpn = if s.http2 { ALPN::H2H1 } else { ALPN::H1 };
                if let Some(ca) = &ca {
                    o.ca = Some(ca.clone());
                }
                Server {
                    peer,
                    addr: srv.addr,
                    authority: HeaderValue::from_str(&srv.authority)
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    consecutive_fails: AtomicU32::new(0),
                    down_until_ms: AtomicU64::new(0),
                }
            })
            .collect();
        Self {
            name: s.name.as_str().into(),
            servers,
            next: AtomicUsize::new(0),
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout,
            pass_host_header: s.pass_host_header,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.servers.len()
    }

    fn is_up(&self, i: usize, now: u64) -> bool {
        self.servers[i].down_until_ms.load(Ordering::Relaxed) <= now
    }

    /// Next server by round robin, skipping servers marked down (unless all are) and the
    /// ones this request already tried (`tried` is a bit set of indices below 64).
    pub(crate) fn select(&self, tried: u64) -> Option<usize> {
        let n = self.servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let untried = |i: usize| i >= 64 || tried & (1 << i) == 0;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| untried(i) && self.is_up(i, now))
            .or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| untried(i)))
    }

    pub(crate) fn peer(&self, i: usize) -> Box<HttpPeer> {
        Box::new(self.servers[i].peer.clone())
    }

    pub(crate) fn authority(&self, i: usize) -> &HeaderValue {
        &self.servers[i].authority
    }

    pub(crate) fn report_failure(&self, i: usize) {
        if self.max_fails == 0 {
            return;
        }
        let s = &self.servers[i];
        let fails = s.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.max_fails {
            s.down_until_ms.store(
                now_ms() + self.fail_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            s.consecutive_fails.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.name, server = %s.addr, "server marked down for {:?}", self.fail_timeout);
        }
    }

    pub(crate) fn report_success(&self, i: usize) {
        let s = &self.servers[i];
        // Read first: a store on every request would bounce the cache line between cores.
        if s.consecutive_fails.load(Ordering::Relaxed) != 0 {
            s.consecutive_fails.store(0, Ordering::Relaxed);
        }
        if s.down_until_ms.load(Ordering::Relaxed) != 0 {
            s.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ServerAddr;

    fn upstream(n: usize, max_fails: u32) -> Upstream {
        Upstream::new(&UpstreamSettings {
            name: "u".into(),
            servers: (0..n)
                .map(|i| ServerAddr {
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    host: "127.0.0.1".into(),
                    authority: format!("127.0.0.1:{}", 1000 + i),
                })
                .collect(),
            tls: false,
            ca_der: None,
            verify_tls: true,
            server_name: None,
            http2: false,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_fails,
            fail_timeout: Duration::from_secs(60),
            pass_host_header: true,
        })
    }

    #[test]
    fn round_robin() {
        let u = upstream(3, 1);
        let picks: Vec<_> = (0..6).map(|_| u.select(0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn failed_server_is_skipped_then_restored() {
        let u = upstream(2, 2);
        u.report_failure(0);
        assert!(
            (0..4).any(|_| u.select(0) == Some(0)),
            "one failure is below max_fails"
        );
        u.report_failure(0);
        assert!((0..4).all(|_| u.select(0) == Some(1)));
        u.report_success(0);
        assert!((0..4).any(|_| u.select(0) == Some(0)));
    }

    #[test]
    fn all_down_still_tries_and_retries_skip_tried() {
        let u = upstream(2, 1);
        u.report_failure(0);
        u.report_failure(1);
        assert!(u.select(0).is_some());
        assert_eq!(u.select(0b01), Some(1));
        assert_eq!(u.select(0b11), None);
    }

    #[test]
    fn max_fails_zero_never_marks_down() {
        let u = upstream(2, 0);
        for _ in 0..5 {
            u.report_failure(0);
        }
        assert!((0..4).any(|_| u.select(0) == Some(0)));
    }
}
