//! The reconnect storm: every subscriber loses its connection at the same moment and they all
//! come back at once, as after a deploy (`close`: the server cuts every connection, in
//! [`super::listener`]) or a network blip (`blackhole`: the path goes silent, then the
//! middlebox that lost its state closes what went through it; `run`'s link emulator does that).
//! Declared once here for every transport whose subscribers hold a connection they resume; what
//! the storm cost is read from the subscribers' reconnections (`metrics::storm`).

use std::time::Duration;

use super::{Setting, Side};
use crate::settings::Value;

/// When the storm strikes, counted from the stream's first event.
pub static STORM_AFTER: Setting<Duration> = Setting {
    name: "storm-after",
    help: "Fault: a reconnect storm this long after the stream begins, of --storm-kind: every \
           subscriber loses its connection at once and they all come back and resume (0s: none)",
    side: Side::Server,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// What the storm does.
pub static STORM_KIND: Setting<StormKind> = Setting {
    name: "storm-kind",
    help: "close: the server cuts every connection at once, as a deploy does; blackhole: the \
           path passes nothing for --storm-length (only keep-alives and timeouts notice), then \
           every connection through it is closed, as a blip that cost a NAT or load balancer \
           its state (made by `run`'s link emulator)",
    side: Side::Server,
    default: StormKind::Close,
    min: StormKind::Close,
};

/// How long a blackhole storm keeps the path silent.
pub static STORM_LENGTH: Setting<Duration> = Setting {
    name: "storm-length",
    help: "How long the path stays silent in a --storm-kind blackhole storm",
    side: Side::Server,
    default: Duration::from_secs(2),
    min: Duration::ZERO,
};

/// How every subscriber loses its connection in a storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum StormKind {
    /// The server cuts every connection at once.
    Close,
    /// The path goes silent, then closes every connection through it.
    Blackhole,
}

impl Value for StormKind {
    const KIND: &'static str = "close|blackhole";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "close" => Ok(StormKind::Close),
            "blackhole" => Ok(StormKind::Blackhole),
            other => Err(format!(
                "unknown storm kind {other:?}: expected close or blackhole"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            StormKind::Close => "close",
            StormKind::Blackhole => "blackhole",
        }
        .into()
    }
}

/// The storm the settings ask for: its kind, when it strikes past the stream's start, and how
/// long the path stays silent (zero for `close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storm {
    /// What it does.
    pub kind: StormKind,
    /// When it strikes, past the stream's first event.
    pub after: Duration,
    /// How long the path stays silent (blackhole).
    pub length: Duration,
}

impl Storm {
    /// The storm planned by `settings`, if any.
    pub fn planned(settings: &super::SettingValues) -> Option<Self> {
        let after = STORM_AFTER.read(settings);
        if after.is_zero() {
            return None;
        }
        let kind = STORM_KIND.read(settings);
        let length = match kind {
            StormKind::Close => Duration::ZERO,
            StormKind::Blackhole => STORM_LENGTH.read(settings),
        };
        Some(Self {
            kind,
            after,
            length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written() {
        for kind in [StormKind::Close, StormKind::Blackhole] {
            assert_eq!(StormKind::parse(&kind.show()), Ok(kind));
        }
        assert!(StormKind::parse("flood")
            .unwrap_err()
            .contains("close or blackhole"));
    }
}
