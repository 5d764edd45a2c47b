//! The SSE server most axum applications run: axum's own `Sse` response, one `Event` per
//! event (its id and data set through axum's builder, which copies and checks them), axum's
//! keep-alive comments, `retry:` first; the same route, resume rule and 204 at the end as
//! pushbench's server. axum's `Sse` compresses nothing itself (tower-http would, as a layer
//! beside it), so compression is refused.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{Batch, BatchLimit, Hub, Reader};
use crate::settings::SettingValues;
use crate::transport::compression::{Compression, COMPRESSION};
use crate::transport::{Http1Engine, ServerConfig};

use super::server::{serve_route, subscription, AppState, RETRY};

/// Serves `/sse` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // axum's Sse as it is deployed: on hyper's connections.
    let engine = Http1Engine::Hyper;
    serve_route(listener, hub, (config, engine), shutdown, open_stream).await
}

/// `GET /sse`: the subscriber's stream as axum's `Sse` response.
async fn open_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let reader = match subscription(&state, &headers, query.as_deref()) {
        Ok(reader) => reader,
        Err(answer) => return *answer,
    };
    let retry = futures_util::stream::once(async { Ok(Event::default().retry(RETRY)) });
    let events = retry.chain(events(reader, state.config.batch));
    let keep_alive = KeepAlive::new()
        .interval(state.config.heartbeat)
        .text("heartbeat");
    // Tells buffering reverse proxies (nginx) to pass events through at once.
    let unbuffered = [(HeaderName::from_static("x-accel-buffering"), "no")];
    (unbuffered, Sse::new(events).keep_alive(keep_alive)).into_response()
}

/// Every event of the subscriber's stream as axum `Event`s, batch by batch as the hub makes
/// them ready; the stream ends when the subscriber has it all or the server closes.
fn events(
    reader: Reader,
    limit: BatchLimit,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(reader, move |mut reader| async move {
        let batch = reader.next_batch(limit).await?;
        Some((futures_util::stream::iter(batch_events(&batch)), reader))
    })
    .flatten()
}

/// A batch as `Event`s: a gap first (an event named `gap` whose id is the last event missed),
/// then each event with its sequence number as id, then copies of messages up (events named
/// `copy`, with no id, so `Last-Event-ID` goes on naming the last event of the stream).
fn batch_events(batch: &Batch) -> Vec<Result<Event, Infallible>> {
    let mut events = Vec::with_capacity(batch.events.len() + 1);
    // Ids written through a stack buffer: axum copies them, so no allocation of ours per event.
    let mut digits = itoa::Buffer::new();
    if let Some(gap) = batch.gap {
        let data = String::from_utf8_lossy(&gap.encode()).into_owned();
        let gap = Event::default()
            .event("gap")
            .id(digits.format(gap.last_seq()));
        events.push(Ok(gap.data(data)));
    }
    for (seq, event) in batch.iter() {
        // The hub's events are its own JSON: text, never lossy (nor copied here).
        let data = String::from_utf8_lossy(event);
        events.push(Ok(Event::default().id(digits.format(seq)).data(data)));
    }
    for copy in &batch.copies {
        let data = String::from_utf8_lossy(copy);
        events.push(Ok(Event::default().event("copy").data(data)));
    }
    events
}

/// Refuses what axum's `Sse` does not do itself: compress.
pub(super) fn refuses(settings: &SettingValues) -> Option<String> {
    (COMPRESSION.read(settings) != Compression::Off).then(|| {
        "axum's Sse response compresses nothing itself (tower-http's CompressionLayer would): \
         use --compression off (or pushbench's own server)"
            .to_owned()
    })
}
