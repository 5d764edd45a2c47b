//! WebTransport over HTTP/3 (QUIC, on quinn through `wtransport`): the push transport browsers
//! gained after WebSocket, without TCP's head-of-line blocking where the mode allows. A
//! subscriber opens a session at `/webtransport` (with `?after=SEQ` to resume and `topics=` for
//! its streams, as every HTTP transport), and the server pushes in one of three modes
//! ([`MODE`]):
//!
//! - `stream`: one unidirectional stream per subscriber carrying length-prefixed frames (raw
//!   TCP's framing): ordered, and a lost packet holds back everything behind it;
//! - `stream-per-event`: each message on a unidirectional stream of its own, so a lost packet
//!   delays only its own event; events may overtake each other, which the ledger counts;
//! - `datagrams`: each message one QUIC datagram: never retransmitted, so an event the network
//!   loses stays lost (at most once, counted as its own class); a message larger than one
//!   datagram carries on the path is refused with the reason. The end of the stream comes on
//!   a stream of its own (empty), so the subscriber knows when to stop waiting.
//!
//! Always TLS 1.3 (QUIC has nothing older): the run's certificate is ECDSA P-256 and valid for
//! under 14 days, so a browser can trust it by its SHA-256 (`serverCertificateHashes`) as
//! pushbench's client does. The subscriber confirms it holds the whole stream by closing the
//! session with code 0; messages up (two-way traffic) travel on a unidirectional stream the
//! subscriber opens, framed as `stream` mode's.
//!
//! QUIC listens on UDP: the server binds the UDP port of the same number as the TCP listener
//! it is handed (which keeps that number its own), so subscribers find it at the address the
//! server announces.

use std::time::Duration;

use bytes::BytesMut;

use super::spec::Guarantee;
use super::{Colour, KeepAlive, Redelivery, Requests, Setting, Side, Spec, Traits};
use crate::hub::Batch;
use crate::settings::{SettingValues, Value};

mod client;
mod quic;
mod server;

/// Where pushbench's server takes sessions.
const OWN_PATH: &str = "/webtransport";

/// How the server carries the events to each subscriber.
pub static MODE: Setting<Mode> = Setting {
    name: "webtransport-mode",
    help: "How WebTransport carries events: `stream` (one stream per subscriber, ordered), \
           `stream-per-event` (each event its own stream: a lost packet delays only its \
           event, events may arrive out of order) or `datagrams` (each event one QUIC \
           datagram: never retransmitted, at most once; events must fit one datagram, about \
           1,150 B on a 1,500-byte path)",
    side: Side::Both,
    default: Mode::Stream,
    min: Mode::Stream,
};

/// WebTransport's ways of carrying a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Mode {
    /// One unidirectional stream per subscriber.
    Stream,
    /// One unidirectional stream per message.
    StreamPerEvent,
    /// One datagram per message.
    Datagrams,
}

impl Value for Mode {
    const KIND: &'static str = "stream|stream-per-event|datagrams";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "stream" => Ok(Mode::Stream),
            "stream-per-event" => Ok(Mode::StreamPerEvent),
            "datagrams" => Ok(Mode::Datagrams),
            other => Err(format!(
                "unknown WebTransport mode {other:?}: expected stream, stream-per-event or \
                 datagrams"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            Mode::Stream => "stream",
            Mode::StreamPerEvent => "stream-per-event",
            Mode::Datagrams => "datagrams",
        }
        .into()
    }
}

/// How long a quiet session lives without hearing from its peer (the server's keep-alive,
/// at the heartbeat, keeps a held session well inside it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a subscriber PINGs the server: a server that died sends nothing, so without it a
/// subscriber would only notice at the idle timeout; with it, a successor on the same address
/// answers the PING with a stateless reset and the subscriber resumes within this long. (A
/// browser's QUIC notices a dead server only at its idle timeout, about 30 s.)
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Sessions over QUIC; resuming is the application's (pushbench's `?after=`).
pub static SPEC: Spec = Spec {
    name: "webtransport",
    summary: "WebTransport over HTTP/3 (QUIC) on /webtransport: one stream, a stream per event, \
              or datagrams",
    // Paul Tol's indigo: the Okabe–Ito colours are the others'.
    colour: Colour(51, 34, 136),
    // Subscribing is an HTTP/3 CONNECT, not a GET.
    cursor_path: None,
    interop: Some("WebTransport"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "wtransport (quinn), TLS 1.3 on ring, in the mode --webtransport-mode sets",
        server::serve
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "wtransport (quinn), one QUIC endpoint per subscriber, trusting the certificate by its \
         hash, resuming with ?after=SEQ",
        client::subscribe
    )],
    settings: resumable_settings![quic, &MODE],
    outside: super::spec::all_in_serve,
    guarantee,
    traits: Traits {
        duplex: true,
        browser_api: Some("WebTransport"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: false,
        // HTTP/3 on UDP: no HTTP/1.1 proxy or TCP load balancer carries it.
        http: false,
        multiplexed: false,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::Application(
            "the browser's WebTransport does not reconnect; the application reopens the \
             session with the last sequence it holds (pushbench's ?after=SEQ), as with \
             WebSocket",
        ),
        udp: true,
        floor: false,
    },
};

/// What each mode promises: a stream is ordered; a stream per event may reorder; datagrams
/// may reorder and drop.
fn guarantee(settings: &SettingValues) -> Guarantee {
    match MODE.read(settings) {
        Mode::Stream => Guarantee::default(),
        Mode::StreamPerEvent => Guarantee {
            reorders: true,
            ..Guarantee::default()
        },
        Mode::Datagrams => Guarantee {
            reorders: true,
            drops: true,
            ..Guarantee::default()
        },
    }
}

/// A batch as `stream` mode writes it: length-prefixed frames. The other modes write the same
/// messages without the prefix, each on a stream or in a datagram of its own.
pub(crate) fn frame(batch: &Batch, out: &mut BytesMut) {
    super::length_prefixed::frame(batch, out);
}
