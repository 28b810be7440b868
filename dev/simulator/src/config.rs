//! Default timings and limits of a simulator instance.

use std::time::Duration;

/// Defaults for every job and delivery; rules override the job timings per job.
///
/// The defaults are short so a test that waits for a real finish waits about a second and a
/// half. Tests that need determinism set long timings and move the clock instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Time from creation to `IN_PROGRESS`.
    pub start_after: Duration,
    /// Time from creation to `COMPLETED`/`FAILED`; at least `start_after`.
    pub complete_after: Duration,
    /// How long a job stays retrievable; the provider keeps results 7 days.
    pub retention: Duration,
    /// How often the simulator looks for jobs that have finished (also done at once after a
    /// clock move).
    pub tick: Duration,
    /// Wait before the first webhook retry; doubles after every failed attempt.
    pub webhook_retry_base: Duration,
    /// Longest wait between two webhook attempts.
    pub webhook_retry_max: Duration,
    /// Attempts per delivery before it is given up (the provider retries for about a day;
    /// tests want to see the end quickly).
    pub webhook_max_attempts: u32,
    /// Per-attempt timeout of a webhook POST; a receiver slower than this counts as failed.
    pub webhook_timeout: Duration,
    /// Number of sources a report has when no rule says otherwise.
    pub default_sources: usize,
    /// Refuse webhook URLs that do not point to this machine. On by default so that a
    /// misconfigured test can never make the simulator call out to the network.
    pub loopback_webhooks_only: bool,
    /// Wall-clock time every `GET /async/chat/completions/{id}` takes before it answers, to play
    /// a provider under load; zero answers at once. Benchmarks use it to show what concurrent
    /// polling buys. It is real time, not simulator time: a clock move does not shorten it.
    pub get_delay: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            start_after: Duration::from_millis(300),
            complete_after: Duration::from_millis(1500),
            retention: Duration::from_secs(7 * 24 * 3600),
            tick: Duration::from_millis(50),
            webhook_retry_base: Duration::from_millis(200),
            webhook_retry_max: Duration::from_secs(10),
            webhook_max_attempts: 8,
            webhook_timeout: Duration::from_secs(10),
            default_sources: 8,
            loopback_webhooks_only: true,
            get_delay: Duration::ZERO,
        }
    }
}
