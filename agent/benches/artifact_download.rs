//! Benchmark (not a timed test): download + verify a 1 GiB artifact from a loopback mirror
//! with Cairn's artifact cache (one pass: hash while streaming) against `curl -o` followed
//! by `sha256sum` (two passes), and the raw SHA-256 throughput of the `sha2` crate.
//!
//! Run: `cargo bench -p cairn-agent --bench artifact_download`
//! (`CAIRN_BENCH_MIB` sets the size, default 1024).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cairn_agent::artifacts::{ArtifactCache, ArtifactRef, FetchOptions};
use sha2::{Digest, Sha256};

/// Serve one file over HTTP/1.1 on 127.0.0.1 (std::io::copy uses sendfile on Linux).
fn serve(path: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/big.bin", listener.local_addr().unwrap());
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let path = path.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut f = std::fs::File::open(&path).unwrap();
                let len = f.metadata().unwrap().len();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).unwrap();
                let _ = std::io::copy(&mut f, &mut stream);
            });
        }
    });
    url
}

fn main() {
    let mib: usize = std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = dir.path().join("big.bin");
    // Incompressible-looking content, written once.
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut block = vec![0u8; 1024 * 1024];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut hasher = Sha256::new();
        for _ in 0..mib {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            hasher.update(&block);
            f.write_all(&block).unwrap();
        }
        f.flush().unwrap();
        std::fs::write(dir.path().join("sha"), hex::encode(hasher.finalize())).unwrap();
    }
    let digest_hex = std::fs::read_to_string(dir.path().join("sha")).unwrap();
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&digest_hex, &mut digest).unwrap();
    let url = serve(&src);
    let bytes = (mib * 1024 * 1024) as f64;

    // SHA-256 throughput of the crate on this CPU (in memory).
    let buf = vec![0x5au8; 256 * 1024 * 1024];
    let t = Instant::now();
    let _ = Sha256::digest(&buf);
    let sha_gbs = buf.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
    drop(buf);

    let mut cairn = Vec::new();
    let mut two_pass = Vec::new();
    for _ in 0..3 {
        let cache_dir = dir.path().join("cache");
        let _ = std::fs::remove_dir_all(&cache_dir);
        let cache = ArtifactCache::new(&cache_dir);
        let art = ArtifactRef {
            url: url.clone(),
            sha256: digest,
        };
        let t = Instant::now();
        cache
            .fetch(&art, &FetchOptions::default(), &mut |_| {})
            .unwrap();
        cairn.push(t.elapsed().as_secs_f64());

        let out = dir.path().join("curl.bin");
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let st = Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .unwrap();
        assert!(st.success());
        let sum = Command::new("sha256sum").arg(&out).output().unwrap();
        two_pass.push(t.elapsed().as_secs_f64());
        assert!(String::from_utf8_lossy(&sum.stdout).starts_with(&digest_hex));
    }
    cairn.sort_by(f64::total_cmp);
    two_pass.sort_by(f64::total_cmp);
    let (c, k) = (cairn[1], two_pass[1]);
    println!("artifact_download: {mib} MiB from 127.0.0.1, median of 3");
    println!(
        "  cairn fetch (hash while streaming)   {:>8.2} s  {:>7.0} MB/s",
        c,
        bytes / c / 1e6
    );
    println!(
        "  curl -o + sha256sum (two passes)     {:>8.2} s  {:>7.0} MB/s",
        k,
        bytes / k / 1e6
    );
    println!("  ratio cairn / two-pass               {:>8.2}", c / k);
    println!(
        "  sha2 SHA-256 in memory               {:>8.2} GB/s",
        sha_gbs
    );
}
