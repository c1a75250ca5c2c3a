//! Chart registries: what a host receives from `GET /v1/hosts/{id}/registries`.
//!
//! An operator keeps Helm repositories and OCI registries, with their credentials, as hub
//! objects (docs/protocol.md, "Registries"). An add-on chart names one by `registry: NAME`,
//! or gives an `oci://HOST/…` repo whose host is an OCI registry object's. The hub serves a
//! host only the registries its assigned profile references, credentials decrypted; the
//! agent uses them to fetch charts and to write the container runtime's registry
//! configuration. Nothing here is ever put in an event or a log line: [`RegistryAccess`]'s
//! `Debug` leaves the secrets out.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::profile::{AddonsLayer, Layer, Profile};

/// What kind of registry an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    /// A Helm chart repository: `index.yaml` and chart archives under an HTTP(S) URL.
    Helm,
    /// An OCI distribution registry (charts as OCI artifacts, and container images).
    Oci,
}

impl RegistryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Helm => "helm",
            RegistryKind::Oci => "oci",
        }
    }
}

/// One registry as a host receives it, credentials in clear (over the hub's TLS only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAccess {
    /// The object's name, as `registry:` in a chart names it.
    pub name: String,
    pub kind: RegistryKind,
    /// Helm: the repository URL (`https://charts.example.org/stable`). OCI: the registry's
    /// base URL (`https://registry.example.org`, or `http://` for a plain-HTTP one).
    pub url: String,
    /// PEM CA certificate(s) to trust for this registry besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A bearer token (OCI: used as the registry token, or exchanged as an identity token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("username", &self.username.is_some())
            .field("password", &self.password.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl RegistryAccess {
    /// `host[:port]` of the URL, lower-cased.
    pub fn host(&self) -> Option<String> {
        url_host(&self.url)
    }
}

/// The answer of `GET /v1/hosts/{id}/registries`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct HostRegistries {
    pub registries: Vec<RegistryAccess>,
}

/// `host[:port]` of an `http(s)://` or `oci://` URL, lower-cased; `None` without one.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// What a profile's charts ask of registries: names (`registry: NAME`) and hosts of
/// `oci://` repos (an OCI registry object with that host serves them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryRefs {
    pub names: BTreeSet<String>,
    pub oci_hosts: BTreeSet<String>,
}

impl RegistryRefs {
    pub fn of_addons(a: &AddonsLayer) -> RegistryRefs {
        let mut r = RegistryRefs::default();
        r.add(a);
        r
    }

    pub fn of_profile(p: &Profile) -> RegistryRefs {
        let mut r = RegistryRefs::default();
        for l in &p.layers {
            if let Layer::Addons(a) = l {
                r.add(a);
            }
        }
        for a in &p.addon_profiles {
            r.add(&a.addons);
        }
        r
    }

    fn add(&mut self, a: &AddonsLayer) {
        for c in &a.charts {
            if let Some(n) = &c.registry {
                self.names.insert(n.clone());
            }
            if let Some(repo) = &c.repo {
                if repo.starts_with("oci://") {
                    if let Some(h) = url_host(repo) {
                        self.oci_hosts.insert(h);
                    }
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.oci_hosts.is_empty()
    }

    /// Does a registry with this name, kind and URL serve something these refs ask for?
    pub fn wants(&self, name: &str, kind: RegistryKind, url: &str) -> bool {
        self.names.contains(name)
            || (kind == RegistryKind::Oci
                && url_host(url).is_some_and(|h| self.oci_hosts.contains(&h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_refs() {
        assert_eq!(
            url_host("oci://Reg.Example:5000/charts/x").as_deref(),
            Some("reg.example:5000")
        );
        assert_eq!(url_host("https://u@h/x").as_deref(), Some("h"));
        assert_eq!(url_host("nourl"), None);
        let a: AddonsLayer = serde_json::from_value(serde_json::json!({"charts": [
            {"name": "a", "chart": "a", "version": "1", "registry": "corp"},
            {"name": "b", "chart": "b", "version": "1", "repo": "oci://r.example/charts"},
            {"name": "c", "chart": "c", "version": "1", "repo": "https://open.example"}
        ]}))
        .unwrap();
        let r = RegistryRefs::of_addons(&a);
        assert!(r.wants("corp", RegistryKind::Helm, "https://x"));
        assert!(r.wants("other", RegistryKind::Oci, "https://r.example"));
        assert!(!r.wants("other", RegistryKind::Helm, "https://r.example"));
        assert!(!r.wants("other", RegistryKind::Oci, "https://open.example"));
        let secret = RegistryAccess {
            name: "corp".into(),
            kind: RegistryKind::Oci,
            url: "https://r".into(),
            ca_pem: None,
            username: Some("u".into()),
            password: Some("canary-pw".into()),
            token: None,
        };
        assert!(!format!("{secret:?}").contains("canary-pw"));
    }
}
