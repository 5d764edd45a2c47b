//! Hostile and careless clients: webhook registrations that would turn the provider against
//! its own network, redirects, a full server, subscribers that never read, and a `serve` told
//! to stop while clients hold it. Each gets the protocol's own answer, and the server goes on
//! serving everyone else. Tests only ever connect to loopback.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_identical, client_for, serve_to, spec, start, until_subscribed, TIMEOUT};
use pushbench::event::Rate;
use pushbench::harness::{run_subscribers, RecordPlan};
use pushbench::serve::Server;
use pushbench::transport::resume::RESUME;
use pushbench::transport::webhook::{ATTEMPTS, REGISTRATION_TOKEN, RETRY_BASE, WEBHOOK_SECRET};
use pushbench::transport::{Secret, ServerConfig, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A WebSocket upgrade request for `path`, as a browser sends it.
fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// POSTs `body` to the provider's `/subscriptions` with these headers; the status and text.
async fn register(server: &Server, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = common::http_client()
        .post(format!("http://{}/subscriptions", server.addr()))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// The `authorization` value that registers with `config`'s provider: its token.
fn bearer(config: &ServerConfig) -> String {
    let token = config.credentials.get(&REGISTRATION_TOKEN).unwrap();
    format!("Bearer {token}")
}

/// A GET of `path` over HTTP/2 with prior knowledge (h2c), as a multiplexed transport's
/// clients speak: the status and the start of the body, or why there was none.
async fn h2c_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let client = common::http_client_builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut request = client.get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = answer.status().as_u16();
    // A stream that was let in never ends: read only its start.
    let start = tokio::time::timeout(Duration::from_secs(1), answer.text())
        .await
        .map_or(String::new(), |text| text.unwrap_or_default());
    Ok((status, start))
}

/// Registration needs the token, a JSON body and an endpoint that is not on loopback, a
/// private network or a metadata address (none of which is contacted); refused ones are not
/// subscribers. A cap bounds the registrations.
#[tokio::test]
async fn registration_is_guarded() {
    let spec = spec(10, "8");
    let mut config = ServerConfig::default();
    config
        .credentials
        .set(&REGISTRATION_TOKEN, "s3cret-token".into());
    let server = start(Transport::Webhook, &spec, config).await;
    let auth = ("authorization", "Bearer s3cret-token");
    let url = |u: &str| format!(r#"{{"url":"{u}"}}"#);

    let (status, text) = register(&server, &[JSON], &url("http://8.8.8.8/x")).await;
    assert_eq!(status, 401, "{text}");
    let wrong = ("authorization", "Bearer guess");
    assert_eq!(
        register(&server, &[JSON, wrong], &url("http://8.8.8.8/"))
            .await
            .0,
        401
    );
    // text/plain is what a web page can send without a preflight: refused.
    let plain = ("content-type", "text/plain");
    assert_eq!(
        register(&server, &[plain, auth], &url("http://8.8.8.8/"))
            .await
            .0,
        415
    );
    for (endpoint, why) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://10.0.0.7/hook", "private"),
        (
            "http://169.254.169.254/latest/meta-data",
            "a cloud metadata service",
        ),
        ("http://user:pw@8.8.8.8/", "credentials"),
        ("ftp://8.8.8.8/", "only http and https"),
    ] {
        let (status, text) = register(&server, &[JSON, auth], &url(endpoint)).await;
        assert_eq!(status, 400, "{endpoint}: {text}");
        assert!(text.contains(why), "{endpoint}: {text}");
    }
    let (status, text) = register(&server, &[JSON, auth], "not json").await;
    assert_eq!(status, 400);
    assert!(text.starts_with("invalid registration"), "{text}");
    assert_eq!(server.hub().subscribers(), 0, "nothing was registered");
    server.stop().await.unwrap();

    // The cap: one endpoint allowed, the second refused with 503.
    let mut config = ServerConfig::local();
    config.limits.max_subscribers = Some(1);
    let token = bearer(&config);
    let auth = ("authorization", token.as_str());
    let server = start(Transport::Webhook, &spec, config).await;
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = url(&format!("http://{}/hook", sink.local_addr().unwrap()));
    assert_eq!(register(&server, &[JSON, auth], &endpoint).await.0, 201);
    let (status, text) = register(&server, &[JSON, auth], &endpoint).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(server.hub().subscribers(), 1);
    server.stop().await.unwrap();
}

/// An endpoint that answers every delivery with a redirect is not followed: the place it
/// points to is never contacted, and the event is abandoned once its attempts run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_endpoint_is_not_followed() {
    let spec = spec(1, "8");
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let contacted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&contacted);
    tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_addr = redirector.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = redirector.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut request).await {
                    if n == 0 {
                        break;
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                    let answer = format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere_addr}/\r\n\
                         Content-Length: 0\r\n\r\n"
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::local();
    config
        .settings
        .0
        .extend([ATTEMPTS.set(3), RETRY_BASE.set(Duration::from_millis(1))]);
    let token = bearer(&config);
    let mut server = start(Transport::Webhook, &spec, config).await;
    let endpoint = format!(r#"{{"url":"http://{redirector_addr}/hook"}}"#);
    let auth = ("authorization", token.as_str());
    assert_eq!(register(&server, &[JSON, auth], &endpoint).await.0, 201);
    server.publish(&spec, 1).await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while server.hub().abandoned_count() < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the redirected event was abandoned");
    assert_eq!(attempts.load(Ordering::Relaxed), 3, "one POST per attempt");
    assert_eq!(
        contacted.load(Ordering::Relaxed),
        0,
        "the redirect was followed"
    );
    server.stop().await.unwrap();
}

/// Past the subscriber cap, each server refuses in its protocol's way (HTTP 503, raw TCP
/// closed) and the subscribers it holds still get the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_and_serves_the_rest() {
    let spec = spec(300, "64");
    for &transport in Transport::ALL {
        if transport.traits().needs_inbound_http {
            continue; // its cap is on registrations, tested above
        }
        let mut config = ServerConfig::local();
        config.limits.max_subscribers = Some(1);
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        let (addr, count) = (server.addr(), spec.count);
        let held = tokio::spawn({
            let client = client.clone();
            async move {
                let plan = RecordPlan::new(count, Rate::Max, 0, 0);
                run_subscribers(transport, &addr.into(), 1, 0, &plan, &client, TIMEOUT).await
            }
        });
        until_subscribed(&mut server, 1, transport).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let answer = match transport.spec().cursor_path {
            // HTTP/2 only: the refusal is the refused stream's answer.
            Some(path) if transport.traits().multiplexed => {
                let answer = h2c_get(addr, path, &[]).await.unwrap();
                format!("HTTP/1.1 {} {}", answer.0, answer.1)
            }
            // A call of its own protocol (gRPC), or a session over QUIC: refused by its status
            // or close code, which the transport's own client reports (told not to retry).
            None if transport.traits().multiplexed || transport.traits().udp => {
                let mut once = client.clone();
                once.settings.0.extend([RESUME.set(false)]);
                let plan = RecordPlan::new(count, Rate::Max, 0, 0);
                let records =
                    run_subscribers(transport, &addr.into(), 1, 0, &plan, &once, TIMEOUT).await;
                let error = records[0].error.clone().unwrap_or_default();
                assert!(error.contains("server full"), "{transport}: {error}");
                "HTTP/1.1 503 server full".into()
            }
            Some(path) => {
                let request = upgrade_request(path);
                extra.write_all(request.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(TIMEOUT, extra.read_to_end(&mut answer)).await;
                String::from_utf8_lossy(&answer).into_owned()
            }
            None => {
                extra.write_all(&0u64.to_be_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let read = tokio::time::timeout(TIMEOUT, extra.read_to_end(&mut answer)).await;
                assert!(
                    read.is_ok(),
                    "{transport}: the refused connection stayed open"
                );
                format!("closed after {} bytes", answer.len())
            }
        };
        let refuses_by_status = transport.traits().multiplexed || transport.traits().udp;
        if transport.spec().cursor_path.is_some() || refuses_by_status {
            assert!(answer.starts_with("HTTP/1.1 503"), "{transport}: {answer}");
            assert!(answer.contains("server full"), "{transport}: {answer}");
        } else {
            assert_eq!(answer, "closed after 0 bytes", "{transport}");
        }
        assert_eq!(
            server.hub().subscribers(),
            1,
            "{transport}: the refused one counted"
        );
        server.publish(&spec, 1).await.unwrap();
        let records = held.await.unwrap();
        assert_identical(transport, &spec, &records);
        server.stop().await.unwrap();
    }
}

/// A subscriber that never reads is dropped once a write to it has waited the write timeout,
/// and counted; the reading subscriber gets the identical stream, and the server is free to
/// stop (nothing holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_dropped() {
    // 8 MB of events: far more than the socket buffers between the server and a non-reader.
    let spec = spec(500, "16384");
    for transport in [Transport::Sse, Transport::Websocket, Transport::Tcp] {
        let mut config = ServerConfig::local();
        config.limits.write_timeout = Duration::from_millis(300);
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        let mut stuck = TcpStream::connect(server.addr()).await.unwrap();
        match transport.spec().cursor_path {
            Some(path) if transport.traits().needs_upgrade => {
                let request = upgrade_request(path);
                stuck.write_all(request.as_bytes()).await.unwrap();
            }
            Some(path) => {
                let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
                stuck.write_all(request.as_bytes()).await.unwrap();
            }
            None => stuck.write_all(&0u64.to_be_bytes()).await.unwrap(),
        }
        until_subscribed(&mut server, 1, transport).await;
        // The stuck one is a subscriber too: the stream starts once the reader is in.
        let records = serve_to(&mut server, transport, &spec, client, (1, 2)).await;
        assert_identical(transport, &spec, &records);
        let drained = server.drain(TIMEOUT).await;
        assert_eq!(
            drained, 0,
            "{transport}: the non-reader still held the server"
        );
        assert!(
            server.sockets().write_timeouts >= 1,
            "{transport}: the non-reader's drop was not counted"
        );
        server.stop().await.unwrap();
        drop(stuck);
    }
}

/// `pushbench serve` told to stop (SIGTERM) while one client holds half a request and another
/// subscriber never reads still exits, cleanly, with its stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_whatever_clients_do() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushbench"))
        .args([
            "serve",
            "--transport",
            "sse",
            "--events",
            "20000",
            "--payload",
            "4096",
        ])
        .args(["--rate", "max", "--start-after", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let addr = match pushbench::protocol::parse(&line).unwrap() {
        pushbench::protocol::Report::Listening { addr, .. } => addr,
        other => panic!("{other:?}"),
    };
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The stream starts for the never-reader; give it a moment to fill its buffers.
    let mut first = [0u8; 1];
    stuck.read_exact(&mut first).await.unwrap();
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // The guard only stops a hang; serve stops within its own deadline.
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("serve did not stop")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut out, &mut rest)
        .await
        .unwrap();
    assert!(rest.contains(r#""report":"stats""#), "{rest}");
    drop((half, stuck));
}

/// Headers past the read buffer's 64 KiB (HTTP/2: the header list size) are answered 431 by
/// every HTTP server, a body past
/// the registration limit 413, and the server then serves a subscriber the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_bodies_are_refused() {
    let spec = spec(100, "64");
    for &transport in Transport::ALL {
        let Some(path) = transport.spec().cursor_path else {
            continue;
        };
        let config = ServerConfig::local();
        let client = client_for(&config);
        let mut server = start(transport, &spec, config).await;
        let filler = "x".repeat(100 * 1024);
        if transport.traits().multiplexed {
            // HTTP/2: past the header list size the server announced, that stream is
            // answered 431, and the server carries on.
            let answer = h2c_get(server.addr(), path, &[("x-filler", &filler)]).await;
            assert!(matches!(answer, Ok((431, _))), "{transport}: {answer:?}");
        } else {
            let mut big = TcpStream::connect(server.addr()).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
            let _ = big.write_all(request.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(TIMEOUT, big.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 431"), "{transport}: {answer}");
        }
        let records = serve_to(&mut server, transport, &spec, client, (1, 1)).await;
        assert_identical(transport, &spec, &records);
        server.stop().await.unwrap();
    }
    let config = ServerConfig::local();
    let token = bearer(&config);
    let server = start(Transport::Webhook, &spec, config).await;
    let huge = format!(
        r#"{{"url":"http://127.0.0.1:9/{}"}}"#,
        "a".repeat(20 * 1024)
    );
    let auth = ("authorization", token.as_str());
    assert_eq!(register(&server, &[JSON, auth], &huge).await.0, 413);
    server.stop().await.unwrap();
}

/// A secret rotation end to end: the provider signs with the old and the new secret, and a
/// consumer that already knows only the new one receives the identical stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_delivers() {
    let spec = spec(300, "64");
    let (old, new) = (Secret::generate(), Secret::generate());
    let mut config = ServerConfig::local();
    let both = format!("{} {}", old.to_whsec(), new.to_whsec());
    config.credentials.set(&WEBHOOK_SECRET, both);
    let mut client = client_for(&config);
    client.credentials.set(&WEBHOOK_SECRET, new.to_whsec());
    let mut server = start(Transport::Webhook, &spec, config).await;
    let records = serve_to(&mut server, Transport::Webhook, &spec, client, (2, 2)).await;
    assert_identical(Transport::Webhook, &spec, &records);
    server.stop().await.unwrap();
}
