//! The daemon's settings: the `cairn:` block (or Palette's `stylus:`) of the device's
//! user-data, read with the same loader as `apply`, plus the agent config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store::Secret;
use cairn_userdata::load::{self, DEVICE_SOURCES};

/// Where `run` reads its configuration when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/cairn/agent.yaml";

/// What the daemon needs to talk to its hub.
#[derive(Clone)]
pub struct Settings {
    /// `https://host[:port][/prefix]`, without a trailing slash.
    pub endpoint: String,
    /// The registration token; only needed until the host has an identity.
    pub token: Option<Secret>,
    /// The name the host registers under (`cairn.site`, `stylus.site.name`, else the
    /// host name).
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// PEM CA certificates trusted for the hub, instead of the system roots.
    pub ca_certs: Vec<String>,
    /// SHA-256 of the hub CA's DER, from `cairn.join`: that CA alone is trusted.
    pub ca_pin: Option<[u8; 32]>,
    pub proxy: Option<String>,
    /// The user-data files the settings came from (for messages).
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("ca_certs", &self.ca_certs.len())
            .field("ca_pin", &self.ca_pin.as_ref().map(|_| "<redacted>"))
            .field(
                "proxy",
                &self
                    .proxy
                    .as_ref()
                    .map(|p| cairn_cli::report::redact_url(p)),
            )
            .field("files", &self.files)
            .finish()
    }
}

impl Settings {
    /// SHA-256 (hex) of the registration token, kept with the identity so that a new token
    /// in user-data can be told from the one the identity was obtained with.
    pub fn token_digest(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|t| hex::encode(Sha256::digest(t.expose().as_bytes())))
    }
}

/// The user-data sources of a device under `root`, then the agent config file.
///
/// A missing default config file is fine (settings may come from `/oem`); a config file
/// named on the command line must exist.
// String error: passed on by `load`, which the daemon prints before exiting 1.
pub fn sources(root: &Path, config: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = DEVICE_SOURCES
        .iter()
        .map(|s| root.join(s.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect();
    match config {
        Some(c) if c.exists() => files.push(c.to_path_buf()),
        Some(c) => return Err(format!("config file {} does not exist", c.display())),
        None => {
            let c = Path::new(DEFAULT_CONFIG);
            if c.exists() {
                files.push(c.to_path_buf());
            }
        }
    }
    Ok(files)
}

/// Read the settings. Problems elsewhere in the user-data are printed as warnings: a typo
/// in a boot stage must not cut the device off from the hub where an operator can see it.
// String error: the daemon prints it (naming the file) and exits 1; nobody branches on it.
pub fn load(root: &Path, config: Option<&Path>) -> Result<Settings, String> {
    let files = sources(root, config)?;
    if files.is_empty() {
        return Err(format!(
            "no user-data found ({} under {}, or {DEFAULT_CONFIG}); the daemon needs a `cairn:` \
             (or `stylus:`) block with the hub endpoint and a registration token",
            DEVICE_SOURCES.join(", "),
            root.display()
        ));
    }
    let loaded = load::load(&files, false).map_err(|e| e.to_string())?;
    for d in loaded.diags.sorted() {
        tracing::warn!("{d}");
    }
    let hub = loaded.config.hub.ok_or_else(|| {
        format!(
            "no `cairn:` or `stylus:` block in {}; nothing for the daemon to do",
            list(&loaded.files)
        )
    })?;
    let endpoint = hub.endpoint.ok_or_else(|| {
        "the `cairn:` block has no `join` (from `cairn-hub token create`) and no `endpoint` \
             (the hub's URL)"
            .to_string()
    })?;
    if !endpoint.starts_with("https://") {
        return Err(format!(
            "hub endpoint `{endpoint}` is not https://; Cairn talks to its hub over TLS only"
        ));
    }
    let name = match hub.site.filter(|s| !s.trim().is_empty() && s != "$random") {
        Some(s) => s,
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "cairn-host".into()),
    };
    Ok(Settings {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        token: hub.token.filter(|t| !t.is_empty()).map(Secret::new),
        name,
        tags: hub.tags.into_iter().collect(),
        ca_certs: hub.ca_certs,
        ca_pin: hub.ca_pin,
        proxy: hub.proxy,
        files: loaded.files,
    })
}

fn list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_from_cairn_and_stylus_blocks() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("agent.yaml");
        std::fs::write(
            &cfg,
            "cairn:\n  endpoint: hub.example:8443\n  token: sekrit-token\n  site: edge-7\n  \
             tags: {rack: r1}\n",
        )
        .unwrap();
        let s = load(d.path(), Some(&cfg)).unwrap();
        assert_eq!(s.endpoint, "https://hub.example:8443");
        assert_eq!(s.name, "edge-7");
        assert_eq!(s.tags.get("rack").map(String::as_str), Some("r1"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");

        let oem = d.path().join("oem");
        std::fs::create_dir(&oem).unwrap();
        std::fs::write(
            oem.join("90.yaml"),
            "#node-config\nstylus:\n  site:\n    paletteEndpoint: palette.example\n    \
             edgeHostToken: tok\n    name: site-a\n",
        )
        .unwrap();
        // The config file comes last and wins.
        let s = load(d.path(), Some(&cfg)).unwrap();
        assert_eq!(s.name, "edge-7");
        std::fs::remove_file(&cfg).unwrap();
        assert!(
            load(d.path(), Some(&cfg)).is_err(),
            "a named config must exist"
        );
        let s = load(d.path(), None).unwrap();
        assert_eq!(s.endpoint, "https://palette.example");
        assert_eq!(s.name, "site-a");
    }

    #[test]
    fn a_join_string_gives_endpoint_token_and_pin() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("agent.yaml");
        let pin = "ab".repeat(32);
        std::fs::write(
            &cfg,
            format!(
                "cairn:\n  join: cairn1:{pin}:cairn_rt_sekrit@https://hub.example:8443/\n  \
                 site: edge-8\n"
            ),
        )
        .unwrap();
        let s = load(d.path(), Some(&cfg)).unwrap();
        assert_eq!(s.endpoint, "https://hub.example:8443");
        assert_eq!(
            s.token.as_ref().map(|t| t.expose()),
            Some("cairn_rt_sekrit")
        );
        assert_eq!(s.ca_pin, Some([0xab; 32]));
        assert!(s.ca_certs.is_empty());
        assert_eq!(s.name, "edge-8");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sekrit") && !dbg.contains(&pin[..8]), "{dbg}");
    }

    #[test]
    fn plain_http_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("agent.yaml");
        std::fs::write(&cfg, "cairn:\n  endpoint: http://hub.example\n").unwrap();
        let e = load(d.path(), Some(&cfg)).unwrap_err();
        assert!(e.contains("TLS only"), "{e}");
    }
}
