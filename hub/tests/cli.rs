#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `cairn-hub` binary end to end: admin commands on the database while `serve` runs
//! over TLS in another process, JSON output for scripts, located profile errors, exit
//! codes, graceful stop on SIGTERM.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-hub");

fn hub(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("CAIRN_HUB_DB")
        .env_remove("CAIRN_HUB_ADMIN_TOKEN")
        .env_remove("CAIRN_HUB_DATA_DIR")
        .output()
        .unwrap()
}

fn ok_json(db: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = hub(db, &all);
    assert!(
        out.status.success(),
        "cairn-hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until_listening(port: u16, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("cairn-hub serve exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "cairn-hub serve did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_drive_a_running_hub() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let pki = common::tls::make(dir.path());
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, "cli-test-admin-token-42\n").unwrap();

    // A token, created before the server runs.
    let created = ok_json(
        &db,
        &[
            "token",
            "create",
            "--name",
            "lab",
            "--max-uses",
            "3",
            "--expires-in",
            "1d",
        ],
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "active");
    assert_eq!(created["max_uses"], 3);

    let port = free_port();
    let mut server = Server(
        Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--admin-token-file")
            .arg(&admin_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(port, &mut server).await;
    let client = common::tls::client(&pki.ca_pem);
    let base = format!("https://127.0.0.1:{port}");

    // A host registers with the token over TLS.
    let r = client
        .post(format!("{base}/v1/register"))
        .header("content-type", "application/json")
        .body(json!({"token": token, "name": "edge-1", "tags": {"site": "lab"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let host_id = reg["host_id"].as_str().unwrap().to_owned();
    let credential = reg["credential"].as_str().unwrap().to_owned();

    // The admin CLI sees it (same database, another process).
    let hosts = ok_json(&db, &["hosts"]);
    assert_eq!(hosts[0]["id"], host_id.as_str());
    assert_eq!(hosts[0]["status"], "registered");
    let table = hub(&db, &["hosts"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("edge-1") && text.contains("registered"),
        "{text}"
    );

    // A broken profile: exit 1, each problem as FILE:LINE:COL, nothing published.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: edge\nlayers:\n  - cni:\n      type: weave\n      version: '1'\n",
    )
    .unwrap();
    let out = hub(&db, &["profile", "upload", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:13:", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(ok_json(&db, &["profile", "list"])
        .as_array()
        .unwrap()
        .is_empty());

    // A good one, then a tag assignment; the host fetches it through the server.
    let good = dir.path().join("edge.yaml");
    std::fs::write(
        &good,
        "name: edge\nlayers:\n  - os:\n      user_data: |\n        stages: {}\n",
    )
    .unwrap();
    let up = ok_json(&db, &["profile", "upload", good.to_str().unwrap()]);
    assert_eq!(
        (
            up["name"].as_str(),
            up["version"].as_u64(),
            up["created"].as_bool()
        ),
        (Some("edge"), Some(1), Some(true))
    );
    let again = hub(&db, &["profile", "upload", good.to_str().unwrap()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));
    let assigned = ok_json(&db, &["assign", "--tag", "site=lab", "--profile", "edge"]);
    assert_eq!(assigned["target"]["tag"]["key"], "site");
    let r = client
        .get(format!("{base}/v1/hosts/{host_id}/profile"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown = ok_json(&db, &["profile", "show", "edge"]);
    assert_eq!(shown["version"], 1);

    // Tricky scalars in `values:` are typed the same by the hub (upload → what the agent
    // fetches) and by the agent reading the same file (`cairn-agent apply/validate FILE`):
    // both go through cairn_userdata::profile, and the test proves it end to end.
    let tricky = dir.path().join("tricky.yaml");
    let text = "name: edge\nlayers:\n  - kubernetes:\n      flavor: k3s\n      version: v1.31.4+k3s1\n      values:\n        hex: 0x10\n        float: 1.5\n        quoted: \"010\"\n        yes_word: yes\n        tilde: ~\n        big: 12345678901234567890\n        huge: 99999999999999999999\n        text: |\n          line one\n          line two\n";
    std::fs::write(&tricky, text).unwrap();
    ok_json(&db, &["profile", "upload", tricky.to_str().unwrap()]);
    let r = client
        .get(format!("{base}/v1/hosts/{host_id}/profile"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // As the daemon reads it (agent/src/daemon/worker.rs): the body is the profile.
    let served: cairn_proto::profile::Profile =
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let local = cairn_userdata::profile::read(&tricky.display().to_string(), text)
        .unwrap()
        .profile;
    let values = |p: &cairn_proto::profile::Profile| {
        p.layers
            .iter()
            .find_map(|l| match l {
                cairn_proto::profile::Layer::Kubernetes(k) => Some(k.values.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (hub_values, agent_values) = (values(&served), values(&local));
    assert_eq!(hub_values, agent_values);
    assert_eq!(
        serde_json::to_string(&hub_values).unwrap(),
        serde_json::to_string(&agent_values).unwrap(),
        "the same JSON, number forms included"
    );
    assert_eq!(hub_values["hex"], 16);
    assert_eq!(hub_values["float"], 1.5);
    assert_eq!(hub_values["quoted"], "010");
    assert_eq!(hub_values["yes_word"], "yes");
    assert!(hub_values["tilde"].is_null());
    assert_eq!(hub_values["big"].as_u64(), Some(12_345_678_901_234_567_890));
    assert_eq!(hub_values["huge"], "99999999999999999999");
    assert_eq!(hub_values["text"], "line one\nline two\n");

    // Refusals from the CLI: exit 1 with a message naming the problem.
    let out = hub(&db, &["assign", "--host", "nope", "--profile", "edge"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host `nope`"));
    let out = hub(&db, &["assign", "--profile", "edge"]);
    assert_eq!(out.status.code(), Some(2), "usage error");

    // Revoking the token stops registrations at the running server.
    ok_json(&db, &["token", "revoke", &token_id]);
    let r = client
        .post(format!("{base}/v1/register"))
        .header("content-type", "application/json")
        .body(json!({"token": token, "name": "edge-2"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let listed = ok_json(&db, &["token", "list"]);
    assert_eq!(listed[0]["state"], "revoked");
    assert_eq!(listed[0]["uses"], 1);
    // The secret itself is never printed again.
    let table = hub(&db, &["token", "list"]);
    assert!(!String::from_utf8_lossy(&table.stdout).contains(&token));

    // SIGTERM: the server stops cleanly.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn serve_refuses_plain_http_beyond_loopback_and_weak_admin_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let out = hub(&db, &["serve", "--insecure-http", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // The hub's own CA needs a data directory, which a PostgreSQL URL does not give.
    let out = Command::new(BIN)
        .args(["--db", "postgres://nobody@127.0.0.1:1/cairn", "serve"])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CAIRN_HUB_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
    let out = hub(&db, &["serve", "--tls-cert", "c.pem"]);
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "short").unwrap();
    let out = hub(
        &db,
        &[
            "serve",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--admin-token-file",
            weak.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    let out = hub(
        &db,
        &[
            "serve",
            "--tls-cert",
            "/nonexistent.crt",
            "--tls-key",
            "/nonexistent.key",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.crt"));
}

#[test]
fn help_teaches_and_unreachable_databases_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let out = hub(&db, &["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "serve",
        "token",
        "profile",
        "assign",
        "hosts",
        "Examples:",
        "Exit status",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    // Nothing listens on port 1 of loopback: could not reach a required service.
    let out = Command::new(BIN)
        .args(["--db", "postgres://nobody@127.0.0.1:1/cairn", "hosts"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}

#[test]
fn completions_and_man_pages_need_no_database() {
    let dir = tempfile::tempdir().unwrap();
    // A database that cannot be opened: these commands must not touch it.
    let db = dir.path().join("missing/dir/hub.db");
    let out = hub(&db, &["completions", "bash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    for s in ["serve", "token", "profile", "assign", "hosts"] {
        assert!(script.contains(s), "bash completion lacks `{s}`");
    }
    let man = dir.path().join("man");
    let out = hub(&db, &["manpages", man.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "cairn-hub.1",
        "cairn-hub-serve.1",
        "cairn-hub-token-create.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".SH SYNOPSIS"), "{page}");
    }
    assert!(!db.exists());
}

/// `cairn-hub serve` in the background with `args` after `serve`; returns once it listens.
async fn serve_with(db: &Path, port: u16, args: &[&str]) -> Server {
    let mut server = Server(
        Command::new(BIN)
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .env_remove("CAIRN_HUB_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(port, &mut server).await;
    server
}

/// SIGTERM, and wait for the exit.
async fn stop(mut server: Server) {
    let pid = server.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem)
        .unwrap()
        .to_vec()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

/// The DNS names and IP addresses of a PEM certificate, sorted.
fn sans(pem: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let der = der_of(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let mut out: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            GeneralName::IPAddress(b) => {
                std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// The certificate the server at 127.0.0.1:`port` presents in its TLS handshake, when the
/// client trusts only `ca_pem` and asks for `name`.
async fn presented(port: u16, ca_pem: &str, name: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der_of(
            ca_pem.as_bytes(),
        )))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_certificates_makes_its_own_ca_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // No --data-dir: the SQLite database's directory is the data directory.
    let db = dir.path().join("hub.db");
    let tls = dir.path().join("tls");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, "own-ca-test-admin-token\n").unwrap();
    let port = free_port();
    let first = [
        "--advertise",
        "hub.test",
        "--advertise",
        "10.1.2.3",
        "--admin-token-file",
        admin_file.to_str().unwrap(),
    ];
    let server = serve_with(&db, port, &first).await;

    // The CA and the server certificate, keys 0600, in DATA_DIR/tls.
    use std::os::unix::fs::PermissionsExt as _;
    for (f, mode) in [("ca.key", 0o600), ("hub.key", 0o600), ("ca.crt", 0o644)] {
        let m = std::fs::metadata(tls.join(f)).unwrap().permissions().mode();
        assert_eq!(m & 0o777, mode, "{f}");
    }
    let ca_pem = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    let ca_der = der_of(ca_pem.as_bytes());
    let hub_crt = std::fs::read(tls.join("hub.crt")).unwrap();
    assert_eq!(
        sans(&hub_crt),
        ["10.1.2.3", "127.0.0.1", "::1", "hub.test", "localhost"],
        "the advertised names, the listen address and loopback"
    );

    // A client trusting only that CA connects, by address and by advertised name, and is
    // shown that certificate; names the certificate is not for are refused.
    for name in ["127.0.0.1", "hub.test", "10.1.2.3", "localhost"] {
        let got = presented(port, &ca_pem, name).await.unwrap();
        assert_eq!(got, der_of(&hub_crt), "{name}");
    }
    let e = presented(port, &ca_pem, "other.test").await.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    let other_ca = common::tls::make(dir.path()).ca_pem;
    let e = presented(port, &other_ca, "127.0.0.1").await.unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );

    // GET /v1/ca serves it, to anyone, over HTTPS.
    let client = common::tls::client(&ca_pem);
    let r = client
        .get(format!("https://127.0.0.1:{port}/v1/ca"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(der_of(&r.bytes().await.unwrap()), ca_der);

    // Each new token comes with a join string: the first advertised name, the CA's pin.
    let created = ok_json(&db, &["token", "create", "--name", "own-ca"]);
    let join = cairn_proto::join::Join::parse(created["join"].as_str().unwrap()).unwrap();
    assert_eq!(join.ca_sha256, sha256(&ca_der));
    assert_eq!(join.token, created["token"].as_str().unwrap());
    assert_eq!(join.endpoint, format!("https://hub.test:{port}"));
    let human = hub(&db, &["token", "create"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("cairn1:") && text.contains("cairn.join"),
        "{text}"
    );
    // The admin API's answer has it too.
    let r = client
        .post(format!("https://127.0.0.1:{port}/v1/admin/tokens"))
        .bearer_auth("own-ca-test-admin-token")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let api_join = cairn_proto::join::Join::parse(body["join"].as_str().unwrap()).unwrap();
    assert_eq!(api_join.ca_sha256, join.ca_sha256);
    assert_eq!(api_join.token, body["token"].as_str().unwrap());
    stop(server).await;

    // Restarted as it was: the same CA, the same server certificate.
    let server = serve_with(&db, port, &first).await;
    assert_eq!(std::fs::read_to_string(tls.join("ca.crt")).unwrap(), ca_pem);
    assert_eq!(std::fs::read(tls.join("hub.crt")).unwrap(), hub_crt);
    presented(port, &ca_pem, "hub.test").await.unwrap();
    let again = ok_json(&db, &["token", "create"]);
    let pin = cairn_proto::join::Join::parse(again["join"].as_str().unwrap())
        .unwrap()
        .ca_sha256;
    assert_eq!(pin, join.ca_sha256, "same CA, same pin");
    stop(server).await;

    // Restarted with another name: a new server certificate from the same CA.
    let server = serve_with(&db, port, &["--advertise", "edge-hub.test:9443"]).await;
    assert_eq!(std::fs::read_to_string(tls.join("ca.crt")).unwrap(), ca_pem);
    let renamed = std::fs::read(tls.join("hub.crt")).unwrap();
    assert_ne!(renamed, hub_crt);
    assert_eq!(
        sans(&renamed),
        ["127.0.0.1", "::1", "edge-hub.test", "localhost"]
    );
    presented(port, &ca_pem, "edge-hub.test").await.unwrap();
    let moved = ok_json(&db, &["token", "create"]);
    let moved = cairn_proto::join::Join::parse(moved["join"].as_str().unwrap()).unwrap();
    assert_eq!(moved.ca_sha256, join.ca_sha256);
    assert_eq!(moved.endpoint, "https://edge-hub.test:9443");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bring_your_own_certificates_keep_working_and_the_pin_is_of_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let db = dir.path().join("hub.db");
    let pki = common::tls::make(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_der = der_of(pki.ca_pem.as_bytes());
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();

    // --ca names the CA devices pin.
    let port = free_port();
    let server = serve_with(
        &db,
        port,
        &[
            "--data-dir",
            data_arg,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--ca",
            ca_file.to_str().unwrap(),
        ],
    )
    .await;
    let client = common::tls::client(&pki.ca_pem);
    let r = client
        .get(format!("https://127.0.0.1:{port}/v1/ca"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(der_of(&r.bytes().await.unwrap()), ca_der);
    let created = ok_json(&db, &["--data-dir", data_arg, "token", "create"]);
    let join = cairn_proto::join::Join::parse(created["join"].as_str().unwrap()).unwrap();
    assert_eq!(join.ca_sha256, sha256(&ca_der));
    assert_eq!(join.endpoint, format!("https://127.0.0.1:{port}"));
    assert!(!data.join("tls").exists(), "no CA of its own is made");
    stop(server).await;

    // Without --ca, the last certificate of the chain: the root of a full chain.
    let chain = dir.path().join("fullchain.pem");
    let leaf = std::fs::read_to_string(&pki.cert).unwrap();
    std::fs::write(&chain, format!("{leaf}{}", pki.ca_pem)).unwrap();
    let server = serve_with(
        &db,
        port,
        &[
            "--data-dir",
            data_arg,
            "--tls-cert",
            chain.to_str().unwrap(),
            "--tls-key",
            key,
        ],
    )
    .await;
    let created = ok_json(&db, &["--data-dir", data_arg, "token", "create"]);
    let join = cairn_proto::join::Join::parse(created["join"].as_str().unwrap()).unwrap();
    assert_eq!(join.ca_sha256, sha256(&ca_der));
    stop(server).await;

    // A data directory the hub never served from: the token, no join string, a note why.
    let elsewhere = dir.path().join("elsewhere");
    let out = hub(
        &db,
        &[
            "--data-dir",
            elsewhere.to_str().unwrap(),
            "token",
            "create",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["token"].is_string() && v.get("join").is_none(), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no join string"));
}

/// The hub's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A profile whose os layer is `user_data`, as a `|` block.
fn profile_with_user_data(user_data: &str) -> String {
    let mut doc = String::from("name: bomb\nlayers:\n  - os:\n      user_data: |\n");
    for line in user_data.lines() {
        doc.push_str("        ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc
}

/// Under the hub's 1 MiB body limit, yet gigabytes once expanded: one alias of a 512 KiB
/// scalar repeated, and gzip+base64 file bodies that inflate to 48 MiB each.
fn bombs() -> Vec<(&'static str, String)> {
    use base64::Engine;
    use std::io::Write;
    let mut alias = String::from("#cloud-config\nbootcmd:\n  - &a \"");
    alias.push_str(&"x".repeat(512 * 1024));
    alias.push_str("\"\n");
    for _ in 0..4000 {
        alias.push_str("  - *a\n");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..48 {
        gz.write_all(&vec![0u8; 1024 * 1024]).unwrap();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let mut gzip = String::from("#cloud-config\nwrite_files:\n");
    for i in 0..10 {
        gzip.push_str(&format!(
            "  - path: /var/bomb/{i}\n    encoding: gz+b64\n    content: {b64}\n"
        ));
    }
    vec![
        ("alias", profile_with_user_data(&alias)),
        ("gzip", profile_with_user_data(&gzip)),
    ]
}

#[tokio::test]
async fn expanding_profiles_are_refused_at_upload_with_a_location_and_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, "bomb-test-admin-token-4242\n").unwrap();
    let port = free_port();
    let mut server = Server(
        Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .args([
                "serve",
                "--insecure-http",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--admin-token-file")
            .arg(&admin_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(port, &mut server).await;
    let client = reqwest::Client::new();
    for (what, doc) in bombs() {
        assert!(doc.len() < 1024 * 1024, "{what}: {} bytes", doc.len());
        // Over HTTP, against the running hub.
        let r = client
            .post(format!("http://127.0.0.1:{port}/v1/admin/profiles"))
            .bearer_auth("bomb-test-admin-token-4242")
            .body(doc.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{what}");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let first = &body["problems"][0];
        assert_eq!(first["path"], "layers[0].os.user_data", "{what}: {body}");
        let location = first["location"].as_str().unwrap();
        assert!(location.starts_with("upload:"), "{what}: {body}");
        let pid = server.0.id();
        let rss = peak_rss_kib(pid);
        assert!(rss < 256 * 1024, "{what}: hub peak RSS {rss} KiB");
        // And with the admin command, which reads the file itself.
        let file = dir.path().join(format!("{what}.yaml"));
        std::fs::write(&file, &doc).unwrap();
        let out = hub(&db, &["profile", "upload", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}:", file.display())),
            "{what}: {err}"
        );
        assert!(err.contains("nothing was published"), "{what}: {err}");
    }
    // The hub is still serving, and nothing was published.
    let r = client
        .get(format!("http://127.0.0.1:{port}/v1/admin/profiles"))
        .bearer_auth("bomb-test-admin-token-4242")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}
