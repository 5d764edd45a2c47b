//! Publishing over HTTP through a server pushbench did not write: every event of the hub as
//! one request, in order, on a keep-alive connection of its own (the server numbers messages
//! as they arrive, so order is kept by sending the next once the last is answered), while a
//! second connection asks the server how many subscribers the channel has and counts them as
//! the hub's. How late each request went out against its event's schedule is recorded: where
//! the server takes longer to answer a request than the schedule leaves between events, the
//! publisher falls behind, and that shows here as well as in the subscribers' latency. The
//! subscribers' connections' bytes are read from the kernel.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::event::Event;
use crate::hub::{BatchLimit, Hub, SubscriberGuard};
use crate::metrics::latency::Lateness;
use crate::metrics::tcp_info::WireBytes;
use crate::profile::{Fill, HttpPublish};
use crate::transport::ServerConfig;

/// The channel the one broadcast stream goes to.
pub const TOPIC: &str = "events";

/// How often the channel's subscribers are counted.
const PRESENCE_EVERY: Duration = Duration::from_millis(20);

/// How long the server's count must stay below the subscribers held before they are let go:
/// a long-poll subscriber is counted only while its request is held, and is between two
/// requests for a moment after each answer (longer while the load is busy), which is not
/// leaving. Every row's end waits this much longer for it.
const LEAVE_AFTER: Duration = Duration::from_secs(2);

/// How often the subscribers' connections' bytes are read.
const WIRE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// How many times one event's request is tried on a fresh connection before the publisher
/// gives up (the server went away).
const ATTEMPTS: u32 = 3;

/// How late the publisher sent its requests, once it has sent them all.
pub type LatenessSlot = Arc<std::sync::Mutex<Option<Lateness>>>;

/// Publishes the hub's stream through the server at `server` until `shutdown`, counting its
/// subscribers from what it says, and leaves how late it published in `lateness`.
pub async fn serve(
    publish: &'static HttpPublish,
    server: SocketAddr,
    (hub, lateness): (Arc<Hub>, LatenessSlot),
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let server = dialable(server);
    let mut wire = WireBytes::new(server, Arc::clone(&config.counters));
    // This process's own connections to the server, left out of the subscribers' bytes.
    let own = OwnPorts::default();
    let mut presence = Presence {
        publish,
        server,
        connection: Connection::new(&own),
        hub: Arc::clone(&hub),
        counted: Vec::new(),
        fewer: None,
    };
    let mut publisher = Connection::new(&own);
    let publishing = publish_stream(publish, server, &hub, config.batch, &mut publisher);
    let publishing = async {
        let late = publishing.await?;
        *lateness.lock().unwrap_or_else(|e| e.into_inner()) = late;
        Ok::<_, io::Error>(())
    };
    let mut publishing = std::pin::pin!(publishing);
    // The channel's subscribers are counted on their own clock, beside the publishing: a
    // count the server is slow to answer must not hold up the reading taken as the last
    // event's request is answered (the row's stats may be read soon after).
    let counting = async {
        let mut count = tokio::time::interval(PRESENCE_EVERY);
        loop {
            count.tick().await;
            presence.count().await;
        }
    };
    let mut counting = std::pin::pin!(counting);
    let mut published = false;
    let mut sample = tokio::time::interval(WIRE_SAMPLE_EVERY);
    let exclude_own = |wire: &mut WireBytes| {
        let opened = std::mem::take(&mut *own.lock().unwrap_or_else(|e| e.into_inner()));
        opened.into_iter().for_each(|port| wire.exclude(port));
    };
    loop {
        tokio::select! {
            // Biased: the stream's end, ready with the stop, is taken first.
            biased;
            done = &mut publishing, if !published => {
                done?;
                published = true;
                // The last event's request is answered: the server has taken it, and
                // subscribers close only once they have read it. Their connections' bytes are
                // read now, before they go, and counted once (a write still under way then is
                // missed).
                exclude_own(&mut wire);
                wire.sample();
                wire.count();
            }
            _ = shutdown.cancelled() => break,
            () = &mut counting => {}
            _ = sample.tick(), if !published => {
                exclude_own(&mut wire);
                wire.sample();
            }
        }
    }
    if !published {
        // Stopped before the stream ended: what the connections carried until now counts.
        exclude_own(&mut wire);
        wire.sample();
        wire.count();
    }
    Ok(())
}

/// The address to dial: the one listened on, or loopback for a wildcard.
fn dialable(listen: SocketAddr) -> SocketAddr {
    match listen.ip().is_unspecified() {
        true => SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port())),
        false => listen,
    }
}

/// Sends every event of the hub as one request, in order, then confirms the publisher's
/// reader (the subscribers are the server's, and their own loads judge what they got); how
/// late the requests went out against their events' schedule.
async fn publish_stream(
    publish: &'static HttpPublish,
    server: SocketAddr,
    hub: &Arc<Hub>,
    limit: BatchLimit,
    connection: &mut Connection,
) -> io::Result<Option<Lateness>> {
    // Nanosecond lateness up to a minute, 3 significant digits, as the hub's publisher keeps.
    let mut late = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(io::Error::other)?;
    let mut reader = hub.reader(0);
    let fill = Fill {
        listen: server,
        dir: std::path::Path::new(""),
        topic: TOPIC,
    };
    let path = fill.fill(&publish.path);
    while let Some(batch) = reader.next_batch(limit).await {
        for event in &batch.events {
            if let Ok(decoded) = Event::decode(event) {
                // An unscheduled stream (`--rate max`) has every event due at once.
                let behind = now_ns().saturating_sub(decoded.scheduled_ns).max(1);
                late.saturating_record(behind);
            }
            let request = || {
                let mut request = Request::builder()
                    .method(publish.method.as_str())
                    .uri(path.as_str())
                    .header("host", server.to_string());
                for (name, value) in &publish.headers {
                    request = request.header(name, fill.fill(value));
                }
                request.body(Full::new(event.clone()))
            };
            let status = connection.send(server, request).await?;
            if !status.is_success() {
                return Err(io::Error::other(format!(
                    "the server answered {status} to publishing an event ({} {path})",
                    publish.method
                )));
            }
        }
    }
    reader.confirm_end();
    Ok(Lateness::of(&late))
}

/// The channel's subscribers as the server counts them, each held as one of the hub's.
struct Presence {
    publish: &'static HttpPublish,
    server: SocketAddr,
    connection: Connection,
    hub: Arc<Hub>,
    counted: Vec<SubscriberGuard>,
    /// Since when the server has counted fewer than are held, if it does now, and the most it
    /// counted since.
    fewer: Option<(tokio::time::Instant, usize)>,
}

impl Presence {
    /// Asks the server, and joins or leaves the hub to match its answer: at once for more;
    /// for fewer, after [`LEAVE_AFTER`] of answers below, down to the most of them (a
    /// subscriber between two polls at one answer was counted at another). A failed answer
    /// changes nothing: the next one is 20 ms away.
    async fn count(&mut self) {
        let presence = &self.publish.presence;
        let fill = Fill {
            listen: self.server,
            dir: std::path::Path::new(""),
            topic: TOPIC,
        };
        let path = fill.fill(&presence.path);
        let request = || {
            let mut request = Request::get(path.as_str()).header("host", self.server.to_string());
            for (name, value) in &presence.headers {
                request = request.header(name, value);
            }
            request.body(Full::new(Bytes::new()))
        };
        let answer = self.connection.ask(self.server, request).await;
        let count = match answer {
            // The channel does not exist until someone subscribes or publishes.
            Ok((status, _)) if status.as_u16() == 404 => 0,
            Ok((status, body)) if status.is_success() => match field_of(&body, &presence.field) {
                Some(count) => count,
                None => {
                    tracing::warn!(field = %presence.field, "the server's channel info has no count");
                    return;
                }
            },
            Ok((status, _)) => {
                tracing::warn!(%status, "the server's channel info was refused");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "asking the server for its channel info");
                return;
            }
        };
        while self.counted.len() < count {
            self.counted.push(self.hub.join());
        }
        if count == self.counted.len() {
            self.fewer = None;
            return;
        }
        let (since, most) = self
            .fewer
            .get_or_insert_with(|| (tokio::time::Instant::now(), count));
        *most = (*most).max(count);
        if since.elapsed() >= LEAVE_AFTER {
            let most = *most;
            self.counted.truncate(most);
            self.fewer = None;
        }
    }
}

/// The count in field `field` of a JSON object.
fn field_of(body: &[u8], field: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_u64().map(|n| n as usize)
}

/// The local ports of the connections this process opened to the server, since last taken.
type OwnPorts = Arc<std::sync::Mutex<Vec<u16>>>;

/// A keep-alive HTTP/1.1 connection to the server, opened when first needed and again after
/// it breaks.
struct Connection {
    open: Option<SendRequest<Full<Bytes>>>,
    own: OwnPorts,
}

impl Connection {
    /// None open yet; each one opened is told to `own`.
    fn new(own: &OwnPorts) -> Self {
        Self {
            open: None,
            own: Arc::clone(own),
        }
    }

    /// Sends a request built by `request`, on a fresh connection again where this one broke,
    /// and reads the answer to its end: the status.
    async fn send<F>(
        &mut self,
        server: SocketAddr,
        request: F,
    ) -> io::Result<axum::http::StatusCode>
    where
        F: Fn() -> Result<Request<Full<Bytes>>, axum::http::Error>,
    {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match self.ask(server, &request).await {
                Ok((status, _)) => return Ok(status),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
    }

    /// One attempt: the status and body of the answer.
    async fn ask<F>(
        &mut self,
        server: SocketAddr,
        request: F,
    ) -> io::Result<(axum::http::StatusCode, Bytes)>
    where
        F: Fn() -> Result<Request<Full<Bytes>>, axum::http::Error>,
    {
        let request =
            request().map_err(|e| io::Error::other(format!("a profile's request: {e}")))?;
        let send = match &mut self.open {
            Some(send) if !send.is_closed() => send,
            stale => {
                let (send, local_port) = open(server).await?;
                self.own
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(local_port);
                stale.insert(send)
            }
        };
        let answered = async {
            send.ready().await?;
            let response = send.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match answered.await {
            Ok(answer) => Ok(answer),
            Err(error) => {
                self.open = None;
                Err(io::Error::other(format!(
                    "the server's connection: {error}"
                )))
            }
        }
    }
}

/// Opens a connection to the server (no delay for small writes, as the server's own are).
async fn open(server: SocketAddr) -> io::Result<(SendRequest<Full<Bytes>>, u16)> {
    let stream = tokio::net::TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let local_port = stream.local_addr()?.port();
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a publisher connection ended");
        }
    });
    Ok((send, local_port))
}

#[cfg(test)]
mod tests {
    /// The subscriber count is read from the named field of the server's JSON answer.
    #[test]
    fn the_count_is_read_from_its_field() {
        let body =
            br#"{"messages": 0, "requested": 0, "subscribers": 7, "last_message_id": "0:0" }"#;
        assert_eq!(super::field_of(body, "subscribers"), Some(7));
        assert_eq!(super::field_of(body, "listeners"), None);
        assert_eq!(super::field_of(b"<html>", "subscribers"), None);
    }
}
