//! Limits on the request head: how large, and how many header lines.
//!
//! Pingora alone reads request heads of up to about 1 MiB and 256 header lines and forwards
//! them whole, so a 128 KiB cookie would reach the upstream. nginx and Envoy stop at 8–60 KiB;
//! the gateway stops at `[server] max_request_header_bytes` (default 32 KiB) and
//! `max_request_headers` (default 100), checked once per request by [`check`] before anything
//! else reads the head, and answered with 431.

use pingora::http::RequestHeader;

/// Default of `[server] max_request_header_bytes`: 32 KiB, between nginx's 8 KiB buffers and
/// Envoy's 60 KiB, room for a session cookie beside several large third-party ones.
pub(crate) const DEFAULT_MAX_BYTES: usize = 32 * 1024;
/// Smallest accepted `max_request_header_bytes`: below 1 KiB ordinary browser requests fail.
pub(crate) const MIN_MAX_BYTES: usize = 1024;
/// Largest accepted `max_request_header_bytes`: Pingora's own bound on a request head (1 MiB).
pub(crate) const MAX_MAX_BYTES: usize = 1024 * 1024;

/// Default of `[server] max_request_headers`: 100 header lines, as Envoy (browsers send 10–20).
pub(crate) const DEFAULT_MAX_HEADERS: usize = 100;
/// Smallest accepted `max_request_headers`: a browser request alone has about 8.
pub(crate) const MIN_MAX_HEADERS: usize = 8;
/// Largest accepted `max_request_headers`: Pingora's own bound (256 lines).
pub(crate) const MAX_MAX_HEADERS: usize = 256;

/// Bounds of one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes of the head, counted as on the HTTP/1.1 wire (see [`head_size`]).
    pub(crate) max_bytes: usize,
    /// Header lines; a name sent twice counts twice.
    pub(crate) max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why a head is refused (both answered with 431 Request Header Fields Too Large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("request header fields too large")]
    HeadTooLarge,
    #[error("too many request header fields")]
    TooManyHeaders,
}

/// The size of `req`'s head roughly as on the HTTP/1.1 wire: method, request target (as
/// sent), and for each header line `name: value` plus CRLF. The request line's spaces,
/// version and the final CRLF are left out: a constant the bounds absorb. HTTP/2 heads are
/// counted the same way (HPACK-decoded), which is what the upstream receives.
pub(crate) fn head_size(req: &RequestHeader) -> usize {
    req.headers.iter().fold(
        req.method.as_str().len() + req.raw_path().len(),
        |acc, (name, value)| acc + name.as_str().len() + value.len() + 4,
    )
}

/// Whether `req`'s head is within `limits`. One pass over the headers, no allocation; the
/// line count is checked first (it is free: `HeaderMap::len` counts every value).
pub fn check(req: &RequestHeader, limits: HeadLimits) -> Result<(), LimitExceeded> {
    if req.headers.len() > limits.max_headers {
        return Err(LimitExceeded::TooManyHeaders);
    }
    if head_size(req) > limits.max_bytes {
        return Err(LimitExceeded::HeadTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, String)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), v.as_str()).unwrap();
        }
        r
    }

    #[test]
    fn size_is_counted_as_on_the_wire() {
        let r = req("/a?b=c", &[("host", "h".into()), ("x-a", "12".into())]);
        // "GET" + "/a?b=c" + "host: h\r\n" + "x-a: 12\r\n"
        assert_eq!(head_size(&r), 3 + 6 + (4 + 1 + 4) + (3 + 2 + 4));
    }

    #[test]
    fn at_the_byte_limit_passes_one_over_fails() {
        let base = req("/", &[("cookie", String::new())]);
        let fixed = head_size(&base);
        let limits = HeadLimits::default();
        let fill = limits.max_bytes - fixed;
        let at = req("/", &[("cookie", "a".repeat(fill))]);
        assert_eq!(head_size(&at), limits.max_bytes);
        assert_eq!(check(&at, limits), Ok(()));
        let over = req("/", &[("cookie", "a".repeat(fill + 1))]);
        assert_eq!(check(&over, limits), Err(LimitExceeded::HeadTooLarge));
        // The request target counts too.
        let long_target = format!("/{}", "p".repeat(fill + 1));
        let over = req(&long_target, &[("cookie", String::new())]);
        assert_eq!(check(&over, limits), Err(LimitExceeded::HeadTooLarge));
    }

    #[test]
    fn a_128_kib_cookie_is_refused() {
        let r = req(
            "/",
            &[("cookie", "s=".to_string() + &"x".repeat(128 * 1024))],
        );
        assert_eq!(
            check(&r, HeadLimits::default()),
            Err(LimitExceeded::HeadTooLarge)
        );
    }

    #[test]
    fn header_lines_are_counted_with_duplicates() {
        let limits = HeadLimits::default();
        let distinct = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("x-h{i}"), "v".into())).collect()
        };
        let same = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| ("x-dup".into(), i.to_string())).collect()
        };
        let as_req = |h: Vec<(String, String)>| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for (k, v) in h {
                r.append_header(k, v.as_str()).unwrap();
            }
            r
        };
        assert_eq!(check(&as_req(distinct(100)), limits), Ok(()));
        assert_eq!(
            check(&as_req(distinct(101)), limits),
            Err(LimitExceeded::TooManyHeaders)
        );
        // 101 lines of one name are 101 lines.
        let dup = as_req(same(101));
        assert_eq!(dup.headers.keys_len(), 1);
        assert_eq!(check(&dup, limits), Err(LimitExceeded::TooManyHeaders));
        assert_eq!(check(&as_req(same(100)), limits), Ok(()));
    }

    #[test]
    fn configured_in_server_section() {
        use std::path::Path;
        let parse = |src: &str| crate::config::parse(Path::new("t.toml"), src);
        assert_eq!(parse("").unwrap().server.head_limits, HeadLimits::default());
        let c =
            parse("[server]\nmax_request_header_bytes = 8192\nmax_request_headers = 50\n").unwrap();
        assert_eq!(
            c.server.head_limits,
            HeadLimits {
                max_bytes: 8192,
                max_headers: 50
            }
        );
        let bounds =
            parse("[server]\nmax_request_header_bytes = 1024\nmax_request_headers = 256\n")
                .unwrap();
        assert_eq!(bounds.server.head_limits.max_bytes, MIN_MAX_BYTES);
        assert_eq!(bounds.server.head_limits.max_headers, MAX_MAX_HEADERS);
        for (src, key, line) in [
            (
                "[server]\nthreads = 2\nmax_request_header_bytes = 1023\n",
                "server.max_request_header_bytes",
                3,
            ),
            (
                "[server]\nmax_request_header_bytes = 1048577\n",
                "server.max_request_header_bytes",
                2,
            ),
            (
                "[server]\nmax_request_header_bytes = -1\n",
                "server.max_request_header_bytes",
                2,
            ),
            (
                "[server]\n\nmax_request_headers = 7\n",
                "server.max_request_headers",
                3,
            ),
            (
                "[server]\nmax_request_headers = 257\n",
                "server.max_request_headers",
                2,
            ),
        ] {
            let e = parse(src).unwrap_err().0;
            assert_eq!(e.len(), 1, "{src}");
            assert_eq!((e[0].key.as_str(), e[0].line), (key, line), "{src}");
            assert!(e[0].message.contains("between"), "{}", e[0]);
        }
    }

    #[test]
    fn defaults_are_within_bounds() {
        let d = HeadLimits::default();
        assert!((MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&d.max_bytes));
        assert!((MIN_MAX_HEADERS..=MAX_MAX_HEADERS).contains(&d.max_headers));
        assert_eq!(
            LimitExceeded::HeadTooLarge.to_string(),
            "request header fields too large"
        );
    }
}
