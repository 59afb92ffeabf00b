//! Where a user may be sent after login or logout (design decision 8).
//!
//! A relative path on this site, or an absolute http(s) URL whose host is on the configured
//! allow-list (exact host, or `.suffix` for any name below it). Everything else — other
//! schemes, protocol-relative `//host`, backslash tricks, userinfo, control characters —
//! falls back to `/`. Browsers strip tabs and newlines from URLs and treat `\` as `/`, so
//! those are refused outright rather than reasoned about.

use url::Url;

/// Allowed hosts for absolute redirect targets.
#[derive(Debug, Clone, Default)]
pub(crate) struct RedirectPolicy {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl RedirectPolicy {
    /// `hosts`: `example.com` (exactly) or `.example.com` (any name below it).
    pub(crate) fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
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
    pub(crate) fn validate(&self, target: &str) -> Option<String> {
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
    pub(crate) fn validate_or_root(&self, target: &str) -> String {
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

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const ALLOWED: [&str; 3] = ["www.whitelisteddomain.tld", "foo.bar", ".apps.example.com"];

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(ALLOWED)
    }

    /// The allow-list, restated independently of `RedirectPolicy`.
    fn on_list(host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == "www.whitelisteddomain.tld"
            || host == "foo.bar"
            || (host.ends_with(".apps.example.com") && host.len() > ".apps.example.com".len())
    }

    /// Strings made mostly of the characters redirect tricks are built from.
    fn tricky_target() -> impl Strategy<Value = String> {
        let prefix = proptest::sample::select(vec![
            "",
            "/",
            "//",
            "/\\",
            "https://",
            "http://",
            "HTTPS://",
            "https:",
            "https:/",
            "https:///",
            "javascript:",
            "https://foo.bar",
            "https://foo.bar@",
            "https://x.apps.example.com",
            "/%2F",
        ]);
        let body = "[a-z./\\\\:@?#%2F5CE \t\r\n]{0,24}";
        prop_oneof![
            (prefix, body).prop_map(|(p, b)| format!("{p}{b}")),
            any::<String>(),
        ]
    }

    /// Targets that ought to be accepted: on-site paths and URLs on the allow-list.
    fn good_target() -> impl Strategy<Value = String> {
        // No dot-segments: those are refused by design.
        let path =
            "(/[a-zA-Z0-9_~-][a-zA-Z0-9_~.-]{0,7}){0,3}/?(\\?[a-z0-9=&%]{0,10})?(#[a-z0-9]{0,6})?";
        let host = prop_oneof![
            proptest::sample::select(vec![
                "www.whitelisteddomain.tld".to_string(),
                "WWW.WhiteListedDomain.TLD".to_string(),
                "foo.bar".to_string(),
            ]),
            "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}".prop_map(|l| format!("{l}.apps.example.com")),
        ];
        let port = proptest::option::of(1u16..=65535);
        let scheme = proptest::sample::select(vec!["http", "https", "HTTPS", "hTtP"]);
        prop_oneof![
            path.prop_map(|p| format!("/{}", p.trim_start_matches('/'))),
            (scheme, host, port, path).prop_map(|(s, h, port, p)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{s}://{h}{port}{p}")
            }),
        ]
    }

    /// A host not on the allow-list, often built to look like one.
    fn evil_host() -> impl Strategy<Value = String> {
        let disguise = proptest::sample::select(vec![
            "",
            "www.whitelisteddomain.tld.",
            "foo.bar.",
            "apps.example.com.",
            "evilapps.example.com.",
            "foo.bar-",
        ]);
        let tld = proptest::sample::select(vec!["com", "evil", "tld", "bar", "example.com"]);
        (disguise, "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", tld)
            .prop_map(|(d, l, t)| format!("{d}{l}.{t}"))
            .prop_filter("must not be on the allow-list", |h| !on_list(h))
    }

    /// Check what an accepted target came out as.
    fn check_accepted(p: &RedirectPolicy, input: &str, out: &str) -> Result<(), TestCaseError> {
        if out.starts_with('/') {
            prop_assert!(!out.starts_with("//"), "{:?} → {:?}", input, out);
            prop_assert!(!out.contains('\\'), "{:?} → {:?}", input, out);
            prop_assert_eq!(out, input);
        } else {
            let lower = out.to_ascii_lowercase();
            prop_assert!(
                lower.starts_with("http://") || lower.starts_with("https://"),
                "{:?} → {:?}",
                input,
                out
            );
            let u = Url::parse(out);
            prop_assert!(u.is_ok(), "{:?} → {:?}", input, out);
            let u = u.unwrap();
            prop_assert!(
                u.username().is_empty() && u.password().is_none(),
                "{:?}",
                out
            );
            prop_assert!(
                u.host_str().is_some_and(on_list),
                "{:?} → {:?} leaves the allow-list",
                input,
                out
            );
        }
        prop_assert!(
            !out.chars().any(|c| c.is_control() || c.is_whitespace()),
            "{:?}",
            out
        );
        // Idempotent: what we would redirect to is itself accepted unchanged.
        let again = p.validate(out);
        prop_assert_eq!(again.as_deref(), Some(out), "{:?}", input);
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_and_accepted_targets_stay_on_the_list(target in tricky_target()) {
            let p = policy();
            if let Some(out) = p.validate(&target) {
                check_accepted(&p, &target, &out)?;
            }
            prop_assert!(!p.validate_or_root(&target).is_empty());
        }

        #[test]
        fn good_targets_are_accepted_and_idempotent(target in good_target()) {
            let p = policy();
            let out = p.validate(&target);
            prop_assert!(out.is_some(), "{:?} refused", target);
            check_accepted(&p, &target, &out.unwrap())?;
        }

        #[test]
        fn evil_hosts_are_refused(
            scheme in proptest::sample::select(vec!["http", "https", "HTTPS", "hTtPs"]),
            userinfo in proptest::sample::select(vec![
                "",
                "www.whitelisteddomain.tld@",
                "www.whitelisteddomain.tld:443@",
                "foo.bar:pass@",
                "x.apps.example.com@",
                "foo.bar%40@",
                "@",
                ":@",
            ]),
            host in evil_host(),
            port in proptest::option::of(1u16..=65535),
            tail in proptest::sample::select(vec![
                "",
                "/",
                "/x?next=https://foo.bar/",
                "#www.whitelisteddomain.tld",
                "?foo.bar",
                "/.foo.bar",
                "#@foo.bar",
                "?@www.whitelisteddomain.tld/",
            ]),
        ) {
            let p = policy();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let target = format!("{scheme}://{userinfo}{host}{port}{tail}");
            prop_assert_eq!(p.validate(&target), None, "{:?}", target);
            prop_assert_eq!(p.validate_or_root(&target), "/");
            // Protocol-relative, backslash and slash-less spellings of the same target.
            for other in [
                format!("//{userinfo}{host}{port}{tail}"),
                format!("{scheme}:\\\\{userinfo}{host}{port}{tail}"),
                format!("{scheme}:/\\{userinfo}{host}{port}{tail}"),
                format!("{scheme}:{userinfo}{host}{port}{tail}"),
                format!("/\\{userinfo}{host}{port}{tail}"),
            ] {
                prop_assert_eq!(p.validate(&other), None, "{:?}", other);
            }
        }
    }
}
