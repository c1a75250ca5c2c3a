#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Registration survives a lost answer (issue 13, defect 5): `cairn-agent run` against the
//! real `cairn-hub` (TLS, SQLite) through a proxy that forwards the registration and drops
//! the hub's answer (daemon_support/proxy.rs). However often the answer is lost — dropped
//! once, twice, the agent restarted in between, the hub killed with SIGKILL right after its
//! commit — the device ends up registered once: one host, one use of a single-use token,
//! and the host heartbeats with the identity it got. A second device with the same name
//! (another registration key) still gets 409 and no identity.

#[path = "daemon_support/agent.rs"]
#[allow(dead_code)]
mod agent;
mod common;
#[path = "daemon_support/hub.rs"]
#[allow(dead_code)]
mod hub;
#[path = "daemon_support/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "daemon_support/real_hub.rs"]
#[allow(dead_code)]
mod real_hub;

use std::path::PathBuf;
use std::time::Duration;

use agent::{agent_yaml, all_files, status, status_text, wait_for, Agent};
use common::TestEnv;
use proxy::Proxy;
use real_hub::RealHub;
use serde_json::Value;

/// Upper bound of every wait (reached only when something is wrong).
const LIMIT: Duration = Duration::from_secs(180);

/// A device: its mini root, its user-data (hub endpoint and CA) and its state directory.
struct Device {
    env: TestEnv,
    config: PathBuf,
    state: PathBuf,
}

impl Device {
    fn new(endpoint: &str, ca_pem: &str, token: &str, site: &str) -> Device {
        let env = TestEnv::new();
        let config = env.cfg.join("agent.yaml");
        std::fs::write(&config, agent_yaml(endpoint, token, site, ca_pem)).unwrap();
        let state = env.cfg.parent().unwrap().join("state");
        Device { env, config, state }
    }

    /// Through the proxy.
    fn behind(proxy: &Proxy, token: &str, site: &str) -> Device {
        Device::new(&proxy.endpoint(), &proxy.ca_pem, token, site)
    }

    fn spawn(&self) -> Agent {
        Agent::spawn(&self.config, &self.state, &self.env.root)
    }

    fn key_file(&self) -> PathBuf {
        self.state.join("registration-key.json")
    }

    fn identity(&self) -> Option<Value> {
        let bytes = std::fs::read(self.state.join("identity.json")).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    fn host_id(&self) -> String {
        self.identity().unwrap()["host_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The hub's only token, as `cairn-hub token list` shows it.
fn the_token(hub: &RealHub) -> Value {
    let tokens = hub.cli(&["token", "list"]);
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    tokens[0].clone()
}

/// The hub's log lines that say a registration was answered again from its key.
fn repeats(hub: &RealHub) -> usize {
    hub.log
        .lock()
        .unwrap()
        .matches("registration repeated with its registration key")
        .count()
}

/// What every scenario ends with: the device registered exactly once — one host (the one
/// the hub made first), one use of the single-use token, the identity stored and the key
/// gone — and heartbeating normally with that identity through the proxy.
fn assert_registered_once(hub: &RealHub, proxy: &Proxy, dev: &Device, agent: &Agent) {
    wait_for(LIMIT, "the identity to be stored", || {
        dev.identity().is_some()
    });
    let id = dev.host_id();
    let hosts = hub.hosts();
    assert_eq!(hosts.len(), 1, "a ghost host: {hosts:?}");
    assert_eq!(hosts[0]["id"], id.as_str());
    assert_eq!(hosts[0]["name"], "edge-1");
    let token = the_token(hub);
    assert_eq!(token["uses"], 1, "{token}");
    assert_eq!(token["state"], "used_up", "{token}");
    // The host heartbeats with its identity: 200s through the proxy, the hub sees it.
    wait_for(LIMIT, "two heartbeats answered 200", || {
        proxy
            .exchanges("/heartbeat")
            .iter()
            .filter(|e| e.status == Some(200) && e.delivered)
            .count()
            >= 2
    });
    assert!(
        proxy
            .log()
            .iter()
            .all(|e| e.status != Some(401) && e.status != Some(403)),
        "{:?}",
        proxy.log()
    );
    assert!(proxy
        .exchanges("/heartbeat")
        .iter()
        .all(|e| e.path == format!("/v1/hosts/{id}/heartbeat")));
    let (st, code) = status(&dev.state);
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["hub"]["state"], "connected", "{st}");
    assert_eq!(st["identity"]["host_id"], id.as_str());
    let log = agent.log();
    assert_eq!(log.matches("registered as host").count(), 1, "{log}");
    assert!(!log.contains("registration_refused"), "{log}");
    // The key did its job and is gone; it never reached a log, the status or another file.
    assert!(!dev.key_file().exists());
    let mut haystacks = vec![
        log,
        agent.stdout.lock().unwrap().join("\n"),
        st.to_string(),
        status_text(&dev.state),
        hub.log.lock().unwrap().clone(),
    ];
    for f in all_files(&dev.state) {
        haystacks.push(String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned());
    }
    for h in &haystacks {
        assert!(!h.contains("cairn_rk_"), "a registration key leaked: {h}");
    }
}

/// The hub's answers to the first `lost` registrations never reach the agent.
fn answers_lost(lost: u32) {
    let hub = RealHub::start();
    let (_, token) = hub.token("once", &["--max-uses", "1"]);
    let proxy = Proxy::start(&hub.endpoint(), &hub.ca_pem);
    proxy.drop_register_answers(lost);
    let dev = Device::behind(&proxy, &token, "edge-1");
    let mut agent = dev.spawn();
    assert_registered_once(&hub, &proxy, &dev, &agent);
    // Every attempt reached the hub and was answered 201; the agent got the last one only.
    let regs = proxy.exchanges("/register");
    assert_eq!(regs.len() as u32, lost + 1, "{regs:?}");
    assert!(regs.iter().all(|e| e.status == Some(201)), "{regs:?}");
    assert_eq!(
        regs.iter().map(|e| e.delivered).collect::<Vec<_>>(),
        (0..=lost).map(|i| i == lost).collect::<Vec<_>>()
    );
    assert_eq!(repeats(&hub), lost as usize);
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn a_registration_answer_lost_once_ends_registered_once() {
    answers_lost(1);
}

#[test]
fn a_registration_answer_lost_twice_ends_registered_once() {
    answers_lost(2);
}

#[test]
fn a_hub_killed_right_after_committing_a_registration_strands_nothing() {
    let mut hub = RealHub::start();
    let (_, token) = hub.token("once", &["--max-uses", "1"]);
    let proxy = Proxy::start(&hub.endpoint(), &hub.ca_pem);
    let (answered, release) = proxy.hold_next_register();
    let dev = Device::behind(&proxy, &token, "edge-1");
    let mut agent = dev.spawn();

    // The hub has committed the registration (its answer is in the proxy's hands): SIGKILL
    // it before the answer goes anywhere, then drop the answer.
    let status_code = answered.recv_timeout(LIMIT).unwrap();
    assert_eq!(status_code, 201);
    hub.kill();
    release.send(()).unwrap();
    // The agent keeps trying while the hub is down…
    wait_for(LIMIT, "a registration attempt against the dead hub", || {
        proxy
            .exchanges("/register")
            .iter()
            .any(|e| e.status.is_none())
    });
    assert!(dev.identity().is_none());
    assert!(dev.key_file().exists(), "the key is kept until registered");
    // …and once it is back, gets the identity the hub made before it died.
    hub.restart();
    assert_registered_once(&hub, &proxy, &dev, &agent);
    assert_eq!(repeats(&hub), 1);
    let regs = proxy.exchanges("/register");
    assert_eq!(regs.iter().filter(|e| e.delivered).count(), 1, "{regs:?}");
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn the_registration_key_survives_an_agent_restart_between_attempts() {
    let hub = RealHub::start();
    let (_, token) = hub.token("once", &["--max-uses", "1"]);
    let proxy = Proxy::start(&hub.endpoint(), &hub.ca_pem);
    let (answered, release) = proxy.hold_next_register();
    let dev = Device::behind(&proxy, &token, "edge-1");
    let mut agent = dev.spawn();
    assert_eq!(answered.recv_timeout(LIMIT).unwrap(), 201);
    // The device loses power while the answer is on its way (the proxy sees the connection
    // go, and the answer with it).
    agent.kill9();
    let _ = release.send(());
    let key = std::fs::read(dev.key_file()).unwrap();
    assert!(dev.identity().is_none());
    let mut agent = dev.spawn();
    assert_registered_once(&hub, &proxy, &dev, &agent);
    assert_eq!(repeats(&hub), 1);
    // The restarted agent sent the key it had stored, not a new one (or the hub would
    // have refused the name).
    assert_eq!(proxy.exchanges("/register").len(), 2);
    assert!(String::from_utf8_lossy(&key).contains("cairn_rk_"));
    assert!(agent.term(Duration::from_secs(15)).success());
}

#[test]
fn a_second_device_with_the_same_name_gets_409_and_no_identity() {
    let hub = RealHub::start();
    let (_, token) = hub.token("site", &["--max-uses", "5"]);
    let proxy = Proxy::start(&hub.endpoint(), &hub.ca_pem);
    // The first device's answers are lost for now: its host exists, its credential unused,
    // its registration key live on the hub — the moment a second device could try to grab it.
    proxy.drop_register_answers(u32::MAX);
    let first = Device::behind(&proxy, &token, "edge-1");
    let mut a = first.spawn();
    wait_for(
        LIMIT,
        "the first device's registration to reach the hub",
        || {
            proxy
                .exchanges("/register")
                .iter()
                .any(|e| e.status == Some(201))
        },
    );
    let made = hub.hosts();
    assert_eq!(made.len(), 1);
    let made_id = made[0]["id"].as_str().unwrap().to_string();

    // A second device (its own state, so its own key) with the same name and token, talking
    // to the hub directly: 409, no identity, nothing spent, and it does not retry in a loop.
    let second = Device::new(&hub.endpoint(), &hub.ca_pem, &token, "edge-1");
    let mut b = second.spawn();
    wait_for(LIMIT, "the second device to be refused", || {
        status(&second.state).0["hub"]["state"] == "registration_refused"
    });
    let (st, code) = status(&second.state);
    assert_eq!(code, 1, "{st}");
    assert!(
        st["hub"]["last_error"].as_str().unwrap().contains("409"),
        "{st}"
    );
    assert!(second.identity().is_none());
    assert_eq!(hub.hosts().len(), 1);
    assert_eq!(the_token(&hub)["uses"], 1);
    assert!(b.alive());

    // The first device's next attempt gets through: the host the hub made first.
    proxy.drop_register_answers(0);
    wait_for(LIMIT, "the first device's identity", || {
        first.identity().is_some()
    });
    assert_eq!(first.host_id(), made_id);
    wait_for(LIMIT, "a heartbeat of the first device", || {
        proxy
            .exchanges("/heartbeat")
            .iter()
            .any(|e| e.status == Some(200) && e.delivered)
    });
    assert_eq!(hub.hosts().len(), 1);
    assert_eq!(the_token(&hub)["uses"], 1);
    assert!(second.identity().is_none());
    assert_eq!(
        b.log().matches("registration: hub refused").count(),
        1,
        "{}",
        b.log()
    );
    assert!(a.term(Duration::from_secs(15)).success());
    assert!(b.term(Duration::from_secs(15)).success());
}
