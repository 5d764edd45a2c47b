//! The server side's published stream: an append-only log of wire-encoded events that every
//! transport reads with a cursor of its own, plus the count of connected subscribers.
//!
//! One log instead of a queue per subscriber: an event is encoded once and shared (`Bytes`) by all,
//! a subscriber that falls behind reads everything that is ready in one batch (so its writes
//! batch too), and a cursor is all that resuming from a sequence number or answering
//! `GET /events?after=SEQ` needs.
//!
//! The log may be bounded (a replay window of the last N events, as a real server must bound
//! what it keeps for resuming subscribers): a reader behind the window is not silently moved on,
//! its next batch carries a [`Gap`] naming exactly the events it will never get.
//!
//! Where the workload has several streams (rooms, one per user), a reader follows an
//! [`Interest`]: the streams it subscribed to. Their events sit in the one log at places the
//! global sequence gives (`seq % streams`), so a reader steps straight from one of its events
//! to the next instead of scanning everyone else's: reading costs what it delivers.
//!
//! Where subscribers send messages up ([`rooms`]), the hub tallies them and, with the echo on,
//! hands each reader the copies of its rooms beside its events; a two-way subscription ends
//! when its subscriber leaves, not when the stream has been read.

mod rooms;

pub use rooms::UpstreamOptions;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::clock::now_ns;
use crate::event::Gap;

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
    /// Events the reader asked for that the replay window no longer holds; they come right
    /// before `first_seq`. The transport must tell its subscriber before the events.
    pub gap: Option<Gap>,
    /// Sequence number of the first event in `events` (where the read started, if none).
    pub first_seq: u64,
    /// The encoded events, in order.
    pub events: Vec<Bytes>,
    /// Their sequence numbers, where they are not consecutive from `first_seq` (a reader of
    /// some streams of several); empty when they are.
    pub seqs: Vec<u64>,
    /// Copies of messages subscribers sent to the reader's rooms (their wire form, as they
    /// came up), to go out after the events.
    pub copies: Vec<Bytes>,
}

impl Batch {
    /// Sequence number of the last event, if any.
    pub fn last_seq(&self) -> Option<u64> {
        match self.seqs.last() {
            Some(&seq) => Some(seq),
            None => {
                (!self.events.is_empty()).then(|| self.first_seq + self.events.len() as u64 - 1)
            }
        }
    }

    /// The events with their sequence numbers.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Bytes)> {
        let consecutive = self.seqs.is_empty();
        let first = self.first_seq;
        self.events.iter().enumerate().map(move |(i, event)| {
            let seq = if consecutive {
                first + i as u64
            } else {
                self.seqs[i]
            };
            (seq, event)
        })
    }
}

/// Which events of the log a reader follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Interest {
    /// Every event: the one broadcast stream, or a reader that wants all streams.
    #[default]
    All,
    /// The events of these streams (ascending, none twice, each below the hub's streams).
    Streams(Arc<[u32]>),
}

impl Interest {
    /// The streams named (ascending, none twice), or every event when none are.
    pub fn of_list(topics: Vec<u32>) -> Self {
        if topics.is_empty() {
            Interest::All
        } else {
            Interest::Streams(topics.into())
        }
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

/// How a hub keeps and hands out its stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct HubOptions {
    /// Keep only the last this many events for readers behind (`None`: the whole stream).
    pub replay_window: Option<u64>,
    /// An injected fault: every event is handed out no sooner than this after publication.
    pub delivery_delay: Option<Duration>,
    /// Streams the global sequence interleaves, where events are tagged with theirs
    /// (`None`: one broadcast stream).
    pub streams: Option<u64>,
    /// Messages subscribers send up, where they do (`None`: a one-way stream).
    pub upstream: Option<UpstreamOptions>,
}

/// The events the hub still holds.
#[derive(Debug, Default)]
struct Log {
    /// Sequence number of `entries[0]`: everything before it fell out of the replay window.
    first_seq: u64,
    /// Encoded events with their publication times.
    entries: VecDeque<(u64, Bytes)>,
}

impl Log {
    /// Events published so far, kept or not.
    fn published(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }
}

/// The published stream of one server, shared by its transport and its publisher.
#[derive(Debug)]
pub struct Hub {
    /// Events in the stream once it is fully published.
    expected: u64,
    /// The events held, by sequence number.
    log: RwLock<Log>,
    /// Keep at most this many events (`None`: all).
    replay_window: Option<u64>,
    /// An injected fault: every event is handed out no sooner than this after publication.
    delivery_delay: Option<Duration>,
    /// Streams the global sequence interleaves (at least 1).
    streams: u64,
    /// Whether events carry their stream, so subscribers name the ones they follow.
    tagged: bool,
    /// Publication progress, so readers wait instead of polling.
    progress: watch::Sender<Progress>,
    /// Subscribers connected now (connections or registered endpoints, as the transport counts).
    subscribers: watch::Sender<usize>,
    /// Events handed to subscribers so far, summed over readers: shows whether delivery is
    /// still making progress.
    handed_out: AtomicU64,
    /// Times a process that delivers for the server (a broker) was seen sending its
    /// subscribers more: progress as `handed_out` is, where the server's own readers hand
    /// everything to that process long before its subscribers have it.
    relayed: AtomicU64,
    /// Deliveries the server gave up on (a webhook provider whose retries ran out).
    abandoned: AtomicU64,
    /// Why the server refused to send an event at all, the first time it did (an event too
    /// large for a GET webhook's URL).
    refusal: std::sync::Mutex<Option<String>>,
    /// Events answered as gaps, summed over readers.
    gapped: AtomicU64,
    /// Deliveries sent again after a failed attempt (a webhook provider's retries).
    retries: AtomicU64,
    /// When an injected fault struck (monotonic ns), at most [`FAULTS_NOTED`] of them.
    faults: std::sync::Mutex<Vec<u64>>,
    /// When the close storm cut every connection (monotonic ns), once it has.
    storm: std::sync::OnceLock<u64>,
    /// Readers alive now.
    readers: watch::Sender<usize>,
    /// Readers alive now that have handed out the whole stream (one-way).
    at_end: AtomicUsize,
    /// Set once every live reader has handed out the whole stream: the last event's fanout is
    /// done, so the end's goodbyes may go (see [`Reader::after_the_last_delivery`]).
    fanned_out: watch::Sender<bool>,
    /// Which readers that ended early have been followed by one that resumed.
    returns: std::sync::Mutex<Returns>,
    /// Resumes so far: a sign of life the drain waits for (a confirming request may come and
    /// go without ever counting as a connected subscriber).
    resumes: watch::Sender<u64>,
    /// The messages subscribers send up and their rooms' copies (`None`: one-way).
    rooms: Option<rooms::Rooms>,
}

/// Readers that ended past the stream's start but before its end (a connection dropped, a poll
/// answered), matched against readers that start past the stream's start (a resume, the next
/// poll), so the server knows whether a subscriber may still be on its way back.
///
/// Readers carry no subscriber identity, so a leave and a resume are matched by order: a
/// resume takes back the oldest leave still open. A resume with no leave open (a reconnect
/// that beat its old connection's handler to the end, or the first connections to a server
/// restarted mid-stream) is held as a credit for a leave in the next [`CREDIT_NS`], and
/// forgotten after: a credit from a restart must not hide a later drop.
#[derive(Debug, Default)]
struct Returns {
    /// Leaves no resume has matched yet.
    open: u64,
    /// Unmatched resumes, by when they came (monotonic ns).
    credits: std::collections::VecDeque<u64>,
}

/// Longest a reader that has handed out the whole stream waits for the others before its
/// transport says goodbye: long enough for the last event's fanout to 100,000 subscribers on
/// one CPU (under 2 s), short enough that a reader stalled behind a slow consumer costs the
/// others' goodbyes little.
const END_WAIT: Duration = Duration::from_secs(5);

/// How long an unmatched resume may wait for the leave it answers.
const CREDIT_NS: u64 = 1_000_000_000;

impl Returns {
    fn forget_old_credits(&mut self, now: u64) {
        while self.credits.front().is_some_and(|&at| at + CREDIT_NS < now) {
            self.credits.pop_front();
        }
    }

    fn left(&mut self) {
        self.forget_old_credits(now_ns());
        if self.credits.pop_front().is_none() {
            self.open += 1;
        }
    }

    fn resumed(&mut self) {
        let now = now_ns();
        self.forget_old_credits(now);
        if self.open > 0 {
            self.open -= 1;
        } else {
            self.credits.push_back(now);
        }
    }
}

/// Most fault times a hub keeps (a drop every 10 ms for a 100 s run).
const FAULTS_NOTED: usize = 10_000;

impl Hub {
    /// An empty hub for a stream of `expected` events that keeps them all.
    pub fn new(expected: u64) -> Arc<Self> {
        Self::with_options(expected, HubOptions::default())
    }

    /// An empty hub for a stream of `expected` events, kept and handed out as `options` say.
    pub fn with_options(expected: u64, options: HubOptions) -> Arc<Self> {
        let held = options.replay_window.unwrap_or(expected).min(expected);
        Arc::new(Self {
            expected,
            replay_window: options.replay_window,
            delivery_delay: options.delivery_delay,
            streams: options.streams.unwrap_or(1).max(1),
            tagged: options.streams.is_some(),
            log: RwLock::new(Log {
                first_seq: 0,
                entries: VecDeque::with_capacity(held.min(1 << 20) as usize),
            }),
            progress: watch::Sender::new(Progress::default()),
            subscribers: watch::Sender::new(0),
            handed_out: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            refusal: std::sync::Mutex::new(None),
            gapped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            faults: std::sync::Mutex::new(Vec::new()),
            storm: std::sync::OnceLock::new(),
            readers: watch::Sender::new(0),
            at_end: AtomicUsize::new(0),
            fanned_out: watch::Sender::new(false),
            returns: std::sync::Mutex::new(Returns::default()),
            resumes: watch::Sender::new(0),
            rooms: options
                .upstream
                .map(|up| rooms::Rooms::new(up, options.streams.unwrap_or(1))),
        })
    }

    /// Appends the next event (its sequence number is the number published before it),
    /// letting the oldest fall out of the replay window.
    pub fn publish(&self, encoded: Bytes) {
        let published = {
            let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
            log.entries.push_back((now_ns(), encoded));
            if let Some(window) = self.replay_window {
                while log.entries.len() as u64 > window {
                    log.entries.pop_front();
                    log.first_seq += 1;
                }
            }
            log.published()
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

    /// A cursor that reads from event `first_seq` on (a subscriber resuming, when past 0).
    pub fn reader(self: &Arc<Self>, first_seq: u64) -> Reader {
        self.reader_of(first_seq, Interest::All)
    }

    /// A cursor that reads the events of `interest` from event `first_seq` on.
    pub fn reader_of(self: &Arc<Self>, first_seq: u64, interest: Interest) -> Reader {
        self.readers.send_modify(|live| *live += 1);
        if first_seq > 0 {
            self.returns().resumed();
            self.resumes.send_modify(|n| *n += 1);
        }
        let rooms = match (&self.rooms, &interest) {
            (None, _) => Vec::new(),
            (Some(rooms), Interest::All) => rooms.cursors(None),
            (Some(rooms), Interest::Streams(topics)) => rooms.cursors(Some(topics)),
        };
        Reader {
            hub: Arc::clone(self),
            next_seq: first_seq,
            interest,
            progress: self.progress.subscribe(),
            rooms,
            confirmed: false,
            counted_at_end: false,
        }
    }

    /// Whether subscribers send messages up: a subscription then ends when its subscriber
    /// leaves, since more copies may come for it after the last event.
    pub fn two_way(&self) -> bool {
        self.rooms.is_some()
    }

    /// Takes one message a subscriber sent up (its wire form): tallied, and copied to its room
    /// with the echo on. Refused with the reason when this server takes none, or the bytes are
    /// not one.
    pub async fn receive_upstream(&self, wire: Bytes) -> Result<(), String> {
        self.receive_upstream_at(wire, now_ns()).await
    }

    /// As [`Hub::receive_upstream`], for a message received at `received_ns` and handed over
    /// later (a broker's subscriber queues them): its latency ends, and the planted delay
    /// starts, at its receipt.
    pub async fn receive_upstream_at(&self, wire: Bytes, received_ns: u64) -> Result<(), String> {
        match &self.rooms {
            Some(rooms) => rooms.receive(wire, received_ns).await,
            None => Err(
                "this server takes no messages from subscribers (it runs without --upstream-rate)"
                    .into(),
            ),
        }
    }

    /// The upstream ledger's totals so far, where subscribers send up.
    pub fn upstream_totals(&self) -> Option<crate::upstream::Totals> {
        self.rooms.as_ref().map(rooms::Rooms::totals)
    }

    /// Copies of upstream messages the rooms hold, summed over rooms.
    pub fn upstream_copies(&self) -> u64 {
        self.rooms.as_ref().map_or(0, rooms::Rooms::copies)
    }

    /// Streams the global sequence interleaves (1: the one broadcast stream).
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// Whether events carry their stream (subscribers name theirs), or the one broadcast
    /// stream goes to all.
    pub fn tagged(&self) -> bool {
        self.tagged
    }

    /// The interest a subscription's streams give, as text (`1,5,9`, a query's or a
    /// message's), checked against what this hub publishes: `None` follows everything; a
    /// stream past the last is refused with the reason.
    pub fn interest_in(&self, topics: Option<&str>) -> Result<Interest, String> {
        match topics {
            None => Ok(Interest::All),
            Some(_) if !self.tagged => Err(BROADCAST_ONLY.into()),
            Some(text) => crate::workload::parse_topics(text, self.streams).map(Interest::of_list),
        }
    }

    /// The same for a list of streams (empty: everything).
    pub fn interest(&self, topics: Vec<u32>) -> Result<Interest, String> {
        if !topics.is_empty() && !self.tagged {
            return Err(BROADCAST_ONLY.into());
        }
        crate::workload::check_topics(topics, self.streams).map(Interest::of_list)
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

    /// Readers that ended before the end of the stream and were not followed by a reader that
    /// resumed: subscribers that dropped and may be on their way back (or never came back).
    pub fn unresumed(&self) -> u64 {
        self.returns().open
    }

    /// Expects `subscribers` of an earlier server to come back and resume here (a server
    /// restarted mid-stream): each counts as a leave still open until it resumes.
    pub fn expect_returns(&self, subscribers: u64) {
        self.returns().open += subscribers;
    }

    fn returns(&self) -> std::sync::MutexGuard<'_, Returns> {
        self.returns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a reader resumes after the `seen`-th resume (or at once if one already
    /// did): a subscriber that left came back, if only to confirm it has the end.
    pub async fn wait_for_resume_after(&self, seen: u64) {
        let mut rx = self.resumes.subscribe();
        let _ = rx.wait_for(|&resumes| resumes > seen).await;
    }

    /// Resumes so far.
    pub fn resumes(&self) -> u64 {
        *self.resumes.borrow()
    }

    /// Latches [`Hub::fanned_out`] once every live reader is at the end (and one is).
    fn note_reader_at_end(&self) {
        let at_end = self.at_end.load(Ordering::Relaxed);
        if at_end > 0 && at_end >= *self.readers.borrow() {
            self.fanned_out
                .send_if_modified(|done| !std::mem::replace(done, true));
        }
    }

    /// Waits until every reader has ended (a closed connection's handler may outlive it by a
    /// moment).
    pub async fn wait_until_no_readers(&self) {
        let mut rx = self.readers.subscribe();
        let _ = rx.wait_for(|&live| live == 0).await;
    }

    /// Waits until no subscriber is connected.
    pub async fn wait_until_no_subscribers(&self) {
        let mut rx = self.subscribers.subscribe();
        let _ = rx.wait_for(|&connected| connected == 0).await;
    }

    /// Waits until at least `n` events have been published (or the hub closed).
    pub async fn wait_until_published(&self, n: u64) {
        let mut rx = self.progress.subscribe();
        let _ = rx.wait_for(|p| p.closed || p.published >= n).await;
    }

    /// Notes that an injected fault struck at `at_ns` (monotonic).
    pub fn note_fault(&self, at_ns: u64) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.len() < FAULTS_NOTED {
            faults.push(at_ns);
        }
    }

    /// Notes that the close storm cut every connection at `at_ns` (monotonic).
    pub fn note_storm(&self, at_ns: u64) {
        let _ = self.storm.set(at_ns);
    }

    /// When the close storm struck (monotonic ns), if it has.
    pub fn storm(&self) -> Option<u64> {
        self.storm.get().copied()
    }

    /// When injected faults struck (monotonic ns), in order.
    pub fn faults(&self) -> Vec<u64> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts one delivery sent again after a failed attempt.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries sent again so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts `events` deliveries the server gave up on.
    pub fn abandoned_many(&self, events: u64) {
        self.abandoned.fetch_add(events, Ordering::Relaxed);
    }

    /// Notes why the server refused to send an event (the first reason is kept; the event is
    /// counted as abandoned by the caller).
    pub fn refuse(&self, why: String) {
        let mut refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
        refusal.get_or_insert(why);
    }

    /// Why the server first refused to send an event, if it did.
    pub fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Deliveries the server gave up on so far.
    pub fn abandoned_count(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Events handed to subscribers so far, summed over all readers.
    pub fn handed_out(&self) -> u64 {
        self.handed_out.load(Ordering::Relaxed)
    }

    /// Notes that the process delivering for this server (a broker) sent its subscribers
    /// more since it was last looked at.
    pub fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// A count that grows while delivery is under way: events handed out by the server's
    /// readers, and a broker seen sending more.
    pub fn progress(&self) -> u64 {
        self.handed_out() + self.relayed.load(Ordering::Relaxed)
    }

    /// Events answered as gaps so far (asked for after the replay window let them go), summed
    /// over readers.
    pub fn gapped(&self) -> u64 {
        self.gapped.load(Ordering::Relaxed)
    }

    /// The oldest event still held, if any (everything before it fell out of the window).
    pub fn first_held(&self) -> u64 {
        self.log.read().unwrap_or_else(|e| e.into_inner()).first_seq
    }

    /// When event `seq` was published, if it has been and is still held.
    fn published_at(&self, seq: u64) -> Option<u64> {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        let index = seq.checked_sub(log.first_seq)?;
        log.entries.get(index as usize).map(|(at, _)| *at)
    }

    /// The first event at or after `from` that `interest` follows, if the stream has one.
    fn next_of(&self, from: u64, interest: &Interest) -> Option<u64> {
        let next = match interest {
            Interest::All => from,
            Interest::Streams(topics) => {
                // Events of stream t sit at t, t + K, t + 2K...: the nearest of each.
                let k = self.streams;
                topics
                    .iter()
                    .map(|&t| {
                        let t = u64::from(t);
                        if from <= t {
                            t
                        } else {
                            t + (from - t).div_ceil(k) * k
                        }
                    })
                    .min()?
            }
        };
        (next < self.expected).then_some(next)
    }

    /// Events of `interest` from `from` on, published no later than `until_ns`, within
    /// `limit`; starting with a gap when some of them fell out of the replay window.
    fn read_of(&self, from: u64, interest: &Interest, limit: BatchLimit, until_ns: u64) -> Batch {
        if *interest == Interest::All {
            return self.read(from, limit, until_ns);
        }
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        // A gap is in global sequence numbers: the subscriber counts its own streams' share.
        let gap = (from < log.first_seq).then(|| Gap {
            from,
            count: log.first_seq - from,
        });
        let mut next = self.next_of(from.max(log.first_seq), interest);
        let (mut events, mut seqs, mut bytes) = (Vec::new(), Vec::new(), 0);
        while let Some(seq) = next {
            let Some((published, event)) = log.entries.get((seq - log.first_seq) as usize) else {
                break;
            };
            let fits = bytes == 0 || bytes + event.len() <= limit.bytes;
            if *published > until_ns || events.len() >= limit.events.max(1) || !fits {
                break;
            }
            bytes += event.len();
            events.push(event.clone());
            seqs.push(seq);
            next = self.next_of(seq + 1, interest);
        }
        Batch {
            gap,
            first_seq: seqs.first().copied().unwrap_or(from.max(log.first_seq)),
            events,
            seqs,
            copies: Vec::new(),
        }
    }

    /// Events `[from, ..)` published no later than `until_ns`, within `limit`; starting with
    /// a gap when some of them fell out of the replay window.
    fn read(&self, from: u64, limit: BatchLimit, until_ns: u64) -> Batch {
        let log = self.log.read().unwrap_or_else(|e| e.into_inner());
        let gap = (from < log.first_seq).then(|| Gap {
            from,
            count: log.first_seq - from,
        });
        let from = from.max(log.first_seq);
        let start = ((from - log.first_seq) as usize).min(log.entries.len());
        let mut bytes = 0;
        let events: Vec<Bytes> = log
            .entries
            .range(start..)
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
            gap,
            first_seq: from,
            events,
            seqs: Vec::new(),
            copies: Vec::new(),
        }
    }
}

/// Why a subscription that names streams is refused by a broadcast server.
const BROADCAST_ONLY: &str =
    "this server publishes one broadcast stream: subscribe without naming topics";

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

impl Drop for Reader {
    fn drop(&mut self) {
        // A reader still at the stream's start owes nothing to come back for: the next one
        // starts there too. Any other that ends without its subscriber's confirmation is a
        // leave, even past the last event: bytes written are not bytes received (a proxy or a
        // NAT box may have taken them and cut the connection), so the server keeps the stream
        // for the subscriber to resume, or to confirm from the end, within the grace.
        // Two-way subscriptions end when their subscriber leaves (copies may follow the last
        // event), so there the whole stream read is enough.
        let finished = self.confirmed || (self.hub.two_way() && self.events_done());
        if self.next_seq > 0 && !finished {
            self.hub.returns().left();
        }
        if self.counted_at_end {
            self.hub.at_end.fetch_sub(1, Ordering::Relaxed);
        }
        self.hub.readers.send_modify(|live| *live -= 1);
        // The last reader still reading may be this one, gone.
        self.hub.note_reader_at_end();
    }
}

/// One subscriber's position in the log.
#[derive(Debug)]
pub struct Reader {
    hub: Arc<Hub>,
    /// Sequence number of the next event this reader will return.
    next_seq: u64,
    /// The streams it follows.
    interest: Interest,
    progress: watch::Receiver<Progress>,
    /// Where it stands in each of its rooms' copies (none for a one-way stream).
    rooms: Vec<rooms::RoomCursor>,
    /// Its subscriber confirmed, in its transport's idiom, that it holds the whole stream.
    confirmed: bool,
    /// Counted in [`Hub::at_end`].
    counted_at_end: bool,
}

impl Reader {
    /// Waits for events after the cursor and returns all that are ready (within `limit`), or
    /// `None` once the stream is fully read or the server closed.
    pub async fn next_batch(&mut self, limit: BatchLimit) -> Option<Batch> {
        if self.hub.two_way() {
            // Boxed: inline, the two-way wait would size every one-way reader's wait too (a
            // held long poll, an idle SSE stream), for as long as it waits.
            return Box::pin(self.next_two_way(limit)).await;
        }
        // The next event this reader follows: it waits for that one, not for others' events.
        let Some(next) = self.hub.next_of(self.next_seq, &self.interest) else {
            // Boxed, as the two-way wait is: inline, it would size every reader's wait for the
            // next event (an idle connection's) by its timer and watches.
            Box::pin(self.after_the_last_delivery()).await;
            return None;
        };
        let progress = self
            .progress
            .wait_for(|p| p.closed || p.published > next)
            .await
            .ok()
            .map(|p| *p)?;
        if progress.closed {
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

    /// The hub this reader reads, for the server that also takes messages up.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Returns what is ready now without waiting (possibly nothing).
    pub fn try_batch(&mut self, limit: BatchLimit) -> Batch {
        let until = match self.hub.delivery_delay {
            Some(delay) => now_ns().saturating_sub(delay.as_nanos() as u64),
            None => u64::MAX,
        };
        let mut batch = self.take(limit, until);
        self.take_copies(limit, &mut batch);
        batch
    }

    /// Adds the copies of messages up that are ready in the reader's rooms (two-way traffic
    /// with the echo on), as many as the batch takes events.
    fn take_copies(&mut self, limit: BatchLimit, batch: &mut Batch) {
        if let Some(rooms) = &self.hub.rooms {
            rooms.take(&mut self.rooms, limit.events.max(1), &mut batch.copies);
            self.hub
                .handed_out
                .fetch_add(batch.copies.len() as u64, Ordering::Relaxed);
        }
    }

    /// How many copies this reader has had from each of its rooms, in the order of its
    /// rooms: the cursor a client that reads with one request after another (polling) sends
    /// back with the next, as it sends `after=` for events.
    pub fn copy_cursor(&self) -> Vec<u64> {
        self.rooms.iter().map(|r| r.position() as u64).collect()
    }

    /// Moves the reader to `positions` in its rooms' copies (a [`Reader::copy_cursor`] of an
    /// earlier request); refused with the reason when they are not one per room, or claim
    /// copies a room does not hold.
    pub fn resume_copies(&mut self, positions: &[u64]) -> Result<(), String> {
        if positions.len() != self.rooms.len() {
            return Err(format!(
                "{} copy positions for {} rooms: one per room followed, in order",
                positions.len(),
                self.rooms.len()
            ));
        }
        for (room, &position) in self.rooms.iter_mut().zip(positions) {
            room.move_to(position)?;
        }
        Ok(())
    }

    /// Whether this reader is done: it has read the whole stream (every event of its
    /// streams), and subscribers send nothing up whose copies could still come.
    pub fn at_end(&self) -> bool {
        !self.hub.two_way() && self.events_done()
    }

    /// The subscriber confirmed that it holds everything up to the end, in its transport's
    /// idiom: a close after the end (duplex transports), a request resuming from the end
    /// (SSE, polling, gRPC), a 2xx for every event (webhooks). Counts only once this reader has
    /// handed out the whole stream: a subscriber that closes earlier left before the end.
    pub fn confirm_end(&mut self) {
        self.confirmed = self.events_done();
    }

    /// This reader has handed out the whole stream: it waits (at most [`END_WAIT`]) until
    /// every other reader of the hub has too, so its transport's goodbye (a close frame, the
    /// body's end, a last answer) does not take the CPU from the last event's deliveries still
    /// on their way to others. At 100,000 WebSocket subscribers each close right behind its
    /// own delivery made the last event's fanout 40% longer than any other's.
    async fn after_the_last_delivery(&mut self) {
        if !std::mem::replace(&mut self.counted_at_end, true) {
            self.hub.at_end.fetch_add(1, Ordering::Relaxed);
            self.hub.note_reader_at_end();
        }
        let mut fanned_out = self.hub.fanned_out.subscribe();
        let mut progress = self.progress.clone();
        tokio::select! {
            _ = fanned_out.wait_for(|done| *done) => {}
            _ = progress.wait_for(|p| p.closed) => {}
            _ = tokio::time::sleep(END_WAIT) => {}
        }
    }

    /// Whether this reader has read every event of its streams.
    fn events_done(&self) -> bool {
        self.hub.next_of(self.next_seq, &self.interest).is_none()
    }

    /// A two-way reader's next batch: the events and copies ready now, else the first of
    /// either to come; `None` only once the server shuts down, because copies may follow the
    /// last event.
    async fn next_two_way(&mut self, limit: BatchLimit) -> Option<Batch> {
        loop {
            if self.progress.borrow().closed {
                return None;
            }
            // Under the delivery-delay fault, the next event is held until it is old enough.
            if let (Some(delay), Some(next)) = (
                self.hub.delivery_delay,
                self.hub.next_of(self.next_seq, &self.interest),
            ) {
                if let Some(published) = self.hub.published_at(next) {
                    crate::clock::sleep_until_ns(published + delay.as_nanos() as u64).await;
                }
            }
            let batch = self.try_batch(limit);
            if batch.gap.is_some() || !batch.events.is_empty() || !batch.copies.is_empty() {
                return Some(batch);
            }
            // Woken by the next event this reader follows, not by everyone else's.
            let next = self.hub.next_of(self.next_seq, &self.interest);
            let (rooms, progress) = (&mut self.rooms, &mut self.progress);
            let events = async {
                match next {
                    Some(next) => progress
                        .wait_for(|p| p.closed || p.published > next)
                        .await
                        .is_ok(),
                    None => progress.wait_for(|p| p.closed).await.is_ok(),
                }
            };
            let copies = async {
                if rooms.is_empty() {
                    std::future::pending::<()>().await;
                }
                let waits = rooms.iter_mut().map(|r| Box::pin(r.changed()));
                futures_util::future::select_all(waits).await;
            };
            tokio::select! {
                open = events => {
                    if !open {
                        return None;
                    }
                }
                () = copies => {}
            }
        }
    }

    fn take(&mut self, limit: BatchLimit, until_ns: u64) -> Batch {
        let batch = self
            .hub
            .read_of(self.next_seq, &self.interest, limit, until_ns);
        let taken = batch.events.len() as u64;
        if let Some(gap) = batch.gap {
            self.hub.gapped.fetch_add(gap.count, Ordering::Relaxed);
        }
        self.next_seq = match batch.last_seq() {
            Some(last) => last + 1,
            None => batch.first_seq,
        };
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

    /// A bounded log lets old events go; a reader behind it is told exactly what it missed,
    /// then reads on from the oldest event held, and the hub counts the gap.
    #[test]
    fn replay_window_answers_gaps() {
        let hub = Hub::with_options(
            10,
            HubOptions {
                replay_window: Some(3),
                ..HubOptions::default()
            },
        );
        for i in 0..8 {
            hub.publish(Bytes::from(format!("event {i}")));
        }
        assert_eq!((hub.published(), hub.first_held()), (8, 5));
        let mut behind = hub.reader(2);
        let batch = behind.try_batch(BatchLimit::default());
        assert_eq!(batch.gap, Some(Gap { from: 2, count: 3 }));
        assert_eq!((batch.first_seq, batch.events.len()), (5, 3));
        assert_eq!(&batch.events[0][..], b"event 5");
        let mut within = hub.reader(6);
        let batch = within.try_batch(BatchLimit::default());
        assert_eq!(
            (batch.gap, batch.first_seq, batch.events.len()),
            (None, 6, 2)
        );
        assert_eq!(hub.gapped(), 3);
    }

    /// Leaves and resumes pair up in order; a resume before its leave waits as a credit, and a
    /// credit older than a second (a restarted server's first connections) no longer hides a
    /// leave.
    #[test]
    fn leaves_are_matched_by_resumes() {
        let mut returns = Returns::default();
        returns.left();
        returns.left();
        returns.resumed();
        assert_eq!(returns.open, 1);
        returns.resumed();
        assert_eq!(returns.open, 0);
        // A reconnect that beat its old connection's end: the leave that follows is matched.
        returns.resumed();
        returns.left();
        assert_eq!((returns.open, returns.credits.len()), (0, 0));
        // Credits from long ago are forgotten: the leave stays open.
        returns.resumed();
        returns.forget_old_credits(now_ns() + 2 * CREDIT_NS);
        returns.left();
        assert_eq!(returns.open, 1);
    }

    /// Writing the whole stream is not delivering it: a reader that handed out every event and
    /// ended without its subscriber's confirmation is a leave the server waits for; one from
    /// the end that confirms (the subscriber's request from the end) settles it, and a reader
    /// confirmed at the end leaves nothing open. A confirmation before the end counts for
    /// nothing.
    #[test]
    fn only_a_confirmed_end_is_delivered() {
        let hub = hub_with(3, 3);
        let mut written = hub.reader(0);
        assert_eq!(written.try_batch(BatchLimit::default()).events.len(), 3);
        assert!(written.at_end());
        drop(written);
        assert_eq!(hub.unresumed(), 1, "written but unconfirmed");
        let resumes = hub.resumes();
        let mut from_the_end = hub.reader(3);
        assert!(from_the_end.at_end());
        from_the_end.confirm_end();
        drop(from_the_end);
        assert_eq!((hub.unresumed(), hub.resumes()), (0, resumes + 1));

        let mut confirmed = hub.reader(0);
        confirmed.try_batch(BatchLimit::default());
        confirmed.confirm_end();
        drop(confirmed);
        assert_eq!(hub.unresumed(), 0);

        let mut early = hub.reader(0);
        early.try_batch(BatchLimit {
            events: 1,
            bytes: usize::MAX,
        });
        early.confirm_end();
        drop(early);
        assert_eq!(hub.unresumed(), 1, "a close before the end is a leave");
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

    /// A reader that has handed out the whole stream sees its end only once every other
    /// reader has too (or has gone): the goodbyes wait for the last event's deliveries.
    #[tokio::test]
    async fn the_end_waits_for_every_reader() {
        let hub = hub_with(2, 2);
        let (mut first, mut second, gone) = (hub.reader(0), hub.reader(0), hub.reader(0));
        first.next_batch(BatchLimit::default()).await.unwrap();
        let first_end = tokio::spawn(async move { first.next_batch(BatchLimit::default()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !first_end.is_finished(),
            "two readers have not handed it all out"
        );
        drop(gone);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!first_end.is_finished(), "one reader still has not");
        second.next_batch(BatchLimit::default()).await.unwrap();
        let second_end = second.next_batch(BatchLimit::default()).await;
        assert!(
            second_end.is_none(),
            "the last reader to the end goes at once"
        );
        // Well inside END_WAIT (5 s): the first goes because the last arrived, not by the bound.
        let first_end = tokio::time::timeout(Duration::from_secs(2), first_end).await;
        assert!(
            first_end.unwrap().unwrap().is_none(),
            "and lets the first go"
        );
        let late = hub.reader(2).next_batch(BatchLimit::default()).await;
        assert!(
            late.is_none(),
            "a reader from the end afterwards passes at once"
        );
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
