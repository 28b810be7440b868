//! Times reconciler runs over many due jobs against a slow provider and counts what they ask of
//! DynamoDB. It prints figures and asserts nothing; `make bench-reconciler` runs it against an
//! emulator it starts for the purpose.
//!
//! Every job's webhook is lost, the simulator answers each job GET after a fixed latency, and
//! the app clock is moved so that all jobs are due. One run with the configured concurrency
//! handles the large batch; a run with concurrency 1 handles a smaller batch and is extrapolated
//! to the large one, since a serial run over the large batch would take minutes.
//!
//! ```text
//! reconciler_bench [--jobs N] [--serial-jobs N] [--delay-ms N] [--concurrency N]
//!                  [--emulator-pid PID]
//! ```
//! Defaults: 1000 jobs, 100 serial jobs, 100 ms per GET, the product's default concurrency (16).
//! With `--emulator-pid` (Linux), it also reports how much CPU the emulator used during each
//! run: the emulator serves one request at a time, so once it is busy all the time the run is
//! bound by the emulator and not by the reconciler.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use local_front::counting::{DynamoCounter, DynamoCounts};
use local_front::testkit::{StackOptions, TestStack};
use perplexity_simulator::{JobRule, SimulatorConfig, WebhookMode};
use reconciler::RunSummary;
use research_relay::app::App;
use research_relay::mailer::Mailer;
use research_relay::provider::ResearchProvider;
use serde_json::json;

struct Options {
    jobs: usize,
    serial_jobs: usize,
    delay: Duration,
    concurrency: Option<usize>,
    emulator_pid: Option<u32>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        jobs: 1000,
        serial_jobs: 100,
        delay: Duration::from_millis(100),
        concurrency: None,
        emulator_pid: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || -> Result<u64, String> {
            let text = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{flag}: '{text}' is not a whole number"))
        };
        match flag.as_str() {
            "--jobs" => options.jobs = value()? as usize,
            "--serial-jobs" => options.serial_jobs = value()? as usize,
            "--delay-ms" => options.delay = Duration::from_millis(value()?),
            "--concurrency" => options.concurrency = Some(value()? as usize),
            "--emulator-pid" => options.emulator_pid = Some(value()? as u32),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(options)
}

/// CPU time a process has used so far, from `/proc/PID/stat` (user + system), on Linux.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, 100 per second on every mainstream configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// What one timed run did.
struct Measured {
    jobs: usize,
    wall: Duration,
    gets: u64,
    dynamodb: DynamoCounts,
    summary: RunSummary,
    emulator_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
}

impl Measured {
    fn print(&self, label: &str) {
        let per_job = self.dynamodb.total() as f64 / self.jobs.max(1) as f64;
        println!(
            "{label}: {} jobs in {:.2} s ({:.0} jobs/s); provider GETs {}; DynamoDB requests {} ({per_job:.2} per job) {:?}, {} index items read",
            self.jobs,
            self.wall.as_secs_f64(),
            self.jobs as f64 / self.wall.as_secs_f64().max(f64::EPSILON),
            self.gets,
            self.dynamodb.total(),
            self.dynamodb.requests,
            self.dynamodb.items_read,
        );
        println!(
            "{label}: finished {}, e-mails sent {}, errors {}, stopped for deadline {}",
            self.summary.finished,
            self.summary.mail_sent,
            self.summary.errors,
            self.summary.stopped_for_deadline
        );
        if let (Some(emulator), Some(own)) = (self.emulator_cpu, self.own_cpu) {
            println!(
                "{label}: CPU used during the run: emulator {:.1} s ({:.0}% of the wall time); this process (reconciler, simulator, front) {:.1} s",
                emulator.as_secs_f64(),
                100.0 * emulator.as_secs_f64() / self.wall.as_secs_f64().max(f64::EPSILON),
                own.as_secs_f64()
            );
        }
    }
}

/// Creates `count` jobs through the API, one at a time (the emulator cannot take concurrent
/// transactions on one table), and makes them due with the provider finished.
async fn prepare<M: Mailer + 'static>(stack: &TestStack<M>, count: usize) -> Result<(), String> {
    let token = stack.token("bench", "bench@example.com");
    let body = json!({"query": "How do heat pumps perform in cold climates?"}).to_string();
    for _ in 0..count {
        let answer = stack.submit(&token, &body, None).await;
        if answer.status != 202 {
            return Err(format!("creating a job answered {}", answer.status));
        }
    }
    stack.simulator.advance_clock(Duration::from_secs(3600));
    stack.app().clock.advance_ms(10_000);
    Ok(())
}

async fn measure<P: ResearchProvider, M: Mailer + 'static>(
    stack: &TestStack<M>,
    app: &App<P, M>,
    counter: &DynamoCounter,
    jobs: usize,
    run_id: &str,
    emulator_pid: Option<u32>,
) -> Measured {
    let emulator = emulator_pid.map(|pid| pid.to_string());
    let cpu = || {
        let emulator = emulator.as_deref().and_then(cpu_time);
        (emulator, cpu_time("self"))
    };
    let gets_before = stack.simulator.stats().requests.get;
    let counts_before = counter.snapshot();
    let (emulator_before, own_before) = cpu();
    let started = Instant::now();

    let summary = reconciler::run(app, Instant::now() + Duration::from_secs(900), run_id).await;

    let wall = started.elapsed();
    let (emulator_after, own_after) = cpu();
    let used =
        |before: Option<Duration>, after: Option<Duration>| Some(after?.saturating_sub(before?));
    Measured {
        jobs,
        wall,
        gets: stack.simulator.stats().requests.get - gets_before,
        dynamodb: counter.snapshot().since(&counts_before),
        summary,
        emulator_cpu: used(emulator_before, emulator_after),
        own_cpu: used(own_before, own_after),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!(
                "{message}\nusage: reconciler_bench [--jobs N] [--serial-jobs N] [--delay-ms N] [--concurrency N] [--emulator-pid PID]"
            );
            return ExitCode::from(2);
        }
    };
    let counter = DynamoCounter::new();
    let mut env = HashMap::from([("DAILY_JOB_QUOTA".to_owned(), "1000000".to_owned())]);
    if let Some(concurrency) = options.concurrency {
        env.insert("RECONCILE_CONCURRENCY".into(), concurrency.to_string());
    }
    let stack = TestStack::start_with(StackOptions {
        env,
        simulator: SimulatorConfig {
            get_delay: options.delay,
            ..StackOptions::default().simulator
        },
        dynamodb_interceptors: vec![counter.interceptor()],
        ..StackOptions::default()
    })
    .await;
    if let Err(error) = stack.simulator.add_rule(JobRule {
        webhook: Some(WebhookMode::Drop),
        ..JobRule::default()
    }) {
        eprintln!("simulator rule refused: {error}");
        return ExitCode::FAILURE;
    }
    let concurrency = stack.app().config.reconcile_concurrency;
    println!(
        "reconciler benchmark: provider answers each GET after {} ms; every webhook lost",
        options.delay.as_millis()
    );

    let mut serial_app = stack.app().clone();
    serial_app.config.reconcile_concurrency = 1;
    if let Err(error) = prepare(&stack, options.serial_jobs).await {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let serial = measure(
        &stack,
        &serial_app,
        &counter,
        options.serial_jobs,
        "bench-serial",
        options.emulator_pid,
    )
    .await;

    if let Err(error) = prepare(&stack, options.jobs).await {
        eprintln!("{error}");
        return ExitCode::FAILURE;
    }
    let parallel = measure(
        &stack,
        stack.app(),
        &counter,
        options.jobs,
        "bench-parallel",
        options.emulator_pid,
    )
    .await;

    parallel.print(&format!("concurrency {concurrency}"));
    serial.print("concurrency 1");
    let serial_per_job = serial.wall.as_secs_f64() / serial.jobs.max(1) as f64;
    let serial_estimate = serial_per_job * options.jobs as f64;
    println!(
        "concurrency 1 extrapolated to {} jobs: {serial_estimate:.1} s ({:.0} ms per job, measured on {} jobs)",
        options.jobs,
        serial_per_job * 1000.0,
        serial.jobs
    );
    println!(
        "speed-up of concurrency {concurrency} over 1: {:.1}x",
        serial_estimate / parallel.wall.as_secs_f64().max(f64::EPSILON)
    );
    stack.stop();
    ExitCode::SUCCESS
}
