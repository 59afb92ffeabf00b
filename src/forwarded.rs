//! Forwarding headers and the request ID.
//!
//! A client can claim any `X-Forwarded-For`, `Forwarded` or `X-Original-URL`; only a peer in the
//! configured trusted-proxy list (empty by default) may (design decision 6). From anyone else
//! those headers are removed before routing, and the gateway writes its own `X-Forwarded-For`,
//! `-Proto` and `-Host` on the upstream request.
//!
//! Names are compared in the canonical spelling of [`crate::identity`] (ASCII lower case, every
//! non-alphanumeric byte as `-`): CGI/WSGI servers and some Node stacks fold `X_Forwarded_For`
//! and `X.Forwarded.For` into the same variable as `X-Forwarded-For`, so every spelling is
//! removed from an untrusted peer. A trusted proxy writes the dashed form; a variant spelling
//! arriving through it can only be a client's header passed along, so variants are removed
//! from trusted peers too and only the exact (dashed, lower-case) names are kept.

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
    "x-forwarded-path",
    "x-forwarded-protocol",
    "x-url-scheme",
    "front-end-https",
    "x-host",
    "x-http-host",
    "x-proxyuser-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-envoy-external-address",
    "x-envoy-original-path",
    "x-envoy-original-host",
];

/// The forwarding headers a trusted proxy's value goes upstream in, because the gateway reads
/// and checks them: see [`Forwarding::keep_only_what_agrees`].
const CHECKED_FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
];

/// Forwarding headers that carry one client address: kept from a trusted proxy when it is the
/// gateway's own reading of the client.
const CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-proxyuser-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-envoy-external-address",
];

/// The one address a header holds: exactly one line that is a plain IP address (surrounding
/// whitespace aside), IPv4-mapped IPv6 as IPv4.
fn single_address(headers: &http::HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .map(unmap),
        _ => None,
    }
}

/// A path prefix a trusted proxy may hand on (`X-Forwarded-Prefix`): a canonical path of its
/// own, not `//host`.
pub(crate) fn is_canonical_prefix(p: &str) -> bool {
    !p.starts_with("//")
        && crate::path::normalize(p, crate::path::PathOptions::default())
            .is_ok_and(|c| c.as_str() == p)
}

/// Longest name in [`FORWARDING_HEADERS`]: anything longer is not one, whatever its spelling.
const MAX_FORWARDING_NAME_LEN: usize = 32;

/// Longest request ID accepted from a trusted proxy.
const MAX_REQUEST_ID_LEN: usize = 128;

// Built on first use: a `HeaderName` cannot be built in a `static`.
static X_FORWARDED_FOR: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-for"));
static X_FORWARDED_PROTO: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-proto"));
static X_FORWARDED_HOST: LazyLock<OutName> =
    LazyLock::new(|| OutName::from_static("x-forwarded-host"));

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, a dual-stack listener's IPv4 peer) as the
/// IPv4 address it is, so one rule covers both spellings.
#[inline]
pub(crate) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) as its IPv4 block (`10.0.0.0/8`), as
/// [`unmap`] does to addresses. Other blocks stay as they are.
pub(crate) fn unmap_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// The client's address as the request decision sees it (`source_ips`), worked out on first
/// use only, so routes that never ask pay nothing.
///
/// The address is the last hop not in `server.trusted_proxies`, walking from the gateway's
/// peer back through `X-Forwarded-For` (every line, in order), the way nginx's `realip` with
/// `real_ip_recursive` does: a client may write anything at the left of that header, but
/// only a trusted proxy appends to it. When every hop is trusted, the leftmost is the client.
/// Fail closed: an entry that is not a plain IP address on the way is an unknown client, not
/// a skipped one. In proxy mode the chain ends with the peer (a header from an untrusted
/// peer is never read); in forward-auth mode the peer is the front proxy asking, not a hop
/// of the original request, so the chain is its `X-Forwarded-For` only, and a front proxy
/// that sends none leaves the client unknown.
pub(crate) struct ClientAddr<'a> {
    /// Where the chain is read when the last hop is trusted.
    chain: Option<(&'a Forwarding, &'a http::HeaderMap)>,
    last_hop: Option<IpAddr>,
    resolved: std::sync::OnceLock<Option<IpAddr>>,
}

impl<'a> ClientAddr<'a> {
    /// Proxy mode: the peer, or (peer trusted) the chain through `X-Forwarded-For`.
    pub(crate) fn proxied(
        forwarding: &'a Forwarding,
        trusted: bool,
        headers: &'a http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Self {
        Self {
            chain: trusted.then_some((forwarding, headers)),
            last_hop: peer,
            resolved: std::sync::OnceLock::new(),
        }
    }

    /// Forward-auth: the front proxy's `X-Forwarded-For` only.
    pub(crate) fn forward_auth(forwarding: &'a Forwarding, headers: &'a http::HeaderMap) -> Self {
        Self {
            chain: Some((forwarding, headers)),
            last_hop: None,
            resolved: std::sync::OnceLock::new(),
        }
    }

    /// A known address (or none), for tests.
    #[cfg(test)]
    pub(crate) fn known(ip: Option<IpAddr>) -> Self {
        Self {
            chain: None,
            last_hop: ip,
            resolved: std::sync::OnceLock::new(),
        }
    }

    /// The client's address, IPv4-mapped IPv6 as IPv4; `None` when unknown.
    pub(crate) fn get(&self) -> Option<IpAddr> {
        match self.chain {
            None => self.last_hop.map(unmap),
            Some((f, headers)) => *self
                .resolved
                .get_or_init(|| f.client_addr(headers, self.last_hop)),
        }
    }
}

/// One byte of the canonical spelling: ASCII lower case, anything but `[a-z0-9]` as `-` (the
/// byte-wise form of [`crate::identity::canonical_name`]).
#[inline]
pub(crate) const fn canonical_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Whether `name` in canonical spelling equals `canon` (itself canonical). Byte by byte, no
/// allocation, any length.
#[inline]
pub(crate) fn canonical_eq(name: &str, canon: &str) -> bool {
    name.len() == canon.len()
        && name
            .bytes()
            .zip(canon.bytes())
            .all(|(a, c)| canonical_byte(a) == c)
}

/// Whether `name` is already in canonical spelling. A `HeaderName` is lower case, so this is
/// "contains no `_`, `.` or other punctuation but `-`".
#[inline]
fn is_canonical(name: &str) -> bool {
    name.bytes().all(|b| canonical_byte(b) == b)
}

/// For each canonical first byte, the lengths (bit `len`) of the [`FORWARDING_HEADERS`] that
/// start with it. Built at compile time from the list, so it cannot drift from it.
static FORWARDING_SHAPES: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < FORWARDING_HEADERS.len() {
        let name = FORWARDING_HEADERS[i].as_bytes();
        assert!(!name.is_empty() && name.len() <= MAX_FORWARDING_NAME_LEN);
        table[canonical_byte(name[0]) as usize] |= 1 << name.len();
        i += 1;
    }
    table
};

/// Whether `name` could be a spelling of a forwarding header: some entry has its length and
/// (canonical) first byte. Never false for one that is; true for few others (`cookie`,
/// `accept`, `sec-fetch-*` and the other headers every browser sends are not).
#[inline]
fn may_be_forwarding_header(name: &str) -> bool {
    match name.as_bytes().first() {
        Some(&b) if name.len() <= MAX_FORWARDING_NAME_LEN => {
            FORWARDING_SHAPES[usize::from(canonical_byte(b))] & (1 << name.len()) != 0
        }
        _ => false,
    }
}

/// Whether `name` in any spelling is one of [`FORWARDING_HEADERS`]. Runs for every header of
/// every request: most are ruled out by their length and first byte; the rest are
/// canonicalised into a stack buffer and compared with the list.
fn is_forwarding_header(name: &str) -> bool {
    if !may_be_forwarding_header(name) {
        return false;
    }
    let mut buf = [0u8; MAX_FORWARDING_NAME_LEN];
    for (dst, b) in buf.iter_mut().zip(name.bytes()) {
        *dst = canonical_byte(b);
    }
    // Only ASCII bytes were written.
    let canon = std::str::from_utf8(&buf[..name.len()]).unwrap_or("");
    FORWARDING_HEADERS.contains(&canon)
}

/// Trusted proxies and the request-ID header name, from config.
#[derive(Debug, Clone)]
pub struct Forwarding {
    trusted: Vec<IpNet>,
    request_id_header: OutName,
    /// `request_id_header` in canonical spelling, to catch its variants.
    request_id_canon: Box<str>,
}

/// What the gateway learned about the original request, once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The peer is a trusted proxy: its forwarding headers are believed.
    pub(crate) trusted: bool,
    /// `https` when the client's request came over TLS (ours, or a trusted proxy's).
    pub(crate) https: bool,
    /// A trusted proxy passed on a forwarding header in a variant spelling (`X_Forwarded_Uri`):
    /// a client's own, which was removed. Forward-auth refuses such a check (400): the
    /// proxy's account of the request came with a second one.
    pub(crate) variant_from_trusted: bool,
}

/// A request ID: visible ASCII only, held as the header value it is written as (on the
/// upstream request and on the response), so writing it twice copies nothing.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh random ID: 128 bits as 32 lower-case hex digits.
    pub(crate) fn random() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n: u128 = rand::random();
        let mut buf = [0u8; 32];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are always a valid header value.
        Self(HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-")))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only visible ASCII gets in (checked when built), so this cannot fail.
        self.0.to_str().unwrap_or("-")
    }

    pub(crate) fn value(&self) -> &HeaderValue {
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

/// What a trusted proxy's `X-Forwarded-Proto` says: `None` without one, `Some(true)` only if
/// every comma-separated value of every line is `https` (ASCII case-insensitively).
fn proto_is_https(req: &RequestHeader) -> Option<bool> {
    let mut values = req.headers.get_all("x-forwarded-proto").iter().peekable();
    values.peek()?;
    Some(values.all(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .all(|item| item.trim_ascii().eq_ignore_ascii_case(b"https"))
    }))
}

/// Whether the request carries exactly one `X-Forwarded-Proto` line with a single value: the
/// only form passed on as sent from a trusted proxy (anything else is rewritten to the
/// gateway's own fail-closed reading, so the upstream agrees with it).
fn single_proto(req: &RequestHeader) -> bool {
    let mut values = req.headers.get_all("x-forwarded-proto").iter();
    matches!((values.next(), values.next()), (Some(v), None) if !v.as_bytes().contains(&b','))
}

/// The `X-Forwarded-For` entry for `ip`. IPv4 is written by hand: it runs on every request
/// and `Display` goes through the formatting machinery.
fn ip_value(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => {
            // Exactly sized: a `Bytes` made from a full vector takes it as is (one allocation
            // for the header value, not two).
            let digits = |o: u8| 1 + usize::from(o >= 10) + usize::from(o >= 100);
            let mut out =
                Vec::with_capacity(3 + v4.octets().into_iter().map(digits).sum::<usize>());
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
            request_id_canon: crate::identity::canonical_name(request_id_header.as_str()).into(),
            request_id_header: OutName::new(request_id_header),
        }
    }

    /// Whether a header named `name` is dropped from a peer (`trusted` or not): from an
    /// untrusted peer every spelling of a forwarding header or of the request-ID header; from
    /// a trusted one only the variant spellings (the exact names are its own).
    fn drops(&self, name: &HeaderName, trusted: bool) -> bool {
        let n = name.as_str();
        if canonical_eq(n, &self.request_id_canon) {
            // Exact means as configured, even if that is not the canonical spelling.
            return !trusted || name != self.request_id_header.name();
        }
        is_forwarding_header(n) && (!trusted || !is_canonical(n))
    }

    pub(crate) fn request_id_header(&self) -> &OutName {
        &self.request_id_header
    }

    pub(crate) fn is_trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            let ip = unmap(ip);
            self.trusted.iter().any(|net| net.contains(&ip))
        })
    }

    /// See [`ClientAddr`]: the last untrusted hop of `X-Forwarded-For` + `last_hop`.
    fn client_addr(&self, headers: &http::HeaderMap, last_hop: Option<IpAddr>) -> Option<IpAddr> {
        let mut leftmost = None;
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|line| {
                // A line that is not text holds no address: one unknown hop.
                let line = line.to_str().unwrap_or("?");
                line.rsplit(',').map(|e| e.trim().parse::<IpAddr>().ok())
            });
        for hop in last_hop.map(Some).into_iter().chain(forwarded) {
            let ip = unmap(hop?);
            if !self.trusted.iter().any(|net| net.contains(&ip)) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }

    /// Decide trust, drop forwarding headers (every spelling from untrusted peers, variant
    /// spellings from trusted ones), and work out the scheme. Runs on the downstream request
    /// before routing.
    ///
    /// From a trusted peer, `X-Forwarded-Proto` decides the scheme, failing closed: `https`
    /// only if every value of every `X-Forwarded-Proto` line says `https` (`https, http` or a
    /// second line saying `http` mean plain HTTP somewhere on the way, so no Secure-only
    /// decision is taken on it). Without the header, the listener decides.
    pub fn inspect(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        tls_listener: bool,
    ) -> Origin {
        let trusted = self.is_trusted(peer);
        // One pass over what the client sent (usually a handful of names) rather than a
        // removal per forwarding header: nothing is allocated unless one is found.
        let doomed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| self.drops(n, trusted))
            .cloned()
            .collect();
        for name in &doomed {
            req.remove_header(name);
        }
        let https = if trusted {
            proto_is_https(req).unwrap_or(tls_listener)
        } else {
            tls_listener
        };
        Origin {
            trusted,
            https,
            variant_from_trusted: trusted && !doomed.is_empty(),
        }
    }

    /// The request ID: a trusted proxy's if it sent a sane one, else a fresh random one.
    pub(crate) fn request_id(&self, req: &RequestHeader, origin: &Origin) -> RequestId {
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

    /// A trusted proxy's forwarding headers, before the gateway writes its own: only those
    /// that tell the upstream what the gateway itself decided on go on. A front proxy that
    /// does not set a header passes the client's copy along (nginx's `proxy_pass` does for all
    /// of them but the ones it is told to set; AWS ALB never sets `X-Forwarded-Host`), so a
    /// header the gateway did not check may be the client's account of the request:
    /// - `X-Forwarded-For`, `-Proto`, `-Host` and `-Prefix` and the request ID are checked
    ///   elsewhere (the client address is read from the first, the scheme from the second, the
    ///   third must name the routed host, the fourth must be canonical);
    /// - a single client address (`X-Real-IP`, `CF-Connecting-IP`, ...) stays only when it is
    ///   the address the gateway worked out, so `source_ips` and the app agree;
    /// - everything else restates the request (`X-Original-URL`, `X-Rewrite-URL`,
    ///   `X-Original-Host`, `Forwarded`, `X-Forwarded-Port`, `X-Forwarded-Ssl`, ...): the gateway
    ///   decided on the request line, Host and `X-Forwarded-Proto`, and an app that routed or
    ///   built URLs on a second account could be told another host, path, method or scheme.
    fn keep_only_what_agrees(&self, upstream: &mut RequestHeader, peer: Option<IpAddr>) {
        let mut doomed: Vec<HeaderName> = Vec::new();
        let mut client: Option<Option<IpAddr>> = None;
        for name in upstream.headers.keys() {
            let n = name.as_str();
            if !is_forwarding_header(n) || CHECKED_FORWARDING_HEADERS.contains(&n) {
                continue;
            }
            if CLIENT_ADDRESS_HEADERS.contains(&n) {
                let client = *client.get_or_insert_with(|| {
                    ClientAddr::proxied(self, true, &upstream.headers, peer).get()
                });
                if client.is_some() && single_address(&upstream.headers, name) == client {
                    continue;
                }
            }
            doomed.push(name.clone());
        }
        for name in &doomed {
            upstream.remove_header(name);
        }
    }

    /// Write the forwarding headers on the upstream request. `host` is the client's Host (or
    /// `:authority`) as sent.
    pub(crate) fn apply(
        &self,
        upstream: &mut RequestHeader,
        peer: Option<IpAddr>,
        origin: &Origin,
        host: &HeaderValue,
        request_id: &RequestId,
    ) -> pingora::Result<()> {
        if origin.trusted {
            self.keep_only_what_agrees(upstream, peer);
        }
        // Every line a trusted proxy sent, in order (HAProxy adds a line of its own; the
        // client address is read over all of them, so the upstream must see all of them too).
        let xff = match peer {
            Some(ip) if origin.trusted && upstream.headers.contains_key("x-forwarded-for") => {
                let mut v = Vec::new();
                for line in upstream.headers.get_all("x-forwarded-for") {
                    v.extend_from_slice(line.as_bytes());
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(&ip_value(ip));
                Some(v)
            }
            Some(ip) => Some(ip_value(ip)),
            None => None,
        };
        if let Some(v) = xff {
            // Digits, dots, colons and a trusted proxy's (already valid) value.
            let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
                .or_err(ErrorType::InternalError, "X-Forwarded-For value")?;
            X_FORWARDED_FOR.insert(upstream, v)?;
        }
        // A trusted proxy's path prefix goes on only as one canonical path: it may carry a
        // client's value, and an app builds its URLs from it (`//evil.example/...`).
        if origin.trusted {
            let mut prefixes = upstream.headers.get_all("x-forwarded-prefix").iter();
            let keep = match (prefixes.next(), prefixes.next()) {
                (None, _) => true,
                (Some(v), None) => v.to_str().is_ok_and(is_canonical_prefix),
                (Some(_), Some(_)) => false,
            };
            if !keep {
                upstream.remove_header("x-forwarded-prefix");
            }
        }
        if !(origin.trusted && single_proto(upstream)) {
            let proto = if origin.https { "https" } else { "http" };
            X_FORWARDED_PROTO.insert(upstream, HeaderValue::from_static(proto))?;
        }
        // A trusted proxy's host is kept: the gateway checked that it names the routed host and
        // wrote it in its canonical spelling (`proxy::request_filter`).
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
    fn the_kept_lists_are_forwarding_headers() {
        for n in CHECKED_FORWARDING_HEADERS
            .iter()
            .chain(CLIENT_ADDRESS_HEADERS)
        {
            assert!(FORWARDING_HEADERS.contains(n), "{n}");
        }
    }

    #[test]
    fn from_a_trusted_peer_only_what_the_gateway_checked_goes_upstream() {
        let f = fwd(&["10.0.0.0/8"]);
        let peer = Some("10.1.2.3".parse().unwrap());
        // Every forwarding header with a value of the client's choosing, then the ones the
        // gateway reads (or agrees with) with sane values.
        let mut headers: Vec<(&str, &str)> = FORWARDING_HEADERS
            .iter()
            .filter(|n| !CHECKED_FORWARDING_HEADERS.contains(n))
            .map(|n| (*n, "evil.example"))
            .collect();
        headers.extend([
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Prefix", "/app"),
        ]);
        let mut r = req_with(&headers);
        let o = f.inspect(&mut r, peer, false);
        assert!(o.trusted);
        let id = f.request_id(&r, &o);
        f.apply(
            &mut r,
            peer,
            &o,
            &HeaderValue::from_static("app.example"),
            &id,
        )
        .unwrap();
        let mut names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-prefix",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(r.headers["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(r.headers["x-forwarded-host"], "app.example");

        // A single client address stays when it is the gateway's reading of the client, in
        // any spelling of that address; a second address, a list, another address or no
        // address is dropped.
        for (value, kept) in [
            ("203.0.113.7", true),
            (" 203.0.113.7 ", true),
            ("::ffff:203.0.113.7", true),
            ("198.51.100.1", false),
            ("203.0.113.7, 198.51.100.1", false),
            ("203.0.113.7:443", false),
            ("unknown", false),
            ("", false),
        ] {
            for name in CLIENT_ADDRESS_HEADERS {
                let mut r = req_with(&[("X-Forwarded-For", "203.0.113.7"), (name, value)]);
                let o = f.inspect(&mut r, peer, false);
                f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
                    .unwrap();
                assert_eq!(r.headers.contains_key(*name), kept, "{name}: {value:?}");
            }
        }
        // Two lines, even both right: dropped.
        let mut r = req_with(&[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Real-IP", "203.0.113.7"),
            ("X-Real-IP", "203.0.113.7"),
        ]);
        let o = f.inspect(&mut r, peer, false);
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        assert!(!r.headers.contains_key("x-real-ip"));
        // The client is the peer when the proxy sent no X-Forwarded-For... which is trusted
        // here, so the address it names is the leftmost trusted hop: its own.
        let mut r = req_with(&[("X-Real-IP", "10.1.2.3")]);
        let o = f.inspect(&mut r, peer, false);
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        assert_eq!(r.headers["x-real-ip"], "10.1.2.3");
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
        // Several lines (a proxy that adds its own): all of them, in order, then the peer; the
        // upstream reads the same list the gateway read the client address from.
        let mut r = req_with(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "1.2.3.4, 10.9.9.9"),
        ]);
        let o = f.inspect(&mut r, peer, false);
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        let all: Vec<_> = r.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["6.6.6.6, 1.2.3.4, 10.9.9.9, 10.1.2.3"]);
        // X-Forwarded-Prefix from a trusted proxy: one canonical path, or nothing.
        for (lines, kept) in [
            (&["/base"][..], Some("/base")),
            (&["/base/app/"][..], Some("/base/app/")),
            (&["//evil.example"][..], None),
            (&["/a/../b"][..], None),
            (&["https://evil.example"][..], None),
            (&["/a", "/b"][..], None),
        ] {
            let mut r = req_with(
                &lines
                    .iter()
                    .map(|l| ("X-Forwarded-Prefix", *l))
                    .collect::<Vec<_>>(),
            );
            let o = f.inspect(&mut r, peer, false);
            f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
                .unwrap();
            let got: Vec<_> = r
                .headers
                .get_all("x-forwarded-prefix")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, kept.into_iter().collect::<Vec<_>>(), "{lines:?}");
        }
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
            "1.10.100.9",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().into_bytes());
            if ip.is_ipv4() {
                assert_eq!(ip_value(ip).capacity(), ip_value(ip).len(), "{ip}");
            }
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

    const UNTRUSTED: &str = "192.0.2.7";
    const TRUSTED: &str = "10.1.2.3";
    const TRUSTED_NET: &str = "10.0.0.0/8";

    /// Every spelling a CGI/WSGI/Node upstream would read as a forwarding header.
    const VARIANTS: &[&str] = &[
        "X_Forwarded_For",
        "X_Forwarded_Host",
        "X-Forwarded_Proto",
        "X_Original_URL",
        "x.forwarded.for",
        "X.FORWARDED-HOST",
        "x-forwarded_for",
        "Client_IP",
        "cf_connecting_ip",
        "X_Envoy_Original_Path",
        "x_url_scheme",
        "Front_End_Https",
        "X~Forwarded~Proto",
    ];

    /// Exact spellings (any case: `HeaderName` lower-cases them) of forwarding headers.
    const EXACT: &[&str] = &[
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-FORWARDED-PROTO",
        "Forwarded",
        "X-Original-URL",
        "X-Real-IP",
        "X-Forwarded-Path",
        "X-Forwarded-Protocol",
        "X-Url-Scheme",
        "Front-End-Https",
        "X-Host",
        "X-HTTP-Host",
        "X-ProxyUser-Ip",
        "Client-IP",
        "X-Cluster-Client-IP",
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Envoy-External-Address",
        "X-Envoy-Original-Path",
        "X-Envoy-Original-Host",
    ];

    /// Not forwarding headers: kept from anyone. (`x-forwarded-user` is identity, stripped by
    /// `identity::IdentityNamespace`, not here.)
    const ORDINARY: &[&str] = &[
        "accept",
        "x-forwarded-user",
        "x-forwarded-ish",
        "x-forwarded-fortune",
        "xforwardedfor",
        "x-hostname",
        "host",
        "x-client-ip-hint",
        "x-request-identity",
        "user-agent",
        "cookie",
    ];

    #[test]
    fn forwarding_names_are_canonical_and_fit_the_buffer() {
        let mut seen = std::collections::HashSet::new();
        for n in FORWARDING_HEADERS {
            assert!(is_canonical(n), "{n}");
            assert!(n.len() <= MAX_FORWARDING_NAME_LEN, "{n}");
            assert!(seen.insert(n), "duplicate {n}");
            assert!(is_forwarding_header(n), "{n}");
        }
        assert!(!is_forwarding_header(&"x".repeat(200)));
        // At and just past the longest name the table can hold; a leading `-` (what any
        // punctuation canonicalises to) starts no entry.
        assert!(!is_forwarding_header(&"x".repeat(MAX_FORWARDING_NAME_LEN)));
        assert!(!is_forwarding_header(
            &"x".repeat(MAX_FORWARDING_NAME_LEN + 1)
        ));
        assert!(!is_forwarding_header("-forwarded"));
        assert!(!is_forwarding_header("_x-forwarded-for"));
    }

    #[test]
    fn every_spelling_of_the_request_id_header_is_dropped_from_an_untrusted_peer() {
        let f = fwd(&[TRUSTED_NET]);
        let spellings = [
            "X-Request-Id",
            "x_request_id",
            "X.Request.ID",
            "X_REQUEST-id",
            "x~request~id",
        ];
        let headers: Vec<(&str, &str)> = spellings.iter().map(|n| (*n, "evil")).collect();
        let mut r = req_with(&headers);
        f.inspect(&mut r, Some(UNTRUSTED.parse().unwrap()), false);
        assert_eq!(r.headers.len(), 0, "{:?}", r.headers);
        // From a trusted proxy only the exact name stays.
        let mut r = req_with(&headers);
        f.inspect(&mut r, Some(TRUSTED.parse().unwrap()), false);
        let left: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["x-request-id"]);
    }

    /// The check before the length and first-byte filter: canonicalise, then look up.
    fn forwarding_unfiltered(name: &str) -> bool {
        let canon: String = name
            .bytes()
            .map(|b| char::from(canonical_byte(b)))
            .collect();
        FORWARDING_HEADERS.contains(&canon.as_str())
    }

    #[test]
    fn the_shape_filter_never_hides_a_forwarding_header() {
        // Every entry in every spelling a client could use: case, `_`, `.`, other punctuation.
        for n in FORWARDING_HEADERS {
            for sep in ['-', '_', '.', '~', '+'] {
                let spelled = n.replace('-', &sep.to_string());
                for v in [
                    spelled.clone(),
                    spelled.to_ascii_uppercase(),
                    spelled.to_ascii_lowercase(),
                ] {
                    assert!(is_forwarding_header(&v), "{v}");
                    assert_eq!(is_forwarding_header(&v), forwarding_unfiltered(&v), "{v}");
                }
            }
        }
        // The headers a browser sends on every request are ruled out before any comparison.
        for n in [
            "accept",
            "accept-language",
            "accept-encoding",
            "cookie",
            "cache-control",
            "connection",
            "host",
            "user-agent",
            "referer",
            "priority",
            "sec-fetch-mode",
            "sec-fetch-site",
            "sec-fetch-dest",
            "sec-fetch-user",
            "sec-ch-ua",
            "sec-ch-ua-mobile",
            "sec-ch-ua-platform",
            "upgrade-insecure-requests",
        ] {
            assert!(!may_be_forwarding_header(n), "{n}");
        }
        assert!(!is_forwarding_header(""));
    }

    proptest::proptest! {
        /// Any name, of any length and bytes: the filtered check answers as the full one.
        #[test]
        fn the_shape_filter_agrees_with_the_full_check(
            name in "[a-zA-Z0-9_.!#$%&'*+^`|~-]{0,40}",
            pick in 0..FORWARDING_HEADERS.len(),
            upper in proptest::bool::ANY,
        ) {
            proptest::prop_assert_eq!(is_forwarding_header(&name), forwarding_unfiltered(&name));
            // Near misses of a real entry: one byte changed, one added, one removed.
            let real = FORWARDING_HEADERS[pick];
            let real = if upper { real.to_ascii_uppercase() } else { real.to_string() };
            let i = name.len() % real.len();
            let mut changed = real.clone().into_bytes();
            changed[i] = name.bytes().next().unwrap_or(b'_');
            let changed = String::from_utf8(changed).unwrap();
            for v in [changed, format!("{real}{name}"), real[..i].to_string() + &real[i + 1..]] {
                proptest::prop_assert_eq!(is_forwarding_header(&v), forwarding_unfiltered(&v), "{}", v);
            }
        }
    }

    #[test]
    fn untrusted_peer_loses_every_spelling() {
        let f = fwd(&[TRUSTED_NET]);
        let mut headers: Vec<(&str, &str)> = VARIANTS.iter().map(|n| (*n, "evil")).collect();
        headers.extend(EXACT.iter().map(|n| (*n, "evil")));
        // Duplicates, mixed case.
        headers.push(("x_forwarded_for", "1.1.1.1"));
        headers.push(("X_FORWARDED_FOR", "2.2.2.2"));
        headers.extend(ORDINARY.iter().map(|n| (*n, "fine")));
        let mut r = req_with(&headers);
        let o = f.inspect(&mut r, Some(UNTRUSTED.parse().unwrap()), false);
        assert!(!o.trusted);
        let left: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left.len(), ORDINARY.len(), "{left:?}");
        for n in ORDINARY {
            assert_eq!(r.headers[*n], "fine", "{n}");
        }
    }

    #[test]
    fn trusted_peer_keeps_exact_names_only() {
        let f = fwd(&[TRUSTED_NET]);
        let mut headers: Vec<(&str, &str)> = VARIANTS.iter().map(|n| (*n, "evil")).collect();
        headers.extend(EXACT.iter().map(|n| (*n, "proxy")));
        headers.extend(ORDINARY.iter().map(|n| (*n, "fine")));
        headers.push(("X_Request_Id", "evil"));
        headers.push(("X-Request-Id", "req-1"));
        let mut r = req_with(&headers);
        let o = f.inspect(&mut r, Some(TRUSTED.parse().unwrap()), false);
        assert!(o.trusted);
        assert_eq!(r.headers.len(), EXACT.len() + ORDINARY.len() + 1);
        for n in EXACT {
            assert_eq!(r.headers[*n], "proxy", "{n}");
        }
        for v in r.headers.values() {
            assert_ne!(v, "evil");
        }
        assert_eq!(f.request_id(&r, &o).as_str(), "req-1");
    }

    #[test]
    fn request_id_header_in_any_spelling() {
        let f = fwd(&[TRUSTED_NET]);
        for n in [
            "X-Request-Id",
            "x_request_id",
            "X.Request.ID",
            "x-request_id",
        ] {
            let mut r = req_with(&[(n, "forged"), ("accept", "*/*")]);
            f.inspect(&mut r, Some(UNTRUSTED.parse().unwrap()), false);
            assert_eq!(r.headers.len(), 1, "{n}");
            assert!(r.headers.contains_key("accept"));
        }
        // A configured name that is not canonical itself is still kept exact from a trusted
        // peer, and its dashed variant is not.
        let odd = Forwarding::new(
            vec![TRUSTED_NET.parse().unwrap()],
            HeaderName::from_static("x_trace_id"),
        );
        let mut r = req_with(&[("x_trace_id", "t-1"), ("X-Trace-Id", "evil")]);
        let o = odd.inspect(&mut r, Some(TRUSTED.parse().unwrap()), false);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(odd.request_id(&r, &o).as_str(), "t-1");
    }

    #[test]
    fn canonical_comparison() {
        assert!(canonical_eq("X_Forwarded.For", "x-forwarded-for"));
        assert!(canonical_eq("x-forwarded-for", "x-forwarded-for"));
        assert!(!canonical_eq("x-forwarded-fo", "x-forwarded-for"));
        assert!(!canonical_eq("x-forwarded-fox", "x-forwarded-for"));
        assert!(is_canonical("x-forwarded-for"));
        assert!(!is_canonical("x_forwarded-for"));
        assert!(!is_canonical("X-Forwarded-For"));
    }

    #[test]
    fn forwarded_proto_fails_closed() {
        let f = fwd(&[TRUSTED_NET]);
        let peer = Some(TRUSTED.parse().unwrap());
        let https = |lines: &[&str], tls: bool| {
            let headers: Vec<(&str, &str)> =
                lines.iter().map(|v| ("x-forwarded-proto", *v)).collect();
            let mut r = req_with(&headers);
            f.inspect(&mut r, peer, tls).https
        };
        assert!(https(&["https"], false));
        assert!(https(&["HTTPS"], false));
        assert!(https(&["https, https"], false));
        assert!(https(&["https", " https "], false));
        assert!(https(&[], true));
        assert!(!https(&[], false));
        assert!(!https(&["http"], true));
        assert!(!https(&["https, http"], true));
        assert!(!https(&["http, https"], true));
        assert!(!https(&["https", "http"], true));
        assert!(!https(&["http", "https"], true));
        assert!(!https(&[""], true));
        assert!(!https(&["https,"], true));
        assert!(!https(&["wss"], true));

        // The upstream is told the same: a mixed list is rewritten, a single value kept.
        let mut r = req_with(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ]);
        let o = f.inspect(&mut r, peer, true);
        let id = f.request_id(&r, &o);
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        let all: Vec<_> = r.headers.get_all("x-forwarded-proto").iter().collect();
        assert_eq!(all, ["http"]);
        let mut r = req_with(&[("x-forwarded-proto", "HTTPS")]);
        let o = f.inspect(&mut r, peer, false);
        f.apply(&mut r, peer, &o, &HeaderValue::from_static("h"), &id)
            .unwrap();
        assert_eq!(r.headers["x-forwarded-proto"], "HTTPS");
    }

    #[test]
    fn bad_request_id_from_trusted_peer_is_replaced() {
        let f = fwd(&["127.0.0.0/8"]);
        let r = req_with(&[("X-Request-Id", "has space")]);
        let o = Origin {
            trusted: true,
            https: false,
            variant_from_trusted: false,
        };
        assert_ne!(f.request_id(&r, &o).as_str(), "has space");
    }

    #[test]
    fn client_address_through_trusted_proxies() {
        let f = fwd(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let headers = |lines: &[&str]| {
            let mut h = http::HeaderMap::new();
            for l in lines {
                h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
            }
            h
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let proxied = |lines: &[&str], peer: &str| {
            let h = headers(lines);
            let peer: IpAddr = peer.parse().unwrap();
            ClientAddr::proxied(&f, f.is_trusted(Some(peer)), &h, Some(peer)).get()
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(proxied(&["10.1.1.1"], "192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(proxied(&[], "::ffff:192.0.2.7"), ip("192.0.2.7"));
        // Through a trusted proxy: the last untrusted hop, the client's own claims ignored.
        assert_eq!(proxied(&["198.51.100.1"], "10.0.0.2"), ip("198.51.100.1"));
        assert_eq!(
            proxied(&["6.6.6.6, 198.51.100.1, 10.0.0.3"], "10.0.0.2"),
            ip("198.51.100.1")
        );
        assert_eq!(
            proxied(&["6.6.6.6", "198.51.100.1", "10.0.0.3"], "10.0.0.2"),
            ip("198.51.100.1"),
            "several lines read in order"
        );
        assert_eq!(
            proxied(&["2001:db8::5, 2001:db8:ffff::1"], "10.0.0.2"),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxied(&["::ffff:198.51.100.1"], "10.0.0.2"),
            ip("198.51.100.1")
        );
        // Every hop trusted: the leftmost; no header: the trusted peer itself.
        assert_eq!(proxied(&["10.9.9.9, 10.0.0.3"], "10.0.0.2"), ip("10.9.9.9"));
        assert_eq!(proxied(&[], "10.0.0.2"), ip("10.0.0.2"));
        // Not an address on the way: unknown, never skipped.
        for bad in [
            "unknown",
            "198.51.100.1:443",
            "",
            "1.2.3.4, ",
            "[2001:db8::1]",
        ] {
            assert_eq!(proxied(&[bad], "10.0.0.2"), None, "{bad:?}");
        }
        // ... but garbage left of the first untrusted hop is the client's, not read.
        assert_eq!(
            proxied(&["garbage, 198.51.100.1"], "10.0.0.2"),
            ip("198.51.100.1")
        );
        // Forward-auth: the front proxy's header only, never the front proxy itself.
        let h = headers(&["198.51.100.1"]);
        assert_eq!(ClientAddr::forward_auth(&f, &h).get(), ip("198.51.100.1"));
        let h = headers(&[]);
        assert_eq!(ClientAddr::forward_auth(&f, &h).get(), None);
        let h = headers(&["10.0.0.4"]);
        assert_eq!(ClientAddr::forward_auth(&f, &h).get(), ip("10.0.0.4"));
    }

    #[test]
    fn mapped_networks_are_ipv4() {
        let n = |s: &str| unmap_net(s.parse().unwrap()).to_string();
        assert_eq!(n("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(n("::ffff:192.0.2.7/128"), "192.0.2.7/32");
        assert_eq!(n("::ffff:0.0.0.0/96"), "0.0.0.0/0");
        assert_eq!(n("::/0"), "::/0");
        assert_eq!(n("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(n("10.0.0.0/8"), "10.0.0.0/8");
    }
}
