//! pushbench's WebTransport client: one QUIC endpoint per subscriber (a device of its own),
//! trusting the server's certificate by its hash as a browser does, receiving in the mode the
//! settings choose, resuming with `?after=SEQ` after a dropped session, and sending its
//! messages up (two-way traffic) on a stream of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::{Connection, Endpoint, VarInt};

use super::server::close;
use super::{quic, Mode, MODE, OWN_PATH};
use crate::clock::now_ns;
use crate::event::{DecodeError, Event, Gap, MAX_EVENT_BYTES};
use crate::transport::length_prefixed::{FrameBuffer, PREFIX_BYTES};
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{
    deliver, join_query, ClientConfig, ClientError, Flow, Reconnected, Sink, Target,
    ThrottledStream,
};

/// After the datagram mode's end, how long stragglers may still come: a few round trips.
const STRAGGLER_ROUND_TRIPS: u32 = 4;

/// The close code a subscriber leaving before the end uses (an outage, churn): not a
/// confirmation.
const LEAVING: u32 = 499;

/// Subscribes on an endpoint of its own, session after session until the stream is had.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mode = MODE.read(&config.settings);
    let endpoint = endpoint_for(target.addr, config)?;
    let mut sink = Resuming::new(sink, config);
    let mut schedule = Schedule::of(config);
    let mut place = Place::default();
    loop {
        let ended = Session::open(&endpoint, target, config, &mut sink, &place)
            .await
            .map(|connection| Session {
                connection,
                config,
                sink: &mut sink,
                place: &mut place,
                duplex: Duplex::new(&mut schedule),
                up: None,
            });
        let ended = match ended {
            Ok(session) => session.receive(mode).await,
            Err(error) => Err(error),
        };
        // Every event here, but the session gone before its close could confirm that (the
        // drop fault's last cut, a middlebox): confirm on a session from the end instead.
        let unconfirmed = ended.is_err() && sink.stopped() && sink.confirms_end();
        if !sink.again(ended).await? {
            if let (true, Some(last)) = (unconfirmed, sink.last_seq()) {
                let from_end = || confirm_from(&endpoint, target, config, last);
                confirm_end(config, from_end).await;
            }
            // The close must reach the server before the endpoint goes (a browser's tab
            // stays open that long too).
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            return Ok(());
        }
    }
}

/// The subscriber's QUIC endpoint: a UDP socket on its source address.
fn endpoint_for(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<Endpoint<wtransport::endpoint::endpoint_side::Client>, ClientError> {
    let any = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let bind = SocketAddr::new(config.bind.unwrap_or(any), 0);
    let quic = quic::client_config(bind, &config.tls).map_err(ClientError::Config)?;
    Endpoint::client(quic).map_err(|e| ClientError::Connect {
        addr: server,
        reason: format!("opening a QUIC endpoint on {bind}: {e}"),
    })
}

/// Where a resumed session starts, and what must not be taken twice.
#[derive(Debug, Default)]
struct Place {
    /// Every event this subscriber follows up to this one has arrived (or was gapped): the
    /// next session asks for what follows it.
    after: Option<u64>,
    /// Events taken past `after` (a stream per event delivers out of order): a resumed
    /// session sends them again, and they are dropped.
    taken: BTreeSet<u64>,
}

impl Place {
    /// Moves the resume point to `seq`, forgetting what it now covers.
    fn advance(&mut self, seq: u64) {
        if self.after.is_none_or(|after| seq > after) {
            self.after = Some(seq);
            self.taken = self.taken.split_off(&(seq + 1));
        }
    }
}

/// One session and what it feeds.
struct Session<'c, 's, 'r, 'd> {
    connection: Connection,
    config: &'c ClientConfig,
    sink: &'s mut Resuming<'r>,
    place: &'s mut Place,
    duplex: Duplex<'d>,
    /// The stream messages go up on, once the first is due.
    up: Option<wtransport::SendStream>,
}

impl<'c, 's, 'r, 'd> Session<'c, 's, 'r, 'd> {
    /// Opens a session at the target, from where `place` says.
    async fn open(
        endpoint: &Endpoint<wtransport::endpoint::endpoint_side::Client>,
        target: &Target,
        config: &ClientConfig,
        sink: &mut Resuming<'_>,
        place: &Place,
    ) -> Result<Connection, ClientError> {
        let url = session_url(target, config, place.after);
        let started = Instant::now();
        let connection = tokio::time::timeout(config.connect_timeout, endpoint.connect(&url))
            .await
            .map_err(|_| ClientError::Connect {
                addr: target.addr,
                reason: format!("no session within {:?}", config.connect_timeout),
            })?
            .map_err(|e| match e {
                // The server closed the session as it opened (a refusal with its code).
                ConnectingError::ConnectionError(
                    closed @ ConnectionError::ApplicationClosed(_),
                ) => ended(closed),
                other => ClientError::Connect {
                    addr: target.addr,
                    reason: other.to_string(),
                },
            })?;
        config.tls.handshakes.record(started.elapsed());
        sink.connected(now_ns());
        Ok(connection)
    }

    /// Receives in `mode` until the stream is had (then confirms it with a close) or the
    /// session ends.
    async fn receive(mut self, mode: Mode) -> Result<(), ClientError> {
        let received = match mode {
            Mode::Stream => self.one_stream().await,
            Mode::StreamPerEvent => self.stream_per_event().await,
            Mode::Datagrams => self.datagrams().await,
        };
        if let Err(error) = received {
            self.connection.close(VarInt::from_u32(LEAVING), b"");
            return Err(error);
        }
        // Open until every subscriber has the stream, where the load asks.
        self.sink.linger().await;
        // A session the server already closed (a cut) cannot carry the confirmation.
        if let Some(gone) = self.connection.quic_connection().close_reason() {
            return Err(ClientError::Protocol(format!(
                "WebTransport: the session ended before the end was confirmed: {gone}"
            )));
        }
        let code = if self.sink.confirms_end() {
            close::DONE
        } else {
            LEAVING
        };
        self.connection.close(VarInt::from_u32(code), b"");
        Ok(())
    }

    /// `stream` mode: length-prefixed frames on the one stream the server opens.
    async fn one_stream(&mut self) -> Result<(), ClientError> {
        let stream = tokio::select! {
            stream = self.connection.accept_uni() => stream.map_err(ended)?,
            message = self.duplex.due() => {
                self.send_up(message).await?;
                return Box::pin(self.one_stream()).await;
            }
        };
        let mut stream = ThrottledStream::new(stream, self.config.read_rate);
        let mut buffer = FrameBuffer::default();
        loop {
            if self.duplex.done() {
                return Ok(());
            }
            let read = tokio::select! {
                read = buffer.read_from(&mut stream) => read,
                message = self.duplex.due() => {
                    self.send_up(message).await?;
                    continue;
                }
            };
            let received_ns = now_ns();
            match read {
                Ok(0) if self.duplex.received_all() || self.sink.stopped() => return Ok(()),
                Ok(0) => {
                    let why = "the stream ended before it was complete";
                    return Err(cause(&self.connection, why).await);
                }
                Ok(_) => {}
                Err(error) => return Err(cause(&self.connection, &error.to_string()).await),
            }
            while !self.duplex.received_all() {
                match buffer.next_frame() {
                    Err(len) => {
                        return Err(ClientError::Protocol(format!(
                            "WebTransport: frame of {len} bytes exceeds the largest event \
                             ({MAX_EVENT_BYTES} B)"
                        )))
                    }
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        let (flow, _) = take(self.sink, self.place, frame, received_ns);
                        self.duplex.took(flow, self.sink);
                    }
                }
            }
            if let Some(last) = self.sink.last_seq() {
                self.place.advance(last);
            }
        }
    }

    /// `stream-per-event` mode: every stream read to its end at once, all of them side by
    /// side, so one held back by a lost packet holds back nothing else.
    async fn stream_per_event(&mut self) -> Result<(), ClientError> {
        let mut reading = FuturesUnordered::new();
        let mut order = StreamOrder::default();
        loop {
            if self.duplex.done() {
                return Ok(());
            }
            tokio::select! {
                stream = self.connection.accept_uni() => {
                    let stream = stream.map_err(ended)?;
                    reading.push(read_whole(stream));
                }
                Some((id, read)) = reading.next() => {
                    let received_ns = now_ns();
                    let message = read.map_err(|why| {
                        ClientError::Protocol(format!("WebTransport: stream {id}: {why}"))
                    })?;
                    let (flow, seq) = if message.is_empty() {
                        // The opening mark: the stream ids of this session start here.
                        (Flow::Continue, None)
                    } else {
                        take(self.sink, self.place, &message, received_ns)
                    };
                    order.completed(id, message.is_empty(), seq, self.place);
                    self.duplex.took(flow, self.sink);
                }
                message = self.duplex.due() => self.send_up(message).await?,
            }
        }
    }

    /// `datagrams` mode: each datagram a message, until the server's end (an empty stream)
    /// and the stragglers behind it.
    async fn datagrams(&mut self) -> Result<(), ClientError> {
        let mut end: Option<tokio::time::Instant> = None;
        loop {
            if self.duplex.done() {
                return Ok(());
            }
            let straggling = async move {
                match end {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                datagram = self.connection.receive_datagram() => {
                    let datagram = datagram.map_err(ended)?;
                    let (flow, _) = take(self.sink, self.place, &datagram, now_ns());
                    self.duplex.took(flow, self.sink);
                    if let Some(last) = self.sink.last_seq() {
                        self.place.advance(last);
                    }
                }
                stream = self.connection.accept_uni(), if end.is_none() => {
                    stream.map_err(ended)?;
                    let wait = self.connection.rtt() * STRAGGLER_ROUND_TRIPS;
                    end = Some(tokio::time::Instant::now() + wait.max(Duration::from_millis(20)));
                }
                () = straggling => return Ok(()),
                message = self.duplex.due() => self.send_up(message).await?,
            }
        }
    }

    /// Sends one message up, length-prefixed, on the stream opened for them.
    async fn send_up(&mut self, message: Vec<u8>) -> Result<(), ClientError> {
        let broken = |e: String| ClientError::Protocol(format!("WebTransport: sending up: {e}"));
        if self.up.is_none() {
            let opening = self
                .connection
                .open_uni()
                .await
                .map_err(|e| broken(e.to_string()))?;
            self.up = Some(opening.await.map_err(|e| broken(e.to_string()))?);
        }
        let Some(up) = self.up.as_mut() else {
            return Err(broken("no stream up".into()));
        };
        let mut framed = Vec::with_capacity(PREFIX_BYTES + message.len());
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        up.write_all(&framed)
            .await
            .map_err(|e| broken(e.to_string()))
    }
}

/// Where a session opens: the target's path (or pushbench's own), resuming after event
/// `after`, following the subscriber's streams.
fn session_url(target: &Target, config: &ClientConfig, after: Option<u64>) -> String {
    let after = after.map(|after| format!("after={after}"));
    let query = join_query([after, config.topics_query()]);
    let path = target.request_path(OWN_PATH, query.as_deref());
    format!("https://{}{path}", target.authority())
}

/// Confirms the end on a session of its own from event `last`: the server, with nothing more
/// to send, opens its first stream (the end's sign in every mode), and the session closes with
/// code 0.
async fn confirm_from(
    endpoint: &Endpoint<wtransport::endpoint::endpoint_side::Client>,
    target: &Target,
    config: &ClientConfig,
    last: u64,
) -> Result<(), ClientError> {
    let url = session_url(target, config, Some(last));
    let connection = endpoint
        .connect(&url)
        .await
        .map_err(|e| ClientError::Protocol(format!("WebTransport: confirming the end: {e}")))?;
    connection.accept_uni().await.map_err(ended)?;
    connection.close(VarInt::from_u32(close::DONE), b"");
    Ok(())
}

/// Why `connection` ended under a read: the server's close, if it closed it.
async fn cause(connection: &Connection, read_error: &str) -> ClientError {
    let closed = tokio::time::timeout(Duration::from_millis(100), connection.closed());
    match closed.await {
        Ok(error) => ended(error),
        Err(_) => ClientError::Protocol(format!("WebTransport: {read_error}")),
    }
}

/// A session's end as the client reports it: the server's refusal (a 4xx close) as an
/// answer not to ask again, anything else as a drop to resume from (with the server's code
/// and reason, where it closed the session).
fn ended(error: ConnectionError) -> ClientError {
    let ConnectionError::ApplicationClosed(close) = &error else {
        return ClientError::Protocol(format!("WebTransport: {error}"));
    };
    let code = close.code().into_inner();
    let reason = String::from_utf8_lossy(close.reason()).into_owned();
    match code {
        400..=499 => ClientError::Status {
            status: code as u16,
            body: reason,
        },
        _ => ClientError::Protocol(format!(
            "WebTransport: the server closed the session ({code}): {reason}"
        )),
    }
}

/// A whole stream's bytes (at most one event's worth), and its id.
async fn read_whole(mut stream: wtransport::RecvStream) -> (u64, Result<Vec<u8>, String>) {
    let id = stream.id().into_u64();
    let mut bytes = Vec::new();
    let limit = MAX_EVENT_BYTES as u64 + 1;
    let read = (&mut stream).take(limit).read_to_end(&mut bytes).await;
    let read = match read {
        Ok(_) if bytes.len() > MAX_EVENT_BYTES => {
            Err(format!("more than the largest event ({MAX_EVENT_BYTES} B)"))
        }
        Ok(_) => Ok(bytes),
        Err(error) => Err(error.to_string()),
    };
    (id, read)
}

/// Which of a session's per-event streams are complete, in the order the server opened them
/// (stream ids), so the resume point moves only past events that all arrived.
#[derive(Debug, Default)]
struct StreamOrder {
    /// The next stream id in order, once the session's opening mark said where they start.
    next: Option<u64>,
    /// Complete streams past `next`, with the event each carried.
    done: BTreeMap<u64, Option<u64>>,
}

/// Server-opened unidirectional stream ids step by four (RFC 9000 §2.1).
const STREAM_ID_STEP: u64 = 4;

impl StreamOrder {
    /// Stream `id` is complete (the opening mark, or carrying event `seq`).
    fn completed(&mut self, id: u64, mark: bool, seq: Option<u64>, place: &mut Place) {
        if mark {
            self.next = Some(id + STREAM_ID_STEP);
        } else {
            self.done.insert(id, seq);
        }
        let Some(next) = self.next.as_mut() else {
            return;
        };
        while let Some(seq) = self.done.remove(next) {
            if let Some(seq) = seq {
                place.advance(seq);
            }
            *next += STREAM_ID_STEP;
        }
    }
}

/// Hands one message to the sink unless it is an event already taken; says what the sink
/// said, and the event's (or a gap's last) sequence number.
fn take(
    sink: &mut Resuming<'_>,
    place: &mut Place,
    message: &[u8],
    received_ns: u64,
) -> (Flow, Option<u64>) {
    let mut fresh = Fresh {
        sink,
        place,
        seq: None,
    };
    let flow = deliver(&mut fresh, message, received_ns);
    (flow, fresh.seq)
}

/// The sink as a resumed session feeds it: an event already taken is dropped.
struct Fresh<'a, 'r> {
    sink: &'a mut Resuming<'r>,
    place: &'a mut Place,
    /// The event (or the gap's last) just handed on.
    seq: Option<u64>,
}

impl Sink for Fresh<'_, '_> {
    fn connected(&mut self, at_ns: u64) {
        self.sink.connected(at_ns);
    }

    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow {
        self.seq = Some(event.seq);
        let repeat = self.place.after.is_some_and(|after| event.seq <= after)
            || !self.place.taken.insert(event.seq);
        if repeat {
            return Flow::Continue;
        }
        self.sink.event(event, received_ns)
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

    fn copy(&mut self, message: &crate::upstream::Message<'_>, received_ns: u64) -> Flow {
        self.sink.copy(message, received_ns)
    }

    fn stream_origin(&self) -> Option<u64> {
        self.sink.stream_origin()
    }

    fn gap(&mut self, gap: Gap) {
        self.seq = Some(gap.last_seq());
        self.sink.gap(gap);
    }

    fn outage(&mut self, start_ns: u64, end_ns: u64) {
        self.sink.outage(start_ns, end_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resume point moves only past streams that all completed, in the server's order,
    /// whatever order they completed in; before the opening mark, not at all.
    #[test]
    fn resume_point_follows_the_streams_in_order() {
        let mut place = Place::default();
        let mut order = StreamOrder::default();
        // Streams 15 (event 1) and 19 (event 2) complete before the mark (11) and 23 (event 3)
        // never does.
        order.completed(15, false, Some(1), &mut place);
        order.completed(19, false, Some(2), &mut place);
        assert_eq!(place.after, None);
        order.completed(11, true, None, &mut place);
        assert_eq!(place.after, Some(2));
        order.completed(27, false, Some(4), &mut place);
        assert_eq!(place.after, Some(2), "stream 23 is still missing");
        order.completed(23, false, Some(3), &mut place);
        assert_eq!(place.after, Some(4));
    }

    /// Events taken past the resume point are dropped when a resumed session sends them
    /// again, and forgotten once the point passes them.
    #[test]
    fn place_forgets_what_it_covers() {
        let mut place = Place {
            after: Some(3),
            taken: [5, 6, 9].into_iter().collect(),
        };
        place.advance(6);
        assert_eq!(place.taken, [9].into_iter().collect());
        place.advance(2);
        assert_eq!(place.after, Some(6));
    }
}
