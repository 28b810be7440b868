//! The whole pipeline through the local front, against the emulator and the simulator: a
//! research request goes in over HTTP and a report e-mail comes out of SES, by webhook and, when
//! the webhook is lost, by the reconciler.

use std::collections::BTreeSet;
use std::time::Duration;

use local_front::testkit::{TestStack, finished_and_mailed};
use perplexity_simulator::{JobRule, WebhookMode};
use serde_json::{Value, json};

const QUESTION: &str = "How do heat pumps perform in cold climates?";

/// Every `[n]` marker number in a text.
fn markers(text: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']')
            && let Ok(number) = rest[..close].parse::<usize>()
        {
            found.insert(number);
        }
    }
    found
}

/// What a report e-mail must be, checked against the job view.
async fn assert_one_report_mail(stack: &TestStack, job: &Value, recipient: &str) {
    let id = job["id"].as_str().expect("job id");
    let mails = stack.mails_for(id).await;
    assert_eq!(mails.len(), 1, "exactly one e-mail for {id}");
    let mail = &mails[0];

    assert!(
        mail.destinations.iter().any(|to| to == recipient),
        "{:?}",
        mail.destinations
    );
    let subject = mail.subject().expect("a subject");
    assert!(
        subject.contains("heat pumps") || subject.contains("Research"),
        "{subject}"
    );
    let text = mail.text().expect("a text part");
    let html = mail.html().expect("an HTML part");
    assert!(
        !text.contains("<think>") && !html.contains("&lt;think&gt;"),
        "think block removed"
    );

    let report = job["report"].as_str().expect("report in the view");
    assert!(!report.trim_start().starts_with("<think>"));
    let sources = job["sources"].as_array().expect("sources in the view");
    let cited = markers(report);
    assert!(!cited.is_empty(), "the report cites its sources");
    for number in cited {
        let source = &sources[number - 1];
        assert_eq!(source["number"], number);
        let url = source["url"].as_str().expect("source url");
        assert!(html.contains(url), "marker [{number}] links to {url}");
    }
    let attachments = mail.attachments();
    assert!(
        attachments.iter().any(|(name, _, _)| name.ends_with(".md")),
        "the report is attached as Markdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_travels_to_a_report_email_by_webhook() {
    let stack = TestStack::start().await;
    let token = stack.token("alice", "alice@example.com");

    let answer = stack
        .submit(&token, &json!({"query": QUESTION}).to_string(), None)
        .await;

    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(answer.headers["location"], format!("/jobs/{id}"));
    let job = stack
        .wait_for(&token, &id, Duration::from_secs(30), finished_and_mailed)
        .await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(job["email"]["state"], "SENT");
    assert!(job["cost_usd"].as_f64().is_some_and(|cost| cost > 0.0));
    assert_one_report_mail(&stack, &job, "alice@example.com").await;
    assert_eq!(stack.simulator.stats().webhooks_dropped, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_webhook_is_finished_by_the_reconciler() {
    let stack = TestStack::start().await;
    let token = stack.token("bob", "bob@example.com");
    stack
        .simulator
        .add_rule(JobRule {
            matches: Some("heat pumps".into()),
            webhook: Some(WebhookMode::Drop),
            ..JobRule::default()
        })
        .expect("valid rule");

    let answer = stack
        .submit(&token, &json!({"query": QUESTION}).to_string(), None)
        .await;
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = stack.job(&token, &id).await.body;
    let mut runs = 0;
    while !finished_and_mailed(&stack.job(&token, &id).await.body) {
        runs += 1;
        assert!(runs < 60, "the reconciler did not finish the job");
        stack.app().clock.advance_ms(5_000);
        stack.reconcile().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_ne!(before["status"], "COMPLETED", "no webhook finished it");
    let job = stack.job(&token, &id).await.body;
    assert_eq!(job["status"], "COMPLETED");
    assert_one_report_mail(&stack, &job, "bob@example.com").await;
    let stats = stack.simulator.stats();
    assert_eq!(stats.webhooks_dropped, 1);
    assert!(
        stats.requests.get >= 1,
        "the reconciler polled the provider"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_webhook_sent_twice_stores_one_result_and_sends_one_email() {
    let stack = TestStack::start().await;
    let token = stack.token("carol", "carol@example.com");
    stack
        .simulator
        .add_rule(JobRule {
            webhook: Some(WebhookMode::Duplicate),
            ..JobRule::default()
        })
        .expect("valid rule");

    let answer = stack
        .submit(&token, &json!({"query": QUESTION}).to_string(), None)
        .await;
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    let job = stack
        .wait_for(&token, &id, Duration::from_secs(30), finished_and_mailed)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.reconcile().await;

    let deliveries = stack.simulator.deliveries();
    let accepted = deliveries
        .iter()
        .filter(|delivery| delivery.idempotency_key.as_deref() == Some(id.as_str()))
        .filter(|delivery| {
            delivery
                .status
                .is_some_and(|status| (200..300).contains(&status))
        })
        .count();
    assert_eq!(accepted, 2, "both copies were answered 2xx: {deliveries:?}");
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(stack.mails_for(&id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_with_a_wrong_signature_changes_nothing() {
    let stack = TestStack::start().await;
    let token = stack.token("dave", "dave@example.com");
    stack
        .simulator
        .add_rule(JobRule {
            complete_after_ms: Some(600_000),
            ..JobRule::default()
        })
        .expect("valid rule");
    let answer = stack
        .submit(&token, &json!({"query": QUESTION}).to_string(), None)
        .await;
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    let provider_id = stack
        .simulator_job(&id)
        .expect("the provider has the job")
        .job["id"]
        .as_str()
        .expect("provider id")
        .to_owned();
    let before = stack.job(&token, &id).await.body;

    let forged = json!({
        "job_id": provider_id,
        "status": "COMPLETED",
        "response": {"id": "x", "model": "sonar-deep-research", "created": 1,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "forged"}}]}
    });
    let delivery: Value = stack
        .http
        .post(
            stack
                .simulator
                .url(&format!("/_sim/jobs/{provider_id}/deliver")),
        )
        .json(&json!({"body": forged, "signature": "wrong"}))
        .send()
        .await
        .expect("simulator answers")
        .json()
        .await
        .expect("JSON");

    assert_eq!(delivery["status"], 401, "{delivery}");
    let after = stack.job(&token, &id).await.body;
    assert_eq!(after["status"], before["status"]);
    assert!(after.get("report").is_none());
    assert!(stack.mails_for(&id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_too_large_to_store_fails_the_job_with_a_reason() {
    let stack = TestStack::start().await;
    let token = stack.token("erin", "erin@example.com");
    stack
        .simulator
        .add_rule(JobRule {
            report_bytes: Some(research_relay::finish::MAX_STORABLE_RESULT_BYTES + 100_000),
            ..JobRule::default()
        })
        .expect("valid rule");

    let answer = stack
        .submit(&token, &json!({"query": QUESTION}).to_string(), None)
        .await;
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    let job = stack
        .wait_for(&token, &id, Duration::from_secs(60), finished_and_mailed)
        .await;

    assert_eq!(job["status"], "FAILED");
    assert!(
        job["failure_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("bytes")),
        "{job}"
    );
    let mails = stack.mails_for(&id).await;
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .subject()
            .is_some_and(|subject| subject.starts_with("Research failed"))
    );
}
