//! Fault knobs: job rules (how new jobs behave) and HTTP faults (how provider calls answer).
//!
//! Both are plain data so a test can post them as JSON to the control API or pass them as
//! Rust values to [`crate::RunningSimulator`]; both are checked here once, so a typo in a test
//! fails loudly instead of silently running the happy path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest timing a rule may set (30 days): beyond the provider's own 30-minute job limit and
/// 24-hour retry window, so every realistic scenario fits, while absurd values are refused.
const MAX_RULE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest report a rule may ask for; well above DynamoDB's 400 KB item limit that the
/// product must handle, small enough to keep a test machine comfortable.
const MAX_REPORT_BYTES: usize = 20_000_000;
/// Most sources a rule may ask for.
const MAX_SOURCES: usize = 500;

/// How a finished job's webhook is delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// Delivered once, retried on failure: the normal case.
    #[default]
    Deliver,
    /// Never sent, as when the provider loses it; only polling can finish the job.
    Drop,
    /// Sent twice at once, each copy with its own retries, as an at-least-once sender may.
    Duplicate,
}

/// Whether a job ends with a report or with an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `COMPLETED` with a generated report.
    #[default]
    Complete,
    /// `FAILED` with `fail_message` (or a generic message).
    Fail,
}

/// What a `COMPLETED` job carries as its `response`.
///
/// The provider has been seen to report completion before the result is readable; a client must
/// not take such an answer for a finished report. These modes let tests produce it on demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// The generated report: the normal case.
    #[default]
    Full,
    /// `"response": null`, in polls and in the webhook.
    Missing,
    /// A completion object whose first choice has empty `content`.
    Empty,
}

/// A rule applied to new jobs whose last user message contains `match`.
///
/// Every field is optional: what a rule leaves out keeps the simulator's default. Rules are
/// checked in the order they were added and the first one that matches (and has uses left)
/// shapes the job; the choice is fixed at creation, so later rule changes never alter a
/// running job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRule {
    /// Substring of the job's last user message; `None` matches every new job.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// How many new jobs the rule shapes before it stops matching; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// How the finished job's webhook is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookMode>,
    /// Extra wait, on the simulator clock, between finishing and the first webhook attempt;
    /// with different delays on different jobs, deliveries arrive out of order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_delay_ms: Option<u64>,
    /// Whether the job completes or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The `error_message` of a failing job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_message: Option<String>,
    /// What a completed job's `response` holds; needs a completing outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseMode>,
    /// Pads the report with further paragraphs to about this many bytes of content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_bytes: Option<usize>,
    /// How many sources (`citations` and `search_results`) the report has; 0 gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<usize>,
    /// Time from creation to `IN_PROGRESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_after_ms: Option<u64>,
    /// Time from creation to `COMPLETED` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_after_ms: Option<u64>,
}

impl JobRule {
    /// Refuses rules that cannot mean what the caller intended.
    pub fn validate(&self) -> Result<(), InvalidControl> {
        if self.times == Some(0) {
            return Err(InvalidControl::new(
                "times must be at least 1 (leave it out for no limit)",
            ));
        }
        if self.fail_message.is_some() && self.outcome != Some(Outcome::Fail) {
            return Err(InvalidControl::new(
                "fail_message needs \"outcome\": \"fail\"",
            ));
        }
        if self.response.is_some_and(|mode| mode != ResponseMode::Full)
            && self.outcome == Some(Outcome::Fail)
        {
            return Err(InvalidControl::new(
                "response shapes a completed job; it cannot go with \"outcome\": \"fail\"",
            ));
        }
        for (name, value) in [
            ("webhook_delay_ms", self.webhook_delay_ms),
            ("start_after_ms", self.start_after_ms),
            ("complete_after_ms", self.complete_after_ms),
        ] {
            if value.is_some_and(|ms| ms > MAX_RULE_MS) {
                return Err(InvalidControl::new(format!(
                    "{name} must be at most {MAX_RULE_MS} (30 days)"
                )));
            }
        }
        if let (Some(start), Some(complete)) = (self.start_after_ms, self.complete_after_ms)
            && complete < start
        {
            return Err(InvalidControl::new(
                "complete_after_ms must not be smaller than start_after_ms",
            ));
        }
        if self
            .report_bytes
            .is_some_and(|bytes| bytes > MAX_REPORT_BYTES)
        {
            return Err(InvalidControl::new(format!(
                "report_bytes must be at most {MAX_REPORT_BYTES}"
            )));
        }
        if self.sources.is_some_and(|sources| sources > MAX_SOURCES) {
            return Err(InvalidControl::new(format!(
                "sources must be at most {MAX_SOURCES}"
            )));
        }
        Ok(())
    }

    /// Whether this rule is about a job with this last user message.
    pub(crate) fn matches_question(&self, question: &str) -> bool {
        self.matches
            .as_deref()
            .is_none_or(|needle| question.contains(needle))
    }
}

/// Which provider endpoint an HTTP fault answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultEndpoint {
    /// `POST /async/chat/completions`.
    Create,
    /// `GET /async/chat/completions/{id}`.
    Get,
    /// `GET /async/chat/completions`.
    List,
    /// `DELETE /async/chat/completions/{id}`.
    Delete,
    /// All four.
    Any,
}

impl FaultEndpoint {
    /// Whether a fault registered for `self` answers a call to `endpoint`.
    pub(crate) fn covers(self, endpoint: FaultEndpoint) -> bool {
        self == FaultEndpoint::Any || self == endpoint
    }
}

/// The next `times` provider calls to `endpoint` answer `status` and change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// Which calls the fault answers.
    pub endpoint: FaultEndpoint,
    /// The HTTP status to answer, 400-599 (typically 429, 500, 502 or 503).
    pub status: u16,
    /// How many calls it answers; 1 when left out.
    #[serde(default = "one")]
    pub times: u32,
    /// Sent as `Retry-After` (seconds), as the provider does on a 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

fn one() -> u32 {
    1
}

impl HttpFault {
    /// Refuses faults that would not be an error answer or would never fire.
    pub fn validate(&self) -> Result<(), InvalidControl> {
        if !(400..=599).contains(&self.status) {
            return Err(InvalidControl::new(
                "status must be an error status between 400 and 599",
            ));
        }
        if self.times == 0 {
            return Err(InvalidControl::new("times must be at least 1"));
        }
        Ok(())
    }
}

/// Why a rule, fault or control request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidControl(String);

impl InvalidControl {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for InvalidControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidControl {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_the_documented_json() {
        let rule: JobRule = serde_json::from_str(
            r#"{"match":"battery","times":2,"webhook":"duplicate","webhook_delay_ms":500,
                "outcome":"fail","fail_message":"upstream timeout","report_bytes":450000,
                "sources":50,"start_after_ms":10,"complete_after_ms":20}"#,
        )
        .expect("documented rule JSON should parse");

        assert_eq!(rule.matches.as_deref(), Some("battery"));
        assert_eq!(rule.webhook, Some(WebhookMode::Duplicate));
        assert_eq!(rule.outcome, Some(Outcome::Fail));
        assert!(rule.validate().is_ok());
    }

    #[test]
    fn a_response_mode_parses_and_refuses_a_failing_outcome() {
        let rule: JobRule = serde_json::from_str(r#"{"response":"missing"}"#)
            .expect("documented response rule should parse");
        let failing = JobRule {
            outcome: Some(Outcome::Fail),
            response: Some(ResponseMode::Empty),
            ..JobRule::default()
        };
        let unknown = serde_json::from_str::<JobRule>(r#"{"response":"partial"}"#);

        assert_eq!(rule.response, Some(ResponseMode::Missing));
        assert!(rule.validate().is_ok());
        assert!(failing.validate().is_err());
        assert!(unknown.is_err());
    }

    #[test]
    fn a_misspelt_rule_field_is_refused() {
        let parsed = serde_json::from_str::<JobRule>(r#"{"webhok":"drop"}"#);

        assert!(parsed.is_err());
    }

    #[test]
    fn contradictory_rules_are_refused() {
        let cases = [
            JobRule {
                times: Some(0),
                ..JobRule::default()
            },
            JobRule {
                fail_message: Some("x".into()),
                ..JobRule::default()
            },
            JobRule {
                start_after_ms: Some(10),
                complete_after_ms: Some(5),
                ..JobRule::default()
            },
            JobRule {
                sources: Some(MAX_SOURCES + 1),
                ..JobRule::default()
            },
        ];

        for rule in cases {
            assert!(rule.validate().is_err(), "{rule:?} should be refused");
        }
    }

    #[test]
    fn a_rule_without_match_matches_everything() {
        let any = JobRule::default();
        let some = JobRule {
            matches: Some("Zürich".into()),
            ..JobRule::default()
        };

        assert!(any.matches_question("anything"));
        assert!(some.matches_question("rents in Zürich 2025"));
        assert!(!some.matches_question("rents in Zurich 2025"));
    }

    #[test]
    fn http_faults_default_to_one_use_and_need_an_error_status() {
        let fault: HttpFault = serde_json::from_str(r#"{"endpoint":"create","status":429}"#)
            .expect("fault JSON should parse");
        let ok_status = HttpFault {
            status: 200,
            ..fault.clone()
        };

        assert_eq!(fault.times, 1);
        assert!(fault.validate().is_ok());
        assert!(ok_status.validate().is_err());
        assert!(FaultEndpoint::Any.covers(FaultEndpoint::Get));
        assert!(!FaultEndpoint::Create.covers(FaultEndpoint::Get));
    }
}
