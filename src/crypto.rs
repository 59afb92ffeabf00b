//! Small cryptographic and clock helpers shared across the crate: randomness, digests,
//! base64url, constant-time comparison, unix time. A leaf: it imports nothing from the crate,
//! so `jwt`, `assertion`, `identity` and `oidc` use it without depending on sessions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes from the OS CSPRNG.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SystemRandom reads getrandom(2); failure means the OS cannot give randomness at all.
    SystemRandom::new()
        .fill(&mut b)
        .expect("OS random number generator failed");
    b
}

/// 256 random bits, base64url: for `state`, nonces, PKCE verifiers.
pub(crate) fn random_token() -> String {
    B64.encode(random::<32>())
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 over a sequence of parts, each written after its length: no choice of strings
/// makes two different sequences hash alike (joined with a separator, a part holding it
/// would). Fed piece by piece, so a cache key built from a request costs no buffer.
pub(crate) struct PartsHash(digest::Context);

impl PartsHash {
    pub(crate) fn new() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }

    /// A count or marker, as 8 little-endian bytes.
    pub(crate) fn word(&mut self, n: u64) -> &mut Self {
        self.0.update(&n.to_le_bytes());
        self
    }

    /// `bytes` after its length.
    pub(crate) fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.word(bytes.len() as u64);
        self.0.update(bytes);
        self
    }

    /// `bytes` as they are: only as the last part, whose end is the input's.
    pub(crate) fn last(mut self, bytes: &[u8]) -> [u8; 32] {
        self.0.update(bytes);
        self.finish()
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// Unpadded base64url (RFC 4648 §5), as JWTs and PKCE use it.
pub(crate) fn b64url(data: &[u8]) -> String {
    B64.encode(data)
}

/// PKCE S256 challenge for a verifier (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    B64.encode(sha256(verifier.as_bytes()))
}

/// Constant-time string equality for secrets (state, nonce).
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Seconds since the unix epoch on this machine's clock (0 if the clock is before 1970).
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn ct_eq_compares_whole_strings() {
        assert!(ct_eq("state-1", "state-1"));
        assert!(!ct_eq("state-1", "state-2"));
        assert!(!ct_eq("state", "state-1"));
        assert!(!ct_eq("", "x"));
    }
}
