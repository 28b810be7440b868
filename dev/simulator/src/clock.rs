//! The simulator clock: wall time plus an offset that tests move forward.
//!
//! Every timestamp the simulator hands out and every deadline it waits for (job start and
//! finish, webhook delays, retry backoff, the 7-day retention) is measured on this clock, so a
//! test that advances it by an hour sees exactly what an hour of real time would have produced,
//! without waiting. The offset only grows: moving time back would let a finished job become
//! unfinished, which the real provider never does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Wall time plus a forward-only offset; waiters wake when the offset moves.
#[derive(Debug)]
pub(crate) struct SimClock {
    /// Milliseconds added to wall time. A watch channel, so sleepers notice a move at once.
    offset_ms: watch::Sender<i64>,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        Self {
            offset_ms: watch::Sender::new(0),
        }
    }

    /// Simulator time as Unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        wall_ms().saturating_add(self.offset_ms())
    }

    /// How far the clock is ahead of wall time, in milliseconds.
    pub(crate) fn offset_ms(&self) -> i64 {
        *self.offset_ms.borrow()
    }

    /// Moves the clock forward; waiters re-check their deadlines.
    pub(crate) fn advance(&self, by_ms: i64) {
        let by_ms = by_ms.max(0);
        self.offset_ms
            .send_modify(|offset| *offset = offset.saturating_add(by_ms));
    }

    /// Puts the clock back on wall time (only on a full reset).
    pub(crate) fn reset(&self) {
        self.offset_ms.send_modify(|offset| *offset = 0);
    }

    /// A receiver that changes whenever the clock is moved.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.offset_ms.subscribe()
    }

    /// Waits until simulator time reaches `deadline_ms`, waking early when the clock moves.
    pub(crate) async fn sleep_until(&self, deadline_ms: i64) {
        let mut moved = self.subscribe();
        loop {
            let remaining = deadline_ms.saturating_sub(self.now_ms());
            if remaining <= 0 {
                return;
            }
            let wait = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = moved.changed() => {
                    if changed.is_err() {
                        // The simulator is gone: nobody is left to wait for.
                        return;
                    }
                }
            }
        }
    }
}

/// Wall time as Unix milliseconds (0 if the system clock is before 1970).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating instead of wrapping.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Unix seconds for a millisecond timestamp, as the API's `*_at` fields carry them.
pub(crate) fn to_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_and_never_goes_back() {
        let clock = SimClock::new();
        let before = clock.now_ms();

        clock.advance(3_600_000);
        clock.advance(-5_000);

        assert!(clock.now_ms() >= before + 3_600_000);
        assert_eq!(clock.offset_ms(), 3_600_000);
    }

    #[tokio::test]
    async fn a_clock_move_releases_a_sleeper() {
        let clock = std::sync::Arc::new(SimClock::new());
        let deadline = clock.now_ms() + 86_400_000;
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };

        clock.advance(86_400_000);

        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper should wake after the clock moved")
            .expect("sleeper task should not panic");
    }
}
