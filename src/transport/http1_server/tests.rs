//! The lean connection against a real socket: what it answers, how it frames, when it closes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::{serve_connection, Limits};

/// The guard against a hang; nothing here should come near it.
const GUARD: Duration = Duration::from_secs(10);

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// What the test application does with each path: `/echo` answers the method and body, `/hold`
/// waits on its channel (telling the test when it is dropped), `/stream` streams what the
/// test sends.
struct App {
    held: mpsc::UnboundedSender<oneshot::Sender<()>>,
    streams: mpsc::UnboundedSender<mpsc::UnboundedSender<Bytes>>,
}

impl App {
    fn answer(&self, request: Request<Full<Bytes>>) -> Answer {
        let (held, streams) = (self.held.clone(), self.streams.clone());
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|never| match never {})
                .to_bytes();
            let response = match parts.uri.path() {
                "/echo" => {
                    let text = format!("{} {}\n", parts.method, String::from_utf8_lossy(&body));
                    Response::new(Body::from(text))
                }
                "/hold" => {
                    // Dropped with this future: the test sees its receiver end.
                    let (dropped, _watch) = oneshot::channel::<()>();
                    let _ = held.send(dropped);
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                "/stream" => {
                    let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
                    let _ = streams.send(sender);
                    let chunks = tokio_stream_of(receiver);
                    Response::new(Body::from_stream(chunks))
                }
                _ => {
                    let mut missing = Response::new(Body::from("no such path\n"));
                    *missing.status_mut() = StatusCode::NOT_FOUND;
                    missing
                }
            };
            Ok(response)
        })
    }
}

fn tokio_stream_of(
    mut receiver: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx).map(|next| next.map(Ok)))
}

/// A server of lean connections on a port of its own, with the channels the test watches.
struct Rig {
    addr: SocketAddr,
    drain: watch::Sender<()>,
    held: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    streams: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Bytes>>,
}

async fn rig(limits: Limits) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain, _) = watch::channel(());
    let (held_tx, held) = mpsc::unbounded_channel();
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let app = std::sync::Arc::new(App {
        held: held_tx,
        streams: streams_tx,
    });
    let draining = drain.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let app = std::sync::Arc::clone(&app);
            let drain = draining.subscribe();
            tokio::spawn(async move {
                let answer = move |request| app.answer(request);
                let _ = serve_connection(socket, answer, limits, drain).await;
            });
        }
    });
    Rig {
        addr,
        drain,
        held,
        streams,
    }
}

fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(5),
        max_head: 1024,
        max_body: 64,
        keep_alive: true,
    }
}

/// Sends `bytes` and reads until the server closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut answer))
        .await
        .expect("the server did not close")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

/// Sends `request` on `stream`.
async fn send(stream: &mut TcpStream, request: &str) {
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// What the application hands the test next (a held answer's or a stream's end).
async fn next<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(GUARD, receiver.recv())
        .await
        .expect("the application was not called")
        .expect("the application is gone")
}

/// Reads from `stream` until `needle` has arrived.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let mut piece = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, stream.read(&mut piece))
            .await
            .expect("the answer did not come")
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&piece[..n]);
    }
    String::from_utf8(seen).unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let rig = rig(limits()).await;
    let answer = exchange(
        rig.addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = answer
        .lines()
        .filter(|line| line.starts_with("HTTP/1.1"))
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 404 Not Found"
        ],
        "{answer}"
    );
    // Each body framed by its length; the HEAD answer's length without its body.
    let bodies: Vec<&str> = answer.split("\r\n\r\n").skip(1).collect();
    assert!(bodies[0].starts_with("GET \nHTTP/1.1"), "{answer}");
    assert!(bodies[1].starts_with("POST hello\nHTTP/1.1"), "{answer}");
    assert!(
        bodies[2].starts_with("HTTP/1.1 404"),
        "the HEAD answer had a body: {answer}"
    );
    assert!(answer.ends_with("no such path\n"), "{answer}");
    // The HEAD answer's length is its body's ("HEAD \n"), unsent.
    assert!(
        answer.contains("content-length: 6\r\n\r\nHTTP/1.1 404"),
        "{answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
}

#[tokio::test]
async fn requests_it_cannot_take_are_refused_with_their_status_and_closed() {
    let rig = rig(limits()).await;
    let big_head = format!(
        "GET /echo HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "x".repeat(4096)
    );
    let cases: [(&[u8], &str); 6] = [
        (b"\x16\x03\x01 not http at all\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"GET /echo HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "HTTP/1.1 400 ",
        ),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 501 ",
        ),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
            "HTTP/1.1 413 ",
        ),
        (big_head.as_bytes(), "HTTP/1.1 431 "),
    ];
    for (request, status) in cases {
        let answer = exchange(rig.addr, request).await;
        assert!(answer.starts_with(status), "{status}: {answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_takes_its_held_answer_with_it() {
    let mut rig = rig(limits()).await;
    let mut stream = TcpStream::connect(rig.addr).await.unwrap();
    send(&mut stream, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut dropped = next(&mut rig.held).await;
    drop(stream);
    // The answer's future is dropped, and with it the sender the test holds the other end of.
    tokio::time::timeout(GUARD, dropped.closed())
        .await
        .expect("the held answer outlived its client");
}

#[tokio::test]
async fn a_streamed_body_is_chunked_and_arrives_as_it_is_made() {
    let mut rig = rig(limits()).await;
    let mut stream = TcpStream::connect(rig.addr).await.unwrap();
    send(&mut stream, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let sender = next(&mut rig.streams).await;
    sender.send(Bytes::from_static(b"first")).unwrap();
    let start = read_until(&mut stream, "first\r\n").await;
    assert!(start.contains("transfer-encoding: chunked\r\n"), "{start}");
    assert!(start.ends_with("\r\n\r\n5\r\nfirst\r\n"), "{start}");
    sender.send(Bytes::from_static(b"second piece")).unwrap();
    drop(sender);
    let rest = read_until(&mut stream, "0\r\n\r\n").await;
    assert_eq!(rest, "c\r\nsecond piece\r\n0\r\n\r\n");
    // A streamed answer's client leaving ends its stream too.
    send(&mut stream, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let sender = next(&mut rig.streams).await;
    drop(stream);
    tokio::time::timeout(GUARD, sender.closed())
        .await
        .expect("the stream outlived its client");
}

#[tokio::test]
async fn http_1_0_and_a_drain_end_the_connection() {
    let mut rig = rig(limits()).await;
    let answer = exchange(rig.addr, b"GET /echo HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    // A streamed body goes to an HTTP/1.0 client unchunked, ended by the close.
    let mut old = TcpStream::connect(rig.addr).await.unwrap();
    send(&mut old, "GET /stream HTTP/1.0\r\n\r\n").await;
    let sender = next(&mut rig.streams).await;
    sender.send(Bytes::from_static(b"whole")).unwrap();
    drop(sender);
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, old.read_to_end(&mut answer))
        .await
        .expect("the stream's end did not close the connection")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.ends_with("connection: close\r\n\r\nwhole"),
        "{answer}"
    );
    // Idle when the drain comes: closed at once, with nothing written.
    let mut idle = TcpStream::connect(rig.addr).await.unwrap();
    let mut held = TcpStream::connect(rig.addr).await.unwrap();
    send(&mut held, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let _dropped = next(&mut rig.held).await;
    // The idle connection's task must be waiting for its request before the drain.
    send(&mut idle, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    read_until(&mut idle, "GET ").await;
    rig.drain.send_replace(());
    let mut rest = Vec::new();
    tokio::time::timeout(GUARD, idle.read_to_end(&mut rest))
        .await
        .expect("an idle connection outlived the drain")
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn a_request_that_stalls_is_closed_and_a_waiting_client_is_told_to_continue() {
    let mut quick = limits();
    quick.request_timeout = Duration::from_millis(100);
    let rig = rig(quick).await;
    let answer = exchange(rig.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(answer, "", "a half request was answered");
    let mut stream = TcpStream::connect(rig.addr).await.unwrap();
    send(
        &mut stream,
        "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    )
    .await;
    read_until(&mut stream, "HTTP/1.1 100 Continue\r\n\r\n").await;
    send(&mut stream, "abc").await;
    let answer = read_until(&mut stream, "POST abc").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
