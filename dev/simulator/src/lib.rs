//! A local stand-in for the Perplexity async chat-completions API.
//!
//! The product submits research jobs to Perplexity, receives signed webhooks and polls for
//! results. This crate plays the provider on 127.0.0.1 so that every part of that flow can be
//! run and tested without a network, an API key or a bill, including the failures the real
//! provider only produces on a bad day: lost, late, repeated or forged webhooks, failed jobs,
//! rate limits and 5xx answers, and results that expire after seven days.
//!
//! Use it in-process from a test with [`start`] on a `127.0.0.1:0` listener, or run the
//! `perplexity-simulator` binary (`--port 4010`, default bind 127.0.0.1).
//!
//! # Provider API
//!
//! | Call | Answer |
//! |---|---|
//! | `POST /async/chat/completions` | the new job object, `status: "CREATED"` |
//! | `GET /async/chat/completions/{id}` | the job object; `response` once `COMPLETED` |
//! | `GET /async/chat/completions?limit=&next_token=` | `{"requests": [summaries, newest first], "next_token"}` |
//! | `DELETE /async/chat/completions/{id}` | the job object after cancelling |
//!
//! All need `Authorization: Bearer <any non-empty key>` (else 401). The create body is
//! `{"request": {"model", "messages", ...}, "idempotency_key"?, "webhook"?: {"url", "secret"}}`;
//! an unknown model is a 400 `invalid_model`, a body that is not JSON a 400, a missing or
//! mistyped field a 422 with FastAPI's `{"detail": [...]}`. The same idempotency key from the
//! same API key returns the existing job and creates nothing. A job goes `CREATED` ->
//! `IN_PROGRESS` -> `COMPLETED` (or `FAILED`) on the simulator clock; jobs older than the
//! retention (7 days) answer 404.
//!
//! `DELETE` on a job that has not finished makes it `FAILED` with `error_message` =
//! [`CANCELLED_MESSAGE`] (`"cancelled by user"`) and `failed_at` = the cancel time: the
//! published status enum has no cancelled state, so none is invented. A cancelled job never
//! gets a result and never sends a webhook. `DELETE` on a finished job changes nothing and
//! answers the job as it is; on an unknown or expired one it answers 404.
//!
//! When a job with a webhook finishes, the simulator POSTs
//! `{"job_id", "status": "COMPLETED", "response"}` or `{"job_id", "status": "FAILED",
//! "error_message"}` with `X-Perplexity-Signature` = lower-case hex HMAC-SHA256 of the exact
//! body, keyed with the job's secret, and retries a failure with exponential backoff (see
//! [`SimulatorConfig`]). Webhook URLs must point to this machine unless
//! [`SimulatorConfig::loopback_webhooks_only`] is turned off.
//!
//! # Control API
//!
//! No authentication; JSON in and out; a refused request is a 400 that says why.
//!
//! | Call | Body / query | Effect |
//! |---|---|---|
//! | `POST /_sim/rules` | a [`JobRule`] | appends a rule; answers `{"rule", "rules"}` |
//! | `GET /_sim/rules` | | `{"rules": [{"id", "applied", ...rule}]}` |
//! | `DELETE /_sim/rules` | | removes all rules |
//! | `POST /_sim/http-faults` | an [`HttpFault`] | arms a fault; answers `{"http_faults"}` |
//! | `GET /_sim/http-faults` | | armed faults with their remaining `times` |
//! | `DELETE /_sim/http-faults` | | disarms all faults |
//! | `GET /_sim/clock` | | `{"now", "now_ms", "offset_secs", "offset_ms"}` |
//! | `POST /_sim/clock` | `{"advance_secs"?: n, "advance_ms"?: n}` | moves the clock forward, finishes due jobs at once |
//! | `GET /_sim/jobs` | `?idempotency_key=` (optional) | `{"jobs": [`[`SimJob`]`]}` newest first, expired included |
//! | `GET /_sim/jobs/{id}` | | one [`SimJob`] |
//! | `POST /_sim/jobs/{id}/deliver` | `{"body"?, "signature"?, "url"?, "secret"?}` | sends one webhook now; answers `{"status", "body"}` of the receiver |
//! | `GET /_sim/stats` | | [`Stats`] |
//! | `GET /_sim/deliveries` | `?job_id=&idempotency_key=` (optional) | `{"deliveries": [`[`DeliveryRecord`]`]}` oldest first |
//! | `POST /_sim/reset` | | forgets jobs, rules, faults, stats, the log; clock back to wall time |
//!
//! **Rules** (`{"match", "times", "webhook", "webhook_delay_ms", "outcome", "fail_message",
//! "response", "report_bytes", "sources", "start_after_ms", "complete_after_ms"}`, all optional)
//! are checked in order when a job is created; the first whose `match` is a substring of the
//! last user message and that has `times` left shapes the job. `webhook` is `deliver`, `drop`
//! (never sent: only polling finds the result) or `duplicate` (two copies at once, each retried
//! on its own). Different `webhook_delay_ms` on different jobs deliver them out of order.
//! `response` is `full` (default), `missing` (`COMPLETED` with `"response": null`) or `empty`
//! (`COMPLETED` with empty content), in polls and webhooks alike.
//!
//! **Latency**: [`SimulatorConfig::get_delay`] (`--get-delay-ms`) holds every job `GET` for that
//! long in real time before it answers, as a loaded provider would.
//!
//! **HTTP faults** (`{"endpoint": "create"|"get"|"list"|"delete"|"any", "status": 400..=599,
//! "times"?: n (default 1), "retry_after_secs"?: n}`) answer the next `times` matching calls
//! with that status and a provider-style error body (plus `Retry-After` when given), and
//! change nothing.
//!
//! **Deliver now** sends the job's real webhook payload for its current state unless `body` is
//! given (a JSON value is serialized; a JSON string is sent verbatim as the raw body), signed
//! with the job's secret (`"signature": "valid"`, the default), with a different key
//! (`"wrong"`), or unsigned (`"none"`), to the job's webhook URL or `url`. It does not retry and
//! answers 502 when the receiver cannot be reached.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use perplexity_simulator::{JobRule, SimulatorConfig, WebhookMode};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = perplexity_simulator::start(listener, SimulatorConfig::default()).await?;
//! sim.add_rule(JobRule {
//!     matches: Some("lost webhook".into()),
//!     webhook: Some(WebhookMode::Drop),
//!     ..JobRule::default()
//! })
//! .expect("rule is valid");
//! // Point the product's provider base URL at `sim.base_url` and run the scenario.
//! sim.advance_clock(std::time::Duration::from_secs(3600));
//! println!("dropped so far: {}", sim.stats().webhooks_dropped);
//! sim.shutdown().await
//! # }
//! ```

mod clock;
mod config;
mod control;
mod error;
mod faults;
mod job;
mod provider;
mod report;
mod state;
mod webhook;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::config::SimulatorConfig;
pub use crate::faults::{
    FaultEndpoint, HttpFault, InvalidControl, JobRule, Outcome, ResponseMode, WebhookMode,
};
pub use crate::job::CANCELLED_MESSAGE;
pub use crate::state::{DeliveryKind, DeliveryRecord, RequestCounts, SimJob, Stats};
pub use crate::webhook::{SIGNATURE_HEADER, signature};

use crate::error::ApiError;
use crate::state::Simulator;

/// A simulator serving on a loopback address; dropping it stops the server.
///
/// Besides the HTTP control API, it offers the most used controls as methods, so a Rust test
/// can steer it without building JSON.
#[derive(Debug)]
pub struct RunningSimulator {
    /// `http://127.0.0.1:PORT`: the provider base URL to configure the product with.
    pub base_url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    sim: Simulator,
    server: JoinHandle<std::io::Result<()>>,
    ticker: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

/// Starts serving on `listener`, which must be bound to a loopback address.
///
/// Returns once the server and the background ticker run; requests may be sent at once.
/// A listener on any other address is refused (`InvalidInput`): the simulator accepts
/// unauthenticated control requests and must not be reachable from elsewhere.
pub async fn start(
    listener: TcpListener,
    config: SimulatorConfig,
) -> std::io::Result<RunningSimulator> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to serve on {addr}: the simulator listens on loopback only"),
        ));
    }
    let sim = Simulator::new(config)?;
    let app = router(sim.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Either a shutdown request or the handle being dropped ends the server.
                stopped.await.ok();
            })
            .await
    });
    let ticker = tokio::spawn(run_ticker(sim.clone()));
    tracing::info!(%addr, "simulator started");
    Ok(RunningSimulator {
        base_url: format!("http://{addr}"),
        addr,
        sim,
        server,
        ticker,
        stop: Some(stop),
    })
}

/// Provider and control routes on one router, with JSON 404s for anything else.
fn router(sim: Simulator) -> Router {
    provider::routes()
        .merge(control::routes())
        .fallback(|| async { ApiError::not_found("No such route.") })
        .with_state(sim)
}

/// Notices jobs that finished by the passing of time; clock moves are handled where they
/// happen, this catches up with real time.
async fn run_ticker(sim: Simulator) {
    let mut interval = tokio::time::interval(sim.config().tick.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        sim.process_due();
    }
}

impl RunningSimulator {
    /// `base_url` joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Moves the simulator clock forward; jobs due in the jump finish (and send their
    /// webhooks) at once.
    pub fn advance_clock(&self, by: Duration) {
        self.sim
            .advance_clock(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Simulator time as Unix seconds.
    pub fn now_unix_secs(&self) -> i64 {
        self.sim.clock_reading().0.div_euclid(1000)
    }

    /// Appends a job rule; returns its id.
    pub fn add_rule(&self, rule: JobRule) -> Result<u64, InvalidControl> {
        self.sim.add_rule(rule).map(|stored| stored.id)
    }

    /// Removes every job rule.
    pub fn clear_rules(&self) {
        self.sim.clear_rules();
    }

    /// Arms an HTTP fault.
    pub fn add_http_fault(&self, fault: HttpFault) -> Result<(), InvalidControl> {
        self.sim.add_http_fault(fault)
    }

    /// Jobs, newest first; with a key, only those created with it.
    pub fn jobs(&self, idempotency_key: Option<&str>) -> Vec<SimJob> {
        self.sim.jobs(idempotency_key)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// The delivery log, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.sim.deliveries(None, None)
    }

    /// Forgets everything, as `POST /_sim/reset`.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Stops accepting requests, lets those in progress finish, and stops the ticker.
    /// Deliveries in flight are abandoned.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.sim.reset();
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        self.ticker.abort();
        match (&mut self.server).await {
            Ok(result) => result,
            Err(join) if join.is_cancelled() => Ok(()),
            Err(join) => Err(std::io::Error::other(join)),
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        // Stops deliveries in flight too, so a dropped simulator calls no receiver again.
        self.sim.reset();
        self.ticker.abort();
        self.server.abort();
    }
}
