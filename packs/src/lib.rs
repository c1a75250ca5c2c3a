//! Packs: a profile's `kubernetes` and `cni` layers named by flavor/type and version only,
//! turned into the files they need — per architecture, from each project's own release
//! layout, each with the way it is verified.
//!
//! * [`catalog`] — the upstream sources (k3s, RKE2, dl.k8s.io, containerd, runc, CNI
//!   plugins, crictl, Helm, Calico, Cilium), their URL templates and checksum files, the
//!   default component versions, and the digests pinned for files whose project publishes
//!   no checksum. Every source's base URL can be replaced by a mirror ([`Mirrors`]): the
//!   same relative layout is then fetched from there.
//! * [`resolve`] — the files a profile needs for one arch ([`Planned`]): a URL and either a
//!   pinned digest or the checksum file (and entry) to read it from. Nothing here touches
//!   the network: the agent fetches checksum files (over verified TLS) and parses them with
//!   [`checksum::parse`].
//! * [`compat`] — which Kubernetes versions a CNI version supports and which pod networks it
//!   can use; the one check `cairn_userdata::profile` (agent `validate`, hub upload) runs.
//!
//! Versions are templates, not lists: a release the catalog has never seen resolves through
//! the same layout, with its digest read from the checksum file of that same release.

pub mod catalog;
pub mod checksum;
pub mod compat;
pub mod version;

pub use catalog::{resolve, Mirrors, PinOrigin, Planned, ResolveProblem, Source, Verify};
pub use checksum::{ChecksumError, ChecksumFormat};
pub use compat::{check, Problem, Severity};
