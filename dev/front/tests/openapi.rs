//! `openapi.yaml` against the handlers' real answers: every documented status of every operation
//! is produced here by a scenario, and every answer must match the document's operation, status,
//! content type, headers and schema. A status the handlers cannot produce, or an answer the
//! document does not describe, fails.

#[path = "support/contract.rs"]
mod contract;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use contract::Observed;
use local_front::testkit::{StackOptions, TestStack, finished_and_mailed, sdk_config};
use perplexity_simulator::{FaultEndpoint, HttpFault};
use reqwest::Method;
use research_relay::app::App;
use research_relay::mailer::Mailer;
use research_relay::provider::ResearchProvider;
use research_relay::signature::{SIGNATURE_HEADER, derive_job_secret};
use research_relay::store::JobStore;
use serde_json::{Value, json};

async fn call(
    stack: &TestStack,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Observed {
    let mut request = stack.http.request(method.clone(), stack.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_vec());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the front answers");
    let status = response.status().as_u16();
    let headers = local_front::testkit::headers_of(&response);
    let bytes = response.bytes().await.expect("a body");
    Observed {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A signed delivery for `job_id`, posted to the front as the provider would.
async fn deliver(stack: &TestStack, job_id: &str, body: &Value) -> Observed {
    let bytes = body.to_string().into_bytes();
    let secret = derive_job_secret(stack.app().signing_keys.current.expose(), job_id);
    let signature = perplexity_simulator::signature(&secret, &bytes);
    call(
        stack,
        Method::POST,
        &format!("/webhooks/perplexity/{job_id}"),
        None,
        Some(&bytes),
        &[(SIGNATURE_HEADER, &signature)],
    )
    .await
}

/// A payload 2.0 event for the handlers, with the caller's claims when `claims` is set.
fn event(method: &str, path: &str, body: Option<&[u8]>, headers: Value, claims: bool) -> String {
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "request", "routeKey": "$default",
            "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "tests"}
        },
        "isBase64Encoded": false
    });
    if claims {
        event["requestContext"]["authorizer"] = json!({"jwt": {"claims": {"sub": "broken", "email": "broken@example.com"}, "scopes": null}});
    }
    if let Some(body) = body {
        event["body"] = json!(String::from_utf8_lossy(body));
    }
    event.to_string()
}

fn observed(
    method: &str,
    path: &str,
    response: lambda_http::Response<lambda_http::Body>,
) -> Observed {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    Observed {
        method: method.to_owned(),
        path: path.to_owned(),
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Every route answered through the handlers with a store that fails: `broken` is the app whose
/// store cannot be reached or refuses every request.
async fn with_broken_store<P, M>(broken: &App<P, M>, job_id: &str) -> Vec<Observed>
where
    P: ResearchProvider,
    M: Mailer,
{
    let job_path = format!("/jobs/{job_id}");
    let mut answers = Vec::new();
    let jobs_calls: [(&str, &str, Option<&[u8]>); 4] = [
        ("POST", "/jobs", Some(br#"{"query":"q"}"#)),
        ("GET", "/jobs", None),
        ("GET", &job_path, None),
        ("DELETE", &job_path, None),
    ];
    for (method, path, body) in jobs_calls {
        let text = event(
            method,
            path,
            body,
            json!({"content-type": "application/json"}),
            true,
        );
        let request = lambda_http::request::from_str(&text).expect("event");
        answers.push(observed(
            method,
            path,
            submit_api::handle(broken, request).await,
        ));
    }

    let delivery = json!({"job_id": "provider-job", "status": "COMPLETED"}).to_string();
    let secret = derive_job_secret(broken.signing_keys.current.expose(), job_id);
    let signature = perplexity_simulator::signature(&secret, delivery.as_bytes());
    let path = format!("/webhooks/perplexity/{job_id}");
    let text = event(
        "POST",
        &path,
        Some(delivery.as_bytes()),
        json!({"content-type": "application/json", SIGNATURE_HEADER: signature}),
        false,
    );
    let request = lambda_http::request::from_str(&text).expect("event");
    answers.push(observed(
        "POST",
        &path,
        webhook_receiver::handle(broken, request).await,
    ));
    answers
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    listener.local_addr().expect("address").port()
}

fn documented_statuses() -> BTreeSet<(String, String, u16)> {
    let mut all = BTreeSet::new();
    let paths = contract::document()["paths"].as_object().expect("paths");
    for (template, item) in paths {
        for method in contract::methods_of(template) {
            let responses = item[method.to_lowercase()]["responses"]
                .as_object()
                .expect("responses");
            for status in responses.keys() {
                all.insert((
                    method.clone(),
                    template.clone(),
                    status.parse().expect("numeric status"),
                ));
            }
        }
    }
    all
}

#[test]
fn the_document_is_openapi_3_1_with_bearer_jwt_on_every_jobs_route() {
    let document = contract::document();

    let version = document["openapi"].as_str().expect("openapi version");
    let scheme = &document["components"]["securitySchemes"]["bearerAuth"];

    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    for template in ["/jobs", "/jobs/{id}"] {
        for method in contract::methods_of(template) {
            let operation = &document["paths"][template][method.to_lowercase()];
            assert_eq!(
                operation["security"],
                json!([{"bearerAuth": []}]),
                "{method} {template}"
            );
            assert!(
                operation["responses"].get("401").is_some(),
                "{method} {template}"
            );
        }
    }
    let webhook = &document["paths"]["/webhooks/perplexity/{job_id}"]["post"];
    assert_eq!(
        webhook["security"],
        json!([]),
        "the webhook is signed, not authorized"
    );
    let methods: BTreeSet<(String, String)> = documented_statuses()
        .into_iter()
        .map(|(method, template, _)| (method, template))
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(
            [
                ("GET", "/jobs"),
                ("POST", "/jobs"),
                ("GET", "/jobs/{id}"),
                ("DELETE", "/jobs/{id}"),
                ("POST", "/webhooks/perplexity/{job_id}"),
            ]
            .map(|(method, template)| (method.to_owned(), template.to_owned()))
        )
    );
}

#[test]
fn every_schema_compiles_and_every_reference_resolves() {
    let document = contract::document();
    let mut references = Vec::new();
    collect_references(document, &mut references);

    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    let broken: Vec<String> = schemas
        .iter()
        .filter_map(|(name, schema)| contract::check_schema(name, schema, &json!(null)).err())
        .filter(|error| error.contains("does not compile"))
        .collect();
    let dangling: Vec<&String> = references
        .iter()
        .filter(|reference| {
            document
                .pointer(reference.trim_start_matches('#'))
                .is_none()
        })
        .collect();

    assert!(broken.is_empty(), "{broken:?}");
    assert!(!references.is_empty());
    assert!(dangling.is_empty(), "{dangling:?}");
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_references(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

#[test]
fn the_request_schema_agrees_with_the_validator_on_examples() {
    let schema = &contract::document()["components"]["schemas"]["JobRequest"];
    let accepted = [
        json!({"query": "q"}),
        json!({"messages": [{"role": "user", "content": "q"}], "model": "sonar-pro",
               "search_domain_filter": ["example.com", "-example.org"], "reasoning_effort": "minimal",
               "search_after_date_filter": "01/31/2025", "web_search_options": {"search_context_size": "low"}}),
    ];
    let refused = [
        json!({}),
        json!({"query": 42}),
        json!({"query": "q", "messages": [{"role": "user", "content": "q"}]}),
        json!({"query": "q", "temperature": 1}),
        json!({"query": "q", "search_domain_filter": ["not a host"]}),
        json!({"query": "q", "search_after_date_filter": "2025-01-31"}),
    ];

    for body in accepted {
        assert!(
            contract::check_schema("request", schema, &body).is_ok(),
            "{body}"
        );
    }
    for body in refused {
        assert!(
            contract::check_schema("request", schema, &body).is_err(),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_status_of_every_route_is_a_real_answer_that_matches() {
    let mut options = StackOptions::default();
    options
        .env
        .extend([("DAILY_JOB_QUOTA".to_owned(), "3".to_owned())]);
    let stack = TestStack::start_with(options).await;
    let token = stack.token("contract", "contract@example.com");
    let other = stack.token("stranger", "stranger@example.com");
    let query = br#"{"query":"Heat pumps in cold climates?"}"#;
    let mut answers = Vec::new();

    // POST /jobs
    let created = call(
        &stack,
        Method::POST,
        "/jobs",
        Some(&token),
        Some(query),
        &[("idempotency-key", "k1")],
    )
    .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let job_path = format!("/jobs/{id}");
    answers.push(created);
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(query),
            &[("idempotency-key", "k1")],
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(br#"{"query":"other"}"#),
            &[("idempotency-key", "k1")],
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(br#"{"query":42}"#),
            &[],
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(b"{\"query\":\"x\""),
            &[],
        )
        .await,
    );
    answers.push(call(&stack, Method::POST, "/jobs", Some(&token), Some(b""), &[]).await);
    let large = format!(r#"{{"query":"{}"}}"#, "a".repeat(40_000));
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(large.as_bytes()),
            &[],
        )
        .await,
    );
    answers.push(call(&stack, Method::POST, "/jobs", None, Some(query), &[]).await);
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 400,
            times: 1,
            retry_after_secs: None,
        })
        .expect("fault");
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(br#"{"query":"refused"}"#),
            &[],
        )
        .await,
    );
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 429,
            times: 1,
            retry_after_secs: Some(30),
        })
        .expect("fault");
    let queued = call(
        &stack,
        Method::POST,
        "/jobs",
        Some(&token),
        Some(br#"{"query":"later"}"#),
        &[],
    )
    .await;
    let queued_id = queued.body["id"].as_str().expect("id").to_owned();
    answers.push(queued);
    answers.push(
        call(
            &stack,
            Method::POST,
            "/jobs",
            Some(&token),
            Some(br#"{"query":"over quota"}"#),
            &[],
        )
        .await,
    );

    // GET /jobs/{id} while running, then finished with a report and sources
    answers.push(call(&stack, Method::GET, &job_path, Some(&token), None, &[]).await);
    stack
        .wait_for(&token, &id, Duration::from_secs(30), finished_and_mailed)
        .await;
    answers.push(call(&stack, Method::GET, &job_path, Some(&token), None, &[]).await);
    answers.push(call(&stack, Method::GET, &job_path, Some(&other), None, &[]).await);
    answers.push(call(&stack, Method::GET, &job_path, None, None, &[]).await);

    // GET /jobs
    let first_page = call(
        &stack,
        Method::GET,
        "/jobs?limit=1",
        Some(&token),
        None,
        &[],
    )
    .await;
    let cursor = first_page.body["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    answers.push(first_page);
    answers.push(
        call(
            &stack,
            Method::GET,
            &format!("/jobs?limit=1&cursor={cursor}"),
            Some(&token),
            None,
            &[],
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::GET,
            "/jobs?limit=1000",
            Some(&token),
            None,
            &[],
        )
        .await,
    );
    answers.push(call(&stack, Method::GET, "/jobs", None, None, &[]).await);

    // DELETE /jobs/{id}
    answers.push(
        call(
            &stack,
            Method::DELETE,
            &format!("/jobs/{queued_id}"),
            Some(&token),
            None,
            &[],
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::DELETE,
            &format!("/jobs/{queued_id}"),
            Some(&token),
            None,
            &[],
        )
        .await,
    );
    answers.push(call(&stack, Method::DELETE, &job_path, Some(&token), None, &[]).await);
    answers.push(call(&stack, Method::DELETE, &job_path, Some(&other), None, &[]).await);
    answers.push(call(&stack, Method::DELETE, &job_path, None, None, &[]).await);

    // Methods the API does not offer
    answers.push(call(&stack, Method::PUT, "/jobs", Some(&token), None, &[]).await);
    answers.push(call(&stack, Method::PATCH, &job_path, Some(&token), None, &[]).await);
    answers.push(
        call(
            &stack,
            Method::GET,
            &format!("/webhooks/perplexity/{id}"),
            None,
            None,
            &[],
        )
        .await,
    );

    // POST /webhooks/perplexity/{job_id}
    let provider_id = stack.simulator_job(&id).expect("provider job").job["id"]
        .as_str()
        .expect("provider id")
        .to_owned();
    let stranger_id = "01JD0000000000000000000009";
    answers.push(
        deliver(
            &stack,
            &id,
            &json!({"job_id": provider_id, "status": "COMPLETED"}),
        )
        .await,
    );
    let fresh = call(
        &stack,
        Method::POST,
        "/jobs",
        Some(&other),
        Some(br#"{"query":"fresh"}"#),
        &[],
    )
    .await;
    let fresh_id = fresh.body["id"].as_str().expect("id").to_owned();
    let fresh_provider = stack.simulator_job(&fresh_id).expect("provider job").job["id"]
        .as_str()
        .expect("provider id")
        .to_owned();
    answers.push(fresh);
    answers.push(
        deliver(
            &stack,
            &fresh_id,
            &json!({"job_id": "not-the-provider-job", "status": "IN_PROGRESS"}),
        )
        .await,
    );
    answers.push(
        deliver(
            &stack,
            &fresh_id,
            &json!({"job_id": fresh_provider, "status": "COMPLETED", "response": null}),
        )
        .await,
    );
    answers.push(
        deliver(
            &stack,
            &fresh_id,
            &json!({"job_id": fresh_provider, "status": "IN_PROGRESS"}),
        )
        .await,
    );
    answers.push(deliver(&stack, &fresh_id, &json!("not a delivery")).await);
    answers.push(
        deliver(
            &stack,
            stranger_id,
            &json!({"job_id": "x", "status": "COMPLETED"}),
        )
        .await,
    );
    answers.push(
        call(
            &stack,
            Method::POST,
            &format!("/webhooks/perplexity/{fresh_id}"),
            None,
            Some(br#"{"job_id":"x","status":"COMPLETED"}"#),
            &[(SIGNATURE_HEADER, &"0".repeat(64))],
        )
        .await,
    );

    // Our own faults: a store that cannot be reached (503), a table that does not exist (500)
    let sdk = sdk_config().await;
    let unreachable = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(format!("http://127.0.0.1:{}", closed_port().await))
        .build();
    let mut broken = stack.app().clone();
    broken.store = JobStore::new(Client::from_conf(unreachable), stack.app().store.table(), 1);
    answers.extend(with_broken_store(&broken, &id).await);
    broken.store = JobStore::new(Client::new(&sdk), "rr-test-no-such-table", 1);
    answers.extend(with_broken_store(&broken, &id).await);

    contract::assert_all_documented(&answers);
    let seen: BTreeSet<(String, String, u16)> = answers
        .iter()
        .filter_map(|answer| {
            contract::template_for(&answer.path)
                .map(|template| (answer.method.clone(), template, answer.status))
        })
        .collect();
    let never_answered: Vec<_> = documented_statuses().difference(&seen).cloned().collect();
    assert!(
        never_answered.is_empty(),
        "documented but never answered: {never_answered:?}"
    );
    let internal = answers
        .iter()
        .filter(|answer| answer.status >= 500)
        .map(|answer| answer.body["detail"].as_str().unwrap_or_default())
        .find(|detail| {
            detail.contains("Exception")
                || detail.contains("127.0.0.1")
                || detail.contains("dispatch")
        });
    assert!(internal.is_none(), "internal text in a body: {internal:?}");
}
