#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `/v1` API over real TLS on 127.0.0.1: a test CA made with rcgen, the hub's rustls
//! server, and a reqwest (rustls) client that trusts only that CA.

mod common;

use std::net::SocketAddr;

use cairn_hub::http::{router, ApiConfig};
use cairn_hub::server;
use cairn_hub::SqlStore;
use cairn_proto::protocol::{
    ErrorBody, EventAck, HeartbeatResponse, RegisterResponse, MAX_BODY_BYTES,
};
use cairn_proto::{EventKind, Profile};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "test-admin-token-0123456789";

struct Hub {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Hub {
    async fn start() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let pki = common::tls::make(dir.path());
        let store = SqlStore::open(dir.path().join("hub.db").to_str().unwrap())
            .await
            .unwrap();
        let tls = server::tls_config(&pki.cert, &pki.key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = router(
            store,
            ApiConfig {
                admin_token: Some(ADMIN.into()),
                heartbeat_interval_secs: 30,
                ..ApiConfig::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let limits = server::Limits {
                max_connections: 64,
                ..server::Limits::default()
            };
            server::serve(listener, Some(tls), app, &limits, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Hub {
            base: format!("https://127.0.0.1:{}", addr.port()),
            client: common::tls::client(&pki.ca_pem),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .json_body(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json_value().await)
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json_value().await)
    }

    async fn upload(&self, query: &str, yaml: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(&format!("/v1/admin/profiles{query}")))
            .bearer_auth(ADMIN)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json_value().await)
    }

    async fn new_token(&self, max_uses: Option<u32>) -> (String, String) {
        let (status, body) = self
            .admin_post(
                "/v1/admin/tokens",
                json!({"name": "site-1", "max_uses": max_uses}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn register(&self, token: &str, name: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/register"))
            .json_body(&json!({
                "token": token,
                "name": name,
                "tags": {"site": "lab"},
                "inventory": {"cpu": {"model": "Test", "cores": 4}, "memory_bytes": 8589934592u64,
                              "arch": "amd64", "agent_version": "0.1.0",
                              "os": {"id": "debian", "version": "12"},
                              "disks": [{"name": "vda", "size_bytes": 21474836480u64}],
                              "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": ["10.0.0.5/24"]}]}
            }))
            .send()
            .await
            .unwrap()
    }

    async fn registered(&self, token: &str, name: &str) -> RegisterResponse {
        let r = self.register(token, name).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        serde_json::from_value(r.json_value().await).unwrap()
    }
}

/// Small conveniences (reqwest's `json` feature is not enabled in the workspace).
trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let bytes = self.bytes().await.unwrap();
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        }
    }
}

fn ev(seq: u64, kind: EventKind, stage: &str, step: &str) -> Value {
    json!({"seq": seq, "time": "2026-11-24T12:00:00Z", "host": "edge-1", "kind": kind,
           "stage": stage, "step": step, "source": format!("user-data.yaml:{seq}"),
           "message": format!("event {seq}")})
}

const PROFILE_V1: &str = "\
name: edge
layers:
  - os:
      user_data: |
        stages:
          boot:
            - name: motd
              files:
                - path: /etc/motd
                  permissions: 0644
                  content: hello
  - kubernetes:
      flavor: k3s
      version: v1.30.4+k3s1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_heartbeat_assign_fetch_with_etag_and_report_until_applied() {
    let hub = Hub::start().await;
    let (_, token) = hub.new_token(Some(5)).await;

    // Register: 201, a host id and a credential, the heartbeat period. Over HTTP/2 (ALPN).
    let r = hub.register(&token, "edge-1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let reg: RegisterResponse = serde_json::from_value(r.json_value().await).unwrap();
    assert!(reg.host_id.starts_with("h_"));
    assert!(reg.credential.starts_with("cairn_hc_"));
    assert_eq!(reg.heartbeat_interval_secs, 30);
    let hb_url = hub.url(&format!("/v1/hosts/{}/heartbeat", reg.host_id));
    let profile_url = hub.url(&format!("/v1/hosts/{}/profile", reg.host_id));
    let events_url = hub.url(&format!("/v1/hosts/{}/events", reg.host_id));

    // Nothing assigned yet: heartbeat says so, profile is 204.
    let r = hub
        .client
        .post(&hb_url)
        .bearer_auth(&reg.credential)
        .json_body(&json!({"inventory": {"cpu": {"cores": 8}, "arch": "amd64"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hb: HeartbeatResponse = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(hb.profile_version, None);
    assert_eq!(hb.profile_etag, None);
    let r = hub
        .client
        .get(&profile_url)
        .bearer_auth(&reg.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, host) = hub
        .admin_get(&format!("/v1/admin/hosts/{}", reg.host_id))
        .await;
    assert_eq!(
        host["inventory"]["cpu"]["cores"], 8,
        "heartbeat inventory stored"
    );
    assert_eq!(host["status"], "registered");

    // The operator publishes a profile and assigns it to the host.
    let (status, up) = hub.upload("", PROFILE_V1).await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(up["version"], 1);
    let (status, a) = hub
        .admin_post(
            "/v1/admin/assignments",
            json!({"host": "edge-1", "profile": "edge"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");

    // Heartbeat now names it; the profile comes with the same ETag.
    let hb: HeartbeatResponse = serde_json::from_value(
        hub.client
            .post(&hb_url)
            .bearer_auth(&reg.credential)
            .send()
            .await
            .unwrap()
            .json_value()
            .await,
    )
    .unwrap();
    assert_eq!(hb.profile_version, Some(1));
    assert_eq!(hb.profile_name.as_deref(), Some("edge"));
    let r = hub
        .client
        .get(&profile_url)
        .bearer_auth(&reg.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag1 = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(Some(etag1.clone()), hb.profile_etag);
    let profile: Profile = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!((profile.name.as_str(), profile.version), ("edge", 1));
    let cairn_proto::profile::Layer::Os(os) = &profile.layers[0] else {
        panic!("first layer is not os");
    };
    assert!(
        os.user_data.contains("permissions: 0644"),
        "user-data kept verbatim"
    );

    // Same ETag: 304 without a body.
    let r = hub
        .client
        .get(&profile_url)
        .bearer_auth(&reg.credential)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    assert!(r.bytes().await.unwrap().is_empty());

    // A new version: the old ETag no longer matches, the new profile comes.
    let (status, up) = hub
        .upload(
            "",
            &PROFILE_V1.replace("content: hello", "content: hello v2"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(up["version"], 2);
    let r = hub
        .client
        .get(&profile_url)
        .bearer_auth(&reg.credential)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag2 = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag1, etag2);
    let profile: Profile = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(profile.version, 2);

    // Events: a batch, the same batch again (lost ack), then the rest out of order.
    let batch1 = json!({"events": [
        ev(1, EventKind::StageStarted, "boot", ""),
        ev(2, EventKind::StepChanged, "boot", "motd"),
        ev(3, EventKind::StageFinished, "boot", ""),
    ]});
    for (accepted, duplicates) in [(3, 0), (0, 3)] {
        let r = hub
            .client
            .post(&events_url)
            .bearer_auth(&reg.credential)
            .json_body(&batch1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ack: EventAck = serde_json::from_value(r.json_value().await).unwrap();
        assert_eq!(
            ack,
            EventAck {
                acked_seq: 3,
                accepted,
                duplicates
            }
        );
    }
    let (_, host) = hub
        .admin_get(&format!("/v1/admin/hosts/{}", reg.host_id))
        .await;
    assert_eq!(host["status"], "applying");
    let mut applied = ev(5, EventKind::ProfileApplied, "", "");
    applied["data"] = json!({"profile": "edge", "version": 2});
    let batch2 = json!({"events": [applied, ev(4, EventKind::StepUnchanged, "kubernetes", "k3s")]});
    let r = hub
        .client
        .post(&events_url)
        .bearer_auth(&reg.credential)
        .json_body(&batch2)
        .send()
        .await
        .unwrap();
    let ack: EventAck = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(
        ack,
        EventAck {
            acked_seq: 5,
            accepted: 2,
            duplicates: 0
        }
    );

    // The hub shows every event once, in seq order, and the host as applied.
    let (status, events) = hub
        .admin_get(&format!("/v1/admin/hosts/{}/events", reg.host_id))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(events[1]["step"], "motd");
    assert_eq!(
        events[1]["host"],
        reg.host_id.as_str(),
        "events are filed under the host id"
    );
    let (_, hosts) = hub.admin_get("/v1/admin/hosts").await;
    let host = &hosts[0];
    assert_eq!(host["name"], "edge-1");
    assert_eq!(host["status"], "applied");
    assert_eq!(host["applied_profile"], "edge");
    assert_eq!(host["applied_version"], 2);
    assert_eq!(host["last_seq"], 5);
    assert_eq!(host["tags"]["site"], "lab");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_retried_with_its_key_gets_the_same_answer() {
    let hub = Hub::start().await;
    let (token_id, token) = hub.new_token(Some(2)).await;
    let key = cairn_hub::secret::new_secret("cairn_rk_").unwrap();
    let register = |key: &str| {
        hub.client
            .post(hub.url("/v1/register"))
            .json_body(&json!({"token": token, "name": "edge-1", "registration_key": key}))
            .send()
    };
    // The first answer (lost on its way, say) and the retry's are the same: 201, same host,
    // same credential.
    let r = register(&key).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = r.json_value().await;
    let r = register(&key).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json_value().await, first);
    // Another key for the name: 409; a malformed key: 422.
    let other = cairn_hub::secret::new_secret("cairn_rk_").unwrap();
    let r = register(&other).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json_value().await["error"], "conflict");
    let r = register("cairn_rk_short").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json_value().await["error"], "invalid");
    // One use spent, one host.
    let (_, tokens) = hub.admin_get("/v1/admin/tokens").await;
    let t = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .unwrap();
    assert_eq!(t["uses"], 1, "{t}");
    let (_, hosts) = hub.admin_get("/v1/admin/hosts").await;
    assert_eq!(hosts.as_array().unwrap().len(), 1);
    // The host uses its credential: the key is retired, a retry is a conflict.
    let r = hub
        .client
        .post(hub.url(&format!(
            "/v1/hosts/{}/heartbeat",
            first["host_id"].as_str().unwrap()
        )))
        .bearer_auth(first["credential"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(register(&key).await.unwrap().status(), StatusCode::CONFLICT);
    // Neither the key nor the credential is in the hub's answers to the operator.
    let (_, hosts) = hub.admin_get("/v1/admin/hosts").await;
    let listed = hosts.to_string();
    assert!(
        !listed.contains(&key[9..])
            && !listed.contains(&first["credential"].as_str().unwrap()[9..])
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_wrong_credentials_and_other_hosts_ids_are_refused() {
    let hub = Hub::start().await;
    let (token_id, token) = hub.new_token(None).await;
    let a = hub.registered(&token, "a").await;
    let b = hub.registered(&token, "b").await;

    // Revoked token: 401 with a JSON reason; no host created.
    let (status, _) = hub
        .admin_post(&format!("/v1/admin/tokens/{token_id}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = hub.register(&token, "c").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(err.error, "token_rejected");
    assert!(err.message.contains("revoked"), "{}", err.message);
    // Bad tokens of every kind: 401.
    for bad in ["", "cairn_rt_nonsense"] {
        assert_eq!(
            hub.register(bad, "d").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let (_, hosts) = hub.admin_get("/v1/admin/hosts").await;
    assert_eq!(hosts.as_array().unwrap().len(), 2);

    // Host endpoints: no credential → 401; wrong one or another host's id → 403.
    let urls = |id: &str| {
        [
            ("POST", hub.url(&format!("/v1/hosts/{id}/heartbeat"))),
            ("GET", hub.url(&format!("/v1/hosts/{id}/profile"))),
            ("POST", hub.url(&format!("/v1/hosts/{id}/events"))),
        ]
    };
    let batch = json!({"events": [ev(1, EventKind::Error, "", "")]});
    for (method, url) in urls(&b.host_id) {
        let req = |cred: Option<&str>| {
            let mut r = match method {
                "GET" => hub.client.get(&url),
                _ => hub.client.post(&url).json_body(&batch),
            };
            if let Some(c) = cred {
                r = r.bearer_auth(c);
            }
            r
        };
        let r = req(None).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        // A's credential on B's id.
        let r = req(Some(&a.credential)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
        assert_eq!(err.error, "forbidden");
        assert!(!err.message.contains(&a.credential), "no secret in errors");
        let r = req(Some("cairn_hc_made-up")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
    }
    for (_, url) in urls("h_unknown") {
        let r = hub
            .client
            .post(&url)
            .bearer_auth(&a.credential)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::METHOD_NOT_ALLOWED,
            "{url}: {}",
            r.status()
        );
    }
    // Nothing changed on B: no events, still registered.
    let (_, events) = hub
        .admin_get(&format!("/v1/admin/hosts/{}/events", b.host_id))
        .await;
    assert!(events.as_array().unwrap().is_empty());
    let (_, host) = hub
        .admin_get(&format!("/v1/admin/hosts/{}", b.host_id))
        .await;
    assert_eq!(host["status"], "registered");

    // A removed host's credential stops working.
    let r = hub
        .client
        .delete(hub.url(&format!("/v1/admin/hosts/{}", a.host_id)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = hub
        .client
        .post(hub.url(&format!("/v1/hosts/{}/heartbeat", a.host_id)))
        .bearer_auth(&a.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The admin API wants the admin token.
    let r = hub
        .client
        .get(hub.url("/v1/admin/hosts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = hub
        .client
        .get(hub.url("/v1/admin/hosts"))
        .bearer_auth(&b.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_invalid_bodies_are_refused() {
    let hub = Hub::start().await;
    let (_, token) = hub.new_token(None).await;
    let reg = hub.registered(&token, "edge-1").await;
    let events_url = hub.url(&format!("/v1/hosts/{}/events", reg.host_id));

    // Over the limit: 413 with a JSON body, nothing stored.
    let big = format!(
        "{{\"events\":[{{\"seq\":1,\"time\":\"t\",\"host\":\"h\",\"kind\":\"phase\",\"message\":\"{}\"}}]}}",
        "x".repeat(MAX_BODY_BYTES)
    );
    let r = hub
        .client
        .post(&events_url)
        .bearer_auth(&reg.credential)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(err.error, "too_large");
    let r = hub
        .client
        .post(hub.url("/v1/register"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, events) = hub
        .admin_get(&format!("/v1/admin/hosts/{}/events", reg.host_id))
        .await;
    assert!(events.as_array().unwrap().is_empty());

    // Not JSON: 400 naming where.
    let r = hub
        .client
        .post(&events_url)
        .bearer_auth(&reg.credential)
        .body("{\"events\": [\n  {\"seq\": }]}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
    assert!(err.message.contains("line 2"), "{}", err.message);

    // Empty or too-large batches, seq 0: 422.
    for body in [
        json!({"events": []}),
        json!({"events": (1..=1001).map(|i| ev(i, EventKind::Phase, "", "")).collect::<Vec<_>>()}),
        json!({"events": [ev(0, EventKind::Phase, "", "")]}),
    ] {
        let r = hub
            .client
            .post(&events_url)
            .bearer_auth(&reg.credential)
            .json_body(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    // An invalid profile: 422 with every problem located in the upload.
    let (status, body) = hub
        .upload(
            "",
            "name: Edge\nlayers:\n  - kubernetes:\n      flavor: k3s\n      version: v1\n      role: agent\n",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_profile");
    let locations: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["location"].as_str().unwrap())
        .collect();
    assert_eq!(locations, ["upload:1:7", "upload:6:13"], "{body}");
    let (status, body) = hub
        .upload("", "name: x\nlayers:\n  - os:\n      userdata: x\n")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["problems"][0]["location"], "upload:4:7", "{body}");
    // A CNI version that does not support the Kubernetes version (issue 16): refused at
    // its line, naming both versions.
    let (status, body) = hub
        .upload(
            "",
            "name: old\nlayers:\n  - kubernetes:\n      flavor: k3s\n      version: v1.28.9+k3s1\n  - cni:\n      type: cilium\n      version: 1.18.2\n",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["location"], "upload:8:16", "{body}");
    let message = body["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("1.18.2") && message.contains("v1.28.9+k3s1"),
        "{body}"
    );
    let (_, profiles) = hub.admin_get("/v1/admin/profiles").await;
    assert!(profiles.as_array().unwrap().is_empty(), "nothing published");

    // Immutability over HTTP: 409.
    let (status, _) = hub
        .upload(
            "",
            "name: web\nversion: 1\nlayers: [{os: {user_data: 'a: 1'}}]\n",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = hub
        .upload(
            "",
            "name: web\nversion: 1\nlayers: [{os: {user_data: 'a: 2'}}]\n",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["message"].as_str().unwrap().contains("immutable"),
        "{body}"
    );
    let (status, body) = hub
        .upload(
            "",
            "name: web\nversion: 1\nlayers: [{os: {user_data: 'a: 1'}}]\n",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "identical re-upload is idempotent");
    assert_eq!(body["created"], false);

    // Query strings that do not parse: JSON 400.
    let (status, body) = hub
        .admin_get(&format!("/v1/admin/hosts/{}/events?after=abc", reg.host_id))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");

    // Unknown endpoints: JSON 404.
    let r = hub.client.get(hub.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
    assert_eq!(err.error, "not_found");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_trust_the_hub_ca_cannot_connect() {
    let hub = Hub::start().await;
    // A client with a different CA: the handshake fails, nothing is sent.
    let other = tempfile::tempdir().unwrap();
    let stranger = common::tls::make(other.path());
    let client = common::tls::client(&stranger.ca_pem);
    let err = client
        .get(hub.url("/v1/admin/hosts"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // Plain HTTP to the TLS port is not served either.
    let plain = reqwest::Client::new();
    let url = hub.base.replace("https://", "http://");
    let r = plain.get(format!("{url}/v1/admin/hosts")).send().await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    hub.stop().await;
}

/// Path parameters that do not decode (bad percent-encoding, not UTF-8), query strings and
/// bodies that do not parse, and methods an endpoint does not take: every extractor
/// rejection answers with the JSON error body of docs/protocol.md, not axum's plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_paths_queries_bodies_and_methods_get_the_json_error_body() {
    let hub = Hub::start().await;
    let (_, token) = hub.new_token(None).await;
    let reg = hub.registered(&token, "edge-1").await;
    let admin = |method: reqwest::Method, path: &str| {
        hub.client.request(method, hub.url(path)).bearer_auth(ADMIN)
    };
    let cases = [
        // Admin path parameters: `%FF` is not UTF-8, `%C3%28` an invalid sequence.
        (
            admin(reqwest::Method::GET, "/v1/admin/hosts/%FF"),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::DELETE, "/v1/admin/hosts/%C3%28"),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::GET, "/v1/admin/hosts/%FF/events"),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::POST, "/v1/admin/tokens/%FF/revoke"),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::GET, "/v1/admin/profiles/%FF"),
            400,
            "bad_request",
        ),
        // Queries: numbers that are not.
        (
            admin(
                reqwest::Method::GET,
                &format!("/v1/admin/hosts/{}/events?after=x1", reg.host_id),
            ),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::GET, "/v1/admin/profiles/edge?version=-1"),
            400,
            "bad_request",
        ),
        // Bodies: not JSON, the wrong JSON.
        (
            admin(reqwest::Method::POST, "/v1/admin/tenants").body("{\"name\": "),
            400,
            "bad_request",
        ),
        (
            admin(reqwest::Method::POST, "/v1/admin/tenants").body("{\"name\": 7}"),
            400,
            "bad_request",
        ),
        // A host path that does not decode, before authentication.
        (
            hub.client
                .post(hub.url("/v1/hosts/%FF/heartbeat"))
                .bearer_auth(&reg.credential)
                .body("{}"),
            400,
            "bad_request",
        ),
        // Methods an endpoint does not take.
        (
            admin(reqwest::Method::PUT, "/v1/admin/hosts"),
            405,
            "method_not_allowed",
        ),
        (
            hub.client
                .get(hub.url(&format!("/v1/hosts/{}/heartbeat", reg.host_id))),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        let r = hub.client.execute(request).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}"
        );
        let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
        assert_eq!(err.error, code, "{what}: {}", err.message);
        assert!(!err.message.is_empty(), "{what}");
    }
    // The message says what did not decode.
    let r = admin(reqwest::Method::GET, "/v1/admin/hosts/%FF")
        .send()
        .await
        .unwrap();
    let err: ErrorBody = serde_json::from_value(r.json_value().await).unwrap();
    assert!(err.message.starts_with("the path: "), "{}", err.message);
    hub.stop().await;
}
