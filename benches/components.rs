//! Per-event costs that sit on every measured path: event encode and decode, SSE frame writing
//! and parsing, webhook signing and verifying, the stream digest, tally and histogram recording.
//! They must stay far below the transports' own costs, or they would be what gets measured.
//! And the server's own per-event cost in every transport's framing (`framing/TRANSPORT`), with
//! what compressing a framed batch adds, so a regression in either shows here.

use std::hint::black_box;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::IntoResponse;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventsource_client::{Client as _, ClientBuilder, ReconnectOptions, SSE};
use futures_util::StreamExt;
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, Request, Response, ResponseFuture};
use pushbench::event::{Digest, Event, PayloadSizes, Rate, StreamSpec, Tally};
use pushbench::hub::Batch;
use pushbench::metrics::latency;
use pushbench::payload::PayloadKind;
use pushbench::transport::compression::Compression;
use pushbench::transport::standard_webhooks::SharedSignatures;
use pushbench::transport::{Secrets, Transport};

fn spec(payload: usize) -> StreamSpec {
    StreamSpec::new(1, 1_000_000, PayloadSizes::fixed(payload), Rate::Max).expect("valid spec")
}

fn event(spec: &StreamSpec, seq: u64) -> Event<'static> {
    Event {
        seq,
        topic: None,
        topic_seq: None,
        scheduled_ns: 1_000_000_000 + seq,
        sent_ns: 1_000_000_500 + seq,
        payload: spec.payload(seq).into(),
    }
}

fn event_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    for size in [64, 4096] {
        let spec = spec(size);
        let e = event(&spec, 7);
        let encoded = e.encode();
        group.bench_function(format!("payload/{size}B"), |b| {
            b.iter(|| spec.payload(black_box(7)))
        });
        group.bench_function(format!("encode/{size}B"), |b| {
            b.iter(|| black_box(&e).encode())
        });
        group.bench_function(format!("decode/{size}B"), |b| {
            b.iter(|| Event::decode(black_box(&encoded)).expect("valid"))
        });
    }
    group.finish();
}

fn digest_tally_histogram(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    let payload = spec(64).payload(3);
    group.bench_function("digest/64B", |b| {
        b.iter(|| Digest::EMPTY.fold(black_box(3), black_box(payload.as_bytes())))
    });
    let mut tally = Tally::new(u32::MAX as u64);
    let mut seq = 0u64;
    group.bench_function("tally/64B", |b| {
        b.iter(|| {
            seq = (seq + 1) % (u32::MAX as u64);
            tally.record(seq, payload.as_bytes())
        })
    });
    let mut histogram = latency::histogram();
    let mut value = 0u64;
    group.bench_function("histogram", |b| {
        b.iter(|| {
            value = (value + 7919) % 60_000_000;
            histogram.saturating_record(black_box(value + 1))
        })
    });
    group.finish();
}

fn webhook_signatures(c: &mut Criterion) {
    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Elements(1));
    let secret = Secrets::generate();
    let body = event(&spec(64), 1).encode();
    let now = 1_700_000_000;
    let signature = secret.sign("msg_1", now, &body);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("webhook-id", "msg_1".parse().expect("header"));
    headers.insert(
        "webhook-timestamp",
        now.to_string().parse().expect("header"),
    );
    headers.insert("webhook-signature", signature.parse().expect("header"));
    group.bench_function("sign/64B", |b| {
        b.iter(|| secret.sign("msg_1", now, black_box(&body)))
    });
    // What the provider pays per delivery to 100 endpoints: one signature, shared.
    let shared = SharedSignatures::new(secret.clone());
    group.bench_function("sign-shared-by-100-endpoints/64B", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            for _ in 0..100 {
                black_box(shared.sign(seq, "msg_1", now, black_box(&body)));
            }
        })
    });
    group.bench_function("verify/64B", |b| {
        b.iter(|| {
            secret
                .verify(&headers, black_box(&body), now, Duration::from_secs(300))
                .expect("valid")
        })
    });
    group.finish();
}

fn sse_frames(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let spec = spec(64);
    let events: Vec<String> = (0..BATCH)
        .map(|seq| String::from_utf8(event(&spec, seq).encode()).expect("ascii"))
        .collect();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements(BATCH));
    // Writing: axum's own SSE formatting of a batch, collected to the bytes it would send.
    group.bench_function("write/64B", |b| {
        b.to_async(&runtime).iter(|| sse_wire(&events))
    });
    // Parsing: the standard client, eventsource-client, over the same bytes, served from memory
    // so only its parsing (and its stream machinery) is timed...
    let wire = runtime.block_on(sse_wire(&events));
    group.bench_function("parse-eventsource-client/64B", |b| {
        b.to_async(&runtime).iter(|| async {
            let client = ClientBuilder::for_url("http://replay.invalid/sse")
                .expect("url")
                .reconnect(ReconnectOptions::reconnect(false).build())
                .build_with_transport(Replay(wire.clone()));
            let mut stream = client.stream();
            let mut n = 0;
            while let Some(Ok(item)) = stream.next().await {
                if matches!(item, SSE::Event(_)) {
                    n += 1;
                }
            }
            assert_eq!(n, BATCH);
        })
    });
    // ...and sse-stream, which pushbench's load side parses with, over the same bytes.
    group.bench_function("parse-sse-stream/64B", |b| {
        b.to_async(&runtime).iter(|| async {
            let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(wire.clone())]);
            let mut stream = sse_stream::SseByteStream::new(chunks);
            let mut n = 0;
            while let Some(Ok(item)) = stream.next().await {
                if item.data.is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, BATCH);
        })
    });
    group.finish();
}

/// Every transport's framing of one subscriber's batch of 100 events (what its server writes
/// per event, before the socket), and DEFLATE over such a batch as the SSE stream compresses
/// it: random payloads and JSON ones.
fn transport_framing(c: &mut Criterion) {
    const BATCH: u64 = 100;
    let batch_of = |spec: &StreamSpec| Batch {
        gap: None,
        first_seq: 0,
        seqs: Vec::new(),
        events: (0..BATCH)
            .map(|seq| Bytes::from(event(spec, seq).encode()))
            .collect(),
        copies: Vec::new(),
    };
    let batch = batch_of(&spec(64));
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(BATCH));
    for &transport in Transport::ALL {
        group.bench_function(format!("{transport}/64B"), |b| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                transport.frame(black_box(&batch), &mut out);
                black_box(out.len())
            })
        });
    }
    for (kind, payload) in [("random", PayloadKind::Random), ("json", PayloadKind::Json)] {
        let batch = batch_of(&spec(512).with_kind(payload));
        let mut framed = BytesMut::new();
        for (_, event) in batch.iter() {
            framed.extend_from_slice(event);
        }
        group.bench_function(format!("deflate-stream/512B-{kind}"), |b| {
            let mut encoder = Compression::Deflate.encoder().expect("deflate");
            b.iter(|| black_box(encoder.chunk(&framed).len()))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    event_codec,
    digest_tally_histogram,
    webhook_signatures,
    sse_frames,
    transport_framing
);
criterion_main!(benches);

/// The bytes axum's SSE response writes for these events (`id:` = index, `data:` = event).
async fn sse_wire(events: &[String]) -> Bytes {
    let frames: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(seq, data)| {
            Ok::<_, std::convert::Infallible>(SseEvent::default().id(seq.to_string()).data(data))
        })
        .collect();
    let body = Sse::new(futures_util::stream::iter(frames))
        .into_response()
        .into_body();
    axum::body::to_bytes(body, usize::MAX).await.expect("body")
}

/// An HTTP transport that answers every request with the same recorded SSE body.
#[derive(Clone)]
struct Replay(Bytes);

impl HttpTransport for Replay {
    fn request(&self, _request: Request<Option<Bytes>>) -> ResponseFuture {
        let body = self.0.clone();
        Box::pin(async move {
            let stream: ByteStream = Box::pin(futures_util::stream::iter([Ok(body)]));
            let response = Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(stream)
                .expect("valid response");
            Ok(response)
        })
    }
}
