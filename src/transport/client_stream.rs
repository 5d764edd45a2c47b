//! A subscriber's connection as every client opens it ([`super::Dialer::connect`]): a
//! `TcpStream` ([`ThrottledStream`]), under TLS when it is on ([`ClientStream`]), read no
//! faster than a set rate when the subscriber is the slow consumer of the slow-consumer fault. Throttling the reads, below every transport's client, makes the
//! backpressure reach the server exactly as it would from a consumer that cannot keep up: the
//! kernel's buffers fill, then the server's writes wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{Setting, Side};
use crate::clock::now_ns;

/// The slow-consumer fault: how fast the slow subscriber reads, as a share of the stream.
pub static SLOW_CONSUMER: Setting<u64> = Setting {
    name: "slow-consumer",
    help: "Fault: one subscriber (the first) reads at this percentage of the stream's byte rate \
           (its payloads plus 100 B per event for envelope and framing), so the server's \
           buffers for it fill; the others' latency is recorded apart from it (0: none)",
    side: Side::Client,
    default: 0,
    min: 0,
};

/// Bytes per event on the wire beyond the payload, for the slow consumer's rate: the JSON
/// envelope (about 70 B) and a transport's framing.
const ENVELOPE_ESTIMATE: u64 = 100;

/// The slow consumer's read rate, bytes per second, for a stream of `events` events carrying
/// `payload_bytes` in all at `events_per_sec`; `None` without the fault or a schedule.
pub fn slow_read_rate(
    percent: u64,
    events: u64,
    payload_bytes: u64,
    events_per_sec: Option<f64>,
) -> Option<u64> {
    let rate = events_per_sec.filter(|_| percent > 0 && events > 0)?;
    let bytes_per_event = payload_bytes as f64 / events as f64 + ENVELOPE_ESTIMATE as f64;
    Some(((bytes_per_event * rate * percent as f64 / 100.0) as u64).max(1))
}

/// A subscriber's connection: TCP, reads optionally capped at a rate, under TLS when it is on.
/// The cap acts below TLS, on the bytes the kernel holds, where backpressure is.
pub type ClientStream = super::tls::ClientTls<ThrottledStream>;

/// A subscriber's TCP connection (or another byte stream: a QUIC stream), reads optionally
/// capped at a rate.
#[derive(Debug)]
pub struct ThrottledStream<S = TcpStream> {
    inner: S,
    throttle: Option<Throttle>,
}

impl<S> ThrottledStream<S> {
    /// Wraps a connected stream; with `read_rate`, reads never pass that many bytes per second.
    pub fn new(inner: S, read_rate: Option<u64>) -> Self {
        Self {
            inner,
            throttle: read_rate.map(Throttle::new),
        }
    }
}

/// A token bucket over reads: `allowance` bytes may be read now; it refills at `rate` bytes per
/// second up to a tenth of a second's worth.
#[derive(Debug)]
struct Throttle {
    rate: u64,
    allowance: f64,
    refilled_ns: u64,
    /// Where a capped read lands before it is handed on.
    scratch: Vec<u8>,
    /// The wait for the bucket to refill.
    wait: Option<Pin<Box<Sleep>>>,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            allowance: 0.0,
            refilled_ns: now_ns(),
            scratch: Vec::new(),
            wait: None,
        }
    }

    /// The bucket's size: a tenth of a second of reading, at least one small packet.
    fn burst(&self) -> f64 {
        (self.rate as f64 / 10.0).max(1500.0)
    }

    fn refill(&mut self) {
        let now = now_ns();
        let earned = (now - self.refilled_ns) as f64 * self.rate as f64 / 1e9;
        self.allowance = (self.allowance + earned).min(self.burst());
        self.refilled_ns = now;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ThrottledStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(throttle) = this.throttle.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if let Some(wait) = throttle.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                throttle.wait = None;
            }
            throttle.refill();
            if throttle.allowance >= 1.0 {
                break;
            }
            // Wait until a packet's worth (or the bucket, if smaller) has been earned.
            let wanted = throttle.burst().min(1500.0) - throttle.allowance;
            let secs = wanted / throttle.rate as f64;
            throttle.wait = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(secs))));
        }
        let limit = (throttle.allowance as usize).min(buf.remaining());
        throttle.scratch.resize(limit, 0);
        let mut capped = ReadBuf::new(&mut throttle.scratch);
        match Pin::new(&mut this.inner).poll_read(cx, &mut capped) {
            Poll::Ready(Ok(())) => {
                let read = capped.filled();
                throttle.allowance -= read.len() as f64;
                buf.put_slice(read);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ThrottledStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The rate follows the stream: 64 B payloads plus the envelope estimate, 1,000 ev/s, half.
    #[test]
    fn rate_follows_the_stream() {
        assert_eq!(slow_read_rate(50, 10, 640, Some(1000.0)), Some(82_000));
        assert_eq!(slow_read_rate(0, 10, 640, Some(1000.0)), None);
        assert_eq!(slow_read_rate(50, 10, 640, None), None);
    }

    /// A throttled reader gets every byte, in order, and no sooner than its rate allows
    /// (a lower bound on the time taken, which no busy machine can break).
    #[tokio::test]
    async fn throttled_reads_are_complete_and_no_faster_than_the_rate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        let to_send = sent.clone();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(&to_send).await.unwrap();
        });
        let rate = 100_000; // 60 KB at 100 KB/s, burst 10 KB: at least 0.5 s
        let mut stream = ThrottledStream::new(TcpStream::connect(addr).await.unwrap(), Some(rate));
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        let took = started.elapsed().as_secs_f64();
        server.await.unwrap();
        assert_eq!(received, sent);
        let burst = rate as f64 / 10.0;
        assert!(
            took >= (sent.len() as f64 - burst) / rate as f64 * 0.95,
            "read {} B in {took:.3} s at {rate} B/s",
            sent.len()
        );
    }
}
