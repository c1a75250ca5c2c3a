//! The install pipeline: a [`Plan`] becomes a running node, phase by phase —
//! `artifacts` → `host-prep` → `install` → `start` → `api-ready` → `node-ready` →
//! `cni-ready` → `addons`. Each phase is reported as one `phase` event with its status and
//! duration; each has a timeout whose error names the phase and the last thing observed
//! (probe answer, node conditions, the service's log tail).
//!
//! One code path for devices and tests: services are driven through `systemctl` and probed
//! with the flavor's `kubectl`, both run inside the target ([`Host::run_in_target`]: as is
//! on `/`, under chroot for another root, where tests install service-manager doubles).
//!
//! Idempotence: artifacts already in place and files already converged change nothing, and
//! a running service with nothing changed is not restarted. Upgrade: new artifacts replace
//! the old ones and the service restarts in place. A service that then fails to start is
//! rolled back to the artifacts of the last good install ([`place::Record`]), restarted,
//! and the rollback is reported.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_proto::profile::Role;
use cairn_proto::{EventKind, Phase, PhaseStatus};
use serde_json::{json, Value};

use super::addons::{Addon, AddonPlan};
use super::place::{self, Record};
use super::probe::{self, Seen};
use super::{flavor_name, CniDelivery, Fetch, Plan};
use crate::artifacts::{parse_sha256, ArtifactCache, ArtifactRef, FetchOptions};
use crate::engine::{self, ApplyOptions, NoJournal};
use crate::events::Emitter;
use crate::host::fs::FsError;
use crate::host::{Cmd, Host};
use crate::state::{ApplyLock, LockError};
use cairn_userdata::model::Config;

/// The phases' names, in order (the events' `step`; see [`Phase`]).
pub const PHASES: [&str; 8] = [
    Phase::Artifacts.as_str(),
    Phase::HostPrep.as_str(),
    Phase::Install.as_str(),
    Phase::Start.as_str(),
    Phase::ApiReady.as_str(),
    Phase::NodeReady.as_str(),
    Phase::CniReady.as_str(),
    Phase::Addons.as_str(),
];

/// The artifact cache inside the target.
pub const CACHE_DIR: &str = "/var/lib/cairn/artifacts";

/// A time limit per phase.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub artifacts: Duration,
    pub host_prep: Duration,
    pub install: Duration,
    pub start: Duration,
    pub api_ready: Duration,
    pub node_ready: Duration,
    pub cni_ready: Duration,
    pub addons: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Timeouts {
            artifacts: m(60),
            host_prep: m(5),
            install: m(10),
            start: m(5),
            api_ready: m(5),
            node_ready: m(10),
            cni_ready: m(10),
            addons: m(10),
        }
    }
}

impl Timeouts {
    /// Every phase with the same limit (tests).
    pub fn all(d: Duration) -> Timeouts {
        Timeouts {
            artifacts: d,
            host_prep: d,
            install: d,
            start: d,
            api_ready: d,
            node_ready: d,
            cni_ready: d,
            addons: d,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Start services and wait for readiness. Off when installing into an image or a root
    /// other than `/` from the CLI (docs/architecture.md: "nothing is started").
    pub start: bool,
    /// The artifact cache; `None` = [`CACHE_DIR`] inside the target.
    pub cache_dir: Option<PathBuf>,
    pub fetch: FetchOptions,
    pub timeouts: Timeouts,
    /// How often readiness is probed.
    pub poll: Duration,
    /// Air-gap bundles (directories or `.tar` files) imported into the cache before
    /// anything is fetched; a profile they cover installs with no network at all.
    pub bundles: Vec<PathBuf>,
    /// An HTTP(S) proxy for the node's services ([`super::proxy`]); `NO_PROXY` is
    /// completed with the cluster's networks.
    pub proxy: Option<super::proxy::Proxy>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            start: true,
            cache_dir: None,
            fetch: FetchOptions::default(),
            timeouts: Timeouts::default(),
            poll: Duration::from_secs(2),
            bundles: Vec::new(),
            proxy: None,
        }
    }
}

/// How one phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseResult {
    pub phase: Phase,
    pub status: PhaseStatus,
    pub ms: u64,
    pub message: String,
}

/// What an install did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub phases: Vec<PhaseResult>,
    /// One line per thing changed on disk.
    pub changes: Vec<String>,
    /// Services (re)started by this run.
    pub started: Vec<String>,
}

/// A failed install: the phase, what went wrong, and how it ended.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kubernetes phase `{phase}` failed: {message}")]
pub struct InstallError {
    pub phase: Phase,
    pub message: String,
    pub kind: InstallErrorKind,
}

/// How a failed phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallErrorKind {
    Failed,
    /// It ran out of its time limit.
    Timeout,
    /// The new version failed to start; the previous one was put back and runs again.
    RolledBack,
    /// Another apply holds the root's lock: nothing was changed; try again later.
    Locked,
}

impl InstallError {
    /// The status its phase event reports.
    pub fn status(&self) -> PhaseStatus {
        match self.kind {
            InstallErrorKind::Failed | InstallErrorKind::Locked => PhaseStatus::Failed,
            InstallErrorKind::Timeout => PhaseStatus::Timeout,
            InstallErrorKind::RolledBack => PhaseStatus::RolledBack,
        }
    }

    pub fn rolled_back(&self) -> bool {
        self.kind == InstallErrorKind::RolledBack
    }
}

fn fail(phase: Phase, message: impl Into<String>) -> InstallError {
    InstallError {
        phase,
        message: message.into(),
        kind: InstallErrorKind::Failed,
    }
}

fn timeout(phase: Phase, message: impl Into<String>) -> InstallError {
    InstallError {
        phase,
        message: message.into(),
        kind: InstallErrorKind::Timeout,
    }
}

/// Take the apply lock for [`install`]/[`install_with`] (a profile apply holds it already).
fn lock(host: &Host, phase: Phase) -> Result<ApplyLock, InstallError> {
    ApplyLock::acquire(host).map_err(|e| InstallError {
        phase,
        kind: match e {
            LockError::Held { .. } => InstallErrorKind::Locked,
            LockError::Open(_) => InstallErrorKind::Failed,
        },
        message: e.to_string(),
    })
}

struct Run<'a> {
    plan: &'a Plan,
    addons: Option<&'a AddonPlan>,
    host: &'a Host,
    opts: &'a InstallOptions,
    events: &'a mut Emitter,
    cache: &'a ArtifactCache,
    /// Held for every engine run of the install (`None` while only fetching).
    lock: Option<&'a ApplyLock>,
    source: String,
    report: Report,
    /// The install phase changed something on disk.
    changed: bool,
    /// The install phase changed containerd (its artifacts or configuration): restart it.
    restart_containerd: bool,
}

impl Run<'_> {
    fn emit(&mut self, phase: Phase, status: PhaseStatus, ms: u64, message: &str, extra: Value) {
        let mut data = json!({"phase": phase, "status": status, "ms": ms});
        if let (Some(d), Value::Object(m)) = (data.as_object_mut(), extra) {
            d.extend(m);
        }
        self.events.emit(
            EventKind::Phase,
            phase.stage(),
            phase.as_str(),
            &self.source,
            format!("{phase}: {message} ({ms} ms)"),
            data,
        );
        self.report.phases.push(PhaseResult {
            phase,
            status,
            ms,
            message: message.to_string(),
        });
    }

    /// Run one phase: `f` returns (status, message, extra data) or an error; either way
    /// one phase event is emitted with the duration.
    fn phase(
        &mut self,
        phase: Phase,
        f: impl FnOnce(&mut Self) -> Result<PhaseOut, InstallError>,
    ) -> Result<(), InstallError> {
        let started = Instant::now();
        let result = f(self);
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok((status, message, extra)) => {
                self.emit(phase, status, ms, &message, extra);
                Ok(())
            }
            Err(e) => {
                self.emit(
                    phase,
                    e.status(),
                    ms,
                    &e.message,
                    json!({"error": e.message}),
                );
                Err(e)
            }
        }
    }

    fn skip(&mut self, phase: Phase, why: &str) {
        self.emit(phase, PhaseStatus::Skipped, 0, why, Value::Null);
    }

    /// Apply some of the plan's engine steps (by stage and step name).
    fn engine_steps(
        &mut self,
        phase: Phase,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<String>, InstallError> {
        let full = self.plan.into_config();
        let mut config = Config::default();
        for stage in &full.stages {
            for step in &stage.steps {
                if wanted
                    .iter()
                    .any(|(s, n)| *s == stage.name && *n == step.name)
                {
                    config.push_step(&stage.name, step.clone());
                }
            }
        }
        if config.stages.is_empty() {
            return Ok(Vec::new());
        }
        let opts = ApplyOptions {
            stages: config.stages.iter().map(|s| s.name.clone()).collect(),
            dry_run: false,
            owner: engine::Owner::Kubernetes,
        };
        let Some(lock) = self.lock else {
            return Err(fail(phase, "the apply lock is not held"));
        };
        let outcome =
            engine::apply_locked(&config, self.host, &opts, self.events, &mut NoJournal, lock);
        if let Some(f) = outcome.failed {
            return Err(fail(
                phase,
                format!("step {}/{}: {}", f.stage, f.step, f.message),
            ));
        }
        Ok(outcome.changes)
    }

    fn systemctl(&mut self, phase: Phase, verb: &str, unit: &str) -> Result<(), InstallError> {
        let cmd = Cmd::new("systemctl")
            .arg(verb)
            .arg(unit)
            .timeout(self.opts.timeouts.start);
        match self.host.run_in_target(cmd) {
            Ok(o) if o.status == 0 => Ok(()),
            Ok(o) => {
                let mut err = crate::host::runner::tail(&o.stderr);
                if err.is_empty() {
                    err = format!("exit status {}", o.status);
                }
                Err(fail(
                    phase,
                    format!(
                        "`systemctl {verb} {unit}` failed: {err}; {unit} log: {}",
                        probe::log_tail(self.host, unit)
                    ),
                ))
            }
            Err(e) => Err(fail(phase, format!("`systemctl {verb} {unit}`: {e}"))),
        }
    }

    /// Poll `probe` until ready or the phase's time is up.
    fn wait(
        &mut self,
        phase: Phase,
        limit: Duration,
        probe: impl Fn(&Host, &Plan) -> Seen,
    ) -> Result<String, InstallError> {
        let deadline = Instant::now() + limit;
        loop {
            match probe(self.host, self.plan) {
                Seen::Ready(what) => return Ok(what),
                Seen::NotYet(last) => {
                    if Instant::now() >= deadline {
                        return Err(timeout(
                            phase,
                            format!(
                                "timed out after {} s; last seen: {last}; {} log: {}",
                                limit.as_secs_f64().ceil(),
                                self.plan.service,
                                probe::log_tail(self.host, &self.plan.service)
                            ),
                        ));
                    }
                }
            }
            std::thread::sleep(self.opts.poll);
        }
    }
}

/// What a phase returns: its status, message and extra event data.
type PhaseOut = (PhaseStatus, String, Value);

fn source(plan: &Plan) -> String {
    format!("profile:kubernetes/{}", flavor_name(plan.flavor))
}

/// Install (or converge, or upgrade) the node described by `plan`.
pub fn install(
    plan: &Plan,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Report, InstallError> {
    install_with(plan, None, host, opts, events)
}

/// [`install`], then the add-ons once the CNI is ready: the artifacts fetched into the
/// cache of `opts` ([`CACHE_DIR`] in the target by default), then the apply lock taken and
/// [`install_fetched`].
pub fn install_with(
    plan: &Plan,
    addons: Option<&AddonPlan>,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Report, InstallError> {
    let cache = match &opts.cache_dir {
        Some(d) => ArtifactCache::new(d.clone()),
        None => ArtifactCache::in_target(host, CACHE_DIR).map_err(|e| {
            fail(
                Phase::Artifacts,
                format!("the artifact cache {CACHE_DIR}: {e}"),
            )
        })?,
    };
    let fetched = fetch(plan, addons, cache, host, opts, events)?;
    let lock = lock(host, Phase::HostPrep)?;
    install_fetched(plan, addons, &fetched, host, opts, events, &lock)
}

/// The plan's artifacts, verified in the cache: the `artifacts` phase, done.
pub struct Fetched {
    cache: ArtifactCache,
    phase: PhaseResult,
}

impl Fetched {
    pub fn cache(&self) -> &ArtifactCache {
        &self.cache
    }
}

/// The `artifacts` phase on its own: the air-gap bundles of `opts` imported into `cache`,
/// then every artifact of the plan and the add-ons fetched into it, each verified by sha256
/// while streaming. Nothing is written into the target (unless `cache` is inside it), so a
/// failed download or a digest mismatch leaves the target as it was.
pub fn fetch(
    plan: &Plan,
    addons: Option<&AddonPlan>,
    cache: ArtifactCache,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Fetched, InstallError> {
    let phase = {
        let mut run = Run {
            plan,
            addons,
            host,
            opts,
            events,
            cache: &cache,
            lock: None,
            source: source(plan),
            report: Report::default(),
            changed: false,
            restart_containerd: false,
        };
        run.phase(Phase::Artifacts, phase_artifacts)?;
        run.report.phases.pop()
    };
    let phase = phase.ok_or_else(|| fail(Phase::Artifacts, "the phase reported nothing"))?;
    Ok(Fetched { cache, phase })
}

/// The phases after `artifacts`, from the artifacts [`fetch`] verified, under the apply
/// lock the caller holds: host preparation, install, then (when `opts.start`) start,
/// readiness and the add-ons. The report begins with the `artifacts` phase.
pub fn install_fetched(
    plan: &Plan,
    addons: Option<&AddonPlan>,
    fetched: &Fetched,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
    lock: &ApplyLock,
) -> Result<Report, InstallError> {
    let mut run = Run {
        plan,
        addons,
        host,
        opts,
        events,
        cache: &fetched.cache,
        lock: Some(lock),
        source: source(plan),
        report: Report {
            phases: vec![fetched.phase.clone()],
            ..Report::default()
        },
        changed: false,
        restart_containerd: false,
    };
    let previous = Record::load(host);
    run.phase(Phase::HostPrep, phase_host_prep)?;
    let mut changed_install = false;
    run.phase(Phase::Install, |r| {
        let (status, msg, data, changed) = phase_install(r, previous.as_ref())?;
        r.changed = changed;
        changed_install = changed;
        Ok((status, msg, data))
    })?;
    let record = Record {
        flavor: flavor_name(plan.flavor).into(),
        version: plan.version.clone(),
        service: plan.service.clone(),
        artifacts: plan.fetch.clone(),
    };
    if !opts.start {
        for p in &Phase::ALL[3..] {
            run.skip(
                *p,
                "not started: installing into a root other than the running system",
            );
        }
        record
            .save(host)
            .map_err(|e| fail(Phase::Install, e.to_string()))?;
        return Ok(run.report);
    }
    run.phase(Phase::Start, |r| {
        phase_start(r, changed_install, previous.as_ref())
    })?;
    record
        .save(host)
        .map_err(|e| fail(Phase::Start, e.to_string()))?;
    if plan.role == Role::Agent || plan.kubeconfig.is_none() {
        let why = "an agent node has no admin kubeconfig; its readiness is observed from a server";
        for p in [Phase::ApiReady, Phase::NodeReady, Phase::CniReady] {
            run.skip(p, why);
        }
    } else {
        run.phase(Phase::ApiReady, |r| {
            let what = r.wait(Phase::ApiReady, r.opts.timeouts.api_ready, probe::api_ready)?;
            Ok((PhaseStatus::Done, what, Value::Null))
        })?;
        run.phase(Phase::NodeReady, phase_node_ready)?;
        run.phase(Phase::CniReady, |r| {
            let node = r.plan_node();
            let what = r.wait(Phase::CniReady, r.opts.timeouts.cni_ready, move |h, p| {
                probe::cni_ready(h, p, &node)
            })?;
            Ok((PhaseStatus::Done, what, Value::Null))
        })?;
    }
    match addons {
        Some(a) if !a.items.is_empty() => {
            if plan.role == Role::Agent || plan.kubeconfig.is_none() {
                run.skip(Phase::Addons, "add-ons are installed from a server node");
            } else {
                run.phase(Phase::Addons, phase_addons)?;
            }
        }
        _ => run.skip(Phase::Addons, "no add-on layer in this install"),
    }
    Ok(run.report)
}

impl Run<'_> {
    fn plan_node(&self) -> String {
        self.plan.node_name.clone()
    }
}

fn phase_artifacts(r: &mut Run) -> Result<PhaseOut, InstallError> {
    let cache = r.cache;
    let deadline = Instant::now() + r.opts.timeouts.artifacts;
    let (mut fetched, mut cached, mut bytes) = (0usize, 0usize, 0u64);
    let mut imported = 0;
    for b in &r.opts.bundles {
        imported += crate::artifacts::bundle::import(cache, b).map_err(|e| {
            fail(
                Phase::Artifacts,
                format!("importing the air-gap bundle {}: {e}", b.display()),
            )
        })?;
    }
    let all: Vec<Fetch> = r
        .plan
        .fetch
        .iter()
        .chain(r.addons.map(|a| a.fetch.as_slice()).unwrap_or_default())
        .cloned()
        .collect();
    for f in &all {
        if Instant::now() > deadline {
            return Err(timeout(
                Phase::Artifacts,
                format!(
                    "timed out after {} s; last seen: {fetched} fetched, {cached} already cached, next `{}`",
                    r.opts.timeouts.artifacts.as_secs(),
                    f.name
                ),
            ));
        }
        let sha = parse_sha256(&f.sha256)
            .map_err(|e| fail(Phase::Artifacts, format!("artifact `{}`: {e}", f.name)))?;
        if cache.get(&sha).is_some() {
            cached += 1;
            continue;
        }
        let aref = ArtifactRef {
            url: f.url.clone(),
            sha256: sha,
        };
        let name = f.name.clone();
        let events = &mut *r.events;
        let source = r.source.clone();
        let path = cache
            .fetch(&aref, &r.opts.fetch, &mut |p| {
                events.emit(
                    EventKind::DownloadProgress,
                    Phase::Artifacts.stage(),
                    Phase::Artifacts.as_str(),
                    &source,
                    format!("{name}: {} bytes", p.bytes),
                    json!({"artifact": name, "bytes": p.bytes, "total": p.total, "rate": p.rate}),
                );
            })
            .map_err(|e| fail(Phase::Artifacts, format!("artifact `{}`: {e}", f.name)))?;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fetched += 1;
    }
    let status = PhaseStatus::changed(fetched != 0 || imported != 0);
    Ok((
        status,
        format!(
            "{} artifact(s) for {}: {fetched} fetched ({bytes} bytes), {cached} from the cache, {imported} imported from bundles",
            all.len(),
            r.plan
                .fetch
                .first()
                .map(|f| super::arch_name(f.arch))
                .unwrap_or("-")
        ),
        json!({"fetched": fetched, "cached": cached, "bytes": bytes, "imported": imported,
               "artifacts": all.iter().map(|f| json!({"name": f.name, "arch": super::arch_name(f.arch), "sha256": f.sha256})).collect::<Vec<_>>()}),
    ))
}

fn phase_host_prep(r: &mut Run) -> Result<PhaseOut, InstallError> {
    // Missing distribution packages (kubeadm's containerd without a containerd artifact)
    // are installed by the host-prep step itself; say what to do if that cannot work.
    let mut changes = r
        .engine_steps(Phase::HostPrep, &[(super::HOST_PREP_STAGE, "host-prep")])
        .map_err(|mut e| {
            if let Some(pkg) = r.plan.packages.iter().find(|p| !r.host.target_has(p)) {
                e.message = format!(
                    "{}; `{pkg}` is not installed on the target and could not be installed: add the `{pkg}` package to the OS layer, or list a `{pkg}` artifact in kubernetes.artifacts",
                    e.message
                );
            }
            e
        })?;
    // What the flavor prepares itself (kubeadm: swap off).
    changes.extend(
        r.plan
            .distribution()
            .prepare_host(r.host, r.plan)
            .map_err(|e| fail(Phase::HostPrep, e.to_string()))?,
    );
    let status = PhaseStatus::changed(!changes.is_empty());
    let msg = format!(
        "{} kernel module(s), {} sysctl(s), {} package(s) checked; {} change(s)",
        r.plan.modules.len(),
        r.plan.sysctls.len(),
        r.plan.packages.len(),
        changes.len()
    );
    Ok((status, msg, json!({"changes": changes})))
}

/// [`PhaseOut`], and whether anything changed on disk.
type InstallOut = (PhaseStatus, String, Value, bool);

fn phase_install(r: &mut Run, previous: Option<&Record>) -> Result<InstallOut, InstallError> {
    // Whether the runtime's configuration is about to change (read before it is written).
    let dist = r.plan.distribution();
    let config_differs = r
        .plan
        .files
        .iter()
        .filter(|f| dist.is_runtime_input(&f.path))
        .any(|f| r.host.read_opt(&f.path).ok().flatten().as_deref() != Some(f.content.as_bytes()));
    let placed = place::place_all(r.host, r.cache, &r.plan.fetch, previous)
        .map_err(|e| fail(Phase::Install, e.to_string()))?;
    r.restart_containerd = config_differs
        || placed
            .iter()
            .any(|p| dist.runtime_artifacts().contains(&p.name.as_str()));
    let mut changes: Vec<String> = placed.iter().map(ToString::to_string).collect();
    changes.extend(r.engine_steps(
        Phase::Install,
        &[
            ("kubernetes", "files"),
            ("kubernetes", "units"),
            ("cni", "manifests"),
        ],
    )?);
    r.report.changes.extend(changes.iter().cloned());
    let status = PhaseStatus::changed(!changes.is_empty());
    let upgrade = previous
        .filter(|p| p.version != r.plan.version)
        .map(|p| p.version.clone());
    let msg = match &upgrade {
        Some(old) => format!(
            "{} {} replaces {old}: {} change(s)",
            flavor_name(r.plan.flavor),
            r.plan.version,
            changes.len()
        ),
        None => format!(
            "{} {}: {} change(s)",
            flavor_name(r.plan.flavor),
            r.plan.version,
            changes.len()
        ),
    };
    let changed = !changes.is_empty();
    Ok((
        status,
        msg,
        json!({"changes": changes, "upgraded_from": upgrade}),
        changed,
    ))
}

fn phase_start(
    r: &mut Run,
    changed: bool,
    previous: Option<&Record>,
) -> Result<PhaseOut, InstallError> {
    if changed {
        // Unit files may have changed: make the service manager read them again.
        let out = r
            .host
            .run_in_target(Cmd::new("systemctl").arg("daemon-reload"))
            .map_err(|e| fail(Phase::Start, format!("`systemctl daemon-reload`: {e}")))?;
        if out.status != 0 {
            return Err(fail(
                Phase::Start,
                format!(
                    "`systemctl daemon-reload` failed: {}",
                    crate::host::runner::tail(&out.stderr)
                ),
            ));
        }
    }
    let svc = r.plan.service.clone();
    let unit = format!("{svc}.service");
    let mut started = Vec::new();
    let result = (|| -> Result<(), InstallError> {
        let dist = r.plan.distribution();
        if let Some(runtime) = dist.runtime_unit() {
            if r.restart_containerd || !probe::is_active(r.host, runtime) {
                r.systemctl(Phase::Start, "restart", runtime)?;
                started.push(runtime.to_string());
            }
        }
        if let (Some(argv), Some(marker)) =
            (r.plan.bootstrap.clone(), dist.bootstrapped_marker(r.plan))
        {
            if !r.host.exists(marker) {
                let cmd = Cmd::new(argv[0].clone())
                    .args(argv[1..].iter().cloned())
                    .timeout(r.opts.timeouts.start);
                let out = r
                    .host
                    .run_in_target(cmd)
                    .map_err(|e| fail(Phase::Start, format!("`{}`: {e}", argv.join(" "))))?;
                if out.status != 0 {
                    return Err(fail(
                        Phase::Start,
                        format!(
                            "`{}` exited with status {}: {}; {} log: {}",
                            argv.join(" "),
                            out.status,
                            crate::host::runner::tail(&out.stderr),
                            unit,
                            probe::log_tail(r.host, &unit)
                        ),
                    ));
                }
                started.push(unit.clone());
                return Ok(());
            }
            // Bootstrapped earlier with another version: upgrade the control plane (or
            // this node's configuration) with the new binaries before the service
            // restarts on them, as the flavor's upgrade procedure goes.
            let old = previous.map(|p| p.version.as_str()).unwrap_or("");
            if let Some(upgrade) = dist
                .upgrade_command(r.plan)
                .filter(|_| !old.is_empty() && old != r.plan.version)
            {
                let cmd = Cmd::new(upgrade[0].clone())
                    .args(upgrade[1..].iter().cloned())
                    .timeout(r.opts.timeouts.start);
                let out = r
                    .host
                    .run_in_target(cmd)
                    .map_err(|e| fail(Phase::Start, format!("`{}`: {e}", upgrade.join(" "))))?;
                if out.status != 0 {
                    return Err(fail(
                        Phase::Start,
                        format!(
                            "`{}` (from {old}) exited with status {}: {}",
                            upgrade.join(" "),
                            out.status,
                            crate::host::runner::tail(&out.stderr)
                        ),
                    ));
                }
            }
        }
        if changed {
            r.systemctl(Phase::Start, "restart", &unit)?;
            started.push(unit.clone());
        } else if !probe::is_active(r.host, &unit) {
            r.systemctl(Phase::Start, "start", &unit)?;
            started.push(unit.clone());
        }
        if !probe::is_active(r.host, &unit) {
            return Err(fail(
                Phase::Start,
                format!(
                    "{unit} is not active after starting; log: {}",
                    probe::log_tail(r.host, &unit)
                ),
            ));
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            r.report.started.extend(started.iter().cloned());
            let msg = if started.is_empty() {
                format!("{unit} already running, nothing changed: not restarted")
            } else {
                format!("started {}", started.join(", "))
            };
            let status = PhaseStatus::changed(!started.is_empty());
            Ok((status, msg, json!({"started": started})))
        }
        Err(e) => {
            let Some(prev) = previous.filter(|p| p.artifacts != r.plan.fetch) else {
                return Err(e);
            };
            // Roll back: the previous artifacts are still in the content-addressed cache.
            let restore =
                place::place_all(r.host, r.cache, &prev.artifacts, None).map_err(|pe| {
                    fail(
                        Phase::Start,
                        format!("{}; rolling back failed too: {pe}", e.message),
                    )
                })?;
            r.report
                .changes
                .extend(restore.iter().map(ToString::to_string));
            r.systemctl(Phase::Start, "restart", &unit).map_err(|re| {
                fail(
                    Phase::Start,
                    format!(
                        "{}; rolled back to {} but it did not start either: {}",
                        e.message, prev.version, re.message
                    ),
                )
            })?;
            r.report.started.push(unit.clone());
            Err(InstallError {
                phase: Phase::Start,
                message: format!(
                    "{} {} failed to start ({}); rolled back to {} {}, which is running again",
                    flavor_name(r.plan.flavor),
                    r.plan.version,
                    e.message,
                    prev.flavor,
                    prev.version
                ),
                kind: InstallErrorKind::RolledBack,
            })
        }
    }
}

fn phase_node_ready(r: &mut Run) -> Result<PhaseOut, InstallError> {
    let deadline = Instant::now() + r.opts.timeouts.node_ready;
    let mut applied = Vec::new();
    // Nothing changed and the CNI already runs: applying it again would only add a Helm
    // revision or a no-op apply; leave the cluster alone.
    let node = r.plan_node();
    let settled = !r.changed && matches!(probe::cni_ready(r.host, r.plan, &node), Seen::Ready(_));
    let delivery = if settled {
        CniDelivery::Embedded
    } else {
        r.plan.cni_delivery.clone()
    };
    match delivery {
        CniDelivery::Apply { manifests, .. } => {
            // Kubelet keeps the node NotReady until a CNI is configured, so the manifests
            // go in first; an operator's CRDs take a moment to be served, hence the retry.
            for m in manifests {
                let mut last;
                loop {
                    let cmd = probe::kubectl_cmd(
                        r.plan,
                        &["apply", "--server-side", "--force-conflicts", "-f", &m],
                    );
                    match r.host.run_in_target(cmd) {
                        Ok(o) if o.status == 0 => break,
                        Ok(o) => last = crate::host::runner::tail(&o.stderr),
                        Err(e) => last = e.to_string(),
                    }
                    if Instant::now() >= deadline {
                        return Err(timeout(
                            Phase::NodeReady,
                            format!("timed out applying the CNI manifest {m}; last seen: {last}"),
                        ));
                    }
                    std::thread::sleep(r.opts.poll);
                }
                applied.push(m);
            }
        }
        CniDelivery::Helm {
            kubeconfig,
            release,
            namespace,
            chart_artifact,
            values_file,
        } => {
            let helm = r.plan.distribution().helm().ok_or_else(|| {
                fail(
                    Phase::NodeReady,
                    format!(
                        "{} has no helm to install {release}",
                        r.plan.distribution().name()
                    ),
                )
            })?;
            let cmd = Cmd::new(helm)
                .args(["upgrade", "--install", &release, &chart_artifact])
                .args(["--namespace", &namespace, "--values", &values_file])
                .args(["--kubeconfig", &kubeconfig])
                .timeout(r.opts.timeouts.node_ready);
            let out = r
                .host
                .run_in_target(cmd)
                .map_err(|e| fail(Phase::NodeReady, format!("helm install of {release}: {e}")))?;
            if out.status != 0 {
                return Err(fail(
                    Phase::NodeReady,
                    format!(
                        "helm install of {release} failed: {}",
                        crate::host::runner::tail(&out.stderr)
                    ),
                ));
            }
            applied.push(chart_artifact);
        }
        _ => {}
    }
    let node = r.plan_node();
    let left = deadline.saturating_duration_since(Instant::now());
    let what = r.wait(Phase::NodeReady, left, move |h, p| {
        probe::node_ready(h, p, &node)
    })?;
    Ok((PhaseStatus::Done, what, json!({"cni_applied": applied})))
}

fn phase_addons(r: &mut Run) -> Result<PhaseOut, InstallError> {
    let Some(addons) = r.addons else {
        return Ok((PhaseStatus::Skipped, "no add-ons".into(), Value::Null));
    };
    let deadline = Instant::now() + r.opts.timeouts.addons;
    // Without an auto-deploy directory the agent applies the add-ons itself.
    let dist = r.plan.distribution();
    let applies_itself = dist.manifests_dir().is_none();
    let mut changes: Vec<String> = place::place_all(r.host, r.cache, &addons.fetch, None)
        .map_err(|e| fail(Phase::Addons, e.to_string()))?
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut applied = Vec::new();
    for item in &addons.items {
        if Instant::now() > deadline {
            return Err(timeout(
                Phase::Addons,
                format!(
                    "timed out after {} s; last seen: {} add-on(s) applied",
                    r.opts.timeouts.addons.as_secs(),
                    applied.len()
                ),
            ));
        }
        match item {
            Addon::Manifest {
                name,
                path,
                content,
                ..
            } => {
                if let Some(text) = content {
                    if converge_file(r.host, path, text.as_bytes())
                        .map_err(|e| fail(Phase::Addons, format!("add-on `{name}`: {e}")))?
                    {
                        changes.push(format!("wrote {path}"));
                    }
                }
                if applies_itself {
                    let cmd = probe::kubectl_cmd(
                        r.plan,
                        &["apply", "--server-side", "--force-conflicts", "-f", path],
                    );
                    let out = r.host.run_in_target(cmd).map_err(|e| {
                        fail(Phase::Addons, format!("applying add-on `{name}`: {e}"))
                    })?;
                    if out.status != 0 {
                        return Err(fail(
                            Phase::Addons,
                            format!(
                                "applying add-on `{name}` ({path}) failed: {}",
                                crate::host::runner::tail(&out.stderr)
                            ),
                        ));
                    }
                }
                applied.push(name.clone());
            }
            Addon::Helm {
                release,
                namespace,
                chart,
                repo,
                version,
                values_file,
                values,
            } => {
                if converge_file(r.host, values_file, values.as_bytes())
                    .map_err(|e| fail(Phase::Addons, format!("chart `{release}`: {e}")))?
                {
                    changes.push(format!("wrote {values_file}"));
                }
                let (Some(helm), Some(kubeconfig)) = (dist.helm(), r.plan.kubeconfig.clone())
                else {
                    return Err(fail(
                        Phase::Addons,
                        format!(
                            "chart `{release}`: {} installs charts from its auto-deploy directory, not with helm",
                            dist.name()
                        ),
                    ));
                };
                let mut cmd = Cmd::new(helm).args(["upgrade", "--install", release, chart]);
                if let Some(repo) = repo {
                    cmd = cmd.args(["--repo", repo]);
                }
                cmd = cmd
                    .args(["--version", version, "--namespace", namespace])
                    .arg("--create-namespace")
                    .args(["--values", values_file])
                    .args(["--kubeconfig", &kubeconfig])
                    .timeout(deadline.saturating_duration_since(Instant::now()));
                let out = r.host.run_in_target(cmd).map_err(|e| {
                    fail(Phase::Addons, format!("helm install of `{release}`: {e}"))
                })?;
                if out.status != 0 {
                    return Err(fail(
                        Phase::Addons,
                        format!(
                            "helm install of `{release}` failed: {}",
                            crate::host::runner::tail(&out.stderr)
                        ),
                    ));
                }
                applied.push(release.clone());
            }
        }
    }
    r.report.changes.extend(changes.iter().cloned());
    let how = if applies_itself {
        "applied"
    } else {
        "handed to the auto-deploy directory"
    };
    Ok((
        PhaseStatus::Done,
        format!("{} add-on(s) {how}: {}", applied.len(), applied.join(", ")),
        json!({"addons": applied, "changes": changes}),
    ))
}

/// Write `content` at `path` in the target unless it is already there; true if written.
fn converge_file(host: &Host, path: &str, content: &[u8]) -> Result<bool, FsError> {
    if host.read_opt(path)?.as_deref() == Some(content) {
        return Ok(false);
    }
    host.write_atomic(path, content, 0o600, None)?;
    Ok(true)
}

/// The node name: the target's `/etc/hostname` (first label kept whole), else the running
/// system's host name, lower-cased.
pub fn node_name(host: &Host) -> String {
    let from_file = host
        .read_text("/etc/hostname")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = from_file.unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into())
    });
    name.to_ascii_lowercase()
}
