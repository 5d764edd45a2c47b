//! End-to-end delivery over loopback, one criterion group per transport with the same
//! parameters in each, so `cargo bench -- 'delivery/.*/10subs/64B'` lines them up.
//!
//! Each iteration starts a server and connects its subscribers untimed, then times from the
//! stream's start to the last event received by the last subscriber, and checks every
//! subscriber's digest: a bench that loses events fails instead of reporting a fast number.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use pushbench::event::{PayloadSizes, Rate, StreamSpec};
use pushbench::harness::deliver_locally;
use pushbench::transport::{ClientConfig, ServerConfig, Transport};

/// Events per timed batch: enough to amortise a poll interval, few enough for 10 minutes total.
const EVENTS: u64 = 2_000;
const SUBSCRIBERS: [usize; 2] = [1, 10];
const PAYLOADS: [usize; 2] = [64, 4096];

fn delivery(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for &transport in Transport::ALL {
        let mut group = c.benchmark_group(format!("delivery/{transport}"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for subscribers in SUBSCRIBERS {
            for payload in PAYLOADS {
                let spec = StreamSpec::new(1, EVENTS, PayloadSizes::fixed(payload), Rate::Max)
                    .expect("valid spec");
                let source = spec.digest();
                group.throughput(Throughput::Elements(EVENTS * subscribers as u64));
                let id = BenchmarkId::new(format!("{subscribers}subs"), format!("{payload}B"));
                group.bench_function(id, |b| {
                    b.to_async(&runtime).iter_custom(|iterations| {
                        let spec = spec.clone();
                        async move {
                            let mut timed = Duration::ZERO;
                            for _ in 0..iterations {
                                let server = ServerConfig::local();
                                let client = ClientConfig {
                                    credentials: server.credentials.for_subscribers(),
                                    // The certificate a transport always on TLS needs.
                                    tls: server.tls.clone(),
                                    ..ClientConfig::default()
                                };
                                let timeout = Duration::from_secs(120);
                                let run = deliver_locally(
                                    transport,
                                    &spec,
                                    subscribers,
                                    server,
                                    client,
                                    timeout,
                                )
                                .await
                                .expect("delivery run");
                                for record in &run.records {
                                    assert_eq!(
                                        record.ledger.digest(),
                                        source,
                                        "{transport}: stream differs"
                                    );
                                }
                                timed += run.delivery;
                            }
                            timed
                        }
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, delivery);
criterion_main!(benches);
