//! Standard Webhooks signing and verification, both sides: `whsec_` secrets, the
//! `webhook-signature` header (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`), several
//! secrets at once for rotation, and a configurable timestamp tolerance.
//!
//! Written here rather than taken from the `standardwebhooks` crate, which was judged against
//! what a benchmark's provider and consumers need: it fixes the tolerance as a constant, holds
//! one secret per instance (so neither signing with two secrets during a rotation nor
//! verifying against any of several fits it), and reads the clock itself (so tests cannot fix
//! "now"). The published test vector is kept as a test.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use thiserror::Error;

use super::per_event::PerEvent;

/// The shortest and longest keys accepted, bytes (the spec's range).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// One signing key (`whsec_` + base64 of 24 to 64 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

/// Text that is not a usable `whsec_` secret.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid webhook secret: {0}")]
pub struct SecretError(String);

impl Secret {
    /// A fresh random 24-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 24];
        rand::rng().fill(&mut key[..]);
        Self { key }
    }

    /// The secret in its `whsec_` text form, as a provider shows it to consumers.
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", BASE64.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// One `v1,` signature: base64 HMAC-SHA256 of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.strip_prefix("whsec_").ok_or_else(|| {
            SecretError("expected `whsec_` followed by base64 of 24 to 64 bytes".into())
        })?;
        let key = BASE64
            .decode(encoded)
            .map_err(|e| SecretError(format!("the part after `whsec_` is not base64 ({e})")))?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SecretError(format!(
                "the key is {} bytes; Standard Webhooks keys are 24 to 64",
                key.len()
            )));
        }
        Ok(Self { key })
    }
}

impl fmt::Debug for Secret {
    // A secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The secrets in use: a provider signs with every one (during a rotation, the old and the
/// new), a consumer accepts a delivery signed by any. Text form: `whsec_` secrets separated by
/// white space, as in a secrets file. Serialised in that form for the typed protocol between
/// `run` and its children (never argv).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// One fresh random secret.
    pub fn generate() -> Self {
        Self(vec![Secret::generate()])
    }

    /// The secrets in their text form, separated by spaces.
    pub fn to_whsec(&self) -> String {
        let all: Vec<String> = self.0.iter().map(Secret::to_whsec).collect();
        all.join(" ")
    }

    /// The `webhook-signature` value: one `v1,` signature per secret, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let all: Vec<String> = self.0.iter().map(|s| s.sign(id, timestamp, body)).collect();
        all.join(" ")
    }

    /// Checks a delivery's headers and body as a Standard Webhooks consumer must: all three
    /// headers present, the timestamp no further than `tolerance` from `now_secs` either way
    /// (an old one is a replay, a future one a forgery or a broken clock), and one of the
    /// space-separated `v1,` signatures made by one of these secrets (compared in constant
    /// time).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
        tolerance: Duration,
    ) -> Result<(), VerifyError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(VerifyError::MissingHeader(name))
        };
        let id = header("webhook-id")?;
        let timestamp: i64 = header("webhook-timestamp")?
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        let tolerance_secs = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        if now_secs.saturating_sub(timestamp) > tolerance_secs {
            return Err(VerifyError::Expired { tolerance });
        }
        if timestamp.saturating_sub(now_secs) > tolerance_secs {
            return Err(VerifyError::FutureDated { tolerance });
        }
        let signatures = header("webhook-signature")?;
        let tags: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|candidate| candidate.strip_prefix("v1,"))
            .filter_map(|encoded| BASE64.decode(encoded).ok())
            .collect();
        if !signatures.split(' ').any(|c| c.starts_with("v1,")) {
            return Err(VerifyError::MalformedSignature);
        }
        for secret in &self.0 {
            let mac = secret.mac(id, timestamp, body);
            if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatch)
    }
}

impl From<Secret> for Secrets {
    fn from(secret: Secret) -> Self {
        Self(vec![secret])
    }
}

impl FromStr for Secrets {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let secrets = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<Secret>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError("no `whsec_` secret given".into()));
        }
        Ok(Self(secrets))
    }
}

impl From<Secrets> for String {
    fn from(secrets: Secrets) -> String {
        secrets.to_whsec()
    }
}

impl TryFrom<String> for Secrets {
    type Error = SecretError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} ..)", self.0.len())
    }
}

/// A provider's signatures, shared between its endpoints: every endpoint gets the same event
/// with the same `webhook-id` at about the same second, so each event is signed once per
/// timestamp, not once per endpoint and attempt.
pub struct SharedSignatures {
    secrets: Secrets,
    /// Each recent event's signature at its latest timestamp.
    signed: PerEvent<i64, axum::http::HeaderValue>,
}

impl SharedSignatures {
    /// Signatures by `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets,
            signed: PerEvent::new(),
        }
    }

    /// The `webhook-signature` header of a one-off delivery (not an event of the stream, so
    /// not kept for the other endpoints).
    pub fn sign_once(&self, id: &str, timestamp: i64, body: &[u8]) -> axum::http::HeaderValue {
        // Base64 and `v1,` are ASCII: always a valid header value.
        axum::http::HeaderValue::from_str(&self.secrets.sign(id, timestamp, body))
            .expect("a signature is ASCII")
    }

    /// The `webhook-signature` header of event `seq` (id `id`, body `body`) at `timestamp`.
    pub fn sign(&self, seq: u64, id: &str, timestamp: i64, body: &[u8]) -> axum::http::HeaderValue {
        self.signed.get_or_make(seq, timestamp, || {
            // Base64 and `v1,` are ASCII: always a valid header value.
            axum::http::HeaderValue::from_str(&self.secrets.sign(id, timestamp, body))
                .expect("a signature is ASCII")
        })
    }
}

/// Why a delivery was refused with 401.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A required Standard Webhooks header is absent (or not text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    /// The timestamp is older than the tolerance: a replay, or a badly slow clock.
    #[error("webhook-timestamp is more than {tolerance:?} old")]
    Expired {
        /// The tolerance it broke.
        tolerance: Duration,
    },
    /// The timestamp is further ahead than the tolerance.
    #[error("webhook-timestamp is more than {tolerance:?} in the future")]
    FutureDated {
        /// The tolerance it broke.
        tolerance: Duration,
    },
    /// No `v1,` signature in the header.
    #[error("webhook-signature has no v1 signature")]
    MalformedSignature,
    /// Signatures present, none valid for this body under any of the secrets.
    #[error("no webhook-signature matches the body")]
    NoMatch,
}

/// Seconds since the Unix epoch, the `webhook-timestamp` unit.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    /// The signer reproduces the Standard Webhooks published test vector.
    #[test]
    fn standard_webhooks_vector() {
        let secret: Secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let signature = secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    /// Verification accepts a good signature among several and refuses each kind of bad one,
    /// old and future-dated timestamps by the configured tolerance.
    #[test]
    fn verify_accepts_and_refuses() {
        let secrets = Secrets::generate();
        let now = 1_700_000_000;
        let good = secrets.sign("msg_1", now, b"{}");
        let both = format!("v1,AAAA {good}");
        let verify =
            |h: &HeaderMap, body: &[u8], at: i64, tolerance| secrets.verify(h, body, at, tolerance);
        assert_eq!(
            verify(&headers("msg_1", now, &both), b"{}", now, FIVE_MINUTES),
            Ok(())
        );
        assert_eq!(
            verify(&headers("msg_1", now, &good), b"{ }", now, FIVE_MINUTES),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&headers("msg_1", now, "garbage"), b"{}", now, FIVE_MINUTES),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            verify(
                &headers("msg_1", now, &good),
                b"{}",
                now + 301,
                FIVE_MINUTES
            ),
            Err(VerifyError::Expired {
                tolerance: FIVE_MINUTES
            })
        );
        assert_eq!(
            verify(
                &headers("msg_1", now, &good),
                b"{}",
                now - 301,
                FIVE_MINUTES
            ),
            Err(VerifyError::FutureDated {
                tolerance: FIVE_MINUTES
            })
        );
        // A wider tolerance accepts what the default refuses.
        let hour = Duration::from_secs(3600);
        assert_eq!(
            verify(&headers("msg_1", now, &good), b"{}", now + 301, hour),
            Ok(())
        );
        assert_eq!(
            verify(&HeaderMap::new(), b"{}", now, FIVE_MINUTES),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    /// A shared signature is the one signing would give, reused for the same event and
    /// second, and made anew for another second.
    #[test]
    fn shared_signatures_match_fresh_ones() {
        let secrets = Secrets::generate();
        let shared = SharedSignatures::new(secrets.clone());
        let first = shared.sign(7, "msg_7", 100, b"{}");
        assert_eq!(first.to_str().unwrap(), secrets.sign("msg_7", 100, b"{}"));
        assert_eq!(shared.sign(7, "msg_7", 100, b"{}"), first);
        let later = shared.sign(7, "msg_7", 101, b"{}");
        assert_eq!(later.to_str().unwrap(), secrets.sign("msg_7", 101, b"{}"));
        // Another event in the same slot is signed for itself.
        let other = shared.sign(7 + 4096, "msg_4103", 101, b"{}");
        assert_eq!(
            other.to_str().unwrap(),
            secrets.sign("msg_4103", 101, b"{}")
        );
    }

    /// A rotation: the provider signs with the old and the new secret; a consumer that knows
    /// only one of them, either one, accepts; one that knows neither refuses.
    #[test]
    fn a_rotated_pair_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let provider: Secrets = format!("{} {}", old.to_whsec(), new.to_whsec())
            .parse()
            .unwrap();
        let now = 1_700_000_000;
        let signed = headers("msg_9", now, &provider.sign("msg_9", now, b"{}"));
        for consumer in [Secrets::from(old), Secrets::from(new)] {
            assert_eq!(consumer.verify(&signed, b"{}", now, FIVE_MINUTES), Ok(()));
        }
        assert_eq!(
            Secrets::generate().verify(&signed, b"{}", now, FIVE_MINUTES),
            Err(VerifyError::NoMatch)
        );
    }

    /// Secrets round-trip through their whsec_ form; a missing prefix, non-base64, and keys
    /// shorter than 24 or longer than 64 bytes are refused with the reason.
    #[test]
    fn secret_text_form() {
        let secrets: Secrets = format!(
            "{}\n{}",
            Secret::generate().to_whsec(),
            Secret::generate().to_whsec()
        )
        .parse()
        .unwrap();
        assert_eq!(secrets.to_whsec().parse::<Secrets>().unwrap(), secrets);
        let refused = |text: &str| text.parse::<Secrets>().unwrap_err().to_string();
        assert!(refused("whsec_!!!").contains("not base64"));
        assert!(refused(&BASE64.encode([1u8; 32])).contains("whsec_"));
        assert!(refused(&format!("whsec_{}", BASE64.encode([1u8; 23]))).contains("23 bytes"));
        assert!(refused(&format!("whsec_{}", BASE64.encode([1u8; 65]))).contains("65 bytes"));
        assert!(refused("  ").contains("no `whsec_`"));
        format!("whsec_{}", BASE64.encode([1u8; 64]))
            .parse::<Secrets>()
            .unwrap();
    }
}
