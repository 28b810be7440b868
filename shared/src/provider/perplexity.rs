//! The Perplexity async API client.
//!
//! HTTP statuses map to [`ProviderError`] once, here: 429 is a rate limit (with `Retry-After`),
//! 404 means the job is gone, 400/422 mean the request itself is wrong, and everything that a
//! later attempt may not see (5xx, timeouts, refused connections) is transient. A 401 or 403 is
//! treated as transient too: it means our key is wrong or revoked, which is our fault and not the
//! owner's, so jobs wait for the key to be fixed instead of failing.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::json;

use super::{ProviderError, ProviderJob, ResearchProvider, SubmitRequest};
use crate::secrets::SecretString;

/// A client of `{base}/async/chat/completions`.
#[derive(Debug, Clone)]
pub struct PerplexityClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl PerplexityClient {
    /// A client for `base_url` (no trailing slash) with the given key.
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("research-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ProviderError::Transient(error.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    fn jobs_url(&self) -> String {
        format!("{}/async/chat/completions", self.base_url)
    }

    fn job_url(&self, provider_id: &str) -> String {
        // Provider ids are opaque; keep them from changing the path.
        let encoded: String = provider_id
            .bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(byte).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        format!("{}/{encoded}", self.jobs_url())
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.api_key.expose())
    }
}

impl ResearchProvider for PerplexityClient {
    async fn submit(&self, submit: &SubmitRequest) -> Result<ProviderJob, ProviderError> {
        let body = json!({
            "request": submit.request,
            "idempotency_key": submit.idempotency_key,
            "webhook": {"url": submit.webhook_url, "secret": submit.webhook_secret},
        });
        let response = self
            .http
            .post(self.jobs_url())
            .header(AUTHORIZATION, self.bearer())
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        read_job(response).await
    }

    async fn get(&self, provider_id: &str) -> Result<ProviderJob, ProviderError> {
        let response = self
            .http
            .get(self.job_url(provider_id))
            .header(AUTHORIZATION, self.bearer())
            .send()
            .await
            .map_err(transport_error)?;
        read_job(response).await
    }

    async fn cancel(&self, provider_id: &str) -> Result<(), ProviderError> {
        let response = self
            .http
            .delete(self.job_url(provider_id))
            .header(AUTHORIZATION, self.bearer())
            .send()
            .await
            .map_err(transport_error)?;
        match read_job(response).await {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn transport_error(error: reqwest::Error) -> ProviderError {
    ProviderError::Transient(format!("request failed: {}", without_url(&error)))
}

fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    kind.to_owned()
}

async fn read_job(response: reqwest::Response) -> Result<ProviderJob, ProviderError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.bytes().await.map_err(|error| {
        ProviderError::Transient(format!("reading answer: {}", without_url(&error)))
    })?;

    classify_answer(status, retry_after, &body)
}

/// Maps one provider answer to a job or an error. Separate from the transport so the mapping is
/// tested on its own.
pub fn classify_answer(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<ProviderJob, ProviderError> {
    if status.is_success() {
        return serde_json::from_slice(body)
            .map_err(|error| ProviderError::Malformed(format!("job object: {error}")));
    }

    let message = error_message(body).unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("unexpected status")
            .to_owned()
    });
    match status {
        StatusCode::TOO_MANY_REQUESTS => Err(ProviderError::RateLimited { retry_after }),
        StatusCode::NOT_FOUND => Err(ProviderError::NotFound),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::REQUEST_TIMEOUT => Err(
            ProviderError::Transient(format!("provider answered {}: {message}", status.as_u16())),
        ),
        status if status.is_client_error() => Err(ProviderError::Rejected {
            status: status.as_u16(),
            message,
        }),
        status => Err(ProviderError::Transient(format!(
            "provider answered {}",
            status.as_u16()
        ))),
    }
}

fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value
        .pointer("/error/message")
        .or_else(|| value.pointer("/detail/0/msg"))
        .or_else(|| value.get("detail"))
        .or_else(|| value.get("message"))?;
    let text = match message {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Some(text.chars().take(500).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderStatus;

    #[test]
    fn a_rate_limit_keeps_its_retry_after() {
        let result = classify_answer(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(12)),
            b"{}",
        );

        assert!(matches!(
            result,
            Err(ProviderError::RateLimited { retry_after: Some(wait) }) if wait.as_secs() == 12
        ));
    }

    #[test]
    fn an_invalid_model_is_a_rejection_with_the_providers_words() {
        let body =
            br#"{"error":{"message":"Invalid model 'x'.","type":"invalid_model","code":400}}"#;

        let result = classify_answer(StatusCode::BAD_REQUEST, None, body);

        assert!(matches!(
            result,
            Err(ProviderError::Rejected { status: 400, message }) if message == "Invalid model 'x'."
        ));
    }

    #[test]
    fn server_errors_are_transient() {
        for status in [500, 502, 503, 504] {
            let status = StatusCode::from_u16(status).expect("valid status");

            let result = classify_answer(status, None, b"<html>oops</html>");

            assert!(
                matches!(result, Err(ProviderError::Transient(_))),
                "{status}"
            );
        }
    }

    #[test]
    fn both_spellings_of_the_first_status_are_accepted() {
        for status in ["CREATED", "QUEUED"] {
            let body = format!(r#"{{"id":"j","model":"m","created_at":1,"status":"{status}"}}"#);

            let job = classify_answer(StatusCode::OK, None, body.as_bytes()).expect("job");

            assert_eq!(job.status, ProviderStatus::Created);
        }
    }

    #[test]
    fn an_unknown_status_is_not_final() {
        let body = br#"{"id":"j","status":"PAUSED"}"#;

        let job = classify_answer(StatusCode::OK, None, body).expect("job");

        assert_eq!(job.status, ProviderStatus::Unknown);
        assert!(!job.status.is_final());
    }

    #[test]
    fn a_failure_reason_is_read_under_either_name() {
        let spec = br#"{"id":"j","status":"FAILED","error_message":"boom"}"#;
        let seed = br#"{"id":"j","status":"FAILED","failed_reason":"boom"}"#;

        for body in [&spec[..], &seed[..]] {
            let job = classify_answer(StatusCode::OK, None, body).expect("job");

            assert_eq!(job.error_message.as_deref(), Some("boom"));
        }
    }
}
