//! The job view: what `GET /jobs/{id}` and the other job routes return.
//!
//! Field names and meanings are part of the public API (see `openapi.yaml`). Timestamps are
//! RFC 3339 in UTC. The report is the Markdown answer without the model's think block; the raw
//! provider answer stays in the table.

use serde_json::{Value, json};

use crate::job::{JobStatus, MailState};
use crate::provider::CompletionResponse;
use crate::report;
use crate::store::{JobRecord, JobSummary};

/// The full view of one job; `result` is the stored provider answer when the job has one.
pub fn job_view(job: &JobRecord, result: Option<&CompletionResponse>) -> Value {
    let mut view = json!({
        "id": job.id,
        "status": job.status.as_str(),
        "question": job.question,
        "model": job.model,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "finished_at": job.finished_at.map(rfc3339),
        "cost_usd": job.cost_usd,
        "email": email_view(job),
        "links": {"self": format!("/jobs/{}", job.id)},
    });

    if matches!(job.status, JobStatus::Failed | JobStatus::Expired) {
        view["failure_reason"] = json!(job.failure_reason);
    }
    if let Some(completion) = result {
        let stripped = report::strip_think(completion.content().unwrap_or_default());
        let sources: Vec<Value> = report::sources(completion)
            .into_iter()
            .map(|source| {
                json!({
                    "number": source.number,
                    "title": source.title,
                    "url": source.url,
                    "date": source.date,
                })
            })
            .collect();
        view["report"] = json!(stripped.answer);
        view["report_empty"] = json!(stripped.is_empty);
        view["sources"] = json!(sources);
    }
    view
}

fn email_view(job: &JobRecord) -> Value {
    let state = match job.mail_state {
        MailState::None => "NOT_YET",
        MailState::Pending | MailState::Sending => "PENDING",
        MailState::Sent => "SENT",
        MailState::Rejected => "REJECTED",
        MailState::NotNeeded => "NOT_SENT",
    };
    let mut view = json!({"state": state});
    if job.mail_state == MailState::Rejected {
        view["reason"] = json!(job.mail_error);
    }
    view
}

/// One row of the owner's listing.
pub fn summary_view(summary: &JobSummary) -> Value {
    json!({
        "id": summary.id,
        "status": summary.status.as_str(),
        "question": summary.question,
        "model": summary.model,
        "created_at": rfc3339(summary.created_at),
        "updated_at": rfc3339(summary.updated_at),
        "finished_at": summary.finished_at.map(rfc3339),
        "cost_usd": summary.cost_usd,
        "links": {"self": format!("/jobs/{}", summary.id)},
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let millis = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let seconds_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60,
        seconds_of_day % 60
    )
}

/// The UTC calendar day of a moment, `yyyy-mm-dd`; quota counters are per day.
pub fn utc_day(unix_ms: i64) -> String {
    let (year, month, day) = civil_from_days(unix_ms.div_euclid(86_400_000));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Seconds from `unix_ms` to the next UTC midnight, when a daily quota resets.
pub fn seconds_to_next_utc_day(unix_ms: i64) -> u64 {
    let into_day = unix_ms.rem_euclid(86_400_000);
    ((86_400_000 - into_day) as u64).div_ceil(1000)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_735_690_000_123), "2025-01-01T00:06:40.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn quota_days_reset_at_utc_midnight() {
        let just_before_midnight = 1_735_689_599_000;

        assert_eq!(utc_day(just_before_midnight), "2024-12-31");
        assert_eq!(seconds_to_next_utc_day(just_before_midnight), 1);
        assert_eq!(utc_day(just_before_midnight + 1000), "2025-01-01");
    }
}
