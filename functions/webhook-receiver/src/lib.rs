//! The provider's webhook: `POST /webhooks/perplexity/{job_id}`.
//!
//! Order matters and is fixed: verify the signature over the exact body bytes, then parse, then
//! look the job up, then apply the update with one conditional write, then try the e-mail. An
//! answer's status tells the provider what to do next:
//! - 2xx: the result is stored (now or by an earlier copy of the delivery), or the delivery
//!   changed nothing that a retry could change. Never before the result is durable: the write
//!   that stores it is a single conditional update (or one transaction for a split result), so a
//!   duplicate that loses the race sees the winner's stored result, not a half-finished one.
//!   A COMPLETED delivery without a usable result answers 202: it is counted, the job stays
//!   pending, and the reconciler fetches the result again; a resend of the same bytes would not
//!   help.
//! - 4xx: a retry of the same delivery cannot succeed (bad signature, malformed body, unknown
//!   job, another provider job).
//! - 5xx: our own transient fault (throttling, the table unreachable); the provider retries
//!   with backoff. A store error that no retry fixes (a bug, a corrupt item) is a 500, so the
//!   delivery is retried once the fault is repaired.
//!
//! An e-mail problem never changes the answer: the result is stored, and the reconciler retries
//! pending e-mails.
//!
//! Nothing the caller sent is logged: no body, no header value. A rejected delivery is one
//! `warn` line with the rejection's code and one embedded-metric line (`WebhookRejected`).

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use research_relay::app::App;
use research_relay::finish::{FinishOutcome, apply_provider_job, deliver_mail};
use research_relay::http::{Problem, body_bytes, json_response, route_path};
use research_relay::job::{MailState, is_job_id};
use research_relay::mailer::Mailer;
use research_relay::provider::{ProviderJob, ResearchProvider};
use research_relay::signature::{SIGNATURE_HEADER, SignatureError, verify_delivery};
use research_relay::store::StoreError;
use serde_json::json;
use tracing::Instrument;

/// The route's prefix; the job id follows it.
const ROUTE_PREFIX: &str = "/webhooks/perplexity/";

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
    /// Signed, but not a delivery we can read. The text is ours, never a piece of the body.
    #[error("malformed delivery: {0}")]
    Malformed(&'static str),
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

/// Answers one delivery. Every outcome, including our own faults, becomes an HTTP answer here;
/// the function never fails, so the Lambda runtime never turns a fault into a bare 502.
pub async fn handle<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: Request,
) -> Response<Body> {
    // The path id is attacker-controlled: it joins the span only when it has a job id's shape.
    let path_id = path_job_id(&request);
    let span = tracing::info_span!("webhook", job_id = tracing::field::Empty);
    if let Some(id) = path_id.as_deref().filter(|id| is_job_id(id)) {
        span.record("job_id", id);
    }

    async {
        match receive(app, &request, path_id).await {
            Ok(response) => response,
            Err(error) => {
                log_refusal(app, &error);
                error.into_problem().into_response()
            }
        }
    }
    .instrument(span)
    .await
}

fn log_refusal<P, M>(app: &App<P, M>, error: &WebhookError) {
    match error {
        WebhookError::Signature(kind) => {
            tracing::warn!(reason = kind.code(), "webhook rejected");
            research_relay::metrics::emit(
                "webhook-receiver",
                &[("WebhookRejected", 1.0)],
                app.clock.now_ms(),
            );
        }
        WebhookError::Store(StoreError::Transient(detail)) => {
            tracing::warn!(error = %detail, "webhook not stored; the provider will retry");
        }
        WebhookError::Store(StoreError::Permanent(detail)) => {
            tracing::error!(error = %detail, "webhook not stored");
        }
        other => tracing::info!(reason = %other, "webhook refused"),
    }
}

/// The job id in the request path, if the path is the webhook route.
fn path_job_id(request: &Request) -> Option<String> {
    let path = route_path(request);
    match path.strip_prefix(ROUTE_PREFIX) {
        Some(id) if !id.is_empty() && !id.contains('/') => Some(id.to_owned()),
        _ => None,
    }
}

/// The signature header's value. A header sent more than once is refused rather than guessed
/// at: only one signature was computed.
fn signature_header(request: &Request) -> Result<Option<&[u8]>, SignatureError> {
    let mut values = request.headers().get_all(SIGNATURE_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes())),
        (Some(_), Some(_)) => Err(SignatureError::Malformed),
    }
}

/// Why a signed body is not a delivery, in words that quote nothing from it: serde's messages
/// can carry pieces of the input, and they would reach the logs.
fn malformed(error: &serde_json::Error) -> WebhookError {
    use serde_json::error::Category;

    tracing::debug!(
        line = error.line(),
        column = error.column(),
        "delivery body did not parse"
    );
    WebhookError::Malformed(match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => "The body is not valid JSON.",
        Category::Data => {
            "The body is JSON but not a job delivery: job_id (string) and status are expected."
        }
    })
}

async fn receive<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: &Request,
    path_id: Option<String>,
) -> Result<Response<Body>, WebhookError> {
    let job_id = path_id.ok_or(WebhookError::NoRoute)?;
    if request.method() != Method::POST {
        return Err(WebhookError::MethodNotAllowed);
    }

    let body = body_bytes(request);
    let header = signature_header(request).map_err(WebhookError::Signature)?;
    verify_delivery(&app.signing_keys, &job_id, body, header).map_err(WebhookError::Signature)?;

    let delivery: ProviderJob = serde_json::from_slice(body).map_err(|error| malformed(&error))?;
    if delivery.id.is_empty() {
        return Err(WebhookError::Malformed("job_id is empty."));
    }
    if !is_job_id(&job_id) {
        return Err(WebhookError::UnknownJob);
    }
    let job = app
        .store
        .get_job(&job_id)
        .await?
        .ok_or(WebhookError::UnknownJob)?;

    let outcome = apply_provider_job(app, &job, &delivery).await?;
    // A duplicate is the loser of a race or a late copy: an expected outcome, logged at info.
    tracing::info!(
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

    // The result is durable; the e-mail is best effort here and retried by the reconciler. An
    // e-mail already sent or refused stays so, and then a claim could only fail.
    let mail_settled = matches!(
        job.mail_state,
        MailState::Sent | MailState::Rejected | MailState::NotNeeded
    );
    if stored && !mail_settled {
        match deliver_mail(app, &job_id).await {
            Ok(mail) => tracing::debug!(mail = ?mail, "e-mail step done"),
            Err(error) => {
                tracing::warn!(error = %error, "e-mail step failed; left for the reconciler")
            }
        }
    }

    Ok(json_response(
        status,
        &json!({"job_id": job_id, "outcome": outcome.as_str()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, headers: serde_json::Value) -> Request {
        let event = json!({
            "version": "2.0",
            "routeKey": "POST /webhooks/perplexity/{job_id}",
            "rawPath": path,
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "local",
                "domainName": "local",
                "domainPrefix": "local",
                "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "test"},
                "requestId": "r",
                "routeKey": "POST /webhooks/perplexity/{job_id}",
                "stage": "$default",
                "time": "",
                "timeEpoch": 0
            },
            "body": "{}",
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid event")
    }

    #[test]
    fn the_path_names_the_job() {
        let cases = [
            ("/webhooks/perplexity/01JOB", Some("01JOB")),
            ("/webhooks/perplexity/01JOB/", Some("01JOB")),
            ("/webhooks/perplexity/", None),
            ("/webhooks/perplexity/a/b", None),
            ("/webhooks/other/01JOB", None),
        ];

        for (path, expected) in cases {
            let request = event(path, json!({}));

            assert_eq!(path_job_id(&request).as_deref(), expected, "{path}");
        }
    }

    #[test]
    fn a_repeated_signature_header_is_malformed() {
        let one = event(
            "/webhooks/perplexity/x",
            json!({"x-perplexity-signature": "ab"}),
        );
        let none = event("/webhooks/perplexity/x", json!({}));
        let mut twice = event(
            "/webhooks/perplexity/x",
            json!({"x-perplexity-signature": "ab"}),
        );
        twice.headers_mut().append(
            SIGNATURE_HEADER,
            lambda_http::http::HeaderValue::from_static("cd"),
        );

        assert_eq!(signature_header(&one), Ok(Some(&b"ab"[..])));
        assert_eq!(signature_header(&none), Ok(None));
        assert_eq!(signature_header(&twice), Err(SignatureError::Malformed));
    }

    #[test]
    fn parse_errors_quote_nothing_from_the_body() {
        let secret_looking = r#"{"job_id": 12345678, "status": "COMPLETED"}"#;
        let error = serde_json::from_str::<ProviderJob>(secret_looking).expect_err("not a job");

        let refusal = malformed(&error);

        assert!(!refusal.to_string().contains("12345678"), "{refusal}");
        assert!(error.to_string().contains("12345678"), "serde quotes input");
    }

    #[test]
    fn every_refusal_maps_to_a_client_or_retry_status() {
        let cases = [
            (WebhookError::NoRoute, 404),
            (WebhookError::MethodNotAllowed, 405),
            (WebhookError::Signature(SignatureError::Missing), 401),
            (WebhookError::Signature(SignatureError::Malformed), 401),
            (WebhookError::Signature(SignatureError::Mismatch), 401),
            (WebhookError::Malformed("x"), 400),
            (WebhookError::UnknownJob, 404),
            (WebhookError::ProviderMismatch, 409),
            (WebhookError::Store(StoreError::Transient("t".into())), 503),
            (WebhookError::Store(StoreError::Permanent("p".into())), 500),
        ];

        for (error, status) in cases {
            let name = error.to_string();

            assert_eq!(error.into_problem().status, status, "{name}");
        }
    }
}
