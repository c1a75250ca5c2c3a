//! Cairn's on-device agent.
//!
//! The data flow (DESIGN.md): sources → documents ([`load`], [`decode`]) → a typed,
//! validated, merged [`model::Config`] → [`engine::apply`] against a [`host::Host`] (a
//! target root plus a command runner) → [`events`] for people, JSON lines and the hub.

pub mod artifacts;
pub mod cli_docs;
pub mod daemon;
pub mod decode;
pub mod diag;
pub mod engine;
pub mod events;
pub mod host;
pub mod kubernetes;
pub mod load;
pub mod model;
pub mod stages;
pub mod state;
pub mod steps;
pub mod validate;
pub mod yaml;
