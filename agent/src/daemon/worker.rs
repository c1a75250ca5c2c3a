//! The apply worker: one thread that owns the event [`Emitter`] and applies profiles with
//! the stage engine, journaled so an interrupted apply resumes.
//!
//! The async side (hub I/O) sends it [`Job`]s; a newer profile replaces one still waiting.
//! Applies never overlap and are never started while the hub refuses this host's
//! credential (reliability §5 #25). A shutdown or a refusal stops the apply before its next
//! step; the journal lets the next start finish it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::profile::{Layer, Profile};
use cairn_proto::{EventKind, ProfileApplied};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::journal::{EndResult, Journal, LayerResult, ProfileRef, Record, View};
use super::spool::{Spool, SpoolSink};
use super::store::{self, StateDir};
use crate::engine::{self, ApplyOptions, NoJournal};
use crate::events::{Emitter, HumanSink, JsonSink};
use crate::host::Host;
use crate::profile::{self, ApplyError, Machine, Outcome};
use crate::state::LockError;
use cairn_userdata::model::Config;
use cairn_userdata::profile::Checked;

/// A verified profile as received from the hub: `STATE/profile.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredProfile {
    pub etag: String,
    pub received: String,
    pub profile: Profile,
}

impl StoredProfile {
    pub fn reference(&self) -> ProfileRef {
        ProfileRef {
            name: self.profile.name.clone(),
            version: self.profile.version,
            etag: self.etag.clone(),
        }
    }
}

/// The profile last applied completely: `STATE/applied.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub name: String,
    pub version: u64,
    pub etag: String,
    pub time: String,
    /// Layers present in the profile that this agent cannot apply yet.
    #[serde(default)]
    pub unsupported_layers: Vec<String>,
    /// The hub host id that was told (`profile_applied`); another one (after a new
    /// enrollment) is told again without re-applying.
    #[serde(default)]
    pub host: String,
}

/// A stored profile that passed every check, with its os layer decoded (once).
#[derive(Debug, Clone)]
pub struct Verified {
    pub stored: StoredProfile,
    pub checked: Checked,
}

/// Check a profile body from the hub before it is stored or applied: it parses, has a
/// version, passes [`Profile::validate`], and its os layer is valid user-data.
pub fn verify_profile(body: &[u8], etag: &str) -> Result<Verified, Vec<String>> {
    let profile: Profile = serde_json::from_slice(body).map_err(|e| vec![e.to_string()])?;
    verify(StoredProfile {
        etag: etag.to_string(),
        received: store::now(),
        profile,
    })
}

/// [`verify_profile`] for a profile already stored (`STATE/profile.json`, read at start:
/// checked again, as this agent's rules may be newer than the ones it was stored under).
/// Problems are located as `NAME@vVERSION…`.
pub fn verify(stored: StoredProfile) -> Result<Verified, Vec<String>> {
    let mut problems = Vec::new();
    if stored.profile.version == 0 {
        problems.push("version: a profile from the hub has a version ≥ 1".to_string());
    }
    let label = format!("{}@v{}", stored.profile.name, stored.profile.version);
    match cairn_userdata::profile::check(&label, stored.profile.clone()) {
        Ok(checked) if problems.is_empty() => Ok(Verified { stored, checked }),
        Ok(_) => Err(problems),
        Err(refused) => {
            problems.extend(refused.errors().map(ToString::to_string));
            Err(problems)
        }
    }
}

pub enum Job {
    Apply(Box<Verified>),
    /// An event from the async side (e.g. a profile the hub sent that failed verification).
    Report {
        kind: EventKind,
        message: String,
        data: Value,
    },
}

/// Flags the async side sets; `halt` is what the journal checks before every step.
#[derive(Default)]
pub struct Control {
    halt: Arc<AtomicBool>,
    shutdown: AtomicBool,
    paused: AtomicBool,
}

impl Control {
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.halt.store(true, Ordering::SeqCst);
    }
    /// Stop applying hub profiles (credential refused), or resume.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.halt
            .store(paused || self.is_shutdown(), Ordering::SeqCst);
    }
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Human,
    Json,
}

pub struct Worker {
    pub state: StateDir,
    pub root: PathBuf,
    pub host_id: String,
    pub spool: Arc<Spool>,
    pub output: Output,
    pub control: Arc<Control>,
    /// How often the applied profile's `reconcile` stage runs.
    pub reconcile_every: Duration,
    /// The hub as the artifact source of hub-assigned profiles (its policy is set from the
    /// pack settings at each apply); `None` when its TLS trust cannot be had.
    pub hub: Option<crate::artifacts::hub::HubSource>,
}

enum Done {
    /// Applied now, or already applied before.
    Applied,
    Failed,
    /// Stopped by a shutdown or a refusal; resumes later.
    Interrupted,
    /// Another apply (the CLI) holds the root's lock: try again soon.
    Locked,
}

/// Wait for a retry after an apply lock conflict.
const LOCKED_RETRY: Duration = Duration::from_secs(15);

impl Worker {
    /// The thread's body: returns when shut down or when every sender is gone.
    pub fn run(self, jobs: Receiver<Job>) {
        let mut emitter = Emitter::new(self.host_id.clone())
            .starting_at(self.spool.last_seq())
            .with_sink(Box::new(SpoolSink(self.spool.clone())));
        emitter = match self.output {
            Output::Json => emitter.with_sink(Box::new(JsonSink(std::io::stdout()))),
            Output::Human => emitter.with_sink(Box::new(HumanSink::new(std::io::stdout(), false))),
        };
        let host = Host::system(&self.root);
        let mut pending: Option<Box<Verified>> = None;
        let mut retry_at: Option<Instant> = None;
        let mut reconcile: Option<(Config, Instant, ProfileRef)> = None;
        loop {
            if self.control.is_shutdown() {
                break;
            }
            let now = Instant::now();
            let ready =
                pending.is_some() && !self.control.is_paused() && retry_at.is_none_or(|t| t <= now);
            let wait = if ready {
                Duration::ZERO
            } else {
                let mut w = Duration::from_secs(1);
                if let Some(t) = retry_at {
                    w = w.min(t.saturating_duration_since(now));
                }
                if let Some((_, t, _)) = &reconcile {
                    w = w.min(t.saturating_duration_since(now));
                }
                w
            };
            let first = match jobs.recv_timeout(wait) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for job in first
                .into_iter()
                .chain(std::iter::from_fn(|| jobs.try_recv().ok()))
            {
                match job {
                    Job::Apply(p) => {
                        pending = Some(p);
                        retry_at = None;
                    }
                    Job::Report {
                        kind,
                        message,
                        data,
                    } => emitter.emit(kind, "", "", "", message, data),
                }
            }
            if self.control.is_shutdown() {
                break;
            }
            if self.control.is_paused() {
                continue;
            }
            if retry_at.is_none_or(|t| t <= Instant::now()) {
                if let Some(p) = pending.take() {
                    retry_at = None;
                    match self.apply(&p, &host, &mut emitter) {
                        (Done::Applied, config) => {
                            reconcile = config.filter(has_reconcile).map(|c| {
                                (
                                    c,
                                    Instant::now() + self.reconcile_every,
                                    p.stored.reference(),
                                )
                            });
                        }
                        (Done::Failed, _) => reconcile = None,
                        (Done::Interrupted, _) => pending = Some(p),
                        (Done::Locked, _) => {
                            pending = Some(p);
                            retry_at = Some(Instant::now() + LOCKED_RETRY);
                        }
                    }
                }
            }
            if pending.is_none() {
                if let Some((config, due, profile)) = &mut reconcile {
                    if *due <= Instant::now() {
                        let opts = ApplyOptions {
                            stages: vec!["reconcile".into()],
                            dry_run: false,
                            owner: engine::Owner::Profile,
                        };
                        let outcome =
                            engine::apply_with(config, &host, &opts, &mut emitter, &mut NoJournal);
                        if outcome.ok() {
                            // Step events made the hub show the host as applying; say the
                            // profile is (still) applied.
                            emitter.emit(
                                EventKind::ProfileApplied,
                                "",
                                "",
                                "",
                                format!(
                                    "profile {} v{} reconciled: {} step(s) changed",
                                    profile.name, profile.version, outcome.changed
                                ),
                                ProfileApplied {
                                    profile: profile.name.clone(),
                                    version: profile.version,
                                    etag: profile.etag.clone(),
                                    changed: outcome.changed,
                                    tolerated: outcome.tolerated.len(),
                                    reconcile: true,
                                    ..ProfileApplied::default()
                                }
                                .to_data(),
                            );
                        }
                        *due = Instant::now() + self.reconcile_every;
                    }
                }
            }
        }
    }

    /// Apply `v` unless it is already applied; resume its journal when it was interrupted.
    /// Validated for this machine first: a profile that cannot be applied writes nothing
    /// into the root.
    fn apply(&self, v: &Verified, host: &Host, emitter: &mut Emitter) -> (Done, Option<Config>) {
        let sp = &v.stored;
        let profile = &sp.profile;
        let this = sp.reference();
        let view = View::read(&self.state.journal());
        let applied: Option<Applied> = store::read_json(&self.state.applied()).ok().flatten();
        let same = view.profile().as_ref() == Some(&this);
        let ended = view.end().map(|(r, _)| r);
        let already = applied
            .as_ref()
            .is_some_and(|a| a.etag == sp.etag && a.version == profile.version);
        // Applied, and nothing else was applied (or half-applied) since.
        if already && (view.profile().is_none() || (same && ended == Some(EndResult::Applied))) {
            tracing::info!(
                "profile {} v{} is already applied",
                profile.name,
                profile.version
            );
            if let Some(mut a) = applied.filter(|a| a.host != self.host_id) {
                a.host = self.host_id.clone();
                if let Err(e) = store::write_json(&self.state.applied(), &a) {
                    tracing::error!("writing {}: {e}", self.state.applied().display());
                }
                emitter.emit(
                    EventKind::ProfileApplied,
                    "",
                    "",
                    "",
                    format!(
                        "profile {} v{} was already applied on this host",
                        profile.name, profile.version
                    ),
                    ProfileApplied {
                        profile: profile.name.clone(),
                        version: profile.version,
                        etag: sp.etag.clone(),
                        already_applied: true,
                        unsupported_layers: a.unsupported_layers,
                        ..ProfileApplied::default()
                    }
                    .to_data(),
                );
            }
            return (Done::Applied, os_config(&v.checked));
        }
        let meta = json!({"profile": profile.name, "version": profile.version, "etag": sp.etag});
        // A site's pack mirrors; an unreadable settings file is reported and upstream used.
        let settings = crate::packs::Settings::load_default().unwrap_or_else(|e| {
            tracing::warn!("pack settings: {e}; using the upstream release locations");
            crate::packs::Settings::default()
        });
        // The chart registries the hub sent with this profile (none when it uses none).
        let registries = match store::read_json::<cairn_proto::registry::HostRegistries>(
            &self.state.registries(),
        ) {
            Ok(r) => r.unwrap_or_default().registries,
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; applying without chart registries",
                    self.state.registries().display()
                );
                Vec::new()
            }
        };
        let plan =
            match profile::validate_for(&v.checked, &Machine::of(host), &settings, &registries) {
                Ok(plan) => plan,
                Err(invalid) => {
                    let problems: Vec<String> =
                        invalid.findings().map(ToString::to_string).collect();
                    let message = format!(
                        "profile {} v{} cannot be applied to this host; nothing was applied: {}",
                        profile.name,
                        profile.version,
                        problems.join("; ")
                    );
                    emitter.emit(
                        EventKind::Error,
                        "",
                        "",
                        "",
                        &message,
                        with(&meta, json!({"problems": problems})),
                    );
                    // Recorded, so that `status` shows the failure.
                    match Journal::begin(&self.state.journal(), &this, self.control.halt.clone()) {
                        Ok(mut j) => j.record(&end(EndResult::Failed, &message)),
                        Err(e) => tracing::error!("writing the apply journal: {e}"),
                    }
                    return (Done::Failed, None);
                }
            };
        let resuming = same && ended != Some(EndResult::Applied);
        let journal = if resuming {
            Journal::resume(&self.state.journal(), &view, self.control.halt.clone())
        } else {
            Journal::begin(&self.state.journal(), &this, self.control.halt.clone())
        };
        let mut journal = match journal {
            Ok(j) => j,
            Err(e) => {
                emitter.emit(
                    EventKind::Error,
                    "",
                    "",
                    "",
                    format!("cannot write the apply journal: {e}"),
                    Value::Null,
                );
                return (Done::Failed, None);
            }
        };
        emitter.emit(
            EventKind::Phase,
            "",
            "",
            "",
            if resuming {
                format!(
                    "resuming profile {} v{} ({} step(s) already done)",
                    profile.name,
                    profile.version,
                    journal.completed_steps()
                )
            } else {
                format!("applying profile {} v{}", profile.name, profile.version)
            },
            with(&meta, json!({"phase": "profile", "resumed": resuming})),
        );
        // On `/` the services are started and readiness awaited; on another root the
        // files are installed and nothing is started (as `apply --root`).
        let mut opts = profile::ApplyOptions::for_host(host, self.state.artifacts());
        opts.install.proxy = crate::kubernetes::proxy::Proxy::from_env();
        // Artifacts (and pack digests) from the hub's mirror first, per `artifact_source`.
        opts.install.fetch.hub = self.hub.clone().map(|mut h| {
            h.policy = settings.artifact_source;
            h
        });
        let applied = match profile::apply(&plan, host, &opts, emitter, &mut journal) {
            Ok(Outcome::Applied(a)) => a,
            Ok(Outcome::Interrupted) => {
                tracing::info!(
                    "apply of {} v{} stopped before its next step",
                    profile.name,
                    profile.version
                );
                return (Done::Interrupted, None);
            }
            Err(ApplyError::Locked(e @ LockError::Held { .. })) => {
                // The CLI is applying: wait and try again, nothing failed.
                emitter.emit(EventKind::Error, "", "", "", e.to_string(), meta);
                return (Done::Locked, None);
            }
            Err(ApplyError::Os(f)) => {
                // The engine reported the failing step itself.
                let message = format!(
                    "{}: stage {}, step `{}` failed: {}",
                    f.source, f.stage, f.step, f.message
                );
                journal.record(&end(EndResult::Failed, &message));
                return (Done::Failed, None);
            }
            Err(ApplyError::Artifacts(e) | ApplyError::Kubernetes(e)) => {
                let message = format!("{}: {e}", describe(profile));
                emitter.emit(
                    EventKind::Error,
                    e.phase.stage(),
                    e.phase.as_str(),
                    "",
                    &message,
                    with(
                        &meta,
                        json!({"phase": e.phase, "status": e.status(),
                               "rolled_back": e.rolled_back()}),
                    ),
                );
                journal.record(&end(EndResult::Failed, &message));
                return (Done::Failed, None);
            }
            Err(e) => {
                let message = e.to_string();
                emitter.emit(EventKind::Error, "", "", "", &message, meta);
                journal.record(&end(EndResult::Failed, &message));
                return (Done::Failed, None);
            }
        };
        if let Some(report) = &applied.kubernetes {
            journal.record(&Record::Layer {
                layer: "kubernetes".into(),
                result: LayerResult::Applied,
                message: format!("{} ({} change(s))", describe(profile), report.changes.len()),
                time: store::now(),
            });
        }
        let unsupported: Vec<String> = Vec::new();
        let record = Applied {
            name: profile.name.clone(),
            version: profile.version,
            etag: sp.etag.clone(),
            time: store::now(),
            unsupported_layers: unsupported.clone(),
            host: self.host_id.clone(),
        };
        if let Err(e) = store::write_json(&self.state.applied(), &record) {
            tracing::error!("writing {}: {e}", self.state.applied().display());
        }
        journal.record(&end(EndResult::Applied, ""));
        emitter.emit(
            EventKind::ProfileApplied,
            "",
            "",
            "",
            format!(
                "profile {} v{} applied: {} step(s) changed, {} unchanged",
                profile.name, profile.version, applied.changed, applied.unchanged
            ),
            ProfileApplied {
                profile: profile.name.clone(),
                version: profile.version,
                etag: sp.etag.clone(),
                changed: applied.changed,
                unchanged: applied.unchanged,
                resumed: applied.resumed,
                tolerated: applied.tolerated,
                unsupported_layers: unsupported,
                ..ProfileApplied::default()
            }
            .to_data(),
        );
        (Done::Applied, os_config(&v.checked))
    }
}

fn end(result: EndResult, message: &str) -> Record {
    Record::End {
        result,
        message: message.into(),
        time: store::now(),
    }
}

fn with(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// The profile's Kubernetes layers, for messages: `kubernetes layer (k3s v1.30.4+k3s1)`.
fn describe(profile: &Profile) -> String {
    profile
        .layers
        .iter()
        .find_map(|l| match l {
            Layer::Kubernetes(k) => Some(format!(
                "kubernetes layer ({} {})",
                crate::kubernetes::flavor_name(k.flavor),
                k.version
            )),
            _ => None,
        })
        .unwrap_or_else(|| "kubernetes layer".to_string())
}

/// The os layer's user-data, for the `reconcile` stage.
fn os_config(checked: &Checked) -> Option<Config> {
    checked.has_os_layer().then(|| checked.os.clone())
}

fn has_reconcile(config: &Config) -> bool {
    config
        .stages
        .iter()
        .any(|s| s.name == "reconcile" || s.name.starts_with("reconcile."))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn profiles_are_verified_before_use() {
        let good = json!({"name": "edge", "version": 3, "layers": [
            {"os": {"user_data": "stages:\n  boot:\n    - files:\n        - path: /etc/x\n          content: hi\n"}},
            {"kubernetes": {"flavor": "k3s", "version": "v1.30.4+k3s1"}}
        ]});
        let v = verify_profile(good.to_string().as_bytes(), "\"e1\"").unwrap();
        assert_eq!(v.stored.profile.version, 3);
        assert_eq!(v.checked.os.step_count(), 1);
        assert_eq!(
            describe(&v.stored.profile),
            "kubernetes layer (k3s v1.30.4+k3s1)"
        );

        let bad_yaml = json!({"name": "edge", "version": 1, "layers": [
            {"os": {"user_data": "stages:\n  bot:\n    - commands: [\"true\"]\n"}}]});
        let problems = verify_profile(bad_yaml.to_string().as_bytes(), "e").unwrap_err();
        assert!(
            problems[0].starts_with("edge@v1#layers[0].os.user_data:2:"),
            "{problems:?}"
        );

        let no_version = json!({"name": "edge", "layers": [{"os": {"user_data": "a: 1"}}]});
        assert!(verify_profile(no_version.to_string().as_bytes(), "e").is_err());
        assert!(verify_profile(b"{not json", "e").is_err());
    }
}
