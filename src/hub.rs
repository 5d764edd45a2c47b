//! The server side's published stream: an append-only log of wire-encoded events that every
//! transport reads with a cursor of its own, plus the count of connected subscribers.
//!
//! One log instead of a queue per subscriber: an event is encoded once and shared (`Bytes`) by all,
//! a subscriber that falls behind reads everything that is ready in one batch (so its writes
//! batch too), and a cursor is all that resuming from a sequence number or answering
//! `GET /events?after=SEQ` needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::clock::now_ns;

/// How much one read may return, so one slow subscriber cannot build an unbounded response.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchLimit {
    /// At most this many events per batch.
    pub events: usize,
    /// At most about this many bytes per batch (always at least one event).
    pub bytes: usize,
}

impl Default for BatchLimit {
    fn default() -> Self {
        Self {
            events: 1024,
            bytes: 1024 * 1024,
        }
    }
}

/// Consecutive events read from the log.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Sequence number of the first event in `events`.
    pub first_seq: u64,
    /// The encoded events, in order.
    pub events: Vec<Bytes>,
}

impl Batch {
    /// Sequence number of the last event, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (!self.events.is_empty()).then(|| self.first_seq + self.events.len() as u64 - 1)
    }

    /// The events with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Bytes)> {
        (self.first_seq..).zip(self.events.iter())
    }
}

/// Where the log stands; watched by every waiting reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Events published so far.
    published: u64,
    /// Set when the server shuts down: waiting readers stop at once.
    closed: bool,
}

/// The published stream of one server, shared by its transport and its publisher.
#[derive(Debug)]
pub struct Hub {
    /// Events in the stream once it is fully published.
    expected: u64,
    /// Encoded events with their publication times, indexed by sequence number.
    log: RwLock<Vec<(u64, Bytes)>>,
    /// An injected fault: every event is handed out no sooner than this after publication.
    delivery_delay: Option<Duration>,
    /// Publication progress, so readers wait instead of polling.
    progress: watch::Sender<Progress>,
    /// Subscribers connected now (connections or registered endpoints, as the transport counts).
    subscribers: watch::Sender<usize>,
    /// Events handed to subscribers so far, summed over readers: shows whether delivery is
    /// still making progress.
    handed_out: AtomicU64,
    /// Deliveries the server gave up on (a webhook provider whose retries ran out).
    abandoned: AtomicU64,
}

impl Hub {
    /// An empty hub for a stream of `expected` events.
    pub fn new(expected: u64) -> Arc<Self> {
        Self::with_delivery_delay(expected, None)
    }

    /// An empty hub that holds every event back for `delay` after publication (fault injection).
    pub fn with_delivery_delay(expected: u64, delay: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            expected,
            delivery_delay: delay,
            log: RwLock::new(Vec::with_capacity(expected.min(1 << 20) as usize)),
            progress: watch::Sender::new(Progress::default()),
            subscribers: watch::Sender::new(0),
            handed_out: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        })
    }

    /// Appends the next event (its sequence number is the number published before it).
    pub fn publish(&self, encoded: Bytes) {
        let published = {
            let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
            log.push((now_ns(), encoded));
            log.len() as u64
        };
        self.progress.send_modify(|p| p.published = published);
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.progress.borrow().published
    }

    /// Events the stream has in all.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Whether every event of the stream has been published.
    pub fn is_complete(&self) -> bool {
        self.published() >= self.expected
    }

    /// Wakes every waiting reader and ends every subscription (server shutdown).
    pub fn close(&self) {
        self.progress.send_modify(|p| p.closed = true);
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.progress.borrow().closed
    }

    /// A cursor that reads from event `first_seq` on.
    pub fn reader(self: &Arc<Self>, first_seq: u64) -> Reader {
        Reader {
            hub: Arc::clone(self),
            next_seq: first_seq,
            progress: self.progress.subscribe(),
        }
    }

    /// Counts one more subscriber until the returned guard is dropped.
    pub fn join(self: &Arc<Self>) -> SubscriberGuard {
        self.subscribers.send_modify(|n| *n += 1);
        SubscriberGuard {
            hub: Arc::clone(self),
        }
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        *self.subscribers.borrow()
    }

    /// Waits until at least `n` subscribers are connected.
    pub async fn wait_for_subscribers(&self, n: usize) {
        let mut rx = self.subscribers.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|&connected| connected >= n).await;
    }

    /// Waits until no subscriber is connected.
    pub async fn wait_until_no_subscribers(&self) {
        let mut rx = self.subscribers.subscribe();
        let _ = rx.wait_for(|&connected| connected == 0).await;
    }

    /// Counts one delivery the server gave up on.
    pub fn abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries the server gave up on so far.
    pub fn abandoned_count(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Events handed to subscribers so far, summed over all readers.
    pub fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }

    /// When event `seq` was published, if it has been.
    fn published_at(&self, seq: u64) -> Option<u64> {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        log.get(seq as usize).map(|(at, _)| *at)
    }

    /// Events `[from, ..)` published no later than `until_ns`, within `limit`.
    fn read(&self, from: u64, limit: BatchLimit, until_ns: u64) -> Batch {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        let start = (from as usize).min(log.len());
        let mut bytes = 0;
        let events: Vec<Bytes> = log[start..]
            .iter()
            .take(limit.events.max(1))
            .take_while(|(published, _)| *published <= until_ns)
            .map(|(_, event)| event)
            .take_while(|event| {
                // Always take the first event, however large; stop before passing the byte cap.
                let fits = bytes == 0 || bytes + event.len() <= limit.bytes;
                bytes += event.len();
                fits
            })
            .cloned()
            .collect();
        Batch {
            first_seq: from,
            events,
        }
    }
}

/// Keeps a subscriber counted on its hub while alive.
#[derive(Debug)]
pub struct SubscriberGuard {
    hub: Arc<Hub>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.hub.subscribers.send_modify(|n| *n -= 1);
    }
}

/// One subscriber's position in the log.
#[derive(Debug)]
pub struct Reader {
    hub: Arc<Hub>,
    /// Sequence number of the next event this reader will return.
    next_seq: u64,
    progress: watch::Receiver<Progress>,
}

impl Reader {
    /// Waits for events after the cursor and returns all that are ready (within `limit`), or
    /// `None` once the stream is fully read or the server closed.
    pub async fn next_batch(&mut self, limit: BatchLimit) -> Option<Batch> {
        let next = self.next_seq;
        let expected = self.hub.expected;
        let progress = self
            .progress
            .wait_for(|p| p.closed || p.published > next || next >= expected)
            .await
            .ok()
            .map(|p| *p)?;
        if progress.closed || progress.published <= next {
            return None;
        }
        if let Some(delay) = self.hub.delivery_delay {
            // Hold the next event back until it is `delay` old, then hand out what is as old.
            let due = self.hub.published_at(next).unwrap_or_default() + delay.as_nanos() as u64;
            crate::clock::sleep_until_ns(due).await;
            return Some(self.take(limit, now_ns().saturating_sub(delay.as_nanos() as u64)));
        }
        Some(self.take(limit, u64::MAX))
    }

    /// Returns what is ready now without waiting (possibly nothing).
    pub fn try_batch(&mut self, limit: BatchLimit) -> Batch {
        let until = match self.hub.delivery_delay {
            Some(delay) => now_ns().saturating_sub(delay.as_nanos() as u64),
            None => u64::MAX,
        };
        self.take(limit, until)
    }

    /// Whether this reader has read the whole stream.
    pub fn at_end(&self) -> bool {
        self.next_seq >= self.hub.expected
    }

    fn take(&mut self, limit: BatchLimit, until_ns: u64) -> Batch {
        let batch = self.hub.read(self.next_seq, limit, until_ns);
        let taken = batch.events.len() as u64;
        self.next_seq += taken;
        self.hub.handed_out.fetch_add(taken, Ordering::Relaxed);
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with(n: u64, of: u64) -> Arc<Hub> {
        let hub = Hub::new(of);
        for i in 0..n {
            hub.publish(Bytes::from(format!("event {i}")));
        }
        hub
    }

    /// A reader gets everything ready in one batch, then waits, then sees the end.
    #[tokio::test]
    async fn reader_batches_then_ends() {
        let hub = hub_with(3, 4);
        let mut reader = hub.reader(0);
        let batch = reader.next_batch(BatchLimit::default()).await.unwrap();
        assert_eq!((batch.first_seq, batch.events.len()), (0, 3));
        let waiting = tokio::spawn(async move {
            let b = reader.next_batch(BatchLimit::default()).await.unwrap();
            let end = reader.next_batch(BatchLimit::default()).await;
            (b.first_seq, b.events.len(), end.is_none())
        });
        hub.publish(Bytes::from_static(b"last"));
        assert_eq!(waiting.await.unwrap(), (3, 1, true));
    }

    /// Batches respect the event and byte caps but always carry at least one event.
    #[test]
    fn batch_limits() {
        let hub = hub_with(10, 10);
        let mut reader = hub.reader(2);
        let small = BatchLimit {
            events: 3,
            bytes: 1000,
        };
        assert_eq!(reader.try_batch(small).events.len(), 3);
        let tiny = BatchLimit {
            events: 100,
            bytes: 1,
        };
        let one = reader.try_batch(tiny);
        assert_eq!((one.first_seq, one.events.len()), (5, 1));
    }

    /// Closing wakes a waiting reader with the end of the stream.
    #[tokio::test]
    async fn close_ends_waiting_readers() {
        let hub = hub_with(0, 5);
        let mut reader = hub.reader(0);
        let waiting = tokio::spawn(async move { reader.next_batch(BatchLimit::default()).await });
        hub.close();
        assert!(waiting.await.unwrap().is_none());
    }

    /// Guards count subscribers in and out.
    #[tokio::test]
    async fn subscriber_guards_count() {
        let hub = Hub::new(1);
        let a = hub.join();
        let b = hub.join();
        hub.wait_for_subscribers(2).await;
        drop((a, b));
        hub.wait_until_no_subscribers().await;
        assert_eq!(hub.subscribers(), 0);
    }
}
