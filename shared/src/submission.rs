//! Handing a stored job to the provider.
//!
//! The job is written first (QUEUED), then submitted with our job id as the provider's
//! `idempotency_key`, then the provider's id is recorded. A crash between any two steps leaves a
//! QUEUED job in the attention index; the reconciler submits it again with the same key, and the
//! provider answers with the job it already has instead of starting a second paid one.

use aws_sdk_dynamodb::types::AttributeValue;
use rand::Rng;

use crate::app::App;
use crate::finish::{FinishOutcome, apply_provider_job, backoff, duration_ms};
use crate::job::{JobEvent, JobStatus, MailState};
use crate::mailer::Mailer;
use crate::provider::{ProviderError, ProviderStatus, ResearchProvider, SubmitRequest};
use crate::signature::derive_job_secret;
use crate::store::{ChangeFields, ChangeOutcome, JobRecord, StoreError};

/// What a submission attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// The provider has the job; this is the job now.
    Accepted(Box<JobRecord>),
    /// The provider asked us to wait (429) or was unavailable: still QUEUED, due again at
    /// this moment.
    Deferred {
        /// Milliseconds since the epoch.
        retry_at: i64,
    },
    /// The provider refused the request itself: the job is FAILED with this reason.
    Rejected {
        /// The provider's HTTP status.
        status: u16,
        /// The provider's reason.
        message: String,
    },
    /// The job was no longer QUEUED (submitted by someone else, or cancelled).
    NotQueued(JobStatus),
}

/// Submits one QUEUED job. `mail_rejection` says whether a refusal is mailed to the owner (the
/// reconciler's case) or answered directly to a waiting caller (the API's case).
pub async fn submit_job<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    mail_rejection: bool,
) -> Result<SubmitOutcome, StoreError> {
    let request = SubmitRequest {
        request: job.request.clone(),
        idempotency_key: job.id.clone(),
        webhook_url: app.config.webhook_url(&job.id),
        webhook_secret: derive_job_secret(app.signing_keys.current.expose(), &job.id),
    };
    let answer = app.provider.submit(&request).await;
    let now = app.clock.now_ms();
    let shard = app.store.due_shard(&job.id);

    match answer {
        Ok(provider_job) => {
            let fields = ChangeFields::new()
                .text("provider_id", &provider_job.id)
                .increment("submit_attempts", 1)
                .due(shard, now + duration_ms(app.config.poll_delay(0)));
            let outcome = app
                .store
                .change_status(&job.id, JobEvent::Submitted, fields, now)
                .await?;
            let current = match outcome {
                ChangeOutcome::Applied(current) => current,
                ChangeOutcome::NotApplied(current) => {
                    if current.status == JobStatus::Cancelled && !provider_job.status.is_final() {
                        // Cancelled while we were submitting: stop the provider's job too.
                        if let Err(error) = app.provider.cancel(&provider_job.id).await {
                            tracing::warn!(job_id = %job.id, error = %error, "could not cancel a job submitted after its cancellation");
                        }
                    }
                    return Ok(SubmitOutcome::NotQueued(current.status));
                }
                ChangeOutcome::Missing => {
                    return Ok(SubmitOutcome::NotQueued(JobStatus::Cancelled));
                }
            };
            tracing::info!(job_id = %job.id, status = "SUBMITTED", "provider accepted the job");

            // A replayed submission can answer with a job that is already further along.
            if provider_job.status != ProviderStatus::Created
                && let FinishOutcome::Changed(_) =
                    apply_provider_job(app, &current, &provider_job).await?
                && let Some(advanced) = app.store.get_job(&job.id).await?
            {
                return Ok(SubmitOutcome::Accepted(Box::new(advanced)));
            }
            Ok(SubmitOutcome::Accepted(current))
        }
        Err(ProviderError::Rejected { status, message }) => {
            let mail_state = if mail_rejection {
                MailState::Pending
            } else {
                MailState::NotNeeded
            };
            let mut fields = ChangeFields::new()
                .text(
                    "failure_reason",
                    format!("The research provider refused the request: {message}"),
                )
                .text("mail_state", mail_state.as_str())
                .increment("submit_attempts", 1);
            fields = if mail_rejection {
                fields.due(shard, now)
            } else {
                fields.not_due()
            };
            match app
                .store
                .change_status(&job.id, JobEvent::Failed, fields, now)
                .await?
            {
                ChangeOutcome::Applied(_) => {
                    tracing::warn!(job_id = %job.id, provider_status = status, "provider refused the job");
                    Ok(SubmitOutcome::Rejected { status, message })
                }
                ChangeOutcome::NotApplied(current) => Ok(SubmitOutcome::NotQueued(current.status)),
                ChangeOutcome::Missing => Ok(SubmitOutcome::NotQueued(JobStatus::Cancelled)),
            }
        }
        Err(error) => {
            let wait = match &error {
                ProviderError::RateLimited {
                    retry_after: Some(wait),
                } => *wait + std::time::Duration::from_millis(rand::rng().random_range(0..1000)),
                _ => backoff(job.submit_attempts),
            };
            let retry_at = now + duration_ms(wait);
            let fields = ChangeFields::new()
                .increment("submit_attempts", 1)
                .text("last_error", error.to_string())
                .due(shard, retry_at)
                .condition(
                    "#status = :queued",
                    vec![(
                        ":queued",
                        AttributeValue::S(JobStatus::Queued.as_str().into()),
                    )],
                );
            tracing::info!(job_id = %job.id, error = %error, retry_in_ms = retry_at - now, "submission deferred");
            match app.store.change_fields(&job.id, fields, now).await? {
                ChangeOutcome::Applied(_) => Ok(SubmitOutcome::Deferred { retry_at }),
                ChangeOutcome::NotApplied(current) => Ok(SubmitOutcome::NotQueued(current.status)),
                ChangeOutcome::Missing => Ok(SubmitOutcome::NotQueued(JobStatus::Cancelled)),
            }
        }
    }
}
