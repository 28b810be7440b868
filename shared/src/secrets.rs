//! Secrets: the provider API key and the webhook signing keys.
//!
//! In AWS they come from one Secrets Manager secret (a JSON document), read once per process and
//! kept for its life. Local runs use the same code against the emulator. Values never reach a log:
//! [`SecretString`] prints as `[redacted]`.

use std::fmt;

use serde::Deserialize;

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent or used as key material.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

/// The webhook signing keys that may be active at once: the current one, and during a rotation
/// the previous one, so a delivery signed before the rotation and retried after it still
/// verifies. Retire the previous key only after the provider's 24-hour retry window.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    /// Signs new jobs' secrets and verifies deliveries.
    pub current: SecretString,
    /// Verifies deliveries only.
    pub previous: Option<SecretString>,
}

impl SigningKeys {
    /// All keys a delivery may have been signed under, current first.
    pub fn verifying(&self) -> impl Iterator<Item = &SecretString> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }
}

/// Everything secret the product needs.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Bearer token for the provider.
    pub provider_api_key: SecretString,
    /// Webhook signing keys.
    pub signing_keys: SigningKeys,
}

/// Why the secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Secrets Manager did not answer with the secret.
    #[error("could not read secret {secret_id}: {reason}")]
    Unavailable {
        /// The secret's name or ARN.
        secret_id: String,
        /// The SDK's error, without the secret value.
        reason: String,
    },
    /// The secret exists but is not the expected JSON document.
    #[error(
        "secret {secret_id} must be JSON like {{\"perplexity_api_key\": \"...\", \"webhook_signing_keys\": [\"current\", \"previous\"]}}: {reason}"
    )]
    Malformed {
        /// The secret's name or ARN.
        secret_id: String,
        /// What was wrong, without the secret value.
        reason: String,
    },
}

#[derive(Deserialize)]
struct SecretDocument {
    perplexity_api_key: String,
    webhook_signing_keys: Vec<String>,
}

impl Secrets {
    /// Parses the secret document: the provider key and one or two signing keys, current first.
    pub fn from_json(secret_id: &str, document: &str) -> Result<Self, SecretsError> {
        let malformed = |reason: &str| SecretsError::Malformed {
            secret_id: secret_id.to_owned(),
            reason: reason.to_owned(),
        };

        let parsed: SecretDocument =
            serde_json::from_str(document).map_err(|_| malformed("not the expected JSON shape"))?;
        let mut keys = parsed
            .webhook_signing_keys
            .into_iter()
            .filter(|key| !key.is_empty());
        let current = keys
            .next()
            .ok_or_else(|| malformed("webhook_signing_keys is empty"))?;
        let previous = keys.next();
        if keys.next().is_some() {
            return Err(malformed("at most two webhook signing keys may be active"));
        }
        if parsed.perplexity_api_key.is_empty() {
            return Err(malformed("perplexity_api_key is empty"));
        }

        Ok(Self {
            provider_api_key: SecretString::new(parsed.perplexity_api_key),
            signing_keys: SigningKeys {
                current: SecretString::new(current),
                previous: previous.map(SecretString::new),
            },
        })
    }

    /// Reads the secret document from Secrets Manager.
    pub async fn load(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self, SecretsError> {
        let output = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|error| SecretsError::Unavailable {
                secret_id: secret_id.to_owned(),
                reason: aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
            })?;
        let document = output
            .secret_string()
            .ok_or_else(|| SecretsError::Malformed {
                secret_id: secret_id.to_owned(),
                reason: "the secret has no string value".to_owned(),
            })?;
        Self::from_json(secret_id, document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let secrets = Secrets::from_json(
            "test",
            r#"{"perplexity_api_key":"pplx-abc","webhook_signing_keys":["k1","k0"]}"#,
        )
        .expect("valid document");

        let printed = format!("{secrets:?}");

        assert!(!printed.contains("pplx-abc"));
        assert!(!printed.contains("k1"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn three_active_keys_are_refused() {
        let result = Secrets::from_json(
            "test",
            r#"{"perplexity_api_key":"p","webhook_signing_keys":["a","b","c"]}"#,
        );

        assert!(matches!(result, Err(SecretsError::Malformed { .. })));
    }
}
