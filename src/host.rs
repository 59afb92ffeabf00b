//! The one strict parser for a request's authority (`host[:port]`).
//!
//! `Host`, HTTP/2 `:authority`, a trusted `X-Forwarded-Host` and the host inside an absolute
//! request URL are all read with [`Authority::parse`], at the top of the request flow next to
//! path normalisation and before routing. Anything that is not a plain reg-name, a canonical
//! dotted-quad IPv4 address or a bracketed IPv6 address, with an optional port 1–65535, is
//! refused (the gateway answers `400`): nothing is guessed at. Routing looks up
//! [`Authority::host`] and the upstream receives [`Authority::as_str`] as its `Host`, so both
//! see the same canonical spelling: lower case, no trailing dot, IPv6 in RFC 5952 form.
//!
//! Why strict: when the gateway and the upstream read one value two ways, routing decides on
//! one host and the upstream serves another. `admin.example.com:1:2` was "host
//! `admin.example.com:1`" to a cut at the last `:` (no host-scoped route matched, so a
//! host-less one did) but `admin.example.com` to nginx and Express, which cut at the first.
//! The same holds for `a..`, `a/x`, `a,b` (two values joined), `%`-escapes, userinfo, and
//! numeric names such as `0x7f.1` or `010.0.0.1` that some stacks read as hex or octal IPv4.

use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;

/// Longest host name without its trailing dot (RFC 1035 §2.3.4, as text).
const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// Longest raw value worth looking at: a maximal name, its trailing dot and `:65535`.
const MAX_RAW: usize = MAX_NAME + 1 + 6;

/// Why a host value was refused; every variant maps to `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("host too long")]
    TooLong,
    #[error("invalid character in host")]
    BadCharacter,
    #[error("empty label in host name")]
    EmptyLabel,
    #[error("host name label longer than 63 characters")]
    LabelTooLong,
    #[error("host name label starts or ends with '-'")]
    BadHyphen,
    #[error("numeric host is not a dotted-quad IPv4 address")]
    BadIpv4,
    #[error("invalid IPv6 address in host")]
    BadIpv6,
    #[error("more than one ':' in host (IPv6 addresses must be in brackets)")]
    ExtraColon,
    #[error("invalid port in host")]
    BadPort,
}

/// A parsed, canonical authority: host lowercased, trailing dot removed, IPv6 in RFC 5952 form
/// inside brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Canonical `host[:port]`.
    text: String,
    /// Length of the host part of `text`.
    host_len: usize,
    port: Option<u16>,
}

impl Authority {
    /// Parse a `Host`-style value. Takes bytes: header values may be non-UTF-8 (and are then
    /// refused). Never panics; allocates once, for the canonical text.
    pub fn parse(raw: &[u8]) -> Result<Authority, HostError> {
        if raw.is_empty() {
            return Err(HostError::Empty);
        }
        if raw.len() > MAX_RAW {
            return Err(HostError::TooLong);
        }
        if raw[0] == b'[' {
            return Self::parse_ipv6(raw);
        }
        let (name, port) = match raw.iter().position(|&b| b == b':') {
            None => (raw, None),
            Some(i) => {
                let rest = &raw[i + 1..];
                if rest.contains(&b':') {
                    return Err(HostError::ExtraColon);
                }
                (&raw[..i], Some(parse_port(rest)?))
            }
        };
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if !name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(HostError::BadCharacter);
        }
        // Exactly one trailing dot (the DNS root) may be dropped; `a..` keeps an empty label.
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.len() > MAX_NAME {
            return Err(HostError::TooLong);
        }
        let mut last: &[u8] = b"";
        for label in name.split(|&b| b == b'.') {
            if label.is_empty() {
                return Err(HostError::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(HostError::LabelTooLong);
            }
            if label[0] == b'-' || label[label.len() - 1] == b'-' {
                return Err(HostError::BadHyphen);
            }
            last = label;
        }
        // As in the WHATWG URL standard: a name whose last label is a number (decimal, or
        // `0x` hex) is an IPv4 address, and here it must be spelled as a canonical dotted-quad.
        if looks_numeric(last) && !is_canonical_ipv4(name) {
            return Err(HostError::BadIpv4);
        }

        let mut text = String::with_capacity(name.len() + 6);
        text.extend(name.iter().map(|&b| char::from(b.to_ascii_lowercase())));
        Ok(Self::finish(text, port))
    }

    fn parse_ipv6(raw: &[u8]) -> Result<Authority, HostError> {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::BadIpv6)?;
        let inner = &raw[1..close];
        // Hex digits, ':' and the dots of an embedded IPv4 tail; no zone ID (`%eth0`), no
        // IPvFuture (`v1.x`).
        if !inner
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(HostError::BadIpv6);
        }
        let addr: Ipv6Addr = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(HostError::BadIpv6)?;
        let port = match &raw[close + 1..] {
            [] => None,
            [b':', rest @ ..] => Some(parse_port(rest)?),
            _ => return Err(HostError::BadCharacter),
        };
        // "[" + at most 45 characters + "]" + ":65535".
        let mut text = String::with_capacity(53);
        // Writing to a String cannot fail.
        let _ = write!(text, "[{addr}]");
        Ok(Self::finish(text, port))
    }

    fn finish(mut text: String, port: Option<u16>) -> Authority {
        let host_len = text.len();
        if let Some(p) = port {
            let _ = write!(text, ":{p}");
        }
        Authority {
            text,
            host_len,
            port,
        }
    }

    /// The canonical host, as routing looks it up: `app.example.com`, `127.0.0.1`, `[::1]`.
    pub(crate) fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The port, if the value had one.
    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }

    /// The canonical `host[:port]`, as the upstream receives it in `Host`.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    #[cfg(test)]
    /// Whether `raw` is accepted and already spelled canonically (so it can be forwarded as is).
    pub(crate) fn is_canonical_spelling(raw: &[u8]) -> bool {
        Self::parse(raw).is_ok_and(|a| a.text.as_bytes() == raw)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// 1–5 digits, no leading zero, 1–65535.
fn parse_port(digits: &[u8]) -> Result<u16, HostError> {
    if digits.is_empty()
        || digits.len() > 5
        || digits[0] == b'0'
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(HostError::BadPort);
    }
    let v = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(v).map_err(|_| HostError::BadPort)
}

/// A label that some resolver could read as a number: all decimal digits, or `0x`/`0X`
/// followed by hex digits (possibly none).
fn looks_numeric(label: &[u8]) -> bool {
    if !label.is_empty() && label.iter().all(u8::is_ascii_digit) {
        return true;
    }
    match label {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// Exactly four decimal octets 0–255 without leading zeros: the only spelling accepted.
fn is_canonical_ipv4(name: &[u8]) -> bool {
    let mut n = 0;
    for octet in name.split(|&b| b == b'.') {
        n += 1;
        let ok = match octet {
            [b'0'] => true,
            [b'1'..=b'9', rest @ ..] if rest.len() <= 2 && rest.iter().all(u8::is_ascii_digit) => {
                octet
                    .iter()
                    .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
                    <= 255
            }
            _ => false,
        };
        if !ok || n > 4 {
            return false;
        }
    }
    n == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Authority, HostError> {
        Authority::parse(s.as_bytes())
    }

    #[test]
    fn accepted_values_and_their_canonical_form() {
        // input, as_str, host, port
        let table: &[(&str, &str, &str, Option<u16>)] = &[
            (
                "app.example.com",
                "app.example.com",
                "app.example.com",
                None,
            ),
            (
                "App.Example.COM",
                "app.example.com",
                "app.example.com",
                None,
            ),
            (
                "app.example.com.",
                "app.example.com",
                "app.example.com",
                None,
            ),
            (
                "app.example.com:8443",
                "app.example.com:8443",
                "app.example.com",
                Some(8443),
            ),
            (
                "APP.example.com.:80",
                "app.example.com:80",
                "app.example.com",
                Some(80),
            ),
            ("localhost", "localhost", "localhost", None),
            ("localhost:1", "localhost:1", "localhost", Some(1)),
            ("x:65535", "x:65535", "x", Some(65535)),
            (
                "internal_svc.local",
                "internal_svc.local",
                "internal_svc.local",
                None,
            ),
            (
                "_acme.example.com",
                "_acme.example.com",
                "_acme.example.com",
                None,
            ),
            ("a-b.c-d", "a-b.c-d", "a-b.c-d", None),
            (
                "xn--bcher-kva.example",
                "xn--bcher-kva.example",
                "xn--bcher-kva.example",
                None,
            ),
            ("123abc.example", "123abc.example", "123abc.example", None),
            ("1.2.3.com", "1.2.3.com", "1.2.3.com", None),
            ("a", "a", "a", None),
            ("127.0.0.1", "127.0.0.1", "127.0.0.1", None),
            ("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", Some(8080)),
            ("0.0.0.0", "0.0.0.0", "0.0.0.0", None),
            (
                "255.255.255.255",
                "255.255.255.255",
                "255.255.255.255",
                None,
            ),
            ("10.0.0.1.", "10.0.0.1", "10.0.0.1", None),
            ("[::1]", "[::1]", "[::1]", None),
            ("[::1]:443", "[::1]:443", "[::1]", Some(443)),
            ("[2001:DB8::1]", "[2001:db8::1]", "[2001:db8::1]", None),
            (
                "[2001:0db8:0000:0000:0000:0000:0000:0001]:8080",
                "[2001:db8::1]:8080",
                "[2001:db8::1]",
                Some(8080),
            ),
            (
                "[::ffff:1.2.3.4]",
                "[::ffff:1.2.3.4]",
                "[::ffff:1.2.3.4]",
                None,
            ),
            ("[fe80:0:0:0:0:0:0:1]", "[fe80::1]", "[fe80::1]", None),
        ];
        for &(input, canonical, host, port) in table {
            let a = p(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
            assert_eq!(a.as_str(), canonical, "{input:?}");
            assert_eq!(a.host(), host, "{input:?}");
            assert_eq!(a.port(), port, "{input:?}");
            assert_eq!(a.to_string(), canonical);
            assert_eq!(
                Authority::is_canonical_spelling(input.as_bytes()),
                input == canonical,
                "{input:?}"
            );
        }
    }

    #[test]
    fn maximal_lengths_are_accepted() {
        let label63 = "a".repeat(63);
        assert!(p(&label63).is_ok());
        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253.
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(p(&name253).unwrap().host(), name253);
        assert_eq!(p(&format!("{name253}.:65535")).unwrap().port(), Some(65535));
    }

    #[test]
    fn refused_values() {
        use HostError::*;
        let label64 = "a".repeat(64);
        let name254 = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
        assert_eq!(name254.len(), 254);
        let owned: Vec<(String, HostError)> = vec![
            (format!("{label64}.example.com"), LabelTooLong),
            (format!("x.{label64}"), LabelTooLong),
            (name254.clone(), TooLong),
            (format!("{name254}."), TooLong),
            ("a".repeat(400), TooLong),
        ];
        let table: &[(&str, HostError)] = &[
            // The routing bug: values that a first-colon parser upstream reads as the admin host.
            ("admin.example.com:1:2", ExtraColon),
            ("admin.example.com:x:y", ExtraColon),
            ("admin.example.com..", EmptyLabel),
            ("admin.example.com/x", BadCharacter),
            ("admin.example.com:", BadPort),
            ("admin.example.com:x", BadPort),
            // Empty and dots.
            ("", Empty),
            (".", EmptyLabel),
            ("..", EmptyLabel),
            (":80", Empty),
            ("a..b", EmptyLabel),
            (".a", EmptyLabel),
            (".a.b", EmptyLabel),
            ("a.b..", EmptyLabel),
            // Characters.
            ("a b", BadCharacter),
            ("a\tb", BadCharacter),
            (" a", BadCharacter),
            ("a ", BadCharacter),
            ("a\r\nb", BadCharacter),
            ("a\0", BadCharacter),
            ("a@b", BadCharacter),
            ("user@admin.example.com", BadCharacter),
            ("a%2eb", BadCharacter),
            ("a,b", BadCharacter),
            ("admin.example.com,other.example.com", BadCharacter),
            ("a?b", BadCharacter),
            ("a#b", BadCharacter),
            ("a\\b", BadCharacter),
            ("a/b", BadCharacter),
            ("a;b", BadCharacter),
            ("a*b", BadCharacter),
            ("*.example.com", BadCharacter),
            ("a]b", BadCharacter),
            ("a[b", BadCharacter),
            ("ünï.com", BadCharacter),
            ("a\u{7f}", BadCharacter),
            // Hyphens.
            ("-", BadHyphen),
            ("-a.com", BadHyphen),
            ("a-.com", BadHyphen),
            ("a.-b", BadHyphen),
            // Ports.
            ("host:0", BadPort),
            ("host:00", BadPort),
            ("host:080", BadPort),
            ("host:65536", BadPort),
            ("host:99999", BadPort),
            ("host:100000", BadPort),
            ("host:+80", BadPort),
            ("host:-1", BadPort),
            ("host: 80", BadPort),
            ("host:80 ", BadPort),
            ("host:8 0", BadPort),
            ("host:80.", BadPort),
            ("host::80", ExtraColon),
            ("host:80:", ExtraColon),
            // Numeric names that are not a canonical dotted-quad.
            ("1.2.3.4.5", BadIpv4),
            ("300.1.1.1", BadIpv4),
            ("256.0.0.1", BadIpv4),
            ("1.2.3", BadIpv4),
            ("1.2", BadIpv4),
            ("2130706433", BadIpv4),
            ("010.0.0.1", BadIpv4),
            ("127.0.0.01", BadIpv4),
            ("127.00.0.1", BadIpv4),
            ("0x7f.1", BadIpv4),
            ("0x7f.0.0.1", BadIpv4),
            ("0x7F000001", BadIpv4),
            ("127.0.0.0x1", BadIpv4),
            ("example.123", BadIpv4),
            ("example.0x", BadIpv4),
            ("1.2.3.4..", EmptyLabel),
            ("1.2.3.4:0", BadPort),
            // IPv6.
            ("::1", ExtraColon),
            ("2001:db8::1", ExtraColon),
            ("[::1", BadIpv6),
            ("[", BadIpv6),
            ("[]", BadIpv6),
            ("[]:80", BadIpv6),
            ("[::1]x", BadCharacter),
            ("[::1].", BadCharacter),
            ("[::1]]", BadCharacter),
            ("[::1]:", BadPort),
            ("[::1]:0", BadPort),
            ("[::1]:65536", BadPort),
            ("[::1]:80:80", BadPort),
            ("[fe80::1%eth0]", BadIpv6),
            ("[fe80::1%25eth0]", BadIpv6),
            ("[1.2.3.4]", BadIpv6),
            ("[v1.fe]", BadIpv6),
            ("[::g]", BadIpv6),
            ("[1:2:3:4:5:6:7:8:9]", BadIpv6),
            ("[::1 ]", BadIpv6),
            ("[[::1]]", BadIpv6),
            ("[example.com]", BadIpv6),
        ];
        for (input, want) in table.iter().map(|&(s, e)| (s.to_string(), e)).chain(owned) {
            assert_eq!(p(&input), Err(want), "{input:?}");
            assert!(!Authority::is_canonical_spelling(input.as_bytes()));
        }
    }

    #[test]
    fn non_utf8_is_refused() {
        for raw in [
            &b"a\xffb"[..],
            b"\xc3\xa9.com",
            b"[::1]\xff",
            b"[\xff]",
            b"h:\x80",
        ] {
            assert!(Authority::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(HostError::BadPort.to_string(), "invalid port in host");
        assert_eq!(
            HostError::ExtraColon.to_string(),
            "more than one ':' in host (IPv6 addresses must be in brackets)"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Bytes drawn mostly from the characters the parser cares about, so that accepted values
    /// and near misses both come up often.
    fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
        let alphabet: &[u8] = b"aZ09x-_.:[]%@/\\, \t\xff";
        proptest::collection::vec(proptest::sample::select(alphabet), 0..40)
    }

    /// A label valid in a host name: 1–63 bytes, no '-' at either end.
    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?"
    }

    /// A reg-name whose last label starts with a letter, so it can never read as a number.
    fn reg_name() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(label(), 0..3),
            "[a-zA-Z]([a-zA-Z0-9_-]{0,20}[a-zA-Z0-9_])?",
        )
            .prop_map(|(mut labels, last)| {
                labels.push(last);
                labels.join(".")
            })
    }

    /// Randomly upper-case ASCII letters.
    fn mixed_case(s: String) -> impl Strategy<Value = String> {
        let n = s.len();
        proptest::collection::vec(any::<bool>(), n).prop_map(move |flips| {
            s.chars()
                .zip(flips)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    /// (raw input, expected canonical `as_str()`).
    fn valid_authority() -> impl Strategy<Value = (String, String)> {
        let host = prop_oneof![
            // Reg-names: random case, optional trailing dot.
            (reg_name(), any::<bool>()).prop_flat_map(|(name, dot)| {
                let canonical = name.to_ascii_lowercase();
                mixed_case(name).prop_map(move |raw| {
                    let raw = if dot { format!("{raw}.") } else { raw };
                    (raw, canonical.clone())
                })
            }),
            any::<[u8; 4]>().prop_map(|o| {
                let s = Ipv4Addr::from(o).to_string();
                (s.clone(), s)
            }),
            // IPv6 spelled canonically (in random case) or fully expanded.
            (any::<[u16; 8]>(), any::<bool>()).prop_flat_map(|(segs, expanded)| {
                let addr = Ipv6Addr::from(segs);
                let canonical = format!("[{addr}]");
                let raw = if expanded {
                    let s: Vec<String> = segs.iter().map(|s| format!("{s:04X}")).collect();
                    format!("[{}]", s.join(":"))
                } else {
                    canonical.clone()
                };
                mixed_case(raw).prop_map(move |raw| (raw, canonical.clone()))
            }),
        ];
        (host, proptest::option::of(1u16..=65535)).prop_map(|((raw, canonical), port)| match port {
            Some(p) => (format!("{raw}:{p}"), format!("{canonical}:{p}")),
            None => (raw, canonical),
        })
    }

    /// A valid authority with one byte replaced, inserted or removed: near misses.
    fn mutated_authority() -> impl Strategy<Value = Vec<u8>> {
        let alphabet: &[u8] = b"aZ09x-_.:[]%@/\\, \t\xff";
        (
            valid_authority(),
            any::<proptest::sample::Index>(),
            proptest::sample::select(alphabet),
            0..3u8,
        )
            .prop_map(|((raw, _), at, b, op)| {
                let mut v = raw.into_bytes();
                let i = at.index(v.len() + 1);
                match op {
                    0 => v.insert(i, b),
                    1 if i < v.len() => v[i] = b,
                    _ if i < v.len() => {
                        v.remove(i);
                    }
                    _ => v.push(b),
                }
                v
            })
    }

    /// The properties every accepted value must have.
    fn check_accepted(raw: &[u8], a: &Authority) -> Result<(), TestCaseError> {
        // Round trip: the canonical form parses to itself.
        prop_assert_eq!(Authority::parse(a.as_str().as_bytes()), Ok(a.clone()));
        prop_assert!(Authority::is_canonical_spelling(a.as_str().as_bytes()));
        // host() has a ':' only inside brackets, and as_str() is host() plus the port.
        let host = a.host();
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']');
            prop_assert!(inner.is_some_and(|i| !i.contains(['[', ']'])), "{}", host);
        } else {
            prop_assert!(!host.contains(':'), "{}", host);
        }
        let want = match a.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        prop_assert_eq!(a.as_str(), want.as_str());
        prop_assert!(!host.ends_with('.'));
        // A first-colon reader (nginx, Express) finds the same host: before the first ':'
        // outside brackets, lower-cased, minus one trailing dot.
        let end = if raw.first() == Some(&b'[') {
            raw.iter()
                .position(|&b| b == b']')
                .map_or(raw.len(), |i| i + 1)
        } else {
            raw.iter().position(|&b| b == b':').unwrap_or(raw.len())
        };
        let first_colon = raw[..end].to_ascii_lowercase();
        let first_colon = first_colon.strip_suffix(b".").unwrap_or(&first_colon);
        if !host.starts_with('[') {
            prop_assert_eq!(first_colon, host.as_bytes());
        }
        prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
        // One more ':' after the port (or after a port-less host's port) is always refused.
        let mut more = raw.to_vec();
        more.push(b':');
        prop_assert!(Authority::parse(&more).is_err());
        more.extend_from_slice(b"80");
        if a.port().is_some() {
            prop_assert!(Authority::parse(&more).is_err());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(a) = Authority::parse(&raw) {
                check_accepted(&raw, &a)?;
            }
        }

        #[test]
        fn accepted_inputs_round_trip(raw in prop_oneof![interesting_bytes(), mutated_authority()]) {
            if let Ok(a) = Authority::parse(&raw) {
                check_accepted(&raw, &a)?;
            }
        }

        #[test]
        fn generated_valid_authorities_parse((raw, canonical) in valid_authority()) {
            let a = Authority::parse(raw.as_bytes());
            prop_assert!(a.is_ok(), "{:?} refused: {:?}", raw, a);
            let a = a.unwrap();
            prop_assert_eq!(a.as_str(), canonical.as_str());
            if !raw.starts_with('[') {
                // Outside IPv6 the canonical form is just the lower-case spelling, minus the
                // one trailing dot.
                let lower = raw.to_ascii_lowercase().replacen(".:", ":", 1);
                prop_assert_eq!(lower.trim_end_matches('.'), canonical.as_str());
            }
            check_accepted(raw.as_bytes(), &a)?;
        }

        #[test]
        fn extra_colon_after_port_is_refused((raw, _c) in valid_authority(), tail in "[0-9a-z]{0,5}") {
            let with_port = if Authority::parse(raw.as_bytes()).unwrap().port().is_some() {
                raw
            } else {
                format!("{raw}:8080")
            };
            prop_assert!(Authority::parse(with_port.as_bytes()).is_ok());
            let bad = format!("{with_port}:{tail}");
            prop_assert!(Authority::parse(bad.as_bytes()).is_err(), "{:?}", bad);
        }
    }
}
