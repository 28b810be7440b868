//! Test harness: a simulator on 127.0.0.1:0, an HTTP client, and a webhook receiver that
//! records what it gets and answers as the test scripts it.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, KeyInit, Mac};
use perplexity_simulator::{RunningSimulator, SimulatorConfig};
use serde_json::Value;
use sha2::Sha256;

/// Key every test uses unless it tests keys.
pub const API_KEY: &str = "pplx-test-key";
/// Webhook secret of the test jobs.
pub const SECRET: &str = "whsec_test_0001";
/// Longest a test waits for something asynchronous.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Timings that never move on their own: jobs start after an hour and finish after two, so
/// a test decides every step by moving the clock. Retries are fast and few.
pub fn frozen_config() -> SimulatorConfig {
    SimulatorConfig {
        start_after: Duration::from_secs(3600),
        complete_after: Duration::from_secs(7200),
        tick: Duration::from_millis(10),
        webhook_retry_base: Duration::from_millis(20),
        webhook_retry_max: Duration::from_millis(80),
        webhook_max_attempts: 4,
        webhook_timeout: Duration::from_secs(2),
        ..SimulatorConfig::default()
    }
}

/// Two hours and a bit: enough to finish a job of [`frozen_config`].
pub const FINISH: Duration = Duration::from_secs(7201);

pub async fn start_simulator(config: SimulatorConfig) -> RunningSimulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    perplexity_simulator::start(listener, config)
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

/// A create body for `question`, with a webhook to `webhook_url` when given.
pub fn create_body(question: &str, key: Option<&str>, webhook_url: Option<&str>) -> Value {
    let mut body = serde_json::json!({
        "request": {
            "model": "sonar-deep-research",
            "messages": [{ "role": "user", "content": question }],
        },
    });
    if let Some(key) = key {
        body["idempotency_key"] = Value::from(key);
    }
    if let Some(url) = webhook_url {
        body["webhook"] = serde_json::json!({ "url": url, "secret": SECRET });
    }
    body
}

/// Status and JSON body of a response (`Null` for a body that is not JSON).
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("read response body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates a job with the test key; panics unless the simulator answers 200.
pub async fn create_job(sim: &RunningSimulator, body: &Value) -> Value {
    let response = client()
        .post(sim.url("/async/chat/completions"))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .expect("create request");
    let (status, job) = json_of(response).await;
    assert_eq!(status, 200, "create answered {job}");
    job
}

pub async fn get_job(sim: &RunningSimulator, id: &str) -> (u16, Value) {
    let response = client()
        .get(sim.url(&format!("/async/chat/completions/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("get request");
    json_of(response).await
}

pub async fn control(sim: &RunningSimulator, path: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(sim.url(path))
        .json(&body)
        .send()
        .await
        .expect("control request");
    json_of(response).await
}

pub async fn control_get(sim: &RunningSimulator, path: &str) -> Value {
    let response = client()
        .get(sim.url(path))
        .send()
        .await
        .expect("control request");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{path} answered {body}");
    body
}

/// Lower-case hex HMAC-SHA256, computed here independently of the simulator's own code.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Vec<u8>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once used up.
    script: VecDeque<u16>,
    /// When set, answers 401 unless the signature verifies with this secret.
    verify_with: Option<String>,
}

/// A webhook receiver on 127.0.0.1:0 standing in for the product's.
pub struct Receiver {
    pub base_url: String,
    state: Arc<Mutex<ReceiverState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Self {
            base_url: format!("http://{addr}"),
            state,
            server,
        }
    }

    /// The URL for one job's webhook, shaped like the product's.
    pub fn url_for(&self, job: &str) -> String {
        format!("{}/webhooks/perplexity/{job}", self.base_url)
    }

    /// Answers the next requests with these statuses, then 200.
    pub fn answer_with(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("receiver lock")
            .script
            .extend(statuses);
    }

    /// Checks signatures like the product: 401 unless it verifies with `secret`.
    pub fn verify_with(&self, secret: &str) {
        self.state.lock().expect("receiver lock").verify_with = Some(secret.to_owned());
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver lock").received.clone()
    }

    /// Waits until at least `count` requests arrived and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(&format!("{count} webhook(s)"), || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let signature = header("x-perplexity-signature");
    let mut state = state.lock().expect("receiver lock");
    state.received.push(Received {
        path: uri.path().to_owned(),
        body: body.to_vec(),
        signature: signature.clone(),
        content_type: header("content-type"),
        at: Instant::now(),
    });
    if let Some(secret) = &state.verify_with {
        let expected = hmac_hex(secret, &body);
        if signature.as_deref() != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "bad signature".to_owned());
        }
    }
    let status = state.script.pop_front().unwrap_or(200);
    (
        StatusCode::from_u16(status).expect("scripted status is valid"),
        format!("answered {status}"),
    )
}
