//! Canonical request paths.
//!
//! Every request path is normalised exactly once, at the top of the request flow, and both the
//! route decision and the upstream request use the result (product decision 7). A path that could
//! mean different things to the gateway and to the upstream is rejected instead of guessed at:
//! encoded `/`, `\` or NUL, raw backslashes, control bytes, malformed escapes and (by default) `;`
//! path parameters, which servlet containers strip before routing (`/public/..;/admin`).

use std::fmt;

/// Knobs of the normaliser, validated at config load. Both default to the strict `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathOptions {
    /// Accept `;` in paths. Off by default: Tomcat/Jetty treat `;...` as a path parameter and
    /// strip it, so `/public/..;/admin` would be `/admin` to them but `/public/...` to us.
    pub allow_semicolon: bool,
    /// Accept `%2F` / `%5C` (kept encoded). Off by default: some upstreams decode them into
    /// separators after our routing decision.
    pub allow_encoded_slash: bool,
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
    pub fn as_str(&self) -> &str {
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
