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
use cairn_proto::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::journal::{Journal, ProfileRef, Record, View};
use super::spool::{Spool, SpoolSink};
use super::store::{self, StateDir};
use crate::engine::{self, ApplyOptions, NoJournal};
use crate::events::{Emitter, HumanSink, JsonSink};
use crate::host::Host;
use cairn_userdata::decode;
use cairn_userdata::diag::Diagnostics;
use cairn_userdata::model::Config;
use cairn_userdata::stages;
use cairn_userdata::validate;

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

/// Check a profile body from the hub before it is stored or applied: it parses, passes
/// [`Profile::validate`], has a version, and its OS layer is valid user-data.
pub fn verify_profile(body: &[u8], etag: &str) -> Result<StoredProfile, Vec<String>> {
    let profile: Profile = serde_json::from_slice(body).map_err(|e| vec![e.to_string()])?;
    let mut problems: Vec<String> = profile
        .validate()
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    if profile.version == 0 {
        problems.push("version: a profile from the hub has a version ≥ 1".into());
    }
    for layer in &profile.layers {
        if let Layer::Os(os) = layer {
            let (_, diags) = decode_os(&profile, &os.user_data);
            problems.extend(diags.errors().map(|d| d.to_string()));
        }
    }
    if problems.is_empty() {
        Ok(StoredProfile {
            etag: etag.to_string(),
            received: store::now(),
            profile,
        })
    } else {
        Err(problems)
    }
}

/// Decode an OS layer's user-data; its locations read `NAME@vN/os:LINE`.
fn decode_os(profile: &Profile, text: &str) -> (Config, Diagnostics) {
    let mut diags = Diagnostics::new(false);
    let label = format!("{}@v{}/os", profile.name, profile.version);
    let config = decode::decode_text(&label, text, &mut diags);
    validate::check(&config, &mut diags);
    (config, diags)
}

pub enum Job {
    Apply(Box<StoredProfile>),
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
        let mut pending: Option<Box<StoredProfile>> = None;
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
                            reconcile = config
                                .filter(has_reconcile)
                                .map(|c| (c, Instant::now() + self.reconcile_every, p.reference()));
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
                                json!({"profile": profile.name, "version": profile.version,
                                       "etag": profile.etag, "reconcile": true,
                                       "changed": outcome.changed}),
                            );
                        }
                        *due = Instant::now() + self.reconcile_every;
                    }
                }
            }
        }
    }

    /// Apply `sp` unless it is already applied; resume its journal when it was interrupted.
    fn apply(
        &self,
        sp: &StoredProfile,
        host: &Host,
        emitter: &mut Emitter,
    ) -> (Done, Option<Config>) {
        let profile = &sp.profile;
        let this = sp.reference();
        let view = View::read(&self.state.journal());
        let applied: Option<Applied> = store::read_json(&self.state.applied()).ok().flatten();
        let same = view.profile().as_ref() == Some(&this);
        let ended = view.end().map(|(r, _)| r.to_string());
        let already = applied
            .as_ref()
            .is_some_and(|a| a.etag == sp.etag && a.version == profile.version);
        // Applied, and nothing else was applied (or half-applied) since.
        if already && (view.profile().is_none() || (same && ended.as_deref() == Some("applied"))) {
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
                    json!({"profile": profile.name, "version": profile.version,
                           "etag": sp.etag, "already_applied": true,
                           "unsupported_layers": a.unsupported_layers}),
                );
            }
            let config = os_config(profile);
            return (Done::Applied, config);
        }
        let resuming = same && ended.as_deref() != Some("applied");
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
        let meta = json!({"profile": profile.name, "version": profile.version, "etag": sp.etag});
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
        let mut unsupported = Vec::new();
        let mut totals = (0usize, 0usize, 0usize);
        let mut applied_config = None;
        for layer in &profile.layers {
            match layer {
                Layer::Os(os) => {
                    let (config, diags) = decode_os(profile, &os.user_data);
                    if diags.has_errors() {
                        let problems: Vec<String> = diags.errors().map(|d| d.to_string()).collect();
                        let message = format!(
                            "the os layer of profile {} v{} is invalid: {}",
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
                        journal.record(&end("failed", &message));
                        return (Done::Failed, None);
                    }
                    let mut stage_names: Vec<String> = stages::DEFAULT_BASES
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    stage_names.push("profile.applied".into());
                    let opts = ApplyOptions {
                        stages: stage_names,
                        dry_run: false,
                        owner: engine::Owner::Profile,
                    };
                    let outcome = engine::apply_with(&config, host, &opts, emitter, &mut journal);
                    if outcome.interrupted {
                        tracing::info!(
                            "apply of {} v{} stopped before its next step",
                            profile.name,
                            profile.version
                        );
                        return (Done::Interrupted, None);
                    }
                    if let Some(f) = &outcome.failed {
                        if f.step.is_empty() && f.message.contains("another cairn-agent apply") {
                            return (Done::Locked, None);
                        }
                        let message = format!(
                            "{}: stage {}, step `{}` failed: {}",
                            f.source, f.stage, f.step, f.message
                        );
                        journal.record(&end("failed", &message));
                        return (Done::Failed, None);
                    }
                    totals.0 += outcome.changed;
                    totals.1 += outcome.unchanged;
                    totals.2 += outcome.resumed;
                    applied_config = Some(config);
                }
                Layer::Kubernetes(_) => {
                    // The kubernetes, cni and addons layers go through the install
                    // pipeline together, each phase reported as an event. On `/` the
                    // services are started and readiness awaited; on another root the
                    // files are installed and nothing is started (as `apply --root`).
                    let opts = crate::kubernetes::install::InstallOptions {
                        start: host.is_live(),
                        proxy: crate::kubernetes::proxy::Proxy::from_env(),
                        ..Default::default()
                    };
                    match crate::kubernetes::install::install_profile(profile, host, &opts, emitter)
                    {
                        Ok(report) => {
                            let n = report.as_ref().map_or(0, |r| r.changes.len());
                            totals.0 += n;
                            journal.record(&Record::Layer {
                                layer: "kubernetes".into(),
                                result: "applied".into(),
                                message: format!("{} ({n} change(s))", describe(layer)),
                                time: store::now(),
                            });
                        }
                        Err(e) => {
                            let message = format!("{}: {e}", describe(layer));
                            emitter.emit(
                                EventKind::Error,
                                "kubernetes",
                                e.phase,
                                "",
                                &message,
                                with(
                                    &meta,
                                    json!({"phase": e.phase, "rolled_back": e.rolled_back}),
                                ),
                            );
                            journal.record(&end("failed", &message));
                            return (Done::Failed, None);
                        }
                    }
                }
                // Installed with the kubernetes layer, by the same pipeline.
                Layer::Cni(_) | Layer::Addons(_) => {}
                #[allow(unreachable_patterns)]
                other => {
                    let what = describe(other);
                    let message = format!("{what}: not supported by this agent yet; not applied");
                    emitter.emit(
                        EventKind::Phase,
                        "",
                        "",
                        "",
                        &message,
                        with(
                            &meta,
                            json!({"phase": "layer", "layer": other.kind(), "supported": false}),
                        ),
                    );
                    journal.record(&Record::Layer {
                        layer: other.kind().into(),
                        result: "unsupported".into(),
                        message,
                        time: store::now(),
                    });
                    unsupported.push(other.kind().to_string());
                }
            }
        }
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
        journal.record(&end("applied", ""));
        let mut message = format!(
            "profile {} v{} applied: {} step(s) changed, {} unchanged",
            profile.name, profile.version, totals.0, totals.1
        );
        if !unsupported.is_empty() {
            message.push_str(&format!(
                "; not applied (not supported yet): {}",
                unsupported.join(", ")
            ));
        }
        emitter.emit(
            EventKind::ProfileApplied,
            "",
            "",
            "",
            message,
            with(
                &meta,
                json!({"changed": totals.0, "unchanged": totals.1, "resumed": totals.2,
                       "unsupported_layers": unsupported}),
            ),
        );
        (Done::Applied, applied_config)
    }
}

fn end(result: &str, message: &str) -> Record {
    Record::End {
        result: result.into(),
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

fn describe(layer: &Layer) -> String {
    match layer {
        Layer::Kubernetes(k) => format!(
            "kubernetes layer ({} {})",
            serde_json::to_value(k.flavor)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            k.version
        ),
        Layer::Cni(c) => format!(
            "cni layer ({} {})",
            serde_json::to_value(c.cni)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            c.version
        ),
        other => format!("{} layer", other.kind()),
    }
}

fn os_config(profile: &Profile) -> Option<Config> {
    profile.layers.iter().find_map(|l| match l {
        Layer::Os(os) => {
            let (c, d) = decode_os(profile, &os.user_data);
            (!d.has_errors()).then_some(c)
        }
        _ => None,
    })
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
        let sp = verify_profile(good.to_string().as_bytes(), "\"e1\"").unwrap();
        assert_eq!(sp.profile.version, 3);
        assert_eq!(
            describe(&sp.profile.layers[1]),
            "kubernetes layer (k3s v1.30.4+k3s1)"
        );

        let bad_yaml = json!({"name": "edge", "version": 1, "layers": [
            {"os": {"user_data": "stages:\n  bot:\n    - commands: [\"true\"]\n"}}]});
        let problems = verify_profile(bad_yaml.to_string().as_bytes(), "e").unwrap_err();
        assert!(problems[0].starts_with("edge@v1/os:2:"), "{problems:?}");

        let no_version = json!({"name": "edge", "layers": [{"os": {"user_data": "a: 1"}}]});
        assert!(verify_profile(no_version.to_string().as_bytes(), "e").is_err());
        assert!(verify_profile(b"{not json", "e").is_err());
    }
}
