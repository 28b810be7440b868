//! The job and its state machine.
//!
//! A job moves forward only. The table below is the single source of truth: the store turns each
//! event's allowed starting states into the condition of its conditional write, so a duplicate or
//! late event can never move a job backwards, and a finished job never changes status again.
//!
//! ```text
//! QUEUED ──Submitted──▶ SUBMITTED ──Started──▶ IN_PROGRESS
//!   │                      │                       │
//!   └──────────────────────┴── Completed / Failed / Cancelled / Expired ──▶ (final)
//! ```
//! Final states: COMPLETED, FAILED, CANCELLED, EXPIRED.

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Stored, not yet accepted by the provider (first attempt pending, or rate limited).
    Queued,
    /// The provider accepted it and has not started.
    Submitted,
    /// The provider is working on it.
    InProgress,
    /// Finished with a stored result.
    Completed,
    /// Finished without a result; the reason is stored.
    Failed,
    /// Cancelled by its owner; never mailed.
    Cancelled,
    /// The result could not be fetched within the provider's retention.
    Expired,
}

impl JobStatus {
    /// Every status, for tables and tests.
    pub const ALL: [JobStatus; 7] = [
        Self::Queued,
        Self::Submitted,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Submitted => "SUBMITTED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Whether the job can never change status again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired
        )
    }
}

/// Something that happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The provider accepted the job.
    Submitted,
    /// The provider reports the job running.
    Started,
    /// The provider delivered a usable result.
    Completed,
    /// The provider reports failure (or refused the job at submission).
    Failed,
    /// The owner cancelled it.
    Cancelled,
    /// The provider can no longer return its result.
    Expired,
}

impl JobEvent {
    /// The status the event leads to.
    pub fn target(self) -> JobStatus {
        match self {
            Self::Submitted => JobStatus::Submitted,
            Self::Started => JobStatus::InProgress,
            Self::Completed => JobStatus::Completed,
            Self::Failed => JobStatus::Failed,
            Self::Cancelled => JobStatus::Cancelled,
            Self::Expired => JobStatus::Expired,
        }
    }

    /// The statuses from which the event changes the job. The store writes exactly this set as
    /// the condition of the update.
    pub fn allowed_from(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Self::Submitted => &[Queued],
            Self::Started => &[Queued, Submitted],
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired => {
                &[Queued, Submitted, InProgress]
            }
        }
    }
}

/// What an event means for a job in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Write the new status.
    Apply(JobStatus),
    /// Nothing to do: the job is already there or past it. A success for the caller.
    AlreadyDone,
    /// The job is finished differently; the event is ignored. For a provider event this is still
    /// a success (a late or reordered delivery); for a cancel it is a conflict.
    Refused(JobStatus),
}

/// The state machine: what `event` does to a job in `current`.
pub fn transition(current: JobStatus, event: JobEvent) -> Transition {
    let target = event.target();
    if event.allowed_from().contains(&current) {
        return Transition::Apply(target);
    }
    if current == target || (!current.is_final() && rank(current) > rank(target)) {
        return Transition::AlreadyDone;
    }
    Transition::Refused(current)
}

fn rank(status: JobStatus) -> u8 {
    match status {
        JobStatus::Queued => 0,
        JobStatus::Submitted => 1,
        JobStatus::InProgress => 2,
        _ => 3,
    }
}

/// Where the job's e-mail is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MailState {
    /// Nothing to send yet (job not finished).
    None,
    /// To send; the reconciler retries it.
    Pending,
    /// Claimed by a sender until its lease ends.
    Sending,
    /// SES accepted it; the message id is stored.
    Sent,
    /// SES refused it for good; the reason is stored and it is not retried.
    Rejected,
    /// No e-mail for this job (cancelled).
    NotNeeded,
}

impl MailState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Pending => "PENDING",
            Self::Sending => "SENDING",
            Self::Sent => "SENT",
            Self::Rejected => "REJECTED",
            Self::NotNeeded => "NOT_NEEDED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::None,
            Self::Pending,
            Self::Sending,
            Self::Sent,
            Self::Rejected,
            Self::NotNeeded,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A new job id: a ULID, so ids sort by creation time and leak nothing else.
pub fn new_job_id() -> String {
    ulid::Ulid::new().to_string()
}

/// Whether `text` looks like one of our job ids (26 Crockford base32 characters). Checked before
/// any read so garbage in a path never reaches the table.
pub fn is_job_id(text: &str) -> bool {
    text.parse::<ulid::Ulid>().is_ok() && text.len() == 26
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobEvent as E;
    use JobStatus::*;
    use Transition::*;

    #[test]
    fn every_transition_is_as_the_table_says() {
        let table = [
            (Queued, E::Submitted, Apply(Submitted)),
            (Queued, E::Started, Apply(InProgress)),
            (Queued, E::Completed, Apply(Completed)),
            (Queued, E::Failed, Apply(Failed)),
            (Queued, E::Cancelled, Apply(Cancelled)),
            (Queued, E::Expired, Apply(Expired)),
            (Submitted, E::Submitted, AlreadyDone),
            (Submitted, E::Started, Apply(InProgress)),
            (Submitted, E::Completed, Apply(Completed)),
            (Submitted, E::Failed, Apply(Failed)),
            (Submitted, E::Cancelled, Apply(Cancelled)),
            (Submitted, E::Expired, Apply(Expired)),
            (InProgress, E::Submitted, AlreadyDone),
            (InProgress, E::Started, AlreadyDone),
            (InProgress, E::Completed, Apply(Completed)),
            (InProgress, E::Failed, Apply(Failed)),
            (InProgress, E::Cancelled, Apply(Cancelled)),
            (InProgress, E::Expired, Apply(Expired)),
            (Completed, E::Completed, AlreadyDone),
            (Failed, E::Failed, AlreadyDone),
            (Cancelled, E::Cancelled, AlreadyDone),
            (Expired, E::Expired, AlreadyDone),
        ];

        for (from, event, expected) in table {
            assert_eq!(transition(from, event), expected, "{from:?} + {event:?}");
        }
    }

    #[test]
    fn finished_states_absorb_every_other_event() {
        let events = [
            E::Submitted,
            E::Started,
            E::Completed,
            E::Failed,
            E::Cancelled,
            E::Expired,
        ];

        for from in JobStatus::ALL
            .into_iter()
            .filter(|status| status.is_final())
        {
            for event in events {
                let result = transition(from, event);
                if event.target() == from {
                    assert_eq!(result, AlreadyDone, "{from:?} + {event:?}");
                } else {
                    assert_eq!(result, Refused(from), "{from:?} + {event:?}");
                }
            }
        }
    }

    #[test]
    fn duplicates_are_already_done() {
        for status in JobStatus::ALL {
            let event = match status {
                Queued => continue,
                Submitted => E::Submitted,
                InProgress => E::Started,
                Completed => E::Completed,
                Failed => E::Failed,
                Cancelled => E::Cancelled,
                Expired => E::Expired,
            };

            assert_eq!(transition(status, event), AlreadyDone);
        }
    }

    #[test]
    fn stored_spellings_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("DONE"), None);
    }

    #[test]
    fn job_ids_are_checked_before_use() {
        assert!(is_job_id(&new_job_id()));
        assert!(!is_job_id("../etc/passwd"));
        assert!(!is_job_id(""));
    }
}
