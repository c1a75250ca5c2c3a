//! Progress events: one JSON object per line, the same object sent to the hub.
//!
//! The contract (docs/architecture.md, "Events"): `seq` increases per host and is how the hub drops
//! duplicates; `source` is `file:line` of the step that produced the event; nothing
//! secret may ever be placed in `message` or `data`.

use serde::{Deserialize, Serialize};

/// What happened. Serialized in snake_case (`stage_started`, `step_changed`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A stage begins; `data.steps` holds the number of steps it will run.
    StageStarted,
    /// A step made changes; `data.changes` lists them.
    StepChanged,
    /// A step found nothing to change (or was skipped by a condition: `data.skipped`).
    StepUnchanged,
    /// A step failed; `message` holds the error chain, `source` the step's location.
    StepFailed,
    /// A stage ended; `data.changed`, `data.unchanged`, `data.failed` count its steps.
    StageFinished,
    /// Bytes of a download so far: `data.bytes`, `data.total`, `data.rate`.
    DownloadProgress,
    /// A named phase of a long operation (Kubernetes install) began or ended.
    Phase,
    /// A whole cluster profile was applied.
    ProfileApplied,
    /// An error that belongs to no single step (e.g. a source file could not be read).
    Error,
}

impl EventKind {
    /// The wire spelling, e.g. `step_changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StageStarted => "stage_started",
            EventKind::StepChanged => "step_changed",
            EventKind::StepUnchanged => "step_unchanged",
            EventKind::StepFailed => "step_failed",
            EventKind::StageFinished => "stage_finished",
            EventKind::DownloadProgress => "download_progress",
            EventKind::Phase => "phase",
            EventKind::ProfileApplied => "profile_applied",
            EventKind::Error => "error",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-host sequence number, strictly increasing.
    pub seq: u64,
    /// RFC 3339 UTC timestamp.
    pub time: String,
    /// Host name or hub-assigned host id.
    pub host: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    /// `file:line` of the step in its user-data or profile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips_with_snake_case_kind() {
        let ev = Event {
            seq: 7,
            time: "2026-11-24T12:00:00Z".into(),
            host: "edge-1".into(),
            kind: EventKind::StepChanged,
            stage: "boot".into(),
            step: "users".into(),
            source: "user-data.yaml:12".into(),
            message: "created user alice".into(),
            data: serde_json::json!({"changes": ["created user alice"]}),
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(line.contains(r#""kind":"step_changed""#), "{line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
        for kind in [
            EventKind::StageStarted,
            EventKind::StepFailed,
            EventKind::DownloadProgress,
        ] {
            let s = serde_json::to_string(&kind).unwrap();
            assert_eq!(s, format!("\"{}\"", kind.as_str()));
        }
    }
}
