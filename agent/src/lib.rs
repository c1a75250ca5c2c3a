//! Cairn's on-device agent.
//!
//! The data flow: sources → the user-data language ([`cairn_userdata`]: load, decode,
//! validate) → a typed, merged [`cairn_userdata::model::Config`] → [`engine::apply`] against a
//! [`host::Host`] (a target root plus a command runner) → [`events`] for people, JSON lines
//! and the hub. A cluster profile goes through [`profile`]: validated whole for the machine,
//! then applied (os layer, then the Kubernetes phases of [`kubernetes`]). The command line
//! is [`cli`]: one module per subcommand; the binary only parses, logs and exits.

pub mod artifacts;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod host;
pub mod kubernetes;
pub mod packs;
pub mod profile;
pub mod state;
pub mod steps;
