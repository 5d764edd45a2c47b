//! Alarms for many tasks at once, on time: one thread per process sleeps until the earliest
//! alarm set and wakes its task, so thousands of senders can each keep a schedule to within
//! about a tenth of a millisecond without each spinning.
//!
//! Tokio's timer counts whole milliseconds and wakes up to ~1.5 ms late (see
//! [`super::sleep_until_ns`]); spinning the last stretch, as one publisher can, would cost a
//! core per few hundred senders. A thread with 1 ns of timer slack sleeps on a condition
//! variable to the earliest due time instead (woken sooner when an earlier alarm is set), and
//! a task's lateness is then the thread's wake-up plus one cross-thread wake.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use super::now_ns;

/// One alarm: when, in what order it was set (so equal times keep it), and whom to wake.
struct Alarm {
    due_ns: u64,
    order: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ns, self.order) == (other.due_ns, other.order)
    }
}

impl Eq for Alarm {}

impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Alarm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ns, self.order).cmp(&(other.due_ns, other.order))
    }
}

/// The alarms set and not yet rung, earliest first.
#[derive(Default)]
struct Pending {
    alarms: BinaryHeap<Reverse<Alarm>>,
    set: u64,
}

/// The process's alarm clock: its pending alarms and the thread that rings them.
struct AlarmClock {
    pending: Mutex<Pending>,
    changed: Condvar,
}

fn clock() -> &'static AlarmClock {
    static CLOCK: OnceLock<&'static AlarmClock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static AlarmClock = Box::leak(Box::new(AlarmClock {
            pending: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        }));
        // The thread lives as long as the process; alarms are rung from it alone.
        let started = std::thread::Builder::new()
            .name("pushbench-alarms".into())
            .spawn(move || ring(clock));
        if let Err(error) = started {
            tracing::warn!(%error, "no alarm thread: alarms ring at once");
        }
        clock
    })
}

/// The alarm thread: rings every alarm that is due, then sleeps until the next one (or until
/// an earlier one is set).
fn ring(clock: &AlarmClock) {
    // 1 ns of slack: the kernel may otherwise defer our wake-up by 50 us to batch timers.
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    let mut pending = clock.pending.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = now_ns();
        while pending
            .alarms
            .peek()
            .is_some_and(|Reverse(alarm)| alarm.due_ns <= now)
        {
            if let Some(Reverse(alarm)) = pending.alarms.pop() {
                // A task that stopped waiting has dropped its receiver: nothing to wake.
                let _ = alarm.wake.send(());
            }
        }
        pending = match pending.alarms.peek() {
            None => clock
                .changed
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner()),
            Some(Reverse(next)) => {
                let wait = Duration::from_nanos(next.due_ns - now);
                clock
                    .changed
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// Waits until `due_ns` (monotonic), woken by the alarm thread: on time to within its wake-up
/// (about 0.1 ms here), never early, and without keeping a tokio worker busy meanwhile.
pub async fn alarm_at(due_ns: u64) {
    if due_ns <= now_ns() {
        return;
    }
    let (wake, rung) = oneshot::channel();
    let clock = clock();
    {
        let mut pending = clock.pending.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = pending
            .alarms
            .peek()
            .is_none_or(|Reverse(a)| due_ns < a.due_ns);
        let order = pending.set;
        pending.set += 1;
        pending.alarms.push(Reverse(Alarm {
            due_ns,
            order,
            wake,
        }));
        // Only an alarm earlier than every other moves the thread's next wake-up.
        if earliest {
            clock.changed.notify_one();
        }
    }
    if rung.await.is_err() {
        // No thread to ring it (it could not start): fall back to tokio's timer.
        super::sleep_until_ns(due_ns).await;
    }
    // A condition variable may wake a moment early: never hand back before the due time.
    while now_ns() < due_ns {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alarms set out of order ring in order, none early. They are 20 ms apart: the order is
    /// read from when each waiting task runs again, and on a busy machine (a fresh-clone CI run
    /// with clippy building beside the tests) a task woken by the alarm 3 ms before another
    /// once ran after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alarms_ring_in_order_and_never_early() {
        let start = now_ns();
        let offsets_ms = [70u64, 30, 50, 10];
        let tasks: Vec<_> = offsets_ms
            .iter()
            .map(|&ms| {
                tokio::spawn(async move {
                    let due = start + ms * 1_000_000;
                    alarm_at(due).await;
                    let at = now_ns();
                    assert!(at >= due);
                    at
                })
            })
            .collect();
        let mut rang = Vec::new();
        for (task, ms) in tasks.into_iter().zip(offsets_ms) {
            rang.push((task.await.unwrap(), ms));
        }
        rang.sort();
        let order: Vec<u64> = rang.iter().map(|&(_, ms)| ms).collect();
        assert_eq!(order, [10, 30, 50, 70]);
    }

    /// An alarm whose waiter gave up is dropped without harm to the next.
    #[tokio::test]
    async fn an_abandoned_alarm_does_not_stop_the_next() {
        let soon = now_ns() + 2_000_000;
        let _ = tokio::time::timeout(Duration::from_micros(100), alarm_at(soon)).await;
        let due = now_ns() + 3_000_000;
        alarm_at(due).await;
        assert!(now_ns() >= due);
    }
}
