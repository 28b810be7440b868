//! The jobs API for frontends: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`.
//!
//! [`handle`] takes an API Gateway request (payload 2.0 or 1.0, any stage) and answers it. Every
//! failure is an [`ApiError`], turned into a problem document in exactly one place
//! ([`ApiError::into_problem`]); 4xx are the caller's mistakes, 5xx only our own faults.
//! `openapi.yaml` at the repository root describes every answer, and a test checks the real
//! answers against it.
//!
//! Choices where the contract is silent:
//! - An idempotent replay answers what the first request answered: `202` with the job as it is
//!   now, or the same `422` when the provider refused the job at submission. It carries
//!   `Idempotent-Replayed: true` and creates nothing, neither a job nor a provider call.
//! - A job refused by the provider still counts toward the daily quota: it was created.
//! - `DELETE` answers `200` with the cancelled job, also when it was cancelled before, so a
//!   retried cancel is harmless; only a job finished otherwise is a `409`.
//! - A listing page is exact: `next_cursor` is `null` on the last page, never a cursor to an
//!   empty page. The owner index is eventually consistent in DynamoDB, so a job created a
//!   moment ago may appear in the listing a moment later; `GET /jobs/{id}` sees it at once.
//! - An id that is not one of ours, or another owner's job, is the same `404`: the answer
//!   reveals nothing about who else has jobs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::http::Method;
use lambda_http::{Body, Request, RequestExt, Response};
use research_relay::app::App;
use research_relay::finish::duration_ms;
use research_relay::http::{
    Caller, FieldError, Problem, body_bytes, caller, header, json_response, route_path,
};
use research_relay::job::{JobEvent, JobStatus, MailState, is_job_id, new_job_id};
use research_relay::mailer::Mailer;
use research_relay::provider::{CompletionResponse, ResearchProvider};
use research_relay::request::{RequestError, validate};
use research_relay::store::{
    ChangeFields, ChangeOutcome, CreateGuards, CreateOutcome, IdempotencyGuard, JobRecord,
    StartKey, StoreError,
};
use research_relay::submission::{SubmitOutcome, submit_job};
use research_relay::view::{job_view, seconds_to_next_utc_day, summary_view, utc_day};
use serde_json::json;

/// Largest page of `GET /jobs`.
pub const MAX_PAGE: i32 = 100;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: i32 = 20;
/// How long a new job waits before the reconciler may submit it in this request's place.
pub const SUBMIT_GRACE_MS: i64 = 30_000;
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Everything this API answers with other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No authorizer claims: the route was reached without the JWT authorizer.
    #[error("missing caller identity")]
    Unauthenticated,
    /// No such route.
    #[error("no such route")]
    NoRoute,
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The body or a parameter is invalid.
    #[error("invalid request")]
    Invalid(RequestError),
    /// A query or header parameter is invalid.
    #[error("invalid parameter")]
    InvalidParameter(FieldError),
    /// No such job for this caller.
    #[error("job not found")]
    NotFound,
    /// The job is finished and cannot be cancelled.
    #[error("job already finished")]
    Finished(JobStatus),
    /// The idempotency key was used with another body.
    #[error("idempotency key reused")]
    KeyReused,
    /// The daily quota is used up.
    #[error("quota exceeded")]
    QuotaExceeded {
        /// Seconds until it resets.
        retry_after: u64,
    },
    /// The provider refused the request itself; the job is stored as FAILED.
    #[error("provider refused the request")]
    ProviderRejected {
        /// The job, now FAILED.
        job_id: String,
        /// What to tell the caller: the provider's reason in a sentence, as stored on the job.
        detail: String,
    },
    /// The store is unavailable or refused a request.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The one place an error becomes an HTTP answer.
    pub fn into_problem(self) -> Problem {
        match self {
            Self::Unauthenticated => Problem::new(
                401,
                "unauthenticated",
                "Authentication required",
                "This route needs a valid bearer token with sub and email claims.",
            ),
            Self::NoRoute => {
                Problem::new(404, "no-such-route", "Not found", "There is no such route.")
            }
            Self::MethodNotAllowed(allowed) => Problem::new(
                405,
                "method-not-allowed",
                "Method not allowed",
                format!("This route accepts {allowed}."),
            ),
            // Errors about the body as a whole name the empty JSON pointer, so every 400 about
            // the body carries `errors` and a client needs one code path to show them.
            Self::Invalid(RequestError::Empty) => whole_body(Problem::new(
                400,
                "empty-body",
                "Request body required",
                "Send a JSON object such as {\"query\": \"...\"}.",
            )),
            Self::Invalid(RequestError::TooLarge(size)) => whole_body(Problem::new(
                413,
                "body-too-large",
                "Request body too large",
                format!(
                    "The body has {size} bytes; at most {} are accepted.",
                    research_relay::request::MAX_BODY_BYTES
                ),
            )),
            Self::Invalid(RequestError::Malformed(detail)) => whole_body(Problem::new(
                400,
                "malformed-body",
                "Malformed request body",
                detail,
            )),
            Self::Invalid(RequestError::Invalid(errors)) => Problem {
                errors,
                ..Problem::new(
                    400,
                    "validation-failed",
                    "Invalid request",
                    "One or more fields are invalid; see errors.",
                )
            },
            Self::InvalidParameter(error) => Problem {
                detail: format!("{}: {}", error.field, error.message),
                errors: vec![error],
                ..Problem::new(400, "invalid-parameter", "Invalid parameter", "")
            },
            Self::NotFound => Problem::new(
                404,
                "job-not-found",
                "Job not found",
                "No job with this id belongs to you.",
            ),
            Self::Finished(status) => Problem::new(
                409,
                "job-finished",
                "Job already finished",
                format!(
                    "The job is {} and can no longer be cancelled.",
                    status.as_str()
                ),
            ),
            Self::KeyReused => Problem::new(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "This Idempotency-Key was used with a different request body in the last 24 hours.",
            ),
            Self::QuotaExceeded { retry_after } => Problem {
                retry_after: Some(retry_after),
                ..Problem::new(
                    429,
                    "quota-exceeded",
                    "Daily quota exceeded",
                    "You have created as many jobs today as allowed; the quota resets at midnight UTC.",
                )
            },
            Self::ProviderRejected { job_id, detail } => Problem {
                instance: Some(format!("/jobs/{job_id}")),
                ..Problem::new(
                    422,
                    "provider-rejected",
                    "Research provider refused the request",
                    detail,
                )
            },
            Self::Store(StoreError::Transient(_)) => Problem {
                retry_after: Some(2),
                ..Problem::new(
                    503,
                    "temporarily-unavailable",
                    "Temporarily unavailable",
                    "The service is briefly unavailable; retry the request.",
                )
            },
            Self::Store(StoreError::Permanent(_)) => Problem::new(
                500,
                "internal-error",
                "Internal error",
                "The request could not be completed.",
            ),
        }
    }
}

/// A problem about the body as a whole: its detail, repeated as an error of the empty pointer.
fn whole_body(problem: Problem) -> Problem {
    Problem {
        errors: vec![FieldError::new("", problem.detail.clone())],
        ..problem
    }
}

/// Answers one request.
pub async fn handle<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: Request,
) -> Response<Body> {
    match route(app, &request).await {
        Ok(response) => response,
        Err(error) => {
            if let ApiError::Store(store_error) = &error {
                tracing::error!(error = %store_error, "store failure while answering a jobs request");
            }
            let allow = match &error {
                ApiError::MethodNotAllowed(allowed) => Some(*allowed),
                _ => None,
            };
            let mut response = error.into_problem().into_response();
            if let Some(allowed) = allow {
                response.headers_mut().insert(
                    "allow",
                    lambda_http::http::HeaderValue::from_static(allowed),
                );
            }
            response
        }
    }
}

async fn route<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    let path = route_path(request);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method();

    match segments.as_slice() {
        ["jobs"] => {
            let caller = caller(request).ok_or(ApiError::Unauthenticated)?;
            match *method {
                Method::POST => create(app, request, &caller).await,
                Method::GET => list(app, request, &caller).await,
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            }
        }
        ["jobs", id] => {
            let caller = caller(request).ok_or(ApiError::Unauthenticated)?;
            match *method {
                Method::GET => show(app, id, &caller).await,
                Method::DELETE => cancel(app, id, &caller).await,
                _ => Err(ApiError::MethodNotAllowed("GET, DELETE")),
            }
        }
        _ => Err(ApiError::NoRoute),
    }
}

async fn create<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: &Request,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let idempotency_key = idempotency_key(request)?;
    let validated =
        validate(body_bytes(request), &caller.email, &app.config).map_err(ApiError::Invalid)?;

    let now = app.clock.now_ms();
    let mut job = JobRecord::new_queued(
        new_job_id(),
        caller.owner.clone(),
        validated.recipient.clone(),
        validated.question.clone(),
        validated.provider_request.clone(),
        validated.model.clone(),
        now,
        idempotency_key.clone(),
    );
    // This request submits the job itself right after storing it. The reconciler only steps in
    // if it could not (a crash between the two steps), so the job becomes due after a grace
    // period instead of at once; otherwise both would race to submit and waste a paced slot.
    job.due_at = Some(now + SUBMIT_GRACE_MS);
    let guards = CreateGuards {
        idempotency: idempotency_key.map(|key| IdempotencyGuard {
            key,
            body_hash: validated.body_hash(),
        }),
        daily_quota: app.config.daily_job_quota,
        day: utc_day(now),
        idempotency_ttl_ms: duration_ms(app.config.idempotency_ttl),
    };

    match app.store.create_job(&job, &guards, now).await? {
        CreateOutcome::Created => {}
        CreateOutcome::Replay { job_id } => {
            let existing = app
                .store
                .get_job(&job_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            tracing::info!(job_id = %existing.id, status = existing.status.as_str(), "idempotent replay");
            if refused_at_submission(&existing) {
                let mut response = ApiError::ProviderRejected {
                    job_id: existing.id.clone(),
                    detail: existing
                        .failure_reason
                        .clone()
                        .unwrap_or_else(|| "The research provider refused the request.".to_owned()),
                }
                .into_problem()
                .into_response();
                response.headers_mut().insert(
                    "idempotent-replayed",
                    lambda_http::http::HeaderValue::from_static("true"),
                );
                return Ok(response);
            }
            return Ok(accepted(app, &existing, true));
        }
        CreateOutcome::KeyReused => return Err(ApiError::KeyReused),
        CreateOutcome::QuotaExceeded => {
            return Err(ApiError::QuotaExceeded {
                retry_after: seconds_to_next_utc_day(now),
            });
        }
    }
    tracing::info!(job_id = %job.id, status = "QUEUED", "job created");

    // The job is durable now. Whatever happens below, the reconciler can finish submitting it,
    // so a store hiccup here still answers 202 with the job as created.
    match submit_job(app, &job, false).await {
        Ok(SubmitOutcome::Rejected { message, .. }) => Err(ApiError::ProviderRejected {
            job_id: job.id,
            detail: format!("The research provider refused the request: {message}"),
        }),
        // The accepting write returns the job as stored: no need to read it again.
        Ok(SubmitOutcome::Accepted(current)) => Ok(accepted(app, &current, false)),
        Ok(_) => {
            let current = app
                .store
                .get_job(&job.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(job);
            Ok(accepted(app, &current, false))
        }
        Err(error) => {
            tracing::warn!(job_id = %job.id, error = %error, "submission not recorded; the reconciler will retry it");
            Ok(accepted(app, &job, false))
        }
    }
}

/// Whether the provider refused the job when this API submitted it: FAILED without ever having
/// had a provider id, and not to be mailed (the caller was told in the answer).
fn refused_at_submission(job: &JobRecord) -> bool {
    job.status == JobStatus::Failed
        && job.provider_id.is_none()
        && job.mail_state == MailState::NotNeeded
}

fn accepted<P, M>(app: &App<P, M>, job: &JobRecord, replayed: bool) -> Response<Body> {
    let mut response = json_response(202, &job_view(job, None));
    let headers = response.headers_mut();
    if let Ok(location) = app.config.job_location(&job.id).parse() {
        headers.insert("location", location);
    }
    if replayed {
        headers.insert(
            "idempotent-replayed",
            lambda_http::http::HeaderValue::from_static("true"),
        );
    }
    response
}

fn idempotency_key(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(raw) = header(request, "idempotency-key") else {
        return Ok(None);
    };
    let valid = !raw.is_empty()
        && raw.len() <= MAX_IDEMPOTENCY_KEY
        && raw.iter().all(|byte| (0x21..=0x7e).contains(byte));
    if !valid {
        return Err(ApiError::InvalidParameter(FieldError::new(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )));
    }
    Ok(Some(String::from_utf8_lossy(raw).into_owned()))
}

async fn load_owned<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    id: &str,
    caller: &Caller,
) -> Result<JobRecord, ApiError> {
    if !is_job_id(id) {
        return Err(ApiError::NotFound);
    }
    match app.store.get_job(id).await? {
        Some(job) if job.owner == caller.owner => Ok(job),
        _ => Err(ApiError::NotFound),
    }
}

async fn show<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let job = load_owned(app, id, caller).await?;

    let result = match app.store.load_result(&job).await? {
        Some(bytes) => serde_json::from_slice::<CompletionResponse>(&bytes).ok(),
        None => None,
    };

    Ok(json_response(200, &job_view(&job, result.as_ref())))
}

async fn list<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    request: &Request,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let query = request.query_string_parameters();
    let limit = match query.first("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<i32>() {
            Ok(limit @ 1..=MAX_PAGE) => limit,
            _ => {
                return Err(ApiError::InvalidParameter(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE}"),
                )));
            }
        },
    };
    let start = match query.first("cursor") {
        None => None,
        Some(cursor) => Some(decode_cursor(cursor, &caller.owner)?),
    };

    // One item more than asked tells whether another page exists, so the last page says so
    // instead of handing out a cursor to an empty page.
    let mut page = app
        .store
        .jobs_of_owner(&caller.owner, limit + 1, start)
        .await?;
    let page_size = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = page.items.len() > page_size || page.next.is_some();
    page.items.truncate(page_size);
    let next_cursor = page
        .items
        .last()
        .filter(|_| more)
        .map(|last| URL_SAFE_NO_PAD.encode(last.id.as_bytes()));
    let jobs: Vec<_> = page.items.iter().map(summary_view).collect();
    Ok(json_response(
        200,
        &json!({"jobs": jobs, "next_cursor": next_cursor}),
    ))
}

/// A cursor is the last job id of the previous page, encoded. The owner comes from the caller,
/// never from the cursor, so a cursor cannot open another owner's listing.
fn decode_cursor(cursor: &str, owner: &str) -> Result<StartKey, ApiError> {
    let invalid =
        || ApiError::InvalidParameter(FieldError::new("cursor", "is not a cursor this API issued"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let id = String::from_utf8(bytes).map_err(|_| invalid())?;
    if !is_job_id(&id) {
        return Err(invalid());
    }
    Ok(research_relay::store::owner_index_key(owner, &id))
}

async fn cancel<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    id: &str,
    caller: &Caller,
) -> Result<Response<Body>, ApiError> {
    let job = load_owned(app, id, caller).await?;
    if job.status == JobStatus::Cancelled {
        return Ok(json_response(200, &job_view(&job, None)));
    }
    if job.status.is_final() {
        return Err(ApiError::Finished(job.status));
    }

    let now = app.clock.now_ms();
    let fields = ChangeFields::new()
        .text("mail_state", MailState::NotNeeded.as_str())
        .not_due();
    let cancelled = match app
        .store
        .change_status(&job.id, JobEvent::Cancelled, fields, now)
        .await?
    {
        ChangeOutcome::Applied(cancelled) => cancelled,
        ChangeOutcome::NotApplied(current) if current.status == JobStatus::Cancelled => current,
        ChangeOutcome::NotApplied(current) => return Err(ApiError::Finished(current.status)),
        ChangeOutcome::Missing => return Err(ApiError::NotFound),
    };
    tracing::info!(job_id = %job.id, status = "CANCELLED", "job cancelled by its owner");

    if let Some(provider_id) = &cancelled.provider_id
        && let Err(error) = app.provider.cancel(provider_id).await
    {
        // The job is cancelled on our side whatever the provider does: no result will be stored
        // or mailed. The provider may still finish (and charge for) the work.
        tracing::warn!(job_id = %job.id, error = %error, "provider cancel failed");
    }
    Ok(json_response(200, &job_view(&cancelled, None)))
}
