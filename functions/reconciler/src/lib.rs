//! The reconciler: finishes every job that webhooks did not.
//!
//! # What a run reads
//! Only the sparse attention index (`due-index`): a job is in it while it still needs something
//! (not finished, or finished and not yet mailed), so a table of finished jobs costs a run one
//! empty query per index shard and nothing else. The index is spread over a few shards (see
//! [`research_relay::store`]); a run reads every shard page by page and merges them, so jobs are
//! taken oldest due first across the whole table. Merging matters: reading shard after shard
//! would let a run that keeps hitting its deadline in the first shard starve the others. A shard's
//! next page is read only when the run needs more work from it.
//!
//! # Claims and overlap
//! Each job is claimed with a conditional write that takes a lease: it succeeds only while the job
//! is due and nobody holds a live lease. EventBridge may invoke twice and a failed invocation is
//! retried, so two runs may overlap; the claim makes the loser skip the job, and every state
//! change afterwards is conditional on the state machine (see [`research_relay::finish`]), so
//! overlapping runs neither poll nor mail a job twice. A run that dies leaves leases that expire
//! on their own; an expired lease is free.
//!
//! # Time
//! Up to `RECONCILE_CONCURRENCY` jobs are worked on at once (default 16). The run stops taking new
//! jobs `RECONCILE_DEADLINE_MARGIN_MS` before its invocation deadline; work already started may
//! use half of that margin (at most a second of it is kept back for the summary), and whatever is
//! still unfinished then is left to its lease and the next run.
//!
//! # Per job, by state
//! - QUEUED: submitted at the provider's pace. A shared slot item allows one submission every
//!   `60 / SUBMIT_RATE_PER_MINUTE` seconds across all runs; our job id is the provider's
//!   idempotency key, so a repeated submission never starts a second paid job. Jobs that find the
//!   slot taken are scheduled one slot apart behind it instead of all retrying at once.
//! - SUBMITTED / IN_PROGRESS: one GET of the provider job, applied through the same code as the
//!   webhook. While it runs, the next look comes after growing intervals (`POLL_SCHEDULE_SECS`).
//!   A COMPLETED answer without a usable result is counted and looked at again; after
//!   `MAX_UNUSABLE_RESULTS` such answers the job fails and the owner is told.
//! - The provider answers 429 or 5xx (or cannot be reached): the job is left as it is and looked
//!   at again after `Retry-After` (plus jitter) or a jittered backoff. A 429 is about our API key,
//!   so the run also stops polling other jobs until `Retry-After` has passed.
//! - Older than the provider's retention (7 days), or unknown to the provider: EXPIRED, and the
//!   owner is told by e-mail. A job past retention that has a provider id gets one last look
//!   first, so a result the provider still holds is not thrown away.
//! - Finished with an e-mail pending: sent once (the e-mail claim in `research_relay::finish`).
//!   An SES throttle leaves it pending with backoff for a later run; it never fails the batch.
//!
//! # What a run reports
//! One `reconciler run finished` log line with every figure of [`RunSummary`], and the same
//! figures as one CloudWatch embedded-metric line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use futures::StreamExt;
use futures::future::{Either, join_all, select};
use futures::stream::FuturesUnordered;
use lambda_runtime::LambdaEvent;
use rand::Rng;
use research_relay::app::App;
use research_relay::finish::{
    FinishOutcome, MailOutcome, apply_provider_job, backoff, deliver_mail, duration_ms,
};
use research_relay::job::{JobEvent, JobStatus, MailState, Transition, transition};
use research_relay::mailer::Mailer;
use research_relay::provider::{ProviderError, ProviderJob, ProviderStatus, ResearchProvider};
use research_relay::store::{
    ChangeFields, ChangeOutcome, DueJob, JobRecord, JobStore, StartKey, StoreError,
};
use research_relay::submission::{SubmitOutcome, submit_job};
use serde::Serialize;
use tracing::Instrument;

/// How long a run may take when the invocation has no deadline (local runs, tests).
pub const DEFAULT_RUN_BUDGET: Duration = Duration::from_secs(60);

/// Most of the deadline margin kept back for the summary once in-flight work is drained.
const SUMMARY_RESERVE: Duration = Duration::from_secs(1);

/// What the owner is told when a job outlived the provider's retention.
const RETENTION_REASON: &str =
    "The result was not retrieved within the provider's retention period.";

/// What the owner is told when the provider no longer knows the job.
const GONE_REASON: &str = "The research provider no longer has this job.";

/// What one run did; logged once per run and published as metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Due jobs read from the index.
    pub due_seen: u64,
    /// Jobs this run claimed.
    pub claimed: u64,
    /// Due jobs another run held, or that stopped being due before the claim.
    pub skipped: u64,
    /// Provider GETs made.
    pub polled: u64,
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
    /// Provider calls that failed for now (429, 5xx, unreachable, unreadable), and polls this run
    /// held back after a 429; those jobs wait for a later run.
    pub provider_throttled: u64,
    /// COMPLETED answers without a usable result.
    pub unusable_results: u64,
    /// Jobs that hit an error of ours (store faults, answers that belong to another job).
    pub errors: u64,
    /// Jobs still being worked on when the run had to end; their leases expire.
    pub abandoned: u64,
    /// Whether the run ended for its deadline with work possibly left.
    pub stopped_for_deadline: bool,
    /// Milliseconds left before the deadline when the run ended.
    pub time_left_ms: u64,
}

#[derive(Default)]
struct Counters {
    due_seen: AtomicU64,
    claimed: AtomicU64,
    skipped: AtomicU64,
    polled: AtomicU64,
    finished: AtomicU64,
    still_running: AtomicU64,
    expired: AtomicU64,
    submitted: AtomicU64,
    submit_deferred: AtomicU64,
    mail_sent: AtomicU64,
    mail_retried: AtomicU64,
    mail_rejected: AtomicU64,
    provider_throttled: AtomicU64,
    unusable_results: AtomicU64,
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

/// One reconciliation pass that stops taking work `RECONCILE_DEADLINE_MARGIN_MS` before
/// `deadline`. `run_id` names the run's leases (a fresh id is made when it is empty).
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
    let span = tracing::info_span!("reconciler_run", run_id = %run_id);
    let margin = app.config.reconcile_deadline_margin;
    let stop_at = deadline.checked_sub(margin).unwrap_or_else(Instant::now);
    let drain_until = deadline
        .checked_sub((margin / 2).min(SUMMARY_RESERVE))
        .unwrap_or(stop_at)
        .max(stop_at);
    let run = Run::new(app, run_id);

    let (stopped, abandoned) = run
        .dispatch(stop_at, drain_until)
        .instrument(span.clone())
        .await;

    let now = Instant::now();
    let summary = run.summary(stopped, abandoned, deadline.saturating_duration_since(now));
    span.in_scope(|| log_summary(&summary, app.clock.now_ms()));
    summary
}

/// The state one run shares between the jobs it works on.
struct Run<'a, P, M> {
    app: &'a App<P, M>,
    id: String,
    counters: Counters,
    /// App-clock milliseconds before which this run makes no provider GET: a 429 is about our
    /// key, not one job, so the other jobs wait for `Retry-After` too.
    polls_paused_until: AtomicI64,
    /// The next submission slot as this run last saw it; while it is in the future the run
    /// defers queued jobs without asking the slot item again.
    slot_free_at: AtomicI64,
    /// Queued jobs this run has scheduled behind the slot, so each gets its own later slot.
    slot_queue: AtomicI64,
}

impl<'a, P: ResearchProvider, M: Mailer> Run<'a, P, M> {
    fn new(app: &'a App<P, M>, id: String) -> Self {
        Self {
            app,
            id,
            counters: Counters::default(),
            polls_paused_until: AtomicI64::new(0),
            slot_free_at: AtomicI64::new(0),
            slot_queue: AtomicI64::new(0),
        }
    }

    /// Takes due jobs oldest first until the index has no more or `stop_at` passes, keeping up
    /// to the configured number in flight, then waits for those until `drain_until`. Returns
    /// whether the run stopped for its deadline and how many jobs it had to leave unfinished.
    async fn dispatch(&self, stop_at: Instant, drain_until: Instant) -> (bool, u64) {
        let app = self.app;
        let concurrency = app.config.reconcile_concurrency.max(1);
        let mut due = DueQueue::new(
            &app.store,
            app.clock.now_ms(),
            app.config.reconcile_page_size.max(1),
        );
        let mut in_flight = FuturesUnordered::new();
        let stop_at_tokio = tokio::time::Instant::from_std(stop_at);
        let mut stopped = false;

        loop {
            if in_flight.len() >= concurrency {
                match tokio::time::timeout_at(stop_at_tokio, in_flight.next()).await {
                    Ok(_) => continue,
                    Err(_) => {
                        stopped = true;
                        break;
                    }
                }
            }
            if Instant::now() >= stop_at {
                stopped = !due.is_exhausted();
                break;
            }
            // Jobs in flight keep moving while the next page is read: `select` hands back the
            // unfinished read instead of dropping it, so no page is lost or read twice.
            let read_while_working = async {
                let mut read = std::pin::pin!(due.next(&self.counters));
                loop {
                    if in_flight.is_empty() {
                        break read.await;
                    }
                    if let Either::Left((job, _)) = select(read.as_mut(), in_flight.next()).await {
                        break job;
                    }
                }
            };
            let next = match tokio::time::timeout_at(stop_at_tokio, read_while_working).await {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(_) => {
                    stopped = true;
                    break;
                }
            };
            bump(&self.counters.due_seen);
            let span = tracing::info_span!("reconcile_job", job_id = %next.id);
            in_flight.push(self.reconcile(next.id).instrument(span));
        }

        let drain = async { while in_flight.next().await.is_some() {} };
        let drained = tokio::time::timeout_at(tokio::time::Instant::from_std(drain_until), drain)
            .await
            .is_ok();
        let abandoned = in_flight.len() as u64;
        if !drained {
            tracing::warn!(
                abandoned,
                "deadline reached with jobs in flight; their leases expire and a later run retries them"
            );
        }
        (stopped || !drained, abandoned)
    }

    fn summary(&self, stopped: bool, abandoned: u64, time_left: Duration) -> RunSummary {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        RunSummary {
            due_seen: read(&counters.due_seen),
            claimed: read(&counters.claimed),
            skipped: read(&counters.skipped),
            polled: read(&counters.polled),
            finished: read(&counters.finished),
            still_running: read(&counters.still_running),
            expired: read(&counters.expired),
            submitted: read(&counters.submitted),
            submit_deferred: read(&counters.submit_deferred),
            mail_sent: read(&counters.mail_sent),
            mail_retried: read(&counters.mail_retried),
            mail_rejected: read(&counters.mail_rejected),
            provider_throttled: read(&counters.provider_throttled),
            unusable_results: read(&counters.unusable_results),
            errors: read(&counters.errors),
            abandoned,
            stopped_for_deadline: stopped,
            time_left_ms: u64::try_from(time_left.as_millis()).unwrap_or(u64::MAX),
        }
    }

    async fn reconcile(&self, job_id: String) {
        if let Err(error) = self.work_on(&job_id).await {
            bump(&self.counters.errors);
            tracing::warn!(error = %error, "job not reconciled in this run; its lease expires and a later run retries it");
        }
    }

    async fn work_on(&self, job_id: &str) -> Result<(), StoreError> {
        let app = self.app;
        let now = app.clock.now_ms();
        let Some(job) = app
            .store
            .claim_due_job(job_id, &self.id, duration_ms(app.config.job_lease), now)
            .await?
        else {
            bump(&self.counters.skipped);
            return Ok(());
        };
        bump(&self.counters.claimed);

        if job.status.is_final() {
            return self.settle_mail(&job, now).await;
        }
        let past_retention = now >= job.created_at + duration_ms(app.config.provider_retention);
        match (&job.status, &job.provider_id) {
            (JobStatus::Queued, _) | (_, None) if past_retention => {
                self.expire(&job, RETENTION_REASON).await
            }
            (JobStatus::Queued, _) | (_, None) => self.submit(&job).await,
            (_, Some(provider_id)) => self.poll(&job, provider_id, past_retention).await,
        }
    }

    /// A finished job that is still in the index: its e-mail is pending, or being sent.
    async fn settle_mail(&self, job: &JobRecord, now: i64) -> Result<(), StoreError> {
        match job.mail_state {
            MailState::Pending => self.mail(job).await,
            MailState::Sending => match job.mail_lease_until {
                // Another sender holds the e-mail; look again when its claim runs out.
                Some(until) if until >= now => self.reschedule(job, until + 1, now).await,
                _ => self.mail(job).await,
            },
            _ => {
                let fields = ChangeFields::new().not_due().held_by(&self.id);
                self.app
                    .store
                    .change_fields(&job.id, fields, now)
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn submit(&self, job: &JobRecord) -> Result<(), StoreError> {
        let app = self.app;
        let now = app.clock.now_ms();
        let interval_ms = 60_000 / i64::from(app.config.submit_rate_per_minute.max(1));

        let known_free_at = self.slot_free_at.load(Ordering::Relaxed);
        if now < known_free_at {
            return self.defer_submission(job, known_free_at, interval_ms).await;
        }
        if let Err(next_free) = app.store.take_submit_slot(interval_ms, now).await? {
            self.slot_free_at.fetch_max(next_free, Ordering::Relaxed);
            return self.defer_submission(job, next_free, interval_ms).await;
        }
        self.slot_free_at
            .fetch_max(now + interval_ms, Ordering::Relaxed);

        match submit_job(app, job, true).await? {
            SubmitOutcome::Accepted(current) => {
                bump(&self.counters.submitted);
                if current.status.is_final() {
                    bump(&self.counters.finished);
                    return self.mail(&current).await;
                }
                self.release_if_early(&current).await
            }
            SubmitOutcome::Deferred { retry_at } => {
                bump(&self.counters.submit_deferred);
                bump(&self.counters.provider_throttled);
                // The provider refused a submission for now: none of this run's others fit
                // before it allows one again.
                self.slot_free_at.fetch_max(retry_at, Ordering::Relaxed);
                if retry_at < job.lease_until.unwrap_or(i64::MAX) {
                    self.release(&job.id).await?;
                }
                Ok(())
            }
            SubmitOutcome::Rejected { .. } => {
                bump(&self.counters.finished);
                self.mail(job).await
            }
            SubmitOutcome::NotQueued(_) => Ok(()),
        }
    }

    /// Puts a queued job behind the ones this run already deferred, one slot apart, so they do
    /// not all come due (and all lose the slot race) at the same moment.
    async fn defer_submission(
        &self,
        job: &JobRecord,
        free_at: i64,
        interval_ms: i64,
    ) -> Result<(), StoreError> {
        bump(&self.counters.submit_deferred);
        let place = self.slot_queue.fetch_add(1, Ordering::Relaxed);
        let due_at = free_at.saturating_add(place.saturating_mul(interval_ms));
        self.reschedule(job, due_at, self.app.clock.now_ms()).await
    }

    async fn poll(
        &self,
        job: &JobRecord,
        provider_id: &str,
        past_retention: bool,
    ) -> Result<(), StoreError> {
        let app = self.app;
        let paused_until = self.polls_paused_until.load(Ordering::Relaxed);
        let now = app.clock.now_ms();
        if !past_retention && now < paused_until {
            bump(&self.counters.provider_throttled);
            let due_at = paused_until + duration_ms(jitter(Duration::from_secs(1)));
            return self.reschedule(job, due_at, now).await;
        }

        bump(&self.counters.polled);
        let answer = app.provider.get(provider_id).await;
        match answer {
            Ok(update) => self.apply(job, &update, past_retention).await,
            Err(ProviderError::NotFound) => self.expire(job, GONE_REASON).await,
            Err(error) if past_retention => {
                tracing::info!(error = %error, "no last look possible past retention");
                self.expire(job, RETENTION_REASON).await
            }
            Err(error) => {
                bump(&self.counters.provider_throttled);
                let now = app.clock.now_ms();
                let wait = match &error {
                    ProviderError::RateLimited {
                        retry_after: Some(wait),
                    } => {
                        let wait = *wait + jitter(*wait / 10);
                        self.polls_paused_until
                            .fetch_max(now + duration_ms(wait), Ordering::Relaxed);
                        wait
                    }
                    _ => backoff(job.poll_attempts.min(3)),
                };
                tracing::info!(error = %error, retry_in_ms = duration_ms(wait), "provider unavailable; job left for a later run");
                self.reschedule(job, now + duration_ms(wait), now).await
            }
        }
    }

    async fn apply(
        &self,
        job: &JobRecord,
        update: &ProviderJob,
        past_retention: bool,
    ) -> Result<(), StoreError> {
        let app = self.app;
        if past_retention && !update.status.is_final() {
            return self.expire(job, RETENTION_REASON).await;
        }

        // A poll that only confirms what we know changes no status; skip that write.
        let confirms_status = match update.status {
            ProviderStatus::Created => Some(JobEvent::Submitted),
            ProviderStatus::InProgress => Some(JobEvent::Started),
            _ => None,
        }
        .is_some_and(|event| transition(job.status, event) == Transition::AlreadyDone);
        let outcome = if confirms_status && job.provider_id.as_deref() == Some(update.id.as_str()) {
            FinishOutcome::StillRunning
        } else {
            apply_provider_job(app, job, update).await?
        };

        let now = app.clock.now_ms();
        match outcome {
            FinishOutcome::Changed(status)
            | FinishOutcome::Duplicate(status)
            | FinishOutcome::Ignored(status)
                if status.is_final() =>
            {
                if matches!(outcome, FinishOutcome::Changed(_)) {
                    bump(&self.counters.finished);
                    tracing::info!(status = status.as_str(), "job finished by polling");
                }
                self.mail(job).await
            }
            FinishOutcome::Unusable { count } => {
                bump(&self.counters.unusable_results);
                tracing::info!(
                    count,
                    "provider reported completion without a usable result"
                );
                if past_retention {
                    return self.expire(job, RETENTION_REASON).await;
                }
                // The shared path has already scheduled the next look.
                self.release(&job.id).await
            }
            FinishOutcome::ProviderMismatch | FinishOutcome::UnknownJob => {
                tracing::error!(
                    outcome = outcome.as_str(),
                    "provider answer does not belong to this job"
                );
                bump(&self.counters.errors);
                self.reschedule(job, now + duration_ms(backoff(3)), now)
                    .await
            }
            _ => {
                bump(&self.counters.still_running);
                let next_look = now + duration_ms(app.config.poll_delay(job.poll_attempts));
                let fields = ChangeFields::new()
                    .increment("poll_attempts", 1)
                    .due(app.store.due_shard(&job.id), next_look)
                    .held_by(&self.id);
                app.store
                    .change_fields(&job.id, fields, now)
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn expire(&self, job: &JobRecord, reason: &str) -> Result<(), StoreError> {
        let app = self.app;
        let now = app.clock.now_ms();
        // The lease stays until the e-mail step: only a deferred e-mail needs it released.
        let fields = ChangeFields::new()
            .text("failure_reason", reason)
            .text("mail_state", MailState::Pending.as_str())
            .due(app.store.due_shard(&job.id), now);
        match app
            .store
            .change_status(&job.id, JobEvent::Expired, fields, now)
            .await?
        {
            ChangeOutcome::Applied(expired) => {
                bump(&self.counters.expired);
                tracing::info!(status = "EXPIRED", "job expired");
                self.mail(&expired).await
            }
            ChangeOutcome::NotApplied(_) | ChangeOutcome::Missing => Ok(()),
        }
    }

    async fn mail(&self, job: &JobRecord) -> Result<(), StoreError> {
        match deliver_mail(self.app, &job.id).await? {
            MailOutcome::Sent { .. } => bump(&self.counters.mail_sent),
            MailOutcome::Deferred(_) => {
                bump(&self.counters.mail_retried);
                // The shared path scheduled the retry with backoff; free the job for it.
                self.release(&job.id).await?;
            }
            MailOutcome::Rejected(_) => bump(&self.counters.mail_rejected),
            MailOutcome::NotOurs => {}
        }
        Ok(())
    }

    /// Looks at the job again at `due_at`, changing nothing else, and gives up the lease; `now`
    /// is when that was decided.
    async fn reschedule(&self, job: &JobRecord, due_at: i64, now: i64) -> Result<(), StoreError> {
        let app = self.app;
        let fields = ChangeFields::new()
            .due(app.store.due_shard(&job.id), due_at)
            .held_by(&self.id);
        app.store
            .change_fields(&job.id, fields, now)
            .await
            .map(|_| ())
    }

    /// Gives up the lease so a look scheduled before it runs out is not held back by it.
    async fn release(&self, job_id: &str) -> Result<(), StoreError> {
        let app = self.app;
        let fields = ChangeFields::new().held_by(&self.id);
        app.store
            .change_fields(job_id, fields, app.clock.now_ms())
            .await
            .map(|_| ())
    }

    /// Releases the lease only when the job's next look comes before the lease would end.
    async fn release_if_early(&self, job: &JobRecord) -> Result<(), StoreError> {
        match (job.due_at, job.lease_until) {
            (Some(due_at), Some(lease_until)) if due_at < lease_until => {
                self.release(&job.id).await
            }
            _ => Ok(()),
        }
    }
}

/// Up to `max` of random extra wait, so retries from many jobs and runs spread out.
fn jitter(max: Duration) -> Duration {
    let max = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(0..=max))
}

/// The attention index read as one queue: every shard's pages merged by due time.
struct DueQueue<'a> {
    store: &'a JobStore,
    now: i64,
    page_size: i32,
    shards: Vec<ShardCursor>,
}

/// Where a run is in one shard of the index.
struct ShardCursor {
    name: String,
    buffered: VecDeque<DueJob>,
    next: Option<StartKey>,
    done: bool,
}

impl<'a> DueQueue<'a> {
    fn new(store: &'a JobStore, now: i64, page_size: i32) -> Self {
        let shards = store
            .due_shards()
            .into_iter()
            .map(|name| ShardCursor {
                name,
                buffered: VecDeque::new(),
                next: None,
                done: false,
            })
            .collect();
        Self {
            store,
            now,
            page_size,
            shards,
        }
    }

    /// The job due longest ago across all shards. Shards whose buffered page is used up read
    /// their next page first (concurrently); a shard that cannot be read is left for the next
    /// run and counted as an error.
    async fn next(&mut self, counters: &Counters) -> Option<DueJob> {
        let (store, now, page_size) = (self.store, self.now, self.page_size);
        let refills = self
            .shards
            .iter_mut()
            .filter(|shard| shard.buffered.is_empty() && !shard.done)
            .map(|shard| shard.refill(store, now, page_size, counters));
        join_all(refills).await;

        self.shards
            .iter_mut()
            .filter_map(|shard| {
                let due_at = shard.buffered.front()?.due_at;
                Some((due_at, shard))
            })
            .min_by_key(|(due_at, _)| *due_at)
            .and_then(|(_, shard)| shard.buffered.pop_front())
    }

    /// Whether every shard has been read to its end and handed out.
    fn is_exhausted(&self) -> bool {
        self.shards
            .iter()
            .all(|shard| shard.done && shard.buffered.is_empty())
    }
}

impl ShardCursor {
    async fn refill(&mut self, store: &JobStore, now: i64, page_size: i32, counters: &Counters) {
        while self.buffered.is_empty() && !self.done {
            match store
                .due_jobs(&self.name, now, page_size, self.next.take())
                .await
            {
                Ok(page) => {
                    self.buffered.extend(page.items);
                    self.done = page.next.is_none();
                    self.next = page.next;
                }
                Err(error) => {
                    bump(&counters.errors);
                    tracing::error!(shard = %self.name, error = %error, "reading the attention index failed; shard left for the next run");
                    self.done = true;
                }
            }
        }
    }
}

fn log_summary(summary: &RunSummary, now_ms: i64) {
    tracing::info!(
        due_seen = summary.due_seen,
        claimed = summary.claimed,
        skipped = summary.skipped,
        polled = summary.polled,
        finished = summary.finished,
        still_running = summary.still_running,
        expired = summary.expired,
        submitted = summary.submitted,
        submit_deferred = summary.submit_deferred,
        mail_sent = summary.mail_sent,
        mail_retried = summary.mail_retried,
        mail_rejected = summary.mail_rejected,
        provider_throttled = summary.provider_throttled,
        unusable_results = summary.unusable_results,
        errors = summary.errors,
        abandoned = summary.abandoned,
        stopped_for_deadline = summary.stopped_for_deadline,
        time_left_ms = summary.time_left_ms,
        "reconciler run finished"
    );
    research_relay::metrics::emit_with_units("reconciler", &metric_values(summary), now_ms);
}

/// The summary as embedded metrics: (name, value, CloudWatch unit), one per summary figure.
pub fn metric_values(summary: &RunSummary) -> Vec<(&'static str, f64, &'static str)> {
    let count = |name, value: u64| (name, value as f64, "Count");
    vec![
        count("DueSeen", summary.due_seen),
        count("Claimed", summary.claimed),
        count("Skipped", summary.skipped),
        count("Polled", summary.polled),
        count("Finished", summary.finished),
        count("StillRunning", summary.still_running),
        count("Expired", summary.expired),
        count("Submitted", summary.submitted),
        count("SubmitDeferred", summary.submit_deferred),
        count("MailSent", summary.mail_sent),
        count("MailRetried", summary.mail_retried),
        count("MailRejected", summary.mail_rejected),
        count("ProviderThrottled", summary.provider_throttled),
        count("UnusableResults", summary.unusable_results),
        count("Errors", summary.errors),
        count("Abandoned", summary.abandoned),
        count(
            "StoppedForDeadline",
            u64::from(summary.stopped_for_deadline),
        ),
        ("TimeLeft", summary.time_left_ms as f64, "Milliseconds"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_summary_figure_is_a_metric() {
        let summary = RunSummary {
            due_seen: 3,
            stopped_for_deadline: true,
            time_left_ms: 1500,
            ..RunSummary::default()
        };

        let metrics = metric_values(&summary);
        let line = research_relay::metrics::render_with_units("reconciler", &metrics, 1000);

        let fields = serde_json::to_value(&summary).expect("summary serializes");
        let figures = fields.as_object().expect("an object").len();
        assert_eq!(metrics.len(), figures);
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed["DueSeen"], 3.0);
        assert_eq!(parsed["StoppedForDeadline"], 1.0);
        assert_eq!(parsed["TimeLeft"], 1500.0);
        let declared = &parsed["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(declared.as_array().map(Vec::len), Some(figures));
        assert!(
            declared
                .as_array()
                .into_iter()
                .flatten()
                .any(|metric| metric["Name"] == "TimeLeft" && metric["Unit"] == "Milliseconds")
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let bound = Duration::from_millis(250);

        let samples: Vec<Duration> = (0..200).map(|_| jitter(bound)).collect();

        assert!(samples.iter().all(|&sample| sample <= bound));
        assert!(samples.iter().any(|&sample| sample > Duration::ZERO));
    }
}
