//! What the webhook path writes to the logs: a lost race at `info`, a rejection as a code, and
//! never a signature, a key, an address or a report. A test binary of its own, because it
//! installs a process-wide subscriber (see [`CapturedLogs`]).
//!
//! Needs the emulator named by `RESEARCH_RELAY_TEST_MOTO` (`make test` starts it).

#[allow(dead_code)]
#[path = "webhook/support.rs"]
mod support;

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Value, json};

use support::{
    Writes, completed, dynamodb_proxy, held_job, held_stack, mails, signature, store_at,
    webhook_event,
};

/// Everything the process logs, through the functions' own filter (which holds the AWS SDK's
/// HTTP layers at `info`), for tests that check what is (not) logged.
///
/// The subscriber is global and installed once: `tracing` caches per call site whether anyone
/// listens, process-wide, so a subscriber scoped to one test's thread can miss events whose
/// call sites another thread registered first. Tests that read the logs take turns through
/// [`CapturedLogs::start`] and find their own lines by job id.
pub struct CapturedLogs {
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static LOG_BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static LOG_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG_BUFFER
            .lock()
            .expect("log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Waits for its turn, then captures from an empty buffer until dropped.
    pub async fn start() -> Self {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            tracing_subscriber::fmt()
                .with_env_filter(research_relay::telemetry::env_filter("trace"))
                .with_ansi(false)
                .json()
                .with_writer(|| LogWriter)
                .init();
        });
        let turn = LOG_TURN.lock().await;
        LOG_BUFFER.lock().expect("log buffer").clear();
        Self { _turn: turn }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&LOG_BUFFER.lock().expect("log buffer")).into_owned()
    }
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn c14_the_loser_of_a_race_answers_200_and_logs_at_info() {
    let stack = held_stack().await;
    let job = held_job(&stack, "c14", "Two copies at once").await;
    let body = completed(&job);
    let value = signature(&stack, &job.id, &body);
    let copy = || {
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"x-perplexity-signature": value}),
        )
    };
    // The emulator is made to apply each write atomically, as DynamoDB does (see the proxy).
    let mut app = stack.app().clone();
    app.store = store_at(&stack, &dynamodb_proxy(&stack.moto, Writes::Pass).await).await;
    let logs = CapturedLogs::start().await;

    let (first, second) = tokio::join!(
        webhook_receiver::handle(&app, copy()),
        webhook_receiver::handle(&app, copy())
    );

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let lines = logs.lines();
    let applied: Vec<&str> = lines
        .iter()
        .filter(|line| line["fields"]["message"] == "webhook applied")
        .map(|line| text_of(&line["fields"]["outcome"]))
        .collect();
    let mut outcomes = applied.clone();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["changed", "duplicate"], "{}", logs.text());
    for line in lines
        .iter()
        .filter(|line| line["fields"]["message"] == "webhook applied")
    {
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["job_id"], job.id.as_str(), "{line}");
    }
    let loud: Vec<&Value> = lines
        .iter()
        .filter(|line| line.to_string().contains(&job.id))
        .filter(|line| matches!(line["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
    assert_eq!(mails(&stack, &job.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_carry_codes_never_signatures_keys_addresses_or_reports() {
    let stack = held_stack().await;
    let job = held_job(&stack, "quiet", "What do the logs say?").await;
    let body = completed(&job);
    let good = signature(&stack, &job.id, &body);
    let forged = "ab".repeat(32);
    let logs = CapturedLogs::start().await;

    let rejected = webhook_receiver::handle(
        stack.app(),
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"x-perplexity-signature": forged}),
        ),
    )
    .await;
    let accepted = webhook_receiver::handle(
        stack.app(),
        webhook_event(
            &job.id,
            &body,
            false,
            json!({"x-perplexity-signature": good}),
        ),
    )
    .await;

    assert_eq!(
        (rejected.status().as_u16(), accepted.status().as_u16()),
        (401, 200)
    );
    let text = logs.text();
    let rejection = logs
        .lines()
        .into_iter()
        .find(|line| line["fields"]["message"] == "webhook rejected")
        .expect("a rejection line");
    assert_eq!(rejection["level"], "WARN");
    assert_eq!(rejection["fields"]["reason"], "signature_mismatch");
    for secret in [
        forged.as_str(),
        good.as_str(),
        stack.app().signing_keys.current.expose(),
        job.recipient.as_str(),
        "Findings",
        "Planning searches",
    ] {
        let holding: Vec<&str> = text.lines().filter(|line| line.contains(secret)).collect();
        assert!(holding.is_empty(), "the logs hold {secret:?}: {holding:?}");
    }
}
