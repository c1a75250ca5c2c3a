#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cairn-agent run` end to end, as real processes with every wait bounded.
//!
//! The main flows run against the real `cairn-hub` binary (`serve` over TLS on 127.0.0.1,
//! SQLite, a test CA made with rcgen; driven by its admin commands): registration, profile
//! apply to mini roots made by scripts/mini-root.sh, events, the hub killed and restarted
//! mid-apply, the agent killed with SIGKILL mid-apply, version bumps, refused tokens and
//! credentials. Faults the real hub cannot produce on demand (500 on every other request,
//! 503 + Retry-After, a certificate from another CA) use the fault-injecting test double in
//! tests/daemon_support/hub.rs, which speaks the same /v1 protocol.

#[path = "daemon_support/agent.rs"]
mod agent;
mod common;
#[path = "daemon_support/hub.rs"]
mod hub;
#[path = "daemon_support/real_hub.rs"]
mod real_hub;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::{agent_yaml, all_files, join_yaml, rss_kb, status, status_text, wait_for, Agent};
use cairn_proto::{Event, EventKind};
use common::TestEnv;
use hub::TestHub;
use real_hub::RealHub;
use serde_json::{json, Value};

/// Upper bound of every wait (reached only when something is wrong or the machine is
/// swamped; waits end as soon as their condition holds).
const LIMIT: Duration = Duration::from_secs(180);

struct Setup {
    env: TestEnv,
    config: PathBuf,
    state: PathBuf,
}

trait Hub {
    fn url(&self) -> String;
    fn ca(&self) -> &str;
}

impl Hub for TestHub {
    fn url(&self) -> String {
        self.endpoint()
    }
    fn ca(&self) -> &str {
        &self.ca_pem
    }
}

impl Hub for RealHub {
    fn url(&self) -> String {
        self.endpoint()
    }
    fn ca(&self) -> &str {
        &self.ca_pem
    }
}

impl Setup {
    fn new(hub: &dyn Hub, token: &str, site: &str) -> Setup {
        Setup::with_yaml(&agent_yaml(&hub.url(), token, site, hub.ca()))
    }

    /// With this user-data as the agent's config file.
    fn with_yaml(yaml: &str) -> Setup {
        let env = TestEnv::new();
        let config = env.cfg.join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        let state = env.cfg.parent().unwrap().join("state");
        Setup { env, config, state }
    }

    fn spawn(&self) -> Agent {
        Agent::spawn(&self.config, &self.state, &self.env.root)
    }

    fn read(&self, inside: &str) -> String {
        std::fs::read_to_string(self.env.p(inside)).unwrap_or_default()
    }

    fn identity(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state.join("identity.json")).unwrap()).unwrap()
    }

    fn journal_has(&self, needles: &[&str]) -> bool {
        std::fs::read_to_string(self.state.join("journal.jsonl"))
            .is_ok_and(|j| j.lines().any(|l| needles.iter().all(|n| l.contains(n))))
    }
}

fn profile(name: &str, version: u64, user_data: &str, kubernetes: bool) -> Value {
    let mut layers = vec![json!({"os": {"user_data": user_data}})];
    if kubernetes {
        layers.push(json!({"kubernetes": {"flavor": "k3s", "version": "v1.30.4+k3s1"}}));
    }
    json!({"name": name, "version": version, "layers": layers})
}

fn basic_user_data(tag: &str) -> String {
    format!(
        "stages:\n  boot:\n    - name: motd\n      files:\n        - path: /etc/motd\n          \
         content: \"managed by cairn {tag}\\n\"\n          permissions: 0644\n    - name: count\n      \
         frequency: always\n      commands:\n        - echo ran >> /counter\n  network:\n    - name: \
         marker\n      files:\n        - path: /etc/cairn-marker\n          content: \"{tag}\\n\"\n"
    )
}

fn has_applied(events: &[Event], version: u64) -> bool {
    events
        .iter()
        .any(|e| e.kind == EventKind::ProfileApplied && e.data["version"] == version)
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Strictly increasing (so: in order, no duplicate).
fn assert_in_order(events: &[Event]) {
    let s = seqs(events);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "events not in strictly increasing seq order: {s:?}"
    );
}

/// The hub stored the events in `seq` order: `received_at` never goes back along `seq`.
fn assert_received_in_order(raw: &[Value]) {
    let times: Vec<time::OffsetDateTime> = raw
        .iter()
        .map(|e| {
            time::OffsetDateTime::parse(
                e["received_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "an event with a higher seq arrived before a lower one: {times:?}"
    );
}

fn pending(state: &Path) -> u64 {
    status(state).0["spool"]["pending"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// The one host of a fresh hub, once it has registered.
fn only_host(hub: &RealHub) -> String {
    wait_for(LIMIT, "the host to register", || hub.hosts().len() == 1);
    hub.hosts()[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn registers_applies_and_reports_every_event_once_in_order() {
    let hub = RealHub::start();
    let (_, token) = hub.token("basic", &[]);
    hub.publish(&profile("edge-basic", 1, &basic_user_data("v1"), false));
    hub.assign_tag("rack=r1", "edge-basic");
    let s = Setup::new(&hub, &token, "edge-1");
    let mut agent = s.spawn();

    let id = only_host(&hub);
    wait_for(LIMIT, "profile v1 applied and reported", || {
        has_applied(&hub.events(&id), 1)
    });
    wait_for(LIMIT, "the spool to drain", || pending(&s.state) == 0);

    // Registered once, with an inventory of this machine, and shown as applied.
    let host = hub.host(&id);
    assert_eq!(host["name"], "edge-1");
    assert_eq!(host["tags"]["rack"], "r1");
    assert_eq!(host["status"], "applied", "{host}");
    assert_eq!(host["applied_profile"], "edge-basic");
    assert_eq!(host["applied_version"], 1);
    let inv = &host["inventory"];
    assert!(inv["cpu"]["cores"].as_u64().unwrap() >= 1, "{inv}");
    assert!(inv["memory_bytes"].as_u64().unwrap() > 0, "{inv}");
    assert!(
        ["amd64", "arm64"].contains(&inv["arch"].as_str().unwrap()),
        "{inv}"
    );
    assert_eq!(inv["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(!inv["os"]["kernel"].as_str().unwrap().is_empty(), "{inv}");

    // Applied to the mini root.
    assert_eq!(s.read("/etc/motd"), "managed by cairn v1\n");
    assert_eq!(s.read("/etc/cairn-marker"), "v1\n");
    assert_eq!(s.read("/counter").lines().count(), 1);

    // Every event the agent emitted is at the hub once, numbered 1.. without a gap, and
    // arrived in seq order.
    let events = hub.events(&id);
    assert_in_order(&events);
    assert_eq!(seqs(&events), (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs(&agent.events()), seqs(&events));
    assert_eq!(host["last_seq"], events.len());
    assert_received_in_order(&hub.events_raw(&id));
    let kinds: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.step.as_str())).collect();
    for want in [
        (EventKind::StepChanged, "motd"),
        (EventKind::StepChanged, "count"),
        (EventKind::StepChanged, "marker"),
    ] {
        assert!(kinds.contains(&want), "{want:?} missing from {kinds:?}");
    }
    // (The kubernetes layers are covered by tests/kubernetes_daemon.rs.)
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::ProfileApplied);
    assert_eq!(last.data["profile"], "edge-basic");
    assert_eq!(last.data["unsupported_layers"], json!([]));

    // Identity: 0600 in a 0700 directory; the token and credential nowhere else.
    let meta = std::fs::metadata(s.state.join("identity.json")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&s.state).unwrap().mode() & 0o777, 0o700);
    let credential = s.identity()["credential"].as_str().unwrap().to_string();
    assert!(credential.starts_with("cairn_hc_"), "{credential}");
    let (st, code) = status(&s.state);
    let mut haystacks = vec![
        agent.log(),
        agent.stdout.lock().unwrap().join("\n"),
        st.to_string(),
        status_text(&s.state),
        hub.log.lock().unwrap().clone(),
    ];
    for f in all_files(&s.state) {
        if !f.ends_with("identity.json") {
            haystacks.push(String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned());
        }
    }
    for h in &haystacks {
        assert!(!h.contains(&token), "the token leaked: {h}");
        assert!(!h.contains(&credential), "the credential leaked: {h}");
    }

    // status: applied v1, hub connected, nothing waiting.
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["running"], true);
    assert_eq!(st["identity"]["host_id"], id);
    assert_eq!(st["hub"]["state"], "connected");
    assert_eq!(st["profile"]["applied"]["version"], 1);
    assert_eq!(st["apply"]["state"], "applied");
    assert_eq!(st["spool"]["pending"], 0);
    let text = status_text(&s.state);
    assert!(text.contains("edge-basic v1"), "{text}");

    // SIGTERM: a clean, prompt exit.
    let code = agent.term(Duration::from_secs(15));
    assert!(code.success(), "{code:?}\n{}", agent.log());
    let (st, _) = status(&s.state);
    assert_eq!(st["running"], false);
}

/// The idle daemon's resident memory after registration (`CAIRN_AGENT_BIN` picks the binary,
/// e.g. `target/release/cairn-agent`; run with `--nocapture` to see the figure).
#[test]
fn idle_footprint_after_registration() {
    let hub = RealHub::start();
    let (_, token) = hub.token("idle", &[]);
    let s = Setup::new(&hub, &token, "edge-idle");
    let mut agent = s.spawn();
    only_host(&hub);
    wait_for(LIMIT, "a heartbeat", || {
        status(&s.state).0["hub"]["state"] == "connected"
    });
    std::thread::sleep(Duration::from_secs(6));
    let rss = rss_kb(agent.pid());
    eprintln!(
        "idle daemon VmRSS after registration: {rss} kB ({})",
        agent::agent_bin().display()
    );
    assert!(rss > 0 && rss < 48 * 1024, "{rss} kB");
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn profile_version_bump_is_reapplied_and_a_restart_reuses_the_identity() {
    let hub = RealHub::start();
    let (_, token) = hub.token("bump", &[]);
    hub.publish(&profile("edge-basic", 1, &basic_user_data("v1"), false));
    hub.assign_tag("rack=r1", "edge-basic");
    let s = Setup::new(&hub, &token, "edge-bump");
    let mut agent = s.spawn();
    let id = only_host(&hub);
    wait_for(LIMIT, "v1 applied", || has_applied(&hub.events(&id), 1));

    // Publishing v2 rolls it out (the assignment follows the latest version).
    hub.publish(&profile("edge-basic", 2, &basic_user_data("v2"), false));
    wait_for(LIMIT, "v2 applied", || has_applied(&hub.events(&id), 2));
    assert_eq!(s.read("/etc/motd"), "managed by cairn v2\n");
    assert_eq!(s.read("/etc/cairn-marker"), "v2\n");
    assert_eq!(s.read("/counter").lines().count(), 2, "v2 ran its command");
    let (st, _) = status(&s.state);
    assert_eq!(st["profile"]["applied"]["version"], 2);
    assert_eq!(st["apply"]["state"], "applied");
    wait_for(LIMIT, "the hub to show v2", || {
        hub.host(&id)["applied_version"] == 2
    });

    // A restart keeps the identity and does not apply v2 again.
    assert!(agent.term(Duration::from_secs(15)).success());
    let before = hub.events(&id).len();
    let mut agent = s.spawn();
    wait_for(LIMIT, "the restarted agent to reach the hub", || {
        status(&s.state).0["hub"]["state"] == "connected"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hub.hosts().len(), 1, "no second registration");
    assert_eq!(s.read("/counter").lines().count(), 2, "nothing re-applied");
    assert_eq!(hub.events(&id).len(), before);
    assert!(agent.log().contains("already applied"), "{}", agent.log());
    assert!(agent.alive());
}

#[test]
fn hub_stopped_mid_apply_loses_and_duplicates_no_event() {
    let mut hub = RealHub::start();
    let (_, token) = hub.token("outage", &[]);
    let ud = "stages:\n  boot:\n    - name: a\n      files:\n        - path: /etc/a\n          content: a\n    \
              - name: slow\n      commands: [\"sleep 2\"]\n    - name: b\n      files:\n        - path: /etc/b\n          \
              content: b\n    - name: slow2\n      commands: [\"sleep 1\"]\n    - name: c\n      files:\n        \
              - path: /etc/c\n          content: c\n";
    hub.publish(&profile("outage", 1, ud, false));
    hub.assign_tag("rack=r1", "outage");
    let s = Setup::new(&hub, &token, "edge-outage");
    let agent = s.spawn();
    wait_for(LIMIT, "step a applied", || {
        agent.events().iter().any(|e| e.step == "a")
    });
    hub.kill();
    let stopped = Instant::now();
    wait_for(LIMIT, "the apply to finish without the hub", || {
        has_applied(&agent.events(), 1)
    });
    assert_eq!(s.read("/etc/c"), "c");
    wait_for(LIMIT, "status to show the hub as unreachable", || {
        status(&s.state).0["hub"]["state"] == "unreachable"
    });
    let (st, _) = status(&s.state);
    assert!(st["spool"]["pending"].as_u64().unwrap() > 0, "{st}");
    assert!(status_text(&s.state).contains("waiting for hub"));
    assert!(stopped.elapsed() >= Duration::from_secs(2));

    hub.restart();
    let id = only_host(&hub);
    wait_for(LIMIT, "the spooled events to arrive", || {
        has_applied(&hub.events(&id), 1)
    });
    wait_for(LIMIT, "the spool to drain", || pending(&s.state) == 0);
    let at_hub = hub.events(&id);
    assert_in_order(&at_hub);
    assert_eq!(
        seqs(&at_hub),
        seqs(&agent.events()),
        "the hub has exactly the events the agent emitted"
    );
    assert_eq!(seqs(&at_hub), (1..=at_hub.len() as u64).collect::<Vec<_>>());
    assert_received_in_order(&hub.events_raw(&id));
    assert_eq!(hub.host(&id)["status"], "applied");
}

#[test]
fn agent_killed_mid_apply_resumes_without_redoing_completed_steps() {
    let hub = RealHub::start();
    let (_, token) = hub.token("kill", &[]);
    let ud = "stages:\n  boot:\n    - name: count\n      frequency: always\n      commands:\n        \
              - echo ran >> /counter\n    - name: one\n      files:\n        - path: /etc/one\n          \
              content: one\n    - name: slow\n      frequency: always\n      commands: [\"sleep 3\"]\n    \
              - name: two\n      files:\n        - path: /etc/two\n          content: two\n";
    hub.publish(&profile("resume", 1, ud, false));
    hub.assign_tag("rack=r1", "resume");
    let s = Setup::new(&hub, &token, "edge-kill");
    let mut agent = s.spawn();
    wait_for(LIMIT, "step one done and slow running", || {
        s.journal_has(&["\"step_started\"", "\"slow\""])
    });
    agent.kill9();
    let before: Vec<Event> = agent.events();
    assert!(!s.env.exists("/etc/two"));
    assert_eq!(s.read("/counter").lines().count(), 1);
    let (st, _) = status(&s.state);
    assert_eq!(st["running"], false);
    assert_eq!(st["apply"]["state"], "interrupted", "{st}");
    assert_eq!(st["apply"]["step"], "slow", "{st}");

    let agent = s.spawn();
    let id = only_host(&hub);
    wait_for(LIMIT, "the resumed apply to be reported", || {
        has_applied(&hub.events(&id), 1)
    });
    assert_eq!(s.read("/etc/two"), "two");
    assert_eq!(
        s.read("/counter").lines().count(),
        1,
        "a completed step's command ran again"
    );
    let after = agent.events();
    let resumed: Vec<&str> = after
        .iter()
        .filter(|e| e.kind == EventKind::StepUnchanged && e.data["resumed"] == true)
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(resumed, vec!["count", "one"]);
    assert!(
        after
            .iter()
            .any(|e| e.kind == EventKind::StepChanged && e.step == "slow"),
        "the interrupted step runs again"
    );
    // Numbers continue after the crash, never reused.
    let max_before = before.iter().map(|e| e.seq).max().unwrap();
    assert!(after.iter().all(|e| e.seq > max_before));
    wait_for(LIMIT, "the spool to drain", || pending(&s.state) == 0);
    let at_hub = hub.events(&id);
    assert_in_order(&at_hub);
    let all: Vec<u64> = before.iter().chain(after.iter()).map(|e| e.seq).collect();
    // Events printed before the kill were spooled first, so every one reaches the hub, once.
    assert_eq!(seqs(&at_hub), all);
    assert_eq!(status(&s.state).0["apply"]["state"], "applied");
    assert_eq!(hub.host(&id)["status"], "applied");
}

#[test]
fn revoked_or_expired_token_is_refused_and_the_agent_keeps_running() {
    let hub = RealHub::start();
    let (revoked_id, revoked) = hub.token("revoked", &[]);
    hub.cli(&["token", "revoke", &revoked_id]);
    let (_, expired) = hub.token("expired", &["--expires-in", "1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut runs = Vec::new();
    for (token, site) in [(revoked, "edge-revoked"), (expired, "edge-expired")] {
        let s = Setup::new(&hub, &token, site);
        let agent = s.spawn();
        runs.push((s, agent, token));
    }
    for (s, agent, token) in &mut runs {
        wait_for(LIMIT, "status: token rejected", || {
            status(&s.state).0["hub"]["state"] == "token_rejected"
        });
        let (st, code) = status(&s.state);
        assert_eq!(code, 1, "{st}");
        assert!(st["identity"].is_null());
        assert!(!s.state.join("identity.json").exists());
        let text = status_text(&s.state);
        assert!(text.contains("token rejected"), "{text}");
        assert!(agent.alive(), "the agent must keep running");
        assert!(!agent.log().contains(token.as_str()));
        assert!(!st.to_string().contains(token.as_str()));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(hub.hosts().is_empty(), "no host record for a refused token");
    for (_, agent, _) in &mut runs {
        // One attempt, then a long back-off: no crash loop, no retry storm.
        assert_eq!(
            agent.log().matches("registration: hub refused").count(),
            1,
            "{}",
            agent.log()
        );
        assert!(agent.alive());
        assert!(agent.term(Duration::from_secs(15)).success());
    }
}

#[test]
fn wrong_or_revoked_credential_is_refused_and_hub_profiles_stop() {
    let hub = RealHub::start();
    let (_, token) = hub.token("cred", &[]);
    hub.publish(&profile("cred", 1, &basic_user_data("v1"), false));
    hub.assign_tag("rack=r1", "cred");
    let s = Setup::new(&hub, &token, "edge-cred");
    let mut agent = s.spawn();
    let id = only_host(&hub);
    wait_for(LIMIT, "v1 applied", || has_applied(&hub.events(&id), 1));
    assert!(agent.term(Duration::from_secs(15)).success());

    // A wrong credential: refused, reported, nothing applied, no new registration.
    let good = std::fs::read(s.state.join("identity.json")).unwrap();
    let mut identity = s.identity();
    identity["credential"] = json!("cairn_hc_not-the-credential");
    std::fs::write(s.state.join("identity.json"), identity.to_string()).unwrap();
    hub.publish(&profile("cred", 2, &basic_user_data("v2"), false));
    let mut agent = s.spawn();
    wait_for(LIMIT, "status: credential rejected", || {
        status(&s.state).0["hub"]["state"] == "credential_rejected"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.alive());
    assert_eq!(
        s.read("/etc/motd"),
        "managed by cairn v1\n",
        "v2 must not be applied"
    );
    assert_eq!(hub.hosts().len(), 1);
    let (st, code) = status(&s.state);
    assert_eq!(code, 1, "{st}");
    assert!(status_text(&s.state).contains("credential rejected"));
    assert!(agent.term(Duration::from_secs(15)).success());

    // The right credential again: the hub accepts it, v2 is applied.
    std::fs::write(s.state.join("identity.json"), &good).unwrap();
    let agent = s.spawn();
    wait_for(LIMIT, "v2 applied", || has_applied(&hub.events(&id), 2));
    assert_eq!(status(&s.state).0["hub"]["state"], "connected");

    // The host is removed on the hub while the agent runs: it stops applying hub
    // profiles, keeps what it applied, and says so.
    hub.remove_host(&id);
    wait_for(LIMIT, "status: credential rejected", || {
        status(&s.state).0["hub"]["state"] == "credential_rejected"
    });
    hub.publish(&profile("cred", 3, &basic_user_data("v3"), false));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        s.read("/etc/motd"),
        "managed by cairn v2\n",
        "v3 must not be applied"
    );
    let mut agent = agent;
    assert!(agent.alive());
    assert!(agent.term(Duration::from_secs(15)).success());

    // Re-enrollment only with a new token: the same token keeps the refused identity…
    let agent = s.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        hub.hosts().is_empty(),
        "no re-registration with the old token"
    );
    drop(agent);
    // …a new one registers a new host, which gets v3.
    let (_, token2) = hub.token("cred-2", &[]);
    std::fs::write(
        &s.config,
        agent_yaml(&hub.endpoint(), &token2, "edge-cred", &hub.ca_pem),
    )
    .unwrap();
    let _agent = s.spawn();
    let id2 = only_host(&hub);
    assert_ne!(id2, id);
    wait_for(LIMIT, "v3 applied to the new host", || {
        has_applied(&hub.events(&id2), 3)
    });
    assert_eq!(s.read("/etc/motd"), "managed by cairn v3\n");
    assert_eq!(s.identity()["host_id"], id2);

    // Enrolled once more while v3 is already applied: the new host record is told so,
    // nothing runs again.
    let counter = s.read("/counter").lines().count();
    drop(_agent);
    hub.remove_host(&id2);
    let (_, token3) = hub.token("cred-3", &[]);
    std::fs::write(
        &s.config,
        agent_yaml(&hub.endpoint(), &token3, "edge-cred", &hub.ca_pem),
    )
    .unwrap();
    let agent = s.spawn();
    // The killed agent last saw its host accepted; it notices the removal first.
    wait_for(LIMIT, "status: credential rejected", || {
        status(&s.state).0["hub"]["state"] == "credential_rejected"
    });
    drop(agent);
    let _agent = s.spawn();
    let id3 = only_host(&hub);
    wait_for(LIMIT, "the hub to show v3 applied on the new host", || {
        hub.host(&id3)["applied_version"] == 3
    });
    assert_eq!(
        s.read("/counter").lines().count(),
        counter,
        "nothing re-ran"
    );
    assert!(hub
        .events(&id3)
        .iter()
        .any(|e| e.kind == EventKind::ProfileApplied && e.data["already_applied"] == true));
}

#[test]
fn sigterm_mid_apply_finishes_the_step_exits_0_and_resumes_at_the_next_start() {
    let hub = RealHub::start();
    let (_, token) = hub.token("term", &[]);
    let ud =
        "stages:\n  boot:\n    - name: count\n      frequency: always\n      commands:\n        \
              - echo ran >> /counter\n    - name: slow\n      commands: [\"sleep 2\"]\n    \
              - name: after\n      files:\n        - path: /etc/after\n          content: x\n";
    hub.publish(&profile("term", 1, ud, false));
    hub.assign_tag("rack=r1", "term");
    let s = Setup::new(&hub, &token, "edge-term");
    let mut agent = s.spawn();
    wait_for(LIMIT, "the slow step to start", || {
        s.journal_has(&["\"step_started\"", "\"slow\""])
    });
    let code = agent.term(Duration::from_secs(40));
    assert!(code.success(), "{code:?}\n{}", agent.log());
    // The running step finished; the next one did not start.
    assert!(s.journal_has(&["\"step_done\"", "\"slow\""]));
    assert!(!s.env.exists("/etc/after"));
    let (st, _) = status(&s.state);
    assert_eq!(st["apply"]["state"], "interrupted", "{st}");
    assert!(status_text(&s.state).contains("interrupted"));

    let _agent = s.spawn();
    let id = only_host(&hub);
    wait_for(LIMIT, "the apply to finish", || {
        has_applied(&hub.events(&id), 1)
    });
    assert_eq!(s.read("/etc/after"), "x");
    assert_eq!(s.read("/counter").lines().count(), 1);
    // Read the resumed steps from the hub (the record of truth), not from the agent's
    // stdout, which a loaded machine may not have flushed yet.
    let resumed: Vec<String> = hub
        .events(&id)
        .iter()
        .filter(|e| e.kind == EventKind::StepUnchanged && e.data["resumed"] == true)
        .map(|e| e.step.clone())
        .collect();
    assert_eq!(resumed, vec!["count", "slow"]);
}

#[test]
fn a_failing_step_is_reported_by_status_and_a_fixed_version_applies() {
    let hub = RealHub::start();
    let (_, token) = hub.token("fail", &[]);
    let bad = "stages:\n  boot:\n    - name: ok\n      files:\n        - path: /etc/ok\n          content: ok\n    \
               - name: broken\n      commands: [\"echo oops >&2; exit 3\"]\n    - name: never\n      files:\n        \
               - path: /etc/never\n          content: never\n";
    hub.publish(&profile("fail", 1, bad, false));
    hub.assign_tag("rack=r1", "fail");
    let s = Setup::new(&hub, &token, "edge-fail");
    let _agent = s.spawn();
    wait_for(LIMIT, "the failure to be journaled", || {
        status(&s.state).0["apply"]["state"] == "failed"
    });
    let (st, code) = status(&s.state);
    assert_eq!(code, 1, "{st}");
    assert_eq!(st["apply"]["step"], "broken", "{st}");
    assert!(
        st["apply"]["message"].as_str().unwrap().contains('3'),
        "{st}"
    );
    assert!(st["profile"]["applied"].is_null());
    assert!(status_text(&s.state).contains("FAILED fail v1"));
    assert!(!s.env.exists("/etc/never"), "later steps do not run");
    let id = only_host(&hub);
    wait_for(LIMIT, "the hub to show the failure", || {
        let h = hub.host(&id);
        h["status"] == "failed" && h["last_error"].as_str().unwrap_or("").contains("broken")
    });

    let fixed = bad.replace("exit 3", "exit 0");
    hub.publish(&profile("fail", 2, &fixed, false));
    wait_for(LIMIT, "v2 applied", || has_applied(&hub.events(&id), 2));
    assert_eq!(s.read("/etc/never"), "never");
    let (st, code) = status(&s.state);
    assert_eq!((code, st["apply"]["state"].as_str()), (0, Some("applied")));
}

#[test]
fn a_taken_host_name_is_refused_without_a_retry_loop() {
    let hub = RealHub::start();
    let (_, token) = hub.token("names", &[]);
    let first = Setup::new(&hub, &token, "edge-same");
    let _a = first.spawn();
    only_host(&hub);
    let second = Setup::new(&hub, &token, "edge-same");
    let mut b = second.spawn();
    wait_for(LIMIT, "status: registration refused", || {
        status(&second.state).0["hub"]["state"] == "registration_refused"
    });
    let (st, code) = status(&second.state);
    assert_eq!(code, 1, "{st}");
    assert!(
        st["hub"]["last_error"].as_str().unwrap().contains("409"),
        "{st}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hub.hosts().len(), 1);
    assert_eq!(
        b.log().matches("registration: hub refused").count(),
        1,
        "{}",
        b.log()
    );
    assert!(b.alive());
}

#[test]
fn an_apply_running_from_the_cli_makes_the_daemon_wait_not_fail() {
    // reliability §5 #18: the engine's per-root lock refuses a second apply; the daemon
    // retries later instead of recording a failure.
    let hub = RealHub::start();
    let (_, token) = hub.token("lock", &[]);
    hub.publish(&profile("lock", 1, &basic_user_data("v1"), false));
    hub.assign_tag("rack=r1", "lock");
    let s = Setup::new(&hub, &token, "edge-lock");
    let lock_path = s.env.p("/var/lib/cairn/apply.lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&lock_path).unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let agent = s.spawn();
    wait_for(LIMIT, "the daemon to meet the lock", || {
        agent
            .events()
            .iter()
            .any(|e| e.kind == EventKind::Error && e.message.contains("another cairn-agent apply"))
    });
    assert_ne!(status(&s.state).0["apply"]["state"], "failed");
    assert!(!s.env.exists("/etc/motd") || s.read("/etc/motd") != "managed by cairn v1\n");
    drop(held);
    let id = only_host(&hub);
    wait_for(LIMIT, "v1 applied once the lock is free", || {
        has_applied(&hub.events(&id), 1)
    });
    assert_eq!(s.read("/etc/motd"), "managed by cairn v1\n");
}

#[test]
fn the_reconcile_stage_runs_periodically_and_the_hub_still_shows_applied() {
    let hub = RealHub::start();
    let (_, token) = hub.token("reconcile", &[]);
    let ud =
        "stages:\n  boot:\n    - name: base\n      files:\n        - path: /etc/base\n          \
              content: base\n  reconcile:\n    - name: drift\n      commands:\n        \
              - echo r >> /reconciled\n";
    hub.publish(&profile("reconcile", 1, ud, false));
    hub.assign_tag("rack=r1", "reconcile");
    let s = Setup::new(&hub, &token, "edge-reconcile");
    let _agent = Agent::spawn_with(
        &s.config,
        &s.state,
        &s.env.root,
        &[],
        &["--reconcile-interval", "1"],
    );
    let id = only_host(&hub);
    wait_for(LIMIT, "v1 applied", || has_applied(&hub.events(&id), 1));
    assert!(
        !s.env.exists("/reconciled"),
        "reconcile is not part of the apply"
    );
    wait_for(LIMIT, "two reconcile runs", || {
        s.read("/reconciled").lines().count() >= 2
    });
    wait_for(
        LIMIT,
        "the hub to show the host applied after a reconcile",
        || {
            let events = hub.events(&id);
            let reconciled = events
                .iter()
                .any(|e| e.kind == EventKind::ProfileApplied && e.data["reconcile"] == true);
            reconciled && hub.host(&id)["status"] == "applied"
        },
    );
}

// ----- faults from the test double -------------------------------------------------------

#[test]
fn a_hub_failing_every_other_request_still_gets_every_event_once() {
    // reliability §5 #3 and #36: the hub answers 500 to every other request; half of the
    // failed event batches were stored before the 500 (a lost ack), so they are re-sent.
    let hub = TestHub::start(&["tok-flaky"]);
    hub.assign(profile("flaky", 1, &basic_user_data("v1"), false));
    hub.state().flaky = true;
    let s = Setup::new(&hub, "tok-flaky", "edge-flaky");
    let agent = s.spawn();
    wait_for(LIMIT, "v1 applied and reported", || {
        hub.hosts()
            .first()
            .is_some_and(|h| has_applied(&hub.events(&h.id), 1))
    });
    wait_for(LIMIT, "the spool to drain", || pending(&s.state) == 0);
    let id = hub.hosts()[0].id.clone();
    assert_eq!(hub.hosts().len(), 1);
    let at_hub = hub.events(&id);
    assert_in_order(&at_hub);
    assert_eq!(seqs(&at_hub), seqs(&agent.events()));
    let received: Vec<u64> = hub.state().received.iter().map(|(_, s)| *s).collect();
    assert!(
        received.len() > at_hub.len(),
        "some batch was re-sent: {received:?}"
    );
    assert_eq!(s.read("/counter").lines().count(), 1, "no step ran twice");
}

#[test]
fn a_hub_signed_by_another_ca_gets_nothing() {
    let (_, chain, key) = hub::make_pki();
    let trusted = hub::make_pki().0;
    let hub = TestHub::start_with(&["tok-mitm-canary"], trusted.clone(), chain, key);
    let s = Setup::new(&hub, "tok-mitm-canary", "edge-mitm");
    let mut agent = s.spawn();
    wait_for(
        LIMIT,
        "status: unreachable with a certificate error",
        || {
            let st = status(&s.state).0;
            st["hub"]["state"] == "unreachable"
                && st["hub"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.to_lowercase().contains("certificate"))
        },
    );
    assert!(hub.state().tls_failures >= 1);
    assert!(
        hub.requests().is_empty(),
        "no request (so no token) reached the impostor"
    );
    assert!(agent.alive());
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn the_configured_ca_replaces_the_system_roots() {
    // The hub's certificate chains to a CA the "system" trusts (SSL_CERT_FILE is the
    // system store for rustls-native-certs), but the user-data names another CA.
    let (system_ca, chain, key) = hub::make_pki();
    let configured = hub::make_pki().0;
    let hub = TestHub::start_with(&["tok-pinned"], configured, chain.clone(), key.clone_key());
    let s = Setup::new(&hub, "tok-pinned", "edge-pinned");
    let store = s.env.cfg.join("system-roots.pem");
    std::fs::write(&store, &system_ca).unwrap();
    let store_env = [("SSL_CERT_FILE", store.to_str().unwrap())];
    let mut agent = Agent::spawn_with(&s.config, &s.state, &s.env.root, &store_env, &[]);
    wait_for(
        LIMIT,
        "status: unreachable with a certificate error",
        || {
            let st = status(&s.state).0;
            st["hub"]["state"] == "unreachable"
                && st["hub"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.to_lowercase().contains("certificate"))
        },
    );
    assert!(hub.requests().is_empty(), "the system roots were trusted");
    assert!(agent.term(Duration::from_secs(15)).success());

    // Without a configured CA, the system roots are what vouches for the hub.
    let open = TestHub::start_with(&["tok-system"], system_ca, chain, key);
    let s = Setup::new(&open, "tok-system", "edge-system");
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let without_ca = yaml.split("  ca_certs:").next().unwrap().to_string();
    std::fs::write(&s.config, without_ca).unwrap();
    let store = s.env.cfg.join("system-roots.pem");
    std::fs::write(&store, open.ca()).unwrap();
    let store_env = [("SSL_CERT_FILE", store.to_str().unwrap())];
    let mut agent = Agent::spawn_with(&s.config, &s.state, &s.env.root, &store_env, &[]);
    wait_for(LIMIT, "registration through the system roots", || {
        open.hosts().len() == 1
    });
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn a_hub_certificate_not_valid_yet_is_reported_as_a_clock_problem() {
    // As seen by a device whose clock is a year behind (no RTC, no NTP yet).
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let p = hub::pki_server_valid_from(Some(later));
    let hub = TestHub::start_with(&["tok-clock"], p.ca_pem, p.chain, p.key);
    let s = Setup::new(&hub, "tok-clock", "edge-clock");
    let mut agent = s.spawn();
    wait_for(LIMIT, "status: unreachable", || {
        status(&s.state).0["hub"]["state"] == "unreachable"
    });
    let st = status(&s.state).0;
    let error = st["hub"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("is this device's clock right?"), "{error}");
    assert!(hub.requests().is_empty(), "nothing was sent");
    assert!(agent.alive());
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn retry_after_is_honoured() {
    let hub = TestHub::start(&["tok-busy"]);
    hub.state().busy = Some((1, 2));
    let s = Setup::new(&hub, "tok-busy", "edge-busy");
    let mut agent = s.spawn();
    wait_for(LIMIT, "registration after the 503", || {
        hub.hosts().len() == 1
    });
    let reqs = hub.requests();
    assert_eq!(reqs[0].status, 503);
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].path.as_str()),
        ("POST", "/v1/register")
    );
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let hub = TestHub::start(&["tok-notify"]);
    let s = Setup::new(&hub, "tok-notify", "edge-notify");
    let sock_path = s.env.cfg.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut agent = Agent::spawn_with(
        &s.config,
        &s.state,
        &s.env.root,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &[],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let start = Instant::now();
    while seen
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        assert!(start.elapsed() < LIMIT, "no watchdog pings: {seen:?}");
        let n = sock.recv(&mut buf).expect("a notification");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].contains("READY=1"), "READY first: {seen:?}");
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < LIMIT, "no STOPPING=1: {seen:?}");
        let n = sock.recv(&mut buf).expect("a notification");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("STOPPING=1") {
            break;
        }
        seen.push(m);
    }
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn the_systemd_unit_verifies() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is not installed; run scripts/install-test-deps.sh"
    );
    let unit =
        std::fs::read_to_string(common::repo_dir().join("systemd/cairn-agent.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    assert!(unit.contains("Restart=on-failure"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn-agent.service");
    let bin = env!("CARGO_BIN_EXE_cairn-agent");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/cairn-agent ", &format!("{bin} ")),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- join strings: the hub's own CA, pinned ----------------------------------------------

/// The pin of a join string, in hex.
fn pin_of(join: &str) -> String {
    join.strip_prefix("cairn1:")
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_string()
}

/// Requests of one kind in the hub's access log (`CAIRN_HUB_LOG=debug`).
fn hub_requests(hub: &RealHub, method: &str, path: &str) -> usize {
    hub.log
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("method={method} path={path} ")))
        .count()
}

#[test]
fn a_join_string_alone_registers_and_heartbeats() {
    let hub = RealHub::start_own_ca(&[("CAIRN_HUB_LOG", "debug")]);
    let (_, _token, join) = hub.join_token("join", &["--max-uses", "1"]);
    let s = Setup::with_yaml(&join_yaml(&join, "edge-join"));
    let mut agent = s.spawn();

    let id = only_host(&hub);
    assert_eq!(hub.host(&id)["name"], "edge-join");
    wait_for(LIMIT, "two heartbeats answered", || {
        hub.log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("path=/v1/hosts/{id}/heartbeat status=200")))
            .count()
            >= 2
    });
    let (st, code) = status(&s.state);
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["hub"]["state"], "connected", "{st}");
    assert_eq!(st["identity"]["hub"], hub.endpoint());
    assert_eq!(hub.tokens()[0]["uses"], 1);
    // The CA it fetched, checked and kept is the hub's.
    let kept = std::fs::read_to_string(s.state.join("hub-ca.pem")).unwrap();
    assert_eq!(kept.trim(), hub.ca_pem.trim());
    assert_eq!(hub_requests(&hub, "GET", "/v1/ca"), 1);
    assert!(agent.log().contains("matches the pin"), "{}", agent.log());

    // Restarted, it trusts the CA it kept (no second fetch) and carries on.
    assert!(agent.term(Duration::from_secs(15)).success());
    let before = hub_requests(&hub, "POST", &format!("/v1/hosts/{id}/heartbeat"));
    let mut agent = s.spawn();
    wait_for(LIMIT, "a heartbeat after the restart", || {
        hub_requests(&hub, "POST", &format!("/v1/hosts/{id}/heartbeat")) > before
    });
    assert_eq!(hub_requests(&hub, "GET", "/v1/ca"), 1);
    assert_eq!(hub.hosts().len(), 1);
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn a_join_string_with_a_wrong_pin_sends_nothing_and_says_why() {
    let hub = RealHub::start_own_ca(&[("CAIRN_HUB_LOG", "debug")]);
    let (_, token, join) = hub.join_token("wrong-pin", &[]);
    let pin = pin_of(&join);
    // The pin of another CA (as if the hub were an impostor, or the string for another hub).
    let other = hub::make_pki().0;
    let other_der = x509_parser::pem::parse_x509_pem(other.as_bytes())
        .unwrap()
        .1
        .contents;
    let wrong_pin = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&other_der));
    let wrong = join.replace(&pin, &wrong_pin);
    let s = Setup::with_yaml(&join_yaml(&wrong, "edge-wrong-pin"));
    let mut agent = s.spawn();

    wait_for(LIMIT, "status: ca_pin_mismatch", || {
        status(&s.state).0["hub"]["state"] == "ca_pin_mismatch"
    });
    std::thread::sleep(Duration::from_secs(2));
    // Nothing reached the hub but the request for its CA: no registration, no token use.
    assert_eq!(hub_requests(&hub, "GET", "/v1/ca"), 1);
    assert_eq!(hub_requests(&hub, "POST", "/v1/register"), 0);
    assert!(hub.hosts().is_empty());
    assert_eq!(hub.tokens()[0]["uses"], 0);
    assert!(!s.state.join("identity.json").exists());
    assert!(!s.state.join("hub-ca.pem").exists(), "the CA was not kept");
    // It says why: status (exit 1), its text, the log, once.
    let (st, code) = status(&s.state);
    assert_eq!(code, 1, "{st}");
    let error = st["hub"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("not the one its join string pins"),
        "{error}"
    );
    assert!(error.contains("nothing was sent"), "{error}");
    let text = status_text(&s.state);
    assert!(text.contains("CA pin mismatch"), "{text}");
    let log = agent.log();
    assert_eq!(log.matches("ca_pin_mismatch").count(), 1, "{log}");
    // No crash loop: it keeps running and waits (an hour) before asking again.
    assert!(agent.alive());
    for secret in [&token, &pin, &wrong_pin] {
        for h in [&log, &st.to_string(), &text, &*hub.log.lock().unwrap()] {
            assert!(!h.contains(secret.as_str()), "{secret} leaked: {h}");
        }
    }
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn the_token_and_the_pin_never_reach_the_logs_at_debug_level() {
    let hub = RealHub::start_own_ca(&[("CAIRN_HUB_LOG", "debug")]);
    let (_, token, join) = hub.join_token("canary", &[]);
    let pin = pin_of(&join);
    hub.publish(&profile("edge-canary", 1, &basic_user_data("v1"), false));
    hub.assign_tag("rack=r1", "edge-canary");
    let s = Setup::with_yaml(&join_yaml(&join, "edge-canary"));
    let mut agent = Agent::spawn_with(
        &s.config,
        &s.state,
        &s.env.root,
        &[("CAIRN_LOG", "debug")],
        &[],
    );
    let id = only_host(&hub);
    wait_for(LIMIT, "profile v1 applied and reported", || {
        has_applied(&hub.events(&id), 1)
    });
    wait_for(LIMIT, "the spool to drain", || pending(&s.state) == 0);
    wait_for(LIMIT, "a heartbeat", || {
        hub_requests(&hub, "POST", &format!("/v1/hosts/{id}/heartbeat")) >= 1
    });
    assert!(agent.term(Duration::from_secs(15)).success());
    let agent_log = agent.log();
    assert!(
        agent_log.contains("DEBUG"),
        "not at debug level: {agent_log}"
    );
    let hub_log = hub.log.lock().unwrap().clone();
    assert!(hub_log.contains("DEBUG"), "not at debug level: {hub_log}");

    let (st, _) = status(&s.state);
    let validate = std::process::Command::new(agent::agent_bin())
        .arg("validate")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(validate.status.success());
    let mut haystacks = vec![
        ("agent log", agent_log),
        ("hub log", hub_log),
        ("agent events", agent.stdout.lock().unwrap().join("\n")),
        ("status", st.to_string()),
        ("status text", status_text(&s.state)),
        (
            "hub events",
            serde_json::to_string(&hub.events_raw(&id)).unwrap(),
        ),
        ("hub host", hub.host(&id).to_string()),
        ("token list", serde_json::to_string(&hub.tokens()).unwrap()),
        (
            "validate",
            format!(
                "{}{}",
                String::from_utf8_lossy(&validate.stdout),
                String::from_utf8_lossy(&validate.stderr)
            ),
        ),
    ];
    for f in all_files(&s.state) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        haystacks.push(("state file", text));
    }
    for (what, h) in &haystacks {
        for secret in [&token, &pin, &pin.to_uppercase(), &join] {
            assert!(!h.contains(secret.as_str()), "{what} holds {secret}:\n{h}");
        }
    }
}

/// SHA-256 (hex) of a PEM certificate's DER: what a join string pins.
fn pin_of_pem(pem: &str) -> String {
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der))
}

#[test]
fn an_impostor_serving_the_pinned_ca_still_gets_nothing() {
    // The real hub's CA is public (GET /v1/ca): an impostor can hand it out, pass the pin
    // check, and still not receive the token, because its TLS certificate is not signed by
    // that CA, which is then the only one trusted.
    let real_ca = hub::make_pki().0;
    let (_, chain, key) = hub::make_pki();
    let impostor = TestHub::start_with(&["tok-impostor-canary"], real_ca.clone(), chain, key);
    impostor.state().ca_answer = Some(real_ca.clone());
    let join = format!(
        "cairn1:{}:tok-impostor-canary@{}",
        pin_of_pem(&real_ca),
        impostor.endpoint()
    );
    let s = Setup::with_yaml(&join_yaml(&join, "edge-impostor"));
    let mut agent = s.spawn();
    wait_for(
        LIMIT,
        "status: unreachable with a certificate error",
        || {
            let st = status(&s.state).0;
            st["hub"]["state"] == "unreachable"
                && st["hub"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.to_lowercase().contains("certificate"))
        },
    );
    // It took the CA (it matched the pin) but the handshake that would carry the token
    // failed: the only request the impostor saw is the one for the CA.
    assert!(s.state.join("hub-ca.pem").exists());
    assert!(impostor.state().tls_failures >= 1);
    let requests: Vec<(String, String)> = impostor
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert!(
        requests.iter().all(|(m, p)| m == "GET" && p == "/v1/ca"),
        "{requests:?}"
    );
    assert!(impostor.hosts().is_empty());
    assert!(!agent.log().contains("tok-impostor-canary"));
    assert!(agent.alive());
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn no_hub_from_the_first_boot_the_agent_waits_retries_with_backoff_and_keeps_running() {
    // reliability §5 #1: nothing answers at the endpoint from the start. A listener accepts
    // and closes every connection at once (no TLS), counting the attempts.
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&attempts);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            seen.lock().unwrap().push(Instant::now());
            drop(conn);
        }
    });
    let (ca, _, _) = hub::make_pki();
    let s = Setup::with_yaml(&agent_yaml(
        &format!("https://127.0.0.1:{port}"),
        "tok-nohub",
        "edge-nohub",
        &ca,
    ));
    let mut agent = s.spawn();
    wait_for(LIMIT, "status: waiting for hub", || {
        status_text(&s.state).contains("waiting for hub")
    });
    let watched = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    assert!(agent.alive(), "the daemon never exits for want of a hub");
    let times = attempts.lock().unwrap().clone();
    assert!(
        times.len() >= 2,
        "it keeps retrying: {} attempt(s)",
        times.len()
    );
    // 1 s doubling with full jitter and a 200 ms floor: a handful of tries, not a storm.
    let in_window = times.iter().filter(|t| **t >= watched).count();
    assert!(
        in_window <= 15,
        "{in_window} attempts in 12 s: backoff not applied"
    );
    let (st, _) = status(&s.state);
    assert!(st["identity"].is_null(), "{st}");
    assert!(
        status_text(&s.state).contains("waiting for hub"),
        "{}",
        status_text(&s.state)
    );
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn an_expired_hub_certificate_or_one_for_another_name_gets_nothing() {
    // reliability §5 #23 (another CA: `a_hub_signed_by_another_ca_gets_nothing`).
    let now = time::OffsetDateTime::now_utc();
    for (what, pki) in [
        (
            "expired",
            hub::pki_server(
                &["localhost"],
                true,
                Some((
                    now - time::Duration::days(400),
                    now - time::Duration::days(35),
                )),
            ),
        ),
        (
            "another name",
            hub::pki_server(&["hub.example"], false, None),
        ),
    ] {
        let hub = TestHub::start_with(&["tok-cert"], pki.ca_pem, pki.chain, pki.key);
        let s = Setup::new(&hub, "tok-cert", "edge-cert");
        let mut agent = s.spawn();
        wait_for(LIMIT, "status: unreachable", || {
            status(&s.state).0["hub"]["state"] == "unreachable"
        });
        let st = status(&s.state).0;
        let error = st["hub"]["last_error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: the reason is reported: {st}");
        // Give the agent time for a retry or two: still nothing reaches the hub.
        std::thread::sleep(Duration::from_secs(3));
        assert!(hub.requests().is_empty(), "{what}: nothing was sent");
        assert!(
            hub.state().tls_failures > 0,
            "{what}: the agent did try (and the handshake failed)"
        );
        let why = if what == "expired" {
            "certificate expired"
        } else {
            "not valid for name"
        };
        assert!(error.contains(why), "{what}: {error}");
        assert!(hub.hosts().is_empty(), "{what}");
        assert!(!s.state.join("identity.json").exists(), "{what}");
        assert!(agent.alive(), "{what}");
        assert!(agent.term(Duration::from_secs(15)).success(), "{what}");
    }
}
