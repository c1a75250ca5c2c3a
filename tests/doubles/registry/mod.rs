//! Loopback chart registries for tests: **test doubles, not registries.**
//!
//! * [`HelmRepo`]: a Helm chart repository (`index.yaml` with each chart's `urls` and sha256
//!   `digest`, archives under `charts/`) behind HTTP basic auth.
//! * [`OciRegistry`]: the part of the OCI distribution API a chart pull uses — manifests by
//!   tag and blobs by digest under `/v2/<repository>/`, each answering 401 with a
//!   `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge until the request
//!   carries a token that its `/token` endpoint issued, for that scope, to a client that
//!   authenticated with basic auth; manifests as `helm push` writes them (a
//!   `application/vnd.cncf.helm.config.v1+json` config and one
//!   `application/vnd.cncf.helm.chart.content.v1.tar+gzip` layer), with
//!   `Docker-Content-Digest`.
//!
//! Both record every request (path, and whether it was authenticated) for assertions, and
//! use only the standard library plus sha2/hex/base64. Included by tests with
//! `#[path = "…/tests/doubles/registry/mod.rs"]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
}

pub struct Response {
    pub status: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// One request seen by a double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    /// The `Authorization` scheme sent (`Basic`, `Bearer`), if any.
    pub auth: Option<String>,
    pub status: String,
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;
/// chart name → [(version, archive, digest written in the index)]
type Charts = Arc<Mutex<BTreeMap<String, Vec<(String, Vec<u8>, String)>>>>;
/// repository → reference (tag or digest) → bytes
type Store = Arc<Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>>;

/// Serve `handler` on a loopback port; returns `http://127.0.0.1:PORT` and the request log.
fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let mut lines = text.split("\r\n");
                let first = lines.next().unwrap_or("");
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let (path, q) = target.split_once('?').unwrap_or((&target, ""));
                let query = q
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (pct_decode(k), pct_decode(v))
                    })
                    .collect();
                let headers: BTreeMap<String, String> = lines
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let request = Request {
                    method,
                    path: path.to_string(),
                    query,
                    headers,
                };
                let resp = handler(&request);
                log.lock().unwrap().push(Seen {
                    path: request.path.clone(),
                    auth: request
                        .headers
                        .get("authorization")
                        .and_then(|a| a.split_whitespace().next())
                        .map(str::to_string),
                    status: resp.status.to_string(),
                });
                let mut head = format!(
                    "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    resp.body.len()
                );
                for (k, v) in &resp.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&resp.body);
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn basic_header(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A Helm chart repository behind basic auth.
pub struct HelmRepo {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    charts: Charts,
}

impl HelmRepo {
    pub fn start(user: &str, pass: &str) -> HelmRepo {
        let charts: Charts = Arc::default();
        let expected = basic_header(user, pass);
        let c = Arc::clone(&charts);
        let (url, seen) = serve(Arc::new(move |r: &Request| {
            if r.headers.get("authorization") != Some(&expected) {
                let mut resp = Response::new("401 Unauthorized", "authentication required");
                resp.headers
                    .push(("WWW-Authenticate".into(), "Basic realm=\"charts\"".into()));
                return resp;
            }
            let charts = c.lock().unwrap();
            if r.path == "/index.yaml" {
                let mut y = String::from("apiVersion: v1\nentries:\n");
                for (name, versions) in charts.iter() {
                    y.push_str(&format!("  {name}:\n"));
                    for (v, _, digest) in versions {
                        y.push_str(&format!(
                            "    - apiVersion: v2\n      name: {name}\n      version: {v}\n      digest: {digest}\n      urls:\n        - charts/{name}-{v}.tgz\n"
                        ));
                    }
                }
                y.push_str("generated: \"2026-12-01T00:00:00Z\"\n");
                return Response::new("200 OK", y);
            }
            for (name, versions) in charts.iter() {
                for (v, archive, _) in versions {
                    if r.path == format!("/charts/{name}-{v}.tgz") {
                        return Response::new("200 OK", archive.clone());
                    }
                }
            }
            Response::new("404 Not Found", "no such file")
        }));
        HelmRepo { url, seen, charts }
    }

    /// Publish a chart archive; the index gets its sha256.
    pub fn add(&self, name: &str, version: &str, archive: Vec<u8>) {
        let digest = sha256_hex(&archive);
        self.charts
            .lock()
            .unwrap()
            .entry(name.into())
            .or_default()
            .push((version.into(), archive, digest));
    }

    /// Serve other bytes for a published chart, leaving the index's digest as it was.
    pub fn tamper(&self, name: &str, version: &str) {
        let mut charts = self.charts.lock().unwrap();
        for (v, archive, _) in charts.get_mut(name).unwrap() {
            if v == version {
                archive.extend_from_slice(b"tampered");
            }
        }
    }
}

/// An OCI registry (distribution API subset) with token auth.
pub struct OciRegistry {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// repository → tag → manifest JSON
    manifests: Store,
    /// repository → digest hex → blob
    blobs: Store,
}

impl OciRegistry {
    pub fn start(user: &str, pass: &str) -> OciRegistry {
        let manifests: Store = Arc::default();
        let blobs: Store = Arc::default();
        // token → the scope it was issued for
        let tokens: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let expected = basic_header(user, pass);
        let addr: Arc<Mutex<String>> = Arc::default();
        let (m, b, a) = (
            Arc::clone(&manifests),
            Arc::clone(&blobs),
            Arc::clone(&addr),
        );
        let (url, seen) = serve(Arc::new(move |r: &Request| {
            if r.path == "/token" {
                if r.headers.get("authorization") != Some(&expected) {
                    return Response::new(
                        "401 Unauthorized",
                        "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
                    );
                }
                let scope = r.query.get("scope").cloned().unwrap_or_default();
                if r.query.get("service").map(String::as_str) != Some("cairn-oci-double") {
                    return Response::new("400 Bad Request", "unknown service");
                }
                let token = format!(
                    "tok-{}",
                    sha256_hex(format!("{scope}{}", tokens.lock().unwrap().len()).as_bytes())
                );
                tokens.lock().unwrap().insert(token.clone(), scope);
                return Response::new(
                    "200 OK",
                    format!("{{\"token\":\"{token}\",\"expires_in\":300}}"),
                );
            }
            let Some(rest) = r.path.strip_prefix("/v2/") else {
                return Response::new("404 Not Found", "");
            };
            let (repo, kind, reference) = if let Some((repo, tag)) = rest.split_once("/manifests/")
            {
                (repo.to_string(), "manifests", tag.to_string())
            } else if let Some((repo, d)) = rest.split_once("/blobs/") {
                (repo.to_string(), "blobs", d.to_string())
            } else {
                return Response::new("404 Not Found", "");
            };
            let scope = format!("repository:{repo}:pull");
            let authorized = r
                .headers
                .get("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|t| tokens.lock().unwrap().get(t) == Some(&scope));
            if !authorized {
                let mut resp = Response::new(
                    "401 Unauthorized",
                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
                );
                resp.headers.push((
                    "WWW-Authenticate".into(),
                    format!(
                        "Bearer realm=\"{}/token\",service=\"cairn-oci-double\",scope=\"{scope}\"",
                        a.lock().unwrap()
                    ),
                ));
                return resp;
            }
            if kind == "manifests" {
                match m.lock().unwrap().get(&repo).and_then(|t| t.get(&reference)) {
                    Some(body) => {
                        let mut resp = Response::new("200 OK", body.clone());
                        resp.headers.push((
                            "Content-Type".into(),
                            "application/vnd.oci.image.manifest.v1+json".into(),
                        ));
                        resp.headers.push((
                            "Docker-Content-Digest".into(),
                            format!("sha256:{}", sha256_hex(body)),
                        ));
                        resp
                    }
                    None => Response::new(
                        "404 Not Found",
                        "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}",
                    ),
                }
            } else {
                let hexd = reference.strip_prefix("sha256:").unwrap_or("");
                match b.lock().unwrap().get(&repo).and_then(|t| t.get(hexd)) {
                    Some(body) => Response::new("200 OK", body.clone()),
                    None => Response::new(
                        "404 Not Found",
                        "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}",
                    ),
                }
            }
        }));
        *addr.lock().unwrap() = url.clone();
        OciRegistry {
            url,
            seen,
            manifests,
            blobs,
        }
    }

    /// `host:port` of the registry.
    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Push a chart as `helm push` does: config blob, chart layer, manifest under `tag`.
    pub fn push_chart(&self, repo: &str, tag: &str, archive: Vec<u8>) {
        let config = format!(
            "{{\"name\":\"{}\",\"version\":\"{tag}\",\"apiVersion\":\"v2\"}}",
            repo.rsplit('/').next().unwrap()
        );
        let (cd, ld) = (sha256_hex(config.as_bytes()), sha256_hex(&archive));
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.cncf.helm.config.v1+json\",\"digest\":\"sha256:{cd}\",\"size\":{}}},\
             \"layers\":[{{\"mediaType\":\"application/vnd.cncf.helm.chart.content.v1.tar+gzip\",\"digest\":\"sha256:{ld}\",\"size\":{}}}]}}",
            config.len(),
            archive.len()
        );
        let mut blobs = self.blobs.lock().unwrap();
        let repo_blobs = blobs.entry(repo.into()).or_default();
        repo_blobs.insert(cd, config.into_bytes());
        repo_blobs.insert(ld, archive);
        self.manifests
            .lock()
            .unwrap()
            .entry(repo.into())
            .or_default()
            .insert(tag.into(), manifest.into_bytes());
    }

    /// Serve other bytes for a pushed chart layer, leaving the manifest's digest as it was.
    pub fn tamper(&self, repo: &str) {
        let mut blobs = self.blobs.lock().unwrap();
        for blob in blobs.get_mut(repo).unwrap().values_mut() {
            blob.extend_from_slice(b"tampered");
        }
    }
}
