//! The reconciler against the emulator and the simulator: jobs whose webhooks never came are
//! finished by scheduled runs, once each, whatever the runs overlap with (another run, a dead
//! run's lease, a deadline, a throttled SES, a provider answering 429/5xx, FAILED or COMPLETED
//! without a result), and a run over finished jobs reads nothing.
//!
//! Jobs are created through the API like a frontend would. The simulator finishes them when its
//! clock is moved; the app clock is moved to make them due, so no test waits for real time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use local_front::counting::DynamoCounter;
use local_front::mailbox;
use local_front::testkit::{StackOptions, TestStack, sdk_config};
use perplexity_simulator::{
    FaultEndpoint, HttpFault, JobRule, Outcome, ResponseMode, SimulatorConfig, WebhookMode,
};
use reconciler::RunSummary;
use research_relay::job::{JobStatus, MailState};
use research_relay::mailer::{MailError, Mailer, OutgoingMail, SesMailer};
use research_relay::provider::ResearchProvider;
use research_relay::store::{ChangeFields, JobRecord, JobStore};
use serde_json::json;

const QUESTION: &str = "How do heat pumps perform in cold climates?";
const HOUR: Duration = Duration::from_secs(3600);
const WEEK_MS: i64 = 7 * 86_400_000;

/// A stack whose simulator never sends webhooks, with room for many jobs per owner.
async fn stack_without_webhooks(env: &[(&str, &str)], simulator: SimulatorConfig) -> TestStack {
    stack_with(StackOptions {
        env: env_of(env),
        simulator,
        ..StackOptions::default()
    })
    .await
}

async fn stack_with(options: StackOptions) -> TestStack {
    let mut options = options;
    options
        .env
        .entry("DAILY_JOB_QUOTA".into())
        .or_insert_with(|| "10000".into());
    let stack = TestStack::start_with(options).await;
    drop_every_webhook(&stack);
    stack
}

fn drop_every_webhook<M: Mailer + 'static>(stack: &TestStack<M>) {
    stack
        .simulator
        .add_rule(JobRule {
            webhook: Some(WebhookMode::Drop),
            ..JobRule::default()
        })
        .expect("valid rule");
}

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn simulator_defaults() -> SimulatorConfig {
    StackOptions::default().simulator
}

/// Creates `count` jobs through the API and returns their ids. One at a time: the emulator
/// copies a whole table for every transaction and fails when another write to that table runs
/// meanwhile (DynamoDB itself would answer a conflict only on the same items).
async fn create_jobs<M: Mailer + 'static>(
    stack: &TestStack<M>,
    count: usize,
    question: &str,
) -> Vec<String> {
    let token = stack.token("reader", "reader@example.com");
    let body = json!({ "query": question }).to_string();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let answer = stack.submit(&token, &body, None).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        ids.push(answer.body["id"].as_str().expect("an id").to_owned());
    }
    ids
}

/// Lets the simulator finish every job (its webhooks are dropped) and makes them due for us.
fn finish_at_provider_and_come_due<M: Mailer + 'static>(stack: &TestStack<M>) {
    stack.simulator.advance_clock(HOUR);
    stack.app().clock.advance_ms(10_000);
}

async fn run_once<P: ResearchProvider, M: Mailer>(
    app: &research_relay::app::App<P, M>,
    run_id: &str,
) -> RunSummary {
    reconciler::run(app, Instant::now() + Duration::from_secs(60), run_id).await
}

async fn job<M: Mailer + 'static>(stack: &TestStack<M>, id: &str) -> JobRecord {
    stack
        .app()
        .store
        .get_job(id)
        .await
        .expect("the store answers")
        .expect("the job exists")
}

/// E-mails the emulator holds per job, from one read of its messages.
async fn mail_counts<M: Mailer + 'static>(stack: &TestStack<M>) -> HashMap<String, usize> {
    let mails = mailbox::received(&stack.http, &stack.moto)
        .await
        .expect("the emulator lists its messages");
    let mut counts = HashMap::new();
    for mail in mails {
        if let Some(job_id) = mail.job_id() {
            *counts.entry(job_id).or_insert(0) += 1;
        }
    }
    counts
}

fn settled(job: &JobRecord) -> bool {
    job.status.is_final() && matches!(job.mail_state, MailState::Sent | MailState::Rejected)
}

/// A mailer that answers SES throttling for its first `throttle` sends, then sends for real.
#[derive(Clone)]
struct ThrottledSes {
    inner: SesMailer,
    throttle: Arc<AtomicU32>,
}

impl Mailer for ThrottledSes {
    async fn send(&self, mail: OutgoingMail<'_>) -> Result<String, MailError> {
        let throttled = self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if throttled {
            return Err(MailError::Transient(
                "Throttling: Maximum sending rate exceeded.".into(),
            ));
        }
        self.inner.send(mail).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_dropped_webhooks_are_finished_by_runs_with_one_email_each() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    let ids = create_jobs(&stack, 100, QUESTION).await;
    finish_at_provider_and_come_due(&stack);

    let mut runs = Vec::new();
    loop {
        let summary = run_once(stack.app(), "").await;
        let done = summary.due_seen == 0;
        runs.push(summary);
        assert!(runs.len() <= 5, "runs did not settle: {runs:?}");
        if done {
            break;
        }
    }

    let finished: u64 = runs.iter().map(|run| run.finished).sum();
    let sent: u64 = runs.iter().map(|run| run.mail_sent).sum();
    assert_eq!((finished, sent), (100, 100), "{runs:?}");
    assert!(runs.iter().all(|run| run.errors == 0), "{runs:?}");
    for id in &ids {
        let job = job(&stack, id).await;
        assert_eq!(job.status, JobStatus::Completed, "{id}");
        assert_eq!(job.mail_state, MailState::Sent, "{id}");
        assert_eq!(job.due_at, None, "{id} left the attention index");
    }
    let mails = mail_counts(&stack).await;
    for id in &ids {
        assert_eq!(mails.get(id), Some(&1), "exactly one e-mail for {id}");
    }
    let stats = stack.simulator.stats();
    assert_eq!(stats.webhooks_dropped, 100);
    assert_eq!(stats.requests.get, 100, "each job polled once");
    assert_eq!(
        stack.app().store.count_due(i64::MAX).await.expect("count"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_takes_the_oldest_due_jobs_first_across_every_shard() {
    let stack =
        stack_without_webhooks(&[("RECONCILE_CONCURRENCY", "1")], simulator_defaults()).await;
    let ids = create_jobs(&stack, 12, QUESTION).await;
    finish_at_provider_and_come_due(&stack);
    let store = &stack.app().store;
    let now = stack.app().clock.now_ms();
    let mut expected: Vec<(i64, String)> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| (now - 60_000 + (index as i64 * 7 % 12) * 1_000, id.clone()))
        .collect();
    for (due_at, id) in &expected {
        let fields = ChangeFields::new().due(store.due_shard(id), *due_at);
        store
            .change_fields(id, fields, now)
            .await
            .expect("due time written");
    }
    expected.sort();

    let summary = run_once(stack.app(), "").await;

    let shards: std::collections::HashSet<String> =
        ids.iter().map(|id| store.due_shard(id)).collect();
    assert!(shards.len() > 1, "the jobs span several shards");
    assert_eq!(summary.mail_sent, 12, "{summary:?}");
    let sent_order: Vec<String> = mailbox::received(&stack.http, &stack.moto)
        .await
        .expect("the emulator lists its messages")
        .iter()
        .filter_map(|mail| mail.job_id())
        .filter(|id| ids.contains(id))
        .collect();
    let due_order: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(sent_order, due_order, "handled in due order across shards");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_the_same_moment_poll_and_mail_each_job_once() {
    let simulator = SimulatorConfig {
        get_delay: Duration::from_millis(50),
        ..simulator_defaults()
    };
    let stack = stack_without_webhooks(&[], simulator).await;
    let ids = create_jobs(&stack, 24, QUESTION).await;
    finish_at_provider_and_come_due(&stack);
    let gets_before = stack.simulator.stats().requests.get;

    let (first, second) = tokio::join!(
        run_once(stack.app(), "run-first"),
        run_once(stack.app(), "run-second"),
    );

    assert_eq!(first.polled + second.polled, 24, "{first:?} {second:?}");
    assert_eq!(first.mail_sent + second.mail_sent, 24);
    assert_eq!(first.finished + second.finished, 24);
    assert!(
        first.claimed > 0 && second.claimed > 0,
        "both runs took work"
    );
    assert_eq!(first.errors + second.errors, 0);
    assert_eq!(stack.simulator.stats().requests.get - gets_before, 24);
    let mails = mail_counts(&stack).await;
    for id in &ids {
        assert_eq!(mails.get(id), Some(&1), "exactly one e-mail for {id}");
        assert!(settled(&job(&stack, id).await), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_with_a_short_deadline_stops_cleanly_and_the_next_run_finishes_the_rest() {
    let simulator = SimulatorConfig {
        get_delay: Duration::from_millis(200),
        ..simulator_defaults()
    };
    let env = [
        ("RECONCILE_CONCURRENCY", "2"),
        ("RECONCILE_DEADLINE_MARGIN_MS", "2000"),
    ];
    let stack = stack_without_webhooks(&env, simulator).await;
    let ids = create_jobs(&stack, 20, QUESTION).await;
    finish_at_provider_and_come_due(&stack);

    let short = reconciler::run(
        stack.app(),
        Instant::now() + Duration::from_millis(3000),
        "run-short",
    )
    .await;
    let mut states = HashMap::new();
    for id in &ids {
        let job = job(&stack, id).await;
        states.insert(id.clone(), (job.status, job.mail_state, job.lease_until));
    }
    let rest = run_once(stack.app(), "run-rest").await;

    assert!(short.stopped_for_deadline, "{short:?}");
    assert_eq!(short.abandoned, 0, "{short:?}");
    assert!(short.finished > 0 && short.finished < 20, "{short:?}");
    for (id, (status, mail_state, lease)) in &states {
        let whole = (*status == JobStatus::Completed && *mail_state == MailState::Sent)
            || (!status.is_final() && *mail_state == MailState::None && lease.is_none());
        assert!(
            whole,
            "{id} was left half done: {status:?} {mail_state:?} {lease:?}"
        );
    }
    assert_eq!(short.finished + rest.finished, 20, "{rest:?}");
    assert!(!rest.stopped_for_deadline);
    assert_eq!(
        stack.simulator.stats().requests.get,
        20,
        "no job polled twice"
    );
    let mails = mail_counts(&stack).await;
    for id in &ids {
        assert_eq!(mails.get(id), Some(&1), "exactly one e-mail for {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_retention_is_expired_and_its_owner_told_once() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    let ids = create_jobs(&stack, 1, QUESTION).await;
    let id = &ids[0];

    stack
        .simulator
        .advance_clock(Duration::from_millis(WEEK_MS as u64) + HOUR);
    stack.app().clock.advance_ms(WEEK_MS + 3_600_000);
    let first = run_once(stack.app(), "").await;
    stack.app().clock.advance_ms(3_600_000);
    let second = run_once(stack.app(), "").await;

    assert_eq!((first.expired, first.mail_sent), (1, 1), "{first:?}");
    assert_eq!((second.due_seen, second.mail_sent), (0, 0), "{second:?}");
    let job = job(&stack, id).await;
    assert_eq!(job.status, JobStatus::Expired);
    assert_eq!(job.mail_state, MailState::Sent);
    assert!(
        job.failure_reason
            .is_some_and(|reason| reason.contains("no longer"))
    );
    let mails = stack.mails_for(id).await;
    assert_eq!(mails.len(), 1);
    let subject = mails[0].subject().expect("a subject");
    assert!(subject.starts_with("Research expired"), "{subject}");
    assert_eq!(stack.simulator.stats().requests.get, 1, "one last look");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_retention_that_was_never_submitted_is_expired_without_a_submission() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 503,
            times: 1,
            retry_after_secs: None,
        })
        .expect("valid fault");
    let ids = create_jobs(&stack, 1, QUESTION).await;
    let queued = job(&stack, &ids[0]).await;

    stack.app().clock.advance_ms(WEEK_MS + 60_000);
    let summary = run_once(stack.app(), "").await;

    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!((summary.expired, summary.submitted), (1, 0), "{summary:?}");
    let job = job(&stack, &ids[0]).await;
    assert_eq!(job.status, JobStatus::Expired);
    assert_eq!(job.mail_state, MailState::Sent);
    assert_eq!(stack.simulator.stats().jobs_created, 0);
    assert_eq!(stack.mails_for(&ids[0]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_ses_leaves_emails_pending_and_a_later_run_sends_each_once() {
    let throttle = Arc::new(AtomicU32::new(10));
    let options = StackOptions {
        env: env_of(&[("DAILY_JOB_QUOTA", "10000")]),
        ..StackOptions::default()
    };
    let stack = TestStack::start_with_mailer(options, {
        let throttle = throttle.clone();
        move |ses| ThrottledSes {
            inner: SesMailer::new(ses),
            throttle,
        }
    })
    .await;
    drop_every_webhook(&stack);
    let ids = create_jobs(&stack, 30, QUESTION).await;
    finish_at_provider_and_come_due(&stack);

    let first = run_once(stack.app(), "").await;
    let mut pending = 0;
    for id in &ids {
        let job = job(&stack, id).await;
        assert_eq!(job.status, JobStatus::Completed, "{id}");
        if job.mail_state == MailState::Pending {
            pending += 1;
            assert!(
                job.mail_error
                    .is_some_and(|error| error.contains("Throttling"))
            );
        }
    }
    let early = run_once(stack.app(), "").await;
    stack.app().clock.advance_ms(5 * 60_000);
    let later = run_once(stack.app(), "").await;

    assert_eq!(first.finished, 30, "{first:?}");
    assert_eq!((first.mail_sent, first.mail_retried), (20, 10), "{first:?}");
    assert_eq!(
        first.errors, 0,
        "a throttled e-mail does not fail the batch"
    );
    assert_eq!(pending, 10);
    assert_eq!(
        early.mail_sent, 0,
        "the retry waits for its backoff: {early:?}"
    );
    assert_eq!((later.mail_sent, later.mail_retried), (10, 0), "{later:?}");
    let mails = mail_counts(&stack).await;
    for id in &ids {
        assert_eq!(mails.get(id), Some(&1), "exactly one e-mail for {id}");
        assert!(settled(&job(&stack, id).await), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_poll_is_stored_with_its_message_and_the_owner_gets_a_failure_email() {
    let message = "Research job failed: upstream model quota exhausted.";
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    stack.simulator.clear_rules();
    stack
        .simulator
        .add_rule(JobRule {
            webhook: Some(WebhookMode::Drop),
            outcome: Some(Outcome::Fail),
            fail_message: Some(message.into()),
            ..JobRule::default()
        })
        .expect("valid rule");
    let ids = create_jobs(&stack, 1, QUESTION).await;
    finish_at_provider_and_come_due(&stack);

    let summary = run_once(stack.app(), "").await;

    assert_eq!((summary.finished, summary.mail_sent), (1, 1), "{summary:?}");
    let job = job(&stack, &ids[0]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some(message));
    assert_eq!(job.mail_state, MailState::Sent);
    let mails = stack.mails_for(&ids[0]).await;
    assert_eq!(mails.len(), 1);
    let subject = mails[0].subject().expect("a subject");
    assert!(subject.starts_with("Research failed"), "{subject}");
    let text = mails[0].text().expect("a text part");
    assert!(text.contains("upstream model quota exhausted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_answered_429_then_503_changes_nothing_and_is_retried_later() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    let ids = create_jobs(&stack, 1, QUESTION).await;
    let id = &ids[0];
    finish_at_provider_and_come_due(&stack);
    for (status, retry_after_secs) in [(429, Some(30)), (503, None)] {
        stack
            .simulator
            .add_http_fault(HttpFault {
                endpoint: FaultEndpoint::Get,
                status,
                times: 1,
                retry_after_secs,
            })
            .expect("valid fault");
    }
    let before = job(&stack, id).await;

    let throttled = run_once(stack.app(), "").await;
    let after_429 = job(&stack, id).await;
    let too_soon = run_once(stack.app(), "").await;
    stack.app().clock.advance_ms(40_000);
    let unavailable = run_once(stack.app(), "").await;
    let after_503 = job(&stack, id).await;
    stack.app().clock.advance_ms(10 * 60_000);
    let recovered = run_once(stack.app(), "").await;

    for (summary, after) in [(&throttled, &after_429), (&unavailable, &after_503)] {
        assert_eq!(summary.provider_throttled, 1, "{summary:?}");
        assert_eq!((summary.finished, summary.errors), (0, 0), "{summary:?}");
        assert_eq!(after.status, before.status);
        assert_eq!(after.mail_state, MailState::None);
        assert_eq!(after.poll_attempts, before.poll_attempts);
        assert!(!after.has_result);
        assert_eq!(after.lease_until, None, "the lease is given back");
    }
    let now_then = after_429.updated_at;
    let retry_at = after_429.due_at.expect("still due later");
    assert!(retry_at >= now_then + 30_000, "Retry-After is honoured");
    assert!(retry_at <= now_then + 33_000, "with at most 10% jitter");
    assert_eq!(too_soon.due_seen, 0, "nothing is due before Retry-After");
    assert_eq!((recovered.finished, recovered.mail_sent), (1, 1));
    assert_eq!(job(&stack, id).await.status, JobStatus::Completed);
    assert_eq!(stack.simulator.stats().requests.get, 3);
    assert_eq!(stack.mails_for(id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_free_again_and_a_live_one_is_skipped() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    let ids = create_jobs(&stack, 2, QUESTION).await;
    let (stuck, busy) = (&ids[0], &ids[1]);
    finish_at_provider_and_come_due(&stack);
    let now = stack.app().clock.now_ms();
    for (id, lease_until, owner) in [
        (stuck, now - 60_000, "timed-out-run"),
        (busy, now + 60_000, "busy-run"),
    ] {
        let lease = ChangeFields::new()
            .number("lease_until", lease_until)
            .text("lease_owner", owner);
        stack
            .app()
            .store
            .change_fields(id, lease, now)
            .await
            .expect("lease written");
    }

    let first = run_once(stack.app(), "").await;
    let busy_after_first = job(&stack, busy).await;
    stack.app().clock.advance_ms(2 * 60_000);
    let second = run_once(stack.app(), "").await;

    assert_eq!((first.claimed, first.skipped), (1, 1), "{first:?}");
    assert_eq!((first.finished, first.mail_sent), (1, 1), "{first:?}");
    assert!(settled(&job(&stack, stuck).await));
    assert!(!busy_after_first.status.is_final());
    assert_eq!(busy_after_first.mail_state, MailState::None);
    assert_eq!((second.claimed, second.finished), (1, 1), "{second:?}");
    assert!(settled(&job(&stack, busy).await));
    assert_eq!(stack.simulator.stats().requests.get, 2);
    let mails = mail_counts(&stack).await;
    assert_eq!((mails.get(stuck), mails.get(busy)), (Some(&1), Some(&1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_answers_without_a_usable_result_are_counted_then_failed() {
    let stack =
        stack_without_webhooks(&[("MAX_UNUSABLE_RESULTS", "3")], simulator_defaults()).await;
    stack.simulator.clear_rules();
    for (question, mode) in [
        ("missing result", ResponseMode::Missing),
        ("empty result", ResponseMode::Empty),
    ] {
        stack
            .simulator
            .add_rule(JobRule {
                matches: Some(question.into()),
                webhook: Some(WebhookMode::Drop),
                response: Some(mode),
                ..JobRule::default()
            })
            .expect("valid rule");
    }
    let missing = create_jobs(&stack, 1, "missing result").await.remove(0);
    let empty = create_jobs(&stack, 1, "empty result").await.remove(0);
    finish_at_provider_and_come_due(&stack);

    let mut runs = Vec::new();
    let mut counters = Vec::new();
    for _ in 0..3 {
        runs.push(run_once(stack.app(), "").await);
        let (missing, empty) = (job(&stack, &missing).await, job(&stack, &empty).await);
        counters.push((missing.unusable_results, empty.unusable_results));
        stack.app().clock.advance_ms(10_000);
    }

    assert_eq!(counters, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(runs[0].unusable_results, 2, "{:?}", runs[0]);
    assert_eq!((runs[0].finished, runs[0].mail_sent), (0, 0));
    assert_eq!((runs[1].finished, runs[1].mail_sent), (0, 0));
    assert_eq!(
        (runs[2].finished, runs[2].mail_sent),
        (2, 2),
        "{:?}",
        runs[2]
    );
    for id in [&missing, &empty] {
        let job = job(&stack, id).await;
        assert_eq!(job.status, JobStatus::Failed, "{id}");
        assert!(!job.has_result, "{id}");
        assert!(
            job.failure_reason
                .is_some_and(|reason| reason.contains("no usable report")),
            "{id}"
        );
        let mails = stack.mails_for(id).await;
        assert_eq!(mails.len(), 1, "{id}");
        let subject = mails[0].subject().expect("a subject");
        assert!(subject.starts_with("Research failed"), "{subject}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_is_looked_at_after_growing_intervals() {
    let stack = stack_without_webhooks(&[], simulator_defaults()).await;
    stack.simulator.clear_rules();
    stack
        .simulator
        .add_rule(JobRule {
            webhook: Some(WebhookMode::Drop),
            complete_after_ms: Some(24 * 3_600_000),
            ..JobRule::default()
        })
        .expect("valid rule");
    let id = create_jobs(&stack, 1, QUESTION).await.remove(0);
    stack.simulator.advance_clock(Duration::from_secs(60));

    let mut gaps = Vec::new();
    let mut idle_runs = Vec::new();
    for _ in 0..4 {
        let due_at = job(&stack, &id).await.due_at.expect("due");
        let wait = due_at - stack.app().clock.now_ms();
        if wait > 500 {
            stack.app().clock.advance_ms(wait - 500);
            idle_runs.push(run_once(stack.app(), "").await);
            stack.app().clock.advance_ms(500);
        }
        let summary = run_once(stack.app(), "").await;
        assert_eq!(summary.still_running, 1, "{summary:?}");
        let job = job(&stack, &id).await;
        gaps.push(job.due_at.expect("due again") - job.updated_at);
    }

    assert_eq!(gaps, [1_000, 2_000, 5_000, 5_000]);
    assert!(
        idle_runs.iter().all(|run| run.due_seen == 0),
        "{idle_runs:?}"
    );
    let job = job(&stack, &id).await;
    assert_eq!(job.status, JobStatus::InProgress);
    assert_eq!(job.poll_attempts, 4);
    assert_eq!(stack.simulator.stats().requests.get, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_jobs_are_submitted_at_the_provider_pace_and_never_twice() {
    let stack =
        stack_without_webhooks(&[("SUBMIT_RATE_PER_MINUTE", "5")], simulator_defaults()).await;
    stack
        .simulator
        .add_http_fault(HttpFault {
            endpoint: FaultEndpoint::Create,
            status: 503,
            times: 4,
            retry_after_secs: None,
        })
        .expect("valid fault");
    let ids = create_jobs(&stack, 4, QUESTION).await;
    stack.app().clock.advance_ms(60_000);

    let mut submitted_per_step = Vec::new();
    let (first, second) = tokio::join!(
        run_once(stack.app(), "run-first"),
        run_once(stack.app(), "run-second"),
    );
    submitted_per_step.push(first.submitted + second.submitted);
    for _ in 0..6 {
        stack.app().clock.advance_ms(12_000);
        let (first, second) = tokio::join!(
            run_once(stack.app(), "run-first"),
            run_once(stack.app(), "run-second"),
        );
        submitted_per_step.push(first.submitted + second.submitted);
    }

    assert!(
        submitted_per_step.iter().all(|&submitted| submitted <= 1),
        "at most one submission per 12 s slot: {submitted_per_step:?}"
    );
    assert_eq!(submitted_per_step.iter().sum::<u64>(), 4);
    let stats = stack.simulator.stats();
    assert_eq!(stats.jobs_created, 4);
    for id in &ids {
        assert_eq!(
            stack.simulator.jobs(Some(id)).len(),
            1,
            "one paid job for {id}"
        );
        assert_ne!(job(&stack, id).await.status, JobStatus::Queued, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_costs_at_most_six_dynamodb_requests_and_finished_jobs_cost_a_run_nothing() {
    let counter = DynamoCounter::new();
    let stack = TestStack::start_with(StackOptions {
        dynamodb_interceptors: vec![counter.interceptor()],
        ..StackOptions::default()
    })
    .await;
    let observer = stack
        .app()
        .store
        .clone()
        .with_client(aws_sdk_dynamodb::Client::new(&sdk_config().await));
    let jobs = 5;

    let ids = create_jobs(&stack, jobs, QUESTION).await;
    wait_until_settled(&observer, &ids).await;
    let lifecycle = counter.snapshot();
    let summary = run_once(stack.app(), "").await;
    let run = counter.snapshot().since(&lifecycle);

    let per_job = lifecycle.total() as f64 / jobs as f64;
    println!(
        "DynamoDB requests for {jobs} jobs (submit, webhook, e-mail): {} in all, {per_job:.1} per job, by operation {:?}",
        lifecycle.total(),
        lifecycle.requests
    );
    println!(
        "reconciler run over finished jobs: {} requests {:?}, {} items read, due_seen {}",
        run.total(),
        run.requests,
        run.items_read,
        summary.due_seen
    );
    assert!(per_job <= 6.0, "{per_job} requests per job: {lifecycle:?}");
    assert_eq!(stack.simulator.stats().requests.get, 0, "no polling needed");
    assert_eq!(run.items_read, 0);
    assert_eq!(summary.due_seen, 0);
    let shards = u64::from(stack.app().config.due_index_shards);
    assert_eq!(run.of("Query"), shards, "one empty query per shard");
    assert_eq!(run.total(), shards, "and nothing else: {run:?}");
    assert_eq!(observer.count_due(i64::MAX).await.expect("count"), 0);
    let mails = mail_counts(&stack).await;
    for id in &ids {
        assert_eq!(mails.get(id), Some(&1), "exactly one e-mail for {id}");
    }
}

/// Waits, reading through `observer` (not the counted client), until every job is finished and
/// mailed.
async fn wait_until_settled(observer: &JobStore, ids: &[String]) {
    let started = Instant::now();
    for id in ids {
        loop {
            let job = observer
                .get_job(id)
                .await
                .expect("the store answers")
                .expect("the job exists");
            if settled(&job) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{id} did not settle: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
