//! Forwarding headers and the request ID.
//!
//! A client can claim any `X-Forwarded-For`, `Forwarded` or `X-Original-URL`; only a peer in the
//! configured trusted-proxy list (empty by default) may (product decision 6). From anyone else
//! those headers are removed before routing, and the gateway writes its own `X-Forwarded-For`,
//! `-Proto` and `-Host` on the upstream request.

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr};

use crate::out_header::OutName;

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

// Built on first use: a `HeaderName` cannot be built in a `static`.
static X_FORWARDED_FOR: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-for"));
static X_FORWARDED_PROTO: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-proto"));
static X_FORWARDED_HOST: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-host"));

/// Whether `name` (lower case, as `HeaderName` holds it) is one of [`FORWARDING_HEADERS`].
fn is_forwarding_header(name: &str) -> bool {
    FORWARDING_HEADERS.contains(&name)
}

/// Trusted proxies and the request-ID header name, from config.
#[derive(Debug, Clone)]
pub struct Forwarding {
    trusted: Vec<IpNet>,
    request_id_header: OutName,
}

/// What the gateway learned about the original request, once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The peer is a trusted proxy: its forwarding headers are believed.
    pub trusted: bool,
    /// `https` when the client's request came over TLS (ours, or a trusted proxy's).
    pub https: bool,
}

/// A request ID: visible ASCII only, held as the header value it is written as (on the
/// upstream request and on the response), so writing it twice copies nothing.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh random ID: 128 bits as 32 lower-case hex digits.
    pub fn random() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n: u128 = rand::random();
        let mut buf = [0u8; 32];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are always a valid header value.
        Self(HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-")))
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets in (checked when built), so this cannot fail.
        self.0.to_str().unwrap_or("-")
    }

    pub fn value(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self(HeaderValue::from_static(""))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `X-Forwarded-For` entry for `ip`. IPv4 is written by hand: it runs on every request
/// and `Display` goes through the formatting machinery.
fn ip_value(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = Vec::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
            out
        }
        IpAddr::V6(_) => ip.to_string().into_bytes(),
    }
}

impl Forwarding {
    pub fn new(trusted: Vec<IpNet>, request_id_header: HeaderName) -> Self {
        Self {
            trusted,
            request_id_header: OutName::new(request_id_header),
        }
    }

    pub fn request_id_header(&self) -> &OutName {
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
            // One pass over what the client sent (usually a handful of names) rather than a
            // removal per forwarding header: nothing is allocated unless one is found.
            let doomed: Vec<HeaderName> = req
                .headers
                .keys()
                .filter(|n| is_forwarding_header(n.as_str()) || *n == self.request_id_header.name())
                .cloned()
                .collect();
            for name in &doomed {
                req.remove_header(name);
            }
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
    pub fn request_id(&self, req: &RequestHeader, origin: &Origin) -> RequestId {
        if origin.trusted {
            if let Some(v) = req.headers.get(self.request_id_header.name()) {
                let b = v.as_bytes();
                if !b.is_empty()
                    && b.len() <= MAX_REQUEST_ID_LEN
                    && b.iter().all(|c| c.is_ascii_graphic())
                {
                    return RequestId(v.clone());
                }
            }
        }
        RequestId::random()
    }

    /// Write the forwarding headers on the upstream request. `host` is the client's Host (or
    /// `:authority`) as sent.
    pub fn apply(
        &self,
        upstream: &mut RequestHeader,
        peer: Option<IpAddr>,
        origin: &Origin,
        host: &HeaderValue,
        request_id: &RequestId,
    ) -> pingora::Result<()> {
        let xff = match (peer, upstream.headers.get("x-forwarded-for")) {
            (Some(ip), Some(prev)) if origin.trusted => {
                let mut v = prev.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(&ip_value(ip));
                Some(v)
            }
            (Some(ip), _) => Some(ip_value(ip)),
            (None, _) => None,
        };
        if let Some(v) = xff {
            // Digits, dots, colons and a trusted proxy's (already valid) value.
            let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
                .or_err(ErrorType::InternalError, "X-Forwarded-For value")?;
            X_FORWARDED_FOR.insert(upstream, v)?;
        }
        if !(origin.trusted && upstream.headers.contains_key("x-forwarded-proto")) {
            let proto = if origin.https { "https" } else { "http" };
            X_FORWARDED_PROTO.insert(upstream, HeaderValue::from_static(proto))?;
        }
        let keep_host = origin.trusted && upstream.headers.contains_key("x-forwarded-host");
        if !keep_host && !host.is_empty() {
            X_FORWARDED_HOST.insert(upstream, host.clone())?;
        }
        self.request_id_header
            .insert(upstream, request_id.value().clone())?;
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
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        f.apply(
            &mut r,
            peer,
            &o,
            &HeaderValue::from_static("h.example"),
            &id,
        )
        .unwrap();
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
        let id = f.request_id(&r, &o);
        assert_eq!(id.as_str(), "req-42");
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        assert_eq!(r.headers["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert!(f.is_trusted(Some("::ffff:10.0.0.1".parse().unwrap())));
        assert!(f.is_trusted(Some("::1".parse().unwrap())));
        assert!(!f.is_trusted(Some("11.0.0.1".parse().unwrap())));
        assert!(!f.is_trusted(None));
    }

    #[test]
    fn forwarded_for_spelling() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().into_bytes());
        }
    }

    #[test]
    fn random_request_ids_differ() {
        let (a, b) = (RequestId::random(), RequestId::random());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.to_string(), a.as_str());
    }

    #[test]
    fn request_id_header_from_untrusted_peer_is_dropped_in_any_case() {
        let f = fwd(&[]);
        let mut r = req_with(&[("x-REQUEST-id", "forged"), ("Accept", "*/*")]);
        f.inspect(&mut r, Some("127.0.0.1".parse().unwrap()), false);
        assert!(r.headers.get("x-request-id").is_none());
        assert_eq!(r.headers.len(), 1);
    }

    #[test]
    fn bad_request_id_from_trusted_peer_is_replaced() {
        let f = fwd(&["127.0.0.0/8"]);
        let r = req_with(&[("X-Request-Id", "has space")]);
        let o = Origin {
            trusted: true,
            https: false,
        };
        assert_ne!(f.request_id(&r, &o).as_str(), "has space");
    }
}
