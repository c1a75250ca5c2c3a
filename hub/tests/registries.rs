#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chart registries end to end through the `cairn-hub` binary: credentials go in through
//! files, come out only to a host whose profile references the registry, and appear in no
//! command output, admin API answer, log line or database file.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-hub");
const ADMIN: &str = "registry-test-admin-token";
const OCI_PW: &str = "CANARY-oci-pw-7f3a19";
const HELM_PW: &str = "CANARY-helm-pw-91be02";
const UNUSED_TOKEN: &str = "CANARY-unused-tok-55c1";
const API_PW: &str = "CANARY-api-pw-0d4e77";

fn hub(db: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CAIRN_HUB_DB")
        .env_remove("CAIRN_HUB_ADMIN_TOKEN")
        .env_remove("CAIRN_HUB_DATA_DIR")
        .env("CAIRN_HUB_LOG", "debug")
        .output()
        .unwrap()
}

/// Runs the command, asserts success and that no canary is in its output; stdout.
fn ok(db: &Path, data: &Path, args: &[&str]) -> String {
    let out = hub(db, data, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "cairn-hub {args:?}: {stderr}");
    no_canary(&format!("cairn-hub {args:?}"), &(stdout.clone() + &stderr));
    stdout
}

fn no_canary(what: &str, text: &str) {
    for c in [OCI_PW, HELM_PW, UNUSED_TOKEN, API_PW] {
        assert!(!text.contains(c), "{what} shows the secret {c}:\n{text}");
    }
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

const PROFILE_USES: &str = "name: uses-registries
layers:
  - kubernetes:
      flavor: k3s
      version: v1.31.4+k3s1
  - cni:
      type: flannel
      version: 0.25.7
  - addons:
      charts:
        - name: web
          chart: hello
          version: 0.1.0
          registry: corp-helm
        - name: api
          chart: charts/api
          version: 1.2.3
          repo: oci://oci.example:5000/charts
";

const PROFILE_PLAIN: &str = "name: no-registries
layers:
  - kubernetes:
      flavor: k3s
      version: v1.31.4+k3s1
  - cni:
      type: flannel
      version: 0.25.7
  - addons:
      charts:
        - name: web
          chart: hello
          version: 0.1.0
          repo: https://open.example/charts
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_reach_only_hosts_that_use_them_and_leak_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("hub.db");
    let pki = common::tls::make(dir.path());
    let admin_file = dir.path().join("admin-token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap();
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (oci_pw, helm_pw, unused_tok) = (
        secret("oci-pw", OCI_PW),
        secret("helm-pw", HELM_PW),
        secret("unused-tok", UNUSED_TOKEN),
    );

    // Registries through the CLI; secrets only from files.
    let created: Value = serde_json::from_str(&ok(
        &db,
        &data,
        &[
            "registry",
            "create",
            "corp-oci",
            "--kind",
            "oci",
            "--url",
            "https://oci.example:5000",
            "--username",
            "robot",
            "--password-file",
            &oci_pw,
            "--output",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(created["has_credentials"], true);
    ok(
        &db,
        &data,
        &[
            "registry",
            "create",
            "corp-helm",
            "--kind",
            "helm",
            "--url",
            "https://charts.example/stable",
            "--username",
            "reader",
            "--password-file",
            &helm_pw,
        ],
    );
    ok(
        &db,
        &data,
        &[
            "registry",
            "create",
            "unused",
            "--kind",
            "oci",
            "--url",
            "https://unused.example",
            "--token-file",
            &unused_tok,
            "--project",
            "default",
        ],
    );
    // The key file: made on first use, 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(data.join("registry.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A token in the URL is refused, and the refusal does not echo it.
    let out = hub(
        &db,
        &data,
        &[
            "registry",
            "create",
            "bad",
            "--kind",
            "helm",
            "--url",
            &format!("https://u:{API_PW}@h.example/"),
        ],
    );
    assert!(!out.status.success());
    no_canary("a refused create", &String::from_utf8_lossy(&out.stderr));

    let listed: Value =
        serde_json::from_str(&ok(&db, &data, &["registry", "list", "--output", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["has_credentials"] == true));
    ok(&db, &data, &["registry", "list"]);

    for (file, text) in [("uses.yaml", PROFILE_USES), ("plain.yaml", PROFILE_PLAIN)] {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        ok(&db, &data, &["profile", "upload", p.to_str().unwrap()]);
    }
    let token: Value =
        serde_json::from_str(&ok(&db, &data, &["token", "create", "--output", "json"])).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    ok(
        &db,
        &data,
        &["assign", "--tag", "site=a", "--profile", "uses-registries"],
    );
    ok(
        &db,
        &data,
        &["assign", "--tag", "site=b", "--profile", "no-registries"],
    );

    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = Server(
        Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--admin-token-file")
            .arg(&admin_file)
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .env_remove("CAIRN_HUB_DATA_DIR")
            .env("CAIRN_HUB_LOG", "trace")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(server.0.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "serve did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = common::tls::client(&pki.ca_pem);
    let base = format!("https://127.0.0.1:{port}");
    let mut hosts = Vec::new();
    for (name, site) in [("edge-a", "a"), ("edge-b", "b"), ("edge-none", "none")] {
        let r = client
            .post(format!("{base}/v1/register"))
            .header("content-type", "application/json")
            .body(json!({"token": token, "name": name, "tags": {"site": site}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let reg: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        hosts.push((
            reg["host_id"].as_str().unwrap().to_owned(),
            reg["credential"].as_str().unwrap().to_owned(),
        ));
    }
    let registries_of = |i: usize| {
        let (id, cred) = hosts[i].clone();
        let client = client.clone();
        let base = base.clone();
        async move {
            let r = client
                .get(format!("{base}/v1/hosts/{id}/registries"))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["cache-control"], "no-store");
            r.text().await.unwrap()
        }
    };
    // Host a's profile names corp-helm and an oci:// repo on corp-oci's host: both, with
    // their credentials; never the unused registry.
    let a = registries_of(0).await;
    let a_json: Value = serde_json::from_str(&a).unwrap();
    let names: Vec<&str> = a_json["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["corp-helm", "corp-oci"], "{a}");
    assert!(a.contains(OCI_PW) && a.contains(HELM_PW), "{a}");
    assert!(!a.contains(UNUSED_TOKEN) && !a.contains("unused"), "{a}");
    // Host b's profile uses no registry; host c has no profile at all.
    for i in [1, 2] {
        let b = registries_of(i).await;
        assert_eq!(
            serde_json::from_str::<Value>(&b).unwrap(),
            json!({"registries": []})
        );
    }
    // Another host's credential does not open host a's registries.
    let r = client
        .get(format!("{base}/v1/hosts/{}/registries", hosts[0].0))
        .bearer_auth(&hosts[1].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The admin API: create (secret in the body) and list show no secret.
    let r = client
        .post(format!("{base}/v1/admin/registries"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(
            json!({"name": "api-made", "kind": "helm", "url": "https://c.example",
                "username": "u", "password": API_PW, "project": "default"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body = r.text().await.unwrap();
    no_canary("POST /v1/admin/registries", &body);
    assert!(body.contains("\"has_credentials\":true"), "{body}");
    let r = client
        .get(format!("{base}/v1/admin/registries"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    no_canary("GET /v1/admin/registries", &body);
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    for path in ["hosts", &format!("hosts/{}/events", hosts[0].0), "profiles"] {
        let body = client
            .get(format!("{base}/v1/admin/{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        no_canary(path, &body);
    }
    let r = client
        .delete(format!(
            "{base}/v1/admin/registries/api-made?project=default"
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let pid = server.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("registries served"),
        "trace logging was on: {log}"
    );
    no_canary("the hub's log", &log);
    // No database file holds a secret in clear (the WAL and shared memory included).
    let mut scanned = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("hub.db") {
            let bytes = std::fs::read(&path).unwrap();
            scanned += bytes.len();
            for c in [OCI_PW, HELM_PW, UNUSED_TOKEN, API_PW] {
                assert!(
                    !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
                    "{name} holds {c} in clear"
                );
            }
        }
    }
    assert!(scanned > 0);
    // The key is what opens them: the sealed column is there.
    let out = hub(&db, &data, &["registry", "list", "--output", "json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("corp-oci"));
}

const INFRA: &str = "name: infra
layers:
  - kubernetes:
      flavor: k3s
      version: v1.31.4+k3s1
  - cni:
      type: flannel
      version: 0.25.7
  - addons:
      manifests:
        - name: ns
          content: 'kind: Namespace'
";

const MONITORING: &str = "name: monitoring
layers:
  - addons:
      charts:
        - name: prom
          chart: prometheus
          version: 25.0.0
          registry: corp-helm
";

const LOGGING: &str = "name: logging
layers:
  - addons:
      charts:
        - name: loki
          chart: loki
          version: 6.0.0
          repo: https://open.example/charts
";

const CLASH: &str = "name: clash
layers:
  - addons:
      charts:
        - name: loki
          chart: other
          version: 1.0.0
          repo: https://open.example/charts
";

/// Add-on profiles attached with `assign --addons` are served in order inside the host's
/// profile (with an ETag over the whole), their registries with them; a profile that is no
/// add-on profile, or one that would install a release twice, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_profiles_are_served_in_order_with_the_registries_they_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("hub.db");
    let pki = common::tls::make(dir.path());
    let pw = dir.path().join("pw");
    std::fs::write(&pw, HELM_PW).unwrap();
    ok(
        &db,
        &data,
        &[
            "registry",
            "create",
            "corp-helm",
            "--kind",
            "helm",
            "--url",
            "https://charts.example/stable",
            "--username",
            "reader",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    for (file, text) in [
        ("i.yaml", INFRA),
        ("m.yaml", MONITORING),
        ("l.yaml", LOGGING),
        ("c.yaml", CLASH),
    ] {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        ok(&db, &data, &["profile", "upload", p.to_str().unwrap()]);
    }
    let token: Value =
        serde_json::from_str(&ok(&db, &data, &["token", "create", "--output", "json"])).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    ok(
        &db,
        &data,
        &["assign", "--tag", "site=a", "--profile", "infra"],
    );

    let port = free_port();
    let mut server = Server(
        Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .env_remove("CAIRN_HUB_DATA_DIR")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(server.0.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "serve did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = common::tls::client(&pki.ca_pem);
    let base = format!("https://127.0.0.1:{port}");
    let r = client
        .post(format!("{base}/v1/register"))
        .header("content-type", "application/json")
        .body(json!({"token": token, "name": "edge-a", "tags": {"site": "a"}}).to_string())
        .send()
        .await
        .unwrap();
    let reg: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let (id, cred) = (
        reg["host_id"].as_str().unwrap().to_owned(),
        reg["credential"].as_str().unwrap().to_owned(),
    );
    let get = |path: &'static str| {
        let (client, base, id, cred) = (client.clone(), base.clone(), id.clone(), cred.clone());
        async move {
            let r = client
                .get(format!("{base}/v1/hosts/{id}/{path}"))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let etag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                etag,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (plain_etag, plain) = get("profile").await;
    assert!(plain.get("addon_profiles").is_none(), "{plain}");
    assert_eq!(get("registries").await.1, json!({"registries": []}));

    // Attach two add-on profiles, in order.
    ok(
        &db,
        &data,
        &[
            "assign",
            "--tag",
            "site=a",
            "--profile",
            "infra",
            "--addons",
            "logging@1",
            "--addons",
            "monitoring",
        ],
    );
    let (etag, served) = get("profile").await;
    assert_ne!(etag, plain_etag, "attaching changes what the host fetches");
    let names: Vec<(&str, u64)> = served["addon_profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(names, [("logging", 1), ("monitoring", 1)]);
    assert_eq!(
        served["addon_profiles"][1]["addons"]["charts"][0]["registry"],
        "corp-helm"
    );
    let regs = get("registries").await.1;
    assert_eq!(regs["registries"][0]["name"], "corp-helm", "{regs}");
    assert_eq!(regs["registries"][0]["password"], HELM_PW);

    // Refused: an infrastructure profile as an add-on; a release installed twice.
    let out = hub(
        &db,
        &data,
        &[
            "assign",
            "--tag",
            "site=a",
            "--profile",
            "infra",
            "--addons",
            "infra",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an add-on profile"));
    let out = hub(
        &db,
        &data,
        &[
            "assign",
            "--tag",
            "site=a",
            "--profile",
            "infra",
            "--addons",
            "logging",
            "--addons",
            "clash",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loki") && err.contains("logging") && err.contains("clash"),
        "{err}"
    );
    // A refused attachment changes nothing: the host is served what it was.
    assert_eq!(get("profile").await.0, etag);
    // Detaching: the plain profile again.
    ok(
        &db,
        &data,
        &["assign", "--tag", "site=a", "--profile", "infra"],
    );
    assert_eq!(get("profile").await.0, plain_etag);
    let _ = server.0.kill();
}
