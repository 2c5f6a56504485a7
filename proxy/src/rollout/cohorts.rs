//! The judge's two cohorts, collected on the request path: the canary (requests whose bucket
//! new holds) and the baseline (legacy requests from the equally wide bucket range just above,
//! `judge::baseline_buckets`). Which cohort a request joins is decided when it is routed,
//! with the weight in force then, by `membership`, a pure function; `Collector` counts the
//! answer when the request ends and hands the interval's counts to the controller.
//!
//! Requests forced by the override header say nothing about the users' mix and are left out;
//! so are requests sent to the other side because the health checks found their side down
//! (the controller learns that from the health checks, not from a sample).

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use rand::Rng;

use super::judge::{self, Cohort};
use super::metrics::CohortSeries;
use crate::metrics::RouteLabel;
use crate::routing::Side;

/// Latencies kept per route per cohort: smaller than the overall sample, which is what the
/// overall verdict rests on, so the per-route samples stay bounded at a few kilobytes.
pub const ROUTE_LATENCY_SAMPLE_CAPACITY: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    Canary,
    Baseline,
}

impl CohortKind {
    pub const ALL: [CohortKind; 2] = [CohortKind::Canary, CohortKind::Baseline];

    pub(crate) fn index(self) -> usize {
        match self {
            CohortKind::Canary => 0,
            CohortKind::Baseline => 1,
        }
    }

    /// The `cohort` label of the exported series.
    pub fn label(self) -> &'static str {
        match self {
            CohortKind::Canary => "canary",
            CohortKind::Baseline => "baseline",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.label() == label)
    }
}

/// How a request was routed, as far as the cohorts care.
#[derive(Debug, Clone, Copy)]
pub struct Routed {
    pub bucket: u16,
    /// The side its bucket belongs to with both backends up.
    pub preferred: Side,
    /// The override header chose the side.
    pub forced: bool,
    /// The health checks sent it to the other side.
    pub failover: bool,
    /// `routing.new_percent` in force, in basis points.
    pub new_basis_points: u32,
}

/// The cohort a request belongs to, if any.
pub fn membership(routed: Routed) -> Option<CohortKind> {
    if routed.forced || routed.failover {
        return None;
    }
    match routed.preferred {
        Side::New => Some(CohortKind::Canary),
        Side::Legacy => judge::baseline_buckets(routed.new_basis_points)
            .contains(&u32::from(routed.bucket))
            .then_some(CohortKind::Baseline),
    }
}

/// What one evaluation interval collected: both cohorts overall and per route.
#[derive(Debug, Clone)]
pub struct IntervalSample {
    overall: [Cohort; 2],
    routes: Vec<[Cohort; 2]>,
}

impl Default for IntervalSample {
    fn default() -> Self {
        let route = || Cohort::with_latency_capacity(ROUTE_LATENCY_SAMPLE_CAPACITY);
        Self {
            overall: [Cohort::default(), Cohort::default()],
            routes: (0..RouteLabel::COUNT).map(|_| [route(), route()]).collect(),
        }
    }
}

impl IntervalSample {
    /// A sample counted elsewhere: each route's canary and baseline (in `RouteLabel` order)
    /// and the two cohorts overall.
    pub fn counted(overall: [Cohort; 2], routes: Vec<[Cohort; 2]>) -> Self {
        Self { overall, routes }
    }

    /// Counts one answer: `status` is what the client got, except that a request its side
    /// failed and the other side then answered counts as that side's server error.
    pub fn record(
        &mut self,
        kind: CohortKind,
        route: RouteLabel,
        status: StatusCode,
        latency: Duration,
    ) {
        self.record_with(kind, route, status, latency, &mut rand::rng());
    }

    /// As `record`, with the latency samples' random choices drawn from `rng`: a seeded
    /// `rng` makes a simulated interval, and so a simulated rollout, reproducible.
    pub(crate) fn record_with<R: Rng + ?Sized>(
        &mut self,
        kind: CohortKind,
        route: RouteLabel,
        status: StatusCode,
        latency: Duration,
        rng: &mut R,
    ) {
        self.overall[kind.index()].record(status, latency, rng);
        if let Some(cohorts) = self.routes.get_mut(route.index()) {
            cohorts[kind.index()].record(status, latency, rng);
        }
    }

    pub fn canary(&self) -> &Cohort {
        &self.overall[CohortKind::Canary.index()]
    }

    pub fn baseline(&self) -> &Cohort {
        &self.overall[CohortKind::Baseline.index()]
    }

    /// Each route that saw a request in either cohort, with its canary and baseline.
    pub fn routes(&self) -> impl Iterator<Item = (RouteLabel, &Cohort, &Cohort)> {
        RouteLabel::all()
            .zip(&self.routes)
            .filter(|(_, [canary, baseline])| canary.requests() + baseline.requests() > 0)
            .map(|(route, [canary, baseline])| (route, canary, baseline))
    }
}

/// The running interval's sample, shared by the request path (which records) and the
/// controller (which takes it once per interval); each answer is also counted in the
/// exported cohort series, which a controller judging the whole fleet reads from Prometheus.
#[derive(Default)]
pub struct Collector {
    interval: Mutex<IntervalSample>,
    exported: Option<CohortSeries>,
}

impl Collector {
    /// A collector that also counts every answer in `series`.
    pub fn exporting(series: CohortSeries) -> Self {
        Self {
            interval: Mutex::default(),
            exported: Some(series),
        }
    }

    pub fn record(
        &self,
        kind: CohortKind,
        route: RouteLabel,
        status: StatusCode,
        latency: Duration,
    ) {
        if let Some(series) = &self.exported {
            series.record(kind, route, status, latency);
        }
        self.lock().record(kind, route, status, latency);
    }

    /// The interval's sample, leaving an empty one for the next. The fresh sample is built
    /// before the lock is taken, so the request path never waits on its allocation.
    pub fn take(&self) -> IntervalSample {
        let fresh = IntervalSample::default();
        std::mem::replace(&mut *self.lock(), fresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IntervalSample> {
        // A panic while recording leaves counts, not broken invariants: carry on.
        self.interval
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::routing::{self, RouteInput};

    fn routed(bucket: u16, new_basis_points: u32) -> Routed {
        let route = routing::route(RouteInput {
            bucket,
            new_basis_points,
            forced: None,
            legacy_up: true,
            new_up: true,
        })
        .unwrap();
        Routed {
            bucket,
            preferred: route.preferred,
            forced: false,
            failover: false,
            new_basis_points,
        }
    }

    #[test]
    fn the_canary_is_new_and_the_baseline_the_equally_wide_range_above() {
        // 5 %: new holds buckets [0, 500), the baseline is [500, 1000).
        assert_eq!(membership(routed(0, 500)), Some(CohortKind::Canary));
        assert_eq!(membership(routed(499, 500)), Some(CohortKind::Canary));
        assert_eq!(membership(routed(500, 500)), Some(CohortKind::Baseline));
        assert_eq!(membership(routed(999, 500)), Some(CohortKind::Baseline));
        assert_eq!(membership(routed(1000, 500)), None);
        assert_eq!(membership(routed(9999, 500)), None);
    }

    #[test]
    fn forced_and_failed_over_requests_join_no_cohort() {
        let forced = Routed {
            forced: true,
            ..routed(10, 500)
        };
        assert_eq!(membership(forced), None);
        let failover = Routed {
            failover: true,
            ..routed(10, 500)
        };
        assert_eq!(membership(failover), None);
    }

    #[test]
    fn the_two_cohorts_are_of_equal_size_within_five_percent() {
        // Users arrive with uniformly random buckets, as `sticky::random_bucket` gives them.
        let mut rng = StdRng::seed_from_u64(10);
        for percent in [1, 5, 25, 50] {
            let basis_points = percent * 100;
            let mut sample = IntervalSample::default();
            let users = 200_000;
            for _ in 0..users {
                let bucket: u16 = rng.random_range(0..routing::BUCKETS);
                if let Some(kind) = membership(routed(bucket, basis_points)) {
                    let route = RouteLabel::of(common::routes::VERIFY);
                    sample.record(kind, route, StatusCode::OK, Duration::from_millis(1));
                }
            }
            let (canary, baseline) = (sample.canary().requests(), sample.baseline().requests());
            let expected = users as f64 * f64::from(percent) / 100.0;
            assert!(
                (canary as f64 / expected - 1.0).abs() < 0.05,
                "{percent} %: {canary}"
            );
            let ratio = canary as f64 / baseline as f64;
            assert!(
                (0.95..=1.05).contains(&ratio),
                "{percent} %: {canary} against {baseline}"
            );
        }
    }

    #[test]
    fn a_sample_counts_per_route_and_take_starts_a_new_interval() {
        let collector = Collector::default();
        let verify = RouteLabel::of(common::routes::VERIFY);
        let health = RouteLabel::of(common::routes::HEALTH);
        let ms = Duration::from_millis(3);
        collector.record(CohortKind::Canary, verify, StatusCode::OK, ms);
        collector.record(CohortKind::Canary, verify, StatusCode::BAD_GATEWAY, ms);
        collector.record(CohortKind::Baseline, health, StatusCode::OK, ms);
        let sample = collector.take();
        assert_eq!(sample.canary().requests(), 2);
        assert_eq!(sample.canary().server_errors(), 1);
        assert_eq!(sample.baseline().requests(), 1);
        let routes: Vec<_> = sample
            .routes()
            .map(|(route, canary, baseline)| {
                (route.label(), canary.requests(), baseline.requests())
            })
            .collect();
        assert_eq!(
            routes,
            [
                (common::routes::VERIFY, 2, 0),
                (common::routes::HEALTH, 0, 1)
            ]
        );
        assert_eq!(collector.take().canary().requests(), 0);
    }
}
