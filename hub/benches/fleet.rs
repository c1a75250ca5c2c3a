//! Fleet simulation: N simulated agents against one `cairn-hub` (SQLite, TLS) on 127.0.0.1.
//!
//! `cargo bench -p cairn-hub --bench fleet` — a benchmark, not a test: it prints figures and
//! fails only if the simulation itself breaks (requests refused, the hub dies).
//!
//! 1. Starts the release `cairn-hub serve` binary (or `CAIRN_FLEET_HUB`, to compare builds)
//!    on a free loopback port with a fresh SQLite database and a server certificate from a
//!    throw-away rcgen CA.
//! 2. Registers N agents (`CAIRN_FLEET_AGENTS`, default 10 000) with one token.
//! 3. Steady state: every agent heartbeats every `CAIRN_FLEET_HEARTBEAT_SECS` (30) ± 10 %,
//!    starting at a random point of its first period, sends its inventory with its first
//!    heartbeat, fetches its assigned profile when the heartbeat's ETag says so, and after
//!    about one heartbeat in `CAIRN_FLEET_EVENTS_EVERY` (4) posts a small event batch
//!    (3 events). One full period of warm-up, then `CAIRN_FLEET_SECS` (60) measured.
//! 4. Burst: closed-loop workers with the steady state's request mix, concurrency doubling
//!    from 8 every `CAIRN_FLEET_BURST_SECS` (5 s) until latency degrades (p99 over
//!    100 ms, or over 50 ms with throughput falling), 512 at most: the hub's peak rate.
//!
//! All traffic goes to 127.0.0.1; every loop ends by a deadline. One process cannot hold a
//! real fleet's 10 000 connections, so the simulator multiplexes the agents over a pool of
//! `CAIRN_FLEET_CONNECTIONS` (16) HTTP/2 connections; the hub sees many concurrent streams
//! per connection instead of many connections. The client shares the machine's cores with
//! the hub, so latencies include the client's own scheduling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

const ADMIN: &str = "fleet-bench-admin-token-0123456789";
/// The latency goal at 10 000 agents.
const GOAL_P99_MS: f64 = 50.0;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone)]
struct Config {
    agents: usize,
    heartbeat: Duration,
    measure: Duration,
    events_every: u64,
    connections: usize,
    burst_step: Duration,
    register_concurrency: usize,
}

impl Config {
    fn from_env() -> Config {
        Config {
            agents: usize::try_from(env_u64("CAIRN_FLEET_AGENTS", 10_000).max(1)).unwrap(),
            heartbeat: Duration::from_secs(env_u64("CAIRN_FLEET_HEARTBEAT_SECS", 30).max(5)),
            measure: Duration::from_secs(env_u64("CAIRN_FLEET_SECS", 60).clamp(5, 3600)),
            events_every: env_u64("CAIRN_FLEET_EVENTS_EVERY", 4).max(1),
            connections: usize::try_from(env_u64("CAIRN_FLEET_CONNECTIONS", 16).clamp(1, 256))
                .unwrap(),
            burst_step: Duration::from_secs(env_u64("CAIRN_FLEET_BURST_SECS", 5).clamp(1, 60)),
            register_concurrency: 64,
        }
    }
}

/// xorshift64*: jitter and choices, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Register,
    Heartbeat,
    Profile,
    Events,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Heartbeat => "heartbeat",
            Kind::Profile => "profile",
            Kind::Events => "events",
        }
    }
}

/// Latencies in µs per request kind.
type Samples = BTreeMap<Kind, Vec<u32>>;
/// Failed requests per kind: how many, and the first error.
type Errors = BTreeMap<Kind, (u64, String)>;

/// Latencies (µs) of requests that started inside a window, per kind; errors counted.
struct Recorder {
    from: Mutex<Option<Instant>>,
    until: Mutex<Option<Instant>>,
    samples: Mutex<Samples>,
    errors: Mutex<Errors>,
    /// Worst latency (µs) of the requests started in each second of the window.
    worst_by_second: Mutex<BTreeMap<u64, u32>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            from: Mutex::new(None),
            until: Mutex::new(None),
            samples: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            worst_by_second: Mutex::new(BTreeMap::new()),
        }
    }

    fn window(&self, from: Instant, until: Instant) {
        *self.from.lock().unwrap() = Some(from);
        *self.until.lock().unwrap() = Some(until);
        self.samples.lock().unwrap().clear();
        self.errors.lock().unwrap().clear();
        self.worst_by_second.lock().unwrap().clear();
    }

    fn record(&self, kind: Kind, started: Instant, result: Result<(), String>) {
        let from = *self.from.lock().unwrap();
        let until = *self.until.lock().unwrap();
        if from.is_some_and(|f| started < f) || until.is_some_and(|u| started >= u) {
            return;
        }
        match result {
            Ok(()) => {
                let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                if let Some(f) = from {
                    let second = started.saturating_duration_since(f).as_secs();
                    let mut worst = self.worst_by_second.lock().unwrap();
                    let w = worst.entry(second).or_insert(0);
                    *w = (*w).max(us);
                }
                self.samples
                    .lock()
                    .unwrap()
                    .entry(kind)
                    .or_default()
                    .push(us);
            }
            Err(e) => {
                let mut errors = self.errors.lock().unwrap();
                let entry = errors.entry(kind).or_insert((0, e));
                entry.0 += 1;
            }
        }
    }

    /// The `n` seconds of the window with the slowest requests: (second, worst ms).
    fn worst_seconds(&self, n: usize) -> Vec<(u64, f64)> {
        let mut v: Vec<(u64, u32)> = self
            .worst_by_second
            .lock()
            .unwrap()
            .iter()
            .map(|(s, w)| (*s, *w))
            .collect();
        v.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
        v.into_iter()
            .take(n)
            .map(|(s, w)| (s, f64::from(w) / 1000.0))
            .collect()
    }

    fn take(&self) -> (Samples, Errors) {
        (
            std::mem::take(&mut *self.samples.lock().unwrap()),
            std::mem::take(&mut *self.errors.lock().unwrap()),
        )
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

struct Summary {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarize(samples: &mut [u32]) -> Summary {
    samples.sort_unstable();
    Summary {
        count: samples.len(),
        p50: percentile(samples, 50.0),
        p99: percentile(samples, 99.0),
        max: samples.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
    }
}

/// The hub binary under test: this build's, or `CAIRN_FLEET_HUB` (to compare builds).
fn hub_binary() -> String {
    std::env::var("CAIRN_FLEET_HUB").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cairn-hub").to_owned())
}

/// The hub under test, as a child process.
struct HubProcess {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    fn start() -> (HubProcess, String) {
        let dir = tempfile::Builder::new()
            .prefix("cairn-fleet-bench-")
            .tempdir()
            .unwrap();
        let pki = tls::make(dir.path());
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, ADMIN).unwrap();
        // A free port: bind, read, release (the hub binds it a moment later).
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let bin = hub_binary();
        let log = std::fs::File::create(dir.path().join("hub.log")).unwrap();
        let child = Command::new(&bin)
            .arg("--db")
            .arg(dir.path().join("hub.db"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--admin-token-file")
            .arg(&token_file)
            .env("CAIRN_HUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        (
            HubProcess {
                child,
                base: format!("https://127.0.0.1:{port}"),
                _dir: dir,
            },
            pki.ca_pem,
        )
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("hub.log")).unwrap_or_default()
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the hub exited ({status}); its log:\n{}", self.log());
        }
    }

    /// (CPU seconds used so far, resident MiB, peak resident MiB) from /proc.
    fn usage(&self) -> (f64, f64, f64) {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (
            ticks / 100.0,
            kib("VmRSS:") / 1024.0,
            kib("VmHWM:") / 1024.0,
        )
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds: (all CPUs busy, this process) so far, from /proc.
fn cpu_now() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy = stat
        .lines()
        .next()
        .map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            v.iter().take(8).sum::<f64>() - idle
        })
        .unwrap_or(0.0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = me
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let mine: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    (busy / 100.0, mine / 100.0)
}

/// How late a 10 ms timer in the simulator fires: a stall of the whole machine (or of the
/// simulator) shows here as well as in the request latencies; a stall of the hub alone
/// does not. Runs until `end`; answers the worst lateness per second of `from..end` (ms).
async fn scheduling_probe(from: Instant, end: Instant) -> BTreeMap<u64, f64> {
    let mut worst: BTreeMap<u64, f64> = BTreeMap::new();
    while Instant::now() < end {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let late = t.elapsed().saturating_sub(Duration::from_millis(10));
        if t >= from {
            let w = worst.entry(t.duration_since(from).as_secs()).or_insert(0.0);
            *w = w.max(late.as_secs_f64() * 1000.0);
        }
    }
    worst
}

/// One simulated agent's identity and counters.
struct Agent {
    id: String,
    credential: String,
    seq: AtomicU64,
    client: usize,
}

struct Sim {
    base: String,
    clients: Vec<reqwest::Client>,
    agents: Vec<Agent>,
    rec: Recorder,
    events_every: u64,
}

const PROFILE: &str = "\
name: bench-edge
layers:
  - os:
      user_data: |
        stages:
          boot:
            - name: motd
              files:
                - path: /etc/motd
                  content: hello
  - kubernetes:
      flavor: k3s
      version: v1.30.4+k3s1
";

fn inventory(i: usize) -> Value {
    json!({"cpu": {"model": "Intel(R) Celeron(R) J4125", "cores": 4},
           "memory_bytes": 8254390272u64,
           "disks": [{"name": "sda", "size_bytes": 128035676160u64, "model": "SSD 128GB"}],
           "nics": [{"name": "enp1s0", "mac": format!("00:e0:4c:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
                     "addresses": [format!("10.{}.{}.{}/16", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)]}],
           "os": {"id": "debian", "version": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)",
                  "kernel": "6.1.0-26-amd64"},
           "arch": "amd64", "agent_version": "0.1.0"})
}

async fn read_ok(r: reqwest::Result<reqwest::Response>) -> Result<(u16, Vec<u8>), String> {
    let r = r.map_err(|e| format!("transport: {e}"))?;
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_vec();
    if status >= 400 {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        ));
    }
    Ok((status, body))
}

impl Sim {
    fn client(&self, a: &Agent) -> &reqwest::Client {
        &self.clients[a.client]
    }

    async fn heartbeat(&self, i: usize, with_inventory: bool) -> Result<Value, String> {
        let a = &self.agents[i];
        let body = if with_inventory {
            json!({ "inventory": inventory(i) }).to_string()
        } else {
            "{}".to_owned()
        };
        let started = Instant::now();
        let r = read_ok(
            self.client(a)
                .post(format!("{}/v1/hosts/{}/heartbeat", self.base, a.id))
                .bearer_auth(&a.credential)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await,
        )
        .await;
        let out = r.and_then(|(_, body)| {
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        });
        self.rec.record(
            Kind::Heartbeat,
            started,
            out.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        out
    }

    async fn profile(&self, i: usize, etag: Option<&str>) -> Result<(), String> {
        let a = &self.agents[i];
        let started = Instant::now();
        let mut req = self
            .client(a)
            .get(format!("{}/v1/hosts/{}/profile", self.base, a.id))
            .bearer_auth(&a.credential);
        if let Some(t) = etag {
            req = req.header("if-none-match", t);
        }
        let r = read_ok(req.send().await).await.map(|_| ());
        self.rec.record(Kind::Profile, started, r.clone());
        r
    }

    async fn events(&self, i: usize) -> Result<(), String> {
        let a = &self.agents[i];
        let first = a.seq.fetch_add(3, Ordering::Relaxed) + 1;
        let events: Vec<Value> = (0..3u64)
            .map(|k| {
                let (kind, step) = match k {
                    0 => ("stage_started", ""),
                    1 => ("step_unchanged", "files"),
                    _ => ("stage_finished", ""),
                };
                json!({"seq": first + k, "time": "2026-11-24T12:00:00Z", "host": format!("sim-{i:05}"),
                       "kind": kind, "stage": "reconcile", "step": step,
                       "source": if step.is_empty() { String::new() } else { "user-data.yaml:12".to_owned() },
                       "message": if step.is_empty() { "" } else { "nothing to change" }})
            })
            .collect();
        let started = Instant::now();
        let r = read_ok(
            self.client(a)
                .post(format!("{}/v1/hosts/{}/events", self.base, a.id))
                .bearer_auth(&a.credential)
                .header("content-type", "application/json")
                .body(json!({ "events": events }).to_string())
                .send()
                .await,
        )
        .await
        .map(|_| ());
        self.rec.record(Kind::Events, started, r.clone());
        r
    }

    /// One agent's life in the steady state, until `end`.
    async fn run_agent(self: Arc<Self>, i: usize, start: Instant, period: Duration, end: Instant) {
        let mut rng = Rng::new(i as u64 + 1);
        let mut next = start + period.mul_f64(rng.unit());
        let mut etag: Option<String> = None;
        let mut first = true;
        loop {
            tokio::time::sleep_until(next.min(end).into()).await;
            if Instant::now() >= end {
                return;
            }
            if let Ok(hb) = self.heartbeat(i, first).await {
                first = false;
                let wanted = hb["profile_etag"].as_str().map(str::to_owned);
                if wanted.is_some()
                    && wanted != etag
                    && self.profile(i, etag.as_deref()).await.is_ok()
                {
                    etag = wanted;
                }
            }
            if rng.next() % self.events_every == 0 {
                let _ = self.events(i).await;
            }
            next += period.mul_f64(0.9 + 0.2 * rng.unit());
        }
    }
}

fn print_table(
    title: &str,
    window: Duration,
    samples: &mut Samples,
    errors: &Errors,
) -> (f64, f64) {
    println!("{title}");
    println!(
        "  {:<10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "kind", "count", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let secs = window.as_secs_f64();
    let mut all: Vec<u32> = Vec::new();
    for (kind, v) in samples.iter_mut() {
        all.extend_from_slice(v);
        let s = summarize(v);
        let errs = errors.get(kind).map_or(0, |e| e.0);
        println!(
            "  {:<10} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.1} {:>7}",
            kind.name(),
            s.count,
            s.count as f64 / secs,
            s.p50,
            s.p99,
            s.max,
            errs
        );
    }
    let s = summarize(&mut all);
    let errs: u64 = errors.values().map(|e| e.0).sum();
    println!(
        "  {:<10} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.1} {:>7}",
        "all",
        s.count,
        s.count as f64 / secs,
        s.p50,
        s.p99,
        s.max,
        errs
    );
    for (kind, (n, first)) in errors {
        println!("  ! {n} {} errors, first: {first}", kind.name());
    }
    (s.count as f64 / secs, s.p99)
}

async fn admin(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: String,
) -> Value {
    let r = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn run(cfg: Config) {
    let (mut hub, ca_pem) = HubProcess::start();
    let base = hub.base.clone();
    let clients: Vec<reqwest::Client> = (0..cfg.connections)
        .map(|_| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
                .https_only(true)
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .collect();
    // Wait for the hub to answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let version = loop {
        hub.assert_alive();
        match clients[0]
            .get(format!("{base}/v1/admin/tenants"))
            .bearer_auth(ADMIN)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break r.version(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("the hub did not come up: {other:?}\n{}", hub.log()),
        }
    };
    admin(
        &clients[0],
        &base,
        reqwest::Method::POST,
        "/v1/admin/profiles",
        PROFILE.to_owned(),
    )
    .await;
    admin(
        &clients[0],
        &base,
        reqwest::Method::POST,
        "/v1/admin/assignments",
        json!({"tag": "fleet=bench", "profile": "bench-edge"}).to_string(),
    )
    .await;
    let token = admin(
        &clients[0],
        &base,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        json!({"name": "fleet-bench"}).to_string(),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    println!("cairn-hub fleet simulation (hub/benches/fleet.rs)");
    println!(
        "  {} agents, heartbeat every {} s ± 10 %, an event batch (3 events) after ~1 in {} heartbeats",
        cfg.agents,
        cfg.heartbeat.as_secs(),
        cfg.events_every
    );
    println!(
        "  hub: {} ({}), SQLite in a temp dir, TLS (rustls, test CA), {version:?}",
        hub_binary(),
        if std::env::var_os("CAIRN_FLEET_HUB").is_some() {
            "from CAIRN_FLEET_HUB"
        } else if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    println!(
        "  client: this process, {} TLS connections; the agents are multiplexed over them (one process \
         cannot hold a real fleet's {} connections), and it shares the CPU with the hub",
        cfg.connections, cfg.agents
    );
    println!(
        "  machine: {} CPUs (shared with whatever else runs), all traffic on 127.0.0.1",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Registration.
    let rec = Recorder::new();
    let reg_start = Instant::now();
    rec.window(reg_start, reg_start + Duration::from_secs(24 * 3600));
    let rec = Arc::new(rec);
    let gate = Arc::new(Semaphore::new(cfg.register_concurrency));
    let mut tasks = Vec::with_capacity(cfg.agents);
    for i in 0..cfg.agents {
        let client = clients[i % clients.len()].clone();
        let (base, token, gate, rec) = (
            base.clone(),
            token.clone(),
            Arc::clone(&gate),
            Arc::clone(&rec),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let body = json!({"token": token, "name": format!("sim-{i:05}"),
                              "tags": {"fleet": "bench", "rack": format!("r{}", i % 40)}})
            .to_string();
            for attempt in 0..3 {
                let started = Instant::now();
                let r = read_ok(
                    client
                        .post(format!("{base}/v1/register"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await,
                )
                .await;
                rec.record(
                    Kind::Register,
                    started,
                    r.as_ref().map(|_| ()).map_err(Clone::clone),
                );
                match r {
                    Ok((_, bytes)) => {
                        let v: Value = serde_json::from_slice(&bytes).unwrap();
                        return (
                            v["host_id"].as_str().unwrap().to_owned(),
                            v["credential"].as_str().unwrap().to_owned(),
                        );
                    }
                    Err(e) if attempt == 2 => panic!("registering sim-{i:05}: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            unreachable!()
        }));
    }
    let mut agents = Vec::with_capacity(cfg.agents);
    for (i, t) in tasks.into_iter().enumerate() {
        let (id, credential) = t.await.unwrap();
        agents.push(Agent {
            id,
            credential,
            seq: AtomicU64::new(0),
            client: i % clients.len(),
        });
    }
    let reg_time = reg_start.elapsed();
    hub.assert_alive();
    let (mut reg, reg_errors) = rec.take();
    let reg_samples = reg.entry(Kind::Register).or_default();
    let r = summarize(reg_samples);
    println!(
        "registration: {} hosts in {:.1} s ({:.0}/s, {} at a time): p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} retried",
        cfg.agents,
        reg_time.as_secs_f64(),
        cfg.agents as f64 / reg_time.as_secs_f64(),
        cfg.register_concurrency,
        r.p50,
        r.p99,
        r.max,
        reg_errors.values().map(|e| e.0).sum::<u64>()
    );

    // Steady state.
    let sim = Arc::new(Sim {
        base: base.clone(),
        clients,
        agents,
        rec: Recorder::new(),
        events_every: cfg.events_every,
    });
    let start = Instant::now();
    let measure_from = start + cfg.heartbeat;
    let end = measure_from + cfg.measure;
    sim.rec.window(measure_from, end);
    println!(
        "steady state: {} s of warm-up (every agent's first heartbeat, inventory and profile fetch), then {} s measured…",
        cfg.heartbeat.as_secs(),
        cfg.measure.as_secs()
    );
    let mut handles = Vec::with_capacity(cfg.agents);
    for i in 0..cfg.agents {
        handles.push(tokio::spawn(Arc::clone(&sim).run_agent(
            i,
            start,
            cfg.heartbeat,
            end,
        )));
    }
    let probe = tokio::spawn(scheduling_probe(measure_from, end));
    tokio::time::sleep_until(measure_from.into()).await;
    hub.assert_alive();
    let (cpu0, _, _) = hub.usage();
    let (all0, me0) = cpu_now();
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, rss, peak) = hub.usage();
    let (all1, me1) = cpu_now();
    for h in handles {
        h.await.unwrap();
    }
    hub.assert_alive();
    let (mut samples, errors) = sim.rec.take();
    let title = format!("steady state, {} s measured:", cfg.measure.as_secs());
    let (rate, p99) = print_table(&title, cfg.measure, &mut samples, &errors);
    let secs = cfg.measure.as_secs_f64();
    println!(
        "  CPU (100 % = one core): hub {:.0} %, simulator {:.0} %, other processes on the machine {:.0} %; hub RSS {:.0} MiB (peak {:.0} MiB)",
        100.0 * (cpu1 - cpu0) / secs,
        100.0 * (me1 - me0) / secs,
        (100.0 * ((all1 - all0) - (cpu1 - cpu0) - (me1 - me0)) / secs).max(0.0),
        rss,
        peak
    );
    let probe = probe.await.unwrap();
    let slow: Vec<String> = sim
        .rec
        .worst_seconds(3)
        .iter()
        .map(|(sec, ms)| {
            format!(
                "second {sec}: {ms:.0} ms (simulator timer late by {:.0} ms)",
                probe.get(sec).copied().unwrap_or(0.0)
            )
        })
        .collect();
    println!("  slowest seconds: {}", slow.join("; "));
    let probe_worst = probe.values().copied().fold(0.0, f64::max);
    println!(
        "  simulator's own 10 ms timer: worst lateness {probe_worst:.0} ms (a machine-wide stall shows here too)"
    );
    let errs: u64 = errors.values().map(|e| e.0).sum();
    let verdict = if p99 < GOAL_P99_MS && errs == 0 {
        "MET"
    } else {
        "MISSED"
    };
    println!(
        "  goal (p99 < {GOAL_P99_MS} ms for 10000 agents at a 30 s heartbeat): {verdict} here with {} agents at {} s: p99 {:.2} ms at {:.0} req/s",
        cfg.agents,
        cfg.heartbeat.as_secs(),
        p99,
        rate
    );

    // Burst: closed loop, the same mix, concurrency doubling until latency degrades.
    println!(
        "burst (closed loop, heartbeats plus ~1 event batch per {} heartbeats, {} s per step):",
        cfg.events_every,
        cfg.burst_step.as_secs()
    );
    println!(
        "  {:>11} {:>9} {:>8} {:>8} {:>7} {:>8} {:>9}",
        "concurrency", "req/s", "p50 ms", "p99 ms", "errors", "hub CPU", "others"
    );
    let mut best: Option<(usize, f64, f64)> = None;
    let mut best_in_goal: Option<(usize, f64, f64)> = None;
    let mut concurrency = 8usize;
    while concurrency <= 512 {
        let step_start = Instant::now();
        let step_end = step_start + cfg.burst_step;
        let ((hub0, _, _), (all0, me0)) = (hub.usage(), cpu_now());
        sim.rec.window(step_start, step_end);
        let mut workers = Vec::with_capacity(concurrency);
        for w in 0..concurrency {
            let sim = Arc::clone(&sim);
            workers.push(tokio::spawn(async move {
                let mut rng = Rng::new(0xB0B0 + w as u64);
                while Instant::now() < step_end {
                    let i = (rng.next() % sim.agents.len() as u64) as usize;
                    if rng.next() % (sim.events_every + 1) == 0 {
                        let _ = sim.events(i).await;
                    } else {
                        let _ = sim.heartbeat(i, false).await;
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        hub.assert_alive();
        let ((hub1, _, _), (all1, me1)) = (hub.usage(), cpu_now());
        let step_secs = cfg.burst_step.as_secs_f64();
        let others = (100.0 * ((all1 - all0) - (hub1 - hub0) - (me1 - me0)) / step_secs).max(0.0);
        let hub_cpu = 100.0 * (hub1 - hub0) / step_secs;
        let (mut samples, errors) = sim.rec.take();
        let mut all: Vec<u32> = samples.values_mut().flat_map(|v| v.drain(..)).collect();
        let s = summarize(&mut all);
        let rps = s.count as f64 / cfg.burst_step.as_secs_f64();
        let errs: u64 = errors.values().map(|e| e.0).sum();
        println!(
            "  {:>11} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>7.0}% {:>8.0}%",
            concurrency, rps, s.p50, s.p99, errs, hub_cpu, others
        );
        for (kind, (n, first)) in &errors {
            println!("  ! {n} {} errors, first: {first}", kind.name());
        }
        let falling = best.is_some_and(|(_, b, _)| rps < 0.9 * b);
        if best.is_none_or(|(_, b, _)| rps > b) {
            best = Some((concurrency, rps, s.p99));
        }
        if s.p99 < GOAL_P99_MS && errs == 0 && best_in_goal.is_none_or(|(_, b, _)| rps > b) {
            best_in_goal = Some((concurrency, rps, s.p99));
        }
        // Degraded: far past the goal, or past it and no longer gaining throughput.
        if s.p99 > 2.0 * GOAL_P99_MS || (falling && s.p99 > GOAL_P99_MS) {
            break;
        }
        concurrency *= 2;
    }
    if let Some((c, rps, p99)) = best {
        println!("  peak: {rps:.0} req/s (concurrency {c}, p99 {p99:.1} ms)");
    }
    if let Some((c, rps, p99)) = best_in_goal {
        println!(
            "  peak with p99 < {GOAL_P99_MS} ms: {rps:.0} req/s (concurrency {c}, p99 {p99:.1} ms)"
        );
    }
    let (_, rss, peak) = hub.usage();
    println!("  hub process after the burst: RSS {rss:.0} MiB (peak {peak:.0} MiB)");
    drop(sim);
    drop(hub);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means "not me".
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|a| !"fleet".contains(a.as_str())) {
        return;
    }
    let cfg = Config::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(cfg));
}
