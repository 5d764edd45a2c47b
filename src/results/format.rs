//! Numbers for people, one way everywhere: microseconds in the readable unit, counts with
//! thousands separators, bytes in B/KB/MB. The table, the report, `compare` and `recommend`
//! all format through here.

/// Microseconds shown in the most readable unit; at the histograms' ceiling, as a bound.
pub fn micros(us: u64) -> String {
    match us {
        // Latencies are clamped to the histogram's range: the true value is at least this.
        _ if us >= crate::metrics::latency::MAX_US => {
            format!("≥{}s", crate::metrics::latency::MAX_US / 1_000_000)
        }
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// A count with thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate (per second): thousands separators, and below 10 its fraction too (up to two
/// places, trailing zeros dropped), so half an event a second does not read as none.
pub fn rate(value: f64) -> String {
    if value >= 10.0 || value.fract() == 0.0 {
        return thousands(value);
    }
    let shown = format!("{:.2}", value.max(0.0));
    shown
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// Bytes in the most readable unit.
pub fn bytes(value: f64) -> String {
    match value {
        v if v < 1e3 => format!("{v:.0}B"),
        v if v < 1e6 => format!("{:.1}KB", v / 1e3),
        v => format!("{:.1}MB", v / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units and separators.
    #[test]
    fn formats() {
        assert_eq!(micros(75), "75us");
        assert_eq!(micros(1_500), "1.50ms");
        assert_eq!(micros(60_030_000), "≥60s");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(1.0 / 3.0), "0.33");
        assert_eq!(rate(3.0), "3");
        assert_eq!(rate(12_500.4), "12,500");
        assert_eq!(bytes(6400.0), "6.4KB");
    }
}
