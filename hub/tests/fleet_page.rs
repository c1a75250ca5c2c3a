#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fleet page, end to end: a hub over real TLS on 127.0.0.1 (test CA made with rcgen),
//! hosts registered and reporting over the `/v1` API, and the page in Debian's headless
//! Chromium, driven over the DevTools protocol (a WebSocket, `tungstenite`). The page is
//! opened once; every later assertion reads the same, never reloaded, document.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`, or scripts/install-test-deps.sh):
//! without it the Chromium test fails and says so. It writes a screenshot to
//! `target/fleet-page.png`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cairn_hub::http::{router, ApiConfig};
use cairn_hub::server;
use cairn_hub::SqlStore;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "fleet-admin-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";

// ---------------------------------------------------------------------------------------
// A hub on its own runtime, driven with blocking calls from the test thread.

struct Hub {
    rt: tokio::runtime::Runtime,
    base: String,
    ca_pem: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn start() -> Hub {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = common::tls::make(dir.path());
        let db = dir.path().join("hub.db");
        let (listener, store) = rt.block_on(async {
            let store = SqlStore::open(db.to_str().unwrap()).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (listener, store)
        });
        let addr: SocketAddr = listener.local_addr().unwrap();
        let tls = server::tls_config(&pki.cert, &pki.key).unwrap();
        let app = router(
            store,
            ApiConfig {
                admin_token: Some(ADMIN.into()),
                heartbeat_interval_secs: 30,
                ..ApiConfig::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            server::serve(listener, Some(tls), app, 64, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let client = {
            let _guard = rt.enter();
            common::tls::client(&pki.ca_pem)
        };
        Hub {
            rt,
            base: format!("https://127.0.0.1:{}", addr.port()),
            ca_pem: pki.ca_pem.clone(),
            client,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request; answer status, headers and body.
    fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        self.rt.block_on(async {
            let r = req.send().await.unwrap();
            let status = r.status();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        })
    }

    fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let (status, _, body) = self.send(req);
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
        };
        (status, v)
    }

    fn admin_post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.json(
            self.client
                .post(self.url(path))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body.to_string()),
        );
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    fn upload_profile(&self, yaml: &str) {
        let (status, v) = self.json(
            self.client
                .post(self.url("/v1/admin/profiles"))
                .bearer_auth(ADMIN)
                .body(yaml.to_owned()),
        );
        assert!(status.is_success(), "upload: {status} {v}");
    }

    fn token(&self) -> String {
        let v = self.admin_post("/v1/admin/tokens", json!({"name": "fleet-test"}));
        v["token"].as_str().unwrap().to_owned()
    }

    /// Register a host; answer (host id, credential).
    fn register(&self, token: &str, name: &str, tags: Value) -> (String, String) {
        let (status, v) = self.json(
            self.client
                .post(self.url("/v1/register"))
                .header("content-type", "application/json")
                .body(
                    json!({"token": token, "name": name, "tags": tags,
                           "inventory": {"arch": "amd64", "agent_version": "0.1.0"}})
                    .to_string(),
                ),
        );
        assert_eq!(status, StatusCode::CREATED, "{v}");
        (
            v["host_id"].as_str().unwrap().to_owned(),
            v["credential"].as_str().unwrap().to_owned(),
        )
    }

    fn events(&self, host: &(String, String), events: Vec<Value>) {
        let (status, v) = self.json(
            self.client
                .post(self.url(&format!("/v1/hosts/{}/events", host.0)))
                .bearer_auth(&host.1)
                .header("content-type", "application/json")
                .body(json!({ "events": events }).to_string()),
        );
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    fn heartbeat(&self, host: &(String, String)) {
        let (status, v) = self.json(
            self.client
                .post(self.url(&format!("/v1/hosts/{}/heartbeat", host.0)))
                .bearer_auth(&host.1),
        );
        assert_eq!(status, StatusCode::OK, "{v}");
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), t).await });
        }
    }
}

fn ev(seq: u64, kind: &str, stage: &str, step: &str, message: &str) -> Value {
    json!({"seq": seq, "time": "2026-11-24T12:00:00Z", "host": "ignored", "kind": kind,
           "stage": stage, "step": step, "source": format!("user-data.yaml:{seq}"),
           "message": message})
}

const PROFILE: &str = "\
name: edge-k3s
description: k3s single node
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
  - cni:
      type: flannel
      version: 0.25.6
";

// ---------------------------------------------------------------------------------------
// Headless Chromium over the DevTools protocol.

/// The Chromium process (in its own process group) and its profile directory.
struct Browser {
    child: Child,
    port: u16,
    /// Path of the browser-level DevTools WebSocket.
    browser_path: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the fleet page test needs Debian's Chromium. Install it with \
             `apt-get install chromium` (scripts/install-test-deps.sh does)"
        );
        let profile = tempfile::Builder::new()
            .prefix("cairn-chromium-")
            .tempdir()
            .unwrap();
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--disable-default-apps",
                    "--mute-audio",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    "--window-size=1440,900",
                    // The hub's certificate comes from a throw-away test CA.
                    "--ignore-certificate-errors",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"))
        };
        let mut browser = Browser {
            child,
            port: 0,
            browser_path: String::new(),
            _profile: profile,
        };
        // Chromium writes the port it picked to DevToolsActivePort in the profile directory.
        let active = browser._profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (
                    lines.next().and_then(|l| l.trim().parse().ok()),
                    lines.next(),
                ) {
                    browser.port = port;
                    browser.browser_path = path.trim().to_owned();
                    break;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("{CHROMIUM} exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMIUM} did not open its DevTools port within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        browser
    }

    /// The WebSocket URL of the first page (tab).
    fn page_ws(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = http_get_local(self.port, "/json/list");
            if let Ok(targets) = serde_json::from_str::<Value>(&list) {
                if let Some(url) = targets.as_array().and_then(|ts| {
                    ts.iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                }) {
                    return url.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "Chromium shows no page target: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask the browser to close (it ends its helpers itself), then wait a little.
        let url = format!("ws://127.0.0.1:{}{}", self.port, self.browser_path);
        if let Ok((mut ws, _)) = tungstenite::connect(url.as_str()) {
            let close = json!({"id": 1, "method": "Browser.close"}).to_string();
            let _ = ws.send(tungstenite::Message::text(close));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still there: the browser and its helpers share the process group started above.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET to Chromium's DevTools endpoint on 127.0.0.1.
fn http_get_local(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// One DevTools session on a page.
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("DevTools {url}: {e}"));
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Cdp { ws, next_id: 0 }
    }

    /// Call a DevTools method and return its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        loop {
            let m = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("waiting for the answer to {method}: {e}"));
            let tungstenite::Message::Text(text) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page and return its JSON value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating `{expr}` threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it is `true`; on timeout, fail showing `explain`'s value.
    fn wait_for(&mut self, what: &str, expr: &str, explain: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the page did not show {what} within 20 s; it shows: {}",
                    self.eval(explain)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A row's state as one JSON object, for assertions and failure messages.
fn row_js(name: &str) -> String {
    format!(
        r#"(() => {{
  const tr = document.querySelector('tr[data-host-name="{name}"]');
  if (!tr) return null;
  const q = (s) => tr.querySelector(s);
  return {{
    status: tr.dataset.status,
    text: tr.innerText,
    progress: Number(q('[role=progressbar]').getAttribute('aria-valuenow')),
    segs: [...tr.querySelectorAll('.seg')].map((s) => s.className.replace('seg ', '')),
    assigned: q('.c-assigned').textContent,
    applied: q('.c-applied').textContent,
    tags: [...tr.querySelectorAll('.tag')].map((t) => t.textContent),
    where: q('.where').textContent,
    failVisible: !q('.fail').hidden,
    failStep: q('.fail-step').textContent,
    failMsg: q('.fail-msg').textContent,
    elementsInCells: tr.querySelectorAll('td b, td img, td script').length,
  }};
}})()"#
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A PNG with a signature, an IHDR of non-zero size and an IEND.
fn check_png(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 5000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(w > 0 && h > 0, "PNG of {w}x{h}");
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        b"IEND",
        "no IEND chunk"
    );
    (w, h)
}

#[test]
fn fleet_page_in_chromium_shows_hosts_move_to_applied_live() {
    let hub = Hub::start();
    hub.upload_profile(PROFILE);
    hub.admin_post(
        "/v1/admin/assignments",
        json!({"tag": "site=lab", "profile": "edge-k3s"}),
    );
    let token = hub.token();
    // A tag value is untrusted text: it must show as text, not as markup.
    let a = hub.register(
        &token,
        "edge-a",
        json!({"site": "lab", "note": "<b>bold</b>"}),
    );
    let b = hub.register(&token, "edge-b", json!({"site": "lab"}));
    hub.events(&a, vec![ev(1, "stage_started", "rootfs", "", "")]);
    // A third host mid-apply, so the screenshot shows every state.
    let c = hub.register(&token, "edge-c", json!({"site": "lab", "rack": "r2"}));
    hub.events(
        &c,
        vec![
            ev(1, "stage_started", "cni", "", ""),
            ev(2, "step_changed", "cni", "flannel", "applied flannel"),
        ],
    );

    let browser = Browser::launch();
    let mut page = Cdp::connect(&browser.page_ws());
    page.call("Page.enable", json!({}));
    page.call("Runtime.enable", json!({}));
    // Log in once with the token in the URL: the hub sets a cookie and redirects to /fleet.
    page.call(
        "Page.navigate",
        json!({"url": hub.url(&format!("/fleet?token={ADMIN}"))}),
    );
    let a_row = row_js("edge-a");
    let b_row = row_js("edge-b");
    page.wait_for(
        "edge-a as applying",
        &format!("(() => {{ const r = {a_row}; return !!r && r.status === 'applying'; }})()"),
        "document.body.innerText",
    );
    assert_eq!(page.eval("location.pathname + location.search"), "/fleet");
    assert_eq!(
        page.eval("document.cookie.includes('cairn_fleet')"),
        false,
        "the session cookie must be HttpOnly"
    );
    let r = page.eval(&a_row);
    assert!(
        r["text"].as_str().unwrap().contains("default/default"),
        "{r}"
    );
    assert_eq!(r["assigned"], "edge-k3s v1", "{r}");
    assert_eq!(r["applied"], "—", "{r}");
    assert_eq!(r["progress"], 12, "{r}");
    assert_eq!(
        r["segs"],
        json!(["active", "pending", "pending", "pending"]),
        "{r}"
    );
    assert_eq!(r["tags"], json!(["note=<b>bold</b>", "site=lab"]), "{r}");
    assert_eq!(
        r["elementsInCells"], 0,
        "markup from a tag was rendered: {r}"
    );
    let r = page.eval(&b_row);
    assert_eq!(r["status"], "registered", "{r}");
    // Marks this document: if the page reloaded, the mark would be gone.
    page.eval("window.__sameDocument = 'cairn'; true");
    let updates_before = page.eval("Number(document.body.dataset.updates)");

    // Progress through the phases, seen live.
    hub.events(
        &a,
        vec![
            ev(2, "step_changed", "rootfs", "layout", "wrote /etc/fstab"),
            ev(3, "stage_finished", "rootfs", "", ""),
            ev(4, "stage_started", "kubernetes", "", ""),
            ev(
                5,
                "step_changed",
                "kubernetes",
                "install-k3s",
                "installed k3s",
            ),
        ],
    );
    page.wait_for(
        "edge-a in the Kubernetes phase",
        &format!("(() => {{ const r = {a_row}; return r.progress === 37; }})()"),
        &a_row,
    );
    let r = page.eval(&a_row);
    assert_eq!(
        r["segs"],
        json!(["done", "active", "pending", "pending"]),
        "{r}"
    );
    assert!(
        r["where"].as_str().unwrap().contains("step install-k3s"),
        "{r}"
    );
    let mut applied = ev(10, "profile_applied", "", "", "profile applied");
    applied["data"] = json!({"profile": "edge-k3s", "version": 1});
    hub.events(
        &a,
        vec![
            ev(6, "stage_started", "cni", "", ""),
            ev(7, "step_changed", "cni", "flannel", "applied flannel"),
            ev(8, "stage_started", "addons", "", ""),
            ev(9, "stage_finished", "addons", "", ""),
            applied,
        ],
    );
    page.wait_for(
        "edge-a as applied",
        &format!("(() => {{ const r = {a_row}; return r.status === 'applied'; }})()"),
        &a_row,
    );
    let r = page.eval(&a_row);
    assert_eq!(r["progress"], 100, "{r}");
    assert_eq!(r["segs"], json!(["done", "done", "done", "done"]), "{r}");
    assert_eq!(r["applied"], "edge-k3s v1", "{r}");
    assert!(r["text"].as_str().unwrap().contains("applied"), "{r}");
    assert_eq!(r["failVisible"], false, "{r}");

    // A failure on the second host: its failing step and message, as text.
    let hostile = "<img src=x onerror=\"window.__pwned=1\"> k3s install: exit status 1";
    hub.events(
        &b,
        vec![
            ev(1, "stage_started", "kubernetes", "", ""),
            ev(2, "step_failed", "kubernetes", "install-k3s", hostile),
        ],
    );
    page.wait_for(
        "edge-b as failed",
        &format!("(() => {{ const r = {b_row}; return r.status === 'failed'; }})()"),
        &b_row,
    );
    let r = page.eval(&b_row);
    assert_eq!(r["failVisible"], true, "{r}");
    assert_eq!(
        r["failStep"], "failed at stage kubernetes · step install-k3s",
        "{r}"
    );
    assert_eq!(
        r["failMsg"],
        format!("stage kubernetes, step install-k3s (user-data.yaml:2): {hostile}"),
        "{r}"
    );
    assert_eq!(
        r["segs"],
        json!(["done", "failed", "pending", "pending"]),
        "{r}"
    );
    assert_eq!(
        r["elementsInCells"], 0,
        "markup from a message was rendered: {r}"
    );
    assert_eq!(page.eval("document.querySelectorAll('img').length"), 0);
    assert_eq!(page.eval("window.__pwned === undefined"), true);

    // A heartbeat moves "last seen" without a reload too.
    hub.heartbeat(&b);

    // The same document all along, updated by the live feed.
    assert_eq!(page.eval("window.__sameDocument"), "cairn");
    let updates_after = page.eval("Number(document.body.dataset.updates)");
    assert!(
        updates_after.as_u64().unwrap() > updates_before.as_u64().unwrap(),
        "{updates_before} → {updates_after}"
    );
    assert_eq!(
        page.eval("document.querySelector('[data-count=applied] b').textContent"),
        "1"
    );
    assert_eq!(
        page.eval("document.querySelector('[data-count=failed] b').textContent"),
        "1"
    );
    assert_eq!(
        page.eval("document.getElementById('conn').textContent"),
        "live"
    );

    let shot = page.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": false}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let (w, h) = check_png(&png);
    assert!(w >= 800 && h >= 400, "screenshot of {w}x{h}");
    let out = target_dir().join("fleet-page.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &png).unwrap();
    check_png(&std::fs::read(&out).unwrap());
    eprintln!(
        "screenshot: {} ({w}x{h}, {} bytes)",
        out.display(),
        png.len()
    );
    drop(page);
    drop(browser);
    drop(hub);
}

// ---------------------------------------------------------------------------------------
// The same rules without a browser.

#[test]
fn fleet_page_and_feed_require_the_admin_token() {
    let hub = Hub::start();
    // A client without a cookie store that shows redirects as they are.
    let no_redirect = {
        let _guard = hub.rt.enter();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(hub.ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    // No session: the login form (and nothing about the fleet).
    let (status, headers, body) = hub.send(no_redirect.get(hub.url("/fleet")));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("<form method=\"post\" action=\"/fleet/login\""),
        "{body}"
    );
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let (status, _, body) = hub.send(no_redirect.get(hub.url("/")));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A wrong token: refused, no cookie.
    let (status, headers, body) =
        hub.send(no_redirect.get(hub.url("/fleet?token=wrong-token-0123456789")));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong admin token"), "{body}");
    assert!(headers.get("set-cookie").is_none());
    // The right token: a session cookie (HttpOnly, Secure over TLS, SameSite=Strict) and a
    // redirect that takes the token out of the address bar.
    let (status, headers, _) = hub.send(no_redirect.get(hub.url(&format!("/fleet?token={ADMIN}"))));
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/fleet");
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in [
        "cairn_fleet=cairn_fs_",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!set_cookie.contains(ADMIN));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // With the cookie: the page, the JSON view and the stream.
    let (status, headers, body) =
        hub.send(no_redirect.get(hub.url("/fleet")).header("cookie", &cookie));
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<script src=\"/fleet/fleet.js\""), "{body}");
    assert!(!body.contains("<script>"), "no inline script");
    assert_eq!(headers["cache-control"], "no-store");
    let (status, v) = hub.json(
        no_redirect
            .get(hub.url("/v1/admin/fleet"))
            .header("cookie", &cookie),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["phases"], json!(["OS", "Kubernetes", "CNI", "Add-ons"]));
    let (status, v) = hub.json(
        no_redirect
            .get(hub.url("/v1/admin/fleet"))
            .bearer_auth(ADMIN),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = hub.json(no_redirect.get(hub.url("/v1/admin/fleet")));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "unauthenticated");
    let (status, v) = hub.json(no_redirect.get(hub.url("/v1/admin/fleet/stream")));
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    // The cookie opens the read-only views only, never the rest of the admin API.
    let (status, v) = hub.json(
        no_redirect
            .post(hub.url("/v1/admin/tokens"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body("{}"),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = hub.json(
        no_redirect
            .get(hub.url("/v1/admin/hosts"))
            .header("cookie", &cookie),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The login form works too.
    let (status, headers, _) = hub.send(
        no_redirect
            .post(hub.url("/fleet/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN}")),
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("cairn_fleet=cairn_fs_"));
    // Logging out ends the session: the old cookie stops working.
    let (status, headers, _) = hub.send(
        no_redirect
            .post(hub.url("/fleet/logout"))
            .header("cookie", &cookie),
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = hub.json(
        no_redirect
            .get(hub.url("/v1/admin/fleet"))
            .header("cookie", &cookie),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The script and style are served from the binary, and the script never writes HTML.
    let (status, headers, js) = hub.send(no_redirect.get(hub.url("/fleet/fleet.js")));
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "fleet.js uses {sink}");
    }
    let (status, headers, _) = hub.send(no_redirect.get(hub.url("/fleet/fleet.css")));
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

/// Read server-sent events from a streaming response until one of `kind` arrives.
fn next_event(hub: &Hub, resp: &mut reqwest::Response, buf: &mut String, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if event == kind {
                return serde_json::from_str(&data).unwrap();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no `{kind}` event within 10 s; have: {buf:?}"
        );
        let chunk = hub
            .rt
            .block_on(async { tokio::time::timeout(left, resp.chunk()).await });
        match chunk {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) => panic!("the stream ended while waiting for `{kind}`"),
            Ok(Err(e)) => panic!("reading the stream: {e}"),
            Err(_) => panic!("no `{kind}` event within 10 s; have: {buf:?}"),
        }
    }
}

#[test]
fn fleet_stream_sends_a_snapshot_then_each_change() {
    let hub = Hub::start();
    let token = hub.token();
    let first = hub.register(&token, "first", json!({}));
    let mut resp = hub.rt.block_on(async {
        hub.client
            .get(hub.url("/v1/admin/fleet/stream"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let snap = next_event(&hub, &mut resp, &mut buf, "snapshot");
    assert_eq!(snap["heartbeat_interval_secs"], 30);
    assert_eq!(snap["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(snap["hosts"][0]["name"], "first");
    assert_eq!(snap["hosts"][0]["status"], "registered");
    assert!(snap["now"].as_i64().unwrap() > 1_700_000_000);

    // A new host, then its events: `hosts` messages with the changed hosts only.
    let second = hub.register(&token, "second", json!({"rack": "r1"}));
    let msg = next_event(&hub, &mut resp, &mut buf, "hosts");
    assert_eq!(msg["hosts"][0]["id"], second.0.as_str());
    hub.events(&second, vec![ev(1, "stage_started", "cni", "", "")]);
    let msg = next_event(&hub, &mut resp, &mut buf, "hosts");
    let h = &msg["hosts"][0];
    assert_eq!(
        (h["name"].as_str(), h["status"].as_str()),
        (Some("second"), Some("applying"))
    );
    assert_eq!(h["progress"]["phase"], 2);
    assert_eq!(
        h["progress"]["phases"],
        json!(["done", "done", "active", "pending"])
    );

    // A plain heartbeat: only `last_seen`.
    hub.heartbeat(&first);
    let msg = next_event(&hub, &mut resp, &mut buf, "seen");
    assert!(msg["seen"][first.0.as_str()].as_i64().is_some(), "{msg}");

    // An assignment can change many hosts: a fresh snapshot, with the profile resolved.
    hub.upload_profile(PROFILE);
    let msg = next_event(&hub, &mut resp, &mut buf, "snapshot");
    assert_eq!(msg["hosts"].as_array().unwrap().len(), 2);
    hub.admin_post(
        "/v1/admin/assignments",
        json!({"host": "second", "profile": "edge-k3s"}),
    );
    let msg = next_event(&hub, &mut resp, &mut buf, "snapshot");
    let second_row = msg["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "second")
        .unwrap()
        .clone();
    assert_eq!(second_row["assigned_profile"], "edge-k3s");
    assert_eq!(second_row["assigned_version"], 1);

    // A removed host.
    let (status, _) = hub.json(
        hub.client
            .delete(hub.url(&format!("/v1/admin/hosts/{}", first.0)))
            .bearer_auth(ADMIN),
    );
    assert_eq!(status, StatusCode::OK);
    let msg = next_event(&hub, &mut resp, &mut buf, "removed");
    assert_eq!(msg["ids"], json!([first.0]));
    drop(resp);
}
