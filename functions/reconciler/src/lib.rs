//! The reconciler: finishes every job that webhooks did not.
//!
//! A run reads the sparse attention index (only jobs that still need something), shard by shard,
//! oldest due first within a shard, page by page (reading the next page only when it needs more
//! work), and works on up to `RECONCILE_CONCURRENCY` jobs
//! at once. Each job is first claimed with a conditional write and a lease, so overlapping runs
//! (EventBridge may invoke twice; a failed invocation is retried) never work on the same job at
//! once. A run stops taking new jobs `RECONCILE_DEADLINE_MARGIN_MS` before its invocation
//! deadline; leases of anything unfinished expire and the next run continues.
//!
//! Per job, by state:
//! - QUEUED: submit at the provider's pace (a shared slot item limits submissions per minute
//!   across all runs), with our job id as the idempotency key so no second paid job is created.
//! - SUBMITTED / IN_PROGRESS: GET the provider job and apply it through the same code as the
//!   webhook; while it runs, look again after growing intervals (`POLL_SCHEDULE_SECS`).
//! - older than the provider's retention, or unknown to the provider: EXPIRED, owner told.
//! - finished with an e-mail pending: send it (once; see `research_relay::finish`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lambda_runtime::LambdaEvent;
use research_relay::app::App;
use research_relay::finish::{
    FinishOutcome, MailOutcome, apply_provider_job, backoff, deliver_mail, duration_ms,
};
use research_relay::job::{JobEvent, JobStatus, MailState};
use research_relay::mailer::Mailer;
use research_relay::provider::{ProviderError, ResearchProvider};
use research_relay::store::{ChangeFields, ChangeOutcome, JobRecord, StoreError};
use research_relay::submission::{SubmitOutcome, submit_job};
use serde::Serialize;

/// How long a run may take when the invocation has no deadline (local runs, tests).
pub const DEFAULT_RUN_BUDGET: Duration = Duration::from_secs(60);

/// What one run did; logged once per run and published as metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Due jobs read from the index.
    pub due_seen: u64,
    /// Jobs this run claimed.
    pub claimed: u64,
    /// Jobs that reached a final state in this run.
    pub finished: u64,
    /// Jobs polled and still running at the provider.
    pub still_running: u64,
    /// Jobs expired (past retention, or unknown to the provider).
    pub expired: u64,
    /// Queued jobs the provider accepted.
    pub submitted: u64,
    /// Queued jobs deferred (provider rate limit or pace).
    pub submit_deferred: u64,
    /// E-mails sent.
    pub mail_sent: u64,
    /// E-mails deferred after a transient SES error.
    pub mail_retried: u64,
    /// E-mails SES refused for good.
    pub mail_rejected: u64,
    /// Provider calls answered with 429 or 5xx.
    pub provider_throttled: u64,
    /// Jobs that hit an error of ours.
    pub errors: u64,
    /// Whether the run stopped early for the deadline.
    pub stopped_for_deadline: bool,
    /// Milliseconds left before the deadline when the run ended.
    pub time_left_ms: u64,
}

#[derive(Default)]
struct Counters {
    due_seen: AtomicU64,
    claimed: AtomicU64,
    finished: AtomicU64,
    still_running: AtomicU64,
    expired: AtomicU64,
    submitted: AtomicU64,
    submit_deferred: AtomicU64,
    mail_sent: AtomicU64,
    mail_retried: AtomicU64,
    mail_rejected: AtomicU64,
    provider_throttled: AtomicU64,
    errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The Lambda entry: a scheduled EventBridge event; the deadline comes from the context.
pub async fn handle<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
) -> Result<RunSummary, lambda_runtime::Error> {
    let deadline_ms = event.context.deadline;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default();
    let budget = if deadline_ms > now_ms {
        Duration::from_millis(deadline_ms - now_ms)
    } else {
        DEFAULT_RUN_BUDGET
    };
    Ok(run(app, Instant::now() + budget, &event.context.request_id).await)
}

/// One reconciliation pass that stops taking work `margin` before `deadline`.
pub async fn run<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    deadline: Instant,
    run_id: &str,
) -> RunSummary {
    let run_id = if run_id.is_empty() {
        research_relay::job::new_job_id()
    } else {
        run_id.to_owned()
    };
    let stop_at = deadline
        .checked_sub(app.config.reconcile_deadline_margin)
        .unwrap_or_else(Instant::now);
    let counters = Counters::default();
    let started_ms = app.clock.now_ms();

    let mut in_flight = FuturesUnordered::new();
    let concurrency = app.config.reconcile_concurrency.max(1);
    'shards: for shard in app.store.due_shards() {
        let mut start = None;
        loop {
            if Instant::now() >= stop_at {
                break 'shards;
            }
            let page = match app
                .store
                .due_jobs(
                    &shard,
                    started_ms,
                    app.config.reconcile_page_size,
                    start.take(),
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    bump(&counters.errors);
                    tracing::error!(error = %error, "reading the attention index failed");
                    continue 'shards;
                }
            };

            for due in page.items {
                while in_flight.len() >= concurrency {
                    in_flight.next().await;
                }
                if Instant::now() >= stop_at {
                    break 'shards;
                }
                bump(&counters.due_seen);
                in_flight.push(reconcile_counted(app, due.id, &run_id, &counters));
            }

            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
    }
    while in_flight.next().await.is_some() {}
    drop(in_flight);

    let now = Instant::now();
    let summary = RunSummary {
        due_seen: counters.due_seen.into_inner(),
        claimed: counters.claimed.into_inner(),
        finished: counters.finished.into_inner(),
        still_running: counters.still_running.into_inner(),
        expired: counters.expired.into_inner(),
        submitted: counters.submitted.into_inner(),
        submit_deferred: counters.submit_deferred.into_inner(),
        mail_sent: counters.mail_sent.into_inner(),
        mail_retried: counters.mail_retried.into_inner(),
        mail_rejected: counters.mail_rejected.into_inner(),
        provider_throttled: counters.provider_throttled.into_inner(),
        errors: counters.errors.into_inner(),
        stopped_for_deadline: now >= stop_at,
        time_left_ms: deadline.saturating_duration_since(now).as_millis() as u64,
    };
    log_summary(&summary, app.clock.now_ms());
    summary
}

async fn reconcile_counted<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job_id: String,
    run_id: &str,
    counters: &Counters,
) {
    if let Err(error) = reconcile_job(app, &job_id, run_id, counters).await {
        bump(&counters.errors);
        tracing::warn!(job_id, error = %error, "job not reconciled in this run");
    }
}

async fn reconcile_job<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job_id: &str,
    run_id: &str,
    counters: &Counters,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let Some(job) = app
        .store
        .claim_due_job(job_id, run_id, duration_ms(app.config.job_lease), now)
        .await?
    else {
        return Ok(());
    };
    bump(&counters.claimed);

    if job.status.is_final() {
        return match job.mail_state {
            MailState::Pending | MailState::Sending => mail(app, job_id, counters).await,
            _ => {
                let fields = ChangeFields::new().not_due().held_by(run_id);
                app.store
                    .change_fields(job_id, fields, now)
                    .await
                    .map(|_| ())
            }
        };
    }

    let retention_ends = job.created_at + duration_ms(app.config.provider_retention);
    if now >= retention_ends {
        return expire(
            app,
            &job,
            run_id,
            "The result was not retrieved within the provider's retention period.",
            counters,
        )
        .await;
    }

    match (&job.status, &job.provider_id) {
        (JobStatus::Queued, _) | (_, None) => submit(app, &job, run_id, counters).await,
        (_, Some(provider_id)) => poll(app, &job, provider_id, run_id, counters).await,
    }
}

async fn submit<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    run_id: &str,
    counters: &Counters,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let interval_ms = 60_000 / i64::from(app.config.submit_rate_per_minute.max(1));
    if let Err(next_free) = app.store.take_submit_slot(interval_ms, now).await? {
        bump(&counters.submit_deferred);
        let fields = ChangeFields::new()
            .due(app.store.due_shard(&job.id), next_free)
            .held_by(run_id);
        app.store.change_fields(&job.id, fields, now).await?;
        return Ok(());
    }

    match submit_job(app, job, true).await? {
        SubmitOutcome::Accepted(current) => {
            bump(&counters.submitted);
            if current.status.is_final() {
                bump(&counters.finished);
                mail(app, &job.id, counters).await?;
            }
        }
        SubmitOutcome::Deferred { .. } => {
            bump(&counters.submit_deferred);
            bump(&counters.provider_throttled);
        }
        SubmitOutcome::Rejected { .. } => {
            bump(&counters.finished);
            mail(app, &job.id, counters).await?;
        }
        SubmitOutcome::NotQueued(_) => {}
    }
    Ok(())
}

async fn poll<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    provider_id: &str,
    run_id: &str,
    counters: &Counters,
) -> Result<(), StoreError> {
    let answer = app.provider.get(provider_id).await;
    let now = app.clock.now_ms();
    let shard = app.store.due_shard(&job.id);

    let update = match answer {
        Ok(update) => update,
        Err(ProviderError::NotFound) => {
            return expire(
                app,
                job,
                run_id,
                "The research provider no longer has this job.",
                counters,
            )
            .await;
        }
        Err(error) => {
            bump(&counters.provider_throttled);
            let wait = match &error {
                ProviderError::RateLimited {
                    retry_after: Some(wait),
                } => *wait,
                _ => backoff(job.poll_attempts.min(3)),
            };
            tracing::info!(job_id = %job.id, error = %error, "provider unavailable; job left for a later run");
            let fields = ChangeFields::new()
                .due(shard, now + duration_ms(wait))
                .held_by(run_id);
            app.store.change_fields(&job.id, fields, now).await?;
            return Ok(());
        }
    };

    let outcome = apply_provider_job(app, job, &update).await?;
    match outcome {
        FinishOutcome::Changed(status)
        | FinishOutcome::Duplicate(status)
        | FinishOutcome::Ignored(status)
            if status.is_final() =>
        {
            if matches!(outcome, FinishOutcome::Changed(_)) {
                bump(&counters.finished);
            }
            mail(app, &job.id, counters).await
        }
        FinishOutcome::Unusable { .. } => {
            let fields = ChangeFields::new().held_by(run_id);
            app.store
                .change_fields(&job.id, fields, now)
                .await
                .map(|_| ())
        }
        FinishOutcome::ProviderMismatch | FinishOutcome::UnknownJob => {
            tracing::error!(job_id = %job.id, outcome = outcome.as_str(), "provider answer does not belong to this job");
            bump(&counters.errors);
            let fields = ChangeFields::new()
                .due(shard, now + duration_ms(backoff(3)))
                .held_by(run_id);
            app.store
                .change_fields(&job.id, fields, now)
                .await
                .map(|_| ())
        }
        _ => {
            bump(&counters.still_running);
            let next_look = now + duration_ms(app.config.poll_delay(job.poll_attempts));
            let fields = ChangeFields::new()
                .increment("poll_attempts", 1)
                .due(shard, next_look)
                .held_by(run_id);
            app.store
                .change_fields(&job.id, fields, now)
                .await
                .map(|_| ())
        }
    }
}

async fn expire<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job: &JobRecord,
    run_id: &str,
    reason: &str,
    counters: &Counters,
) -> Result<(), StoreError> {
    let now = app.clock.now_ms();
    let fields = ChangeFields::new()
        .text("failure_reason", reason)
        .text("mail_state", MailState::Pending.as_str())
        .due(app.store.due_shard(&job.id), now)
        .held_by(run_id);
    match app
        .store
        .change_status(&job.id, JobEvent::Expired, fields, now)
        .await?
    {
        ChangeOutcome::Applied(_) => {
            bump(&counters.expired);
            tracing::info!(job_id = %job.id, status = "EXPIRED", "job expired");
            mail(app, &job.id, counters).await
        }
        ChangeOutcome::NotApplied(_) | ChangeOutcome::Missing => Ok(()),
    }
}

async fn mail<P: ResearchProvider, M: Mailer>(
    app: &App<P, M>,
    job_id: &str,
    counters: &Counters,
) -> Result<(), StoreError> {
    match deliver_mail(app, job_id).await? {
        MailOutcome::Sent { .. } => bump(&counters.mail_sent),
        MailOutcome::Deferred(_) => bump(&counters.mail_retried),
        MailOutcome::Rejected(_) => bump(&counters.mail_rejected),
        MailOutcome::NotOurs => {}
    }
    Ok(())
}

fn log_summary(summary: &RunSummary, now_ms: i64) {
    tracing::info!(
        due_seen = summary.due_seen,
        claimed = summary.claimed,
        finished = summary.finished,
        still_running = summary.still_running,
        expired = summary.expired,
        submitted = summary.submitted,
        submit_deferred = summary.submit_deferred,
        mail_sent = summary.mail_sent,
        mail_retried = summary.mail_retried,
        mail_rejected = summary.mail_rejected,
        provider_throttled = summary.provider_throttled,
        errors = summary.errors,
        stopped_for_deadline = summary.stopped_for_deadline,
        time_left_ms = summary.time_left_ms,
        "reconciler run finished"
    );
    research_relay::metrics::emit(
        "reconciler",
        &[
            ("Claimed", summary.claimed as f64),
            ("Finished", summary.finished as f64),
            ("StillRunning", summary.still_running as f64),
            ("Expired", summary.expired as f64),
            ("Submitted", summary.submitted as f64),
            ("MailSent", summary.mail_sent as f64),
            ("MailRetried", summary.mail_retried as f64),
            ("MailRejected", summary.mail_rejected as f64),
            ("Errors", summary.errors as f64),
            ("TimeLeftMs", summary.time_left_ms as f64),
        ],
        now_ms,
    );
}

/// Loads the reconciler's context from the environment, for `main`.
pub async fn live_app() -> Result<research_relay::app::LiveApp, research_relay::app::StartupError> {
    research_relay::app::LiveApp::from_env().await
}
