//! `STATE/status.json` (what the running daemon knows about its hub) and the
//! `cairn-agent status` report built from every state file, with no daemon needed.
//!
//! Nothing secret is ever read into the report: the identity shows its host id and hub, the
//! profile its name, version and ETag.

use std::fs::File;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::identity::Identity;
use super::journal::{EndResult, Record, View};
use super::spool::Spool;
use super::store::{self, StateDir};
use super::worker::{Applied, StoredProfile};

/// The hub connection as the daemon last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubStatus {
    /// `registering`, `connecting`, `connected`, `unreachable`, `busy`, `token_rejected`,
    /// `registration_refused`, `credential_rejected`, `ca_pin_mismatch`.
    pub state: String,
    /// When `state` last changed.
    pub since: String,
    /// Last successful exchange with the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<String>,
    /// The last failure, human-readable (never holds a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub started: String,
    pub agent_version: String,
    pub endpoint: String,
    pub hub: HubStatus,
    /// Events the hub refused outright (malformed for it) and that were dropped.
    #[serde(default)]
    pub dropped_events: u64,
    /// Set when the daemon stopped cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl DaemonStatus {
    pub fn save(&self, state: &StateDir) {
        if let Err(e) = store::write_json(&state.status(), self) {
            tracing::warn!("writing {}: {e}", state.status().display());
        }
    }
}

/// Is a daemon holding the state directory's lock?
fn daemon_running(state: &StateDir) -> bool {
    match File::open(state.lock()) {
        Ok(f) => nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock).is_err(),
        Err(_) => false,
    }
}

/// Everything `cairn-agent status` reports, as JSON.
pub fn report(state: &StateDir) -> Value {
    let running = daemon_running(state);
    let identity = match Identity::load(state) {
        Ok(Some(id)) => {
            json!({"host_id": id.host_id, "hub": id.hub, "registered_at": id.registered_at})
        }
        Ok(None) => Value::Null,
        Err(e) => json!({"error": e.to_string()}),
    };
    let daemon: Option<DaemonStatus> = store::read_json(&state.status()).ok().flatten();
    let held: Option<StoredProfile> = store::read_json(&state.profile()).ok().flatten();
    let applied: Option<Applied> = store::read_json(&state.applied()).ok().flatten();
    let view = View::read(&state.journal());
    let depth = Spool::depth(state);

    let hub = match &daemon {
        Some(d) => json!({
            "endpoint": d.endpoint,
            "state": d.hub.state,
            "since": d.hub.since,
            "last_contact": d.hub.last_contact,
            "last_error": d.hub.last_error,
        }),
        None => Value::Null,
    };
    let apply = apply_state(&view, applied.as_ref(), running);
    json!({
        "running": running,
        "pid": daemon.as_ref().filter(|_| running).map(|d| d.pid),
        "agent_version": env!("CARGO_PKG_VERSION"),
        "identity": identity,
        "hub": hub,
        "profile": {
            "held": held.as_ref().map(|p| json!({
                "name": p.profile.name, "version": p.profile.version, "etag": p.etag,
                "received": p.received,
            })),
            "applied": applied.as_ref().map(|a| json!({
                "name": a.name, "version": a.version, "etag": a.etag, "time": a.time,
                "unsupported_layers": a.unsupported_layers,
            })),
        },
        "apply": apply,
        "spool": {"pending": depth.pending, "acked_seq": depth.acked, "last_seq": depth.last_seq,
                  "dropped": daemon.as_ref().map_or(0, |d| d.dropped_events)},
    })
}

fn apply_state(view: &View, applied: Option<&Applied>, running: bool) -> Value {
    let Some(p) = view.profile() else {
        return json!({"state": "idle"});
    };
    let profile = json!({"name": p.name, "version": p.version, "etag": p.etag});
    if let Some((result, message)) = view.end() {
        if result == EndResult::Failed {
            let (stage, step, msg) = match view.failed() {
                Some(Record::StepFailed {
                    stage,
                    step,
                    message,
                    ..
                }) => (stage.as_str(), step.as_str(), message.as_str()),
                _ => ("", "", message),
            };
            return json!({"state": "failed", "profile": profile, "stage": stage, "step": step,
                          "message": msg, "started": view.begun_at()});
        }
        let done_here = applied.is_some_and(|a| a.etag == p.etag);
        return json!({"state": if done_here { "applied" } else { result.as_str() }, "profile": profile,
                      "message": message, "started": view.begun_at()});
    }
    let state = if running {
        "in_progress"
    } else {
        "interrupted"
    };
    match view.in_progress() {
        Some((stage, index, step, time)) => json!({
            "state": state, "profile": profile, "stage": stage, "index": index, "step": step,
            "step_started": time, "started": view.begun_at(),
        }),
        None => json!({"state": state, "profile": profile, "started": view.begun_at()}),
    }
}

/// Exit status of `status`: 1 when the last apply failed, the hub refuses this host, or the
/// hub's CA does not match the join string's pin.
pub fn exit_code(report: &Value) -> u8 {
    let failed = report["apply"]["state"] == "failed";
    let refused = matches!(
        report["hub"]["state"].as_str(),
        Some("token_rejected" | "credential_rejected" | "registration_refused" | "ca_pin_mismatch")
    );
    u8::from(failed || refused)
}

/// The human summary.
pub fn render(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    line(
        "daemon:",
        if r["running"] == true {
            format!("running (pid {})", r["pid"])
        } else {
            "not running".into()
        },
    );
    line(
        "host:",
        match &r["identity"] {
            Value::Null => "not registered".into(),
            id if id.get("error").is_some() => format!("identity unreadable: {}", s(&id["error"])),
            id => format!(
                "{} (registered {} with {})",
                s(&id["host_id"]),
                s(&id["registered_at"]),
                s(&id["hub"])
            ),
        },
    );
    let hub = &r["hub"];
    line(
        "hub:",
        if hub.is_null() {
            "never contacted".into()
        } else {
            let state = match hub["state"].as_str().unwrap_or("") {
                "connected" => "connected".to_string(),
                "registering" => "waiting for hub (registering)".into(),
                "unreachable" => "waiting for hub (unreachable)".into(),
                "busy" => "waiting for hub (busy, retrying later)".into(),
                "token_rejected" => "token rejected: the registration token was refused".into(),
                "registration_refused" => {
                    "registration refused (e.g. the host name is taken); see the error".into()
                }
                "ca_pin_mismatch" => "CA pin mismatch: the hub's CA is not the one the join \
                                        string pins; nothing was sent to it"
                    .into(),
                "credential_rejected" => {
                    "credential rejected: the hub no longer accepts this host; \
                     hub profiles are not applied"
                        .into()
                }
                other => other.to_string(),
            };
            let mut v = format!("{state} since {}", s(&hub["since"]));
            if let Some(t) = hub["last_contact"].as_str() {
                v.push_str(&format!("; last contact {t}"));
            }
            if let Some(e) = hub["last_error"].as_str().filter(|e| !e.is_empty()) {
                v.push_str(&format!("\n          last error: {e}"));
            }
            v
        },
    );
    let applied = &r["profile"]["applied"];
    line(
        "applied:",
        if applied.is_null() {
            "no profile applied yet".into()
        } else {
            let mut v = format!(
                "{} v{} at {}",
                s(&applied["name"]),
                applied["version"],
                s(&applied["time"])
            );
            if let Some(l) = applied["unsupported_layers"]
                .as_array()
                .filter(|l| !l.is_empty())
            {
                let names: Vec<String> = l.iter().map(s).collect();
                v.push_str(&format!(
                    " (not applied, not supported yet: {})",
                    names.join(", ")
                ));
            }
            v
        },
    );
    let a = &r["apply"];
    let p = format!("{} v{}", s(&a["profile"]["name"]), a["profile"]["version"]);
    line(
        "apply:",
        match a["state"].as_str().unwrap_or("idle") {
            "idle" => "idle".into(),
            "applied" => format!("{p} applied"),
            "failed" => format!(
                "FAILED {p}: stage {}, step `{}`: {}",
                s(&a["stage"]),
                s(&a["step"]),
                s(&a["message"])
            ),
            st @ ("in_progress" | "interrupted") => {
                let what = if st == "in_progress" {
                    "in progress"
                } else {
                    "interrupted (resumes when the daemon starts)"
                };
                if a["step"].is_string() {
                    format!(
                        "{p} {what}: stage {}, step `{}` since {}",
                        s(&a["stage"]),
                        s(&a["step"]),
                        s(&a["step_started"])
                    )
                } else {
                    format!("{p} {what}")
                }
            }
            other => format!("{p} {other}"),
        },
    );
    let sp = &r["spool"];
    line(
        "events:",
        format!(
            "{} waiting for the hub; last seq {}, acknowledged up to {}",
            sp["pending"], sp["last_seq"], sp["acked_seq"]
        ),
    );
    out
}
