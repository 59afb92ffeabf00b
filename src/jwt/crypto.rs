//! JWT signature verification with `ring` instead of `jsonwebtoken`'s pure-Rust backend.
//!
//! `jsonwebtoken` 10 takes its cryptography from a process-wide [`CryptoProvider`]. Its
//! `rust_crypto` provider verifies RS256 in ~210 µs and ES256 in ~290 µs here, which makes
//! every uncached bearer token expensive. `ring` (already our HMAC/AEAD/TLS crypto) does the
//! same checks in a fraction of that. This provider verifies the asymmetric algorithms we
//! accept (RS*, PS*, ES256, ES384, EdDSA) with `ring` and leaves signing and everything
//! else (HMAC, JWK utilities) to the `rust_crypto` provider.

use std::sync::OnceLock;

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwkUtils, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components,
        extract_ec_public_key_coordinates: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_ec_public_key_coordinates,
        compute_digest: rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest,
    },
};

/// Make this the process's JWT crypto. Called before any key is built; idempotent.
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if CryptoProvider::install_default(&PROVIDER).is_err() {
            tracing::warn!("JWT crypto provider already chosen; ring verification not installed");
        }
    });
}

enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// PKCS#1 RSAPublicKey DER, an EC point (SEC1) or an Ed25519 key, as `ring` takes them.
    Raw(Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    rsa: Option<&'static sig::RsaParameters>,
    other: Option<&'static dyn sig::VerificationAlgorithm>,
    key: Key,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (&self.key, self.rsa, self.other) {
            (Key::Rsa { n, e }, Some(params), _) => RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .is_ok(),
            (Key::Raw(der), Some(params), _) => UnparsedPublicKey::new(params, der)
                .verify(msg, signature)
                .is_ok(),
            (Key::Raw(bytes), None, Some(alg)) => UnparsedPublicKey::new(alg, bytes)
                .verify(msg, signature)
                .is_ok(),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let rsa: Option<&'static sig::RsaParameters> = match alg {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    let other: Option<&'static dyn sig::VerificationAlgorithm> = match alg {
        Algorithm::ES256 => Some(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Some(&sig::ED25519),
        _ => None,
    };
    if rsa.is_none() && other.is_none() {
        // HMAC: never used for verification here (decision 9), but keep the crate's behaviour.
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    }
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => Key::Rsa {
            n: n.clone(),
            e: e.clone(),
        },
        DecodingKeyKind::SecretOrDer(bytes) => Key::Raw(bytes.clone()),
    };
    Ok(Box::new(RingVerifier {
        alg: *alg,
        rsa,
        other,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::EncodingKey;

    /// Sign with the crate's signer, verify with ours: good signatures pass, any change fails,
    /// and a key of the wrong family is refused.
    #[test]
    fn ring_verifies_what_jsonwebtoken_signs() {
        let ec = rcgen::KeyPair::generate().unwrap();
        let cases = [
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(include_bytes!("../../benches/keys/rsa-bench-only.pem"))
                    .unwrap(),
            ),
            (
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(include_bytes!("../../benches/keys/rsa-bench-only.pem"))
                    .unwrap(),
            ),
            (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            ),
        ];
        for (alg, enc) in cases {
            let jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
            let dec = DecodingKey::from_jwk(&jwk).unwrap();
            let msg = b"header.payload".to_vec();
            let sig = jsonwebtoken::crypto::sign(&msg, &enc, alg).unwrap();
            let raw = jsonwebtoken::signature::Verifier::verify;
            let sig =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            let v = new_verifier(&alg, &dec).unwrap();
            assert!(raw(v.as_ref(), &msg, &sig).is_ok(), "{alg:?} good");
            let mut bad = sig.clone();
            bad[5] ^= 1;
            assert!(
                raw(v.as_ref(), &msg, &bad).is_err(),
                "{alg:?} tampered signature"
            );
            assert!(
                raw(v.as_ref(), b"header.payloaX", &sig).is_err(),
                "{alg:?} other message"
            );
        }
        let rsa = DecodingKey::from_rsa_components("AQAB", "AQAB").unwrap();
        assert!(
            new_verifier(&Algorithm::ES256, &rsa).is_err(),
            "RSA key for ES256"
        );
    }
}
