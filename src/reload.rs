//! The config at run time: what a reload changes, what needs a restart, and the parts of the
//! gateway that live across configs.
//!
//! A reload is all or nothing. Everything the request path reads from the config (routes,
//! upstreams, policies, header names, the gateway prefix, providers, session timeouts,
//! secrets read from files, TLS certificates renewed in place) is rebuilt into one new [`Runtime`] (with its [`Auth`]) and
//! swapped in whole, so a request sees one config, never a mix. What cannot change while
//! running (listener and admin addresses, the session store, the session secret, the
//! server's limits and log setup) makes the whole reload refused with
//! "restart required: KEY", and the running config stays.
//!
//! Built once per start ([`Assembly`]) and kept by every config: the session store and its
//! connections, the session cache (and its coherence with other replicas), the assertion
//! key when its settings are unchanged, and each provider whose settings are unchanged (its
//! discovery document and key set stay warm). A provider that is removed or changed stops
//! its background refresh.
//!
//! Reload work (file reads, DNS, provider setup) runs on a blocking thread, never on a
//! request thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::model::{AssertionSettings, SameSitePolicy, SessionStore};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::oidc::{Auth, AuthParts, Provider, RedirectPolicy, SharedAuth};
use crate::proxy::Runtime;
use crate::session::{self, CookieSettings, Keys, SessionCache, SessionManager, Store};
use crate::tasks::Tasks;

/// The config keys a running gateway cannot take on, that differ between `old` (as loaded
/// at start) and `new`. An address is unchanged when `new` names what `old` said or what
/// it was bound to (`bound`: port 0 replaced by the port the kernel gave).
pub(crate) fn restart_required(old: &Config, bound: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let listeners =
        new.listeners.len() == old.listeners.len()
            && new.listeners.iter().enumerate().all(|(i, l)| {
                *l == old.listeners[i] || bound.listeners.get(i).is_some_and(|b| b == l)
            });
    let admin = new.admin_address == old.admin_address || new.admin_address == bound.admin_address;
    let (s, t) = (&old.session, &new.session);
    let secret = |c: &Config| c.session.secret.as_ref().map(|s| s.expose().to_string());
    let checks = [
        ("listeners", !listeners),
        ("admin.address", !admin),
        (
            "admin.token",
            old.admin_token.as_ref().map(|t| t.expose())
                != new.admin_token.as_ref().map(|t| t.expose()),
        ),
        ("server.threads", a.threads != b.threads),
        ("server.grace_period", a.grace_period != b.grace_period),
        (
            "server.shutdown_timeout",
            a.shutdown_timeout != b.shutdown_timeout,
        ),
        (
            "server.shutdown_delay",
            a.shutdown_delay != b.shutdown_delay,
        ),
        ("server.pid_file", a.pid_file != b.pid_file),
        (
            "server.upgrade_socket",
            a.upgrade_socket != b.upgrade_socket,
        ),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.keepalive_timeout",
            a.keepalive_timeout != b.keepalive_timeout,
        ),
        (
            "server.request_header_timeout",
            a.request_header_timeout != b.request_header_timeout,
        ),
        ("log.format", old.log.format != new.log.format),
        ("log.level", old.log.level != new.log.level),
        ("session.store", s.store != t.store),
        ("session.redis_url", s.redis != t.redis),
        (
            "session.redis_username",
            s.redis_username != t.redis_username,
        ),
        (
            "session.redis_password",
            s.redis_password != t.redis_password,
        ),
        ("session.redis_ca_file", s.redis_ca != t.redis_ca),
        ("session.redis_prefix", s.redis_prefix != t.redis_prefix),
        ("session.redis_timeout", s.redis_timeout != t.redis_timeout),
        (
            "session.redis_min_replicas_ack",
            s.redis_min_replicas_ack != t.redis_min_replicas_ack,
        ),
        ("session.secret", secret(old) != secret(new)),
        ("session.cache_max_age", s.cache_max_age != t.cache_max_age),
        (
            "session.cache_max_entries",
            s.cache_max_entries != t.cache_max_entries,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

/// What every config of one start shares: the session store and cache (built at the first
/// config that has a provider), the running providers and the assertion signer.
pub struct Assembly {
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
    tasks: Arc<Tasks>,
    sessions: Mutex<Option<Arc<SessionBase>>>,
    providers: Mutex<HashMap<String, Running>>,
    /// The signer, its settings and a digest of its key file: a rotated key is a new signer.
    signer: Mutex<Option<(SignerKey, Arc<crate::assertion::Signer>)>>,
    /// The running config's [`Auth`], for the admin listener and the sweeper.
    current: SharedAuth,
}

/// The session store, the key material and the cache: one per start.
struct SessionBase {
    store: Store,
    secret: Vec<u8>,
    cache: Arc<SessionCache>,
}

/// A provider in use, with its background refresh (stopped when this is dropped).
struct Running {
    provider: Arc<Provider>,
    _refresh: Arc<Tasks>,
}

impl Assembly {
    /// Background work goes on `rt`, spawned through `tasks` (so it stops on shutdown). The
    /// sweeper starts here and follows whichever config is running.
    pub fn new(metrics: Arc<Metrics>, rt: tokio::runtime::Handle, tasks: Arc<Tasks>) -> Self {
        let current: SharedAuth = Arc::new(ArcSwapOption::empty());
        {
            let _enter = rt.enter();
            let current = current.clone();
            tasks.spawn("sweeper", async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    if let Some(auth) = current.load_full() {
                        auth.sweep().await;
                    }
                }
            });
        }
        Self {
            metrics,
            rt,
            tasks,
            sessions: Mutex::default(),
            providers: Mutex::default(),
            signer: Mutex::default(),
            current,
        }
    }

    /// The running config's [`Auth`].
    pub(crate) fn shared(&self) -> SharedAuth {
        self.current.clone()
    }

    /// The [`Auth`] for `config` (`None`: no provider), reusing what the running one has
    /// where the settings are the same. Nothing changes until [`Assembly::commit`].
    pub fn build(&self, config: &Config) -> anyhow::Result<Built> {
        if config.providers.is_empty() {
            return Ok(Built::default());
        }
        let _enter = self.rt.enter();
        let base = self.session_base(config)?;
        let s = &config.session;
        let sessions = Arc::new(
            SessionManager::new(
                base.store.clone(),
                Keys::derive(&base.secret),
                base.cache.clone(),
                cookie_settings(config),
                config.identity_headers.clone(),
                self.metrics.clone(),
            )
            .holding_tokens(config.routes_send_tokens())
            .keeping_claims(config.claims_read()),
        );
        let mut fresh = Vec::new();
        let providers: Vec<Arc<Provider>> = {
            let running = self.providers.lock().unwrap_or_else(|e| e.into_inner());
            config
                .providers
                .iter()
                .map(|p| match running.get(&p.id) {
                    Some(r) if r.provider.settings == *p => Ok(r.provider.clone()),
                    _ => {
                        let new = Arc::new(
                            Provider::new(p.clone(), crate::oidc::client::provider_http(p)?)
                                .count_in(&self.metrics),
                        );
                        fresh.push(new.clone());
                        Ok(new)
                    }
                })
                .collect::<anyhow::Result<_>>()?
        };
        let assertion = {
            let signer = self.signer.lock().unwrap_or_else(|e| e.into_inner());
            match &*signer {
                Some((key, s)) if *key == signer_key(&config.assertion) => s.clone(),
                _ => Arc::new(crate::assertion::Signer::new(
                    config.assertion.key_file.as_deref(),
                    &config.assertion.issuer,
                    config.assertion.ttl,
                )?),
            }
        };
        let bearer = crate::oidc::BearerVerifier::new(
            providers.clone(),
            config.identity_headers.clone(),
            config.bearer_cache_entries,
        );
        let refresher = Arc::new(crate::oidc::Refresher::new(
            sessions.clone(),
            providers.clone(),
            s.refresh_lead,
            s.refresh_wait,
            self.metrics.clone(),
        ));
        let auth = Arc::new(Auth::new(AuthParts {
            refresher,
            assertion: assertion.clone(),
            assertion_header: config.assertion.header.clone().into(),
            bearer,
            providers,
            sessions,
            redirects: RedirectPolicy::new(
                config.allowed_redirect_hosts.iter().map(String::as_str),
            ),
            prefix: config.gateway_prefix.clone(),
            login_ttl: s.login_timeout,
            max_pending_logins: s.max_pending_logins,
            max_return_url_bytes: s.max_return_url_bytes,
            metrics: self.metrics.clone(),
        }));
        Ok(Built {
            auth: Some(auth),
            fresh,
            signer: Some((signer_key(&config.assertion), assertion)),
        })
    }

    /// Make `built` the running [`Auth`]: start its new providers' refresh, stop the refresh
    /// of those it no longer has, and forget cached sessions (what they carry, such as the
    /// identity header names, may have changed).
    pub fn commit(&self, built: Built) -> Option<Arc<Auth>> {
        let _enter = self.rt.enter();
        let mut running = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        for p in built.fresh {
            let refresh = Arc::new(self.tasks.child());
            refresh.spawn("provider refresh", p.clone().run_refresh());
            running.insert(
                p.id().to_string(),
                Running {
                    provider: p,
                    _refresh: refresh,
                },
            );
        }
        let kept: Vec<&str> = built
            .auth
            .iter()
            .flat_map(|a| a.providers().iter().map(|p| p.id()))
            .collect();
        running.retain(|id, _| kept.contains(&id.as_str()));
        drop(running);
        if let Some(signer) = built.signer {
            *self.signer.lock().unwrap_or_else(|e| e.into_inner()) = Some(signer);
        }
        if let Some(base) = &*self.sessions.lock().unwrap_or_else(|e| e.into_inner()) {
            base.cache.clear();
        }
        self.current.store(built.auth.clone());
        // A first sweep now (it also reads the store's clock), not in up to 30 s.
        if let Some(auth) = built.auth.clone() {
            self.tasks.spawn("sweep", async move { auth.sweep().await });
        }
        built.auth
    }

    /// Look `runtime`'s upstream names up again every `resolve_interval`, and run their
    /// active health checks, on the control runtime; each task holds its pool weakly and
    /// ends once the config is replaced.
    pub(crate) fn follow_upstreams(&self, runtime: &Runtime) {
        let _enter = self.rt.enter();
        for u in &runtime.upstreams {
            if u.has_names() {
                self.tasks.spawn(
                    "upstream resolve",
                    crate::upstream::follow(Arc::downgrade(u), u.resolve_interval()),
                );
            }
            if u.has_health_check() {
                self.tasks.spawn(
                    "upstream health check",
                    crate::upstream::check_health(Arc::downgrade(u)),
                );
            }
        }
    }

    /// The session store, cache and keys: made by the first config with a provider, then
    /// kept (changing them is refused by [`restart_required`]).
    fn session_base(&self, config: &Config) -> anyhow::Result<Arc<SessionBase>> {
        let mut slot = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(base) = &*slot {
            return Ok(base.clone());
        }
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
                    tasks: &self.tasks,
                };
                Store::Redis(Box::new(
                    session::store::RedisStore::new(&options, &s.redis_prefix)
                        .map_err(|e| anyhow::anyhow!("session Redis settings: {e}"))?,
                ))
            }
        };
        store.observe_pending(self.metrics.pending());
        let secret: Vec<u8> = match &s.secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            // Memory store: one process, so a per-process key is enough (sessions end on
            // restart anyway).
            None => crate::crypto::random::<32>().to_vec(),
        };
        let cache = Arc::new(SessionCache::new(
            s.cache_max_age,
            s.cache_max_entries,
            !store.is_redis(),
        ));
        // The listener keeps the shared cache coherent for every config's session manager.
        let listener = Arc::new(SessionManager::new(
            store.clone(),
            Keys::derive(&secret),
            cache.clone(),
            cookie_settings(config),
            config.identity_headers.clone(),
            self.metrics.clone(),
        ));
        self.tasks.spawn(
            "invalidation listener",
            listener.run_invalidation_listener(),
        );
        let base = Arc::new(SessionBase {
            store,
            secret,
            cache,
        });
        *slot = Some(base.clone());
        Ok(base)
    }
}

/// What makes a signer the same: its settings and the contents of its key file.
type SignerKey = (AssertionSettings, Option<[u8; 32]>);

fn signer_key(a: &AssertionSettings) -> SignerKey {
    let digest = a
        .key_file
        .as_deref()
        .and_then(|f| read_watched(f.as_ref()))
        .map(|pem| crate::crypto::sha256(&pem));
    (a.clone(), digest)
}

fn cookie_settings(config: &Config) -> CookieSettings {
    let s = &config.session;
    CookieSettings {
        host_name: format!("__Host-{}", s.cookie_name),
        name: s.cookie_name.clone(),
        secure: s.cookie_secure,
        same_site: match s.cookie_same_site {
            SameSitePolicy::Lax => cookie::SameSite::Lax,
            SameSitePolicy::Strict => cookie::SameSite::Strict,
            SameSitePolicy::None => cookie::SameSite::None,
        },
        domain: s.cookie_domain.clone(),
        persistent: s.cookie_persistent,
        path: s.cookie_path.clone(),
        idle_timeout: s.idle_timeout,
        absolute_timeout: s.absolute_timeout,
        touch_interval: s.touch_interval,
    }
}

/// An [`Auth`] built for a config, not yet running ([`Assembly::commit`]).
#[derive(Default)]
pub struct Built {
    auth: Option<Arc<Auth>>,
    fresh: Vec<Arc<Provider>>,
    signer: Option<(SignerKey, Arc<crate::assertion::Signer>)>,
}

/// Reloads the config on SIGHUP (and, with `--watch`, when the file or a file it names
/// changes): all of it, or nothing (see the module doc).
pub(crate) struct Reloader {
    pub(crate) path: PathBuf,
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) assembly: Arc<Assembly>,
    pub(crate) metrics: Arc<Metrics>,
    /// As loaded at start, port 0 and all.
    pub(crate) loaded: Config,
    /// `loaded` with the ports bound for port 0: a file that names them is no change either.
    pub(crate) bound: Config,
    /// The TLS listeners' certificates, read again at every reload.
    pub(crate) certs: Vec<Arc<crate::certs::ListenerCert>>,
    /// Poll the files this often for changes (`--watch`); `None`: SIGHUP only.
    pub(crate) watch: Option<Duration>,
}

/// Why a reload was not applied.
enum Refused {
    Invalid(Vec<String>),
    Restart(Vec<&'static str>),
    Failed(String),
}

impl Reloader {
    /// Load, check and build the new config: on a blocking thread (file reads, DNS).
    fn prepare(&self) -> Result<(Config, Built, Vec<crate::certs::Loaded>), Refused> {
        let new = config::load(&self.path)
            .map_err(|e| Refused::Invalid(e.0.iter().map(|e| e.to_string()).collect()))?;
        let keys = restart_required(&self.loaded, &self.bound, &new);
        if !keys.is_empty() {
            return Err(Refused::Restart(keys));
        }
        let built = self
            .assembly
            .build(&new)
            .map_err(|e| Refused::Failed(format!("{e:#}")))?;
        // Renewed certificates (same files, new contents); one that does not load refuses all.
        let certs = self
            .certs
            .iter()
            .map(|c| c.reread())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Refused::Failed(format!("TLS listener certificate: {e}")))?;
        Ok((new, built, certs))
    }

    async fn reload(self: &Arc<Self>, cause: &'static str) {
        let me = self.clone();
        let prepared = match tokio::task::spawn_blocking(move || me.prepare()).await {
            Ok(p) => p,
            Err(e) => Err(Refused::Failed(e.to_string())),
        };
        let result = match prepared {
            Ok((new, built, certs)) => {
                // The new upstreams' names are looked up before anything of the new config
                // is applied: the swap below stays one step.
                let next = Runtime::new(&new, &self.metrics, built.auth.clone());
                next.resolve(crate::upstream::RESOLVE_PATIENCE).await;
                install_pages(&new);
                for (c, loaded) in self.certs.iter().zip(certs) {
                    c.install(loaded);
                }
                self.assembly.commit(built);
                self.assembly.follow_upstreams(&next);
                self.runtime.store(Arc::new(next));
                tracing::info!(path = %self.path.display(), cause, routes = new.routes.len(), providers = new.providers.len(), "config reloaded");
                "ok"
            }
            Err(Refused::Invalid(errors)) => {
                for e in &errors {
                    tracing::error!(error = %e, cause, "config reload rejected; keeping the running config");
                }
                "error"
            }
            Err(Refused::Restart(keys)) => {
                tracing::error!(
                    cause,
                    "config reload refused: restart required: {}; keeping the running config",
                    keys.join(", ")
                );
                "restart_required"
            }
            Err(Refused::Failed(e)) => {
                tracing::error!(error = %e, cause, "config reload failed; keeping the running config");
                "error"
            }
        };
        self.metrics
            .config_reloads
            .with_label_values(&[result])
            .inc();
    }
}

/// What `--watch` compares: the config file's bytes and those of every file it names
/// (`*_file` keys: secrets, keys, CA bundles), read through symlinks, so a Kubernetes
/// ConfigMap or Secret update (an atomic `..data` symlink swap) and a rotated file are seen.
fn fingerprint(path: &std::path::Path) -> Option<[u8; 32]> {
    let text = read_watched(path)?;
    let mut all = Vec::with_capacity(text.len() + 64);
    all.extend_from_slice(&text);
    if let Ok(doc) = std::str::from_utf8(&text)
        .unwrap_or("")
        .parse::<toml::Table>()
    {
        let mut files = Vec::new();
        named_files(&toml::Value::Table(doc), &mut files);
        // Paths as the loader reads them (relative ones from the working directory).
        for f in files {
            all.extend_from_slice(f.as_bytes());
            all.extend_from_slice(&crate::crypto::sha256(
                &read_watched(f.as_ref()).unwrap_or_default(),
            ));
        }
    }
    Some(crate::crypto::sha256(&all))
}

/// A watched file's bytes: read as the loader reads it (a regular file of bounded size; a
/// `*_file` naming `/dev/zero`, a FIFO or a huge file must not hang or exhaust the watcher),
/// `None` when it cannot be.
fn read_watched(path: &std::path::Path) -> Option<Vec<u8>> {
    crate::config::secret::read_bounded(path).ok()
}

/// String values of `*_file` keys, anywhere in the document.
fn named_files(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                match v {
                    toml::Value::String(s) if k.ends_with("_file") => out.push(s.clone()),
                    _ => named_files(v, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| named_files(v, out)),
        _ => {}
    }
}

/// Runs the reloader (a Pingora background service needs `&self`).
pub(crate) struct ReloadService(pub(crate) Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let me = &self.0;
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot watch SIGHUP; reload disabled");
            return;
        };
        let every = me.watch.unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let path = me.path.clone();
        let mut seen = tokio::task::spawn_blocking(move || fingerprint(&path))
            .await
            .ok()
            .flatten();
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    crate::notify::reloading();
                    me.reload("SIGHUP").await;
                    crate::notify::reloaded();
                }
                _ = tick.tick(), if me.watch.is_some() => {
                    let path = me.path.clone();
                    let now = tokio::task::spawn_blocking(move || fingerprint(&path))
                        .await
                        .ok()
                        .flatten();
                    // A file caught half-written or missing is looked at again next time.
                    if now.is_some() && now != seen {
                        seen = now;
                        crate::notify::reloading();
                        me.reload("watch").await;
                        crate::notify::reloaded();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The page templates of `config` (defaults plus `gateway.templates_dir`), built once per
/// (re)load. The loader has checked every override; should one still fail, the defaults.
pub(crate) fn install_pages(config: &Config) {
    match crate::pages::Pages::with_overrides(&config.templates) {
        Ok(p) => crate::pages::install(p),
        Err(e) => {
            tracing::error!(error = %e, "page templates rejected; using the default pages");
            crate::pages::install(crate::pages::Pages::defaults());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[upstreams.app]\nservers = [\"http://127.0.0.1:9\"]\n[[routes]]\nupstream = \"app\"\npublic = true\n{extra}"
        );
        config::parse(std::path::Path::new("t.toml"), &text).expect("valid")
    }

    #[test]
    fn what_needs_a_restart() {
        let base = config("");
        assert!(restart_required(&base, &base, &config("")).is_empty());
        // Reloadable: routes, headers, prefix, timeouts.
        let reloadable = config("[gateway]\nprefix = \"/oauth2/\"\n[headers]\nuser = \"X-User\"\n[session]\nidle_timeout = \"2h\"\n");
        assert!(restart_required(&base, &base, &reloadable).is_empty());
        for (extra, key) in [
            ("[server]\nthreads = 7\n", "server.threads"),
            ("[server]\nmax_connections = 17\n", "server.max_connections"),
            ("[session]\nsecret = \"0123456789abcdef0123456789abcdef-x\"\n", "session.secret"),
            ("[session]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\nsecret = \"0123456789abcdef0123456789abcdef-x\"\n", "session.store"),
            ("[session]\ncache_max_entries = 5\n", "session.cache_max_entries"),
            ("[log]\nformat = \"json\"\n", "log.format"),
        ] {
            let keys = restart_required(&base, &base, &config(extra));
            assert!(keys.contains(&key), "{extra}: {keys:?}");
        }
    }

    #[test]
    fn port_zero_is_the_port_it_was_given() {
        let two = |a: &str, b: &str| {
            config(&format!(
                "[[listeners]]\naddress = \"{a}\"\n[[listeners]]\naddress = \"{b}\"\n"
            ))
        };
        let (start, bound) = (
            two("127.0.0.1:0", "127.0.0.1:0"),
            two("127.0.0.1:4001", "127.0.0.1:4002"),
        );
        // Each listener names its start value or its bound one, in any mix.
        for new in [
            two("127.0.0.1:0", "127.0.0.1:4002"),
            two("127.0.0.1:4001", "127.0.0.1:0"),
        ] {
            assert!(restart_required(&start, &bound, &new).is_empty());
        }
        for new in [
            two("127.0.0.1:4002", "127.0.0.1:4001"),
            two("127.0.0.1:0", "127.0.0.1:4003"),
            config("[[listeners]]\naddress = \"127.0.0.1:0\"\n"),
        ] {
            assert_eq!(restart_required(&start, &bound, &new), ["listeners"]);
        }
    }

    #[test]
    fn named_files_are_found_anywhere() {
        let doc: toml::Table = "a_file = \"x\"\n[s]\nsecret_file = \"y\"\nn = 1\n[[p]]\nca_file = \"z\"\nfile = \"no\"\n"
            .parse()
            .unwrap();
        let mut out = Vec::new();
        named_files(&toml::Value::Table(doc), &mut out);
        out.sort();
        assert_eq!(out, ["x", "y", "z"]);
    }

    #[test]
    fn fingerprint_follows_named_files_and_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "one").unwrap();
        // A ConfigMap-style mount: the config is a symlink into a data directory.
        let data1 = dir.path().join("..data1");
        std::fs::create_dir(&data1).unwrap();
        let named = format!("client_secret_file = {:?}\n", secret.to_str().unwrap());
        std::fs::write(data1.join("c.toml"), &named).unwrap();
        let link = dir.path().join("c.toml");
        std::os::unix::fs::symlink(data1.join("c.toml"), &link).unwrap();
        let a = fingerprint(&link).unwrap();
        assert_eq!(fingerprint(&link), Some(a), "stable");
        std::fs::write(&secret, "two").unwrap();
        let b = fingerprint(&link).unwrap();
        assert_ne!(a, b, "a rotated secret file is a change");
        let data2 = dir.path().join("..data2");
        std::fs::create_dir(&data2).unwrap();
        std::fs::write(data2.join("c.toml"), format!("{named}# v2\n")).unwrap();
        let tmp = dir.path().join("c.toml.tmp");
        std::os::unix::fs::symlink(data2.join("c.toml"), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        let c = fingerprint(&link).unwrap();
        assert_ne!(c, b, "a symlink swap is a change");
        assert_eq!(fingerprint(&dir.path().join("missing.toml")), None);
        // Named files the watcher must not read: a device, a FIFO, a directory. Each reads
        // as absent (at once), never blocks or allocates without bound.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for odd in [
            "/dev/zero".into(),
            fifo.display().to_string(),
            dir.path().display().to_string(),
        ] {
            std::fs::write(&secret, "two").unwrap();
            let text = format!("{named}# v2\nkey_file = {odd:?}\n");
            std::fs::write(data2.join("c.toml"), text).unwrap();
            assert!(fingerprint(&link).is_some(), "{odd}");
            assert_eq!(read_watched(odd.as_ref()), None, "{odd}");
        }
    }
}
