//! Session secrets: IDs, the cookie MAC, store keys and token encryption.
//!
//! - A session ID is 256 bits from the OS CSPRNG (design decision 1).
//! - The cookie carries the ID and an HMAC-SHA256 tag over it, so a forged or tampered cookie
//!   is rejected in memory, before any store round trip.
//! - The store key is SHA-256 of the ID: a Redis dump yields no usable cookie.
//! - Tokens are sealed with ChaCha20-Poly1305 under a key derived (HKDF) from the session
//!   secret, with the store key as associated data so a sealed blob cannot be moved to
//!   another session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::{hkdf, hmac};

use crate::crypto::{random, sha256};

/// Cookie format version prefix; a change of format changes it.
const COOKIE_PREFIX: &str = "v1.";

/// A raw session ID. Never logged, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; 32]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// SHA-256 of a session ID: the store key and the cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IdHash(pub [u8; 32]);

impl IdHash {
    /// The first half, the session cache's key, and the second, which the cached copy keeps
    /// ([`super::UserSession::hash_tail`]) so a lookup is checked against the whole hash. A
    /// 32-byte key costs every cached session ~35 bytes more in the cache's table (which is
    /// half empty after it grows); finding another session's key in 128 bits of SHA-256
    /// would take ~2^108 guesses against a million sessions, and even that is caught by the
    /// check.
    pub fn halves(&self) -> (u128, [u8; 16]) {
        let mut key = [0u8; 16];
        let mut tail = [0u8; 16];
        key.copy_from_slice(&self.0[..16]);
        tail.copy_from_slice(&self.0[16..]);
        (u128::from_le_bytes(key), tail)
    }

    pub(crate) fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl SessionId {
    pub(crate) fn generate() -> Self {
        Self(random())
    }

    pub(crate) fn hash(&self) -> IdHash {
        IdHash(sha256(&self.0))
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Keys derived from the session secret.
pub struct Keys {
    mac: hmac::Key,
    seal: LessSafeKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

impl Keys {
    /// Derive independent MAC and encryption keys from `secret` (≥ 32 bytes, checked at load).
    pub fn derive(secret: &[u8]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"authgate session v1").extract(secret);
        let expand = |info: &[u8]| {
            let mut k = [0u8; 32];
            prk.expand(&[info], Len(32))
                .and_then(|okm| okm.fill(&mut k))
                .expect("32-byte HKDF output is within limits");
            k
        };
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &expand(b"cookie mac"));
        let seal = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &expand(b"token seal")).expect("32-byte key"),
        );
        Self { mac, seal }
    }

    /// The cookie value for a session ID.
    pub(crate) fn cookie_value(&self, id: &SessionId) -> String {
        let tag = hmac::sign(&self.mac, &id.0);
        format!(
            "{COOKIE_PREFIX}{}.{}",
            B64.encode(id.0),
            B64.encode(tag.as_ref())
        )
    }

    /// Parse and authenticate a cookie value (constant-time tag check). `None` for anything
    /// that we did not issue.
    pub fn open_cookie(&self, value: &str) -> Option<SessionId> {
        let rest = value.strip_prefix(COOKIE_PREFIX)?;
        let (id_b64, tag_b64) = rest.split_once('.')?;
        if id_b64.len() != 43 || tag_b64.len() != 43 {
            return None;
        }
        let mut id = [0u8; 32];
        if B64.decode_slice(id_b64, &mut id).ok()? != 32 {
            return None;
        }
        let tag = B64.decode(tag_b64).ok()?;
        hmac::verify(&self.mac, &id, &tag).ok()?;
        Some(SessionId(id))
    }

    /// Encrypt `plain`, bound to `key_hash`. Output: nonce ‖ ciphertext ‖ tag, base64url.
    pub(crate) fn seal(&self, key_hash: &IdHash, plain: &[u8]) -> String {
        let nonce_bytes = random::<NONCE_LEN>();
        let mut buf = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(&key_hash.0),
                &mut buf,
            )
            .expect("in-memory AEAD seal");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        B64.encode(out)
    }

    /// Decrypt what [`Keys::seal`] produced for the same `key_hash`.
    pub(crate) fn open(&self, key_hash: &IdHash, sealed: &str) -> Option<Vec<u8>> {
        let raw = B64.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(&key_hash.0), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_and_forgery() {
        let k = Keys::derive(&[7u8; 32]);
        let id = SessionId::generate();
        let c = k.cookie_value(&id);
        assert_eq!(k.open_cookie(&c), Some(id.clone()));
        // Any change of ID or tag, another key, or garbage: rejected.
        let mut bad = c.clone().into_bytes();
        let i = 5;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open_cookie(std::str::from_utf8(&bad).unwrap()), None);
        assert_eq!(Keys::derive(&[8u8; 32]).open_cookie(&c), None);
        for g in [
            "",
            "v1.",
            "v1.a.b",
            "v2.x.y",
            &c[..c.len() - 1],
            &format!("{c}A"),
        ] {
            assert_eq!(k.open_cookie(g), None, "{g}");
        }
    }

    #[test]
    fn ids_are_random_and_hashes_stable() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.hash(), a.hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().hex().len(), 64);
    }

    #[test]
    fn seal_is_bound_to_the_session() {
        let k = Keys::derive(&[1u8; 32]);
        let h1 = SessionId::generate().hash();
        let h2 = SessionId::generate().hash();
        let s = k.seal(&h1, b"refresh-token");
        assert_eq!(k.open(&h1, &s).unwrap(), b"refresh-token");
        assert!(k.open(&h2, &s).is_none());
        assert!(Keys::derive(&[2u8; 32]).open(&h1, &s).is_none());
        assert_ne!(k.seal(&h1, b"x"), k.seal(&h1, b"x"), "nonces must differ");
    }
}
