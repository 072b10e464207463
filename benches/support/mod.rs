//! Helpers shared by the benchmarks.

use std::time::Duration;

/// The `pct` percentile of `samples` (nearest rank).
pub fn percentile(samples: &[Duration], pct: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((pct / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A duration in microseconds, for the tables.
pub fn us(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

/// This process's resident memory in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    status_kib("self", "VmRSS")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, ...) of `pid` (or `"self"`); 0 when
/// the process or field is gone.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
