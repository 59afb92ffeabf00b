//! What a session is: the stored record, and the loaded form the request path uses.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    pub provider: Box<str>,
    pub claims: Claims,
    /// Unix seconds.
    pub created_at: u64,
    /// Absolute expiry, unix seconds, as the creating replica saw it: for display only.
    /// The store enforces the deadline with its own clock.
    pub expires_at: u64,
    /// The provider's session ID (`sid` of the ID token), for back-channel logout, which
    /// finds sessions by the store's index: a cached copy does not keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Box<str>>,
    /// When the access token expires (unix seconds), in clear so the hot path can decide
    /// about refresh without decrypting the tokens. Non-zero so the option takes 8 bytes, not
    /// 16 (see `user_session_fits_its_allocator_block`); a stored 0 reads as 1, as long past.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "unix_secs"
    )]
    pub access_expires_at: Option<NonZeroU64>,
    /// A refresh token is stored.
    #[serde(default)]
    pub refreshable: bool,
    /// [`Tokens`] as JSON, sealed with the session keys and bound to this record's key;
    /// empty in a loaded copy that does not hold them (`SessionManager::holding_tokens`).
    pub tokens: Box<str>,
}

impl SessionRecord {
    /// Make this the copy a session cache keeps: what the request path reads. The sealed
    /// tokens only when `tokens` (a route sends them on every request; refresh and logout read
    /// the store), the other claims `read` names, and no `sid` (back-channel logout finds
    /// sessions by the store's index). Never written back: a refresh reads the whole record.
    pub fn trim_for_cache(&mut self, tokens: bool, read: &crate::claimmap::ClaimsRead) {
        if !tokens {
            self.tokens = Box::default();
        }
        self.claims.extra.keep(read);
        self.sid = None;
    }
}

/// A unix time in seconds as [`SessionRecord::access_expires_at`] keeps it: 0, the one value
/// it cannot hold, becomes 1, which is as far in the past.
pub fn unix_secs_nonzero(secs: u64) -> NonZeroU64 {
    NonZeroU64::new(secs).unwrap_or(NonZeroU64::MIN)
}

fn unix_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NonZeroU64>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(unix_secs_nonzero))
}

/// A loaded session: the record plus everything the request path needs, computed once.
#[derive(Debug)]
pub struct UserSession {
    pub record: SessionRecord,
    /// Identity headers for the upstream, ready to insert.
    pub headers: Box<[(crate::out_header::OutName, HeaderValue)]>,
    /// When the store last confirmed this copy.
    pub validated: Validated,
    /// The store revision this was read at (compare-and-set for refresh).
    pub rev: u64,
    /// The absolute deadline on this process's monotonic clock, from the store's count of
    /// time left: a wrong wall clock here cannot stretch it. A [`Tick`] (8 bytes), not an
    /// `Instant` (16): see `user_session_fits_its_allocator_block`.
    pub deadline: Tick,
    /// The session manager (one per config) that built this copy: after a reload, a copy
    /// built under the old config (its identity header names, the claims it kept: see
    /// [`SessionRecord::trim_for_cache`]) is never served.
    pub epoch: u64,
    /// The whole stored record, as a refresh reads it; `false` for a cache's trimmed copy,
    /// which is never written back (`SessionManager::update` refuses it).
    pub whole: bool,
    /// The half of its ID's hash the session cache's key is not (see `IdHash::halves`).
    pub hash_tail: [u8; 16],
}

/// A loaded session as the request path passes it on: the shared copy, and the hash of the
/// ID that names it. The hash travels here, not in the copy: the cache holds half of it as
/// the copy's key and the copy the other half, so every cached session holds it once (see
/// `user_session_fits_its_allocator_block`).
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub hash: IdHash,
    pub copy: Arc<UserSession>,
}

impl std::ops::Deref for SessionRef {
    type Target = UserSession;

    fn deref(&self) -> &UserSession {
        &self.copy
    }
}

impl SessionRef {
    /// The same copy of the same session (not merely equal records).
    pub fn same(&self, other: &Self) -> bool {
        self.hash == other.hash && Arc::ptr_eq(&self.copy, &other.copy)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cached session is one `Arc<UserSession>` for as long as it is cached (a million
    /// of them in a large deployment). With the `Arc`'s two counts it fits mimalloc's 224-byte
    /// size class; at 225 bytes or more it takes the 256-byte one, 32 bytes more per session.
    /// A field added here should be paid for elsewhere in the struct. (Sizes of a 64-bit
    /// target.)
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn user_session_fits_its_allocator_block() {
        let arc = std::mem::size_of::<UserSession>() + 2 * std::mem::size_of::<usize>();
        assert!(arc <= 224, "Arc<UserSession> is {arc} bytes");
    }

    /// Records in the store are read and written by every replica, old and new: the compact
    /// types (`UserText`, both spellings of `StrList`, `ClaimMap`, `NonZeroU64`, `Box<str>`)
    /// must write back, byte for byte, what the `String`, `Vec<String>`, `BTreeMap` and `u64`
    /// fields wrote.
    #[test]
    fn stored_records_read_and_write_back_byte_for_byte() {
        let full = concat!(
            r#"{"v":2,"provider":"corp","claims":{"sub":"s-1","subject":"ada@example.com","#,
            r#""email":"ada@example.com","email_verified":true,"name":"Ada Lovelace","#,
            r#""preferred_username":"ada","groups":["admins","","dev ops","é,ü"],"#,
            r#""extra":{"acr":"1","family_name":"Lovelace","given_name":"Ada","#,
            r#""realm_access":{"roles":["a","b"]},"session_state":"x-y","ü":null}},"#,
            r#""created_at":1800000000,"expires_at":18446744073709551615,"sid":"sid-1","#,
            r#""access_expires_at":18446744073709551615,"refreshable":true,"tokens":"sealed"}"#
        );
        let bare = concat!(
            r#"{"v":2,"provider":"p","claims":{"sub":"","subject":"u","email":null,"#,
            r#""email_verified":null,"name":null,"preferred_username":null,"groups":[]},"#,
            r#""created_at":0,"expires_at":0,"refreshable":false,"tokens":""}"#
        );
        // `sub` that is also the user, groups in the joined spelling, an empty name.
        let keycloak = concat!(
            r#"{"v":2,"provider":"kc","claims":{"sub":"f1e2d3c4-0000-4a5b-9c8d-7e6f5a4b3c2d","#,
            r#""subject":"f1e2d3c4-0000-4a5b-9c8d-7e6f5a4b3c2d","email":"a@x","#,
            r#""email_verified":true,"name":"","preferred_username":null,"#,
            r#""groups":["team-00","team-01"]},"created_at":1,"expires_at":2,"refreshable":false,"#,
            r#""tokens":"t"}"#
        );
        for stored in [full, bare, keycloak] {
            let r: SessionRecord = serde_json::from_str(stored).unwrap();
            assert_eq!(serde_json::to_string(&r).unwrap(), stored);
        }
        // Written by a version before `sub` was kept, and with the optional keys absent.
        let old = r#"{"v":1,"provider":"p","claims":{"subject":"u","groups":["g"]},"created_at":0,"expires_at":0,"tokens":""}"#;
        let r: SessionRecord = serde_json::from_str(old).unwrap();
        assert_eq!((r.claims.sub(), r.claims.subject()), ("", "u"));
        assert!(r.claims.email().is_none() && r.claims.extra.is_empty() && !r.refreshable);
        assert_eq!(r.claims.groups.iter().collect::<Vec<_>>(), ["g"]);
    }

    #[test]
    fn access_expiry_reads_as_stored_and_zero_as_long_past() {
        let record = |exp: &str| {
            let json = format!(
                r#"{{"v":2,"provider":"p","claims":{{"subject":"u","email":null,"email_verified":null,"name":null,"preferred_username":null,"groups":[]}},"created_at":1,"expires_at":2{exp},"tokens":""}}"#
            );
            serde_json::from_str::<SessionRecord>(&json)
                .map(|r| r.access_expires_at.map(NonZeroU64::get))
                .map_err(|e| e.to_string())
        };
        assert_eq!(record(""), Ok(None));
        assert_eq!(record(r#","access_expires_at":null"#), Ok(None));
        assert_eq!(
            record(r#","access_expires_at":1800000300"#),
            Ok(Some(1_800_000_300))
        );
        assert_eq!(record(r#","access_expires_at":0"#), Ok(Some(1)));
        assert!(record(r#","access_expires_at":-1"#).is_err());
        assert!(record(r#","access_expires_at":"5""#).is_err());
        // Written back as the number it was read as.
        let r: SessionRecord = serde_json::from_str(
            &serde_json::to_string(&SessionRecord {
                v: 2,
                provider: "p".into(),
                claims: Claims::default(),
                created_at: 1,
                expires_at: 2,
                sid: None,
                access_expires_at: Some(unix_secs_nonzero(77)),
                refreshable: false,
                tokens: Box::default(),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.access_expires_at.map(NonZeroU64::get), Some(77));
        assert_eq!(unix_secs_nonzero(0).get(), 1);
    }
}
