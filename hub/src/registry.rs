//! Chart registries: Helm repositories and OCI registries with credentials, encrypted at
//! rest under the hub's registry key.
//!
//! The key is 32 random bytes in `registry.key` in the hub's data directory, created 0600
//! on first use (by `cairn-hub registry create` or `serve`) and never stored in the
//! database: a copy of the database alone reveals no credential. Credentials (username,
//! password, token) are sealed together as JSON with ChaCha20-Poly1305 (ring's AEAD, already
//! the hub's TLS provider), a random 96-bit nonce per seal, and the registry's id as
//! associated data, so a sealed value moved to another row does not open.
//! docs/decisions.md ("Registry credentials at rest") has the reasoning.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use cairn_proto::registry::{url_host, RegistryAccess, RegistryKind};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};

use crate::store::{RegistryRecord, Scope};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "registry.key";
const KEY_LEN: usize = 32;
/// Longest CA bundle accepted for a registry.
pub const MAX_CA_BYTES: usize = 64 * 1024;
/// Longest credential field accepted.
const MAX_SECRET_LEN: usize = 4096;

/// Why the registry key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the registry key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the registry key {path} has {len} bytes, not {KEY_LEN}: it is not a key this hub made"
    )]
    Length { path: PathBuf, len: usize },
    #[error(
        "the registry key {path} is readable by others (mode {mode:04o}): make it 0600 \
         (`chmod 600 {path}`), its credentials may have been exposed"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "the registry key is not available: give the hub a data directory (--data-dir) to \
         keep it in"
    )]
    NoDataDir,
    #[error("reading random bytes from the operating system: {0}")]
    Random(String),
    #[error(
        "the credentials of registry {0} do not open with this hub's registry key (another \
         hub's key, or a damaged row): recreate the registry"
    )]
    Open(String),
    #[error("sealing credentials: {0}")]
    Seal(String),
}

/// The hub's registry key.
pub struct Keyring {
    key: LessSafeKey,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyring(<redacted>)")
    }
}

/// Credentials of a registry, as sealed. Never logged: `Debug` shows which are set.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.is_some())
            .field("password", &self.password.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none() && self.token.is_none()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Keyring {
    /// The key in `dir` ([`KEY_FILE`]), made (0600, exclusively) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Keyring, KeyError> {
        let path = dir.join(KEY_FILE);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                let mut key = [0u8; KEY_LEN];
                getrandom::getrandom(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
                f.write_all(&key).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                tracing::info!(path = %path.display(), "created the registry key");
                Self::from_bytes(&key, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(&path),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn load(path: &Path) -> Result<Keyring, KeyError> {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        let mode = f.metadata().map_err(io(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut buf = Vec::with_capacity(KEY_LEN);
        std::io::Read::take(&mut f, KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io(path))?;
        Self::from_bytes(&buf, path)
    }

    fn from_bytes(key: &[u8], path: &Path) -> Result<Keyring, KeyError> {
        if key.len() != KEY_LEN {
            return Err(KeyError::Length {
                path: path.to_path_buf(),
                len: key.len(),
            });
        }
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| KeyError::Length {
            path: path.to_path_buf(),
            len: key.len(),
        })?;
        Ok(Keyring {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A throwaway key (for opening nothing: registries without credentials).
    pub fn ephemeral() -> Result<Keyring, KeyError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::getrandom(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Self::from_bytes(&key, Path::new("(ephemeral)"))
    }

    fn aad(id: &str) -> Vec<u8> {
        let mut aad = b"cairn registry credentials v1\0".to_vec();
        aad.extend_from_slice(id.as_bytes());
        aad
    }

    /// Seal `creds` for the registry `id`: base64 of nonce || ciphertext || tag.
    pub fn seal(&self, id: &str, creds: &Credentials) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut data = serde_json::to_vec(creds).map_err(|e| KeyError::Seal(e.to_string()))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(id)),
                &mut data,
            )
            .map_err(|_| KeyError::Seal("the AEAD refused the input".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Open what [`Keyring::seal`] made for the registry `id`.
    pub fn open(&self, id: &str, sealed: &str) -> Result<Credentials, KeyError> {
        let fail = || KeyError::Open(id.to_string());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| fail())?;
        if raw.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(id)), &mut data)
            .map_err(|_| fail())?;
        serde_json::from_slice(plain).map_err(|_| fail())
    }
}

/// The registry key of a hub with data directory `dir`.
pub fn keyring(dir: Option<&Path>) -> Result<Keyring, KeyError> {
    Keyring::load_or_create(dir.ok_or(KeyError::NoDataDir)?)
}

/// A registry to create, as an operator gives it.
#[derive(Clone)]
pub struct RegistrySpec {
    pub scope: Scope,
    pub name: String,
    pub kind: RegistryKind,
    pub url: String,
    pub ca_pem: Option<String>,
    pub credentials: Credentials,
}

/// Check a registry before it is stored; the message says what to change.
pub fn check(spec: &RegistrySpec) -> Result<(), String> {
    if cairn_proto::profile::check_name(&spec.name).is_err() {
        return Err(format!(
            "`{}` is not a registry name: use 1 to 63 lower-case letters, digits and `-`",
            spec.name
        ));
    }
    let u = spec.url.as_str();
    let scheme_ok = u.starts_with("https://") || u.starts_with("http://");
    if !scheme_ok || url_host(u).is_none() || u.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{u}` is not a registry URL: give https://HOST[:PORT][/PATH] (http:// only for a \
             registry on a trusted network)"
        ));
    }
    // Any `@` before the path is user information: credentials belong in their own,
    // sealed fields, never in a URL that is stored and listed in clear.
    let authority = u
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest))
        .unwrap_or(u);
    if authority.contains('@') {
        return Err("put credentials in --username/--password-file, not in the URL".into());
    }
    if spec.kind == RegistryKind::Oci
        && u.split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/').contains('/'))
    {
        return Err(format!(
            "an OCI registry's URL is its base (`https://HOST[:PORT]`), not `{u}`: charts \
             name their repository path in `chart:`"
        ));
    }
    if let Some(ca) = &spec.ca_pem {
        if ca.len() > MAX_CA_BYTES || !ca.contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "the CA must be PEM certificates of at most {MAX_CA_BYTES} bytes"
            ));
        }
    }
    let c = &spec.credentials;
    for (what, v) in [
        ("username", &c.username),
        ("password", &c.password),
        ("token", &c.token),
    ] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > MAX_SECRET_LEN || v.chars().any(char::is_control) {
                return Err(format!(
                    "the {what} must be 1 to {MAX_SECRET_LEN} characters without control characters"
                ));
            }
        }
    }
    // Credentials never cross a network in clear: plain http with credentials only to a
    // loopback address (a registry on the device's or hub's own machine).
    let loopback = url_host(u).is_some_and(|h| {
        let host = h
            .strip_prefix('[')
            .and_then(|h| h.split_once(']'))
            .map(|(ip, _)| ip.to_string())
            .unwrap_or_else(|| h.rsplit_once(':').map_or(h.clone(), |(n, _)| n.to_string()));
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if (c.username.is_some() || c.password.is_some() || c.token.is_some())
        && !u.starts_with("https://")
        && !loopback
    {
        return Err(format!(
            "`{u}` is plain http: credentials would cross the network in clear; give the \
             registry an https:// URL (with --ca-file for a private CA) or no credentials"
        ));
    }
    if c.username.is_some() != c.password.is_some() {
        return Err("basic auth needs both a username and a password".into());
    }
    if spec.kind == RegistryKind::Helm && c.token.is_some() {
        return Err(
            "a Helm repository takes basic auth (username and password), not a token".into(),
        );
    }
    Ok(())
}

/// A stored registry as a host receives it: its credentials opened with `keys`.
pub fn access(record: &RegistryRecord, keys: &Keyring) -> Result<RegistryAccess, KeyError> {
    let creds = match &record.sealed {
        Some(s) => keys.open(&record.info.id, s)?,
        None => Credentials::default(),
    };
    Ok(RegistryAccess {
        name: record.info.name.clone(),
        kind: record.info.kind,
        url: record.info.url.clone(),
        ca_pem: record.ca_pem.clone(),
        username: creds.username,
        password: creds.password,
        token: creds.token,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_need_https_and_never_ride_in_the_url() {
        let spec = |url: &str, password: Option<&str>| RegistrySpec {
            scope: crate::store::Scope::Tenant("default".into()),
            name: "charts".into(),
            kind: RegistryKind::Helm,
            url: url.into(),
            ca_pem: None,
            credentials: Credentials {
                username: password.map(|_| "u".to_string()),
                password: password.map(str::to_string),
                token: None,
            },
        };
        assert!(check(&spec("https://r.example/charts", Some("p"))).is_ok());
        assert!(check(&spec("http://r.example/charts", None)).is_ok());
        assert!(check(&spec("http://127.0.0.1:8080/charts", Some("p"))).is_ok());
        assert!(check(&spec("http://[::1]:8080/charts", Some("p"))).is_ok());
        let e = check(&spec("http://r.example/charts", Some("p"))).unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        for url in [
            "https://u:p@r.example/charts",
            "https://u:p@r.example//r.example/charts",
            "https://r.example@evil.example/x",
        ] {
            let e = check(&spec(url, None)).unwrap_err();
            assert!(e.contains("not in the URL"), "{url}: {e}");
        }
    }

    #[test]
    fn sealed_credentials_open_only_with_the_key_and_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keyring::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let creds = Credentials {
            username: Some("robot".into()),
            password: Some("canary-Secret-123".into()),
            token: None,
        };
        let sealed = keys.seal("rg_1", &creds).unwrap();
        assert!(!sealed.contains("canary"));
        assert_ne!(
            sealed,
            keys.seal("rg_1", &creds).unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(keys.open("rg_1", &sealed).unwrap(), creds);
        assert!(keys.open("rg_2", &sealed).is_err(), "bound to the row's id");
        let again = Keyring::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("rg_1", &sealed).unwrap(), creds);
        let other = tempfile::tempdir().unwrap();
        let other = Keyring::load_or_create(other.path()).unwrap();
        assert!(other.open("rg_1", &sealed).is_err());
        assert!(!format!("{creds:?}").contains("canary"));
        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            Keyring::load_or_create(dir.path()),
            Err(KeyError::Mode { .. })
        ));
    }
}
