//! Drives the schedule on the server: publishes each event of the stream into the hub when it is
//! due, stamping the scheduled and the actual send time, and records how late it was.
//!
//! It runs on an OS thread of its own, not a tokio task: tokio's timer ticks in milliseconds,
//! and a publisher that shares a runtime with the transport would be delayed by the very work it
//! is measuring. A plain `std::thread::sleep` to the deadline still wakes ~80 us late here
//! (Linux's default 50 us timer slack plus the VM's wake-up), and that lateness would be charged
//! to every transport. So the thread drops its timer slack to 1 ns, sleeps until a margin short
//! of the deadline, and spins the rest (yielding while more than a few microseconds remain, so
//! the transport's threads on the same CPU still run). The margin follows the wake-ups it sees.
//!
//! The publisher's own CPU time (spinning included) is measured on its thread and kept apart
//! from the server's, so the transport is never charged for it.

use std::num::NonZeroU64;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rustix::time::{clock_gettime, ClockId};

use crate::clock::now_ns;
use crate::event::{Event, StreamSpec};
use crate::hub::Hub;
use crate::metrics::latency::Lateness;

/// The sleep margin never goes below this...
const MIN_MARGIN_NS: u64 = 10_000;
/// ...nor above this: past it, spinning costs more than the lateness it saves.
const MAX_MARGIN_NS: u64 = 100_000;
/// The spin may take at most this share of the time between two events, so the publisher never
/// takes more than a tenth of the server's CPU from the transport it measures; at high rates
/// the CPU is busy anyway, and wake-ups from a busy CPU are quick.
const SPIN_SHARE: u64 = 10;

/// What publishing took.
#[derive(Clone, Debug)]
pub struct Published {
    /// Monotonic time the stream started (event 0's schedule origin).
    pub start_ns: u64,
    /// Monotonic time the last event was published.
    pub end_ns: u64,
    /// CPU time this process had used when the stream started, us (0 if /proc is unreadable):
    /// what the server spends on the stream is measured from here.
    pub start_cpu_us: u64,
    /// CPU time the publisher's own thread used, us: kept apart from the transport's.
    pub publisher_cpu_us: u64,
    /// Sent minus scheduled time per event, when the stream has a schedule.
    pub lateness: Option<Lateness>,
}

/// Publishes the whole stream into `hub`, blocking the calling thread until done (or until the
/// hub is closed, when the server is stopping).
///
/// Events are never skipped or coalesced: when the publisher falls behind its schedule it
/// publishes every overdue event at once, each keeping its own scheduled time, so the lateness
/// shows up in latency (the coordinated-omission-free measure) rather than vanishing.
///
/// `stall`, a fault for tests and demonstrations, stops the publisher for a while just before one
/// event, as a stalled sender would.
///
/// The schedule starts at `origin_ns` (monotonic), or now: a server restarted mid-stream is
/// given the first one's origin, publishes every event already due at once, each keeping its
/// place in the schedule (so the restart shows in latency), and goes on from there.
pub fn publish_stream(
    spec: &StreamSpec,
    hub: &Hub,
    stall: Option<(u64, Duration)>,
    origin_ns: Option<u64>,
) -> Published {
    // 1 ns of slack: the kernel may otherwise defer our wake-up by 50 us to batch timers.
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    let thread_cpu_start = thread_cpu_ns();
    let start_cpu_us = crate::metrics::process::sample(None)
        .map(|s| s.cpu_us)
        .unwrap_or_default();
    // Nanosecond lateness up to a minute, 3 significant digits.
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).ok();
    let mut clock = Punctual {
        margin_ns: 4 * MIN_MARGIN_NS,
        spin_cap_ns: spec
            .offset_ns(1)
            .map_or(MAX_MARGIN_NS, |interval| interval / SPIN_SHARE),
    };
    let start_ns = origin_ns.unwrap_or_else(now_ns);
    for seq in 0..spec.count {
        if hub.is_closed() {
            break;
        }
        if let Some((at, pause)) = stall {
            if at == seq {
                std::thread::sleep(pause);
            }
        }
        let payload = spec.payload(seq);
        let scheduled_ns = spec.offset_ns(seq).map(|offset| {
            let due = start_ns + offset;
            clock.wait_until(due);
            due
        });
        let sent_ns = now_ns();
        if let (Some(due), Some(h)) = (scheduled_ns, lateness.as_mut()) {
            h.saturating_record((sent_ns - due).max(1));
        }
        // Events of a workload with several streams say which, and their number in it.
        let (topic, topic_seq) = match spec.tagged() {
            true => {
                let (topic, number) = crate::workload::place(seq, spec.streams);
                (Some(topic), Some(number))
            }
            false => (None, None),
        };
        let event = Event {
            seq,
            topic,
            topic_seq,
            scheduled_ns: scheduled_ns.unwrap_or(sent_ns),
            sent_ns,
            payload: payload.into(),
        };
        hub.publish(Bytes::from(event.encode()));
    }
    Published {
        start_ns,
        end_ns: now_ns(),
        start_cpu_us,
        publisher_cpu_us: thread_cpu_ns().saturating_sub(thread_cpu_start) / 1000,
        lateness: lateness.as_ref().and_then(Lateness::of),
    }
}

/// Sleeps short of a deadline and spins the rest, learning how early it must wake.
#[derive(Debug)]
struct Punctual {
    /// How long before the deadline the sleep should end, as learnt from the wake-ups.
    margin_ns: u64,
    /// The most it may spin per event (a share of the interval between events).
    spin_cap_ns: u64,
}

impl Punctual {
    /// Returns at `due` (monotonic ns) or as soon after as the machine allows.
    fn wait_until(&mut self, due: u64) {
        let now = now_ns();
        let margin = self.margin_ns.min(self.spin_cap_ns);
        if due > now + margin {
            let wake_at = due - margin;
            std::thread::sleep(Duration::from_nanos(wake_at - now));
            let woke = now_ns();
            if woke > due {
                // Overslept past the deadline itself: wake earlier from now on (a quarter of the
                // miss at a time, so one stall behind a busy CPU does not set the margin).
                self.margin_ns = (self.margin_ns + (woke - due) / 4 + 1_000).min(MAX_MARGIN_NS);
            } else {
                // On time: let the margin shrink slowly toward what the wake-ups need.
                let spare = due - woke;
                self.margin_ns = (self.margin_ns - spare / 16).max(MIN_MARGIN_NS);
            }
        }
        // Spin the margin out: yielding here would hand the CPU to a busy transport for a
        // whole scheduler slice, and the event would go out that late.
        while now_ns() < due {
            std::hint::spin_loop();
        }
    }
}

/// CPU time of the calling thread, nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Rate;
    use crate::hub::BatchLimit;

    /// The published log decodes to the spec's events, scheduled on the rate's grid, and the
    /// publisher's lateness and its own CPU are reported.
    #[test]
    fn publishes_the_spec_on_schedule() {
        let spec = StreamSpec::new(3, 5, "16".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap();
        let hub = Hub::new(spec.count);
        let published = publish_stream(&spec, &hub, None, None);
        let batch = hub.reader(0).try_batch(BatchLimit::default());
        assert_eq!(batch.events.len(), 5);
        for (seq, bytes) in batch.iter() {
            let event = Event::decode(bytes).unwrap();
            assert_eq!(event.seq, seq);
            assert_eq!(event.payload, spec.payload(seq));
            assert_eq!(event.scheduled_ns, published.start_ns + seq * 1_000_000);
            assert!(event.sent_ns >= event.scheduled_ns);
        }
        let lateness = published.lateness.unwrap();
        assert!(lateness.p50_us <= lateness.p99_us && lateness.p99_us <= lateness.max_us);
    }

    /// An unscheduled stream has no lateness to report.
    #[test]
    fn max_rate_has_no_lateness() {
        let spec = StreamSpec::new(3, 5, "16".parse().unwrap(), Rate::Max).unwrap();
        let hub = Hub::new(spec.count);
        assert!(publish_stream(&spec, &hub, None, None).lateness.is_none());
    }
}
