//! Operator endpoints: `/healthz` (the process is alive), `/readyz` (it can serve: the
//! database answers and it is not shutting down) and `/metrics` (Prometheus text format).
//!
//! The metrics are a handful of atomics updated on the paths they describe, rendered by
//! hand: no dependency, and nothing on a hot path beyond an atomic add. Histograms have
//! fixed buckets in seconds.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use app::protocol::ErrorCode;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Microseconds.
    sum: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every error code a refusal can carry, for one counter each.
const CODES: [ErrorCode; 14] = [
    ErrorCode::InvalidName,
    ErrorCode::NameTaken,
    ErrorCode::InvalidRoom,
    ErrorCode::Empty,
    ErrorCode::TooLong,
    ErrorCode::NotJoined,
    ErrorCode::BadRequest,
    ErrorCode::RateLimited,
    ErrorCode::Unavailable,
    ErrorCode::NotFound,
    ErrorCode::NotYours,
    ErrorCode::Gone,
    ErrorCode::LimitReached,
    ErrorCode::Unknown,
];

#[derive(Default)]
pub struct Metrics {
    /// Changes committed, by kind: messages, then edits, deletes and reactions together.
    pub messages_stored: AtomicU64,
    pub changes_stored: AtomicU64,
    refused: [AtomicU64; CODES.len()],
    /// From a message's arrival to its ack being handed to the connection.
    pub ack_latency: Histogram,
    /// One `append` of a batch.
    pub storage_latency: Histogram,
    /// From a change's commit on another node to its delivery here.
    pub bus_latency: Histogram,
    pub slow_consumers: AtomicU64,
}

/// Connections disconnected for flooding; a static, as requests are counted before
/// they reach the shared state.
pub static FLOODERS: AtomicU64 = AtomicU64::new(0);

impl Metrics {
    pub fn refused(&self, code: ErrorCode) {
        if let Some(index) = CODES.iter().position(|c| *c == code) {
            self.refused[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text format, with the gauges the caller reads at the time.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "banter_messages_stored_total",
                "Messages committed.",
                &self.messages_stored,
            ),
            (
                "banter_changes_stored_total",
                "Edits, deletes and reactions committed.",
                &self.changes_stored,
            ),
            (
                "banter_slow_consumers_total",
                "Connections cut loose for not reading.",
                &self.slow_consumers,
            ),
            (
                "banter_flooders_total",
                "Connections disconnected for flooding.",
                &FLOODERS,
            ),
        ];
        for (name, help, counter) in counters {
            let value = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let name = "banter_requests_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused, by error code.\n# TYPE {name} counter"
        );
        for (code, count) in CODES.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "{name}{{code=\"{code}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        self.ack_latency.render(
            &mut out,
            "banter_ack_latency_seconds",
            "From a message's arrival to its acknowledgement.",
        );
        self.storage_latency.render(
            &mut out,
            "banter_storage_append_seconds",
            "One batch committed to storage.",
        );
        self.bus_latency.render(
            &mut out,
            "banter_bus_latency_seconds",
            "From a change's commit on another node to its delivery on this one.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_refusals_are_by_code() {
        let metrics = Metrics::default();
        metrics.ack_latency.observe(Duration::from_micros(300));
        metrics.ack_latency.observe(Duration::from_millis(30));
        metrics.refused(ErrorCode::RateLimited);
        let text = metrics.render(&[("banter_connections", "Open connections.", 3)]);
        assert!(text.contains("banter_connections 3"));
        assert!(text.contains("banter_ack_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("banter_ack_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("banter_ack_latency_seconds_count 2"));
        assert!(text.contains("banter_requests_refused_total{code=\"rate_limited\"} 1"));
    }
}
