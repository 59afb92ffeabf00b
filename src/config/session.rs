//! `[session]`: the store (memory or Redis: one server, Sentinel or Cluster), the cookie, and
//! the session timeouts and bounds.

use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::defaults as d;
use super::error::{Reporter, OFFLINE_PLACEHOLDER};
use super::fields::{bounded, duration, secret_value, span};
use super::file;
use super::model::{RedisTopology, SameSitePolicy, SessionSettings, SessionStore};
use super::secret::{self, Secret};

pub(super) fn session(rep: &mut Reporter, f: &file::Session) -> SessionSettings {
    let store = store_kind(rep, f);
    let redis = redis_topology(rep, f);
    if store == SessionStore::Redis && redis.is_none() {
        rep.error(
            "session.redis_url",
            f.store.as_ref().and_then(span),
            "store = \"redis\" needs redis_url (or redis_url_file), redis_sentinels or redis_cluster_nodes",
        );
    }
    let redis_password = secret_value(
        rep,
        "session.redis_password",
        &f.redis_password,
        "session.redis_password_file",
        &f.redis_password_file,
    );
    let redis_ca = f
        .redis_ca_file
        .as_ref()
        .and_then(|p| redis_ca(rep, p, &redis));
    let cookie_name = cookie_name(rep, &f.cookie_name);
    let secret = session_secret(rep, f, store);
    let cookie_same_site = same_site(rep, f);
    let cookie_path = cookie_path(rep, f);
    let cache_max_entries = cache_max_entries(rep, f);
    let t = timeouts(rep, f);
    SessionSettings {
        store,
        redis,
        redis_username: f.redis_username.as_ref().map(|u| u.get_ref().clone()),
        redis_password,
        redis_ca,
        redis_prefix: f
            .redis_prefix
            .clone()
            .unwrap_or_else(|| d::REDIS_PREFIX.into()),
        redis_timeout: duration(
            rep,
            "session.redis_timeout",
            &f.redis_timeout,
            d::REDIS_TIMEOUT,
        ),
        redis_min_replicas_ack: f.redis_min_replicas_ack.as_ref().map(|_| {
            bounded(
                rep,
                "session.redis_min_replicas_ack",
                &f.redis_min_replicas_ack,
                d::REDIS_MIN_REPLICAS_ACK_RANGE,
                0,
            ) as u32
        }),
        secret,
        cookie_name,
        cookie_secure: f.cookie_secure.unwrap_or(d::COOKIE_SECURE),
        cookie_same_site,
        cookie_domain: f.cookie_domain.as_ref().map(|c| c.get_ref().clone()),
        cookie_persistent: f.cookie_persistent.unwrap_or(d::COOKIE_PERSISTENT),
        cookie_path,
        idle_timeout: t.idle,
        absolute_timeout: t.absolute,
        login_timeout: duration(
            rep,
            "session.login_timeout",
            &f.login_timeout,
            d::LOGIN_TIMEOUT,
        ),
        cache_max_age: t.cache_max_age,
        cache_max_entries,
        touch_interval: t.touch_interval,
        refresh_lead: duration(
            rep,
            "session.refresh_lead",
            &f.refresh_lead,
            d::REFRESH_LEAD,
        ),
        refresh_wait: duration(
            rep,
            "session.refresh_wait",
            &f.refresh_wait,
            d::REFRESH_WAIT,
        ),
        max_pending_logins: bounded(
            rep,
            "session.max_pending_logins",
            &f.max_pending_logins,
            d::MAX_PENDING_LOGINS_RANGE,
            d::MAX_PENDING_LOGINS,
        ),
        max_return_url_bytes: bounded(
            rep,
            "session.max_return_url_bytes",
            &f.max_return_url_bytes,
            d::MAX_RETURN_URL_BYTES_RANGE,
            d::MAX_RETURN_URL_BYTES,
        ),
    }
}

/// `session.store`: `memory` (the default) or `redis`.
fn store_kind(rep: &mut Reporter, f: &file::Session) -> SessionStore {
    match f.store.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("memory", _)) => SessionStore::Memory,
        Some(("redis", _)) => SessionStore::Redis,
        Some((other, s)) => {
            rep.error(
                "session.store",
                span(s),
                format!("{other:?}: expected \"memory\" or \"redis\""),
            );
            SessionStore::Memory
        }
    }
}

/// `session.cache_max_entries`: not negative.
fn cache_max_entries(rep: &mut Reporter, f: &file::Session) -> usize {
    match &f.cache_max_entries {
        None => d::CACHE_MAX_ENTRIES,
        Some(v) if *v.get_ref() >= 0 => *v.get_ref() as usize,
        Some(v) => {
            rep.error("session.cache_max_entries", span(v), "must not be negative");
            0
        }
    }
}

fn redis_scheme_ok(url: &str) -> bool {
    Url::parse(url)
        .map(|u| matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
        .unwrap_or(false)
}

/// One of `redis_url` (or `redis_url_file`), `redis_sentinels` + `redis_sentinel_master`, or
/// `redis_cluster_nodes`; `None` when none is set.
fn redis_topology(rep: &mut Reporter, f: &file::Session) -> Option<RedisTopology> {
    let redis_url = secret_value(
        rep,
        "session.redis_url",
        &f.redis_url,
        "session.redis_url_file",
        &f.redis_url_file,
    );
    if let Some(url) = &redis_url {
        // Offline, an absent URL is a placeholder: nothing to check in it.
        if url.expose() != OFFLINE_PLACEHOLDER && !redis_scheme_ok(url.expose()) {
            // Do not echo the value: it may carry a password.
            let s = f.redis_url.as_ref().or(f.redis_url_file.as_ref());
            rep.error(
                "session.redis_url",
                s.and_then(span),
                "not a redis:// or rediss:// URL",
            );
        }
    }
    let sentinels = f
        .redis_sentinels
        .as_ref()
        .map(|v| url_list(rep, "session.redis_sentinels", v));
    let cluster = f
        .redis_cluster_nodes
        .as_ref()
        .map(|v| url_list(rep, "session.redis_cluster_nodes", v));
    let chosen = [redis_url.is_some(), sentinels.is_some(), cluster.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen > 1 {
        let at = f
            .redis_sentinels
            .as_ref()
            .and_then(span)
            .or(f.redis_cluster_nodes.as_ref().and_then(span));
        rep.error(
            "session.redis_url",
            at,
            "set one of redis_url, redis_sentinels or redis_cluster_nodes",
        );
    }
    match (redis_url, sentinels, cluster) {
        (Some(url), _, _) => Some(RedisTopology::Standalone(url)),
        (None, Some(sentinels), _) => {
            let master = match &f.redis_sentinel_master {
                Some(m) if !m.get_ref().is_empty() => m.get_ref().clone(),
                _ => {
                    rep.error(
                        "session.redis_sentinel_master",
                        f.redis_sentinels.as_ref().and_then(span),
                        "redis_sentinels needs redis_sentinel_master (the monitored primary's name)",
                    );
                    String::new()
                }
            };
            Some(RedisTopology::Sentinel { sentinels, master })
        }
        (None, None, Some(nodes)) => Some(RedisTopology::Cluster { nodes }),
        (None, None, None) => None,
    }
}

/// Sentinel or Cluster node URLs (with `${ENV}` expansion).
fn url_list(rep: &mut Reporter, key: &str, v: &Spanned<Vec<String>>) -> Vec<Secret> {
    let mut out = Vec::new();
    for u in v.get_ref() {
        match secret::expand_env(u, |k| rep.env_var(k)) {
            Ok(u) if u == OFFLINE_PLACEHOLDER => out.push(Secret::new(u)),
            Ok(u) if redis_scheme_ok(&u) && !u.starts_with("redis+unix") => {
                out.push(Secret::new(u))
            }
            Ok(_) => rep.error(
                key,
                span(v),
                "every entry must be a redis:// or rediss:// URL",
            ),
            Err(e) => rep.error(key, span(v), e),
        }
    }
    if out.is_empty() && v.get_ref().is_empty() {
        rep.error(key, span(v), "list at least one address");
    }
    out
}

fn redis_ca(
    rep: &mut Reporter,
    p: &Spanned<String>,
    redis: &Option<RedisTopology>,
) -> Option<Vec<u8>> {
    if matches!(redis, Some(RedisTopology::Sentinel { .. })) {
        rep.error(
            "session.redis_ca_file",
            span(p),
            "not supported with redis_sentinels yet (system roots are used there)",
        );
    }
    match super::secret::read_bounded(p.get_ref().as_ref()) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            rep.error(
                "session.redis_ca_file",
                span(p),
                "no PEM certificate in the file",
            );
            None
        }
        Err(e) => {
            rep.error(
                "session.redis_ca_file",
                span(p),
                format!("cannot read: {e}"),
            );
            None
        }
    }
}

fn cookie_name(rep: &mut Reporter, v: &Option<Spanned<String>>) -> String {
    match v {
        None => d::COOKIE_NAME.to_string(),
        Some(c) => {
            let v = c.get_ref();
            if v.is_empty()
                || v.starts_with("__")
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                rep.error(
                    "session.cookie_name",
                    span(c),
                    "use letters, digits, '_' and '-' (the __Host- prefix is added over HTTPS)",
                );
            }
            v.clone()
        }
    }
}

/// `secret` or `secret_file`: required with Redis (every replica must share it).
fn session_secret(rep: &mut Reporter, f: &file::Session, store: SessionStore) -> Option<Secret> {
    let secret = secret_value(
        rep,
        "session.secret",
        &f.secret,
        "session.secret_file",
        &f.secret_file,
    );
    if let Some(s) = &secret {
        if s.expose().len() < d::SESSION_SECRET_MIN_BYTES {
            let at = f.secret.as_ref().or(f.secret_file.as_ref()).and_then(span);
            rep.error(
                "session.secret",
                at,
                format!(
                    "must be at least {} bytes (e.g. `openssl rand -base64 48`)",
                    d::SESSION_SECRET_MIN_BYTES
                ),
            );
        }
    } else if store == SessionStore::Redis {
        rep.error(
            "session.secret",
            f.store.as_ref().and_then(span),
            "store = \"redis\" needs secret or secret_file, shared by every replica",
        );
    }
    secret
}

fn same_site(rep: &mut Reporter, f: &file::Session) -> SameSitePolicy {
    match f
        .cookie_same_site
        .as_ref()
        .map(|s| (s.get_ref().to_ascii_lowercase(), s))
    {
        None => SameSitePolicy::Lax,
        Some((v, _)) if v == "lax" => SameSitePolicy::Lax,
        Some((v, _)) if v == "strict" => SameSitePolicy::Strict,
        // Browsers drop a `SameSite=None` cookie that is not `Secure`: refused rather than
        // a gateway whose sign-in silently never sticks.
        Some((v, s)) if v == "none" => {
            if !f.cookie_secure.unwrap_or(d::COOKIE_SECURE) {
                rep.error(
                    "session.cookie_same_site",
                    span(s),
                    "\"none\" needs cookie_secure = true: browsers reject SameSite=None cookies without Secure",
                );
            }
            SameSitePolicy::None
        }
        Some((_, s)) => {
            rep.error(
                "session.cookie_same_site",
                span(s),
                "expected \"lax\", \"strict\" or \"none\"",
            );
            SameSitePolicy::Lax
        }
    }
}

/// `cookie_path`: a canonical path (no `;`, control bytes or anything a browser would read
/// as another attribute). Whether it covers the gateway and the routes is
/// [`cookie_path_covers`]'s.
fn cookie_path(rep: &mut Reporter, f: &file::Session) -> String {
    let Some(p) = &f.cookie_path else {
        return d::COOKIE_PATH.to_string();
    };
    let v = p.get_ref();
    match crate::path::normalize(v, crate::path::PathOptions::default()) {
        Ok(c) if c.as_str() == v => {}
        Ok(c) => rep.error(
            "session.cookie_path",
            span(p),
            format!("not a canonical path; write {:?}", c.as_str()),
        ),
        Err(e) => rep.error(
            "session.cookie_path",
            span(p),
            format!("{v:?} is not a cookie path: {e}"),
        ),
    }
    v.clone()
}

/// Whether a browser sends a cookie with `Path=cookie_path` on a request for `path`
/// (RFC 6265 §5.1.4 path-match).
pub(super) fn path_matches(cookie_path: &str, path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// The session cookie must reach the gateway's endpoints (the callback sets it, logout
/// clears it, forward-auth reads it) and every protected route: a route outside
/// `cookie_path` would send its users to sign in again and again.
pub(super) fn cookie_path_covers(rep: &mut Reporter, f: &file::File, gateway_prefix: &str) {
    let Some(p) = &f.session.cookie_path else {
        return;
    };
    let cp = p.get_ref();
    if !path_matches(cp, gateway_prefix) {
        rep.error(
            "session.cookie_path",
            span(p),
            format!(
                "{cp:?} does not cover the gateway prefix {gateway_prefix:?}: the sign-in callback and logout would not receive the session cookie (set gateway.prefix below it, e.g. \"{}/.authgate/\")",
                cp.trim_end_matches('/')
            ),
        );
    }
    for (i, r) in f
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| !super::routes::is_public(r))
    {
        let path = r
            .path
            .as_ref()
            .map_or(d::ROUTE_PATH, |p| p.get_ref().as_str());
        if !path_matches(cp, path) {
            rep.error(
                format!("routes[{i}].path"),
                r.path.as_ref().map_or(span(&r.upstream), span),
                format!(
                    "protected route {path:?} is outside session.cookie_path {cp:?}: its requests would never carry the session cookie (a sign-in loop); make the route public or widen cookie_path"
                ),
            );
        }
    }
}

/// The session timeouts that bound one another.
struct Timeouts {
    idle: Duration,
    absolute: Duration,
    cache_max_age: Duration,
    touch_interval: Duration,
}

fn timeouts(rep: &mut Reporter, f: &file::Session) -> Timeouts {
    let idle = duration(
        rep,
        "session.idle_timeout",
        &f.idle_timeout,
        d::IDLE_TIMEOUT,
    );
    let absolute = duration(
        rep,
        "session.absolute_timeout",
        &f.absolute_timeout,
        d::ABSOLUTE_TIMEOUT,
    );
    if idle.is_zero() || absolute.is_zero() {
        rep.error(
            "session.idle_timeout",
            f.idle_timeout
                .as_ref()
                .or(f.absolute_timeout.as_ref())
                .and_then(span),
            "session timeouts must be positive",
        );
    }
    let cache_max_age = duration(
        rep,
        "session.cache_max_age",
        &f.cache_max_age,
        d::CACHE_MAX_AGE,
    );
    // An active user's idle timer is refreshed when a cache entry expires and the session is
    // re-read from the store: the cache must expire well before the idle timeout.
    if cache_max_age * 2 > idle {
        rep.error(
            "session.cache_max_age",
            f.cache_max_age
                .as_ref()
                .or(f.idle_timeout.as_ref())
                .and_then(span),
            "cache_max_age must be at most half of idle_timeout",
        );
    }
    // Writing the idle TTL on every request would make every read a Redis write (and an AOF
    // line): restart it at most once per interval, well inside the idle timeout.
    let touch_interval = duration(
        rep,
        "session.touch_interval",
        &f.touch_interval,
        d::touch_interval(idle),
    );
    if touch_interval * 2 > idle {
        rep.error(
            "session.touch_interval",
            f.touch_interval.as_ref().and_then(span),
            "touch_interval must be at most half of idle_timeout",
        );
    }
    Timeouts {
        idle,
        absolute,
        cache_max_age,
        touch_interval,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::path_matches;
    use crate::config::model::SameSitePolicy;
    use crate::config::{parse, ConfigError};

    const ROUTES: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n[[routes]]\npath = \"/app/\"\nupstream = \"app\"\n[[routes]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n";

    fn errs(src: &str) -> Vec<ConfigError> {
        parse(Path::new("t.toml"), src).unwrap_err().0
    }

    #[test]
    fn same_site_none_needs_secure() {
        let c = parse(
            Path::new("t.toml"),
            "[session]\ncookie_same_site = \"None\"\n",
        )
        .unwrap();
        assert_eq!(c.session.cookie_same_site, SameSitePolicy::None);
        let e = errs("[session]\ncookie_secure = false\ncookie_same_site = \"none\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].key.as_str(), e[0].line),
            ("session.cookie_same_site", 3)
        );
        assert!(e[0].message.contains("cookie_secure = true"), "{e:?}");
        let e = errs("[session]\ncookie_same_site = \"lenient\"\n");
        assert!(e[0].message.contains("\"none\""), "{e:?}");
        // Without the CSRF guard every cross-site form would carry the cookie and pass.
        let e = errs("[csrf]\nenabled = false\n[session]\ncookie_same_site = \"none\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].key.as_str(), e[0].line),
            ("session.cookie_same_site", 4)
        );
        assert!(e[0].message.contains("CSRF guard"), "{e:?}");
        // Nor may a route that takes the cookie opt out of the guard (a public one may).
        let e = errs(&format!(
            "[session]\ncookie_same_site = \"none\"\n{ROUTES}[[routes]]\npath = \"/hook\"\nupstream = \"app\"\ncsrf = false\n[[routes]]\npath = \"/open\"\nupstream = \"app\"\npublic = true\ncsrf = false\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "routes[2].csrf");
    }

    #[test]
    fn browser_session_cookie() {
        let c = parse(
            Path::new("t.toml"),
            "[session]\ncookie_persistent = false\n",
        )
        .unwrap();
        assert!(!c.session.cookie_persistent);
    }

    #[test]
    fn cookie_path_is_a_canonical_path() {
        for bad in ["app", "/app;x", "/a b", "/app/../x", "//app", "/caf\u{e9}"] {
            let e = errs(&format!("[session]\ncookie_path = \"{bad}\"\n"));
            assert_eq!(e[0].key, "session.cookie_path", "{bad}: {e:?}");
            assert_eq!(e[0].line, 2);
        }
    }

    #[test]
    fn cookie_path_covers_the_gateway_and_the_protected_routes() {
        let ok = format!(
            "[gateway]\nprefix = \"/app/.authgate/\"\n[session]\ncookie_path = \"/app/\"\n{}",
            ROUTES.replace(
                "[[routes]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n",
                ""
            )
        );
        parse(Path::new("t.toml"), &ok).unwrap();
        // Without a trailing '/', "/app" covers "/app/..." too (RFC 6265 path-match).
        parse(
            Path::new("t.toml"),
            &ok.replace("cookie_path = \"/app/\"", "cookie_path = \"/app\""),
        )
        .unwrap();
        // The gateway prefix outside the cookie path: callback and logout would not see it.
        let e = errs(&format!("[session]\ncookie_path = \"/app/\"\n{ROUTES}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "session.cookie_path");
        assert!(e[0].message.contains("gateway prefix"), "{e:?}");
        // A protected route outside it: a sign-in loop. (The public one may be anywhere.)
        let src = format!("[gateway]\nprefix = \"/app/.authgate/\"\n[session]\ncookie_path = \"/app/\"\n{ROUTES}[[routes]]\npath = \"/other\"\nupstream = \"app\"\n");
        let e = errs(&src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "routes[2].path");
        assert!(e[0].message.contains("sign-in loop"), "{e:?}");
        // `auth = "public"` is public too; an optional route needs the cookie to know anyone.
        let base = format!(
            "[gateway]\nprefix = \"/app/.authgate/\"\n[session]\ncookie_path = \"/app/\"\n{ROUTES}"
        );
        let public =
            format!("{base}[[routes]]\npath = \"/other\"\nupstream = \"app\"\nauth = \"public\"\n");
        parse(Path::new("t.toml"), &public).unwrap();
        let optional = format!(
            "{base}[[routes]]\npath = \"/other\"\nupstream = \"app\"\nauth = \"optional\"\n"
        );
        let e = errs(&optional);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "routes[2].path");
    }

    #[test]
    fn path_match_is_rfc6265() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/app", "/app"));
        assert!(path_matches("/app", "/app/x"));
        assert!(!path_matches("/app", "/apple"));
        assert!(path_matches("/app/", "/app/x"));
        assert!(!path_matches("/app/", "/app"));
        assert!(!path_matches("/app/", "/"));
    }
}
