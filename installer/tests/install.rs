//! `cairn-installer install` onto real loop devices (needs root, `losetup`, `sfdisk`,
//! dosfstools and mtools): the written disk equals the image except the injected OEM
//! partition; mounted devices, the boot disk, a regular file, a digest mismatch and invalid
//! user-data are refused, and in those cases not one byte of the device changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

const IMAGE_MIB: u64 = 32;
const DEVICE_MIB: u64 = 40;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn-installer")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sfdisk(path: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Pseudo-random bytes (xorshift), so that a misplaced or missing block shows.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A Cairn-like GPT image full of noise: ESP, CAIRN_OEM, root, persistent.
fn image(dir: &Path) -> PathBuf {
    let path = dir.join("cairn.img");
    std::fs::write(
        &path,
        noise((IMAGE_MIB << 20) as usize, 0x9e37_79b9_7f4a_7c15),
    )
    .unwrap();
    sfdisk(
        &path,
        "label: gpt\n\
         start=2048, size=8192, type=U, name=\"ESP\"\n\
         size=8192, type=L, name=\"CAIRN_OEM\"\n\
         size=32768, type=L, name=\"CAIRN_ROOT\"\n\
         type=L, name=\"CAIRN_PERSISTENT\"\n",
    );
    path
}

/// (start, size) in bytes of the partition named `name`, from sfdisk's JSON.
fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let out = run(Command::new("sfdisk").arg("--json").arg(disk));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name} on {}", disk.display()));
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// A loop device over a fresh file of `mib` MiB filled with a pattern; detached on drop.
struct Loop {
    dev: PathBuf,
    _backing: tempfile::TempDir,
}

impl Loop {
    fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backing");
        std::fs::write(&file, vec![0xA5u8; (mib << 20) as usize]).unwrap();
        let out = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(&file));
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Loop { dev, _backing: dir }
    }

    fn read(&self) -> Vec<u8> {
        let mut v = Vec::new();
        std::fs::File::open(&self.dev)
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mounted filesystem; unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(dev: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount").arg(dev).arg(dir.path()));
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A loop device holding one GPT partition with an ext4 filesystem (something to mount).
fn loop_with_filesystem() -> Loop {
    let l = Loop::new(DEVICE_MIB);
    sfdisk(&l.dev, "label: gpt\nstart=2048, type=L, name=\"DATA\"\n");
    let _ = Command::new("partx").arg("--update").arg(&l.dev).status();
    for _ in 0..50 {
        if l.part(1).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(l.part(1)));
    l
}

fn user_data(dir: &Path) -> PathBuf {
    let path = dir.join("site.yaml");
    std::fs::write(
        &path,
        "#cloud-config\nhostname: edge-7\nstages:\n  boot:\n    - files:\n        - path: /etc/motd\n          content: hello\n",
    )
    .unwrap();
    path
}

fn install(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .arg("install")
        .args(args)
        .env_remove(cairn_installer::install::BOOT_ROOT_ENV)
        .output()
        .unwrap()
}

macro_rules! os {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn written_disk_equals_the_image_except_the_injected_oem_partition() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let ud = user_data(dir.path());
    let digest = sha256_file(&img);
    let l = Loop::new(DEVICE_MIB);
    let out = install(os![
        "--image",
        &img,
        "--device",
        &l.dev,
        "--user-data",
        &ud,
        "--sha256",
        &digest.to_uppercase(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "install failed: {}", stderr(&out));
    let last = String::from_utf8(out.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(report["kind"], "installed");
    assert_eq!(report["sha256"], digest.as_str());
    assert_eq!(report["verified"], "before writing");
    assert_eq!(report["bytes_written"], IMAGE_MIB << 20);

    let want = std::fs::read(&img).unwrap();
    let got = l.read();
    let (oem_start, oem_size) = partition(&img, "CAIRN_OEM");
    let (s, e) = (oem_start as usize, (oem_start + oem_size) as usize);
    assert!(got[..s] == want[..s], "bytes before CAIRN_OEM differ");
    assert!(
        got[e..want.len()] == want[e..],
        "bytes after CAIRN_OEM differ"
    );
    assert!(got[s..e] != want[s..e], "CAIRN_OEM was not written");
    // Beyond the image, the device keeps what it had.
    assert!(got[want.len()..].iter().all(|b| *b == 0xA5));

    // The kernel re-read the table: the partitions exist as devices.
    assert!(l.part(2).exists(), "{} missing", l.part(2).display());
    // The OEM partition is FAT labelled CAIRN_OEM holding the user-data.
    let spec = format!("{}@@{oem_start}", l.dev.display());
    let label = run(Command::new("mlabel").args(["-s", "-i", &spec, "::"]));
    assert!(String::from_utf8_lossy(&label.stdout).contains("CAIRN_OEM"));
    let listing = run(Command::new("mdir").args(["-b", "-i", &spec, "::"]));
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    let name = names
        .lines()
        .find(|l| l.ends_with(".yaml"))
        .unwrap_or_else(|| panic!("no yaml file in CAIRN_OEM: {names}"))
        .trim_start_matches("::/")
        .to_string();
    let body = run(Command::new("mtype").args(["-i", &spec, &format!("::{name}")]));
    assert_eq!(body.stdout, std::fs::read(&ud).unwrap());
}

#[test]
fn a_zstd_or_gzip_image_from_a_url_is_decompressed_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    run(Command::new("zstd").args(["-q", "-3"]).arg(&img));
    run(Command::new("gzip").args(["-k", "-1"]).arg(&img));
    let want = std::fs::read(&img).unwrap();
    for ext in ["zst", "gz"] {
        let packed = PathBuf::from(format!("{}.{ext}", img.display()));
        let (url, server) = serve(std::fs::read(&packed).unwrap(), 1);
        let l = Loop::new(DEVICE_MIB);
        let out = install(os![
            "--image",
            &url,
            "--device",
            &l.dev,
            "--sha256",
            &sha256_file(&packed)
        ]);
        server.join().unwrap();
        assert!(out.status.success(), "{ext}: {}", stderr(&out));
        let got = l.read();
        assert!(
            got[..want.len()] == want[..],
            "{ext}: disk differs from the image"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("while writing"));
    }
}

/// Serve `body` over HTTP on loopback for `requests` requests (404 for `*.sha256`).
fn serve(body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cairn.img", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        while served < requests {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if line.contains(".sha256") {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
            served += 1;
        }
    });
    (url, handle)
}

#[test]
fn a_digest_mismatch_known_up_front_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let actual = sha256_file(&img);
    let wrong = "0".repeat(64);
    let l = Loop::new(DEVICE_MIB);
    let before = l.read();

    let out = install(os!["--image", &img, "--device", &l.dev, "--sha256", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(
        err.contains(&wrong) && err.contains(&actual),
        "both digests: {err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(l.read() == before, "the device changed");

    // The same with the digest published next to the image.
    std::fs::write(
        format!("{}.sha256", img.display()),
        format!("{wrong}  cairn.img\n"),
    )
    .unwrap();
    let out = install(os!["--image", &img, "--device", &l.dev]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert!(l.read() == before, "the device changed");

    // Not a digest at all.
    let out = install(os!["--image", &img, "--device", &l.dev, "--sha256", "abc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a sha256"), "{}", stderr(&out));
}

#[test]
fn a_digest_mismatch_found_while_streaming_wipes_the_partition_tables() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let (url, server) = serve(std::fs::read(&img).unwrap(), 1);
    let l = Loop::new(DEVICE_MIB);
    let wrong = "f".repeat(64);
    let out = install(os!["--image", &url, "--device", &l.dev, "--sha256", &wrong]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&wrong) && err.contains(&sha256_file(&img)),
        "{err}"
    );
    assert!(err.contains("partition tables were wiped"), "{err}");
    let got = l.read();
    assert!(
        got[..1 << 20].iter().all(|b| *b == 0),
        "primary GPT left in place"
    );
    let end = (IMAGE_MIB << 20) as usize;
    assert!(
        got[end - (1 << 20)..end].iter().all(|b| *b == 0),
        "backup GPT left in place"
    );
}

#[test]
fn invalid_user_data_fails_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "stages:\n  bootz:\n    - commands: [\"true\"]\n").unwrap();
    let l = Loop::new(DEVICE_MIB);
    let before = l.read();
    let out = install(os![
        "--image",
        &img,
        "--device",
        &l.dev,
        "--user-data",
        &bad
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("invalid user-data") && err.contains("bad.yaml:2"),
        "{err}"
    );
    assert!(l.read() == before, "the device changed");
}

#[test]
fn a_mounted_device_is_refused_even_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let l = loop_with_filesystem();
    let m = Mounted::new(&l.part(1));
    let before = l.read();
    for force in [false, true] {
        let mut args: Vec<&std::ffi::OsStr> = os!["--image", &img, "--device", &l.dev].to_vec();
        if force {
            args.push("--force".as_ref());
        }
        let out = install(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("is mounted at"), "{err}");
        assert!(err.contains(&m.dir.path().display().to_string()), "{err}");
        assert!(err.contains(&l.part(1).display().to_string()), "{err}");
    }
    assert!(l.read() == before, "the device changed");
}

#[test]
fn the_boot_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let l = loop_with_filesystem();
    let m = Mounted::new(&l.part(1));
    let before = l.read();
    // The "running system" is the one whose root is the mounted partition of this disk.
    let out = Command::new(bin())
        .args(["install", "--image"])
        .arg(&img)
        .arg("--device")
        .arg(&l.dev)
        .env(cairn_installer::install::BOOT_ROOT_ENV, m.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the disk the running system boots from"),
        "{err}"
    );
    assert!(l.read() == before, "the device changed");
}

#[test]
fn a_partition_or_a_regular_file_is_refused_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let l = loop_with_filesystem();
    let out = install(os!["--image", &img, "--device", &l.part(1)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is a partition of"),
        "{}",
        stderr(&out)
    );

    let file = dir.path().join("disk.raw");
    std::fs::write(&file, b"keep").unwrap();
    let out = install(os!["--image", &img, "--device", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--to-file"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    let out = install(os!["--image", &img, "--device", &file, "--to-file"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&file), sha256_file(&img));
}
