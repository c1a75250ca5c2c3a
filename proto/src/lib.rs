//! Types shared by the Cairn agent and hub.
//!
//! Everything that crosses the wire or a process boundary is defined once here: the
//! progress [`event::Event`] that `cairn-agent apply --output json` prints and the hub
//! stores. Both sides depend on this crate so the shapes cannot drift apart.

pub mod event;

pub use event::{Event, EventKind};
