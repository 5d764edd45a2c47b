//! Bad input from the network and the command line gets the protocol's own error answer, never
//! a panic, and the server goes on serving everyone else.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{assert_identical, client_for, serve_to, spec, start, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use pushbench::event::{Event, Rate, StreamSpec};
use pushbench::harness::{RecordPlan, TallySink};
use pushbench::transport::webhook::{self, Consumer};
use pushbench::transport::{ClientConfig, Secret, ServerConfig, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Wrong, missing and malformed webhook signatures, and expired and future-dated timestamps, get 401 with the reason and are not
/// delivered; a repeated `webhook-id` is acknowledged but delivered once; the consumer under
/// attack and another consumer both still receive the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signatures_are_enforced() {
    let spec = spec(500, "64");
    let config = ServerConfig::local();
    let secret = webhook::secrets_of(&config.credentials).unwrap();
    let client = client_for(&config);
    let mut server = start(Transport::Webhook, &spec, config).await;
    let addr = server.addr();

    let victim = Consumer::bind(&client).await.unwrap();
    let url = victim.url();
    let victim = tokio::spawn(async move {
        let mut sink = TallySink::new(RecordPlan::new(500, Rate::Max, 0, 0), 0);
        let outcome = victim.run(&addr.into(), &mut sink).await;
        sink.finish(outcome.err().map(|e| e.to_string()))
    });

    let body = Event {
        seq: 0,
        topic: None,
        topic_seq: None,
        scheduled_ns: 1,
        sent_ns: 1,
        payload: spec.payload(0).into(),
    }
    .encode();
    let now = unix_now();
    let http = common::http_client();
    let post = |id: &str, signature: Option<String>| {
        let mut request = http
            .post(&url)
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        request.send()
    };
    let cases = [
        (
            Some(Secret::generate().sign("msg_0", now, &body)),
            "no webhook-signature matches the body",
        ),
        (None, "missing header webhook-signature"),
        (
            Some("v1:AAAA".to_owned()),
            "webhook-signature has no v1 signature",
        ),
        (
            Some("v1,!!!not-base64!!!".to_owned()),
            "no webhook-signature matches the body",
        ),
    ];
    for (signature, reason) in cases {
        let answer = post("msg_0", signature).await.unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.text().await.unwrap().trim(), reason);
    }
    // Signed right, but dated more than the tolerance (5 minutes) ago or ahead: a replay, or
    // a forgery. A minute past the bound, not a second: `now` was read a moment ago, and the
    // consumer's clock may have ticked past it since (a fresh-clone CI run read `now + 301`
    // as 300 s ahead and accepted it). The unit tests hold the exact bound.
    for (at, reason) in [
        (now - 360, "webhook-timestamp is more than 300s old"),
        (
            now + 360,
            "webhook-timestamp is more than 300s in the future",
        ),
    ] {
        let answer = http
            .post(&url)
            .header("webhook-id", "msg_0")
            .header("webhook-timestamp", at.to_string())
            .header("webhook-signature", secret.sign("msg_0", at, &body))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.text().await.unwrap().trim(), reason);
    }
    // Signed right, but its body is not what its Content-Encoding says, or in a coding the
    // consumer does not read: 400 with the reason, nothing delivered.
    let good = secret.sign("msg_0", now, &body);
    for (coding, reason) in [
        ("gzip", "compressed body does not decode"),
        ("br", "unsupported Content-Encoding"),
    ] {
        let answer = http
            .post(&url)
            .header("webhook-id", "msg_0")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", good.clone())
            .header("content-encoding", coding)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        assert!(answer.text().await.unwrap().contains(reason), "{coding}");
    }
    // A correctly signed delivery, then its retry with the same id: accepted once.
    assert_eq!(
        post("msg_0", Some(good.clone())).await.unwrap().status(),
        204
    );
    assert_eq!(post("msg_0", Some(good)).await.unwrap().status(), 200);

    let others = serve_to(&mut server, Transport::Webhook, &spec, client, (1, 1)).await;
    let victim = victim.await.unwrap();
    assert_identical(Transport::Webhook, &spec, &others);
    assert_identical(Transport::Webhook, &spec, &[victim]);
    server.stop().await.unwrap();
}

/// `after=abc` (and a bad `Last-Event-ID`) gets 400 with a message from every cursor-taking
/// server, which then serves a subscriber the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_get_400() {
    let spec = spec(1000, "64");
    let http1 = common::http_client();
    // Multiplexed transports speak HTTP/2 only: h2c with prior knowledge.
    let http2 = common::http_client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let cursors = Transport::ALL
        .iter()
        .filter_map(|&t| Some((t, format!("{}?after=abc", t.spec().cursor_path?))));
    for (transport, path) in cursors {
        let config = ServerConfig::local();
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        let http = if transport.traits().multiplexed {
            &http2
        } else {
            &http1
        };
        let (status, text) = if transport.traits().needs_upgrade {
            // The refusal comes in answer to a real upgrade request.
            let url = format!("ws://{}{path}", server.addr());
            match tokio_tungstenite::connect_async(url).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
                    let body = answer.body().clone().unwrap_or_default();
                    (answer.status().as_u16(), String::from_utf8(body).unwrap())
                }
                other => panic!("websocket upgrade with a bad cursor: {other:?}"),
            }
        } else {
            let url = format!("http://{}{path}", server.addr());
            let answer = http.get(url).send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        };
        assert_eq!(status, 400, "{transport}");
        assert!(
            text.starts_with("invalid cursor \"abc\": expected the sequence number"),
            "{transport}: {text}"
        );
        if transport.traits().browser_api == Some("EventSource") {
            // What EventSource sends on reconnect is checked as strictly.
            let answer = http
                .get(format!(
                    "http://{}{}",
                    server.addr(),
                    transport.spec().cursor_path.unwrap()
                ))
                .header("last-event-id", "-3")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400);
        }
        let records = serve_to(&mut server, transport, &spec, client, (1, 1)).await;
        assert_identical(transport, &spec, &records);
        server.stop().await.unwrap();
    }
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    framed
}

fn event_bytes(spec: &StreamSpec, seq: u64) -> Vec<u8> {
    Event {
        seq,
        topic: None,
        topic_seq: None,
        scheduled_ns: 1,
        sent_ns: 1,
        payload: spec.payload(seq).into(),
    }
    .encode()
}

/// A TCP client fed a garbage frame between two good ones counts one malformed event, keeps
/// both good ones, and ends cleanly.
#[tokio::test]
async fn tcp_client_counts_malformed_frames() {
    let spec = spec(2, "16");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let wire = [
        frame(&event_bytes(&spec, 0)),
        frame(b"{\"seq\":\"nope\"}"),
        frame(&event_bytes(&spec, 1)),
    ]
    .concat();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _start = socket.read_u64().await.unwrap();
        socket.write_all(&wire).await.unwrap();
        socket.shutdown().await.unwrap();
    });
    let mut sink = TallySink::new(RecordPlan::new(2, Rate::Max, 0, 0), 0);
    Transport::Tcp
        .subscribe(&addr.into(), &ClientConfig::default(), &mut sink)
        .await
        .unwrap();
    let record = sink.finish(None);
    assert_eq!(record.ledger.counts().malformed, 1);
    assert_eq!(record.ledger.counts().distinct, 2);
    assert_eq!(record.ledger.digest(), spec.digest());
}

/// A WebSocket client fed invalid JSON and a binary frame counts two malformed events and
/// keeps the good ones.
#[tokio::test]
async fn websocket_client_counts_malformed_messages() {
    let spec = spec(2, "16");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, second) = (event_bytes(&spec, 0), event_bytes(&spec, 1));
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        for message in [
            Message::text(String::from_utf8(first).unwrap()),
            Message::text("{\"seq\":"),
            Message::binary(Bytes::from_static(&[0xff, 0x00])),
            Message::text(String::from_utf8(second).unwrap()),
        ] {
            ws.send(message).await.unwrap();
        }
        // The client closes once it has both events; answer its close.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let mut sink = TallySink::new(RecordPlan::new(2, Rate::Max, 0, 0), 0);
    Transport::Websocket
        .subscribe(&addr.into(), &ClientConfig::default(), &mut sink)
        .await
        .unwrap();
    let record = sink.finish(None);
    assert_eq!(record.ledger.counts().malformed, 2);
    assert_eq!(record.ledger.digest(), spec.digest());
}

/// A WebSocket subscriber sending an oversized message is closed with 1009; the server keeps
/// serving the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_oversized_message_gets_1009() {
    let spec = spec(1000, "64");
    let config = ServerConfig::local();
    let client = client_for(&config);
    let mut server = start(Transport::Websocket, &spec, config).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr()))
        .await
        .unwrap();
    ws.send(Message::text("x".repeat(200 * 1024)))
        .await
        .unwrap();
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| f.code);
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(close, Some(CloseCode::Size));
    drop(ws);
    let records = serve_to(&mut server, Transport::Websocket, &spec, client, (1, 1)).await;
    assert_identical(Transport::Websocket, &spec, &records);
    server.stop().await.unwrap();
}

/// A session over QUIC (no GET to answer 400) asking for a bad cursor or streams the server
/// does not publish is closed with 400 and the reason, which the subscriber reports and does
/// not ask again; the server serves the next subscriber the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_session_request_is_closed_with_400() {
    use pushbench::transport::resume::RESUME;
    use pushbench::transport::Target;
    let spec = spec(200, "64");
    let on_quic = Transport::ALL.iter().filter(|t| t.traits().udp);
    for &transport in on_quic {
        let config = ServerConfig::local();
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        for query in ["after=abc", "topics=7"] {
            let mut once = client.clone();
            once.settings.0.extend([RESUME.set(false)]);
            let target = Target {
                path: Some(format!("/webtransport?{query}")),
                ..Target::at(server.addr())
            };
            let mut sink = TallySink::new(RecordPlan::new(spec.count, Rate::Max, 0, 0), 0);
            let error = transport
                .subscribe(&target, &once, &mut sink)
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("HTTP 400"), "{transport} {query}: {error}");
            assert_eq!(sink.finish(None).ledger.counts().distinct, 0);
        }
        let records = serve_to(&mut server, transport, &spec, client, (1, 1)).await;
        assert_identical(transport, &spec, &records);
        server.stop().await.unwrap();
    }
}

/// A client that sends half a request's headers and then nothing is disconnected once the
/// header read timeout passes (it cannot hold a connection, or the server's shutdown, open),
/// and the server goes on to serve a real subscriber the identical stream. Every server that
/// subscribers reach with a GET is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_is_cut_off() {
    let spec = spec(200, "64");
    for &transport in Transport::ALL {
        let Some(path) = transport.spec().cursor_path else {
            continue;
        };
        let mut config = ServerConfig::local();
        config.http.header_read_timeout = Duration::from_millis(200);
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes())
            .await
            .unwrap();
        // The guard only stops a hang; the server closes long before it.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, slow.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "{transport}: a half-sent request held its connection"
        );
        let records = serve_to(&mut server, transport, &spec, client, (1, 1)).await;
        assert_identical(transport, &spec, &records);
        server.stop().await.unwrap();
    }
}

/// A long-polling client answered with something that is not a batch counts it malformed and
/// backs off as after a failed request, giving up as it would after so many without an event,
/// rather than asking again at once in a busy loop.
#[tokio::test]
async fn a_malformed_poll_answer_is_backed_off_not_hammered() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&asked);
    let garbage = axum::Router::new().route(
        "/events",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { "not a batch" }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, garbage).await });
    let mut sink = TallySink::new(RecordPlan::new(10, Rate::Max, 0, 0), 0);
    let (target, config) = (addr.into(), ClientConfig::default());
    let subscribing = Transport::Longpoll.subscribe(&target, &config, &mut sink);
    // Backing off, it gives up within seconds; hammering, it would never end.
    let ended = tokio::time::timeout(Duration::from_secs(60), subscribing)
        .await
        .expect("the client kept asking");
    let error = ended.unwrap_err().to_string();
    assert!(
        error.contains("gave up") && error.contains("not a batch"),
        "{error}"
    );
    let requests = asked.load(Ordering::Relaxed);
    let malformed = sink.finish(None).ledger.counts().malformed;
    assert_eq!(malformed, requests);
    // The first answer, then one per reconnect the resume rule allows.
    assert!((2..=10).contains(&requests), "{requests} requests");
}
