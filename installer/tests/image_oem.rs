//! The OEM partition module on real GPT image files: find, build, write, read back, and
//! refuse invalid user-data or a disk without a CAIRN_OEM partition before writing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_installer::oem;

/// A 48 MiB GPT image: ESP (8 MiB), CAIRN_OEM (8 MiB), root (rest).
fn disk(dir: &Path, with_oem: bool) -> PathBuf {
    let path = dir.join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(48 << 20).unwrap();
    drop(f);
    let oem_name = if with_oem { "CAIRN_OEM" } else { "DATA" };
    let script = format!(
        "label: gpt\n\
         start=2048, size=16384, type=U, name=\"ESP\"\n\
         size=16384, type=L, name=\"{oem_name}\"\n\
         type=L, name=\"CAIRN_ROOT\"\n"
    );
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    path
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const FIRST: &str = "#cloud-config\nhostname: edge-1\n";
const SECOND: &str = "#node-config\nstages:\n  boot:\n    - name: marker\n      files:\n        - path: /etc/marker\n          content: \"x\\n\"\n";

#[test]
fn finds_the_oem_partition_by_gpt_name() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path(), true);
    let p = oem::find_partition(&img).unwrap();
    assert_eq!(p.number, 2);
    assert_eq!(p.name, "CAIRN_OEM");
    assert_eq!(p.offset, (2048 + 16384) * 512);
    assert_eq!(p.length, 16384 * 512);
    let all = oem::partitions(&img).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].name, "CAIRN_ROOT");
}

#[test]
fn writes_user_data_in_order_and_touches_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path(), true);
    // Mark every byte outside the OEM partition to prove it is left alone.
    let before = std::fs::read(&img).unwrap();
    // "z" comes first on the command line: it must merge first.
    let z = write(tmp.path(), "z-site.yaml", FIRST);
    let a = write(tmp.path(), "a-stages.yml", SECOND);
    let part = oem::write_user_data(&img, &[z, a]).unwrap();
    let after = std::fs::read(&img).unwrap();
    let (s, e) = (part.offset as usize, (part.offset + part.length) as usize);
    assert_eq!(before[..s], after[..s]);
    assert_eq!(before[e..], after[e..]);
    assert_ne!(before[s..e], after[s..e]);

    assert_eq!(oem::volume_label(&img).unwrap(), "CAIRN_OEM");
    let files = oem::read_user_data(&img).unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["00-z-site.yaml", "01-a-stages.yaml"]);
    assert_eq!(files[0].1, FIRST.as_bytes());
    assert_eq!(files[1].1, SECOND.as_bytes());

    // Replacing drops the old files.
    let only = write(tmp.path(), "only.yaml", FIRST);
    oem::write_user_data(&img, &[only]).unwrap();
    let files = oem::read_user_data(&img).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "00-only.yaml");
}

#[test]
fn invalid_user_data_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path(), true);
    let good = write(tmp.path(), "good.yaml", FIRST);
    oem::write_user_data(&img, &[good]).unwrap();
    let before = std::fs::read(&img).unwrap();
    let bad = write(
        tmp.path(),
        "bad.yaml",
        "#node-config\nstages:\n  bot:\n    - name: typo\n",
    );
    let err = oem::write_user_data(&img, &[bad]).unwrap_err().to_string();
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(before, std::fs::read(&img).unwrap());
}

#[test]
fn a_disk_without_oem_partition_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path(), false);
    let before = std::fs::read(&img).unwrap();
    let good = write(tmp.path(), "good.yaml", FIRST);
    let err = oem::write_user_data(&img, &[good]).unwrap_err().to_string();
    assert!(err.contains("no partition named CAIRN_OEM"), "{err}");
    assert!(err.contains("DATA"), "{err}");
    assert_eq!(before, std::fs::read(&img).unwrap());

    let blank = tmp.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let err = oem::find_partition(&blank).unwrap_err().to_string();
    assert!(err.contains("no readable GPT"), "{err}");
}

#[test]
fn user_data_too_big_for_the_partition_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk(tmp.path(), true);
    let before = std::fs::read(&img).unwrap();
    // Two files of 5 MiB of comments: valid user-data (each under the 8 MiB document
    // limit), together larger than the 8 MiB partition.
    let mut big = String::from("#cloud-config\nhostname: big\n");
    let line = format!("# {}\n", "x".repeat(1021));
    for _ in 0..(5 * 1024) {
        big.push_str(&line);
    }
    let f1 = write(tmp.path(), "big1.yaml", &big);
    let f2 = write(tmp.path(), "big2.yaml", &big);
    let err = oem::write_user_data(&img, &[f1, f2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    assert_eq!(before, std::fs::read(&img).unwrap());
}
