//! What a session is: the stored record, and the loaded form the request path uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::crypto::IdHash;
use crate::cache::Tick;
use crate::identity::Claims;

/// Tokens from the provider; stored sealed (encrypted), never sent to the browser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Unix seconds.
    pub access_token_expires_at: Option<u64>,
}

/// The record kept in the store under the hash of the session ID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Record format version.
    pub v: u8,
    pub provider: String,
    pub claims: Claims,
    /// Unix seconds.
    pub created_at: u64,
    /// Absolute expiry, unix seconds, as the creating replica saw it: for display only.
    /// The store enforces the deadline with its own clock.
    pub expires_at: u64,
    /// The provider's session ID (`sid` of the ID token), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Box<str>>,
    /// When the access token expires (unix seconds), in clear so the hot path can decide
    /// about refresh without decrypting the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    /// A refresh token is stored.
    #[serde(default)]
    pub refreshable: bool,
    /// [`Tokens`] as JSON, sealed with the session keys and bound to this record's key;
    /// empty in a loaded copy that does not hold them (`SessionManager::holding_tokens`).
    pub tokens: Box<str>,
}

/// A loaded session: the record plus everything the request path needs, computed once.
#[derive(Debug)]
pub struct UserSession {
    pub hash: IdHash,
    pub record: SessionRecord,
    /// Identity headers for the upstream, ready to insert.
    pub headers: Box<[(crate::out_header::OutName, HeaderValue)]>,
    /// When the store last confirmed this copy.
    pub validated: Validated,
    /// The store revision this was read at (compare-and-set for refresh).
    pub rev: u64,
    /// The absolute deadline on this process's monotonic clock, from the store's count of
    /// time left: a wrong wall clock here cannot stretch it.
    pub deadline: Instant,
    /// The session manager (one per config) that built `headers`: after a reload that
    /// renamed identity headers, a copy built under the old names is never served.
    pub epoch: u64,
}

/// When the store last confirmed a loaded session: set at load, renewed each time the store
/// says the record is unchanged, so a revalidated copy is as fresh as a newly read one. On
/// the caches' clock ([`Tick`]), so a cache hit reads the clock once.
#[derive(Debug)]
pub struct Validated(AtomicU64);

impl Validated {
    pub fn now() -> Self {
        Self(AtomicU64::new(Tick::now().micros()))
    }

    /// How long ago, seen at `now`.
    pub(crate) fn age(&self, now: Tick) -> Duration {
        now.since(Tick::from_micros(self.0.load(Ordering::Relaxed)))
    }

    pub(crate) fn renew(&self) {
        self.0.store(Tick::now().micros(), Ordering::Relaxed);
    }
}
