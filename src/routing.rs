//! Route lookup: host first, then the longest path prefix.
//!
//! The table is built once per config load and is read-only afterwards. Hosts resolve in the
//! order exact name → longest `*.suffix` wildcard → routes without a host. The chosen host is
//! final (as a virtual host in nginx or Envoy): when none of its prefixes matches, the answer is
//! "no route" and the gateway returns 404, never some other host's upstream (default deny).
//!
//! Prefixes match on segment boundaries: `/api` matches `/api` and `/api/x` but not `/apix`;
//! `/api/` matches only below `/api/`. Lookup cost is one hash probe per path segment, whatever
//! the number of routes, so 10 000 routes cost the same as 10 (see `benches/hot_path.rs`).

use std::collections::HashMap;

/// Which `Host` values a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// No `host` key: every host not claimed by a more specific pattern.
    Any,
    /// Exact name, lower case, no port.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any name below it, not the apex.
    Wildcard(String),
}

impl HostPattern {
    /// Parse a configured host; `None` if it is not a host name or wildcard. Names go through
    /// the same strict parser as requests, so a pattern is spelled as requests are matched.
    pub fn parse(s: &str) -> Option<Self> {
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let a = crate::host::Authority::parse(name.as_bytes()).ok()?;
        if a.port().is_some() || (wild && a.host().starts_with('[')) {
            return None;
        }
        Some(if wild {
            HostPattern::Wildcard(format!(".{}", a.host()))
        } else {
            HostPattern::Exact(a.host().to_string())
        })
    }
}

/// Routes of one host, keyed by prefix.
#[derive(Debug)]
struct Prefixes<T> {
    by_prefix: HashMap<Box<str>, T>,
}

impl<T> Default for Prefixes<T> {
    fn default() -> Self {
        Self {
            by_prefix: HashMap::new(),
        }
    }
}

impl<T> Prefixes<T> {
    fn longest_match(&self, path: &str) -> Option<&T> {
        if let Some(t) = self.by_prefix.get(path) {
            return Some(t);
        }
        // Walk the segment boundaries from the right; at each '/' try the prefix with and
        // without its trailing slash. Position 0 yields "/" (the catch-all prefix).
        let bytes = path.as_bytes();
        let mut i = bytes.len();
        while i > 0 {
            i -= 1;
            if bytes[i] != b'/' {
                continue;
            }
            if i + 1 < bytes.len() {
                if let Some(t) = self.by_prefix.get(&path[..=i]) {
                    return Some(t);
                }
            }
            if i > 0 {
                if let Some(t) = self.by_prefix.get(&path[..i]) {
                    return Some(t);
                }
            }
        }
        None
    }
}

/// Error from [`RouteTable::insert`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    #[error("another route already has this host and path")]
    Duplicate,
    #[error("path prefix must start with '/'")]
    BadPrefix,
}

/// Host → prefix → `T`.
#[derive(Debug)]
pub struct RouteTable<T> {
    exact: HashMap<Box<str>, Prefixes<T>>,
    wildcard: HashMap<Box<str>, Prefixes<T>>,
    any: Prefixes<T>,
    case_insensitive: bool,
}

impl<T> RouteTable<T> {
    /// `case_insensitive` matches paths without regard to ASCII case, for upstreams (IIS,
    /// case-insensitive file systems) that would otherwise serve `/ADMIN` as `/admin`.
    pub fn new(case_insensitive: bool) -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: Prefixes::default(),
            case_insensitive,
        }
    }

    pub fn insert(
        &mut self,
        host: &HostPattern,
        prefix: &str,
        value: T,
    ) -> Result<(), RouteTableError> {
        if !prefix.starts_with('/') {
            return Err(RouteTableError::BadPrefix);
        }
        let prefixes = match host {
            HostPattern::Any => &mut self.any,
            HostPattern::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostPattern::Wildcard(s) => self.wildcard.entry(s.as_str().into()).or_default(),
        };
        let key: Box<str> = if self.case_insensitive {
            prefix.to_ascii_lowercase().into()
        } else {
            prefix.into()
        };
        if prefixes.by_prefix.contains_key(&key) {
            return Err(RouteTableError::Duplicate);
        }
        prefixes.by_prefix.insert(key, value);
        Ok(())
    }

    fn host_routes(&self, host: &str) -> &Prefixes<T> {
        if let Some(p) = self.exact.get(host) {
            return p;
        }
        if !self.wildcard.is_empty() {
            // ".b.example.com", ".example.com", ".com": longest suffix first.
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(p) = self.wildcard.get(&host[i..]) {
                        return p;
                    }
                }
            }
        }
        &self.any
    }

    /// Find the route for a canonical host (see [`crate::host::Authority::host`]) and a
    /// canonical path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let routes = self.host_routes(host);
        if self.case_insensitive {
            routes.longest_match(&path.to_ascii_lowercase())
        } else {
            routes.longest_match(path)
        }
    }

    pub fn len(&self) -> usize {
        self.any.by_prefix.len()
            + self
                .exact
                .values()
                .chain(self.wildcard.values())
                .map(|p| p.by_prefix.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new(false);
        let any = HostPattern::Any;
        t.insert(&any, "/", "root").unwrap();
        t.insert(&any, "/api", "api").unwrap();
        t.insert(&any, "/api/v2/", "v2").unwrap();
        t.insert(&any, "/public", "public").unwrap();
        let ex = HostPattern::parse("App.Example.com").unwrap();
        t.insert(&ex, "/", "app-root").unwrap();
        t.insert(&ex, "/admin", "app-admin").unwrap();
        let wc = HostPattern::parse("*.example.com").unwrap();
        t.insert(&wc, "/", "wild").unwrap();
        let wc2 = HostPattern::parse("*.deep.example.com").unwrap();
        t.insert(&wc2, "/x", "deep-x").unwrap();
        t
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.lookup("other", "/"), Some(&"root"));
        assert_eq!(t.lookup("other", "/api"), Some(&"api"));
        assert_eq!(t.lookup("other", "/api/"), Some(&"api"));
        assert_eq!(t.lookup("other", "/api/x/y"), Some(&"api"));
        assert_eq!(t.lookup("other", "/apix"), Some(&"root"));
        assert_eq!(t.lookup("other", "/api/v2"), Some(&"api"));
        assert_eq!(t.lookup("other", "/api/v2/"), Some(&"v2"));
        assert_eq!(t.lookup("other", "/api/v2/users"), Some(&"v2"));
        assert_eq!(t.lookup("other", "/publicity"), Some(&"root"));
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let t = table();
        assert_eq!(t.lookup("app.example.com", "/admin/x"), Some(&"app-admin"));
        assert_eq!(t.lookup("app.example.com", "/api"), Some(&"app-root"));
        assert_eq!(t.lookup("foo.example.com", "/api"), Some(&"wild"));
        assert_eq!(t.lookup("a.b.example.com", "/"), Some(&"wild"));
        assert_eq!(t.lookup("example.com", "/api"), Some(&"api"));
        assert_eq!(t.lookup("a.deep.example.com", "/x/1"), Some(&"deep-x"));
        // The most specific host is final: no fallback to a less specific host's routes.
        assert_eq!(t.lookup("a.deep.example.com", "/"), None);
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let mut t = RouteTable::new(false);
        t.insert(&HostPattern::Any, "/only", 1).unwrap();
        assert_eq!(t.lookup("h", "/"), None);
        assert_eq!(t.lookup("h", "/other"), None);
        assert_eq!(t.lookup("h", "/only/x"), Some(&1));
    }

    #[test]
    fn duplicates_rejected() {
        let mut t = RouteTable::new(true);
        t.insert(&HostPattern::Any, "/A", 1).unwrap();
        assert_eq!(
            t.insert(&HostPattern::Any, "/a", 2),
            Err(RouteTableError::Duplicate)
        );
        assert_eq!(t.lookup("h", "/a/B"), Some(&1));
    }

    #[test]
    fn case_sensitive_by_default() {
        let t = table();
        assert_eq!(t.lookup("other", "/API"), Some(&"root"));
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            HostPattern::parse("App.Example.COM."),
            Some(HostPattern::Exact("app.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("[0:0::1]"),
            Some(HostPattern::Exact("[::1]".into()))
        );
        assert!(HostPattern::parse("a.example:80").is_none());
        assert!(HostPattern::parse("").is_none());
        assert!(HostPattern::parse("bad host").is_none());
        assert!(HostPattern::parse("*.").is_none());
        assert!(HostPattern::parse("a.*.com").is_none());
    }
}
