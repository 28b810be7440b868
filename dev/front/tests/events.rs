//! Keeps the sample events in `events/` true to the product.
//!
//! Every `*.json` file there is read through the same deserializers the Lambda runtimes use
//! (`lambda_http` for API Gateway, `EventBridgeEvent` for the schedule). Each HTTP sample must
//! target a route the API really has, carry the authorizer claims the handlers read (or
//! deliberately none), and each webhook sample's signature must still match its body under the
//! local signing key. A sample that drifts from the product fails here, not later in
//! `sam local invoke`, `cargo lambda invoke` or the demo.

use std::path::{Path, PathBuf};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use local_front::stack::LOCAL_SIGNING_KEY;
use research_relay::http::{body_bytes, caller, header, route_path};
use research_relay::secrets::{SecretString, SigningKeys};
use research_relay::signature::{
    SIGNATURE_HEADER, SignatureError, derive_job_secret, sign, verify_delivery,
};
use serde_json::Value;

/// The routes of the HTTP API in `template.yaml`, as API Gateway route keys.
const ROUTES: [&str; 5] = [
    "POST /jobs",
    "GET /jobs",
    "GET /jobs/{id}",
    "DELETE /jobs/{id}",
    "POST /webhooks/perplexity/{job_id}",
];

/// Samples sent on purpose without the authorizer's claims.
const UNAUTHENTICATED: [&str; 1] = ["submit-job-unauthenticated.json"];

/// Webhook samples whose signature must be refused.
const FORGED: [&str; 1] = ["webhook-bad-signature.json"];

const WEBHOOK_PREFIX: &str = "/webhooks/perplexity/";

/// One file of `events/`.
struct Sample {
    name: String,
    json: Value,
    text: String,
}

/// What a sample turned out to be.
enum Event {
    Http(Box<Request>),
    Scheduled(Box<EventBridgeEvent<Value>>),
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// Every `*.json` file in `events/`, sorted by name; there must be some.
fn samples() -> Vec<Sample> {
    let dir = events_dir();
    let mut samples: Vec<Sample> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .expect("a UTF-8 file name")
                .to_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {name}: {error}"));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{name} is not JSON: {error}"));
            Sample { name, json, text }
        })
        .collect();
    samples.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !samples.is_empty(),
        "{} holds no *.json sample events",
        dir.display()
    );
    samples
}

/// Reads a sample as an API Gateway request if it is one, else as a scheduled event.
fn parse(sample: &Sample) -> Result<Event, String> {
    if let Ok(request) = lambda_http::request::from_str(&sample.text)
        && matches!(
            request.request_context_ref(),
            Some(RequestContext::ApiGatewayV1(_) | RequestContext::ApiGatewayV2(_))
        )
    {
        return Ok(Event::Http(Box::new(request)));
    }
    match serde_json::from_str::<EventBridgeEvent<Value>>(&sample.text) {
        Ok(event) => Ok(Event::Scheduled(Box::new(event))),
        Err(error) => Err(format!(
            "{} is neither an API Gateway request nor an EventBridge event ({error})",
            sample.name
        )),
    }
}

/// The HTTP samples with their requests.
fn http_samples() -> Vec<(Sample, Request)> {
    samples()
        .into_iter()
        .filter_map(|sample| match parse(&sample) {
            Ok(Event::Http(request)) => Some((sample, *request)),
            _ => None,
        })
        .collect()
}

/// The route key of `ROUTES` that a method and handler-visible path match, if any.
fn matching_route(method: &str, path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.into_iter().find(|route| {
        let (route_method, pattern) = route.split_once(' ').expect("METHOD /path");
        let expected: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
        route_method == method
            && expected.len() == segments.len()
            && expected.iter().zip(&segments).all(|(want, got)| {
                if want.starts_with('{') {
                    !got.is_empty()
                } else {
                    want == got
                }
            })
    })
}

/// Fails with every message, one per line, if there are any.
fn assert_none(failures: Vec<String>) {
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_sample_is_an_http_or_a_scheduled_event() {
    let failures: Vec<String> = samples()
        .iter()
        .filter_map(|sample| parse(sample).err())
        .collect();

    assert_none(failures);
}

#[test]
fn every_http_sample_targets_a_route_of_the_api() {
    let mut failures = Vec::new();

    for (sample, request) in http_samples() {
        let method = request.method().as_str().to_owned();
        let path = route_path(&request);
        match matching_route(&method, &path) {
            None => failures.push(format!(
                "{}: {method} {path} is not a route of the API ({ROUTES:?})",
                sample.name
            )),
            Some(route) => {
                if let Some(key) = sample.json.get("routeKey").and_then(Value::as_str)
                    && key != route
                {
                    failures.push(format!(
                        "{}: routeKey {key:?} but the request is {method} {path} ({route})",
                        sample.name
                    ));
                }
            }
        }
    }

    assert_none(failures);
}

#[test]
fn samples_use_payload_2_0_unless_named_v1() {
    let mut failures = Vec::new();

    for (sample, request) in http_samples() {
        let wants_v1 = sample.name.ends_with("-v1.json");
        let is_v1 = matches!(
            request.request_context_ref(),
            Some(RequestContext::ApiGatewayV1(_))
        );
        if wants_v1 != is_v1 {
            failures.push(format!(
                "{}: expected payload format {}, read as {}",
                sample.name,
                if wants_v1 { "1.0" } else { "2.0" },
                if is_v1 { "1.0" } else { "2.0" },
            ));
        }
    }

    assert_none(failures);
}

#[test]
fn the_named_stage_sample_routes_like_the_default_stage() {
    let (_, request) = http_samples()
        .into_iter()
        .find(|(sample, _)| sample.name == "submit-job-stage.json")
        .expect("events/submit-job-stage.json exists");

    assert_eq!(request.uri().path(), "/dev/jobs");
    assert_eq!(route_path(&request), "/jobs");
    assert_eq!(request.method().as_str(), "POST");
}

#[test]
fn the_payload_1_0_sample_is_a_post_to_jobs() {
    let (_, request) = http_samples()
        .into_iter()
        .find(|(sample, _)| sample.name == "submit-job-v1.json")
        .expect("events/submit-job-v1.json exists");

    assert_eq!(request.method().as_str(), "POST");
    assert_eq!(route_path(&request), "/jobs");
}

#[test]
fn jobs_samples_carry_the_callers_identity_and_webhooks_none() {
    let mut failures = Vec::new();

    for (sample, request) in http_samples() {
        let identity = caller(&request);
        let is_webhook = route_path(&request).starts_with(WEBHOOK_PREFIX);
        let anonymous = is_webhook || UNAUTHENTICATED.contains(&sample.name.as_str());
        match (&identity, anonymous) {
            (Some(caller), false) if caller.owner.is_empty() || !caller.email.contains('@') => {
                failures.push(format!("{}: claims are {caller:?}", sample.name));
            }
            (None, false) => failures.push(format!(
                "{}: no `sub` and `email` claims in requestContext.authorizer",
                sample.name
            )),
            (Some(_), true) => failures.push(format!(
                "{}: carries authorizer claims, but its route has no authorizer",
                sample.name
            )),
            _ => {}
        }
    }

    assert_none(failures);
}

#[test]
fn webhook_signatures_match_their_bodies_under_the_local_signing_key() {
    let keys = SigningKeys {
        current: SecretString::new(LOCAL_SIGNING_KEY),
        previous: None,
    };
    let mut failures = Vec::new();
    let (mut verified, mut refused) = (0, 0);

    for (sample, request) in http_samples() {
        let path = route_path(&request);
        let Some(job_id) = path.strip_prefix(WEBHOOK_PREFIX) else {
            continue;
        };
        let body = body_bytes(&request);
        let result = verify_delivery(&keys, job_id, body, header(&request, SIGNATURE_HEADER));
        let correct = sign(&derive_job_secret(LOCAL_SIGNING_KEY, job_id), body);

        if FORGED.contains(&sample.name.as_str()) {
            refused += 1;
            if result != Err(SignatureError::Mismatch) {
                failures.push(format!(
                    "{}: a forged signature must be refused as a mismatch, got {result:?}",
                    sample.name
                ));
            }
        } else {
            verified += 1;
            if let Err(error) = result {
                failures.push(format!(
                    "{}: {error}; the body's signature for job {job_id} is {correct}",
                    sample.name
                ));
            }
        }
    }

    assert_none(failures);
    assert!(
        verified >= 2,
        "expected signed webhook samples, found {verified}"
    );
    assert!(refused >= 1, "expected a forged webhook sample");
}

#[test]
fn base64_bodies_reach_the_handler_decoded() {
    let mut failures = Vec::new();
    let mut seen = 0;

    for (sample, request) in http_samples() {
        if sample.json.get("isBase64Encoded") != Some(&Value::Bool(true)) {
            continue;
        }
        seen += 1;
        let encoded = sample.json["body"].as_str().unwrap_or_default();
        let decoded = STANDARD
            .decode(encoded)
            .unwrap_or_else(|error| panic!("{}: body is not base64: {error}", sample.name));
        if !matches!(request.body(), Body::Binary(_)) || body_bytes(&request) != decoded {
            failures.push(format!(
                "{}: the handler does not see the decoded body bytes",
                sample.name
            ));
        }
        if serde_json::from_slice::<Value>(&decoded).is_err() {
            failures.push(format!("{}: the decoded body is not JSON", sample.name));
        }
    }

    assert_none(failures);
    assert!(
        seen >= 2,
        "expected base64 samples for the API and the webhook"
    );
}

#[test]
fn the_demo_bodies_are_what_the_demo_expects() {
    let samples = http_samples();
    let body_of = |name: &str| -> (Value, &Request) {
        let (_, request) = samples
            .iter()
            .find(|(sample, _)| sample.name == name)
            .unwrap_or_else(|| panic!("events/{name} exists"));
        let body = serde_json::from_slice(body_bytes(request))
            .unwrap_or_else(|error| panic!("{name}: body is not JSON: {error}"));
        (body, request)
    };

    let (simple, _) = body_of("submit-job.json");
    let (full, full_request) = body_of("submit-job-full.json");
    let (invalid, _) = body_of("submit-job-invalid.json");

    let simple = simple.as_object().expect("an object");
    assert_eq!(simple.len(), 1, "submit-job.json holds only a query");
    assert!(
        simple["query"]
            .as_str()
            .is_some_and(|q| !q.trim().is_empty())
    );
    for field in [
        "messages",
        "model",
        "search_domain_filter",
        "search_recency_filter",
        "reasoning_effort",
    ] {
        assert!(
            full.get(field).is_some(),
            "submit-job-full.json lacks {field}"
        );
    }
    let roles: Vec<&str> = full["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user"]);
    assert!(header(full_request, "idempotency-key").is_some());
    assert!(
        invalid["query"].is_number(),
        "the invalid sample's query is a number"
    );
}

#[test]
fn the_scheduled_sample_is_what_eventbridge_sends_the_reconciler() {
    let scheduled: Vec<(Sample, EventBridgeEvent<Value>)> = samples()
        .into_iter()
        .filter_map(|sample| match parse(&sample) {
            Ok(Event::Scheduled(event)) => Some((sample, *event)),
            _ => None,
        })
        .collect();
    assert!(!scheduled.is_empty(), "events/ has no scheduled event");

    for (sample, event) in scheduled {
        assert_eq!(event.detail_type, "Scheduled Event", "{}", sample.name);
        assert_eq!(event.source, "aws.events", "{}", sample.name);

        // The local front invokes the reconciler with its own copy of this event; keep the two
        // shaped alike.
        let keys = |value: &Value| {
            let mut keys: Vec<String> = value
                .as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&sample.json),
            keys(&local_front::scheduled_event()),
            "{} and local_front::scheduled_event() differ in shape",
            sample.name
        );
    }
}

#[test]
fn the_readme_describes_every_sample() {
    let readme_path = events_dir().join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", readme_path.display()));
    let names: Vec<String> = samples().into_iter().map(|sample| sample.name).collect();

    let undescribed: Vec<String> = names
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .map(|name| format!("events/README.md does not describe `{name}`"))
        .collect();
    let stale: Vec<String> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.ends_with(".json") && !quoted.contains(' '))
        .filter(|quoted| {
            let file = quoted.rsplit('/').next().unwrap_or(quoted);
            !names.iter().any(|name| name == file)
        })
        .map(|quoted| format!("events/README.md describes `{quoted}`, which does not exist"))
        .collect();

    assert_none(undescribed.into_iter().chain(stale).collect());
}
