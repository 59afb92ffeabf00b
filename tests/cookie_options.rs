//! Session cookie options (issue 16 point 5) through the real binary and a real login at the
//! test OpenID provider: a browser-session cookie (no `Max-Age`/`Expires`), `SameSite=None`
//! (always `Secure`), and a `cookie_path` that the whole sign-in, the app and sign-out use.

mod common;

use common::{
    auth_gateway, client, echo, http_login, set_cookies, Gateway, Idp, Opts, Seen, ANY_PORT,
};

/// The session cookie's `Set-Cookie` in a response.
fn session_set_cookie(r: &reqwest::Response) -> String {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("authgate_session="))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", set_cookies(r)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_session_cookie_with_same_site_none() {
    let idp = Idp::start(true, &[ANY_PORT]).await;
    let gw = auth_gateway(
        &idp,
        ANY_PORT,
        "store = \"memory\"\ncookie_persistent = false\ncookie_same_site = \"none\"",
    )
    .await;
    let (cookie, resp) = http_login(&gw, "/page").await;
    assert_eq!(resp.status(), 302);
    let set = session_set_cookie(&resp);
    for attr in ["SameSite=None", "Secure", "HttpOnly", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "a browser-session cookie has neither: {set}"
    );
    // It is a working session.
    let r = gw.get_as("/page", &cookie).await;
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("alice"));
    // Sign-out still expires it.
    let r = client()
        .post(gw.url("/.authgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let clear = session_set_cookie(&r);
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert_eq!(gw.get_as("/page", &cookie).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_path_route_signs_in_and_out() {
    let idp = Idp::start_full(
        ANY_PORT,
        true,
        &[ANY_PORT],
        &[],
        serde_json::json!({
            "redirect_uris": [
                "http://127.0.0.1/app/.authgate/callback",
                "http://localhost/app/.authgate/callback",
            ],
        }),
    )
    .await;
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!(
            "{provider}\n[gateway]\nprefix = \"/app/.authgate/\"\n\n[session]\nstore = \"memory\"\ncookie_path = \"/app/\"\n\n[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\npath = \"/app/\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\npublic = true\n",
            provider = idp.provider_toml(),
        ),
        Opts::default(),
    )
    .await;
    gw.wait_ready().await;
    let c = client();
    let base = reqwest::Url::parse(&gw.url("/")).unwrap();

    // Protected page → sign-in under the gateway prefix → provider → callback.
    let r = c
        .get(gw.url("/app/page?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login = base
        .join(r.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(login.path(), "/app/.authgate/login", "{login}");
    let r = c
        .get(login)
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
    let callback = base.join("/app/.authgate/callback").unwrap();
    let mut done = None;
    for _ in 0..10 {
        let r = idp_client.get(url.clone()).send().await.unwrap();
        assert!(
            r.status().is_redirection(),
            "IdP answered {} at {url}",
            r.status()
        );
        let next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
        if next.as_str().starts_with(callback.as_str()) {
            done = Some(next);
            break;
        }
        url = next;
    }
    let r = c
        .get(done.expect("the IdP redirected back to the callback"))
        .header("accept", "text/html")
        .header("cookie", &tx)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/app/page?x=1");
    let set = session_set_cookie(&r);
    assert!(set.contains("Path=/app/"), "{set}");
    assert!(set.contains("Max-Age="), "persistent by default: {set}");
    let cookie = set.split(';').next().unwrap().to_string();

    // The app under the cookie path sees the user, not the gateway's cookie.
    let r = gw
        .get_as("/app/page", &format!("{cookie}; theme=dark"))
        .await;
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("alice"));
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    // userinfo below the gateway prefix reads it too.
    assert_eq!(
        gw.get_as("/app/.authgate/userinfo", &cookie).await.status(),
        200
    );

    // Sign-out clears the cookie at the same path, and the session is over.
    let r = c
        .post(gw.url("/app/.authgate/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let clear = session_set_cookie(&r);
    assert!(
        clear.contains("Path=/app/") && clear.contains("Max-Age=0"),
        "{clear}"
    );
    assert_eq!(gw.get_as("/app/page", &cookie).await.status(), 401);
}
