//! Resuming a subscription after its connection drops, shared by every client that holds a
//! connection or a cursor: whether to (the `resume` setting, on by default and switchable off
//! to show what it costs), how long to wait (exponential backoff with full jitter, so
//! subscribers cut at the same moment do not all come back at the same moment), when to give up,
//! and where to resume from (the last sequence number the sink took). How a transport asks to
//! resume (`?after=SEQ`, `Last-Event-ID`, a start frame, the poll cursor) stays in its own file.
//!
//! The consumer outage fault lives here too, since it is a subscriber going away and coming
//! back: `--outage 2s` takes each subscriber down once, `--outage-after` past its first event,
//! for that long (its connection closed, or for a webhook consumer, its endpoint answering 503),
//! then it resumes as it would after a drop. So does churn (`--churn R`): across the
//! population, R subscribers a second close their connection and open a new one at once.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;

use super::linger::Linger;
use super::{ClientConfig, ClientError, Flow, Reconnected, Setting, Side, Sink};
use crate::event::{DecodeError, Event, Gap};

/// Reconnect after a dropped connection and go on after the last event received.
pub static RESUME: Setting<bool> = Setting {
    name: "resume",
    help: "Reconnect after a dropped connection and resume after the last event received, each \
           transport in its own idiom; off: a drop ends the subscription",
    side: Side::Client,
    default: true,
    min: false,
};

/// How long the server waits, once no subscriber is connected, for one that dropped to come
/// back before it ends the stream.
pub static RECONNECT_GRACE: Setting<Duration> = Setting {
    name: "reconnect-grace",
    help: "How long the server, once no subscriber is connected and one dropped without the \
           whole stream, waits for it to come back and resume before it stops (a slow \
           consumer may still be reading what its kernel buffered when it was cut)",
    side: Side::Server,
    default: Duration::from_secs(5),
    min: Duration::ZERO,
};

/// How many of the latest events the server keeps for subscribers that resume.
pub static REPLAY_WINDOW: Setting<u64> = Setting {
    name: "replay-window",
    help: "Events the server keeps for subscribers that resume (0: the whole stream); resuming \
           from before them is answered with a gap of their exact size, counted as lost",
    side: Side::Server,
    default: 0,
    min: 0,
};

/// How long a server waits for dropped subscribers to come back: the reconnect grace, or when
/// the server knows of a consumer outage planned for its subscribers (`run` hands its server
/// every setting of the row), long enough to see the outage out.
pub fn reconnect_grace(settings: &super::SettingValues) -> Duration {
    let grace = RECONNECT_GRACE.read(settings);
    match OUTAGE.read(settings) {
        outage if outage.is_zero() => grace,
        outage => grace.max(outage + Duration::from_secs(1)),
    }
}

/// The replay window as a hub takes it: `None` for the whole stream.
pub fn replay_window(settings: &super::SettingValues) -> Option<u64> {
    Some(REPLAY_WINDOW.read(settings)).filter(|&events| events > 0)
}

/// The consumer outage fault: how long each subscriber is down.
pub static OUTAGE: Setting<Duration> = Setting {
    name: "outage",
    help: "Fault: each subscriber goes down once for this long (its connection closed; a \
           webhook consumer's endpoint answers 503), then comes back and resumes (0s: none)",
    side: Side::Client,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// The waits of the retry schedules a sender keeps for a consumer that is down (the webhook
/// provider's backoff): a measurement that shortens an outage shortens these alike, so as many
/// retries fall inside it.
pub static RETRY_WAITS: [&Setting<Duration>; 2] =
    [&super::webhook::RETRY_BASE, &super::webhook::RETRY_CAP];

/// When the consumer outage begins.
pub static OUTAGE_AFTER: Setting<Duration> = Setting {
    name: "outage-after",
    help: "When the outage fault takes a subscriber down, counted from its first event",
    side: Side::Client,
    default: Duration::from_secs(1),
    min: Duration::ZERO,
};

/// The churn fault: connections closed and reopened per second across the population.
pub static CHURN: Setting<u64> = Setting {
    name: "churn",
    help: "Fault: connections closed and reopened per second across all subscribers of the run \
           (of one `pushbench load` process started by hand) (each leaves at random moments, on average every subscribers/R seconds, from its first \
           event), each reopened at once and resumed (with --resume off, not reopened) (0: none)",
    side: Side::Client,
    default: 0,
    min: 0,
};

/// One subscriber's churn: when it next leaves, drawn afresh after each leave so that leaves
/// across the population are a Poisson process at the asked-for rate.
#[derive(Clone, Copy, Debug)]
struct Churn {
    /// Mean time between one subscriber's leaves, ns.
    mean_ns: f64,
    /// When it next leaves (monotonic ns), once its first event started the clock.
    next_ns: Option<u64>,
}

impl Churn {
    /// The churn the settings ask for, shared out over the run's population.
    fn planned(config: &ClientConfig) -> Option<Self> {
        let rate = CHURN.read(&config.settings);
        (rate > 0).then(|| Self {
            mean_ns: config.population.max(1) as f64 / rate as f64 * 1e9,
            next_ns: None,
        })
    }

    /// Whether the subscriber should leave at `now_ns` (the first call starts the clock).
    fn is_due(&mut self, now_ns: u64) -> bool {
        // Drawn once per leave, not per event: this runs on every event's path.
        let next = match self.next_ns {
            Some(next) => next,
            None => *self.next_ns.insert(now_ns + self.draw()),
        };
        now_ns >= next
    }

    /// Sets the next leave after one at `now_ns`.
    fn left(&mut self, now_ns: u64) {
        self.next_ns = Some(now_ns + self.draw());
    }

    /// An exponential wait with the mean: what makes the leaves memoryless.
    fn draw(&self) -> u64 {
        let uniform: f64 = rand::rng().random_range(f64::EPSILON..1.0);
        (-uniform.ln() * self.mean_ns) as u64
    }
}

/// Why a subscriber is closing its connection on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaving {
    /// The outage fault: it stays down for the outage's length.
    Outage,
    /// Churn: it opens a new connection at once.
    Churn,
}

/// One subscriber's planned outage: down from `after` past its first event, for `length`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outage {
    after: Duration,
    length: Duration,
    /// When the subscriber's first event arrived (monotonic ns), once it has.
    first_event_ns: Option<u64>,
}

impl Outage {
    /// The outage the settings ask for, if any.
    pub(crate) fn planned(settings: &super::SettingValues) -> Option<Self> {
        let length = OUTAGE.read(settings);
        (!length.is_zero()).then(|| Self {
            after: OUTAGE_AFTER.read(settings),
            length,
            first_event_ns: None,
        })
    }

    /// Notes an event's arrival; the first one starts the outage's clock.
    pub(crate) fn event_at(&mut self, received_ns: u64) {
        self.first_event_ns.get_or_insert(received_ns);
    }

    /// When the subscriber is down: `[start, end)` in monotonic ns, once its clock started.
    pub(crate) fn window_ns(&self) -> Option<(u64, u64)> {
        let start = self.first_event_ns? + self.after.as_nanos() as u64;
        Some((start, start + self.length.as_nanos() as u64))
    }

    /// Whether the outage should have begun by `now_ns`.
    pub(crate) fn is_due(&self, now_ns: u64) -> bool {
        self.window_ns().is_some_and(|(start, _)| now_ns >= start)
    }

    /// How long the subscriber stays down.
    pub(crate) fn length(&self) -> Duration {
        self.length
    }
}

/// The first ceiling of the random wait before reconnecting.
const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The ceiling never grows past this.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Reconnects in a row that brought no event before the subscription gives up.
const MAX_FRUITLESS: u32 = 8;

/// The sink as a client sees it while its subscription may resume: passes everything on,
/// remembers the last sequence number taken and whether the sink has enough, reports the first
/// connection as the subscription's and later ones as reconnects, and decides after each
/// connection whether to connect again.
pub(crate) struct Resuming<'a> {
    sink: &'a mut dyn Sink,
    resume: bool,
    /// Subscribers send messages up (two-way traffic).
    two_way: bool,
    /// The server is pushbench's own, which has each transport's idiom for hearing that a
    /// subscriber holds the whole stream (a server pushbench did not write has none).
    own_server: bool,
    last_seq: Option<u64>,
    stopped: bool,
    connected: bool,
    /// An event arrived since the last reconnect (so the backoff starts over).
    progressed: bool,
    /// Reconnects in a row with no event between them.
    fruitless: u32,
    /// The consumer outage fault planned for this subscriber, until it has happened.
    outage: Option<Outage>,
    /// The churn fault, when it is on.
    churn: Option<Churn>,
    /// The subscriber is closing its connection on purpose, and why.
    leaving: Option<Leaving>,
    /// When the current connection attempt began (monotonic ns).
    attempt_ns: u64,
    /// The current attempt established the subscription.
    attempt_connected: bool,
    /// Attempts since the last drop that ended before the subscription was established.
    failed_attempts: u32,
    /// Where it waits for the others once it has the whole stream.
    linger: Option<Arc<Linger>>,
}

impl<'a> Resuming<'a> {
    /// Wraps the subscriber's sink for a client configured by `config`.
    pub(crate) fn new(sink: &'a mut dyn Sink, config: &ClientConfig) -> Self {
        Self {
            sink,
            resume: RESUME.read(&config.settings),
            two_way: config.upstream.is_some(),
            own_server: crate::profile::SERVER.read(&config.settings).0.is_none(),
            last_seq: None,
            stopped: false,
            connected: false,
            progressed: false,
            fruitless: 0,
            outage: Outage::planned(&config.settings),
            churn: Churn::planned(config),
            leaving: None,
            attempt_ns: crate::clock::now_ns(),
            attempt_connected: false,
            failed_attempts: 0,
            linger: config.linger.clone(),
        }
    }

    /// The sequence number of the last event taken: where to resume after.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Whether the subscription resumes after a drop (the `resume` setting).
    pub(crate) fn resumes(&self) -> bool {
        self.resume
    }

    /// Whether the sink has what it needs.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Once the sink has the whole stream: keeps the caller (its connection still open) until
    /// every subscriber of the run has it too, where the load asks for that (see
    /// [`crate::transport::linger`]). A subscriber leaving for a fault does not wait.
    pub(crate) fn linger(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Owned, so the wait borrows nothing of the subscriber's (whose sink is not `Sync`).
        let linger = self.linger.clone().filter(|_| self.stopped);
        async move {
            if let Some(linger) = linger {
                linger.hold().await;
            }
        }
    }

    /// Whether the subscription ended holding the whole stream of a one-way run: then it
    /// confirms the end to the server ([`confirm_end`]). Two-way subscriptions end when their
    /// subscriber leaves (copies may follow the last event), so their servers wait for no
    /// confirmation; nor does a server pushbench did not write, which knows no such idiom.
    pub(crate) fn confirms_end(&self) -> bool {
        self.stopped && !self.two_way && self.own_server
    }

    /// After a connection ended with `ended`: `Ok(true)` to connect again (having waited),
    /// `Ok(false)` when the subscription is done, or the error that ends it. A connection that
    /// ended cleanly (`Ok`) by the transport's own rule, or a sink that has enough, is done; a
    /// drop is resumed when resuming is on and the subscription was established once.
    pub(crate) async fn again(
        &mut self,
        ended: Result<(), ClientError>,
    ) -> Result<bool, ClientError> {
        let go_on = self.decide(ended).await;
        if matches!(go_on, Ok(true)) {
            self.attempt_begins();
        }
        go_on
    }

    /// A new connection attempt begins without [`Resuming::again`] (a polling client whose
    /// keep-alive connection the server closed between requests opens the next one itself):
    /// its reconnect is timed from here.
    pub(crate) fn attempt_begins(&mut self) {
        self.attempt_ns = crate::clock::now_ns();
        self.attempt_connected = false;
    }

    /// What [`Resuming::again`] decides, before the next attempt is timed.
    async fn decide(&mut self, ended: Result<(), ClientError>) -> Result<bool, ClientError> {
        match self.leaving.take() {
            Some(Leaving::Outage) => return self.sit_out_outage().await,
            // Churn: the subscriber opens its new connection at once; told not to resume, it
            // ends there, as after a drop, and the ledger counts what it missed as cut off.
            Some(Leaving::Churn) if self.resume => return Ok(true),
            Some(Leaving::Churn) => {
                return Err(ClientError::Protocol(
                    "left for the churn fault and, resume off, did not come back".into(),
                ))
            }
            None => {}
        }
        let error = match ended {
            _ if self.stopped => return Ok(false),
            Ok(()) => return Ok(false),
            Err(error) => error,
        };
        // A refusal (4xx) is an answer, not a drop: asking again gets the same one.
        let refused =
            matches!(error, ClientError::Status { status, .. } if (400..500).contains(&status));
        if !self.resume || !self.connected || refused {
            return Err(error);
        }
        // An attempt that never got its subscription back (a 503, a close, a timeout) is what
        // a storm costs beyond the wait.
        if !self.attempt_connected {
            self.failed_attempts += 1;
        }
        if std::mem::take(&mut self.progressed) {
            self.fruitless = 0;
        }
        self.fruitless += 1;
        if self.fruitless > MAX_FRUITLESS {
            return Err(ClientError::Protocol(format!(
                "gave up after {MAX_FRUITLESS} reconnects without an event: {error}"
            )));
        }
        tracing::debug!(%error, attempt = self.fruitless, "connection dropped; resuming");
        tokio::time::sleep(full_jitter(self.fruitless)).await;
        Ok(true)
    }
}

impl Resuming<'_> {
    /// The subscriber closed its connection for the outage fault: it stays down until the
    /// outage ends, then connects again and resumes (or, told not to resume, ends with an error
    /// the ledger accounts for).
    async fn sit_out_outage(&mut self) -> Result<bool, ClientError> {
        let Some(outage) = self.outage.take() else {
            return Ok(true);
        };
        if !self.resume {
            return Err(ClientError::Protocol(
                "went down for the outage fault and, resume off, did not come back".into(),
            ));
        }
        // Down for the whole length from the moment it went down (an event arriving late
        // starts it late, never shorter).
        let start = crate::clock::now_ns();
        tokio::time::sleep(outage.length()).await;
        self.sink.outage(start, crate::clock::now_ns());
        Ok(true)
    }
}

/// Attempts at confirming the end before a subscriber leaves it to the server's grace.
const CONFIRM_ATTEMPTS: u32 = 4;

/// Confirms to the server that the subscriber holds the whole stream, in the transport's idiom:
/// each `attempt` is one try (a request resuming from the end, answered 204 or an empty call;
/// a connection from the end whose close handshake completes), `Ok` once the server's answer
/// shows it heard. A try that fails (a middlebox cut that connection too) is made again after
/// a short random wait, a few times, each within the request timeout. Best effort: the
/// subscriber has what it needs whatever the server hears, and a server that never hears it
/// keeps the stream until its reconnect grace runs out.
pub(crate) async fn confirm_end<F, Fut>(config: &ClientConfig, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    for tried in 1..=CONFIRM_ATTEMPTS {
        match tokio::time::timeout(config.request_timeout, attempt()).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => tracing::debug!(%error, tried, "the end was not confirmed"),
            Err(_) => tracing::debug!(
                tried,
                "the end was not confirmed within the request timeout"
            ),
        }
        tokio::time::sleep(full_jitter(tried)).await;
    }
}

/// A random wait in `[0, ceiling]`, the ceiling doubling with each fruitless attempt up to
/// [`MAX_WAIT`] ("full jitter").
fn full_jitter(attempt: u32) -> Duration {
    let ceiling = FIRST_WAIT
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_WAIT);
    ceiling.mul_f64(rand::rng().random::<f64>())
}

impl Sink for Resuming<'_> {
    fn connected(&mut self, at_ns: u64) {
        self.attempt_connected = true;
        if std::mem::replace(&mut self.connected, true) {
            self.sink.reconnected(Reconnected {
                attempt_ns: self.attempt_ns,
                at_ns,
                failed_attempts: std::mem::take(&mut self.failed_attempts),
            });
        } else {
            self.sink.connected(at_ns);
        }
    }

    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow {
        self.last_seq = Some(self.last_seq.map_or(event.seq, |last| last.max(event.seq)));
        self.progressed = true;
        let flow = self.sink.event(event, received_ns);
        self.stopped |= flow == Flow::Stop;
        if self.stopped {
            return flow;
        }
        if let Some(outage) = self.outage.as_mut() {
            outage.event_at(received_ns);
            if outage.is_due(received_ns) {
                // The subscriber goes down now: the transport ends the connection as if it had
                // enough, and `again` keeps it down until the outage is over.
                self.leaving = Some(Leaving::Outage);
                return Flow::Stop;
            }
        }
        if let Some(churn) = self.churn.as_mut() {
            if churn.is_due(received_ns) {
                // The same way out, and `again` opens the next connection at once.
                churn.left(received_ns);
                self.leaving = Some(Leaving::Churn);
                return Flow::Stop;
            }
        }
        flow
    }

    fn malformed(&mut self, error: &DecodeError) -> Flow {
        let flow = self.sink.malformed(error);
        self.stopped |= flow == Flow::Stop;
        flow
    }

    fn batch(&mut self, events: usize) {
        self.sink.batch(events);
    }

    fn copy(&mut self, message: &crate::upstream::Message<'_>, received_ns: u64) -> Flow {
        let flow = self.sink.copy(message, received_ns);
        self.stopped |= flow == Flow::Stop;
        flow
    }

    fn stream_origin(&self) -> Option<u64> {
        self.sink.stream_origin()
    }

    fn reconnected(&mut self, reconnect: Reconnected) {
        self.sink.reconnected(reconnect);
    }

    fn outage(&mut self, start_ns: u64, end_ns: u64) {
        self.sink.outage(start_ns, end_ns);
    }

    fn gap(&mut self, gap: Gap) {
        // The gap moves the cursor: a reconnect asks for what follows it.
        self.last_seq = Some(
            self.last_seq
                .map_or(gap.last_seq(), |l| l.max(gap.last_seq())),
        );
        self.progressed = true;
        self.sink.gap(gap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait never passes its ceiling, which doubles from 50 ms up to 2 s.
    #[test]
    fn jitter_stays_under_its_ceiling() {
        for attempt in 1..20 {
            let ceiling = (FIRST_WAIT * 2u32.pow((attempt - 1).min(16))).min(MAX_WAIT);
            for _ in 0..50 {
                assert!(full_jitter(attempt) <= ceiling, "attempt {attempt}");
            }
        }
    }
}
