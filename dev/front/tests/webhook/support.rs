//! What the webhook tests share: stacks whose jobs wait for deliveries the test sends itself,
//! signed deliveries, and raw looks into the emulator (items, their sizes, table counts, logs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::Request;
use local_front::mailbox::ReceivedMail;
use local_front::testkit::{Answer, StackOptions, TestStack};
use perplexity_simulator::{JobRule, WebhookMode};
use research_relay::mailer::{MailError, Mailer, OutgoingMail, SesMailer};
use research_relay::signature::{derive_job_secret, sign};
use research_relay::store::{JobRecord, JobStore, job_pk};
use serde_json::{Value, json};

/// DynamoDB's item size limit, written the stricter (decimal) way.
pub const ITEM_LIMIT: usize = 400_000;

/// A job the product created through `POST /jobs` and handed to the simulator, which will not
/// finish it on its own: every delivery it gets comes from the test.
#[derive(Debug, Clone)]
pub struct HeldJob {
    /// Our id.
    pub id: String,
    /// The provider's id.
    pub provider_id: String,
    /// The owner's token.
    pub token: String,
    /// Where its e-mail goes.
    pub recipient: String,
}

/// The stacks of these tests: the real SES mailer, wrapped to keep a copy of every message SES
/// accepted. Reading the copies is instant and exact; the emulator's own dump of what it holds
/// is slow and can fail while other tests write to it.
pub type Stack = TestStack<RecordingMailer>;

/// The SES mailer, keeping every message SES accepted, and able to play SES throttling.
#[derive(Clone)]
pub struct RecordingMailer {
    inner: SesMailer,
    accepted: Arc<Mutex<Vec<ReceivedMail>>>,
    throttled_sends_left: Arc<AtomicU32>,
}

impl RecordingMailer {
    /// The messages SES accepted for a job.
    pub fn accepted_for(&self, job_id: &str) -> Vec<ReceivedMail> {
        self.accepted
            .lock()
            .expect("mail log")
            .iter()
            .filter(|mail| mail.job_id().as_deref() == Some(job_id))
            .cloned()
            .collect()
    }
}

impl Mailer for RecordingMailer {
    async fn send(&self, mail: OutgoingMail<'_>) -> Result<String, MailError> {
        let throttled = self
            .throttled_sends_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if throttled {
            return Err(MailError::Transient(
                "TooManyRequestsException: Maximum sending rate exceeded.".into(),
            ));
        }
        let id = self.inner.send(mail.clone()).await?;
        self.accepted.lock().expect("mail log").push(ReceivedMail {
            id: id.clone(),
            destinations: vec![mail.to.to_owned()],
            raw: String::from_utf8_lossy(mail.raw).into_owned(),
        });
        Ok(id)
    }
}

/// A stack with the recording mailer; SES answers the first `throttled_sends` sends with a
/// throttling error.
pub async fn stack_throttling(options: StackOptions, throttled_sends: u32) -> Stack {
    TestStack::start_with_mailer(options, |client| RecordingMailer {
        inner: SesMailer::new(client),
        accepted: Arc::default(),
        throttled_sends_left: Arc::new(AtomicU32::new(throttled_sends)),
    })
    .await
}

/// A stack with the recording mailer.
pub async fn stack_with(options: StackOptions) -> Stack {
    stack_throttling(options, 0).await
}

/// The messages SES accepted for a job.
pub fn mails(stack: &Stack, job_id: &str) -> Vec<ReceivedMail> {
    stack.app().mailer.accepted_for(job_id)
}

/// Options whose simulator never finishes a job by itself and never sends a webhook.
pub fn held_options() -> StackOptions {
    let mut options = StackOptions::default();
    options.simulator.start_after = Duration::from_secs(3_600);
    options.simulator.complete_after = Duration::from_secs(7_200);
    options
}

/// A stack whose jobs wait for the test's deliveries.
pub async fn held_stack() -> Stack {
    held_stack_with(held_options()).await
}

/// [`held_stack`] with other options.
pub async fn held_stack_with(options: StackOptions) -> Stack {
    let stack = stack_with(options).await;
    drop_webhooks(&stack);
    stack
}

/// Makes the simulator lose every webhook, so only the test delivers.
pub fn drop_webhooks<M: Mailer + 'static>(stack: &TestStack<M>) {
    stack
        .simulator
        .add_rule(JobRule {
            webhook: Some(WebhookMode::Drop),
            ..JobRule::default()
        })
        .expect("valid rule");
}

/// Creates a job for `owner` through the API and returns it once the provider has it.
pub async fn held_job<M: Mailer + 'static>(
    stack: &TestStack<M>,
    owner: &str,
    question: &str,
) -> HeldJob {
    let recipient = format!("{owner}@example.com");
    let token = stack.token(owner, &recipient);
    let answer = stack
        .submit(&token, &json!({ "query": question }).to_string(), None)
        .await;
    assert_eq!(answer.status, 202, "job accepted: {}", answer.body);
    let id = answer.body["id"].as_str().expect("job id").to_owned();
    let provider_id = job_record(stack, &id)
        .await
        .provider_id
        .expect("the provider accepted the job at once");
    HeldJob {
        id,
        provider_id,
        token,
        recipient,
    }
}

/// The job as stored.
pub async fn job_record<M: Mailer + 'static>(stack: &TestStack<M>, id: &str) -> JobRecord {
    stack
        .app()
        .store
        .get_job(id)
        .await
        .expect("the table answers")
        .expect("the job exists")
}

/// A completion as the provider returns it, with `content` as the answer.
pub fn completion(content: &str, sources: usize) -> Value {
    let results: Vec<Value> = (1..=sources)
        .map(|n| {
            json!({"title": format!("Source {n}"), "url": format!("https://example.org/source/{n}"),
                   "date": if n % 2 == 0 { Value::Null } else { json!("2025-01-01") }})
        })
        .collect();
    let citations: Vec<Value> = (1..=sources)
        .map(|n| json!(format!("https://example.org/source/{n}")))
        .collect();
    json!({
        "id": "cmpl-test",
        "model": "sonar-deep-research",
        "created": 1_767_225_600,
        "object": "chat.completion",
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
                  "cost": {"total_cost": 0.42}},
        "citations": citations,
        "search_results": results,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}]
    })
}

/// The usual finished report of these tests.
pub fn report_completion() -> Value {
    completion(
        "<think>\nPlanning searches...\n</think>\n\n# Report\n\nFindings [1] and more findings [2].",
        2,
    )
}

/// The bytes of a delivery.
pub fn delivery(provider_id: &str, status: &str, response: Option<&Value>) -> Vec<u8> {
    let mut body = json!({"job_id": provider_id, "status": status});
    if let Some(response) = response {
        body["response"] = response.clone();
    }
    serde_json::to_vec(&body).expect("JSON")
}

/// A COMPLETED delivery with [`report_completion`].
pub fn completed(job: &HeldJob) -> Vec<u8> {
    delivery(&job.provider_id, "COMPLETED", Some(&report_completion()))
}

/// The signature the provider sends for `job_id`'s delivery, its secret derived from
/// `signing_key`.
pub fn signature_with(signing_key: &str, job_id: &str, body: &[u8]) -> String {
    sign(&derive_job_secret(signing_key, job_id), body)
}

/// The signature under the stack's current signing key.
pub fn signature<M: Mailer + 'static>(stack: &TestStack<M>, job_id: &str, body: &[u8]) -> String {
    signature_with(stack.app().signing_keys.current.expose(), job_id, body)
}

/// The bytes a hex text spells.
pub fn hex_bytes(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            u8::from_str_radix(std::str::from_utf8(pair).expect("ASCII"), 16).expect("hex digits")
        })
        .collect()
}

/// A payload-2.0 event for the webhook route, as API Gateway hands it to the Lambda.
pub fn webhook_event(job_id: &str, body: &[u8], base64: bool, headers: Value) -> Request {
    let path = format!("/webhooks/perplexity/{job_id}");
    let body = if base64 {
        STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).expect("a text body")
    };
    let event = json!({
        "version": "2.0",
        "routeKey": "POST /webhooks/perplexity/{job_id}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "pathParameters": {"job_id": job_id},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "api",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "provider"},
            "requestId": "request",
            "routeKey": "POST /webhooks/perplexity/{job_id}",
            "stage": "$default",
            "time": "04/Dec/2026:00:00:00 +0000",
            "timeEpoch": 1_796_342_400_000_i64
        },
        "body": body,
        "isBase64Encoded": base64
    });
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

/// Posts raw bytes to the webhook route of `path_id` with the given headers.
pub async fn post_raw<M: Mailer + 'static>(
    stack: &TestStack<M>,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &[u8])],
) -> Answer {
    let mut request = stack
        .http
        .post(stack.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        let value = reqwest::header::HeaderValue::from_bytes(value).expect("a sendable header");
        request = request.header(*name, value);
    }
    read_answer(request.send().await.expect("front answers")).await
}

/// Posts a delivery for `job_id`, signed for it.
pub async fn deliver<M: Mailer + 'static>(
    stack: &TestStack<M>,
    job_id: &str,
    body: &[u8],
) -> Answer {
    let signature = signature(stack, job_id, body);
    post_raw(
        stack,
        &format!("/webhooks/perplexity/{job_id}"),
        body.to_vec(),
        &[("x-perplexity-signature", signature.as_bytes())],
    )
    .await
}

async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = local_front::testkit::headers_of(&response);
    let bytes = response.bytes().await.expect("a body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A raw item of the stack's table, every attribute as stored.
pub async fn raw_item<M: Mailer + 'static>(
    stack: &TestStack<M>,
    pk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    stack
        .app()
        .store
        .client()
        .get_item()
        .table_name(stack.app().store.table())
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("the table answers")
        .item
}

/// The raw job item.
pub async fn raw_job<M: Mailer + 'static>(
    stack: &TestStack<M>,
    id: &str,
) -> HashMap<String, AttributeValue> {
    raw_item(stack, &job_pk(id)).await.expect("the job exists")
}

/// How many items the stack's table holds.
pub async fn item_count<M: Mailer + 'static>(stack: &TestStack<M>) -> i32 {
    let store = &stack.app().store;
    let mut total = 0;
    let mut start = None;
    loop {
        let page = store
            .client()
            .scan()
            .table_name(store.table())
            .select(Select::Count)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("the table answers");
        total += page.count();
        match page.last_evaluated_key {
            Some(next) => start = Some(next),
            None => return total,
        }
    }
}

/// An item's size as DynamoDB counts it: attribute names plus values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(list) => list.iter().map(String::len).sum(),
        AttributeValue::Ns(list) => list.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(list) => list.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| 1 + name.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// The e-mails the emulator holds, counted per job id: a cross-check of [`mails`] against SES's
/// own record. The emulator's dump fails now and then while other tests write to it, so a
/// failed read is tried again.
pub async fn emulator_mail_counts<M: Mailer + 'static>(
    stack: &TestStack<M>,
) -> HashMap<String, usize> {
    let mut attempt = 0;
    let mails = loop {
        match local_front::mailbox::received(&stack.http, &stack.moto).await {
            Ok(mails) => break mails,
            Err(error) if attempt < 5 => {
                attempt += 1;
                eprintln!("reading the emulator's messages again: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the emulator lists its messages: {error}"),
        }
    };
    let mut counts = HashMap::new();
    for mail in mails {
        if let Some(job) = mail.job_id() {
            *counts.entry(job).or_insert(0) += 1;
        }
    }
    counts
}

/// What [`dynamodb_proxy`] does with writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Forwarded like everything else.
    Pass,
    /// Answered as DynamoDB answers when a table's write capacity is exhausted.
    Throttled,
}

const WRITE_OPERATIONS: [&str; 4] = [
    ".UpdateItem",
    ".PutItem",
    ".DeleteItem",
    ".TransactWriteItems",
];

/// A DynamoDB endpoint in front of the emulator that lets one request through at a time.
///
/// The emulator checks a write's condition and then applies the write without holding a lock,
/// so two concurrent conditional writes can both pass; DynamoDB performs each write atomically.
/// Passing requests one at a time restores that guarantee without touching the product's own
/// concurrency: races between deliveries still happen in the product, only the emulator's
/// check-and-write becomes indivisible. With [`Writes::Throttled`], every write is refused with
/// `ProvisionedThroughputExceededException` and reads still go through.
pub async fn dynamodb_proxy(moto: &str, writes: Writes) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::response::Response;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    let client = reqwest::Client::new();
    let moto = moto.to_owned();
    let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
    let app = axum::Router::new().fallback(move |request: Request| {
        let client = client.clone();
        let moto = moto.clone();
        let one_at_a_time = one_at_a_time.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = to_bytes(body, usize::MAX).await.expect("a body");
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            let is_write = WRITE_OPERATIONS.iter().any(|op| target.ends_with(op));
            if writes == Writes::Throttled && is_write {
                return Response::builder()
                    .status(400)
                    .header("content-type", "application/x-amz-json-1.0")
                    .body(Body::from(
                        r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
                    ))
                    .expect("a response");
            }
            let mut forward = client.post(format!("{moto}{}", parts.uri.path()));
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let _turn = one_at_a_time.lock().await;
            let answer = forward.body(body).send().await.expect("the emulator answers");
            let status = answer.status().as_u16();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.expect("a body");
            let mut response = Response::builder().status(status);
            for (name, value) in &headers {
                response = response.header(name, value);
            }
            response.body(Body::from(bytes)).expect("a response")
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// The stack's store over a client that talks to `endpoint`, retrying twice at most and
/// quickly, so a test of a failing table does not wait out the SDK's full backoff.
pub async fn store_at<M: Mailer + 'static>(stack: &TestStack<M>, endpoint: &str) -> JobStore {
    use aws_sdk_dynamodb::config::retry::RetryConfig;

    let sdk = local_front::testkit::sdk_config().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(endpoint)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .build();
    stack
        .app()
        .store
        .clone()
        .with_client(aws_sdk_dynamodb::Client::from_conf(config))
}
