//! The flavor seam: everything that differs between Kubernetes distributions, behind one
//! trait, [`Distribution`], with one implementation per flavor ([`super::k3s::K3s`],
//! [`super::rke2::Rke2`], [`super::kubeadm::Kubeadm`]).
//!
//! [`distribution`] is the one place that maps the profile's `Flavor` enum to its
//! implementation; the rest of the Kubernetes layer (planning, proxy, readiness probes,
//! add-ons, the install pipeline) asks the trait object and never matches on the enum
//! (`agent/tests/architecture.rs` fails when it does).
//!
//! Adding a flavor: a variant of `cairn_proto::profile::Flavor`, one module implementing
//! [`Distribution`], and one arm in [`distribution`].

use cairn_proto::profile::{CniLayer, Flavor, KubernetesLayer};

use super::{Plan, PlanError, Target};
use crate::host::{fs::FsError, Host, RunError};

/// One Kubernetes distribution's install contract, as the agent uses it.
pub trait Distribution: Sync {
    /// The flavor's name as profiles spell it (`k3s`, `rke2`, `kubeadm`).
    fn name(&self) -> &'static str;

    /// The node's install plan: files, artifacts and their placement, host preparation
    /// (modules, sysctls, packages), units, bootstrap command, CNI delivery.
    fn plan(&self, k: &KubernetesLayer, cni: &CniLayer, target: &Target)
        -> Result<Plan, PlanError>;

    /// The port a node joins an existing cluster on when the `server:` URL names none.
    fn join_port(&self) -> u16;

    /// Why `port` in a `server:` URL is another flavor's join endpoint (a node that would
    /// never join), or `None` when it may be right. `host` is for the suggested fix.
    fn join_port_mistake(&self, host: &str, port: u16) -> Option<String>;

    /// The flavor's kubectl as argv (the admin kubeconfig is added by the caller).
    fn kubectl(&self) -> Vec<String>;

    /// The server's auto-deploy directory, when the distribution installs manifests and
    /// `HelmChart` resources from one (k3s, RKE2); `None` when the agent applies them
    /// itself with kubectl and helm (kubeadm).
    fn manifests_dir(&self) -> Option<&'static str>;

    /// Where chart archives are served from to the distribution's helm-controller
    /// (`https://%{KUBERNETES_API}%/static/charts/FILE`); `None` without one.
    fn static_charts_dir(&self) -> Option<&'static str>;

    /// The helm binary the agent runs for charts it installs itself (kubeadm), or `None`.
    fn helm(&self) -> Option<String>;

    /// Put the proxy's environment lines (`KEY=value`) into the plan's services.
    fn apply_proxy(&self, plan: &mut Plan, env_lines: &str);

    /// Host preparation the stage engine cannot express (kubeadm: swap turned off),
    /// run in the `host-prep` phase after the plan's modules, sysctls and packages.
    /// Returns one line per change.
    fn prepare_host(&self, _host: &Host, _plan: &Plan) -> Result<Vec<String>, HostPrepError> {
        Ok(Vec::new())
    }

    /// A container runtime run as its own unit and (re)started before the node's service
    /// (kubeadm: `containerd.service`); `None` when the distribution embeds it.
    fn runtime_unit(&self) -> Option<&'static str> {
        None
    }

    /// Whether a plan file is an input of [`Distribution::runtime_unit`] (a change to it
    /// restarts the runtime).
    fn is_runtime_input(&self, _path: &str) -> bool {
        false
    }

    /// Artifacts that make up the runtime unit (a new one restarts it).
    fn runtime_artifacts(&self) -> &'static [&'static str] {
        &[]
    }

    /// For a plan with a bootstrap command: the file whose presence shows the node was
    /// bootstrapped already (the command never runs twice).
    fn bootstrapped_marker(&self, _plan: &Plan) -> Option<&'static str> {
        None
    }

    /// The command that upgrades a node bootstrapped with another version, run before
    /// the service restarts on its new binaries; `None` when replacing them is enough.
    fn upgrade_command(&self, _plan: &Plan) -> Option<Vec<String>> {
        None
    }
}

/// Why a flavor's own host preparation failed.
#[derive(Debug, thiserror::Error)]
pub enum HostPrepError {
    #[error("{what}: {source}")]
    Fs {
        what: String,
        #[source]
        source: FsError,
    },
    #[error("{what}: {source}")]
    Run {
        what: String,
        #[source]
        source: RunError,
    },
}

/// The implementation of a flavor: the one place the enum is matched.
pub fn distribution(flavor: Flavor) -> &'static dyn Distribution {
    match flavor {
        Flavor::K3s => &super::k3s::K3s,
        Flavor::Rke2 => &super::rke2::Rke2,
        Flavor::Kubeadm => &super::kubeadm::Kubeadm,
    }
}
