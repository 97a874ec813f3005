//! The wall clock. Protocol cores take time as an input; only the shell reads the clock, here.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
