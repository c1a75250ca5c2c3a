//! The hub's `/v1` HTTP API: request and response bodies shared by `cairn-agent run` and
//! `cairn-hub`. The prose contract (status codes, idempotence, authentication, ETag) is
//! docs/protocol.md; this module is its single typed spelling.
//!
//! Compatibility rule: every body type tolerates unknown fields (a newer agent may send
//! more), and every field added later must have a default, so an older peer keeps working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Path prefix of every endpoint.
pub const API_PREFIX: &str = "/v1";
/// Largest request body the hub accepts (bytes); larger bodies get `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most events one `POST /v1/hosts/{id}/events` may carry; more get `422`.
pub const MAX_EVENTS_PER_BATCH: usize = 1000;
/// Heartbeat period the hub asks for when it is not configured otherwise (seconds).
pub const DEFAULT_HEARTBEAT_SECS: u64 = 30;

/// `POST /v1/register`: trade a registration token for a host identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The registration token's secret, as printed once by `cairn-hub token create`.
    pub token: String,
    /// The host's name, unique within the token's project (`cairn.site` / `stylus.site.name`).
    pub name: String,
    /// `cairn.tags` / `stylus.site.tags`; assignments by tag match these.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub inventory: Inventory,
    /// Makes the request safe to retry: a random secret the agent creates once, keeps on
    /// disk before its first attempt and sends with every attempt until it has stored its
    /// identity. A retry with the key of a registration the hub already made gets that
    /// registration's answer again (same host id, same credential) instead of `409`.
    /// `REGISTRATION_KEY_MIN_LEN` to `REGISTRATION_KEY_MAX_LEN` characters of
    /// `A-Z a-z 0-9 _ -`; absent for agents that predate it (docs/protocol.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_key: Option<String>,
}

/// Shortest registration key the hub accepts (256 bits in base64url without padding).
pub const REGISTRATION_KEY_MIN_LEN: usize = 43;
/// Longest registration key the hub accepts.
pub const REGISTRATION_KEY_MAX_LEN: usize = 128;

/// Is `key` shaped like a registration key (length and alphabet; not its randomness)?
pub fn valid_registration_key(key: &str) -> bool {
    (REGISTRATION_KEY_MIN_LEN..=REGISTRATION_KEY_MAX_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Answer to a successful registration. The credential is shown exactly once: the hub keeps
/// only its SHA-256, so the agent must store it (mode 0600) before doing anything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub host_id: String,
    /// Bearer credential for every `/v1/hosts/{host_id}/…` request.
    pub credential: String,
    /// How often the hub wants a heartbeat (seconds); add ±10 % jitter.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u64,
}

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

/// What the host is made of, sent at registration and with heartbeats.
/// Every field is optional so a partial inventory (no disks readable, say) is still accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    #[serde(default)]
    pub cpu: Cpu,
    /// Total RAM in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub os: Os,
    /// `amd64` or `arm64` (Debian/Kubernetes spelling, not `x86_64`/`aarch64`).
    #[serde(default)]
    pub arch: String,
    /// `cairn-agent --version` of the reporting agent.
    #[serde(default)]
    pub agent_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default)]
    pub model: String,
    /// Logical CPUs.
    #[serde(default)]
    pub cores: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1`.
    pub name: String,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Addresses in CIDR form, e.g. `192.0.2.10/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Os {
    /// os-release `ID`, e.g. `debian`.
    #[serde(default)]
    pub id: String,
    /// os-release `VERSION_ID`, e.g. `12`.
    #[serde(default)]
    pub version: String,
    /// os-release `PRETTY_NAME`.
    #[serde(default)]
    pub pretty_name: String,
    /// `uname -r`.
    #[serde(default)]
    pub kernel: String,
}

/// `POST /v1/hosts/{id}/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Omit to keep the inventory the hub already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

/// What the hub currently wants the host to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Version of the assigned profile, `null` when nothing is assigned.
    pub profile_version: Option<u64>,
    /// Name of the assigned profile, `null` when nothing is assigned.
    #[serde(default)]
    pub profile_name: Option<String>,
    /// The ETag `GET /v1/hosts/{id}/profile` would return (quoted), `null` when nothing is
    /// assigned. When it differs from the ETag of the profile the agent holds, fetch.
    #[serde(default)]
    pub profile_etag: Option<String>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u64,
}

/// `POST /v1/hosts/{id}/events`: events in any order; the hub stores each `(host, seq)` once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

/// Answer to an event batch: every event of the batch is stored durably (new or already known).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// The highest `seq` in the batch. The agent may delete every spooled event of this batch.
    pub acked_seq: u64,
    /// Events stored by this request.
    #[serde(default)]
    pub accepted: u32,
    /// Events of the batch the hub already had (re-sent batches); ignored, not overwritten.
    #[serde(default)]
    pub duplicates: u32,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable reason, e.g. `token_rejected`, `forbidden`, `too_large`.
    pub error: String,
    /// Human-readable explanation (never contains a secret).
    pub message: String,
    /// For `invalid_profile`: one entry per problem found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// One located validation problem, e.g. of an uploaded profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `FILE:LINE:COL` when known, else the document path.
    pub location: String,
    /// Path inside the document, e.g. `layers[1].kubernetes.flavor`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_and_newer_peers_interoperate() {
        // A minimal register request (no tags, no inventory) is accepted.
        let req: RegisterRequest =
            serde_json::from_str(r#"{"token":"t","name":"edge-1"}"#).unwrap();
        assert!(req.tags.is_empty());
        assert_eq!(req.inventory, Inventory::default());
        assert_eq!(req.registration_key, None);
        // An agent without a registration key sends no such field (an older hub is fine).
        let sent = serde_json::to_value(&req).unwrap();
        assert!(sent.get("registration_key").is_none(), "{sent}");
        let keyed: RegisterRequest =
            serde_json::from_str(r#"{"token":"t","name":"e","registration_key":"k"}"#).unwrap();
        assert_eq!(keyed.registration_key.as_deref(), Some("k"));
        // Unknown fields from a newer peer are ignored, not refused.
        let resp: HeartbeatResponse =
            serde_json::from_str(r#"{"profile_version":3,"future_field":true}"#).unwrap();
        assert_eq!(resp.profile_version, Some(3));
        assert_eq!(resp.heartbeat_interval_secs, DEFAULT_HEARTBEAT_SECS);
        // A null profile version round-trips as null, not as a missing key.
        let none = serde_json::to_value(HeartbeatResponse::default()).unwrap();
        assert!(none.get("profile_version").unwrap().is_null());
    }

    #[test]
    fn registration_key_shape() {
        let key = format!("cairn_rk_{}", "A".repeat(43));
        assert!(valid_registration_key(&key));
        assert!(valid_registration_key(&"a-_9".repeat(11)[..43]));
        assert!(!valid_registration_key(&"a".repeat(42)));
        assert!(!valid_registration_key(&"a".repeat(129)));
        assert!(!valid_registration_key(&format!("{}=", "a".repeat(43))));
        assert!(!valid_registration_key(&format!("{} ", "a".repeat(43))));
        assert!(!valid_registration_key(""));
    }
}

/// One file of a host's assigned profile as the hub's mirror knows it (`GET
/// /v1/hosts/{id}/artifacts`): every file the profile needs on either arch, its digest
/// resolved (pinned, listed, or read from its release's checksum file by the hub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredArtifact {
    pub name: String,
    pub arch: crate::profile::Arch,
    /// The pack's version of the file (`""` for a file the profile lists itself).
    #[serde(default)]
    pub version: String,
    /// Where the hub fetches it from (its own mirrors of the release layouts).
    pub url: String,
    pub sha256: String,
    /// The hub holds the file now (`GET /v1/hosts/{id}/artifacts/{sha256}` needs no
    /// upstream download).
    #[serde(default)]
    pub cached: bool,
}

/// `GET /v1/hosts/{id}/artifacts`: the files of the profile assigned to the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredArtifacts {
    /// The profile version these belong to (`""`/0 when nothing is assigned).
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub version: u64,
    pub artifacts: Vec<MirroredArtifact>,
}
