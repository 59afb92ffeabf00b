//! The identity header namespace: headers only the gateway may set.
//!
//! Upstreams behind the gateway trust headers such as `X-Forwarded-User`, so a client must never
//! be able to send one (design decision 5). Before routing or policy, the proxy glue calls
//! [`IdentityNamespace::strip`] on every request, public routes included. Names are compared in
//! a canonical spelling (ASCII lower case, every non-alphanumeric byte as `-`) because upstream
//! stacks disagree on spelling: CGI and WSGI servers turn `X_Forwarded_User` and
//! `X.Forwarded.User` into the same variable as `X-Forwarded-User`.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};

use crate::forwarded::canonical_byte;
use crate::out_header::OutName;

/// The identity the provider vouched for, as far as the gateway passes it on. Stored as the
/// JSON object [`ClaimsWire`] describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, the user, the email address, the name and the username: see [`UserText`].
    pub text: UserText,
    /// `Some(true)` exactly when there is an email address; `Some(false)`: the provider sent
    /// an address it did not verify, which is not kept.
    pub email_verified: Option<bool>,
    pub groups: crate::strlist::StrList,
    /// Other claims, for policy rules and claim headers (size-capped at login). A session
    /// cache's copy holds only those its config reads (`SessionRecord::trim_for_cache`).
    pub extra: crate::claimmap::ClaimMap,
}

impl Claims {
    /// The provider's `sub`: stable and unique within its issuer, so sessions, refresh and
    /// revocation key on (provider, `sub`). Empty only in records written before it was kept.
    pub fn sub(&self) -> &str {
        self.text.parts().sub
    }

    /// The user as headers and policy show it: the provider's `user_claim` (`sub` by default).
    pub fn subject(&self) -> &str {
        self.text.parts().subject
    }

    /// Only an address the provider verified (`email_verified: true`, or no such claim from
    /// a provider configured with `trust_email`); `None` otherwise.
    pub fn email(&self) -> Option<&str> {
        self.text.parts().email
    }

    pub fn name(&self) -> Option<&str> {
        self.text.parts().name
    }

    pub fn preferred_username(&self) -> Option<&str> {
        self.text.parts().preferred_username
    }

    /// The provider's `sub`, which with the provider is the user for good; records from
    /// before `sub` was kept hold it as the subject (`user_claim` was `sub` then, or sessions
    /// ended at their first refresh).
    pub fn known_sub(&self) -> &str {
        match self.text.parts() {
            p if p.sub.is_empty() => p.subject,
            p => p.sub,
        }
    }
}

/// The strings of an identity: `sub`, the user (its `user_claim`), and the email address,
/// name and username when there are. Every cached session and verified token holds these
/// for as long as it is cached, so they share one block instead of five, and with the
/// default `user_claim` (`sub`) the same string, often a 36-byte UUID, is kept once, not
/// twice. Private: [`UserText::parts`] (and `Claims`' readers) are the only way in, so no
/// field is ever read as another.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserText(
    /// Empty when every part is; otherwise `sub`'s length times two, plus one when the user
    /// is `sub`, then `sub`; then the user's length and text unless it is `sub`; then for the
    /// email address, name and username, 0 when absent or the length plus one, then the text.
    /// Lengths are written as `StrList` writes them. One spelling per identity, so two are
    /// equal exactly when their parts are. Shared, so identity header values can be slices
    /// of it ([`UserText::shared`]) instead of copies; `None` when empty.
    Option<std::sync::Arc<str>>,
);

/// What a [`UserText`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserParts<'a> {
    pub sub: &'a str,
    pub subject: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub preferred_username: Option<&'a str>,
}

impl UserText {
    /// `sub` and the user, with no email address, name or username.
    pub fn new(sub: &str, subject: &str) -> Self {
        Self::from_parts(UserParts {
            sub,
            subject,
            ..UserParts::default()
        })
    }

    pub fn from_parts(p: UserParts) -> Self {
        if p == UserParts::default() {
            return Self::default();
        }
        use crate::strlist::push_len;
        let same = p.sub == p.subject;
        let optional = [p.email, p.name, p.preferred_username];
        let mut text = String::with_capacity(
            p.sub.len()
                + p.subject.len()
                + optional.iter().flatten().map(|s| s.len()).sum::<usize>()
                + 16,
        );
        push_len(&mut text, p.sub.len().saturating_mul(2) | usize::from(same));
        text.push_str(p.sub);
        if !same {
            push_len(&mut text, p.subject.len());
            text.push_str(p.subject);
        }
        for part in optional {
            push_len(&mut text, part.map_or(0, |s| s.len().saturating_add(1)));
            text.push_str(part.unwrap_or(""));
        }
        Self(Some(std::sync::Arc::from(text)))
    }

    /// Every part. Written by `from_parts`, so always well formed; a malformed text (never
    /// made) would read as empty parts rather than panic.
    pub fn parts(&self) -> UserParts<'_> {
        let mut r = Reader(self.0.as_deref().unwrap_or(""));
        let mut p = UserParts::default();
        let Some(first) = r.len() else {
            return p;
        };
        p.sub = r.take(first / 2);
        p.subject = match first & 1 {
            1 => p.sub,
            _ => {
                let n = r.len().unwrap_or(0);
                r.take(n)
            }
        };
        let mut optional = || match r.len() {
            None | Some(0) => None,
            Some(n) => Some(r.take(n - 1)),
        };
        p.email = optional();
        p.name = optional();
        p.preferred_username = optional();
        p
    }

    /// The text, for `bytes::Bytes::from_owner`: header values sliced from it ([`Self::span`])
    /// share this block instead of copying the strings.
    pub(crate) fn shared(&self) -> Option<SharedText> {
        self.0.clone().map(SharedText)
    }

    /// Where `part` (one of [`Self::parts`]) lies in the text; `None` for any other string.
    pub(crate) fn span(&self, part: &str) -> Option<std::ops::Range<usize>> {
        let text = self.0.as_deref()?;
        let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= text.len() && text.get(start..end).is_some()).then_some(start..end)
    }

    /// This identity with `f` applied to its parts (building and tests; never per request).
    pub fn with<'a>(&'a self, f: impl FnOnce(&mut UserParts<'a>)) -> Self {
        let mut p = self.parts();
        f(&mut p);
        Self::from_parts(p)
    }
}

/// [`UserText::shared`]: its text, as `bytes::Bytes::from_owner` takes it.
pub(crate) struct SharedText(std::sync::Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Reads a [`UserText`] front to back.
struct Reader<'a>(&'a str);

impl<'a> Reader<'a> {
    fn len(&mut self) -> Option<usize> {
        let (len, at) = crate::strlist::read_len(self.0.as_bytes())?;
        self.0 = self.0.get(at..)?;
        Some(len)
    }

    fn take(&mut self, n: usize) -> &'a str {
        let part = self.0.get(..n).unwrap_or("");
        self.0 = self.0.get(n..).unwrap_or("");
        part
    }
}

impl std::fmt::Debug for UserText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.parts().fmt(f)
    }
}

/// [`Claims`] as stored (JSON in session records, read and written by every replica, old and
/// new): `sub` and `subject` as two fields, whatever [`UserText`] shares in memory. Read as
/// owned values, written from borrowed ones.
#[derive(Serialize, Deserialize)]
struct ClaimsWire<S, T, G, X: std::borrow::Borrow<crate::claimmap::ClaimMap>> {
    #[serde(default)]
    sub: S,
    subject: S,
    email: T,
    email_verified: Option<bool>,
    name: T,
    preferred_username: T,
    groups: G,
    #[serde(default, skip_serializing_if = "no_extra")]
    extra: X,
}

fn no_extra<X: std::borrow::Borrow<crate::claimmap::ClaimMap>>(x: &X) -> bool {
    x.borrow().is_empty()
}

impl Serialize for Claims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.text.parts();
        ClaimsWire {
            sub: p.sub,
            subject: p.subject,
            email: p.email,
            email_verified: self.email_verified,
            name: p.name,
            preferred_username: p.preferred_username,
            groups: &self.groups,
            extra: &self.extra,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w: ClaimsWire<Box<str>, Option<Box<str>>, crate::strlist::StrList, _> =
            ClaimsWire::deserialize(d)?;
        Ok(Claims {
            text: UserText::from_parts(UserParts {
                sub: &w.sub,
                subject: &w.subject,
                email: w.email.as_deref(),
                name: w.name.as_deref(),
                preferred_username: w.preferred_username.as_deref(),
            }),
            email_verified: w.email_verified,
            groups: w.groups,
            extra: w.extra,
        })
    }
}

/// Defaults compatible with oauth2-proxy's headers plus our own namespace (defined in
/// `config::defaults`).
pub(crate) use crate::config::defaults::{
    IDENTITY_HEADERS as DEFAULT_NAMES, IDENTITY_PREFIXES as DEFAULT_PREFIXES,
};
/// The configured identity header names; this module builds their values.
pub use crate::config::model::IdentityHeaders;

/// Canonical spelling: lower case, anything but `[a-z0-9]` becomes `-`.
pub(crate) fn canonical_name(name: &str) -> String {
    name.bytes().map(|b| canonical_byte(b) as char).collect()
}

/// Header names (exact) and prefixes that belong to the gateway.
#[derive(Debug, Clone)]
pub struct IdentityNamespace {
    names: HashSet<Box<str>>,
    prefixes: Vec<Box<str>>,
    /// The first bytes (canonical) of every name and prefix: most of a request's headers
    /// (`accept`, `sec-fetch-*`, `user-agent` …) start with none of them and are passed
    /// without hashing.
    first: FirstBytes,
}

/// A set of bytes.
#[derive(Debug, Clone, Default)]
struct FirstBytes([u64; 4]);

impl FirstBytes {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn of<'a>(entries: impl Iterator<Item = &'a Box<str>>) -> Self {
        let mut set = Self::default();
        for e in entries {
            match e.bytes().next() {
                Some(b) => set.insert(b),
                // An empty prefix matches every name.
                None => set.0 = [u64::MAX; 4],
            }
        }
        set
    }
}

impl IdentityNamespace {
    pub(crate) fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut out = Self {
            names: names
                .into_iter()
                .map(|n| canonical_name(n).into())
                .collect(),
            prefixes: prefixes
                .into_iter()
                .map(|p| canonical_name(p).into())
                .collect(),
            first: FirstBytes::default(),
        };
        out.index();
        out
    }

    fn index(&mut self) {
        self.first = FirstBytes::of(self.names.iter().chain(&self.prefixes));
    }

    /// The namespace a config asks for: its `[headers]` names and prefixes, plus every header
    /// the gateway sets itself (identity headers, the assertion), whatever the namespace says.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        let ns = &config.identity_namespace;
        let mut out = Self::new(
            ns.names.iter().map(String::as_str),
            ns.prefixes.iter().map(String::as_str),
        );
        for h in config.identity_headers.names() {
            out.insert(h.as_str());
        }
        out.insert(config.assertion.header.as_str());
        // Claim headers: every name any route may set, on every route (one namespace), and
        // the claim prefix as a prefix. `Authorization` is never among them: clients send it.
        for c in config
            .routes
            .iter()
            .filter_map(|r| r.claim_headers.as_deref())
        {
            for n in c.names() {
                out.insert(n);
            }
            if let Some(p) = &c.prefix {
                out.insert_prefix(p);
            }
        }
        out
    }

    fn insert_prefix(&mut self, prefix: &str) {
        let p: Box<str> = canonical_name(prefix).into();
        if !self.prefixes.contains(&p) {
            self.prefixes.push(p);
        }
        self.index();
    }

    /// Add a name, e.g. a configured output header, so it is stripped from clients too.
    pub(crate) fn insert(&mut self, name: &str) {
        self.names.insert(canonical_name(name).into());
        self.index();
    }

    /// Whether `name` in any spelling belongs to the namespace.
    pub fn contains(&self, name: &str) -> bool {
        match name.bytes().next() {
            Some(b) if self.first.contains(canonical_byte(b)) => {}
            // No name or prefix starts so (none is empty: an empty prefix admits every byte).
            Some(_) => return false,
            None => return self.contains_slow(name),
        }
        // Canonicalise on the stack: this runs for every header of every request.
        let mut buf = [0u8; 96];
        let canon: &str = if name.len() <= buf.len() {
            for (dst, b) in buf.iter_mut().zip(name.bytes()) {
                *dst = canonical_byte(b);
            }
            // Only ASCII bytes were written.
            std::str::from_utf8(&buf[..name.len()]).unwrap_or("")
        } else {
            return self.contains_slow(name);
        };
        self.names.contains(canon) || self.prefixes.iter().any(|p| canon.starts_with(&**p))
    }

    fn contains_slow(&self, name: &str) -> bool {
        let canon = canonical_name(name);
        self.names.contains(canon.as_str()) || self.prefixes.iter().any(|p| canon.starts_with(&**p))
    }

    /// Remove every header of the namespace (all values, all spellings). Returns how many
    /// distinct names were removed, for the log line.
    pub fn strip(&self, req: &mut RequestHeader) -> usize {
        let doomed: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| self.contains(n.as_str()))
            .cloned()
            .collect();
        for name in &doomed {
            req.remove_header(name);
        }
        doomed.len()
    }
}

impl Default for IdentityNamespace {
    fn default() -> Self {
        Self::new(
            DEFAULT_NAMES.iter().copied(),
            DEFAULT_PREFIXES.iter().copied(),
        )
    }
}

/// A header value from a claim, exactly as the provider wrote it (UTF-8 passed as bytes, as
/// oauth2-proxy does), or `None` when it cannot go into a header as it is: see
/// [`is_sendable`].
pub(crate) fn claim_value(s: &str) -> Option<HeaderValue> {
    if !is_sendable(s) {
        return None;
    }
    HeaderValue::from_bytes(s.as_bytes()).ok()
}

/// Whether a claim's text can be a header value as it is: not empty, no control character
/// (CR, LF, NUL, ... would end a header or start another), no whitespace at either end (a
/// header value keeps none: `alice\u{a0}` would arrive as `alice`). Such a value is not sent
/// rather than cleaned: cleaned, `alice\u{7}` or ` admins` would be another user's name or
/// another group's.
pub(crate) fn is_sendable(s: &str) -> bool {
    let trimmed = |c: char| c.is_whitespace() || is_invisible(c);
    !s.is_empty()
        && !s.chars().any(char::is_control)
        && !s.starts_with(trimmed)
        && !s.ends_with(trimmed)
}

/// Characters that show nothing and that some trims remove too (JavaScript's `trim` takes
/// U+FEFF): Unicode's default-ignorable code points, which `char::is_whitespace` leaves.
/// At either end of a name they would make `alice\u{feff}` arrive as `alice` to such an app.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e0fff}')
}

impl IdentityHeaders {
    /// The identity headers for `claims` that `provider` vouched for, ready to insert.
    /// Exactly as long as it needs to be: cached sessions and tokens each hold one.
    ///
    /// No value is a block of its own: a value sent exactly as the claims keep it is a slice
    /// of the claims' own text (their [`UserText`], or the groups' joined spelling), and the
    /// rest (cleaned values, the provider) are slices of one buffer. Every cached session and
    /// token holds these for its lifetime.
    pub fn values(&self, provider: &str, claims: &Claims) -> Box<[(OutName, HeaderValue)]> {
        enum Value {
            /// Cleaned into a copy, kept in one buffer with the other copies.
            Text(String),
            /// Exactly as the claims keep it: a slice of their [`UserText`].
            Part(std::ops::Range<usize>),
            Shared(bytes::Bytes),
        }
        // Most values are sent exactly as the claims keep them: each then shares the
        // claims' own block instead of a copy (compared byte for byte, not assumed).
        let string = |raw: Option<&str>| {
            let raw = raw.filter(|r| is_sendable(r))?;
            Some(match claims.text.span(raw) {
                Some(span) => Value::Part(span),
                None => Value::Text(raw.to_string()),
            })
        };
        // The groups too (`StrList`'s joined spelling), the largest part of an identity.
        let joined = self.groups_joined(claims);
        let groups = is_sendable(&joined).then(|| match claims.groups.joined() {
            Some(j) if j.as_str() == joined => Value::Shared(bytes::Bytes::from_owner(j)),
            _ => Value::Text(joined),
        });
        let wanted: Vec<(&OutName, Value)> = [
            (
                self.provider.as_ref(),
                is_sendable(provider).then(|| Value::Text(provider.to_string())),
            ),
            (Some(&self.user), string(Some(claims.subject()))),
            (Some(&self.email), string(claims.email())),
            (Some(&self.groups), groups),
            (
                Some(&self.preferred_username),
                string(claims.preferred_username()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name?, value?)))
        .collect();
        let texts = wanted.iter().filter_map(|(_, v)| match v {
            Value::Text(t) => Some(t),
            _ => None,
        });
        let mut buf = Vec::with_capacity(texts.clone().map(String::len).sum());
        texts.for_each(|t| buf.extend_from_slice(t.as_bytes()));
        let buf = bytes::Bytes::from(buf);
        let parts = wanted
            .iter()
            .any(|(_, v)| matches!(v, Value::Part(_)))
            .then(|| claims.text.shared().map(bytes::Bytes::from_owner))
            .flatten()
            .unwrap_or_default();
        let mut start = 0;
        let mut out = Vec::with_capacity(wanted.len());
        for (name, value) in wanted {
            let bytes = match value {
                Value::Text(t) => {
                    start += t.len();
                    buf.slice(start - t.len()..start)
                }
                Value::Part(span) if span.end <= parts.len() => parts.slice(span),
                Value::Part(_) => continue,
                Value::Shared(b) => b,
            };
            // Checked as `HeaderValue::from_bytes` checks a claim's value on its own.
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes) {
                out.push((name.clone(), v));
            }
        }
        out.into_boxed_slice()
    }

    /// The groups header's text: filtered, comma-joined, and cut at a group boundary to
    /// `max_groups_bytes`. A name that cannot be one item as it is (a comma in it, a control
    /// character, whitespace at either end: see [`is_sendable`]) is left out, not cleaned:
    /// `ad,mins` or ` admins` would arrive as `admins` to an app that splits and trims.
    fn groups_joined(&self, claims: &Claims) -> String {
        let mut joined = String::new();
        let (mut kept, mut eligible) = (0usize, 0usize);
        for g in claims.groups.iter() {
            if self
                .groups_filter
                .as_ref()
                .is_some_and(|re| !re.is_match(g))
            {
                continue;
            }
            if !is_sendable(g) || g.contains(',') {
                tracing::debug!(sub = %claims.sub(), "a group name with a comma, a control character or whitespace at an end is not sent");
                continue;
            }
            eligible += 1;
            let extra = g.len() + usize::from(!joined.is_empty());
            if joined.len() + extra > self.max_groups_bytes {
                continue;
            }
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(g);
            kept += 1;
        }
        if kept < eligible {
            tracing::warn!(
                sub = %claims.sub(),
                user = %claims.subject(),
                forwarded = kept,
                groups = eligible,
                max_bytes = self.max_groups_bytes,
                "groups header truncated: set headers.groups_filter or max_groups_bytes"
            );
        }
        joined
    }

    /// All names, so the namespace strips client copies of each.
    pub(crate) fn names(&self) -> Vec<&HeaderName> {
        let mut names = vec![
            self.user.name(),
            self.email.name(),
            self.groups.name(),
            self.preferred_username.name(),
            self.access_token.name(),
        ];
        names.extend(self.provider.as_ref().map(OutName::name));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part reads back as given, in every shape: `sub` and the user equal, either or
    /// both empty, one a prefix of the other; each optional part absent, empty or odd; odd
    /// characters, lengths across the length-byte boundaries. Two are equal exactly when
    /// their parts are, and they are stored as the separate fields they always were.
    #[test]
    fn user_text_reads_back_and_stores_as_separate_fields() {
        let long = "x".repeat(300);
        let odd = ["", "alice", "alic", "é,\u{0}", long.as_str(), "a\"b"];
        let opt = [
            None,
            Some(""),
            Some("alice"),
            Some(long.as_str()),
            Some("\u{7f}ü"),
        ];
        let mut all = Vec::new();
        for sub in odd {
            for subject in odd {
                for (i, email) in opt.iter().enumerate() {
                    // The other two optional parts vary with the email's.
                    let (name, username) = (opt[(i + 1) % opt.len()], opt[(i + 3) % opt.len()]);
                    all.push(UserParts {
                        sub,
                        subject,
                        email: *email,
                        name,
                        preferred_username: username,
                    });
                }
            }
        }
        let texts: Vec<UserText> = all.iter().map(|p| UserText::from_parts(*p)).collect();
        for (p, t) in all.iter().zip(&texts) {
            assert_eq!(t.parts(), *p);
            let c = Claims {
                text: t.clone(),
                ..Claims::default()
            };
            assert_eq!(
                (
                    c.sub(),
                    c.subject(),
                    c.email(),
                    c.name(),
                    c.preferred_username()
                ),
                (p.sub, p.subject, p.email, p.name, p.preferred_username)
            );
            let json = serde_json::to_value(&c).unwrap();
            let field = |s: Option<&str>| s.map_or(serde_json::Value::Null, Into::into);
            assert_eq!(
                [
                    &json["sub"],
                    &json["subject"],
                    &json["email"],
                    &json["name"],
                    &json["preferred_username"]
                ],
                [
                    &p.sub.into(),
                    &p.subject.into(),
                    &field(p.email),
                    &field(p.name),
                    &field(p.preferred_username)
                ]
            );
            let back: Claims = serde_json::from_value(json).unwrap();
            assert_eq!(back, c);
        }
        for (i, a) in texts.iter().enumerate() {
            for (j, b) in texts.iter().enumerate().skip(i) {
                assert_eq!(a == b, all[i] == all[j], "{:?} {:?}", all[i], all[j]);
            }
        }
        assert_eq!(UserText::default(), UserText::new("", ""));
        assert_eq!(UserText::default().parts(), UserParts::default());
        let t = UserText::new("s", "u").with(|p| p.email = Some("e"));
        assert_eq!(t.with(|p| p.email = None), UserText::new("s", "u"));
        // Records from before `sub` was kept have no such field.
        let old: Claims = serde_json::from_str(
            r#"{"subject":"u","email":null,"email_verified":null,"name":null,"preferred_username":null,"groups":[]}"#,
        )
        .unwrap();
        assert_eq!((old.sub(), old.subject(), old.known_sub()), ("", "u", "u"));
    }

    /// The strings share one block, and the same string as `sub` and as the user (the
    /// default `user_claim`) is in it once.
    #[test]
    fn the_same_sub_and_user_take_one_block() {
        let uuid = "f1e2d3c4-0000-4a5b-9c8d-7e6f5a4b3c2d";
        let same = UserText::new(uuid, uuid);
        let other = UserText::new(uuid, "alice@example.com");
        // The length (36 * 2 + 1 = 73: 0x40 | 9, then 1), the UUID once, then three absent
        // parts.
        let text = |t: &UserText| t.0.as_deref().unwrap_or("").to_string();
        assert_eq!(text(&same), format!("\u{49}\u{1}{uuid}\0\0\0"));
        assert_eq!(
            text(&other),
            format!("\u{48}\u{1}{uuid}\u{11}alice@example.com\0\0\0")
        );
        let full = same.with(|p| {
            p.email = Some("a@x");
            p.name = Some("");
        });
        assert_eq!(text(&full), format!("\u{49}\u{1}{uuid}\u{4}a@x\u{1}\0"));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<UserText>(), 16);
    }

    /// The namespace built from a config strips the configured names and prefixes, our own
    /// prefix, and every header the gateway sets, even ones outside the namespace.
    #[test]
    fn namespace_from_config_covers_what_the_gateway_sets() {
        let src = "[headers]\nidentity_headers = [\"x-a\"]\nidentity_prefixes = [\"x-pre-\"]\nuser = \"x-who\"\nprovider = \"x-idp\"\n[assertion]\nheader = \"x-proof\"\n";
        let c = crate::config::parse(std::path::Path::new("t.toml"), src).unwrap();
        let ns = IdentityNamespace::from_config(&c);
        for h in [
            "X-A",
            "x-pre-anything",
            "x-authgate-x",
            "X_Who",
            "x-idp",
            "x-proof",
            "x-forwarded-email",
        ] {
            assert!(ns.contains(h), "{h}");
        }
        for h in ["x-forwarded-user", "remote-user", "x-other"] {
            assert!(!ns.contains(h), "{h}");
        }
    }

    #[test]
    fn every_spelling_matches() {
        let ns = IdentityNamespace::default();
        for n in [
            "x-forwarded-user",
            "X-Forwarded-User",
            "x_forwarded_user",
            "X_FORWARDED-USER",
            "x.forwarded.user",
            "x-auth-request-email",
            "X_Auth_Request_Groups",
            "x-authgate-anything",
            "remote-user",
            "Remote_User",
        ] {
            assert!(ns.contains(n), "{n}");
        }
        for n in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "accept",
            "x-user-agent",
        ] {
            assert!(!ns.contains(n), "{n}");
        }
        let long = format!("x-authgate-{}", "a".repeat(200));
        assert!(ns.contains(&long));
    }

    #[test]
    fn the_first_byte_filter_never_changes_an_answer() {
        let spaces = [
            IdentityNamespace::default(),
            IdentityNamespace::new(["_user", "9id", "Zed", "a"], ["-x-", "Q"]),
            IdentityNamespace::new(["x-user"], [""]),
            IdentityNamespace::new([], []),
        ];
        let mut names: Vec<String> = [
            "x-forwarded-user",
            "_user",
            "-user",
            ".user",
            "9ID",
            "zed",
            "ZED",
            "a",
            "A",
            "b",
            "-x-y",
            "_x_y",
            "qq",
            "Q",
            "accept",
            "sec-fetch-site",
            "remote_user",
            "x",
            "-",
            "_",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every first byte, before a few tails.
        names.push(String::new());
        for b in 0u8..=255 {
            for tail in ["", "user", "-x-", "-forwarded-user"] {
                let mut n = String::new();
                n.push(char::from(b));
                n.push_str(tail);
                names.push(n);
            }
        }
        for ns in &spaces {
            for n in &names {
                assert_eq!(ns.contains(n), ns.contains_slow(n), "{n:?} in {ns:?}");
            }
        }
        // An empty prefix takes every name.
        assert!(spaces[2].contains("accept") && spaces[2].contains("_"));
        assert!(!spaces[3].contains("x-user"));
    }

    #[test]
    fn claim_values_cannot_inject_headers() {
        // Sent exactly as written, or not at all: cleaned, a value would be another one.
        for odd in [
            "a\r\nX-Evil: 1",
            "\r\n\0",
            "alice\u{7}",
            "alice\u{a0}",
            " alice",
            "alice\t",
            "\u{2003}alice",
            "ali\u{85}ce",
            "alice\u{7f}",
            "alice\u{feff}",
            "\u{2060}alice",
            "alice\u{180e}",
            "\u{200b}alice",
            "alice\u{ad}",
            "alice\u{e0041}",
            "\u{202e}alice",
            "",
        ] {
            assert!(claim_value(odd).is_none(), "{odd:?}");
            assert!(!is_sendable(odd), "{odd:?}");
        }
        for fine in [
            "zo\u{eb}@example.com",
            "alice smith",
            "a\u{a0}b",
            "日本",
            "a\u{200b}b",
        ] {
            assert_eq!(claim_value(fine).unwrap().as_bytes(), fine.as_bytes());
        }
        let claims = Claims {
            text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                sub: "",
                subject: "alice",
                email: Some("a@x\n"),
                ..Default::default()
            }),
            groups: ["a,b", "c"].into_iter().collect(),
            ..Claims::default()
        };
        let h = IdentityHeaders::default();
        let v = h.values("p", &claims);
        let get = |n: &OutName| v.iter().find(|(m, _)| m == n).map(|(_, v)| v.clone());
        assert_eq!(get(&h.user).unwrap(), "alice");
        assert_eq!(get(&h.email), None, "an email with a newline is not sent");
        assert_eq!(
            get(&h.groups).unwrap(),
            "c",
            "a group with a comma is left out"
        );
        // Groups that would arrive as another group are left out; the rest go as written.
        let claims = Claims {
            text: crate::identity::UserText::new("", "u"),
            groups: [
                " admins",
                "admins ",
                "ad,mins",
                "adm\u{0}ins",
                "",
                "dev",
                "ops team",
            ]
            .into_iter()
            .collect(),
            ..Claims::default()
        };
        assert_eq!(h.groups_joined(&claims), "dev,ops team");
    }

    #[test]
    fn groups_are_filtered_and_bounded() {
        let claims = Claims {
            text: crate::identity::UserText::new("", "u"),
            groups: (0..1000).map(|i| format!("group-{i:04}")).collect(),
            ..Claims::default()
        };
        let h = IdentityHeaders::default();
        let v = h.groups_joined(&claims);
        assert!(v.len() <= crate::config::defaults::MAX_GROUPS_BYTES);
        assert!(v
            .split(',')
            .all(|g| g.starts_with("group-") && g.len() == 10));
        let only = IdentityHeaders {
            groups_filter: Some(regex::Regex::new("^group-0(1|2)").unwrap()),
            ..IdentityHeaders::default()
        };
        assert_eq!(only.groups_joined(&claims).split(',').count(), 200);
    }

    /// The groups header shares the claims' block exactly when it sends that very text:
    /// plain names with no filter and within the size bound. Filtered, truncated, cleaned
    /// (control characters, surrounding space) or packed lists get their own copy, and
    /// either way the value is what `groups_joined` and `claim_value` make.
    #[test]
    fn the_groups_value_shares_the_claims_text_only_when_it_is_that_text() {
        let many: Vec<String> = (0..1000).map(|i| format!("group-{i:04}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let lists: [(&[&str], bool); 12] = [
            (&["team-00", "team-01"], true),
            (&["team-00"], true),
            (&["g"], true),
            (&["é", "日本", "a b"], true),
            (&[" lead", "tail "], false),
            (&["a\u{1}b", "c"], false),
            (&["x\ny"], false),
            (&["a,b", "c"], false),
            (&["", "c"], false),
            (&["\u{7f}"], false),
            (&many, false),
            (&[], false),
        ];
        let plain = IdentityHeaders::default();
        let filtered = IdentityHeaders {
            groups_filter: Some(regex::Regex::new("^team-00$").unwrap()),
            ..IdentityHeaders::default()
        };
        for (groups, shares) in lists {
            let claims = Claims {
                text: UserText::new("s", "u"),
                groups: groups.iter().collect(),
                ..Claims::default()
            };
            for (h, filtering) in [(&plain, false), (&filtered, true)] {
                let values = h.values("p", &claims);
                let got = values.iter().find(|(n, _)| n.as_str() == h.groups.as_str());
                let want = claim_value(&h.groups_joined(&claims));
                assert_eq!(got.map(|(_, v)| v), want.as_ref(), "{groups:?}");
                let shared = got.is_some_and(|(_, v)| {
                    claims
                        .groups
                        .joined()
                        .is_some_and(|j| j.as_str().as_ptr() == v.as_bytes().as_ptr())
                });
                // The filter keeps `team-00` alone: only that list passes it whole.
                let expect = shares && (!filtering || groups == ["team-00"]);
                assert_eq!(shared, expect, "{groups:?}, filter {filtering}");
                // The user's value is still what it was.
                assert_eq!(
                    values
                        .iter()
                        .find(|(n, _)| n.as_str() == h.user.as_str())
                        .map(|(_, v)| v.as_bytes()),
                    Some(&b"u"[..])
                );
            }
        }
    }

    /// The user, email and username values are slices of the claims' own block when they
    /// send them unchanged, and copies when cleaning changed them; either way, what
    /// `claim_value` makes of each.
    #[test]
    fn string_values_share_the_claims_text_only_when_unchanged() {
        let h = IdentityHeaders {
            provider: Some(OutName::from_static("x-auth-provider")),
            ..IdentityHeaders::default()
        };
        let cases = [
            (
                "f1e2d3c4-0000-4a5b-9c8d-7e6f5a4b3c2d",
                Some("a@x"),
                Some("ann"),
                [true, true, true],
            ),
            (
                "alice",
                Some(" a@x"),
                Some("ann\u{1}"),
                [true, false, false],
            ),
            (" alice ", None, Some(""), [false, false, false]),
            ("é", Some("日本@x"), None, [true, true, false]),
        ];
        for (user, email, username, shared) in cases {
            let claims = Claims {
                text: UserText::from_parts(UserParts {
                    sub: user,
                    subject: user,
                    email,
                    preferred_username: username,
                    ..UserParts::default()
                }),
                ..Claims::default()
            };
            let text = claims.text.0.clone().unwrap();
            let values = h.values("corp", &claims);
            let get = |n: &OutName| {
                values
                    .iter()
                    .find(|(m, _)| m.as_str() == n.as_str())
                    .map(|(_, v)| v)
            };
            for ((name, raw), share) in [
                (&h.user, Some(user)),
                (&h.email, email),
                (&h.preferred_username, username),
            ]
            .into_iter()
            .zip(shared)
            {
                let v = get(name);
                assert_eq!(v, raw.and_then(claim_value).as_ref(), "{raw:?}");
                let inside = v.is_some_and(|v| {
                    let (p, t) = (v.as_bytes().as_ptr() as usize, text.as_ptr() as usize);
                    p >= t && p + v.len() <= t + text.len()
                });
                assert_eq!(inside, share, "{raw:?}");
            }
            assert_eq!(get(h.provider.as_ref().unwrap()).unwrap(), "corp");
        }
    }

    /// Every value as `claim_value` makes it on its own, whatever the claims hold: control
    /// characters, surrounding space, empty or all-control values (no header), UTF-8.
    #[test]
    fn values_from_one_buffer_equal_each_claim_alone() {
        let odd = [
            "alice",
            " bob ",
            "\tcarol\r\n",
            "\u{0}",
            "",
            "  ",
            "é\u{7f}ü",
            "x\ny",
            "\u{1b}[31mred",
        ];
        let h = IdentityHeaders {
            provider: Some(OutName::from_static("x-auth-provider")),
            ..IdentityHeaders::default()
        };
        for (i, a) in odd.iter().enumerate() {
            for b in odd.iter().skip(i % 3) {
                let claims = Claims {
                    text: crate::identity::UserText::from_parts(crate::identity::UserParts {
                        sub: "",
                        subject: a,
                        email: Some(b),
                        preferred_username: Some(&*format!("{b}{a}")),
                        ..Default::default()
                    }),
                    groups: [*a, *b, "g"].into_iter().collect(),
                    ..Claims::default()
                };
                let got: Vec<(String, HeaderValue)> = h
                    .values(b, &claims)
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), v.clone()))
                    .collect();
                let alone: Vec<(String, HeaderValue)> = [
                    ("x-auth-provider", claim_value(b)),
                    (h.user.as_str(), claim_value(a)),
                    (h.email.as_str(), claim_value(b)),
                    (h.groups.as_str(), claim_value(&h.groups_joined(&claims))),
                    (
                        h.preferred_username.as_str(),
                        claim_value(&format!("{b}{a}")),
                    ),
                ]
                .into_iter()
                .filter_map(|(n, v)| Some((n.to_string(), v?)))
                .collect();
                assert_eq!(got, alone, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn strip_removes_duplicates_and_variants() {
        let ns = IdentityNamespace::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-User", "a").unwrap();
        req.append_header("x-forwarded-user", "b").unwrap();
        req.append_header("X_Forwarded_User", "c").unwrap();
        req.append_header("X-Auth-Request-Email", "d").unwrap();
        req.append_header("Accept", "*/*").unwrap();
        assert_eq!(ns.strip(&mut req), 3);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.get("accept").is_some());
    }
}
