//! Header names the gateway writes on proxied requests and responses, spelled once.
//!
//! Pingora keeps each header's wire spelling beside the header map (case-preserving
//! HTTP/1). Given an `http::HeaderName`, every insert allocates that spelling again; an
//! [`OutName`] keeps it as shared `Bytes`, so writing a header costs a reference count
//! instead. These inserts run several times on every request, so the difference shows in the
//! benchmarks (`benches/load.sh`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// A header name the gateway sets, with its wire spelling prepared. One pointer wide:
/// every cached session and verified token holds one per identity header.
#[derive(Clone, Debug)]
pub struct OutName(Arc<Spelled>);

#[derive(Debug)]
struct Spelled {
    name: HeaderName,
    /// Lower case, as `HeaderName` holds it (what Pingora sent for these names before).
    wire: Bytes,
}

impl OutName {
    pub(crate) fn new(name: HeaderName) -> Self {
        let wire = Bytes::copy_from_slice(name.as_str().as_bytes());
        Self(Arc::new(Spelled { name, wire }))
    }

    /// A configured name sent as spelled (`OIDC_CLAIM_email`, `Remote-User`): legacy apps
    /// may compare names case-sensitively. `spelling` must be the text `name` was parsed from.
    pub(crate) fn with_spelling(name: HeaderName, spelling: &str) -> Self {
        debug_assert!(name.as_str().eq_ignore_ascii_case(spelling));
        let wire = Bytes::copy_from_slice(spelling.as_bytes());
        Self(Arc::new(Spelled { name, wire }))
    }

    /// `s` must be a valid lower-case header name (checked when built, as
    /// `HeaderName::from_static` does).
    pub(crate) fn from_static(s: &'static str) -> Self {
        Self(Arc::new(Spelled {
            name: HeaderName::from_static(s),
            wire: Bytes::from_static(s.as_bytes()),
        }))
    }

    pub(crate) fn name(&self) -> &HeaderName {
        &self.0.name
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        self.0.name.as_str()
    }

    /// Set this header on a request, replacing any value it had.
    pub fn insert(&self, req: &mut RequestHeader, value: HeaderValue) -> pingora::Result<()> {
        req.insert_header(self.0.wire.clone(), value)
    }

    /// Set this header on a response, replacing any value it had.
    pub(crate) fn insert_response(
        &self,
        resp: &mut ResponseHeader,
        value: HeaderValue,
    ) -> pingora::Result<()> {
        resp.insert_header(self.0.wire.clone(), value)
    }
}

impl From<HeaderName> for OutName {
    fn from(name: HeaderName) -> Self {
        Self::new(name)
    }
}

impl PartialEq for OutName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.name == other.0.name
    }
}

impl Eq for OutName {}

impl fmt::Display for OutName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_keeps_the_lower_case_spelling() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-User", "mallory").unwrap();
        let name = OutName::new(HeaderName::from_static("x-forwarded-user"));
        name.insert(&mut req, HeaderValue::from_static("alice"))
            .unwrap();
        assert_eq!(req.headers.get_all("x-forwarded-user").iter().count(), 1);
        assert_eq!(req.headers["x-forwarded-user"], "alice");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-forwarded-user: alice"), "{wire}");
        assert!(!wire.contains("mallory"), "{wire}");
    }

    #[test]
    fn response_insert() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        let name = OutName::from_static("x-request-id");
        name.insert_response(&mut resp, HeaderValue::from_static("abc"))
            .unwrap();
        assert_eq!(resp.headers["x-request-id"], "abc");
        assert_eq!(name.to_string(), "x-request-id");
    }
}
