//! The stage engine: runs the selected stages of a [`Config`] against a [`Host`].
//!
//! Stages run in canonical order, steps in document order, actions inside a step in
//! [`Action::rank`] order. Each step emits one outcome event. The first failing step stops
//! its stage and no later stage runs; the error names the step's file and line. A
//! best-effort step (`on_failure: continue`) is the exception: its failure is reported
//! (`step_failed` with `continued: true`), kept in [`Outcome::tolerated`], and the apply
//! goes on.

use std::time::Instant;

use cairn_proto::{EventKind, StepFailed};
use serde_json::json;

use crate::events::Emitter;
use crate::host::osrelease::target_arch;
use crate::host::{Cmd, Host};
use crate::state::{self, State};
use crate::steps::{self, StepCx};
use cairn_userdata::model::{Config, OnFailure, Step};
use cairn_userdata::stages;

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Stages to run (a base name also runs its `.before`/`.after`); empty = the default
    /// boot sequence.
    pub stages: Vec<String>,
    pub dry_run: bool,
    /// Whose settings this apply writes (see [`Owner`]).
    pub owner: Owner,
}

/// Whose settings an apply writes. The sysctl and module drop-ins of a stage are owned per
/// owner: an apply sweeps only the drop-ins that *its own* earlier applies wrote and no step
/// writes any more, so the device's user-data (the boot stages) and the hub's profile (the
/// daemon) never remove each other's settings, and a step of the same name in both writes
/// two files rather than one that flips at every apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owner {
    /// The device's own user-data: `cairn-agent apply FILE…` and `cairn-agent stage`.
    #[default]
    UserData,
    /// The OS layer of a cluster profile (the daemon, `cairn-agent apply PROFILE`).
    Profile,
    /// The Kubernetes layer's own steps (host preparation); its stage names are its own.
    Kubernetes,
}

impl Owner {
    /// The key of a stage's drop-ins in `state.json` (user-data keeps the bare stage name,
    /// as before owners existed, so devices upgraded in place keep their records).
    fn state_key(self, stage: &str) -> String {
        match self {
            Owner::UserData => stage.to_string(),
            Owner::Profile => format!("profile/{stage}"),
            Owner::Kubernetes => format!("kubernetes/{stage}"),
        }
    }

    /// The stage a `state.json` key belongs to, if the key is this owner's.
    fn stage_of(self, key: &str) -> Option<&str> {
        let (owner, stage) = match key.split_once('/') {
            Some(("profile", stage)) => (Owner::Profile, stage),
            Some(("kubernetes", stage)) => (Owner::Kubernetes, stage),
            _ => (Owner::UserData, key),
        };
        (owner == self).then_some(stage)
    }

    /// Whether an apply of this owner carries its owner's whole config, so that a stage it
    /// recorded and no longer has is gone (the Kubernetes layer applies its steps a phase at
    /// a time, and its stages are fixed by the code, not by user-data).
    fn applies_whole_config(self) -> bool {
        self != Owner::Kubernetes
    }

    /// The key a step's drop-in files are named after (`stage/step`, prefixed for a
    /// profile: `/etc/sysctl.d/90-cairn-profile-boot-NAME.conf`).
    fn drop_in_key(self, stage: &str, step: &str) -> String {
        match self {
            Owner::Profile => format!("profile/{stage}/{step}"),
            Owner::UserData | Owner::Kubernetes => format!("{stage}/{step}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub stage: String,
    pub step: String,
    pub source: String,
    pub message: String,
}

/// What failed, for callers that act on it (the daemon retries a [`FailureKind::Locked`]
/// apply later instead of recording it as failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A step failed: `stage`, `step` and `source` name it.
    Step,
    /// Removing the stale drop-ins of `stage` failed.
    Sweep,
    /// Another apply holds the root's lock; nothing ran.
    Locked,
    /// The lock file could not be opened; nothing ran.
    Lock,
}

/// A step's action failed: the action's kind (`files`, `users`…) and why.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
struct ActionError {
    action: &'static str,
    #[source]
    source: steps::StepError,
}

/// Removing a stage's stale drop-ins, or recording what it owns, failed.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Remove(#[from] steps::StepError),
    #[error("saving Cairn state: {0}")]
    Save(#[from] crate::host::fs::FsError),
}

/// What the engine does with a step, asked of a [`StepJournal`] before the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepGate {
    /// Run it (the normal case).
    Run,
    /// It completed in an earlier, interrupted apply of the same input: do not run it again;
    /// report it as `step_unchanged` with `data.resumed = true`.
    AlreadyDone,
    /// Stop before this step (shutdown requested); the outcome says `interrupted`.
    Stop,
}

/// How a step ended, told to a [`StepJournal`] after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult<'a> {
    Changed,
    Unchanged,
    /// Skipped by one of its conditions.
    Skipped,
    Failed(&'a str),
}

/// A hook around every step, for the daemon's crash journal ([`apply_with`]). `index` is
/// the step's position in its stage. Both methods default to doing nothing.
pub trait StepJournal {
    /// Asked before the step's conditions are checked.
    fn before_step(&mut self, _stage: &str, _index: usize, _step: &Step) -> StepGate {
        StepGate::Run
    }
    /// Told once the step's effects (and Cairn's state file) are on disk.
    fn after_step(&mut self, _stage: &str, _index: usize, _step: &Step, _result: StepResult<'_>) {}
}

/// The journal of a plain `apply`: runs every step, records nothing.
pub struct NoJournal;

impl StepJournal for NoJournal {}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changed: usize,
    /// Steps with nothing to change, skipped ones included.
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: Option<Failure>,
    /// Stages present in the input that were not selected (e.g. `after-install`).
    pub not_run: Vec<String>,
    pub changes: Vec<String>,
    /// Steps not run again because the journal had them completed (counted as unchanged).
    pub resumed: usize,
    /// The journal asked to stop before a step: the apply did not finish.
    pub interrupted: bool,
    /// Best-effort steps (`on_failure: continue`) that failed; the apply went on after each.
    pub tolerated: Vec<Failure>,
}

impl Outcome {
    /// No step stopped the apply (best-effort failures may have been tolerated).
    pub fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

fn selected(name: &str, wanted: &[String]) -> bool {
    if wanted.is_empty() {
        return stages::runs_by_default(name);
    }
    wanted.iter().any(|w| {
        name == w
            || name.strip_suffix(".before") == Some(w.as_str())
            || (name.strip_suffix(".after") == Some(w.as_str())
                && !stages::BASE_ORDER.contains(&name))
    })
}

/// Apply the selected stages. Never panics on bad input; failures are in the outcome.
pub fn apply(config: &Config, host: &Host, opts: &ApplyOptions, events: &mut Emitter) -> Outcome {
    apply_with(config, host, opts, events, &mut NoJournal)
}

/// [`apply`], asking `journal` before each step and telling it after (the daemon resumes an
/// interrupted apply this way: steps it recorded as completed are not run again).
pub fn apply_with(
    config: &Config,
    host: &Host,
    opts: &ApplyOptions,
    events: &mut Emitter,
    journal: &mut dyn StepJournal,
) -> Outcome {
    // A dry run writes nothing, not even a lock.
    if opts.dry_run {
        return run(config, host, opts, events, journal);
    }
    // Two applies on one root must never interleave.
    match state::ApplyLock::acquire(host) {
        Ok(lock) => apply_locked(config, host, opts, events, journal, &lock),
        Err(e) => {
            let kind = match e {
                state::LockError::Held { .. } => FailureKind::Locked,
                state::LockError::Open(_) => FailureKind::Lock,
            };
            let message = e.to_string();
            events.emit(
                EventKind::Error,
                "",
                "",
                "",
                &message,
                serde_json::Value::Null,
            );
            Outcome {
                failed: Some(Failure {
                    kind,
                    stage: String::new(),
                    step: String::new(),
                    source: host.root().display().to_string(),
                    message,
                }),
                ..Outcome::default()
            }
        }
    }
}

/// [`apply_with`] under the apply lock the caller already holds: a profile apply takes it
/// once, before its first write, for the os layer and every Kubernetes phase.
pub fn apply_locked(
    config: &Config,
    host: &Host,
    opts: &ApplyOptions,
    events: &mut Emitter,
    journal: &mut dyn StepJournal,
    _held: &state::ApplyLock,
) -> Outcome {
    run(config, host, opts, events, journal)
}

fn run(
    config: &Config,
    host: &Host,
    opts: &ApplyOptions,
    events: &mut Emitter,
    journal: &mut dyn StepJournal,
) -> Outcome {
    // A dry run acts on a view of the target whose runner refuses every command: no step
    // kind can execute anything, not even a query, on its dry-run path.
    let dry_host;
    let host = if opts.dry_run {
        dry_host = host.for_dry_run();
        &dry_host
    } else {
        host
    };
    let mut outcome = Outcome::default();
    let mut order: Vec<&cairn_userdata::model::Stage> = config.stages.iter().collect();
    order.sort_by_key(|s| stages::order_key(&s.name));
    let mut state = State::load(host);
    let boot_id = state::boot_id();
    let key_sources = config
        .hub
        .as_ref()
        .map(|h| &h.key_sources)
        .unwrap_or(&cairn_userdata::model::NO_KEY_SOURCES);
    // Every file entry of the steps this apply runs, in order: a path written by several
    // entries (a write_files entry and an append, a deferred entry) is compared with the
    // content the whole run leaves there.
    let run_files = steps::RunFiles::plan(
        order
            .iter()
            .filter(|s| selected(&s.name, &opts.stages))
            .flat_map(|s| s.steps.iter())
            .enumerate(),
    );
    let mut step_index = 0;
    for stage in order {
        if !selected(&stage.name, &opts.stages) {
            outcome.not_run.push(stage.name.clone());
            continue;
        }
        let stage_started = Instant::now();
        events.emit(
            EventKind::StageStarted,
            &stage.name,
            "",
            "",
            format!("stage {} started", stage.name),
            json!({"steps": stage.steps.len(), "dry_run": opts.dry_run}),
        );
        let (mut changed, mut unchanged, mut failed) = (0, 0, 0);
        for (index, step) in stage.steps.iter().enumerate() {
            let this_step = step_index;
            step_index += 1;
            let started = Instant::now();
            let source = step.location.short();
            match journal.before_step(&stage.name, index, step) {
                StepGate::Run => {}
                StepGate::AlreadyDone => {
                    outcome.resumed += 1;
                    outcome.unchanged += 1;
                    unchanged += 1;
                    events.emit(
                        EventKind::StepUnchanged,
                        &stage.name,
                        &step.name,
                        &source,
                        "completed before the agent restarted; not run again",
                        json!({"resumed": true, "ms": 0}),
                    );
                    continue;
                }
                StepGate::Stop => {
                    outcome.interrupted = true;
                    break;
                }
            }
            // A dry run does not run an `if:` command: it says it would evaluate it, and
            // reports the step's changes as conditional on it.
            let would_evaluate = step.conditions.if_cmd.as_deref().filter(|_| opts.dry_run);
            if let Some(reason) = unmet_condition(host, step, opts.dry_run) {
                outcome.skipped += 1;
                // A skipped step is an unchanged one (its event is step_unchanged), as in
                // the stage_finished counts; `skipped` says how many of them were skipped.
                outcome.unchanged += 1;
                unchanged += 1;
                events.emit(
                    EventKind::StepUnchanged,
                    &stage.name,
                    &step.name,
                    &source,
                    format!("skipped: {reason}"),
                    json!({"skipped": reason, "ms": started.elapsed().as_millis() as u64}),
                );
                journal.after_step(&stage.name, index, step, StepResult::Skipped);
                continue;
            }
            let step_key = format!("{}/{}", stage.name, step.name);
            let before = state.commands.len();
            let result = {
                let mut cx = StepCx::new(
                    host,
                    opts.dry_run,
                    &mut state,
                    step_key,
                    step.frequency,
                    boot_id.clone(),
                );
                cx.drop_in_key = opts.owner.drop_in_key(&stage.name, &step.name);
                cx.key_sources = key_sources;
                cx.run_files = Some(&run_files);
                cx.step_index = this_step;
                run_step(step, &mut cx)
            };
            let ms = started.elapsed().as_millis() as u64;
            match &result {
                Ok(changes) if changes.is_empty() => {
                    unchanged += 1;
                    outcome.unchanged += 1;
                    let (message, data) = match would_evaluate {
                        Some(cond) => (
                            format!("would evaluate `if: {cond}`; nothing to change either way"),
                            json!({"ms": ms, "would_evaluate": cond}),
                        ),
                        None => (String::new(), json!({"ms": ms})),
                    };
                    events.emit(
                        EventKind::StepUnchanged,
                        &stage.name,
                        &step.name,
                        &source,
                        message,
                        data,
                    );
                }
                Ok(changes) => {
                    changed += 1;
                    outcome.changed += 1;
                    let (message, data) = match would_evaluate {
                        Some(cond) => (
                            format!(
                                "would evaluate `if: {cond}`; would run if it succeeds: {} change(s)",
                                changes.len()
                            ),
                            json!({"changes": changes, "ms": ms, "dry_run": true,
                                   "would_evaluate": cond}),
                        ),
                        None => (
                            format!("{} change(s)", changes.len()),
                            json!({"changes": changes, "ms": ms, "dry_run": opts.dry_run}),
                        ),
                    };
                    events.emit(
                        EventKind::StepChanged,
                        &stage.name,
                        &step.name,
                        &source,
                        message,
                        data,
                    );
                    outcome.changes.extend(changes.iter().cloned());
                }
                Err(e) => {
                    failed += 1;
                    let message = e.to_string();
                    let continued = config.on_failure(step) == OnFailure::Continue;
                    let data = StepFailed { ms, continued };
                    events.emit(
                        EventKind::StepFailed,
                        &stage.name,
                        &step.name,
                        &source,
                        &message,
                        data.to_data(),
                    );
                    let failure = Failure {
                        kind: FailureKind::Step,
                        stage: stage.name.clone(),
                        step: step.name.clone(),
                        source: step.location.to_string(),
                        message,
                    };
                    if continued {
                        outcome.tolerated.push(failure);
                    } else {
                        outcome.failed = Some(failure);
                    }
                }
            }
            if !opts.dry_run && state.commands.len() != before {
                if let Err(e) = state.save(host) {
                    tracing::warn!("saving Cairn state: {e}");
                }
            }
            let message = result.as_ref().err().map(ToString::to_string);
            let told = match (&result, &message) {
                (Ok(changes), _) if changes.is_empty() => StepResult::Unchanged,
                (Ok(_), _) => StepResult::Changed,
                (Err(_), m) => StepResult::Failed(m.as_deref().unwrap_or_default()),
            };
            journal.after_step(&stage.name, index, step, told);
            if outcome.failed.is_some() {
                break;
            }
        }
        if outcome.interrupted {
            // The stage did not finish; a resumed apply starts it again.
            break;
        }
        if outcome.failed.is_none() {
            let swept = sweep_stage_drop_ins(host, stage, opts, &mut state);
            match report_sweep(&stage.name, swept, opts, events, &mut outcome) {
                Some(true) => changed += 1,
                Some(false) => failed += 1,
                None => {}
            }
        }
        events.emit(
            EventKind::StageFinished,
            &stage.name,
            "",
            "",
            format!("stage {} finished", stage.name),
            json!({"changed": changed, "unchanged": unchanged, "failed": failed,
                   "ms": stage_started.elapsed().as_millis() as u64}),
        );
        if outcome.failed.is_some() || outcome.interrupted {
            break;
        }
    }
    if outcome.failed.is_none() && !outcome.interrupted {
        for name in vanished_stages(config, opts, &state) {
            let started = Instant::now();
            events.emit(
                EventKind::StageStarted,
                &name,
                "",
                "",
                format!("stage {name} started (no steps left; removing what it wrote)"),
                json!({"steps": 0, "dry_run": opts.dry_run}),
            );
            let swept = record_drop_ins(host, opts, &mut state, &name, Default::default());
            let done = report_sweep(&name, swept, opts, events, &mut outcome);
            events.emit(
                EventKind::StageFinished,
                &name,
                "",
                "",
                format!("stage {name} finished"),
                json!({"changed": usize::from(done == Some(true)),
                       "unchanged": 0, "failed": usize::from(done == Some(false)),
                       "ms": started.elapsed().as_millis() as u64}),
            );
            if outcome.failed.is_some() {
                break;
            }
        }
    }
    outcome
}

/// Report a drop-in sweep of `stage` as its pseudo-step: `Some(true)` when it changed
/// something, `Some(false)` when it failed (recorded in the outcome), `None` when there was
/// nothing to remove.
fn report_sweep(
    stage: &str,
    swept: Result<Vec<String>, SweepError>,
    opts: &ApplyOptions,
    events: &mut Emitter,
    outcome: &mut Outcome,
) -> Option<bool> {
    match swept {
        Ok(changes) if changes.is_empty() => None,
        Ok(changes) => {
            outcome.changed += 1;
            events.emit(
                EventKind::StepChanged,
                stage,
                SWEEP_STEP,
                "",
                format!("{} change(s)", changes.len()),
                json!({"changes": changes, "dry_run": opts.dry_run}),
            );
            outcome.changes.extend(changes);
            Some(true)
        }
        Err(e) => {
            let message = e.to_string();
            events.emit(
                EventKind::StepFailed,
                stage,
                SWEEP_STEP,
                "",
                &message,
                json!({}),
            );
            outcome.failed = Some(Failure {
                kind: FailureKind::Sweep,
                stage: stage.into(),
                step: SWEEP_STEP.into(),
                source: String::new(),
                message,
            });
            Some(false)
        }
    }
}

/// Run every action of a step; the first error stops the step.
fn run_step(step: &Step, cx: &mut StepCx) -> Result<Vec<String>, ActionError> {
    let mut all = Vec::new();
    for action in &step.actions {
        let changes = steps::apply_action(action, cx).map_err(|source| ActionError {
            action: action.kind(),
            source,
        })?;
        all.extend(changes);
    }
    Ok(all)
}

/// The first condition of `step` that is not met, described, or `None` to run it. A dry
/// run never runs the `if:` command (it is left to the caller to report).
fn unmet_condition(host: &Host, step: &Step, dry_run: bool) -> Option<String> {
    let c = &step.conditions;
    if c.is_empty() {
        return None;
    }
    if let Some(re) = &c.node {
        let name = target_hostname(host);
        if !re.is_match(&name) {
            return Some(format!("node `{name}` does not match `{re}`"));
        }
    }
    if let Some(re) = &c.only_os {
        let os = &host.os().pretty_name;
        if !re.is_match(os) {
            return Some(format!("OS `{os}` does not match only_os `{re}`"));
        }
    }
    if let Some(re) = &c.only_os_version {
        let v = &host.os().version_id;
        if !re.is_match(v) {
            return Some(format!("OS version `{v}` does not match `{re}`"));
        }
    }
    if let Some(re) = &c.only_arch {
        let arch = target_arch(host);
        if !re.is_match(arch) {
            return Some(format!("architecture `{arch}` does not match `{re}`"));
        }
    }
    if let Some(m) = &c.only_service_manager {
        let systemd = host.target_has("systemctl");
        let openrc = host.target_has("openrc");
        let have = match (systemd, openrc) {
            (true, false) => "systemd",
            (false, true) => "openrc",
            _ => "unknown",
        };
        if have != m {
            return Some(format!("service manager is {have}, not {m}"));
        }
    }
    let exists = |p: &cairn_userdata::model::AbsPath| host.exists(p.as_str());
    if !c.if_files_any.is_empty() && !c.if_files_any.iter().any(exists) {
        return Some("none of if_files.any exist".into());
    }
    if let Some(p) = c.if_files_all.iter().find(|p| !exists(p)) {
        return Some(format!("{p} (if_files.all) does not exist"));
    }
    if let Some(p) = c.if_files_none.iter().find(|p| exists(p)) {
        return Some(format!("{p} (if_files.none) exists"));
    }
    if let Some(cond) = c.if_cmd.as_ref().filter(|_| !dry_run) {
        match host.run_in_target(Cmd::new("/bin/sh").arg("-c").arg(cond)) {
            Ok(out) if out.status == 0 => {}
            Ok(out) => return Some(format!("`if` exited with status {}", out.status)),
            Err(e) => return Some(format!("`if` could not run: {e}")),
        }
    }
    None
}

fn target_hostname(host: &Host) -> String {
    if host.is_live() {
        if let Ok(h) = nix::unistd::gethostname() {
            return h.to_string_lossy().into_owned();
        }
    }
    host.read_text("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The pseudo-step that reports drop-ins removed at the end of a stage.
const SWEEP_STEP: &str = "remove stale drop-ins";

/// After a stage completed: remove the drop-ins it owned before (under this apply's owner)
/// that none of its steps owns now (a step renamed or deleted), and record what it owns.
fn sweep_stage_drop_ins(
    host: &Host,
    stage: &cairn_userdata::model::Stage,
    opts: &ApplyOptions,
    state: &mut State,
) -> Result<Vec<String>, SweepError> {
    let now: std::collections::BTreeSet<String> = stage
        .steps
        .iter()
        .flat_map(|step| {
            let key = opts.owner.drop_in_key(&stage.name, &step.name);
            step.actions
                .iter()
                .filter_map(move |a| crate::steps::owned_drop_in(&key, a))
        })
        .collect();
    record_drop_ins(host, opts, state, &stage.name, now)
}

/// Sweep `stage`'s recorded drop-ins down to `now` and record `now` (nothing is recorded or
/// removed in a dry run).
fn record_drop_ins(
    host: &Host,
    opts: &ApplyOptions,
    state: &mut State,
    stage: &str,
    now: std::collections::BTreeSet<String>,
) -> Result<Vec<String>, SweepError> {
    let key = opts.owner.state_key(stage);
    let before = state.drop_ins.get(&key).cloned().unwrap_or_default();
    if before == now {
        return Ok(Vec::new());
    }
    let changes = crate::steps::sweep_drop_ins(host, opts.dry_run, &before, &now)?;
    if !opts.dry_run {
        if now.is_empty() {
            state.drop_ins.remove(&key);
        } else {
            state.drop_ins.insert(key, now);
        }
        state.save(host)?;
    }
    Ok(changes)
}

/// Stages this apply would have run (selected) that its owner recorded drop-ins for but the
/// config no longer has at all: their drop-ins go too.
fn vanished_stages(config: &Config, opts: &ApplyOptions, state: &State) -> Vec<String> {
    if !opts.owner.applies_whole_config() {
        return Vec::new();
    }
    state
        .drop_ins
        .keys()
        .filter_map(|k| opts.owner.stage_of(k))
        .filter(|stage| selected(stage, &opts.stages))
        .filter(|stage| !config.stages.iter().any(|s| s.name == *stage))
        .map(str::to_string)
        .collect()
}
