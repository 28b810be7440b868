//! The local front: plays API Gateway and the EventBridge schedule around the real handlers.
//!
//! Nothing here is deployed. It exists so the whole product runs on one machine: requests to
//! `/jobs` are checked like the JWT authorizer would (see [`jwt`]), turned into payload-2.0
//! events (see [`gateway`]) and handed to the same `submit_api::handle` and
//! `webhook_receiver::handle` functions the Lambdas run; a timer invokes `reconciler::handle`
//! with a scheduled event, as EventBridge would.

pub mod counting;
pub mod gateway;
pub mod jwt;
pub mod mailbox;
pub mod schema;
pub mod stack;
pub mod testkit;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body as AxumBody, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use lambda_http::Body;
use research_relay::app::App;
use research_relay::mailer::Mailer;
use research_relay::provider::ResearchProvider;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::gateway::{IncomingRequest, http_api_event};

/// Largest body the front accepts (API Gateway's own limit is 10 MB; the handlers bound
/// further).
const MAX_FRONT_BODY: usize = 10 * 1024 * 1024;

/// The front's state: the handlers' context and the token key.
pub struct Front<P, M> {
    /// The context the handlers run with.
    pub app: App<P, M>,
    /// HS256 key for `/jobs` tokens.
    pub jwt_key: Vec<u8>,
}

/// A running front; dropping it leaves the tasks running until the runtime ends, so call
/// [`RunningFront::stop`] in tests that start several.
pub struct RunningFront {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    server: JoinHandle<()>,
    schedule: Option<JoinHandle<()>>,
}

impl RunningFront {
    /// Stops the server and the schedule.
    pub fn stop(self) {
        self.server.abort();
        if let Some(schedule) = self.schedule {
            schedule.abort();
        }
    }
}

/// Serves the front on `listener`; with `schedule_every`, also invokes the reconciler on that
/// period.
pub async fn start<P, M>(
    listener: TcpListener,
    front: Arc<Front<P, M>>,
    schedule_every: Option<Duration>,
) -> std::io::Result<RunningFront>
where
    P: ResearchProvider + 'static,
    M: Mailer + 'static,
{
    let addr = listener.local_addr()?;
    let router = Router::new()
        .fallback(dispatch::<P, M>)
        .with_state(front.clone());
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(error = %error, "front stopped");
        }
    });
    let schedule = schedule_every.map(|period| {
        let front = front.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                invoke_reconciler(&front.app, Duration::from_secs(60)).await;
            }
        })
    });
    Ok(RunningFront {
        base_url: format!("http://{addr}"),
        server,
        schedule,
    })
}

/// Invokes the reconciler handler once with a scheduled event, as EventBridge would.
pub async fn invoke_reconciler<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    budget: Duration,
) -> reconciler::RunSummary {
    let event: aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value> =
        match serde_json::from_value(scheduled_event()) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(error = %error, "scheduled event did not deserialize");
                return reconciler::RunSummary::default();
            }
        };
    let mut context = lambda_runtime::Context::default();
    context.request_id = ulid::Ulid::new().to_string();
    context.deadline = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + budget)
        .as_millis() as u64;
    match reconciler::handle(app, lambda_runtime::LambdaEvent::new(event, context)).await {
        Ok(summary) => summary,
        Err(error) => {
            tracing::error!(error = %error, "reconciler run failed");
            reconciler::RunSummary::default()
        }
    }
}

/// An EventBridge scheduled event like the one in `events/reconciler-scheduled.json`.
pub fn scheduled_event() -> serde_json::Value {
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/research-relay-reconcile"],
        "detail": {}
    })
}

async fn dispatch<P: ResearchProvider, M: Mailer>(
    State(front): State<Arc<Front<P, M>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_FRONT_BODY).await {
        Ok(body) => body.to_vec(),
        Err(_) => return gateway_error(413, "Request Entity Too Large"),
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let incoming = IncomingRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
    };
    let now_ms = front.app.clock.now_ms();
    let segments: Vec<&str> = incoming.path.trim_start_matches('/').split('/').collect();
    let method = incoming.method.clone();

    match segments.as_slice() {
        ["jobs"] | ["jobs", _] => {
            let token = incoming
                .headers
                .get("authorization")
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim);
            let claims = match token.map(|token| jwt::verify(&front.jwt_key, token, now_ms / 1000))
            {
                Some(Ok(claims)) => claims,
                _ => return gateway_error(401, "Unauthorized"),
            };
            let (route_key, parameters): (String, Vec<(&str, &str)>) = match segments.as_slice() {
                ["jobs", id] => (format!("{method} /jobs/{{id}}"), vec![("id", *id)]),
                _ => (format!("{method} /jobs"), Vec::new()),
            };
            let event = http_api_event(&incoming, &route_key, &parameters, Some(&claims), now_ms);
            match lambda_http::request::from_str(&event.to_string()) {
                Ok(request) => to_axum(submit_api::handle(&front.app, request).await),
                Err(_) => gateway_error(500, "Internal Server Error"),
            }
        }
        ["webhooks", "perplexity", id] => {
            let route_key = format!("{method} /webhooks/perplexity/{{job_id}}");
            let event = http_api_event(&incoming, &route_key, &[("job_id", id)], None, now_ms);
            match lambda_http::request::from_str(&event.to_string()) {
                Ok(request) => to_axum(webhook_receiver::handle(&front.app, request).await),
                Err(_) => gateway_error(500, "Internal Server Error"),
            }
        }
        ["_local", "reconcile"] if method == "POST" => {
            let summary = invoke_reconciler(&front.app, Duration::from_secs(60)).await;
            axum::Json(summary).into_response()
        }
        ["_local", "health"] => axum::Json(json!({"status": "ok"})).into_response(),
        _ => gateway_error(404, "Not Found"),
    }
}

/// API Gateway's own error shape, for what it answers before any handler runs.
fn gateway_error(status: u16, message: &str) -> Response {
    let status = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"message": message}))).into_response()
}

fn to_axum(response: lambda_http::Response<Body>) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Text(text) => text.into_bytes(),
        Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    Response::from_parts(parts, AxumBody::from(bytes))
}
