//! A simulated job: its fixed plan, its timeline on the simulator clock, and the JSON views the
//! provider API and webhooks show of it.
//!
//! A job stores when it starts and finishes instead of a status field; its status is computed
//! from the clock on every read. That is what lets a clock move finish jobs without any
//! bookkeeping, and it keeps polling and webhooks consistent with each other.
//!
//! Cancelling (`DELETE`) a job that has not finished turns it into `FAILED` with
//! `error_message` = [`CANCELLED_MESSAGE`] and `failed_at` = the cancel time. The published
//! status enum has no cancelled state, so the simulator does not invent one; a cancelled job
//! never gets a result or a webhook. Cancelling a finished job changes nothing and answers the
//! job as it is.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::clock::to_secs;
use crate::faults::{Outcome, WebhookMode};

/// `error_message` of a job cancelled through `DELETE`.
pub const CANCELLED_MESSAGE: &str = "cancelled by user";

/// `error_message` of a job failed by a rule that gave no message of its own.
pub(crate) const DEFAULT_FAIL_MESSAGE: &str =
    "The research job failed: the model did not finish within its time limit.";

/// A job's status as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum JobStatus {
    Created,
    InProgress,
    Completed,
    Failed,
}

impl JobStatus {
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Where and how to sign the job's webhook.
#[derive(Debug, Clone)]
pub(crate) struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// How the job behaves, fixed at creation from the config and the first matching rule.
#[derive(Debug, Clone)]
pub(crate) struct JobPlan {
    pub webhook: WebhookMode,
    pub webhook_delay_ms: i64,
    pub outcome: Outcome,
    pub fail_message: String,
    /// The rule that shaped the job, for the control API's job listing.
    pub rule_id: Option<u64>,
}

/// One simulated job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: String,
    /// Creation order, for newest-first listing and paging.
    pub seq: u64,
    /// The bearer token that created it: listing and idempotency are per key.
    pub api_key: String,
    pub model: String,
    pub question: String,
    pub idempotency_key: Option<String>,
    pub webhook: Option<WebhookTarget>,
    pub plan: JobPlan,
    pub created_ms: i64,
    pub start_ms: i64,
    pub finish_ms: i64,
    pub cancelled_ms: Option<i64>,
    /// Set once the finish has been acted on (webhook scheduled, dropped, or not needed).
    pub finish_handled: bool,
    /// The report, generated at creation for jobs that will complete.
    pub response: Option<Arc<Value>>,
}

/// The job object (`AsyncApiChatCompletionsResponse`) at one instant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    pub id: String,
    pub model: String,
    pub created_at: i64,
    pub status: JobStatus,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub error_message: Option<String>,
    pub response: Option<Arc<Value>>,
}

/// A list entry (`AsyncApiChatCompletionsResponseSummary`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobSummary {
    pub id: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub model: String,
    pub status: JobStatus,
}

/// The body POSTed to the job's webhook.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WebhookPayload {
    pub job_id: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Arc<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl Job {
    /// The status at simulator time `now_ms`.
    pub(crate) fn status_at(&self, now_ms: i64) -> JobStatus {
        if self.cancelled_ms.is_some() {
            JobStatus::Failed
        } else if now_ms >= self.finish_ms {
            match self.plan.outcome {
                Outcome::Complete => JobStatus::Completed,
                Outcome::Fail => JobStatus::Failed,
            }
        } else if now_ms >= self.start_ms {
            JobStatus::InProgress
        } else {
            JobStatus::Created
        }
    }

    /// Whether the job is past retention at `now_ms` and so answers 404.
    pub(crate) fn is_expired(&self, now_ms: i64, retention_ms: i64) -> bool {
        now_ms.saturating_sub(self.created_ms) >= retention_ms
    }

    /// The job object as a poll at `now_ms` sees it.
    pub(crate) fn view(&self, now_ms: i64) -> JobView {
        let status = self.status_at(now_ms);
        let started = now_ms >= self.start_ms || status.is_final();
        let (failed_at, error_message) = match (self.cancelled_ms, status) {
            (Some(at), _) => (Some(to_secs(at)), Some(CANCELLED_MESSAGE.to_owned())),
            (None, JobStatus::Failed) => (
                Some(to_secs(self.finish_ms)),
                Some(self.plan.fail_message.clone()),
            ),
            _ => (None, None),
        };
        let cancelled_before_start = self.cancelled_ms.is_some_and(|at| at < self.start_ms);
        JobView {
            id: self.id.clone(),
            model: self.model.clone(),
            created_at: to_secs(self.created_ms),
            status,
            started_at: (started && !cancelled_before_start).then(|| to_secs(self.start_ms)),
            completed_at: (status == JobStatus::Completed).then(|| to_secs(self.finish_ms)),
            failed_at,
            error_message,
            response: if status == JobStatus::Completed {
                self.response.clone()
            } else {
                None
            },
        }
    }

    /// The list entry at `now_ms`.
    pub(crate) fn summary(&self, now_ms: i64) -> JobSummary {
        let view = self.view(now_ms);
        JobSummary {
            id: view.id,
            created_at: view.created_at,
            started_at: view.started_at,
            completed_at: view.completed_at,
            failed_at: view.failed_at,
            model: view.model,
            status: view.status,
        }
    }

    /// The webhook body for the job's state at `now_ms`.
    pub(crate) fn webhook_payload(&self, now_ms: i64) -> WebhookPayload {
        let view = self.view(now_ms);
        WebhookPayload {
            job_id: view.id,
            status: view.status,
            response: view.response,
            error_message: view.error_message,
        }
    }
}

/// A random UUID (version 4), the form the provider's job ids take.
pub(crate) fn new_uuid() -> String {
    format_uuid(rand::random())
}

/// Formats 16 random bytes as a version-4 UUID string.
pub(crate) fn format_uuid(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(outcome: Outcome) -> Job {
        Job {
            id: "4a7c0f4e-0000-4000-8000-000000000001".into(),
            seq: 1,
            api_key: "key".into(),
            model: "sonar-deep-research".into(),
            question: "q".into(),
            idempotency_key: None,
            webhook: None,
            plan: JobPlan {
                webhook: WebhookMode::Deliver,
                webhook_delay_ms: 0,
                outcome,
                fail_message: "boom".into(),
                rule_id: None,
            },
            created_ms: 10_000,
            start_ms: 10_300,
            finish_ms: 11_500,
            cancelled_ms: None,
            finish_handled: false,
            response: Some(Arc::new(json!({"id": "r"}))),
        }
    }

    #[test]
    fn status_follows_the_clock() {
        let job = job(Outcome::Complete);
        let table = [
            (10_000, JobStatus::Created),
            (10_299, JobStatus::Created),
            (10_300, JobStatus::InProgress),
            (11_499, JobStatus::InProgress),
            (11_500, JobStatus::Completed),
            (99_999, JobStatus::Completed),
        ];

        for (now, expected) in table {
            assert_eq!(job.status_at(now), expected, "at {now}");
        }
    }

    #[test]
    fn the_response_is_shown_only_once_completed() {
        let job = job(Outcome::Complete);

        assert!(job.view(11_000).response.is_none());
        assert!(job.view(11_500).response.is_some());
        assert_eq!(job.view(11_500).completed_at, Some(11));
        assert_eq!(job.view(11_500).started_at, Some(10));
    }

    #[test]
    fn a_failing_job_reports_its_message_and_no_response() {
        let job = job(Outcome::Fail);

        let view = job.view(12_000);

        assert_eq!(view.status, JobStatus::Failed);
        assert_eq!(view.error_message.as_deref(), Some("boom"));
        assert_eq!(view.failed_at, Some(11));
        assert!(view.response.is_none());
    }

    #[test]
    fn a_cancelled_job_is_failed_with_the_cancel_message_forever() {
        let mut job = job(Outcome::Complete);
        job.cancelled_ms = Some(10_100);

        let view = job.view(50_000);

        assert_eq!(view.status, JobStatus::Failed);
        assert_eq!(view.error_message.as_deref(), Some(CANCELLED_MESSAGE));
        assert_eq!(view.started_at, None);
        assert!(view.response.is_none());
    }

    #[test]
    fn webhook_payload_has_only_the_documented_fields() {
        let completed = serde_json::to_value(job(Outcome::Complete).webhook_payload(20_000))
            .expect("payload should serialize");
        let failed = serde_json::to_value(job(Outcome::Fail).webhook_payload(20_000))
            .expect("payload should serialize");

        assert_eq!(
            completed,
            json!({"job_id": "4a7c0f4e-0000-4000-8000-000000000001",
                   "status": "COMPLETED", "response": {"id": "r"}})
        );
        assert_eq!(
            failed,
            json!({"job_id": "4a7c0f4e-0000-4000-8000-000000000001",
                   "status": "FAILED", "error_message": "boom"})
        );
    }

    #[test]
    fn uuids_have_the_version_4_layout() {
        let id = new_uuid();
        let groups: Vec<&str> = id.split('-').collect();

        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(
            groups[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
        assert_ne!(new_uuid(), id);
    }
}
