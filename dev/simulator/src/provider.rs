//! The provider API: the four async chat-completion endpoints the product calls.
//!
//! Every call is counted first, then (a job GET only) held for the configured latency, then
//! authenticated (any non-empty bearer token is a valid API key; listing and idempotency keys are
//! scoped to it), then checked against armed HTTP faults, and only then validated and executed,
//! so a faulted call changes nothing. Fetching or
//! cancelling a job by id works with any key: ids are unguessable and the product uses a
//! single key, so checking ownership there would only make tests harder to set up.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::FaultEndpoint;
use crate::job::{JobView, WebhookTarget};
use crate::state::{NewJob, Simulator};
use crate::webhook;

/// Models the provider accepts on this API.
pub(crate) const MODELS: [&str; 4] = [
    "sonar",
    "sonar-pro",
    "sonar-reasoning-pro",
    "sonar-deep-research",
];

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Page size when the caller gives none, and the largest page served.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The provider routes, relative to the base URL.
pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/async/chat/completions", post(create).get(list))
        .route("/async/chat/completions/{id}", get(fetch).delete(cancel))
}

async fn create(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JobView>, ApiError> {
    sim.count_call(FaultEndpoint::Create);
    let api_key = bearer(&headers)?;
    sim.take_fault(FaultEndpoint::Create)?;
    let new = parse_create(&body, sim.config().loopback_webhooks_only)?;
    Ok(Json(sim.create_job(&api_key, new)))
}

async fn fetch(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    sim.count_call(FaultEndpoint::Get);
    let delay = sim.config().get_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    bearer(&headers)?;
    sim.take_fault(FaultEndpoint::Get)?;
    sim.get_job(&id).map(Json)
}

async fn cancel(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    sim.count_call(FaultEndpoint::Delete);
    bearer(&headers)?;
    sim.take_fault(FaultEndpoint::Delete)?;
    sim.cancel_job(&id).map(Json)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<String>,
    next_token: Option<String>,
}

async fn list(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    sim.count_call(FaultEndpoint::List);
    let api_key = bearer(&headers)?;
    sim.take_fault(FaultEndpoint::List)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::validation(
                    json!(["query", "limit"]),
                    format!("limit must be an integer between 1 and {MAX_LIMIT}"),
                    "value_error",
                )
            })?,
    };
    let before = match query.next_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(decode_token(token).ok_or_else(|| {
            ApiError::bad_request("next_token is not a token this API handed out")
        })?),
    };
    let (requests, next) = sim.list_jobs(&api_key, limit, before);
    Ok(Json(json!({
        "requests": requests,
        "next_token": next.map(encode_token),
    })))
}

fn encode_token(seq: u64) -> String {
    format!("nt_{seq:x}")
}

fn decode_token(token: &str) -> Option<u64> {
    u64::from_str_radix(token.strip_prefix("nt_")?, 16).ok()
}

/// The API key from `Authorization: Bearer <key>`; anything else is a 401.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(ApiError::unauthorized)?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Ok(token.to_owned())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn missing(loc: Value) -> ApiError {
    ApiError::validation(loc, "Field required", "missing")
}

/// Validates a create body the way the provider's FastAPI layer does: not JSON is a 400, a
/// missing or mistyped field a 422, an unknown model the provider's 400 `invalid_model`.
pub(crate) fn parse_create(body: &[u8], loopback_only: bool) -> Result<NewJob, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("Request body is not valid JSON: {err}")))?;
    let top = value.as_object().ok_or_else(|| {
        ApiError::validation(
            json!(["body"]),
            "Input should be a valid dictionary",
            "dict_type",
        )
    })?;
    let request = top
        .get("request")
        .ok_or_else(|| missing(json!(["body", "request"])))?
        .as_object()
        .ok_or_else(|| {
            ApiError::validation(
                json!(["body", "request"]),
                "Input should be a valid dictionary",
                "dict_type",
            )
        })?;

    let model = request
        .get("model")
        .ok_or_else(|| missing(json!(["body", "request", "model"])))?
        .as_str()
        .ok_or_else(|| {
            ApiError::validation(
                json!(["body", "request", "model"]),
                "Input should be a valid string",
                "string_type",
            )
        })?;
    if !MODELS.contains(&model) {
        return Err(ApiError::invalid_model(model));
    }

    let messages = request
        .get("messages")
        .ok_or_else(|| missing(json!(["body", "request", "messages"])))?
        .as_array()
        .ok_or_else(|| {
            ApiError::validation(
                json!(["body", "request", "messages"]),
                "Input should be a valid list",
                "list_type",
            )
        })?;
    let mut question = None;
    for (index, message) in messages.iter().enumerate() {
        let loc = |field: &str| json!(["body", "request", "messages", index, field]);
        let role = message
            .get("role")
            .ok_or_else(|| missing(loc("role")))?
            .as_str()
            .filter(|role| ROLES.contains(role))
            .ok_or_else(|| {
                ApiError::validation(
                    loc("role"),
                    "Input should be 'system', 'user', 'assistant' or 'tool'",
                    "enum",
                )
            })?;
        let content = message
            .get("content")
            .ok_or_else(|| missing(loc("content")))?;
        if role == "user" {
            question = Some(text_of(content));
        }
    }

    let idempotency_key = match top.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
        Some(_) => {
            return Err(ApiError::validation(
                json!(["body", "idempotency_key"]),
                "idempotency_key should be a non-empty string",
                "string_type",
            ));
        }
    };

    let webhook = match top.get("webhook") {
        None | Some(Value::Null) => None,
        Some(hook) => Some(parse_webhook(hook, loopback_only)?),
    };

    Ok(NewJob {
        model: model.to_owned(),
        question: question.unwrap_or_default(),
        idempotency_key,
        webhook,
    })
}

fn parse_webhook(hook: &Value, loopback_only: bool) -> Result<WebhookTarget, ApiError> {
    let field = |name: &str| -> Result<String, ApiError> {
        let loc = json!(["body", "webhook", name]);
        match hook.get(name) {
            None => Err(missing(loc)),
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(_) => Err(ApiError::validation(
                loc,
                "Input should be a non-empty string",
                "string_type",
            )),
        }
    };
    if !hook.is_object() {
        return Err(ApiError::validation(
            json!(["body", "webhook"]),
            "Input should be a valid dictionary",
            "dict_type",
        ));
    }
    let url = field("url")?;
    let secret = field("secret")?;
    webhook::check_url(&url, loopback_only).map_err(|reason| {
        ApiError::validation(json!(["body", "webhook", "url"]), reason, "value_error")
    })?;
    Ok(WebhookTarget { url, secret })
}

/// The text of a message's content: a string, or the text chunks of a structured content.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(chunks) => chunks
            .iter()
            .filter_map(|chunk| chunk.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn status_of(body: &str) -> u16 {
        match parse_create(body.as_bytes(), true) {
            Ok(_) => 200,
            Err(err) => err.status().as_u16(),
        }
    }

    #[test]
    fn create_bodies_are_validated_like_the_provider() {
        let table = [
            (r#"{"request":{"model":"sonar","messages":[]}}"#, 200),
            (r#"{"request":{"model":"sonar"#, 400),
            ("", 400),
            ("[]", 422),
            (r#"{}"#, 422),
            (r#"{"request":{"messages":[]}}"#, 422),
            (r#"{"request":{"model":42,"messages":[]}}"#, 422),
            (r#"{"request":{"model":"gpt-4","messages":[]}}"#, 400),
            (r#"{"request":{"model":"sonar","messages":{}}}"#, 422),
            (
                r#"{"request":{"model":"sonar","messages":[{"role":"robot","content":"x"}]}}"#,
                422,
            ),
            (
                r#"{"request":{"model":"sonar","messages":[{"role":"user"}]}}"#,
                422,
            ),
            (
                r#"{"request":{"model":"sonar","messages":[]},"idempotency_key":""}"#,
                422,
            ),
            (
                r#"{"request":{"model":"sonar","messages":[]},"webhook":{"url":"http://127.0.0.1:1/h"}}"#,
                422,
            ),
            (
                r#"{"request":{"model":"sonar","messages":[]},"webhook":{"url":"https://example.com/h","secret":"s"}}"#,
                422,
            ),
        ];

        for (body, expected) in table {
            assert_eq!(status_of(body), expected, "{body}");
        }
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let body = r#"{"request":{"model":"sonar-deep-research","messages":[
            {"role":"system","content":"Be precise."},
            {"role":"user","content":"first"},
            {"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"Rents in Zürich"},{"type":"text","text":"2025"}]}
        ]},"idempotency_key":"01JOB","webhook":{"url":"http://127.0.0.1:9/hook","secret":"s3"}}"#;

        let job = parse_create(body.as_bytes(), true).expect("body should be valid");

        assert_eq!(job.question, "Rents in Zürich\n2025");
        assert_eq!(job.idempotency_key.as_deref(), Some("01JOB"));
        assert_eq!(job.webhook.map(|w| w.secret), Some("s3".to_owned()));
    }

    #[test]
    fn only_a_non_empty_bearer_token_is_accepted() {
        let cases = [
            (Some("Bearer pplx-test"), true),
            (Some("bearer pplx-test"), true),
            (Some("Bearer "), false),
            (Some("Bearer"), false),
            (Some("Basic dXNlcjpwYXNz"), false),
            (None, false),
        ];

        for (header, accepted) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static(value));
            }
            assert_eq!(bearer(&headers).is_ok(), accepted, "{header:?}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_junk_is_refused() {
        assert_eq!(decode_token(&encode_token(4711)), Some(4711));
        assert_eq!(decode_token("4711"), None);
        assert_eq!(decode_token("nt_zz"), None);
    }
}
