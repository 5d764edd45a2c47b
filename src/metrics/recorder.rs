//! Recording that does not grow with subscribers: latency, service-time and batch histograms,
//! per-second latency and the fan-out clock are kept per recording *thread* (HdrHistogram's
//! recorder pattern) and merged exactly once the run is over.
//!
//! A histogram of pushbench's range is ~139 KB; one per subscriber made 19,000 idle subscribers
//! cost 5 GB and zero-filled it while being timed. Here each thread that records gets one shard
//! per [`Recording`] (found through a thread-local, locked only by that thread while the run
//! goes on), so memory follows the load's threads, not its subscribers.
//!
//! The timeline keeps, per [`TIMELINE_BIN_MS`] of receive time, the worst latency and how many
//! events arrived: fine enough to see a fault begin and end, and to time the recovery from it,
//! where per-second histograms are too coarse; two numbers per bin, so it costs nothing to keep.
//!
//! The fan-out clock answers what per-thread histograms alone would lose: per event, how long
//! until the *last* subscriber had it. Each shard keeps, per sampled event, the latest latency
//! it saw and how many subscribers saw it; shards and load workers merge by maximum and sum.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::latency::{self, micros_between};

/// Most events the fan-out clock follows; longer streams are sampled evenly (every k-th event),
/// which keeps percentiles over events unbiased at a fixed cost of 8 bytes per slot per thread.
pub const FANOUT_SLOTS: u64 = 1 << 16;

/// Width of one timeline bin, milliseconds of receive time.
pub const TIMELINE_BIN_MS: u64 = 100;

/// The timeline covers at most this many bins (two hours) from its origin; later events are
/// left out of it (not of the histograms), so a far-off origin cannot make it grow unbounded.
pub const TIMELINE_BINS_KEPT: usize = 72_000;

/// Per bin of receive time since the origin: the worst latency (us) and the events that arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Timeline {
    /// Worst latency of the events received in each bin, microseconds (0: none arrived).
    pub max_us: Vec<u32>,
    /// Events received in each bin.
    pub events: Vec<u32>,
}

impl Timeline {
    /// Notes one event received `since_origin_ns` after the origin, `us` late.
    fn record(&mut self, since_origin_ns: u64, us: u64) {
        let bin = (since_origin_ns / (TIMELINE_BIN_MS * 1_000_000)) as usize;
        if bin >= TIMELINE_BINS_KEPT {
            return;
        }
        if self.max_us.len() <= bin {
            self.max_us.resize(bin + 1, 0);
            self.events.resize(bin + 1, 0);
        }
        let us = us.min(u64::from(u32::MAX)) as u32;
        self.max_us[bin] = self.max_us[bin].max(us);
        self.events[bin] = self.events[bin].saturating_add(1);
    }

    /// Folds another timeline of the same origin in: worst by maximum, events by sum.
    pub fn merge(&mut self, other: &Timeline) {
        self.merge_later(other, 0);
    }

    /// Folds in another timeline whose origin is `seconds` whole seconds after this one's.
    pub fn merge_later(&mut self, other: &Timeline, seconds: usize) {
        let skip = seconds * (1000 / TIMELINE_BIN_MS) as usize;
        let bins = self
            .max_us
            .len()
            .max(other.max_us.len() + skip)
            .min(TIMELINE_BINS_KEPT.max(self.max_us.len()));
        self.max_us.resize(bins, 0);
        self.events.resize(bins, 0);
        for (i, (&us, &n)) in other.max_us.iter().zip(&other.events).enumerate() {
            let Some(bin) = (i + skip < bins).then_some(i + skip) else {
                break;
            };
            self.max_us[bin] = self.max_us[bin].max(us);
            self.events[bin] = self.events[bin].saturating_add(n);
        }
    }
}

/// Unique ids tell the recordings apart in the thread-local shard lists.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's shard of every live recording, by recording id.
    static SHARDS: RefCell<Vec<(u64, Arc<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
}

/// One run's recording, shared by all its subscribers.
#[derive(Debug)]
pub struct Recording {
    id: u64,
    /// Every shard handed out, for the merge at the end.
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    /// Monotonic origin of the per-second intervals (shared by every load worker of a run, so
    /// their seconds line up).
    origin_ns: u64,
    /// The fan-out clock samples every `fanout_stride`-th event.
    fanout_stride: u64,
    /// Slots of the fan-out clock.
    fanout_slots: usize,
}

/// What one thread recorded for one recording.
#[derive(Debug)]
struct Shard {
    service: Histogram<u64>,
    batches: Option<Histogram<u64>>,
    /// Two-way traffic: a sender's own messages back, scheduled send to receipt.
    round_trip: Option<Histogram<u64>>,
    /// Two-way traffic: others' messages in the subscriber's rooms, scheduled send to receipt.
    copies: Option<Histogram<u64>>,
    /// Per-second latency, indexed by seconds since the origin; allocated as seconds pass. The
    /// whole run's latency is their sum, so each event is recorded once, not twice.
    seconds: Vec<Option<Histogram<u64>>>,
    timeline: Timeline,
    fanout: FanoutClock,
}

/// Per sampled event: the latest latency any subscriber saw (us) and how many saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutClock {
    /// Every `stride`-th event of the stream is followed.
    pub stride: u64,
    /// Latest latency per followed event, microseconds (0: nobody has it yet).
    pub latest_us: Vec<u32>,
    /// Subscribers that received each followed event.
    pub receivers: Vec<u32>,
}

impl FanoutClock {
    fn new(stride: u64, slots: usize) -> Self {
        Self {
            stride,
            latest_us: vec![0; slots],
            receivers: vec![0; slots],
        }
    }

    /// Folds another clock of the same stream in: latest by maximum, receivers by sum.
    pub fn merge(&mut self, other: &FanoutClock) {
        if self.latest_us.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.latest_us.iter_mut().zip(&other.latest_us) {
            *mine = (*mine).max(*theirs);
        }
        for (mine, theirs) in self.receivers.iter_mut().zip(&other.receivers) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Time until the last of `subscribers` had each followed event, over the events every one
    /// of them received (others are incomplete and say nothing about the last receiver).
    pub fn last_receiver_us(&self, subscribers: usize) -> Histogram<u64> {
        let mut h = latency::histogram();
        for (&us, &n) in self.latest_us.iter().zip(&self.receivers) {
            if n as usize >= subscribers && n > 0 {
                h.saturating_record(u64::from(us).max(1));
            }
        }
        h
    }
}

/// Everything a recording holds once merged.
#[derive(Debug)]
pub struct Recorded {
    /// Receive minus scheduled time, us.
    pub latency: Histogram<u64>,
    /// Receive minus actual send time, us.
    pub service: Histogram<u64>,
    /// Events per response (batching transports only).
    pub batches: Option<Histogram<u64>>,
    /// Two-way traffic: a sender's message from its schedule back to it, us.
    pub round_trip: Option<Histogram<u64>>,
    /// Two-way traffic: a message from its sender's schedule to another member of its room, us.
    pub copies: Option<Histogram<u64>>,
    /// Latency per second since the origin.
    pub seconds: Vec<Histogram<u64>>,
    /// Worst latency and events per bin of receive time since the origin.
    pub timeline: Timeline,
    /// When the last subscriber had each followed event.
    pub fanout: FanoutClock,
}

impl Recording {
    /// A recording for a stream of `events`, with intervals counted from `origin_ns`.
    pub fn new(events: u64, origin_ns: u64) -> Self {
        let stride = events.div_ceil(FANOUT_SLOTS).max(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            origin_ns,
            fanout_stride: stride,
            fanout_slots: events.div_ceil(stride) as usize,
        }
    }

    /// Records one event past the warm-up.
    pub fn event(&self, seq: u64, scheduled_ns: u64, sent_ns: u64, received_ns: u64) {
        let waited = micros_between(scheduled_ns, received_ns);
        let served = micros_between(sent_ns, received_ns);
        let since_origin = received_ns.saturating_sub(self.origin_ns);
        let second = (since_origin / 1_000_000_000) as usize;
        let slot = seq
            .is_multiple_of(self.fanout_stride)
            .then(|| (seq / self.fanout_stride) as usize);
        self.with_shard(|shard| {
            shard.service.saturating_record(served);
            if shard.seconds.len() <= second {
                shard.seconds.resize_with(second + 1, || None);
            }
            shard.seconds[second]
                .get_or_insert_with(latency::histogram)
                .saturating_record(waited);
            shard.timeline.record(since_origin, waited);
            if let Some(slot) = slot.filter(|&s| s < shard.fanout.latest_us.len()) {
                let us = waited.min(u64::from(u32::MAX)) as u32;
                let latest = &mut shard.fanout.latest_us[slot];
                *latest = (*latest).max(us);
                shard.fanout.receivers[slot] += 1;
            }
        });
    }

    /// Records a response that carried `events` events.
    pub fn batch(&self, events: usize) {
        self.with_shard(|shard| {
            // Up to a million events per response; more is clamped.
            shard
                .batches
                .get_or_insert_with(|| {
                    Histogram::new_with_bounds(1, 1 << 20, 2).expect("valid bounds")
                })
                .saturating_record(events.max(1) as u64);
        });
    }

    /// Records a sender's own message back, scheduled at `scheduled_ns`.
    pub fn round_trip(&self, scheduled_ns: u64, received_ns: u64) {
        let us = micros_between(scheduled_ns, received_ns);
        self.with_shard(|shard| {
            shard
                .round_trip
                .get_or_insert_with(latency::histogram)
                .saturating_record(us);
        });
    }

    /// Records another sender's message arriving in a room, scheduled at `scheduled_ns`.
    pub fn copy(&self, scheduled_ns: u64, received_ns: u64) {
        let us = micros_between(scheduled_ns, received_ns);
        self.with_shard(|shard| {
            shard
                .copies
                .get_or_insert_with(latency::histogram)
                .saturating_record(us);
        });
    }

    /// Merges every thread's shard. Call once the subscribers are done; what is recorded
    /// later starts a new tally.
    pub fn finish(&self) -> Recorded {
        let shards = std::mem::take(&mut *lock(&self.shards));
        let mut recorded = Recorded {
            latency: latency::histogram(),
            service: latency::histogram(),
            batches: None,
            round_trip: None,
            copies: None,
            seconds: Vec::new(),
            timeline: Timeline::default(),
            fanout: FanoutClock::new(self.fanout_stride, self.fanout_slots),
        };
        for shard in shards {
            let shard = lock(&shard);
            latency::merge(&mut recorded.service, &shard.service);
            if let Some(b) = &shard.batches {
                let merged = recorded
                    .batches
                    .get_or_insert_with(|| Histogram::new_from(b));
                let _ = merged.add(b);
            }
            for (into, from) in [
                (&mut recorded.round_trip, &shard.round_trip),
                (&mut recorded.copies, &shard.copies),
            ] {
                if let Some(from) = from {
                    latency::merge(into.get_or_insert_with(latency::histogram), from);
                }
            }
            for (second, h) in shard.seconds.iter().enumerate() {
                if recorded.seconds.len() <= second {
                    recorded.seconds.resize_with(second + 1, latency::histogram);
                }
                if let Some(h) = h {
                    latency::merge(&mut recorded.seconds[second], h);
                }
            }
            recorded.timeline.merge(&shard.timeline);
            recorded.fanout.merge(&shard.fanout);
        }
        for second in &recorded.seconds {
            latency::merge(&mut recorded.latency, second);
        }
        recorded
    }

    /// Runs `f` on this thread's shard, creating it on the thread's first event.
    fn with_shard<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        SHARDS.with(|cell| {
            let mut list = cell.borrow_mut();
            if let Some((_, shard)) = list.iter().find(|(id, _)| *id == self.id) {
                return f(&mut lock(shard));
            }
            // Shards of recordings that are gone are held only here: let them go.
            list.retain(|(_, shard)| Arc::strong_count(shard) > 1);
            let shard = Arc::new(Mutex::new(Shard {
                service: latency::histogram(),
                batches: None,
                round_trip: None,
                copies: None,
                seconds: Vec::new(),
                timeline: Timeline::default(),
                fanout: FanoutClock::new(self.fanout_stride, self.fanout_slots),
            }));
            lock(&self.shards).push(Arc::clone(&shard));
            list.push((self.id, Arc::clone(&shard)));
            let result = f(&mut lock(&shard));
            result
        })
    }
}

/// Locks, ignoring poisoning: a panicked recorder leaves counts, never a broken invariant.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values recorded from several threads merge into exactly the histogram one recorder fed
    /// every value would hold: counts and every percentile.
    #[test]
    fn merged_threads_equal_one_histogram() {
        let recording = Arc::new(Recording::new(4000, 0));
        let mut reference = latency::histogram();
        for i in 0..4000u64 {
            reference
                .record(micros_between(0, (i % 997 + 1) * 1000 + 7))
                .unwrap();
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let recording = Arc::clone(&recording);
                std::thread::spawn(move || {
                    for i in (t..4000u64).step_by(4) {
                        recording.event(i, 0, 0, (i % 997 + 1) * 1000 + 7);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let recorded = recording.finish();
        assert_eq!(recorded.latency, reference);
        assert_eq!(recorded.service, reference);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                recorded.latency.value_at_quantile(q),
                reference.value_at_quantile(q)
            );
        }
    }

    /// The fan-out clock keeps the slowest subscriber's time per event and counts only events
    /// every subscriber received.
    #[test]
    fn fanout_clock_keeps_the_last_receiver() {
        let recording = Recording::new(3, 0);
        // Event 0: subscribers at 5 ms and 9 ms; event 1: 2 ms and 4 ms; event 2: one only.
        for (seq, received_ms) in [(0, 5), (0, 9), (1, 2), (1, 4), (2, 1)] {
            recording.event(seq, 0, 0, received_ms * 1_000_000);
        }
        let clock = recording.finish().fanout;
        let last = clock.last_receiver_us(2);
        assert_eq!(last.len(), 2);
        assert!(last.equivalent(last.max(), 9000));
        assert!(last.equivalent(last.min(), 4000));
    }

    /// The timeline keeps each bin's worst latency and its count, and merges by maximum and sum.
    #[test]
    fn timeline_bins_by_receive_time() {
        let recording = Recording::new(10, 0);
        let ms = 1_000_000;
        // Received at 10 ms (3 ms late), 50 ms (7 ms late), 250 ms (1 ms late).
        for (seq, received, scheduled) in [(0, 10, 7), (1, 50, 43), (2, 250, 249)] {
            recording.event(seq, scheduled * ms, scheduled * ms, received * ms);
        }
        let mut timeline = recording.finish().timeline;
        assert_eq!(timeline.max_us, vec![7000, 0, 1000]);
        assert_eq!(timeline.events, vec![2, 0, 1]);
        timeline.merge(&Timeline {
            max_us: vec![1, 2, 3, 4],
            events: vec![1, 1, 1, 1],
        });
        assert_eq!(timeline.max_us, vec![7000, 2, 1000, 4]);
        assert_eq!(timeline.events, vec![3, 1, 2, 1]);
    }

    /// Long streams are followed at a fixed number of evenly spaced events.
    #[test]
    fn fanout_samples_long_streams_evenly() {
        let recording = Recording::new(10 * FANOUT_SLOTS, 0);
        assert_eq!(recording.fanout_stride, 10);
        assert_eq!(recording.fanout_slots as u64, FANOUT_SLOTS);
    }
}
