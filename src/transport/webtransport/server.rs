//! pushbench's WebTransport server: sessions at `/webtransport` on a QUIC endpoint, each
//! pushed the stream in the mode the settings choose, and in two-way traffic the subscriber's
//! messages up read from the stream it opens.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::net::TcpListener;
use tokio_util::codec::LengthDelimitedCodec;
use tokio_util::sync::CancellationToken;
use wtransport::endpoint::IncomingSession;
use wtransport::error::ConnectionError;
use wtransport::{Connection, VarInt};

use super::{frame, quic, Mode, MODE, OWN_PATH};
use crate::hub::{Batch, BatchLimit, Hub, Reader};
use crate::transport::cursor::{first_seq_from_query, interest_from_query};
use crate::transport::length_prefixed::{FIRST_CHUNK, PREFIX_BYTES};
use crate::transport::listener::{Admission, Admitted};
use crate::transport::tls::{HandshakeTimes, HANDSHAKE_TIMEOUT};
use crate::transport::ServerConfig;

/// The session close codes, in HTTP's words (the subscriber reads a 4xx as a refusal, not a
/// drop to resume from).
pub(super) mod close {
    /// The subscriber holds the whole stream (its close), or the server is done with it.
    pub const DONE: u32 = 0;
    /// A malformed request, or a subscriber breaking the protocol.
    pub const BAD_REQUEST: u32 = 400;
    /// No session at that path.
    pub const NOT_FOUND: u32 = 404;
    /// An event larger than one datagram carries on this path.
    pub const TOO_LARGE: u32 = 413;
    /// The drop fault or the close storm cut it.
    pub const CUT: u32 = 500;
    /// The server holds as many subscribers as it allows (as every HTTP transport answers).
    pub const FULL: u32 = 503;
    /// The subscriber read nothing for the write timeout.
    pub const TOO_SLOW: u32 = 504;
}

/// How long a subscriber that has the whole stream may take to confirm it (its close).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a subscriber may send up.
const MAX_UPSTREAM_FRAME: usize = 64 * 1024;

/// What every session of one server shares.
struct Serving {
    hub: Arc<Hub>,
    admission: Admission,
    mode: Mode,
    limit: BatchLimit,
    write_timeout: Option<Duration>,
    heartbeat: Duration,
    handshakes: Arc<HandshakeTimes>,
}

/// Takes sessions on the UDP port of `listener`'s number until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // The TCP listener stays open, unused, while the server runs: it keeps the port number
    // this server announced its own.
    let addr = listener.local_addr()?;
    let socket = UdpSocket::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr} for QUIC: {e}")))?;
    let endpoint =
        wtransport::Endpoint::server(quic::server_config(socket, &config.tls, config.heartbeat)?)?;
    let serving = Arc::new(Serving {
        admission: Admission::for_subscribers(Arc::clone(&hub), &config),
        hub,
        mode: MODE.read(&config.settings),
        limit: config.batch,
        write_timeout: Some(config.limits.write_timeout).filter(|t| !t.is_zero()),
        // A zero heartbeat (none) still counts bytes, every 15 s.
        heartbeat: Some(config.heartbeat)
            .filter(|h| !h.is_zero())
            .unwrap_or(crate::transport::DEFAULT_HEARTBEAT),
        handshakes: Arc::clone(&config.tls.handshakes),
    });
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.cancelled() => break,
        };
        let serving = Arc::clone(&serving);
        tokio::spawn(async move {
            if let Err(error) = session(incoming, &serving).await {
                tracing::debug!(%error, "webtransport session ended");
            }
        });
    }
    drop(listener);
    Ok(())
}

/// One session, from its handshake to its close.
async fn session(incoming: IncomingSession, serving: &Serving) -> io::Result<()> {
    let started = Instant::now();
    // The QUIC handshake, then the session's CONNECT request, whose path is read before it
    // is accepted (wtransport keeps it on the request only).
    let handshake = async {
        let request = incoming.await?;
        let path = request.path().to_owned();
        Ok::<_, ConnectionError>((request.accept().await?, path))
    };
    let (connection, path) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "QUIC handshake timed out"))?
        .map_err(io::Error::other)?;
    serving.handshakes.record(started.elapsed());
    let admitted = serving.admission.admit();
    let mut bytes = quic::WireBytes::default();
    let pushed = subscribe_and_push(&connection, &path, serving, &admitted, &mut bytes).await;
    bytes.update(connection.quic_connection(), serving.admission.counters());
    pushed
}

/// Reads what the session asks for, enrols it, and pushes the stream to it; refusals close the
/// session with their code and reason.
async fn subscribe_and_push(
    connection: &Connection,
    path: &str,
    serving: &Serving,
    admitted: &Admitted,
    bytes: &mut quic::WireBytes,
) -> io::Result<()> {
    let (route, query) = match path.split_once('?') {
        Some((route, query)) => (route, Some(query)),
        None => (path, None),
    };
    if route != OWN_PATH {
        return refuse(
            connection,
            close::NOT_FOUND,
            &format!("no session at {route}"),
        );
    }
    let (first_seq, interest) = match (
        first_seq_from_query(query),
        interest_from_query(query, &serving.hub),
    ) {
        (Ok(first), Ok(interest)) => (first, interest),
        (Err(bad), _) | (_, Err(bad)) => {
            return refuse(connection, close::BAD_REQUEST, bad.reason())
        }
    };
    if !admitted.enrolment.as_ref().is_none_or(|e| e.establish()) {
        return refuse(connection, close::FULL, "server full: subscriber refused");
    }
    let reader = serving.hub.reader_of(first_seq, interest);
    push(connection, reader, serving, (admitted.cut.clone(), bytes)).await
}

/// Closes the session with `code` and `why`, and says so.
fn refuse(connection: &Connection, code: u32, why: &str) -> io::Result<()> {
    connection.close(VarInt::from_u32(code), why.as_bytes());
    Err(io::Error::other(why.to_owned()))
}

/// Pushes batches until the stream is complete, the subscriber leaves, the cut comes or a
/// write waits past the write timeout; then waits, bounded, for the subscriber's
/// confirmation (its close with code 0).
async fn push(
    connection: &Connection,
    mut reader: Reader,
    serving: &Serving,
    (cut, bytes): (Option<CancellationToken>, &mut quic::WireBytes),
) -> io::Result<()> {
    let cut = cut.unwrap_or_default();
    let mut carrier = Carrier::open(connection, serving.mode).await?;
    // The wire bytes are counted at each heartbeat (when QUIC's keep-alive goes out anyway),
    // so a quiet session's show while it lasts.
    let mut tally = tokio::time::interval(serving.heartbeat);
    tally.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = reader.next_batch(serving.limit) => batch,
            _ = tally.tick() => {
                bytes.update(connection.quic_connection(), serving.admission.counters());
                continue;
            }
            stream = connection.accept_uni() => match stream {
                Ok(stream) => {
                    take_messages_up(connection, stream, &serving.hub)?;
                    continue;
                }
                // The subscriber closed: a confirmation, if it came once every event had
                // gone (the reader may still be waiting for the others at the end).
                Err(end) => {
                    confirm_if_done(&mut reader, &end);
                    return Ok(());
                }
            },
            _ = cut.cancelled() => {
                return refuse(connection, close::CUT, "cut by the drop fault");
            }
        };
        let Some(batch) = batch else { break };
        let sent = match serving.write_timeout {
            Some(timeout) => tokio::time::timeout(timeout, carrier.send(connection, &batch))
                .await
                .unwrap_or_else(|_| {
                    serving.admission.counters().write_timed_out();
                    Err(Refusal(
                        close::TOO_SLOW,
                        format!("the subscriber read nothing for {timeout:?}"),
                    ))
                }),
            None => carrier.send(connection, &batch).await,
        };
        if let Err(Refusal(code, why)) = sent {
            return refuse(connection, code, &why);
        }
    }
    carrier.end(connection).await;
    // Complete: the subscriber confirms by closing with code 0 (messages up may still come
    // until then, in two-way traffic).
    if !reader.at_end() {
        return Ok(());
    }
    // The session's end comes to the stream acceptor: a QUIC close with its code (pushbench's
    // client), or a browser's CLOSE_WEBTRANSPORT_SESSION with its own.
    let confirmation = async {
        loop {
            match connection.accept_uni().await {
                Ok(stream) => {
                    if take_messages_up(connection, stream, &serving.hub).is_err() {
                        return connection.closed().await;
                    }
                }
                Err(end) => return end,
            }
        }
    };
    if let Ok(end) = tokio::time::timeout(CONFIRM_TIMEOUT, confirmation).await {
        confirm_if_done(&mut reader, &end);
    }
    Ok(())
}

/// A session the subscriber closed with code 0 confirms the end, where the reader has handed
/// out the whole stream (a close before that is a leave: [`Reader::confirm_end`]).
fn confirm_if_done(reader: &mut Reader, end: &ConnectionError) {
    if let ConnectionError::ApplicationClosed(close) = end {
        if close.code() == VarInt::from_u32(close::DONE) {
            reader.confirm_end();
        }
    }
}

/// Why a send failed: the close code and reason the session ends with.
struct Refusal(u32, String);

/// Where the mode puts the messages.
enum Carrier {
    /// The one stream, and the buffer each batch is framed into.
    Stream(wtransport::SendStream, BytesMut),
    /// A stream per message.
    StreamPerEvent,
    /// A datagram per message.
    Datagrams,
}

impl Carrier {
    /// Opens what the mode needs before the first event: `stream` mode's one stream, the
    /// opening mark of a stream per event.
    async fn open(connection: &Connection, mode: Mode) -> io::Result<Self> {
        Ok(match mode {
            Mode::Stream => {
                let stream = open_stream(connection).await.map_err(io::Error::other)?;
                Carrier::Stream(stream, BytesMut::with_capacity(FIRST_CHUNK))
            }
            Mode::StreamPerEvent => {
                // An empty stream first marks where this session's stream ids start, so the
                // subscriber can tell which events before the last it still lacks.
                let mut mark = open_stream(connection).await.map_err(io::Error::other)?;
                let _ = mark.quic_stream_mut().finish();
                Carrier::StreamPerEvent
            }
            Mode::Datagrams => Carrier::Datagrams,
        })
    }

    /// Sends one batch: a gap first, then the events, then copies of messages sent up.
    async fn send(&mut self, connection: &Connection, batch: &Batch) -> Result<(), Refusal> {
        let gone = |error: String| Refusal(close::DONE, error);
        match self {
            Carrier::Stream(stream, frames) => {
                frames.clear();
                frame(batch, frames);
                stream
                    .write_all(frames)
                    .await
                    .map_err(|e| gone(e.to_string()))
            }
            Carrier::StreamPerEvent => {
                for message in messages(batch) {
                    let mut stream = open_stream(connection).await.map_err(gone)?;
                    stream
                        .write_all(&message)
                        .await
                        .map_err(|e| gone(e.to_string()))?;
                    // Finished without waiting for the acknowledgement: the next event's
                    // stream goes out beside it, which is this mode's point.
                    let _ = stream.quic_stream_mut().finish();
                }
                Ok(())
            }
            Carrier::Datagrams => {
                for message in messages(batch) {
                    let most = connection.max_datagram_size().unwrap_or(0);
                    if message.len() > most {
                        return Err(Refusal(
                            close::TOO_LARGE,
                            format!(
                                "a message of {} B does not fit the {most} B one datagram \
                                 carries on this path: use --webtransport-mode stream or \
                                 stream-per-event, or smaller payloads",
                                message.len()
                            ),
                        ));
                    }
                    connection
                        .send_datagram(message)
                        .map_err(|e| gone(e.to_string()))?;
                }
                Ok(())
            }
        }
    }

    /// Tells the subscriber the stream is over: `stream` mode finishes its stream; datagrams
    /// send an empty stream, so the subscriber stops waiting for what the network dropped.
    async fn end(self, connection: &Connection) {
        match self {
            Carrier::Stream(mut stream, _) => {
                let _ = stream.quic_stream_mut().finish();
            }
            Carrier::StreamPerEvent => {}
            Carrier::Datagrams => {
                if let Ok(mut stream) = open_stream(connection).await {
                    let _ = stream.quic_stream_mut().finish();
                }
            }
        }
    }
}

/// A new unidirectional stream to the subscriber.
async fn open_stream(connection: &Connection) -> Result<wtransport::SendStream, String> {
    let opening = connection.open_uni().await.map_err(|e| e.to_string())?;
    opening.await.map_err(|e| e.to_string())
}

/// A batch's messages in the order they go out: a gap, the events, copies of messages up.
fn messages(batch: &Batch) -> impl Iterator<Item = Bytes> + '_ {
    let gap = batch.gap.map(|gap| Bytes::from(gap.encode()));
    gap.into_iter()
        .chain(batch.events.iter().cloned())
        .chain(batch.copies.iter().cloned())
}

/// Reads the messages the subscriber sends up on the stream it opened (two-way traffic),
/// length-prefixed, in a task of their own; a one-way subscriber may open none.
fn take_messages_up(
    connection: &Connection,
    stream: wtransport::RecvStream,
    hub: &Arc<Hub>,
) -> io::Result<()> {
    if !hub.two_way() {
        return refuse(
            connection,
            close::BAD_REQUEST,
            "a one-way subscriber opened a stream",
        );
    }
    let mut frames = LengthDelimitedCodec::builder()
        .length_field_length(PREFIX_BYTES)
        .max_frame_length(MAX_UPSTREAM_FRAME)
        .new_read(stream);
    let (connection, hub) = (connection.clone(), Arc::clone(hub));
    tokio::spawn(async move {
        while let Some(frame) = frames.next().await {
            let refused = match frame {
                Ok(message) => hub.receive_upstream(message.freeze()).await.err(),
                Err(error) => Some(error.to_string()),
            };
            if let Some(why) = refused {
                let _ = refuse(&connection, close::BAD_REQUEST, &why);
                return;
            }
        }
    });
    Ok(())
}
