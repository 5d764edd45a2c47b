//! One clock for every process of a run: CLOCK_MONOTONIC in nanoseconds, and on a load worker
//! of another host the server's clock, by the offset [`probe`] measured.
//!
//! `std::time::Instant` reads the same clock but hides its value, and the value is what crosses
//! process boundaries: the server stamps scheduled and send times into each event, and the
//! subscriber, in another process, subtracts them from its own receive time.

pub mod alarm;
pub mod probe;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use rustix::time::{clock_gettime, ClockId};

/// Added to this process's clock so it reads the server's: zero on the server's own host, the
/// measured offset on a load worker of another host (set once, before its subscribers start).
static CORRECTION_NS: AtomicI64 = AtomicI64::new(0);

/// Test-only: a shift planted in this process's clock (`PUSHBENCH_TEST_CLOCK_SHIFT_NS`), so
/// that two processes of one host disagree by a known amount, as two hosts' clocks do, and the
/// offset measurement can be checked against the truth. Not a user setting; never documented
/// as one.
fn planted_shift_ns() -> i64 {
    static SHIFT: OnceLock<i64> = OnceLock::new();
    *SHIFT.get_or_init(|| {
        std::env::var("PUSHBENCH_TEST_CLOCK_SHIFT_NS")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// Nanoseconds on CLOCK_MONOTONIC, comparable across all processes of this host (and, once
/// [`correct_by`] has run, with the server's clock on another host).
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    // The monotonic clock counts from boot, so both fields are non-negative.
    let raw = (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64;
    let adjust = planted_shift_ns() + CORRECTION_NS.load(Ordering::Relaxed);
    raw.saturating_add_signed(adjust)
}

/// From now on this process's clock reads `offset_ns` more (the server's clock, as measured).
pub fn correct_by(offset_ns: i64) {
    CORRECTION_NS.fetch_add(offset_ns, Ordering::Relaxed);
}

/// Tokio's timer counts whole milliseconds and rounds a sleep up to the next one, then wakes on
/// the tick after: a sleep alone overshoots by up to about 1.5 ms (1.38 ms median, 1.47 ms worst
/// of 50 sleeps of 3.8 ms measured here), so the last 2 ms are yielded away instead.
const TIMER_GRAIN_NS: u64 = 2_000_000;

/// Waits in a task until `due_ns` on this clock, to within a few microseconds: a timer sleep
/// for all but the last timer grain, then yielding to other tasks until the moment. What a
/// planted fault waits must be what it says (a 5 ms delay, not 5 to 6).
pub async fn sleep_until_ns(due_ns: u64) {
    let now = now_ns();
    if due_ns > now + TIMER_GRAIN_NS {
        tokio::time::sleep(std::time::Duration::from_nanos(
            due_ns - now - TIMER_GRAIN_NS,
        ))
        .await;
    }
    while now_ns() < due_ns {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A precise sleep is never early.
    #[tokio::test]
    async fn sleeps_are_never_early() {
        for micros in [0, 300, 2_500] {
            let due = now_ns() + micros * 1000;
            sleep_until_ns(due).await;
            assert!(now_ns() >= due);
        }
    }

    /// The clock never runs backwards between two reads.
    #[test]
    fn is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
