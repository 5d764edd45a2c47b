//! Latency histograms: HdrHistogram from 1 us to 60 s at 3 significant digits, their summary
//! percentiles, their portable encoding (V2 + deflate, base64) and per-second intervals.

use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency recorded, in microseconds; larger values are clamped to it.
pub const MAX_US: u64 = 60_000_000;
const DIGITS: u8 = 3;

/// An empty latency histogram with pushbench's range and precision.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_US, DIGITS).expect("valid bounds")
}

/// Microseconds from `since_ns` to `until_ns`, at least 1 (the histogram's floor) and at most
/// [`MAX_US`].
pub fn micros_between(since_ns: u64, until_ns: u64) -> u64 {
    (until_ns.saturating_sub(since_ns) / 1000).clamp(1, MAX_US)
}

/// The percentiles a report shows, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value recorded.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Summarises a histogram (all zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Encodes a histogram as HdrHistogram V2 + deflate, base64: the form other HdrHistogram tools
/// read, so results from several load hosts can be merged and re-plotted.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serialising into memory fails only on an impossible histogram.
    let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
    BASE64.encode(bytes)
}

/// Decodes [`encode`]'s output.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not HdrHistogram V2: {e:?}"))
}

/// Adds `from` into `into`; both come from [`histogram`], so the ranges always match.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// Latency per one-second interval of a run, merged across subscribers. Each subscriber keeps
/// only its current second and hands it over when the second changes, so the shared lock is
/// taken about once per subscriber per second, never per event.
#[derive(Debug)]
pub struct Intervals {
    origin_ns: u64,
    seconds: Mutex<Vec<Histogram<u64>>>,
}

/// One subscriber's current second, waiting to be handed to [`Intervals`].
#[derive(Debug, Default)]
pub struct IntervalRecorder {
    second: Option<usize>,
    current: Option<Histogram<u64>>,
}

impl Intervals {
    /// Intervals counted from `origin_ns` (monotonic).
    pub fn new(origin_ns: u64) -> Self {
        Self {
            origin_ns,
            seconds: Mutex::new(Vec::new()),
        }
    }

    /// Records one latency received at `received_ns` through `recorder`.
    pub fn record(&self, recorder: &mut IntervalRecorder, received_ns: u64, latency_us: u64) {
        let second = (received_ns.saturating_sub(self.origin_ns) / 1_000_000_000) as usize;
        if recorder.second != Some(second) {
            self.flush(recorder);
            recorder.second = Some(second);
        }
        recorder
            .current
            .get_or_insert_with(histogram)
            .saturating_record(latency_us);
    }

    /// Hands over what the recorder holds.
    pub fn flush(&self, recorder: &mut IntervalRecorder) {
        let (Some(second), Some(current)) = (recorder.second, recorder.current.as_mut()) else {
            return;
        };
        if current.is_empty() {
            return;
        }
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= second {
            seconds.push(histogram());
        }
        merge(&mut seconds[second], current);
        current.reset();
    }

    /// p50 and p99 for each second, in microseconds.
    pub fn summary(&self) -> Vec<IntervalLatency> {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        seconds
            .iter()
            .enumerate()
            .map(|(second, h)| IntervalLatency {
                second: second as u64,
                events: h.len(),
                p50_us: if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.5)
                },
                p99_us: if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.99)
                },
            })
            .collect()
    }
}

/// Latency within one second of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntervalLatency {
    /// Seconds since the run's origin.
    pub second: u64,
    /// Events received in this second.
    pub events: u64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram survives encoding, and its percentiles are what was recorded.
    #[test]
    fn encode_round_trip_and_percentiles() {
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        let p = Percentiles::of(&back);
        assert_eq!((p.p50, p.max), (500, 1000));
        assert!(decode("!!").is_err());
    }

    /// Per-second intervals land in the right second, across recorders.
    #[test]
    fn intervals_by_second() {
        let intervals = Intervals::new(0);
        let (mut a, mut b) = (IntervalRecorder::default(), IntervalRecorder::default());
        intervals.record(&mut a, 100, 10);
        intervals.record(&mut b, 200, 30);
        intervals.record(&mut a, 2_100_000_000, 500);
        intervals.flush(&mut a);
        intervals.flush(&mut b);
        let s = intervals.summary();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].events, s[1].events, s[2].events), (2, 0, 1));
        assert_eq!(s[2].p50_us, 500);
    }
}
