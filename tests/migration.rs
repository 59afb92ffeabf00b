//! The migration guides' worked examples (issue 16 point 6): a legacy app moved from Apache
//! mod_auth_openidc or from oauth2-proxy to authgate sees the same identity headers and the
//! same access decisions as before.
//!
//! - mod_auth_openidc, for real: Debian's Apache httpd + mod_auth_openidc runs the virtual
//!   host of `docs/migrate-mod-auth-openidc.md` ("A worked example"), verbatim but for the
//!   provider's and the app's addresses and the site's origin, in front of the echo app and
//!   the test provider (tests/idp). Users sign in through the provider's login form (scripted
//!   HTTP). Then authgate runs the guide's TOML block the same way, and the app must see the
//!   same thing for every path, method and user.
//! - oauth2-proxy cannot run here (no Debian, npm or PyPI package): its side is what its
//!   source defines for the flags of `docs/migrate-oauth2-proxy.md` ("A worked example"),
//!   written down below with the source file for each expectation, and authgate runs the
//!   guide's TOML block against it.
//!
//! The secrets of both examples come from the environment as written (`${OIDC_CLIENT_SECRET}`
//! is read by Apache and by authgate alike); the only substitutions are addresses.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use common::apache::Apache;
use common::{client, echo, free_port, Gateway, Idp, Opts};

/// The provider's client secret for both relying parties (the test provider's).
const CLIENT_SECRET: &str = "authgate-secret";
/// `OIDCCryptoPassphrase` / `session.secret`.
const PASSPHRASE: &str = "migration-test-passphrase-0123456789abcdef";

/// A guide's text.
fn guide(rel: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The fenced blocks of `lang` (e.g. "apache", "toml", "sh") in the section of `md` under
/// the heading `heading` (up to the next heading of the same or a higher level), verbatim.
fn section_blocks(md: &str, heading: &str, lang: &str) -> Vec<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = md.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no heading {heading:?}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    let mut in_other_fence = false;
    for line in lines {
        match current.as_mut() {
            None if in_other_fence => in_other_fence = line != "```",
            None if line == format!("```{lang}") => current = Some(String::new()),
            None if line.starts_with("```") => in_other_fence = true,
            None => {
                let hashes = line.chars().take_while(|c| *c == '#').count();
                if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
                    break;
                }
            }
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unterminated ```{lang} block");
    blocks
}

/// `text` with each `from` replaced by `to`; every `from` must be there (the guide changed
/// otherwise, and the test must follow it).
fn substitute(text: &str, what: &str, replace: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replace {
        assert!(out.contains(from), "{what} has no {from:?}:\n{text}");
        out = out.replace(from, to);
    }
    out
}

/// Cookies by name, as a browser keeps them for one site (attributes ignored: all of these
/// run on loopback over HTTP, where a browser also sends `Secure` cookies).
#[derive(Default, Clone, Debug)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = v.to_ascii_lowercase().contains("max-age=0")
                || v.to_ascii_lowercase().contains("expires=thu, 01 jan 1970")
                || value.is_empty();
            if expired {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The fields of the first `<form>` of an HTML page: its action and its inputs (name,
/// value), with `login` and `password` filled in.
fn form_fields(html: &str, user: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let re = regex::Regex::new(&format!(r#"\b{name}\s*=\s*"([^"]*)""#)).unwrap();
        re.captures(tag).map(|c| c[1].replace("&amp;", "&"))
    };
    let form_start = html.find("<form").expect("a form");
    let form_tag = &html[form_start..form_start + html[form_start..].find('>').unwrap()];
    let action = attr(form_tag, "action").expect("form action");
    let body = &html[form_start..];
    let body = &body[..body.find("</form>").unwrap_or(body.len())];
    let input = regex::Regex::new(r"<input[^>]*>").unwrap();
    let mut fields = Vec::new();
    for m in input.find_iter(body) {
        let Some(name) = attr(m.as_str(), "name") else {
            continue;
        };
        let value = match name.as_str() {
            "login" => user.to_string(),
            "password" => "any password".to_string(),
            _ => attr(m.as_str(), "value").unwrap_or_default(),
        };
        fields.push((name, value));
    }
    (action, fields)
}

/// Sign `user` in at the site `base` as a browser would: a page under `start` → the sign-in
/// redirect(s) → the provider's login and consent forms → the site's callback at
/// `callback_path`. Returns the site's cookies after the callback, which must redirect.
async fn form_login(base: &str, start: &str, callback_path: &str, user: &str) -> Jar {
    let (jar, status, body) = sign_in(base, start, callback_path, user).await;
    assert!(
        status.is_redirection(),
        "{user}: the callback answered {status}: {body}"
    );
    jar
}

/// [`form_login`] whatever the callback answers: the site's cookies after it, its status and
/// its body.
async fn sign_in(
    base: &str,
    start: &str,
    callback_path: &str,
    user: &str,
) -> (Jar, reqwest::StatusCode, String) {
    let c = client();
    let base_url = reqwest::Url::parse(base).unwrap();
    let (mut site, mut idp) = (Jar::default(), Jar::default());
    let mut url = base_url.join(start).unwrap();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let on_site = url.origin() == base_url.origin();
        let jar = if on_site { &mut site } else { &mut idp };
        let req = match form.take() {
            Some(fields) => c.post(url.clone()).form(&fields),
            None => c.get(url.clone()),
        };
        let r = req
            .header("accept", "text/html")
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        jar.absorb(&r);
        if on_site && url.path() == callback_path {
            let status = r.status();
            return (site, status, r.text().await.unwrap_or_default());
        }
        if r.status().is_redirection() {
            let location = r.headers()["location"].to_str().unwrap().to_string();
            url = url.join(&location).unwrap();
            continue;
        }
        let status = r.status();
        let html = r.text().await.unwrap_or_default();
        assert!(
            status == 200 && !on_site && html.contains("<form"),
            "{user}: {url} answered {status}:\n{html}"
        );
        let (action, fields) = form_fields(&html, user);
        url = url.join(&action).unwrap();
        form = Some(fields);
    }
    panic!("{user}: no callback at {base}{callback_path} after 20 steps");
}

/// How a request was decided, as the user sees it (the redirect targets differ between the
/// two relying parties; the kind must not).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Forwarded to the app (a 2xx from the echo app).
    Pass,
    /// Sent to sign in (a redirect).
    SignIn,
    Unauthorized,
    Forbidden,
    Other(u16),
}

fn decision(status: u16) -> Decision {
    match status {
        200..=299 => Decision::Pass,
        301 | 302 | 303 | 307 => Decision::SignIn,
        401 => Decision::Unauthorized,
        403 => Decision::Forbidden,
        s => Decision::Other(s),
    }
}

/// Header names an app may read an identity from (lower case, `_` as is): what the
/// comparison looks at.
fn is_identity(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("oidc_")
        || n.starts_with("oidc-")
        || n.starts_with("x-auth-request-")
        || n.starts_with("x-forwarded-user")
        || n.starts_with("x-forwarded-email")
        || n.starts_with("x-forwarded-groups")
        || n.starts_with("x-forwarded-preferred-username")
        || n.starts_with("x-forwarded-access-token")
        || n == "remote-user"
        || n == "authorization"
}

/// What the app saw of one request: the decision and, when it passed, its identity headers
/// (name in lower case → every value, in order).
#[derive(Debug, Clone)]
struct Seen {
    decision: Decision,
    identity: BTreeMap<String, Vec<String>>,
}

/// Forged identity headers every request of the matrices carries: none may reach the app.
const FORGED: &[(&str, &str)] = &[
    ("OIDC_CLAIM_email", "forged@evil.example"),
    ("OIDC_id_token", "forged"),
    ("Remote-User", "forged"),
    ("X-Forwarded-User", "forged"),
    ("X-Auth-Request-User", "forged"),
];

/// One request as an API client (JSON: the echo app answers with what it saw) or a browser
/// navigation (HTML: only the decision is recorded), holding `cookies`.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    browser: bool,
    cookies: &Jar,
    forged: &[(&str, &str)],
) -> Seen {
    let mut req = client()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header(
            "accept",
            if browser {
                "text/html"
            } else {
                "application/json"
            },
        );
    if !cookies.0.is_empty() {
        req = req.header("cookie", cookies.header());
    }
    for (k, v) in forged {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let decision = decision(r.status().as_u16());
    let mut identity = BTreeMap::new();
    // Identity headers are for the app, never for the browser.
    for k in r.headers().keys() {
        assert!(
            !is_identity(k.as_str()),
            "{method} {path}: answered with {k}"
        );
    }
    if decision == Decision::Pass && !browser {
        let seen: common::Seen = r.json().await.expect("the echo app's JSON");
        for (k, v) in seen.headers {
            if is_identity(&k) {
                identity
                    .entry(k.to_ascii_lowercase())
                    .or_insert_with(Vec::new)
                    .push(v);
            }
        }
    }
    Seen { decision, identity }
}

/// A JWT's payload.
fn jwt_payload(token: &str) -> serde_json::Value {
    let part = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("not a JWT ({e}): {token}"));
    serde_json::from_slice(&bytes).unwrap()
}

// ---------------------------------------------------------------------------------------
// mod_auth_openidc

const MOD_AUTH_OPENIDC_GUIDE: &str = "docs/migrate-mod-auth-openidc.md";
const WORKED_EXAMPLE: &str = "## A worked example";

/// The paths of the worked example: every page needs a sign-in, `/admin` the `admins`
/// group, `/news` is open to anonymous readers and names signed-in ones.
const PATHS: &[&str] = &["/app/page?x=1", "/admin/panel", "/news/today"];
/// (method, browser navigation?)
const KINDS: &[(&str, bool)] = &[("GET", true), ("GET", false), ("POST", false)];

/// The test provider's users for the worked examples. alice is built in (groups admins and
/// dev, alice@example.com); carol is added here (not in admins); erin is in admins with an
/// address outside example.com (the oauth2-proxy example's `--email-domain`, and no match
/// for the mod_auth_openidc example's `OIDCRemoteUserClaim` expression).
fn extra_users() -> String {
    serde_json::json!({
        "carol": {
            "email": "carol@example.com", "email_verified": true, "name": "Carol Example",
            "preferred_username": "carol", "groups": ["dev", "staff"],
        },
        "erin": {
            "email": "erin@example.org", "email_verified": true, "name": "Erin Example",
            "preferred_username": "erin", "groups": ["admins"],
        },
    })
    .to_string()
}

/// A provider (with its login form) whose client `app` may return to the sites at `ports`,
/// each with its callback path.
async fn provider_for(sites: &[(u16, &str)]) -> Idp {
    let users = extra_users();
    let redirects: Vec<String> = sites
        .iter()
        .map(|(port, callback)| format!("http://127.0.0.1:{port}{callback}"))
        .collect();
    let post_logout: Vec<String> = sites
        .iter()
        .map(|(port, _)| format!("http://127.0.0.1:{port}/"))
        .collect();
    Idp::start_full(
        0,
        false,
        &[],
        &[("IDP_USERS", users.as_str())],
        serde_json::json!({
            "client_id": "app",
            "redirect_uris": redirects,
            "post_logout_redirect_uris": post_logout,
        }),
    )
    .await
}

/// [`provider_for`] Apache's and authgate's callbacks in the mod_auth_openidc example.
async fn provider(apache_port: u16, gateway_port: u16) -> Idp {
    provider_for(&[
        (apache_port, "/redirect_uri"),
        (gateway_port, "/.authgate/callback"),
    ])
    .await
}

/// Apache + mod_auth_openidc running the guide's virtual host, in front of `app`.
async fn apache_from_guide(port: u16, idp: &Idp, app: std::net::SocketAddr) -> Apache {
    let md = guide(MOD_AUTH_OPENIDC_GUIDE);
    let blocks = section_blocks(&md, WORKED_EXAMPLE, "apache");
    assert_eq!(blocks.len(), 1, "one Apache block in the worked example");
    let site = substitute(
        &blocks[0],
        "the guide's virtual host",
        &[
            ("https://login.example.com/realms/corp", idp.issuer.clone()),
            (
                "https://app.example.com",
                format!("http://127.0.0.1:{port}"),
            ),
            ("http://127.0.0.1:3000", format!("http://{app}")),
        ],
    );
    Apache::start(
        port,
        &site,
        &[
            ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
            ("OIDC_PASSPHRASE", PASSPHRASE),
        ],
    )
    .await
}

/// authgate running the guide's TOML block for the worked example, in front of `app`.
async fn authgate_from_guide(
    guide_path: &str,
    port: u16,
    idp: &Idp,
    app: std::net::SocketAddr,
    listener: &str,
) -> Gateway {
    let md = guide(guide_path);
    let blocks = section_blocks(&md, WORKED_EXAMPLE, "toml");
    assert_eq!(blocks.len(), 1, "one TOML block in the worked example");
    let body = substitute(
        &blocks[0],
        "the guide's TOML block",
        &[
            // The harness writes the listener itself (on `port`).
            (listener, String::new()),
            ("https://login.example.com/realms/corp", idp.issuer.clone()),
            ("http://127.0.0.1:3000", format!("http://{app}")),
        ],
    );
    let gw = Gateway::start_with(
        &body,
        Opts {
            port: Some(port),
            env: vec![
                ("OIDC_CLIENT_SECRET".into(), Some(CLIENT_SECRET.into())),
                ("OIDC_PASSPHRASE".into(), Some(PASSPHRASE.into())),
                (
                    "OAUTH2_PROXY_CLIENT_SECRET".into(),
                    Some(CLIENT_SECRET.into()),
                ),
            ],
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

/// The matrix of one site: for anonymous, alice (in `admins`) and carol (not), every path
/// and kind of request. Keys: (user, method, browser, path).
type Matrix = BTreeMap<(String, String, bool, String), Seen>;

async fn matrix(base: &str, callback_path: &str, users: &[&str]) -> Matrix {
    let mut out = Matrix::new();
    let mut jars = vec![("anonymous".to_string(), Jar::default())];
    for user in users {
        jars.push((
            user.to_string(),
            form_login(base, "/app/page?x=1", callback_path, user).await,
        ));
    }
    for (user, jar) in &jars {
        for path in PATHS {
            for (method, browser) in KINDS {
                let seen = request(base, method, path, *browser, jar, FORGED).await;
                out.insert(
                    (user.clone(), method.to_string(), *browser, path.to_string()),
                    seen,
                );
            }
        }
    }
    out
}

/// What the worked example decides, by mod_auth_openidc (`apache`) or authgate: every page
/// needs a sign-in (browsers are sent to sign in, API clients get 401), `/news` lets
/// anonymous readers in, `/admin` only the `admins` group. The one difference is documented
/// in the guide: a signed-in user refused by `Require claim` gets 401 from mod_auth_openidc
/// (its default `OIDCUnAutzAction`), 403 from authgate.
fn expected_decision(apache: bool, user: &str, path: &str, browser: bool) -> Decision {
    let anonymous = user == "anonymous";
    if path.starts_with("/news") {
        Decision::Pass
    } else if anonymous && browser {
        Decision::SignIn
    } else if anonymous {
        Decision::Unauthorized
    } else if path.starts_with("/admin") && user != "alice" {
        if apache {
            Decision::Unauthorized
        } else {
            Decision::Forbidden
        }
    } else {
        Decision::Pass
    }
}

/// The identity headers of the worked example the app sees for `user` (the test provider's
/// claims; tokens aside, see [`check_tokens`]), as the guide's table says. The one
/// difference: mod_auth_openidc sends an empty `Remote-User` to anonymous readers of
/// `/news` (`RequestHeader set` with an empty `REMOTE_USER`), authgate none.
fn expected_identity(apache: bool, user: &str) -> BTreeMap<String, Vec<String>> {
    let v = |s: &str| vec![s.to_string()];
    let mut out = BTreeMap::new();
    let (email, name, groups) = match user {
        "anonymous" => {
            if apache {
                out.insert("remote-user".to_string(), v(""));
            }
            return out;
        }
        "alice" => ("alice@example.com", "Alice Example", "admins,dev"),
        "carol" => ("carol@example.com", "Carol Example", "dev,staff"),
        other => panic!("no expectations for {other}"),
    };
    for (k, val) in [
        ("oidc_claim_sub", user),
        ("oidc_claim_email", email),
        ("oidc_claim_name", name),
        ("oidc_claim_preferred_username", user),
        // OIDCClaimDelimiter's default and claim_separator's: a comma.
        ("oidc_claim_groups", groups),
        // OIDCRemoteUserClaim email ^(.+)@example\.com$
        ("remote-user", user),
    ] {
        out.insert(k.to_string(), v(val));
    }
    out
}

/// The identity headers in mod_auth_openidc's namespace (`OIDC_*`, and the vhost's
/// `Remote-User`), with the tokens taken out: (the rest, ID token, access token).
fn split_tokens(
    identity: &BTreeMap<String, Vec<String>>,
) -> (
    BTreeMap<String, Vec<String>>,
    Option<String>,
    Option<String>,
) {
    let mut rest: BTreeMap<String, Vec<String>> = identity
        .iter()
        .filter(|(k, _)| k.starts_with("oidc_") || *k == "remote-user")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut one = |name: &str| {
        rest.remove(name).map(|v| {
            assert_eq!(v.len(), 1, "{name}: {v:?}");
            v[0].clone()
        })
    };
    let id_token = one("oidc_id_token");
    let access_token = one("oidc_access_token");
    // mod_auth_openidc also sends the access token's expiry; authgate has no such header
    // (the guide says so).
    rest.remove("oidc_access_token_expires");
    (rest, id_token, access_token)
}

/// The ID token is a JWT from the provider about `user` (each relying party has its own:
/// same issuer and subject, not the same bytes); the access token is there.
fn check_tokens(
    what: &str,
    user: &str,
    issuer: &str,
    id_token: Option<String>,
    access_token: Option<String>,
) {
    if user == "anonymous" {
        assert_eq!((id_token, access_token), (None, None), "{what}");
        return;
    }
    let id_token = id_token.unwrap_or_else(|| panic!("{what}: no OIDC_id_token"));
    let claims = jwt_payload(&id_token);
    assert_eq!(claims["iss"], issuer, "{what}: {claims}");
    assert_eq!(claims["sub"], user, "{what}: {claims}");
    assert_eq!(claims["aud"], "app", "{what}: {claims}");
    assert!(
        access_token.is_some_and(|t| !t.is_empty()),
        "{what}: no OIDC_access_token"
    );
}

/// mod_auth_openidc running the guide's virtual host gives the app what the guide's worked
/// example says, for every path, kind of request and user (the reference the authgate side
/// is held to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_auth_openidc_worked_example_decides_and_sends_what_the_guide_says() {
    let (apache_port, gateway_port) = (Apache::pick_port(), free_port());
    let idp = provider(apache_port, gateway_port).await;
    let app = echo().await;
    let apache = apache_from_guide(apache_port, &idp, app).await;
    let m = matrix(&apache.base(), "/redirect_uri", &["alice", "carol"]).await;
    assert_eq!(m.len(), 3 * PATHS.len() * KINDS.len());
    for ((user, method, browser, path), seen) in &m {
        let what = format!("Apache: {user} {method} {path} (browser: {browser})");
        assert_eq!(
            seen.decision,
            expected_decision(true, user, path, *browser),
            "{what}\n{}",
            apache.log()
        );
        if seen.decision != Decision::Pass || *browser {
            continue;
        }
        let (rest, id_token, access_token) = split_tokens(&seen.identity);
        assert_eq!(rest, expected_identity(true, user), "{what}");
        check_tokens(&what, user, &idp.issuer, id_token, access_token);
    }

    // erin@example.org does not match OIDCRemoteUserClaim's regex: the callback answers an
    // error page and no session (the guide: authgate answers 403 instead).
    let (jar, status, body) = sign_in(&apache.base(), "/app/page", "/redirect_uri", "erin").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Remote user could not be set"), "{body}");
    assert!(!jar.0.contains_key("mod_auth_openidc_session"), "{jar:?}");
    let seen = request(&apache.base(), "GET", "/app/page", false, &jar, FORGED).await;
    assert_eq!(seen.decision, Decision::Unauthorized);
}

/// authgate running the guide's TOML block for the worked example gives the app what
/// mod_auth_openidc gave it, cell by cell: the same decisions (the kind: the redirect
/// targets differ), the same `OIDC_*` and `Remote-User` headers and values, the ID token a
/// JWT from the same issuer for the same user; nothing a client forged. Besides, the app
/// sees authgate's own `X-Forwarded-*` identity headers (documented).
///
/// Needs issue 16's claims-to-headers (`claim_prefix`, `claim_prefix_allow`, `id_token`,
/// `remote_user`), `auth = "optional"` and `cookie_persistent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authgate_gives_the_app_what_mod_auth_openidc_gave() {
    let (apache_port, gateway_port) = (Apache::pick_port(), free_port());
    let idp = provider(apache_port, gateway_port).await;
    let app = echo().await;
    let apache = apache_from_guide(apache_port, &idp, app).await;
    let before = matrix(&apache.base(), "/redirect_uri", &["alice", "carol"]).await;
    drop(apache);
    let gw = authgate_from_guide(
        MOD_AUTH_OPENIDC_GUIDE,
        gateway_port,
        &idp,
        app,
        "[[listeners]]\naddress = \"0.0.0.0:8080\"\n\n",
    )
    .await;
    let base = format!("http://{}", gw.addr);
    let after = matrix(&base, "/.authgate/callback", &["alice", "carol"]).await;
    assert_eq!(after.len(), before.len());
    for (key, was) in &before {
        let (user, method, browser, path) = key;
        let what = format!("{user} {method} {path} (browser: {browser})");
        let now = &after[key];
        // The same decision, but for the documented 401/403 of a refused signed-in user.
        let expected = match was.decision {
            Decision::Unauthorized if user != "anonymous" => Decision::Forbidden,
            ref d => d.clone(),
        };
        assert_eq!(
            now.decision,
            expected,
            "{what}: Apache {was:?}\n{}",
            gw.log()
        );
        assert_eq!(
            now.decision,
            expected_decision(false, user, path, *browser),
            "{what}"
        );
        if now.decision != Decision::Pass || *browser {
            continue;
        }
        let (mut was_rest, was_id, was_at) = split_tokens(&was.identity);
        let (now_rest, now_id, now_at) = split_tokens(&now.identity);
        // The empty Remote-User Apache sends to anonymous readers (documented).
        if user == "anonymous" {
            assert_eq!(was_rest.remove("remote-user"), Some(vec![String::new()]));
        }
        assert_eq!(
            now_rest, was_rest,
            "{what}: the app's OIDC_* / Remote-User headers"
        );
        check_tokens(
            &format!("authgate: {what}"),
            user,
            &idp.issuer,
            now_id,
            now_at,
        );
        check_tokens(
            &format!("Apache: {what}"),
            user,
            &idp.issuer,
            was_id,
            was_at,
        );
        // Besides those, only authgate's own identity headers, and no forged value at all.
        let others: Vec<&String> = now
            .identity
            .keys()
            .filter(|k| !k.starts_with("oidc_") && *k != "remote-user")
            .collect();
        let own = [
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-forwarded-user",
        ];
        if user == "anonymous" {
            assert!(others.is_empty(), "{what}: {others:?}");
        } else {
            assert_eq!(others, own, "{what}");
        }
        assert!(
            now.identity
                .values()
                .flatten()
                .all(|v| !v.contains("forged")),
            "{what}: {:?}",
            now.identity
        );
    }

    // erin@example.org does not match remote_user's pattern: signed in, and refused with 403
    // wherever the app would be told who she is (mod_auth_openidc: no session at all; the
    // app never sees her either way).
    let jar = form_login(&base, "/app/page", "/.authgate/callback", "erin").await;
    for path in PATHS {
        let seen = request(&base, "GET", path, false, &jar, FORGED).await;
        assert_eq!(seen.decision, Decision::Forbidden, "erin GET {path}");
    }
}

// ---------------------------------------------------------------------------------------
// oauth2-proxy

const OAUTH2_PROXY_GUIDE: &str = "docs/migrate-oauth2-proxy.md";

/// What oauth2-proxy (v7, github.com/oauth2-proxy/oauth2-proxy) passes the app for a user it
/// lets in, with the worked example's flags, from its source:
/// - `pkg/apis/options/legacy_header.go`, `getRequestHeaders`: `--pass-user-headers`
///   (default true) adds `X-Forwarded-User` (claim "user"), `X-Forwarded-Email`,
///   `X-Forwarded-Groups` and `X-Forwarded-Preferred-Username`; `--pass-basic-auth`
///   (default true) adds `Authorization: Basic` only with a `--basic-auth-password`;
///   `--pass-authorization-header` adds `Authorization: Bearer <id_token>`
///   (`getAuthorizationHeader`, claim "id_token", prefix "Bearer "); no
///   `--pass-access-token`, so no `X-Forwarded-Access-Token`. Every one of them is
///   `PreserveRequestValue: false` (`--skip-auth-strip-headers`, default true): a client's copy
///   is removed.
/// - `getResponseHeaders`: `--set-xauthrequest` adds `X-Auth-Request-User`, `-Email`,
///   `-Preferred-Username`, `-Groups` to the *response* (authgate: to the app, documented).
/// - `pkg/apis/options/legacy_provider.go`: `--user-id-claim` defaults to `email`, so "user"
///   is the address.
/// - `pkg/header/injector.go`: a claim with several values (groups) is `header.Add`ed once
///   per value: one header line per group (authgate: one line, comma-separated; documented).
fn oauth2_proxy_headers(user: &str) -> BTreeMap<String, Vec<String>> {
    let (email, groups): (&str, &[&str]) = match user {
        "alice" => ("alice@example.com", &["admins", "dev"]),
        other => panic!("oauth2-proxy lets only alice in, not {other}"),
    };
    let v = |s: &str| vec![s.to_string()];
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    BTreeMap::from([
        ("x-forwarded-user".to_string(), v(email)),
        ("x-forwarded-email".to_string(), v(email)),
        ("x-forwarded-groups".to_string(), groups),
        ("x-forwarded-preferred-username".to_string(), v(user)),
    ])
}

/// What oauth2-proxy decides with the worked example's flags, from its source
/// (`oauthproxy.go`):
/// - `Proxy` → `getAuthenticatedSession`: a request `IsAllowedRequest` matches
///   (`--skip-auth-route='GET=^/status'`: method GET and the path regex) passes without a
///   session (with one, with its headers: a documented difference, authgate sends none);
///   otherwise no session is `ErrNeedsLogin`: 401 for an AJAX request (`isAjax`:
///   `Accept: application/json`), else with `--skip-provider-button` a redirect to the
///   provider (`OAuthStart`).
/// - `OAuthCallback`: `p.Validator(session.Email)` (`--email-domain`) and
///   `p.provider.Authorize` (`--allowed-group`) must both pass, else 403 ("Invalid Account") and
///   no session; `getAuthenticatedSession` checks both again on every request (403).
///   authgate signs such a user in and answers 403 to every request (documented): the kind of
///   decision the user and the app see is the same.
fn oauth2_proxy_decision(user: &str, method: &str, path: &str, browser: bool) -> Decision {
    if method == "GET" && path.starts_with("/status") {
        return Decision::Pass;
    }
    match user {
        "anonymous" if browser => Decision::SignIn,
        "anonymous" => Decision::Unauthorized,
        "alice" => Decision::Pass,
        // carol: example.com, not in admins; erin: in admins, example.org.
        _ => Decision::Forbidden,
    }
}

/// The guide's oauth2-proxy worked example: authgate running its TOML block gives the app
/// the headers and decisions oauth2-proxy's source defines for its flags (see
/// [`oauth2_proxy_headers`], [`oauth2_proxy_decision`]).
///
/// Needs issue 16's `id_token = "Authorization"` and `x_auth_request` (claims to headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authgate_gives_the_app_what_oauth2_proxy_gave() {
    let md = guide(OAUTH2_PROXY_GUIDE);
    // The expectations below are for exactly these flags.
    let flags = section_blocks(&md, WORKED_EXAMPLE, "sh");
    assert_eq!(
        flags.len(),
        1,
        "one oauth2-proxy command in the worked example"
    );
    for flag in [
        "--provider=oidc",
        "--email-domain=example.com",
        "--allowed-group=admins",
        "--skip-auth-route='GET=^/status'",
        "--skip-provider-button",
        "--set-xauthrequest",
        "--pass-authorization-header",
    ] {
        assert!(flags[0].contains(flag), "the guide's flags: no {flag}");
    }
    for flag in [
        "--pass-access-token",
        "--basic-auth-password",
        "--prefer-email-to-user",
        "--user-id-claim",
        "--pass-user-headers",
        "--skip-auth-strip-headers",
    ] {
        assert!(!flags[0].contains(flag), "the guide's flags: {flag}");
    }

    let port = free_port();
    let idp = provider_for(&[(port, "/oauth2/callback")]).await;
    let app = echo().await;
    let gw = authgate_from_guide(
        OAUTH2_PROXY_GUIDE,
        port,
        &idp,
        app,
        "[[listeners]]\naddress = \"0.0.0.0:4180\"\n\n",
    )
    .await;
    let base = format!("http://{}", gw.addr);
    // oauth2-proxy's namespace (and `Authorization`, which it sets here).
    let forged = [
        ("X-Forwarded-User", "forged"),
        ("X_Forwarded_Email", "forged@evil.example"),
        ("x-forwarded-groups", "forged"),
        ("X-Auth-Request-User", "forged"),
        ("Authorization", "Bearer forged"),
    ];
    let mut users = vec![("anonymous".to_string(), Jar::default())];
    for user in ["alice", "carol", "erin"] {
        users.push((
            user.to_string(),
            form_login(&base, "/app/page", "/oauth2/callback", user).await,
        ));
    }
    for (user, jar) in &users {
        for path in ["/app/page?x=1", "/status"] {
            for (method, browser) in KINDS {
                let what = format!("{user} {method} {path} (browser: {browser})");
                let seen = request(&base, method, path, *browser, jar, &forged).await;
                assert_eq!(
                    seen.decision,
                    oauth2_proxy_decision(user, method, path, *browser),
                    "{what}\n{}",
                    gw.log()
                );
                if seen.decision != Decision::Pass || *browser {
                    continue;
                }
                assert!(
                    seen.identity
                        .values()
                        .flatten()
                        .all(|v| !v.contains("forged")),
                    "{what}: {:?}",
                    seen.identity
                );
                // The skip-auth route: no identity at all (authgate's public_methods;
                // oauth2-proxy's getAuthenticatedSession also passes a signed-in user's
                // headers there: the guide says so).
                if *method == "GET" && path.starts_with("/status") {
                    assert!(seen.identity.is_empty(), "{what}: {:?}", seen.identity);
                    continue;
                }
                let mut identity = seen.identity.clone();
                // The ID token as a bearer token: a JWT from the provider about the user.
                let auth = identity.remove("authorization").unwrap_or_default();
                assert_eq!(auth.len(), 1, "{what}: Authorization {auth:?}");
                let token = auth[0]
                    .strip_prefix("Bearer ")
                    .unwrap_or_else(|| panic!("{what}: Authorization {auth:?}"));
                let claims = jwt_payload(token);
                assert_eq!(claims["iss"], idp.issuer.as_str(), "{what}: {claims}");
                assert_eq!(claims["sub"], user.as_str(), "{what}: {claims}");
                assert_eq!(claims["aud"], "app", "{what}: {claims}");
                // Groups: one comma-separated line (oauth2-proxy: a line per group).
                for values in identity.values_mut() {
                    *values = values
                        .iter()
                        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
                        .collect();
                }
                // X-Auth-Request-*: the same values, to the app (oauth2-proxy: to the client).
                let mut expected = oauth2_proxy_headers(user);
                for (suffix, value) in [
                    ("user", expected["x-forwarded-user"].clone()),
                    ("email", expected["x-forwarded-email"].clone()),
                    ("groups", expected["x-forwarded-groups"].clone()),
                    (
                        "preferred-username",
                        expected["x-forwarded-preferred-username"].clone(),
                    ),
                ] {
                    expected.insert(format!("x-auth-request-{suffix}"), value);
                }
                assert_eq!(identity, expected, "{what}");
            }
        }
    }
}

/// The worked examples are read from their own section only: blocks of other sections and
/// of other languages are not taken, a heading of the same level ends the section.
#[test]
fn section_blocks_reads_one_section() {
    let md = "## A\n```toml\na = 1\n```\n## A worked example\ntext\n```sh\nx\n```\n```toml\nb = 2\n```\n### sub\n```toml\nc = 3\n```\n## Next\n```toml\nd = 4\n```\n";
    assert_eq!(
        section_blocks(md, "## A worked example", "toml"),
        ["b = 2\n", "c = 3\n"]
    );
    assert_eq!(section_blocks(md, "## A worked example", "sh"), ["x\n"]);
    assert!(section_blocks(md, "## Next", "sh").is_empty());
}
