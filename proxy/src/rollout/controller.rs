//! The rollout controller: a pure state machine that moves `routing.new_percent` through
//! `[rollout].steps`. `step(state, input, schedule, analysis)` returns the next state and the
//! actions for the edge to carry out (write the weight into `config.toml`, record an event);
//! time comes in with the inputs, so tests run it over a simulated clock. `RolloutState` is
//! plain serde data, persisted in the state file so that a restart resumes the same step.
//!
//! Rules (issue 10): a step is entered (after an operator's approval where it asks for one),
//! held for at least its `hold`, and left after `passes_to_promote` consecutive passing
//! evaluations; `failures_to_rollback` consecutive failures, or one critical evaluation, apply
//! `on_failure`; inconclusive evaluations never promote and never fail, but `max_inconclusive`
//! of them in a row pause. A hand edit of the weight or of the steps pauses: the controller
//! never overrides the human, and only `Resume` starts it again.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CriticalReason, Evaluation, Outcome};
use crate::config::{AnalysisSection, OnFailure, Percent, RolloutSection, RolloutStep};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not started: the first `Tick` enters the first step at or above the current weight.
    Idle,
    /// On a step, judged each interval.
    Progressing,
    /// The next step asks for an operator's approval; the weight is still the previous step's.
    WaitingApproval,
    /// Frozen at the current weight until an operator resumes.
    Paused,
    /// At 0 %; starts again from the first step only when an operator resumes.
    RolledBack,
    /// Past the last step.
    Completed,
}

impl Phase {
    /// Every phase, for one metric series per phase.
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::Progressing,
        Phase::WaitingApproval,
        Phase::Paused,
        Phase::RolledBack,
        Phase::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Progressing => "progressing",
            Phase::WaitingApproval => "waiting_approval",
            Phase::Paused => "paused",
            Phase::RolledBack => "rolled_back",
            Phase::Completed => "completed",
        }
    }

    /// Whether the controller is moving the weight (and so must notice a human's edits).
    fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::WaitingApproval)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// `POST /admin/rollout/pause`.
    Operator,
    /// Someone edited `routing.new_percent` by hand.
    ManualOverride,
    /// Someone edited `rollout.steps` by hand.
    StepsChanged,
    /// `max_inconclusive` without enough data to judge.
    Inconclusive,
    /// `failures_to_rollback` consecutive failures, with `on_failure = "pause"`.
    Failures,
    /// A critical evaluation, with `on_failure = "pause"`.
    CriticalErrorRate,
    BackendDown,
    /// The weight could not be written into `config.toml` (an unreadable or invalid file,
    /// a full disk): the weight in force is the file's, and the operator fixes the file and
    /// resumes.
    ConfigWriteFailed,
}

/// Why a rollout went back to 0 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    Failures,
    CriticalErrorRate,
    BackendDown,
    /// `POST /admin/rollout/abort`.
    Aborted,
}

impl From<CriticalReason> for RollbackReason {
    fn from(reason: CriticalReason) -> Self {
        match reason {
            CriticalReason::CriticalErrorRate => RollbackReason::CriticalErrorRate,
            CriticalReason::BackendDown => RollbackReason::BackendDown,
        }
    }
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 4] = [
        RollbackReason::Failures,
        RollbackReason::CriticalErrorRate,
        RollbackReason::BackendDown,
        RollbackReason::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::Failures => "failures",
            RollbackReason::CriticalErrorRate => "critical_error_rate",
            RollbackReason::BackendDown => "backend_down",
            RollbackReason::Aborted => "aborted",
        }
    }

    /// The pause that stands for this rollback under `on_failure = "pause"`.
    fn as_pause(self) -> PauseReason {
        match self {
            RollbackReason::Failures => PauseReason::Failures,
            RollbackReason::CriticalErrorRate => PauseReason::CriticalErrorRate,
            RollbackReason::BackendDown => PauseReason::BackendDown,
            RollbackReason::Aborted => PauseReason::Operator,
        }
    }
}

/// The part of `[rollout]` the controller follows.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    pub steps: &'a [RolloutStep],
    pub on_failure: OnFailure,
}

impl<'a> Schedule<'a> {
    pub fn of(section: &'a RolloutSection) -> Self {
        Self {
            steps: &section.steps,
            on_failure: section.on_failure,
        }
    }

    /// Identifies the steps (percent, hold, approval of each) so that a hand edit of them is
    /// noticed, across restarts too: a SHA-256, not `Hash`, whose values may change between
    /// Rust releases.
    pub fn fingerprint(&self) -> StepsFingerprint {
        let mut hasher = Sha256::new();
        for step in self.steps {
            let hold_ms = step.hold.as_millis();
            // A shadow step adds its mark; steps without one hash as they always did, so
            // the state files of earlier schedules still match.
            let line = format!(
                "{}:{hold_ms}:{}{};",
                step.percent.basis_points(),
                step.approval,
                if step.shadow { ":shadow" } else { "" }
            );
            hasher.update(line.as_bytes());
        }
        let digest = hasher.finalize();
        StepsFingerprint(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
    }
}

/// What `Schedule::fingerprint` returns: hex, compared for equality only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepsFingerprint(String);

/// A rollout's progress: what the state file holds and `GET /admin/rollout` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// The step the rollout is on, or waits to enter in `waiting_approval`.
    pub step_index: usize,
    /// When the current step was entered; the hold counts from here, across restarts.
    pub step_started_at: Option<SystemTime>,
    /// The weight the controller last set (or found, before it started): a different
    /// `routing.new_percent` in the file is a human's edit.
    pub percent: Percent,
    /// The approval step an operator approved, so a pause on it does not ask again.
    pub approved_step: Option<usize>,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
    /// The first of the current run of inconclusive evaluations.
    pub inconclusive_since: Option<SystemTime>,
    pub pause_reason: Option<PauseReason>,
    pub rollback_reason: Option<RollbackReason>,
    /// The steps this progress was made on.
    pub steps_fingerprint: StepsFingerprint,
    /// Shown, not decided on.
    #[serde(default)]
    pub last_evaluation: Option<Evaluation>,
    pub last_evaluated_at: Option<SystemTime>,
}

impl RolloutState {
    /// A rollout not yet started, with the weight the file has now.
    pub fn new(current_percent: Percent, schedule: &Schedule<'_>) -> Self {
        Self {
            phase: Phase::Idle,
            step_index: 0,
            step_started_at: None,
            percent: current_percent,
            approved_step: None,
            consecutive_passes: 0,
            consecutive_failures: 0,
            inconclusive_since: None,
            pause_reason: None,
            rollback_reason: None,
            steps_fingerprint: schedule.fingerprint(),
            last_evaluation: None,
            last_evaluated_at: None,
        }
    }

    /// How much of the current step's hold is left, while progressing.
    pub fn hold_remaining(&self, schedule: &Schedule<'_>, now: SystemTime) -> Option<Duration> {
        if self.phase != Phase::Progressing {
            return None;
        }
        let hold = schedule.steps.get(self.step_index)?.hold;
        Some(hold.saturating_sub(self.time_on_step(now)?))
    }

    fn time_on_step(&self, now: SystemTime) -> Option<Duration> {
        // A clock stepped backwards counts as no time served, never as a hold served.
        (self.step_started_at).map(|started| now.duration_since(started).unwrap_or_default())
    }
}

/// What happens to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed (and, from `idle`, start).
    Tick {
        now: SystemTime,
    },
    /// The judge's verdict on the last interval.
    Evaluated {
        evaluation: Evaluation,
        now: SystemTime,
    },
    /// An operator approves entering `step`; refused unless that step is the one waiting.
    Approve {
        step: usize,
        now: SystemTime,
    },
    Pause,
    /// From `paused` re-enter the current step (its hold starts again); from `rolled_back`
    /// start again from the first step.
    Resume {
        now: SystemTime,
    },
    /// Roll back now.
    Abort,
    /// Writing the weight of the last `SetPercent` into `config.toml` failed; `in_force` is
    /// the weight still routing.
    WriteFailed {
        in_force: Percent,
    },
    /// `config.toml` was reloaded with these.
    ConfigChanged {
        new_percent: Percent,
        steps_fingerprint: StepsFingerprint,
    },
}

/// What the edge does after a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Write `routing.new_percent` into `config.toml`.
    SetPercent(Percent),
    /// Log it, count it in the metrics.
    Record(Event),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    StepEntered { step: usize, percent: Percent },
    AwaitingApproval { step: usize },
    Approved { step: usize },
    Paused { reason: PauseReason },
    Resumed { step: usize },
    RolledBack { reason: RollbackReason },
    Completed,
}

/// An input the state refuses; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The admin API answers 409: another operator approved first, or the rollout moved on.
    #[error("step {requested} is not awaiting approval: the rollout is {phase} at step {current}")]
    StaleApproval {
        requested: usize,
        current: usize,
        phase: Phase,
    },
}

/// One transition: the next state and what the edge must do, or a refusal.
pub fn step(
    state: RolloutState,
    input: Input,
    schedule: &Schedule<'_>,
    analysis: &AnalysisSection,
) -> Result<(RolloutState, Vec<Action>), Refusal> {
    let mut machine = Machine {
        state,
        actions: Vec::new(),
        schedule,
        analysis,
    };
    machine.apply(input)?;
    Ok((machine.state, machine.actions))
}

struct Machine<'a> {
    state: RolloutState,
    actions: Vec<Action>,
    schedule: &'a Schedule<'a>,
    analysis: &'a AnalysisSection,
}

impl Machine<'_> {
    fn apply(&mut self, input: Input) -> Result<(), Refusal> {
        // Steps edited while the proxy was down, or a reload not reported as `ConfigChanged`:
        // progress made on other steps must not be applied to these.
        if self.state.phase.is_active()
            && self.schedule.fingerprint() != self.state.steps_fingerprint
        {
            self.pause(PauseReason::StepsChanged);
        }
        match input {
            Input::Tick { now } => match self.state.phase {
                Phase::Idle => {
                    let first = self.first_step_at_or_above(self.state.percent);
                    self.enter(first, now);
                }
                Phase::Progressing => {
                    self.pause_if_inconclusive_too_long(now);
                    self.promote_if_due(now);
                }
                _ => {}
            },
            Input::Evaluated { evaluation, now } => self.evaluated(evaluation, now),
            Input::Approve { step, now } => {
                if self.state.phase != Phase::WaitingApproval || step != self.state.step_index {
                    return Err(Refusal::StaleApproval {
                        requested: step,
                        current: self.state.step_index,
                        phase: self.state.phase,
                    });
                }
                self.state.approved_step = Some(step);
                self.record(Event::Approved { step });
                self.enter(step, now);
            }
            Input::Pause => {
                if matches!(self.state.phase, Phase::Idle) || self.state.phase.is_active() {
                    self.pause(PauseReason::Operator);
                }
            }
            Input::Resume { now } => self.resume(now),
            Input::WriteFailed { in_force } => {
                self.state.percent = in_force;
                // A rollback stays one: the edge applies 0 % in memory when it cannot write.
                if self.state.phase != Phase::RolledBack {
                    self.pause(PauseReason::ConfigWriteFailed);
                }
            }
            Input::Abort => {
                if self.state.phase != Phase::RolledBack {
                    self.roll_back(RollbackReason::Aborted);
                }
            }
            Input::ConfigChanged {
                new_percent,
                steps_fingerprint,
            } => self.config_changed(new_percent, steps_fingerprint),
        }
        Ok(())
    }

    fn evaluated(&mut self, evaluation: Evaluation, now: SystemTime) {
        let (outcome, critical) = (evaluation.outcome, evaluation.critical);
        self.state.last_evaluation = Some(evaluation);
        self.state.last_evaluated_at = Some(now);
        if self.state.phase != Phase::Progressing {
            return;
        }
        if let Some(reason) = critical {
            self.fail(reason.into());
            return;
        }
        let state = &mut self.state;
        match outcome {
            Outcome::Pass => {
                state.consecutive_passes = state.consecutive_passes.saturating_add(1);
                state.consecutive_failures = 0;
                state.inconclusive_since = None;
                self.promote_if_due(now);
            }
            Outcome::Fail => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.consecutive_passes = 0;
                state.inconclusive_since = None;
                if state.consecutive_failures >= self.analysis.failures_to_rollback.get() {
                    self.fail(RollbackReason::Failures);
                }
            }
            // Neither counts nor breaks a run of passes or failures: missing data is not
            // evidence either way (Flagger's rollbacks on "no values" are what this avoids).
            Outcome::Inconclusive => {
                state.inconclusive_since.get_or_insert(now);
                self.pause_if_inconclusive_too_long(now);
            }
        }
    }

    fn config_changed(&mut self, new_percent: Percent, steps_fingerprint: StepsFingerprint) {
        match self.state.phase {
            Phase::Progressing | Phase::WaitingApproval => {
                if steps_fingerprint != self.state.steps_fingerprint {
                    self.pause(PauseReason::StepsChanged);
                } else if new_percent != self.state.percent {
                    self.pause(PauseReason::ManualOverride);
                }
            }
            // Nothing started yet: follow the file.
            Phase::Idle => {
                self.state.percent = new_percent;
                self.state.steps_fingerprint = steps_fingerprint;
            }
            // Already waiting for an operator; `Resume` reads the schedule again.
            Phase::Paused | Phase::RolledBack | Phase::Completed => {}
        }
    }

    fn resume(&mut self, now: SystemTime) {
        let step = match self.state.phase {
            Phase::Paused => {
                let current = self.schedule.fingerprint();
                if current == self.state.steps_fingerprint {
                    self.state.step_index
                } else {
                    // New steps: go on from the first that does not lower the weight.
                    self.state.steps_fingerprint = current;
                    self.state.approved_step = None;
                    self.first_step_at_or_above(self.state.percent)
                }
            }
            Phase::RolledBack => {
                self.state.steps_fingerprint = self.schedule.fingerprint();
                self.state.approved_step = None;
                0
            }
            Phase::Idle | Phase::Progressing | Phase::WaitingApproval | Phase::Completed => return,
        };
        self.record(Event::Resumed { step });
        self.enter(step, now);
    }

    /// Where to start or go on without lowering the weight users already have: the first
    /// step at or above `percent`, else the last.
    fn first_step_at_or_above(&self, percent: Percent) -> usize {
        (self.schedule.steps.iter())
            .position(|step| step.percent >= percent)
            .unwrap_or(self.schedule.steps.len().saturating_sub(1))
    }

    /// Enters step `index` (or waits for its approval), from a clean slate of counts.
    fn enter(&mut self, index: usize, now: SystemTime) {
        let state = &mut self.state;
        state.step_index = index;
        state.consecutive_passes = 0;
        state.consecutive_failures = 0;
        state.inconclusive_since = None;
        state.pause_reason = None;
        state.rollback_reason = None;
        let Some(target) = self.schedule.steps.get(index) else {
            self.complete();
            return;
        };
        if target.approval && state.approved_step != Some(index) {
            state.phase = Phase::WaitingApproval;
            state.step_started_at = None;
            self.record(Event::AwaitingApproval { step: index });
            return;
        }
        state.phase = Phase::Progressing;
        state.step_started_at = Some(now);
        state.percent = target.percent;
        // Always written, even if equal to the last weight set: after a manual override the
        // file holds the human's value, and resuming means taking the weight back.
        self.actions.push(Action::SetPercent(target.percent));
        self.record(Event::StepEntered {
            step: index,
            percent: target.percent,
        });
        // At 100 % there is no legacy baseline left to judge against.
        if target.percent.basis_points() >= 10_000 {
            self.complete();
        }
    }

    fn promote_if_due(&mut self, now: SystemTime) {
        let state = &self.state;
        let Some(current) = self.schedule.steps.get(state.step_index) else {
            return;
        };
        let hold_served = state.time_on_step(now).is_some_and(|on| on >= current.hold);
        if state.phase == Phase::Progressing
            && state.consecutive_passes >= self.analysis.passes_to_promote.get()
            && hold_served
        {
            let next = state.step_index + 1;
            self.enter(next, now);
        }
    }

    fn pause_if_inconclusive_too_long(&mut self, now: SystemTime) {
        let since = self.state.inconclusive_since;
        let waited = since.map(|since| now.duration_since(since).unwrap_or_default());
        if waited.is_some_and(|waited| waited >= self.analysis.max_inconclusive) {
            self.pause(PauseReason::Inconclusive);
        }
    }

    /// `failures_to_rollback` failures or a critical evaluation. Under `on_failure = "pause"`
    /// a critical one freezes too: that setting is for migrations that cannot go back.
    fn fail(&mut self, reason: RollbackReason) {
        match self.schedule.on_failure {
            OnFailure::Rollback => self.roll_back(reason),
            OnFailure::Pause => self.pause(reason.as_pause()),
        }
    }

    fn roll_back(&mut self, reason: RollbackReason) {
        let state = &mut self.state;
        state.phase = Phase::RolledBack;
        state.rollback_reason = Some(reason);
        state.pause_reason = None;
        state.step_started_at = None;
        state.consecutive_passes = 0;
        state.consecutive_failures = 0;
        state.inconclusive_since = None;
        state.percent = Percent::default();
        self.actions.push(Action::SetPercent(Percent::default()));
        self.record(Event::RolledBack { reason });
    }

    /// Freezes the weight where it is.
    fn pause(&mut self, reason: PauseReason) {
        self.state.phase = Phase::Paused;
        self.state.pause_reason = Some(reason);
        self.record(Event::Paused { reason });
    }

    fn complete(&mut self) {
        self.state.phase = Phase::Completed;
        self.record(Event::Completed);
    }

    fn record(&mut self, event: Event) {
        self.actions.push(Action::Record(event));
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const MINUTE: u64 = 60;

    fn percent(value: f64) -> Percent {
        Percent::from_percent(value).unwrap()
    }

    fn rollout_step(value: f64, hold_minutes: u64, approval: bool) -> RolloutStep {
        RolloutStep {
            percent: percent(value),
            hold: Duration::from_secs(hold_minutes * MINUTE),
            approval,
            shadow: false,
        }
    }

    /// The issue's schedule: 1, 5, 25 (after approval), 50, 100.
    fn issue_schedule() -> RolloutSection {
        RolloutSection {
            enabled: true,
            steps: vec![
                rollout_step(1.0, 10, false),
                rollout_step(5.0, 30, false),
                rollout_step(25.0, 60, true),
                rollout_step(50.0, 60, false),
                rollout_step(100.0, 0, false),
            ],
            ..RolloutSection::default()
        }
    }

    fn without_approvals(mut section: RolloutSection) -> RolloutSection {
        section
            .steps
            .iter_mut()
            .for_each(|step| step.approval = false);
        section
    }

    fn evaluation(outcome: Outcome) -> Evaluation {
        Evaluation {
            outcome,
            critical: None,
        }
    }

    /// The controller and what the edge would do with its actions, over a simulated clock.
    struct Simulation {
        section: RolloutSection,
        state: RolloutState,
        /// Seconds since the start of the simulation.
        seconds: u64,
        /// `routing.new_percent` as the edge last wrote it.
        written: Percent,
        /// Every weight written, in order.
        writes: Vec<Percent>,
        events: Vec<Event>,
    }

    impl Simulation {
        fn new(section: RolloutSection) -> Self {
            let state = RolloutState::new(Percent::default(), &Schedule::of(&section));
            Self {
                section,
                state,
                seconds: 0,
                written: Percent::default(),
                writes: Vec::new(),
                events: Vec::new(),
            }
        }

        /// Started: the first step entered (or waiting for approval).
        fn started(section: RolloutSection) -> Self {
            let mut simulation = Self::new(section);
            simulation
                .send(Input::Tick {
                    now: simulation.now(),
                })
                .unwrap();
            simulation
        }

        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + self.seconds)
        }

        fn send(&mut self, input: Input) -> Result<(), Refusal> {
            let schedule = Schedule::of(&self.section);
            let (state, actions) =
                step(self.state.clone(), input, &schedule, &self.section.analysis)?;
            self.state = state;
            for action in actions {
                match action {
                    Action::SetPercent(percent) => {
                        self.written = percent;
                        self.writes.push(percent);
                    }
                    Action::Record(event) => self.events.push(event),
                }
            }
            Ok(())
        }

        /// One analysis interval passes and ends with this evaluation.
        fn evaluate(&mut self, evaluation: Evaluation) {
            self.seconds += self.section.analysis.interval.as_secs();
            let now = self.now();
            self.send(Input::Evaluated { evaluation, now }).unwrap();
        }

        /// Evaluations of `outcome` every interval for `minutes`.
        fn run(&mut self, outcome: Outcome, minutes: u64) {
            let end = self.seconds + minutes * MINUTE;
            while self.seconds < end {
                self.evaluate(evaluation(outcome));
            }
        }

        fn approve(&mut self, step: usize) -> Result<(), Refusal> {
            let now = self.now();
            self.send(Input::Approve { step, now })
        }

        fn written_percents(&self) -> Vec<f64> {
            self.writes.iter().map(|p| p.as_percent()).collect()
        }

        fn reload(&mut self, new_percent: Percent) {
            let steps_fingerprint = Schedule::of(&self.section).fingerprint();
            (self.send(Input::ConfigChanged {
                new_percent,
                steps_fingerprint,
            }))
            .unwrap();
        }
    }

    #[test]
    fn passes_walk_five_steps_to_completed_each_after_its_hold() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.written_percents(), [1.0]);
        let mut entered_at = vec![0];
        while simulation.state.phase == Phase::Progressing && simulation.seconds < 24 * 3600 {
            let before = simulation.state.step_index;
            simulation.evaluate(evaluation(Outcome::Pass));
            if simulation.state.step_index != before {
                entered_at.push(simulation.seconds);
            }
        }
        assert_eq!(simulation.state.phase, Phase::Completed);
        assert_eq!(simulation.written_percents(), [1.0, 5.0, 25.0, 50.0, 100.0]);
        assert_eq!(simulation.written, percent(100.0));
        // Each step lasted its hold (the passes came long before), to the interval.
        let lasted: Vec<u64> = entered_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(lasted, [10 * MINUTE, 30 * MINUTE, 60 * MINUTE, 60 * MINUTE]);
        assert_eq!(simulation.events.last(), Some(&Event::Completed));
    }

    #[test]
    fn passes_promote_only_after_passes_to_promote_even_with_the_hold_served() {
        let mut section = without_approvals(issue_schedule());
        section.steps[0].hold = Duration::ZERO;
        let mut simulation = Simulation::started(section);
        simulation.evaluate(evaluation(Outcome::Pass));
        simulation.evaluate(evaluation(Outcome::Pass));
        assert_eq!(simulation.state.step_index, 0);
        simulation.evaluate(evaluation(Outcome::Pass));
        assert_eq!(simulation.state.step_index, 1);
        assert_eq!(simulation.written, percent(5.0));
    }

    #[test]
    fn an_approval_step_waits_and_a_stale_or_second_approve_is_refused() {
        let mut simulation = Simulation::started(issue_schedule());
        simulation.run(Outcome::Pass, 40);
        assert_eq!(simulation.state.phase, Phase::WaitingApproval);
        assert_eq!(simulation.state.step_index, 2);
        // The weight stays at the previous step's while waiting, whatever the verdicts.
        simulation.run(Outcome::Pass, 120);
        assert_eq!(simulation.written, percent(5.0));

        let stale = simulation.approve(1).unwrap_err();
        assert_eq!(
            stale,
            Refusal::StaleApproval {
                requested: 1,
                current: 2,
                phase: Phase::WaitingApproval
            }
        );
        simulation.approve(2).unwrap();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.written, percent(25.0));
        let second = simulation.approve(2).unwrap_err();
        assert!(
            second.to_string().contains("progressing at step 2"),
            "{second}"
        );
        assert_eq!(simulation.written_percents(), [1.0, 5.0, 25.0]);
        // An approval is not asked again when the approved step is paused and resumed.
        simulation.send(Input::Pause).unwrap();
        let now = simulation.now();
        simulation.send(Input::Resume { now }).unwrap();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.state.step_index, 2);
    }

    #[test]
    fn consecutive_failures_roll_back_to_zero() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.run(Outcome::Pass, 12);
        assert_eq!(simulation.written, percent(5.0));
        simulation.evaluate(evaluation(Outcome::Fail));
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation.evaluate(evaluation(Outcome::Fail));
        assert_eq!(simulation.state.phase, Phase::RolledBack);
        assert_eq!(
            simulation.state.rollback_reason,
            Some(RollbackReason::Failures)
        );
        assert_eq!(simulation.written, Percent::default());
        assert!(simulation.events.contains(&Event::RolledBack {
            reason: RollbackReason::Failures
        }));
    }

    #[test]
    fn with_on_failure_pause_failures_freeze_the_weight() {
        let mut section = without_approvals(issue_schedule());
        section.on_failure = OnFailure::Pause;
        let mut simulation = Simulation::started(section);
        simulation.run(Outcome::Fail, 10);
        assert_eq!(simulation.state.phase, Phase::Paused);
        assert_eq!(simulation.state.pause_reason, Some(PauseReason::Failures));
        assert_eq!(simulation.written_percents(), [1.0]);
        let critical = Evaluation {
            outcome: Outcome::Fail,
            critical: Some(CriticalReason::BackendDown),
        };
        let mut simulation = Simulation::started(simulation.section);
        simulation.evaluate(critical);
        assert_eq!(
            simulation.state.pause_reason,
            Some(PauseReason::BackendDown)
        );
        assert_eq!(simulation.written_percents(), [1.0]);
    }

    #[test]
    fn a_critical_evaluation_rolls_back_within_one_interval() {
        for (outcome, reason) in [
            (Outcome::Fail, CriticalReason::CriticalErrorRate),
            (Outcome::Inconclusive, CriticalReason::CriticalErrorRate),
            (Outcome::Pass, CriticalReason::BackendDown),
        ] {
            let mut simulation = Simulation::started(without_approvals(issue_schedule()));
            simulation.run(Outcome::Pass, 3);
            simulation.evaluate(Evaluation {
                outcome,
                critical: Some(reason),
            });
            assert_eq!(simulation.state.phase, Phase::RolledBack, "{outcome:?}");
            assert_eq!(simulation.state.rollback_reason, Some(reason.into()));
            assert_eq!(simulation.written, Percent::default());
        }
    }

    #[test]
    fn no_traffic_pauses_after_max_inconclusive_with_the_weight_unchanged_and_never_promotes() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.run(Outcome::Inconclusive, 29);
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation.run(Outcome::Inconclusive, 2);
        assert_eq!(simulation.state.phase, Phase::Paused);
        assert_eq!(
            simulation.state.pause_reason,
            Some(PauseReason::Inconclusive)
        );
        simulation.run(Outcome::Inconclusive, 600);
        assert_eq!(simulation.written_percents(), [1.0]);
        assert_eq!(simulation.state.step_index, 0);
    }

    #[test]
    fn inconclusive_evaluations_between_passes_neither_count_nor_reset_them() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.run(Outcome::Inconclusive, 20);
        assert_eq!(simulation.state.step_index, 0);
        for outcome in [Outcome::Pass, Outcome::Inconclusive, Outcome::Pass] {
            simulation.evaluate(evaluation(outcome));
        }
        assert_eq!(simulation.state.step_index, 0);
        simulation.evaluate(evaluation(Outcome::Pass));
        assert_eq!(simulation.state.step_index, 1);
    }

    #[test]
    fn alternating_pass_and_fail_never_moves_the_weight() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        for _ in 0..2_000 {
            simulation.evaluate(evaluation(Outcome::Pass));
            simulation.evaluate(evaluation(Outcome::Fail));
        }
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.written_percents(), [1.0]);
    }

    #[test]
    fn a_hand_edit_of_new_percent_pauses_with_manual_override_and_is_never_overridden() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        // The controller's own write, read back by the reload, is no edit.
        simulation.reload(percent(1.0));
        assert_eq!(simulation.state.phase, Phase::Progressing);
        simulation.reload(percent(3.0));
        assert_eq!(simulation.state.phase, Phase::Paused);
        assert_eq!(
            simulation.state.pause_reason,
            Some(PauseReason::ManualOverride)
        );
        simulation.run(Outcome::Pass, 120);
        simulation.run(Outcome::Fail, 10);
        let now = simulation.now();
        simulation.send(Input::Tick { now }).unwrap();
        assert_eq!(simulation.written_percents(), [1.0]);
        // Resuming takes the weight back, on the same step, its hold started again.
        simulation.send(Input::Resume { now }).unwrap();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.written_percents(), [1.0, 1.0]);
        assert_eq!(simulation.state.step_started_at, Some(now));
    }

    #[test]
    fn a_hand_edit_of_the_steps_pauses_with_steps_changed() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.run(Outcome::Pass, 12);
        assert_eq!(simulation.written, percent(5.0));
        simulation.section.steps[1] = rollout_step(10.0, 30, false);
        simulation.reload(percent(5.0));
        assert_eq!(
            simulation.state.pause_reason,
            Some(PauseReason::StepsChanged)
        );
        simulation.run(Outcome::Pass, 60);
        assert_eq!(simulation.written, percent(5.0));
        // Resumed on the new steps, from the first that does not lower the weight.
        let now = simulation.now();
        simulation.send(Input::Resume { now }).unwrap();
        assert_eq!(simulation.state.step_index, 1);
        assert_eq!(simulation.written, percent(10.0));
        simulation.reload(percent(10.0));
        assert_eq!(simulation.state.phase, Phase::Progressing);
    }

    #[test]
    fn steps_changed_while_the_proxy_was_down_pause_on_the_next_input() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.section.steps.pop();
        let now = simulation.now();
        simulation.send(Input::Tick { now }).unwrap();
        assert_eq!(
            simulation.state.pause_reason,
            Some(PauseReason::StepsChanged)
        );
    }

    #[test]
    fn a_restart_resumes_the_same_step_with_the_hold_already_served() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        while simulation.state.step_index == 0 {
            simulation.evaluate(evaluation(Outcome::Pass));
        }
        simulation.run(Outcome::Pass, 20);
        let saved = serde_json::to_string(&simulation.state).unwrap();

        // Down for 5 minutes; the 30-minute hold of step 1 had 20 served, 25 now.
        simulation.seconds += 5 * MINUTE;
        simulation.state = serde_json::from_str(&saved).unwrap();
        assert_eq!(simulation.state.step_index, 1);
        // The last verdict is read back too, so the admin API shows it after a restart.
        assert!(simulation.state.last_evaluation.is_some());
        let schedule = Schedule::of(&simulation.section);
        let remaining = simulation.state.hold_remaining(&schedule, simulation.now());
        assert_eq!(remaining, Some(Duration::from_secs(5 * MINUTE)));
        let now = simulation.now();
        simulation.send(Input::Tick { now }).unwrap();
        assert_eq!(simulation.state.step_index, 1);
        simulation.seconds += 5 * MINUTE;
        let now = simulation.now();
        simulation.send(Input::Tick { now }).unwrap();
        assert_eq!(simulation.state.step_index, 2);
        assert_eq!(simulation.written_percents(), [1.0, 5.0, 25.0]);
    }

    #[test]
    fn a_rolled_back_rollout_starts_again_only_on_resume() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.run(Outcome::Pass, 12);
        let now = simulation.now();
        simulation.send(Input::Abort).unwrap();
        assert_eq!(
            simulation.state.rollback_reason,
            Some(RollbackReason::Aborted)
        );
        assert_eq!(simulation.written, Percent::default());
        simulation.run(Outcome::Pass, 240);
        simulation.send(Input::Tick { now }).unwrap();
        simulation.reload(Percent::default());
        assert_eq!(simulation.state.phase, Phase::RolledBack);
        assert_eq!(simulation.written_percents(), [1.0, 5.0, 0.0]);

        let now = simulation.now();
        simulation.send(Input::Resume { now }).unwrap();
        assert_eq!(simulation.state.phase, Phase::Progressing);
        assert_eq!(simulation.state.step_index, 0);
        assert_eq!(simulation.written, percent(1.0));
    }

    #[test]
    fn an_operator_pause_freezes_until_resumed() {
        let mut simulation = Simulation::started(without_approvals(issue_schedule()));
        simulation.send(Input::Pause).unwrap();
        assert_eq!(simulation.state.pause_reason, Some(PauseReason::Operator));
        simulation.run(Outcome::Pass, 60);
        simulation.run(Outcome::Fail, 5);
        assert_eq!(simulation.written_percents(), [1.0]);
        let now = simulation.now();
        simulation.send(Input::Resume { now }).unwrap();
        simulation.run(Outcome::Pass, 10);
        assert_eq!(simulation.written_percents(), [1.0, 1.0, 5.0]);
    }

    #[test]
    fn a_start_never_lowers_the_weight_users_already_have() {
        let section = without_approvals(issue_schedule());
        let mut simulation = Simulation::new(section);
        simulation.reload(percent(5.0));
        let now = simulation.now();
        simulation.send(Input::Tick { now }).unwrap();
        assert_eq!(simulation.state.step_index, 1);
        assert_eq!(simulation.written_percents(), [5.0]);
    }

    #[test]
    fn a_last_step_below_100_completes_after_its_hold_and_passes_and_then_stays() {
        let mut section = without_approvals(issue_schedule());
        section.steps.truncate(2);
        let mut simulation = Simulation::started(section);
        simulation.run(Outcome::Pass, 45);
        assert_eq!(simulation.state.phase, Phase::Completed);
        simulation.run(Outcome::Fail, 10);
        simulation.reload(percent(5.0));
        assert_eq!(simulation.state.phase, Phase::Completed);
        assert_eq!(simulation.written_percents(), [1.0, 5.0]);
    }

    #[test]
    fn a_clock_stepped_backwards_serves_no_hold() {
        let mut section = without_approvals(issue_schedule());
        section.steps[0].hold = Duration::from_secs(MINUTE);
        let mut simulation = Simulation::new(section);
        simulation.seconds = 3600;
        simulation
            .send(Input::Tick {
                now: simulation.now(),
            })
            .unwrap();
        simulation.seconds = 0;
        simulation.run(Outcome::Pass, 30);
        assert_eq!(simulation.state.step_index, 0);
    }

    #[test]
    fn the_state_serializes_with_snake_case_names() {
        let simulation = Simulation::started(issue_schedule());
        let json = serde_json::to_value(&simulation.state).unwrap();
        assert_eq!(json["phase"], "progressing");
        let paused = Action::Record(Event::Paused {
            reason: PauseReason::ManualOverride,
        });
        assert_eq!(
            serde_json::to_value(&paused).unwrap(),
            serde_json::json!({"record": {"event": "paused", "reason": "manual_override"}})
        );
    }
}
