#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The daemon's state directory on a full disk (reliability §5 #14): a small tmpfs is
//! mounted as the state directory and filled. Writes fail with a clear error and leave the
//! old files intact and no temp files; an event whose append failed half-way must not take
//! the next event with it once space returns, and the spool still opens after a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cairn_agent::daemon::spool::Spool;
use cairn_agent::daemon::store::{write_atomic, StateDir};
use cairn_proto::{Event, EventKind};

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped.
struct SmallFs {
    _dir: tempfile::TempDir,
    at: PathBuf,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("state");
        std::fs::create_dir(&at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "cairn-state-full",
            ])
            .arg(&at)
            .status()
            .expect("running mount");
        assert!(ok.success(), "mounting a tmpfs needs root");
        SmallFs { _dir: dir, at }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Fill the file system holding `dir` with a file `dir/filler`, to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    // Whatever is left below one chunk.
    while let Ok(1) = f.write(&[0u8]) {}
    path
}

fn event(seq: u64, message_len: usize) -> Event {
    Event {
        seq,
        time: "2026-12-07T00:00:00Z".into(),
        host: "edge".into(),
        kind: EventKind::StepChanged,
        stage: "boot".into(),
        step: format!("step-{seq}"),
        source: "a.yaml:1".into(),
        message: "m".repeat(message_len),
        data: serde_json::Value::Null,
    }
}

fn open(state: &StateDir) -> Spool {
    Spool::open(state, Arc::new(tokio::sync::Notify::new())).unwrap()
}

fn pending_seqs(spool: &Spool) -> Vec<u64> {
    let b = spool.pending(1000, 16 << 20).unwrap();
    b.lines
        .iter()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().seq)
        .collect()
}

#[test]
fn a_full_state_directory_fails_writes_cleanly_and_loses_no_later_event() {
    let fs = SmallFs::mount("256k");
    let state = StateDir::new(&fs.at);
    state.create().unwrap();
    write_atomic(&state.identity(), b"{\"old\":true}\n").unwrap();
    let spool = open(&state);
    for seq in 1..=3 {
        spool.append(&event(seq, 100)).unwrap();
    }
    let filler = fill(&fs.at);

    // A whole-file write: refused with the reason, the old content kept, no temp file.
    let e = write_atomic(&state.identity(), &vec![b'x'; 64 * 1024]).unwrap_err();
    assert!(
        e.to_string().contains("No space left on device"),
        "the error says why: {e}"
    );
    assert_eq!(
        std::fs::read(state.identity()).unwrap(),
        b"{\"old\":true}\n"
    );
    // An event too big for what is left: the append fails (the caller keeps it).
    let e = spool.append(&event(4, 60 * 1024)).unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");

    // Space returns: later events are appended and none is lost.
    std::fs::remove_file(&filler).unwrap();
    spool.append(&event(5, 100)).unwrap();
    spool.append(&event(6, 100)).unwrap();
    assert_eq!(pending_seqs(&spool), vec![1, 2, 3, 5, 6]);
    drop(spool);
    let again = open(&state);
    assert_eq!(
        pending_seqs(&again),
        vec![1, 2, 3, 5, 6],
        "after a restart too"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&fs.at)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
