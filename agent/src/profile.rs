//! A cluster profile, applied: **validate → plan → apply**, the one path `cairn-agent apply
//! PROFILE` and the daemon share.
//!
//! 1. [`validate`] takes a profile the user-data crate read and checked
//!    ([`cairn_userdata::profile::Checked`]: every layer's shape, the os layer's user-data
//!    decoded once) and checks what needs the machine and the Kubernetes knowledge of
//!    [`crate::kubernetes`]: every cross-layer rule (pod network against service network,
//!    the join port of the flavor, the kubeadm token format, values Cairn manages, a
//!    `kubernetes` layer without its `cni`…) and that every artifact the flavor, the CNI and
//!    the add-ons need is listed for the machine's architecture. The result is a [`Plan`];
//!    every problem is a located [`Finding`] (`FILE:LINE:COL` when the profile was read
//!    from text). Nothing is read from the target but its architecture and host name.
//! 2. [`apply`] fetches and verifies every artifact into the cache *before* the first write
//!    into the target (the cache lives outside a root that has none: see
//!    [`artifact_cache`]), then takes the apply lock, runs the os layer through the stage
//!    engine and the Kubernetes phases through [`crate::kubernetes::install`], and returns
//!    a typed [`Outcome`] or [`ApplyError`].
//!
//! So a profile that fails validation, or whose artifacts cannot be had, leaves the target
//! byte-for-byte as it was: no file, no lock file, no state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cairn_proto::profile::{AddonsLayer, Arch, Layer, Profile};
use cairn_proto::registry::RegistryAccess;
use cairn_userdata::diag::Severity;
use cairn_userdata::model::Config;
use cairn_userdata::profile::{Checked, Finding};
use cairn_userdata::stages;

use crate::artifacts::{ArtifactCache, ArtifactError};
use crate::engine::{self, StepJournal};
use crate::events::Emitter;
use crate::host::Host;
use crate::kubernetes::addons::{self, AddonPlan};
use crate::kubernetes::install::{self, InstallError, InstallOptions, Report};
use crate::kubernetes::{self, PlanError, PlanErrorKind, Target};
use crate::packs::{self, PacksError};
use crate::state::{ApplyLock, LockError};

/// The artifact cache of `cairn-agent apply --root DIR` when DIR has none of its own and
/// no `--cache` is given: on the machine running the command, never inside DIR.
pub const HOST_CACHE_DIR: &str = "/var/cache/cairn/artifacts";

/// The machine a profile is validated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// As the target reports it: `amd64`, `arm64` (or another name, refused for Kubernetes).
    pub arch: String,
    /// The Kubernetes node name.
    pub node_name: String,
}

impl Machine {
    /// The target's: the architecture of its `/bin/sh`, its `/etc/hostname`. Reads only.
    pub fn of(host: &Host) -> Machine {
        Machine {
            arch: crate::host::osrelease::target_arch(host).to_string(),
            node_name: install::node_name(host),
        }
    }

    /// A machine of `arch` (`cairn-agent validate --arch`), with a placeholder node name.
    pub fn of_arch(arch: Arch) -> Machine {
        Machine {
            arch: kubernetes::arch_name(arch).to_string(),
            node_name: "node".to_string(),
        }
    }
}

/// The Kubernetes part of a [`Plan`].
#[derive(Debug, Clone)]
pub struct KubernetesPlan {
    pub node: kubernetes::Plan,
    pub addons: Option<AddonPlan>,
    /// Every file the packs catalog added to the layers (those the profile did not list),
    /// with how each is verified ([`crate::packs`]).
    pub packs: Vec<cairn_packs::Planned>,
    /// Where the packs came from: mirrors and their CA, used again to read checksum files.
    pub settings: packs::Settings,
    /// The registries the hub sent for this profile (credentials: never logged).
    pub registries: Vec<RegistryAccess>,
    /// The add-on layer, kept to plan again once its registry charts are fetched.
    pub addons_layer: Option<AddonsLayer>,
    /// The target's architecture.
    pub arch: Arch,
}

/// A profile validated for one machine, ready to apply.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub profile: &'a Profile,
    /// The os layer's user-data as it was decoded when the profile was read; `None`
    /// without an os layer.
    pub os: Option<&'a Config>,
    pub kubernetes: Option<KubernetesPlan>,
}

/// One reason a profile cannot be applied to the machine.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Located at the layer's field (`FILE:LINE:COL` when read from text).
    pub finding: Finding,
    pub kind: PlanErrorKind,
}

/// A profile that cannot be applied to the machine: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", list(.problems))]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl Invalid {
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.problems.iter().map(|p| &p.finding)
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.finding.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The document path of a [`PlanError`]'s field: `kubernetes.server` of the layer at index
/// 1 is `layers[1].kubernetes.server`; a field about the machine (`target.*`) has none.
fn document_path(field: &str, layers: &[Layer]) -> String {
    let (head, rest) = match field.find(['.', '[']) {
        Some(i) => field.split_at(i),
        None => (field, ""),
    };
    layers
        .iter()
        .position(|l| l.kind() == head)
        .map(|i| format!("layers[{i}].{head}{rest}"))
        .unwrap_or_default()
}

/// Validate `checked` for `machine` with upstream packs ([`validate_with`]).
pub fn validate<'a>(checked: &'a Checked, machine: &Machine) -> Result<Plan<'a>, Invalid> {
    validate_with(checked, machine, &packs::Settings::default())
}

/// Validate `checked` for `machine`: the layers completed with the packs catalog's files
/// for the machine's arch (through `settings`' mirrors; nothing is read), then every rule
/// that needs the Kubernetes knowledge of this agent or the machine's architecture. All
/// problems are reported (one per layer at most: a flavor's planner stops at its first).
pub fn validate_with<'a>(
    checked: &'a Checked,
    machine: &Machine,
    settings: &packs::Settings,
) -> Result<Plan<'a>, Invalid> {
    validate_inner(checked, machine, settings, None)
}

/// [`validate_with`], with the chart registries the hub sent for the profile
/// (docs/protocol.md, "Registries"): OCI registries' credentials and CAs become the
/// container runtime's registry configuration, and charts naming a registry are planned
/// to be fetched from it (by [`apply`], before anything is written).
pub fn validate_for<'a>(
    checked: &'a Checked,
    machine: &Machine,
    settings: &packs::Settings,
    registries: &[RegistryAccess],
) -> Result<Plan<'a>, Invalid> {
    validate_inner(checked, machine, settings, Some(registries))
}

/// `registries: None`: validating without the hub (`validate`, `plan`): a chart naming a
/// registry is planned as fetched from it, whatever the registry turns out to be.
fn validate_inner<'a>(
    checked: &'a Checked,
    machine: &Machine,
    settings: &packs::Settings,
    registries: Option<&[RegistryAccess]>,
) -> Result<Plan<'a>, Invalid> {
    let profile = &checked.profile;
    let mut problems = Vec::new();
    let mut problem = |e: PlanError| {
        let path = document_path(&e.field, &profile.layers);
        let message = if path.is_empty() {
            e.to_string()
        } else {
            e.message
        };
        problems.push(Problem {
            finding: checked.finding(Severity::Error, &path, message),
            kind: e.kind,
        });
    };
    let (mut k, mut c) = (None, None);
    for layer in &profile.layers {
        match layer {
            Layer::Kubernetes(x) => k = Some(x),
            Layer::Cni(x) => c = Some(x),
            Layer::Addons(_) | Layer::Os(_) => {}
        }
    }
    if profile.is_addon_profile() {
        problem(PlanError::new(
            "addons",
            "this is an add-on profile (only an `addons` layer): it is attached to hosts on \
             top of an infrastructure profile (`cairn-hub assign --addons NAME@VERSION`), \
             not applied alone",
        ));
    }
    // The profile's own add-ons, then each attached add-on profile's, as one ordered layer.
    let merged = match profile.merged_addons() {
        Ok(m) => m,
        Err(e) => {
            problem(PlanError::new(e.path, e.message));
            None
        }
    };
    let a = merged.as_ref();
    let mut kube = None;
    if let Some(k) = k {
        let target = Target::new(&machine.arch, &machine.node_name);
        match (c, target) {
            (None, _) => problem(PlanError::new(
                "kubernetes",
                format!(
                    "a `kubernetes` layer needs a `cni` layer after it (the pod network{})",
                    if a.is_some() {
                        ", which the add-ons need too"
                    } else {
                        ""
                    }
                ),
            )),
            (_, Err(e)) => problem(e),
            (Some(c), Ok(target)) => {
                let mut k_owned = k.clone();
                let ca_files = kubernetes::registries::runtime_values(
                    &mut k_owned.values,
                    registries.unwrap_or_default(),
                );
                let k = &k_owned;
                match packs::complete(k, Some(c), target.arch, &settings.mirrors) {
                    Err(unresolved) => {
                        for p in unresolved {
                            // A file the target's arch needs and nothing can verify is a
                            // missing artifact (`validate` without `--arch` tells an arch
                            // the profile is not meant for from one it is).
                            problem(match &p.artifact {
                                Some(name) => PlanError::missing_artifact(
                                    p.field,
                                    p.message,
                                    name,
                                    target.arch,
                                ),
                                None => PlanError::new(p.field, p.message),
                            });
                        }
                    }
                    Ok(done) => {
                        let cni = done.cni.as_ref().unwrap_or(c);
                        let node = kubernetes::plan(&done.kubernetes, cni, &target)
                            .map_err(&mut problem)
                            .ok();
                        let addons = a.and_then(|a| {
                            addons::plan_with(
                                a,
                                k.flavor,
                                target.arch,
                                registries,
                                &Default::default(),
                            )
                            .map_err(&mut problem)
                            .ok()
                        });
                        if let Some(mut node) = node {
                            for (path, content) in ca_files {
                                node.files.push(kubernetes::PlanFile {
                                    path,
                                    content,
                                    mode: 0o644,
                                    secret: false,
                                    stage: kubernetes::FileStage::Install,
                                });
                            }
                            kube = Some(KubernetesPlan {
                                node,
                                addons,
                                packs: done.planned,
                                settings: settings.clone(),
                                registries: registries.unwrap_or_default().to_vec(),
                                addons_layer: a.cloned(),
                                arch: target.arch,
                            });
                        }
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid { problems });
    }
    Ok(Plan {
        profile,
        os: checked.has_os_layer().then_some(&checked.os),
        kubernetes: kube,
    })
}

/// The stages of the os layer a profile apply runs: the boot sequence (each with its
/// `.before`/`.after`) and `profile.applied`.
pub fn os_stages() -> Vec<String> {
    stages::DEFAULT_BASES
        .iter()
        .copied()
        .chain([cairn_proto::progress::STAGE_PROFILE_APPLIED])
        .map(str::to_string)
        .collect()
}

/// How [`apply`] runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The Kubernetes phases' options; `install.cache_dir`, when set, is the artifact cache
    /// (see [`artifact_cache`]).
    pub install: InstallOptions,
    /// The artifact cache for a root other than `/` that has no cache of its own.
    pub off_root_cache: PathBuf,
    /// The os layer's stages ([`os_stages`]).
    pub os_stages: Vec<String>,
}

impl ApplyOptions {
    /// The options for `host`: services started and readiness awaited only on `/`.
    pub fn for_host(host: &Host, off_root_cache: impl Into<PathBuf>) -> ApplyOptions {
        ApplyOptions {
            install: InstallOptions {
                start: host.is_live(),
                ..InstallOptions::default()
            },
            off_root_cache: off_root_cache.into(),
            os_stages: os_stages(),
        }
    }
}

/// Where a profile apply keeps its artifacts: `explicit` when given; on `/`, the device's
/// cache [`install::CACHE_DIR`]; on another root, the root's own cache when it already has
/// one (filled by `cairn-agent bundle import --root`); otherwise `off_root`, outside the
/// root — so fetching and verifying never write into a root that has no cache.
pub fn artifact_cache(
    host: &Host,
    explicit: Option<&Path>,
    off_root: &Path,
) -> Result<ArtifactCache, ArtifactError> {
    if let Some(dir) = explicit {
        return Ok(ArtifactCache::new(dir));
    }
    if host.is_live() || host.is_dir(install::CACHE_DIR) {
        return ArtifactCache::in_target(host, install::CACHE_DIR);
    }
    Ok(ArtifactCache::new(off_root))
}

/// What an apply did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Steps of the os layer, and Kubernetes changes on disk, that changed something.
    pub changed: usize,
    pub unchanged: usize,
    /// Steps an interrupted earlier apply had completed (not run again).
    pub resumed: usize,
    /// Best-effort steps of the os layer that failed (the apply went on).
    pub tolerated: usize,
    /// The Kubernetes install, when the profile has a `kubernetes` layer.
    pub kubernetes: Option<Report>,
}

/// How an apply ended, when nothing failed.
#[derive(Debug, Clone)]
pub enum Outcome {
    Applied(Applied),
    /// The journal asked to stop before a step (the daemon shutting down); what completed
    /// is journaled and the next apply resumes after it.
    Interrupted,
}

/// Why an apply failed. The variants before [`ApplyError::Os`] are refused before the first
/// write into the target.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the artifact cache: {0}")]
    Cache(#[source] ArtifactError),
    /// A pack file's checksum file could not be had or gives no digest for it.
    #[error("{0}; nothing was applied")]
    Packs(#[source] PacksError),
    /// The hub's mirror could not give what `hub-only` requires.
    #[error("the hub's artifact mirror: {0}; nothing was applied")]
    Hub(String),
    /// An air-gap bundle's manifest could not be read.
    #[error("the air-gap bundle: {0}; nothing was applied")]
    Bundle(#[source] ArtifactError),
    /// A chart could not be fetched from its registry, or did not match its digest.
    #[error("{0}; nothing was applied")]
    Registry(#[source] kubernetes::registries::RegistryError),
    /// The add-ons could not be planned with the charts fetched from registries.
    #[error("add-ons: {0}; nothing was applied")]
    Replan(#[source] PlanError),
    /// An artifact could not be fetched or did not match its sha256.
    #[error("{0}; nothing was applied")]
    Artifacts(#[source] InstallError),
    /// Another apply holds the root's lock: try again later.
    #[error("{0}; nothing was applied")]
    Locked(#[source] LockError),
    #[error("os layer: {}", describe_failure(.0))]
    Os(engine::Failure),
    #[error(transparent)]
    Kubernetes(InstallError),
}

/// The message of a failed apply: the step and where it comes from, when a step failed.
pub(crate) fn describe_failure(f: &engine::Failure) -> String {
    if f.step.is_empty() {
        f.message.clone()
    } else {
        format!(
            "{}: stage {}, step `{}` failed: {}",
            f.source, f.stage, f.step, f.message
        )
    }
}

/// Apply a validated plan to `host`: artifacts fetched and verified first (nothing is
/// written into the target before they all are, unless its own cache is used), then the
/// apply lock, the os layer through the stage engine (asking `journal` before each of its
/// steps), then the Kubernetes phases.
pub fn apply(
    plan: &Plan,
    host: &Host,
    opts: &ApplyOptions,
    events: &mut Emitter,
    journal: &mut dyn StepJournal,
) -> Result<Outcome, ApplyError> {
    let kube = match &plan.kubernetes {
        None => None,
        Some(k) => {
            let mut node = k.node.clone();
            let mut install_opts = opts.install.clone();
            install_opts
                .fetch
                .ca_certs
                .extend(k.settings.ca_certs.iter().cloned());
            // The packs' digests, from their releases' checksum files, before any fetch.
            let pending: Vec<cairn_packs::Planned> = k
                .packs
                .iter()
                .filter(|p| matches!(p.verify, cairn_packs::Verify::ChecksumFile { .. }))
                .cloned()
                .collect();
            // An air-gap bundle made by `bundle create` records each pack file's digest (read
            // from its release's checksum file when the bundle was made): a file the
            // bundles hold needs no checksum file, so a bundle installs with no network.
            let mut from_bundles: HashMap<String, String> = HashMap::new();
            for b in &install_opts.bundles {
                let m = crate::artifacts::bundle::manifest(b).map_err(ApplyError::Bundle)?;
                for e in m.artifacts {
                    if !e.url.is_empty() {
                        from_bundles.insert(e.url, e.sha256);
                    }
                }
            }
            // The hub's mirror knows the digests it read from the checksum files when it
            // synced the profile: a device that reaches only its hub needs none.
            let from_hub = hub_digests(&install_opts.fetch)?;
            let known = |p: &cairn_packs::Planned| {
                from_bundles.get(&p.url).cloned().or_else(|| {
                    from_hub
                        .get(&(p.name.clone(), p.arch, p.version.clone()))
                        .cloned()
                })
            };
            let (resolved, pending): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|p| known(p).is_some());
            if let (Some(hub), Some(p)) = (install_opts.fetch.hub.as_ref(), pending.first()) {
                if hub.policy == crate::artifacts::hub::ArtifactSource::HubOnly {
                    return Err(ApplyError::Hub(format!(
                        "the hub knows no digest for {} ({}) {} and `artifact_source: hub-only` \
                         forbids reading its checksum file upstream; run `cairn-hub pack sync` \
                         for the profile",
                        p.name,
                        p.arch.as_str(),
                        p.version
                    )));
                }
            }
            let mut digests = packs::digests(&pending, &k.settings, &install_opts.fetch)
                .map_err(ApplyError::Packs)?;
            for p in resolved {
                if let Some(d) = known(&p) {
                    digests.insert((p.name.clone(), p.arch, p.url.clone()), d);
                }
            }
            for f in node.fetch.iter_mut() {
                if let Some(d) = digests.get(&(f.name.clone(), f.arch, f.url.clone())) {
                    f.sha256 = d.clone();
                }
            }
            if let Some(proxy) = &install_opts.proxy {
                kubernetes::proxy::apply(&mut node, proxy);
            }
            let cache = artifact_cache(
                host,
                install_opts.cache_dir.as_deref(),
                &opts.off_root_cache,
            )
            .map_err(ApplyError::Cache)?;
            // Registry charts: fetched with the registry's credentials and verified into the
            // cache, then the add-ons planned again with them.
            let mut addons = k.addons.clone();
            if let (Some(plan), Some(layer)) = (&addons, &k.addons_layer) {
                if !plan.pending.is_empty() {
                    let resolved = kubernetes::registries::resolve_charts(
                        layer,
                        &k.registries,
                        &cache,
                        &install_opts.fetch,
                    )
                    .map_err(ApplyError::Registry)?;
                    addons = Some(
                        addons::plan_with(
                            layer,
                            node.flavor,
                            k.arch,
                            Some(&k.registries),
                            &resolved,
                        )
                        .map_err(ApplyError::Replan)?,
                    );
                }
            }
            let fetched =
                install::fetch(&node, addons.as_ref(), cache, host, &install_opts, events)
                    .map_err(ApplyError::Artifacts)?;
            Some((node, addons, fetched, install_opts))
        }
    };
    let lock = ApplyLock::acquire(host).map_err(ApplyError::Locked)?;
    let mut applied = Applied::default();
    if let Some(config) = plan.os {
        let os_opts = engine::ApplyOptions {
            stages: opts.os_stages.clone(),
            dry_run: false,
            owner: engine::Owner::Profile,
        };
        let outcome = engine::apply_locked(config, host, &os_opts, events, journal, &lock);
        if outcome.interrupted {
            return Ok(Outcome::Interrupted);
        }
        if let Some(f) = outcome.failed {
            return Err(ApplyError::Os(f));
        }
        applied.changed += outcome.changed;
        applied.unchanged += outcome.unchanged;
        applied.resumed += outcome.resumed;
        applied.tolerated += outcome.tolerated.len();
    }
    if let Some((node, addons, fetched, install_opts)) = kube {
        let report = install::install_fetched(
            &node,
            addons.as_ref(),
            &fetched,
            host,
            &install_opts,
            events,
            &lock,
        )
        .map_err(ApplyError::Kubernetes)?;
        applied.changed += report.changes.len();
        applied.kubernetes = Some(report);
    }
    Ok(Outcome::Applied(applied))
}

/// The pack files' digests the hub's mirror resolved for the profile it assigns this host,
/// by (name, arch, pack version); empty without a hub or with `upstream`. A hub that cannot
/// answer is an error only with `hub-only`.
fn hub_digests(
    fetch: &crate::artifacts::FetchOptions,
) -> Result<HashMap<(String, Arch, String), String>, ApplyError> {
    use crate::artifacts::hub::ArtifactSource;
    let mut out = HashMap::new();
    let Some(hub) = fetch.hub.as_ref() else {
        return Ok(out);
    };
    if hub.policy == ArtifactSource::Upstream {
        return Ok(out);
    }
    match hub.list(fetch.connect_timeout) {
        Ok(list) => {
            for a in list.artifacts {
                if !a.version.is_empty() {
                    out.insert((a.name, a.arch, a.version), a.sha256);
                }
            }
        }
        Err(e) if hub.policy == ArtifactSource::HubOnly => return Err(ApplyError::Hub(e)),
        Err(e) => tracing::warn!("{e}; pack digests are read from their checksum files"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn read(text: &str) -> Checked {
        cairn_userdata::profile::read("p.yaml", text).unwrap()
    }

    fn problems(text: &str, arch: Arch) -> Vec<(String, String)> {
        let checked = read(text);
        match validate(&checked, &Machine::of_arch(arch)) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .findings()
                .map(|f| (f.location.to_string(), f.message.clone()))
                .collect(),
        }
    }

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn k3s(extra: &str, cni: &str) -> String {
        format!(
            "name: x\nlayers:\n  - kubernetes:\n      flavor: k3s\n      version: v1.31.4+k3s1\n{extra}      artifacts:\n        - name: k3s\n          arch: amd64\n          url: https://example.org/k3s\n          sha256: {SHA}\n{cni}"
        )
    }

    const CALICO: &str =
        "  - cni:\n      type: calico\n      version: v3.29.1\n      pod_cidr: 10.42.0.0/16\n";

    #[test]
    fn a_consistent_profile_plans() {
        let checked = read(&k3s("", CALICO));
        let plan = validate(&checked, &Machine::of_arch(Arch::Amd64)).unwrap();
        let k = plan.kubernetes.unwrap();
        assert_eq!(k.node.fetch.len(), 1);
        assert!(plan.os.is_none());
    }

    #[test]
    fn cross_layer_problems_are_located_at_their_field() {
        // The pod network overlapping the service network: at cni.pod_cidr.
        let text = k3s(
            "      values:\n        service-cidr: 10.42.0.0/24\n",
            CALICO,
        );
        let p = problems(&text, Arch::Amd64);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "p.yaml:16:17", "{p:?}");
        assert!(p[0].1.contains("overlaps"), "{p:?}");

        // k3s pointed at RKE2's supervisor port: at kubernetes.server.
        let text = k3s(
            "      role: agent\n      server: https://10.0.0.1:9345\n      token: abc\n",
            CALICO,
        );
        let p = problems(&text, Arch::Amd64);
        assert_eq!(p[0].0, "p.yaml:7:15", "{p:?}");
        assert!(p[0].1.contains("9345"), "{p:?}");

        // A kubernetes layer without a cni layer.
        let p = problems(&k3s("", ""), Arch::Amd64);
        assert_eq!(p[0].0, "p.yaml:4:7", "{p:?}");
        assert!(p[0].1.contains("`cni` layer"), "{p:?}");
    }

    #[test]
    fn an_artifact_the_profile_does_not_list_for_the_machine_comes_from_the_pack() {
        // The profile lists k3s for amd64 only: on arm64 the pack supplies it, its digest
        // pending until the release's checksum file is read at apply.
        let checked = read(&k3s("", CALICO));
        let plan = validate(&checked, &Machine::of_arch(Arch::Arm64)).unwrap();
        let k = plan.kubernetes.unwrap();
        assert_eq!(k.node.fetch.len(), 1);
        assert!(k.node.fetch[0].url.ends_with("/v1.31.4+k3s1/k3s-arm64"));
        assert_eq!(k.node.fetch[0].sha256, packs::PENDING);
        assert_eq!(k.packs.len(), 1);
        // On amd64 the listed one is used as listed.
        let plan = validate(&checked, &Machine::of_arch(Arch::Amd64)).unwrap();
        let k = plan.kubernetes.unwrap();
        assert_eq!(k.node.fetch[0].url, "https://example.org/k3s");
        assert!(k.packs.is_empty());
    }

    #[test]
    fn document_paths_follow_the_layer_order() {
        let checked = read(&k3s("", CALICO));
        let layers = &checked.profile.layers;
        assert_eq!(
            document_path("kubernetes.server", layers),
            "layers[0].kubernetes.server"
        );
        assert_eq!(
            document_path("cni.values.x", layers),
            "layers[1].cni.values.x"
        );
        assert_eq!(document_path("target.arch", layers), "");
        assert_eq!(document_path("addons.charts[0]", layers), "");
    }
}
