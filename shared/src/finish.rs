//! Finishing jobs and mailing them: the one path both the webhook receiver and the reconciler
//! take, so a job ends the same way whether its result was pushed or pulled.
//!
//! Storing the result and sending the e-mail are two separate idempotent steps:
//! 1. [`apply_provider_job`] writes what the provider says with one conditional write whose
//!    condition is the state machine's. Whoever loses a race, or arrives late, sees the job as it
//!    is and reports a duplicate: a success that changes nothing.
//! 2. [`deliver_mail`] claims the e-mail with a conditional write and a lease, sends it, and
//!    records the SES message id. Only the claim holder sends. If a sender dies between sending
//!    and recording, the lease runs out and one more e-mail may go out; nothing else repeats one.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use rand::Rng;

use crate::app::App;
use crate::email;
use crate::job::{JobEvent, JobStatus, MailState, Transition, transition};
use crate::mailer::{MailError, Mailer, OutgoingMail};
use crate::provider::{CompletionResponse, ProviderJob, ProviderStatus, ResearchProvider};
use crate::report;
use crate::store::{ChangeFields, ChangeOutcome, JobRecord, StoreError};

/// What applying a provider update did.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishOutcome {
    /// The job changed to this status.
    Changed(JobStatus),
    /// The job already had this update (a duplicate delivery or a lost race): success, no change.
    Duplicate(JobStatus),
    /// The update arrived after the job finished differently (reordered or late): ignored.
    Ignored(JobStatus),
    /// The provider is still working; nothing changed.
    StillRunning,
    /// COMPLETED without a usable result: not stored as success; counted, left for the
    /// reconciler to fetch again.
    Unusable {
        /// How many such answers the job has had.
        count: u32,
    },
    /// The update names a different provider job than the one we recorded.
    ProviderMismatch,
    /// We have no such job.
    UnknownJob,
}

impl FinishOutcome {
    /// A stable name for logs and answers.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Changed(_) => "changed",
            Self::Duplicate(_) => "duplicate",
            Self::Ignored(_) => "ignored",
            Self::StillRunning => "still_running",
            Self::Unusable { .. } => "unusable_result",
            Self::ProviderMismatch => "provider_mismatch",
            Self::UnknownJob => "unknown_job",
        }
    }
}

/// A result we can mail: the provider's completion with a non-empty content. Blank content is
/// what a provider shows when it reports completion before the result is readable, so it is
/// fetched again rather than stored as the report.
///
/// Returns the completion and the bytes to store. Public so the receiver's benchmark measures
/// this very step.
pub fn usable_result(update: &ProviderJob) -> Option<(CompletionResponse, Vec<u8>)> {
    use serde::Deserialize;

    let value = update.response.as_ref()?;
    // Read from the borrowed value: a clone of a 450 KB report would cost as much as the read.
    let completion = CompletionResponse::deserialize(value).ok()?;
    completion
        .content()
        .filter(|content| !content.trim().is_empty())?;
    let bytes = serde_json::to_vec(value).ok()?;
    Some((completion, bytes))
}

/// Applies what the provider says about a job. `job` is the job as last read; the write itself
/// is conditional, so a stale read only costs a no-op.
pub async fn apply_provider_job<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    update: &ProviderJob,
) -> Result<FinishOutcome, StoreError> {
    if let Some(known) = &job.provider_id
        && known != &update.id
    {
        return Ok(FinishOutcome::ProviderMismatch);
    }
    // A finished job never changes again, so a late or repeated update needs no write that
    // could only fail: the (strongly consistent) read already answers it.
    if job.status.is_final() {
        let event = match update.status {
            ProviderStatus::Completed => JobEvent::Completed,
            ProviderStatus::Failed => JobEvent::Failed,
            ProviderStatus::InProgress => JobEvent::Started,
            ProviderStatus::Created | ProviderStatus::Unknown => JobEvent::Submitted,
        };
        return Ok(match transition(job.status, event) {
            Transition::AlreadyDone => FinishOutcome::Duplicate(job.status),
            Transition::Refused(_) | Transition::Apply(_) => FinishOutcome::Ignored(job.status),
        });
    }

    let now = app.clock.now_ms();
    let shard = app.store.due_shard(&job.id);
    let provider_id_matches = ChangeFields::new()
        .text("provider_id", &update.id)
        .condition(
            "attribute_not_exists(#provider_id) OR #provider_id = :provider_id",
            vec![(":provider_id", AttributeValue::S(update.id.clone()))],
        );

    let (event, outcome) = match update.status {
        ProviderStatus::Created | ProviderStatus::Unknown => {
            if update.status == ProviderStatus::Unknown {
                tracing::info!(job_id = %job.id, "provider reported an unknown status; treating the job as not finished");
            }
            let fields =
                provider_id_matches.due(shard, now + duration_ms(app.config.poll_delay(0)));
            let outcome = app
                .store
                .change_status(&job.id, JobEvent::Submitted, fields, now)
                .await?;
            (JobEvent::Submitted, outcome)
        }
        ProviderStatus::InProgress => {
            let outcome = app
                .store
                .change_status(&job.id, JobEvent::Started, provider_id_matches, now)
                .await?;
            (JobEvent::Started, outcome)
        }
        ProviderStatus::Completed => match usable_result(update) {
            Some((_, bytes)) if bytes.len() > MAX_STORABLE_RESULT_BYTES => {
                // Retrying cannot make it fit; fail the job with a reason instead of answering
                // 5xx for ever.
                let reason = format!(
                    "The research provider returned a result of {} bytes, more than the {} bytes this service stores.",
                    bytes.len(),
                    MAX_STORABLE_RESULT_BYTES
                );
                tracing::warn!(job_id = %job.id, bytes = bytes.len(), "result too large to store; job failed");
                fail(app, job, provider_id_matches, &reason, now).await?
            }
            Some((completion, bytes)) => {
                let mut fields = provider_id_matches
                    .text("mail_state", MailState::Pending.as_str())
                    .remove("lease_until")
                    .due(shard, now);
                if let Some(cost) = completion
                    .usage
                    .as_ref()
                    .and_then(|usage| usage.cost.as_ref())
                    .and_then(|cost| cost.total_cost)
                {
                    fields = fields.number("cost_usd", cost);
                }
                if let Some(model) = &completion.model {
                    fields = fields.text("model_used", model);
                }
                let outcome = app
                    .store
                    .complete_with_result(&job.id, &bytes, fields, now)
                    .await?;
                (JobEvent::Completed, outcome)
            }
            None => return record_unusable(app, job, now).await,
        },
        ProviderStatus::Failed => {
            let reason = update
                .error_message
                .clone()
                .filter(|reason| !reason.trim().is_empty())
                .unwrap_or_else(|| {
                    "The research provider reported a failure without a reason.".to_owned()
                });
            fail(app, job, provider_id_matches, &reason, now).await?
        }
    };

    Ok(match outcome {
        ChangeOutcome::Applied(changed) => FinishOutcome::Changed(changed.status),
        ChangeOutcome::Missing => FinishOutcome::UnknownJob,
        ChangeOutcome::NotApplied(current) => match transition(current.status, event) {
            Transition::AlreadyDone => FinishOutcome::Duplicate(current.status),
            Transition::Refused(status) => FinishOutcome::Ignored(status),
            // The status allowed the change, so the provider id condition failed.
            Transition::Apply(_) => FinishOutcome::ProviderMismatch,
        },
    })
}

/// Largest provider result stored: anything up to this size fits the result parts even if it
/// does not compress at all.
pub const MAX_STORABLE_RESULT_BYTES: usize =
    crate::store::MAX_RESULT_PARTS * crate::store::RESULT_PART_SIZE - 64 * 1024;

/// Moves a job to FAILED with `reason`, with its failure e-mail pending.
async fn fail<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    fields: ChangeFields,
    reason: &str,
    now: i64,
) -> Result<(JobEvent, ChangeOutcome), StoreError> {
    let fields = fields
        .text("failure_reason", truncate(reason, 2000))
        .text("mail_state", MailState::Pending.as_str())
        .remove("lease_until")
        .due(app.store.due_shard(&job.id), now);
    let outcome = app
        .store
        .change_status(&job.id, JobEvent::Failed, fields, now)
        .await?;
    Ok((JobEvent::Failed, outcome))
}

async fn record_unusable<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    now: i64,
) -> Result<FinishOutcome, StoreError> {
    let count = job.unusable_results + 1;
    let shard = app.store.due_shard(&job.id);

    if count >= app.config.max_unusable_results {
        let fields = ChangeFields::new()
            .increment("unusable_results", 1)
            .text(
                "failure_reason",
                "The research provider reported completion but returned no usable report.",
            )
            .text("mail_state", MailState::Pending.as_str())
            .due(shard, now);
        let outcome = app
            .store
            .change_status(&job.id, JobEvent::Failed, fields, now)
            .await?;
        tracing::warn!(job_id = %job.id, count, "completed without a usable result too often; job failed");
        return Ok(match outcome {
            ChangeOutcome::Applied(_) => FinishOutcome::Changed(JobStatus::Failed),
            ChangeOutcome::NotApplied(current) => FinishOutcome::Duplicate(current.status),
            ChangeOutcome::Missing => FinishOutcome::UnknownJob,
        });
    }

    let retry_at = now + duration_ms(app.config.poll_delay(0));
    let fields = ChangeFields::new()
        .increment("unusable_results", 1)
        .due(shard, retry_at)
        .condition(
            "NOT #status IN (:c, :f, :x, :e)",
            vec![
                (
                    ":c",
                    AttributeValue::S(JobStatus::Completed.as_str().into()),
                ),
                (":f", AttributeValue::S(JobStatus::Failed.as_str().into())),
                (
                    ":x",
                    AttributeValue::S(JobStatus::Cancelled.as_str().into()),
                ),
                (":e", AttributeValue::S(JobStatus::Expired.as_str().into())),
            ],
        );
    match app.store.change_fields(&job.id, fields, now).await? {
        ChangeOutcome::Applied(_) => {
            tracing::warn!(job_id = %job.id, count, "completed without a usable result; left for the reconciler");
            Ok(FinishOutcome::Unusable { count })
        }
        ChangeOutcome::NotApplied(current) => Ok(FinishOutcome::Duplicate(current.status)),
        ChangeOutcome::Missing => Ok(FinishOutcome::UnknownJob),
    }
}

/// What happened to a job's e-mail.
#[derive(Debug, Clone, PartialEq)]
pub enum MailOutcome {
    /// SES accepted it.
    Sent {
        /// The SES message id.
        message_id: String,
    },
    /// Nothing to send now: already sent, claimed by someone else, or not needed.
    NotOurs,
    /// SES refused it for good; recorded, not retried.
    Rejected(String),
    /// A transient failure; left pending for the reconciler.
    Deferred(String),
}

/// Sends a finished job's e-mail once: claim, send, record.
pub async fn deliver_mail<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job_id: &str,
) -> Result<MailOutcome, StoreError> {
    let now = app.clock.now_ms();
    let lease_until = now + duration_ms(app.config.mail_lease);
    let claim = ChangeFields::new()
        .text("mail_state", MailState::Sending.as_str())
        .number("mail_lease_until", lease_until)
        .increment("mail_attempts", 1)
        .condition(
            "#mail_state = :pending OR (#mail_state = :sending AND #mail_lease_until < :now)",
            vec![
                (
                    ":pending",
                    AttributeValue::S(MailState::Pending.as_str().into()),
                ),
                (
                    ":sending",
                    AttributeValue::S(MailState::Sending.as_str().into()),
                ),
                (":now", AttributeValue::N(now.to_string())),
            ],
        );
    let job = match app.store.change_fields(job_id, claim, now).await? {
        ChangeOutcome::Applied(job) => job,
        ChangeOutcome::NotApplied(_) | ChangeOutcome::Missing => return Ok(MailOutcome::NotOurs),
    };

    let message = match compose(app, &job).await {
        Ok(Some(message)) => message,
        Ok(None) => {
            release_mail(app, job_id, MailState::NotNeeded, None, None).await?;
            return Ok(MailOutcome::NotOurs);
        }
        Err(ComposeFailure::Invalid(error)) => {
            let reason = format!("message could not be built: {error}");
            release_mail(app, job_id, MailState::Rejected, None, Some(&reason)).await?;
            tracing::warn!(job_id, reason = %reason, "e-mail not sendable; not retried");
            return Ok(MailOutcome::Rejected(reason));
        }
        Err(ComposeFailure::Store(error)) => {
            // Could not read the result: give the claim back and let the reconciler retry.
            reschedule_mail(app, &job, &error.to_string()).await?;
            return Err(error);
        }
    };

    let sent = app
        .mailer
        .send(OutgoingMail {
            from: &app.config.mail_from,
            to: &job.recipient,
            raw: &message,
        })
        .await;

    match sent {
        Ok(message_id) => {
            release_mail(app, job_id, MailState::Sent, Some(&message_id), None).await?;
            tracing::info!(job_id, status = job.status.as_str(), "e-mail sent");
            Ok(MailOutcome::Sent { message_id })
        }
        Err(MailError::Rejected(reason)) => {
            release_mail(app, job_id, MailState::Rejected, None, Some(&reason)).await?;
            tracing::warn!(job_id, reason = %reason, "e-mail rejected by SES; not retried");
            Ok(MailOutcome::Rejected(reason))
        }
        Err(MailError::Transient(reason)) => {
            reschedule_mail(app, &job, &reason).await?;
            tracing::info!(job_id, reason = %reason, "e-mail deferred after a transient SES error");
            Ok(MailOutcome::Deferred(reason))
        }
    }
}

async fn release_mail<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job_id: &str,
    state: MailState,
    message_id: Option<&str>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let mut fields = ChangeFields::new()
        .text("mail_state", state.as_str())
        .remove("mail_lease_until")
        .not_due()
        .condition(
            "#mail_state = :sending",
            vec![(
                ":sending",
                AttributeValue::S(MailState::Sending.as_str().into()),
            )],
        );
    if let Some(message_id) = message_id {
        fields = fields.text("ses_message_id", message_id);
    }
    if let Some(error) = error {
        fields = fields.text("mail_error", truncate(error, 1000));
    }
    match app.store.change_fields(job_id, fields, now).await? {
        ChangeOutcome::Applied(_) => Ok(()),
        // Our lease ran out and another sender took over; its record wins.
        ChangeOutcome::NotApplied(_) | ChangeOutcome::Missing => {
            tracing::info!(job_id, "e-mail claim was taken over before it was recorded");
            Ok(())
        }
    }
}

async fn reschedule_mail<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    reason: &str,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let retry_at = now + duration_ms(backoff(job.mail_attempts));
    let fields = ChangeFields::new()
        .text("mail_state", MailState::Pending.as_str())
        .text("mail_error", truncate(reason, 1000))
        .remove("mail_lease_until")
        .due(app.store.due_shard(&job.id), retry_at)
        .condition(
            "#mail_state = :sending",
            vec![(
                ":sending",
                AttributeValue::S(MailState::Sending.as_str().into()),
            )],
        );
    app.store.change_fields(&job.id, fields, now).await?;
    Ok(())
}

/// Why a message could not be built.
enum ComposeFailure {
    /// The result could not be read; the reconciler retries.
    Store(StoreError),
    /// The message itself cannot be built (an unusable address): permanent.
    Invalid(email::ComposeError),
}

/// The raw message for a finished job, or `None` when it gets no e-mail.
async fn compose<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
) -> Result<Option<Vec<u8>>, ComposeFailure> {
    let envelope = email::Envelope {
        from: &app.config.mail_from,
        to: &job.recipient,
        date_unix_secs: app.clock.now_secs(),
        message_id: None,
        boundary_token: None,
    };
    let failure = |reason: &str| {
        email::compose_failure(&email::FailureEmail {
            envelope,
            question: &job.question,
            job_id: &job.id,
            reason: Some(reason),
        })
    };

    let composed = match job.status {
        JobStatus::Completed => {
            let bytes = app
                .store
                .load_result(job)
                .await
                .map_err(ComposeFailure::Store)?
                .ok_or_else(|| {
                    ComposeFailure::Store(StoreError::Permanent(format!(
                        "job {} is COMPLETED without a result",
                        job.id
                    )))
                })?;
            let completion: CompletionResponse =
                serde_json::from_slice(&bytes).map_err(|error| {
                    ComposeFailure::Store(StoreError::Permanent(format!("stored result: {error}")))
                })?;
            let stripped = report::strip_think(completion.content().unwrap_or_default());
            if stripped.is_empty {
                failure(EMPTY_ANSWER_REASON)
            } else {
                let sources = report::sources(&completion);
                let duration = job.finished_at.map(|finished| {
                    Duration::from_millis((finished - job.created_at).max(0) as u64)
                });
                let model = completion
                    .model
                    .clone()
                    .unwrap_or_else(|| job.model.clone());
                email::compose_report(&email::ReportEmail {
                    envelope,
                    question: &job.question,
                    job_id: &job.id,
                    model: Some(&model),
                    duration,
                    cost_usd: job.cost_usd,
                    answer_markdown: stripped.answer,
                    sources: &sources,
                })
            }
        }
        JobStatus::Failed => failure(
            job.failure_reason
                .as_deref()
                .unwrap_or("The research provider reported a failure."),
        ),
        JobStatus::Expired => email::compose_expired(&email::ExpiredEmail {
            envelope,
            question: &job.question,
            job_id: &job.id,
        }),
        _ => return Ok(None),
    };
    composed.map(Some).map_err(ComposeFailure::Invalid)
}

/// What the owner is told when the provider's answer held only reasoning.
pub const EMPTY_ANSWER_REASON: &str =
    "The research finished, but the answer held only the model's reasoning and no report.";

/// Exponential backoff with full jitter, from 30 seconds up to 30 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = 30_u64.saturating_mul(1 << attempt.min(6)).min(1800);
    let jittered = rand::rng().random_range(ceiling / 2..=ceiling);
    Duration::from_secs(jittered)
}

/// Milliseconds of a duration, for timestamps.
pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
