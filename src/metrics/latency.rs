//! Latency histograms: HdrHistogram from 1 us to 60 s at 3 significant digits, their summary
//! percentiles, their portable encoding (V2 + deflate, base64) and per-second intervals (as
//! HdrHistogram interval logs).

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

/// Largest decompressed histogram body accepted: far above what [`histogram`]'s bounds need
/// (a few KB), far below what would hurt.
const MAX_BODY_BYTES: u32 = 4 << 20;

/// Checks a V2 + deflate histogram's header before it is decoded: a results file is input, and
/// a crafted one could otherwise ask for gigabytes (a huge value range, precision or body
/// length). Accepts what [`histogram`] and [`encode`] produce: values within 1..=MAX_US, at
/// most [`DIGITS`] significant digits.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    use std::io::Read as _;
    let bad = |why: String| Err(format!("histogram refused: {why}"));
    let Some(compressed) = bytes.get(8..) else {
        return bad("shorter than its header".into());
    };
    // V2 header: cookie, body length, normalizing offset, significant digits (4 bytes each),
    // lowest and highest trackable value (8 bytes each), conversion ratio (8 bytes).
    let mut header = [0u8; 40];
    if flate2::read::ZlibDecoder::new(compressed)
        .read_exact(&mut header)
        .is_err()
    {
        return bad("its deflated header cannot be read".into());
    }
    let u32_at = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().unwrap_or_default());
    let u64_at = |i: usize| u64::from_be_bytes(header[i..i + 8].try_into().unwrap_or_default());
    let (body, digits, lowest, highest) = (u32_at(4), u32_at(12), u64_at(16), u64_at(24));
    if body > MAX_BODY_BYTES {
        return bad(format!("a body of {body} bytes (at most {MAX_BODY_BYTES})"));
    }
    if digits > u32::from(DIGITS) || lowest < 1 || highest > MAX_US {
        return bad(format!(
            "range {lowest}..={highest} at {digits} digits, beyond pushbench's 1..={MAX_US} at \
             {DIGITS}"
        ));
    }
    Ok(())
}

/// Decodes [`encode`]'s output, refusing a histogram whose header asks for more than
/// pushbench's own bounds.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    check_header(&bytes)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not HdrHistogram V2: {e:?}"))
}

/// Adds `from` into `into`; both come from [`histogram`], so the ranges always match.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// p50 and p99 for each second of a run, from its per-second histograms.
pub fn interval_summary(seconds: &[Histogram<u64>]) -> Vec<IntervalLatency> {
    let at = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    seconds
        .iter()
        .enumerate()
        .map(|(second, h)| IntervalLatency {
            second: second as u64,
            events: h.len(),
            p50_us: at(h, 0.5),
            p99_us: at(h, 0.99),
        })
        .collect()
}

/// Writes per-second histograms in HdrHistogram's standard interval-log format (the `.hlog`
/// that HistogramLogAnalyzer, HistogramLogProcessor and hdr-plot read): one line per second,
/// timestamps in seconds from `start` (written as the log's StartTime and BaseTime), values in
/// microseconds (a max-value divisor of 1000 shows milliseconds in those tools).
pub fn write_interval_log(
    out: &mut impl std::io::Write,
    start: std::time::SystemTime,
    comment: &str,
    seconds: &[Histogram<u64>],
) -> std::io::Result<()> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(out, &mut serializer)?;
    for (second, h) in seconds.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        log.write_histogram(
            h,
            std::time::Duration::from_secs(second as u64),
            std::time::Duration::from_secs(1),
            None,
        )
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
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

    /// A histogram wider or finer than pushbench's own is refused before it is decoded (a
    /// crafted results file could otherwise ask for gigabytes); pushbench's round-trip, and so
    /// does a batch histogram; bytes that are not one are refused too.
    #[test]
    fn crafted_histograms_are_refused() {
        let mut ours = histogram();
        ours.record(1234).unwrap();
        assert_eq!(decode(&encode(&ours)).unwrap(), ours);
        let batches = Histogram::<u64>::new_with_bounds(1, 1 << 20, 2).unwrap();
        assert!(decode(&encode(&batches)).is_ok());
        let wide = Histogram::<u64>::new_with_bounds(1, 1 << 40, 5).unwrap();
        let error = decode(&encode(&wide)).unwrap_err();
        assert!(error.contains("beyond pushbench's"), "{error}");
        assert!(decode(&BASE64.encode(b"short"))
            .unwrap_err()
            .contains("refused"));
        assert!(decode("not base64!").is_err());
    }

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

    /// Per-second summaries follow the histograms, and the interval log parses back with one
    /// histogram per non-empty second at its offset.
    #[test]
    fn intervals_summarise_and_log() {
        let mut seconds = vec![histogram(), histogram(), histogram()];
        seconds[0].record(10).unwrap();
        seconds[0].record(30).unwrap();
        seconds[2].record(500).unwrap();
        let s = interval_summary(&seconds);
        assert_eq!((s[0].events, s[1].events, s[2].events), (2, 0, 1));
        assert_eq!(s[2].p50_us, 500);
        let mut log = Vec::new();
        write_interval_log(&mut log, std::time::UNIX_EPOCH, "test", &seconds).unwrap();
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let starts: Vec<u64> = IntervalLogIterator::new(&log)
            .filter_map(|entry| match entry {
                Ok(LogEntry::Interval(h)) => Some(h.start_timestamp().as_secs()),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [0, 2]);
    }
}

/// How late the publisher sent events against their schedule: the harness's own share of every
/// latency, shown so a reader can subtract it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Lateness {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
}

impl Lateness {
    pub(crate) fn of(ns: &Histogram<u64>) -> Option<Self> {
        (!ns.is_empty()).then(|| Self {
            p50_us: ns.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: ns.value_at_quantile(0.99) as f64 / 1e3,
            max_us: ns.max() as f64 / 1e3,
        })
    }
}
