//! When a subscriber's messages go up, on the client's side: the open-loop [`Schedule`] a
//! client that reads and sends in one loop (WebSocket, TCP, MQTT) keeps, and for a client that
//! sends beside its subscription (an HTTP POST per message, a gRPC call), the [`Outbox`] that
//! runs next to it and the [`Watched`] sink that tells the outbox when the stream began.

use std::future::Future;

use tokio::sync::watch;

use crate::event::{DecodeError, Event, Gap};
use crate::transport::{ClientConfig, ClientError, Flow, Reconnected, Sink};
use crate::upstream::{Message, Plan};

/// One sender's schedule: message `k` is due `k / rate` after the stream's start (known from
/// its first event), whatever happened to the ones before, so a send that blocks makes the
/// later messages late, which their latency shows, instead of moving them.
#[derive(Debug)]
pub(crate) struct Schedule {
    plan: Plan,
    /// The stream's start, once the first event told it.
    origin_ns: Option<u64>,
    /// The next message to send.
    next: u64,
}

impl Schedule {
    /// The schedule the subscriber's config asks for, if it sends up.
    pub(crate) fn of(config: &ClientConfig) -> Option<Self> {
        config
            .upstream
            .clone()
            .filter(|p| p.count > 0)
            .map(|plan| Self {
                plan,
                origin_ns: None,
                next: 0,
            })
    }

    /// Starts the schedule at the stream's start, the first time it is known.
    pub(crate) fn start(&mut self, origin_ns: Option<u64>) {
        if self.origin_ns.is_none() {
            self.origin_ns = origin_ns;
        }
    }

    /// Whether every message has been sent.
    pub(crate) fn finished(&self) -> bool {
        self.next >= self.plan.count
    }

    /// Waits until the next message is due and returns its wire form; never returns before
    /// the schedule has started or once it has finished.
    pub(crate) async fn due(&mut self) -> Vec<u8> {
        let origin = match self.origin_ns {
            Some(origin) if !self.finished() => origin,
            _ => std::future::pending().await,
        };
        crate::clock::alarm::alarm_at(origin + self.plan.offset_ns(self.next)).await;
        let message = self.plan.message(self.next, origin);
        self.next += 1;
        message
    }
}

/// One connection of a client that reads and sends up in one loop (WebSocket, TCP, MQTT, gRPC's
/// bidirectional call): the subscriber's schedule, which outlives the connection, and whether
/// the sink has had everything on this one. The loop selects between its next read and
/// [`Duplex::due`], and goes on until [`Duplex::done`].
pub(crate) struct Duplex<'a> {
    schedule: &'a mut Option<Schedule>,
    received_all: bool,
}

impl<'a> Duplex<'a> {
    /// A new connection's turn of the subscriber's schedule (`None`: it sends nothing).
    pub(crate) fn new(schedule: &'a mut Option<Schedule>) -> Self {
        Self {
            schedule,
            received_all: false,
        }
    }

    /// Notes what the sink said of what just arrived; the schedule starts once the sink knows
    /// when the stream began (its first event).
    pub(crate) fn took(&mut self, flow: Flow, sink: &dyn Sink) {
        self.received_all |= flow == Flow::Stop;
        if let Some(schedule) = self.schedule.as_mut() {
            schedule.start(sink.stream_origin());
        }
    }

    /// Whether the sink has had everything it wanted on this connection.
    pub(crate) fn received_all(&self) -> bool {
        self.received_all
    }

    /// Whether the connection has done its work: the sink has everything, and every message
    /// is sent (a connection stays up for the messages still due).
    pub(crate) fn done(&self) -> bool {
        self.received_all && self.schedule.as_ref().is_none_or(Schedule::finished)
    }

    /// The next message up once it is due: pending forever without a schedule, before the
    /// stream began, or once every message has gone. Cancel-safe: a message is handed out
    /// only when this returns.
    pub(crate) async fn due(&mut self) -> Vec<u8> {
        match self.schedule {
            Some(schedule) => schedule.due().await,
            None => std::future::pending().await,
        }
    }
}

/// A subscriber's messages up for a client that sends them apart from its subscription: each
/// handed out when due, from the stream's start as the subscription's [`Watched`] sink saw it.
pub(crate) struct Outbox {
    schedule: Schedule,
    origin: watch::Receiver<Option<u64>>,
}

impl Outbox {
    /// The next message when it falls due; `None` once every one has been handed out (or the
    /// subscription ended before the stream began).
    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
        if self.schedule.finished() {
            return None;
        }
        // The stream's start, once the first event has come (or never, if the watch closed).
        let origin = *self.origin.wait_for(Option::is_some).await.ok()?;
        self.schedule.start(origin);
        Some(self.schedule.due().await)
    }
}

/// Wraps a subscriber's sink so that an [`Outbox`] beside it learns the stream's start: what
/// every client that sends up apart from its subscription (HTTP POSTs, gRPC calls) starts
/// with. Without messages to send, the outbox is `None` and the sink passes through alone.
pub(crate) fn outbox<'a>(
    sink: &'a mut dyn Sink,
    config: &ClientConfig,
) -> (Watched<'a>, Option<Outbox>) {
    let (origin, watching) = watch::channel(None);
    let outbox = Schedule::of(config).map(|schedule| Outbox {
        schedule,
        origin: watching,
    });
    let known = outbox.is_none();
    (
        Watched {
            sink,
            origin,
            known,
        },
        outbox,
    )
}

/// Runs a subscription and the sending of its messages up together: done when both are, and
/// ended by the first error of either (a message that cannot go up fails the subscription, as
/// an event that cannot arrive does).
pub(crate) fn together<'a>(
    receiving: impl Future<Output = Result<(), ClientError>> + 'a,
    sending: impl Future<Output = Result<(), ClientError>> + Send + 'a,
) -> impl Future<Output = Result<(), ClientError>> + 'a {
    // The sending side is boxed: it holds a connection of its own while messages go up and is
    // nothing at all without two-way traffic, but inline it would size every subscriber's
    // task for its whole life.
    let sending = Box::pin(sending);
    async move { tokio::try_join!(receiving, sending).map(|_| ()) }
}

/// A sink that passes everything on and publishes the stream's start the first time the sink
/// knows it.
pub(crate) struct Watched<'a> {
    sink: &'a mut dyn Sink,
    origin: watch::Sender<Option<u64>>,
    /// The start is published (or nobody waits for it): nothing more to do per event.
    known: bool,
}

impl Watched<'_> {
    /// Publishes the start once the wrapped sink knows it (its first event).
    fn note_origin(&mut self) {
        if self.known {
            return;
        }
        if let Some(origin) = self.sink.stream_origin() {
            self.origin.send_replace(Some(origin));
            self.known = true;
        }
    }
}

impl Sink for Watched<'_> {
    fn connected(&mut self, at_ns: u64) {
        self.sink.connected(at_ns);
    }

    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow {
        let flow = self.sink.event(event, received_ns);
        self.note_origin();
        flow
    }

    fn malformed(&mut self, error: &DecodeError) -> Flow {
        self.sink.malformed(error)
    }

    fn batch(&mut self, events: usize) {
        self.sink.batch(events);
    }

    fn reconnected(&mut self, reconnect: Reconnected) {
        self.sink.reconnected(reconnect);
    }

    fn copy(&mut self, message: &Message<'_>, received_ns: u64) -> Flow {
        self.sink.copy(message, received_ns)
    }

    fn stream_origin(&self) -> Option<u64> {
        self.sink.stream_origin()
    }

    fn gap(&mut self, gap: Gap) {
        self.sink.gap(gap);
    }

    fn outage(&mut self, start_ns: u64, end_ns: u64) {
        self.sink.outage(start_ns, end_ns);
    }
}
