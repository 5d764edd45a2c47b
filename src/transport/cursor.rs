//! The cursor API that long and short polling share: `GET /events?after=SEQ` answers the events
//! after SEQ as one JSON batch, held until some exist (long polling) or at once (short polling);
//! without `after`, from the stream's first event. The two transports differ only in the hold
//! and in how soon their client asks again, so both are this one server and this one client.
//!
//! A long poll may ask for a shorter hold with `wait=SECS` (`wait=0` answers at once): the
//! client's first request uses it, so subscribing does not wait for the first event.
//!
//! Answer: `{"events":[EVENT,...],"last_seq":N,"done":BOOL}`, where `last_seq` (absent when there
//! are no events) is the next `after`, and `done` says the stream is complete and fully read.
//! A cursor older than the server's replay window is answered `410 Gone` with
//! `{"gap":{"from":F,"count":N}}`: those events are gone, and `after=F+N-1` reads on from the
//! first one held.
//!
//! In two-way traffic with the echo on, the answer also carries the copies of messages up in
//! the subscriber's rooms, `"copies":[...]`, and where it now stands in each room,
//! `"copied":[K,...]` (one count per room, in the order of `topics`), which the next request
//! sends back as `copied=K,...` beside `after=`. Messages up are `POST /up` on a connection of
//! the client's own, as a browser's `fetch` beside its held poll.

use super::Target;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::compression::{decode_body, Compression, COMPRESSION};
use super::http1_client::Http1Connection;
use super::resume::{confirm_end, Resuming};
use super::upstream;
use super::{
    deliver, get_request, serve_http1, ClientConfig, ClientError, Flow, Http1Engine, ServerConfig,
    Sink, TrackedListener,
};
use crate::clock::now_ns;
use crate::event::{DecodeError, Gap};
use crate::hub::{Batch, BatchLimit, Hub, Interest};

/// A request the server refuses with 400 and a sentence saying why.
#[derive(Debug)]
pub(crate) struct BadRequest(String);

impl BadRequest {
    /// Why the request was refused.
    pub(crate) fn reason(&self) -> &str {
        self.0.trim_end()
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

/// The first sequence number a request asks for: `after=SEQ` means SEQ + 1; no `after`, 0.
pub(crate) fn first_seq_from_query(query: Option<&str>) -> Result<u64, BadRequest> {
    let after = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="));
    match after {
        None => Ok(0),
        Some(text) => parse_after(text),
    }
}

/// The streams a request follows, `topics=1,5,9` (absent: every event), checked against what
/// the hub publishes: the one query parameter every HTTP transport subscribes with.
pub(crate) fn interest_from_query(query: Option<&str>, hub: &Hub) -> Result<Interest, BadRequest> {
    let topics = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("topics="));
    hub.interest_in(topics)
        .map_err(|why| BadRequest(format!("invalid topics: {why}\n")))
}

/// The hold a long poll asks for with `wait=SECS`, if any.
fn wait_from_query(query: Option<&str>) -> Result<Option<Duration>, BadRequest> {
    let wait = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="));
    match wait.map(|text| (text, text.parse::<f64>())) {
        None => Ok(None),
        // Past what a Duration holds is as good as forever: the server's hold caps it anyway.
        Some((_, Ok(secs))) if secs >= 0.0 => Ok(Some(
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        )),
        Some((text, _)) => Err(BadRequest(format!(
            "invalid wait {text:?}: expected seconds to hold the poll (a non-negative number)\n"
        ))),
    }
}

/// Parses a cursor (`after` or `Last-Event-ID`): the sequence number of the last event received.
pub(crate) fn parse_after(text: &str) -> Result<u64, BadRequest> {
    text.parse::<u64>()
        .ok()
        .and_then(|seq| seq.checked_add(1))
        .ok_or_else(|| {
            BadRequest(format!(
                "invalid cursor {text:?}: expected the sequence number of the last event received \
                 (an unsigned integer), or no cursor to start from the first event\n"
            ))
        })
}

#[derive(Clone)]
struct PollState {
    hub: Arc<Hub>,
    batch: BatchLimit,
    /// `Some` for long polling: how long to wait for events before answering an empty batch.
    hold: Option<Duration>,
    /// Answers are compressed for clients that accept this coding.
    compression: Compression,
}

/// Serves `/events` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
    hold: Option<Duration>,
) -> std::io::Result<()> {
    let state = PollState {
        hub: Arc::clone(&hub),
        batch: config.batch,
        hold,
        compression: COMPRESSION.read(&config.settings),
    };
    let router = Router::new().route(OWN_PATH, get(answer)).with_state(state);
    let router = upstream::with_upstream(router, &hub);
    let listener = TrackedListener::for_subscribers(listener, hub, &config)?;
    // Our own lean connections: a held poll keeps no buffer while it waits.
    serve_http1(listener, router, config.http, Http1Engine::Lean, shutdown).await
}

async fn answer(
    State(state): State<PollState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    // Decided now, and the request's headers let go: a long poll holds this future for its
    // whole wait.
    let coding = state.compression.for_request(&headers);
    drop(headers);
    let first_seq = match first_seq_from_query(query.as_deref()) {
        Ok(seq) => seq,
        Err(rejection) => return rejection.into_response(),
    };
    let interest = match interest_from_query(query.as_deref(), &state.hub) {
        Ok(interest) => interest,
        Err(rejection) => return rejection.into_response(),
    };
    let hold = match (state.hold, wait_from_query(query.as_deref())) {
        (Some(hold), Ok(Some(wait))) => Some(hold.min(wait)),
        (hold, Ok(_)) => hold,
        (_, Err(rejection)) => return rejection.into_response(),
    };
    let mut reader = state.hub.reader_of(first_seq, interest);
    // A request from the end (one-way) is the subscriber confirming it holds the whole stream:
    // answered 204, nothing more to come.
    if reader.at_end() {
        reader.confirm_end();
        return StatusCode::NO_CONTENT.into_response();
    }
    // Copies pick up where the last answer left them.
    match copies_from_query(query.as_deref()) {
        Ok(Some(positions)) => {
            if let Err(why) = reader.resume_copies(&positions) {
                return BadRequest(format!("invalid copied: {why}\n")).into_response();
            }
        }
        Ok(None) => {}
        Err(rejection) => return rejection.into_response(),
    }
    let batch = match hold {
        Some(hold) if hold.is_zero() => reader.try_batch(state.batch),
        Some(hold) => tokio::time::timeout(hold, reader.next_batch(state.batch))
            .await
            .ok()
            .flatten()
            .unwrap_or_default(),
        None => reader.try_batch(state.batch),
    };
    let json = [(header::CONTENT_TYPE, "application/json")];
    if let Some(gap) = batch.gap {
        return (StatusCode::GONE, json, gap.encode()).into_response();
    }
    let mut body = BytesMut::new();
    let copied = state.hub.two_way().then(|| reader.copy_cursor());
    encode_batch(&batch, reader.at_end(), copied.as_deref(), &mut body);
    let mut response = (json, coding.compress(body.freeze())).into_response();
    if let Some((name, value)) = coding.content_encoding() {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A batch as one poll answer (not the last), as both polling servers write it.
pub(crate) fn frame(batch: &Batch, out: &mut BytesMut) {
    encode_batch(batch, false, None, out);
}

/// Writes the answer by splicing the already-encoded events (and copies): no re-serialisation
/// per request. `copied` is the copy cursor, in two-way traffic.
fn encode_batch(batch: &Batch, done: bool, copied: Option<&[u64]>, body: &mut BytesMut) {
    let size: usize = batch
        .events
        .iter()
        .chain(&batch.copies)
        .map(|e| e.len() + 1)
        .sum();
    body.reserve(size + 64);
    body.extend_from_slice(b"{\"events\":");
    splice(&batch.events, body);
    if let Some(last) = batch.last_seq() {
        body.extend_from_slice(format!(",\"last_seq\":{last}").as_bytes());
    }
    if let Some(copied) = copied {
        body.extend_from_slice(b",\"copies\":");
        splice(&batch.copies, body);
        let positions: Vec<String> = copied.iter().map(u64::to_string).collect();
        body.extend_from_slice(format!(",\"copied\":[{}]", positions.join(",")).as_bytes());
    }
    body.extend_from_slice(format!(",\"done\":{done}}}").as_bytes());
}

/// Encoded JSON values as one JSON array.
fn splice(values: &[Bytes], body: &mut BytesMut) {
    body.extend_from_slice(b"[");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(value);
    }
    body.extend_from_slice(b"]");
}

/// Where the copy cursor stands, `copied=K,...` (absent: from the copies taken after the
/// request came).
fn copies_from_query(query: Option<&str>) -> Result<Option<Vec<u64>>, BadRequest> {
    let Some(text) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("copied="))
    else {
        return Ok(None);
    };
    text.split(',')
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(|_| {
            BadRequest(format!(
                "invalid copied {text:?}: expected the count of copies received from each room \
                 followed, as the last answer's \"copied\" gave them (such as copied=3,0)\n"
            ))
        })
}

/// One answer, as the client reads it; events stay raw until `deliver` decodes each (the
/// client's cursor is the last event its sink took, so `last_seq` is not read).
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    /// Copies of messages up in the subscriber's rooms (two-way traffic).
    #[serde(borrow, default)]
    copies: Vec<&'a RawValue>,
    /// Where the subscriber now stands in each room's copies.
    #[serde(default)]
    copied: Option<Vec<u64>>,
    done: bool,
}

/// How soon the client asks again after an answer.
/// Where pushbench's cursor API answers, for long and short polling alike.
pub(crate) const OWN_PATH: &str = "/events";

#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    /// At once, with the new cursor (long polling: the server does the waiting).
    AtOnce,
    /// On a fixed interval, measured from the start of one request to the next (short polling).
    Every(Duration),
}

/// Polls `http://server/events` over one keep-alive connection of its own (reopened if the
/// server closes it) until the stream is done or the sink stops; in two-way traffic, POSTs
/// its messages up beside, on another connection (the polling one may be held).
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
    pace: Pace,
) -> Result<(), ClientError> {
    let (watched, outbox) = upstream::outbox(sink, config);
    let receiving = async move {
        let mut sink = watched;
        poll(target, config, &mut sink, pace).await
    };
    let sending = upstream::post_each(outbox, target, config, None);
    upstream::together(receiving, sending).await
}

/// The polling loop: one request after another, each with the cursor the last answer left.
async fn poll(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
    pace: Pace,
) -> Result<(), ClientError> {
    let mut ticker = match pace {
        Pace::Every(interval) => {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(ticker)
        }
        Pace::AtOnce => None,
    };
    let mut sink = Resuming::new(sink, config);
    let sink = &mut sink;
    let mut connection = None;
    let mut connected = false;
    // A request failed and a new connection answered since: the subscription resumed.
    let mut dropped = false;
    // Where the subscriber stands in its rooms' copies (two-way traffic), as last answered.
    let mut copied: Option<String> = None;
    loop {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        // The cursor is the last event the sink took (or the last one a gap named).
        let cursor = match (sink.last_seq(), connected) {
            (Some(seq), _) => Some(format!("after={seq}")),
            // The first request asks not to be held, so subscribing completes at once.
            (None, false) => Some("wait=0".to_string()),
            (None, true) => None,
        };
        let query = super::join_query([cursor, config.topics_query(), copied.clone()]);
        let path = target.request_path(OWN_PATH, query.as_deref());
        // A keep-alive connection the server closed between requests is replaced by the next
        // request without an error; it is a drop all the same, and counted as one.
        if connection.as_mut().is_some_and(Http1Connection::is_closed) {
            dropped = true;
            sink.attempt_begins();
            if !sink.resumes() {
                return Err(ClientError::Protocol(
                    "HTTP: the server closed the connection between polls, and resume is off"
                        .into(),
                ));
            }
        }
        let answer = match request(target, config, &mut connection, &path, &[]).await {
            Ok(Answer { status, body, .. }) if status.is_success() => Ok((status, body)),
            // The cursor is older than the server's replay window: the gap says what is gone,
            // and the next request reads on after it.
            Ok(Answer {
                status: StatusCode::GONE,
                body,
                ..
            }) if Gap::decode(&body).is_some() => {
                if let Some(gap) = Gap::decode(&body) {
                    sink.gap(gap);
                }
                continue;
            }
            Ok(Answer { status, body, .. }) => Err(refused(status, &body)),
            Err(error) => Err(error),
        };
        let (_, body) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                // The connection is not to be trusted again: the next request opens a new one,
                // from the same cursor.
                connection = None;
                dropped = true;
                if sink.again(Err(error)).await? {
                    continue;
                }
                return Ok(());
            }
        };
        let received_ns = now_ns();
        if !connected || std::mem::take(&mut dropped) {
            // For polling, the subscription exists once the first answer arrives (and exists
            // again once an answer follows a failed request).
            sink.connected(received_ns);
            connected = true;
        }
        let batch = match serde_json::from_slice::<BatchBody>(&body) {
            Ok(batch) => batch,
            Err(e) => {
                let error = DecodeError::new(format!("poll answer is not a batch: {e}"));
                if sink.malformed(&error) == Flow::Stop {
                    return Ok(());
                }
                // Asking again at once would get the same answer, in a busy loop: back off as
                // after a failed request, on a new connection, and give up as it would.
                connection = None;
                dropped = true;
                if sink
                    .again(Err(ClientError::Protocol(error.to_string())))
                    .await?
                {
                    continue;
                }
                return Ok(());
            }
        };
        sink.batch(batch.events.len());
        if let Some(positions) = &batch.copied {
            let positions: Vec<String> = positions.iter().map(u64::to_string).collect();
            copied = Some(format!("copied={}", positions.join(",")));
        }
        let stopped = batch
            .events
            .iter()
            .chain(&batch.copies)
            .any(|message| deliver(sink, message.get().as_bytes(), received_ns) == Flow::Stop);
        if stopped {
            // Enough, or the subscriber goes down for a while (the outage fault) and comes
            // back on a new connection.
            // With the whole stream, its connection stays open until every subscriber has it
            // too, where the load asks.
            sink.linger().await;
            if sink.again(Ok(())).await? {
                connection = None;
                dropped = true;
                continue;
            }
            break;
        }
        if batch.done {
            break;
        }
    }
    if let Some(last) = sink.last_seq().filter(|_| sink.confirms_end()) {
        // The whole stream is here: one more request from the last event confirms it, and the
        // server answers 204.
        let query = super::join_query([Some(format!("after={last}")), config.topics_query()]);
        let path = target.request_path(OWN_PATH, query.as_deref());
        confirm_end(config, || async {
            // A connection of its own: the last one may be the one a middlebox cut.
            let mut connection = None;
            match request(target, config, &mut connection, &path, &[]).await? {
                Answer {
                    status: StatusCode::NO_CONTENT,
                    ..
                } => Ok(()),
                Answer { status, body, .. } => Err(refused(status, &body)),
            }
        })
        .await;
    }
    Ok(())
}

/// A poll the server answered with `status` other than the ones the client reads on from.
pub(crate) fn refused(status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Status {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// An answer to one poll, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// One GET on the subscriber's connection (opened first if there is none, or the server closed
/// it), with `headers` beside the ones every poll sends, its whole answer read, within the
/// request timeout. The connection is left in `connection` for the next request once the
/// answer is whole; an exchange that failed leaves none.
pub(crate) async fn request(
    target: &Target,
    config: &ClientConfig,
    connection: &mut Option<Http1Connection>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, ClientError> {
    open(target, config, connection).await?;
    let Some(open) = connection.take() else {
        return Err(ClientError::Protocol(
            "HTTP: no connection to poll on".into(),
        ));
    };
    let exchange = async {
        let mut sent: Vec<_> = COMPRESSION
            .read(&config.settings)
            .accept_encoding()
            .into_iter()
            .collect();
        sent.extend_from_slice(headers);
        let response = open
            .send(&get_request(&target.authority(), path, &sent)?)
            .await?;
        let (head, body) = response.into_parts();
        let (body, kept) = body.collect().await?;
        *connection = Some(kept);
        let body = decode_body(&head.headers, body).map_err(ClientError::Protocol)?;
        Ok::<_, ClientError>(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| {
            ClientError::Protocol(format!(
                "HTTP: no answer within {:?}",
                config.request_timeout
            ))
        })?
}

/// The subscriber's connection: the open one, or a new one where there is none or the server
/// closed it.
pub(crate) async fn open<'a>(
    target: &Target,
    config: &ClientConfig,
    connection: &'a mut Option<Http1Connection>,
) -> Result<&'a mut Http1Connection, ClientError> {
    if connection.as_mut().is_none_or(Http1Connection::is_closed) {
        // The closed one goes first: its descriptor counts against the process's limit while
        // the new one connects.
        *connection = None;
        *connection = Some(Http1Connection::open(&config.dialer(), target.addr).await?);
    }
    connection
        .as_mut()
        .ok_or_else(|| ClientError::Protocol("HTTP: no connection to poll on".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The cursor parser: none means from the start, SEQ means SEQ + 1, anything else is refused.
    #[test]
    fn cursor_parsing() {
        assert_eq!(first_seq_from_query(None).unwrap(), 0);
        assert_eq!(first_seq_from_query(Some("x=1&after=41")).unwrap(), 42);
        assert!(first_seq_from_query(Some("after=abc")).is_err());
        assert!(first_seq_from_query(Some("after=-1")).is_err());
        assert!(first_seq_from_query(Some(&format!("after={}", u64::MAX))).is_err());
    }

    /// A hold past what a Duration holds is as good as forever (the server's own hold caps it),
    /// never a panic; negative, NaN or text is refused.
    #[test]
    fn wait_parsing() {
        assert_eq!(
            wait_from_query(Some("wait=0")).unwrap(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            wait_from_query(Some("wait=1e20")).unwrap(),
            Some(Duration::MAX)
        );
        assert_eq!(
            wait_from_query(Some("wait=inf")).unwrap(),
            Some(Duration::MAX)
        );
        for bad in ["wait=-1", "wait=NaN", "wait=soon"] {
            assert!(wait_from_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(wait_from_query(None).unwrap(), None);
    }

    /// A spliced batch is valid JSON that the client's reader accepts.
    #[test]
    fn batch_encoding_round_trips() {
        let batch = Batch {
            gap: None,
            first_seq: 7,
            seqs: Vec::new(),
            events: vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"[2]")],
            copies: Vec::new(),
        };
        let mut body = BytesMut::new();
        encode_batch(&batch, true, None, &mut body);
        let parsed: BatchBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.events.len(), 2);
        let whole: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(whole["last_seq"], 8);
        assert!(parsed.done);
        let mut empty = BytesMut::new();
        encode_batch(&Batch::default(), false, None, &mut empty);
        assert_eq!(&empty[..], b"{\"events\":[],\"done\":false}");
    }
}
