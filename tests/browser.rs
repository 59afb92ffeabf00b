//! The OpenID Connect login in a real browser: headless Chromium (over WebDriver) against the
//! real binary and the real `oidc-provider` with its HTML login and consent forms. The
//! gateway is driven as http://localhost:<port> while the provider is http://127.0.0.1:<port>,
//! so the two never share cookies (browsers scope cookies by host, not by port).

mod common;

use std::path::Path;
use std::time::Instant;

use common::{auth_gateway, bounded, Browser, Idp, ANY_PORT};

/// The echo upstream's HTML row for a received header.
fn header_row(name: &str, value: &str) -> String {
    format!("<tr class=\"id\"><th>{name}</th><td>{value}</td></tr>")
}

/// Save a whole-page screenshot into the browser's temp dir and a copy to /tmp for people to
/// look at.
async fn screenshot(b: &Browser, name: &str) {
    let path = b.dir.path().join(format!("{name}.png"));
    b.screenshot_full_page(&path).await;
    let copy = Path::new("/tmp").join(format!("authgate-browser-{name}.png"));
    std::fs::copy(&path, &copy).unwrap();
    eprintln!("screenshot: {}", copy.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_headers_logout() {
    let started = Instant::now();
    let port = ANY_PORT;
    let idp = Idp::start(false, &[port]).await;
    let gw = auth_gateway(&idp, port, "store = \"memory\"").await;
    let b = Browser::start().await;
    eprintln!("setup: {:?}", started.elapsed());

    let app = format!("http://localhost:{}", gw.addr.port());
    let page = format!("{app}/app/page");
    let idp_port = idp.port;
    let on_idp =
        move |u: &url::Url| u.host_str() == Some("127.0.0.1") && u.port() == Some(idp_port);

    // A protected page sends the browser through the gateway to the provider's login form.
    b.goto(&page).await;
    b.wait_url("the IdP login form", on_idp).await;
    let login = b.find("input[name=login]").await;
    screenshot(&b, "idp-login").await;
    bounded("type login", login.send_keys("alice")).await;
    let password = b.find("input[name=password]").await;
    bounded("type password", password.send_keys("wonderland")).await;
    let submit = b.find("button[type=submit]").await;
    bounded("submit login", submit.click()).await;

    // Consent, then back to the page first asked for.
    b.find("input[name=prompt][value=consent]").await;
    let consent = b.find("button[type=submit]").await;
    assert_eq!(
        bounded("consent text", consent.text()).await.trim(),
        "Continue"
    );
    bounded("consent", consent.click()).await;
    b.wait_url("the app page", |u| u.as_str() == page).await;

    let html = b.source().await;
    for (name, value) in [
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@example.com"),
        ("x-forwarded-groups", "admins,dev"),
    ] {
        assert!(
            html.contains(&header_row(name, value)),
            "upstream did not get {name}: {value}:\n{html}"
        );
    }
    assert!(
        !html.contains("authgate_session"),
        "the session cookie reached the upstream:\n{html}"
    );
    screenshot(&b, "app").await;

    // The session cookie is HttpOnly: the cookie API sees it, scripts do not.
    let cookie = bounded(
        "session cookie",
        b.client.get_named_cookie("authgate_session"),
    )
    .await;
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(cookie.secure(), Some(true), "{cookie}");
    let script_cookies = bounded(
        "document.cookie",
        b.client.execute("return document.cookie", vec![]),
    )
    .await;
    assert!(
        !script_cookies
            .as_str()
            .unwrap_or_default()
            .contains("authgate_session"),
        "document.cookie shows the session: {script_cookies}"
    );

    // userinfo in the browser: the identity as JSON.
    b.goto(&format!("{app}/.authgate/userinfo")).await;
    let body = bounded("userinfo text", b.find("pre").await.text()).await;
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("userinfo not JSON ({e}): {body}"));
    assert_eq!(v["sub"], "alice", "{v}");
    assert_eq!(v["email"], "alice@example.com", "{v}");

    // Logout: the gateway's page POSTs to the provider's end_session endpoint by itself; the
    // provider asks for confirmation; then its post-logout redirect goes to the gateway's `/`,
    // which is protected, so the browser ends at the provider's login form again.
    let logouts_before = idp.stats().await["logouts"].as_u64().unwrap();
    // A bare GET of the logout URL only asks; the page's button makes the same-origin POST.
    b.goto(&format!("{app}/.authgate/logout")).await;
    let confirm = b.find("button#signout").await;
    bounded("confirm sign-out", confirm.click()).await;
    b.wait_url("the IdP end_session endpoint", on_idp).await;
    let deadline = Instant::now() + common::BROWSER_WAIT;
    loop {
        if b.has("button#logout-yes").await {
            eprintln!("logout: the provider asks for confirmation; confirming");
            let yes = b.find("button#logout-yes").await;
            bounded("confirm logout", yes.click()).await;
            break;
        }
        if b.has("input[name=login]").await {
            eprintln!("logout: the provider signed out without asking");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logout got stuck at {}:\n{}",
            b.url().await,
            b.source().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.wait_url("the IdP login form after logout", |u| {
        on_idp(u) && u.path().starts_with("/interaction/")
    })
    .await;
    b.find("input[name=login]").await;
    assert_eq!(
        idp.stats().await["logouts"].as_u64().unwrap(),
        logouts_before + 1,
        "the provider did not end its session"
    );

    // Signed out at both: the protected page asks for the login form again, no auto sign-in.
    b.goto(&page).await;
    b.wait_url("the IdP login form", |u| {
        on_idp(u) && u.path().starts_with("/interaction/")
    })
    .await;
    b.find("input[name=login]").await;
    let html = b.source().await;
    assert!(!html.contains("alice@example.com"), "{html}");
    let cookies = bounded("cookies", b.client.get_all_cookies()).await;
    assert!(
        cookies.iter().all(|c| c.name() != "authgate_session"),
        "{cookies:?}"
    );

    b.close().await;
    drop(gw);
    eprintln!("browser test: {:?}", started.elapsed());
}
