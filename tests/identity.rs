//! The identity the gateway vouches for is what the provider verified: verified emails only,
//! stable (provider, `sub`) subjects whatever `user_claim` shows, the provider named in the
//! identity, strict ID tokens (extra audiences, `at_hash`, RFC 9207 `iss`, PKCE S256) and
//! claims from the userinfo endpoint. Against the real provider (`tests/idp`), and for ID
//! tokens the real one never issues, a provider this test builds.

mod common;

use std::time::Duration;

use common::{
    auth_config, client, echo, eventually, http_login, set_cookies, tx_cookie, Gateway, Idp, Opts,
    Seen, ANY_PORT,
};

/// The payload of a JWT, unverified: what the upstream would read from the assertion.
fn payload(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

const ROUTES: &str = r#"
[[routes]]
id = "corp"
path = "/corp"
upstream = "app"
[routes.policy]
email_domains = ["corp.example"]

[[routes]]
id = "signed"
path = "/signed"
upstream = "app"
identity_assertion = true
"#;

/// A ready gateway on `port` for `idp`: `session` keys (memory store), `provider_keys` in its
/// `[[providers]]` table, [`ROUTES`] and `extra` routes.
async fn gateway(idp: &Idp, port: u16, session: &str, provider_keys: &str, extra: &str) -> Gateway {
    let e = echo().await;
    let config = common::with_provider_keys(
        &auth_config(idp, e, &format!("store = \"memory\"\n{session}")),
        provider_keys,
    );
    let gw = Gateway::start_with(
        &format!("{config}{ROUTES}{extra}"),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

/// What a signed-in request shows the app: (email header, assertion email, /corp status).
async fn email_seen(gw: &Gateway) -> (Option<String>, serde_json::Value, u16) {
    let (cookie, r) = http_login(gw, "/app").await;
    assert!(!cookie.is_empty(), "login failed: {}", r.status());
    let seen: Seen = gw.get_as("/signed", &cookie).await.json().await.unwrap();
    let assertion = payload(seen.header("x-authgate-assertion").expect("assertion"));
    let corp = gw.get_as("/corp", &cookie).await.status().as_u16();
    (
        seen.header("x-forwarded-email").map(str::to_string),
        assertion["email"].clone(),
        corp,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_identity_only_when_the_provider_verified_it() {
    let (strict_port, trusting_port, by_email_port) = (ANY_PORT, ANY_PORT, ANY_PORT);
    // alice starts with an address and no email_verified claim at all.
    let users = serde_json::json!({"alice": {
        "email": "ceo@corp.example", "name": "Alice", "preferred_username": "alice", "groups": []
    }});
    let idp = Idp::start_with_env(
        0,
        true,
        &[strict_port, trusting_port, by_email_port],
        &[("IDP_USERS", &users.to_string())],
    )
    .await;
    let strict = gateway(&idp, strict_port, "", "", "").await;
    let trusting = gateway(&idp, trusting_port, "", "trust_email = true\n", "").await;
    let by_email = gateway(&idp, by_email_port, "", "user_claim = \"email\"\n", "").await;

    let unverified = (None, serde_json::Value::Null, 403);
    let verified = (
        Some("ceo@corp.example".to_string()),
        serde_json::json!("ceo@corp.example"),
        200,
    );
    // Absent: only a provider marked trust_email vouches for the address.
    assert_eq!(
        email_seen(&strict).await,
        unverified,
        "absent email_verified"
    );
    assert_eq!(email_seen(&trusting).await, verified, "absent, trust_email");
    let (_, r) = http_login(&by_email, "/app").await;
    assert_eq!(r.status(), 401, "an unverified email cannot name the user");

    // Anything but a JSON `true` is unverified, for every gateway.
    for v in [
        serde_json::json!(false),
        serde_json::json!("false"),
        serde_json::json!("true"),
        serde_json::json!(1),
        serde_json::json!("yes"),
        serde_json::json!([true]),
        serde_json::json!({"value": true}),
    ] {
        let patch = serde_json::json!({ "email_verified": v });
        idp.test_post(&format!(
            "/__test/users?account=alice&claims={}",
            url::form_urlencoded::byte_serialize(patch.to_string().as_bytes()).collect::<String>()
        ))
        .await;
        assert_eq!(
            email_seen(&strict).await,
            unverified,
            "email_verified = {v}"
        );
        assert_eq!(
            email_seen(&trusting).await,
            unverified,
            "email_verified = {v}, trust_email"
        );
        let (_, r) = http_login(&by_email, "/app").await;
        assert_eq!(r.status(), 401, "user_claim = email, email_verified = {v}");
    }

    let patch = r#"{"email_verified":true}"#;
    idp.test_post(&format!(
        "/__test/users?account=alice&claims={}",
        url::form_urlencoded::byte_serialize(patch.as_bytes()).collect::<String>()
    ))
    .await;
    assert_eq!(email_seen(&strict).await, verified);
    assert_eq!(email_seen(&trusting).await, verified);
    let (cookie, _) = http_login(&by_email, "/app").await;
    let seen: Seen = by_email.get_as("/app", &cookie).await.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("ceo@corp.example"));
    let m = by_email.metrics().await;
    assert!(
        m.contains("authgate_login_failures_total{reason=\"unverified_identity\"}"),
        "{m}"
    );
}

/// `user_claim = "email"`: the header shows the address, the session stays the provider's
/// `sub`: a refresh keeps it and a back-channel logout naming the `sub` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_claim_email_survives_refresh_and_backchannel_logout_by_sub() {
    let port = ANY_PORT;
    let idp = Idp::start_full(
        0,
        true,
        &[port],
        &[("IDP_ACCESS_TOKEN_TTL", "3")],
        serde_json::json!({
            "backchannel_logout_uri": common::BACKCHANNEL_PLACEHOLDER,
            "backchannel_logout_session_required": false,
        }),
    )
    .await;
    let gw = gateway(
        &idp,
        port,
        "refresh_lead = \"1s\"",
        "user_claim = \"email\"\n",
        "",
    )
    .await;
    idp.set_backchannel_logout_uri(&gw.url("/.authgate/backchannel-logout"))
        .await;
    let (cookie, _) = http_login(&gw, "/app").await;
    let user = |seen: &Seen| seen.header("x-forwarded-user").map(str::to_string);
    let seen: Seen = gw.get_as("/app", &cookie).await.json().await.unwrap();
    assert_eq!(user(&seen).as_deref(), Some("alice@example.com"));

    // Past the access token's expiry: refreshed, same session, same user.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = gw.get_as("/app", &cookie).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(user(&seen).as_deref(), Some("alice@example.com"));
    let refreshed = idp.stats().await["token"]["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    assert!(refreshed >= 1, "no refresh happened: {}", idp.stats().await);
    assert!(
        gw.metrics()
            .await
            .contains("authgate_session_refreshes_total{result=\"refreshed\"}"),
        "{}",
        gw.metrics().await
    );

    // The admin API names the user by the provider's sub.
    let list: serde_json::Value = gw
        .admin_api(reqwest::Method::GET, "/sessions?subject=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"][0]["sub"], "alice", "{list}");
    assert_eq!(
        list["sessions"][0]["subject"], "alice@example.com",
        "{list}"
    );

    // Back-channel logout by sub (no sid): the session ends.
    let sent = idp
        .test_post("/__test/backchannel?client_id=authgate&sub=alice")
        .await;
    assert_eq!(sent["status"], 200, "{sent}");
    assert_eq!(gw.get_as("/app", &cookie).await.status(), 401);
}

/// Two providers: each answers at its own callback, the identity names who vouched, a client
/// cannot claim a provider, and policy can admit one provider's users only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_are_two_namespaces() {
    let port = ANY_PORT;
    let callbacks = |id: &str| {
        serde_json::json!({
            "redirect_uris": [format!("http://127.0.0.1/.authgate/callback/{id}")],
        })
    };
    let one = Idp::start_full(0, true, &[port], &[], callbacks("one")).await;
    let two = Idp::start_full(0, true, &[port], &[], callbacks("two")).await;
    let e = echo().await;
    let config = format!(
        "{}\n{}\n[headers]\nprovider = \"X-Forwarded-Provider\"\n\n[session]\nstore = \"memory\"\n\n[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"one-only\"\npath = \"/one-only\"\nupstream = \"app\"\n[routes.policy]\nproviders = [\"one\"]\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\nidentity_assertion = true\n",
        one.provider_toml_as("one"),
        two.provider_toml_as("two"),
    );
    let gw = Gateway::start_with(
        &config,
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;

    for (id, idp) in [("one", &one), ("two", &two)] {
        let (cookie, callback) = login_with(&gw, id, None).await;
        assert_eq!(callback, format!("/.authgate/callback/{id}"));
        let r = client()
            .get(gw.url("/x"))
            .header("cookie", &cookie)
            // A client's own claim to a provider, in odd spellings, never arrives.
            .header("X-Forwarded-Provider", "one")
            .header("X_Forwarded_Provider", "one")
            .send()
            .await
            .unwrap();
        let seen: Seen = r.json().await.unwrap();
        assert_eq!(seen.all("x-forwarded-provider"), vec![id]);
        assert!(seen.header("x_forwarded_provider").is_none());
        assert_eq!(seen.header("x-forwarded-user"), Some("alice"));
        let a = payload(seen.header("x-authgate-assertion").unwrap());
        assert_eq!(a["idp"], id);
        assert_eq!(a["idp_iss"], idp.issuer.as_str());
        assert_eq!(a["idp_sub"], "alice");
        let status = gw.get_as("/one-only", &cookie).await.status();
        assert_eq!(status, if id == "one" { 200 } else { 403 }, "{id}");
    }

    // Mix-up: a login started with provider one whose answer is delivered at two's callback.
    let (cookie, _) = login_with(&gw, "one", Some("/.authgate/callback/two")).await;
    assert!(
        cookie.is_empty(),
        "a session from another provider's callback"
    );
}

/// Sign in through provider `id` (`?provider=`), following the IdP's redirects; deliver the
/// answer at `deliver_at` instead of where it was sent, if given. Returns the session cookie
/// (empty if none) and the callback path the provider was told.
async fn login_with(gw: &Gateway, id: &str, deliver_at: Option<&str>) -> (String, String) {
    let c = client();
    let r = c
        .get(gw.url(&format!("/.authgate/login?provider={id}&rd=%2F")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let tx = tx_cookie(&r);
    let idp_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap();
    let mut url = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    for _ in 0..10 {
        let r = idp_client.get(url.clone()).send().await.unwrap();
        assert!(r.status().is_redirection(), "{} at {url}", r.status());
        let mut next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
        if next.port() == Some(gw.addr.port()) {
            let sent_to = next.path().to_string();
            if let Some(p) = deliver_at {
                next.set_path(p);
            }
            let r = c
                .get(next)
                .header("cookie", &tx)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            let session = set_cookies(&r)
                .into_iter()
                .find(|c| c.starts_with("authgate_session=v1"))
                .map(|c| c.split(';').next().unwrap().to_string())
                .unwrap_or_default();
            if deliver_at.is_some() {
                assert_eq!(r.status(), 401);
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["error"], "wrong_provider");
            }
            return (session, sent_to);
        }
        url = next;
    }
    panic!("the IdP never redirected back");
}

/// Groups the provider keeps out of ID tokens (IDP_CONFORM_ID_TOKEN_CLAIMS: every claim but
/// `sub` is served by userinfo only) count with `userinfo = "merge"`, at login and again at
/// each refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_merge_brings_the_claims_id_tokens_leave_out() {
    let (plain_port, merge_port) = (ANY_PORT, ANY_PORT);
    let idp = Idp::start_with_env(
        0,
        true,
        &[plain_port, merge_port],
        &[
            ("IDP_CONFORM_ID_TOKEN_CLAIMS", "1"),
            ("IDP_ACCESS_TOKEN_TTL", "3"),
        ],
    )
    .await;
    let admins = "\n[[routes]]\nid = \"admins\"\npath = \"/admins\"\nupstream = \"app\"\n[routes.policy]\ngroups = [\"admins\"]\n";
    let plain = gateway(&idp, plain_port, "", "", admins).await;
    let merge = gateway(
        &idp,
        merge_port,
        "refresh_lead = \"1s\"",
        "userinfo = \"merge\"\n",
        admins,
    )
    .await;

    let (cookie, _) = http_login(&plain, "/app").await;
    let seen: Seen = plain.get_as("/app", &cookie).await.json().await.unwrap();
    assert_eq!(
        seen.header("x-forwarded-groups"),
        None,
        "the ID token has no groups"
    );
    assert_eq!(seen.header("x-forwarded-email"), None);
    assert_eq!(plain.get_as("/admins", &cookie).await.status(), 403);

    let before = idp.stats().await["userinfo"].as_u64().unwrap_or(0);
    let (cookie, _) = http_login(&merge, "/app").await;
    let seen: Seen = merge.get_as("/app", &cookie).await.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-groups"), Some("admins,dev"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(merge.get_as("/admins", &cookie).await.status(), 200);
    let after = idp.stats().await;
    assert!(
        after["userinfo"].as_u64().unwrap_or(0) > before,
        "userinfo never called: {after}"
    );

    // Alice leaves the admins; the next refresh asks userinfo again.
    let patch = r#"{"groups":["dev"]}"#;
    idp.test_post(&format!(
        "/__test/users?account=alice&claims={}",
        url::form_urlencoded::byte_serialize(patch.as_bytes()).collect::<String>()
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let left = eventually(Duration::from_secs(10), || async {
        merge.get_as("/admins", &cookie).await.status() == 403
    })
    .await;
    assert!(left, "groups from userinfo not refreshed:\n{}", merge.log());
}

/// An OpenID provider this test builds, for ID tokens and metadata the real one never
/// issues: extra audiences, a wrong `at_hash`, a userinfo answer about someone else, no S256.
mod built {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};

    /// What the provider does; tests change it between logins.
    #[derive(Clone)]
    pub(crate) struct Behaviour {
        /// Merged over the ID token's claims (`null` removes one).
        pub id_token: serde_json::Value,
        /// `Some(true)`: the right at_hash; `Some(false)`: another token's; `None`: none.
        pub at_hash: Option<bool>,
        pub userinfo: serde_json::Value,
        pub pkce_methods: Vec<&'static str>,
    }

    impl Default for Behaviour {
        fn default() -> Self {
            Self {
                id_token: serde_json::json!({}),
                at_hash: Some(true),
                userinfo: serde_json::json!({"sub": "u-1", "groups": ["from-userinfo"]}),
                pkce_methods: vec!["S256"],
            }
        }
    }

    pub(crate) struct Built {
        pub addr: SocketAddr,
        pub behaviour: Arc<Mutex<Behaviour>>,
    }

    impl Built {
        pub(crate) fn issuer(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub(crate) fn set(&self, b: Behaviour) {
            *self.behaviour.lock().unwrap() = b;
        }
    }

    struct State {
        issuer: String,
        key: EncodingKey,
        jwks: String,
        behaviour: Arc<Mutex<Behaviour>>,
        /// code → nonce.
        codes: Mutex<HashMap<String, String>>,
    }

    pub(crate) async fn start() -> Built {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("built-1".into());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let state = Arc::new(State {
            issuer: format!("http://{addr}"),
            key,
            jwks: serde_json::json!({ "keys": [jwk] }).to_string(),
            behaviour: behaviour.clone(),
            codes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Built { addr, behaviour }
    }

    fn json(v: serde_json::Value) -> hyper::Response<Full<Bytes>> {
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    }

    async fn handle(
        st: &State,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let b = st.behaviour.lock().unwrap().clone();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        match req.uri().path() {
            "/.well-known/openid-configuration" => json(serde_json::json!({
                "issuer": st.issuer,
                "authorization_endpoint": format!("{}/authorize", st.issuer),
                "token_endpoint": format!("{}/token", st.issuer),
                "userinfo_endpoint": format!("{}/userinfo", st.issuer),
                "jwks_uri": format!("{}/jwks", st.issuer),
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": b.pkce_methods,
                "authorization_response_iss_parameter_supported": true,
            })),
            "/jwks" => json(serde_json::from_str(&st.jwks).unwrap()),
            "/authorize" => {
                let code = format!("code-{}", rand_suffix());
                st.codes
                    .lock()
                    .unwrap()
                    .insert(code.clone(), query["nonce"].clone());
                let mut to = url::Url::parse(&query["redirect_uri"]).unwrap();
                to.query_pairs_mut()
                    .append_pair("code", &code)
                    .append_pair("state", &query["state"])
                    .append_pair("iss", &st.issuer);
                hyper::Response::builder()
                    .status(302)
                    .header("location", to.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            "/token" => {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let form: HashMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                let code = form.get("code").cloned().unwrap_or_default();
                let Some(nonce) = st.codes.lock().unwrap().remove(&code) else {
                    return hyper::Response::builder()
                        .status(400)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(r#"{"error":"invalid_grant"}"#)))
                        .unwrap();
                };
                let access_token = format!("at-{code}");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let mut claims = serde_json::json!({
                    "iss": st.issuer, "sub": "u-1", "aud": "client", "exp": now + 300,
                    "iat": now, "nonce": nonce, "email": "u1@corp.example",
                    "email_verified": true,
                });
                match b.at_hash {
                    Some(true) => {
                        claims["at_hash"] = half(&access_token).into();
                    }
                    Some(false) => {
                        claims["at_hash"] = half("another-token").into();
                    }
                    None => {}
                }
                for (k, v) in b.id_token.as_object().unwrap() {
                    if v.is_null() {
                        claims.as_object_mut().unwrap().remove(k);
                    } else {
                        claims[k] = v.clone();
                    }
                }
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some("built-1".into());
                let id_token = jsonwebtoken::encode(&h, &claims, &st.key).unwrap();
                json(serde_json::json!({
                    "access_token": access_token, "token_type": "Bearer",
                    "expires_in": 300, "id_token": id_token,
                }))
            }
            "/userinfo" => json(b.userinfo),
            _ => hyper::Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        }
    }

    /// at_hash for ES256: base64url of the left half of SHA-256.
    fn half(token: &str) -> String {
        use base64::Engine;
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}

/// A gateway in front of the built provider with `keys` in its `[[providers]]` table.
async fn built_gateway(p: &built::Built, keys: &str) -> Gateway {
    let e = echo().await;
    let config = format!(
        "[[providers]]\nid = \"built\"\nissuer = \"{}\"\nclient_id = \"client\"\nclient_secret = \"s\"\nrefresh_interval = \"1s\"\n{keys}\n[session]\nstore = \"memory\"\n\n[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        p.issuer()
    );
    Gateway::start_with(&config, Opts::default()).await
}

/// One login against the built provider: the callback's status and error code.
async fn built_login(gw: &Gateway) -> (u16, String) {
    let (status, code, _) = built_session(gw).await;
    (status, code)
}

/// [`built_login`] that also returns the session cookie (empty without one).
async fn built_session(gw: &Gateway) -> (u16, String, String) {
    let c = client();
    let r = c.get(gw.url("/.authgate/login")).send().await.unwrap();
    if r.status() != 302 {
        return (r.status().as_u16(), String::new(), String::new());
    }
    let tx = tx_cookie(&r);
    let r = c
        .get(r.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    let r = c
        .get(r.headers()["location"].to_str().unwrap())
        .header("cookie", tx)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let session = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("authgate_session=v1"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .unwrap_or_default();
    let code = if status == 302 {
        String::new()
    } else {
        r.json::<serde_json::Value>().await.unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (status, code, session)
}

/// `email_verified` speaks of the `email` claim only: a renamed `email_claim` (Keycloak's
/// username, Entra's `upn`) is an email only for a provider marked `trust_email`, and
/// `user_claim = "email"` needs a verified `email` whatever `email_claim` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_email_claims_borrow_no_verdict() {
    use built::Behaviour;
    let p = built::start().await;
    let renamed = built_gateway(&p, "email_claim = \"preferred_username\"\n").await;
    let trusted = built_gateway(
        &p,
        "email_claim = \"preferred_username\"\ntrust_email = true\n",
    )
    .await;
    let by_email = built_gateway(&p, "user_claim = \"email\"\nemail_claim = \"upn\"\n").await;
    for gw in [&renamed, &trusted, &by_email] {
        gw.wait_ready().await;
    }
    p.set(Behaviour {
        id_token: serde_json::json!({
            "email": "me@gmail.example", "email_verified": true,
            "preferred_username": "ceo@corp.example",
        }),
        ..Behaviour::default()
    });
    assert_eq!(
        email_of(&renamed).await,
        None,
        "the verdict was about another claim"
    );
    assert_eq!(
        email_of(&trusted).await.as_deref(),
        Some("ceo@corp.example")
    );

    p.set(Behaviour {
        id_token: serde_json::json!({
            "email": "ceo@corp.example", "email_verified": false, "upn": "a@partner.example",
        }),
        ..Behaviour::default()
    });
    assert_eq!(
        built_login(&by_email).await,
        (401, "unverified_identity".to_string())
    );
}

/// The email header the app sees after a login through the built provider.
async fn email_of(gw: &Gateway) -> Option<String> {
    let (status, code, cookie) = built_session(gw).await;
    assert_eq!(status, 302, "{code}");
    let seen: Seen = gw.get_as("/", &cookie).await.json().await.unwrap();
    seen.header("x-forwarded-email").map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_id_tokens_from_a_provider_the_test_builds() {
    let p = built::start().await;
    let gw = built_gateway(&p, "").await;
    gw.wait_ready().await;
    let trusting = built_gateway(&p, "trusted_audiences = [\"partner\"]\n").await;
    trusting.wait_ready().await;
    let merging = built_gateway(&p, "userinfo = \"merge\"\n").await;
    merging.wait_ready().await;
    use built::Behaviour;

    assert_eq!(
        built_login(&gw).await,
        (302, String::new()),
        "a sound token"
    );
    let cases: Vec<(Behaviour, &Gateway, (u16, &str))> = vec![
        // Extra audiences: each must be trusted, azp must name us.
        (
            Behaviour {
                id_token: serde_json::json!({"aud": ["client", "partner"], "azp": "client"}),
                ..Behaviour::default()
            },
            &gw,
            (401, "bad_id_token"),
        ),
        (
            Behaviour {
                id_token: serde_json::json!({"aud": ["client", "partner"], "azp": "client"}),
                ..Behaviour::default()
            },
            &trusting,
            (302, ""),
        ),
        (
            Behaviour {
                id_token: serde_json::json!({"aud": ["client", "partner"]}),
                ..Behaviour::default()
            },
            &trusting,
            (401, "bad_id_token"),
        ),
        (
            Behaviour {
                id_token: serde_json::json!({"aud": ["client", "partner", "third"], "azp": "client"}),
                ..Behaviour::default()
            },
            &trusting,
            (401, "bad_id_token"),
        ),
        (
            Behaviour {
                id_token: serde_json::json!({"aud": ["partner"], "azp": "client"}),
                ..Behaviour::default()
            },
            &trusting,
            (401, "bad_id_token"),
        ),
        // at_hash: checked when present.
        (
            Behaviour {
                at_hash: Some(false),
                ..Behaviour::default()
            },
            &gw,
            (401, "bad_id_token"),
        ),
        (
            Behaviour {
                at_hash: None,
                ..Behaviour::default()
            },
            &gw,
            (302, ""),
        ),
        (
            Behaviour {
                id_token: serde_json::json!({"at_hash": 7}),
                ..Behaviour::default()
            },
            &gw,
            (401, "bad_id_token"),
        ),
        // Userinfo must be about the token's subject.
        (Behaviour::default(), &merging, (302, "")),
        (
            Behaviour {
                userinfo: serde_json::json!({"sub": "someone-else", "groups": ["admins"]}),
                ..Behaviour::default()
            },
            &merging,
            (502, "provider_unavailable"),
        ),
        (
            Behaviour {
                userinfo: serde_json::json!({"groups": ["admins"]}),
                ..Behaviour::default()
            },
            &merging,
            (502, "provider_unavailable"),
        ),
    ];
    for (i, (b, gw, (status, code))) in cases.into_iter().enumerate() {
        p.set(b);
        assert_eq!(
            built_login(gw).await,
            (status, code.to_string()),
            "case {i}"
        );
    }

    // A provider without PKCE S256 is refused: not ready, sign-in 503, a clear log line.
    p.set(Behaviour {
        pkce_methods: vec!["plain"],
        ..Behaviour::default()
    });
    let no_pkce = built_gateway(&p, "").await;
    let refused = eventually(Duration::from_secs(10), || async {
        no_pkce.log().contains("S256")
    })
    .await;
    assert!(refused, "{}", no_pkce.log());
    assert_eq!(
        no_pkce.readyz().await["ready"],
        false,
        "{}",
        no_pkce.readyz().await
    );
    assert_eq!(built_login(&no_pkce).await.0, 503);
}

/// Forward-auth answers carry the configured provider header like every identity header:
/// the provider's id for a caller, empty without one, so the front proxy's copy replaces a
/// client's own value either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_name_the_provider() {
    let port = ANY_PORT;
    let idp = Idp::start(true, &[port]).await;
    let e = echo().await;
    let config = format!(
        "{}\n[headers]\nprovider = \"x-forwarded-provider\"\n\n[forward_auth]\nproxy = \"traefik\"\n",
        auth_config(&idp, e, "store = \"memory\"")
    );
    let gw = Gateway::start_with(
        &config,
        Opts {
            port: Some(port),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    let (cookie, _) = http_login(&gw, "/app").await;
    let check = |uri: &'static str, cookie: Option<String>| {
        let mut b = client()
            .get(gw.url("/.authgate/auth"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-host", gw.addr.to_string())
            .header("x-forwarded-provider", "spoofed");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.send()
    };
    let r = check("/app", Some(cookie)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-forwarded-provider"], "test");
    let r = check("/public/x", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-forwarded-provider"], "");
}
