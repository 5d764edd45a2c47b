//! The contract every transport must meet, over real loopback sockets, run against every
//! transport the binary offers (`Transport::ALL`, so a new transport is held to it without
//! being listed here): the identical stream reaches one and many subscribers, and edge payloads
//! arrive intact.

mod common;

use common::{assert_identical, deliver, spec};
use pushbench::transport::Transport;

/// One subscriber receives all 10,000 events, in order, digest equal to the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_gets_the_identical_stream() {
    let spec = spec(10_000, "64");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 1).await;
        assert_eq!(records.len(), 1, "{transport}");
        assert_identical(transport, &spec, &records);
    }
}

/// Fifty subscribers each receive the same 10,000 events, each with the source digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_subscribers_get_the_identical_stream() {
    let spec = spec(10_000, "64");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 50).await;
        assert_eq!(records.len(), 50, "{transport}");
        assert_identical(transport, &spec, &records);
    }
}

/// Empty, one-byte and 64 KiB payloads, cycled, arrive byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_payloads_arrive_intact() {
    let spec = spec(300, "0,1,65536");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 2).await;
        assert_identical(transport, &spec, &records);
    }
}
