//! Drives the schedule on the server: publishes each event of the stream into the hub when it is
//! due, stamping the scheduled and the actual send time.
//!
//! It runs on an OS thread of its own, not a tokio task: tokio's timer ticks in milliseconds,
//! while `std::thread::sleep` wakes within tens of microseconds, and a publisher that shares a
//! runtime with the transport would be delayed by the very work it is measuring.

use std::time::Duration;

use bytes::Bytes;

use crate::clock::now_ns;
use crate::event::{Event, StreamSpec};
use crate::hub::Hub;

/// What publishing took.
#[derive(Clone, Copy, Debug)]
pub struct Published {
    /// Monotonic time the stream started (event 0's schedule origin).
    pub start_ns: u64,
    /// Monotonic time the last event was published.
    pub end_ns: u64,
    /// CPU time this process had used when the stream started, us (0 if /proc is unreadable):
    /// what the server spends on the stream is measured from here.
    pub start_cpu_us: u64,
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
pub fn publish_stream(spec: &StreamSpec, hub: &Hub, stall: Option<(u64, Duration)>) -> Published {
    let start_cpu_us = crate::metrics::process::sample(None)
        .map(|s| s.cpu_us)
        .unwrap_or_default();
    let start_ns = now_ns();
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
        let scheduled_ns = match spec.offset_ns(seq) {
            Some(offset) => {
                let due = start_ns + offset;
                let now = now_ns();
                if due > now {
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
                Some(due)
            }
            None => None,
        };
        let sent_ns = now_ns();
        let event = Event {
            seq,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Rate;
    use crate::hub::BatchLimit;

    /// The published log decodes to the spec's events, scheduled on the rate's grid.
    #[test]
    fn publishes_the_spec_on_schedule() {
        let spec = StreamSpec::new(3, 5, "16".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap();
        let hub = Hub::new(spec.count);
        let published = publish_stream(&spec, &hub, None);
        let batch = hub.reader(0).try_batch(BatchLimit::default());
        assert_eq!(batch.events.len(), 5);
        for (seq, bytes) in batch.iter() {
            let event = Event::decode(bytes).unwrap();
            assert_eq!(event.seq, seq);
            assert_eq!(event.payload, spec.payload(seq));
            assert_eq!(event.scheduled_ns, published.start_ns + seq * 1_000_000);
            assert!(event.sent_ns >= event.scheduled_ns);
        }
    }
}
