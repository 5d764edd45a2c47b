//! The link emulator's proxy: accepts subscribers, connects each to the server, and pumps both
//! directions through the link's toxics.
//!
//! Each direction is a reader and a writer joined by a bounded queue. The reader stamps each
//! chunk with the moment it may leave (`latency ± jitter` after it arrived, never before the
//! chunk ahead of it), so a 50 ms link still carries full throughput: the delay is pipelined,
//! not stop-and-wait. The writer waits for that moment (to the microsecond, with
//! [`sleep_until_ns`]), then for the bandwidth cap's tokens, then writes, in slices if the
//! slicer is on. The queue's bound passes backpressure on: a capped link slows the server
//! down as a real one does.
//!
//! A [`Blackout`] is the blackhole storm: from its start nothing passes on any connection, new
//! ones included (they never reach the server), and at its end every connection that went
//! through it is closed, as a NAT or load balancer that lost its state does; the toxics'
//! `timeout` does the same to one connection at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Link;
use crate::clock::{now_ns, sleep_until_ns};

/// Bytes read per chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction: enough for a long fat link, bounded so backpressure works.
const IN_FLIGHT: usize = 256;

/// When the link goes silent for a blackhole storm, as the proxy's connections see it.
#[derive(Clone, Debug)]
pub struct Blackout(watch::Receiver<Option<(u64, u64)>>);

/// Sets the blackout's window, once `run` knows when the stream began.
#[derive(Debug)]
pub struct BlackoutSwitch(watch::Sender<Option<(u64, u64)>>);

impl Blackout {
    /// A blackout and the switch that strikes it.
    pub fn new() -> (BlackoutSwitch, Self) {
        let (switch, blackout) = watch::channel(None);
        (BlackoutSwitch(switch), Self(blackout))
    }

    /// A link that never goes silent.
    pub fn never() -> Self {
        Self::new().1
    }

    /// The blackout's end when the link is silent now.
    fn silent_now(&self) -> Option<u64> {
        let now = now_ns();
        (*self.0.borrow()).and_then(|(start, end)| (start <= now && now < end).then_some(end))
    }

    /// Waits for the blackout to begin (at once if it has), returning its end; never, when
    /// it is over or none is struck.
    async fn begins(&self) -> u64 {
        let mut window = self.0.clone();
        let struck = window.wait_for(Option::is_some).await.ok().and_then(|w| *w);
        match struck {
            Some((start, end)) if now_ns() < end => {
                sleep_until_ns(start).await;
                end
            }
            _ => std::future::pending().await,
        }
    }
}

impl BlackoutSwitch {
    /// Silences the link from `start_ns` to `end_ns` (monotonic).
    pub fn strike(&self, start_ns: u64, end_ns: u64) {
        let _ = self.0.send(Some((start_ns, end_ns)));
    }
}

/// What the proxy counted, readable while it runs.
#[derive(Debug, Default)]
pub struct LinkStats {
    connections: AtomicU64,
    to_server: AtomicU64,
    to_subscriber: AtomicU64,
    resets: AtomicU64,
    closes: AtomicU64,
}

/// [`LinkStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTotals {
    /// Connections proxied.
    pub connections: u64,
    /// Bytes passed from subscribers to the server.
    pub to_server: u64,
    /// Bytes passed from the server to subscribers.
    pub to_subscriber: u64,
    /// Connections the link reset (`reset_peer`).
    pub resets: u64,
    /// Connections the link closed (`timeout`, `limit_data`).
    pub closes: u64,
}

impl LinkStats {
    /// The counts now.
    pub fn totals(&self) -> LinkTotals {
        LinkTotals {
            connections: self.connections.load(Ordering::Relaxed),
            to_server: self.to_server.load(Ordering::Relaxed),
            to_subscriber: self.to_subscriber.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            closes: self.closes.load(Ordering::Relaxed),
        }
    }
}

/// Which side opens the connections a link relays, so the toxics that act toward the
/// subscriber (`limit_data`, `slicer`) act on what the server sends whichever side dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialer {
    /// Subscribers dial the server (every transport but webhooks).
    Subscriber,
    /// The server dials its subscribers' endpoints (a webhook provider its consumers).
    Server,
}

/// Accepts on `listener`, connects each accepted connection to `upstream`, and shuttles bytes
/// both ways through `link`'s toxics until `shutdown` is cancelled (then every connection
/// ends). `dialer` says which side the accepted connections come from.
pub async fn serve(
    (listener, dialer): (TcpListener, Dialer),
    upstream: SocketAddr,
    link: Link,
    stats: Arc<LinkStats>,
    blackout: Blackout,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (accepted, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait and go on, as the servers do.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (stats, shutdown) = (Arc::clone(&stats), shutdown.clone());
        let blackout = blackout.clone();
        tokio::spawn(async move {
            // In a blackout nothing reaches the server: the subscriber's connection is held
            // silent, then closed when the path comes back.
            if let Some(end) = blackout.silent_now() {
                tokio::select! {
                    () = sleep_until_ns(end) => {}
                    _ = shutdown.cancelled() => {}
                }
                stats.closes.fetch_add(1, Ordering::Relaxed);
                drop(accepted);
                return;
            }
            // A server that refuses (restarting, say) is passed on as a refusal: the
            // subscriber's connection is closed at once.
            let Ok(connected) = TcpStream::connect(upstream).await else {
                return;
            };
            let (subscriber, server) = match dialer {
                Dialer::Subscriber => (accepted, connected),
                Dialer::Server => (connected, accepted),
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = connection(subscriber, server, link, &stats, &blackout) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// One proxied connection, until either side closes or a toxic ends it. The streams are
/// borrowed by the pumps, not split and owned: their halves would send FIN when dropped, where
/// `reset_peer` must send RST.
async fn connection(
    mut subscriber: TcpStream,
    mut server: TcpStream,
    link: Link,
    stats: &LinkStats,
    blackout: &Blackout,
) {
    let _ = subscriber.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if link.reset_peer.is_some() {
        // Closing with a zero linger sends RST instead of FIN: the reset the toxic plants.
        let _ = subscriber.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    let opened = now_ns();
    let (sub_read, sub_write) = subscriber.split();
    let (srv_read, srv_write) = server.split();
    let upstream = pump(sub_read, srv_write, link, Direction::ToServer, stats);
    let downstream = pump(srv_read, sub_write, link, Direction::ToSubscriber, stats);
    let ends = async {
        // Either direction ending ends the connection, as a proxy would.
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
        }
    };
    let relayed = async {
        match (link.reset_peer, link.timeout) {
            (Some(reset), _) => {
                if tokio::time::timeout(reset, ends).await.is_err() {
                    // Dropping the halves with SO_LINGER 0 sends RST to both sides.
                    stats.resets.fetch_add(1, Ordering::Relaxed);
                }
            }
            (None, Some(silent_after)) => {
                if tokio::time::timeout(silent_after, ends).await.is_err() {
                    // Silent: nothing passes (the pumps are gone), then the close.
                    sleep_until_ns(opened + 2 * silent_after.as_nanos() as u64).await;
                    stats.closes.fetch_add(1, Ordering::Relaxed);
                }
            }
            (None, None) => ends.await,
        }
    };
    tokio::select! {
        () = relayed => {}
        end = blackout.begins() => {
            // The pumps are gone with `relayed`: nothing passes until the end, then the close
            // (both streams dropped as this returns).
            sleep_until_ns(end).await;
            stats.closes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which way a pump carries data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToSubscriber,
}

/// Carries one direction through the toxics until the source closes (what was read still
/// goes out, then the close) or a limit is hit (then reading stops too).
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    link: Link,
    direction: Direction,
    stats: &LinkStats,
) {
    let (queue, mut due) = mpsc::channel::<(u64, Bytes)>(IN_FLIGHT);
    let reading = async move {
        let mut last_release = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let release = (now_ns() + delay_ns(&link)).max(last_release);
            last_release = release;
            if queue
                .send((release, Bytes::copy_from_slice(&buffer[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writing = async {
        let mut bucket = link.bandwidth.map(Bucket::new);
        let mut sent = 0u64;
        let limit = match direction {
            Direction::ToSubscriber => link.limit_data,
            Direction::ToServer => None,
        };
        let counter = match direction {
            Direction::ToServer => &stats.to_server,
            Direction::ToSubscriber => &stats.to_subscriber,
        };
        while let Some((release, mut chunk)) = due.recv().await {
            sleep_until_ns(release).await;
            if let Some(limit) = limit {
                chunk.truncate((limit - sent).min(chunk.len() as u64) as usize);
            }
            let slices = match (direction, link.slicer) {
                (Direction::ToSubscriber, Some(slicer)) => slice(chunk, slicer),
                _ => vec![(chunk, Duration::ZERO)],
            };
            for (piece, pause) in slices {
                if let Some(bucket) = bucket.as_mut() {
                    bucket.take(piece.len()).await;
                }
                if to.write_all(&piece).await.is_err() {
                    return;
                }
                sent += piece.len() as u64;
                counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
                if !pause.is_zero() {
                    sleep_until_ns(now_ns() + pause.as_nanos() as u64).await;
                }
            }
            if limit.is_some_and(|limit| sent >= limit) {
                stats.closes.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // The source closed: pass the close on, late if the link says so.
        if !link.slow_close.is_zero() {
            tokio::time::sleep(link.slow_close).await;
        }
        let _ = to.shutdown().await;
    };
    tokio::pin!(reading, writing);
    tokio::select! {
        // The source closed: the queue drains, then the writer passes the close on.
        _ = &mut reading => (&mut writing).await,
        _ = &mut writing => {}
    }
}

/// This chunk's one-way delay: `latency ± jitter`, uniform, never below zero.
fn delay_ns(link: &Link) -> u64 {
    let latency = link.latency.as_nanos() as i128;
    let jitter = link.jitter.as_nanos() as i128;
    let offset = if jitter > 0 {
        rand::rng().random_range(-jitter..=jitter)
    } else {
        0
    };
    (latency + offset).max(0) as u64
}

/// Cuts a chunk into pieces of `size ± variation` bytes, each followed by `pause`.
fn slice(
    mut chunk: Bytes,
    (size, variation, pause): (usize, usize, Duration),
) -> Vec<(Bytes, Duration)> {
    let mut pieces = Vec::new();
    let mut rng = rand::rng();
    while !chunk.is_empty() {
        let len = if variation > 0 {
            rng.random_range(size - variation..=size + variation)
        } else {
            size
        };
        pieces.push((chunk.split_to(len.clamp(1, chunk.len())), pause));
    }
    pieces
}

/// A token bucket for the bandwidth cap: a tenth of a second's worth of burst.
struct Bucket {
    rate: u64,
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            tokens: 0.0,
            at_ns: now_ns(),
        }
    }

    /// Waits until `bytes` may go (at most one burst is asked for at a time).
    async fn take(&mut self, bytes: usize) {
        let burst = (self.rate as f64 / 10.0).max(1500.0);
        let bytes = bytes as f64;
        loop {
            let now = now_ns();
            self.tokens =
                (self.tokens + (now - self.at_ns) as f64 * self.rate as f64 / 1e9).min(burst);
            self.at_ns = now;
            let wanted = bytes.min(burst);
            if self.tokens >= wanted {
                self.tokens -= bytes;
                return;
            }
            let wait = (wanted - self.tokens) / self.rate as f64;
            sleep_until_ns(now + (wait * 1e9) as u64).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts an echo-less server that sends `payload` to whoever connects, and a proxy with
    /// `link` in front of it; returns the proxy's address.
    async fn proxied(link: &str, payload: Vec<u8>) -> (SocketAddr, Arc<LinkStats>) {
        proxied_through(link, payload, Blackout::never()).await
    }

    /// As [`proxied`], with `blackout` on the link.
    async fn proxied_through(
        link: &str,
        payload: Vec<u8>,
        blackout: Blackout,
    ) -> (SocketAddr, Arc<LinkStats>) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                let payload = payload.clone();
                tokio::spawn(async move {
                    let _ = socket.write_all(&payload).await;
                    // Hold the connection until the other side closes it.
                    let mut sink = [0u8; 64];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let stats = Arc::new(LinkStats::default());
        tokio::spawn(serve(
            (proxy, Dialer::Subscriber),
            upstream,
            link.parse().unwrap(),
            Arc::clone(&stats),
            blackout,
            CancellationToken::new(),
        ));
        (addr, stats)
    }

    /// A blackout silences a connection that was flowing and closes it at its end, and a
    /// connection opened during it never reaches the server and is closed at the same end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blackout_silences_then_closes_every_connection() {
        let (switch, blackout) = Blackout::new();
        let (addr, stats) = proxied_through("latency=0ms", vec![7u8; 64], blackout).await;
        let mut before = TcpStream::connect(addr).await.unwrap();
        let mut got = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(10), before.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        let (start, end) = (now_ns(), now_ns() + 300_000_000);
        switch.strike(start, end);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut during = TcpStream::connect(addr).await.unwrap();
        let connected_before = stats.totals().connections;
        for stream in [&mut before, &mut during] {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
                .await
                .expect("the blackout closes the connection")
                .ok();
            assert!(rest.is_empty(), "nothing passes in a blackout: {rest:?}");
            assert!(now_ns() >= end, "closed only once the path came back");
        }
        assert_eq!(stats.totals().connections, connected_before);
        assert_eq!(stats.totals().closes, 2);
        // After it, connections pass again.
        let mut after = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), after.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [7u8; 64]);
    }

    /// Every byte arrives in order through latency, jitter and the slicer, and no sooner than
    /// the delay less the jitter after the connection asked (the first byte crosses the link
    /// twice: the request's connect is not delayed, the data is).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arrive_whole_in_order_and_no_sooner_than_the_delay() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let (addr, stats) = proxied(
            "latency=20ms,jitter=5ms,slicer=700,size_variation=200",
            payload.clone(),
        )
        .await;
        let started = now_ns();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut first = [0u8; 1];
        client.read_exact(&mut first).await.unwrap();
        let first_after_ms = (now_ns() - started) as f64 / 1e6;
        assert!(
            first_after_ms >= 15.0,
            "first byte after {first_after_ms} ms"
        );
        let mut rest = vec![0u8; payload.len() - 1];
        tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first[0], payload[0]);
        assert_eq!(rest, payload[1..]);
        // The writer counts a slice once its write returns, which may be after the client has
        // read it: wait (bounded) for the count to catch up rather than race it.
        let counted = async {
            while stats.totals().to_subscriber < payload.len() as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), counted)
            .await
            .ok();
        assert_eq!(stats.totals().to_subscriber, payload.len() as u64);
    }

    /// `limit_data` passes exactly that many bytes, then closes.
    #[tokio::test]
    async fn limit_data_closes_after_exactly_its_bytes() {
        let (addr, stats) = proxied("limit_data=1000", vec![9u8; 5000]).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1000);
        assert_eq!(stats.totals().closes, 1);
    }

    /// `reset_peer` resets the subscriber's connection.
    #[tokio::test]
    async fn reset_peer_resets() {
        let (addr, stats) = proxied("reset_peer=50ms", vec![1u8; 10]).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(
            ended.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionReset
        );
        assert_eq!(stats.totals().resets, 1);
    }

    /// A bandwidth cap holds the transfer to its rate: 400 KB through 8 Mbit/s (1 MB/s, with a
    /// tenth of a second's burst) take at least 0.3 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bandwidth_caps_the_rate() {
        let payload = vec![3u8; 400_000];
        let (addr, _) = proxied("bandwidth=8mbit", payload.clone()).await;
        let started = now_ns();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        let took = (now_ns() - started) as f64 / 1e9;
        assert!(took >= 0.3, "400 KB at 1 MB/s in {took:.3} s");
    }
}
