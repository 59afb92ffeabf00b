//! `authgate check` and `run` on good and bad configs, through the binary.

use std::process::Command;

use crate::common::{client, echo, Gateway, BIN};

fn check(src: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, src).unwrap();
    let out = Command::new(BIN).arg("check").arg(&p).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn every_example_config_checks_ok() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![
        format!("{root}/config.toml"),
        format!("{root}/src/demo.toml"),
    ];
    for entry in std::fs::read_dir(format!("{root}/deploy")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            files.push(p.display().to_string());
        }
    }
    for f in files {
        // As CI checks them (no DNS, no secrets), and as the host that runs them does.
        for (args, secret) in [(&["check", "--offline"][..], None), (&["check"], Some("s"))] {
            let mut cmd = Command::new(BIN);
            cmd.args(args).arg(&f).env_remove("AUTHGATE_CONFIG");
            // The secrets the deployment's environment provides (deploy/kubernetes: Secrets).
            match secret {
                Some(s) => cmd
                    .env("AUTHGATE_CLIENT_SECRET", s)
                    .env("AUTHGATE_SESSION_SECRET", "s".repeat(48)),
                None => cmd
                    .env_remove("AUTHGATE_CLIENT_SECRET")
                    .env_remove("AUTHGATE_SESSION_SECRET"),
            };
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{f} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `authgate` with `args` and the environment variables `env` (`None`: unset), in `dir`.
fn authgate(dir: &std::path::Path, args: &[&str], env: &[(&str, Option<&str>)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("AUTHGATE_CONFIG");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// What CI cannot have: DNS for the cluster's names and the mounted secrets. Online both are
/// errors at their line; offline both pass, and every other error is still reported, with
/// file:line:column.
#[test]
fn offline_check_needs_no_dns_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    let src = "[session]\nstore = \"redis\"\nredis_url = \"${AUTHGATE_TEST_REDIS_URL}\"\nsecret_file = \"/nonexistent/authgate/session-secret\"\n\n[[providers]]\nid = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gw\"\nclient_secret_file = \"/nonexistent/authgate/client-secret\"\n\n[upstreams.app]\nservers = [\"http://app.authgate-test.invalid:8080\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n[admin]\ntoken = \"${AUTHGATE_TEST_ADMIN_TOKEN}\"\n\n[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls_cert_file = \"/nonexistent/authgate/tls.crt\"\ntls_key_file = \"/nonexistent/authgate/tls.key\"\n";
    std::fs::write(&p, src).unwrap();
    let unset = [
        ("AUTHGATE_TEST_REDIS_URL", None),
        ("AUTHGATE_TEST_ADMIN_TOKEN", None),
    ];
    let (ok, out) = authgate(dir.path(), &["check", "c.toml"], &unset);
    assert!(!ok, "{out}");
    for want in [
        "c.toml:3:13: session.redis_url: environment variable AUTHGATE_TEST_REDIS_URL is not set",
        "c.toml:4:15: session.secret_file: cannot read /nonexistent/authgate/session-secret",
        "c.toml:10:22: providers[0].client_secret_file: cannot read /nonexistent/authgate/client-secret",
        "c.toml:20:9: admin.token: environment variable AUTHGATE_TEST_ADMIN_TOKEN is not set",
        "c.toml:24:17: listeners[0].tls_cert_file: cannot read /nonexistent/authgate/tls.crt",
        "c.toml:25:16: listeners[0].tls_key_file: cannot read /nonexistent/authgate/tls.key",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    // A name that does not resolve is no config error (the gateway follows DNS while it
    // runs; tests/upstream_dns.rs has the warning `check` prints for it).
    assert!(!out.contains("upstreams.app.servers[0]"), "{out}");
    let (ok, out) = authgate(dir.path(), &["check", "--offline", "c.toml"], &unset);
    assert!(ok, "{out}");
    assert!(
        out.contains("offline: upstream names not resolved, absent secrets not read"),
        "{out}"
    );
    assert!(out.contains("store: redis (one server)"), "{out}");

    // Offline validates all else exactly as online: a wrong value, a missing secret where
    // one is required, a partly absent URL that is still no redis URL.
    std::fs::write(
        &p,
        src.replace(
            "store = \"redis\"",
            "store = \"redis\"\nredis_timeout = \"soon\"",
        )
        .replace(
            "secret_file = \"/nonexistent/authgate/session-secret\"\n",
            "",
        )
        .replace(
            "${AUTHGATE_TEST_REDIS_URL}",
            "http://${AUTHGATE_TEST_REDIS_URL}",
        ),
    )
    .unwrap();
    let (ok, out) = authgate(dir.path(), &["check", "--offline", "c.toml"], &unset);
    assert!(!ok, "{out}");
    for want in [
        "c.toml:3:17: session.redis_timeout: invalid duration",
        "c.toml:4:13: session.redis_url: not a redis:// or rediss:// URL",
        "c.toml:2:9: session.secret: store = \"redis\" needs secret or secret_file",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    // An existing secret file is read and checked offline too.
    let short = dir.path().join("short-secret");
    std::fs::write(&short, "too short\n").unwrap();
    std::fs::write(
        &p,
        src.replace(
            "/nonexistent/authgate/session-secret",
            &short.display().to_string(),
        ),
    )
    .unwrap();
    let (ok, out) = authgate(dir.path(), &["check", "--offline", "c.toml"], &unset);
    assert!(!ok, "{out}");
    assert!(
        out.contains("c.toml:4:15: session.secret: must be at least 32 bytes"),
        "{out}"
    );
}

/// Where the config comes from: `check FILE`, `-c FILE` (check, run), `AUTHGATE_CONFIG`, else
/// ./config.toml; the command line wins, and the output says which file and why.
#[test]
fn config_path_from_flag_positional_env_or_default() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n";
    std::fs::write(dir.path().join("a.toml"), good).unwrap();
    std::fs::write(dir.path().join("b.toml"), "[server]\nthreads = 0\n").unwrap();
    std::fs::write(dir.path().join("config.toml"), good).unwrap();
    let env_b = [("AUTHGATE_CONFIG", Some("b.toml"))];
    let env_a = [("AUTHGATE_CONFIG", Some("a.toml"))];
    for (args, env, ok, want) in [
        (
            &["check", "a.toml"][..],
            &[][..],
            true,
            "config file: a.toml (from command line)",
        ),
        (
            &["check", "-c", "a.toml"],
            &[],
            true,
            "config file: a.toml (from command line)",
        ),
        (
            &["check", "--config", "a.toml"],
            &[],
            true,
            "a.toml: ok (1 listeners, 1 upstreams, 1 routes)",
        ),
        (
            &["check"],
            &env_a,
            true,
            "config file: a.toml (from AUTHGATE_CONFIG)",
        ),
        (&["check"], &env_b, false, "b.toml:2:11: server.threads"),
        (
            &["check"],
            &env_b,
            false,
            "config file: b.toml (from AUTHGATE_CONFIG)",
        ),
        (
            &["check", "-c", "a.toml"],
            &env_b,
            true,
            "config file: a.toml (from command line)",
        ),
        (
            &["check", "a.toml"],
            &env_b,
            true,
            "config file: a.toml (from command line)",
        ),
        (
            &["check"],
            &[],
            true,
            "config file: config.toml (from default)",
        ),
        (
            &["check", "--offline"],
            &env_a,
            true,
            "config file: a.toml (from AUTHGATE_CONFIG)",
        ),
        // run: the same sources (b.toml is refused before anything starts).
        (
            &["run"],
            &env_b,
            false,
            "config file: b.toml (from AUTHGATE_CONFIG)",
        ),
        (
            &["run", "-c", "b.toml"],
            &env_a,
            false,
            "b.toml:2:11: server.threads",
        ),
        (
            &["run", "-c", "missing.toml"],
            &env_a,
            false,
            "config file: missing.toml (from command line)",
        ),
        // Both spellings at once is a usage error.
        (
            &["check", "a.toml", "-c", "a.toml"],
            &[],
            false,
            "cannot be used with",
        ),
    ] {
        let (got, out) = authgate(dir.path(), args, env);
        assert_eq!(got, ok, "{args:?} {env:?}: {out}");
        assert!(out.contains(want), "{args:?} {env:?}: {want}\n{out}");
    }
}

/// On success `check` says what the config sets up, in plain stable lines.
#[test]
fn check_prints_a_summary() {
    let (ok, out) = check(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"127.0.0.1:8081\"\nh2c = true\n\n[admin]\naddress = \"127.0.0.1:9191\"\n\n[gateway]\nprefix = \"/oauth2/\"\n\n[session]\nstore = \"redis\"\nredis_cluster_nodes = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[providers]]\nid = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gw\"\n\n[[providers]]\nid = \"github\"\nissuer = \"https://token.example.com\"\nclient_id = \"gw2\"\n\n[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\nid = \"static\"\npath = \"/static\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\nid = \"admin\"\nhost = \"admin.example.com\"\npath = \"/\"\nupstream = \"app\"\nunauthenticated = \"401\"\nproviders = [\"corp\"]\n[routes.policy]\ngroups = [\"ops\", \"admins\"]\nemail_domains = [\"example.com\"]\n\n[[routes]]\nid = \"api\"\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"https://api.example.com\"]\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
    );
    assert!(ok, "{out}");
    let summary: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "listeners:")
        .filter(|l| !l.starts_with("    provider "))
        .collect();
    assert_eq!(
        summary.join("\n"),
        "listeners:
  127.0.0.1:8080 http
  127.0.0.1:8081 http (HTTP/1.1, h2c)
  admin 127.0.0.1:9191
routes:
  static: /static -> app: public
  admin: admin.example.com/ -> app: sign-in (unauthenticated = 401); providers corp; policy email_domains = [example.com] groups = [admins, ops]
  api: /api -> app: bearer token (audiences https://api.example.com) or sign-in (unauthenticated = auto); any signed-in user
  app: / -> app: sign-in (unauthenticated = auto); any signed-in user
providers:
  corp: issuer https://login.example.com client_id gw
  github: issuer https://token.example.com client_id gw2
store: redis (Cluster: 2 seed nodes)
gateway prefix: /oauth2/"
    );
    assert!(
        out.contains(
            "    provider corp: email forwarded only when the token says email_verified: true"
        ),
        "{out}"
    );
}

/// A protected route with no provider to sign in through: the gateway would refuse everyone,
/// so `check` refuses it (online and offline), at the route's line; `run` still starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_need_a_provider() {
    let src = "[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\npath = \"/public\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n[[routes]]\nupstream = \"app\"\nhost = \"api.example.com\"\nunauthenticated = \"401\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), src).unwrap();
    for args in [
        &["check", "c.toml"][..],
        &["check", "--offline", "-c", "c.toml"],
    ] {
        let (ok, out) = authgate(dir.path(), args, &[]);
        assert!(!ok, "{out}");
        assert!(
            out.contains("c.toml:10:8: routes[1]: protected route, but no [[providers]] is configured: nobody could sign in (add a provider, or set public = true)"),
            "{out}"
        );
        assert!(
            out.contains("c.toml:14:12: routes[2]: protected route"),
            "{out}"
        );
        assert!(!out.contains("routes[0]"), "{out}");
    }
    let gw = Gateway::start(src).await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn errors_name_key_and_line() {
    let (ok, out) =
        check("[server]\nthreads = 1\n\n[[routes]]\nupstream = \"app\"\nbogus = true\n");
    assert!(!ok);
    assert!(
        out.contains("c.toml:6:1: routes[0].bogus: unknown field `bogus`"),
        "{out}"
    );

    let (ok, out) = check(
        "[upstreams.app]\nservers = [\"htp:/x\"]\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\nupstream = \"nope\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains("c.toml:2:12: upstreams.app.servers[0]:"),
        "{out}"
    );
    assert!(
        out.contains("c.toml:9:8: routes[1].path: duplicate route"),
        "{out}"
    );
    assert!(
        out.contains("c.toml:13:12: routes[2].upstream: unknown upstream \"nope\""),
        "{out}"
    );

    let (ok, out) =
        check("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\ngrace_period = \"forever\"\n");
    assert!(!ok);
    assert!(
        out.contains(":2:") && out.contains("server.trusted_proxies[0]"),
        "{out}"
    );
    assert!(
        out.contains(":3:") && out.contains("server.grace_period"),
        "{out}"
    );

    let (ok, out) =
        check("[session]\nstore = \"redis\"\nredis_url = \"${AUTHGATE_SURELY_UNSET}\"\n");
    assert!(!ok);
    assert!(out.contains("AUTHGATE_SURELY_UNSET is not set"), "{out}");
}

#[test]
fn run_refuses_bad_config_and_taken_ports() {
    let out = Command::new(BIN)
        .args(["run", "-c", "/nonexistent/authgate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[[listeners]]\naddress = \"{}\"\n[admin]\naddress = \"127.0.0.1:0\"\n[server]\npid_file = \"{d}/pid\"\nupgrade_socket = \"{d}/sock\"\n",
            taken.local_addr().unwrap(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_is_useful() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "demo"] {
        assert!(s.contains(word), "{s}");
    }
}

/// Two introspecting providers on one bearer route: an opaque token must go to one of them
/// only, so each needs a distinct `opaque_token_prefix` (or the route names one provider).
#[test]
fn several_introspecting_providers_need_prefixes() {
    let config = |a_extra: &str, b_extra: &str, route_extra: &str| {
        format!(
            "[session]\nstore = \"memory\"\n\n[[providers]]\nid = \"a\"\nissuer = \"https://a.example\"\nclient_id = \"gw\"\nclient_secret = \"s\"\nintrospect_opaque_tokens = true\n{a_extra}\n[[providers]]\nid = \"b\"\nissuer = \"https://b.example\"\nclient_id = \"gw\"\nclient_secret = \"s\"\nintrospect_opaque_tokens = true\n{b_extra}\n[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\npath = \"/api\"\nupstream = \"app\"\nbearer = true\naudiences = [\"api\"]\n{route_extra}"
        )
    };
    // No prefixes: refused, on the route's line, with the fix.
    let (ok, out) = check(&config("", "", ""));
    assert!(!ok);
    assert!(out.contains("c.toml:23:12: routes[0].providers:"), "{out}");
    assert!(
        out.contains("(a, b)")
            && out.contains("providers = [...]")
            && out.contains("opaque_token_prefix"),
        "{out}"
    );
    // Only one has a prefix, the same prefix twice, or one the start of the other: refused,
    // at the route's providers list when it has one.
    for (a, b) in [
        ("opaque_token_prefix = \"a_\"\n", ""),
        (
            "opaque_token_prefix = \"x_\"\n",
            "opaque_token_prefix = \"x_\"\n",
        ),
        (
            "opaque_token_prefix = \"x\"\n",
            "opaque_token_prefix = \"x_\"\n",
        ),
    ] {
        let src = config(a, b, "providers = [\"a\", \"b\"]\n");
        let line = src
            .lines()
            .position(|l| l.starts_with("providers"))
            .unwrap()
            + 1;
        let (ok, out) = check(&src);
        assert!(!ok, "{a} {b}");
        assert!(
            out.contains(&format!(
                "c.toml:{line}:14: routes[0].providers: this bearer route"
            )),
            "{out}"
        );
    }
    // Distinct prefixes, or a route that names one provider: fine.
    for (a, b, route) in [
        (
            "opaque_token_prefix = \"a_\"\n",
            "opaque_token_prefix = \"b_\"\n",
            "",
        ),
        ("", "", "providers = [\"b\"]\n"),
    ] {
        let (ok, out) = check(&config(a, b, route));
        assert!(ok, "{out}");
    }
}

/// The identity keys of `[[providers]]`: errors with their lines, and `check` saying what a
/// provider's claims will be taken to mean.
#[test]
fn provider_identity_keys_are_checked_and_explained() {
    let provider = |id: &str, extra: &str| {
        format!("[[providers]]\nid = \"{id}\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n{extra}\n")
    };
    let (ok, out) = check(&provider("corp", ""));
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "provider corp: email forwarded only when the token says email_verified: true"
        ),
        "{out}"
    );
    let (ok, out) = check(&provider(
        "corp",
        "trust_email = true\nuser_claim = \"email\"\nuserinfo = \"merge\"",
    ));
    assert!(ok, "{out}");
    assert!(out.contains("(trust_email = true)"), "{out}");
    assert!(out.contains("stay keyed on the provider's sub"), "{out}");
    assert!(out.contains("userinfo endpoint are merged"), "{out}");

    for (extra, want) in [
        (
            "userinfo = \"always\"",
            "c.toml:5:12: providers[0].userinfo: \"always\": expected \"off\" or \"merge\"",
        ),
        (
            "trusted_audiences = [\"c\"]",
            "c.toml:5:22: providers[0].trusted_audiences[0]:",
        ),
        (
            "trusted_audiences = [\"\"]",
            "providers[0].trusted_audiences[0]: list the other audiences",
        ),
        (
            "ca_file = \"/nonexistent/ca.pem\"",
            "c.toml:5:11: providers[0].ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            "introspection_inactive_ttl = \"1h\"",
            "providers[0].introspection_inactive_ttl: at most 300s",
        ),
    ] {
        let (ok, out) = check(&provider("corp", extra));
        assert!(!ok, "{extra}");
        assert!(out.contains(want), "{extra}: {out}");
    }
    // Plain http only to this machine; ids name callback paths.
    for (issuer, ok) in [
        ("http://127.0.0.1:9400", true),
        ("http://localhost:9400/realms/x", true),
        ("http://[::1]:9400", true),
        ("http://keycloak:8080/realms/x", false),
        ("http://10.0.0.5", false),
        ("http://localhost.evil.example", false),
    ] {
        let (got, out) = check(&format!(
            "[[providers]]\nid = \"p\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\n"
        ));
        assert_eq!(got, ok, "{issuer}: {out}");
    }
    let (ok, out) = check(&provider("a/b", ""));
    assert!(!ok && out.contains("c.toml:2:6: providers[0].id:"), "{out}");
    // Two providers answering at one configured callback could not be told apart.
    let (ok, out) = check(&format!(
        "{}{}",
        provider(
            "a",
            "redirect_url = \"https://app.example/.authgate/callback\""
        ),
        provider(
            "b",
            "redirect_url = \"https://other.example/.authgate/callback\""
        )
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("providers[1].redirect_url: providers[0] answers at /.authgate/callback and providers[1] at /.authgate/callback"),
        "{out}"
    );
    let two = |a: &str, b: &str| {
        format!(
            "[[providers]]\nid = \"a\"\nissuer = \"https://a.example\"\nclient_id = \"c\"\n{a}\n[[providers]]\nid = \"b\"\nissuer = \"https://b.example\"\nclient_id = \"c\"\n{b}\n"
        )
    };
    // Defaults: each at its own callback/<id>.
    let (ok, out) = check(&two("", ""));
    assert!(ok, "{out}");
    // A configured path that is another provider's default, or ends like another's.
    for (a, b) in [
        (
            "redirect_url = \"https://app.example/.authgate/callback/b\"",
            "",
        ),
        (
            "redirect_url = \"https://app.example/x/.authgate/callback/b\"",
            "",
        ),
        (
            "redirect_url = \"https://app.example/x/.authgate/callback/a\"",
            "redirect_url = \"https://other.example/.authgate/callback/a\"",
        ),
    ] {
        let (ok, out) = check(&two(a, b));
        assert!(
            !ok && out.contains("one callback address for two providers"),
            "{a} {b}: {out}"
        );
    }
    // One issuer, two providers: logout and bearer tokens could not tell them apart.
    let (ok, out) = check(&format!("{}{}", provider("a", ""), provider("b", "")));
    assert!(!ok, "{out}");
    assert!(
        out.contains("c.toml:8:10: providers[1].issuer: providers[0] has the same issuer"),
        "{out}"
    );
    // A renamed email claim is only an email with trust_email.
    let (ok, out) = check(&provider("corp", "email_claim = \"upn\""));
    assert!(
        ok && out.contains("email_claim = \"upn\": email_verified speaks of \"email\" only"),
        "{out}"
    );
    // policy.providers names configured providers.
    let (ok, out) = check(&format!(
        "{}[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n[routes.policy]\nproviders = [\"nope\"]\n",
        provider("corp", "")
    ));
    assert!(
        !ok && out.contains("routes[0].policy.providers[0]: unknown provider \"nope\""),
        "{out}"
    );
}

/// Port 0 everywhere: the kernel picks the ports, and the gateway reports them once bound,
/// in the ready file (JSON, this process's pid) and in one log line; the harness relies on
/// it for every gateway it starts without a fixed port. `--upgrade` refuses port 0 (it takes
/// sockets over by address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_is_bound_and_reported_in_the_ready_file() {
    let e = echo().await;
    let gw = Gateway::start(&format!(
        "[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n"
    ))
    .await;
    assert_ne!(gw.addr.port(), 0);
    assert_ne!(gw.admin.port(), 0);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gw.ready_file()).unwrap()).unwrap();
    assert_eq!(
        ready,
        serde_json::json!({
            "listeners": [gw.addr.to_string()],
            "admin": gw.admin.to_string(),
            "pid": gw.pid(),
        })
    );
    let line = format!(
        "ready: every listener is bound listeners={} admin={} pid={}",
        gw.addr,
        gw.admin,
        gw.pid()
    );
    assert!(gw.log().contains(&line), "{}", gw.log());
    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
    let r = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[server]\npid_file = \"{d}/pid\"\nupgrade_socket = \"{d}/sock\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--upgrade", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("port 0 cannot be taken over with --upgrade"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The summary the README shows is what `check config.toml` prints (a line the README cuts
/// with "..." matches up to there).
#[test]
fn the_readme_shows_the_summary_of_config_toml() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let shown: Vec<&str> = readme
        .split("```text\nconfig.toml: ok")
        .nth(1)
        .expect("README shows the summary")
        .split("\n```")
        .next()
        .unwrap()
        .lines()
        .skip(1)
        .collect();
    let (ok, out) = authgate(
        std::path::Path::new(root),
        &["check", "config.toml"],
        &[("AUTHGATE_CLIENT_SECRET", Some("s"))],
    );
    assert!(ok, "{out}");
    let printed: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(shown.len(), printed.len(), "{out}");
    for (s, p) in shown.iter().zip(&printed) {
        match s.strip_suffix(" ...") {
            Some(start) => assert!(p.starts_with(start), "README: {s}\ncheck: {p}"),
            None => assert_eq!(s, p),
        }
    }
}

/// Claim headers (issue 16): `check` names each bad key with its line, and on success the
/// summary lists the headers a route sends, never a secret.
#[test]
fn check_claim_headers() {
    let base = "[[providers]]\nid = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gw\"\nclient_secret = \"s\"\n\n[upstreams.app]\nservers = [\"http://127.0.0.1:3000\"]\n\n[[routes]]\nid = \"legacy\"\nupstream = \"app\"\n[routes.headers]\n";
    let (ok, out) = check(&format!(
        "{base}claims = {{ \"Content-Length\" = \"x\" }}\nclaim_prefix = \"X-Forwarded-\"\nremote_user = {{ pattern = \"^(.+)@\", replace = \"$2\" }}\nbasic_auth = {{ password = \"hunter2\" }}\nid_token = \"Authorization\"\n"
    ));
    assert!(!ok, "{out}");
    for want in [
        "c.toml:14:31: routes[0].headers.claims.Content-Length: \"Content-Length\" is a framing",
        "c.toml:15:16: routes[0].headers.claim_prefix: \"X-Forwarded-\" would let a claim set",
        "c.toml:16:47: routes[0].headers.remote_user.replace: refers to group $2",
        "c.toml:13:1: routes[0].headers: basic_auth and id_token = \"Authorization\" would both set Authorization",
    ] {
        assert!(out.contains(want), "want {want}\n{out}");
    }
    assert!(!out.contains("hunter2"), "{out}");
    let (ok, out) = check(&format!(
        "{base}claims = {{ \"X-Dept\" = \"department\" }}\nclaim_prefix = \"OIDC_CLAIM_\"\nremote_user = {{ claim = \"email\", pattern = \"^(.+)@corp\\\\.example$\" }}\nbasic_auth = {{ password = \"hunter2\" }}\nx_auth_request = true\n"
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("  legacy: / -> app: sign-in (unauthenticated = auto); any signed-in user; sends x-dept (department), OIDC_CLAIM_<claim>, remote-user (email), authorization (Basic), x-auth-request-*"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}
