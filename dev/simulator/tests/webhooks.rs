//! Webhook deliveries against a receiver on 127.0.0.1: signatures, retries, giving up, the
//! drop/duplicate/delay rules, cancellation, and deliver-now with good and bad signatures.

mod common;

use std::time::Duration;

use common::{
    FINISH, Receiver, SECRET, control, control_get, create_body, create_job, frozen_config,
    get_job, hmac_hex, start_simulator,
};
use perplexity_simulator::{DeliveryKind, JobRule, SimulatorConfig, WebhookMode};
use serde_json::{Value, json};

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

/// Gives deliveries that should not happen a fair chance to show up before asserting.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_completed_job_posts_a_signed_payload_to_its_webhook() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url_for("01JOB-W1");
    let job = create_job(
        &sim,
        &create_body("Rents in Zürich", Some("01JOB-W1"), Some(&url)),
    )
    .await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(1).await;

    let hook = &received[0];
    assert_eq!(hook.path, "/webhooks/perplexity/01JOB-W1");
    assert_eq!(hook.content_type.as_deref(), Some("application/json"));
    let signature = hook.signature.as_deref().expect("signature header");
    assert_eq!(signature, hmac_hex(SECRET, &hook.body));
    assert!(
        signature
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    let payload = hook.json();
    assert_eq!(payload["job_id"], job["id"]);
    assert_eq!(payload["status"], "COMPLETED");
    let (_, polled) = get_job(&sim, &id_of(&job)).await;
    assert_eq!(payload["response"], polled["response"]);
    let keys: Vec<&String> = payload.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "unexpected fields: {keys:?}");
    let stats = sim.stats();
    assert_eq!(stats.webhook_attempts, 1);
    assert_eq!(stats.deliveries_succeeded, 1);
}

#[tokio::test]
async fn a_failed_job_posts_its_error_message() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "outcome": "fail", "fail_message": "model overloaded" }),
    )
    .await;
    let job = create_job(&sim, &create_body("q", None, Some(&receiver.url_for("j")))).await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(1).await;

    assert_eq!(
        received[0].json(),
        json!({ "job_id": job["id"], "status": "FAILED", "error_message": "model overloaded" })
    );
    assert_eq!(
        received[0].signature.as_deref(),
        Some(hmac_hex(SECRET, &received[0].body).as_str())
    );
}

#[tokio::test]
async fn a_5xx_answer_is_retried_with_the_same_bytes_until_accepted() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    receiver.answer_with(&[500, 503]);
    let job = create_job(
        &sim,
        &create_body("q", Some("01JOB-R"), Some(&receiver.url_for("r"))),
    )
    .await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(3).await;
    settle().await;

    assert_eq!(receiver.received().len(), 3, "no attempt after the 200");
    assert!(received.iter().all(|hook| hook.body == received[0].body));
    assert!(
        received
            .iter()
            .all(|hook| hook.signature == received[0].signature)
    );
    let log = control_get(&sim, &format!("/_sim/deliveries?job_id={}", id_of(&job))).await;
    let statuses: Vec<&Value> = log["deliveries"]
        .as_array()
        .expect("log")
        .iter()
        .map(|entry| &entry["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(503), &json!(200)]);
    assert_eq!(log["deliveries"][2]["attempt"], 3);
    assert_eq!(log["deliveries"][2]["idempotency_key"], "01JOB-R");
    let stats = sim.stats();
    assert_eq!(stats.webhook_attempts, 3);
    assert_eq!(stats.webhook_attempts_failed, 2);
    assert_eq!(stats.deliveries_succeeded, 1);
    assert_eq!(stats.deliveries_failed, 0);
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_last_attempt() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    receiver.answer_with(&[500; 10]);
    create_job(&sim, &create_body("q", None, Some(&receiver.url_for("g")))).await;

    sim.advance_clock(FINISH);
    receiver.wait_for(4).await;
    let stats = common::eventually("the delivery to be given up", || async {
        let stats = sim.stats();
        (stats.deliveries_failed == 1).then_some(stats)
    })
    .await;
    settle().await;

    assert_eq!(receiver.received().len(), 4);
    assert_eq!(stats.webhook_attempts, 4);
    let log = sim.deliveries();
    assert_eq!(log.len(), 4);
    assert!(log[..3].iter().all(|entry| !entry.gave_up));
    assert!(log[3].gave_up);
}

#[tokio::test]
async fn an_unreachable_receiver_is_logged_as_a_failed_attempt() {
    let config = SimulatorConfig {
        webhook_max_attempts: 2,
        ..frozen_config()
    };
    let sim = start_simulator(config).await;
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("address")
    };
    create_job(
        &sim,
        &create_body("q", None, Some(&format!("http://{closed}/hook"))),
    )
    .await;

    sim.advance_clock(FINISH);
    let log = common::eventually("two failed attempts", || async {
        let log = sim.deliveries();
        (log.len() == 2).then_some(log)
    })
    .await;

    assert!(log.iter().all(|entry| entry.status.is_none()));
    assert!(log.iter().all(|entry| entry.error.is_some()));
    assert!(log[1].gave_up);
}

#[tokio::test]
async fn a_drop_rule_sends_nothing_but_the_result_can_be_polled() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    sim.add_rule(JobRule {
        matches: Some("lost".into()),
        times: Some(1),
        webhook: Some(WebhookMode::Drop),
        ..JobRule::default()
    })
    .expect("valid rule");
    let lost = create_job(
        &sim,
        &create_body("lost one", None, Some(&receiver.url_for("a"))),
    )
    .await;
    let lost_again = create_job(
        &sim,
        &create_body("lost two", None, Some(&receiver.url_for("b"))),
    )
    .await;
    let other = create_job(
        &sim,
        &create_body("other", None, Some(&receiver.url_for("c"))),
    )
    .await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(2).await;
    settle().await;

    let delivered: Vec<Value> = receiver
        .received()
        .iter()
        .map(|hook| hook.json()["job_id"].clone())
        .collect();
    assert_eq!(received.len(), 2);
    assert!(!delivered.contains(&lost["id"]));
    assert!(delivered.contains(&lost_again["id"]));
    assert!(delivered.contains(&other["id"]));
    let (_, polled) = get_job(&sim, &id_of(&lost)).await;
    assert_eq!(polled["status"], "COMPLETED");
    assert_eq!(sim.stats().webhooks_dropped, 1);
    let dropped: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|entry| entry.kind == DeliveryKind::Dropped)
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(Some(dropped[0].job_id.as_str()), lost["id"].as_str());
}

#[tokio::test]
async fn a_missing_response_rule_posts_completed_without_a_response() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "response": "missing", "times": 1 }),
    )
    .await;
    create_job(
        &sim,
        &create_body("q", Some("01JOB-NR"), Some(&receiver.url_for("01JOB-NR"))),
    )
    .await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(1).await;

    let payload = received[0].json();
    assert_eq!(payload["status"], "COMPLETED");
    assert!(payload.get("response").is_none(), "{payload}");
    assert_eq!(
        received[0].signature.as_deref(),
        Some(hmac_hex(SECRET, &received[0].body).as_str())
    );
}

#[tokio::test]
async fn a_duplicate_rule_sends_two_identical_copies_at_once() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    control(&sim, "/_sim/rules", json!({ "webhook": "duplicate" })).await;
    create_job(&sim, &create_body("q", None, Some(&receiver.url_for("d")))).await;

    sim.advance_clock(FINISH);
    let received = receiver.wait_for(2).await;
    settle().await;

    assert_eq!(receiver.received().len(), 2);
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(received[0].signature, received[1].signature);
    let gap = received[1].at.duration_since(received[0].at);
    assert!(gap < Duration::from_millis(500), "copies {gap:?} apart");
    assert_eq!(sim.stats().deliveries_succeeded, 2);
}

#[tokio::test]
async fn a_webhook_delay_lets_a_later_job_be_delivered_first() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    control(
        &sim,
        "/_sim/rules",
        json!({ "match": "slow", "webhook_delay_ms": 3_600_000 }),
    )
    .await;
    let slow = create_job(
        &sim,
        &create_body("slow one", None, Some(&receiver.url_for("s"))),
    )
    .await;
    let fast = create_job(
        &sim,
        &create_body("fast one", None, Some(&receiver.url_for("f"))),
    )
    .await;

    sim.advance_clock(FINISH);
    receiver.wait_for(1).await;
    settle().await;
    let before_delay = receiver.received().len();
    sim.advance_clock(Duration::from_secs(3600));
    let received = receiver.wait_for(2).await;

    assert_eq!(before_delay, 1);
    assert_eq!(received[0].json()["job_id"], fast["id"]);
    assert_eq!(received[1].json()["job_id"], slow["id"]);
}

#[tokio::test]
async fn a_cancelled_job_never_calls_its_webhook() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    let job = create_job(&sim, &create_body("q", None, Some(&receiver.url_for("x")))).await;
    let response = common::client()
        .delete(sim.url(&format!("/async/chat/completions/{}", id_of(&job))))
        .bearer_auth(common::API_KEY)
        .send()
        .await
        .expect("delete");

    sim.advance_clock(FINISH);
    settle().await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(receiver.received().is_empty());
    assert_eq!(sim.stats().webhook_attempts, 0);
}

#[tokio::test]
async fn deliver_now_sends_valid_wrong_and_missing_signatures_on_request() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    receiver.verify_with(SECRET);
    let job = create_job(
        &sim,
        &create_body("q", Some("01JOB-D"), Some(&receiver.url_for("n"))),
    )
    .await;
    let deliver = format!("/_sim/jobs/{}/deliver", id_of(&job));
    sim.advance_clock(FINISH);
    receiver.wait_for(1).await;

    let (_, valid) = control(&sim, &deliver, json!({})).await;
    let (_, wrong) = control(&sim, &deliver, json!({ "signature": "wrong" })).await;
    let (_, none) = control(&sim, &deliver, json!({ "signature": "none" })).await;

    assert_eq!(valid, json!({ "status": 200, "body": "answered 200" }));
    assert_eq!(wrong["status"], 401);
    assert_eq!(wrong["body"], "bad signature");
    assert_eq!(none["status"], 401);
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(
        received[1].body, received[0].body,
        "default body is the real payload"
    );
    assert!(received[2].signature.is_some());
    assert_ne!(received[2].signature, received[1].signature);
    assert_eq!(received[3].signature, None);
    let stats = sim.stats();
    assert_eq!(stats.manual_deliveries, 3);
    assert_eq!(stats.webhook_attempts, 1);
}

#[tokio::test]
async fn deliver_now_sends_a_custom_body_verbatim_to_any_local_url() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let job = create_job(&sim, &create_body("q", None, Some(&receiver.url_for("v")))).await;
    let deliver = format!("/_sim/jobs/{}/deliver", id_of(&job));
    let raw = "{\"job_id\":\"req_123\",  \"status\":\"COMPLETED\"}";

    let (status, answer) = control(
        &sim,
        &deliver,
        json!({ "body": raw, "url": other.url_for("elsewhere") }),
    )
    .await;
    let (_, value) = control(
        &sim,
        &deliver,
        json!({ "body": { "status": "IN_PROGRESS" } }),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(answer["status"], 200);
    assert_eq!(value["status"], 200);
    let sent = other.wait_for(1).await;
    assert_eq!(sent[0].body, raw.as_bytes());
    assert_eq!(
        sent[0].signature.as_deref(),
        Some(hmac_hex(SECRET, raw.as_bytes()).as_str())
    );
    assert_eq!(sent[0].path, "/webhooks/perplexity/elsewhere");
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].json(), json!({ "status": "IN_PROGRESS" }));
}

#[tokio::test]
async fn deliver_now_before_the_finish_sends_the_current_state() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    let job = create_job(&sim, &create_body("q", None, Some(&receiver.url_for("e")))).await;

    let (status, _) = control(
        &sim,
        &format!("/_sim/jobs/{}/deliver", id_of(&job)),
        json!({}),
    )
    .await;

    assert_eq!(status, 200);
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].json(),
        json!({ "job_id": job["id"], "status": "CREATED" })
    );
}

#[tokio::test]
async fn deliver_now_refuses_what_it_cannot_send() {
    let sim = start_simulator(frozen_config()).await;
    let no_hook = create_job(&sim, &create_body("q", None, None)).await;
    let path = format!("/_sim/jobs/{}/deliver", id_of(&no_hook));
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("address")
    };

    let (unknown, _) = control(&sim, "/_sim/jobs/nope/deliver", json!({})).await;
    let (no_url, _) = control(&sim, &path, json!({})).await;
    let (no_secret, _) = control(&sim, &path, json!({ "url": "http://127.0.0.1:9/x" })).await;
    let (remote, _) = control(
        &sim,
        &path,
        json!({ "url": "https://hooks.example.com/x", "signature": "none" }),
    )
    .await;
    let (unreachable, _) = control(
        &sim,
        &path,
        json!({ "url": format!("http://{closed}/x"), "secret": "s" }),
    )
    .await;

    assert_eq!(
        (unknown, no_url, no_secret, remote, unreachable),
        (404, 400, 400, 400, 502)
    );
}

#[tokio::test]
async fn jobs_can_be_found_by_the_products_idempotency_key() {
    let sim = start_simulator(frozen_config()).await;
    let receiver = Receiver::start().await;
    let url = receiver.url_for("01JOB-K");
    let job = create_job(
        &sim,
        &create_body("Heat pumps", Some("01JOB-K"), Some(&url)),
    )
    .await;
    create_job(&sim, &create_body("other", Some("01JOB-L"), None)).await;

    let found = control_get(&sim, "/_sim/jobs?idempotency_key=01JOB-K").await;
    let one = control_get(&sim, &format!("/_sim/jobs/{}", id_of(&job))).await;
    let all = control_get(&sim, "/_sim/jobs").await;

    let jobs = found["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job"], job);
    assert_eq!(jobs[0]["webhook_url"], url.as_str());
    assert_eq!(jobs[0]["question"], "Heat pumps");
    assert!(jobs[0].get("secret").is_none());
    assert_eq!(one, jobs[0]);
    assert_eq!(all["jobs"].as_array().map(Vec::len), Some(2));
}
