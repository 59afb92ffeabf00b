//! The migration guides (`docs/migrate-*.md`): every TOML block in them is a complete config
//! that `authgate check --offline` accepts, verbatim, and the README links every guide. The
//! oauth2-proxy guide's reverse-proxy config also runs, against the test provider: its
//! `/oauth2/` endpoints and `X-Auth-Request-*` headers are what the guide says.

mod common;

use std::path::Path;
use std::process::Command;

use common::{client, echo, free_port, set_cookies, Gateway, Idp, Opts, Seen, BIN};

const GUIDES: &[&str] = &[
    "docs/migrate-oauth2-proxy.md",
    "docs/migrate-mod-auth-openidc.md",
];

/// The fenced ```toml blocks of a Markdown text, verbatim.
fn toml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match current.as_mut() {
            None if line == "```toml" => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unterminated ```toml block");
    blocks
}

/// `authgate check --offline` on `src` (as `name`): success and the output.
fn check_offline(name: &str, src: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, src).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--offline", "-c"])
        .arg(&p)
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_toml_block_of_the_guides_checks_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for guide in GUIDES {
        let md = std::fs::read_to_string(root.join(guide)).unwrap();
        let blocks = toml_blocks(&md);
        assert!(blocks.len() >= 2, "{guide}: {} TOML blocks", blocks.len());
        for (i, block) in blocks.iter().enumerate() {
            let (ok, out) = check_offline(&format!("block{i}.toml"), block);
            assert!(ok, "{guide}, TOML block {}:\n{block}\n{out}", i + 1);
        }
    }
}

/// The oauth2-proxy guide's configs keep oauth2-proxy's `/oauth2/` layout, as it says.
#[test]
fn the_oauth2_proxy_configs_answer_under_oauth2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join(GUIDES[0])).unwrap();
    for block in toml_blocks(&md) {
        let (ok, out) = check_offline("c.toml", &block);
        assert!(ok && out.contains("\ngateway prefix: /oauth2/\n"), "{out}");
    }
}

/// A broken block would be caught: the extraction really hands `check` the text.
#[test]
fn a_broken_block_fails() {
    let md = "text\n```toml\n[[routes]]\npath = \"/\"\nupstream = \"nope\"\n```\n";
    let blocks = toml_blocks(md);
    assert_eq!(blocks, ["[[routes]]\npath = \"/\"\nupstream = \"nope\"\n"]);
    let (ok, out) = check_offline("c.toml", &blocks[0]);
    assert!(!ok);
    assert!(
        out.contains("c.toml:3:12: routes[0].upstream: unknown upstream \"nope\""),
        "{out}"
    );
}

#[test]
fn the_readme_links_every_guide() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for guide in GUIDES {
        assert!(
            readme.contains(&format!("]({guide})")),
            "README.md: {guide}"
        );
    }
}

/// The guide's reverse-proxy config, with the test's addresses, provider and secret file (and
/// the policy's group one the test user has): sign-in through `/oauth2/login` and
/// `/oauth2/callback`, the app sees `X-Auth-Request-*` (the gateway's values only, never a
/// client's), and `/oauth2/userinfo` and `/oauth2/logout` answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth2_proxy_reverse_proxy_config_runs_with_its_layout_and_headers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = std::fs::read_to_string(root.join(GUIDES[0])).unwrap();
    let block = toml_blocks(&md).remove(0);
    let port = free_port();
    let idp = Idp::start_full(
        free_port(),
        true,
        &[],
        &[],
        serde_json::json!({
            "client_id": "app",
            "redirect_uris": [format!("http://127.0.0.1:{port}/oauth2/callback")],
            "post_logout_redirect_uris": [format!("http://127.0.0.1:{port}/")],
        }),
    )
    .await;
    let app = echo().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, "authgate-secret\n").unwrap();
    let mut body = block;
    for (from, to) in [
        // The harness writes the listener and admin sections itself.
        (
            "[[listeners]]\naddress = \"0.0.0.0:4180\"\n\n[admin]\naddress = \"127.0.0.1:9090\"\n\n",
            String::new(),
        ),
        (
            "https://login.example.com/realms/corp",
            idp.issuer.clone(),
        ),
        (
            "/run/secrets/client-secret",
            secret_file.display().to_string(),
        ),
        ("http://127.0.0.1:3000", format!("http://{app}")),
        ("groups = [\"staff\"]", "groups = [\"dev\"]".to_string()),
    ] {
        assert!(body.contains(from), "the guide's block has no {from}");
        body = body.replace(from, &to);
    }
    let gw = Gateway::start_with(
        &body,
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    // A browser without a session is sent to /oauth2/login, with the path to come back to.
    let r = gw.browse_as("/reports?x=1", "").await;
    assert_eq!(r.status(), 302);
    let login = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(login, "/oauth2/login?rd=%2Freports%3Fx%3D1");
    // Public paths pass without one; a client's X-Auth-Request-User never reaches the app.
    let seen: Seen = client()
        .get(gw.url("/static/app.css"))
        .header("x-auth-request-user", "forged")
        .header("X_Auth_Request_Email", "forged@example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.header("x-auth-request-user"), None, "{seen:?}");
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains("forged")),
        "{seen:?}"
    );

    // /oauth2/login → provider → /oauth2/callback: a session.
    let r = client()
        .get(gw.url(&login))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "login must redirect to the provider");
    let tx = set_cookies(&r)
        .into_iter()
        .find(|c| c.contains("_tx_"))
        .expect("transaction cookie");
    let tx = tx.split(';').next().unwrap().to_string();
    let idp_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap();
    let mut url = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let callback_prefix = format!("http://127.0.0.1:{port}/oauth2/callback?");
    let callback = loop {
        let r = idp_client.get(url.clone()).send().await.unwrap();
        assert!(r.status().is_redirection(), "IdP answered {}", r.status());
        url = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
        if url.as_str().starts_with(&callback_prefix) {
            break url;
        }
    };
    let r = client()
        .get(callback)
        .header("accept", "text/html")
        .header("cookie", &tx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", gw.log());
    assert_eq!(r.headers()["location"], "/reports?x=1");
    let session = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("authgate_session="))
        .expect("session cookie");
    let session = session.split(';').next().unwrap().to_string();

    // The app sees oauth2-proxy's X-Auth-Request-* names, with the gateway's values, and the
    // access token (pass_access_token); a forged copy is replaced, not added to.
    let seen: Seen = client()
        .get(gw.url("/reports"))
        .header("cookie", &session)
        .header("x-auth-request-user", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.all("x-auth-request-user"), ["alice"], "{seen:?}");
    assert_eq!(
        seen.header("x-auth-request-email"),
        Some("alice@example.com")
    );
    assert_eq!(
        seen.header("x-auth-request-preferred-username"),
        Some("alice")
    );
    assert!(
        seen.header("x-auth-request-groups")
            .is_some_and(|g| g.split(',').any(|g| g == "dev")),
        "{seen:?}"
    );
    assert!(seen
        .header("x-auth-request-access-token")
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(seen.header("x-forwarded-user"), None, "{seen:?}");

    // /oauth2/userinfo says who; /oauth2/logout ends the session.
    let r = gw.get_as("/oauth2/userinfo", &session).await;
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().await.unwrap();
    assert!(info.to_string().contains("alice"), "{info}");
    let r = client()
        .post(gw.url("/oauth2/logout"))
        .header("cookie", &session)
        .header("origin", format!("http://127.0.0.1:{port}"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );
    assert_eq!(gw.get_as("/reports", &session).await.status(), 401);
}
