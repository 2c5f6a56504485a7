//! Synthetic traffic for the judge's and the simulation's tests: one backend's behaviour as a
//! 5xx share and log-normal latencies, drawn from a seeded RNG.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;

/// A backend: a 5xx share and latencies of median `median_ms` and log spread `sigma`.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub error_rate: f64,
    pub median_ms: f64,
    pub sigma: f64,
}

/// The legacy backend of the tests: 0.5 % 5xx, 40 ms median.
pub const LEGACY: Traffic = Traffic {
    error_rate: 0.005,
    median_ms: 40.0,
    sigma: 0.5,
};

impl Traffic {
    pub fn with_error_rate(self, error_rate: f64) -> Self {
        Self { error_rate, ..self }
    }

    /// The same errors, every latency `factor` times as long (so the median too).
    pub fn slower(self, factor: f64) -> Self {
        Self {
            median_ms: self.median_ms * factor,
            ..self
        }
    }

    /// One response: its status and latency.
    pub fn response<R: Rng + ?Sized>(&self, rng: &mut R) -> (StatusCode, Duration) {
        let status = if rng.random_bool(self.error_rate) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        let latency_ms = self.median_ms * (self.sigma * standard_normal(rng)).exp();
        (status, Duration::from_secs_f64(latency_ms / 1_000.0))
    }
}

/// Box–Muller: rand 0.9 without rand_distr has no normal distribution.
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1], so ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
