//! The jobs API through the local front (and, for the event shapes, through the handler
//! directly), against the emulator and the simulator. Every answer these tests see is also held
//! to `openapi.yaml`.

#[path = "support/contract.rs"]
mod contract;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use contract::Observed;
use local_front::testkit::{StackOptions, TestStack, finished_and_mailed};
use perplexity_simulator::{FaultEndpoint, HttpFault, SimulatorConfig};
use reqwest::Method;
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

/// A client of the front that keeps every answer for the contract check.
struct Api<'a> {
    stack: &'a TestStack,
    seen: Mutex<Vec<Observed>>,
}

impl<'a> Api<'a> {
    fn new(stack: &'a TestStack) -> Self {
        Self {
            stack,
            seen: Mutex::new(Vec::new()),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Observed {
        let mut request = self
            .stack
            .http
            .request(method.clone(), self.stack.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the front answers");
        let observed = observe(method.as_str(), path, response).await;
        self.seen.lock().expect("lock").push(observed.clone());
        observed
    }

    async fn post_job(&self, token: &str, body: &Value, key: Option<&str>) -> Observed {
        let headers: Vec<(&str, &str)> = key
            .map(|key| ("idempotency-key", key))
            .into_iter()
            .collect();
        self.send(
            Method::POST,
            "/jobs",
            Some(token),
            Some(body.to_string().into_bytes()),
            &headers,
        )
        .await
    }

    async fn get(&self, token: &str, path: &str) -> Observed {
        self.send(Method::GET, path, Some(token), None, &[]).await
    }

    async fn delete(&self, token: &str, id: &str) -> Observed {
        self.send(
            Method::DELETE,
            &format!("/jobs/{id}"),
            Some(token),
            None,
            &[],
        )
        .await
    }

    /// Every id in the owner's listing, all pages, newest first.
    async fn all_ids(&self, token: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut path = "/jobs?limit=100".to_owned();
        loop {
            let page = self.get(token, &path).await;
            assert_eq!(page.status, 200, "{}", page.body);
            ids.extend(ids_of(&page.body));
            match page.body["next_cursor"].as_str() {
                Some(cursor) => path = format!("/jobs?limit=100&cursor={cursor}"),
                None => return ids,
            }
        }
    }

    fn assert_documented(&self) {
        contract::assert_all_documented(&self.seen.lock().expect("lock"));
    }
}

async fn observe(method: &str, path: &str, response: reqwest::Response) -> Observed {
    let status = response.status().as_u16();
    let headers = local_front::testkit::headers_of(&response);
    let bytes = response.bytes().await.expect("a body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("every answer is JSON")
    };
    Observed {
        method: method.to_owned(),
        path: path.to_owned(),
        status,
        headers,
        body,
    }
}

fn ids_of(listing: &Value) -> Vec<String> {
    listing["jobs"]
        .as_array()
        .expect("a jobs array")
        .iter()
        .map(|job| job["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn id_of(answer: &Observed) -> String {
    answer.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", answer.body))
        .to_owned()
}

fn fields_of(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|error| error["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every item in the stack's table: what the product wrote.
async fn table_items(stack: &TestStack) -> Vec<String> {
    let output = stack
        .app()
        .store
        .client()
        .scan()
        .table_name(stack.app().store.table())
        .send()
        .await
        .expect("scan");
    output
        .items()
        .iter()
        .filter_map(|item| item.get("pk").and_then(|pk| pk.as_s().ok()).cloned())
        .collect()
}

/// Simulator timings under which jobs stay where the submission left them (SUBMITTED) unless a
/// test moves the simulator clock.
fn never_finishing() -> StackOptions {
    simulator_timing(Duration::from_secs(3600), Duration::from_secs(7200))
}

/// Jobs that the provider starts at once (the submission already answers IN_PROGRESS) and
/// never finishes on its own.
fn running_at_once() -> StackOptions {
    simulator_timing(Duration::ZERO, Duration::from_secs(3600))
}

fn simulator_timing(start_after: Duration, complete_after: Duration) -> StackOptions {
    StackOptions {
        simulator: SimulatorConfig {
            start_after,
            complete_after,
            webhook_retry_base: Duration::from_millis(100),
            webhook_retry_max: Duration::from_secs(1),
            ..SimulatorConfig::default()
        },
        ..StackOptions::default()
    }
}

fn with_env(mut options: StackOptions, vars: &[(&str, &str)]) -> StackOptions {
    for (name, value) in vars {
        options.env.insert((*name).to_owned(), (*value).to_owned());
    }
    options
}

/// The simulator's id for our job.
fn provider_id(stack: &TestStack, job_id: &str) -> String {
    stack
        .simulator_job(job_id)
        .expect("the provider has the job")
        .job["id"]
        .as_str()
        .expect("a provider id")
        .to_owned()
}

/// Sends a webhook now through the simulator, signed with the job's real secret.
async fn deliver_now(stack: &TestStack, provider_id: &str, body: Option<Value>) -> Value {
    let mut request = json!({"signature": "valid"});
    if let Some(body) = body {
        request["body"] = body;
    }
    stack
        .http
        .post(
            stack
                .simulator
                .url(&format!("/_sim/jobs/{provider_id}/deliver")),
        )
        .json(&request)
        .send()
        .await
        .expect("the simulator answers")
        .json::<Value>()
        .await
        .map(|mut answer| {
            // The receiver's body comes back as text; read it as the JSON it is.
            if let Some(text) = answer["body"].as_str()
                && let Ok(parsed) = serde_json::from_str::<Value>(text)
            {
                answer["body"] = parsed;
            }
            answer
        })
        .expect("JSON")
}

fn long_text(chars: usize) -> String {
    "a".repeat(chars)
}

/// What a bad request is, its body, an extra header, and the status, code and failing field it
/// must get.
type BadRequest = (
    &'static str,
    Vec<u8>,
    Option<(&'static str, String)>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_by_field_and_store_nothing() {
    let stack = TestStack::start().await;
    let api = Api::new(&stack);
    let token = stack.token("table-owner", "owner@example.com");
    let turn = |role: &str, chars: usize| json!({"role": role, "content": long_text(chars)});
    let domains: Vec<String> = (0..21).map(|n| format!("site{n}.example.com")).collect();
    let many_messages: Vec<Value> = (0..21)
        .map(|n| json!({"role": if n % 2 == 0 { "user" } else { "assistant" }, "content": "x"}))
        .collect();
    let raw = |text: &str| text.as_bytes().to_vec();
    let body = |value: Value| value.to_string().into_bytes();
    // (what, body, extra header, status, code, failing field)
    let cases: Vec<BadRequest> = vec![
        (
            "C4 query is a number",
            raw(r#"{"query":42}"#),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "C4 truncated JSON",
            raw(r#"{"query":"x""#),
            None,
            400,
            "malformed-body",
            "",
        ),
        ("C4 empty body", Vec::new(), None, 400, "empty-body", ""),
        ("whitespace body", raw("  \n "), None, 400, "empty-body", ""),
        ("array body", raw("[]"), None, 400, "malformed-body", ""),
        (
            "string body",
            raw(r#""heat pumps""#),
            None,
            400,
            "malformed-body",
            "",
        ),
        ("null body", raw("null"), None, 400, "malformed-body", ""),
        (
            "not JSON",
            raw("query=heat+pumps"),
            None,
            400,
            "malformed-body",
            "",
        ),
        (
            "empty object",
            raw("{}"),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "empty query",
            body(json!({"query": ""})),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "blank query",
            body(json!({"query": "  \t "})),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "control character",
            body(json!({"query": "a\u{7}b"})),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "query too long",
            body(json!({"query": long_text(8001)})),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "query is null",
            raw(r#"{"query":null}"#),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "query and messages",
            body(json!({"query": "q", "messages": [turn("user", 1)]})),
            None,
            400,
            "validation-failed",
            "/query",
        ),
        (
            "misspelt field",
            body(json!({"querry": "q"})),
            None,
            400,
            "validation-failed",
            "/querry",
        ),
        (
            "unsupported option",
            body(json!({"query": "q", "temperature": 0.2})),
            None,
            400,
            "validation-failed",
            "/temperature",
        ),
        (
            "model not allowed",
            body(json!({"query": "q", "model": "gpt-4o"})),
            None,
            400,
            "validation-failed",
            "/model",
        ),
        (
            "model is a number",
            body(json!({"query": "q", "model": 3})),
            None,
            400,
            "validation-failed",
            "/model",
        ),
        (
            "no messages",
            body(json!({"messages": []})),
            None,
            400,
            "validation-failed",
            "/messages",
        ),
        (
            "messages not an array",
            body(json!({"messages": "hello"})),
            None,
            400,
            "validation-failed",
            "/messages",
        ),
        (
            "too many messages",
            body(json!({"messages": many_messages})),
            None,
            400,
            "validation-failed",
            "/messages",
        ),
        (
            "message not an object",
            body(json!({"messages": ["hello"]})),
            None,
            400,
            "validation-failed",
            "/messages/0",
        ),
        (
            "message without content",
            body(json!({"messages": [{"role": "user"}]})),
            None,
            400,
            "validation-failed",
            "/messages/0/content",
        ),
        (
            "unknown role",
            body(json!({"messages": [{"role": "bot", "content": "x"}]})),
            None,
            400,
            "validation-failed",
            "/messages/0/role",
        ),
        (
            "unknown message field",
            body(json!({"messages": [{"role": "user", "content": "x", "name": "a"}]})),
            None,
            400,
            "validation-failed",
            "/messages/0/name",
        ),
        (
            "last message not the user's",
            body(json!({"messages": [turn("user", 1), turn("assistant", 1)]})),
            None,
            400,
            "validation-failed",
            "/messages/1/role",
        ),
        (
            "turns out of order",
            body(json!({"messages": [turn("user", 1), turn("user", 1)]})),
            None,
            400,
            "validation-failed",
            "/messages/1/role",
        ),
        (
            "message too long",
            body(json!({"messages": [turn("user", 8001)]})),
            None,
            400,
            "validation-failed",
            "/messages/0/content",
        ),
        (
            "conversation too long",
            body(
                json!({"messages": [turn("user", 5000), turn("assistant", 5000), turn("user", 5000), turn("assistant", 5000), turn("user", 5000)]}),
            ),
            None,
            400,
            "validation-failed",
            "/messages",
        ),
        (
            "21 domains",
            body(json!({"query": "q", "search_domain_filter": domains})),
            None,
            400,
            "validation-failed",
            "/search_domain_filter",
        ),
        (
            "domain not a host name",
            body(json!({"query": "q", "search_domain_filter": ["not a host"]})),
            None,
            400,
            "validation-failed",
            "/search_domain_filter/0",
        ),
        (
            "domain with a scheme",
            body(json!({"query": "q", "search_domain_filter": ["https://example.com"]})),
            None,
            400,
            "validation-failed",
            "/search_domain_filter/0",
        ),
        (
            "domain is a number",
            body(json!({"query": "q", "search_domain_filter": ["example.com", 7]})),
            None,
            400,
            "validation-failed",
            "/search_domain_filter/1",
        ),
        (
            "domains not an array",
            body(json!({"query": "q", "search_domain_filter": "example.com"})),
            None,
            400,
            "validation-failed",
            "/search_domain_filter",
        ),
        (
            "recency unknown",
            body(json!({"query": "q", "search_recency_filter": "decade"})),
            None,
            400,
            "validation-failed",
            "/search_recency_filter",
        ),
        (
            "search mode unknown",
            body(json!({"query": "q", "search_mode": "images"})),
            None,
            400,
            "validation-failed",
            "/search_mode",
        ),
        (
            "search mode null",
            raw(r#"{"query":"q","search_mode":null}"#),
            None,
            400,
            "validation-failed",
            "/search_mode",
        ),
        (
            "reasoning effort unknown",
            body(json!({"query": "q", "reasoning_effort": "max"})),
            None,
            400,
            "validation-failed",
            "/reasoning_effort",
        ),
        (
            "ISO date",
            body(json!({"query": "q", "search_after_date_filter": "2025-01-31"})),
            None,
            400,
            "validation-failed",
            "/search_after_date_filter",
        ),
        (
            "month 13",
            body(json!({"query": "q", "last_updated_before_filter": "13/01/2025"})),
            None,
            400,
            "validation-failed",
            "/last_updated_before_filter",
        ),
        (
            "context size unknown",
            body(json!({"query": "q", "web_search_options": {"search_context_size": "huge"}})),
            None,
            400,
            "validation-failed",
            "/web_search_options/search_context_size",
        ),
        (
            "web option unknown",
            body(json!({"query": "q", "web_search_options": {"user_location": {}}})),
            None,
            400,
            "validation-failed",
            "/web_search_options/user_location",
        ),
        (
            "web options not an object",
            body(json!({"query": "q", "web_search_options": "low"})),
            None,
            400,
            "validation-failed",
            "/web_search_options",
        ),
        (
            "recipient elsewhere",
            body(json!({"query": "q", "recipient": "stranger@elsewhere.example"})),
            None,
            400,
            "validation-failed",
            "/recipient",
        ),
        (
            "recipient not an address",
            body(json!({"query": "q", "recipient": "owner at example"})),
            None,
            400,
            "validation-failed",
            "/recipient",
        ),
        (
            "recipient is a number",
            body(json!({"query": "q", "recipient": 1})),
            None,
            400,
            "validation-failed",
            "/recipient",
        ),
        (
            "body over 32 KiB",
            body(json!({"query": long_text(40_000)})),
            None,
            413,
            "body-too-large",
            "",
        ),
        (
            "idempotency key too long",
            body(json!({"query": "q"})),
            Some(("idempotency-key", long_text(256))),
            400,
            "invalid-parameter",
            "Idempotency-Key",
        ),
        (
            "idempotency key with a space",
            body(json!({"query": "q"})),
            Some(("idempotency-key", "two words".to_owned())),
            400,
            "invalid-parameter",
            "Idempotency-Key",
        ),
    ];
    assert!(cases.len() >= 30);

    let mut mismatches = Vec::new();
    for (what, body, header, status, code, field) in &cases {
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = api
            .send(
                Method::POST,
                "/jobs",
                Some(&token),
                Some(body.clone()),
                &headers,
            )
            .await;

        let fields = fields_of(&answer.body);
        let content_type = answer
            .headers
            .get("content-type")
            .cloned()
            .unwrap_or_default();
        if answer.status != *status
            || answer.body["code"] != *code
            || !fields.iter().any(|found| found == field)
            || content_type != "application/problem+json"
        {
            mismatches.push(format!(
                "{what}: expected {status} {code} at {field:?}, got {} {content_type} {}",
                answer.status, answer.body
            ));
        }
    }

    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let stats = stack.simulator.stats();
    assert_eq!(
        stats.requests.create, 0,
        "no provider call for a bad request"
    );
    assert!(table_items(&stack).await.is_empty(), "nothing written");
    assert!(api.all_ids(&token).await.is_empty());
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_listing_parameters_name_the_parameter() {
    let stack = TestStack::start().await;
    let api = Api::new(&stack);
    let token = stack.token("lister", "lister@example.com");
    let cases = [
        ("/jobs?limit=0", "limit"),
        ("/jobs?limit=101", "limit"),
        ("/jobs?limit=-1", "limit"),
        ("/jobs?limit=ten", "limit"),
        ("/jobs?limit=", "limit"),
        ("/jobs?cursor=not-a-cursor!", "cursor"),
        ("/jobs?cursor=", "cursor"),
        ("/jobs?cursor=MDFKRDAwMDAwMA", "cursor"),
    ];

    for (path, field) in cases {
        let answer = api.get(&token, path).await;

        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert_eq!(answer.body["code"], "invalid-parameter", "{path}");
        assert_eq!(fields_of(&answer.body), [field], "{path}");
    }
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_is_accepted_with_location_and_the_job_view() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("plain", "plain@example.com");

    let answer = api
        .post_job(
            &token,
            &json!({"query": "  Heat pumps in cold climates?  "}),
            None,
        )
        .await;

    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = id_of(&answer);
    assert_eq!(answer.headers["location"], format!("/jobs/{id}"));
    assert_eq!(answer.body["status"], "SUBMITTED");
    assert_eq!(answer.body["question"], "Heat pumps in cold climates?");
    assert_eq!(answer.body["model"], "sonar-deep-research");
    assert_eq!(answer.body["email"]["state"], "NOT_YET");
    let provider = stack.simulator_job(&id).expect("submitted under our id");
    assert_eq!(provider.idempotency_key.as_deref(), Some(id.as_str()));
    let shown = api.get(&token, &format!("/jobs/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["id"], id.as_str());
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_request_reaches_the_provider_as_validated() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("full", "full@example.com");
    let request = json!({
        "messages": [
            {"role": "system", "content": "Answer for an engineer."},
            {"role": "user", "content": "What is a COP?"},
            {"role": "assistant", "content": "Heat out per work in."},
            {"role": "user", "content": "How does it change below -20 C?"}
        ],
        "model": "sonar-pro",
        "search_domain_filter": ["Energy.gov", "-example.com"],
        "search_recency_filter": "year",
        "search_mode": "academic",
        "reasoning_effort": "high",
        "search_after_date_filter": "01/31/2020",
        "web_search_options": {"search_context_size": "high"}
    });

    let answer = api.post_job(&token, &request, None).await;

    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = id_of(&answer);
    assert_eq!(answer.body["question"], "How does it change below -20 C?");
    assert_eq!(answer.body["model"], "sonar-pro");
    let provider = stack.simulator_job(&id).expect("submitted");
    assert_eq!(provider.question, "How does it change below -20 C?");
    assert_eq!(stack.simulator.stats().jobs_created, 1);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_go_to_the_caller_or_an_allowed_domain_only() {
    let options = with_env(never_finishing(), &[("RECIPIENT_DOMAINS", "team.example")]);
    let stack = TestStack::start_with(options).await;
    let api = Api::new(&stack);
    let token = stack.token("sender", "sender@example.com");

    let own = api
        .post_job(
            &token,
            &json!({"query": "q", "recipient": "SENDER@example.com"}),
            None,
        )
        .await;
    let team = api
        .post_job(
            &token,
            &json!({"query": "q", "recipient": "lead@team.example"}),
            None,
        )
        .await;
    let stranger = api
        .post_job(
            &token,
            &json!({"query": "q", "recipient": "lead@team.example.net"}),
            None,
        )
        .await;

    assert_eq!(own.status, 202, "{}", own.body);
    assert_eq!(team.status, 202, "{}", team.body);
    assert_eq!(stranger.status, 400);
    assert_eq!(fields_of(&stranger.body), ["/recipient"]);
    assert_eq!(stack.simulator.stats().jobs_created, 2);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_replays_conflicts_and_expires_after_a_day() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("idem", "idem@example.com");
    let first_body = json!({"query": "Heat pumps?", "search_mode": "web"});
    let same_meaning =
        json!({"search_mode": "web", "messages": [{"role": "user", "content": "Heat pumps? "}]});

    let first = api.post_job(&token, &first_body, Some("key-1")).await;
    let replay = api.post_job(&token, &same_meaning, Some("key-1")).await;
    let conflict = api
        .post_job(&token, &json!({"query": "Something else"}), Some("key-1"))
        .await;
    let other_owner = api
        .post_job(
            &stack.token("other", "other@example.com"),
            &first_body,
            Some("key-1"),
        )
        .await;

    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(id_of(&replay), id_of(&first));
    assert_eq!(replay.headers["location"], first.headers["location"]);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert!(!first.headers.contains_key("idempotent-replayed"));
    assert_eq!(conflict.status, 422);
    assert_eq!(conflict.body["code"], "idempotency-key-reused");
    assert_eq!(other_owner.status, 202, "keys are per owner");
    assert_ne!(id_of(&other_owner), id_of(&first));
    let stats = stack.simulator.stats();
    assert_eq!(stats.requests.create, 2, "a replay calls no provider");
    assert_eq!(stats.jobs_created, 2);
    assert_eq!(api.all_ids(&token).await, [id_of(&first)]);

    stack.app().clock.advance_ms(DAY_MS + 1000);
    let token = stack.token("idem", "idem@example.com");
    let after_a_day = api
        .post_job(&token, &json!({"query": "Something else"}), Some("key-1"))
        .await;

    assert_eq!(after_a_day.status, 202, "{}", after_a_day.body);
    assert_ne!(id_of(&after_a_day), id_of(&first));
    assert_eq!(stack.simulator.stats().jobs_created, 3);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_quota_refuses_the_next_job_with_retry_after() {
    let options = with_env(never_finishing(), &[("DAILY_JOB_QUOTA", "3")]);
    let stack = TestStack::start_with(options).await;
    let api = Api::new(&stack);
    let token = stack.token("busy", "busy@example.com");
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = api
            .post_job(
                &token,
                &json!({"query": format!("question {n}")}),
                Some(&format!("k{n}")),
            )
            .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        ids.push(id_of(&answer));
    }

    let refused = api
        .post_job(&token, &json!({"query": "one more"}), None)
        .await;
    let replay = api
        .post_job(&token, &json!({"query": "question 0"}), Some("k0"))
        .await;
    let someone_else = api
        .post_job(
            &stack.token("calm", "calm@example.com"),
            &json!({"query": "q"}),
            None,
        )
        .await;

    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["code"], "quota-exceeded");
    let retry_after: u64 = refused.headers["retry-after"].parse().expect("seconds");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(replay.status, 202, "a replay is not a new job");
    assert_eq!(id_of(&replay), ids[0]);
    assert_eq!(someone_else.status, 202, "the quota is per owner");
    let jobs = table_items(&stack)
        .await
        .into_iter()
        .filter(|pk| pk.starts_with("JOB#"))
        .count();
    assert_eq!(jobs, 4, "the refused job was not written");
    assert_eq!(api.all_ids(&token).await.len(), 3);
    assert_eq!(stack.simulator.stats().jobs_created, 4);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_see_and_cancel_only_their_own_jobs() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let alice = stack.token("alice", "alice@example.com");
    let mallory = stack.token("mallory", "mallory@example.com");
    let job = api
        .post_job(&alice, &json!({"query": "private question"}), None)
        .await;
    let id = id_of(&job);

    let peek = api.get(&mallory, &format!("/jobs/{id}")).await;
    let cancel = api.delete(&mallory, &id).await;
    let nothing = api.get(&mallory, "/jobs/01JD0000000000000000000000").await;
    let garbage = api.get(&mallory, "/jobs/..%2F..%2Fetc").await;

    assert_eq!(peek.status, 404);
    assert_eq!(peek.body["code"], "job-not-found");
    assert_eq!(cancel.status, 404);
    assert_eq!(nothing.body, peek.body, "another's job looks like no job");
    assert_eq!(garbage.status, 404);
    assert!(api.all_ids(&mallory).await.is_empty());
    assert_eq!(api.all_ids(&alice).await, [id.as_str()]);
    let still = api.get(&alice, &format!("/jobs/{id}")).await;
    assert_eq!(still.body["status"], "SUBMITTED");
    assert_eq!(stack.simulator.stats().requests.delete, 0);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_comes_only_from_the_authorizer() {
    let stack = TestStack::start().await;
    let api = Api::new(&stack);

    let no_token = api
        .send(
            Method::POST,
            "/jobs",
            None,
            Some(b"{\"query\":\"q\"}".to_vec()),
            &[],
        )
        .await;
    let forged = api
        .send(
            Method::GET,
            "/jobs",
            Some("not.a.token"),
            None,
            &[("x-owner", "alice")],
        )
        .await;
    let expired = api
        .send(
            Method::GET,
            "/jobs",
            Some(&local_front::jwt::issue(
                local_front::testkit::JWT_KEY,
                "alice",
                "alice@example.com",
                stack.app().clock.now_secs() - 7200,
                3600,
            )),
            None,
            &[],
        )
        .await;

    for answer in [&no_token, &forged, &expired] {
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    assert_eq!(stack.simulator.stats().requests.create, 0);
    assert!(table_items(&stack).await.is_empty());
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listing_walks_every_job_newest_first() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("pager", "pager@example.com");
    let mut created = Vec::new();
    for n in 0..5 {
        let answer = api
            .post_job(&token, &json!({"query": format!("question {n}")}), None)
            .await;
        created.push(id_of(&answer));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    api.post_job(
        &stack.token("neighbour", "n@example.com"),
        &json!({"query": "q"}),
        None,
    )
    .await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut pages = Vec::new();
    let mut path = "/jobs?limit=2".to_owned();
    loop {
        let page = api.get(&token, &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages.push(ids_of(&page.body));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/jobs?limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages.len() < 10, "the cursor never ends");
    }
    let exact = api.get(&token, "/jobs?limit=5").await;
    let default = api.get(&token, "/jobs").await;
    let largest = api.get(&token, "/jobs?limit=100").await;

    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), newest_first);
    assert_eq!(ids_of(&exact.body), newest_first);
    assert!(
        exact.body["next_cursor"].is_null(),
        "no cursor to an empty page"
    );
    assert_eq!(ids_of(&default.body), newest_first);
    assert_eq!(ids_of(&largest.body), newest_first);
    let first = &default.body["jobs"][0];
    assert_eq!(first["question"], "question 4");
    assert_eq!(first["links"]["self"], format!("/jobs/{}", newest_first[0]));
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_queued_job_stops_its_submission() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("early", "early@example.com");
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 429,
            times: 1,
            retry_after_secs: Some(1),
        })
        .expect("fault");
    let job = api.post_job(&token, &json!({"query": "q"}), None).await;
    let id = id_of(&job);

    let cancelled = api.delete(&token, &id).await;
    stack.app().clock.advance_ms(120_000);
    stack.reconcile().await;

    assert_eq!(job.body["status"], "QUEUED");
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "CANCELLED");
    assert_eq!(cancelled.body["email"]["state"], "NOT_SENT");
    let stats = stack.simulator.stats();
    assert_eq!(stats.jobs_created, 0, "a cancelled job is never submitted");
    assert_eq!(
        stats.requests.delete, 0,
        "nothing to cancel at the provider"
    );
    let after = api
        .get(
            &stack.token("early", "early@example.com"),
            &format!("/jobs/{id}"),
        )
        .await;
    assert_eq!(after.body["status"], "CANCELLED");
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job_cancels_it_at_the_provider_once() {
    let stack = TestStack::start_with(running_at_once()).await;
    let api = Api::new(&stack);
    let token = stack.token("runner", "runner@example.com");
    let id = id_of(&api.post_job(&token, &json!({"query": "q"}), None).await);
    let provider = provider_id(&stack, &id);
    let started = deliver_now(&stack, &provider, None).await;
    assert_eq!(
        started["status"], 200,
        "a status delivery is taken: {started}"
    );
    let running = api.get(&token, &format!("/jobs/{id}")).await;

    let first = api.delete(&token, &id).await;
    let again = api.delete(&token, &id).await;

    assert_eq!(running.body["status"], "IN_PROGRESS");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["status"], "CANCELLED");
    assert_eq!(again.status, 200, "a repeated cancel is harmless");
    assert_eq!(again.body["status"], "CANCELLED");
    assert_eq!(again.body["finished_at"], first.body["finished_at"]);
    assert_eq!(stack.simulator.stats().requests.delete, 1);
    assert!(stack.simulator_job(&id).expect("provider job").cancelled);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_completed_webhook_does_not_revive_a_cancelled_job() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("late", "late@example.com");
    let id = id_of(&api.post_job(&token, &json!({"query": "q"}), None).await);
    let provider = provider_id(&stack, &id);
    let cancelled = api.delete(&token, &id).await;
    assert_eq!(cancelled.body["status"], "CANCELLED");
    let completed = json!({
        "job_id": provider,
        "status": "COMPLETED",
        "response": {
            "id": "late", "model": "sonar-deep-research", "created": 1,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "# Late report [1]"}}],
            "search_results": [{"title": "t", "url": "https://example.org/a", "date": null}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                      "cost": {"total_cost": 0.5}}
        }
    });

    let delivery = deliver_now(&stack, &provider, Some(completed)).await;
    stack.app().clock.advance_ms(600_000);
    stack.reconcile().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        delivery["status"], 200,
        "answered so the provider stops: {delivery}"
    );
    assert_eq!(delivery["body"]["outcome"], "ignored");
    let token = stack.token("late", "late@example.com");
    let view = api.get(&token, &format!("/jobs/{id}")).await;
    assert_eq!(view.body["status"], "CANCELLED");
    assert_eq!(view.body["email"]["state"], "NOT_SENT");
    assert!(view.body.get("report").is_none());
    assert!(stack.mails_for(&id).await.is_empty(), "no e-mail");
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_job_cannot_be_cancelled() {
    let stack = TestStack::start().await;
    let api = Api::new(&stack);
    let token = stack.token("done", "done@example.com");
    let id = id_of(
        &api.post_job(&token, &json!({"query": "Heat pumps?"}), None)
            .await,
    );
    let finished = stack
        .wait_for(&token, &id, Duration::from_secs(30), finished_and_mailed)
        .await;

    let refused = api.delete(&token, &id).await;
    let after = api.get(&token, &format!("/jobs/{id}")).await;

    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["code"], "job-finished");
    assert_eq!(after.body["status"], "COMPLETED");
    assert_eq!(after.body["updated_at"], finished["updated_at"]);
    assert!(
        after.body["cost_usd"]
            .as_f64()
            .is_some_and(|cost| cost > 0.0)
    );
    assert!(
        after.body["report"]
            .as_str()
            .is_some_and(|report| !report.contains("<think>"))
    );
    let listed = api.get(&token, "/jobs").await;
    assert_eq!(listed.body["jobs"][0]["cost_usd"], after.body["cost_usd"]);
    assert_eq!(stack.simulator.stats().requests.delete, 0);
    assert_eq!(stack.mails_for(&id).await.len(), 1);
    api.assert_documented();
}

async fn queued_then_reconciled(status: u16) {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("patient", "patient@example.com");
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status,
            times: 1,
            retry_after_secs: (status == 429).then_some(5),
        })
        .expect("fault");

    let answer = api.post_job(&token, &json!({"query": "q"}), None).await;
    let id = id_of(&answer);
    let before = stack.simulator.stats();
    stack.reconcile().await;
    let early = stack.simulator.stats();
    stack.app().clock.advance_ms(60_000);
    stack.reconcile().await;
    stack.app().clock.advance_ms(60_000);
    stack.reconcile().await;

    assert_eq!(answer.status, 202, "{status}: {}", answer.body);
    assert_eq!(answer.body["status"], "QUEUED");
    assert_eq!(answer.headers["location"], format!("/jobs/{id}"));
    assert_eq!(before.requests.create, 1);
    assert_eq!(before.jobs_created, 0);
    assert_eq!(
        early.jobs_created, 0,
        "not before the provider's wait is over"
    );
    let stats = stack.simulator.stats();
    assert_eq!(stats.jobs_created, 1, "submitted exactly once");
    assert_eq!(stats.requests.create, 2);
    let token = stack.token("patient", "patient@example.com");
    let view = api.get(&token, &format!("/jobs/{id}")).await;
    assert!(
        matches!(
            view.body["status"].as_str(),
            Some("SUBMITTED" | "IN_PROGRESS")
        ),
        "{}",
        view.body
    );
    assert_eq!(
        stack
            .simulator_job(&id)
            .expect("provider job")
            .idempotency_key
            .as_deref(),
        Some(id.as_str())
    );
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_submission_is_queued_and_submitted_later_once() {
    queued_then_reconciled(429).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_provider_is_queued_and_submitted_later_once() {
    queued_then_reconciled(503).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_refusal_fails_the_job_and_tells_the_caller() {
    let options = with_env(
        never_finishing(),
        &[("ALLOWED_MODELS", "sonar-deep-research,sonar-unheard-of")],
    );
    let stack = TestStack::start_with(options).await;
    let api = Api::new(&stack);
    let token = stack.token("refused", "refused@example.com");
    let body = json!({"query": "q", "model": "sonar-unheard-of"});

    let refused = api.post_job(&token, &body, Some("refused-1")).await;
    let replay = api.post_job(&token, &body, Some("refused-1")).await;

    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["code"], "provider-rejected");
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("sonar-unheard-of"),
        "names the refusal: {detail}"
    );
    let instance = refused.body["instance"]
        .as_str()
        .expect("the job it created");
    let view = api.get(&token, instance).await;
    assert_eq!(view.body["status"], "FAILED");
    assert!(
        view.body["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("sonar-unheard-of"))
    );
    assert_eq!(view.body["email"]["state"], "NOT_SENT");
    assert_eq!(replay.status, 422);
    assert_eq!(replay.body, refused.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let stats = stack.simulator.stats();
    assert_eq!(stats.requests.create, 1);
    assert_eq!(stats.jobs_created, 0);
    let id = instance.trim_start_matches("/jobs/");
    stack.app().clock.advance_ms(600_000);
    stack.reconcile().await;
    assert!(
        stack.mails_for(id).await.is_empty(),
        "the caller was told; no e-mail"
    );
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_bad_request_fault_is_a_refusal_too() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("faulted", "faulted@example.com");
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 400,
            times: 1,
            retry_after_secs: None,
        })
        .expect("fault");

    let refused = api.post_job(&token, &json!({"query": "q"}), None).await;

    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["code"], "provider-rejected");
    let view = api
        .get(&token, refused.body["instance"].as_str().expect("instance"))
        .await;
    assert_eq!(view.body["status"], "FAILED");
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_are_refused_with_allow() {
    let stack = TestStack::start().await;
    let api = Api::new(&stack);
    let token = stack.token("methods", "methods@example.com");

    let put = api
        .send(Method::PUT, "/jobs", Some(&token), None, &[])
        .await;
    let patch = api
        .send(
            Method::PATCH,
            "/jobs/01JD0000000000000000000000",
            Some(&token),
            None,
            &[],
        )
        .await;

    assert_eq!(put.status, 405);
    assert_eq!(put.headers["allow"], "GET, POST");
    assert_eq!(patch.status, 405);
    assert_eq!(patch.headers["allow"], "GET, DELETE");
    api.assert_documented();
}

// --- The same handler behind other event shapes (C1, C5) -------------------------------------

fn claims() -> Value {
    json!({"sub": "shapes", "email": "shapes@example.com"})
}

/// A payload 2.0 event on stage `stage` (`$default` for none).
fn v2_event(method: &str, path: &str, stage: &str, body: Option<&str>, base64: bool) -> Value {
    let raw_path = if stage == "$default" {
        path.to_owned()
    } else {
        format!("/{stage}{path}")
    };
    let route = if path.starts_with("/jobs/") {
        format!("{method} /jobs/{{id}}")
    } else {
        format!("{method} /jobs")
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "api",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "tests"},
            "requestId": "request",
            "routeKey": route,
            "stage": stage,
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1_767_225_600_000_i64,
            "authorizer": {"jwt": {"claims": claims(), "scopes": null}}
        },
        "isBase64Encoded": base64
    });
    if let Some(id) = path.strip_prefix("/jobs/") {
        event["pathParameters"] = json!({"id": id});
    }
    if let Some(body) = body {
        event["body"] = json!(if base64 {
            STANDARD.encode(body)
        } else {
            body.to_owned()
        });
    }
    event
}

/// A payload 1.0 event (REST API shape) on stage `dev`.
fn v1_event(method: &str, path: &str, body: Option<&str>, base64: bool) -> Value {
    let resource = if path.starts_with("/jobs/") {
        "/jobs/{id}"
    } else {
        "/jobs"
    };
    let mut event = json!({
        "version": "1.0",
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "api",
            "authorizer": {"claims": claims()},
            "domainName": "api.example.com",
            "httpMethod": method,
            "identity": {"sourceIp": "192.0.2.1"},
            "path": format!("/dev{path}"),
            "protocol": "HTTP/1.1",
            "requestId": "request",
            "requestTimeEpoch": 1_767_225_600_000_i64,
            "resourceId": "resource",
            "resourcePath": resource,
            "stage": "dev"
        },
        "pathParameters": null,
        "stageVariables": null,
        "body": null,
        "isBase64Encoded": base64
    });
    if let Some(id) = path.strip_prefix("/jobs/") {
        event["pathParameters"] = json!({"id": id});
    }
    if let Some(body) = body {
        event["body"] = json!(if base64 {
            STANDARD.encode(body)
        } else {
            body.to_owned()
        });
    }
    event
}

/// Runs an event through `submit_api::handle`, as the Lambda runtime would.
async fn invoke(stack: &TestStack, method: &str, path: &str, event: &Value) -> Observed {
    let request = lambda_http::request::from_str(&event.to_string())
        .unwrap_or_else(|error| panic!("the event deserializes: {error}: {event}"));
    let response = submit_api::handle(stack.app(), request).await;
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Observed {
        method: method.to_owned(),
        path: path.to_owned(),
        status: parts.status.as_u16(),
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// What two answers to the same request must share, whatever the event shape.
fn essence(answer: &Observed) -> Value {
    let mut body = answer.body.clone();
    for volatile in ["id", "created_at", "updated_at", "links", "instance"] {
        if let Some(object) = body.as_object_mut() {
            object.remove(volatile);
        }
    }
    json!({
        "status": answer.status,
        "content_type": answer.headers.get("content-type"),
        "location": answer.headers.get("location").map(|_| "present"),
        "body": body,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn stages_base64_bodies_and_payload_1_0_answer_like_the_plain_route() {
    let stack = TestStack::start_with(never_finishing()).await;
    let api = Api::new(&stack);
    let token = stack.token("shapes", "shapes@example.com");
    let bodies = [
        r#"{"query":"Heat pumps in cold climates?"}"#,
        r#"{"query":42}"#,
        r#"{"query":"x""#,
        "",
    ];

    let mut seen = Vec::new();
    for body in bodies {
        let plain = api
            .send(
                Method::POST,
                "/jobs",
                Some(&token),
                Some(body.as_bytes().to_vec()),
                &[],
            )
            .await;
        let shapes = [
            (
                "v2 $default",
                v2_event("POST", "/jobs", "$default", Some(body), false),
            ),
            (
                "C1 v2 stage dev",
                v2_event("POST", "/jobs", "dev", Some(body), false),
            ),
            (
                "C1 v2 stage dev base64",
                v2_event("POST", "/jobs", "dev", Some(body), true),
            ),
            (
                "C5 v1 stage dev",
                v1_event("POST", "/jobs", Some(body), false),
            ),
            (
                "C5 v1 stage dev base64",
                v1_event("POST", "/jobs", Some(body), true),
            ),
        ];
        for (shape, event) in shapes {
            let answer = invoke(&stack, "POST", "/jobs", &event).await;

            assert_eq!(
                essence(&answer),
                essence(&plain),
                "{shape} with body {body:?}"
            );
            if answer.status == 202 {
                assert_eq!(
                    answer.headers["location"],
                    format!("/jobs/{}", id_of(&answer)),
                    "Location comes from configuration, not the stage path"
                );
            }
            seen.push(answer);
        }
    }
    let id = id_of(&seen[1]);
    let plain_get = api.get(&token, &format!("/jobs/{id}")).await;
    let v1_get = invoke(
        &stack,
        "GET",
        &format!("/jobs/{id}"),
        &v1_event("GET", &format!("/jobs/{id}"), None, false),
    )
    .await;
    let v2_get = invoke(
        &stack,
        "GET",
        &format!("/jobs/{id}"),
        &v2_event("GET", &format!("/jobs/{id}"), "dev", None, false),
    )
    .await;
    let v1_cancel = invoke(
        &stack,
        "DELETE",
        &format!("/jobs/{id}"),
        &v1_event("DELETE", &format!("/jobs/{id}"), None, false),
    )
    .await;

    assert_eq!(v1_get.body, plain_get.body);
    assert_eq!(v2_get.body, plain_get.body);
    assert_eq!(v1_cancel.status, 200);
    assert_eq!(v1_cancel.body["status"], "CANCELLED");
    assert_eq!(
        stack.simulator.stats().jobs_created,
        6,
        "one per valid request"
    );
    assert_eq!(api.all_ids(&token).await.len(), 6);
    seen.extend([v1_get, v2_get, v1_cancel]);
    contract::assert_all_documented(&seen);
    api.assert_documented();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_without_claims_is_unauthenticated() {
    let stack = TestStack::start().await;
    let mut no_claims = v2_event("POST", "/jobs", "$default", Some(r#"{"query":"q"}"#), false);
    no_claims["requestContext"]
        .as_object_mut()
        .expect("context")
        .remove("authorizer");
    let mut no_email = v1_event("GET", "/jobs", None, false);
    no_email["requestContext"]["authorizer"]["claims"] = json!({"sub": "someone"});
    let mut spoofed = no_claims.clone();
    spoofed["headers"]["x-sub"] = json!("alice");

    let answers = [
        invoke(&stack, "POST", "/jobs", &no_claims).await,
        invoke(&stack, "GET", "/jobs", &no_email).await,
        invoke(&stack, "POST", "/jobs", &spoofed).await,
    ];

    for answer in &answers {
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.body["code"], "unauthenticated");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
    }
    assert_eq!(stack.simulator.stats().requests.create, 0);
    contract::assert_all_documented(&answers);
}
