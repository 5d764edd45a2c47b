//! The webhook provider's retry schedule: exponential backoff with jitter, or Standard Webhooks' own.

use std::time::Duration;

use crate::transport::{Setting, SettingValues, Side};

use super::ATTEMPTS;

/// The ceiling of the wait before the first retry.
pub static RETRY_BASE: Setting<Duration> = Setting {
    name: "webhook-retry-base",
    help: "Ceiling of the random wait before the provider's first retry of an event",
    side: Side::Server,
    default: Duration::from_millis(50),
    min: Duration::ZERO,
};

/// How the ceiling grows from one retry to the next.
pub static RETRY_FACTOR: Setting<u64> = Setting {
    name: "webhook-retry-factor",
    help: "Factor the retry wait's ceiling grows by with each further attempt",
    side: Side::Server,
    default: 2,
    min: 1,
};

/// The ceiling never grows past this.
pub static RETRY_CAP: Setting<Duration> = Setting {
    name: "webhook-retry-cap",
    help: "Largest ceiling of the random wait between retries",
    side: Side::Server,
    default: Duration::from_secs(5),
    min: Duration::ZERO,
};

/// Which retry schedule the provider follows.
pub static RETRY_SCHEDULE: Setting<RetryKind> = Setting {
    name: "webhook-retry-schedule",
    help: "exponential: backoff with full jitter from --webhook-retry-base by \
           --webhook-retry-factor up to --webhook-retry-cap, --webhook-attempts in all; \
           standard-webhooks: the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, \
           10 h, 10 h after the first attempt) scaled down a thousandfold for benchmarks",
    side: Side::Server,
    default: RetryKind::Exponential,
    min: RetryKind::Exponential,
};

/// The kinds of retry schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum RetryKind {
    /// Exponential backoff with full jitter, configured by the other retry settings.
    Exponential,
    /// The Standard Webhooks schedule, a thousand times faster.
    StandardWebhooks,
}

impl crate::settings::Value for RetryKind {
    const KIND: &'static str = "exponential|standard-webhooks";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "exponential" => Ok(RetryKind::Exponential),
            "standard-webhooks" => Ok(RetryKind::StandardWebhooks),
            other => Err(format!(
                "unknown retry schedule {other:?}: expected exponential or standard-webhooks"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            RetryKind::Exponential => "exponential",
            RetryKind::StandardWebhooks => "standard-webhooks",
        }
        .into()
    }
}

/// The Standard Webhooks retry schedule, seconds after the attempt before, for each retry.
pub(super) const STANDARD_WEBHOOKS_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/// How much faster than the real one the benchmark runs the Standard Webhooks schedule.
pub(super) const STANDARD_WEBHOOKS_SCALE: u32 = 1000;

/// The provider's retry schedule: exponential backoff with full jitter (a random wait up to a
/// ceiling that grows by `factor` from `base` to `cap`), `attempts` in all; or the Standard
/// Webhooks schedule, scaled down, its 8 attempts in all.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    kind: RetryKind,
    pub(super) attempts: u32,
    base: Duration,
    factor: u32,
    cap: Duration,
}

impl Schedule {
    pub(super) fn of(settings: &SettingValues) -> Self {
        let kind = RETRY_SCHEDULE.read(settings);
        let attempts = match kind {
            RetryKind::Exponential => u32::try_from(ATTEMPTS.read(settings)).unwrap_or(u32::MAX),
            RetryKind::StandardWebhooks => STANDARD_WEBHOOKS_SECS.len() as u32 + 1,
        };
        Self {
            kind,
            attempts,
            base: RETRY_BASE.read(settings),
            factor: u32::try_from(RETRY_FACTOR.read(settings)).unwrap_or(u32::MAX),
            cap: RETRY_CAP.read(settings),
        }
    }

    /// The ceiling of the wait before attempt `attempt` (1 for the first retry); for the
    /// Standard Webhooks schedule, the wait itself.
    pub(super) fn ceiling(&self, attempt: u32) -> Duration {
        if self.kind == RetryKind::StandardWebhooks {
            let index = (attempt.max(1) as usize - 1).min(STANDARD_WEBHOOKS_SECS.len() - 1);
            return Duration::from_secs(STANDARD_WEBHOOKS_SECS[index]) / STANDARD_WEBHOOKS_SCALE;
        }
        let growth = f64::from(self.factor).powi(attempt.saturating_sub(1).min(64) as i32);
        self.base.mul_f64(growth.min(1e9)).min(self.cap)
    }

    /// The most all retries of one event can wait in all: the sum of the ceilings (with full
    /// jitter the waits are random below them, so half that on average).
    pub(super) fn span(&self) -> Duration {
        (1..self.attempts.max(1))
            .map(|attempt| self.ceiling(attempt))
            .sum()
    }

    /// A random wait up to the ceiling ("full jitter"), so retries from many endpoints spread
    /// out instead of arriving together; the Standard Webhooks schedule's fixed wait.
    pub(super) fn delay(&self, attempt: u32) -> Duration {
        match self.kind {
            RetryKind::Exponential => self.ceiling(attempt).mul_f64(rand::random::<f64>()),
            RetryKind::StandardWebhooks => self.ceiling(attempt),
        }
    }
}

/// The longest the provider keeps retrying one event under `settings` (see
/// [`Redelivery::Retries`]).
pub(super) fn retry_span(settings: &SettingValues) -> Duration {
    Schedule::of(settings).span()
}

// ---------------------------------------------------------------------------------------------
// Provider (server side)

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks schedule, scaled down a thousandfold: 8 attempts, fixed waits of
    /// 5 ms to 36 s, spanning 99.3 s (27.6 h unscaled).
    #[test]
    fn standard_webhooks_schedule() {
        let schedule = Schedule::of(&SettingValues::from_pairs([
            RETRY_SCHEDULE.set(RetryKind::StandardWebhooks)
        ]));
        assert_eq!(schedule.attempts, 8);
        assert_eq!(schedule.delay(1), Duration::from_millis(5));
        assert_eq!(schedule.delay(7), Duration::from_secs(36));
        assert_eq!(schedule.span(), Duration::from_millis(99_305));
    }

    /// The schedule's ceilings grow by the factor up to the cap; each wait stays under its
    /// ceiling.
    #[test]
    fn retry_delays_grow_with_jitter() {
        let schedule = Schedule::of(&SettingValues::from_pairs([
            RETRY_BASE.set(Duration::from_millis(100)),
            RETRY_FACTOR.set(3),
            RETRY_CAP.set(Duration::from_secs(1)),
        ]));
        assert_eq!(schedule.ceiling(1), Duration::from_millis(100));
        assert_eq!(schedule.ceiling(3), Duration::from_millis(900));
        assert_eq!(schedule.ceiling(30), Duration::from_secs(1));
        for attempt in 1..10 {
            assert!(schedule.delay(attempt) <= schedule.ceiling(attempt));
        }
    }
}
