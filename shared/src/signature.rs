//! Webhook signatures: per-job secrets and constant-time verification.
//!
//! The provider signs each delivery with the secret we gave it for that job:
//! `X-Perplexity-Signature: hex(HMAC-SHA256(secret, raw body))`. We never store those secrets.
//! Each is derived from a signing key and the job id, so one leaked job secret opens no other job,
//! and rotating the signing key needs no data migration: during a rotation both the current and
//! the previous key are tried.
//!
//! Verification runs on the exact body bytes, before any parsing, and compares decoded digests in
//! constant time. The accepted header forms are deliberately few: 64 hex digits in either case,
//! optionally prefixed with `sha256=`. Anything else is refused.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secrets::SigningKeys;

type HmacSha256 = Hmac<Sha256>;

/// The header the provider signs with. Header names are case-insensitive; look it up through
/// a case-insensitive map (the `http` crate's is).
pub const SIGNATURE_HEADER: &str = "x-perplexity-signature";

/// Keeps derived secrets of this version apart from any other use of the signing key.
const DERIVATION_LABEL: &[u8] = b"research-relay/webhook-secret/v1/";

/// Why a delivery was refused. Only the kind is logged, never the header value or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header at all.
    #[error("signature header missing")]
    Missing,
    /// The header is not `[sha256=]<64 hex digits>`.
    #[error("signature header malformed")]
    Malformed,
    /// Well formed, but no active secret produced it.
    #[error("signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// A stable name for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

/// The secret the provider signs one job's deliveries with: hex of
/// HMAC-SHA256(signing key, label || job id).
pub fn derive_job_secret(signing_key: &str, job_id: &str) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(signing_key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(DERIVATION_LABEL);
    mac.update(job_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Hex signature of `body` under `secret`, as the provider computes it. Used by the simulator's
/// counterpart in tests and by anyone signing test deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Decodes a signature header value into the 32 digest bytes it claims.
pub fn parse_signature_header(value: &[u8]) -> Result<[u8; 32], SignatureError> {
    let digits = value.strip_prefix(b"sha256=").unwrap_or(value);
    if digits.len() != 64 {
        return Err(SignatureError::Malformed);
    }

    let mut digest = [0_u8; 32];
    hex::decode_to_slice(digits, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// Checks `header` against `body` under any of `secrets`, in constant time per secret.
pub fn verify_with_secrets<'a>(
    body: &[u8],
    header: Option<&[u8]>,
    secrets: impl IntoIterator<Item = &'a str>,
) -> Result<(), SignatureError> {
    let claimed = parse_signature_header(header.ok_or(SignatureError::Missing)?)?;

    for secret in secrets {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        // `verify_slice` compares in constant time, so a forgery learns nothing from how long
        // a refusal takes: every refusal tries every key. Stopping at the first match only tells
        // the holder of a valid signature which key made it, and saves a pass over large bodies.
        if mac.verify_slice(&claimed).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Checks a delivery for `job_id` against the secrets derived from every active signing key.
pub fn verify_delivery(
    keys: &SigningKeys,
    job_id: &str,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let secrets: Vec<String> = keys
        .verifying()
        .map(|key| derive_job_secret(key.expose(), job_id))
        .collect();
    verify_with_secrets(body, header, secrets.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretString;

    const B0: &[u8] = br#"{"job_id":"req_123","status":"COMPLETED"}"#;
    const B0_HEX_0001: &str = "115b8374839c440bdf4875e0c1c1d3f478ab337c1ce30023f6701c4b7f2f49e1";
    const B0_HEX_0002: &str = "76ed1d818d65389863110155c9a0622e9fcf1d5a5d41082af19c1a5d0443d35a";

    fn check(header: &str) -> Result<(), SignatureError> {
        verify_with_secrets(B0, Some(header.as_bytes()), ["whsec_test_0001"])
    }

    #[test]
    fn fixture_signatures_are_reproduced() {
        assert_eq!(sign("whsec_test_0001", B0), B0_HEX_0001);
        assert_eq!(sign("whsec_test_0002", B0), B0_HEX_0002);
    }

    #[test]
    fn accepted_encodings() {
        let accepted = [
            B0_HEX_0001.to_owned(),
            B0_HEX_0001.to_uppercase(),
            format!("sha256={B0_HEX_0001}"),
            format!("sha256={}", B0_HEX_0001.to_uppercase()),
        ];

        for header in accepted {
            assert_eq!(check(&header), Ok(()), "{header}");
        }
    }

    #[test]
    fn rejected_encodings() {
        let base64_form = "EVuDdIOcRAvfSHXgwcHT9HirM3wc4wAj9nAcS38vSeE=";
        let rejected = [
            (base64_form.to_owned(), SignatureError::Malformed),
            (B0_HEX_0001[..63].to_owned(), SignatureError::Malformed),
            (String::new(), SignatureError::Malformed),
            ("z".repeat(64), SignatureError::Malformed),
            (format!("sha256= {B0_HEX_0001}"), SignatureError::Malformed),
            (format!("{B0_HEX_0001} "), SignatureError::Malformed),
            (format!("sha1={B0_HEX_0001}"), SignatureError::Malformed),
            (B0_HEX_0002.to_owned(), SignatureError::Mismatch),
            ("0".repeat(64), SignatureError::Mismatch),
        ];

        for (header, expected) in rejected {
            assert_eq!(check(&header), Err(expected), "{header:?}");
        }
    }

    #[test]
    fn a_missing_header_is_its_own_error() {
        let result = verify_with_secrets(B0, None, ["whsec_test_0001"]);

        assert_eq!(result, Err(SignatureError::Missing));
    }

    #[test]
    fn a_signature_over_the_base64_text_does_not_verify_the_decoded_body() {
        let base64_text = b"eyJqb2JfaWQiOiJyZXFfMTIzIiwic3RhdHVzIjoiQ09NUExFVEVEIn0=";
        let signature_of_text = sign("whsec_test_0001", base64_text);

        let result = check(&signature_of_text);

        assert_eq!(result, Err(SignatureError::Mismatch));
    }

    #[test]
    fn rotation_accepts_both_keys_then_only_the_current() {
        let job_id = "01JOBROTATION";
        let signed_with = |key: &str| sign(&derive_job_secret(key, job_id), B0);
        let during = SigningKeys {
            current: SecretString::new("whsec_test_0002"),
            previous: Some(SecretString::new("whsec_test_0001")),
        };
        let after = SigningKeys {
            current: SecretString::new("whsec_test_0002"),
            previous: None,
        };

        let old = signed_with("whsec_test_0001");
        let new = signed_with("whsec_test_0002");

        assert_eq!(
            verify_delivery(&during, job_id, B0, Some(old.as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify_delivery(&during, job_id, B0, Some(new.as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify_delivery(&after, job_id, B0, Some(old.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_delivery(&after, job_id, B0, Some(new.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn a_job_secret_opens_no_other_job() {
        let keys = SigningKeys {
            current: SecretString::new("whsec_test_0002"),
            previous: None,
        };
        let secret_of_a = derive_job_secret("whsec_test_0002", "JOB_A");
        let signature = sign(&secret_of_a, B0);

        let result = verify_delivery(&keys, "JOB_B", B0, Some(signature.as_bytes()));

        assert_eq!(result, Err(SignatureError::Mismatch));
    }
}
