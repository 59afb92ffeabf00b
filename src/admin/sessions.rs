//! The session admin API on the admin listener, for operators and `authgate sessions`:
//!
//! - `GET    /sessions?subject=S`              a subject's live sessions (metadata, no tokens)
//! - `DELETE /sessions?subject=S[&provider=P]` end all of them → `{"revoked": n}`
//! - `DELETE /sessions/<id>`                   end one (204; 404 if there is no such session)
//!
//! Every call needs `Authorization: Bearer <admin.token>` (compared in constant time); with
//! no token configured the API is off (404). Revocation deletes the record and publishes a
//! cache invalidation, so every replica refuses the session within one pub/sub hop.

use http::Method;

use crate::answer::Admin;
use crate::config::secret::Secret;
use crate::oidc::Auth;
use crate::session::StoreError;

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

impl SessionsApi {
    pub(crate) fn new(token: Option<Secret>, auth: crate::oidc::SharedAuth) -> Self {
        Self { token, auth }
    }

    /// Whether `path` belongs to this API.
    pub(crate) fn owns(path: &str) -> bool {
        path == "/sessions" || path.starts_with("/sessions/")
    }

    /// Whether the call carries the admin token: the API is off without one (404), and a
    /// call without the right one is refused (401).
    fn authorized(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), Admin> {
        let Some(token) = &self.token else {
            return Err(Admin::ApiDisabled);
        };
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if token.ct_eq(presented) {
            return Ok(());
        }
        tracing::warn!(path, "admin API call without a valid token");
        Err(Admin::BadToken)
    }

    /// One call of the API, answered by `answer::admin`.
    pub(crate) async fn handle(&self, req: ApiRequest<'_>) -> Admin {
        if let Err(refused) = self.authorized(req.path, req.authorization) {
            return refused;
        }
        let Some(auth) = self.auth.load_full() else {
            return Admin::NoSessions;
        };
        let q: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        // A user is a provider's `sub`; without `provider`, that `sub` at every provider.
        let providers: Vec<&str> = match param("provider") {
            Some(p) => vec![p],
            None => auth.providers().iter().map(|p| p.id()).collect(),
        };
        let handle = req.path.strip_prefix("/sessions/");
        let result = match (req.method, handle, param("subject")) {
            (&Method::GET, None, Some(subject)) => list(&auth, &providers, subject).await,
            (&Method::DELETE, None, Some(subject)) => revoke(&auth, &providers, subject).await,
            (&Method::DELETE, Some(id), None) => revoke_one(&auth, id).await,
            (&Method::GET | &Method::DELETE, _, _) => Ok(Admin::BadSessionQuery),
            _ => Ok(Admin::SessionMethod),
        };
        result.unwrap_or_else(|e| {
            if e.fault() == crate::answer::Fault::Bug {
                tracing::error!(error = %e, "admin API: session data cannot be encoded (a bug)");
                return Admin::Internal;
            }
            tracing::error!(error = %e, "admin API: session store unavailable");
            Admin::StoreUnavailable
        })
    }
}

/// `GET /sessions?subject=S`: the subject's sessions at each of `providers`.
async fn list(auth: &Auth, providers: &[&str], subject: &str) -> Result<Admin, StoreError> {
    let mut list = Vec::new();
    let mut failed = None;
    for p in providers {
        match auth.sessions().list_user(p, subject).await {
            Ok(l) => list.extend(l),
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Admin::Sessions(list)),
    }
}

/// `DELETE /sessions?subject=S`: end the subject's sessions at each of `providers` (as many
/// as can be, even when one provider's fail).
async fn revoke(auth: &Auth, providers: &[&str], subject: &str) -> Result<Admin, StoreError> {
    let mut n = 0;
    let mut failed = None;
    for p in providers {
        match auth.sessions().revoke_user(p, subject).await {
            Ok(k) => n += k,
            Err(e) => failed = Some(e),
        }
    }
    auth.metrics()
        .revocations
        .with_label_values(&["admin"])
        .inc_by(n as u64);
    tracing::info!(subject, revoked = n, "sessions revoked by the admin API");
    match failed {
        Some(e) => Err(e),
        None => Ok(Admin::Revoked(n)),
    }
}

/// `DELETE /sessions/<id>`: end that one session.
async fn revoke_one(auth: &Auth, id: &str) -> Result<Admin, StoreError> {
    if !auth.sessions().revoke_handle(id).await? {
        return Ok(Admin::NoSuchSession);
    }
    auth.metrics()
        .revocations
        .with_label_values(&["admin"])
        .inc();
    tracing::info!(session = id, "session revoked by the admin API");
    Ok(Admin::RevokedOne)
}
