//! How events move a host's status: a pure function, so the rules are tested on their own.
//!
//! Events are applied in `seq` order, and only those newer than the event that last set the
//! status (`status_seq`): a late, re-sent or out-of-order old event is stored but cannot
//! pull the status back.

use cairn_proto::{Event, EventKind, FleetPhase, ProfileApplied, StepFailed};
use serde::Serialize;

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Registered; has not reported any apply yet.
    Registered,
    /// Applying stages (a `stage_started` or step event since the last result).
    Applying,
    /// A whole profile was applied (`profile_applied`).
    Applied,
    /// A step or the agent failed (`step_failed`, `error`).
    Failed,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Registered => "registered",
            HostStatus::Applying => "applying",
            HostStatus::Applied => "applied",
            HostStatus::Failed => "failed",
        }
    }

    /// Parse the stored spelling; unknown text reads as `registered`.
    pub fn parse(s: &str) -> HostStatus {
        match s {
            "applying" => HostStatus::Applying,
            "applied" => HostStatus::Applied,
            "failed" => HostStatus::Failed,
            _ => HostStatus::Registered,
        }
    }
}

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a host that events change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    pub status: HostStatus,
    pub status_seq: u64,
    pub stage: String,
    pub step: String,
    pub last_error: String,
    pub applied_profile: Option<String>,
    pub applied_version: Option<u64>,
}

/// Longest last-error text kept on the host (the full message stays in the event).
const MAX_ERROR_CHARS: usize = 2000;

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_ERROR_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_ERROR_CHARS).collect();
        out.push('…');
        out
    }
}

fn describe_failure(ev: &Event) -> String {
    let mut where_ = String::new();
    if !ev.stage.is_empty() {
        where_.push_str(&format!("stage {}", ev.stage));
    }
    if !ev.step.is_empty() {
        if !where_.is_empty() {
            where_.push_str(", ");
        }
        where_.push_str(&format!("step {}", ev.step));
    }
    if !ev.source.is_empty() {
        where_.push_str(&format!(" ({})", ev.source));
    }
    let msg = if ev.message.is_empty() {
        "failed"
    } else {
        ev.message.as_str()
    };
    if where_.is_empty() {
        clip(msg)
    } else {
        clip(&format!("{where_}: {msg}"))
    }
}

/// Apply `events` (any order; duplicates of already-applied seqs are skipped) to `p`.
pub(crate) fn advance(p: &mut Progress, events: &[&Event]) {
    let mut sorted: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| e.seq > p.status_seq)
        .collect();
    sorted.sort_by_key(|e| e.seq);
    for ev in sorted {
        if ev.seq <= p.status_seq {
            continue; // same seq twice in one batch
        }
        p.status_seq = ev.seq;
        match ev.kind {
            EventKind::StageStarted => {
                p.status = HostStatus::Applying;
                p.stage = ev.stage.clone();
                p.step.clear();
            }
            EventKind::StepChanged | EventKind::StepUnchanged => {
                p.status = HostStatus::Applying;
                if !ev.stage.is_empty() {
                    p.stage = ev.stage.clone();
                }
                p.step = ev.step.clone();
            }
            // A best-effort step failed and the apply went on: the host is still applying;
            // the failure is shown as its last error.
            EventKind::StepFailed if StepFailed::from_data(&ev.data).continued => {
                p.status = HostStatus::Applying;
                if !ev.stage.is_empty() {
                    p.stage = ev.stage.clone();
                }
                p.step = ev.step.clone();
                p.last_error = format!("{} (best-effort; the apply went on)", describe_failure(ev));
            }
            EventKind::StepFailed | EventKind::Error => {
                p.status = HostStatus::Failed;
                if !ev.stage.is_empty() {
                    p.stage = ev.stage.clone();
                }
                if !ev.step.is_empty() {
                    p.step = ev.step.clone();
                }
                p.last_error = describe_failure(ev);
            }
            EventKind::StageFinished => {
                if !ev.stage.is_empty() {
                    p.stage = ev.stage.clone();
                }
                p.step.clear();
            }
            EventKind::DownloadProgress | EventKind::Phase => {
                if !ev.stage.is_empty() {
                    p.stage = ev.stage.clone();
                }
                if !ev.step.is_empty() {
                    p.step = ev.step.clone();
                }
            }
            EventKind::ProfileApplied => {
                p.status = HostStatus::Applied;
                p.stage.clear();
                p.step.clear();
                let applied = ProfileApplied::from_data(&ev.data);
                // Best-effort failures of this apply stay visible as the last error.
                if applied.as_ref().is_none_or(|a| a.tolerated == 0) {
                    p.last_error.clear();
                }
                if let Some(applied) = applied {
                    p.applied_profile = Some(applied.profile);
                    p.applied_version = Some(applied.version);
                }
            }
        }
    }
}

/// The phases the fleet page draws a host's progress through, in order (the labels of
/// [`FleetPhase::ALL`], defined with the agent's side in `cairn_proto::progress`).
pub const PHASES: [&str; 4] = [
    FleetPhase::Os.label(),
    FleetPhase::Kubernetes.label(),
    FleetPhase::Cni.label(),
    FleetPhase::Addons.label(),
];

/// Which phase (an index into [`PHASES`]) a stage belongs to: see [`FleetPhase::of_stage`].
pub fn phase_of_stage(stage: &str) -> usize {
    FleetPhase::of_stage(stage).index()
}

/// Where one phase of a host's apply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Pending,
    Active,
    Done,
    Failed,
}

/// A host's progress through [`PHASES`], as the fleet page draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseProgress {
    /// Index into [`PHASES`] of the phase the host is in (or failed in); `None` before the
    /// first event and once applied.
    pub phase: Option<usize>,
    /// One state per phase of [`PHASES`].
    pub phases: [PhaseState; 4],
    /// 0 to 100: a quarter per finished phase, half a quarter for the running one; 100 once
    /// the profile is applied.
    pub percent: u8,
}

/// Derive the progress bar from a host's status and current stage (the stage the last
/// event named; `profile_applied` moves the host to `applied`, which is a full bar).
pub fn phase_progress(status: HostStatus, stage: &str) -> PhaseProgress {
    let mut phases = [PhaseState::Pending; 4];
    match status {
        HostStatus::Registered => PhaseProgress {
            phase: None,
            phases,
            percent: 0,
        },
        HostStatus::Applied => PhaseProgress {
            phase: None,
            phases: [PhaseState::Done; 4],
            percent: 100,
        },
        HostStatus::Applying | HostStatus::Failed => {
            let p = phase_of_stage(stage);
            for s in phases.iter_mut().take(p) {
                *s = PhaseState::Done;
            }
            let (state, extra) = if status == HostStatus::Failed {
                (PhaseState::Failed, 0)
            } else {
                (PhaseState::Active, 12)
            };
            phases[p] = state;
            // p ≤ 3, so this is at most 87.
            let percent = u8::try_from(p * 25 + extra).unwrap_or(99);
            PhaseProgress {
                phase: Some(p),
                phases,
                percent,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: EventKind, stage: &str, step: &str, message: &str) -> Event {
        Event {
            seq,
            time: "2026-01-01T00:00:00Z".into(),
            host: "h".into(),
            kind,
            stage: stage.into(),
            step: step.into(),
            source: String::new(),
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    fn fresh() -> Progress {
        Progress {
            status: HostStatus::Registered,
            status_seq: 0,
            stage: String::new(),
            step: String::new(),
            last_error: String::new(),
            applied_profile: None,
            applied_version: None,
        }
    }

    #[test]
    fn a_run_moves_through_applying_to_applied() {
        let mut p = fresh();
        let a = ev(1, EventKind::StageStarted, "boot", "", "");
        let b = ev(2, EventKind::StepChanged, "boot", "users", "");
        advance(&mut p, &[&a, &b]);
        assert_eq!(p.status, HostStatus::Applying);
        assert_eq!((p.stage.as_str(), p.step.as_str()), ("boot", "users"));
        let mut done = ev(3, EventKind::ProfileApplied, "", "", "");
        done.data = serde_json::json!({"profile": "edge", "version": 4});
        advance(&mut p, &[&done]);
        assert_eq!(p.status, HostStatus::Applied);
        assert_eq!(p.applied_profile.as_deref(), Some("edge"));
        assert_eq!(p.applied_version, Some(4));
        assert_eq!(p.stage, "");
    }

    #[test]
    fn failure_names_stage_step_and_source() {
        let mut p = fresh();
        let mut f = ev(
            5,
            EventKind::StepFailed,
            "network",
            "dns",
            "resolv.conf: permission denied",
        );
        f.source = "user-data.yaml:12".into();
        advance(&mut p, &[&f]);
        assert_eq!(p.status, HostStatus::Failed);
        assert_eq!(
            p.last_error,
            "stage network, step dns (user-data.yaml:12): resolv.conf: permission denied"
        );
    }

    #[test]
    fn a_best_effort_failure_keeps_the_host_applying_and_shows_it() {
        let mut p = fresh();
        let mut f = ev(
            5,
            EventKind::StepFailed,
            "boot",
            "reload",
            "networkctl: exit 1",
        );
        f.data = StepFailed {
            ms: 3,
            continued: true,
        }
        .to_data();
        advance(&mut p, &[&f]);
        assert_eq!(p.status, HostStatus::Applying);
        assert_eq!(p.step, "reload");
        assert!(
            p.last_error.contains("networkctl: exit 1"),
            "{}",
            p.last_error
        );
        assert!(p.last_error.contains("best-effort"), "{}", p.last_error);
        let mut done = ev(6, EventKind::ProfileApplied, "", "", "");
        done.data = ProfileApplied {
            profile: "edge".into(),
            version: 2,
            tolerated: 1,
            ..ProfileApplied::default()
        }
        .to_data();
        advance(&mut p, &[&done]);
        assert_eq!(p.status, HostStatus::Applied);
        assert!(p.last_error.contains("networkctl"), "{}", p.last_error);
        // The same event without `continued` stops the apply: failed.
        let mut q = fresh();
        let mut stop = f.clone();
        stop.data = serde_json::json!({"ms": 3});
        advance(&mut q, &[&stop]);
        assert_eq!(q.status, HostStatus::Failed);
    }

    #[test]
    fn older_events_cannot_pull_the_status_back() {
        let mut p = fresh();
        let mut done = ev(10, EventKind::ProfileApplied, "", "", "");
        done.data = serde_json::json!({"version": 2});
        let late = ev(7, EventKind::StepFailed, "boot", "x", "old failure");
        // Out of order in one batch: sorted by seq, so the failure comes first.
        advance(&mut p, &[&done, &late]);
        assert_eq!(p.status, HostStatus::Applied);
        assert_eq!(p.last_error, "");
        // Arriving in a later batch: ignored for status.
        let later_old = ev(8, EventKind::StageStarted, "boot", "", "");
        advance(&mut p, &[&later_old]);
        assert_eq!(p.status, HostStatus::Applied);
        assert_eq!(p.status_seq, 10);
    }

    #[test]
    fn stages_map_to_phases() {
        for (stage, phase) in [
            ("rootfs", 0),
            ("initramfs.before", 0),
            ("boot", 0),
            ("network.after", 0),
            ("", 0),
            ("kubernetes", 1),
            ("kubernetes.before", 1),
            ("cni", 2),
            ("cni.after", 2),
            ("addons", 3),
            ("profile.applied", 3),
        ] {
            assert_eq!(phase_of_stage(stage), phase, "{stage}");
        }
    }

    #[test]
    fn progress_bar_follows_status_and_stage() {
        use PhaseState::*;
        let p = phase_progress(HostStatus::Registered, "");
        assert_eq!((p.phase, p.phases, p.percent), (None, [Pending; 4], 0));
        let p = phase_progress(HostStatus::Applying, "boot");
        assert_eq!(
            (p.phase, p.phases, p.percent),
            (Some(0), [Active, Pending, Pending, Pending], 12)
        );
        let p = phase_progress(HostStatus::Applying, "cni");
        assert_eq!(
            (p.phase, p.phases, p.percent),
            (Some(2), [Done, Done, Active, Pending], 62)
        );
        let p = phase_progress(HostStatus::Failed, "kubernetes");
        assert_eq!(
            (p.phase, p.phases, p.percent),
            (Some(1), [Done, Failed, Pending, Pending], 25)
        );
        let p = phase_progress(HostStatus::Applied, "");
        assert_eq!((p.phase, p.phases, p.percent), (None, [Done; 4], 100));
    }
}
