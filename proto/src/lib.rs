//! Types shared by the Cairn agent and hub.
//!
//! Everything that crosses the wire or a process boundary is defined once here: the
//! progress [`event::Event`] that `cairn-agent apply --output json` prints and the hub
//! stores, the hub's `/v1` request and response bodies ([`protocol`], described in
//! docs/protocol.md), cluster profiles ([`profile`]), how an apply progresses ([`progress`]:
//! Kubernetes phases, the fleet view's parts, the `profile_applied` payload) and the join
//! string a device enrols with ([`join`]). Both sides depend on this crate so the shapes
//! cannot drift apart.

pub mod event;
pub mod join;
pub mod profile;
pub mod progress;
pub mod protocol;
pub mod registry;

pub use event::{Event, EventKind};
pub use profile::Profile;
pub use progress::{FleetPhase, Phase, PhaseStatus, ProfileApplied, StepFailed};
