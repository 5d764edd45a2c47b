//! Long polling by HTTP cache validators, the idiom of servers such as Nchan: a request is
//! held until messages after its place exist, and the answer's `Last-Modified` and `ETag` are
//! the place the next request sends back as `If-Modified-Since` and `If-None-Match`. An answer
//! carries one message, or several separated by newlines (Nchan's raw multi-message answers);
//! the events' own sequence numbers, not the validators, are what the ledger reads.

use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};

use crate::clock::now_ns;
use crate::transport::cursor::{self, Answer};
use crate::transport::resume::Resuming;
use crate::transport::{deliver, ClientConfig, ClientError, Flow, Sink, Target};

/// The `cursor` a target names to be polled this way.
pub(crate) const IDIOM: &str = "cache-validators";

/// Where the subscriber stands: the last answer's validators.
#[derive(Clone, Debug, Default, PartialEq)]
struct Place {
    last_modified: String,
    etag: Option<String>,
}

impl Place {
    /// The validators of an answer with messages; an answer without `Last-Modified` is from a
    /// server that does not keep a place this way.
    fn of(headers: &HeaderMap) -> Result<Self, ClientError> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let last_modified = text(header::LAST_MODIFIED).ok_or_else(|| {
            ClientError::Protocol(
                "long poll by cache validators: an answer with messages has no Last-Modified \
                 header, so there is no place to ask from next"
                    .into(),
            )
        })?;
        Ok(Self {
            last_modified,
            etag: text(header::ETAG),
        })
    }

    /// The request headers that ask for what came after this place.
    fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("if-modified-since", self.last_modified.as_str())];
        if let Some(etag) = &self.etag {
            headers.push(("if-none-match", etag.as_str()));
        }
        headers
    }
}

/// Polls `target` on one keep-alive connection (reopened where the server closed it) until
/// the sink has the stream; a drop is resumed from the last place.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut sink = Resuming::new(sink, config);
    let sink = &mut sink;
    let path = target.request_path(cursor::OWN_PATH, config.topics_query().as_deref());
    let mut connection = None;
    // No place yet: the server answers from the oldest message it holds.
    let mut place: Option<Place> = None;
    // The subscription exists once a request is held; after a drop, once one is held again.
    let mut holding = false;
    loop {
        if connection
            .as_mut()
            .is_some_and(crate::transport::http1_client::Http1Connection::is_closed)
        {
            holding = false;
            sink.attempt_begins();
            if !sink.resumes() {
                return Err(ClientError::Protocol(
                    "HTTP: the server closed the connection between polls, and resume is off"
                        .into(),
                ));
            }
        }
        // The server holds the request until it has a message, which may be long after the
        // subscriber is in place: subscribed once the connection is open and the request sent.
        let answer = match cursor::open(target, config, &mut connection).await {
            Ok(_) => {
                if !std::mem::replace(&mut holding, true) {
                    sink.connected(now_ns());
                }
                let headers = place.as_ref().map(Place::headers).unwrap_or_default();
                cursor::request(target, config, &mut connection, &path, &headers).await
            }
            Err(error) => Err(error),
        };
        let outcome = match answer {
            Ok(Answer {
                status: StatusCode::OK,
                headers,
                body,
            }) => Place::of(&headers).map(|next| (next, body)),
            // Nothing new within the server's own hold: ask again from the same place (after a
            // pause, should a server answer so at once).
            Ok(Answer {
                status: StatusCode::NOT_MODIFIED | StatusCode::REQUEST_TIMEOUT,
                ..
            }) => {
                tokio::time::sleep(EMPTY_ANSWER_PAUSE).await;
                continue;
            }
            Ok(Answer { status, body, .. }) => Err(cursor::refused(status, &body)),
            Err(error) => Err(error),
        };
        let (next, body) = match outcome {
            Ok(answer) => answer,
            Err(error) => {
                // The connection is not to be trusted again: the next request opens a new one,
                // from the same place.
                connection = None;
                holding = false;
                if sink.again(Err(error)).await? {
                    continue;
                }
                return Ok(());
            }
        };
        let received_ns = now_ns();
        place = Some(next);
        // Walked twice rather than collected: nothing allocated per answer.
        let messages = || {
            body.split(|&byte| byte == b'\n')
                .filter(|line| !line.is_empty())
        };
        sink.batch(messages().count());
        let stopped = messages().any(|message| deliver(sink, message, received_ns) == Flow::Stop);
        if stopped {
            // Enough, or the subscriber goes down for a while (the outage fault) and comes
            // back on a new connection, from its place.
            // With the whole stream, it stays until every subscriber has it too, where the
            // load asks: with a request held from its place, so a server that counts only
            // held requests (Nchan) still counts it.
            if sink.stopped() {
                let place = place.as_ref().map(Place::headers).unwrap_or_default();
                let held = hold(target, config, &mut connection, &path, &place);
                tokio::select! {
                    () = sink.linger() => {}
                    () = held => {}
                }
            }
            if sink.again(Ok(())).await? {
                connection = None;
                holding = false;
                continue;
            }
            return Ok(());
        }
        // A server that answers at once with nothing would otherwise be asked in a busy loop.
        if body.is_empty() {
            tokio::time::sleep(EMPTY_ANSWER_PAUSE).await;
        }
    }
}

/// How long to wait before asking again after an empty answer.
const EMPTY_ANSWER_PAUSE: Duration = Duration::from_millis(10);

/// Keeps a request held from `place` for as long as the caller waits, asking again whenever
/// the server answers one (its own hold timed out). Why: a subscriber of a server that counts
/// only held requests, and that has the whole stream, would otherwise look gone to the
/// publisher, which counts its subscribers from the server, and a server stopped as they
/// seem to leave answers the ones still catching up `410 Gone` (nginx's shutdown does).
/// Returns only if the server stops answering (the run is ending, or it went away).
async fn hold(
    target: &Target,
    config: &ClientConfig,
    connection: &mut Option<crate::transport::http1_client::Http1Connection>,
    path: &str,
    place: &[(&str, &str)],
) {
    loop {
        match cursor::request(target, config, connection, path, place).await {
            Ok(answer)
                if answer.status == StatusCode::NOT_MODIFIED
                    || answer.status == StatusCode::REQUEST_TIMEOUT => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The next request carries the last answer's validators; an answer without
    /// `Last-Modified` is refused rather than polled in a loop from the start.
    #[test]
    fn the_place_is_the_last_answers_validators() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Sun, 06 Dec 2026 18:15:55 GMT"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("2"));
        let place = Place::of(&headers).expect("validators");
        assert_eq!(
            place.headers(),
            vec![
                ("if-modified-since", "Sun, 06 Dec 2026 18:15:55 GMT"),
                ("if-none-match", "2")
            ]
        );
        headers.remove(header::LAST_MODIFIED);
        assert!(Place::of(&headers).is_err());
    }
}
