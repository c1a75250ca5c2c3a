//! The `addons` layer, installed after the CNI is ready: plain manifests and Helm charts.
//!
//! * k3s / RKE2: everything goes to the server's auto-deploy directory — manifests as
//!   `cairn-addon-NAME.yaml`, charts as `HelmChart` resources (`repo`/`chart`/`version`;
//!   a chart that is an artifact is placed in the server's `static/charts/` and referenced
//!   as `https://%{KUBERNETES_API}%/static/charts/FILE`, the distributions' air-gap way),
//!   which the distribution's helm-controller installs.
//! * kubeadm: the agent applies manifests with `kubectl apply --server-side` and installs
//!   charts with `helm upgrade --install`, both with the admin kubeconfig.
//!
//! Fetched manifests (`url` + `sha256`) and chart archives come through the artifact cache.

use std::collections::BTreeMap;

use cairn_proto::profile::{AddonsLayer, Arch, Artifact, Flavor};
use cairn_proto::registry::RegistryAccess;
use serde_json::{json, Value};

use super::registries::{chart_source, Resolved};
use super::{cni, url_file_name, Fetch, Placement, PlanError};

/// Where the agent keeps addon files it applies itself (kubeadm).
pub const ADDONS_DIR: &str = "/var/lib/cairn/kubernetes/addons";

/// One thing to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addon {
    /// A manifest file to write (k3s/RKE2 auto-deploy) or apply (kubeadm).
    Manifest {
        name: String,
        path: String,
        content: Option<String>,
        fetch: Option<Fetch>,
    },
    /// A Helm release installed by the agent (kubeadm).
    Helm {
        release: String,
        namespace: String,
        chart: String,
        repo: Option<String>,
        version: String,
        values_file: String,
        values: String,
    },
}

/// The addons of one node, for the flavor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonPlan {
    pub items: Vec<Addon>,
    /// Artifacts to fetch first (fetched manifests, chart archives).
    pub fetch: Vec<Fetch>,
    /// Charts (by index in `charts`) that come from a registry and are not fetched yet:
    /// [`super::registries::resolve_charts`], then [`plan_with`] again, before installing.
    pub pending: Vec<usize>,
}

fn chart_artifact<'a>(a: &'a AddonsLayer, chart: &str, arch: Arch) -> Option<&'a Artifact> {
    a.artifacts
        .iter()
        .find(|x| x.name == chart && x.arch == arch)
}

/// Plan the layer for the flavor and the target's arch (no registries).
pub fn plan(a: &AddonsLayer, flavor: Flavor, arch: Arch) -> Result<AddonPlan, PlanError> {
    plan_with(a, flavor, arch, None, &BTreeMap::new())
}

/// Where one chart's archive comes from.
enum ChartFile<'a> {
    Artifact(&'a Artifact),
    Registry(&'a Resolved),
    /// From a registry, not fetched yet: its file name is not known either.
    Pending,
    Repo,
}

/// Plan the layer with the registries the hub sent and the registry charts fetched so far
/// (`resolved`, by chart index); a registry chart not in `resolved` is listed in
/// [`AddonPlan::pending`]. `registries: None` (validating without the hub): a chart naming a
/// `registry:` is pending whatever its registry; with `Some`, the registry must be there.
pub fn plan_with(
    a: &AddonsLayer,
    flavor: Flavor,
    arch: Arch,
    registries: Option<&[RegistryAccess]>,
    resolved: &BTreeMap<usize, Resolved>,
) -> Result<AddonPlan, PlanError> {
    let mut out = AddonPlan::default();
    let flavor = super::distribution(flavor);
    let dir = flavor.manifests_dir();
    for (i, m) in a.manifests.iter().enumerate() {
        let file = format!("cairn-addon-{}.yaml", m.name);
        let path = match dir {
            Some(d) => format!("{d}/{file}"),
            None => format!("{ADDONS_DIR}/{file}"),
        };
        let fetch = match (&m.content, &m.url, &m.sha256) {
            (Some(_), _, _) => None,
            (None, Some(url), Some(sha)) => Some(Fetch {
                name: format!("addon {}", m.name),
                arch,
                url: url.clone(),
                sha256: sha.clone(),
                size: None,
                place: Placement::Into {
                    dir: path
                        .rsplit_once('/')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default(),
                    file: file.clone(),
                },
            }),
            _ => {
                return Err(PlanError::new(
                    format!("addons.manifests[{i}]"),
                    "a manifest needs `content`, or `url` with its `sha256`",
                ))
            }
        };
        if let Some(f) = &fetch {
            out.fetch.push(f.clone());
        }
        out.items.push(Addon::Manifest {
            name: m.name.clone(),
            path,
            content: m.content.clone(),
            fetch,
        });
    }
    for (i, c) in a.charts.iter().enumerate() {
        let ns = c.namespace.clone().unwrap_or_else(|| "default".into());
        let values = match &c.values {
            Value::Null => json!({}),
            v @ Value::Object(_) => v.clone(),
            _ => {
                return Err(PlanError::new(
                    format!("addons.charts[{i}].values"),
                    "values must be a mapping",
                ))
            }
        };
        let from_registry = match registries {
            Some(regs) => chart_source(c, regs)
                .map_err(|e| PlanError::new(format!("addons.charts[{i}].registry"), e.to_string()))?
                .is_some(),
            None => c.registry.is_some(),
        };
        let source = match (from_registry, resolved.get(&i)) {
            (true, Some(r)) => ChartFile::Registry(r),
            (true, None) => {
                out.pending.push(i);
                ChartFile::Pending
            }
            (false, _) => match chart_artifact(a, &c.chart, arch) {
                Some(art) => ChartFile::Artifact(art),
                None if c.repo.is_some() => ChartFile::Repo,
                None => {
                    return Err(PlanError::missing_artifact(
                        format!("addons.charts[{i}]"),
                        format!(
                            "chart `{}` needs a `repo` (https:// or oci://), a `registry`, or an artifact named `{}` for {}",
                            c.chart,
                            c.chart,
                            super::arch_name(arch)
                        ),
                        &c.chart,
                        arch,
                    ))
                }
            },
        };
        // The archive to place (fetched through the cache) and its file name.
        let fetch_into = |dir: &str, out: &mut AddonPlan| -> Option<String> {
            match &source {
                ChartFile::Artifact(art) => {
                    let file = url_file_name(&art.url);
                    out.fetch.push(super::fetch(
                        art,
                        Placement::Into {
                            dir: dir.into(),
                            file: file.clone(),
                        },
                    ));
                    Some(file)
                }
                ChartFile::Registry(r) => {
                    out.fetch.push(Fetch {
                        name: format!("chart {}", c.name),
                        arch,
                        url: r.url.clone(),
                        sha256: r.sha256.clone(),
                        size: None,
                        place: Placement::Into {
                            dir: dir.into(),
                            file: r.file.clone(),
                        },
                    });
                    Some(r.file.clone())
                }
                ChartFile::Pending => Some(format!("{}-{}.tgz", c.name, c.version)),
                ChartFile::Repo => None,
            }
        };
        match dir.zip(flavor.static_charts_dir()) {
            Some((d, static_charts)) => {
                let mut spec = json!({
                    "targetNamespace": ns,
                    "createNamespace": true,
                    "version": c.version,
                });
                if let Some(file) = fetch_into(static_charts, &mut out) {
                    spec["chart"] =
                        json!(format!("https://%{{KUBERNETES_API}}%/static/charts/{file}"));
                } else {
                    spec["chart"] = json!(c.chart);
                    spec["repo"] = json!(c.repo);
                }
                let text = cni::helm_resource("HelmChart", &c.name, &spec, &values);
                out.items.push(Addon::Manifest {
                    name: c.name.clone(),
                    path: format!("{d}/cairn-addon-chart-{}.yaml", c.name),
                    content: Some(text),
                    fetch: None,
                });
            }
            None => {
                let local = fetch_into(ADDONS_DIR, &mut out);
                out.items.push(Addon::Helm {
                    release: c.name.clone(),
                    namespace: ns,
                    chart: match &local {
                        Some(file) => format!("{ADDONS_DIR}/{file}"),
                        None => c.chart.clone(),
                    },
                    repo: if local.is_some() {
                        None
                    } else {
                        c.repo.clone()
                    },
                    version: c.version.clone(),
                    values_file: format!("{ADDONS_DIR}/{}-values.yaml", c.name),
                    values: super::render::yaml(&values),
                });
            }
        }
    }
    Ok(out)
}
