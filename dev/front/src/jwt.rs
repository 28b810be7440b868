//! HS256 tokens for the local front, standing in for the API Gateway JWT authorizer.
//!
//! In AWS the authorizer checks tokens from the real identity provider and puts their claims in
//! the request context. Locally this module signs tokens with a key of the developer's choosing
//! and checks them the same way: signature, `exp`, issuer and audience.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The issuer of local tokens.
pub const ISSUER: &str = "research-relay-local";
/// The audience of local tokens.
pub const AUDIENCE: &str = "research-relay";

/// The claims the product reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's stable id: owner of its jobs.
    pub sub: String,
    /// Where the caller's reports go.
    pub email: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("token is malformed")]
    Malformed,
    /// Not HS256, or the signature does not match.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Wrong issuer or audience.
    #[error("token is not for this API")]
    WrongAudience,
}

/// Signs a token for `sub`/`email` valid for `ttl_secs`.
pub fn issue(key: &[u8], sub: &str, email: &str, now_secs: i64, ttl_secs: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = Claims {
        sub: sub.to_owned(),
        email: email.to_owned(),
        exp: now_secs + ttl_secs,
        iat: now_secs,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(mac(key, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// Checks a token and returns its claims.
pub fn verify(key: &[u8], token: &str, now_secs: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };

    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err(TokenError::BadSignature);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut check =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| TokenError::BadSignature)?;
    let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
    check.update(signing_input.as_bytes());
    check
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.exp <= now_secs {
        return Err(TokenError::Expired);
    }
    if claims.iss != ISSUER || claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience);
    }
    Ok(claims)
}

fn mac(key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips() {
        let token = issue(b"k", "user-1", "a@example.com", 1000, 60);

        let claims = verify(b"k", &token, 1001).expect("valid");

        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.email, "a@example.com");
    }

    #[test]
    fn forged_expired_and_garbled_tokens_are_refused() {
        let token = issue(b"k", "user-1", "a@example.com", 1000, 60);

        assert_eq!(
            verify(b"other", &token, 1001),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verify(b"k", &token, 2000), Err(TokenError::Expired));
        assert_eq!(verify(b"k", "abc", 1001), Err(TokenError::Malformed));
        let tampered = token.replacen('.', ".x", 1);
        assert!(verify(b"k", &tampered, 1001).is_err());
    }
}
