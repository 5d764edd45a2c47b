//! One clock for every process on the host: CLOCK_MONOTONIC in nanoseconds.
//!
//! `std::time::Instant` reads the same clock but hides its value, and the value is what crosses
//! process boundaries: the server stamps scheduled and send times into each event, and the
//! subscriber, in another process, subtracts them from its own receive time.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on CLOCK_MONOTONIC, comparable across all processes of this host.
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    // The monotonic clock counts from boot, so both fields are non-negative.
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock never runs backwards between two reads.
    #[test]
    fn is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
