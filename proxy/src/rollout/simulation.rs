//! Whole rollouts over a simulated clock, with no servers: seeded synthetic users send
//! requests through the routing decision and the cohorts, `report::evaluate` judges each
//! interval, and `controller::step` moves the weight, which is applied at once, as the
//! runner applies it after writing `config.toml`. Everything but the clock and the backends
//! is the code the proxy runs; the clock is a number, so no test sleeps.
//!
//! The schedule (`schedule`) is the shape scaled down: 10, 25, 50 and 100 %, one
//! evaluation per 10 s, each judged step held 30 s, the time its three passes take, so a
//! rollout that passes everything takes nine evaluations. Cost decides the rest. In a debug
//! build one evaluation of ~600 requests per cohort costs ~1.6 ms (sorts and quantiles,
//! overall and for the route), so the 1,000 rollouts of the false-alarm test are ~15 s of
//! judging alone: the 1 % and 5 % steps and holds of minutes are left out. And the
//! traffic is sized per step (`Simulation::requests`): the canary expects
//! `REQUESTS_PER_COHORT` = 600 requests per interval at every step, `min_requests` = 500
//! being four standard deviations below. With a fixed number of users per interval, enough
//! for the first step, each later step would judge more (up to the latency samples' 2,048):
//! a first version (5 to 50 %, one-minute holds, 12,000 requests per interval) took ~150 ms
//! per rollout. So each step is judged on about the least the configuration calls enough,
//! where real traffic would give the later steps more; a test that needs more says so.

use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::cohorts::{self, IntervalSample, Routed};
use super::controller::{
    self, Action, Input, PauseReason, Phase, RollbackReason, RolloutState, Schedule,
};
use super::judge::{AnalysisSettings, Metric};
use super::report::{self, Report};
use super::synthetic::{LEGACY, Traffic};
use super::{CriticalReason, Outcome};
use crate::config::{AnalysisSection, Percent, RolloutSection, RolloutStep};
use crate::metrics::RouteLabel;
use crate::routing::{self, RouteInput, Side};

/// Each judged step's hold: three intervals, as long as `passes_to_promote` passes take.
const HOLD_SECONDS: u64 = 30;

/// The canary's expected requests per interval, at every step (see `Simulation::requests`).
const REQUESTS_PER_COHORT: u32 = 600;

/// The route every simulated request calls. Each evaluation then judges two scopes, as the
/// proxy does: overall, and the route, whose own latency sample is smaller (512), a second
/// chance of a false alarm that the false-alarm test counts too (most of its few failed
/// evaluations are the route's p99).
const ROUTE: &str = common::routes::VERIFY;

/// An upper bound on any rollout here: one that passes everything takes nine intervals.
const MAX_INTERVALS: u32 = 200;

fn percent(value: f64) -> Percent {
    Percent::from_percent(value).unwrap()
}

/// See the module's comment: 10, 25, 50, 100 %, 30 s each, judged every 10 s,
/// with the analysis defaults spelled out, as the tests lean on them.
fn schedule() -> RolloutSection {
    let step = |value: f64, hold_seconds: u64| RolloutStep {
        percent: percent(value),
        hold: Duration::from_secs(hold_seconds),
        approval: false,
        shadow: false,
    };
    RolloutSection {
        enabled: true,
        steps: vec![
            step(10.0, HOLD_SECONDS),
            step(25.0, HOLD_SECONDS),
            step(50.0, HOLD_SECONDS),
            step(100.0, 0),
        ],
        analysis: AnalysisSection {
            interval: Duration::from_secs(10),
            min_requests: NonZeroU32::new(500).unwrap(),
            max_inconclusive: Duration::from_secs(30 * 60),
            error_rate_tolerance: 0.01,
            latency_tolerance: 1.10,
            confidence: 0.98,
            critical_error_rate: 0.05,
            passes_to_promote: NonZeroU32::new(3).unwrap(),
            failures_to_rollback: NonZeroU32::new(2).unwrap(),
            max_shadow_mismatch_rate: 0.01,
            ..AnalysisSection::default()
        },
        ..RolloutSection::default()
    }
}

/// The proxy around the controller, reduced to what a rollout needs: users, two backends
/// and the weight in force.
struct Simulation {
    section: RolloutSection,
    state: RolloutState,
    now: SystemTime,
    /// Every random draw (users, responses, latency samples), so a seed is a whole rollout.
    /// `SmallRng` rather than `StdRng`: unoptimised in a debug build, ChaCha took 90 % of the
    /// simulation's time.
    rng: SmallRng,
    /// `routing.new_percent` as the proxy routes by it: the last `SetPercent` applied.
    percent_in_force: Percent,
    /// The highest weight ever in force.
    highest_percent: Percent,
    legacy: Traffic,
    new: Traffic,
    /// How many requests the canary cohort expects per interval, whatever the weight.
    requests_per_cohort: u32,
    /// What the health checks find of new.
    new_up: bool,
}

/// How a simulated rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    RolledBack(RollbackReason),
    Paused(PauseReason),
    /// Still progressing (or waiting) after the bound of intervals.
    Unfinished,
}

impl Simulation {
    /// Started: the first step entered, its weight in force.
    fn start(section: RolloutSection, seed: u64, new: Traffic) -> Self {
        let state = RolloutState::new(Percent::default(), &Schedule::of(&section));
        let mut simulation = Self {
            section,
            state,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            rng: SmallRng::seed_from_u64(seed),
            percent_in_force: Percent::default(),
            highest_percent: Percent::default(),
            legacy: LEGACY,
            new,
            requests_per_cohort: REQUESTS_PER_COHORT,
            new_up: true,
        };
        simulation.send(Input::Tick {
            now: simulation.now,
        });
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation
    }

    /// One input through the controller, its `SetPercent` applied as the runner applies it.
    fn send(&mut self, input: Input) {
        let schedule = Schedule::of(&self.section);
        let (state, actions) =
            controller::step(self.state.clone(), input, &schedule, &self.section.analysis)
                .expect("ticks and evaluations are never refused");
        self.state = state;
        for action in actions {
            if let Action::SetPercent(percent) = action {
                self.percent_in_force = percent;
                self.highest_percent = self.highest_percent.max(percent);
            }
        }
    }

    /// One analysis interval: its requests at the weight in force, then, at its end, the
    /// evaluation and a tick, in the runner's order.
    fn interval(&mut self) -> Report {
        let sample = self.requests();
        self.now += self.section.analysis.interval;
        let settings = AnalysisSettings::from(&self.section.analysis);
        let report = report::evaluate(&sample, &settings, self.new_up, self.now);
        let now = self.now;
        self.send(Input::Evaluated {
            evaluation: report.evaluation.clone(),
            now,
        });
        self.send(Input::Tick { now });
        report
    }

    /// One interval's requests, from users with uniformly random buckets (as
    /// `sticky::random_bucket` gives them), routed and sorted into cohorts as the request
    /// path does. As many users as make the canary, new's `[0, w)` of the buckets, expect
    /// `requests_per_cohort` requests at the weight `w` in force (see the module's comment);
    /// the baseline, the next `w`, expects as many.
    fn requests(&mut self) -> IntervalSample {
        let mut sample = IntervalSample::default();
        let new_basis_points = self.percent_in_force.basis_points();
        let route_label = RouteLabel::of(ROUTE);
        let users = if new_basis_points == 0 {
            0
        } else {
            u64::from(self.requests_per_cohort) * u64::from(routing::BUCKETS)
                / u64::from(new_basis_points)
        };
        for _ in 0..users {
            let bucket: u16 = self.rng.random_range(0..routing::BUCKETS);
            let Some(route) = routing::route(RouteInput {
                bucket,
                new_basis_points,
                forced: None,
                legacy_up: true,
                new_up: self.new_up,
            }) else {
                continue;
            };
            let routed = Routed {
                bucket,
                preferred: route.preferred,
                forced: false,
                failover: route.is_failover(),
                new_basis_points,
            };
            // Requests in no cohort are served all the same; only the cohorts are judged,
            // so they need no response drawn.
            let Some(kind) = cohorts::membership(routed) else {
                continue;
            };
            let backend = match route.side {
                Side::New => self.new,
                Side::Legacy => self.legacy,
            };
            let (status, latency) = backend.response(&mut self.rng);
            sample.record_with(kind, route_label, status, latency, &mut self.rng);
        }
        sample
    }

    fn end(&self) -> Option<End> {
        match self.state.phase {
            Phase::Completed => Some(End::Completed),
            Phase::RolledBack => Some(End::RolledBack(self.state.rollback_reason?)),
            Phase::Paused => Some(End::Paused(self.state.pause_reason?)),
            Phase::Idle | Phase::Progressing | Phase::WaitingApproval => None,
        }
    }

    /// Intervals until the rollout completes, rolls back or pauses, or `MAX_INTERVALS`.
    fn run_to_end(&mut self) -> End {
        for _ in 0..MAX_INTERVALS {
            if let Some(end) = self.end() {
                return end;
            }
            self.interval();
        }
        self.end().unwrap_or(End::Unfinished)
    }

    /// Healthy intervals until the rollout enters step `index`.
    fn run_until_step(&mut self, index: usize) {
        for _ in 0..MAX_INTERVALS {
            if self.state.step_index >= index {
                break;
            }
            self.interval();
            assert_eq!(self.state.phase, Phase::Progressing, "{:?}", self.state);
        }
        assert_eq!(self.state.step_index, index, "{:?}", self.state);
    }
}

fn tally(ends: &[End]) -> String {
    let count = |wanted: fn(&End) -> bool| ends.iter().filter(|end| wanted(end)).count();
    format!(
        "{} completed, {} rolled back, {} paused, {} unfinished",
        count(|end| *end == End::Completed),
        count(|end| matches!(end, End::RolledBack(_))),
        count(|end| matches!(end, End::Paused(_))),
        count(|end| *end == End::Unfinished),
    )
}

/// One rollout of new against an identical legacy: how it ended, its evaluations, and how
/// many of them failed.
fn identical_rollout(seed: u64) -> (End, u32, u32) {
    let mut simulation = Simulation::start(schedule(), seed, LEGACY);
    let (mut evaluations, mut failed) = (0, 0);
    for _ in 0..MAX_INTERVALS {
        if simulation.end().is_some() {
            break;
        }
        evaluations += 1;
        if simulation.interval().evaluation.outcome == Outcome::Fail {
            failed += 1;
        }
    }
    (
        simulation.end().unwrap_or(End::Unfinished),
        evaluations,
        failed,
    )
}

#[test]
fn identical_backends_roll_back_at_most_two_percent_of_a_thousand_rollouts() {
    const ROLLOUTS: u64 = 1_000;
    let started = Instant::now();
    // The rollouts are independent, so they are shared among the cores: this test is most
    // of the module's time. Each seed gives the same rollout whichever thread runs it.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let results: Vec<(End, u32, u32)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    (first..ROLLOUTS)
                        .step_by(threads as usize)
                        .map(identical_rollout)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let ends: Vec<End> = results.iter().map(|(end, _, _)| *end).collect();
    let evaluations: u32 = results.iter().map(|(_, evaluations, _)| evaluations).sum();
    let failed: u32 = results.iter().map(|(_, _, failed)| failed).sum();
    let rolled_back = ends
        .iter()
        .filter(|end| matches!(end, End::RolledBack(_)))
        .count();
    println!(
        "identical backends, {ROLLOUTS} rollouts: {}; {failed} of {evaluations} evaluations \
         failed; {:.1?} on {threads} threads",
        tally(&ends),
        started.elapsed()
    );
    assert!(rolled_back <= 20, "{}", tally(&ends));
    // Every rollout ends one way or the other: identical backends are never stuck.
    assert!(
        ends.iter()
            .all(|end| matches!(end, End::Completed | End::RolledBack(_))),
        "{}",
        tally(&ends)
    );
}

#[test]
fn a_canary_at_three_percent_5xx_against_half_a_percent_rolls_back_before_the_last_step() {
    // 3 % against 0.5 % is 1.5 points beyond the 1-point tolerance. At 600 requests per
    // cohort the one-sided test sees that in only about half of the evaluations (z ≈ 2.0
    // against 2.05 at 98 %: 238 of 500 seeded evaluations failed), and 7 of 200 seeded
    // rollouts passed every step. With 2,000, as in the judge's own test, z ≈ 3.6 and
    // ~94 % of evaluations fail.
    let new = LEGACY.with_error_rate(0.03);
    let last = schedule().steps.last().unwrap().percent;
    let mut ends = Vec::new();
    for seed in 1_000..1_020 {
        let mut simulation = Simulation::start(schedule(), seed, new);
        simulation.requests_per_cohort = 2_000;
        let end = simulation.run_to_end();
        assert!(
            matches!(
                end,
                End::RolledBack(RollbackReason::Failures | RollbackReason::CriticalErrorRate)
            ),
            "seed {seed}: {end:?}"
        );
        assert!(
            simulation.highest_percent < last,
            "seed {seed}: reached {:?}",
            simulation.highest_percent
        );
        assert_eq!(simulation.percent_in_force, Percent::default());
        ends.push((simulation.highest_percent.as_percent(), end));
    }
    println!("3 % 5xx: highest weight and end of each rollout: {ends:?}");
}

#[test]
fn thirty_percent_slower_rolls_back_on_the_median_at_the_first_step() {
    let first = schedule().steps[0].percent;
    for seed in 2_000..2_020 {
        let mut simulation = Simulation::start(schedule(), seed, LEGACY.slower(1.30));
        let mut reports = Vec::new();
        while simulation.end().is_none() && reports.len() < MAX_INTERVALS as usize {
            reports.push(simulation.interval());
        }
        assert_eq!(
            simulation.end(),
            Some(End::RolledBack(RollbackReason::Failures)),
            "seed {seed}"
        );
        assert_eq!(simulation.highest_percent, first, "seed {seed}");
        // The median is what caught it, not a by-product.
        let median_failed = reports.last().is_some_and(|report| {
            report.verdicts.iter().any(|v| {
                v.scope == report::OVERALL
                    && v.verdict.metric == Metric::LatencyMedian
                    && v.verdict.outcome == Outcome::Fail
            })
        });
        assert!(median_failed, "seed {seed}: {:#?}", reports.last());
    }
}

#[test]
fn five_percent_slower_completes_at_least_ninety_eight_rollouts_of_a_hundred() {
    let ends: Vec<End> = (3_000..3_100)
        .map(|seed| Simulation::start(schedule(), seed, LEGACY.slower(1.05)).run_to_end())
        .collect();
    println!("+5 % latency, 100 rollouts: {}", tally(&ends));
    let completed = ends.iter().filter(|end| **end == End::Completed).count();
    assert!(completed >= 98, "{}", tally(&ends));
}

#[test]
fn no_traffic_pauses_after_max_inconclusive_at_the_first_weight_and_never_promotes() {
    let section = schedule();
    let max_inconclusive = section.analysis.max_inconclusive;
    let interval = section.analysis.interval;
    let first = section.steps[0].percent;
    let mut simulation = Simulation::start(section, 4_000, LEGACY);
    simulation.requests_per_cohort = 0;
    let started = simulation.now;
    // Bounded: an hour of simulated time, twice `max_inconclusive`.
    for _ in 0..360 {
        if simulation.state.phase != Phase::Progressing {
            break;
        }
        let report = simulation.interval();
        assert_eq!(report.evaluation.outcome, Outcome::Inconclusive);
    }
    assert_eq!(
        simulation.end(),
        Some(End::Paused(PauseReason::Inconclusive))
    );
    // The run of inconclusive evaluations starts at the first one, an interval in.
    let waited = simulation.now.duration_since(started).unwrap();
    assert_eq!(waited, max_inconclusive + interval);
    assert_eq!(simulation.percent_in_force, first);

    // A day later, and then with traffic back, still paused at the first weight: only an
    // operator resumes.
    for _ in 0..(24 * 3_600 / interval.as_secs()) {
        simulation.interval();
    }
    simulation.requests_per_cohort = REQUESTS_PER_COHORT;
    for _ in 0..30 {
        simulation.interval();
    }
    assert_eq!(
        simulation.end(),
        Some(End::Paused(PauseReason::Inconclusive))
    );
    assert_eq!(simulation.state.step_index, 0);
    assert_eq!(simulation.highest_percent, first);
    assert_eq!(simulation.percent_in_force, first);
}

#[test]
fn a_burst_of_errors_on_new_mid_rollout_rolls_back_within_one_interval() {
    for seed in 5_000..5_005 {
        let mut simulation = Simulation::start(schedule(), seed, LEGACY);
        simulation.run_until_step(2);
        // Mid-step: one healthy evaluation on step 2 first.
        simulation.interval();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation.new = LEGACY.with_error_rate(1.0);
        let burst = simulation.now;
        let report = simulation.interval();
        assert_eq!(
            report.evaluation.critical,
            Some(CriticalReason::CriticalErrorRate),
            "seed {seed}"
        );
        assert_eq!(
            simulation.end(),
            Some(End::RolledBack(RollbackReason::CriticalErrorRate)),
            "seed {seed}"
        );
        assert_eq!(
            simulation.now.duration_since(burst).unwrap(),
            schedule().analysis.interval
        );
        assert_eq!(simulation.percent_in_force, Percent::default());
    }
}

#[test]
fn alternating_good_and_bad_intervals_never_move_the_weight() {
    // 20 % errors must fail an evaluation without being critical, which would roll back
    // at once: the critical threshold goes above it.
    let mut section = schedule();
    section.analysis.critical_error_rate = 0.25;
    let first = section.steps[0].percent;
    let good = LEGACY.with_error_rate(0.0);
    let bad = LEGACY.with_error_rate(0.20);
    let mut simulation = Simulation::start(section, 6_000, good);
    let mut outcomes = Vec::new();
    for interval in 0..200 {
        simulation.new = if interval % 2 == 0 { good } else { bad };
        let report = simulation.interval();
        assert_eq!(report.evaluation.critical, None, "interval {interval}");
        outcomes.push(report.evaluation.outcome);
    }
    // The evaluations did alternate: every bad interval failed, every good one passed.
    let expected: Vec<Outcome> = (0..200)
        .map(|interval| {
            if interval % 2 == 0 {
                Outcome::Pass
            } else {
                Outcome::Fail
            }
        })
        .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(simulation.state.phase, Phase::Progressing);
    assert_eq!(simulation.state.step_index, 0);
    assert_eq!(simulation.highest_percent, first);
    assert_eq!(simulation.percent_in_force, first);
}

#[test]
fn the_cohorts_are_of_equal_size_within_five_percent_at_every_step() {
    // Within 5 % at every evaluation wants ~10,000 requests per cohort (the ratio's standard
    // deviation is then 1.4 %); at 12,000, 5 % is four standard deviations.
    let mut simulation = Simulation::start(schedule(), 7_000, LEGACY);
    simulation.requests_per_cohort = 12_000;
    let mut weights = Vec::new();
    while simulation.end().is_none() && weights.len() < MAX_INTERVALS as usize {
        let weight = simulation.percent_in_force;
        let report = simulation.interval();
        let (canary, baseline) = (report.canary_requests, report.baseline_requests);
        let ratio = canary as f64 / baseline as f64;
        assert!(
            (0.95..=1.05).contains(&ratio),
            "at {weight:?}: canary {canary}, baseline {baseline}"
        );
        weights.push(weight);
    }
    assert_eq!(simulation.end(), Some(End::Completed));
    weights.dedup();
    let judged: Vec<f64> = weights.iter().map(|weight| weight.as_percent()).collect();
    assert_eq!(judged, [10.0, 25.0, 50.0]);
}

#[test]
fn new_down_mid_rollout_rolls_back_within_one_interval() {
    for seed in 8_000..8_005 {
        let mut simulation = Simulation::start(schedule(), seed, LEGACY);
        simulation.run_until_step(1);
        simulation.interval();
        simulation.interval();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation.new_up = false;
        let report = simulation.interval();
        // New's users failed over to legacy: no cohort counts them.
        assert_eq!(report.canary_requests, 0, "seed {seed}");
        assert_eq!(
            simulation.end(),
            Some(End::RolledBack(RollbackReason::BackendDown)),
            "seed {seed}"
        );
        assert_eq!(simulation.percent_in_force, Percent::default());
    }
}
