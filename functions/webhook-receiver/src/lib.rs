//! The provider's webhook: `POST /webhooks/perplexity/{job_id}`.
//!
//! Order matters and is fixed: verify the signature over the exact body bytes, then parse, then
//! look the job up, then apply the update with one conditional write, then try the e-mail. An
//! answer's status tells the provider what to do next:
//! - 2xx: the result is stored (now or earlier). Never before it is durable.
//! - 4xx: a retry of the same delivery cannot succeed (bad signature, malformed body, unknown job).
//! - 5xx: our own transient fault; the provider retries with backoff.
//!
//! An e-mail problem never changes the answer: the result is stored, and the reconciler retries
//! pending e-mails.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use research_relay::app::App;
use research_relay::finish::{FinishOutcome, apply_provider_job, deliver_mail};
use research_relay::http::{Problem, body_bytes, header, json_response, route_path};
use research_relay::job::is_job_id;
use research_relay::mailer::Mailer;
use research_relay::provider::{ProviderJob, ResearchProvider};
use research_relay::signature::{SIGNATURE_HEADER, SignatureError, verify_delivery};
use research_relay::store::StoreError;
use serde_json::json;

/// Everything the receiver answers with other than success.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Not the webhook route.
    #[error("no such route")]
    NoRoute,
    /// The webhook route with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The signature is missing, malformed or wrong.
    #[error("signature rejected: {0}")]
    Signature(SignatureError),
    /// Signed, but not a delivery we can read.
    #[error("malformed delivery: {0}")]
    Malformed(String),
    /// We have no such job.
    #[error("unknown job")]
    UnknownJob,
    /// The delivery names another provider job than the one we recorded.
    #[error("provider job mismatch")]
    ProviderMismatch,
    /// Our store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl WebhookError {
    /// The one place an error becomes an HTTP answer.
    pub fn into_problem(self) -> Problem {
        match self {
            Self::NoRoute => {
                Problem::new(404, "no-such-route", "Not found", "There is no such route.")
            }
            Self::MethodNotAllowed => Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                "This route accepts POST.",
            ),
            Self::Signature(kind) => Problem::new(
                401,
                kind.code(),
                "Signature rejected",
                "The delivery's X-Perplexity-Signature does not verify.",
            ),
            Self::Malformed(detail) => {
                Problem::new(400, "malformed-delivery", "Malformed delivery", detail)
            }
            Self::UnknownJob => Problem::new(404, "unknown-job", "Unknown job", "No such job."),
            Self::ProviderMismatch => Problem::new(
                409,
                "provider-job-mismatch",
                "Provider job mismatch",
                "The delivery names a different provider job than the one recorded for this job.",
            ),
            Self::Store(StoreError::Transient(_)) => Problem {
                retry_after: Some(30),
                ..Problem::new(
                    503,
                    "temporarily-unavailable",
                    "Temporarily unavailable",
                    "Retry later.",
                )
            },
            Self::Store(StoreError::Permanent(_)) => {
                Problem::new(500, "internal-error", "Internal error", "Retry later.")
            }
        }
    }
}

/// Answers one delivery.
pub async fn handle<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: Request,
) -> Response<Body> {
    match receive(app, &request).await {
        Ok(response) => response,
        Err(error) => {
            match &error {
                WebhookError::Signature(kind) => {
                    tracing::warn!(reason = kind.code(), "webhook rejected");
                    research_relay::metrics::emit(
                        "webhook-receiver",
                        &[("WebhookRejected", 1.0)],
                        app.clock.now_ms(),
                    );
                }
                WebhookError::Store(store_error) => {
                    tracing::error!(error = %store_error, "webhook not stored; the provider will retry");
                }
                other => tracing::info!(reason = %other, "webhook refused"),
            }
            error.into_problem().into_response()
        }
    }
}

async fn receive<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: &Request,
) -> Result<Response<Body>, WebhookError> {
    let path = route_path(request);
    let job_id = match path.strip_prefix("/webhooks/perplexity/") {
        Some(id) if !id.is_empty() && !id.contains('/') => id,
        _ => return Err(WebhookError::NoRoute),
    };
    if request.method() != Method::POST {
        return Err(WebhookError::MethodNotAllowed);
    }

    let body = body_bytes(request);
    verify_delivery(
        &app.signing_keys,
        job_id,
        body,
        header(request, SIGNATURE_HEADER),
    )
    .map_err(WebhookError::Signature)?;

    let delivery: ProviderJob = serde_json::from_slice(body)
        .map_err(|error| WebhookError::Malformed(format!("body is not a job delivery: {error}")))?;
    if delivery.id.is_empty() {
        return Err(WebhookError::Malformed("job_id is empty".into()));
    }
    if !is_job_id(job_id) {
        return Err(WebhookError::UnknownJob);
    }
    let job = app
        .store
        .get_job(job_id)
        .await?
        .ok_or(WebhookError::UnknownJob)?;

    let outcome = apply_provider_job(app, &job, &delivery).await?;
    tracing::info!(
        job_id,
        status = ?delivery.status,
        outcome = outcome.as_str(),
        "webhook applied"
    );
    let (status, stored) = match &outcome {
        FinishOutcome::Changed(status)
        | FinishOutcome::Duplicate(status)
        | FinishOutcome::Ignored(status) => (200, status.is_final()),
        FinishOutcome::StillRunning => (200, false),
        FinishOutcome::Unusable { .. } => (202, false),
        FinishOutcome::ProviderMismatch => return Err(WebhookError::ProviderMismatch),
        FinishOutcome::UnknownJob => return Err(WebhookError::UnknownJob),
    };

    // The result is durable; the e-mail is best effort here and retried by the reconciler.
    if stored {
        match deliver_mail(app, job_id).await {
            Ok(mail) => tracing::debug!(job_id, mail = ?mail, "e-mail step done"),
            Err(error) => {
                tracing::warn!(job_id, error = %error, "e-mail step failed; left for the reconciler")
            }
        }
    }

    Ok(json_response(
        status,
        &json!({"job_id": job_id, "outcome": outcome.as_str()}),
    ))
}

/// Loads the receiver's context from the environment, for `main`.
pub async fn live_app() -> Result<research_relay::app::LiveApp, research_relay::app::StartupError> {
    research_relay::app::LiveApp::from_env().await
}
