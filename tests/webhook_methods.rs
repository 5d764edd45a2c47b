//! Webhooks sent by GET, the event in the query string: the identical stream reaches one and
//! fifty consumers for payloads whose URL fits the limit, an event whose URL would not is
//! refused by the provider with the reason (and counted as abandoned), and GET with
//! compression is refused when the provider starts.

mod common;

use std::time::Duration;

use common::{assert_identical, client_for, serve_to, spec, start};
use pushbench::event::Rate;
use pushbench::harness::{run_subscribers, RecordPlan};
use pushbench::serve::Server;
use pushbench::transport::compression::{Compression, COMPRESSION};
use pushbench::transport::webhook::{Method, METHOD, URL_LIMIT};
use pushbench::transport::{ServerConfig, Transport};

fn by_get() -> ServerConfig {
    let mut config = ServerConfig::local();
    config.settings.0.extend([METHOD.set(Method::Get)]);
    config
}

/// 0 B, 1 B and 4 KiB payloads (a 4 KiB event's URL is ~5.6 KiB, under the 8 KiB default) reach
/// one and fifty consumers intact by GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_under_the_url_limit_arrive_intact() {
    let spec = spec(300, "0,1,4096");
    for subscribers in [1, 50] {
        let config = by_get();
        let client = client_for(&config);
        let mut server = start(Transport::Webhook, &spec, config).await;
        let records = serve_to(
            &mut server,
            Transport::Webhook,
            &spec,
            client,
            (subscribers, subscribers),
        )
        .await;
        assert_identical(Transport::Webhook, &spec, &records);
        assert_eq!(server.hub().abandoned_count(), 0);
        server.stop().await.unwrap();
    }
}

/// With a 1 KiB limit, every 2,000 B event is refused (its URL would be ~2.7 KiB) and every
/// 64 B one delivered: the consumers get exactly the small half, the provider counts the
/// large half abandoned and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_url_limit_are_refused_with_the_reason() {
    let spec = spec(200, "64,2000");
    let mut config = by_get();
    config.settings.0.extend([URL_LIMIT.set(1024)]);
    let client = client_for(&config);
    let mut server = start(Transport::Webhook, &spec, config).await;
    let addr = server.addr();
    let count = spec.count;
    let load = tokio::spawn(async move {
        let plan = RecordPlan::new(count, Rate::Max, 0, 0);
        // The consumers cannot know an event was refused: they wait, then time out.
        run_subscribers(
            Transport::Webhook,
            &addr.into(),
            3,
            0,
            &plan,
            &client,
            Duration::from_secs(3),
        )
        .await
    });
    server.publish(&spec, 3).await.unwrap();
    let records = load.await.unwrap();
    for record in &records {
        let counts = record.ledger.counts();
        assert_eq!(counts.distinct, 100, "only the 64 B events arrive");
        assert_eq!(counts.malformed + counts.duplicated, 0);
    }
    assert_eq!(server.hub().abandoned_count(), 3 * 100);
    let refusal = server.hub().refusal().expect("the provider says why");
    assert!(
        refusal.contains("over the 1024 B limit") && refusal.contains("webhook-url-limit"),
        "{refusal}"
    );
    server.stop().await.unwrap();
}

/// GET sends no body, so GET with compression is refused when the provider starts, naming
/// the fix.
#[tokio::test]
async fn get_with_compression_is_refused() {
    let mut config = by_get();
    config
        .settings
        .0
        .extend([COMPRESSION.set(Compression::Deflate)]);
    let spec = spec(10, "64");
    let mut server = Server::start(
        Transport::Webhook,
        "127.0.0.1:0".parse().unwrap(),
        spec.count,
        config,
    )
    .await
    .unwrap();
    let error = server.publish(&spec, 1).await.unwrap_err().to_string();
    assert!(error.contains("--compression off"), "{error}");
}
