//! The simulator's shared state and every operation the two HTTP APIs perform on it.
//!
//! All state sits behind one mutex that is only held for short, synchronous sections: nothing
//! awaits while holding it. Webhook deliveries run as their own tasks and come back to the
//! mutex only to record each attempt. A reset bumps an epoch number; deliveries started before
//! it notice and stop, so one test's leftovers never show up in the next test's statistics.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::{SimClock, duration_ms, to_secs};
use crate::config::SimulatorConfig;
use crate::error::ApiError;
use crate::faults::{
    FaultEndpoint, HttpFault, InvalidControl, JobRule, Outcome, ResponseMode, WebhookMode,
};
use crate::job::{
    DEFAULT_FAIL_MESSAGE, Job, JobPlan, JobSummary, JobView, WebhookTarget, new_uuid,
};
use crate::report::{self, ReportSpec};
use crate::webhook::{self, Answer};

/// Provider calls counted per endpoint (faulted and refused calls included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// `POST /async/chat/completions`.
    pub create: u64,
    /// `GET /async/chat/completions/{id}`.
    pub get: u64,
    /// `GET /async/chat/completions`.
    pub list: u64,
    /// `DELETE /async/chat/completions/{id}`.
    pub delete: u64,
}

/// Counters a test asserts on to prove what the product did (or did not) ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Provider calls per endpoint.
    pub requests: RequestCounts,
    /// Jobs actually created (an idempotent replay creates none).
    pub jobs_created: u64,
    /// Creates answered with an existing job because the idempotency key was known.
    pub idempotent_replays: u64,
    /// Provider calls answered by an injected HTTP fault.
    pub http_faults_served: u64,
    /// Scheduled webhook POSTs sent, retries included (deliver-now calls excluded).
    pub webhook_attempts: u64,
    /// Scheduled webhook POSTs that got a non-2xx answer or no answer.
    pub webhook_attempts_failed: u64,
    /// Deliveries (one per copy) that ended with a 2xx answer.
    pub deliveries_succeeded: u64,
    /// Deliveries given up after the last attempt failed.
    pub deliveries_failed: u64,
    /// Webhooks not sent because a rule said `drop`.
    pub webhooks_dropped: u64,
    /// Webhooks sent through `POST /_sim/jobs/{id}/deliver`.
    pub manual_deliveries: u64,
}

/// Why an entry is in the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// An attempt of the automatic delivery when a job finished.
    Scheduled,
    /// A deliver-now request from the control API.
    Manual,
    /// A finished job whose webhook a rule dropped (no request was sent).
    Dropped,
}

/// One entry of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The provider job id (`job_id` of the payload).
    pub job_id: String,
    /// The idempotency key the job was created with (the product's own job id).
    pub idempotency_key: Option<String>,
    /// Scheduled attempt, manual delivery or dropped webhook.
    pub kind: DeliveryKind,
    /// 1, or 2 for the second copy of a duplicated delivery.
    pub copy: u8,
    /// 1-based attempt number within the copy (0 for a dropped webhook).
    pub attempt: u32,
    /// HTTP status the receiver answered; `None` when no answer came.
    pub status: Option<u16>,
    /// What went wrong when no answer came.
    pub error: Option<String>,
    /// Whether this was the last attempt of a delivery that never succeeded.
    pub gave_up: bool,
    /// Simulator time of the attempt, Unix milliseconds.
    pub at_ms: i64,
}

/// A job as the control API shows it: the provider's job object plus what only the simulator
/// knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimJob {
    /// The job object exactly as `GET /async/chat/completions/{id}` would show it now.
    pub job: Value,
    /// The idempotency key it was created with.
    pub idempotency_key: Option<String>,
    /// The last user message, which rules match against.
    pub question: String,
    /// Where its webhook goes (the secret is never shown).
    pub webhook_url: Option<String>,
    /// The rule that shaped it, if any.
    pub rule_id: Option<u64>,
    /// Whether it is past retention (the provider API answers 404 for it).
    pub expired: bool,
    /// Whether it was cancelled.
    pub cancelled: bool,
}

/// A rule with its bookkeeping, as the control API lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoredRule {
    pub id: u64,
    pub applied: u32,
    #[serde(flatten)]
    pub rule: JobRule,
}

impl StoredRule {
    fn has_uses_left(&self) -> bool {
        self.rule.times.is_none_or(|times| self.applied < times)
    }
}

/// A validated create request.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub model: String,
    pub question: String,
    pub idempotency_key: Option<String>,
    pub webhook: Option<WebhookTarget>,
}

/// How deliver-now signs its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SignatureChoice {
    #[default]
    Valid,
    Wrong,
    None,
}

/// A deliver-now request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliverNow {
    /// A JSON value to send, or a string sent verbatim; default: the job's real payload.
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub signature: SignatureChoice,
    /// Another receiver URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Another signing secret (needed when the job has no webhook).
    #[serde(default)]
    pub secret: Option<String>,
}

/// One scheduled delivery copy in flight.
#[derive(Debug, Clone)]
struct Delivery {
    job_id: String,
    idempotency_key: Option<String>,
    url: String,
    body: Bytes,
    signature: String,
    copy: u8,
    not_before_ms: i64,
    epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Job>,
    /// (API key, idempotency key) -> job id.
    idempotency: HashMap<(String, String), String>,
    rules: Vec<StoredRule>,
    next_rule_id: u64,
    http_faults: Vec<HttpFault>,
    stats: Stats,
    deliveries: Vec<DeliveryRecord>,
    next_seq: u64,
    epoch: u64,
}

#[derive(Debug)]
struct Inner {
    config: SimulatorConfig,
    clock: SimClock,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// A handle on the simulator's state; cheap to clone, shared by handlers and tasks.
#[derive(Debug, Clone)]
pub(crate) struct Simulator {
    inner: Arc<Inner>,
}

impl Simulator {
    pub(crate) fn new(config: SimulatorConfig) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.webhook_timeout)
            .user_agent(concat!("perplexity-simulator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                clock: SimClock::new(),
                http,
                state: Mutex::new(State::default()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole simulator down with it: the state is only
        // counters and maps, still usable after a half-finished update.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &SimulatorConfig {
        &self.inner.config
    }

    fn retention_ms(&self) -> i64 {
        duration_ms(self.inner.config.retention)
    }

    // --- provider API -------------------------------------------------------------------

    /// Counts a provider call (before auth and faults, so refused calls count too).
    pub(crate) fn count_call(&self, endpoint: FaultEndpoint) {
        let mut state = self.lock();
        let counts = &mut state.stats.requests;
        match endpoint {
            FaultEndpoint::Create => counts.create += 1,
            FaultEndpoint::Get => counts.get += 1,
            FaultEndpoint::List => counts.list += 1,
            FaultEndpoint::Delete => counts.delete += 1,
            FaultEndpoint::Any => {}
        }
    }

    /// Answers the call with the first armed fault for `endpoint`, using it up.
    pub(crate) fn take_fault(&self, endpoint: FaultEndpoint) -> Result<(), ApiError> {
        let mut state = self.lock();
        let Some(index) = state
            .http_faults
            .iter()
            .position(|fault| fault.endpoint.covers(endpoint))
        else {
            return Ok(());
        };
        let fault = state.http_faults[index].clone();
        if fault.times <= 1 {
            state.http_faults.remove(index);
        } else {
            state.http_faults[index].times -= 1;
        }
        state.stats.http_faults_served += 1;
        drop(state);
        tracing::info!(
            ?endpoint,
            status = fault.status,
            "answering with injected fault"
        );
        let status = http::StatusCode::from_u16(fault.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        Err(ApiError::injected(status, fault.retry_after_secs))
    }

    /// Creates a job, or returns the one this API key already created with the same
    /// idempotency key.
    pub(crate) fn create_job(&self, api_key: &str, new: NewJob) -> JobView {
        let config = &self.inner.config;
        let retention_ms = self.retention_ms();
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = self.inner.clock.now_ms();

        if let Some(key) = &new.idempotency_key {
            let existing = state
                .idempotency
                .get(&(api_key.to_owned(), key.clone()))
                .and_then(|id| state.jobs.get(id))
                .filter(|job| !job.is_expired(now, retention_ms));
            if let Some(job) = existing {
                state.stats.idempotent_replays += 1;
                tracing::info!(job_id = %job.id, "idempotent replay of create");
                return job.view(now);
            }
        }

        let (rule_id, rule) =
            match state.rules.iter_mut().find(|stored| {
                stored.has_uses_left() && stored.rule.matches_question(&new.question)
            }) {
                Some(stored) => {
                    stored.applied += 1;
                    (Some(stored.id), stored.rule.clone())
                }
                None => (None, JobRule::default()),
            };

        let start_after = rule
            .start_after_ms
            .map_or(duration_ms(config.start_after), ms_i64);
        let complete_after = rule
            .complete_after_ms
            .map_or(duration_ms(config.complete_after), ms_i64)
            .max(start_after);
        let outcome = rule.outcome.unwrap_or_default();
        let id = new_uuid();
        let finish_ms = now.saturating_add(complete_after);
        let response_mode = rule.response.unwrap_or_default();
        let response = (outcome == Outcome::Complete && response_mode != ResponseMode::Missing)
            .then(|| {
                let mut completion = report::completion(&ReportSpec {
                    model: &new.model,
                    question: &new.question,
                    sources: rule.sources.unwrap_or(config.default_sources),
                    report_bytes: rule.report_bytes,
                    created_secs: to_secs(finish_ms),
                    seed: seed_of(&id),
                });
                if response_mode == ResponseMode::Empty
                    && let Some(content) = completion.pointer_mut("/choices/0/message/content")
                {
                    *content = Value::String(String::new());
                }
                Arc::new(completion)
            });
        let seq = state.next_seq;
        state.next_seq += 1;
        let job = Job {
            id: id.clone(),
            seq,
            api_key: api_key.to_owned(),
            model: new.model,
            question: new.question,
            idempotency_key: new.idempotency_key,
            webhook: new.webhook,
            plan: JobPlan {
                webhook: rule.webhook.unwrap_or_default(),
                webhook_delay_ms: rule.webhook_delay_ms.map_or(0, ms_i64),
                outcome,
                fail_message: rule
                    .fail_message
                    .unwrap_or_else(|| DEFAULT_FAIL_MESSAGE.to_owned()),
                rule_id,
            },
            created_ms: now,
            start_ms: now.saturating_add(start_after),
            finish_ms,
            cancelled_ms: None,
            finish_handled: false,
            response,
        };
        if let Some(key) = &job.idempotency_key {
            state
                .idempotency
                .insert((api_key.to_owned(), key.clone()), id.clone());
        }
        state.stats.jobs_created += 1;
        let view = job.view(now);
        tracing::info!(job_id = %id, model = %job.model, ?rule_id, "job created");
        state.jobs.insert(id, job);
        view
    }

    /// The job object, or 404 for unknown and expired jobs.
    pub(crate) fn get_job(&self, id: &str) -> Result<JobView, ApiError> {
        let state = self.lock();
        let now = self.inner.clock.now_ms();
        state
            .jobs
            .get(id)
            .filter(|job| !job.is_expired(now, self.retention_ms()))
            .map(|job| job.view(now))
            .ok_or_else(|| job_not_found(id))
    }

    /// One page of this API key's jobs, newest first, and the token for the next page.
    pub(crate) fn list_jobs(
        &self,
        api_key: &str,
        limit: usize,
        before_seq: Option<u64>,
    ) -> (Vec<JobSummary>, Option<u64>) {
        let state = self.lock();
        let now = self.inner.clock.now_ms();
        let retention_ms = self.retention_ms();
        let mut mine: Vec<&Job> = state
            .jobs
            .values()
            .filter(|job| job.api_key == api_key && !job.is_expired(now, retention_ms))
            .filter(|job| before_seq.is_none_or(|before| job.seq < before))
            .collect();
        mine.sort_by_key(|job| std::cmp::Reverse(job.seq));
        let more = mine.len() > limit;
        mine.truncate(limit);
        let next = if more {
            mine.last().map(|job| job.seq)
        } else {
            None
        };
        (mine.iter().map(|job| job.summary(now)).collect(), next)
    }

    /// Cancels a job that has not finished; a finished job is answered unchanged.
    pub(crate) fn cancel_job(&self, id: &str) -> Result<JobView, ApiError> {
        let mut state = self.lock();
        let now = self.inner.clock.now_ms();
        let retention_ms = self.retention_ms();
        let job = state
            .jobs
            .get_mut(id)
            .filter(|job| !job.is_expired(now, retention_ms))
            .ok_or_else(|| job_not_found(id))?;
        if !job.status_at(now).is_final() {
            job.cancelled_ms = Some(now);
            job.finish_handled = true;
            tracing::info!(job_id = %id, "job cancelled");
        }
        Ok(job.view(now))
    }

    // --- lifecycle and webhooks ---------------------------------------------------------

    /// Acts on every job that has finished since the last look: schedules, duplicates or
    /// drops its webhook. Called by the ticker and right after a clock move.
    pub(crate) fn process_due(&self) {
        let mut scheduled = Vec::new();
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let now = self.inner.clock.now_ms();
            for job in state.jobs.values_mut() {
                if job.finish_handled || job.cancelled_ms.is_some() || now < job.finish_ms {
                    continue;
                }
                job.finish_handled = true;
                tracing::info!(job_id = %job.id, status = ?job.status_at(now), "job finished");
                let Some(target) = &job.webhook else {
                    continue;
                };
                if job.plan.webhook == WebhookMode::Drop {
                    tracing::info!(job_id = %job.id, "webhook dropped by rule");
                    state.stats.webhooks_dropped += 1;
                    state.deliveries.push(DeliveryRecord {
                        job_id: job.id.clone(),
                        idempotency_key: job.idempotency_key.clone(),
                        kind: DeliveryKind::Dropped,
                        copy: 1,
                        attempt: 0,
                        status: None,
                        error: None,
                        gave_up: false,
                        at_ms: now,
                    });
                    continue;
                }
                let body = match serde_json::to_vec(&job.webhook_payload(now)) {
                    Ok(body) => Bytes::from(body),
                    Err(err) => {
                        tracing::error!(job_id = %job.id, error = %err, "cannot serialize webhook");
                        continue;
                    }
                };
                let signature = webhook::signature(&target.secret, &body);
                let copies = if job.plan.webhook == WebhookMode::Duplicate {
                    2
                } else {
                    1
                };
                for copy in 1..=copies {
                    scheduled.push(Delivery {
                        job_id: job.id.clone(),
                        idempotency_key: job.idempotency_key.clone(),
                        url: target.url.clone(),
                        body: body.clone(),
                        signature: signature.clone(),
                        copy,
                        not_before_ms: job.finish_ms.saturating_add(job.plan.webhook_delay_ms),
                        epoch: state.epoch,
                    });
                }
            }
        }
        for delivery in scheduled {
            tokio::spawn(self.clone().run_delivery(delivery));
        }
    }

    /// Sends one delivery copy, retrying with backoff until a 2xx or the last attempt.
    async fn run_delivery(self, delivery: Delivery) {
        let config = &self.inner.config;
        let clock = &self.inner.clock;
        clock.sleep_until(delivery.not_before_ms).await;
        let max_attempts = config.webhook_max_attempts.max(1);
        for attempt in 1..=max_attempts {
            if self.epoch() != delivery.epoch {
                return;
            }
            let result = webhook::post(
                &self.inner.http,
                &delivery.url,
                delivery.body.clone(),
                Some(&delivery.signature),
            )
            .await;
            let ok = result.as_ref().is_ok_and(Answer::is_success);
            let gave_up = !ok && attempt == max_attempts;
            self.record_attempt(&delivery, attempt, &result, gave_up);
            if ok || gave_up {
                return;
            }
            let wait =
                webhook::backoff(attempt, config.webhook_retry_base, config.webhook_retry_max);
            clock
                .sleep_until(clock.now_ms().saturating_add(duration_ms(wait)))
                .await;
        }
    }

    fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn record_attempt(
        &self,
        delivery: &Delivery,
        attempt: u32,
        result: &Result<Answer, String>,
        gave_up: bool,
    ) {
        let (status, error) = match result {
            Ok(answer) => (Some(answer.status), None),
            Err(err) => (None, Some(err.clone())),
        };
        let ok = result.as_ref().is_ok_and(Answer::is_success);
        let mut state = self.lock();
        if state.epoch != delivery.epoch {
            return;
        }
        state.stats.webhook_attempts += 1;
        if ok {
            state.stats.deliveries_succeeded += 1;
            tracing::info!(job_id = %delivery.job_id, attempt, ?status, copy = delivery.copy, "webhook delivered");
        } else {
            state.stats.webhook_attempts_failed += 1;
            if gave_up {
                state.stats.deliveries_failed += 1;
                tracing::warn!(job_id = %delivery.job_id, attempt, ?status, ?error, copy = delivery.copy, "webhook given up");
            } else {
                tracing::info!(job_id = %delivery.job_id, attempt, ?status, ?error, copy = delivery.copy, "webhook attempt failed, will retry");
            }
        }
        let at_ms = self.inner.clock.now_ms();
        state.deliveries.push(DeliveryRecord {
            job_id: delivery.job_id.clone(),
            idempotency_key: delivery.idempotency_key.clone(),
            kind: DeliveryKind::Scheduled,
            copy: delivery.copy,
            attempt,
            status,
            error,
            gave_up,
            at_ms,
        });
    }

    /// Sends one webhook for a job right now, as the test describes it, without retries.
    pub(crate) async fn deliver_now(
        &self,
        id: &str,
        request: DeliverNow,
    ) -> Result<Answer, ApiError> {
        let (target, payload, idempotency_key) = {
            let state = self.lock();
            let now = self.inner.clock.now_ms();
            let job = state.jobs.get(id).ok_or_else(|| job_not_found(id))?;
            let payload = serde_json::to_vec(&job.webhook_payload(now))
                .map_err(|err| ApiError::bad_request(format!("cannot serialize payload: {err}")))?;
            (job.webhook.clone(), payload, job.idempotency_key.clone())
        };
        let url = request
            .url
            .or_else(|| target.as_ref().map(|t| t.url.clone()))
            .ok_or_else(|| {
                ApiError::bad_request("the job has no webhook url: pass \"url\" in the request")
            })?;
        webhook::check_url(&url, self.inner.config.loopback_webhooks_only)
            .map_err(ApiError::bad_request)?;
        let body = match request.body {
            None => payload,
            Some(Value::String(raw)) => raw.into_bytes(),
            Some(value) => serde_json::to_vec(&value)
                .map_err(|err| ApiError::bad_request(format!("cannot serialize body: {err}")))?,
        };
        let secret = request.secret.or_else(|| target.map(|t| t.secret));
        let signature = match (request.signature, secret) {
            (SignatureChoice::None, _) => None,
            (SignatureChoice::Valid, Some(secret)) => Some(webhook::signature(&secret, &body)),
            (SignatureChoice::Wrong, Some(secret)) => {
                Some(webhook::signature(&format!("{secret}-wrong"), &body))
            }
            (_, None) => {
                return Err(ApiError::bad_request(
                    "the job has no webhook secret: pass \"secret\" or \"signature\": \"none\"",
                ));
            }
        };

        let result = webhook::post(
            &self.inner.http,
            &url,
            Bytes::from(body),
            signature.as_deref(),
        )
        .await;

        let (status, error) = match &result {
            Ok(answer) => (Some(answer.status), None),
            Err(err) => (None, Some(err.clone())),
        };
        {
            let mut state = self.lock();
            state.stats.manual_deliveries += 1;
            let at_ms = self.inner.clock.now_ms();
            state.deliveries.push(DeliveryRecord {
                job_id: id.to_owned(),
                idempotency_key,
                kind: DeliveryKind::Manual,
                copy: 1,
                attempt: 1,
                status,
                error,
                gave_up: false,
                at_ms,
            });
        }
        tracing::info!(job_id = %id, ?status, "manual webhook sent");
        result.map_err(|err| ApiError::bad_gateway(format!("webhook not delivered: {err}")))
    }

    // --- control API ---------------------------------------------------------------------

    /// Adds a rule at the end of the list and returns it with its id.
    pub(crate) fn add_rule(&self, rule: JobRule) -> Result<StoredRule, InvalidControl> {
        rule.validate()?;
        let mut state = self.lock();
        state.next_rule_id += 1;
        let stored = StoredRule {
            id: state.next_rule_id,
            applied: 0,
            rule,
        };
        state.rules.push(stored.clone());
        Ok(stored)
    }

    pub(crate) fn rules(&self) -> Vec<StoredRule> {
        self.lock().rules.clone()
    }

    pub(crate) fn clear_rules(&self) {
        self.lock().rules.clear();
    }

    pub(crate) fn add_http_fault(&self, fault: HttpFault) -> Result<(), InvalidControl> {
        fault.validate()?;
        self.lock().http_faults.push(fault);
        Ok(())
    }

    pub(crate) fn http_faults(&self) -> Vec<HttpFault> {
        self.lock().http_faults.clone()
    }

    pub(crate) fn clear_http_faults(&self) {
        self.lock().http_faults.clear();
    }

    /// Moves the clock forward and acts on every job that finished in the jump.
    pub(crate) fn advance_clock(&self, by_ms: i64) {
        self.inner.clock.advance(by_ms);
        tracing::info!(
            by_ms,
            offset_ms = self.inner.clock.offset_ms(),
            "clock advanced"
        );
        self.process_due();
    }

    /// Simulator time and offset, in milliseconds.
    pub(crate) fn clock_reading(&self) -> (i64, i64) {
        (self.inner.clock.now_ms(), self.inner.clock.offset_ms())
    }

    /// Jobs, newest first, optionally only those created with `idempotency_key`.
    pub(crate) fn jobs(&self, idempotency_key: Option<&str>) -> Vec<SimJob> {
        let state = self.lock();
        let now = self.inner.clock.now_ms();
        let retention_ms = self.retention_ms();
        let mut jobs: Vec<&Job> = state
            .jobs
            .values()
            .filter(|job| {
                idempotency_key.is_none_or(|key| job.idempotency_key.as_deref() == Some(key))
            })
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.seq));
        jobs.into_iter()
            .map(|job| sim_job(job, now, retention_ms))
            .collect()
    }

    /// One job by provider id, expired ones included.
    pub(crate) fn job(&self, id: &str) -> Option<SimJob> {
        let state = self.lock();
        let now = self.inner.clock.now_ms();
        state
            .jobs
            .get(id)
            .map(|job| sim_job(job, now, self.retention_ms()))
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The delivery log, oldest first, optionally for one job or idempotency key.
    pub(crate) fn deliveries(
        &self,
        job_id: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Vec<DeliveryRecord> {
        self.lock()
            .deliveries
            .iter()
            .filter(|record| job_id.is_none_or(|id| record.job_id == id))
            .filter(|record| {
                idempotency_key.is_none_or(|key| record.idempotency_key.as_deref() == Some(key))
            })
            .cloned()
            .collect()
    }

    /// Forgets jobs, rules, faults, statistics and the delivery log, stops deliveries in
    /// flight and puts the clock back on wall time.
    pub(crate) fn reset(&self) {
        {
            let mut state = self.lock();
            let epoch = state.epoch + 1;
            *state = State {
                epoch,
                ..State::default()
            };
        }
        self.inner.clock.reset();
        tracing::info!("simulator reset");
    }
}

fn sim_job(job: &Job, now: i64, retention_ms: i64) -> SimJob {
    SimJob {
        job: serde_json::to_value(job.view(now)).unwrap_or(Value::Null),
        idempotency_key: job.idempotency_key.clone(),
        question: job.question.clone(),
        webhook_url: job.webhook.as_ref().map(|target| target.url.clone()),
        rule_id: job.plan.rule_id,
        expired: job.is_expired(now, retention_ms),
        cancelled: job.cancelled_ms.is_some(),
    }
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Async request '{id}' not found."))
}

/// A rule's millisecond value as the clock's signed milliseconds.
fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A seed from the job id, so generation needs no extra state and a job has one report.
fn seed_of(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}
