//! The host's identity on its hub: obtained once with the registration token and kept in
//! `STATE/identity.json` (0600). Reused across restarts; replaced only by a new enrollment.

use std::io;

use serde::{Deserialize, Serialize};

use super::store::{self, Secret, StateDir};

#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub host_id: String,
    /// Bearer credential for `/v1/hosts/{host_id}/…`.
    pub credential: Secret,
    /// The hub endpoint that issued it.
    pub hub: String,
    pub registered_at: String,
    /// SHA-256 of the registration token used (never the token itself).
    #[serde(default)]
    pub token_sha256: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("host_id", &self.host_id)
            .field("credential", &"<redacted>")
            .field("hub", &self.hub)
            .field("registered_at", &self.registered_at)
            .finish()
    }
}

impl Identity {
    pub fn load(state: &StateDir) -> io::Result<Option<Identity>> {
        let path = state.identity();
        let id: Option<Identity> = store::read_json(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} is unreadable ({e}); remove it to enroll this host again with a new token",
                    path.display()
                ),
            )
        })?;
        match id {
            Some(id) if !valid_host_id(&id.host_id) || id.credential.is_empty() => {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} holds no usable identity", path.display()),
                ))
            }
            other => Ok(other),
        }
    }

    /// Store the identity durably (atomic, fsynced, 0600) before it is used.
    pub fn save(&self, state: &StateDir) -> io::Result<()> {
        store::write_json(&state.identity(), self)
    }
}

/// A host id goes into URL paths: only letters, digits, `-`, `_` and `.`, 1–128 chars.
pub fn valid_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn identity_round_trips_0600_and_never_prints_its_credential() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path());
        state.create().unwrap();
        assert!(Identity::load(&state).unwrap().is_none());
        let id = Identity {
            host_id: "h-1".into(),
            credential: Secret::new("cred-canary-123"),
            hub: "https://hub".into(),
            registered_at: store::now(),
            token_sha256: String::new(),
        };
        id.save(&state).unwrap();
        let meta = std::fs::metadata(state.identity()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let back = Identity::load(&state).unwrap().unwrap();
        assert_eq!(back.credential.expose(), "cred-canary-123");
        assert!(!format!("{back:?}").contains("canary"));
        assert!(valid_host_id("a.b-c_9") && !valid_host_id("../x") && !valid_host_id(""));
    }
}
