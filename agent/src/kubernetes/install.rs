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

use cairn_proto::profile::{Flavor, Role};
use cairn_proto::EventKind;
use serde_json::{json, Value};

use super::addons::{Addon, AddonPlan};
use super::place::{self, Record};
use super::probe::{self, Seen};
use super::{flavor_name, CniDelivery, Fetch, Plan};
use crate::artifacts::{parse_sha256, ArtifactCache, ArtifactRef, FetchOptions};
use crate::engine::{self, ApplyOptions};
use crate::events::Emitter;
use crate::host::{Cmd, Host};
use cairn_userdata::model::Config;

/// The phases, in order.
pub const PHASES: [&str; 8] = [
    "artifacts",
    "host-prep",
    "install",
    "start",
    "api-ready",
    "node-ready",
    "cni-ready",
    "addons",
];

/// The stage a phase's event names (the hub's fleet view groups hosts' progress by it):
/// `cni` for `cni-ready`, `addons` for `addons`, `kubernetes` for the others.
pub fn event_stage(phase: &str) -> &'static str {
    match phase {
        "cni-ready" => "cni",
        "addons" => "addons",
        _ => "kubernetes",
    }
}

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
    pub phase: &'static str,
    /// `done`, `unchanged`, `skipped`, `failed`, `timeout` or `rolled_back`.
    pub status: &'static str,
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

/// A failed install: the phase, what went wrong, and whether the previous version was
/// restored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kubernetes phase `{phase}` failed: {message}")]
pub struct InstallError {
    pub phase: &'static str,
    pub message: String,
    pub rolled_back: bool,
}

fn fail(phase: &'static str, message: impl Into<String>) -> InstallError {
    InstallError {
        phase,
        message: message.into(),
        rolled_back: false,
    }
}

struct Run<'a> {
    plan: &'a Plan,
    addons: Option<&'a AddonPlan>,
    host: &'a Host,
    opts: &'a InstallOptions,
    events: &'a mut Emitter,
    source: String,
    report: Report,
    /// The install phase changed something on disk.
    changed: bool,
}

impl Run<'_> {
    fn emit(
        &mut self,
        phase: &'static str,
        status: &'static str,
        ms: u64,
        message: &str,
        extra: Value,
    ) {
        let mut data = json!({"phase": phase, "status": status, "ms": ms});
        if let (Some(d), Value::Object(m)) = (data.as_object_mut(), extra) {
            d.extend(m);
        }
        self.events.emit(
            EventKind::Phase,
            event_stage(phase),
            phase,
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
        phase: &'static str,
        f: impl FnOnce(&mut Self) -> Result<(&'static str, String, Value), InstallError>,
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
                let status = if e.rolled_back {
                    "rolled_back"
                } else if e.message.starts_with("timed out") {
                    "timeout"
                } else {
                    "failed"
                };
                self.emit(phase, status, ms, &e.message, json!({"error": e.message}));
                Err(e)
            }
        }
    }

    fn skip(&mut self, phase: &'static str, why: &str) {
        self.emit(phase, "skipped", 0, why, Value::Null);
    }

    fn cache(&self) -> Result<ArtifactCache, String> {
        match &self.opts.cache_dir {
            Some(d) => Ok(ArtifactCache::new(d.clone())),
            None => ArtifactCache::in_target(self.host, CACHE_DIR)
                .map_err(|e| format!("the artifact cache {CACHE_DIR}: {e}")),
        }
    }

    /// Apply some of the plan's engine steps (by stage and step name).
    fn engine_steps(
        &mut self,
        phase: &'static str,
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
        let outcome = engine::apply(&config, self.host, &opts, self.events);
        if let Some(f) = outcome.failed {
            return Err(fail(
                phase,
                format!("step {}/{}: {}", f.stage, f.step, f.message),
            ));
        }
        Ok(outcome.changes)
    }

    fn systemctl(
        &mut self,
        phase: &'static str,
        verb: &str,
        unit: &str,
    ) -> Result<(), InstallError> {
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
        phase: &'static str,
        limit: Duration,
        probe: impl Fn(&Host, &Plan) -> Seen,
    ) -> Result<String, InstallError> {
        let deadline = Instant::now() + limit;
        loop {
            match probe(self.host, self.plan) {
                Seen::Ready(what) => return Ok(what),
                Seen::NotYet(last) => {
                    if Instant::now() >= deadline {
                        return Err(fail(
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

/// Install (or converge, or upgrade) the node described by `plan`.
pub fn install(
    plan: &Plan,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Report, InstallError> {
    install_with(plan, None, host, opts, events)
}

/// [`install`], then the add-ons once the CNI is ready.
pub fn install_with(
    plan: &Plan,
    addons: Option<&AddonPlan>,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Report, InstallError> {
    let mut run = Run {
        plan,
        addons,
        host,
        opts,
        events,
        source: format!("profile:kubernetes/{}", flavor_name(plan.flavor)),
        report: Report::default(),
        changed: false,
    };
    let previous = Record::load(host);
    run.phase("artifacts", phase_artifacts)?;
    run.phase("host-prep", phase_host_prep)?;
    let mut changed_install = Vec::new();
    run.phase("install", |r| {
        let (status, msg, data, changes) = phase_install(r, previous.as_ref())?;
        r.changed = !changes.is_empty();
        changed_install = changes;
        Ok((status, msg, data))
    })?;
    let record = Record {
        flavor: flavor_name(plan.flavor).into(),
        version: plan.version.clone(),
        service: plan.service.clone(),
        artifacts: plan.fetch.clone(),
    };
    if !opts.start {
        for p in &PHASES[3..] {
            run.skip(
                p,
                "not started: installing into a root other than the running system",
            );
        }
        record
            .save(host)
            .map_err(|e| fail("install", format!("recording the install: {e}")))?;
        return Ok(run.report);
    }
    run.phase("start", |r| {
        phase_start(r, &changed_install, previous.as_ref())
    })?;
    record
        .save(host)
        .map_err(|e| fail("start", format!("recording the install: {e}")))?;
    if plan.role == Role::Agent || plan.kubeconfig.is_none() {
        let why = "an agent node has no admin kubeconfig; its readiness is observed from a server";
        for p in ["api-ready", "node-ready", "cni-ready"] {
            run.skip(p, why);
        }
    } else {
        run.phase("api-ready", |r| {
            let what = r.wait("api-ready", r.opts.timeouts.api_ready, probe::api_ready)?;
            Ok(("done", what, Value::Null))
        })?;
        run.phase("node-ready", phase_node_ready)?;
        run.phase("cni-ready", |r| {
            let node = r.plan_node();
            let what = r.wait("cni-ready", r.opts.timeouts.cni_ready, move |h, p| {
                probe::cni_ready(h, p, &node)
            })?;
            Ok(("done", what, Value::Null))
        })?;
    }
    match addons {
        Some(a) if !a.items.is_empty() => {
            if plan.role == Role::Agent || plan.kubeconfig.is_none() {
                run.skip("addons", "add-ons are installed from a server node");
            } else {
                run.phase("addons", phase_addons)?;
            }
        }
        _ => run.skip("addons", "no add-on layer in this install"),
    }
    Ok(run.report)
}

impl Run<'_> {
    fn plan_node(&self) -> String {
        self.plan.node_name.clone()
    }
}

fn phase_artifacts(r: &mut Run) -> Result<(&'static str, String, Value), InstallError> {
    let cache = r.cache().map_err(|e| fail("artifacts", e))?;
    let deadline = Instant::now() + r.opts.timeouts.artifacts;
    let (mut fetched, mut cached, mut bytes) = (0usize, 0usize, 0u64);
    let mut imported = 0;
    for b in &r.opts.bundles {
        imported += crate::artifacts::bundle::import(&cache, b).map_err(|e| {
            fail(
                "artifacts",
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
            return Err(fail(
                "artifacts",
                format!(
                    "timed out after {} s; last seen: {fetched} fetched, {cached} already cached, next `{}`",
                    r.opts.timeouts.artifacts.as_secs(),
                    f.name
                ),
            ));
        }
        let sha = parse_sha256(&f.sha256)
            .map_err(|e| fail("artifacts", format!("artifact `{}`: {e}", f.name)))?;
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
                    "kubernetes",
                    "artifacts",
                    &source,
                    format!("{name}: {} bytes", p.bytes),
                    json!({"artifact": name, "bytes": p.bytes, "total": p.total, "rate": p.rate}),
                );
            })
            .map_err(|e| fail("artifacts", format!("artifact `{}`: {e}", f.name)))?;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fetched += 1;
    }
    let status = if fetched == 0 && imported == 0 {
        "unchanged"
    } else {
        "done"
    };
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

fn phase_host_prep(r: &mut Run) -> Result<(&'static str, String, Value), InstallError> {
    // Missing distribution packages (kubeadm's containerd without a containerd artifact)
    // are installed by the host-prep step itself; say what to do if that cannot work.
    let changes = r
        .engine_steps("host-prep", &[(super::HOST_PREP_STAGE, "host-prep")])
        .map_err(|mut e| {
            if let Some(pkg) = r.plan.packages.iter().find(|p| !r.host.target_has(p)) {
                e.message = format!(
                    "{}; `{pkg}` is not installed on the target and could not be installed: add the `{pkg}` package to the OS layer, or list a `{pkg}` artifact in kubernetes.artifacts",
                    e.message
                );
            }
            e
        })?;
    let status = if changes.is_empty() {
        "unchanged"
    } else {
        "done"
    };
    let msg = format!(
        "{} kernel module(s), {} sysctl(s), {} package(s) checked; {} change(s)",
        r.plan.modules.len(),
        r.plan.sysctls.len(),
        r.plan.packages.len(),
        changes.len()
    );
    Ok((status, msg, json!({"changes": changes})))
}

type InstallOut = (&'static str, String, Value, Vec<String>);

fn phase_install(r: &mut Run, previous: Option<&Record>) -> Result<InstallOut, InstallError> {
    let cache = r.cache().map_err(|e| fail("install", e))?;
    let mut changes = place::place_all(r.host, &cache, &r.plan.fetch, previous)
        .map_err(|e| fail("install", e))?;
    changes.extend(r.engine_steps(
        "install",
        &[
            ("kubernetes", "files"),
            ("kubernetes", "units"),
            ("cni", "manifests"),
        ],
    )?);
    r.report.changes.extend(changes.iter().cloned());
    let status = if changes.is_empty() {
        "unchanged"
    } else {
        "done"
    };
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
    Ok((
        status,
        msg,
        json!({"changes": changes, "upgraded_from": upgrade}),
        changes,
    ))
}

fn phase_start(
    r: &mut Run,
    changes: &[String],
    previous: Option<&Record>,
) -> Result<(&'static str, String, Value), InstallError> {
    let changed = !changes.is_empty();
    if changed {
        // Unit files may have changed: make the service manager read them again.
        let out = r
            .host
            .run_in_target(Cmd::new("systemctl").arg("daemon-reload"))
            .map_err(|e| fail("start", format!("`systemctl daemon-reload`: {e}")))?;
        if out.status != 0 {
            return Err(fail(
                "start",
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
        if r.plan.flavor == Flavor::Kubeadm {
            let containerd_changed = changes.iter().any(|c| c.contains("containerd"));
            if containerd_changed || !probe::is_active(r.host, "containerd.service") {
                r.systemctl("start", "restart", "containerd.service")?;
                started.push("containerd.service".to_string());
            }
            if let Some(argv) = r.plan.bootstrap.clone() {
                let marker = if argv.get(1).map(String::as_str) == Some("init") {
                    super::kubeadm::KUBECONFIG
                } else {
                    "/etc/kubernetes/kubelet.conf"
                };
                if !r.host.exists(marker) {
                    let cmd = Cmd::new(argv[0].clone())
                        .args(argv[1..].iter().cloned())
                        .timeout(r.opts.timeouts.start);
                    let out = r
                        .host
                        .run_in_target(cmd)
                        .map_err(|e| fail("start", format!("`{}`: {e}", argv.join(" "))))?;
                    if out.status != 0 {
                        return Err(fail(
                            "start",
                            format!(
                                "`{}` exited with status {}: {}; kubelet log: {}",
                                argv.join(" "),
                                out.status,
                                crate::host::runner::tail(&out.stderr),
                                probe::log_tail(r.host, "kubelet.service")
                            ),
                        ));
                    }
                    started.push(unit.clone());
                    return Ok(());
                }
                // Bootstrapped earlier with another version: upgrade the control plane
                // (or this node's configuration) with the new kubeadm before the kubelet
                // restarts on its new binary, as the kubeadm upgrade procedure goes.
                let old = previous.map(|p| p.version.as_str()).unwrap_or("");
                if !old.is_empty() && old != r.plan.version {
                    let upgrade: Vec<String> = if argv.get(1).map(String::as_str) == Some("init") {
                        vec![
                            argv[0].clone(),
                            "upgrade".into(),
                            "apply".into(),
                            r.plan.version.clone(),
                            "--yes".into(),
                        ]
                    } else {
                        vec![argv[0].clone(), "upgrade".into(), "node".into()]
                    };
                    let cmd = Cmd::new(upgrade[0].clone())
                        .args(upgrade[1..].iter().cloned())
                        .timeout(r.opts.timeouts.start);
                    let out = r
                        .host
                        .run_in_target(cmd)
                        .map_err(|e| fail("start", format!("`{}`: {e}", upgrade.join(" "))))?;
                    if out.status != 0 {
                        return Err(fail(
                            "start",
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
        }
        if changed {
            r.systemctl("start", "restart", &unit)?;
            started.push(unit.clone());
        } else if !probe::is_active(r.host, &unit) {
            r.systemctl("start", "start", &unit)?;
            started.push(unit.clone());
        }
        if !probe::is_active(r.host, &unit) {
            return Err(fail(
                "start",
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
            let status = if started.is_empty() {
                "unchanged"
            } else {
                "done"
            };
            Ok((status, msg, json!({"started": started})))
        }
        Err(e) => {
            let Some(prev) = previous.filter(|p| p.artifacts != r.plan.fetch) else {
                return Err(e);
            };
            // Roll back: the previous artifacts are still in the content-addressed cache.
            let restore = r
                .cache()
                .and_then(|cache| place::place_all(r.host, &cache, &prev.artifacts, None))
                .map_err(|pe| {
                    fail(
                        "start",
                        format!("{}; rolling back failed too: {pe}", e.message),
                    )
                })?;
            r.report.changes.extend(restore);
            r.systemctl("start", "restart", &unit).map_err(|re| {
                fail(
                    "start",
                    format!(
                        "{}; rolled back to {} but it did not start either: {}",
                        e.message, prev.version, re.message
                    ),
                )
            })?;
            r.report.started.push(unit.clone());
            Err(InstallError {
                phase: "start",
                message: format!(
                    "{} {} failed to start ({}); rolled back to {} {}, which is running again",
                    flavor_name(r.plan.flavor),
                    r.plan.version,
                    e.message,
                    prev.flavor,
                    prev.version
                ),
                rolled_back: true,
            })
        }
    }
}

fn phase_node_ready(r: &mut Run) -> Result<(&'static str, String, Value), InstallError> {
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
                        return Err(fail(
                            "node-ready",
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
            let helm = format!("{}/helm", super::kubeadm::BIN_DIR);
            let cmd = Cmd::new(helm)
                .args(["upgrade", "--install", &release, &chart_artifact])
                .args(["--namespace", &namespace, "--values", &values_file])
                .args(["--kubeconfig", &kubeconfig])
                .timeout(r.opts.timeouts.node_ready);
            let out = r
                .host
                .run_in_target(cmd)
                .map_err(|e| fail("node-ready", format!("helm install of {release}: {e}")))?;
            if out.status != 0 {
                return Err(fail(
                    "node-ready",
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
    let what = r.wait("node-ready", left, move |h, p| {
        probe::node_ready(h, p, &node)
    })?;
    Ok(("done", what, json!({"cni_applied": applied})))
}

fn phase_addons(r: &mut Run) -> Result<(&'static str, String, Value), InstallError> {
    let Some(addons) = r.addons else {
        return Ok(("skipped", "no add-ons".into(), Value::Null));
    };
    let deadline = Instant::now() + r.opts.timeouts.addons;
    let cache = r.cache().map_err(|e| fail("addons", e))?;
    let mut changes =
        place::place_all(r.host, &cache, &addons.fetch, None).map_err(|e| fail("addons", e))?;
    let mut applied = Vec::new();
    for item in &addons.items {
        if Instant::now() > deadline {
            return Err(fail(
                "addons",
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
                        .map_err(|e| fail("addons", format!("add-on `{name}`: {e}")))?
                    {
                        changes.push(format!("wrote {path}"));
                    }
                }
                if r.plan.flavor == Flavor::Kubeadm {
                    let cmd = probe::kubectl_cmd(
                        r.plan,
                        &["apply", "--server-side", "--force-conflicts", "-f", path],
                    );
                    let out = r
                        .host
                        .run_in_target(cmd)
                        .map_err(|e| fail("addons", format!("applying add-on `{name}`: {e}")))?;
                    if out.status != 0 {
                        return Err(fail(
                            "addons",
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
                    .map_err(|e| fail("addons", format!("chart `{release}`: {e}")))?
                {
                    changes.push(format!("wrote {values_file}"));
                }
                let helm = format!("{}/helm", super::kubeadm::BIN_DIR);
                let mut cmd = Cmd::new(helm).args(["upgrade", "--install", release, chart]);
                if let Some(repo) = repo {
                    cmd = cmd.args(["--repo", repo]);
                }
                cmd = cmd
                    .args(["--version", version, "--namespace", namespace])
                    .arg("--create-namespace")
                    .args(["--values", values_file])
                    .args(["--kubeconfig", super::kubeadm::KUBECONFIG])
                    .timeout(deadline.saturating_duration_since(Instant::now()));
                let out = r
                    .host
                    .run_in_target(cmd)
                    .map_err(|e| fail("addons", format!("helm install of `{release}`: {e}")))?;
                if out.status != 0 {
                    return Err(fail(
                        "addons",
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
    let how = if r.plan.flavor == Flavor::Kubeadm {
        "applied"
    } else {
        "handed to the auto-deploy directory"
    };
    Ok((
        "done",
        format!("{} add-on(s) {how}: {}", applied.len(), applied.join(", ")),
        json!({"addons": applied, "changes": changes}),
    ))
}

/// Write `content` at `path` in the target unless it is already there; true if written.
fn converge_file(host: &Host, path: &str, content: &[u8]) -> Result<bool, String> {
    if host.read_opt(path).map_err(|e| e.to_string())?.as_deref() == Some(content) {
        return Ok(false);
    }
    host.write_atomic(path, content, 0o600, None)
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Everything a profile's `kubernetes`, `cni` and `addons` layers describe, for this
/// host: the target's architecture (from its `/bin/sh`) and node name (its hostname).
/// `Ok(None)` when the profile has no `kubernetes` layer.
pub fn install_profile(
    profile: &cairn_proto::profile::Profile,
    host: &Host,
    opts: &InstallOptions,
    events: &mut Emitter,
) -> Result<Option<Report>, InstallError> {
    use cairn_proto::profile::Layer;
    let mut k = None;
    let mut c = None;
    let mut a = None;
    for layer in &profile.layers {
        match layer {
            Layer::Kubernetes(x) => k = Some(x),
            Layer::Cni(x) => c = Some(x),
            Layer::Addons(x) => a = Some(x),
            Layer::Os(_) => {}
        }
    }
    let Some(k) = k else {
        return Ok(None);
    };
    let Some(c) = c else {
        return Err(fail(
            "plan",
            "the profile has a `kubernetes` layer but no `cni` layer",
        ));
    };
    let arch = crate::host::osrelease::target_arch(host);
    let target =
        super::Target::new(arch, &node_name(host)).map_err(|e| fail("plan", e.to_string()))?;
    let mut plan = super::plan(k, c, &target).map_err(|e| fail("plan", e.to_string()))?;
    if let Some(proxy) = &opts.proxy {
        super::proxy::apply(&mut plan, proxy);
    }
    let addon_plan = match a {
        Some(a) => Some(
            super::addons::plan(a, plan.flavor, target.arch)
                .map_err(|e| fail("plan", e.to_string()))?,
        ),
        None => None,
    };
    install_with(&plan, addon_plan.as_ref(), host, opts, events).map(Some)
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
