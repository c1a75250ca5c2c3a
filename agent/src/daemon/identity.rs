//! The host's identity on its hub: obtained once with the registration token and kept in
//! `STATE/identity.json` (0600). Reused across restarts; replaced only by a new enrollment.
//!
//! Registration is made retry-safe by a [`RegistrationKey`] (`STATE/registration-key.json`,
//! 0600): created once, stored before the first attempt and sent with every attempt, so
//! a retry after a lost answer gets the identity the hub already made instead of `409`.
//! It is deleted once `identity.json` is stored: its only job is to bridge the moment
//! between the hub's commit and the agent's keeping the answer.

use std::io;

use base64::Engine as _;
use cairn_proto::protocol::valid_registration_key;
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

/// Prefix of registration keys, so people and secret scanners can tell what one is.
pub const REGISTRATION_KEY_PREFIX: &str = "cairn_rk_";

/// The secret that makes `POST /v1/register` retry-safe (docs/protocol.md): 256 random
/// bits, bound to the hub it was made for.
#[derive(Clone, Serialize, Deserialize)]
pub struct RegistrationKey {
    pub key: Secret,
    /// The hub endpoint it is used with; another hub gets a new key.
    pub hub: String,
    pub created: String,
}

impl std::fmt::Debug for RegistrationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationKey")
            .field("key", &"<redacted>")
            .field("hub", &self.hub)
            .field("created", &self.created)
            .finish()
    }
}

impl RegistrationKey {
    /// The key to register with `hub`: the stored one, or a new one stored durably (atomic,
    /// fsynced, 0600) before it is returned, so no attempt is ever sent with a key that a
    /// crash could lose.
    pub fn load_or_create(state: &StateDir, hub: &str) -> io::Result<RegistrationKey> {
        let path = state.registration_key();
        match store::read_json::<RegistrationKey>(&path) {
            Ok(Some(k)) if k.hub == hub && valid_registration_key(k.key.expose()) => return Ok(k),
            Ok(Some(_)) => {
                tracing::info!(
                    "{} was made for another hub or holds no usable key; making a new \
                     registration key",
                    path.display()
                );
            }
            Ok(None) => {}
            // Atomic writes leave no torn file; a damaged one cannot be used, and a new key
            // is the only way forward (at worst the name is taken: 409).
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(
                    "{} is unreadable ({e}); making a new registration key",
                    path.display()
                );
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", path.display()),
                ))
            }
        }
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| io::Error::other(format!("no randomness for a registration key: {e}")))?;
        let key = RegistrationKey {
            key: Secret::new(format!(
                "{REGISTRATION_KEY_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            )),
            hub: hub.to_string(),
            created: store::now(),
        };
        store::write_json(&path, &key)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        Ok(key)
    }

    /// Delete the key (durably) once the identity it registered is stored; no key is fine.
    pub fn remove(state: &StateDir) -> io::Result<()> {
        let path = state.registration_key();
        match std::fs::remove_file(&path) {
            Ok(()) => store::sync_dir(&state.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("removing {}: {e}", path.display()),
            )),
        }
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

    #[test]
    fn registration_key_is_made_once_per_hub_kept_0600_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path());
        state.create().unwrap();
        let a = RegistrationKey::load_or_create(&state, "https://hub-a").unwrap();
        assert!(a.key.expose().starts_with(REGISTRATION_KEY_PREFIX));
        assert!(valid_registration_key(a.key.expose()));
        assert_eq!(a.key.expose().len(), REGISTRATION_KEY_PREFIX.len() + 43);
        let meta = std::fs::metadata(state.registration_key()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(!format!("{a:?}").contains(&a.key.expose()[9..]));
        // The same key again (a restart), until another hub is named.
        let again = RegistrationKey::load_or_create(&state, "https://hub-a").unwrap();
        assert_eq!(again.key.expose(), a.key.expose());
        let b = RegistrationKey::load_or_create(&state, "https://hub-b").unwrap();
        assert_ne!(b.key.expose(), a.key.expose());
        assert_eq!(
            RegistrationKey::load_or_create(&state, "https://hub-b")
                .unwrap()
                .key
                .expose(),
            b.key.expose()
        );
        // A damaged file is replaced, not fatal.
        std::fs::write(state.registration_key(), b"{not json").unwrap();
        let c = RegistrationKey::load_or_create(&state, "https://hub-b").unwrap();
        assert!(valid_registration_key(c.key.expose()));
        RegistrationKey::remove(&state).unwrap();
        assert!(!state.registration_key().exists());
        RegistrationKey::remove(&state).unwrap();
    }
}
