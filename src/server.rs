//! Assembles and runs the Pingora server from a validated config.
//!
//! Services: the proxy (one per h2c setting, sharing one route table and one connection
//! table, [`connections`]), the admin listener and the reload watcher.
//!
//! Signals:
//! - SIGTERM and SIGINT drain: `/readyz` turns 503 and every response carries
//!   `Connection: close` at once; the listeners keep accepting for `server.shutdown_delay`
//!   (the time a load balancer takes to stop sending), then close; in-flight requests get
//!   `server.grace_period`, then the process exits. A second SIGTERM/SIGINT skips the rest of
//!   the delay.
//! - SIGQUIT hands the listening sockets to a new process started with `--upgrade` (Pingora's
//!   zero-downtime upgrade, over `server.upgrade_socket`): both accept for Pingora's 5 s, then
//!   this one stops accepting and drains as above. Without a new process waiting on the
//!   socket, SIGQUIT is refused (logged) instead of leaving nothing listening.
//! - SIGHUP reloads routes and upstreams from the config file without dropping a connection.

pub mod connections;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{AdminService, Health};
use crate::config::model::{SameSitePolicy, SessionStore};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::oidc::{Auth, Provider, RedirectPolicy};
use crate::proxy::{Gateway, Runtime};
use crate::session::{self, CookieSettings, Keys, SessionCache, SessionManager, Store};
use crate::tasks::Tasks;

/// SIGTERM and SIGINT both drain: an operator's Ctrl-C should not cut requests either.
/// Pingora stops accepting the moment `recv` returns, so the shutdown delay is spent here.
struct Signals {
    health: Arc<Health>,
    drain: Arc<connections::Drain>,
    shutdown_delay: Duration,
    upgrade_socket: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => {
                    // Pingora sends the sockets, then stops accepting even when no process
                    // took them: only hand over to a process that is waiting for them.
                    // A file left by a killed `--upgrade` process is no listener: Pingora would
                    // fail to connect (ECONNREFUSED) and close the listeners all the same.
                    let waiting = upgrade_listener_waiting(&self.upgrade_socket);
                    if !waiting {
                        tracing::error!(upgrade_socket = %self.upgrade_socket.display(), "SIGQUIT ignored: no new process is listening on the upgrade socket (none, or a stale file left by a process that died; start `authgate run --upgrade` first, then send SIGQUIT within 5 s)");
                        continue;
                    }
                    // The hand-over starts now: this process leaves the load balancer's
                    // rotation, as on SIGTERM.
                    self.health.draining.store(true, Ordering::Release);
                    self.drain.begin();
                    tracing::info!(upgrade_socket = %self.upgrade_socket.display(), "SIGQUIT: handing the listening sockets to the new process; responses now close their connections");
                    return ShutdownSignal::GracefulUpgrade;
                }
            };
            self.health.draining.store(true, Ordering::Release);
            self.drain.begin();
            tracing::info!(
                shutdown_delay = ?self.shutdown_delay,
                "{name}: draining: /readyz answers 503, responses close their connections, listeners close after the shutdown delay"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.shutdown_delay) => {}
                _ = term.recv() => tracing::info!("SIGTERM again: listeners close now"),
                _ = int.recv() => tracing::info!("SIGINT again: listeners close now"),
            }
            return ShutdownSignal::GracefulTerminate;
        }
    }
}

/// Whether a live process listens on the unix socket at `path` (a new process started with
/// `--upgrade`, waiting for the listening sockets).
///
/// The file alone proves nothing: a process killed while waiting leaves it behind. Nor can the
/// check `connect()`: the waiting process accepts exactly one connection and takes it as the
/// hand-over, so a probe connection would be the one it reads (nothing) while Pingora's own
/// connection is never accepted. The kernel's table of unix sockets (`/proc/net/unix`) says
/// whether a listening socket is bound at that path, which is what a connect would find out,
/// without being accepted. Where that table is not readable (not Linux, where Pingora has no
/// upgrade anyway), the file check remains.
pub fn upgrade_listener_waiting(path: &std::path::Path) -> bool {
    let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => unix_listener_bound(&table, path),
        Err(_) => true,
    }
}

/// `__SO_ACCEPTCON` in the `Flags` column of `/proc/net/unix`: a listening socket.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Whether `table` (the text of `/proc/net/unix`) has a listening socket bound at `path`
/// (compared as written and canonicalized, since a relative bind shows as written).
fn unix_listener_bound(table: &str, path: &std::path::Path) -> bool {
    let canonical = std::fs::canonicalize(path).ok();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(bound)) = (cols.get(3), cols.get(7)) else {
            return false;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        if !listening {
            return false;
        }
        let bound = std::path::Path::new(bound);
        bound == path
            || canonical
                .as_deref()
                .is_some_and(|c| std::fs::canonicalize(bound).is_ok_and(|b| b == c))
    })
}

/// Before a `--upgrade` start: a socket file at `path` with no process listening on it is left
/// from a process that died while waiting; remove it (Pingora also unlinks before binding;
/// this says so in the log). A live one is left alone: another process is waiting there.
fn remove_stale_upgrade_socket(path: &std::path::Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && !upgrade_listener_waiting(path) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::warn!(upgrade_socket = %path.display(), "removed a stale upgrade socket (left by a process that died while waiting)")
            }
            Err(e) => {
                tracing::warn!(upgrade_socket = %path.display(), error = %e, "stale upgrade socket not removable")
            }
        }
    }
}

#[cfg(test)]
mod upgrade_socket_tests {
    use super::*;

    #[test]
    fn a_stale_socket_file_is_no_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.sock");
        assert!(!upgrade_listener_waiting(&path), "no file");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(upgrade_listener_waiting(&path), "live listener");
        drop(l);
        assert!(path.exists(), "the file outlives the socket");
        assert!(!upgrade_listener_waiting(&path), "stale file");
        remove_stale_upgrade_socket(&path);
        assert!(!path.exists());
    }

    #[test]
    fn proc_net_unix_parsing() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a.sock\n\
0000000000000000: 00000002 00000000 00000000 0001 03 1235 /run/b.sock\n";
        assert!(unix_listener_bound(
            table,
            std::path::Path::new("/run/a.sock")
        ));
        assert!(!unix_listener_bound(
            table,
            std::path::Path::new("/run/b.sock")
        ));
        assert!(!unix_listener_bound(
            table,
            std::path::Path::new("/run/c.sock")
        ));
    }
}

/// Reloads routes and upstreams on SIGHUP. Listener, admin and server settings need a
/// restart (or a SIGQUIT upgrade); a reload that changes them says so in the log.
struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    loaded: Config,
}

impl Reloader {
    fn reload(&self) {
        match config::load(&self.path) {
            Ok(new) => {
                let listeners = |c: &Config| {
                    c.listeners
                        .iter()
                        .map(|l| {
                            (
                                l.address,
                                l.h2c,
                                l.tls.as_ref().map(|t| t.cert_file.clone()),
                            )
                        })
                        .collect::<Vec<_>>()
                };
                if listeners(&new) != listeners(&self.loaded)
                    || new.admin_address != self.loaded.admin_address
                {
                    tracing::warn!("listener or admin address changes take effect after a restart");
                }
                self.runtime
                    .store(Arc::new(Runtime::new(&new, &self.metrics)));
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(path = %self.path.display(), routes = new.routes.len(), "config reloaded");
            }
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                for e in &errors.0 {
                    tracing::error!(error = %e, "config reload rejected; keeping the running config");
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot watch SIGHUP; reload disabled");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Bind-test every public address: Pingora keeps running without a listener whose port is
/// taken, which would look healthy while serving nothing.
fn check_addresses(config: &Config) -> anyhow::Result<()> {
    for l in &config.listeners {
        std::net::TcpListener::bind(l.address)
            .with_context(|| format!("cannot listen on {}", l.address))?;
    }
    Ok(())
}

/// The admin listener, bound with `SO_REUSEPORT` so that a process started with `--upgrade`
/// can listen on the same address while this one drains (Pingora hands over only the proxy
/// listeners). Outside an upgrade, a plain bind first: another process on the address is
/// an error, as for the proxy listeners.
fn bind_admin(
    addr: std::net::SocketAddr,
    upgrade: bool,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<std::net::TcpListener> {
    let context = || format!("cannot listen on admin address {addr}");
    if !upgrade {
        drop(std::net::TcpListener::bind(addr).with_context(context)?);
    }
    let _enter = rt.enter();
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(context)?;
    socket.set_reuseaddr(true).with_context(context)?;
    socket.set_reuseport(true).with_context(context)?;
    socket.bind(addr).with_context(context)?;
    let listener = socket.listen(1024).with_context(context)?;
    listener.into_std().with_context(context)
}

/// Sessions, providers and the login flow, with their background tasks spawned on `rt`
/// through `tasks` (discovery/JWKS refresh, cache invalidation listener, sweepers, Sentinel
/// watchers): they run until `tasks` is shut down. `None` without providers.
pub fn build_auth(
    config: &Config,
    metrics: &Arc<Metrics>,
    rt: &tokio::runtime::Handle,
    tasks: &Tasks,
) -> anyhow::Result<Option<Arc<Auth>>> {
    if config.providers.is_empty() {
        return Ok(None);
    }
    let _enter = rt.enter();
    let s = &config.session;
    let store = match s.store {
        SessionStore::Memory => Store::memory(),
        SessionStore::Redis => {
            let topology = s.redis.as_ref().context("session.redis_url missing")?;
            let options = session::redis_conn::RedisOptions {
                topology,
                username: s.redis_username.as_deref(),
                password: s.redis_password.as_ref().map(|p| p.expose()),
                ca: s.redis_ca.as_deref(),
                timeout: s.redis_timeout,
                min_replicas_ack: s.redis_min_replicas_ack,
                tasks,
            };
            Store::Redis(Box::new(
                session::store::RedisStore::new(&options, &s.redis_prefix)
                    .map_err(|e| anyhow::anyhow!("session Redis settings: {e}"))?,
            ))
        }
    };
    store.observe_pending(metrics.pending());
    let secret: Vec<u8> = match &s.secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        // Memory store: one process, so a per-process key is enough (sessions end on restart
        // anyway).
        None => session::crypto::random::<32>().to_vec(),
    };
    let cache = SessionCache::new(s.cache_max_age, s.cache_max_entries, !store.is_redis());
    let cookie = CookieSettings {
        host_name: format!("__Host-{}", s.cookie_name),
        name: s.cookie_name.clone(),
        secure: s.cookie_secure,
        same_site: match s.cookie_same_site {
            SameSitePolicy::Lax => cookie::SameSite::Lax,
            SameSitePolicy::Strict => cookie::SameSite::Strict,
        },
        domain: s.cookie_domain.clone(),
        idle_timeout: s.idle_timeout,
        absolute_timeout: s.absolute_timeout,
        touch_interval: s.touch_interval,
    };
    let sessions = Arc::new(SessionManager::new(
        store.clone(),
        Keys::derive(&secret),
        cache,
        cookie,
        config.identity_headers.clone(),
        metrics.clone(),
    ));
    let providers: Vec<Arc<Provider>> = config
        .providers
        .iter()
        .map(|p| Ok(Arc::new(Provider::new(p.clone(), provider_http(p)?))))
        .collect::<anyhow::Result<_>>()?;
    for p in &providers {
        tasks.spawn("provider refresh", p.clone().run_refresh());
    }
    tasks.spawn(
        "invalidation listener",
        sessions.clone().run_invalidation_listener(),
    );
    let bearer = crate::oidc::BearerVerifier::new(
        providers.clone(),
        config.identity_headers.clone(),
        config.bearer_cache_entries,
    );
    let assertion = crate::assertion::Signer::new(
        config.assertion.key_file.as_deref(),
        &config.assertion.issuer,
        config.assertion.ttl,
    )?;
    let refresher = Arc::new(crate::oidc::Refresher::new(
        sessions.clone(),
        providers.clone(),
        s.refresh_lead,
        s.refresh_wait,
        metrics.clone(),
    ));
    let auth = Arc::new(Auth {
        refresher,
        assertion,
        assertion_header: config.assertion.header.clone().into(),
        bearer,
        providers,
        sessions,
        redirects: RedirectPolicy::new(config.allowed_redirect_hosts.iter().map(String::as_str)),
        prefix: config.gateway_prefix.clone(),
        login_ttl: s.login_timeout,
        max_pending_logins: s.max_pending_logins,
        max_return_url_bytes: s.max_return_url_bytes,
        metrics: metrics.clone(),
    });
    {
        let auth = auth.clone();
        tasks.spawn("sweeper", async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                auth.sessions.cache.sweep();
                auth.refresher.sweep();
                auth.bearer.sweep();
                if let Store::Memory(m) = &auth.sessions.store {
                    m.sweep();
                }
                // Token expiries in shared records are on Redis' clock: keep its offset from
                // ours known even on a replica that signs nobody in.
                if auth.sessions.store.is_redis() {
                    let _ = auth.sessions.store.sync_clock().await;
                }
            }
        });
    }
    Ok(Some(auth))
}

/// Build and run the server until it is shut down by a signal. `upgrade`: take the
/// listening sockets over from a running process (which hands them over on SIGQUIT).
pub fn run(config: Config, config_path: Option<PathBuf>, upgrade: bool) -> anyhow::Result<()> {
    crate::jwt::crypto::install();
    // In an upgrade the old process holds the addresses until it hands them over.
    if !upgrade {
        check_addresses(&config)?;
    }

    let metrics = Arc::new(Metrics::new());
    // Background work that is not request handling (provider refresh, Redis pub/sub) runs on
    // its own small runtime, alive as long as the server.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("authgate-control")
        .enable_all()
        .build()
        .context("control runtime")?;
    let admin_listener = bind_admin(config.admin_address, upgrade, &control)?;
    // Stopped once the server has: no task outlives the gateway (a Redis connection left
    // open, a provider still polled).
    let tasks = Tasks::new();
    let auth = build_auth(&config, &metrics, control.handle(), &tasks)?;
    let health = Arc::new(Health::new(auth.clone()));
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::new(&config, &metrics)));

    // Pingora counts whole seconds; round up so "500ms" still drains.
    let secs = |d: std::time::Duration| Some(d.as_secs_f64().ceil() as u64);
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: secs(config.server.grace_period),
        graceful_shutdown_timeout_seconds: secs(config.server.shutdown_timeout),
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_socket.clone(),
        ..ServerConf::default()
    };
    if upgrade {
        remove_stale_upgrade_socket(std::path::Path::new(&config.server.upgrade_socket));
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With `upgrade`, this waits (Pingora: 5 s at most) for the old process's sockets; every
    // fallible step of the start is done by now, so a bad config cannot take them and die.
    server.bootstrap();

    let drain = Arc::new(connections::Drain::default());
    let table = connections::Connections::new(connections::Limits {
        max_connections: config.server.max_connections,
        keepalive_timeout: config.server.keepalive_timeout,
        request_header_timeout: config.server.request_header_timeout,
    });
    let gateway =
        Gateway::new(runtime.clone(), metrics.clone(), auth.clone()).with_drain(drain.clone());
    for h2c in [false, true] {
        let listeners: Vec<_> = config.listeners.iter().filter(|l| l.h2c == h2c).collect();
        if listeners.is_empty() {
            continue;
        }
        let name = if h2c {
            "authgate proxy (h2c)"
        } else {
            "authgate proxy"
        };
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway.clone());
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        opts.h2_idle_timeout = Some(config.server.keepalive_timeout);
        proxy.server_options = Some(opts);
        let mut svc = Service::new(
            name.to_string(),
            connections::Driver::new(proxy, table.clone(), h2c),
        );
        for l in listeners {
            let addr = l.address.to_string();
            // No read buffer under the parser: Pingora reads a request head into a buffer of
            // its own (4 KiB to start) and bodies into another, so its default 64 KiB one per
            // connection only holds memory (most of what an idle connection cost).
            let mut endpoint = ListenerConfig::tcp(addr.clone())
                .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
            if let Some(tls) = &l.tls {
                let mut settings = TlsSettings::intermediate(&tls.cert_file, &tls.key_file)
                    .map_err(|e| anyhow::anyhow!("TLS listener {addr}: {e}"))?;
                settings.enable_h2();
                endpoint = endpoint.tls(settings);
            }
            svc.add_listener(endpoint);
        }
        server.add_service(svc);
    }
    server.add_service(background_service(
        "admin",
        AdminService::new(
            admin_listener,
            metrics.clone(),
            health.clone(),
            crate::admin::sessions::SessionsApi::new(config.admin_token.clone(), auth.clone()),
        ),
    ));
    if let Some(path) = config_path {
        server.add_service(background_service(
            "reload",
            Reloader {
                path,
                runtime,
                metrics,
                loaded: config.clone(),
            },
        ));
    }

    for l in &config.listeners {
        tracing::info!(address = %l.address, tls = l.tls.is_some(), h2c = l.h2c, upgrade, "listening");
    }
    tracing::info!(address = %config.admin_address, "admin listening (/healthz /readyz /metrics)");
    health.started.store(true, Ordering::Release);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            health,
            drain,
            shutdown_delay: config.server.shutdown_delay,
            upgrade_socket: config.server.upgrade_socket.clone().into(),
        }),
    });
    let aborted = control.block_on(tasks.shutdown(std::time::Duration::from_secs(1)));
    tracing::debug!(aborted = aborted.len(), "background tasks stopped");
    control.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP client for one provider (discovery, JWKS, token, userinfo, introspection). Every
/// provider's client has the same timeouts, redirect policy (none) and user agent; only the
/// roots its TLS certificate may chain to differ: `ca_file` → exactly those certificates
/// instead of the bundled web roots; `system_trust_store = true` → the OS store as well.
///
/// Outbound proxy: reqwest's default, read from the environment when the client is built:
/// `HTTPS_PROXY` for https issuers, `HTTP_PROXY` for http ones, `ALL_PROXY` for both, and
/// `NO_PROXY` (hosts, `.domain` suffixes, IPs, CIDRs, `*`) to go direct. Loopback is not
/// exempt unless `NO_PROXY` names it; under CGI (`REQUEST_METHOD` set) no proxy is used.
fn provider_http(p: &config::provider::ProviderSettings) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
        // The OS store only when asked (the feature turns it on by default).
        .tls_built_in_native_certs(p.tls.system_trust_store)
        .connector_layer(tower_layer::layer_fn({
            let provider: Arc<str> = p.id.as_str().into();
            move |inner| ConnectLog {
                inner,
                provider: provider.clone(),
            }
        }));
    if let Some(cas) = &p.tls.ca_der {
        b = b.tls_built_in_webpki_certs(false);
        for der in cas {
            let cert = reqwest::Certificate::from_der(der)
                .with_context(|| format!("provider {}: ca_file", p.id))?;
            b = b.add_root_certificate(cert);
        }
    }
    b.build()
        .with_context(|| format!("HTTP client for provider {}", p.id))
}

/// Logs why a connection to a provider could not be made (TCP, proxy, TLS), with the whole
/// cause chain (`invalid peer certificate: UnknownIssuer`): reqwest's own error, which the
/// provider's log line carries, only says "error sending request".
#[derive(Clone)]
struct ConnectLog<S> {
    inner: S,
    provider: Arc<str>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, R> tower_service::Service<R> for ConnectLog<S>
where
    S: tower_service::Service<R, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connect = self.inner.call(req);
        let provider = self.provider.clone();
        Box::pin(async move {
            connect.await.inspect_err(|e| {
                let mut cause = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    cause.push_str(": ");
                    cause.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::warn!(provider = %provider, error = %cause, "cannot connect to the provider");
            })
        })
    }
}
