//! Prepares the emulated AWS side of a local stack: the table, the sender identity and the
//! secret. Every step is idempotent, so `make dev` can be restarted against a running emulator.

use aws_sdk_dynamodb::Client as DynamoClient;
use aws_sdk_secretsmanager::Client as SecretsClient;
use aws_sdk_sesv2::Client as SesClient;
use research_relay::config::Config;
use serde_json::json;

/// The provider key the local stack stores (the simulator accepts any non-empty key).
pub const LOCAL_PROVIDER_KEY: &str = "local-simulator-key";

/// The webhook signing key the local stack stores.
pub const LOCAL_SIGNING_KEY: &str = "local-webhook-signing-key";

/// The secret document the product reads, for the given signing keys (current first).
pub fn secret_document(provider_key: &str, signing_keys: &[&str]) -> String {
    json!({"perplexity_api_key": provider_key, "webhook_signing_keys": signing_keys}).to_string()
}

/// Creates the table, verifies the sender and stores the secret, unless they exist.
pub async fn prepare(
    sdk_config: &aws_config::SdkConfig,
    config: &Config,
    secret: &str,
) -> Result<(), String> {
    crate::schema::ensure_table(&DynamoClient::new(sdk_config), &config.table_name).await?;
    ensure_sender(&SesClient::new(sdk_config), &config.mail_from).await?;
    ensure_secret(&SecretsClient::new(sdk_config), &config.secret_id, secret).await
}

/// Verifies the sender's address as an SES identity.
pub async fn ensure_sender(ses: &SesClient, mail_from: &str) -> Result<(), String> {
    let address = mail_from
        .rsplit_once('<')
        .map(|(_, rest)| rest.trim_end_matches('>'))
        .unwrap_or(mail_from)
        .trim();
    let exists = ses
        .get_email_identity()
        .email_identity(address)
        .send()
        .await
        .is_ok();
    if exists {
        return Ok(());
    }
    ses.create_email_identity()
        .email_identity(address)
        .send()
        .await
        .map(|_| ())
        .map_err(|error| aws_sdk_sesv2::error::DisplayErrorContext(error).to_string())
}

/// Stores the secret document under `secret_id` unless a secret of that name exists.
pub async fn ensure_secret(
    secrets: &SecretsClient,
    secret_id: &str,
    document: &str,
) -> Result<(), String> {
    let exists = secrets
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .is_ok();
    if exists {
        return Ok(());
    }
    secrets
        .create_secret()
        .name(secret_id)
        .secret_string(document)
        .send()
        .await
        .map(|_| ())
        .map_err(|error| aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string())
}
