//! A client's own account of the request: every name of
//! `authgate::forwarded::FORWARDING_HEADERS` (the headers proxy mode drops from untrusted
//! clients), in other cases, with `_` and `.`, some twice, all with hostile values; and the
//! check that an app behind a forward-auth front proxy got the proxy's account only, as it
//! gets the gateway's in proxy mode.

use authgate::forwarded::FORWARDING_HEADERS;

use std::net::SocketAddr;

use super::{auth_config, Gateway, Idp, Opts, Seen};

/// What the forged values name: never the client, its host or its scheme.
pub const EVIL_IP: &str = "10.6.6.6";
const EVIL_HOST: &str = "evil.example";

/// A plausible hostile value for the forwarding header `name` (canonical spelling).
fn forged_value(name: &str) -> String {
    match name {
        "forwarded" => format!("for={EVIL_IP};host={EVIL_HOST};proto=https"),
        n if n.ends_with("-for") || n.ends_with("ip") || n.ends_with("address") => {
            EVIL_IP.to_string()
        }
        n if ["proto", "scheme", "ssl", "https"]
            .iter()
            .any(|p| n.contains(p)) =>
        {
            "https".to_string()
        }
        n if n.ends_with("port") => "8443".to_string(),
        n if n.ends_with("method") => "DELETE".to_string(),
        n if n.ends_with("host") || n.ends_with("server") => EVIL_HOST.to_string(),
        _ => format!("//{EVIL_HOST}/admin"),
    }
}

/// Names sent twice (the dashed spelling, two lines): the ones an app reads first.
const TWICE: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
];

fn title(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The request lines (`Name: value`) forging every forwarding header: each name as listed,
/// in another case (Title-Case or UPPER), with `_` (`X_Forwarded_Host`), with `.` and with
/// one `_` among dashes (`x-forwarded_host`); [`TWICE`] a second time. About 70 dashed lines
/// (the rest nginx drops itself), so that the check request stays under the gateway's
/// default `max_request_headers` (100).
pub fn forged_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for (i, &name) in FORWARDING_HEADERS.iter().enumerate() {
        let value = forged_value(name);
        let other_case = if i % 2 == 0 {
            title(name)
        } else {
            name.to_ascii_uppercase()
        };
        let mut spellings = vec![
            name.to_string(),
            other_case,
            title(name).replace('-', "_"),
            name.replace('-', "."),
        ];
        if let Some(last) = name.rfind('-') {
            spellings.push(format!("{}_{}", &name[..last], &name[last + 1..]));
        }
        // A one-word name (`forwarded`) has no variant spelling but its case.
        let mut once = std::collections::HashSet::new();
        spellings.retain(|s| once.insert(s.clone()));
        if TWICE.contains(&name) {
            spellings.push(name.to_string());
        }
        lines.extend(spellings.into_iter().map(|s| format!("{s}: {value}")));
    }
    lines
}

/// `name` as the gateway compares it: ASCII lower case, every byte but `[a-z0-9]` as `-`.
fn canonical(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b.to_ascii_lowercase())
            } else {
                '-'
            }
        })
        .collect()
}

/// The app got the front proxy's account of the request and nothing of the client's: one
/// `X-Forwarded-For` (`client`), `-Proto` (`proto`) and `-Host` (`host`) each, no other
/// forwarding header in any spelling, and no forged value under any name.
pub fn assert_proxy_account(seen: &Seen, client: &str, proto: &str, host: &str) {
    for (k, v) in &seen.headers {
        let canon = canonical(k);
        if FORWARDING_HEADERS.contains(&canon.as_str()) {
            assert!(
                k.eq_ignore_ascii_case(&canon)
                    && ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
                        .contains(&canon.as_str()),
                "the app got {k}: {v}\n{:#?}",
                seen.headers
            );
        }
        assert!(
            !v.contains(EVIL_HOST) && !v.contains(EVIL_IP),
            "the app got the client's {k}: {v}"
        );
    }
    assert_eq!(seen.all("x-forwarded-for"), [client], "{:#?}", seen.headers);
    assert_eq!(
        seen.all("x-forwarded-proto"),
        [proto],
        "{:#?}",
        seen.headers
    );
    assert_eq!(seen.all("x-forwarded-host"), [host], "{:#?}", seen.headers);
}

/// A gateway in forward-auth mode for `proxy` on 127.0.0.1 (trusted, and the test client's
/// address too), with [`auth_config`]'s routes plus `/lan`, open to [`EVIL_IP`] only: a check
/// that reads the client's own `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for` walked
/// back past the trusted 127.0.0.1) lets a forging client in there.
pub async fn gateway(idp: &Idp, app: SocketAddr, proxy: &str) -> Gateway {
    let routes = format!(
        "\n[forward_auth]\nproxy = \"{proxy}\"\n\n[[routes]]\nid = \"lan\"\npath = \"/lan\"\nupstream = \"app\"\nauth = \"optional\"\n[routes.policy]\nsource_ips = [\"{EVIL_IP}\"]\n"
    );
    let gw = Gateway::start_with(
        &format!("{}{routes}", auth_config(idp, app, "store = \"memory\"")),
        Opts {
            port: Some(super::ANY_PORT),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}
