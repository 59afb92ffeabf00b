//! Upstream pools: which server gets the next request, and how it is reached.
//!
//! Each upstream keeps a ready-made [`HttpPeer`] template (TLS, CA, SNI, timeouts) per
//! server, so picking a peer is an atomic increment and a clone. Passive health checking
//! follows nginx's `max_fails`/`fail_timeout`: after `max_fails` consecutive failures a server
//! is skipped for `fail_timeout`; when every server is marked down they are all tried anyway,
//! because a guess that they recovered beats a certain 502.
//!
//! Servers written as names follow DNS: [`follow`] looks them up again every
//! `resolve_interval` on the control runtime, never on the request path, and every address a
//! name has (IPv4 and IPv6) becomes a server. The list is swapped whole ([`ArcSwap`]): a
//! request reads it without a lock, and a server whose address stays keeps its health. A
//! name that does not resolve (yet, or any more: no such name, no address) has no server, so
//! its requests get the dead-upstream 502 rather than go to addresses that may belong to
//! someone else by now (a deleted Kubernetes Service's pod IPs are reused). Only a lookup
//! that failed for now (`EAI_AGAIN`: the resolver did not answer) keeps the addresses last
//! seen: a DNS outage should not take down upstreams that are still there.
//!
//! Not Pingora's `LoadBalancer`: its health is active checks only, it would replace the
//! nginx-style `max_fails`/`fail_timeout` passive health (and the retry on the next server)
//! that the proxy and its tests rely on; the pool here adds discovery to that instead.
//!
//! With `health_path`, [`check_health`] also asks every server `GET path` every
//! `health_interval`: a failure (not 2xx/3xx, or no answer within `health_timeout`) marks
//! it down until a check passes. It shares the passive mark (`down_until_ms` = forever), so
//! the request path reads one field either way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::model::{ServerAddr, UpstreamSettings};

/// Milliseconds on a process-local monotonic clock (0 = "not marked down").
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One address of one configured server, with its passive health.
#[derive(Debug)]
pub(crate) struct Server {
    peer: HttpPeer,
    /// Index of the configured server (URL) this address comes from.
    target: usize,
    addr: SocketAddr,
    /// `Host` value when the client's Host is not passed through.
    authority: HeaderValue,
    consecutive_fails: AtomicU32,
    down_until_ms: AtomicU64,
}

impl Server {
    pub(crate) fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    pub(crate) fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }
}

/// A named group of servers; shared by routes through `Arc`.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    settings: UpstreamSettings,
    /// The CA for every peer, parsed once.
    ca: Option<Arc<[WrappedX509]>>,
    servers: ArcSwap<Vec<Arc<Server>>>,
    /// Per configured server: the addresses it had at the last successful lookup.
    resolved: std::sync::Mutex<Vec<Vec<SocketAddr>>>,
    next: AtomicUsize,
    max_fails: u32,
    fail_timeout: Duration,
    pub(crate) pass_host_header: bool,
}

impl Upstream {
    /// The pool with its IP literals; names have no server until [`Upstream::resolve`].
    pub(crate) fn new(s: &UpstreamSettings) -> Self {
        let ca: Option<Arc<[WrappedX509]>> = s.ca_der.as_ref().map(|ders| {
            ders.iter()
                .map(|d| WrappedX509::new(d.clone(), parse_x509))
                .collect::<Vec<_>>()
                .into()
        });
        let resolved = s
            .servers
            .iter()
            .map(|srv| {
                srv.ip
                    .map(|ip| SocketAddr::new(ip, srv.port))
                    .into_iter()
                    .collect()
            })
            .collect();
        let u = Self {
            name: s.name.as_str().into(),
            settings: s.clone(),
            ca,
            servers: ArcSwap::from_pointee(Vec::new()),
            resolved: std::sync::Mutex::new(resolved),
            next: AtomicUsize::new(0),
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout,
            pass_host_header: s.pass_host_header,
        };
        u.rebuild();
        u
    }

    fn new_server(&self, target: usize, addr: SocketAddr) -> Server {
        let s = &self.settings;
        let srv = &s.servers[target];
        let sni = s.server_name.clone().unwrap_or_else(|| srv.host.clone());
        let mut peer = HttpPeer::new(addr, s.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(s.connect_timeout);
        o.total_connection_timeout = Some(s.connect_timeout * 2);
        o.read_timeout = Some(s.read_timeout);
        o.write_timeout = Some(s.write_timeout);
        o.idle_timeout = Some(s.idle_timeout);
        o.verify_cert = s.verify_tls;
        o.verify_hostname = s.verify_tls;
        o.alpn = if s.http2 { ALPN::H2H1 } else { ALPN::H1 };
        if let Some(ca) = &self.ca {
            o.ca = Some(ca.clone());
        }
        Server {
            peer,
            target,
            addr,
            authority: HeaderValue::from_str(&srv.authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            consecutive_fails: AtomicU32::new(0),
            down_until_ms: AtomicU64::new(0),
        }
    }

    /// Swap in the servers of the addresses in `resolved`, keeping the ones (and their
    /// health) whose address stays. Only the resolver calls this, under the `resolved` lock.
    fn rebuild_from(&self, resolved: &[Vec<SocketAddr>]) -> bool {
        let old = self.servers.load();
        let next: Vec<Arc<Server>> = resolved
            .iter()
            .enumerate()
            .flat_map(|(t, addrs)| addrs.iter().map(move |a| (t, *a)))
            .map(|(t, a)| {
                old.iter()
                    .find(|s| s.target == t && s.addr == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(self.new_server(t, a)))
            })
            .collect();
        let changed =
            next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            self.servers.store(Arc::new(next));
        }
        changed
    }

    fn rebuild(&self) {
        let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        self.rebuild_from(&resolved);
    }

    /// Take the result of looking up configured server `target`: its addresses, or the
    /// lookup error (the addresses last seen stay). Returns whether the pool changed.
    fn update(
        &self,
        target: usize,
        lookup: std::io::Result<Vec<SocketAddr>>,
        initial: bool,
    ) -> bool {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        let host = &self.settings.servers[target].host;
        match lookup {
            Ok(mut addrs) => {
                addrs.sort_unstable();
                addrs.dedup();
                // Once when it happens (and at a config's first lookup), not every interval.
                if addrs.is_empty() && (!resolved[target].is_empty() || initial) {
                    tracing::warn!(upstream = %self.name, host = %host, "server name does not resolve: no server for it");
                }
                resolved[target] = addrs;
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, host = %host, error = %e, kept = resolved[target].len(), "server name lookup failed for now; keeping the addresses last seen");
                return false;
            }
        }
        let changed = self.rebuild_from(&resolved);
        if changed {
            let addrs: Vec<String> = resolved[target].iter().map(|a| a.to_string()).collect();
            tracing::info!(upstream = %self.name, host = %host, addresses = ?addrs, "server name resolved");
        }
        changed
    }

    /// The configured servers written as names (IP literals are never looked up).
    fn names(&self) -> impl Iterator<Item = (usize, &ServerAddr)> {
        self.settings
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ip.is_none())
    }

    /// Whether some server is written as a name (and so needs [`follow`]).
    pub(crate) fn has_names(&self) -> bool {
        self.names().next().is_some()
    }

    /// Look every name up once (on Tokio's blocking pool, through the system resolver);
    /// `initial`: the config's first lookup, before it serves.
    pub(crate) async fn resolve(&self, initial: bool) {
        for (t, srv) in self.names() {
            let lookup = tokio::net::lookup_host((srv.host.as_str(), srv.port))
                .await
                .map(|a| a.collect())
                .or_else(|e| {
                    if is_temporary(&e) {
                        Err(e)
                    } else {
                        Ok(Vec::new())
                    }
                });
            self.update(t, lookup, initial);
        }
    }

    pub(crate) fn resolve_interval(&self) -> Duration {
        self.settings.resolve_interval
    }

    /// Servers right now (names included once resolved).
    pub(crate) fn len(&self) -> usize {
        self.servers.load().len()
    }

    /// Next server by round robin, skipping servers marked down (unless all are) and the
    /// ones this request already tried (`tried` is a bit set of indices below 64). The
    /// index is for `tried`; the server itself stays valid when the list is swapped.
    pub(crate) fn select(&self, tried: u64) -> Option<(usize, Arc<Server>)> {
        let servers = self.servers.load();
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let untried = |i: usize| i >= 64 || tried & (1 << i) == 0;
        let up = |i: usize| servers[i].down_until_ms.load(Ordering::Relaxed) <= now;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| untried(i) && up(i))
            .or_else(|| (0..n).map(|k| (start + k) % n).find(|&i| untried(i)))
            .map(|i| (i, servers[i].clone()))
    }

    pub(crate) fn report_failure(&self, s: &Server) {
        if self.max_fails == 0 {
            return;
        }
        let fails = s.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.max_fails {
            self.mark_down(s, self.fail_timeout);
        }
    }

    fn mark_down(&self, s: &Server, d: Duration) {
        s.down_until_ms
            .store(now_ms() + d.as_millis() as u64, Ordering::Relaxed);
        s.consecutive_fails.store(0, Ordering::Relaxed);
        tracing::warn!(upstream = %self.name, server = %s.addr, "server marked down for {d:?}");
    }

    pub(crate) fn report_success(&self, s: &Server) {
        // Read first: a store on every request would bounce the cache line between cores.
        if s.consecutive_fails.load(Ordering::Relaxed) != 0 {
            s.consecutive_fails.store(0, Ordering::Relaxed);
        }
        if s.down_until_ms.load(Ordering::Relaxed) != 0 {
            s.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether a failed lookup says nothing about the name (the resolver did not answer:
/// `EAI_AGAIN`), rather than that it has no address. std reports getaddrinfo errors by their
/// `gai_strerror` text only; anything else counts as "no such name" (fail closed).
fn is_temporary(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.to_string()
            .contains("Temporary failure in name resolution")
}

/// `down_until_ms` of a server that failed its active health check: down until one passes.
const DOWN_UNTIL_CHECKED: u64 = u64::MAX;

/// Ask every server of `upstream` its health path every `health_interval`, for as long as
/// the pool is in use (held weakly, like [`follow`]).
pub(crate) async fn check_health(upstream: Weak<Upstream>) {
    let Some(hc) = upstream.upgrade().and_then(|u| u.settings.health.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(u) = upstream.upgrade() else { return };
        let servers = u.servers.load_full();
        let probes = servers.iter().map(|s| u.probe(s, &hc));
        let results = futures_util::future::join_all(probes).await;
        for (s, ok) in servers.iter().zip(results) {
            u.checked(s, ok);
        }
    }
}

impl Upstream {
    /// One active check of `s`: `GET path` with the server's Host, TLS as for requests.
    async fn probe(
        &self,
        s: &Server,
        hc: &crate::config::model::HealthCheck,
    ) -> Result<(), String> {
        let st = &self.settings;
        let srv = &st.servers[s.target];
        let scheme = if st.tls { "https" } else { "http" };
        // The name TLS verifies (as for requests: tls_server_name, else the host written).
        let host = st.server_name.as_deref().unwrap_or(&srv.host);
        let named = host.parse::<std::net::IpAddr>().is_err();
        let url = if named {
            format!("{scheme}://{host}:{}{}", s.addr.port(), hc.path)
        } else {
            format!("{scheme}://{}{}", s.addr, hc.path)
        };
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(hc.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("authgate-health/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!st.verify_tls)
            .tls_built_in_native_certs(false);
        if named {
            // This server's address, not whatever the name resolves to now.
            b = b.resolve(host, s.addr);
        }
        if let Some(ders) = &st.ca_der {
            b = b.tls_built_in_webpki_certs(false);
            for der in ders {
                if let Ok(c) = reqwest::Certificate::from_der(der) {
                    b = b.add_root_certificate(c);
                }
            }
        }
        let client = b.build().map_err(|e| e.to_string())?;
        // No client Host to pass: the server's own, as when pass_host_header = false.
        let req = client
            .get(&url)
            .header(http::header::HOST, s.authority.clone());
        match req.send().await {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
            Ok(r) => Err(format!("status {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", hc.timeout)),
            Err(e) => Err(format!("{e}")),
        }
    }

    /// Take the result of an active check of `s`.
    fn checked(&self, s: &Server, result: Result<(), String>) {
        let was_down = s.down_until_ms.load(Ordering::Relaxed) == DOWN_UNTIL_CHECKED;
        match result {
            Ok(()) if was_down => {
                s.down_until_ms.store(0, Ordering::Relaxed);
                tracing::info!(upstream = %self.name, server = %s.addr, "server passed its health check: up");
            }
            Ok(()) => {}
            Err(e) => {
                s.down_until_ms.store(DOWN_UNTIL_CHECKED, Ordering::Relaxed);
                if !was_down {
                    tracing::warn!(upstream = %self.name, server = %s.addr, error = %e, "server failed its health check: down");
                }
            }
        }
    }

    /// Whether this upstream has active health checks (and so needs [`check_health`]).
    pub(crate) fn has_health_check(&self) -> bool {
        self.settings.health.is_some()
    }
}

/// Longest wait for the first lookup of a config's names before it serves anyway.
pub(crate) const RESOLVE_PATIENCE: Duration = Duration::from_secs(5);

/// Look `upstream`'s names up again every `resolve_interval` for as long as the pool is in
/// use: the task holds it weakly and ends once the config that has it is replaced and its
/// last request is done. The first lookup is the config's own, before it serves.
pub(crate) async fn follow(upstream: Weak<Upstream>, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(u) = upstream.upgrade() else { return };
        u.resolve(false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ServerAddr;

    fn settings(servers: Vec<ServerAddr>, max_fails: u32) -> UpstreamSettings {
        UpstreamSettings {
            name: "u".into(),
            servers,
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
            resolve_interval: Duration::from_secs(10),
            health: None,
        }
    }

    fn upstream(n: usize, max_fails: u32) -> Upstream {
        Upstream::new(&settings(
            (0..n)
                .map(|i| ServerAddr {
                    ip: Some([127, 0, 0, 1].into()),
                    port: 1000 + i as u16,
                    host: "127.0.0.1".into(),
                    authority: format!("127.0.0.1:{}", 1000 + i),
                })
                .collect(),
            max_fails,
        ))
    }

    fn pick(u: &Upstream, tried: u64) -> Option<usize> {
        u.select(tried).map(|(i, _)| i)
    }

    fn report_failure(u: &Upstream, i: usize) {
        u.report_failure(&u.servers.load()[i]);
    }

    #[test]
    fn round_robin() {
        let u = upstream(3, 1);
        let picks: Vec<_> = (0..6).map(|_| pick(&u, 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn failed_server_is_skipped_then_restored() {
        let u = upstream(2, 2);
        report_failure(&u, 0);
        assert!(
            (0..4).any(|_| pick(&u, 0) == Some(0)),
            "one failure is below max_fails"
        );
        report_failure(&u, 0);
        assert!((0..4).all(|_| pick(&u, 0) == Some(1)));
        u.report_success(&u.servers.load()[0]);
        assert!((0..4).any(|_| pick(&u, 0) == Some(0)));
    }

    #[test]
    fn all_down_still_tries_and_retries_skip_tried() {
        let u = upstream(2, 1);
        report_failure(&u, 0);
        report_failure(&u, 1);
        assert!(pick(&u, 0).is_some());
        assert_eq!(pick(&u, 0b01), Some(1));
        assert_eq!(pick(&u, 0b11), None);
    }

    #[test]
    fn max_fails_zero_never_marks_down() {
        let u = upstream(2, 0);
        for _ in 0..5 {
            report_failure(&u, 0);
        }
        assert!((0..4).any(|_| pick(&u, 0) == Some(0)));
    }

    fn named(host: &str, port: u16) -> ServerAddr {
        ServerAddr {
            ip: None,
            port,
            host: host.into(),
            authority: format!("{host}:{port}"),
        }
    }

    fn addrs(u: &Upstream) -> Vec<String> {
        u.servers
            .load()
            .iter()
            .map(|s| s.addr.to_string())
            .collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_name_has_no_server_until_it_resolves() {
        let u = Upstream::new(&settings(vec![named("app.internal", 80)], 1));
        assert!(u.has_names());
        assert_eq!(u.len(), 0);
        assert!(u.select(0).is_none(), "no server: the dead-upstream answer");
        // A failed lookup leaves it so.
        assert!(!u.update(0, Err(std::io::Error::other("no such name")), true));
        assert_eq!(u.len(), 0);
        assert!(
            !upstream(1, 1).has_names(),
            "IP literals are never resolved"
        );
    }

    #[test]
    fn every_address_is_a_server_and_health_stays_with_the_address() {
        let mut list = vec![named("app.internal", 80)];
        list.push(ServerAddr {
            ip: Some([10, 0, 0, 9].into()),
            port: 81,
            host: "10.0.0.9".into(),
            authority: "10.0.0.9:81".into(),
        });
        let u = Upstream::new(&settings(list, 1));
        assert_eq!(addrs(&u), ["10.0.0.9:81"]);

        // IPv4 and IPv6, duplicates once.
        assert!(u.update(
            0,
            Ok(vec![
                sa("10.0.0.2:80"),
                sa("[fd00::1]:80"),
                sa("10.0.0.1:80"),
                sa("10.0.0.2:80")
            ]),
            false
        ));
        assert_eq!(
            addrs(&u),
            ["10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80", "10.0.0.9:81"]
        );
        let sni = u.servers.load()[2].peer.sni.clone();
        assert_eq!(sni, "app.internal", "SNI is the name, not the address");

        // 10.0.0.2 fails (max_fails 1): marked down.
        let down = u.servers.load()[1].clone();
        u.report_failure(&down);
        let is_down = |s: &Server| s.down_until_ms.load(Ordering::Relaxed) > now_ms();
        assert!(is_down(&down));

        // The same answer changes nothing.
        assert!(!u.update(
            0,
            Ok(vec![
                sa("10.0.0.1:80"),
                sa("10.0.0.2:80"),
                sa("[fd00::1]:80")
            ]),
            false
        ));

        // 10.0.0.1 goes, 10.0.0.3 comes: 10.0.0.2 keeps its state, the new one is up.
        assert!(u.update(
            0,
            Ok(vec![
                sa("10.0.0.3:80"),
                sa("10.0.0.2:80"),
                sa("[fd00::1]:80")
            ]),
            false
        ));
        assert_eq!(
            addrs(&u),
            ["10.0.0.2:80", "10.0.0.3:80", "[fd00::1]:80", "10.0.0.9:81"]
        );
        let now = u.servers.load();
        assert!(Arc::ptr_eq(&now[0], &down) && is_down(&now[0]));
        assert!(!is_down(&now[1]));
        // A server picked before the swap is still valid to report on.
        u.report_success(&down);
        assert!(!is_down(&now[0]));

        // A lookup error keeps the addresses last seen; an empty answer removes them.
        assert!(!u.update(0, Err(std::io::Error::other("timeout")), false));
        assert_eq!(u.len(), 4);
        assert!(u.update(0, Ok(vec![]), false));
        assert_eq!(addrs(&u), ["10.0.0.9:81"]);
    }

    #[tokio::test]
    async fn only_a_resolver_that_did_not_answer_keeps_the_addresses() {
        let Err(gone) = tokio::net::lookup_host(("no-such-upstream.invalid", 80)).await else {
            panic!("a .invalid name resolves");
        };
        assert!(!is_temporary(&gone), "{gone}");
        let again = std::io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        assert!(is_temporary(&again));
    }

    #[test]
    fn a_failed_health_check_marks_down_until_one_passes() {
        let u = upstream(2, 0);
        let s0 = u.servers.load()[0].clone();
        u.checked(&s0, Err("status 500".into()));
        assert!(
            (0..6).all(|_| pick(&u, 0) == Some(1)),
            "down, even with max_fails 0"
        );
        u.checked(&s0, Err("status 500".into()));
        assert!((0..6).all(|_| pick(&u, 0) == Some(1)), "still down");
        u.checked(&s0, Ok(()));
        assert!((0..6).any(|_| pick(&u, 0) == Some(0)), "up again");
    }

    #[tokio::test]
    async fn a_probe_without_an_answer_in_time_fails() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                conns.push(c);
            }
        });
        let mut st = settings(
            vec![ServerAddr {
                ip: Some([127, 0, 0, 1].into()),
                port,
                host: "127.0.0.1".into(),
                authority: format!("127.0.0.1:{port}"),
            }],
            1,
        );
        let hc = crate::config::model::HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
        };
        st.health = Some(hc.clone());
        let u = Upstream::new(&st);
        let s = u.servers.load()[0].clone();
        let e = u.probe(&s, &hc).await.unwrap_err();
        assert!(e.contains("no answer within 200ms"), "{e}");
        u.checked(&s, Err(e));
        assert_eq!(s.down_until_ms.load(Ordering::Relaxed), DOWN_UNTIL_CHECKED);
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system_resolver() {
        let u = Upstream::new(&settings(vec![named("localhost", 8080)], 1));
        u.resolve(true).await;
        let a = addrs(&u);
        assert!(
            !a.is_empty() && a.iter().all(|a| a == "127.0.0.1:8080" || a == "[::1]:8080"),
            "{a:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn follow_ends_when_the_pool_is_gone() {
        let u = Arc::new(Upstream::new(&settings(vec![named("localhost", 8080)], 1)));
        let task = tokio::spawn(follow(Arc::downgrade(&u), Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!task.is_finished());
        drop(u);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(task.is_finished());
    }
}
