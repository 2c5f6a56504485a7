//! The last minute per backend, for the dashboard: sixty one-second slots of request and
//! error counts and a coarse latency histogram, written with atomics on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::routing::Side;

const SLOTS: u64 = 60;

/// Upper bounds of the latency buckets, in microseconds (the last is "slower than that").
const BOUNDS_US: [u64; 20] = [
    250,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    u64::MAX,
];

struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BOUNDS_US.len()],
}

impl Slot {
    fn new() -> Self {
        Self {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Claims the slot for `second`, clearing what an older second left in it.
    fn claim(&self, second: u64) {
        let seen = self.second.load(Ordering::Acquire);
        if seen != second
            && self
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // A request of the new second counted between the swap and here is lost: a
            // dashboard can afford that, a lock on the hot path it cannot.
            self.requests.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
            for bucket in &self.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
    }
}

pub struct Window {
    slots: [Vec<Slot>; 2],
}

/// One second of one backend.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The last minute of one backend: totals and the per-second series.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    pub request_rate: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub series: Vec<Point>,
}

fn quantile_ms(buckets: &[u64; BOUNDS_US.len()], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= wanted {
            let bound = if i + 1 == BOUNDS_US.len() {
                BOUNDS_US[i - 1]
            } else {
                BOUNDS_US[i]
            };
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

impl Window {
    pub fn new() -> Self {
        let side = || (0..SLOTS).map(|_| Slot::new()).collect();
        Self {
            slots: [side(), side()],
        }
    }

    pub fn record(&self, side: Side, second: u64, status: u16, micros: u64) {
        let slot = &self.slots[side.index()][(second % SLOTS) as usize];
        slot.claim(second);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BOUNDS_US.len() - 1);
        slot.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The minute before `now` (the current, incomplete second is left out).
    pub fn minute(&self, side: Side, now: u64) -> Minute {
        let mut series = Vec::with_capacity(SLOTS as usize);
        let mut total = [0u64; BOUNDS_US.len()];
        let (mut requests, mut errors) = (0, 0);
        for t in now.saturating_sub(SLOTS)..now {
            let slot = &self.slots[side.index()][(t % SLOTS) as usize];
            let mut buckets = [0u64; BOUNDS_US.len()];
            let (mut r, mut e) = (0, 0);
            if slot.second.load(Ordering::Acquire) == t {
                r = slot.requests.load(Ordering::Relaxed);
                e = slot.errors.load(Ordering::Relaxed);
                for (i, bucket) in slot.latency.iter().enumerate() {
                    buckets[i] = bucket.load(Ordering::Relaxed);
                    total[i] += buckets[i];
                }
            }
            requests += r;
            errors += e;
            series.push(Point {
                t,
                requests: r,
                errors: e,
                p50_ms: quantile_ms(&buckets, 0.50),
                p99_ms: quantile_ms(&buckets, 0.99),
            });
        }
        Minute {
            request_rate: requests as f64 / SLOTS as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: quantile_ms(&total, 0.50),
            p99_ms: quantile_ms(&total, 0.99),
            series,
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_counts_requests_errors_and_quantiles_per_side() {
        let window = Window::new();
        for i in 0..100 {
            window.record(
                Side::New,
                1_000,
                if i < 5 { 503 } else { 200 },
                if i < 98 { 900 } else { 40_000 },
            );
        }
        window.record(Side::Legacy, 1_000, 200, 100);
        let minute = window.minute(Side::New, 1_001);
        assert_eq!(minute.series.len(), 60);
        assert_eq!(minute.series.last().map(|p| p.requests), Some(100));
        assert!((minute.error_rate - 0.05).abs() < 1e-9);
        assert_eq!(minute.p50_ms, Some(1.0));
        assert_eq!(minute.p99_ms, Some(50.0));
        assert_eq!(
            window
                .minute(Side::Legacy, 1_001)
                .series
                .last()
                .map(|p| p.requests),
            Some(1)
        );
    }

    #[test]
    fn a_slot_is_cleared_when_its_second_comes_round_again() {
        let window = Window::new();
        window.record(Side::Legacy, 5, 200, 100);
        window.record(Side::Legacy, 65, 200, 100);
        let minute = window.minute(Side::Legacy, 66);
        assert_eq!(minute.series.iter().map(|p| p.requests).sum::<u64>(), 1);
    }
}
