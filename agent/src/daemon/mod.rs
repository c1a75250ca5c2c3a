//! `cairn-agent run`: the daemon. Registers with the hub named in user-data, heartbeats
//! with an inventory, fetches the assigned profile, applies it with the stage engine
//! (journaled, resumable) and delivers every event through an on-disk spool.
//!
//! Threads: the hub side is async on a single-threaded tokio runtime (heartbeats, profile
//! fetches, event delivery, signals, the systemd watchdog); applies run on one worker thread
//! ([`worker`]), which owns the event emitter. They meet in the spool ([`spool`]) and a job
//! channel. The hub being down never stops anything but hub traffic: work goes on from the
//! profile kept on disk, events pile up in the spool, and calls are retried with capped,
//! fully jittered exponential backoff.

pub mod backoff;
pub mod boot_stages;
pub mod client;
pub mod identity;
pub mod inventory;
pub mod journal;
pub mod settings;
pub mod spool;
pub mod status;
pub mod store;
pub mod worker;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_proto::protocol::{HeartbeatRequest, HeartbeatResponse, Inventory, RegisterRequest};
use cairn_proto::EventKind;
use sd_notify::NotifyState;
use serde_json::json;

use backoff::{full_jitter, spread, Backoff};
use client::{HubClient, HubError, ProfileFetch, TrustError};
use identity::Identity;
use settings::Settings;
use spool::Spool;
use status::{DaemonStatus, HubStatus};
use store::StateDir;
use worker::{Control, Job, Output, StoredProfile, Worker};

pub use worker::Output as EventOutput;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cairn";

/// Events per delivery request (the hub accepts up to `MAX_EVENTS_PER_BATCH`).
const BATCH_EVENTS: usize = 500;
/// About this many bytes of events per request (the hub's limit is 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;
/// After a 401/403, how often the hub is asked again (it may have been a mistake).
const REJECTED_PROBE: Duration = Duration::from_secs(3600);
/// Attempts of one profile fetch before waiting for the next heartbeat.
const PROFILE_ATTEMPTS: u32 = 4;
/// How long a shutdown waits for the step being applied to finish.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How often the applied profile's `reconcile` stage runs, by default.
pub const DEFAULT_RECONCILE_SECS: u64 = 15 * 60;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--config`; `None` reads `/etc/cairn/agent.yaml` if it exists.
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub root: PathBuf,
    pub output: Output,
    /// How often the applied profile's `reconcile` stage runs.
    pub reconcile_every: Duration,
}

/// Run the daemon until SIGTERM/SIGINT. Returns the process exit status: 0 after a clean
/// shutdown, 1 when the configuration or the state directory is unusable, 2 for a bad
/// argument. The hub being unreachable is never a reason to exit.
pub fn run(opts: RunOptions) -> u8 {
    if !opts.root.is_dir() {
        eprintln!(
            "error: target root {} is not a directory",
            opts.root.display()
        );
        return 2;
    }
    let settings = match settings::load(&opts.root, opts.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let state = StateDir::new(&opts.state_dir);
    if let Err(e) = state.create() {
        eprintln!("error: creating {}: {e}", state.dir.display());
        return 1;
    }
    let _lock = match lock_state(&state) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    let spool = match Spool::open(&state, notify.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!(
                "error: opening the event spool {}: {e}",
                state.spool().display()
            );
            return 1;
        }
    };
    let forwarded = boot_stages::forward(&opts.root, &spool);
    if forwarded > 0 {
        tracing::info!("{forwarded} boot-stage event(s) queued for the hub");
    }
    let client = match HubClient::new(&settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut identity = match Identity::load(&state) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let previous: Option<DaemonStatus> = store::read_json(&state.status()).ok().flatten();
    let was_refused = previous
        .as_ref()
        .is_some_and(|p| p.hub.state == "credential_rejected");
    if let Some(id) = &identity {
        let new_token = settings
            .token_digest()
            .is_some_and(|d| !id.token_sha256.is_empty() && d != id.token_sha256);
        if settings.token.is_some() && (id.hub != settings.endpoint || (was_refused && new_token)) {
            tracing::warn!(
                "enrolling again with the token in user-data (previous host id {}: {})",
                id.host_id,
                if id.hub != settings.endpoint {
                    "issued by another hub"
                } else {
                    "refused by the hub"
                }
            );
            identity = None;
        }
    } else if settings.token.is_none() {
        eprintln!(
            "error: this host is not registered and the hub settings in {} have no registration \
             token (`cairn.join`, `cairn.token` or `stylus.site.edgeHostToken`)",
            settings
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return 1;
    }
    if identity.is_some() {
        // Registered: a key left by a crash between storing identity.json and deleting the
        // key has no use any more (and is a secret).
        if let Err(e) = identity::RegistrationKey::remove(&state) {
            tracing::warn!("{e}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return 1;
        }
    };
    let control = Arc::new(Control::default());
    let refused = identity.is_some() && was_refused;
    control.set_paused(refused);
    let daemon = Daemon {
        status: Mutex::new(DaemonStatus {
            pid: std::process::id(),
            started: store::now(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            endpoint: settings.endpoint.clone(),
            hub: HubStatus {
                state: if refused {
                    "credential_rejected".into()
                } else if identity.is_some() {
                    "connecting".into()
                } else {
                    "registering".into()
                },
                since: store::now(),
                last_contact: previous.as_ref().and_then(|p| p.hub.last_contact.clone()),
                last_error: if refused {
                    previous.map(|p| p.hub.last_error).unwrap_or_default()
                } else {
                    String::new()
                },
            },
            dropped_events: 0,
            stopped: None,
        }),
        last_write: Mutex::new(Instant::now()),
        settings,
        state,
        root: opts.root,
        output: opts.output,
        client,
        spool,
        notify,
        control,
        heartbeat_secs: Mutex::new(cairn_proto::protocol::DEFAULT_HEARTBEAT_SECS),
        worker: Mutex::new(None),
        reconcile_every: opts.reconcile_every,
    };
    runtime.block_on(daemon.main(identity))
}

// String error: printed by `run` before it exits 1; nobody branches on it.
fn lock_state(state: &StateDir) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = state.lock();
    let file = store::open_append(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        format!(
            "another `cairn-agent run` is using {} (it holds {})",
            state.dir.display(),
            path.display()
        )
    })
}

struct WorkerLink {
    jobs: mpsc::Sender<Job>,
    done: tokio::sync::oneshot::Receiver<()>,
}

struct Daemon {
    settings: Settings,
    state: StateDir,
    root: PathBuf,
    output: Output,
    client: HubClient,
    spool: Arc<Spool>,
    notify: Arc<tokio::sync::Notify>,
    control: Arc<Control>,
    status: Mutex<DaemonStatus>,
    last_write: Mutex<Instant>,
    heartbeat_secs: Mutex<u64>,
    worker: Mutex<Option<WorkerLink>>,
    reconcile_every: Duration,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

impl Daemon {
    async fn main(&self, identity: Option<Identity>) -> u8 {
        let _ = sd_notify::notify(&[
            NotifyState::Ready,
            NotifyState::Status(&format!("hub {}", self.settings.endpoint)),
        ]);
        tracing::info!(
            "cairn-agent {} started: hub {}, state {}, root {}",
            env!("CARGO_PKG_VERSION"),
            self.settings.endpoint,
            self.state.dir.display(),
            self.root.display()
        );
        self.write_status();
        tokio::select! {
            _ = self.watchdog() => {}
            _ = shutdown_signal() => {}
            _ = self.serve(identity) => {}
        }
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        self.control.shutdown();
        let link = guard(&self.worker).take();
        if let Some(WorkerLink { jobs, done }) = link {
            drop(jobs);
            if tokio::time::timeout(STOP_GRACE, done).await.is_err() {
                tracing::warn!(
                    "the step being applied did not finish within {} s; exiting, it runs again \
                     at the next start",
                    STOP_GRACE.as_secs()
                );
            }
        }
        if let Ok(Some(id)) = Identity::load(&self.state) {
            if !self.control.is_paused() {
                let _ = tokio::time::timeout(Duration::from_secs(3), self.flush(&id)).await;
            }
        }
        guard(&self.status).stopped = Some(store::now());
        self.write_status();
        tracing::info!("stopped");
        0
    }

    /// Ping the systemd watchdog at half its period (never returns).
    async fn watchdog(&self) {
        match sd_notify::watchdog_enabled() {
            Some(period) => loop {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                tokio::time::sleep(period / 2).await;
            },
            None => std::future::pending::<()>().await,
        }
    }

    /// Register if needed, start the worker, then heartbeat and deliver forever. With a
    /// join string, nothing goes to the hub before its CA matched the pin.
    async fn serve(&self, identity: Option<Identity>) {
        let id = match identity {
            Some(id) => id,
            None => {
                self.establish_trust().await;
                self.register().await
            }
        };
        self.start_worker(&id);
        // A registered host applies what it holds whether or not the hub is trusted yet.
        self.establish_trust().await;
        tokio::join!(self.heartbeat_loop(&id), self.delivery_loop(&id));
    }

    /// Trust the CA the join string pins (no-op without one, or once done). A hub whose CA
    /// does not match gets nothing, and is asked again only after [`REJECTED_PROBE`]: it is
    /// an impostor or the wrong join string, both for an operator to fix.
    async fn establish_trust(&self) {
        let mut backoff = Backoff::hub();
        loop {
            let wait = match self.client.trust_pinned(&self.state).await {
                Ok(()) => return,
                Err(TrustError::Mismatch(m)) => {
                    self.set_hub("ca_pin_mismatch", &m);
                    spread(REJECTED_PROBE, 0.1)
                }
                Err(TrustError::Hub(e)) => self.failed("fetching the hub's CA", &e, &mut backoff),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The hub as an artifact source, trusted exactly as the hub connection is: the pinned
    /// CA (kept in the state directory once checked), else the hub settings' CAs, else the
    /// system's roots.
    fn artifact_hub(&self, id: &Identity) -> Option<crate::artifacts::hub::HubSource> {
        let ca_certs = if self.settings.ca_pin.is_some() {
            match std::fs::read_to_string(self.state.hub_ca()) {
                Ok(pem) => vec![pem],
                Err(e) => {
                    tracing::warn!(
                        "the hub's pinned CA ({}): {e}; artifacts come from upstream",
                        self.state.hub_ca().display()
                    );
                    return None;
                }
            }
        } else {
            self.settings.ca_certs.clone()
        };
        Some(crate::artifacts::hub::HubSource {
            endpoint: self.settings.endpoint.clone(),
            host_id: id.host_id.clone(),
            credential: id.credential.expose().to_string(),
            ca_certs,
            proxy: self.settings.proxy.clone(),
            policy: crate::artifacts::hub::ArtifactSource::default(),
        })
    }

    fn start_worker(&self, id: &Identity) {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let worker = Worker {
            state: self.state.clone(),
            root: self.root.clone(),
            host_id: id.host_id.clone(),
            spool: self.spool.clone(),
            output: self.output,
            control: self.control.clone(),
            reconcile_every: self.reconcile_every,
            hub: self.artifact_hub(id),
        };
        let spawned = std::thread::Builder::new()
            .name("cairn-apply".into())
            .spawn(move || {
                worker.run(rx);
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the apply thread: {e}");
            return;
        }
        // Whatever was verified and kept on disk is (re)applied or resumed from its journal,
        // hub or no hub.
        match store::read_json::<StoredProfile>(&self.state.profile()) {
            Ok(Some(p)) => match worker::verify(p) {
                Ok(v) => {
                    let _ = tx.send(Job::Apply(Box::new(v)));
                }
                Err(problems) => tracing::error!(
                    "not applying {}: {}",
                    self.state.profile().display(),
                    problems.join("; ")
                ),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("ignoring {}: {e}", self.state.profile().display()),
        }
        *guard(&self.worker) = Some(WorkerLink {
            jobs: tx,
            done: done_rx,
        });
    }

    fn send_job(&self, job: Job) {
        if let Some(link) = guard(&self.worker).as_ref() {
            let _ = link.jobs.send(job);
        }
    }

    // ----- hub state, for status.json and logs --------------------------------------

    fn write_status(&self) {
        let s = guard(&self.status).clone();
        s.save(&self.state);
        *guard(&self.last_write) = Instant::now();
    }

    /// Record a hub state; logs and writes status.json when it changes.
    fn set_hub(&self, state: &str, error: &str) {
        let changed = {
            let mut s = guard(&self.status);
            let changed = s.hub.state != state;
            if changed {
                s.hub.state = state.into();
                s.hub.since = store::now();
            }
            if !error.is_empty() {
                s.hub.last_error = error.into();
            }
            changed
        };
        if changed {
            match state {
                "connected" => tracing::info!("hub {}: connected", self.settings.endpoint),
                "token_rejected"
                | "credential_rejected"
                | "registration_refused"
                | "ca_pin_mismatch" => {
                    tracing::error!("hub: {state}: {error}")
                }
                _ => tracing::warn!("hub: {state}: {error}"),
            }
            let _ = sd_notify::notify(&[NotifyState::Status(&format!("hub {state}"))]);
            self.write_status();
        }
    }

    fn contact_ok(&self) {
        if self.control.is_paused() {
            tracing::info!("the hub accepts this host's credential again; applying hub profiles");
            self.control.set_paused(false);
        }
        guard(&self.status).hub.last_contact = Some(store::now());
        self.set_hub("connected", "");
        if guard(&self.last_write).elapsed() > Duration::from_secs(10) {
            self.write_status();
        }
    }

    /// A failed call: returns how long to wait before the next attempt.
    fn failed(&self, what: &str, e: &HubError, backoff: &mut Backoff) -> Duration {
        match e {
            HubError::Rejected { .. } => {
                let refused = if what == "registration" {
                    "token_rejected"
                } else {
                    "credential_rejected"
                };
                if refused == "credential_rejected" && !self.control.is_paused() {
                    self.control.set_paused(true);
                }
                self.set_hub(refused, &format!("{what}: {e}"));
                spread(REJECTED_PROBE, 0.1)
            }
            HubError::Refused { .. } if what == "registration" => {
                // 409 (the name is taken by another host: this host's own earlier attempt
                // is recognised by its registration key) or 422 (bad name or tag): an
                // operator must act.
                self.set_hub("registration_refused", &format!("{what}: {e}"));
                spread(REJECTED_PROBE, 0.1)
            }
            HubError::Busy { retry_after, .. } => {
                self.set_hub("busy", &format!("{what}: {e}"));
                match retry_after {
                    Some(d) => *d + full_jitter(*d / 10 + Duration::from_millis(100)),
                    None => backoff.next_delay(),
                }
            }
            _ => {
                self.set_hub("unreachable", &format!("{what}: {e}"));
                backoff.next_delay()
            }
        }
    }

    // ----- registration ------------------------------------------------------------

    async fn register(&self) -> Identity {
        // The key is on disk before the first attempt: a retry (after a lost answer, a
        // restart, a crash of either side) sends the same key and gets the identity the
        // hub already made, never a 409 for this host's own earlier attempt.
        let key = {
            let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            loop {
                match identity::RegistrationKey::load_or_create(
                    &self.state,
                    &self.settings.endpoint,
                ) {
                    Ok(k) => break k,
                    Err(e) => {
                        tracing::error!("keeping a registration key: {e}; not registering yet");
                        tokio::time::sleep(retry.next_delay()).await;
                    }
                }
            }
        };
        let mut backoff = Backoff::hub();
        loop {
            let Some(token) = self.settings.token.as_ref() else {
                // Checked before start-up; nothing to do without a token.
                std::future::pending::<()>().await;
                continue;
            };
            let req = RegisterRequest {
                token: token.expose().to_string(),
                name: self.settings.name.clone(),
                tags: self.settings.tags.clone(),
                inventory: inventory::gather(),
                registration_key: Some(key.key.expose().to_string()),
            };
            let wait = match self.client.register(&req).await {
                Ok(resp) => {
                    let id = Identity {
                        host_id: resp.host_id,
                        credential: store::Secret::new(resp.credential),
                        hub: self.settings.endpoint.clone(),
                        registered_at: store::now(),
                        token_sha256: self.settings.token_digest().unwrap_or_default(),
                    };
                    // The credential is shown once: keep it before anything else happens.
                    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                    while let Err(e) = id.save(&self.state) {
                        tracing::error!(
                            "storing the identity {}: {e}",
                            self.state.identity().display()
                        );
                        tokio::time::sleep(retry.next_delay()).await;
                    }
                    // The identity is kept: the key has done its job. Left behind (this
                    // fails), it is removed at the next start.
                    if let Err(e) = identity::RegistrationKey::remove(&self.state) {
                        tracing::warn!("{e}");
                    }
                    *guard(&self.heartbeat_secs) = resp.heartbeat_interval_secs.clamp(1, 86_400);
                    tracing::info!("registered as host {}", id.host_id);
                    self.contact_ok();
                    self.write_status();
                    return id;
                }
                Err(e) => self.failed("registration", &e, &mut backoff),
            };
            tokio::time::sleep(wait).await;
        }
    }

    // ----- heartbeat and profile ----------------------------------------------------

    async fn heartbeat_loop(&self, id: &Identity) {
        let mut backoff = Backoff::hub();
        let mut sent: Option<Inventory> = None;
        let mut held: Option<String> = store::read_json::<StoredProfile>(&self.state.profile())
            .ok()
            .flatten()
            .map(|p| p.etag);
        let mut refused_etag: Option<String> = None;
        loop {
            let inv = inventory::gather();
            let changed = sent.as_ref() != Some(&inv);
            let req = HeartbeatRequest {
                inventory: changed.then(|| inv.clone()),
            };
            let wait = match self.client.heartbeat(id, &req).await {
                Ok(resp) => {
                    backoff.reset();
                    self.contact_ok();
                    if changed {
                        sent = Some(inv);
                    }
                    let secs = resp.heartbeat_interval_secs.clamp(1, 86_400);
                    *guard(&self.heartbeat_secs) = secs;
                    self.sync_profile(id, &resp, &mut held, &mut refused_etag)
                        .await;
                    spread(Duration::from_secs(secs), 0.1)
                }
                Err(e) => self.failed("heartbeat", &e, &mut backoff),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Fetch the assigned profile when the heartbeat says it differs from the one held;
    /// verify it, keep it on disk, hand it to the worker.
    async fn sync_profile(
        &self,
        id: &Identity,
        hb: &HeartbeatResponse,
        held: &mut Option<String>,
        refused_etag: &mut Option<String>,
    ) {
        if self.control.is_paused() {
            return;
        }
        match &hb.profile_etag {
            None if hb.profile_version.is_none() => return,
            Some(e) if Some(e) == held.as_ref() || Some(e) == refused_etag.as_ref() => return,
            _ => {}
        }
        // A failed fetch is retried a few times on its own (not only at the next heartbeat,
        // which could fail in turn); after that, the next heartbeat tries again.
        let mut backoff = Backoff::hub();
        let mut attempt = 0;
        let (etag, body) = loop {
            attempt += 1;
            match self.client.profile(id, held.as_deref()).await {
                Ok(ProfileFetch::New { etag, body }) => {
                    self.contact_ok();
                    break (etag, body);
                }
                Ok(ProfileFetch::NotModified) | Ok(ProfileFetch::NoneAssigned) => {
                    self.contact_ok();
                    return;
                }
                Err(e) => {
                    let wait = self.failed("profile fetch", &e, &mut backoff);
                    if attempt >= PROFILE_ATTEMPTS || matches!(e, HubError::Rejected { .. }) {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        if Some(&etag) == held.as_ref() {
            return;
        }
        match worker::verify_profile(&body, &etag) {
            Ok(v) => {
                let sp = &v.stored;
                // The registries the profile uses, kept beside it (the worker reads them when
                // it applies, also after a restart without the hub). A profile using none
                // leaves none on the device.
                let refs = cairn_proto::registry::RegistryRefs::of_profile(&sp.profile);
                let registries = if refs.is_empty() {
                    cairn_proto::registry::HostRegistries::default()
                } else {
                    match self.client.registries(id).await {
                        Ok(r) => r,
                        Err(e) => {
                            // Not held: the next heartbeat fetches the profile again.
                            self.failed("registries fetch", &e, &mut Backoff::hub());
                            return;
                        }
                    }
                };
                if let Err(e) = store::write_json(&self.state.registries(), &registries) {
                    tracing::error!(
                        "keeping the registries of profile {} at {}: {e}; not applying it",
                        sp.profile.name,
                        self.state.registries().display()
                    );
                    return;
                }
                if let Err(e) = store::write_json(&self.state.profile(), sp) {
                    tracing::error!(
                        "keeping profile {} v{} at {}: {e}; not applying it",
                        sp.profile.name,
                        sp.profile.version,
                        self.state.profile().display()
                    );
                    return;
                }
                tracing::info!(
                    "received profile {} v{} ({etag})",
                    sp.profile.name,
                    sp.profile.version
                );
                *held = Some(etag);
                self.send_job(Job::Apply(Box::new(v)));
            }
            Err(problems) => {
                tracing::error!(
                    "the profile from the hub ({etag}) failed verification: {}",
                    problems.join("; ")
                );
                self.send_job(Job::Report {
                    kind: EventKind::Error,
                    message: format!(
                        "the assigned profile ({etag}) failed verification and is not applied: {}",
                        problems.first().cloned().unwrap_or_default()
                    ),
                    data: json!({"etag": etag, "problems": problems}),
                });
                *refused_etag = Some(etag);
            }
        }
    }

    // ----- event delivery -----------------------------------------------------------

    async fn delivery_loop(&self, id: &Identity) {
        let mut backoff = Backoff::hub();
        let mut single = false;
        loop {
            if self.control.is_paused() {
                // Credential refused: nothing can be delivered; the heartbeat probes.
                let _ = tokio::time::timeout(Duration::from_secs(5), self.notify.notified()).await;
                continue;
            }
            match self.deliver(id, single, &mut backoff).await {
                Ok(true) => single = false,
                Ok(false) => self.notify.notified().await,
                Err(Some(wait)) => tokio::time::sleep(wait).await,
                Err(None) => single = true,
            }
        }
    }

    /// Send one batch. `Ok(true)`: sent (there may be more); `Ok(false)`: nothing to send;
    /// `Err(Some(wait))`: failed, wait; `Err(None)`: refused, retry one event at a time.
    async fn deliver(
        &self,
        id: &Identity,
        single: bool,
        backoff: &mut Backoff,
    ) -> Result<bool, Option<Duration>> {
        let max = if single { 1 } else { BATCH_EVENTS };
        let batch = match self.spool.pending(max, BATCH_BYTES) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading the event spool: {e}");
                return Err(Some(Duration::from_secs(5)));
            }
        };
        if batch.is_empty() {
            return Ok(false);
        }
        let result = self.client.events(id, batch.body()).await;
        match result {
            Ok(ack) => {
                let upto = ack.acked_seq.min(batch.last);
                if upto < batch.first {
                    tracing::warn!(
                        "the hub acknowledged seq {} for a batch {}..={}; sending again",
                        ack.acked_seq,
                        batch.first,
                        batch.last
                    );
                    return Err(Some(Duration::from_secs(5)));
                }
                if let Err(e) = self.spool.ack(upto) {
                    tracing::error!("recording delivered events: {e}");
                }
                backoff.reset();
                self.contact_ok();
                Ok(true)
            }
            Err(HubError::Refused {
                status, message, ..
            }) => {
                if batch.len() > 1 {
                    tracing::warn!("the hub refused an event batch ({status}: {message}); sending one at a time");
                    return Err(None);
                }
                tracing::error!(
                    "the hub refused event {} ({status}: {message}); dropping it",
                    batch.first
                );
                if let Err(e) = self.spool.ack(batch.last) {
                    tracing::error!("recording a dropped event: {e}");
                }
                guard(&self.status).dropped_events += 1;
                self.write_status();
                Ok(true)
            }
            Err(e) => Err(Some(self.failed("event delivery", &e, backoff))),
        }
    }

    /// Deliver what is spooled, until empty or the first failure (at shutdown).
    async fn flush(&self, id: &Identity) {
        let mut backoff = Backoff::hub();
        while let Ok(true) = self.deliver(id, false, &mut backoff).await {}
    }
}
