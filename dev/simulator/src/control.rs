//! The control API under `/_sim`: what tests use to steer the simulator and to look inside it.
//!
//! It needs no authentication (the simulator only listens on loopback) and answers JSON;
//! refused requests get `400 {"error": {"message", "type", "code"}}` with the reason, unknown
//! JSON fields included, so a misspelt knob never silently does nothing. The crate-level docs
//! list every endpoint with its body.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::clock::to_secs;
use crate::error::ApiError;
use crate::faults::{HttpFault, JobRule};
use crate::state::{DeliverNow, Simulator};

/// Bodies a test may post for deliver-now include whole reports; allow far more than the
/// framework's 2 MB default.
const CONTROL_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The control routes.
pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route(
            "/_sim/rules",
            get(list_rules).post(add_rule).delete(clear_rules),
        )
        .route(
            "/_sim/http-faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/clock", get(read_clock).post(move_clock))
        .route("/_sim/jobs", get(find_jobs))
        .route("/_sim/jobs/{id}", get(find_job))
        .route("/_sim/jobs/{id}/deliver", post(deliver))
        .route("/_sim/stats", get(stats))
        .route("/_sim/deliveries", get(deliveries))
        .route("/_sim/reset", post(reset))
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
}

/// Parses a JSON body, treating an empty body as `{}` where `T` allows it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid body: {err}")))
}

async fn add_rule(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let rule: JobRule = parse(&body)?;
    let stored = sim
        .add_rule(rule)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Json(json!({ "rule": stored, "rules": sim.rules() })))
}

async fn list_rules(State(sim): State<Simulator>) -> Json<Value> {
    Json(json!({ "rules": sim.rules() }))
}

async fn clear_rules(State(sim): State<Simulator>) -> Json<Value> {
    sim.clear_rules();
    Json(json!({ "rules": [] }))
}

async fn add_fault(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let fault: HttpFault = parse(&body)?;
    sim.add_http_fault(fault)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Json(json!({ "http_faults": sim.http_faults() })))
}

async fn list_faults(State(sim): State<Simulator>) -> Json<Value> {
    Json(json!({ "http_faults": sim.http_faults() }))
}

async fn clear_faults(State(sim): State<Simulator>) -> Json<Value> {
    sim.clear_http_faults();
    Json(json!({ "http_faults": [] }))
}

fn clock_json(sim: &Simulator) -> Json<Value> {
    let (now_ms, offset_ms) = sim.clock_reading();
    Json(json!({
        "now": to_secs(now_ms),
        "now_ms": now_ms,
        "offset_secs": to_secs(offset_ms),
        "offset_ms": offset_ms,
    }))
}

async fn read_clock(State(sim): State<Simulator>) -> Json<Value> {
    clock_json(&sim)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockMove {
    #[serde(default)]
    advance_secs: Option<u64>,
    #[serde(default)]
    advance_ms: Option<u64>,
}

async fn move_clock(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: ClockMove = parse(&body)?;
    if request.advance_secs.is_none() && request.advance_ms.is_none() {
        return Err(ApiError::bad_request(
            "give advance_secs and/or advance_ms (non-negative: the clock never goes back)",
        ));
    }
    let total_ms = request
        .advance_secs
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(request.advance_ms.unwrap_or(0));
    sim.advance_clock(i64::try_from(total_ms).unwrap_or(i64::MAX));
    Ok(clock_json(&sim))
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    idempotency_key: Option<String>,
}

async fn find_jobs(
    State(sim): State<Simulator>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    Ok(Json(
        json!({ "jobs": sim.jobs(query.idempotency_key.as_deref()) }),
    ))
}

async fn find_job(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = sim
        .job(&id)
        .ok_or_else(|| ApiError::not_found(format!("no job with id '{id}'")))?;
    Ok(Json(json!(job)))
}

async fn deliver(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: DeliverNow = parse(&body)?;
    let answer = sim.deliver_now(&id, request).await?;
    Ok(Json(
        json!({ "status": answer.status, "body": answer.body }),
    ))
}

async fn stats(State(sim): State<Simulator>) -> Json<Value> {
    Json(json!(sim.stats()))
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    job_id: Option<String>,
    idempotency_key: Option<String>,
}

async fn deliveries(
    State(sim): State<Simulator>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let log = sim.deliveries(query.job_id.as_deref(), query.idempotency_key.as_deref());
    Ok(Json(json!({ "deliveries": log })))
}

async fn reset(State(sim): State<Simulator>) -> Json<Value> {
    sim.reset();
    Json(json!({ "reset": true }))
}
