//! How a profile apply progresses, as both sides read it: the Kubernetes install phases and
//! how each ended, the stage every phase's event carries, the four parts the hub's fleet
//! view draws (and which stage belongs to which), and the `profile_applied` payload.
//!
//! The agent emits these and the hub reads them; defining them once here is what keeps the
//! two from drifting apart (a phase renamed on one side only would silently move hosts to
//! the wrong part of the fleet page).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stage of Kubernetes phase events (and of the engine steps the flavor writes).
pub const STAGE_KUBERNETES: &str = "kubernetes";
/// The stage of the `cni-ready` phase and of CNI manifests applied after the cluster is up.
pub const STAGE_CNI: &str = "cni";
/// The stage of the `addons` phase.
pub const STAGE_ADDONS: &str = "addons";
/// The lifecycle stage a profile's os layer may use for what runs once it is applied.
pub const STAGE_PROFILE_APPLIED: &str = "profile.applied";

/// One phase of a Kubernetes install, in the order they run. Spelled in kebab-case on the
/// wire (`host-prep`, `api-ready`): the `step` of a `phase` event and its `data.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Artifacts,
    HostPrep,
    Install,
    Start,
    ApiReady,
    NodeReady,
    CniReady,
    Addons,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 8] = [
        Phase::Artifacts,
        Phase::HostPrep,
        Phase::Install,
        Phase::Start,
        Phase::ApiReady,
        Phase::NodeReady,
        Phase::CniReady,
        Phase::Addons,
    ];

    /// The wire spelling, e.g. `node-ready`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Artifacts => "artifacts",
            Phase::HostPrep => "host-prep",
            Phase::Install => "install",
            Phase::Start => "start",
            Phase::ApiReady => "api-ready",
            Phase::NodeReady => "node-ready",
            Phase::CniReady => "cni-ready",
            Phase::Addons => "addons",
        }
    }

    /// The stage this phase's events name: [`STAGE_CNI`] for `cni-ready`,
    /// [`STAGE_ADDONS`] for `addons`, [`STAGE_KUBERNETES`] for the others. The fleet view
    /// places a host by it ([`FleetPhase::of_stage`]).
    pub const fn stage(self) -> &'static str {
        match self {
            Phase::CniReady => STAGE_CNI,
            Phase::Addons => STAGE_ADDONS,
            _ => STAGE_KUBERNETES,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a phase ended: `data.status` of its `phase` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// It ran and changed something.
    Done,
    /// It ran and found everything in place.
    Unchanged,
    /// Not run (nothing started in an image root, an agent node's readiness…).
    Skipped,
    Failed,
    /// It ran out of its time limit.
    Timeout,
    /// The new version failed and the previous one was put back and is running.
    RolledBack,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Done => "done",
            PhaseStatus::Unchanged => "unchanged",
            PhaseStatus::Skipped => "skipped",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Timeout => "timeout",
            PhaseStatus::RolledBack => "rolled_back",
        }
    }

    /// `Done` when something changed, else `Unchanged`.
    pub fn changed(changed: bool) -> PhaseStatus {
        if changed {
            PhaseStatus::Done
        } else {
            PhaseStatus::Unchanged
        }
    }
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four parts of a profile apply the hub's fleet view draws a host's progress through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetPhase {
    Os,
    Kubernetes,
    Cni,
    Addons,
}

impl FleetPhase {
    pub const ALL: [FleetPhase; 4] = [
        FleetPhase::Os,
        FleetPhase::Kubernetes,
        FleetPhase::Cni,
        FleetPhase::Addons,
    ];

    /// What the fleet page calls it.
    pub const fn label(self) -> &'static str {
        match self {
            FleetPhase::Os => "OS",
            FleetPhase::Kubernetes => "Kubernetes",
            FleetPhase::Cni => "CNI",
            FleetPhase::Addons => "Add-ons",
        }
    }

    /// Its position in [`FleetPhase::ALL`].
    pub const fn index(self) -> usize {
        match self {
            FleetPhase::Os => 0,
            FleetPhase::Kubernetes => 1,
            FleetPhase::Cni => 2,
            FleetPhase::Addons => 3,
        }
    }

    /// The part an event's stage belongs to: the Kubernetes stage and its `.before`/`.after`
    /// → Kubernetes, the CNI stage → CNI, the add-ons stage and `profile.applied` → Add-ons,
    /// every other stage (`rootfs` … `network`, lifecycle hooks, none) → OS. Stage names are
    /// matched case-insensitively, with or without a `.before`/`.after` suffix.
    pub fn of_stage(stage: &str) -> FleetPhase {
        let s = stage.trim().to_ascii_lowercase();
        let base = s
            .strip_suffix(".before")
            .or_else(|| s.strip_suffix(".after"))
            .unwrap_or(&s);
        match base {
            STAGE_KUBERNETES => FleetPhase::Kubernetes,
            STAGE_CNI => FleetPhase::Cni,
            STAGE_ADDONS | "add-ons" | STAGE_PROFILE_APPLIED => FleetPhase::Addons,
            _ => FleetPhase::Os,
        }
    }
}

/// `data` of a `profile_applied` event: which profile (`profile`, `version` — what the hub
/// records as the host's applied profile), the ETag it came with, and what the apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileApplied {
    pub profile: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// Steps (and Kubernetes changes) that changed something.
    #[serde(default)]
    pub changed: usize,
    #[serde(default)]
    pub unchanged: usize,
    /// Steps not run again because an interrupted apply had completed them.
    #[serde(default)]
    pub resumed: usize,
    /// Layers in the profile this agent did not apply.
    #[serde(default)]
    pub unsupported_layers: Vec<String>,
    /// Applied earlier; told again (e.g. after a new enrollment) without re-applying.
    #[serde(default, skip_serializing_if = "is_false")]
    pub already_applied: bool,
    /// The periodic `reconcile` stage ran; the profile is (still) applied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconcile: bool,
    /// Best-effort steps (`on_failure: continue`) that failed; the apply went on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tolerated: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `data` of a `step_failed` event: how long the step ran, and whether the apply went on
/// after it (`continued`: the step is best-effort, `on_failure: continue`). A failure with
/// `continued: false` stopped the apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailed {
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub continued: bool,
}

impl StepFailed {
    /// The event's `data`.
    pub fn to_data(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Read an event's `data` (missing fields default: an older agent's failure stopped).
    pub fn from_data(data: &serde_json::Value) -> StepFailed {
        serde_json::from_value(data.clone()).unwrap_or_default()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ProfileApplied {
    /// The event's `data`.
    pub fn to_data(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Read an event's `data`; `None` when it does not name a profile and version.
    pub fn from_data(data: &serde_json::Value) -> Option<ProfileApplied> {
        serde_json::from_value(data.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_failed_payload_shape() {
        let d = StepFailed {
            ms: 12,
            continued: true,
        }
        .to_data();
        assert_eq!(d, serde_json::json!({"ms": 12, "continued": true}));
        assert_eq!(
            StepFailed::from_data(&d),
            StepFailed {
                ms: 12,
                continued: true
            }
        );
        // An older agent's failure (no `continued`) stopped its apply.
        assert!(!StepFailed::from_data(&serde_json::json!({"ms": 1})).continued);
        assert!(!StepFailed::from_data(&serde_json::Value::Null).continued);
    }

    #[test]
    fn phases_are_spelled_as_on_the_wire() {
        for p in Phase::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            let back: Phase = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
        }
        assert_eq!(Phase::HostPrep.as_str(), "host-prep");
        assert_eq!(
            serde_json::to_string(&PhaseStatus::RolledBack).unwrap(),
            "\"rolled_back\""
        );
    }

    #[test]
    fn every_phase_lands_in_the_fleet_part_it_belongs_to() {
        let want = |p: Phase| match p {
            Phase::CniReady => FleetPhase::Cni,
            Phase::Addons => FleetPhase::Addons,
            _ => FleetPhase::Kubernetes,
        };
        for p in Phase::ALL {
            assert_eq!(FleetPhase::of_stage(p.stage()), want(p), "{p}");
        }
    }

    #[test]
    fn stages_map_to_fleet_parts() {
        for (stage, part) in [
            ("rootfs", FleetPhase::Os),
            ("initramfs.before", FleetPhase::Os),
            ("boot", FleetPhase::Os),
            ("network.after", FleetPhase::Os),
            ("", FleetPhase::Os),
            ("kubernetes-ish", FleetPhase::Os),
            ("kubernetes", FleetPhase::Kubernetes),
            ("kubernetes.before", FleetPhase::Kubernetes),
            ("Kubernetes", FleetPhase::Kubernetes),
            ("cni", FleetPhase::Cni),
            ("cni.after", FleetPhase::Cni),
            ("addons", FleetPhase::Addons),
            ("profile.applied", FleetPhase::Addons),
            ("profile.applied.after", FleetPhase::Addons),
        ] {
            assert_eq!(FleetPhase::of_stage(stage), part, "{stage}");
        }
        let labels: Vec<&str> = FleetPhase::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(labels, ["OS", "Kubernetes", "CNI", "Add-ons"]);
        for (i, p) in FleetPhase::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }

    #[test]
    fn profile_applied_round_trips_and_needs_a_name_and_version() {
        let p = ProfileApplied {
            profile: "edge".into(),
            version: 3,
            etag: "\"e1\"".into(),
            changed: 2,
            ..ProfileApplied::default()
        };
        let data = p.to_data();
        assert_eq!(data["profile"], "edge");
        assert_eq!(data["unsupported_layers"], serde_json::json!([]));
        assert!(data.get("already_applied").is_none(), "{data}");
        assert_eq!(ProfileApplied::from_data(&data), Some(p));
        assert_eq!(
            ProfileApplied::from_data(&serde_json::json!({"version": 2})),
            None
        );
    }
}
