//! The admin listener's answers: liveness, readiness, metrics and the session API, for
//! operators, probes and scrapers. Plain text or JSON, never cached, and every 503 says when
//! to retry. One enum, [`Admin`], turned into a response by one function, [`admin`].

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::oidc::provider::ProviderStatus;
use crate::session::SessionInfo;

/// What the gateway can serve, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// The instance takes traffic: 200, else 503.
    pub(crate) ready: bool,
    /// The proxy runs with a loaded config.
    pub(crate) config: bool,
    /// Shutdown has begun.
    pub(crate) draining: bool,
    /// With sign-in configured: the session store and the providers.
    pub(crate) auth: Option<AuthReadiness>,
}

/// The sign-in side of [`Readiness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthReadiness {
    pub(crate) session_store: bool,
    pub(crate) session_cache_coherent: bool,
    /// At least one provider can take a sign-in.
    pub(crate) sign_in: bool,
    /// Each provider by id, in configuration order.
    pub(crate) providers: Vec<(String, ProviderStatus)>,
}

/// Everything the admin listener answers.
#[derive(Debug, Clone)]
pub(crate) enum Admin {
    /// `/healthz`: the process answers.
    Alive,
    /// `/readyz`.
    Readiness(Readiness),
    /// `/metrics`, in the Prometheus text format.
    Metrics(Vec<u8>),
    /// No such admin path.
    NotFound,
    /// Not GET or HEAD outside the session API.
    MethodNotAllowed,
    /// The session API without `admin.token`.
    ApiDisabled,
    /// The session API without the right admin token.
    BadToken,
    /// The session API on a gateway without providers.
    NoSessions,
    /// `GET /sessions?subject=`: a subject's live sessions (metadata, no tokens).
    Sessions(Vec<SessionInfo>),
    /// `DELETE /sessions?subject=`: how many sessions ended.
    Revoked(usize),
    /// `DELETE /sessions/<id>`: that session ended (204).
    RevokedOne,
    /// `DELETE /sessions/<id>` of no live session.
    NoSuchSession,
    /// A session API call of the right method but neither form.
    BadSessionQuery,
    /// A session API call other than GET or DELETE.
    SessionMethod,
    /// The session store cannot be reached: 503.
    StoreUnavailable,
    /// Session data of ours cannot be read or written (a bug): 500.
    Internal,
}

/// Why `subject` matched nothing, when a revocation ended no session: it is the provider's
/// `sub`, not the name headers show.
const REVOKED_NONE_HINT: &str = "subject is the provider's sub (the \"sub\" of /.authgate/userinfo), not the user_claim value headers show; &provider=<id> narrows it";

/// The one function that turns an admin outcome into a response.
pub(crate) fn admin(outcome: Admin) -> Response<Full<Bytes>> {
    use serde_json::json;
    let error = |status, message: &str| (status, json!({ "error": message }));
    let (status, body) = match outcome {
        Admin::Alive => return text(StatusCode::OK, "text/plain", "ok\n"),
        Admin::Metrics(m) => {
            let prometheus = "text/plain; version=0.0.4; charset=utf-8";
            return text(StatusCode::OK, prometheus, m);
        }
        Admin::NotFound => return text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        Admin::MethodNotAllowed => {
            let body = "method not allowed\n";
            return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", body);
        }
        Admin::Readiness(r) => {
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, readiness(&r))
        }
        Admin::ApiDisabled => error(
            StatusCode::NOT_FOUND,
            "session API disabled: set admin.token or admin.token_file",
        ),
        Admin::BadToken => {
            let (status, body) = error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
            let mut r = json_response(status, body);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authgate-admin\""),
            );
            return r;
        }
        Admin::NoSessions => error(
            StatusCode::NOT_FOUND,
            "no providers configured: no sessions",
        ),
        Admin::Sessions(list) => (StatusCode::OK, json!({ "sessions": list })),
        Admin::Revoked(0) => (
            StatusCode::OK,
            json!({ "revoked": 0, "hint": REVOKED_NONE_HINT }),
        ),
        Admin::Revoked(n) => (StatusCode::OK, json!({ "revoked": n })),
        Admin::RevokedOne => {
            let mut r = json_response(StatusCode::NO_CONTENT, serde_json::Value::Null);
            *r.body_mut() = Full::new(Bytes::new());
            return r;
        }
        Admin::NoSuchSession => error(StatusCode::NOT_FOUND, "no such session"),
        Admin::BadSessionQuery => error(
            StatusCode::BAD_REQUEST,
            "use /sessions?subject=… or DELETE /sessions/<id>",
        ),
        Admin::SessionMethod => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        Admin::StoreUnavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
        Admin::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    json_response(status, body)
}

/// The `/readyz` body: `ready`, each check, and with sign-in each provider's state.
fn readiness(r: &Readiness) -> serde_json::Value {
    let mut checks = serde_json::json!({ "config": r.config, "draining": r.draining });
    let Some(auth) = &r.auth else {
        return serde_json::json!({ "ready": r.ready, "checks": checks });
    };
    checks["session_store"] = auth.session_store.into();
    checks["session_cache_coherent"] = auth.session_cache_coherent.into();
    let mut providers = serde_json::Map::new();
    for (id, st) in &auth.providers {
        checks[format!("provider:{id}")] = st.ready.into();
        providers.insert(
            id.clone(),
            serde_json::json!({
                "ready": st.ready,
                "consecutive_failures": st.consecutive_failures,
                "recent_failures": st.recent_failures,
                "last_error": st.last_error,
                "unavailable_for_s": st.unavailable_for.map(|d| d.as_secs()),
            }),
        );
    }
    checks["sign_in"] = auth.sign_in.into();
    serde_json::json!({ "ready": r.ready, "checks": checks, "providers": providers })
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", v.to_string())
}

/// `body` as `content_type`, never cached; a 503 with `Retry-After`.
fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    super::retry_after(status, headers);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    async fn body(r: Response<Full<Bytes>>) -> (StatusCode, http::HeaderMap, String) {
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (parts.status, parts.headers, text)
    }

    #[tokio::test]
    async fn every_admin_answer_is_uncached_and_every_503_says_when_to_retry() {
        for (outcome, status) in [
            (Admin::Alive, 200),
            (Admin::Metrics(b"m 1\n".to_vec()), 200),
            (Admin::NotFound, 404),
            (Admin::MethodNotAllowed, 405),
            (Admin::ApiDisabled, 404),
            (Admin::BadToken, 401),
            (Admin::NoSessions, 404),
            (Admin::Sessions(vec![]), 200),
            (Admin::Revoked(2), 200),
            (Admin::RevokedOne, 204),
            (Admin::NoSuchSession, 404),
            (Admin::BadSessionQuery, 400),
            (Admin::SessionMethod, 405),
            (Admin::StoreUnavailable, 503),
            (Admin::Internal, 500),
        ] {
            let (s, h, _) = body(admin(outcome.clone())).await;
            assert_eq!(s.as_u16(), status, "{outcome:?}");
            assert_eq!(h["cache-control"], "no-store", "{outcome:?}");
            assert_eq!(h.get("retry-after").is_some(), status == 503, "{outcome:?}");
        }
        let (_, h, b) = body(admin(Admin::Alive)).await;
        assert_eq!(
            (h["content-type"].to_str().unwrap(), b.as_str()),
            ("text/plain", "ok\n")
        );
        let (_, h, b) = body(admin(Admin::BadToken)).await;
        assert_eq!(h["www-authenticate"], "Bearer realm=\"authgate-admin\"");
        assert_eq!(b, r#"{"error":"missing or wrong admin token"}"#);
        let (_, h, b) = body(admin(Admin::RevokedOne)).await;
        assert_eq!(
            (h["content-type"].to_str().unwrap(), b.as_str()),
            ("application/json", "")
        );
        let (_, _, b) = body(admin(Admin::Revoked(0))).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["revoked"], 0);
        assert!(v["hint"].as_str().unwrap().contains("provider's sub"));
    }

    #[tokio::test]
    async fn readiness_lists_checks_and_providers() {
        let down = ProviderStatus {
            ready: false,
            consecutive_failures: 3,
            recent_failures: 4,
            last_error: Some("connect refused".into()),
            unavailable_for: Some(Duration::from_secs(7)),
        };
        let r = Readiness {
            ready: false,
            config: true,
            draining: false,
            auth: Some(AuthReadiness {
                session_store: true,
                session_cache_coherent: true,
                sign_in: false,
                providers: vec![("a".into(), down)],
            }),
        };
        let (s, h, b) = body(admin(Admin::Readiness(r.clone()))).await;
        assert_eq!((s.as_u16(), h["retry-after"].to_str().unwrap()), (503, "5"));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["checks"]["provider:a"], false);
        assert_eq!(v["checks"]["sign_in"], false);
        assert_eq!(v["checks"]["session_store"], true);
        assert_eq!(v["providers"]["a"]["unavailable_for_s"], 7);
        assert_eq!(v["providers"]["a"]["last_error"], "connect refused");
        let bare = Readiness {
            ready: true,
            auth: None,
            ..r
        };
        let (s, _, b) = body(admin(Admin::Readiness(bare))).await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let want =
            serde_json::json!({"ready": true, "checks": {"config": true, "draining": false}});
        assert_eq!(v, want);
    }
}
