//! The session admin API on the admin listener, for operators and `authgate sessions`:
//!
//! - `GET    /sessions?subject=S`              a subject's live sessions (metadata, no tokens)
//! - `DELETE /sessions?subject=S[&provider=P]` end all of them → `{"revoked": n}`
//! - `DELETE /sessions/<id>`                   end one (204; 404 if there is no such session)
//!
//! Every call needs `Authorization: Bearer <admin.token>` (compared in constant time); with
//! no token configured the API is off (404). Revocation deletes the record and publishes a
//! cache invalidation, so every replica refuses the session within one pub/sub hop.

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;

use crate::config::secret::Secret;

pub(crate) struct SessionsApi {
    token: Option<Secret>,
    auth: crate::oidc::SharedAuth,
}

/// What the handler needs of a request, so it can be driven without a socket.
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) authorization: Option<&'a [u8]>,
}

fn json(status: StatusCode, v: serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> http::Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": msg }))
}

impl SessionsApi {
    pub(crate) fn new(token: Option<Secret>, auth: crate::oidc::SharedAuth) -> Self {
        Self { token, auth }
    }

    /// Whether `path` belongs to this API.
    pub(crate) fn owns(path: &str) -> bool {
        path == "/sessions" || path.starts_with("/sessions/")
    }

    fn authorized(&self, authorization: Option<&[u8]>) -> Result<(), StatusCode> {
        let Some(token) = &self.token else {
            return Err(StatusCode::NOT_FOUND);
        };
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if token.ct_eq(presented) {
            Ok(())
        } else {
            Err(StatusCode::UNAUTHORIZED)
        }
    }

    pub(crate) async fn handle(&self, req: ApiRequest<'_>) -> http::Response<Full<Bytes>> {
        match self.authorized(req.authorization) {
            Err(StatusCode::NOT_FOUND) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "session API disabled: set admin.token or admin.token_file",
                )
            }
            Err(status) => {
                tracing::warn!(path = req.path, "admin API call without a valid token");
                let mut r = error(status, "missing or wrong admin token");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"authgate-admin\""),
                );
                return r;
            }
            Ok(()) => {}
        }
        let Some(auth) = self.auth.load_full() else {
            return error(
                StatusCode::NOT_FOUND,
                "no providers configured: no sessions",
            );
        };
        let sessions = auth.sessions();
        let q: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let handle = req.path.strip_prefix("/sessions/");
        // A user is a provider's `sub`; without `provider`, that `sub` at every provider.
        let providers: Vec<&str> = match param("provider") {
            Some(p) => vec![p],
            None => auth.providers().iter().map(|p| p.id()).collect(),
        };
        let result = match (req.method, handle, param("subject")) {
            (&Method::GET, None, Some(subject)) => {
                let mut list = Vec::new();
                let mut failed = None;
                for p in &providers {
                    match sessions.list_user(p, subject).await {
                        Ok(l) => list.extend(l),
                        Err(e) => failed = Some(e),
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(json(
                        StatusCode::OK,
                        serde_json::json!({ "sessions": list }),
                    )),
                }
            }
            (&Method::DELETE, None, Some(subject)) => {
                let mut n = 0;
                let mut failed = None;
                for p in &providers {
                    match sessions.revoke_user(p, subject).await {
                        Ok(k) => n += k,
                        Err(e) => failed = Some(e),
                    }
                }
                auth.metrics()
                    .revocations
                    .with_label_values(&["admin"])
                    .inc_by(n as u64);
                tracing::info!(subject, revoked = n, "sessions revoked by the admin API");
                // `subject` is the provider's sub, not the name headers show: say so when it
                // matched nothing rather than let a revocation look done.
                let body = if n == 0 {
                    serde_json::json!({ "revoked": 0, "hint": "subject is the provider's sub (the \"sub\" of /.authgate/userinfo), not the user_claim value headers show; &provider=<id> narrows it" })
                } else {
                    serde_json::json!({ "revoked": n })
                };
                match failed {
                    Some(e) => Err(e),
                    None => Ok(json(StatusCode::OK, body)),
                }
            }
            (&Method::DELETE, Some(id), None) => sessions.revoke_handle(id).await.map(|found| {
                if found {
                    auth.metrics()
                        .revocations
                        .with_label_values(&["admin"])
                        .inc();
                    tracing::info!(session = id, "session revoked by the admin API");
                    let mut r = json(StatusCode::NO_CONTENT, serde_json::Value::Null);
                    *r.body_mut() = Full::new(Bytes::new());
                    r
                } else {
                    error(StatusCode::NOT_FOUND, "no such session")
                }
            }),
            (&Method::GET | &Method::DELETE, _, _) => Ok(error(
                StatusCode::BAD_REQUEST,
                "use /sessions?subject=… or DELETE /sessions/<id>",
            )),
            _ => Ok(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
        };
        result.unwrap_or_else(|e| {
            if e.fault() == crate::answer::Fault::Bug {
                tracing::error!(error = %e, "admin API: session data cannot be encoded (a bug)");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
            tracing::error!(error = %e, "admin API: session store unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        })
    }
}
