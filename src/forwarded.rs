//! Forwarding headers and the request ID.
//!
//! A client can claim any `X-Forwarded-For`, `Forwarded` or `X-Original-URL`; only a peer in the
//! configured trusted-proxy list (empty by default) may (product decision 6). From anyone else
//! those headers are removed before routing, and the gateway writes its own `X-Forwarded-For`,
//! `-Proto` and `-Host` on the upstream request.

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use pingora::http::RequestHeader;

/// Headers that describe the original request. Kept only from trusted proxies: upstream
/// frameworks use them for client IPs, absolute URLs and even routing (`X-Original-URL`).
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-original-host",
    "x-rewrite-url",
];

/// Longest request ID accepted from a trusted proxy.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Trusted proxies and the request-ID header name, from config.
#[derive(Debug, Clone)]
pub struct Forwarding {
    trusted: Vec<IpNet>,
    request_id_header: HeaderName,
    forwarding_headers: Vec<HeaderName>,
}

/// What the gateway learned about the original request, once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The peer is a trusted proxy: its forwarding headers are believed.
    pub trusted: bool,
    /// `https` when the client's request came over TLS (ours, or a trusted proxy's).
    pub https: bool,
}

impl Forwarding {
    pub fn new(trusted: Vec<IpNet>, request_id_header: HeaderName) -> Self {
        Self {
            trusted,
            request_id_header,
            forwarding_headers: FORWARDING_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
        }
    }

    pub fn request_id_header(&self) -> &HeaderName {
        &self.request_id_header
    }

    pub fn is_trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            self.trusted.iter().any(|net| net.contains(&ip))
        })
    }

    /// Decide trust, drop forwarding headers from untrusted peers, and work out the scheme.
    /// Runs on the downstream request before routing.
    pub fn inspect(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        tls_listener: bool,
    ) -> Origin {
        let trusted = self.is_trusted(peer);
        if !trusted {
            for h in &self.forwarding_headers {
                req.remove_header(h);
            }
            req.remove_header(&self.request_id_header);
        }
        let https = if trusted {
            match req.headers.get("x-forwarded-proto") {
                Some(v) => v.as_bytes().eq_ignore_ascii_case(b"https"),
                None => tls_listener,
            }
        } else {
            tls_listener
        };
        Origin { trusted, https }
    }

    /// The request ID: a trusted proxy's if it sent a sane one, else a fresh random one.
    pub fn request_id(&self, req: &RequestHeader, origin: &Origin) -> String {
        if origin.trusted {
            if let Some(v) = req.headers.get(&self.request_id_header) {
                let b = v.as_bytes();
                if !b.is_empty()
                    && b.len() <= MAX_REQUEST_ID_LEN
                    && b.iter().all(|c| c.is_ascii_graphic())
                {
                    // Checked ASCII above.
                    return String::from_utf8_lossy(b).into_owned();
                }
            }
        }
        format!("{:032x}", rand::random::<u128>())
    }

    /// Write the forwarding headers on the upstream request.
    pub fn apply(
        &self,
        upstream: &mut RequestHeader,
        peer: Option<IpAddr>,
        origin: &Origin,
        host: &str,
        request_id: &str,
    ) -> pingora::Result<()> {
        let peer_s = peer.map(|p| p.to_string()).unwrap_or_default();
        let xff = match upstream.headers.get("x-forwarded-for") {
            Some(prev) if origin.trusted && !peer_s.is_empty() => {
                let mut v = prev.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(peer_s.as_bytes());
                v
            }
            _ => peer_s.into_bytes(),
        };
        if !xff.is_empty() {
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        if !(origin.trusted && upstream.headers.contains_key("x-forwarded-proto")) {
            upstream.insert_header(
                "x-forwarded-proto",
                if origin.https { "https" } else { "http" },
            )?;
        }
        let keep_host = origin.trusted && upstream.headers.contains_key("x-forwarded-host");
        if !keep_host && !host.is_empty() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        upstream.insert_header(self.request_id_header.clone(), request_id)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(trusted: &[&str]) -> Forwarding {
        Forwarding::new(
            trusted.iter().map(|s| s.parse().unwrap()).collect(),
            HeaderName::from_static("x-request-id"),
        )
    }

    fn req_with(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn untrusted_peer_loses_forwarding_headers() {
        let f = fwd(&[]);
        let mut r = req_with(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X-Request-Id", "abc"),
        ]);
        let peer = Some("127.0.0.1".parse().unwrap());
        let o = f.inspect(&mut r, peer, false);
        assert!(!o.trusted && !o.https);
        assert!(r.headers.is_empty());
        let id = f.request_id(&r, &o);
        assert_eq!(id.len(), 32);
        f.apply(&mut r, peer, &o, "h.example", &id).unwrap();
        assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "h.example");
    }

    #[test]
    fn trusted_peer_is_appended_to() {
        let f = fwd(&["10.0.0.0/8", "::1/128"]);
        let mut r = req_with(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "req-42"),
        ]);
        let peer = Some("10.1.2.3".parse().unwrap());
        let o = f.inspect(&mut r, peer, false);
        assert!(o.trusted && o.https);
        assert_eq!(f.request_id(&r, &o), "req-42");
        f.apply(&mut r, peer, &o, "h", "req-42").unwrap();
        assert_eq!(r.headers["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert!(f.is_trusted(Some("::ffff:10.0.0.1".parse().unwrap())));
        assert!(f.is_trusted(Some("::1".parse().unwrap())));
        assert!(!f.is_trusted(Some("11.0.0.1".parse().unwrap())));
        assert!(!f.is_trusted(None));
    }

    #[test]
    fn bad_request_id_from_trusted_peer_is_replaced() {
        let f = fwd(&["127.0.0.0/8"]);
        let r = req_with(&[("X-Request-Id", "has space")]);
        let o = Origin {
            trusted: true,
            https: false,
        };
        assert_ne!(f.request_id(&r, &o), "has space");
    }
}
