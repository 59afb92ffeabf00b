//! W3C Trace Context: the `traceparent` a request carries, continued or started here.
//!
//! A client's `traceparent` is a client-chosen value: it only correlates log lines and
//! upstream traces, it grants nothing, so any client may send one. It is continued only when
//! it is exactly one header line in the strict version-00 form (`00-` 32 lower-case hex `-`
//! 16 lower-case hex `-` 2 hex, neither id all zeros); anything else (several lines, another
//! version, upper case, spaces, other lengths) starts a new trace, and the client's
//! `tracestate`, which belongs to the trace it replaced, is not passed on.
//!
//! Each request is one hop with a span id of its own: the upstream receives the trace id
//! with the gateway's span id as its parent, and the access log writes both. Only the
//! `sampled` flag is kept; a trace started here is sampled only while spans are exported
//! (`crate::otlp`): otherwise nobody records it.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// The W3C header names.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent` value.
const LEN: usize = 55;
const SAMPLED: u8 = 0x01;

/// A request's trace: its trace id, the gateway's span id for this hop, its flags. Plain
/// bytes (hex digits) kept in the request context: no allocation until it is written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trace {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    /// The client's span (hex), when its trace is continued.
    parent_id: Option<[u8; 16]>,
    flags: u8,
    /// Whether the client's trace is continued (else a new trace was started).
    continued: bool,
}

impl Trace {
    /// The trace of a request with these headers: the client's, when its `traceparent` is
    /// valid and alone, else a new one (sampled when `sample_new`).
    pub(crate) fn of(headers: &HeaderMap, sample_new: bool) -> Self {
        let mut lines = headers.get_all(TRACEPARENT).iter();
        let parsed = match (lines.next(), lines.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                span_id: span_id(),
                parent_id: Some(parent_id),
                flags: flags & SAMPLED,
                continued: true,
            },
            None => Self::start(sample_new),
        }
    }

    /// A new trace (random, never all zeros).
    pub(crate) fn start(sampled: bool) -> Self {
        let mut trace_id = [0u8; 32];
        hex_into(nonzero_u128(), &mut trace_id);
        Self {
            trace_id,
            span_id: span_id(),
            parent_id: None,
            flags: if sampled { SAMPLED } else { 0 },
            continued: false,
        }
    }

    pub(crate) fn trace_id(&self) -> &str {
        // Hex digits only (parsed or written so).
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    pub(crate) fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("")
    }

    /// The client's span id, when its trace is continued.
    pub(crate) fn parent_id(&self) -> Option<&str> {
        self.parent_id
            .as_ref()
            .map(|p| std::str::from_utf8(p).unwrap_or(""))
    }

    pub(crate) fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Whether the client's trace was continued (its `tracestate` may then be passed on).
    pub(crate) fn continued(&self) -> bool {
        self.continued
    }

    /// The `traceparent` the upstream receives: this trace, the gateway's span as parent.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut v = [0u8; LEN];
        v[..3].copy_from_slice(b"00-");
        v[3..35].copy_from_slice(&self.trace_id);
        v[35] = b'-';
        v[36..52].copy_from_slice(&self.span_id);
        v[52] = b'-';
        v[53] = HEX[usize::from(self.flags >> 4)];
        v[54] = HEX[usize::from(self.flags & 0xf)];
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static(""))
    }
}

/// A strict version-00 `traceparent`: its trace id and parent id (hex) and flags.
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 16], u8)> {
    if v.len() != LEN || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    let lower_hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) || zero(trace) || zero(parent) {
        return None;
    }
    let digit = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    let (mut id, mut p) = ([0u8; 32], [0u8; 16]);
    id.copy_from_slice(trace);
    p.copy_from_slice(parent);
    Some((id, p, digit(flags[0]) << 4 | digit(flags[1])))
}

fn span_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = loop {
        let n: u64 = rand::random();
        if n != 0 {
            break n;
        }
    };
    hex_into(u128::from(n), &mut out);
    out
}

fn nonzero_u128() -> u128 {
    loop {
        let n: u128 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

/// The low `out.len() * 4` bits of `n` as lower-case hex, most significant first.
fn hex_into(n: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn well_formed(v: &str) -> bool {
        parse(v.as_bytes()).is_some()
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let t = Trace::of(&headers(&[VALID.as_bytes()]), false);
        assert!(t.continued());
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id().len(), 16);
        assert_eq!(t.parent_id(), Some("00f067aa0ba902b7"));
        assert!(t.sampled());
        assert_ne!(t.span_id(), "00f067aa0ba902b7");
        let up = t.traceparent();
        let up = up.to_str().unwrap();
        assert!(well_formed(up), "{up}");
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(up.ends_with(&format!("-{}-01", t.span_id())), "{up}");
    }

    #[test]
    fn flags_keep_only_sampled() {
        let v = VALID.replace("-01", "-ff");
        let t = Trace::of(&headers(&[v.as_bytes()]), false);
        assert!(t.continued());
        assert!(t.traceparent().to_str().unwrap().ends_with("-01"));
        let v = VALID.replace("-01", "-02");
        let t = Trace::of(&headers(&[v.as_bytes()]), false);
        assert!(t.traceparent().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn odd_spellings_start_a_new_trace() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = "00f067aa0ba902b7";
        let long = format!("{VALID}{}", "0".repeat(8000));
        let odd: Vec<String> = vec![
            String::new(),
            " ".into(),
            "00".into(),
            VALID.to_uppercase(),
            format!("00-{}-{parent}-01", trace.to_uppercase()),
            format!("00-{trace}-{}-01", parent.to_uppercase()),
            format!("00-{trace}-{parent}-0A"),
            format!("01-{trace}-{parent}-01"),
            format!("ff-{trace}-{parent}-01"),
            format!("0-{trace}-{parent}-01"),
            format!("000-{trace}-{parent}-01"),
            format!("00-{}-{parent}-01", "0".repeat(32)),
            format!("00-{trace}-{}-01", "0".repeat(16)),
            format!("00-{}-{parent}-01", &trace[1..]),
            format!("00-{trace}0-{parent}-01"),
            format!("00-{trace}-{}-01", &parent[1..]),
            format!("00-{trace}-{parent}0-01"),
            format!("00-{trace}-{parent}-1"),
            format!("00-{trace}-{parent}-011"),
            format!("00-{trace}-{parent}-01-extra"),
            format!("00-{trace}-{parent}-01 "),
            format!(" 00-{trace}-{parent}-01"),
            format!("00_{trace}_{parent}_01"),
            format!("00-{trace}-{parent}"),
            format!("00-{trace}--{parent}-01"),
            format!("00-{}g-{parent}-01", &trace[1..]),
            format!("00-{trace}-{parent}-0x"),
            format!("00-{trace}-{parent}-01,00-{trace}-{parent}-01"),
            long,
        ];
        for v in &odd {
            assert!(!well_formed(v), "accepted {v:?}");
            let Ok(value) = HeaderValue::from_bytes(v.as_bytes()) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, value);
            let t = Trace::of(&h, false);
            assert!(!t.continued(), "{v:?}");
            assert_ne!(t.trace_id(), trace, "{v:?}");
        }
        // Bytes a header value may carry but a traceparent may not.
        assert!(parse(&[0xff; LEN]).is_none());
    }

    #[test]
    fn duplicates_start_a_new_trace_even_when_each_is_valid() {
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for pair in [[VALID, other], [VALID, VALID]] {
            let t = Trace::of(&headers(&[pair[0].as_bytes(), pair[1].as_bytes()]), false);
            assert!(!t.continued());
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn absent_starts_a_new_unsampled_trace() {
        let t = Trace::of(&HeaderMap::new(), false);
        assert!(!t.continued());
        assert!(!t.sampled() && t.parent_id().is_none());
        assert!(Trace::of(&HeaderMap::new(), true).sampled());
        let v = t.traceparent();
        let v = v.to_str().unwrap();
        assert!(well_formed(v), "{v}");
        assert!(v.ends_with("-00"), "{v}");
        assert_ne!(
            Trace::start(false).trace_id(),
            Trace::start(false).trace_id()
        );
        assert_ne!(t.span_id(), Trace::of(&HeaderMap::new(), false).span_id());
    }

    #[test]
    fn hex_is_most_significant_first() {
        let mut out = [0u8; 4];
        hex_into(0x1a2b, &mut out);
        assert_eq!(&out, b"1a2b");
    }
}
