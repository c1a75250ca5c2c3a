//! The artifact cache against a local mirror on 127.0.0.1 that can cut a transfer short,
//! ignore Range, or serve wrong bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_agent::artifacts::{bundle, ArtifactCache, ArtifactError, ArtifactRef, FetchOptions};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy)]
enum Mode {
    /// Serve normally, honouring Range.
    Normal,
    /// First request: send only the first N bytes of the body, then close.
    CutFirstAt(usize),
    /// Ignore Range: always 200 with the whole body.
    IgnoreRange,
    /// Every response has the byte at this offset flipped (corrupted in transit).
    Flip(usize),
    /// Every response: 200 without Content-Length, the body cut after N bytes.
    NoLengthCut(usize),
    /// First request: the `first` body (another length), cut after N bytes; then the real
    /// body, Range honoured (the file changed on the server between attempts).
    ChangedAfterFirst(usize),
    /// The first `n` responses are cut after `every` bytes of what they send; Range honoured.
    CutFirstN { n: usize, every: usize },
}

/// A mirror serving one body; records the Range header of every request.
struct Mirror {
    url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    /// Body bytes written to clients, all requests together.
    sent: Arc<std::sync::atomic::AtomicUsize>,
}

fn mirror(body: Vec<u8>, mode: Mode) -> Mirror {
    mirror_with(None, body, mode)
}

/// [`mirror`], with the body served to the first request given apart (for
/// [`Mode::ChangedAfterFirst`]).
fn mirror_with(first: Option<Vec<u8>>, body: Vec<u8>, mode: Mode) -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/artifact.bin", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&sent);
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: ") {
                    range = Some(v.trim().to_string());
                }
            }
            seen.lock().unwrap().push(range.clone());
            let body = match (&first, mode) {
                (Some(f), Mode::ChangedAfterFirst(_)) if i == 0 => f.clone(),
                _ => body.clone(),
            };
            let body = match mode {
                Mode::Flip(at) => {
                    let mut b = body;
                    b[at] ^= 0x01;
                    b
                }
                _ => body,
            };
            if let Mode::NoLengthCut(n) = mode {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(&body[..n]);
                continue;
            }
            let start = match (mode, &range) {
                (Mode::IgnoreRange, _) | (_, None) => None,
                (_, Some(r)) => r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok()),
            };
            let (head, part) = match start {
                Some(s) => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                        body.len() - s, s, body.len() - 1, body.len()
                    ),
                    &body[s..],
                ),
                None => (
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
                    &body[..],
                ),
            };
            let _ = stream.write_all(head.as_bytes());
            let part = match mode {
                Mode::CutFirstAt(n) | Mode::ChangedAfterFirst(n) if i == 0 => &part[..n],
                Mode::CutFirstN { n, every } if i < n => &part[..every.min(part.len())],
                _ => part,
            };
            if stream.write_all(part).is_ok() {
                counted.fetch_add(part.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    Mirror { url, ranges, sent }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn quick() -> FetchOptions {
    FetchOptions {
        attempts: 3,
        backoff: Duration::from_millis(10),
        idle_timeout: Some(Duration::from_secs(5)),
        ..FetchOptions::default()
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[test]
fn fetch_verifies_caches_and_reports_progress() {
    let data = body(3 * 1024 * 1024 + 17);
    let m = mirror(data.clone(), Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    let mut reports = Vec::new();
    let opts = FetchOptions {
        progress_every: Duration::ZERO,
        ..quick()
    };
    let path = cache.fetch(&art, &opts, &mut |p| reports.push(p)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(path, cache.path_of(&art.sha256));
    let last = reports.last().unwrap();
    assert_eq!(last.bytes, data.len() as u64);
    assert_eq!(last.total, Some(data.len() as u64));
    assert!(reports.len() > 2, "progress reported while streaming");
    // A cache hit makes no request.
    cache.fetch(&art, &quick(), &mut |_| {}).unwrap();
    assert_eq!(m.ranges.lock().unwrap().len(), 1);
}

#[test]
fn digest_mismatch_fails_and_deletes_the_partial_file() {
    let data = body(100_000);
    let m = mirror(data.clone(), Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let wrong = sha(b"something else");
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: wrong,
    };
    let err = cache.fetch(&art, &quick(), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains(&hex::encode(wrong)) && msg.contains(&hex::encode(sha(&data))),
        "{msg}"
    );
    assert!(cache.get(&wrong).is_none());
    let partial_dir = dir.path().join("partial");
    let left: Vec<_> = std::fs::read_dir(&partial_dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial file left: {left:?}");
    assert_eq!(
        m.ranges.lock().unwrap().len(),
        1,
        "a mismatch is not retried"
    );
}

#[test]
fn a_transfer_cut_in_half_resumes_from_its_offset() {
    let data = body(2 * 1024 * 1024);
    let half = data.len() / 2;
    let m = mirror(data.clone(), Mode::CutFirstAt(half));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    let path = cache.fetch(&art, &quick(), &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let ranges = m.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    assert_eq!(
        ranges[1].as_deref(),
        Some(format!("bytes={half}-").as_str()),
        "resumed from the cut"
    );
}

#[test]
fn a_server_ignoring_range_restarts_from_zero_without_splicing() {
    let data = body(1024 * 1024);
    let m = mirror(data.clone(), Mode::IgnoreRange);
    let dir = tempfile::tempdir().unwrap();
    // A stale partial file from an earlier run.
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    std::fs::create_dir_all(dir.path().join("partial")).unwrap();
    std::fs::write(
        dir.path().join(format!("partial/{}.part", art.hex())),
        b"garbage",
    )
    .unwrap();
    let path = cache.fetch(&art, &quick(), &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(m.ranges.lock().unwrap()[0].as_deref(), Some("bytes=7-"));
}

#[test]
fn an_air_gap_bundle_installs_with_no_network() {
    let data = body(500_000);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("k3s");
    std::fs::write(&file, &data).unwrap();
    let bundle_dir = tempfile::tempdir().unwrap();
    let digest = sha(&data);
    bundle::create(
        bundle_dir.path(),
        &[(file.clone(), digest, "https://example.invalid/k3s".into())],
    )
    .unwrap();
    // Also as a tarball, as it would arrive on a USB stick.
    let tar = src.path().join("bundle.tar");
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(bundle_dir.path())
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    for source in [bundle_dir.path().to_path_buf(), tar] {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path());
        assert_eq!(bundle::import(&cache, &source).unwrap(), 1);
        // The URL points at a closed port: any network use would fail the fetch.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/k3s", closed.local_addr().unwrap());
        drop(closed);
        let art = ArtifactRef {
            url,
            sha256: digest,
        };
        let path = cache
            .fetch(
                &art,
                &FetchOptions {
                    attempts: 1,
                    ..quick()
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
    }
}

#[test]
fn a_corrupted_bundle_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle_dir = dir.path().join("b");
    let f = dir.path().join("f");
    std::fs::write(&f, b"original").unwrap();
    bundle::create(&bundle_dir, &[(f, sha(b"original"), String::new())]).unwrap();
    std::fs::write(bundle_dir.join(hex::encode(sha(b"original"))), b"tampered").unwrap();
    let cache = ArtifactCache::new(dir.path().join("cache"));
    let err = bundle::import(&cache, &bundle_dir).unwrap_err();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");
    assert!(cache.get(&sha(b"original")).is_none());
    // A manifest path that climbs out of the bundle is refused.
    std::fs::write(
        bundle_dir.join("manifest.json"),
        format!(
            "{{\"artifacts\":[{{\"file\":\"../f\",\"sha256\":\"{}\"}}]}}",
            hex::encode(sha(b"original"))
        ),
    )
    .unwrap();
    let err = bundle::import(&cache, &bundle_dir).unwrap_err();
    assert!(err.to_string().contains("inside the bundle"), "{err}");
}

/// Every regular file under `dir` (the cache: entries and partial files).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_byte_flipped_in_transit_names_both_hashes_and_caches_nothing() {
    // reliability §5 #7: the server's bytes differ from the published digest by one bit.
    let data = body(300_000);
    let m = mirror(data.clone(), Mode::Flip(123_457));
    let mut flipped = data.clone();
    flipped[123_457] ^= 0x01;
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    let err = cache.fetch(&art, &quick(), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!("expected {}", hex::encode(sha(&data))))
            && msg.contains(&format!("got {}", hex::encode(sha(&flipped)))),
        "the error names the expected and the actual digest: {msg}"
    );
    assert!(cache.get(&sha(&data)).is_none());
    assert!(cache.get(&sha(&flipped)).is_none());
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        m.ranges.lock().unwrap().len(),
        1,
        "a mismatch is not retried"
    );
}

#[test]
fn a_body_cut_short_without_a_length_is_caught_by_the_hash() {
    // reliability §5 #8: no Content-Length, the connection closes early: the end of the
    // body cannot be told from a cut, so the digest decides.
    let data = body(300_000);
    let m = mirror(data.clone(), Mode::NoLengthCut(200_000));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    let err = cache.fetch(&art, &quick(), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ArtifactError::Mismatch { .. }), "{msg}");
    assert!(
        msg.contains(&hex::encode(sha(&data))) && msg.contains(&hex::encode(sha(&data[..200_000]))),
        "{msg}"
    );
    assert!(cache.get(&sha(&data)).is_none());
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_changed_length_between_attempts_restarts_from_zero() {
    // reliability §5 #6: the file was replaced on the server between two attempts; the
    // resumed range reports another total length. The partial file is discarded and the
    // download starts over instead of splicing the old head onto the new tail.
    let old = body(1_500_000)
        .iter()
        .map(|b| b.wrapping_add(1))
        .collect::<Vec<u8>>();
    let new = body(1_000_000);
    let half = 400_000;
    let m = mirror_with(Some(old), new.clone(), Mode::ChangedAfterFirst(half));
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&new),
    };
    let path = cache.fetch(&art, &quick(), &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), new);
    let ranges = m.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        vec![None, Some(format!("bytes={half}-")), None],
        "resumed once, saw the length change, started over"
    );
}

#[test]
fn five_drops_during_a_download_resume_each_time_and_fetch_each_byte_once() {
    // reliability §5 #5, scaled down: a 24 MiB body, the connection dropped five times.
    let data = body(24 * 1024 * 1024);
    let every = 4 * 1024 * 1024;
    let m = mirror(data.clone(), Mode::CutFirstN { n: 5, every });
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path());
    let art = ArtifactRef {
        url: m.url.clone(),
        sha256: sha(&data),
    };
    let opts = FetchOptions {
        attempts: 6,
        ..quick()
    };
    let path = cache.fetch(&art, &opts, &mut |_| {}).unwrap();
    assert_eq!(sha(&std::fs::read(path).unwrap()), sha(&data));
    let ranges = m.ranges.lock().unwrap().clone();
    let want: Vec<Option<String>> = (0..6)
        .map(|k| (k > 0).then(|| format!("bytes={}-", k * every)))
        .collect();
    assert_eq!(
        ranges, want,
        "each attempt resumes at the last byte written"
    );
    let sent = m.sent.load(std::sync::atomic::Ordering::SeqCst);
    // Bound from the fault table: the size plus one chunk per drop (here: exactly the size).
    assert!(
        sent <= data.len() + 5 * every,
        "{sent} bytes fetched for {}",
        data.len()
    );
    assert_eq!(sent, data.len(), "no byte fetched twice");
}
