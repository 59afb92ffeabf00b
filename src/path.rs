//! Canonical request paths.
//!
//! Every request path is normalised exactly once, at the top of the request flow, and both the
//! route decision and the upstream request use the result (design decision 7). A path that could
//! mean different things to the gateway and to the upstream is rejected instead of guessed at:
//! encoded `/`, `\` or NUL, raw backslashes, control bytes, malformed escapes and (by default) `;`
//! path parameters, which servlet containers strip before routing (`/public/..;/admin`).

use std::fmt;

/// Knobs of the normaliser, validated at config load. Both default to the strict `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathOptions {
    /// Accept `;` in paths. Off by default: Tomcat/Jetty treat `;...` as a path parameter and
    /// strip it, so `/public/..;/admin` would be `/admin` to them but `/public/...` to us.
    pub(crate) allow_semicolon: bool,
    /// Accept `%2F` / `%5C` (kept encoded). Off by default: some upstreams decode them into
    /// separators after our routing decision.
    pub(crate) allow_encoded_slash: bool,
}

/// Why a path was refused; every variant maps to `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("encoded '/' or '\\' in path")]
    EncodedSeparator,
    #[error("NUL or control character in path")]
    ControlChar,
    #[error("backslash in path")]
    Backslash,
    #[error("';' path parameter in path")]
    Semicolon,
    #[error("non-ASCII byte in path")]
    NonAscii,
}

/// A normalised path: starts with `/`, no empty, `.` or `..` segments, only escapes for
/// characters that are not unreserved (RFC 3986 §2.3), hex digits in upper case.
#[derive(Clone, PartialEq, Eq)]
pub struct CanonicalPath(String);

impl CanonicalPath {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Normalise `raw` (the path component only: no query, no fragment).
pub fn normalize(raw: &str, opts: PathOptions) -> Result<CanonicalPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }

    // Pass 1: decode unreserved escapes, canonicalise the others, refuse ambiguous bytes.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (h, l) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => (h, l),
                    _ => return Err(PathError::BadEscape),
                };
                let v = match (hex_val(h), hex_val(l)) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => return Err(PathError::BadEscape),
                };
                match v {
                    b'/' | b'\\' if !opts.allow_encoded_slash => {
                        return Err(PathError::EncodedSeparator)
                    }
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlChar),
                    v if is_unreserved(v) => decoded.push(v),
                    v => decoded.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[(v >> 4) as usize],
                        HEX_UPPER[(v & 0xf) as usize],
                    ]),
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' if !opts.allow_semicolon => return Err(PathError::Semicolon),
            0x00..=0x1f | 0x7f => return Err(PathError::ControlChar),
            0x80..=0xff => return Err(PathError::NonAscii),
            _ => decoded.push(b),
        }
        i += 1;
    }

    // Pass 2: split on '/', drop empty and '.' segments, resolve '..' (clamped at the root,
    // as RFC 3986 §5.2.4 does). A trailing slash is kept: `/a/` and `/a` may differ upstream.
    let trailing_slash = decoded.len() > 1
        && (decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/.."));
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            // With `;` allowed, `..;x` must not survive as a dot-segment in disguise.
            s if opts.allow_semicolon
                && matches!(s.split(|&b| b == b';').next(), Some(b".." | b".")) =>
            {
                return Err(PathError::Semicolon)
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Only ASCII bytes survive pass 1.
        out.push_str(std::str::from_utf8(s).map_err(|_| PathError::NonAscii)?);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(CanonicalPath(out))
}

/// `path` without `prefix`, when `prefix` ends at a segment boundary of it: the rest (`/x`,
/// `/`, or empty for the prefix itself). `/app` strips from `/app` and `/app/x`, never from
/// `/apple`. `case_insensitive`: ASCII case is ignored (as routes are, with
/// `paths.case_insensitive`).
pub(crate) fn strip_segment_prefix<'a>(
    path: &'a str,
    prefix: &str,
    case_insensitive: bool,
) -> Option<&'a str> {
    let head = path.get(..prefix.len())?;
    let same = if case_insensitive {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    let rest = &path[prefix.len()..];
    (same && (rest.is_empty() || rest.starts_with('/'))).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, PathOptions::default()).map(|c| c.0)
    }

    #[test]
    fn identity_on_canonical_paths() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/a%20b", "/~user/x-y_z.txt"] {
            assert_eq!(n(p).unwrap(), p);
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/public/../admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2E%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/.%2e/admin").unwrap(), "/admin");
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("///a//b///").unwrap(), "/a/b/");
        assert_eq!(n("/a/./b/.").unwrap(), "/a/b/");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("/.").unwrap(), "/");
    }

    #[test]
    fn escapes_are_canonical() {
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
        assert_eq!(n("/a%3bb").unwrap(), "/a%3Bb");
        assert_eq!(n("/%7e").unwrap(), "/~");
        assert_eq!(n("/%c3%a9").unwrap(), "/%C3%A9");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%00"), Err(PathError::ControlChar));
        assert_eq!(n("/a%0d%0a"), Err(PathError::ControlChar));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/public/..;/admin"), Err(PathError::Semicolon));
        assert_eq!(n("/admin;jsessionid=1"), Err(PathError::Semicolon));
        assert_eq!(n("/a%"), Err(PathError::BadEscape));
        assert_eq!(n("/a%g1"), Err(PathError::BadEscape));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn options_relax_rules() {
        let o = PathOptions {
            allow_semicolon: true,
            allow_encoded_slash: true,
        };
        assert_eq!(normalize("/a;b", o).unwrap().as_str(), "/a;b");
        assert_eq!(normalize("/a%2fb", o).unwrap().as_str(), "/a%2Fb");
        assert_eq!(normalize("/p/..;/admin", o), Err(PathError::Semicolon));
        assert_eq!(normalize("/p/.;x/admin", o), Err(PathError::Semicolon));
    }

    #[test]
    fn idempotent() {
        for p in ["/a/../b//c/./", "/%2e%2e/x", "/x%41%3b", "/a/b/.."] {
            let once = n(p).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{p}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::routing::{HostPattern, RouteTable};
    use proptest::prelude::*;

    fn options() -> impl Strategy<Value = PathOptions> {
        (any::<bool>(), any::<bool>()).prop_map(|(s, e)| PathOptions {
            allow_semicolon: s,
            allow_encoded_slash: e,
        })
    }

    /// Strings made mostly of the characters the normaliser treats specially.
    fn tricky_path() -> impl Strategy<Value = String> {
        prop_oneof![
            "/[/.%2eEfF5cC;a\\\\0~x]{0,30}",
            "[/.%2eEfF5cC;a\\\\0~x]{0,30}",
            any::<String>(),
        ]
    }

    /// Segments whose meaning the reference model below knows: plain names, dot-segments
    /// spelled raw or percent-encoded, encoded unreserved letters, empty segments.
    const SEGMENTS: &[(&str, &str)] = &[
        ("admin", "admin"),
        ("public", "public"),
        ("api", "api"),
        ("v2", "v2"),
        ("x", "x"),
        ("", ""),
        (".", "."),
        ("..", ".."),
        ("%2e", "."),
        ("%2E%2e", ".."),
        (".%2e", ".."),
        ("%2e.", ".."),
        ("%61dmin", "admin"),
        ("adm%49n", "admIn"),
        ("adm%69n", "admin"),
        ("%7e", "~"),
        ("a%20b", "a%20b"),
        ("a%3bb", "a%3Bb"),
    ];

    /// An independent reading of RFC 3986 §5.2.4 over already-decoded segments.
    fn reference(decoded: &[&str]) -> String {
        let mut stack: Vec<&str> = Vec::new();
        for &s in decoded {
            match s {
                "" | "." => {}
                ".." => {
                    stack.pop();
                }
                s => stack.push(s),
            }
        }
        let trailing = matches!(decoded.last(), Some(&("" | "." | "..")));
        let mut out = String::new();
        for s in &stack {
            out.push('/');
            out.push_str(s);
        }
        if out.is_empty() || trailing {
            out.push('/');
        }
        out
    }

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new(false);
        let any = HostPattern::Any;
        for (prefix, name) in [
            ("/", "root"),
            ("/admin", "admin"),
            ("/admin/", "admin-below"),
            ("/public", "public"),
            ("/api/v2/", "v2"),
            ("/~", "tilde"),
        ] {
            t.insert(&any, prefix, name).unwrap();
        }
        t
    }

    fn check_canonical(c: &str, opts: PathOptions) -> Result<(), TestCaseError> {
        prop_assert!(c.starts_with('/'), "{:?}", c);
        prop_assert!(!c.contains("//"), "{:?}", c);
        prop_assert!(
            !c.split('/').any(|seg| seg == "." || seg == ".."),
            "dot-segment in {:?}",
            c
        );
        prop_assert!(
            c.bytes().all(|b| b.is_ascii_graphic()),
            "control, space or non-ASCII in {:?}",
            c
        );
        prop_assert!(!c.contains('\\'), "{:?}", c);
        if !opts.allow_encoded_slash {
            let upper = c.to_ascii_uppercase();
            prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{:?}", c);
        }
        if !opts.allow_semicolon {
            prop_assert!(!c.contains(';'), "{:?}", c);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_and_output_is_canonical(raw in tricky_path(), opts in options()) {
            if let Ok(c) = normalize(&raw, opts) {
                check_canonical(c.as_str(), opts)?;
            }
        }

        #[test]
        fn idempotent(raw in tricky_path(), opts in options()) {
            if let Ok(c) = normalize(&raw, opts) {
                let again = normalize(c.as_str(), opts);
                prop_assert_eq!(again.as_ref(), Ok(&c), "{:?}", raw);
            }
        }

        #[test]
        fn route_decision_is_that_of_the_canonical_form(raw in tricky_path(), opts in options()) {
            let t = table();
            if let Ok(c) = normalize(&raw, opts) {
                let again = normalize(c.as_str(), opts).unwrap();
                prop_assert_eq!(
                    t.lookup("h", c.as_str()),
                    t.lookup("h", again.as_str()),
                    "{:?}",
                    raw
                );
            }
        }

        /// Paths built from known segments normalise to what the reference model says, so the
        /// route decided on the raw path is the one a dot-resolving upstream would serve.
        #[test]
        fn matches_reference_model(
            picks in proptest::collection::vec(0..SEGMENTS.len(), 0..8),
            opts in options(),
        ) {
            let raw = format!(
                "/{}",
                picks.iter().map(|&i| SEGMENTS[i].0).collect::<Vec<_>>().join("/")
            );
            let decoded: Vec<&str> = picks.iter().map(|&i| SEGMENTS[i].1).collect();
            let want = reference(&decoded);
            let got = normalize(&raw, opts);
            prop_assert_eq!(got.as_ref().map(CanonicalPath::as_str), Ok(want.as_str()), "{:?}", raw);
            let t = table();
            prop_assert_eq!(t.lookup("h", got.unwrap().as_str()), t.lookup("h", &want));
        }
    }
}
