//! Many copies of one delivery at once, with the reconciler finishing the same job: one final
//! write and one e-mail per job, every copy answered 200. And deliveries out of order never move
//! a finished job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use local_front::testkit::JWT_KEY;
use local_front::{Front, RunningFront};
use research_relay::app::App;
use research_relay::finish::{FinishOutcome, apply_provider_job, deliver_mail};
use research_relay::job::{JobStatus, MailState};
use research_relay::provider::ResearchProvider;
use research_relay::provider::perplexity::PerplexityClient;
use serde_json::{Value, json};

use crate::support::{
    HeldJob, RecordingMailer, Stack, Writes, completed, deliver, delivery, dynamodb_proxy,
    emulator_mail_counts, held_job, held_options, held_stack, held_stack_with, job_record, mails,
    signature, store_at,
};

const ROUNDS: usize = 100;
const COPIES: usize = 50;
/// Rounds run at once. The emulator takes one request at a time here (see [`AtomicTable`]), so
/// more rounds at once only queue longer.
const ROUNDS_AT_ONCE: usize = 4;

/// What one round observed.
struct Round {
    job: HeldJob,
    answers: Vec<(u16, Value)>,
    reconciler: FinishOutcome,
}

impl Round {
    fn final_writes(&self) -> usize {
        let by_webhook = self
            .answers
            .iter()
            .filter(|(_, body)| body["outcome"] == "changed")
            .count();
        let by_reconciler = usize::from(matches!(self.reconciler, FinishOutcome::Changed(_)));
        by_webhook + by_reconciler
    }
}

/// The provider's webhook body for a job it has finished, exactly as it would post it.
fn provider_delivery(stack: &Stack, job: &HeldJob) -> Vec<u8> {
    let provider_job = stack
        .simulator_job(&job.id)
        .expect("the provider has it")
        .job;
    assert_eq!(provider_job["status"], "COMPLETED");
    delivery(
        &job.provider_id,
        "COMPLETED",
        Some(&provider_job["response"]),
    )
}

/// The handlers' context and a front serving it, over the stack's table reached through
/// [`dynamodb_proxy`], so the emulator applies each conditional write atomically as DynamoDB
/// does.
struct AtomicTable {
    app: App<PerplexityClient, RecordingMailer>,
    front: RunningFront,
    http: reqwest::Client,
}

impl AtomicTable {
    async fn over(stack: &Stack) -> Self {
        let mut app = stack.app().clone();
        app.store = store_at(stack, &dynamodb_proxy(&stack.moto, Writes::Pass).await).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let front = local_front::start(
            listener,
            Arc::new(Front {
                app: app.clone(),
                jwt_key: JWT_KEY.to_vec(),
            }),
            None,
        )
        .await
        .expect("front starts");
        Self {
            app,
            front,
            http: reqwest::Client::new(),
        }
    }

    async fn deliver(&self, job_id: &str, body: &[u8], signature: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!(
                "{}/webhooks/perplexity/{job_id}",
                self.front.base_url
            ))
            .header("content-type", "application/json")
            .header("x-perplexity-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("front answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The reconciler's finish of one job: poll the provider, apply, mail (its `poll` step).
    async fn reconciler_finish(&self, job_id: &str, provider_id: &str) -> FinishOutcome {
        let record = self
            .app
            .store
            .get_job(job_id)
            .await
            .expect("store answers")
            .expect("job exists");
        let update = self
            .app
            .provider
            .get(provider_id)
            .await
            .expect("provider answers");
        let outcome = apply_provider_job(&self.app, &record, &update)
            .await
            .expect("store answers");
        if let FinishOutcome::Changed(status) | FinishOutcome::Duplicate(status) = &outcome
            && status.is_final()
        {
            deliver_mail(&self.app, job_id)
                .await
                .expect("store answers");
        }
        outcome
    }
}

async fn race(stack: &Stack, table: &AtomicTable, job: HeldJob) -> Round {
    let body = provider_delivery(stack, &job);
    let signature = signature(stack, &job.id, &body);
    let copies = (0..COPIES).map(|_| table.deliver(&job.id, &body, &signature));

    let (answers, reconciler) = tokio::join!(
        join_all(copies),
        table.reconciler_finish(&job.id, &job.provider_id)
    );

    Round {
        job,
        answers,
        reconciler,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_copies_and_the_reconciler_at_once_write_once_and_mail_once_in_every_round() {
    let mut options = held_options();
    options
        .env
        .insert("DAILY_JOB_QUOTA".into(), (ROUNDS + 1).to_string());
    let stack = held_stack_with(options).await;
    let table = AtomicTable::over(&stack).await;
    let mut jobs = Vec::new();
    for round in 0..ROUNDS {
        jobs.push(held_job(&stack, "racer", &format!("Race question number {round}")).await);
    }
    stack
        .simulator
        .advance_clock(Duration::from_secs(3 * 3_600));
    let started = Instant::now();

    let mut rounds = Vec::new();
    for batch in jobs.chunks(ROUNDS_AT_ONCE) {
        rounds.extend(join_all(batch.iter().cloned().map(|job| race(&stack, &table, job))).await);
    }
    eprintln!(
        "{ROUNDS} rounds of {COPIES} deliveries plus a reconciler finish took {:?}",
        started.elapsed()
    );

    let emulator = emulator_mail_counts(&stack).await;
    for round in &rounds {
        let id = &round.job.id;
        let refused: Vec<_> = round
            .answers
            .iter()
            .filter(|(status, body)| {
                *status != 200 || !matches!(body["outcome"].as_str(), Some("changed" | "duplicate"))
            })
            .collect();
        assert!(refused.is_empty(), "job {id}: {refused:?}");
        assert_eq!(round.final_writes(), 1, "job {id}: {:?}", round.reconciler);
        let stored = job_record(&stack, id).await;
        assert_eq!(stored.status, JobStatus::Completed, "job {id}");
        assert!(stored.has_result, "job {id}");
        assert_eq!(stored.mail_state, MailState::Sent, "job {id}");
        assert_eq!(
            stored.mail_attempts, 1,
            "job {id}: the e-mail was claimed once"
        );
        assert_eq!(mails(&stack, id).len(), 1, "job {id}: one e-mail");
        assert_eq!(emulator.get(id), Some(&1), "job {id}: one e-mail in SES");
    }
    table.front.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_then_in_progress_then_failed_stays_completed_with_one_email() {
    let stack = held_stack().await;
    let job = held_job(&stack, "orderly", "Does order matter?").await;
    let in_progress = delivery(&job.provider_id, "IN_PROGRESS", None);
    let failed = serde_json::to_vec(&json!({
        "job_id": job.provider_id, "status": "FAILED", "error_message": "late failure"
    }))
    .expect("JSON");

    let first = deliver(&stack, &job.id, &completed(&job)).await;
    let after_completion = job_record(&stack, &job.id).await;
    let second = deliver(&stack, &job.id, &in_progress).await;
    let third = deliver(&stack, &job.id, &failed).await;

    assert_eq!(
        (first.status, first.body["outcome"].as_str()),
        (200, Some("changed"))
    );
    assert_eq!(
        (second.status, second.body["outcome"].as_str()),
        (200, Some("ignored"))
    );
    assert_eq!(
        (third.status, third.body["outcome"].as_str()),
        (200, Some("ignored"))
    );
    let view = stack.job(&job.token, &job.id).await.body;
    assert_eq!(view["status"], "COMPLETED");
    assert!(view.get("failure_reason").is_none(), "{view}");
    assert!(
        view["report"]
            .as_str()
            .is_some_and(|r| r.contains("Findings"))
    );
    let after_all = job_record(&stack, &job.id).await;
    assert_eq!(after_all.updated_at, after_completion.updated_at);
    assert_eq!(mails(&stack, &job.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_2xx_answer_in_a_race_comes_after_the_result_is_stored() {
    let stack = held_stack().await;
    let job = held_job(&stack, "durable", "Is it stored before the answer?").await;
    let body = completed(&job);
    let signature = signature(&stack, &job.id, &body);

    let checks = (0..20).map(|_| async {
        let answer = crate::support::post_raw(
            &stack,
            &format!("/webhooks/perplexity/{}", job.id),
            body.clone(),
            &[("x-perplexity-signature", signature.as_bytes())],
        )
        .await;
        let stored = job_record(&stack, &job.id).await;
        (answer.status, stored.status, stored.has_result)
    });
    let seen = join_all(checks).await;

    for (status, job_status, has_result) in seen {
        assert_eq!(status, 200);
        assert_eq!((job_status, has_result), (JobStatus::Completed, true));
    }
}
