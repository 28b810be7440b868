//! Time as the product sees it.
//!
//! Every rule that depends on time (leases, retention, idempotency expiry, quotas, when to look
//! at a job next) reads [`Clock::now_ms`]. In Lambda it is the system clock; tests and the local
//! stack can move it forward to reach a lease expiry or the 7-day retention without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock plus an offset that only tests and the local stack move.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The plain system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let system_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or_default();
        system_ms + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance_ms(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::Relaxed);
    }
}
