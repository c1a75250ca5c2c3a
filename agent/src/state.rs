//! Cairn's own state inside the target: `/var/lib/cairn/state.json`.
//!
//! It records which command steps have run (and in which boot), so that `once` and
//! `per-boot` commands are not repeated and a second apply reports zero changes. Saved
//! atomically after every command step that succeeds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::{fs, Host};

pub const STATE_PATH: &str = "/var/lib/cairn/state.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// Command-step key (a digest of stage, step and commands) → when it last ran.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandRecord>,
    /// Stage name → the drop-in files (target paths) its steps owned at its last complete
    /// apply; a drop-in no step owns any more is removed (see `steps::sweep_drop_ins`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_ins: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandRecord {
    pub boot_id: String,
    pub time: String,
}

impl State {
    /// Load the state; a missing or unreadable file is an empty state (logged).
    pub fn load(host: &Host) -> State {
        match host.read_opt(STATE_PATH) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "ignoring unreadable state file {}: {e}",
                    host.shown(STATE_PATH).display()
                );
                State::default()
            }),
            Ok(None) => State::default(),
            Err(e) => {
                tracing::warn!("ignoring unreadable state file: {e}");
                State::default()
            }
        }
    }

    pub fn save(&self, host: &Host) -> Result<(), fs::FsError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        host.write_atomic(STATE_PATH, &bytes, 0o600, None)
    }
}

/// The current boot's id (changes at every boot); empty if unknown.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Where the apply lock lives inside the target.
pub const LOCK_PATH: &str = "/var/lib/cairn/apply.lock";

/// Held while an apply runs, so two applies (daemon and CLI) never interleave. A profile
/// apply takes it once, after validation and the artifact downloads, and hands it to every
/// engine run of the apply ([`crate::engine::apply_locked`]).
pub struct ApplyLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Why the apply lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another apply (the daemon, or a `cairn-agent apply`) runs on this root: try later.
    #[error("another cairn-agent apply is running on this root (it holds {})", path.display())]
    Held { path: std::path::PathBuf },
    #[error("taking the apply lock: {0}")]
    Open(#[from] fs::FsError),
}

impl ApplyLock {
    /// Take the lock without waiting; the error names the file another apply holds.
    pub fn acquire(host: &Host) -> Result<ApplyLock, LockError> {
        let file = host.open_rw(LOCK_PATH, 0o600)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            // The file is never written, so taking the lock changes nothing in the root.
            Ok(lock) => Ok(ApplyLock { _lock: lock }),
            Err(_) => Err(LockError::Held {
                path: host.shown(LOCK_PATH),
            }),
        }
    }
}
