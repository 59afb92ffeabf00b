//! Configuration: `config.toml` → [`Config`].
//!
//! Two layers: [`file`] mirrors the TOML with serde, [`validate`] checks it once, one function
//! per section (a module each), into the plain, typed settings of [`model`]. Every default and
//! bound is a named constant in [`defaults`]. Errors carry the file, line, column and key
//! ([`error`]); secrets come from the environment or files ([`secret`]). Load once at start and
//! on reload; the request path never sees a config string. `config` depends on no runtime
//! module: the runtime objects are built from the model by their own modules.

mod assertion;
pub(crate) mod defaults;
pub(crate) mod error;
mod fields;
pub(crate) mod file;
pub(crate) mod front;
mod gateway;
pub(crate) mod headers;
mod listeners;
mod logs;
pub mod model;
pub(crate) mod provider;
mod routes;
pub(crate) mod secret;
mod server;
mod session;
mod shaping;
mod summary;
mod templates;
mod upstreams;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::Config;

use error::Reporter;

/// How strictly a config is validated: for running it, or by `authgate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `run` and reload: what the gateway needs to start.
    Run,
    /// `check`: as `Run`, and a protected route with no provider to sign in through is an
    /// error (the gateway would start and refuse everyone).
    Check,
    /// `check --offline` (CI): as `Check`, without DNS, and with absent secrets (unset
    /// `${VAR}`, missing secret and TLS files) taken as present.
    CheckOffline,
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_as(path, Mode::Run)
}

/// Read and validate a config file in `mode`.
pub fn load_as(path: &Path, mode: Mode) -> Result<Config, ConfigErrors> {
    let src = secret::read_bounded(path)
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        .map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read config: {e}"),
            }])
        })?;
    parse_as(path, &src, mode)
}

/// Validate config text; `path` is only used in messages.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    parse_as(path, src, Mode::Run)
}

/// Validate config text in `mode`; `path` is only used in messages.
pub fn parse_as(path: &Path, src: &str, mode: Mode) -> Result<Config, ConfigErrors> {
    let mut rep = Reporter::new(path, src);
    rep.offline = mode == Mode::CheckOffline;
    let de = toml::Deserializer::new(src);
    let file: file::File = match serde_path_to_error::deserialize(de) {
        Ok(f) => f,
        Err(e) => {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // toml's own message repeats the position and quotes the line; keep its first
            // sentence only, the position goes in front like every other error.
            let msg = inner.message().trim().to_string();
            let key = if key == "." { String::new() } else { key };
            rep.error(key, inner.span(), msg);
            return Err(ConfigErrors(rep.errors));
        }
    };
    let config = validate(&file, &mut rep);
    if mode != Mode::Run {
        routes::need_a_provider(&mut rep, &file);
    }
    match config {
        Some(c) if rep.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(rep.errors)),
    }
}

/// Check every section, collecting every error: `None` when at least one was reported (by
/// construction: the config is only assembled after every section ran without one).
pub(crate) fn validate(f: &file::File, rep: &mut Reporter) -> Option<Config> {
    let server = server::server(rep, &f.server);
    let log = logs::log(rep, &f.log);
    let listeners = listeners::listeners(rep, &f.listeners);
    // The admin address is checked against the configured listeners only.
    let configured = if f.listeners.is_empty() {
        &[][..]
    } else {
        &listeners[..]
    };
    let (admin_address, admin_token) = listeners::admin(rep, &f.admin, configured);
    let (identity_namespace, identity_headers) = headers::headers(rep, &f.headers);
    let assertion = assertion::assertion(rep, &f.assertion);
    let claim_keys = headers::claim_keys(
        rep,
        "headers",
        &f.headers.claim_keys(),
        &identity_headers,
        &[&server.request_id_header, &assertion.header],
    );
    let claim_headers = headers::merge(
        rep,
        &claim_keys,
        None,
        "headers",
        headers::claim_span(&f.headers),
    )
    .map(std::sync::Arc::new);
    let paths = gateway::paths(&f.paths);
    let gateway = gateway::gateway(rep, &f.gateway, paths);
    let session = session::session(rep, &f.session);
    let providers = provider::providers(rep, &f.providers, &gateway.prefix);
    let upstreams = upstreams::upstreams(rep, &f.upstreams);
    let routes = routes::routes(
        rep,
        &routes::Context {
            file: f,
            paths,
            gateway_prefix: &gateway.prefix,
            claim_keys: &claim_keys,
            claim_headers: &claim_headers,
            identity_headers: &identity_headers,
            namespace: &identity_namespace,
            assertion_header: &assertion.header,
            request_id_header: &server.request_id_header,
        },
    );
    session::cookie_path_covers(rep, f, &gateway.prefix);
    let forward_auth =
        front::forward_auth(rep, &f.forward_auth, !server.trusted_proxies.is_empty());
    let csrf = front::csrf(rep, &f.csrf);
    if session.cookie_same_site == model::SameSitePolicy::None {
        // The same on a route that opts out: its cross-site forms would pass signed in.
        for (i, (r, set)) in f.routes.iter().zip(&routes).enumerate() {
            if !set.csrf && !set.public {
                rep.error(
                    format!("routes[{i}].csrf"),
                    r.path.as_ref().map_or(fields::span(&r.upstream), fields::span),
                    "csrf = false with session.cookie_same_site = \"none\": cross-site requests would carry the session cookie and pass",
                );
            }
        }
    }
    if session.cookie_same_site == model::SameSitePolicy::None && !csrf.enabled {
        // Every cross-site form would then carry the session cookie and pass.
        if let Some(v) = &f.session.cookie_same_site {
            rep.error(
                "session.cookie_same_site",
                fields::span(v),
                "\"none\" sends the session cookie with cross-site requests: it needs the CSRF guard ([csrf] enabled = true)",
            );
        }
    }
    if !rep.errors.is_empty() {
        return None;
    }
    Some(Config {
        server,
        log,
        listeners,
        admin_address,
        admin_token,
        paths,
        case_insensitive_routes: f.paths.case_insensitive,
        identity_namespace,
        identity_headers,
        allowed_redirect_hosts: gateway.allowed_redirect_hosts,
        bearer_cache_entries: gateway.bearer_cache_entries,
        gateway_prefix: gateway.prefix,
        templates: gateway.templates,
        forward_auth,
        csrf,
        session,
        providers,
        assertion,
        upstreams,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<ConfigError> {
        parse(Path::new("t.toml"), src).unwrap_err().0
    }

    const UP: &str = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n";

    /// Every duration key goes through one reader, which refuses more than 100 years with
    /// its line: such a value used to overflow `cache_max_age * 2` (a panic in `authgate
    /// check`) or a session's deadline arithmetic.
    #[test]
    fn durations_beyond_a_century_are_refused_with_their_line() {
        for (section, key) in [
            ("session", "cache_max_age"),
            ("session", "absolute_timeout"),
            ("session", "idle_timeout"),
            ("server", "grace_period"),
        ] {
            for huge in ["500000000000y", "101y", "18446744073709551615s"] {
                let e = errs(&format!("[{section}]\n{key} = \"{huge}\"\n"));
                assert!(
                    e.iter().any(|e| e.key == format!("{section}.{key}")
                        && e.line == 2
                        && e.message.contains("100 years")),
                    "{section}.{key} = {huge}: {e:?}"
                );
            }
        }
        let c = parse(
            Path::new("t.toml"),
            "[session]\nabsolute_timeout = \"100y\"\nidle_timeout = \"99y\"\n",
        )
        .unwrap();
        assert_eq!(
            c.session.absolute_timeout,
            crate::config::defaults::MAX_DURATION
        );
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = parse(Path::new("t.toml"), "").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.admin_address.to_string(), "127.0.0.1:9090");
        assert!(c.routes.is_empty());
        assert_eq!(c.gateway_prefix, "/.authgate/");
    }

    #[test]
    fn public_methods_are_methods_on_protected_routes() {
        let route = |extra: &str| format!("{UP}[[routes]]\nupstream = \"app\"\n{extra}\n");
        let c = parse(
            Path::new("t.toml"),
            &route("public_methods = [\"options\", \"GET\"]"),
        )
        .unwrap();
        assert_eq!(
            c.routes[0].public_methods,
            [http::Method::OPTIONS, http::Method::GET]
        );
        let e = errs(&route("public_methods = [\"GET\", \"G ET\"]"));
        assert_eq!(e[0].key, "routes[0].public_methods[1]", "{e:?}");
        assert!(e[0].message.contains("not an HTTP method"));
        assert_eq!((e[0].line, e[0].column), (5, 26), "{e:?}");
        let e = errs(&route("public = true\npublic_methods = [\"GET\"]"));
        assert!(
            e[0].message.contains("public = true admits every method"),
            "{e:?}"
        );
    }

    #[test]
    fn auth_modes_and_their_contradictions() {
        let route = |extra: &str| format!("{UP}[[routes]]\nupstream = \"app\"\n{extra}\n");
        let one =
            |extra: &str| parse(Path::new("t.toml"), &route(extra)).unwrap().routes[0].clone();
        let r = one("auth = \"optional\"");
        assert!(r.optional && !r.public);
        let r = one("auth = \"public\"");
        assert!(r.public && !r.optional);
        let r = one("public = true\nauth = \"public\"");
        assert!(r.public);
        let r = one("auth = \"required\"");
        assert!(!r.public && !r.optional);
        let e = errs(&route("public = true\nauth = \"optional\""));
        assert_eq!(e[0].key, "routes[0].auth", "{e:?}");
        assert_eq!((e[0].line, e[0].column), (6, 8), "{e:?}");
        assert!(e[0].message.contains("contradicts"), "{e:?}");
        let e = errs(&route("public = true\nauth = \"required\""));
        assert!(e[0].message.contains("contradicts"), "{e:?}");
        let e = errs(&route("auth = \"anonymous\""));
        assert_eq!(
            (e[0].key.as_str(), e[0].line),
            ("routes[0].auth", 5),
            "{e:?}"
        );
        let e = errs(&route("auth = \"optional\"\nunauthenticated = \"401\""));
        assert_eq!(e[0].key, "routes[0].unauthenticated", "{e:?}");
        let e = errs(&route("auth = \"optional\"\npublic_methods = [\"GET\"]"));
        assert_eq!(e[0].key, "routes[0].public_methods[0]", "{e:?}");
        let e = errs(&route(
            "auth = \"public\"\nbearer = true\naudiences = [\"a\"]",
        ));
        assert!(e.iter().any(|e| e.key == "routes[0].bearer"), "{e:?}");
    }

    #[test]
    fn rules_on_optional_and_public_routes_are_source_ips_only() {
        let route = |auth: &str, tables: &str| {
            format!("{UP}[[routes]]\nupstream = \"app\"\nauth = \"{auth}\"\n{tables}")
        };
        for auth in ["optional", "public"] {
            let e = errs(&route(auth, "[routes.policy]\ngroups = [\"admins\"]\n"));
            assert_eq!(e[0].key, "routes[0].policy", "{auth} {e:?}");
            assert_eq!(e[0].line, 6, "{e:?}");
            let e = errs(&route(auth, "[[routes.deny]]\nusers = [\"mallory\"]\n"));
            assert_eq!(e[0].key, "routes[0].deny[0]", "{auth} {e:?}");
            let c = parse(
                Path::new("t.toml"),
                &route(
                    auth,
                    "[routes.policy]\nsource_ips = [\"10.0.0.0/8\"]\n[[routes.deny]]\nsource_ips = [\"10.6.6.0/24\"]\n",
                ),
            )
            .unwrap();
            assert!(c.routes[0].policy.as_ref().unwrap().network_only());
            assert_eq!(c.routes[0].deny.len(), 1);
        }
        // Deny rules without a policy on a protected route, several of them.
        let c = parse(
            Path::new("t.toml"),
            &route(
                "required",
                "[[routes.deny]]\ngroups = [\"contractors\"]\nmethods = [\"delete\"]\n[[routes.deny]]\nsource_ips = [\"192.0.2.0/24\"]\n",
            ),
        )
        .unwrap();
        assert!(c.routes[0].policy.is_none());
        assert_eq!(c.routes[0].deny.len(), 2);
        assert_eq!(c.routes[0].deny[0].methods, [http::Method::DELETE]);
        let e = errs(&route("required", "[[routes.deny]]\n"));
        assert!(e[0].message.contains("empty deny rule"), "{e:?}");
    }

    #[test]
    fn patterns_and_networks_are_checked_at_load() {
        let policy =
            |p: &str| format!("{UP}[[routes]]\nupstream = \"app\"\n[routes.policy]\n{p}\n");
        let e = errs(&policy(
            "email_patterns = [\"ok@x\\\\.com\", \"(unclosed\"]",
        ));
        assert_eq!(e[0].key, "routes[0].policy.email_patterns[1]", "{e:?}");
        assert_eq!((e[0].line, e[0].column), (6, 33), "{e:?}");
        assert!(e[0].message.contains("not a valid regex"), "{e:?}");
        let e = errs(&policy("claim_patterns = { dept = [\"a\", \"[z-a]\"] }"));
        assert_eq!(e[0].key, "routes[0].policy.claim_patterns.dept", "{e:?}");
        assert_eq!(e[0].line, 6, "{e:?}");
        let e = errs(&policy("claim_patterns = { dept = 3 }"));
        assert!(e[0].message.contains("expected a regex"), "{e:?}");
        let e = errs(&policy("claim_patterns = { dept = [] }"));
        assert!(e[0].message.contains("expected a regex"), "{e:?}");
        for (bad, why) in [
            ("10.0.0.0/33", "not an IP address"),
            ("10.0.0.1/8", "host bits"),
            ("2001:db8::1/32", "host bits"),
            ("example.com", "not an IP address"),
            ("", "not an IP address"),
        ] {
            let e = errs(&policy(&format!(
                "source_ips = [\"10.0.0.0/8\", \"{bad}\"]"
            )));
            assert_eq!(e[0].key, "routes[0].policy.source_ips[1]", "{bad} {e:?}");
            assert_eq!(e[0].line, 6, "{e:?}");
            assert!(e[0].message.contains(why), "{bad} {e:?}");
        }
        let c = parse(
            Path::new("t.toml"),
            &policy("source_ips = [\"::ffff:10.0.0.0/104\", \"192.0.2.7\", \"2001:db8::/32\", \"0.0.0.0/0\"]\nclaim_patterns = { dept = \"eng-.*\", level = [\"1\", \"2\"] }"),
        )
        .unwrap();
        let p = c.routes[0].policy.as_ref().unwrap();
        let nets: Vec<String> = p.source_ips.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "0.0.0.0/0"]
        );
        assert_eq!(p.claim_patterns.len(), 2);
        assert_eq!(p.claim_patterns[1].patterns.len(), 2);
    }

    #[test]
    fn port_zero_listeners_never_clash() {
        // Port 0: each listener (and the admin one) gets its own free port at start.
        let src = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n";
        let c = parse(Path::new("t.toml"), src).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.admin_address.port(), 0);
        // A fixed port still clashes, with a listener and with the admin listener.
        let src = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"127.0.0.1:8080\"\n";
        let e = errs(src);
        assert!(
            e.iter()
                .any(|e| e.message.contains("used by another listener")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.message.contains("must not share")),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = errs("[server]\nthreads = 2\n\n[[routes]]\nupstream = \"app\"\nbogus = 1\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 6, "{}", e[0]);
        assert!(e[0].key.starts_with("routes"), "{}", e[0]);
        assert!(e[0].message.contains("bogus"), "{}", e[0]);
    }

    #[test]
    fn semantic_errors_have_lines() {
        let src = format!(
            "{UP}\n[[routes]]\npath = \"/\"\nupstream = \"nope\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n"
        );
        let e = errs(&src);
        let missing = e
            .iter()
            .find(|e| e.message.contains("unknown upstream"))
            .unwrap();
        assert_eq!(
            (missing.line, missing.key.as_str()),
            (6, "routes[0].upstream")
        );
        let dup = e
            .iter()
            .find(|e| e.message.contains("duplicate route"))
            .unwrap();
        assert_eq!((dup.line, dup.key.as_str()), (13, "routes[2].path"));
    }

    #[test]
    fn bad_url_and_duration() {
        let e = errs(
            "[upstreams.x]\nservers = [\"ftp://a\", \"http://\"]\nconnect_timeout = \"soon\"\n",
        );
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.servers[0]" && e.line == 2));
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.servers[1]" && e.line == 2));
        assert!(e
            .iter()
            .any(|e| e.key == "upstreams.x.connect_timeout" && e.line == 3));
    }

    #[test]
    fn health_check_keys_are_checked_with_their_line() {
        let e = errs(
            "[upstreams.x]\nservers = [\"http://a\"]\nhealth_path = \"healthz\"\n[upstreams.y]\nservers = [\"http://b\"]\nhealth_interval = \"5s\"\n[upstreams.z]\nservers = [\"http://c\"]\nhealth_path = \"/h\"\nhealth_interval = \"2s\"\nhealth_timeout = \"3s\"\n",
        );
        let at = |key: &str, line| e.iter().any(|e| e.key == key && e.line == line);
        assert!(at("upstreams.x.health_path", 3), "{e:?}");
        assert!(at("upstreams.y.health_interval", 6), "{e:?}");
        assert!(at("upstreams.z.health_timeout", 11), "{e:?}");
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn non_canonical_route_path_is_refused() {
        let e = errs(&format!(
            "{UP}[[routes]]\npath = \"/a/../b\"\nupstream = \"app\"\n"
        ));
        assert!(e[0].message.contains("\"/b\""), "{}", e[0]);
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        let src = format!(
            "[[providers]]\nid = \"a\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = {:?}\n\n[[providers]]\nid = \"b\"\nissuer = \"https://idp2.example\"\nclient_id = \"c\"\nclient_secret = \"${{AUTHGATE_TEST_UNSET_VAR}}\"\n",
            f.display().to_string()
        );
        let e = errs(&src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("AUTHGATE_TEST_UNSET_VAR"));
        assert_eq!(e[0].line, 11);
    }

    #[test]
    fn ambiguous_policies_are_refused() {
        let src = format!(
            "{UP}[[routes]]\npath = \"/a\"\nupstream = \"app\"\n[routes.policy]\n\n[[routes]]\npath = \"/b\"\nupstream = \"app\"\npublic = true\n[routes.policy]\ngroups = [\"x\"]\n\n[[routes]]\npath = \"/c\"\nupstream = \"app\"\n[routes.policy]\nemail_domains = [\"@corp.com\", \".corp.com\"]\nemails = [\"a@b@c\"]\nmethods = [\"GE T\"]\n"
        );
        let e = errs(&src);
        let has = |key: &str, msg: &str| {
            e.iter()
                .any(|x| x.key == key && x.message.contains(msg) && x.line > 0)
        };
        assert!(has("routes[0].policy", "empty policy"), "{e:?}");
        assert!(has("routes[1].policy", "public route"), "{e:?}");
        assert!(
            has("routes[2].policy.email_domains[0]", "domain only"),
            "{e:?}"
        );
        assert!(
            has("routes[2].policy.email_domains[1]", "domain only"),
            "{e:?}"
        );
        assert!(has("routes[2].policy.emails[0]", "not an email"), "{e:?}");
        assert!(
            has("routes[2].policy.methods[0]", "not an HTTP method"),
            "{e:?}"
        );
    }

    /// `validate` itself keeps the contract: `None` exactly when an error was reported, for
    /// an error in the last section checked as for any other.
    #[test]
    fn validate_is_none_when_an_error_was_reported() {
        let cases = [
            ("", false),
            ("[gateway]\nbearer_cache_entries = -1\n", true),
            ("[csrf]\nallowed_origins = [\"nope\"]\n", true),
            (
                "[server]\nthreads = 0\n[gateway]\nbearer_cache_entries = -1\n",
                true,
            ),
            ("[session]\ncache_max_entries = -1\n", true),
        ];
        for (src, bad) in cases {
            let mut rep = Reporter::new(Path::new("t.toml"), src);
            let f: file::File = toml::from_str(src).unwrap();
            let c = validate(&f, &mut rep);
            assert_eq!(c.is_none(), bad, "{src}");
            assert_eq!(rep.errors.is_empty(), !bad, "{src}: {:?}", rep.errors);
        }
        // Every error is reported, also the one checked after others (it was dropped).
        let e = errs("[server]\nthreads = 0\n[gateway]\nbearer_cache_entries = -1\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            (e[1].line, e[1].key.as_str(), e[1].message.as_str()),
            (4, "gateway.bearer_cache_entries", "must not be negative")
        );
    }

    #[test]
    fn example_config_is_valid() {
        // Offline: its client secret comes from the environment, unset here.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        if let Err(e) = load_as(&p, Mode::CheckOffline) {
            panic!("config.toml: {e}");
        }
    }
}
