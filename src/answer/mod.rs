//! Every answer the gateway gives itself, instead of the upstream, in one place.
//!
//! Each [`Outcome`] (a [`Refusal`], a failed sign-in, the sign-in chooser, the sign-out
//! pages) becomes status + headers + body in one function, [`respond`]; who is asking
//! (page or API client) is decided by one function, [`audience`]. Each refusal maps to
//! exactly one status. Bodies are JSON for API clients and a self-contained HTML page for
//! browsers, from templates with HTML auto-escaping ([`pages`]); neither ever carries
//! internals (addresses, error chains): those go to the log line next to the request ID
//! that both carry. A forward-auth grant (200 with the identity headers the front proxy
//! copies) is written here too, by [`admitted`], and so are the gateway endpoints' own
//! answers (userinfo, the assertion key set, back-channel logout: [`Outcome`] too).
//!
//! The admin listener (a hyper server of its own: health, readiness, metrics, the session
//! API) answers through the sibling enum [`Admin`] and its one function, [`admin`].

use crate::pages;

mod admin;
pub(crate) use admin::{admin, Admin, AuthReadiness, Readiness};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use serde::Serialize;

use crate::host::HostError;
use crate::limits::LimitExceeded;
use crate::path::PathError;

/// Where a browser should go to sign in, on every 401 and 302 (forward-auth proxies read it).
pub(crate) const LOGIN_HEADER: HeaderName = HeaderName::from_static("x-authgate-login");

/// `Retry-After` (seconds) on every 503 the gateway answers itself: the longest wait between
/// two attempts to reach a provider that is down (`oidc::provider::RETRY_MAX`), a fair time
/// for a store or provider blip to pass. Sign-in pages, the admin API and `/readyz` use it too.
pub(crate) const RETRY_AFTER: &str = "5";

/// Add `Retry-After` to a 503 (and to nothing else).
pub(crate) fn retry_after(status: StatusCode, headers: &mut HeaderMap) {
    if status == StatusCode::SERVICE_UNAVAILABLE && !headers.contains_key(header::RETRY_AFTER) {
        headers.insert(
            header::RETRY_AFTER,
            http::HeaderValue::from_static(RETRY_AFTER),
        );
    }
}

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no route for this host and path")]
    NoRoute,
    #[error("unknown gateway endpoint")]
    NoEndpoint,
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("missing or invalid Host: {0}")]
    BadHost(HostError),
    #[error("several different hosts in one request (Host, the request target, X-Forwarded-Host)")]
    AmbiguousHost,
    #[error("{0}")]
    HeadLimit(#[from] LimitExceeded),
    #[error("authentication required")]
    Unauthenticated {
        /// Where a browser should go to sign in (relative URL).
        login: String,
        /// Answer with a redirect to `login` (a browser navigation, or a route that says so).
        redirect: bool,
    },
    #[error("this route does not accept a method override (X-HTTP-Method-Override, _method)")]
    MethodOverride,
    /// A method in lower case (`delete`): a different method to us than to the many apps
    /// that upper-case it before dispatch. Refused as nginx refuses it.
    #[error("methods are upper case (GET, POST, ...)")]
    BadMethod,
    #[error("cross-site request refused: send it from this site's own pages")]
    CrossSite,
    #[error("forward-auth: {0}")]
    ForwardAuth(&'static str),
    #[error("sign-in is not configured on this gateway")]
    LoginUnavailable,
    #[error("malformed request")]
    BadRequest,
    /// The route's `rewrite` made a path that is not canonical (e.g. an empty capture
    /// doubling a `/`): forwarding it would let the upstream read a path other than the one
    /// decided on. 400 like the client's own ambiguous paths: this request path has no
    /// unambiguous form upstream; other paths of the route still work.
    #[error("this request path cannot be forwarded (the route's rewrite makes it ambiguous)")]
    PathNotRewritable,
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable,
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    #[error("you are not allowed to access this resource")]
    Forbidden,
    #[error("invalid access token")]
    InvalidToken,
    #[error("send exactly one Authorization header, and no access token in the URL")]
    AmbiguousCredentials,
    #[error("sessions are temporarily unavailable")]
    SessionStoreUnavailable,
    #[error("the identity provider is unavailable")]
    ProviderUnavailable,
    /// A bug of ours (e.g. data we wrote cannot be encoded): 500, logged as a bug.
    #[error("internal error")]
    Internal,
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoRoute | Refusal::NoEndpoint => StatusCode::NOT_FOUND,
            Refusal::BadPath(_) | Refusal::BadHost(_) | Refusal::AmbiguousHost => {
                StatusCode::BAD_REQUEST
            }
            Refusal::HeadLimit(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::MethodOverride | Refusal::BadMethod | Refusal::ForwardAuth(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::CrossSite => StatusCode::FORBIDDEN,
            Refusal::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Refusal::LoginUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BadRequest | Refusal::PathNotRewritable => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::InvalidToken => StatusCode::UNAUTHORIZED,
            Refusal::AmbiguousCredentials => StatusCode::BAD_REQUEST,
            Refusal::SessionStoreUnavailable | Refusal::ProviderUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for JSON bodies and logs.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::NoEndpoint => "no_endpoint",
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadHost(_) => "bad_host",
            Refusal::AmbiguousHost => "ambiguous_host",
            Refusal::HeadLimit(LimitExceeded::HeadTooLarge) => "head_too_large",
            Refusal::HeadLimit(LimitExceeded::TooManyHeaders) => "too_many_headers",
            Refusal::MethodOverride => "method_override",
            Refusal::BadMethod => "bad_method",
            Refusal::CrossSite => "cross_site",
            Refusal::ForwardAuth(_) => "bad_forward_auth_request",
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::LoginUnavailable => "login_unavailable",
            Refusal::BadRequest => "bad_request",
            Refusal::PathNotRewritable => "path_not_rewritable",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::Forbidden => "forbidden",
            Refusal::InvalidToken => "invalid_token",
            Refusal::AmbiguousCredentials => "ambiguous_credentials",
            Refusal::SessionStoreUnavailable => "store_unavailable",
            Refusal::ProviderUnavailable => "provider_unavailable",
            Refusal::Internal => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Refusal::NoRoute | Refusal::NoEndpoint => "Not found",
            Refusal::BadPath(_)
            | Refusal::BadHost(_)
            | Refusal::AmbiguousHost
            | Refusal::HeadLimit(_)
            | Refusal::MethodOverride
            | Refusal::BadMethod
            | Refusal::ForwardAuth(_)
            | Refusal::BadRequest
            | Refusal::PathNotRewritable
            | Refusal::MethodNotAllowed
            | Refusal::BodyTooLarge => "Bad request",
            Refusal::Unauthenticated { .. } => "Sign-in required",
            Refusal::LoginUnavailable => "Sign-in unavailable",
            Refusal::UpstreamUnavailable => "Service unavailable",
            Refusal::UpstreamTimeout => "Service timed out",
            Refusal::Forbidden | Refusal::CrossSite => "Access denied",
            Refusal::InvalidToken => "Sign-in required",
            Refusal::AmbiguousCredentials => "Bad request",
            Refusal::SessionStoreUnavailable | Refusal::ProviderUnavailable => {
                "Temporarily unavailable"
            }
            Refusal::Internal => "Internal error",
        }
    }
}

/// Who is asking, for the shape of an answer (design decision 10): decided once per request,
/// by this one function, for proxy mode and forward-auth alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Audience {
    /// The client wants a page (a browser loading a document): HTML bodies.
    pub(crate) page: bool,
    /// A top-level GET/HEAD navigation: may be answered with a redirect to sign in.
    pub(crate) navigation: bool,
}

/// Where the browser sends them, `Sec-Fetch-Mode` and `Sec-Fetch-Dest` decide; otherwise the
/// method, `X-Requested-With` and `Accept` (q-values honoured: `text/html` must be preferred
/// over `application/json` and not only reached through `*/*`). Everything else is an API
/// client and gets JSON, because a redirect to an HTML login page means nothing to `fetch()`.
pub(crate) fn audience(method: &Method, headers: &HeaderMap) -> Audience {
    let get = matches!(*method, Method::GET | Method::HEAD);
    if let Some(mode) = single(headers, "sec-fetch-mode") {
        let page = mode.eq_ignore_ascii_case(b"navigate");
        let document = match single(headers, "sec-fetch-dest") {
            None => true,
            Some(d) => [&b"document"[..], b"iframe", b"frame"]
                .iter()
                .any(|x| d.eq_ignore_ascii_case(x)),
        };
        return Audience {
            page,
            navigation: page && get && document,
        };
    }
    if headers.contains_key("x-requested-with") {
        return Audience::default();
    }
    let page = prefers_html(headers);
    Audience {
        page,
        navigation: page && get,
    }
}

/// The header's value when it is present exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

/// `Accept` ranks `text/html` above `application/json`, by an explicit `text/html` or
/// `text/*` range with q > 0.
fn prefers_html(headers: &HeaderMap) -> bool {
    // (specificity, q) of the best range for each type: 2 exact, 1 type/*, 0 */*.
    let mut html: Option<(u8, u16)> = None;
    let mut json: Option<(u8, u16)> = None;
    let better = |cur: Option<(u8, u16)>, spec: u8, q: u16| match cur {
        Some((s, _)) if s >= spec => cur,
        _ => Some((spec, q)),
    };
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for range in v.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let Some(q) = parts
                .map(str::trim)
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1000), parse_q)
            else {
                continue;
            };
            let Some((t, st)) = media.split_once('/') else {
                continue;
            };
            let (t, st) = (t.trim(), st.trim());
            if t == "*" && st == "*" {
                html = better(html, 0, q);
                json = better(json, 0, q);
            } else if t.eq_ignore_ascii_case("text") {
                if st == "*" {
                    html = better(html, 1, q);
                } else if st.eq_ignore_ascii_case("html") {
                    html = better(html, 2, q);
                }
            } else if t.eq_ignore_ascii_case("application") {
                if st == "*" {
                    json = better(json, 1, q);
                } else if st.eq_ignore_ascii_case("json") {
                    json = better(json, 2, q);
                }
            }
        }
    }
    match html {
        Some((spec, q)) if spec > 0 && q > 0 => q > json.map_or(0, |(_, q)| q),
        _ => false,
    }
}

/// A q-value in thousandths: `0`, `0.5`, `1`, `1.000`; `None` for anything else.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(f),
        "1" if f == 0 => Some(1000),
        _ => None,
    }
}

pub(crate) use crate::fault::Fault;

impl From<&crate::jwt::JwtError> for Refusal {
    /// A bearer token that cannot be accepted: refused (401), or not checkable now (503)
    /// so the client keeps its token and retries.
    fn from(e: &crate::jwt::JwtError) -> Self {
        match e.fault() {
            Fault::Rejected => Refusal::InvalidToken,
            Fault::Unavailable => Refusal::ProviderUnavailable,
            Fault::Bug => Refusal::Internal,
        }
    }
}

impl From<&crate::session::StoreError> for Refusal {
    fn from(e: &crate::session::StoreError) -> Self {
        match e.fault() {
            Fault::Bug => Refusal::Internal,
            Fault::Rejected | Fault::Unavailable => Refusal::SessionStoreUnavailable,
        }
    }
}

/// Why a login callback failed: the metric label, the status and the user-facing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackFailure {
    ProviderError,
    MissingParameter,
    DuplicateParameter,
    UnboundState,
    UnknownState,
    ProviderUnavailable,
    CodeRejected,
    BadIdToken,
    NonceMismatch,
    /// The answer came back to another provider's callback, or named another issuer
    /// (RFC 9207): a mix-up.
    WrongProvider,
    /// The provider vouched for no usable user: no user claim, or an unverified email as it.
    UnverifiedIdentity,
    StoreUnavailable,
    /// The session could not be written for a reason of ours (a bug): 500.
    Internal,
}

impl CallbackFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::ProviderError => "provider_error",
            Self::MissingParameter => "missing_parameter",
            Self::DuplicateParameter => "duplicate_parameter",
            Self::UnboundState => "unbound_state",
            Self::UnknownState => "unknown_state",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::CodeRejected => "code_rejected",
            Self::BadIdToken => "bad_id_token",
            Self::NonceMismatch => "nonce_mismatch",
            Self::WrongProvider => "wrong_provider",
            Self::UnverifiedIdentity => "unverified_identity",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal_error",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::MissingParameter
            | Self::DuplicateParameter
            | Self::UnboundState
            | Self::UnknownState => StatusCode::BAD_REQUEST,
            Self::ProviderError
            | Self::CodeRejected
            | Self::BadIdToken
            | Self::NonceMismatch
            | Self::WrongProvider
            | Self::UnverifiedIdentity => StatusCode::UNAUTHORIZED,
            Self::ProviderUnavailable => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::ProviderError => "The identity provider did not sign you in.",
            Self::MissingParameter => "The sign-in response is incomplete.",
            Self::DuplicateParameter => "The sign-in response is malformed.",
            Self::UnboundState => "This sign-in was not started in this browser.",
            Self::UnknownState => "This sign-in has expired or was already used.",
            Self::ProviderUnavailable => "The identity provider could not be reached.",
            Self::CodeRejected => "The identity provider rejected the sign-in.",
            Self::BadIdToken | Self::NonceMismatch | Self::WrongProvider => {
                "The identity provider's answer could not be verified."
            }
            Self::UnverifiedIdentity => {
                "The identity provider did not confirm who you are (for example, your email address is not verified there)."
            }
            Self::StoreUnavailable => "Sessions are temporarily unavailable.",
            Self::Internal => "The gateway could not complete the sign-in (an internal error).",
        }
    }
}

/// Why a sign-in or sign-out endpoint did not do what was asked. Answered with a page that
/// offers to sign in again (JSON for API clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignInFailure {
    Callback(CallbackFailure),
    /// `login?provider=` names no configured provider.
    UnknownProvider,
    /// The provider (its display name) is down or was never reached.
    ProviderDown(String),
    /// No authorization URL can be built from the provider's metadata.
    ProviderMisconfigured,
    /// The login transaction cannot be stored.
    LoginStoreDown,
    /// The store is down (sign-out, userinfo).
    StoreDown,
    /// The store refused our own data (a bug).
    Internal,
    /// Sign-out with a method other than GET/HEAD/POST.
    SignOutMethod,
    /// A sign-out POST from another site.
    SignOutCrossSite,
}

impl SignInFailure {
    fn status(&self) -> StatusCode {
        match self {
            Self::Callback(f) => f.status(),
            Self::UnknownProvider => StatusCode::BAD_REQUEST,
            Self::ProviderDown(_) | Self::LoginStoreDown | Self::StoreDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ProviderMisconfigured => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SignOutMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::SignOutCrossSite => StatusCode::FORBIDDEN,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Callback(f) => f.reason(),
            Self::UnknownProvider => "unknown_provider",
            Self::ProviderDown(_) | Self::ProviderMisconfigured => "provider_unavailable",
            Self::LoginStoreDown | Self::StoreDown => "store_unavailable",
            Self::Internal => "internal_error",
            Self::SignOutMethod => "method_not_allowed",
            Self::SignOutCrossSite => "cross_site",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Callback(_) => "Sign-in failed",
            Self::UnknownProvider => "Unknown sign-in method",
            Self::ProviderDown(_) | Self::ProviderMisconfigured | Self::LoginStoreDown => {
                "Sign-in unavailable"
            }
            Self::StoreDown => "Temporarily unavailable",
            Self::Internal => "Internal error",
            Self::SignOutMethod => "Sign out",
            Self::SignOutCrossSite => "Access denied",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Callback(f) => f.message().into(),
            Self::UnknownProvider => "No such identity provider is configured.".into(),
            Self::ProviderDown(name) => {
                format!("{name} cannot be reached right now. Please try again in a moment.")
            }
            Self::ProviderMisconfigured => "The identity provider is misconfigured.".into(),
            Self::LoginStoreDown => "Sessions are temporarily unavailable.".into(),
            Self::StoreDown => {
                "Sessions are temporarily unavailable. Please try again shortly.".into()
            }
            Self::Internal => "The gateway hit an internal error.".into(),
            Self::SignOutMethod => "Sign out with a POST from this site's sign-out page.".into(),
            Self::SignOutCrossSite => {
                "Sign-out requests must come from this site's own sign-out page.".into()
            }
        }
    }
}

/// One provider on the sign-in chooser.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Choice<'a> {
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    /// Down providers are shown as such, not as a link to a 503.
    pub(crate) ready: bool,
}

/// One hidden field of the form that signs out at the provider.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Field<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: &'a str,
}

/// Everything the gateway answers itself, as one enum: [`respond`] turns each into a status,
/// headers and a body.
#[derive(Debug, Clone)]
pub(crate) enum Outcome<'a> {
    /// A request refused on its way to the upstream (or to a gateway endpoint).
    Refused(&'a Refusal),
    /// A sign-in or sign-out endpoint failed; `prefix` is the gateway prefix (the page links
    /// to `{prefix}login`).
    SignInFailed {
        failure: &'a SignInFailure,
        prefix: &'a str,
    },
    /// `{prefix}userinfo` without a session: 401, always JSON (an API endpoint).
    NotSignedIn,
    /// The sign-in chooser (several providers).
    SignIn {
        providers: &'a [Choice<'a>],
        return_to: &'a str,
    },
    /// `GET {prefix}logout`: a page whose button POSTs to `action`.
    ConfirmSignOut { action: &'a str },
    /// After a local sign-out: a form auto-posted (by the one script `script_nonce` allows)
    /// to the provider's end-session endpoint.
    SigningOut {
        endpoint: &'a str,
        fields: &'a [Field<'a>],
        script_nonce: &'a str,
    },
    /// `{prefix}userinfo` with a session: who the caller is, never a token.
    Identity {
        claims: &'a crate::identity::Claims,
        provider: &'a str,
        expires_at: u64,
    },
    /// `{prefix}jwks.json`: the public key set of the identity assertion (a JSON document).
    AssertionKeys(&'a str),
    /// `{prefix}backchannel-logout`, answered to the provider.
    BackChannel(BackChannel<'a>),
    /// 302 to `location` (the sign-in flows: to the provider, back to the app); the flow adds
    /// its cookies.
    Redirect(&'a str),
}

/// How a back-channel logout went (OIDC Back-Channel Logout 1.0 §2.8): answered to the
/// provider, in OAuth error JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackChannel<'a> {
    /// The sessions of the logout token are ended (or there were none): 200.
    LoggedOut,
    /// The request or its logout token is refused (why, for the provider): 400.
    Refused(&'a str),
    /// The sessions could not be ended (the store is down): the provider may retry. 501
    /// with `temporarily_unavailable`, as before this answer moved here.
    NotPerformed,
}

/// A response the gateway writes itself.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// Pages allow inline styles only (and no scripts), and no framing.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'";

impl Reply {
    /// An empty answer with `Cache-Control: no-store` (and `Retry-After` on a 503).
    fn new(status: StatusCode) -> Self {
        let mut headers = vec![(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.push((header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER)));
        }
        Self {
            status,
            headers,
            body: Bytes::new(),
        }
    }

    /// Add a header; a value that is not a valid header value is left out.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    fn redirect(location: &str) -> Self {
        Self::new(StatusCode::FOUND).header(header::LOCATION, location)
    }

    fn html(status: StatusCode, page: String, csp: &str) -> Self {
        let mut r = Self::new(status).header(header::CONTENT_TYPE, "text/html; charset=utf-8");
        r = r.header(HeaderName::from_static("content-security-policy"), csp);
        r.body = Bytes::from(page);
        r
    }

    fn json(status: StatusCode, v: serde_json::Value) -> Self {
        let mut r = Self::new(status).header(header::CONTENT_TYPE, "application/json");
        r.body = Bytes::from(v.to_string());
        r
    }

    /// The response head (with `Content-Length`) and body, for Pingora.
    pub(crate) fn into_response(self) -> (ResponseHeader, Bytes) {
        let mut resp = match ResponseHeader::build(self.status, Some(self.headers.len() + 1)) {
            Ok(r) => r,
            // Unreachable (any status builds); fail closed with a bare 500.
            Err(_) => ResponseHeader::build(StatusCode::INTERNAL_SERVER_ERROR, Some(1))
                .expect("static status"),
        };
        for (k, v) in self.headers {
            let _ = resp.append_header(k, v);
        }
        let _ = resp.insert_header(header::CONTENT_LENGTH, self.body.len().to_string());
        (resp, self.body)
    }
}

/// Capitalise the first letter: messages are lower-case for logs and JSON.
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A header of a forward-auth grant: a configured name (its spelling kept, see
/// [`crate::out_header::OutName`]) or a fixed one.
pub(crate) enum Granted<'a> {
    Out(&'a crate::out_header::OutName),
    Fixed(&'static str),
}

/// `{prefix}auth` admitted the request: 200 with every header of the grant, for the front
/// proxy to copy onto the app's request. An empty value is sent too: it overwrites a client's
/// own header of that name instead of letting it through. Never cached.
pub(crate) fn admitted(grant: &[(Granted, HeaderValue)]) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(grant.len() + 1))?;
    for (name, value) in grant {
        match name {
            Granted::Out(n) => n.insert_response(&mut resp, value.clone())?,
            Granted::Fixed(n) => resp.insert_header(*n, value.clone())?,
        }
    }
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    Ok(resp)
}

/// The one function that turns an outcome into status, headers and body, shaped for the
/// client that asked (pages from the current [`pages::Pages`]).
pub(crate) fn respond(outcome: &Outcome, audience: Audience, request_id: &str) -> Reply {
    let pages = pages::current();
    match outcome {
        Outcome::Refused(refusal) => refused(&pages, refusal, audience, request_id),
        Outcome::SignInFailed { failure, prefix } => {
            sign_in_failed(&pages, failure, prefix, audience, request_id)
        }
        Outcome::NotSignedIn => Reply::json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "unauthenticated", "message": "not signed in"}),
        )
        .header(header::WWW_AUTHENTICATE, r#"Bearer realm="authgate""#),
        Outcome::SignIn {
            providers,
            return_to,
        } => {
            let page = pages.render(
                pages::SIGN_IN,
                minijinja::context! { providers => providers, return_to => return_to },
            );
            Reply::html(StatusCode::OK, page, PAGE_CSP)
        }
        Outcome::ConfirmSignOut { action } => {
            let page = pages.render(pages::SIGN_OUT, minijinja::context! { action => action });
            Reply::html(StatusCode::OK, page, PAGE_CSP)
        }
        Outcome::SigningOut {
            endpoint,
            fields,
            script_nonce,
        } => {
            let page = pages.render(
                pages::SIGNING_OUT,
                minijinja::context! {
                    endpoint => endpoint,
                    fields => fields,
                    script_nonce => script_nonce,
                },
            );
            // Allow exactly the auto-submit script of this page.
            let csp = format!("default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{script_nonce}'; form-action *; frame-ancestors 'none'");
            Reply::html(StatusCode::OK, page, &csp)
        }
        Outcome::Identity {
            claims,
            provider,
            expires_at,
        } => identity(claims, provider, *expires_at),
        Outcome::AssertionKeys(jwks) => assertion_keys(jwks),
        Outcome::BackChannel(b) => back_channel(*b),
        Outcome::Redirect(location) => Reply::redirect(location),
    }
}

fn sign_in_failed(
    pages: &pages::Pages,
    failure: &SignInFailure,
    prefix: &str,
    audience: Audience,
    request_id: &str,
) -> Reply {
    let status = failure.status();
    let message = failure.message();
    if !audience.page {
        return Reply::json(
            status,
            serde_json::json!({"error": failure.code(), "message": message, "request_id": request_id}),
        );
    }
    let page = pages.render(
        pages::SIGN_IN_ERROR,
        minijinja::context! {
            status => status.as_u16(),
            title => failure.title(),
            message => message,
            code => failure.code(),
            request_id => request_id,
            sign_in_url => format!("{prefix}login"),
        },
    );
    Reply::html(status, page, PAGE_CSP)
}

/// `{prefix}userinfo`: who the caller is, never a token.
fn identity(c: &crate::identity::Claims, provider: &str, expires_at: u64) -> Reply {
    Reply::json(
        StatusCode::OK,
        serde_json::json!({
            // The provider's sub (with `provider`, the user for good) and the user as
            // headers show it (user_claim).
            "sub": c.known_sub(),
            "user": c.subject(),
            "email": c.email(),
            "email_verified": c.email_verified,
            "name": c.name(),
            "preferred_username": c.preferred_username(),
            "groups": c.groups,
            "provider": provider,
            "expires_at": expires_at,
        }),
    )
}

/// Public keys: cacheable, unlike every other gateway answer.
fn assertion_keys(jwks: &str) -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body: Bytes::copy_from_slice(jwks.as_bytes()),
    }
}

fn back_channel(outcome: BackChannel) -> Reply {
    match outcome {
        BackChannel::LoggedOut => Reply::json(StatusCode::OK, serde_json::json!({})),
        BackChannel::Refused(why) => Reply::json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "invalid_request", "error_description": why }),
        ),
        BackChannel::NotPerformed => Reply::json(
            StatusCode::NOT_IMPLEMENTED,
            serde_json::json!({ "error": "temporarily_unavailable" }),
        ),
    }
}

fn refused(pages: &pages::Pages, refusal: &Refusal, audience: Audience, request_id: &str) -> Reply {
    let status = refusal.status();
    if let Refusal::Unauthenticated { login, redirect } = refusal {
        // `login` is built by us from a canonical path; a header value never fails on it.
        if *redirect {
            return Reply::redirect(login).header(LOGIN_HEADER, login);
        }
    }
    let mut r = Reply::new(status);
    match refusal {
        Refusal::Unauthenticated { login, .. } => {
            r = r
                .header(header::WWW_AUTHENTICATE, r#"Bearer realm="authgate""#)
                .header(LOGIN_HEADER, login);
        }
        Refusal::InvalidToken => {
            r = r.header(
                header::WWW_AUTHENTICATE,
                r#"Bearer realm="authgate", error="invalid_token""#,
            );
        }
        _ => {}
    }
    // A 401 is JSON for everything but a navigation (a route that forces 401 on pages).
    let page = match refusal {
        Refusal::Unauthenticated { .. } => audience.navigation,
        _ => audience.page,
    };
    let body = if page {
        r = r
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(HeaderName::from_static("content-security-policy"), PAGE_CSP);
        pages.render(
            pages::REFUSAL,
            minijinja::context! {
                status => status.as_u16(),
                title => refusal.title(),
                message => format!("{}.", sentence(&refusal.to_string())),
                code => refusal.code(),
                request_id => request_id,
                retry => status == StatusCode::SERVICE_UNAVAILABLE,
            },
        )
    } else {
        r = r.header(header::CONTENT_TYPE, "application/json");
        serde_json::json!({
            "error": refusal.code(),
            "message": refusal.to_string(),
            "request_id": request_id,
        })
        .to_string()
    };
    r = r.header(HeaderName::from_static("x-content-type-options"), "nosniff");
    r.body = Bytes::from(body);
    r
}

/// Status, headers and body for a refusal, shaped for the client that asked.
pub(crate) fn render(
    refusal: &Refusal,
    audience: Audience,
    request_id: &str,
) -> (ResponseHeader, Bytes) {
    respond(&Outcome::Refused(refusal), audience, request_id).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aud(method: &str, headers: &[(&str, &str)]) -> Audience {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        audience(&method.parse().unwrap(), &h)
    }

    const BROWSER: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

    #[test]
    fn navigations_by_fetch_metadata() {
        let nav = |m, h: &[(&str, &str)]| aud(m, h).navigation;
        let fetch_nav = [
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ];
        assert!(nav("GET", &fetch_nav));
        assert!(nav("HEAD", &[("sec-fetch-mode", "navigate")]));
        assert!(nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "iframe")]
        ));
        // Fetch metadata wins over Accept in both directions.
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "cors"), ("accept", BROWSER)]
        ));
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "no-cors"), ("accept", "text/html")]
        ));
        assert!(nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("accept", "*/*")]
        ));
        assert!(!nav(
            "GET",
            &[("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "image")]
        ));
        // A form POST is a page load but never redirected to sign in.
        let post = aud("POST", &fetch_nav);
        assert!(post.page && !post.navigation);
        // Duplicated metadata is not believed: fall back to nothing.
        assert!(!nav(
            "GET",
            &[
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-mode", "navigate")
            ]
        ));
    }

    #[test]
    fn navigations_by_accept() {
        let nav = |m, h: &[(&str, &str)]| aud(m, h).navigation;
        assert!(nav("GET", &[("accept", BROWSER)]));
        assert!(nav("HEAD", &[("accept", "TEXT/HTML")]));
        assert!(nav("GET", &[("accept", "text/*")]));
        assert!(nav(
            "GET",
            &[("accept", "application/json;q=0.5, text/html")]
        ));
        for (m, h) in [
            ("POST", vec![("accept", "text/html")]),
            ("GET", vec![("accept", "application/json")]),
            ("GET", vec![]),
            ("GET", vec![("accept", "*/*")]),
            ("GET", vec![("accept", "application/json, text/html;q=0")]),
            ("GET", vec![("accept", "text/html;q=0.0")]),
            ("GET", vec![("accept", "application/json, text/html")]),
            ("GET", vec![("accept", "text/html;q=0.5, application/*")]),
            ("GET", vec![("accept", "text/html;q=2")]),
            ("GET", vec![("accept", "text/html;q=abc")]),
            (
                "GET",
                vec![
                    ("accept", "text/html"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
            ),
            (
                "GET",
                vec![("accept", "text/html"), ("x-requested-with", "fetch")],
            ),
        ] {
            assert!(!nav(m, &h), "{m} {h:?}");
        }
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.0001"), None);
    }

    #[test]
    fn unauthenticated_redirects_when_decided_and_401s_with_json_otherwise() {
        let login = "/.authgate/login?rd=%2Fx".to_string();
        let r = Refusal::Unauthenticated {
            login: login.clone(),
            redirect: true,
        };
        let (h, _) = render(&r, aud("GET", &[("accept", BROWSER)]), "id");
        assert_eq!(h.status, 302);
        assert_eq!(h.headers["location"], "/.authgate/login?rd=%2Fx");
        let r = Refusal::Unauthenticated {
            login,
            redirect: false,
        };
        // An XHR or form POST that also accepts HTML still gets JSON.
        for a in [
            aud("POST", &[("accept", "text/html")]),
            aud(
                "GET",
                &[
                    ("accept", "text/html"),
                    ("x-requested-with", "XMLHttpRequest"),
                ],
            ),
            aud("GET", &[("accept", "application/json")]),
        ] {
            let (h, body) = render(&r, a, "id");
            assert_eq!(h.status, 401);
            assert_eq!(h.headers["content-type"], "application/json");
            assert!(h.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            assert_eq!(h.headers["x-authgate-login"], "/.authgate/login?rd=%2Fx");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], "unauthenticated");
        }
        // Other refusals: a page for a form POST, JSON for fetch.
        let (h, _) = render(
            &Refusal::CrossSite,
            aud("POST", &[("sec-fetch-mode", "navigate")]),
            "id",
        );
        assert_eq!(
            (h.status.as_u16(), &h.headers["content-type"]),
            (
                403,
                &"text/html; charset=utf-8"
                    .parse::<http::HeaderValue>()
                    .unwrap()
            )
        );
        let (h, _) = render(
            &Refusal::CrossSite,
            aud("POST", &[("sec-fetch-mode", "cors")]),
            "id",
        );
        assert_eq!(h.headers["content-type"], "application/json");
    }

    #[test]
    fn every_503_says_when_to_retry() {
        assert_eq!(
            RETRY_AFTER,
            crate::oidc::provider::RETRY_MAX.as_secs().to_string()
        );
        let unavailable = [
            Refusal::SessionStoreUnavailable,
            Refusal::ProviderUnavailable,
            Refusal::LoginUnavailable,
        ];
        for r in &unavailable {
            for a in [
                aud("GET", &[("accept", BROWSER)]),
                aud("GET", &[("accept", "application/json")]),
            ] {
                let (h, _) = render(r, a, "id");
                assert_eq!(h.status, 503, "{r:?}");
                assert_eq!(h.headers["retry-after"], RETRY_AFTER, "{r:?}");
            }
        }
        for r in [
            Refusal::InvalidToken,
            Refusal::UpstreamUnavailable,
            Refusal::Forbidden,
        ] {
            let (h, _) = render(&r, Audience::default(), "id");
            assert!(!h.headers.contains_key("retry-after"), "{r:?}");
        }
        let mut headers = HeaderMap::new();
        retry_after(StatusCode::OK, &mut headers);
        assert!(headers.is_empty());
        retry_after(StatusCode::SERVICE_UNAVAILABLE, &mut headers);
        assert_eq!(headers["retry-after"], RETRY_AFTER);
    }

    #[test]
    fn accept_is_parsed_case_insensitively_with_q_values_and_wildcards() {
        let page = |accept: &str| aud("GET", &[("accept", accept)]).page;
        for a in [
            "text/html",
            "Text/HTML",
            "TEXT/*",
            "text/html;q=1.0",
            "text/html; Q=0.9, application/json; q=0.8",
            "text/html;level=1;q=0.5, */*;q=0.1",
            " text/html ; charset=utf-8 , application/json;q=0",
            "application/json;q=0.1, text/html;q=0.2",
            "*/*;q=0.1, text/html",
            "image/webp, text/html;q=0.9, */*;q=0.8",
        ] {
            assert!(page(a), "{a}");
        }
        for a in [
            "",
            "*/*",
            "*/*;q=1, application/json;q=0.5",
            "application/json",
            "Application/JSON, text/html;q=0.5",
            "application/*, text/html",
            "text/html;q=0",
            "text/html;q=0.000",
            "text/html;q=1.5",
            "text/html;q=",
            "text/html;q=-1",
            "text/plain",
            "texthtml",
            "text/html;q=0.5, application/json;q=0.5",
        ] {
            assert!(!page(a), "{a}");
        }
        // Two Accept lines are read as one list.
        assert!(
            aud(
                "GET",
                &[
                    ("accept", "application/json;q=0.1"),
                    ("accept", "text/html")
                ]
            )
            .page
        );
    }

    #[test]
    fn refusal_pages_are_templated_and_escaped() {
        let a = aud("GET", &[("accept", BROWSER)]);
        let (h, body) = render(&Refusal::Forbidden, a, "<id>");
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(h.status, 403);
        assert!(html.contains("<h1>Access denied</h1>"), "{html}");
        assert!(html.contains("&lt;id&gt;"), "{html}");
        assert!(h.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert_eq!(h.headers["content-length"], html.len().to_string().as_str());
        // The two kinds of token failure, by the one mapping.
        use crate::jwt::JwtError;
        assert_eq!(Refusal::from(&JwtError::Expired), Refusal::InvalidToken);
        assert_eq!(
            Refusal::from(&JwtError::JwksUnavailable("x".into())),
            Refusal::ProviderUnavailable
        );
        assert_eq!(
            Refusal::from(&JwtError::IntrospectionUnavailable("x".into())),
            Refusal::ProviderUnavailable
        );
        use crate::session::StoreError;
        assert_eq!(
            Refusal::from(&StoreError::Unavailable("x".into())),
            Refusal::SessionStoreUnavailable
        );
        // userinfo without a session: JSON even for a page load.
        let r = respond(&Outcome::NotSignedIn, a, "id");
        assert_eq!(r.status, 401);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "unauthenticated");
        let bug = Refusal::from(&StoreError::Corrupt("x".into()));
        assert_eq!(bug.status(), 500);
        let (h, _) = render(&bug, Audience::default(), "id");
        assert!(!h.headers.contains_key("retry-after"));
    }

    #[test]
    fn sign_in_pages() {
        let a = aud("GET", &[("accept", BROWSER)]);
        let f = SignInFailure::Callback(CallbackFailure::UnknownState);
        let r = respond(
            &Outcome::SignInFailed {
                failure: &f,
                prefix: "/.authgate/",
            },
            a,
            "id",
        );
        let html = String::from_utf8(r.body.to_vec()).unwrap();
        assert_eq!(r.status, 400);
        assert!(html.contains("<h1>Sign-in failed</h1>") && html.contains("Sign in again"));
        let r = respond(
            &Outcome::SignInFailed {
                failure: &f,
                prefix: "/.authgate/",
            },
            Audience::default(),
            "id",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "unknown_state");
        let providers = [
            Choice {
                id: "a b",
                name: "A <corp>",
                ready: true,
            },
            Choice {
                id: "b",
                name: "b",
                ready: false,
            },
        ];
        let r = respond(
            &Outcome::SignIn {
                providers: &providers,
                return_to: "/x?y=1&z",
            },
            a,
            "id",
        );
        let html = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(
            html.contains("login?provider=a%20b&amp;rd=/x%3Fy%3D1%26z"),
            "{html}"
        );
        assert!(html.contains("Sign in with A &lt;corp&gt;"), "{html}");
        assert!(html.contains("b cannot be reached right now"), "{html}");
        assert!(!html.contains("login?provider=b"), "{html}");
        let fields = [Field {
            name: "id_token_hint",
            value: "\"><script>",
        }];
        let r = respond(
            &Outcome::SigningOut {
                endpoint: "https://idp/logout",
                fields: &fields,
                script_nonce: "n1",
            },
            a,
            "id",
        );
        let html = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(html.contains("<script nonce=\"n1\">"), "{html}");
        assert!(
            html.contains("value=\"&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
        let csp = r
            .headers
            .iter()
            .find(|(k, _)| k == "content-security-policy")
            .unwrap();
        assert!(csp.1.to_str().unwrap().contains("'nonce-n1'"));
    }

    #[test]
    fn identity_keys_and_back_channel_answers() {
        let claims = crate::identity::Claims {
            text: crate::identity::UserText::new("u-1", "alice"),
            groups: ["g"].into_iter().collect(),
            ..Default::default()
        };
        let a = aud("GET", &[("accept", BROWSER)]);
        let who = Outcome::Identity {
            claims: &claims,
            provider: "corp",
            expires_at: 42,
        };
        let r = respond(&who, a, "id");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (&v["sub"], &v["user"], &v["provider"], &v["expires_at"]),
            (&"u-1".into(), &"alice".into(), &"corp".into(), &42.into())
        );
        assert!(v.get("access_token").is_none() && v.get("id_token").is_none());
        // Records written before `sub` was kept show the user as sub.
        let old = crate::identity::Claims {
            text: crate::identity::UserText::new("", "alice"),
            ..claims.clone()
        };
        let who = Outcome::Identity {
            claims: &old,
            provider: "corp",
            expires_at: 42,
        };
        let v: serde_json::Value = serde_json::from_slice(&respond(&who, a, "id").body).unwrap();
        assert_eq!(v["sub"], "alice");

        let r = respond(&Outcome::AssertionKeys(r#"{"keys":[]}"#), a, "");
        let header = |r: &Reply, n: &str| {
            let v = r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v);
            v.map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(header(&r, "cache-control").unwrap(), "public, max-age=300");
        assert_eq!(
            header(&r, "content-type").unwrap(),
            "application/jwk-set+json"
        );
        assert_eq!(&r.body[..], br#"{"keys":[]}"#);

        let bc = |b| respond(&Outcome::BackChannel(b), Audience::default(), "");
        let r = bc(BackChannel::LoggedOut);
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"{}"[..]));
        let r = bc(BackChannel::Refused("unknown issuer"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "unknown issuer");
        let r = bc(BackChannel::NotPerformed);
        assert_eq!(r.status, 501);
        assert_eq!(header(&r, "cache-control").unwrap(), "no-store");
    }
}
