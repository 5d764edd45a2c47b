//! A bad link between subscribers and the server, emulated by a TCP proxy in the Toxiproxy
//! model: the same toxics under the same names (`latency` with `jitter`, `bandwidth`,
//! `slow_close`, `timeout`, `reset_peer`, `limit_data`, `slicer`), so people who know Toxiproxy
//! read `--link latency=50ms,jitter=5ms,bandwidth=10mbit` at once. This kernel has no netem;
//! a proxy needs none.
//!
//! Why not the `noxious` crate (a Rust port of Toxiproxy): its last release is from April 2021,
//! on tokio-util 0.6 and rand 0.8, and it is built as a server driven over an HTTP API, not as
//! a library to embed. The toxics are small; they are written here, in [`proxy`].
//!
//! A link is given as comma-separated `key=value` pairs, or as a preset's name
//! ([`Link::PRESETS`]):
//!
//! - `latency=DURATION`, `jitter=DURATION`: each chunk is held `latency ± jitter` (uniform,
//!   never below zero) one way, in each direction, and never overtakes the chunk before it;
//! - `bandwidth=RATE`: each direction at most RATE, in bits per second with a `kbit`, `mbit`
//!   or `gbit` suffix (`10mbit`), or bytes with `KB/s`, `MB/s`;
//! - `slow_close=DURATION`: a close is passed on that much later;
//! - `timeout=DURATION`: that long after a connection opens, no more data passes, and the
//!   connection is closed that long again later;
//! - `reset_peer=DURATION`: that long after a connection opens, both sides are reset (RST);
//! - `limit_data=BYTES`: the connection is closed once that many bytes went to the subscriber;
//! - `slicer=BYTES`, with `size_variation=BYTES` and `slicer_delay=DURATION`: data toward the
//!   subscriber is cut into pieces of about that size, with that pause between them.
//!
//! The proxy relays bytes, not connections: a subscriber's TCP handshake with it is local, so
//! connection setup shows the link only from the first byte a transport exchanges (an HTTP
//! request, a WebSocket upgrade, the TCP floor's start frame).
//!
//! [`via`] puts a real reverse proxy (nginx) in the path instead or as well, and
//! [`packet_delay`] delays the packets themselves on a lossy link (`scripts/netns-link
//! --delay`), where the proxy's latency cannot reach.

pub mod netns;
mod nfqueue;
pub mod packet_delay;
pub mod proxy;
pub mod via;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::settings::Value;
use crate::transport::{Setting, Side};

pub use proxy::{serve, Blackout, BlackoutSwitch, Dialer, LinkStats, LinkTotals};

/// The link subscribers reach the server through.
pub static LINK: Setting<Link> = Setting {
    name: "link",
    help: "Fault: subscribers reach the server through a link emulator (a TCP proxy that `run` \
           starts; for webhooks, one in front of each consumer endpoint, which the provider \
           reaches through it), Toxiproxy's toxics as comma-separated key=value pairs \
           (latency=50ms,jitter=5ms,bandwidth=10mbit,slow_close,timeout,reset_peer,limit_data, \
           slicer) or a preset: same-datacentre, cross-region, 4g, congested-wifi (none: direct)",
    side: Side::Harness,
    default: Link::DIRECT,
    min: Link::DIRECT,
};

/// A link's toxics; [`Link::DIRECT`] has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Link {
    /// One-way delay added to every chunk, each direction.
    pub latency: Duration,
    /// Uniform spread around the delay.
    pub jitter: Duration,
    /// Each direction's rate cap, bytes per second.
    pub bandwidth: Option<u64>,
    /// How much later a close is passed on.
    pub slow_close: Duration,
    /// When a connection goes silent (then closes as long again later).
    pub timeout: Option<Duration>,
    /// When a connection is reset.
    pub reset_peer: Option<Duration>,
    /// Bytes toward the subscriber before the connection is closed.
    pub limit_data: Option<u64>,
    /// Pieces toward the subscriber: average size, variation (bytes), pause between them.
    pub slicer: Option<(usize, usize, Duration)>,
}

/// Why a link could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    /// A key that names no toxic.
    #[error("unknown link key {0:?}: expected a preset name or latency, jitter, bandwidth, slow_close, timeout, reset_peer, limit_data, slicer, size_variation, slicer_delay")]
    UnknownKey(String),
    /// A pair without `=`.
    #[error("link part {0:?} is not key=value")]
    NotAPair(String),
    /// A value its key cannot take.
    #[error("link {key}={value:?}: {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What it should have been.
        why: String,
    },
}

impl Link {
    /// No toxics: subscribers connect to the server directly.
    pub const DIRECT: Link = Link {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        bandwidth: None,
        slow_close: Duration::ZERO,
        timeout: None,
        reset_peer: None,
        limit_data: None,
        slicer: None,
    };

    /// Typical links: name, toxics, and where the figures come from.
    pub const PRESETS: &'static [(&'static str, &'static str, &'static str)] = &[
        (
            "same-datacentre",
            "latency=250us,jitter=50us",
            "a round trip of about half a millisecond inside one datacentre",
        ),
        (
            "cross-region",
            "latency=40ms,jitter=2ms",
            "a round trip of about 80 ms, as between US-East and Western Europe",
        ),
        (
            "4g",
            "latency=50ms,jitter=15ms,bandwidth=10mbit",
            "a typical LTE round trip of about 100 ms with wide jitter, 10 Mbit/s",
        ),
        (
            "congested-wifi",
            "latency=15ms,jitter=20ms,bandwidth=2mbit",
            "a crowded access point: short but very uneven delays, 2 Mbit/s",
        ),
    ];

    /// Whether this link has any toxic (`false`: connect directly).
    pub fn is_direct(&self) -> bool {
        *self == Link::DIRECT
    }

    /// The configured one-way delay (without jitter).
    pub fn one_way_delay(&self) -> Duration {
        self.latency
    }

    /// The configured jitter.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }
}

/// Reads a duration the way settings do (`50ms`, `2s`, `250us`).
fn duration(key: &str, value: &str) -> Result<Duration, LinkError> {
    <Duration as Value>::parse(value).map_err(|why| LinkError::BadValue {
        key: key.into(),
        value: value.into(),
        why,
    })
}

/// Reads a whole number of bytes.
fn count(key: &str, value: &str) -> Result<u64, LinkError> {
    value.parse::<u64>().map_err(|_| LinkError::BadValue {
        key: key.into(),
        value: value.into(),
        why: "expected a whole number of bytes".into(),
    })
}

/// Reads a rate: bits per second with a `kbit`/`mbit`/`gbit` suffix, or bytes with
/// `B/s`/`KB/s`/`MB/s`; returns bytes per second.
fn rate(key: &str, value: &str) -> Result<u64, LinkError> {
    let units: [(&str, f64); 7] = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("bit", 1.0 / 8.0),
        ("MB/s", 1e6),
        ("KB/s", 1e3),
        ("B/s", 1.0),
    ];
    let bad = |why: &str| LinkError::BadValue {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    };
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, *scale)))
        .ok_or_else(|| bad("expected a rate such as 10mbit, 500kbit or 2MB/s"))?;
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(((n * scale) as u64).max(1)),
        _ => Err(bad("expected a positive number before the unit")),
    }
}

impl FromStr for Link {
    type Err = LinkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(Link::DIRECT);
        }
        if let Some((_, spec, _)) = Link::PRESETS.iter().find(|(name, _, _)| *name == text) {
            return spec.parse();
        }
        let mut link = Link::DIRECT;
        let (mut variation, mut pause) = (0, Duration::ZERO);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| LinkError::NotAPair(part.into()))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "latency" => link.latency = duration(key, value)?,
                "jitter" => link.jitter = duration(key, value)?,
                "bandwidth" => link.bandwidth = Some(rate(key, value)?),
                "slow_close" => link.slow_close = duration(key, value)?,
                "timeout" => link.timeout = Some(duration(key, value)?),
                "reset_peer" => link.reset_peer = Some(duration(key, value)?),
                "limit_data" => link.limit_data = Some(count(key, value)?),
                "slicer" => {
                    let size = count(key, value)?.max(1) as usize;
                    link.slicer = Some((size, 0, Duration::ZERO));
                }
                "size_variation" => variation = count(key, value)? as usize,
                "slicer_delay" => pause = duration(key, value)?,
                _ => return Err(LinkError::UnknownKey(key.into())),
            }
        }
        if let Some((size, _, _)) = link.slicer {
            link.slicer = Some((size, variation.min(size - 1), pause));
        } else if variation > 0 || !pause.is_zero() {
            return Err(LinkError::BadValue {
                key: "slicer".into(),
                value: String::new(),
                why: "size_variation and slicer_delay need slicer=BYTES".into(),
            });
        }
        Ok(link)
    }
}

impl fmt::Display for Link {
    /// The canonical form: every toxic set, in a fixed order (`none` for a direct link).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_direct() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        let show = |d: Duration| <Duration as Value>::show(d);
        if !self.latency.is_zero() {
            parts.push(format!("latency={}", show(self.latency)));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("jitter={}", show(self.jitter)));
        }
        if let Some(bytes) = self.bandwidth {
            parts.push(format!("bandwidth={bytes}B/s"));
        }
        if !self.slow_close.is_zero() {
            parts.push(format!("slow_close={}", show(self.slow_close)));
        }
        if let Some(t) = self.timeout {
            parts.push(format!("timeout={}", show(t)));
        }
        if let Some(t) = self.reset_peer {
            parts.push(format!("reset_peer={}", show(t)));
        }
        if let Some(bytes) = self.limit_data {
            parts.push(format!("limit_data={bytes}"));
        }
        if let Some((size, variation, pause)) = self.slicer {
            parts.push(format!("slicer={size}"));
            if variation > 0 {
                parts.push(format!("size_variation={variation}"));
            }
            if !pause.is_zero() {
                parts.push(format!("slicer_delay={}", show(pause)));
            }
        }
        f.write_str(&parts.join(","))
    }
}

impl Value for Link {
    const KIND: &'static str = "LINK";
    // A link's toxics are comma-separated, so `run` sweeps links separated by semicolons.
    const LIST_SEPARATOR: char = ';';

    fn parse(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: LinkError| e.to_string())
    }

    fn show(self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset reads, and every link's canonical form reads back as the same link.
    #[test]
    fn presets_and_round_trips() {
        for (name, spec, _) in Link::PRESETS {
            let link: Link = name.parse().unwrap();
            assert_eq!(link, spec.parse().unwrap(), "{name}");
            assert!(!link.is_direct(), "{name}");
            assert_eq!(link.to_string().parse::<Link>().unwrap(), link, "{name}");
        }
        let full: Link = "latency=20ms,jitter=5ms,bandwidth=8mbit,slow_close=1s,timeout=3s,\
                          reset_peer=2s,limit_data=1000,slicer=64,size_variation=16,\
                          slicer_delay=10us"
            .parse()
            .unwrap();
        assert_eq!(full.bandwidth, Some(1_000_000));
        assert_eq!(full.slicer, Some((64, 16, Duration::from_micros(10))));
        assert_eq!(full.to_string().parse::<Link>().unwrap(), full);
        assert!("none".parse::<Link>().unwrap().is_direct());
    }

    /// Bad links are refused with the key and what was wrong.
    #[test]
    fn bad_links_name_the_key() {
        let error = |text: &str| text.parse::<Link>().unwrap_err().to_string();
        assert!(error("latncy=5ms").contains("unknown link key \"latncy\""));
        assert!(error("latency").contains("not key=value"));
        assert!(error("latency=fast").contains("link latency=\"fast\""));
        assert!(error("bandwidth=10").contains("expected a rate"));
        assert!(error("bandwidth=-5mbit").contains("positive number"));
        assert!(error("limit_data=1k").contains("whole number of bytes"));
        assert!(error("slicer_delay=1ms").contains("need slicer=BYTES"));
    }
}
