//! The handlers' context: configuration, clients and secrets, built once per process.

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::mailer::{Mailer, SesMailer};
use crate::provider::ResearchProvider;
use crate::provider::perplexity::PerplexityClient;
use crate::secrets::{Secrets, SecretsError, SigningKeys};
use crate::store::JobStore;

/// Everything a handler needs. Generic over the provider and the mailer so a second provider can
/// join and tests can inject faults the emulators cannot produce.
#[derive(Debug, Clone)]
pub struct App<P, M> {
    /// Configuration.
    pub config: Config,
    /// The job table.
    pub store: JobStore,
    /// The research provider.
    pub provider: P,
    /// The e-mail sender.
    pub mailer: M,
    /// Webhook signing keys.
    pub signing_keys: SigningKeys,
    /// The clock every time rule reads.
    pub clock: Clock,
}

/// The production combination.
pub type LiveApp = App<PerplexityClient, SesMailer>;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration variable is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The secret could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The provider client could not be built.
    #[error("provider client: {0}")]
    Provider(String),
}

impl<P: ResearchProvider, M: Mailer> App<P, M> {
    /// Replaces the mailer, keeping everything else; tests use it to inject SES faults.
    pub fn with_mailer<N: Mailer>(self, mailer: N) -> App<P, N> {
        App {
            config: self.config,
            store: self.store,
            provider: self.provider,
            mailer,
            signing_keys: self.signing_keys,
            clock: self.clock,
        }
    }
}

impl LiveApp {
    /// Builds the production context from the environment: the AWS SDK's standard configuration
    /// chain (region, credentials, and `AWS_ENDPOINT_URL*` overrides), then the secret.
    pub async fn from_env() -> Result<Self, StartupError> {
        let config = Config::from_env()?;
        Self::from_config(config, Clock::system()).await
    }

    /// Builds the production context from a given configuration, with the AWS SDK's standard
    /// configuration chain.
    pub async fn from_config(config: Config, clock: Clock) -> Result<Self, StartupError> {
        let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk_config(config, &sdk_config, clock).await
    }

    /// Builds the production context from a configuration and a ready SDK configuration.
    pub async fn from_sdk_config(
        config: Config,
        sdk_config: &aws_config::SdkConfig,
        clock: Clock,
    ) -> Result<Self, StartupError> {
        let sdk_config = sdk_config.clone();
        let secrets_client = aws_sdk_secretsmanager::Client::new(&sdk_config);
        let secrets = Secrets::load(&secrets_client, &config.secret_id).await?;

        let store = JobStore::new(
            aws_sdk_dynamodb::Client::new(&sdk_config),
            config.table_name.clone(),
            config.due_index_shards,
        )
        .with_job_ttl(config.job_ttl);
        let mailer = SesMailer::new(aws_sdk_sesv2::Client::new(&sdk_config));
        let provider = PerplexityClient::new(&config.provider_base_url, secrets.provider_api_key)
            .map_err(|error| StartupError::Provider(error.to_string()))?;

        Ok(Self {
            config,
            store,
            provider,
            mailer,
            signing_keys: secrets.signing_keys,
            clock,
        })
    }
}
