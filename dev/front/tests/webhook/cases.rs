//! The webhook field reports, each as a test with the value it expects (C2, C3, C8, C10, C11,
//! C12, C14, C15, C16, C19, C20, C21), plus the answers the receiver owes for unusable results,
//! SES faults and cancelled jobs.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::Request;
use local_front::testkit::{StackOptions, TestStack, finished_and_mailed};
use perplexity_simulator::{FaultEndpoint, HttpFault, JobRule, Outcome, WebhookMode};
use research_relay::finish::{EMPTY_ANSWER_REASON, apply_provider_job};
use research_relay::http::{body_bytes, header};
use research_relay::job::{JobStatus, MailState};
use research_relay::mailer::Mailer;
use research_relay::provider::ProviderJob;
use research_relay::signature::{SIGNATURE_HEADER, verify_with_secrets};
use research_relay::store::{JobRecord, job_pk};
use serde_json::{Value, json};

use crate::support::{
    HeldJob, ITEM_LIMIT, Stack, Writes, completed, completion, deliver, delivery, dynamodb_proxy,
    held_job, held_options, held_stack, held_stack_with, item_count, item_size, job_record, mails,
    post_raw, raw_item, raw_job, signature, signature_with, stack_throttling, stack_with, store_at,
    webhook_event,
};

const B0: &str = r#"{"job_id":"req_123","status":"COMPLETED"}"#;
const B0_HEX_0001: &str = "115b8374839c440bdf4875e0c1c1d3f478ab337c1ce30023f6701c4b7f2f49e1";
const B0_BASE64: &str = "eyJqb2JfaWQiOiJyZXFfMTIzIiwic3RhdHVzIjoiQ09NUExFVEVEIn0=";

async fn status_of<M: Mailer + 'static>(stack: &TestStack<M>, request: Request) -> u16 {
    webhook_receiver::handle(stack.app(), request)
        .await
        .status()
        .as_u16()
}

async fn set_attributes<M: Mailer + 'static>(
    stack: &TestStack<M>,
    job_id: &str,
    values: &[(&str, AttributeValue)],
) {
    let store = &stack.app().store;
    let mut update = store
        .client()
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(job_pk(job_id)));
    let mut sets = Vec::new();
    for (index, (name, value)) in values.iter().enumerate() {
        sets.push(format!("#n{index} = :v{index}"));
        update = update
            .expression_attribute_names(format!("#n{index}"), *name)
            .expression_attribute_values(format!(":v{index}"), value.clone());
    }
    update
        .update_expression(format!("SET {}", sets.join(", ")))
        .send()
        .await
        .expect("the table answers");
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn c2_a_base64_body_verifies_on_its_decoded_bytes_whatever_the_content_type() {
    let octet =
        json!({"content-type": "application/octet-stream", "x-perplexity-signature": B0_HEX_0001});
    let untyped = json!({"x-perplexity-signature": B0_HEX_0001});
    let plain = json!({"content-type": "text/plain", "x-perplexity-signature": B0_HEX_0001});
    let fixtures = [
        webhook_event("req_123", B0.as_bytes(), true, octet),
        webhook_event("req_123", B0.as_bytes(), true, untyped),
        webhook_event("req_123", B0.as_bytes(), false, plain),
    ];
    let stack = held_stack().await;
    let job = held_job(&stack, "c2", "Base64 bodies").await;
    let body = completed(&job);
    let good = signature(&stack, &job.id, &body);
    let over_text = signature(&stack, &job.id, STANDARD.encode(&body).as_bytes());
    let sig = |value: &str| json!({"x-perplexity-signature": value});

    let fixture_results: Vec<_> = fixtures
        .iter()
        .map(|request| {
            verify_with_secrets(
                body_bytes(request),
                header(request, SIGNATURE_HEADER),
                ["whsec_test_0001"],
            )
        })
        .collect();
    let octet_stream = status_of(
        &stack,
        webhook_event(
            &job.id,
            &body,
            true,
            json!({"content-type": "application/octet-stream", "x-perplexity-signature": good}),
        ),
    )
    .await;
    let no_type = status_of(&stack, webhook_event(&job.id, &body, true, sig(&good))).await;
    let text = status_of(
        &stack,
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"content-type": "text/plain", "x-perplexity-signature": good}),
        ),
    )
    .await;
    let signed_over_base64_text =
        status_of(&stack, webhook_event(&job.id, &body, true, sig(&over_text))).await;

    assert_eq!(STANDARD.encode(B0), B0_BASE64);
    assert_eq!(fixture_results, [Ok(()), Ok(()), Ok(())]);
    assert_eq!(
        (octet_stream, no_type, text, signed_over_base64_text),
        (200, 200, 200, 401)
    );
    assert_eq!(
        job_record(&stack, &job.id).await.status,
        JobStatus::Completed
    );
    assert_eq!(mails(&stack, &job.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn c3_the_signature_header_is_found_in_any_case_and_its_absence_is_401() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c3", "Header case").await;
    let body = delivery(&job.provider_id, "IN_PROGRESS", None);
    let good = signature(&stack, &job.id, &body);
    let names = [
        "x-perplexity-signature",
        "X-Perplexity-Signature",
        "X-PERPLEXITY-SIGNATURE",
    ];

    let mut statuses = Vec::new();
    for name in names {
        let request = webhook_event(&job.id, &body, false, json!({ name: good }));
        statuses.push(status_of(&stack, request).await);
    }
    let missing =
        webhook_receiver::handle(stack.app(), webhook_event(&job.id, &body, false, json!({})))
            .await;

    assert_eq!(statuses, [200, 200, 200]);
    assert_eq!(missing.status(), 401);
    let problem: Value = match missing.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).expect("JSON"),
        other => panic!("a text body, got {other:?}"),
    };
    assert_eq!(problem["code"], "signature_missing");
    assert_eq!(
        job_record(&stack, &job.id).await.status,
        JobStatus::InProgress
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn c8_only_hex_in_either_case_with_an_optional_prefix_is_accepted() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c8", "Signature encodings").await;
    let path = format!("/webhooks/perplexity/{}", job.id);
    let body = delivery(&job.provider_id, "IN_PROGRESS", None);
    let hex = signature(&stack, &job.id, &body);
    let digest_base64 = STANDARD.encode(crate::support::hex_bytes(&hex));
    let accepted = [hex.clone(), hex.to_uppercase(), format!("sha256={hex}")];
    let rejected = [
        (digest_base64, "signature_malformed"),
        (hex[..63].to_owned(), "signature_malformed"),
        (String::new(), "signature_malformed"),
        ("z".repeat(64), "signature_malformed"),
        (format!("sha256= {hex}"), "signature_malformed"),
    ];

    let mut accepted_statuses = Vec::new();
    for value in &accepted {
        let answer = post_raw(
            &stack,
            &path,
            body.clone(),
            &[("x-perplexity-signature", value.as_bytes())],
        )
        .await;
        accepted_statuses.push(answer.status);
    }
    let mut refusals = Vec::new();
    for (value, _) in &rejected {
        let answer = post_raw(
            &stack,
            &path,
            body.clone(),
            &[("x-perplexity-signature", value.as_bytes())],
        )
        .await;
        refusals.push((answer.status, text_of(&answer.body["code"]).to_owned()));
    }

    assert_eq!(accepted_statuses, [200, 200, 200]);
    let expected: Vec<(u16, String)> = rejected
        .iter()
        .map(|(_, code)| (401, (*code).to_owned()))
        .collect();
    assert_eq!(refusals, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn c10_a_replay_an_hour_and_three_days_later_changes_nothing_and_mails_nothing() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c10", "Replays").await;
    let body = completed(&job);
    let first = deliver(&stack, &job.id, &body).await;
    let after_first = raw_job(&stack, &job.id).await;
    let unknown_id = ulid::Ulid::new().to_string();
    let items_before = item_count(&stack).await;

    stack.app().clock.advance_ms(3_600_000);
    let hour_later = deliver(&stack, &job.id, &body).await;
    let after_hour = raw_job(&stack, &job.id).await;
    stack.app().clock.advance_ms(3 * 86_400_000);
    let days_later = deliver(&stack, &job.id, &body).await;
    let after_days = raw_job(&stack, &job.id).await;
    let for_unknown = deliver(&stack, &unknown_id, &body).await;

    assert_eq!(
        (first.status, text_of(&first.body["outcome"])),
        (200, "changed")
    );
    assert_eq!(
        (hour_later.status, text_of(&hour_later.body["outcome"])),
        (200, "duplicate")
    );
    assert_eq!(
        (days_later.status, text_of(&days_later.body["outcome"])),
        (200, "duplicate")
    );
    assert_eq!(after_hour, after_first);
    assert_eq!(after_days, after_first);
    assert_eq!(mails(&stack, &job.id).len(), 1);
    assert_eq!(for_unknown.status, 404);
    assert!(raw_item(&stack, &job_pk(&unknown_id)).await.is_none());
    assert_eq!(item_count(&stack).await, items_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn c11_both_keys_verify_during_a_rotation_and_only_the_current_one_after() {
    let mut options = held_options();
    options.signing_keys = vec!["whsec_test_0002".into(), "whsec_test_0001".into()];
    let stack = held_stack_with(options).await;
    let old_signed = held_job(&stack, "c11", "Signed before the rotation").await;
    let new_signed = held_job(&stack, "c11", "Signed after the rotation").await;
    let after_retirement = held_job(&stack, "c11", "Delivered after retirement").await;
    let mut retired = stack.app().clone();
    retired.signing_keys.previous = None;
    let signed_event = |job: &HeldJob, key: &str| {
        let body = completed(job);
        let value = signature_with(key, &job.id, &body);
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"x-perplexity-signature": value}),
        )
    };

    let overlap_old = deliver_signed(&stack, &old_signed, "whsec_test_0001").await;
    let overlap_new = deliver_signed(&stack, &new_signed, "whsec_test_0002").await;
    let retired_old =
        webhook_receiver::handle(&retired, signed_event(&after_retirement, "whsec_test_0001"))
            .await;
    let retired_new =
        webhook_receiver::handle(&retired, signed_event(&after_retirement, "whsec_test_0002"))
            .await;

    assert_eq!((overlap_old, overlap_new), (200, 200));
    assert_eq!(retired_old.status(), 401);
    assert_eq!(retired_new.status(), 200);
    for job in [&old_signed, &new_signed, &after_retirement] {
        assert_eq!(
            job_record(&stack, &job.id).await.status,
            JobStatus::Completed
        );
        assert_eq!(mails(&stack, &job.id).len(), 1);
    }
}

async fn deliver_signed(stack: &Stack, job: &HeldJob, key: &str) -> u16 {
    let body = completed(job);
    let value = signature_with(key, &job.id, &body);
    post_raw(
        stack,
        &format!("/webhooks/perplexity/{}", job.id),
        body,
        &[("x-perplexity-signature", value.as_bytes())],
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn c12_an_expired_claim_is_free_and_a_live_one_is_left_to_its_holder() {
    let stack = held_stack().await;
    let now = stack.app().clock.now_ms();
    let reconciler_timed_out = held_job(&stack, "c12", "A run timed out holding the job").await;
    let sender_timed_out = held_job(&stack, "c12", "A sender timed out holding the e-mail").await;
    let sender_busy = held_job(&stack, "c12", "A sender is still sending").await;
    set_attributes(
        &stack,
        &reconciler_timed_out.id,
        &[
            ("lease_until", n(now - 60_000)),
            (
                "lease_owner",
                AttributeValue::S("run-that-timed-out".into()),
            ),
        ],
    )
    .await;
    for (job, lease_until) in [
        (&sender_timed_out, now - 60_000),
        (&sender_busy, now + 240_000),
    ] {
        let record = job_record(&stack, &job.id).await;
        let update: ProviderJob = serde_json::from_slice(&completed(job)).expect("a delivery");
        apply_provider_job(stack.app(), &record, &update)
            .await
            .expect("stored");
        set_attributes(
            &stack,
            &job.id,
            &[
                ("mail_state", AttributeValue::S("SENDING".into())),
                ("mail_lease_until", n(lease_until)),
            ],
        )
        .await;
    }

    let retried_after_run = deliver(
        &stack,
        &reconciler_timed_out.id,
        &completed(&reconciler_timed_out),
    )
    .await;
    let retried_after_sender =
        deliver(&stack, &sender_timed_out.id, &completed(&sender_timed_out)).await;
    let retried_while_sending = deliver(&stack, &sender_busy.id, &completed(&sender_busy)).await;
    let busy_mails_during_lease = mails(&stack, &sender_busy.id).len();
    stack.app().clock.advance_ms(300_000);
    stack.reconcile().await;

    assert_eq!(
        (
            retried_after_run.status,
            text_of(&retried_after_run.body["outcome"])
        ),
        (200, "changed")
    );
    assert_eq!(
        (
            retried_after_sender.status,
            text_of(&retried_after_sender.body["outcome"])
        ),
        (200, "duplicate")
    );
    assert_eq!(
        (
            retried_while_sending.status,
            text_of(&retried_while_sending.body["outcome"])
        ),
        (200, "duplicate")
    );
    assert_eq!(
        busy_mails_during_lease, 0,
        "the live claim's holder sends, not the retry"
    );
    for job in [&reconciler_timed_out, &sender_timed_out, &sender_busy] {
        let record = job_record(&stack, &job.id).await;
        assert_eq!(record.status, JobStatus::Completed, "{}", job.id);
        assert!(record.has_result, "{}", job.id);
        assert_eq!(record.mail_state, MailState::Sent, "{}", job.id);
        assert_eq!(mails(&stack, &job.id).len(), 1, "{}", job.id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn c14_throttled_writes_and_an_unreachable_table_answer_503_and_store_nothing() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c14t", "The table is having a bad day").await;
    let body = completed(&job);
    let value = signature(&stack, &job.id, &body);
    let event = || {
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"x-perplexity-signature": value}),
        )
    };
    let mut throttled = stack.app().clone();
    throttled.store = store_at(
        &stack,
        &dynamodb_proxy(&stack.moto, Writes::Throttled).await,
    )
    .await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("bound").port()
    };
    let mut unreachable = stack.app().clone();
    unreachable.store = store_at(&stack, &format!("http://127.0.0.1:{closed_port}")).await;
    let before = raw_job(&stack, &job.id).await;

    let throttled_answer = webhook_receiver::handle(&throttled, event()).await;
    let unreachable_answer = webhook_receiver::handle(&unreachable, event()).await;
    let after_faults = raw_job(&stack, &job.id).await;
    let recovered = webhook_receiver::handle(stack.app(), event()).await;

    assert_eq!(throttled_answer.status(), 503);
    assert_eq!(throttled_answer.headers()["retry-after"], "30");
    assert_eq!(unreachable_answer.status(), 503);
    assert_eq!(after_faults, before);
    assert_eq!(recovered.status(), 200);
    assert_eq!(mails(&stack, &job.id).len(), 1);
}

/// A report of `bytes` characters of prose citing 50 sources, compressible like real text.
fn rule_for_size(matches: &str, bytes: usize) -> JobRule {
    JobRule {
        matches: Some(matches.into()),
        report_bytes: Some(bytes),
        sources: Some(50),
        ..JobRule::default()
    }
}

/// Checks that every item of a job is under the item limit and returns the job item's size.
async fn assert_items_fit(stack: &Stack, job_id: &str) -> usize {
    let job_item = raw_job(stack, job_id).await;
    let size = item_size(&job_item);
    assert!(size < ITEM_LIMIT, "job item of {size} bytes");
    let parts = job_record(stack, job_id).await.result_parts;
    for index in 0..parts {
        let part = raw_item(stack, &format!("{}#RESULT#{index}", job_pk(job_id)))
            .await
            .expect("every part is stored");
        let part_size = item_size(&part);
        assert!(part_size < ITEM_LIMIT, "part {index} of {part_size} bytes");
    }
    size
}

/// The whole report reached the view and the e-mail.
async fn assert_whole_report(stack: &Stack, job_id: &str, token: &str, content: &str) {
    let expected = research_relay::report::strip_think(content).answer;
    let view = stack.job(token, job_id).await.body;
    let report = text_of(&view["report"]);
    assert_eq!(report.len(), expected.len());
    assert_eq!(report, expected);
    assert_eq!(view["sources"].as_array().map(Vec::len), Some(50));
    let mails = mails(stack, job_id);
    assert_eq!(mails.len(), 1);
    let attachments = mails[0].attachments();
    let (_, _, markdown) = attachments
        .iter()
        .find(|(name, _, _)| name.ends_with(".md"))
        .expect("the Markdown attachment");
    // Text parts travel with CRLF line ends, as MIME requires.
    let markdown = String::from_utf8_lossy(markdown).replace("\r\n", "\n");
    let differs_at = markdown
        .bytes()
        .zip(expected.bytes())
        .position(|(a, b)| a != b);
    assert!(
        markdown.starts_with(expected.trim_end()),
        "the attachment holds the whole report; first difference at {differs_at:?}: {:?} / {:?}",
        differs_at.map(|at| &markdown[at.saturating_sub(40)..(at + 40).min(markdown.len())]),
        differs_at.map(|at| &expected[at.saturating_sub(40)..(at + 40).min(expected.len())]),
    );
    let text = mails[0].text().expect("a text part");
    let last_words: String = expected
        .trim_end()
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        text.contains(last_words.trim()),
        "the text part reaches the report's end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn c15_reports_of_450_and_380_kb_with_50_sources_are_stored_and_delivered_whole() {
    let stack = stack_with(StackOptions::default()).await;
    for (marker, bytes) in [("four-fifty", 450_000), ("three-eighty", 380_000)] {
        stack
            .simulator
            .add_rule(rule_for_size(marker, bytes))
            .expect("valid rule");
    }
    let token = stack.token("c15", "c15@example.com");
    let mut jobs = Vec::new();
    for marker in ["four-fifty", "three-eighty"] {
        let answer = stack
            .submit(
                &token,
                &json!({"query": format!("A {marker} report")}).to_string(),
                None,
            )
            .await;
        jobs.push(answer.body["id"].as_str().expect("id").to_owned());
    }

    for id in &jobs {
        let view = stack
            .wait_for(&token, id, Duration::from_secs(60), finished_and_mailed)
            .await;
        assert_eq!(view["status"], "COMPLETED");
        assert_eq!(view["email"]["state"], "SENT");
    }

    for (id, bytes) in jobs.iter().zip([450_000, 380_000]) {
        let provider = stack.simulator_job(id).expect("provider job").job;
        let content = text_of(&provider["response"]["choices"][0]["message"]["content"]);
        assert!(content.len() >= bytes, "{} bytes", content.len());
        assert_items_fit(&stack, id).await;
        assert_whole_report(&stack, id, &token, content).await;
    }
}

/// Text that barely compresses, so a report of this size must be split into parts.
fn incompressible_report(bytes: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = 0x9e37_79b9_u32;
    let mut report = String::from("<think>\nplanning\n</think>\n\n# Noise\n\n");
    while report.len() < bytes {
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            report.push(alphabet[(state % 62) as usize] as char);
        }
        report.push(if state.is_multiple_of(9) { '\n' } else { ' ' });
        if state.is_multiple_of(97) {
            report.push_str(&format!("[{}] ", state % 50 + 1));
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn c15_a_450_kb_report_that_does_not_compress_is_split_into_parts_and_delivered_whole() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c15n", "A report of noise").await;
    let content = incompressible_report(450_000);
    let body = delivery(
        &job.provider_id,
        "COMPLETED",
        Some(&completion(&content, 50)),
    );

    let answer = deliver(&stack, &job.id, &body).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let record = job_record(&stack, &job.id).await;
    assert!(record.result_parts >= 1, "stored in parts");
    assert!(record.inline_result.is_none());
    let job_item_size = assert_items_fit(&stack, &job.id).await;
    assert!(
        job_item_size < 10_000,
        "the job item holds no result: {job_item_size}"
    );
    assert_whole_report(&stack, &job.id, &job.token, &content).await;
}

/// Deletes the stack's sender identity, as an SES account whose sender was never verified.
async fn unverify_sender(stack: &Stack) {
    let address = stack
        .app()
        .config
        .mail_from
        .rsplit_once('<')
        .map(|(_, rest)| rest.trim_end_matches('>').to_owned())
        .expect("an address in angle brackets");
    aws_sdk_sesv2::Client::new(&local_front::testkit::sdk_config().await)
        .delete_email_identity()
        .email_identity(address)
        .send()
        .await
        .expect("the emulator deletes the identity");
}

#[tokio::test(flavor = "multi_thread")]
async fn c16_an_unverified_sender_is_rejected_once_recorded_and_never_retried() {
    let mut options = held_options();
    let sender = format!(
        "sandbox-{}@unverified.example",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    options
        .env
        .insert("MAIL_FROM".into(), format!("Research Relay <{sender}>"));
    let stack = held_stack_with(options).await;
    unverify_sender(&stack).await;
    let job = held_job(&stack, "c16", "Mail in the sandbox").await;

    let answer = deliver(&stack, &job.id, &completed(&job)).await;
    stack.app().clock.advance_ms(86_400_000);
    let run = stack.reconcile().await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = stack.token("c16", &job.recipient);
    let view = stack.job(&token, &job.id).await.body;
    assert_eq!(view["status"], "COMPLETED", "{view}");
    assert_eq!(view["email"]["state"], "REJECTED");
    let reason = text_of(&view["email"]["reason"]);
    assert!(reason.starts_with("MessageRejected"), "{reason}");
    assert!(!reason.contains(&sender), "{reason}");
    let record = job_record(&stack, &job.id).await;
    assert_eq!(record.mail_attempts, 1);
    assert_eq!(record.due_at, None, "not in the attention index");
    assert_eq!((run.mail_sent, run.mail_rejected, run.claimed), (0, 0, 0));
    assert!(mails(&stack, &job.id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn c19_the_think_block_is_removed_from_what_is_shown_and_an_empty_answer_is_not_mailed_as_a_report()
 {
    let stack = held_stack().await;
    let with_report = held_job(&stack, "c19", "Think first").await;
    let think_only = held_job(&stack, "c19", "Only thinking").await;
    let report = "<think>\nPlanning searches...\n</think>\n\n# Report\nFindings [1]";
    let only = "<think>\nPlanning searches...\n</think>";

    let answers = [
        deliver(
            &stack,
            &with_report.id,
            &delivery(
                &with_report.provider_id,
                "COMPLETED",
                Some(&completion(report, 1)),
            ),
        )
        .await,
        deliver(
            &stack,
            &think_only.id,
            &delivery(
                &think_only.provider_id,
                "COMPLETED",
                Some(&completion(only, 1)),
            ),
        )
        .await,
    ];

    assert!(answers.iter().all(|answer| answer.status == 200));
    let view = stack.job(&with_report.token, &with_report.id).await.body;
    assert_eq!(view["report"], "# Report\nFindings [1]");
    assert_eq!(view["report_empty"], false);
    let raw = stack
        .app()
        .store
        .load_result(&job_record(&stack, &with_report.id).await)
        .await
        .expect("readable")
        .expect("stored");
    assert!(
        String::from_utf8_lossy(&raw).contains("Planning searches"),
        "the raw text is kept"
    );
    let mail = &mails(&stack, &with_report.id)[0];
    for part in [mail.text().expect("text"), mail.html().expect("html")] {
        assert!(!part.contains("Planning searches"));
        assert!(part.contains("Findings"));
    }

    let empty_view = stack.job(&think_only.token, &think_only.id).await.body;
    assert_eq!(empty_view["report"], "");
    assert_eq!(empty_view["report_empty"], true);
    let mails = mails(&stack, &think_only.id);
    assert_eq!(mails.len(), 1);
    assert!(mails[0].text().expect("text").contains(EMPTY_ANSWER_REASON));
    assert!(mails[0].attachments().is_empty(), "no report attached");
    assert!(
        !mails[0]
            .subject()
            .expect("subject")
            .starts_with("Research report")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn c20_sources_come_from_search_results_else_from_citations_and_markers_link_to_them() {
    let stack = held_stack().await;
    let results_only = held_job(&stack, "c20", "Search results, no citations").await;
    let citations_only = held_job(&stack, "c20", "Citations only").await;
    let content = "# Sources\n\nFirst [1], second [2].";
    let mut with_results = completion(content, 0);
    with_results["search_results"] = json!([
        {"title": "Alpha", "url": "https://alpha.example.org/a", "date": null},
        {"title": "Beta", "url": "https://beta.example.org/b", "date": null}
    ]);
    with_results
        .as_object_mut()
        .expect("object")
        .remove("citations");
    let mut with_citations = completion(content, 0);
    with_citations["citations"] =
        json!(["https://gamma.example.org/c", "https://delta.example.org/d"]);
    with_citations
        .as_object_mut()
        .expect("object")
        .remove("search_results");

    for (job, response) in [
        (&results_only, &with_results),
        (&citations_only, &with_citations),
    ] {
        let answer = deliver(
            &stack,
            &job.id,
            &delivery(&job.provider_id, "COMPLETED", Some(response)),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    let cases = [
        (
            &results_only,
            ["https://alpha.example.org/a", "https://beta.example.org/b"],
            Some("Alpha"),
        ),
        (
            &citations_only,
            ["https://gamma.example.org/c", "https://delta.example.org/d"],
            None,
        ),
    ];
    for (job, urls, first_title) in cases {
        let view = stack.job(&job.token, &job.id).await.body;
        let sources = view["sources"].as_array().expect("sources");
        assert_eq!(sources.len(), 2);
        for (index, url) in urls.iter().enumerate() {
            assert_eq!(sources[index]["number"], index + 1);
            assert_eq!(sources[index]["url"], *url);
        }
        if let Some(title) = first_title {
            assert_eq!(sources[0]["title"], title);
            assert_eq!(sources[0]["date"], Value::Null);
        }
        let html = mails(&stack, &job.id)[0].html().expect("html");
        for url in urls {
            assert!(html.contains(&format!("href=\"{url}\"")), "{url} is linked");
        }
    }
}

/// Runs the reconciler, a simulated hour apart, until `done` holds for the job (at most ten
/// runs: the schedule would run many more).
async fn reconcile_until(stack: &Stack, job_id: &str, done: impl Fn(&JobRecord) -> bool) {
    for _ in 0..10 {
        stack.app().clock.advance_ms(3_600_000);
        stack.reconcile().await;
        if done(&job_record(stack, job_id).await) {
            return;
        }
    }
    panic!("job {job_id} did not get there in ten reconciler runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn c21_a_failed_job_found_by_polling_is_stored_with_its_message_and_mailed() {
    let stack = stack_with(held_options()).await;
    let message = "Research failed: the model ran out of search budget";
    stack
        .simulator
        .add_rule(JobRule {
            outcome: Some(Outcome::Fail),
            fail_message: Some(message.into()),
            webhook: Some(WebhookMode::Drop),
            ..JobRule::default()
        })
        .expect("valid rule");
    let job = held_job(&stack, "c21", "This one fails").await;
    stack
        .simulator
        .advance_clock(Duration::from_secs(3 * 3_600));

    reconcile_until(&stack, &job.id, |record| {
        record.mail_state == MailState::Sent
    })
    .await;

    let provider = stack.simulator_job(&job.id).expect("provider job").job;
    assert_eq!(provider["status"], "FAILED");
    assert!(provider["failed_at"].is_i64());
    let failed = job_record(&stack, &job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some(message));
    let mails = mails(&stack, &job.id);
    assert_eq!(mails.len(), 1);
    assert!(mails[0].text().expect("text").contains(message));
}

#[tokio::test(flavor = "multi_thread")]
async fn c21_polls_answered_429_then_503_change_nothing_and_are_retried_later() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c21", "Polled through a bad patch").await;
    stack
        .simulator
        .advance_clock(Duration::from_secs(3 * 3_600));
    let state = |record: &JobRecord| {
        (
            record.status,
            record.has_result,
            record.failure_reason.clone(),
            record.mail_state,
        )
    };
    let before = state(&job_record(&stack, &job.id).await);

    let mut after_faults = Vec::new();
    for (served, status) in [(1, 429), (2, 503)] {
        stack
            .simulator
            .add_http_fault(HttpFault {
                endpoint: FaultEndpoint::Get,
                status,
                times: 1,
                retry_after_secs: Some(30),
            })
            .expect("valid fault");
        stack.app().clock.advance_ms(3_600_000);
        stack.reconcile().await;
        assert_eq!(stack.simulator.stats().http_faults_served, served);
        after_faults.push(state(&job_record(&stack, &job.id).await));
    }
    reconcile_until(&stack, &job.id, |record| record.status.is_final()).await;

    assert_eq!(after_faults, [before.clone(), before]);
    assert_eq!(
        job_record(&stack, &job.id).await.status,
        JobStatus::Completed
    );
    assert_eq!(mails(&stack, &job.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_mails_the_providers_reason_and_a_cancelled_job_mails_nothing() {
    let stack = held_stack().await;
    let failing = held_job(&stack, "ends", "It will fail").await;
    let cancelled = held_job(&stack, "ends", "It will be cancelled").await;
    let reason = "Upstream search quota exhausted";
    let failed_body = serde_json::to_vec(&json!({
        "job_id": failing.provider_id, "status": "FAILED", "failed_reason": reason
    }))
    .expect("JSON");

    let failed = deliver(&stack, &failing.id, &failed_body).await;
    let cancel = stack
        .call(
            reqwest::Method::DELETE,
            &format!("/jobs/{}", cancelled.id),
            Some(&cancelled.token),
        )
        .await;
    let late = deliver(&stack, &cancelled.id, &completed(&cancelled)).await;

    assert_eq!(
        (failed.status, text_of(&failed.body["outcome"])),
        (200, "changed")
    );
    let view = stack.job(&failing.token, &failing.id).await.body;
    assert_eq!(
        (view["status"].clone(), view["failure_reason"].clone()),
        (json!("FAILED"), json!(reason))
    );
    let failure_mails = mails(&stack, &failing.id);
    assert_eq!(failure_mails.len(), 1);
    assert!(failure_mails[0].text().expect("text").contains(reason));
    assert!(
        failure_mails[0]
            .subject()
            .expect("subject")
            .starts_with("Research failed")
    );
    assert!(cancel.status < 300, "{}", cancel.body);
    assert_eq!(
        (late.status, text_of(&late.body["outcome"])),
        (200, "ignored")
    );
    assert_eq!(
        job_record(&stack, &cancelled.id).await.status,
        JobStatus::Cancelled
    );
    assert!(mails(&stack, &cancelled.id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_without_a_usable_result_is_counted_and_left_pending() {
    let stack = held_stack().await;
    let job = held_job(&stack, "unusable", "Completed, but with what?").await;
    let bodies = [
        delivery(&job.provider_id, "COMPLETED", None),
        delivery(&job.provider_id, "COMPLETED", Some(&Value::Null)),
        delivery(
            &job.provider_id,
            "COMPLETED",
            Some(&json!({"id": "x", "choices": []})),
        ),
        delivery(
            &job.provider_id,
            "COMPLETED",
            Some(&json!("not a completion")),
        ),
    ];

    let mut answers = Vec::new();
    for body in &bodies {
        answers.push(deliver(&stack, &job.id, body).await);
    }

    for answer in &answers {
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(answer.body["outcome"], "unusable_result");
    }
    let record = job_record(&stack, &job.id).await;
    assert!(!record.status.is_final(), "{:?}", record.status);
    assert!(!record.has_result);
    assert_eq!(record.unusable_results, 4);
    assert!(
        record.due_at.is_some(),
        "the reconciler will fetch it again"
    );
    assert!(mails(&stack, &job.id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_email_leaves_the_webhook_at_200_and_the_reconciler_sends_it_once() {
    let stack = stack_throttling(held_options(), 1).await;
    crate::support::drop_webhooks(&stack);
    let job = held_job(&stack, "throttled", "SES is busy").await;

    let answer = deliver(&stack, &job.id, &completed(&job)).await;
    let pending = stack.job(&job.token, &job.id).await.body;
    stack.app().clock.advance_ms(3_600_000);
    let run = stack.reconcile().await;

    assert_eq!(
        (answer.status, text_of(&answer.body["outcome"])),
        (200, "changed")
    );
    assert_eq!(pending["email"]["state"], "PENDING");
    assert_eq!(run.mail_sent, 1);
    let record = job_record(&stack, &job.id).await;
    assert_eq!(record.mail_state, MailState::Sent);
    assert_eq!(record.mail_attempts, 2);
    assert_eq!(mails(&stack, &job.id).len(), 1);
}
