//! Cairn's user-data language, on its own: everything that turns text into a typed,
//! validated configuration, and nothing that touches a host or a network.
//!
//! The data flow: text → [`yaml`] (a located tree with hostile-input budgets) → [`decode`]
//! (Kairos `stages:`, cloud-config, `cairn:`/`stylus:`, `install:`) → [`model::Config`] →
//! [`validate`] (cross-document rules), with every problem collected in [`diag`] at its
//! `FILE:LINE:COL`. [`load`] reads files and directories with a size bound; [`profile`] reads
//! cluster profiles (the one reader the agent, the hub and the installer share).
//!
//! Used by `cairn-agent` (which applies the model to a host), `cairn-hub` (which validates
//! what operators publish) and `cairn-installer` (which checks user-data before writing media).

pub mod decode;
pub mod diag;
pub mod load;
pub mod model;
pub mod profile;
pub mod stages;
pub mod template;
pub mod validate;
pub mod yaml;
