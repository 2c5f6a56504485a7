//! The rollout controller at work: a background service of the proxy that, once per
//! `rollout.analysis.interval`, takes the interval's cohorts, judges them (`report`), and
//! feeds the verdict and the time to the pure controller; and the operator's commands from
//! the admin API. Whatever the controller decides is carried out here, in order:
//!
//! - a new weight is written into `config.toml` (`config_file`: comments kept, atomic) and
//!   applied at once, not when the watcher notices, so no request waits on a stale weight and
//!   the next check cannot mistake the controller's own write for a human's;
//! - events are logged and counted;
//! - the progress is saved to `rollout.state_file` (atomic), so a restart resumes the step.
//!
//! One lock orders everything (ticks, commands, writes), so two operators, or an operator
//! and the timer, never interleave half-applied steps. File I/O runs on the blocking pool.
//!
//! Of several proxies only the controller (`fleet::Role`) runs any of this; a follower
//! records its cohorts (exported for a controller that reads them from Prometheus) and
//! follows the weight in the file, and refuses operators' commands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cohorts::{Collector, IntervalSample};
use super::config_file;
use super::controller::{
    self, Action, Event, Input, Phase, Refusal, RolloutState, Schedule, StepsFingerprint,
};
use super::judge::AnalysisSettings;
use super::metrics::CohortSeries;
use super::promql::{self, PrometheusSource};
use super::report::{self, Report, ShadowSample};
use super::source::{CohortSource, SourceError, Window};
use crate::config::{AnalysisSource, Percent};
use crate::fleet::Role;
use crate::routing::Side;
use crate::state::ProxyState;

/// Events kept for `GET /admin/rollout`, newest last.
const EVENTS_KEPT: usize = 32;
/// The state file's layout; a file of another version is not resumed from.
const STATE_FILE_VERSION: u32 = 1;

/// What the proxy shares between the request path, the controller and the admin API.
pub struct Rollout {
    pub collector: Collector,
    progress: tokio::sync::Mutex<Progress>,
    /// A shadow step is in force: the request path shadows every eligible request.
    dark_launch: AtomicBool,
    /// Another proxy runs the controller; this one only follows the file.
    follower: AtomicBool,
    /// When the running evaluation window began: the last evaluation, or the last change of
    /// weight (what was counted under the old weight would judge the new one).
    window_start: std::sync::Mutex<SystemTime>,
    /// Made on the first query to Prometheus.
    prometheus: OnceLock<Result<reqwest::Client, String>>,
}

/// See `Rollout::hold`.
pub struct RolloutHeld<'a> {
    _progress: tokio::sync::MutexGuard<'a, Progress>,
}

#[derive(Default)]
struct Progress {
    /// `None` until the state file is read or the first step is taken.
    state: Option<RolloutState>,
    last_report: Option<Report>,
    /// The config generation last compared with the state, to notice hand edits.
    seen_generation: u64,
    events: VecDeque<(SystemTime, Event)>,
    /// Shadow traffic's counts at the last evaluation, to judge each interval's own.
    shadow_seen: ShadowSample,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    rollout: RolloutState,
    last_report: Option<Report>,
}

/// An operator's command from the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Approve { step: usize },
    Pause,
    Resume,
    Abort,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no rollout is enabled: set enabled = true under [rollout] in config.toml")]
    Disabled,
    #[error(
        "this proxy only follows config.toml (rollout.controller = false): send rollout \
         commands to the proxy that runs the controller"
    )]
    NotController,
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl Rollout {
    /// The rollout of a proxy whose cohort answers are also counted in `series`.
    pub fn new(series: CohortSeries) -> Self {
        Self {
            collector: Collector::exporting(series),
            progress: tokio::sync::Mutex::default(),
            dark_launch: AtomicBool::new(false),
            follower: AtomicBool::new(false),
            window_start: std::sync::Mutex::new(SystemTime::now()),
            prometheus: OnceLock::new(),
        }
    }

    /// Set once at start (`server::state`): a controller unless told otherwise.
    pub fn set_role(&self, role: Role) {
        self.follower
            .store(role == Role::Follower, Ordering::Relaxed);
    }

    pub fn role(&self) -> Role {
        if self.follower.load(Ordering::Relaxed) {
            Role::Follower
        } else {
            Role::Controller
        }
    }

    /// Starts a new evaluation window now, forgetting what was counted so far.
    fn restart_window(&self) {
        self.collector.take();
        *self.lock_window() = SystemTime::now();
    }

    /// The window that ends `now` and, from now, the next one.
    fn next_window(&self, now: SystemTime) -> Window {
        let start = std::mem::replace(&mut *self.lock_window(), now);
        Window { start, end: now }
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        self.window_start
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The interval's cohorts from `rollout.analysis.source`.
    async fn sample(
        &self,
        analysis: &crate::config::AnalysisSection,
        window: Window,
    ) -> Result<IntervalSample, SourceError> {
        let url = match (analysis.source, &analysis.prometheus_url) {
            (AnalysisSource::Prometheus, Some(url)) => url,
            // The config refuses `prometheus` without a URL.
            _ => return self.collector.sample(window).await,
        };
        // Kept fresh for a switch back to `local`; the fleet's counts include these.
        self.collector.take();
        let client = (self
            .prometheus
            .get_or_init(|| promql::client().map_err(|e| e.to_string())))
        .as_ref()
        .map_err(|error| SourceError::Client(error.clone()))?;
        let source = PrometheusSource {
            client,
            url,
            selector: &analysis.prometheus_selector,
            timeout: analysis.prometheus_timeout,
        };
        source.sample(window).await
    }

    /// Carries out an operator's command and returns the status after it.
    pub async fn command(
        &self,
        proxy: &Arc<ProxyState>,
        command: Command,
    ) -> Result<serde_json::Value, CommandError> {
        if !proxy.live.load().settings.rollout.enabled {
            return Err(CommandError::Disabled);
        }
        if self.role() == Role::Follower {
            return Err(CommandError::NotController);
        }
        let now = SystemTime::now();
        let input = match command {
            Command::Approve { step } => Input::Approve { step, now },
            Command::Pause => Input::Pause,
            Command::Resume => Input::Resume { now },
            Command::Abort => Input::Abort,
        };
        tracing::info!(?command, "rollout: operator command");
        let mut progress = self.progress.lock().await;
        self.follow_config(&mut progress, proxy).await;
        self.step(&mut progress, proxy, input).await?;
        Ok(status(&progress, proxy, now))
    }

    /// Holds the controller still while the guard lives: no tick and no command runs, so
    /// nothing writes `config.toml` or the state file. A process handing over to an upgrade
    /// holds it from before the hand-over to its exit, so two controllers never write at once.
    pub async fn hold(&self) -> RolloutHeld<'_> {
        RolloutHeld {
            _progress: self.progress.lock().await,
        }
    }

    /// Whether a shadow step (a dark launch) is in force.
    pub fn is_dark_launch(&self) -> bool {
        self.dark_launch.load(Ordering::Relaxed)
    }

    /// `GET /admin/rollout`.
    pub async fn status(&self, proxy: &Arc<ProxyState>) -> serde_json::Value {
        let progress = self.progress.lock().await;
        status(&progress, proxy, SystemTime::now())
    }

    /// One interval: notice edits, judge the interval, and let time pass.
    async fn interval(&self, proxy: &Arc<ProxyState>) {
        let mut progress = self.progress.lock().await;
        self.follow_config(&mut progress, proxy).await;
        let now = SystemTime::now();
        let window = self.next_window(now);
        let generation = proxy.live.load_full();
        let section = &generation.settings.rollout;
        let settings = AnalysisSettings::from(&section.analysis);
        let sample = self.sample(&section.analysis, window).await;
        let new_up = proxy.health.is_up(Side::New);
        let mut report = match sample {
            Ok(sample) => report::evaluate(&sample, &settings, new_up, now),
            Err(error) => {
                proxy.metrics.rollout.source_failed(error.kind());
                tracing::warn!(
                    key = "rollout.analysis.source",
                    %error,
                    "rollout: cannot read the cohorts; this evaluation is inconclusive"
                );
                report::unavailable(&error.to_string(), new_up, now)
            }
        };
        let shadow = shadow_since(&mut progress, proxy);
        let shadow_step =
            (progress.state.as_ref()).is_some_and(|state| on_shadow_step(state, section));
        let max_rate = section.analysis.max_shadow_mismatch_rate;
        report::add_shadow(&mut report, shadow, &settings, max_rate, shadow_step);
        proxy.metrics.rollout.evaluated(&report);
        let evaluation = report.evaluation.clone();
        progress.last_report = Some(report);
        let _ = self
            .step(&mut progress, proxy, Input::Evaluated { evaluation, now })
            .await;
        let _ = self.step(&mut progress, proxy, Input::Tick { now }).await;
    }

    /// Tells the controller about a config generation it has not seen: a hand edit of the
    /// weight or the steps pauses an active rollout.
    async fn follow_config(&self, progress: &mut Progress, proxy: &Arc<ProxyState>) {
        let generation = proxy.live.load_full();
        if generation.number == progress.seen_generation {
            return;
        }
        progress.seen_generation = generation.number;
        let input = Input::ConfigChanged {
            new_percent: generation.settings.routing.new_percent,
            steps_fingerprint: fingerprint(proxy),
        };
        let _ = self.step(progress, proxy, input).await;
    }

    /// Runs one input through the controller and carries out what it decides.
    async fn step(
        &self,
        progress: &mut Progress,
        proxy: &Arc<ProxyState>,
        input: Input,
    ) -> Result<(), Refusal> {
        let generation = proxy.live.load_full();
        let section = &generation.settings.rollout;
        let schedule = Schedule::of(section);
        let current = match progress.state.clone() {
            Some(state) => state,
            None => RolloutState::new(generation.settings.routing.new_percent, &schedule),
        };
        let before = current.clone();
        let (next, actions) = controller::step(current, input, &schedule, &section.analysis)?;
        progress.state = Some(next);
        let mut pending: VecDeque<Action> = actions.into();
        while let Some(action) = pending.pop_front() {
            match action {
                Action::SetPercent(percent) => {
                    if let Err(in_force) = self.set_percent(progress, proxy, percent).await {
                        let state = progress.state.clone().unwrap_or_else(|| before.clone());
                        let failed = Input::WriteFailed { in_force };
                        if let Ok((state, more)) =
                            controller::step(state, failed, &schedule, &section.analysis)
                        {
                            progress.state = Some(state);
                            pending.extend(more);
                        }
                    }
                }
                Action::Record(event) => record(progress, proxy, event),
            }
        }
        if let Some(state) = &progress.state {
            (proxy.metrics.rollout).progress(state.phase, state.step_index);
            let dark = section.enabled && on_shadow_step(state, section);
            self.dark_launch.store(dark, Ordering::Relaxed);
        }
        if progress.state.as_ref() != Some(&before) {
            save(progress, proxy).await;
        }
        Ok(())
    }

    /// Writes the weight into `config.toml` and applies it; on failure returns the weight
    /// still in force. A rollback that cannot be written is applied in memory all the same:
    /// users come off new now, and the log says the file disagrees.
    async fn set_percent(
        &self,
        progress: &mut Progress,
        proxy: &Arc<ProxyState>,
        percent: Percent,
    ) -> Result<(), Percent> {
        let writer = Arc::clone(proxy);
        let written = tokio::task::spawn_blocking(move || {
            config_file::write_new_percent(&writer.config_path, percent)
                .map_err(|error| error.to_string())?;
            crate::reload::apply_file(&writer).map_err(|error| error.to_string())
        })
        .await
        .unwrap_or_else(|error| Err(error.to_string()));
        match written {
            Ok(generation) => {
                progress.seen_generation = generation;
                // What was collected under the old weight would judge the new one.
                self.restart_window();
                tracing::info!(
                    new_percent = percent.as_percent(),
                    generation,
                    "rollout: routing.new_percent written to the config file"
                );
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    key = "routing.new_percent",
                    new_percent = percent.as_percent(),
                    %error,
                    "rollout: cannot write the config file"
                );
                if percent == Percent::default() {
                    progress.seen_generation = crate::reload::apply_percent(proxy, percent);
                    self.restart_window();
                    tracing::error!(
                        "rollout: rolled back in memory to 0 %; the config file still says \
                         otherwise until it is fixed"
                    );
                }
                Err(proxy.live.load().settings.routing.new_percent)
            }
        }
    }
}

/// Whether `state` is progressing on a shadow step (a dark launch).
fn on_shadow_step(state: &RolloutState, section: &crate::config::RolloutSection) -> bool {
    state.phase == Phase::Progressing
        && (section.steps.get(state.step_index)).is_some_and(|step| step.shadow)
}

/// What shadow traffic classified since the last call.
fn shadow_since(progress: &mut Progress, proxy: &ProxyState) -> ShadowSample {
    let now = (proxy.shadow.stats().counts(None)).map_or(ShadowSample::default(), |counts| {
        ShadowSample {
            classified: counts.classified(),
            mismatched: counts.mismatched,
        }
    });
    let seen = std::mem::replace(&mut progress.shadow_seen, now);
    ShadowSample {
        classified: now.classified.saturating_sub(seen.classified),
        mismatched: now.mismatched.saturating_sub(seen.mismatched),
    }
}

fn fingerprint(proxy: &ProxyState) -> StepsFingerprint {
    Schedule::of(&proxy.live.load().settings.rollout).fingerprint()
}

fn record(progress: &mut Progress, proxy: &ProxyState, event: Event) {
    match &event {
        Event::RolledBack { reason } => {
            proxy.metrics.rollout.rolled_back(*reason);
            tracing::warn!(?event, "rollout: rolled back");
        }
        Event::Paused { .. } => tracing::warn!(?event, "rollout: paused"),
        _ => tracing::info!(?event, "rollout"),
    }
    if progress.events.len() == EVENTS_KEPT {
        progress.events.pop_front();
    }
    progress.events.push_back((SystemTime::now(), event));
}

async fn save(progress: &Progress, proxy: &ProxyState) {
    let Some(rollout) = progress.state.clone() else {
        return;
    };
    let file = StateFile {
        version: STATE_FILE_VERSION,
        rollout,
        last_report: progress.last_report.clone(),
    };
    let path = proxy.live.load().settings.rollout.state_file.clone();
    let bytes = match serde_json::to_vec_pretty(&file) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "rollout: cannot serialize the state");
            return;
        }
    };
    let target = path.clone();
    let saved = tokio::task::spawn_blocking(move || {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        config_file::write_atomically(&target, &bytes)
    })
    .await
    .unwrap_or_else(|error| Err(std::io::Error::other(error)));
    if let Err(error) = saved {
        tracing::error!(
            key = "rollout.state_file",
            path = %path.display(),
            %error,
            "rollout: cannot save the state; a restart would not resume it"
        );
    }
}

/// The state file, if there is a readable one of this version.
fn load(path: &std::path::Path) -> Option<StateFile> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "rollout: cannot read the state file; starting afresh");
            return None;
        }
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(file) if file.version == STATE_FILE_VERSION => Some(file),
        Ok(file) => {
            tracing::error!(path = %path.display(), version = file.version, "rollout: a state file of another version; starting afresh");
            None
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "rollout: the state file is not valid; starting afresh");
            None
        }
    }
}

fn rfc3339(at: SystemTime) -> Option<String> {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The JSON of `GET /admin/rollout`.
fn status(progress: &Progress, proxy: &ProxyState, now: SystemTime) -> serde_json::Value {
    let generation = proxy.live.load();
    let section = &generation.settings.rollout;
    let schedule = Schedule::of(section);
    let fresh;
    let state = match &progress.state {
        Some(state) => state,
        None => {
            fresh = RolloutState::new(generation.settings.routing.new_percent, &schedule);
            &fresh
        }
    };
    let steps: Vec<serde_json::Value> = (section.steps.iter())
        .map(|step| {
            json!({
                "percent": step.percent.as_percent(),
                "holdSeconds": step.hold.as_secs_f64(),
                "approval": step.approval,
            })
        })
        .collect();
    let last_evaluation = progress.last_report.as_ref().map(|report| {
        json!({
            "at": rfc3339(report.at),
            "outcome": report.evaluation.outcome,
            "critical": report.evaluation.critical,
            "canaryRequests": report.canary_requests,
            "baselineRequests": report.baseline_requests,
            "verdicts": report.verdicts,
        })
    });
    let events: Vec<serde_json::Value> = (progress.events.iter())
        .map(|(at, event)| {
            let mut value = serde_json::to_value(event).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("at".into(), json!(rfc3339(*at)));
            }
            value
        })
        .collect();
    json!({
        "enabled": section.enabled,
        "controller": proxy.rollout.role() == Role::Controller,
        "source": section.analysis.source,
        "phase": state.phase,
        "pauseReason": state.pause_reason,
        "rollbackReason": state.rollback_reason,
        "stepIndex": state.step_index,
        "awaitingApprovalStep": (state.phase == Phase::WaitingApproval).then_some(state.step_index),
        "currentPercent": generation.settings.routing.new_percent.as_percent(),
        "stepStartedAt": state.step_started_at.and_then(rfc3339),
        "holdRemainingSeconds": state.hold_remaining(&schedule, now).map(|d| d.as_secs_f64()),
        "consecutivePasses": state.consecutive_passes,
        "consecutiveFailures": state.consecutive_failures,
        "intervalSeconds": section.analysis.interval.as_secs_f64(),
        "steps": steps,
        "lastEvaluation": last_evaluation,
        "events": events,
        "stateFile": section.state_file.display().to_string(),
    })
}

/// The controller's background service: resumes from the state file, then runs one
/// evaluation per interval while `[rollout]` is enabled.
pub struct RolloutService {
    pub state: Arc<ProxyState>,
}

impl RolloutService {
    async fn resume(&self) {
        let proxy = &self.state;
        let rollout = &proxy.rollout;
        let path = proxy.live.load().settings.rollout.state_file.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .ok()
            .flatten();
        let mut progress = rollout.progress.lock().await;
        if let Some(file) = loaded {
            tracing::info!(
                phase = %file.rollout.phase,
                step = file.rollout.step_index,
                "rollout: resumed from the state file"
            );
            proxy
                .metrics
                .rollout
                .progress(file.rollout.phase, file.rollout.step_index);
            progress.state = Some(file.rollout);
            progress.last_report = file.last_report;
        }
    }
}

#[async_trait]
impl BackgroundService for RolloutService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let proxy = &self.state;
        let rollout = &proxy.rollout;
        if rollout.role() == Role::Follower {
            tracing::info!(
                "rollout: this proxy follows config.toml; another proxy runs the controller"
            );
            let _ = shutdown.changed().await;
            return;
        }
        self.resume().await;
        if proxy.live.load().settings.rollout.enabled {
            let mut progress = rollout.progress.lock().await;
            rollout.follow_config(&mut progress, proxy).await;
            let now = SystemTime::now();
            let _ = rollout
                .step(&mut progress, proxy, Input::Tick { now })
                .await;
        }
        loop {
            let interval = proxy.live.load().settings.rollout.analysis.interval;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if proxy.live.load().settings.rollout.enabled {
                rollout.interval(proxy).await;
            } else {
                // Nothing is judged while off; what was collected is no evidence for later.
                rollout.restart_window();
            }
        }
    }
}
