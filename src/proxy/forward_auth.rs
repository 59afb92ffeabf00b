//! Forward-auth mode: `{prefix}auth` answers "may this request pass?" for a proxy in front
//! (nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz` over HTTP).
//!
//! The original request is described by headers the proxy sets (`X-Original-URI` /
//! `X-Forwarded-Uri` / `X-Original-URL`, `X-Forwarded-Host`, `X-Forwarded-Method`), which are
//! believed only from a trusted proxy: from anyone else the endpoint refuses (403), or any
//! client could ask about a path of its choosing. The decision is the gateway's own: the same
//! canonical path, the same route table, the same authentication and policy. Answers: 200
//! with the identity headers (for `auth_request_set`), 401 with `X-Authgate-Login` (or a 302
//! to it for `?redirect=1` navigations, as Traefik passes answers through), 403, 503.

use http::{header, HeaderName, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{login_url, Caller, Gateway, RequestCtx, Runtime};
use crate::error::Refusal;
use crate::out_header::OutName;
use crate::path;
use crate::routing::canonical_host;

const LOGIN_HEADER: HeaderName = HeaderName::from_static("x-authgate-login");

/// The original request as the proxy in front describes it.
struct Original {
    host: String,
    path_and_query: String,
    method: http::Method,
}

fn header_str<'a>(req: &'a pingora::http::RequestHeader, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| req.headers.get(*n).and_then(|v| v.to_str().ok()))
        .filter(|v| !v.is_empty())
}

fn original(req: &pingora::http::RequestHeader) -> Option<Original> {
    let uri = header_str(
        req,
        &["x-original-uri", "x-forwarded-uri", "x-original-url"],
    )?;
    // X-Original-URL may be absolute; keep its path and query.
    let path_and_query = match uri.find("://") {
        Some(i) => uri[i + 3..]
            .find('/')
            .map_or("/", |p| &uri[i + 3 + p..])
            .to_string(),
        None => uri.to_string(),
    };
    let host = header_str(req, &["x-forwarded-host"])
        .or_else(|| header_str(req, &["host"]))?
        .to_string();
    let method = header_str(req, &["x-forwarded-method", "x-original-method"])
        .and_then(|m| m.parse().ok())
        .unwrap_or(http::Method::GET);
    Some(Original {
        host,
        path_and_query,
        method,
    })
}

impl Gateway {
    pub(super) async fn forward_auth(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        if !ctx.origin.trusted {
            tracing::warn!(request_id = %ctx.request_id, peer = ?ctx.peer_ip, "forward-auth request from an untrusted peer");
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        }
        let req = session.req_header();
        let Some(orig) = original(req) else {
            return self.refuse(session, ctx, Refusal::BadRequest).await;
        };
        let redirect = req
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "redirect=1"));
        let (raw_path, query) = match orig.path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (orig.path_and_query.clone(), None),
        };
        let raw_path = raw_path.split('#').next().unwrap_or("/").to_string();
        let canonical = match path::normalize(&raw_path, rt.paths) {
            Ok(p) => p,
            Err(e) => return self.refuse(session, ctx, Refusal::BadPath(e)).await,
        };
        let host = canonical_host(&orig.host);
        // Default deny; 403 rather than 404 because auth_request only understands 2xx/401/403.
        let Some(route) = rt.routes.lookup(&host, canonical.as_str()).cloned() else {
            return self.refuse(session, ctx, Refusal::Forbidden).await;
        };
        ctx.route = Some(route.clone());
        if route.public {
            return self
                .answer(
                    session,
                    ResponseHeader::build(StatusCode::OK, Some(1))?,
                    bytes::Bytes::new(),
                )
                .await;
        }
        let caller = match self.authenticate(session, ctx, &route).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let login = login_url(rt, &route, canonical.as_str(), query.as_deref());
                let navigation = crate::error::is_navigation(session.req_header());
                let mut resp = if redirect && navigation {
                    let mut r = ResponseHeader::build(StatusCode::FOUND, Some(3))?;
                    r.insert_header(header::LOCATION, login.as_str())?;
                    r
                } else {
                    let mut r = ResponseHeader::build(StatusCode::UNAUTHORIZED, Some(3))?;
                    r.insert_header(header::WWW_AUTHENTICATE, r#"Bearer realm="authgate""#)?;
                    r
                };
                resp.insert_header(LOGIN_HEADER, login.as_str())?;
                resp.insert_header(header::CACHE_CONTROL, "no-store")?;
                ctx.refusal = Some("unauthenticated");
                return self.answer(session, resp, bytes::Bytes::new()).await;
            }
            Err(refusal) => return self.refuse(session, ctx, refusal).await,
        };
        if let Some(policy) = &route.policy {
            if let Err(denial) = policy.evaluate(caller.claims(), &orig.method) {
                tracing::info!(request_id = %ctx.request_id, route = %route.id, subject = %caller.claims().subject, reason = denial.as_str(), "forward-auth denied by policy");
                return self.refuse(session, ctx, Refusal::Forbidden).await;
            }
        }
        let headers: &[(OutName, HeaderValue)] = match &caller {
            Caller::Session(s) => &s.headers,
            Caller::Bearer(b) => &b.headers,
        };
        let mut resp = ResponseHeader::build(StatusCode::OK, Some(headers.len() + 1))?;
        for (k, v) in headers {
            k.insert_response(&mut resp, v.clone())?;
        }
        resp.insert_header(header::CACHE_CONTROL, "no-store")?;
        self.answer(session, resp, bytes::Bytes::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build("GET", b"/.authgate/auth", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn original_request_from_headers() {
        let o = original(&req(&[
            ("x-original-uri", "/a/b?c=1"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-method", "DELETE"),
        ]))
        .unwrap();
        assert_eq!(
            (o.host.as_str(), o.path_and_query.as_str(), o.method),
            ("app.example", "/a/b?c=1", http::Method::DELETE)
        );
        let o = original(&req(&[
            ("x-original-url", "https://app.example/x/y?z"),
            ("host", "gw"),
        ]))
        .unwrap();
        assert_eq!(
            (o.host.as_str(), o.path_and_query.as_str()),
            ("gw", "/x/y?z")
        );
        assert!(original(&req(&[("host", "gw")])).is_none());
    }
}
