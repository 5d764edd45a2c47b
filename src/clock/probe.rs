//! The clock offset between a load worker and a server on another host. The server answers
//! timed probes over UDP at its own port number; the worker sends probes one at a time and
//! keeps the round trip that took least (NTP's minimum-delay filter): the server stamped it
//! somewhere inside that round trip, so the offset it gives is off by at most half of it.
//!
//! A worker measures before the stream (the offset it corrects its clock by) and after it (what
//! is left, which is drift plus error): the stated uncertainty covers both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::now_ns;

/// What starts every probe and answer, so stray datagrams are ignored rather than answered.
const MAGIC: &[u8; 8] = b"PBCLOCK1";
/// A probe: magic and the prober's nonce.
const PROBE_LEN: usize = 16;
/// An answer: magic, the nonce echoed, the server's clock.
const ANSWER_LEN: usize = 24;
/// Probes per measurement: enough that one meets an idle path.
const PROBES: u32 = 64;
/// How long one probe waits for its answer before the next is sent.
const PROBE_WAIT: Duration = Duration::from_millis(200);
/// Pause between probes, so a burst does not queue behind itself.
const PROBE_GAP: Duration = Duration::from_millis(2);
/// Probes left unanswered before giving up on a server that answers none.
const GIVE_UP_AFTER: u64 = 10;

/// Why the offset could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The local socket failed.
    #[error("clock probe socket: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing answered.
    #[error(
        "no answer to {sent} clock probes sent to {target} over UDP (the server answers them at \
         its own port number: is UDP to that port allowed, and is it `pushbench serve`?)"
    )]
    Unanswered {
        /// Where the probes went.
        target: SocketAddr,
        /// How many were sent.
        sent: u32,
    },
}

/// Binds the server's probe socket: UDP at the address its listener took (with SO_REUSEPORT
/// when several server processes share the port, any of which may answer: they share one
/// clock).
pub fn bind_responder(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    use rustix::net::{bind, socket, sockopt, AddressFamily, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket(family, SocketType::DGRAM, None)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    bind(&fd, &addr)?;
    let socket = std::net::UdpSocket::from(fd);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// When the last probe was answered (this clock, ns; 0: none yet), so a server can stay to
/// answer a worker's last measurement after the stream.
pub type LastProbe = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Answers probes with this process's clock until `shutdown`, noting each in `last`. Anything
/// that is not a probe is dropped unanswered.
pub async fn answer_probes(socket: UdpSocket, last: LastProbe, shutdown: CancellationToken) {
    let mut buf = [0u8; 64];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP errors from an earlier answer surface here; the socket is still good.
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => return,
        };
        if len != PROBE_LEN || &buf[..8] != MAGIC {
            continue;
        }
        let mut answer = [0u8; ANSWER_LEN];
        answer[..16].copy_from_slice(&buf[..16]);
        answer[16..].copy_from_slice(&now_ns().to_be_bytes());
        let _ = socket.send_to(&answer, from).await;
        last.store(now_ns(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// One measurement: the offset the least-delayed round trip gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetSample {
    /// The server's clock minus this process's, ns.
    pub offset_ns: i64,
    /// That round trip, ns; the offset is off by at most half of it.
    pub rtt_ns: u64,
    /// Probes answered.
    pub answered: u32,
    /// Probes sent.
    pub sent: u32,
}

impl OffsetSample {
    /// How far the offset may be off: half the round trip.
    pub fn uncertainty_ns(&self) -> u64 {
        self.rtt_ns.div_ceil(2)
    }

    /// The offset given by one round trip: sent at `t0`, stamped `server` by the server,
    /// answered at `t3` (both on this clock). The server's stamp is taken somewhere in between;
    /// the midpoint is the best guess.
    fn of_round_trip(t0: u64, server: u64, t3: u64) -> (i64, u64) {
        let midpoint = (t0 as i128 + t3 as i128) / 2;
        ((server as i128 - midpoint) as i64, t3.saturating_sub(t0))
    }
}

/// Measures the offset of the server at `target` (probes sent from `bind`, when given).
pub async fn measure(target: SocketAddr, bind: Option<IpAddr>) -> Result<OffsetSample, ProbeError> {
    let local = bind.unwrap_or(match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = UdpSocket::bind((local, 0)).await?;
    socket.connect(target).await?;
    let mut best: Option<OffsetSample> = None;
    let mut answered = 0;
    let mut buf = [0u8; 64];
    for nonce in 0..u64::from(PROBES) {
        if answered == 0 && nonce == GIVE_UP_AFTER {
            return Err(ProbeError::Unanswered {
                target,
                sent: GIVE_UP_AFTER as u32,
            });
        }
        let mut probe = [0u8; PROBE_LEN];
        probe[..8].copy_from_slice(MAGIC);
        probe[8..].copy_from_slice(&nonce.to_be_bytes());
        let t0 = now_ns();
        if socket.send(&probe).await.is_err() {
            // Refused (nothing listening yet): the next probe may be answered.
            tokio::time::sleep(PROBE_GAP).await;
            continue;
        }
        let answer = tokio::time::timeout(PROBE_WAIT, async {
            loop {
                let len = socket.recv(&mut buf).await?;
                // A late answer to an earlier probe carries another nonce: not this round trip.
                if len == ANSWER_LEN && &buf[..8] == MAGIC && buf[8..16] == probe[8..] {
                    return Ok::<_, std::io::Error>((now_ns(), read_u64(&buf[16..24])));
                }
            }
        })
        .await;
        if let Ok(Ok((t3, server))) = answer {
            answered += 1;
            let (offset_ns, rtt_ns) = OffsetSample::of_round_trip(t0, server, t3);
            if best.is_none_or(|b| rtt_ns < b.rtt_ns) {
                best = Some(OffsetSample {
                    offset_ns,
                    rtt_ns,
                    answered: 0,
                    sent: 0,
                });
            }
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    let best = best.ok_or(ProbeError::Unanswered {
        target,
        sent: PROBES,
    })?;
    Ok(OffsetSample {
        answered,
        sent: PROBES,
        ..best
    })
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_be_bytes(word)
}

/// A load worker's clock against the server's over one stream: the offset measured before it
/// (and applied to every receive time), and what was left after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSync {
    /// Before the stream: its offset is the correction applied.
    pub before: OffsetSample,
    /// After the stream, on the corrected clock: its offset is what the correction missed by
    /// then (drift, or error).
    pub after: Option<OffsetSample>,
}

impl ClockSync {
    /// The correction applied to this worker's receive times, ns.
    pub fn applied_ns(&self) -> i64 {
        self.before.offset_ns
    }

    /// How far the corrected clock may have been from the server's at any point of the stream:
    /// the first measurement's error at its start; at its end, what the second found left plus
    /// its own error.
    pub fn uncertainty_ns(&self) -> u64 {
        let at_end = self
            .after
            .map_or(0, |a| a.offset_ns.unsigned_abs() + a.uncertainty_ns());
        self.before.uncertainty_ns().max(at_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The midpoint rule: a server 5 ms ahead stamped halfway through a 100 us round trip.
    #[test]
    fn a_round_trip_gives_the_offset_within_half_of_it() {
        let (offset, rtt) = OffsetSample::of_round_trip(1_000_000, 6_050_000, 1_100_000);
        assert_eq!((offset, rtt), (5_000_000, 100_000));
        // Stamped at the very start instead: still within half the round trip of the truth.
        let (offset, _) = OffsetSample::of_round_trip(1_000_000, 6_000_000, 1_100_000);
        assert!((offset - 5_000_000).unsigned_abs() <= 50_000);
    }

    /// The uncertainty covers what was left after the stream, not just the first error.
    #[test]
    fn uncertainty_covers_drift() {
        let sample = |offset_ns, rtt_ns| OffsetSample {
            offset_ns,
            rtt_ns,
            answered: 1,
            sent: 1,
        };
        let sync = ClockSync {
            before: sample(1_000, 80),
            after: Some(sample(-300, 60)),
        };
        assert_eq!(sync.applied_ns(), 1_000);
        assert_eq!(sync.uncertainty_ns(), 330);
    }

    /// A responder answers a real probe over UDP with its clock, ignores strangers, and the
    /// offset between two clocks of one host comes out within its stated uncertainty of zero.
    #[tokio::test]
    async fn probes_measure_a_shared_clock_as_zero() {
        let socket = bind_responder("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        let last = LastProbe::default();
        let task = tokio::spawn(answer_probes(socket, last.clone(), stop.clone()));
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"hello", addr).await.unwrap();
        let sample = measure(addr, None).await.unwrap();
        assert_eq!(sample.sent, PROBES);
        assert!(sample.answered > 0);
        assert!(
            sample.offset_ns.unsigned_abs() <= sample.uncertainty_ns(),
            "{sample:?}"
        );
        let mut buf = [0u8; 64];
        let silent = tokio::time::timeout(Duration::from_millis(50), stranger.recv(&mut buf));
        assert!(silent.await.is_err(), "a stranger's datagram was answered");
        assert!(last.load(std::sync::atomic::Ordering::Relaxed) > 0);
        stop.cancel();
        task.await.unwrap();
    }

    /// Nothing answering is an error that names the target and UDP.
    #[tokio::test]
    async fn silence_is_an_error() {
        let quiet = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = quiet.local_addr().unwrap();
        let error = measure(addr, None).await.unwrap_err().to_string();
        assert!(
            error.contains(&format!("{GIVE_UP_AFTER} clock probes")),
            "{error}"
        );
        assert!(
            error.contains(&addr.to_string()) && error.contains("UDP"),
            "{error}"
        );
    }
}
