//! Configuration, read once at start from environment variables.
//!
//! Every Lambda reads the same [`Config`]; a missing or malformed variable stops the process at
//! start with an error naming the variable, instead of failing on the first request. Secrets are
//! not here: only the id of the Secrets Manager secret that holds them (see [`crate::secrets`]).

use std::collections::HashMap;
use std::time::Duration;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} must be set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is expected.
        reason: String,
    },
}

/// Everything the product can be told from outside.
#[derive(Debug, Clone)]
pub struct Config {
    /// `TABLE_NAME`: the DynamoDB table holding jobs, idempotency keys and quota counters.
    pub table_name: String,
    /// `SECRET_ID`: the Secrets Manager secret with the provider key and signing keys.
    pub secret_id: String,
    /// `PUBLIC_BASE_URL`: the API's public address; webhook URLs and `Location` headers are built
    /// from it, never from the incoming request, so a stage prefix or a spoofed Host header cannot
    /// change where the provider posts.
    pub public_base_url: String,
    /// `PERPLEXITY_BASE_URL`: the provider's API root.
    pub provider_base_url: String,
    /// `MAIL_FROM`: the verified SES sender, e.g. `Research Relay <reports@example.com>`.
    pub mail_from: String,
    /// `ALLOWED_MODELS`: comma-separated models a caller may ask for.
    pub allowed_models: Vec<String>,
    /// `DEFAULT_MODEL`: used when a request names none.
    pub default_model: String,
    /// `RECIPIENT_DOMAINS`: comma-separated domains a caller may send reports to besides their own
    /// address. Empty: reports go only to the caller.
    pub recipient_domains: Vec<String>,
    /// `DAILY_JOB_QUOTA`: jobs one owner may create per UTC day.
    pub daily_job_quota: u32,
    /// `IDEMPOTENCY_TTL_SECS`: how long an `Idempotency-Key` is remembered (24 hours).
    pub idempotency_ttl: Duration,
    /// `POLL_SCHEDULE_SECS`: growing intervals between looks at an unfinished job.
    pub poll_schedule: Vec<Duration>,
    /// `RECONCILE_CONCURRENCY`: jobs one reconciler run works on at once.
    pub reconcile_concurrency: usize,
    /// `RECONCILE_PAGE_SIZE`: due jobs read per index page.
    pub reconcile_page_size: i32,
    /// `RECONCILE_DEADLINE_MARGIN_MS`: stop taking work this long before the invocation deadline.
    pub reconcile_deadline_margin: Duration,
    /// `SUBMIT_RATE_PER_MINUTE`: provider submissions the reconciler makes per minute.
    pub submit_rate_per_minute: u32,
    /// `JOB_LEASE_SECS`: how long a reconciler claim on a job lasts.
    pub job_lease: Duration,
    /// `MAIL_LEASE_SECS`: how long a claim to send a job's e-mail lasts; a crash between sending
    /// and recording can repeat one e-mail after this.
    pub mail_lease: Duration,
    /// `PROVIDER_RETENTION_SECS`: how long the provider keeps results (7 days).
    pub provider_retention: Duration,
    /// `MAX_UNUSABLE_RESULTS`: COMPLETED answers without a usable result tolerated before the
    /// job is failed.
    pub max_unusable_results: u32,
    /// `DUE_INDEX_SHARDS`: partitions of the attention index (see [`crate::store`]); may be
    /// raised at any time, never lowered.
    pub due_index_shards: u32,
    /// `JOB_TTL_DAYS`: finished jobs are deleted by DynamoDB TTL this long after creation.
    pub job_ttl: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads a given set of variables; tests and the local stack use this.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let reader = Reader { vars };

        Ok(Self {
            table_name: reader.required("TABLE_NAME")?,
            secret_id: reader.required("SECRET_ID")?,
            public_base_url: reader
                .required("PUBLIC_BASE_URL")?
                .trim_end_matches('/')
                .to_owned(),
            provider_base_url: reader
                .optional("PERPLEXITY_BASE_URL")
                .unwrap_or_else(|| "https://api.perplexity.ai".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            mail_from: reader.required("MAIL_FROM")?,
            allowed_models: reader.list("ALLOWED_MODELS", &["sonar-deep-research"]),
            default_model: reader
                .optional("DEFAULT_MODEL")
                .unwrap_or_else(|| "sonar-deep-research".to_owned()),
            recipient_domains: reader
                .list("RECIPIENT_DOMAINS", &[])
                .into_iter()
                .map(|domain| domain.to_ascii_lowercase())
                .collect(),
            daily_job_quota: reader.number("DAILY_JOB_QUOTA", 50)?,
            idempotency_ttl: Duration::from_secs(reader.number("IDEMPOTENCY_TTL_SECS", 86_400)?),
            poll_schedule: reader.durations("POLL_SCHEDULE_SECS", "60,120,300,600,1800")?,
            reconcile_concurrency: reader.number("RECONCILE_CONCURRENCY", 16)?,
            reconcile_page_size: reader.number("RECONCILE_PAGE_SIZE", 100)?,
            reconcile_deadline_margin: Duration::from_millis(
                reader.number("RECONCILE_DEADLINE_MARGIN_MS", 10_000)?,
            ),
            submit_rate_per_minute: reader.number("SUBMIT_RATE_PER_MINUTE", 5)?,
            job_lease: Duration::from_secs(reader.number("JOB_LEASE_SECS", 120)?),
            mail_lease: Duration::from_secs(reader.number("MAIL_LEASE_SECS", 300)?),
            provider_retention: Duration::from_secs(
                reader.number("PROVIDER_RETENTION_SECS", 7 * 86_400)?,
            ),
            max_unusable_results: reader.number("MAX_UNUSABLE_RESULTS", 5)?,
            due_index_shards: reader.number("DUE_INDEX_SHARDS", 4)?.max(1),
            job_ttl: Duration::from_secs(reader.number::<u64>("JOB_TTL_DAYS", 90)? * 86_400),
        })
    }

    /// Where the provider posts one job's result.
    pub fn webhook_url(&self, job_id: &str) -> String {
        format!("{}/webhooks/perplexity/{job_id}", self.public_base_url)
    }

    /// The `Location` of one job.
    pub fn job_location(&self, job_id: &str) -> String {
        format!("/jobs/{job_id}")
    }

    /// The wait before the `attempt`-th look at an unfinished job (0-based); the last interval
    /// repeats.
    pub fn poll_delay(&self, attempt: u32) -> Duration {
        let index = (attempt as usize).min(self.poll_schedule.len().saturating_sub(1));
        self.poll_schedule
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

struct Reader<'a> {
    vars: &'a HashMap<String, String>,
}

impl Reader<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.optional(name) {
            Some(value) => value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect(),
            None => default.iter().map(|item| (*item).to_owned()).collect(),
        }
    }

    fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("expected a non-negative whole number, got {value:?}"),
            }),
            None => Ok(default),
        }
    }

    fn durations(&self, name: &'static str, default: &str) -> Result<Vec<Duration>, ConfigError> {
        let text = self.optional(name).unwrap_or_else(|| default.to_owned());
        let parsed: Result<Vec<Duration>, _> = text
            .split(',')
            .map(|item| item.trim().parse::<f64>())
            .map(|item| item.map(Duration::from_secs_f64))
            .collect();
        match parsed {
            Ok(list) if !list.is_empty() => Ok(list),
            _ => Err(ConfigError::Invalid {
                name,
                reason: format!("expected comma-separated seconds, got {text:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> HashMap<String, String> {
        [
            ("TABLE_NAME", "jobs"),
            ("SECRET_ID", "research-relay"),
            ("PUBLIC_BASE_URL", "https://api.example.com/"),
            ("MAIL_FROM", "reports@example.com"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }

    #[test]
    fn a_missing_variable_is_named() {
        let mut vars = minimal();
        vars.remove("TABLE_NAME");

        let error = Config::from_map(&vars).expect_err("TABLE_NAME is required");

        assert_eq!(
            error.to_string(),
            "environment variable TABLE_NAME must be set"
        );
    }

    #[test]
    fn urls_come_from_configuration() {
        let config = Config::from_map(&minimal()).expect("minimal config");

        assert_eq!(
            config.webhook_url("01ABC"),
            "https://api.example.com/webhooks/perplexity/01ABC"
        );
        assert_eq!(config.provider_base_url, "https://api.perplexity.ai");
    }

    #[test]
    fn the_poll_schedule_grows_then_repeats_its_last_step() {
        let mut vars = minimal();
        vars.insert("POLL_SCHEDULE_SECS".into(), "1,2,5".into());
        let config = Config::from_map(&vars).expect("config");

        let delays: Vec<u64> = (0..5).map(|n| config.poll_delay(n).as_secs()).collect();

        assert_eq!(delays, [1, 2, 5, 5, 5]);
    }

    #[test]
    fn a_malformed_number_is_refused() {
        let mut vars = minimal();
        vars.insert("DAILY_JOB_QUOTA".into(), "many".into());

        let error = Config::from_map(&vars).expect_err("not a number");

        assert!(error.to_string().contains("DAILY_JOB_QUOTA"));
    }
}
