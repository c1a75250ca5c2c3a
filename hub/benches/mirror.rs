//! The hub's artifact mirror against a plain static file server, in one run.
//!
//! `cargo bench -p cairn-hub --bench mirror` — a benchmark, not a test: it prints figures
//! and fails only if a download fails or a server will not start.
//!
//! 1. Writes one `CAIRN_MIRROR_BENCH_MIB` (100) MiB artifact, imports it into a fresh hub's
//!    mirror (`cairn-hub mirror import`), registers one host, and starts this build's
//!    `cairn-hub serve` over TLS on a free loopback port (certificate from a throw-away CA).
//! 2. `CAIRN_MIRROR_BENCH_CLIENTS` (50) clients, each with its own connection, download the
//!    whole artifact at once from `GET /v1/hosts/{id}/artifacts/{sha256}` (with the host
//!    credential), reading and discarding the body; the aggregate throughput is total bytes
//!    over the time until the last one finishes. The hub's resident memory is sampled every
//!    10 ms (`VmRSS` of its process) and its peak reported.
//! 3. The same download of the same file from Debian's nginx (`/usr/sbin/nginx`, or
//!    `CAIRN_MIRROR_BENCH_NGINX`), serving it as a static file over TLS with the same
//!    certificate on loopback (`worker_processes auto`, `sendfile on`); its peak RSS is the
//!    sum over its master and workers.
//! 4. Prints both and the ratios (hub / nginx).
//!
//! Both servers speak HTTP/1.1 to the clients (one TLS connection per client). The clients
//! share the machine's cores with the server under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/tls.rs"]
mod tls;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hub_bin() -> String {
    env!("CARGO_BIN_EXE_cairn-hub").to_owned()
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Resident set size (bytes) of `pid` and every process whose parent it is.
fn rss_tree(pid: u32) -> u64 {
    let mut total = rss(pid);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += rss(child);
            }
        }
    }
    total
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

struct Figures {
    secs: f64,
    bytes: u64,
    peak_rss: u64,
    idle_rss: u64,
}

impl Figures {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.secs
    }
}

/// `clients` concurrent downloads of `url` (each its own connection), every body checked
/// for length; the server's RSS sampled meanwhile.
fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    bearer: Option<&str>,
    ca_pem: &str,
    clients: usize,
    expect_len: u64,
    pid: u32,
) -> Figures {
    let idle_rss = rss_tree(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_rss));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_tree(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let total: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
                .http1_only()
                .build()
                .unwrap();
            let url = url.to_string();
            let bearer = bearer.map(str::to_string);
            tasks.push(tokio::spawn(async move {
                let mut req = client.get(&url);
                if let Some(b) = bearer {
                    req = req.bearer_auth(b);
                }
                let mut resp = req.send().await.unwrap();
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                let mut n = 0u64;
                while let Some(chunk) = resp.chunk().await.unwrap() {
                    n += chunk.len() as u64;
                }
                assert_eq!(n, expect_len, "{url}: short body");
                n
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        sum
    });
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    Figures {
        secs,
        bytes: total,
        peak_rss: peak.load(Ordering::SeqCst),
        idle_rss,
    }
}

fn write_artifact(path: &Path, mib: u64) -> String {
    use sha2::Digest;
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = sha2::Sha256::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&block);
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    hex::encode(h.finalize())
}

fn cli(db: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(hub_bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .args(["--output", "json"])
        .env_remove("CAIRN_HUB_DB")
        .env_remove("CAIRN_HUB_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn-hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn main() {
    let mib = env_u64("CAIRN_MIRROR_BENCH_MIB", 100);
    let clients = env_u64("CAIRN_MIRROR_BENCH_CLIENTS", 50) as usize;
    let nginx = std::env::var("CAIRN_MIRROR_BENCH_NGINX").unwrap_or("/usr/sbin/nginx".into());
    assert!(
        Path::new(&nginx).exists(),
        "{nginx} is missing: install Debian's nginx (scripts/install-test-deps.sh)"
    );
    let dir = tempfile::Builder::new()
        .prefix("cairn-mirror-bench-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let pki = tls::make(d);
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let artifact = www.join("artifact.bin");
    eprintln!("writing a {mib} MiB artifact…");
    let sha = write_artifact(&artifact, mib);
    let len = mib << 20;

    // The hub: the artifact imported as an air-gap bundle, one registered host.
    let bundle = d.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::hard_link(&artifact, bundle.join("artifact.bin")).unwrap();
    std::fs::write(
        bundle.join("manifest.json"),
        serde_json::json!({"artifacts": [{"file": "artifact.bin", "sha256": sha}]}).to_string(),
    )
    .unwrap();
    let db = d.join("hub.db");
    cli(&db, &["mirror", "import", bundle.to_str().unwrap()]);
    let token = cli(&db, &["token", "create", "--name", "bench"]);
    let token = token["token"].as_str().unwrap().to_string();
    let port = free_port();
    let mut hub = Command::new(hub_bin())
        .arg("--db")
        .arg(&db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(["--max-connections-per-ip", "0"])
        .env_remove("CAIRN_HUB_DB")
        .env_remove("CAIRN_HUB_DATA_DIR")
        .env("CAIRN_HUB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(port, &mut hub, "cairn-hub serve");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (host, credential) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let resp = client
            .post(format!("https://127.0.0.1:{port}/v1/register"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"token": token, "name": "bench-host"}).to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "register: {}", resp.status());
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        (
            v["host_id"].as_str().unwrap().to_string(),
            v["credential"].as_str().unwrap().to_string(),
        )
    });
    let hub_url = format!("https://127.0.0.1:{port}/v1/hosts/{host}/artifacts/{sha}");
    eprintln!("hub: {clients} clients × {mib} MiB…");
    let h = run(
        &rt,
        &hub_url,
        Some(&credential),
        &pki.ca_pem,
        clients,
        len,
        hub.id(),
    );
    let _ = hub.kill();
    let _ = hub.wait();

    // nginx, serving the same file.
    let nport = free_port();
    let prefix = d.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let root_user = nix_is_root();
    let conf = format!(
        "{user}worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n\
           client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n\
           uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           server {{\n    listen 127.0.0.1:{nport} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
             root {www};\n  }}\n}}\n",
        user = if root_user { "user root;\n" } else { "" },
        p = prefix.display(),
        cert = pki.cert.display(),
        key = pki.key.display(),
        www = www.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut ng = Command::new(&nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(nport, &mut ng, "nginx");
    // Let the workers start before the idle sample.
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("nginx: {clients} clients × {mib} MiB…");
    let n = run(
        &rt,
        &format!("https://127.0.0.1:{nport}/artifact.bin"),
        None,
        &pki.ca_pem,
        clients,
        len,
        ng.id(),
    );
    let _ = ng.kill();
    let _ = ng.wait();

    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "mirror bench: {clients} concurrent clients × {mib} MiB over TLS (HTTP/1.1) on loopback, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "  cairn-hub  {:>8.1} MiB/s aggregate ({:.2} s)  RSS idle {:>6.1} MiB, peak {:>6.1} MiB",
        h.mib_s(),
        h.secs,
        mb(h.idle_rss),
        mb(h.peak_rss)
    );
    println!(
        "  nginx      {:>8.1} MiB/s aggregate ({:.2} s)  RSS idle {:>6.1} MiB, peak {:>6.1} MiB (master + workers)",
        n.mib_s(),
        n.secs,
        mb(n.idle_rss),
        mb(n.peak_rss)
    );
    println!(
        "  ratio hub/nginx: throughput {:.2}, peak RSS {:.2}",
        h.mib_s() / n.mib_s(),
        h.peak_rss as f64 / n.peak_rss.max(1) as f64
    );
}

/// Whether this process runs as root (effective uid 0): nginx then needs `user root;` to
/// read the temp directory.
fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}
