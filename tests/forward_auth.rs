//! Forward-auth mode behind a real nginx (`auth_request`): nginx proxies to the app and asks
//! the gateway about every request; the decision is made on the same normalised path.

mod common;

use common::{
    auth_config, client, echo, free_port, http_login_via, Gateway, Idp, Nginx, Opts, Seen,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request() {
    let (gw_port, nginx_port) = (free_port(), free_port());
    // The browser talks to nginx, so the provider sends it back to nginx's callback.
    let idp = Idp::start(true, &[nginx_port]).await;
    let app = echo().await;
    let routes = r#"
[[routes]]
id = "admin"
path = "/admin"
upstream = "app"
[routes.policy]
users = ["bob"]
"#;
    let body = format!("{}{routes}", auth_config(&idp, app, "store = \"memory\""));
    let gw = Gateway::start_with(
        &body,
        Opts {
            port: Some(gw_port),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let server = format!(
        r#"
  location = /_authgate {{
    internal;
    proxy_pass http://127.0.0.1:{gw_port}/.authgate/auth;
    proxy_pass_request_body off;
    proxy_set_header Content-Length "";
    proxy_set_header X-Original-URI $request_uri;
    proxy_set_header X-Forwarded-Method $request_method;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header Host $http_host;
  }}
  location /.authgate/ {{
    proxy_pass http://127.0.0.1:{gw_port};
    proxy_set_header Host $http_host;
  }}
  location @login {{
    return 302 $authgate_login;
  }}
  location / {{
    auth_request /_authgate;
    auth_request_set $authgate_user $upstream_http_x_forwarded_user;
    auth_request_set $authgate_email $upstream_http_x_forwarded_email;
    auth_request_set $authgate_login $upstream_http_x_authgate_login;
    proxy_set_header X-Forwarded-User $authgate_user;
    proxy_set_header X-Forwarded-Email $authgate_email;
    error_page 401 = @login;
    proxy_pass http://{app};
  }}
"#
    );
    let nginx = Nginx::start(nginx_port, &server).await;
    let c = client();

    // Public route: passes without a session.
    assert_eq!(
        c.get(nginx.url("/public/x")).send().await.unwrap().status(),
        200
    );
    // Protected: nginx sends the browser to sign in.
    let r = c.get(nginx.url("/app?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with("/.authgate/login?rd=%2Fapp%3Fx%3D1"),
        "{location}"
    );

    // Sign in through nginx, then nginx forwards with the identity from the gateway.
    let cookie = http_login_via(&format!("http://127.0.0.1:{nginx_port}"), "/app").await;
    let r = c
        .get(nginx.url("/app"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("alice"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));

    // Policy on the same normalised path: /public/../admin is /admin, only bob may.
    for path in [
        "/admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
    ] {
        let r = c
            .get(nginx.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = c
        .get(nginx.url("/public/%2e%2e/admin"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status(),
        200,
        "a bypass reached the app without a session"
    );

    // The endpoint refuses peers that are not trusted proxies.
    let untrusted = Gateway::start(&auth_config(&idp, app, "store = \"memory\"")).await;
    let r = c
        .get(untrusted.url("/.authgate/auth"))
        .header("x-original-uri", "/public/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
