//! Where a user may be sent after login or logout (product decision 8).
//!
//! A relative path on this site, or an absolute http(s) URL whose host is on the configured
//! allow-list (exact host, or `.suffix` for any name below it). Everything else — other
//! schemes, protocol-relative `//host`, backslash tricks, userinfo, control characters —
//! falls back to `/`. Browsers strip tabs and newlines from URLs and treat `\` as `/`, so
//! those are refused outright rather than reasoned about.

use url::Url;

/// Allowed hosts for absolute redirect targets.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl RedirectPolicy {
    /// `hosts`: `example.com` (exactly) or `.example.com` (any name below it).
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut p = Self::default();
        for h in hosts {
            let h = h.to_ascii_lowercase();
            if h.starts_with('.') {
                p.suffixes.push(h);
            } else {
                p.exact.push(h);
            }
        }
        p
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.exact.contains(&host)
            || self
                .suffixes
                .iter()
                .any(|s| host.ends_with(s.as_str()) && host.len() > s.len())
    }

    /// The validated target, or `None` (callers fall back to `/`).
    pub fn validate(&self, target: &str) -> Option<String> {
        if target.is_empty() || target.len() > 2048 {
            return None;
        }
        // Whitespace and controls are stripped by browsers (`/\t/evil.com` → `//evil.com`);
        // backslashes are read as slashes. Neither belongs in a redirect we issue.
        if target
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
        if target.starts_with('/') {
            // `//host` is protocol-relative: another site. Anywhere else, `//` only appears in
            // targets built to be re-used as a URL by the app we land on (`/?next=//evil`,
            // `/https://evil`), and dot-segments and markup characters have no place in a
            // return URL we generated.
            if target.contains("//")
                || target.contains(['<', '>', '"', '\'', '`', '{', '}', '|', '^'])
            {
                return None;
            }
            let path = target.split(['?', '#']).next().unwrap_or("");
            if path.split('/').any(|seg| seg == "." || seg == "..") {
                return None;
            }
            // Parse against a dummy base to be sure it stays on this origin.
            let base = Url::parse("http://authgate.invalid/").ok()?;
            let u = base.join(target).ok()?;
            if u.host_str() != Some("authgate.invalid") || u.port().is_some() {
                return None;
            }
            return Some(target.to_string());
        }
        let u = Url::parse(target).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        if !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        // The string must be what the parser understood: no tolerance for fix-ups such as
        // "http:evil.com" or "https:/evil.com".
        let lower = target.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return None;
        }
        let host = u.host_str()?;
        if !self.host_allowed(host) {
            return None;
        }
        Some(u.to_string())
    }

    /// [`RedirectPolicy::validate`] with the `/` fallback.
    pub fn validate_or_root(&self, target: &str) -> String {
        self.validate(target).unwrap_or_else(|| "/".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(["www.whitelisteddomain.tld", "foo.bar", ".apps.example.com"])
    }

    #[test]
    fn relative_paths_are_accepted() {
        let p = policy();
        for ok in ["/", "/app/page?x=1", "/a/b#frag", "/%2F%2Fstill-a-path"] {
            assert_eq!(p.validate(ok).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn allowed_absolute_urls() {
        let p = policy();
        assert_eq!(
            p.validate("https://www.whitelisteddomain.tld/x").as_deref(),
            Some("https://www.whitelisteddomain.tld/x")
        );
        assert!(p.validate("https://a.apps.example.com/").is_some());
        assert!(
            p.validate("https://apps.example.com/").is_none(),
            "suffix is not the apex"
        );
        assert!(p.validate("https://evilapps.example.com/").is_none());
    }

    #[test]
    fn classic_tricks_are_refused() {
        let p = policy();
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/\t/evil.com",
            "https://evil.com",
            "https://www.whitelisteddomain.tld@evil.com",
            "https://evil.com#www.whitelisteddomain.tld",
            "https://www.whitelisteddomain.tld.evil.com",
            "javascript:alert(1)",
            "http:evil.com",
            "https:/evil.com",
            "data:text/html,x",
            "",
        ] {
            assert_eq!(p.validate(bad), None, "{bad}");
            assert_eq!(p.validate_or_root(bad), "/");
        }
    }

    /// The oauth2-proxy open-redirect corpus (MIT, `tests/data/open-redirect-payloads.LICENSE`):
    /// every payload, unescaped once, is refused. Compiled in, so it can never be skipped.
    #[test]
    fn open_redirect_corpus_is_all_refused() {
        let text = include_str!("../../tests/data/open-redirect-payloads.txt");
        let p = policy();
        let mut n = 0;
        let mut accepted = Vec::new();
        for line in text.lines() {
            let raw = line.trim_end_matches('\r');
            let decoded: String =
                url::form_urlencoded::parse(format!("rd={}", raw.replace('&', "%26")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
            if let Some(v) = p.validate(&decoded) {
                accepted.push(format!("{line:?} → {v:?}"));
            }
            n += 1;
        }
        assert!(
            accepted.is_empty(),
            "accepted open redirects:\n{}",
            accepted.join("\n")
        );
        assert_eq!(n, 559, "payload count");
    }
}
