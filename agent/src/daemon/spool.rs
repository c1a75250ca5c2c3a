//! The on-disk event spool: every event the daemon emits is appended (and fsynced) here
//! before anything else sees it, and removed only after the hub acknowledged it.
//!
//! Files under `STATE/spool/`:
//! - `<first seq, 20 digits>.jsonl` — segments, one event per line, in `seq` order. A new
//!   segment is started at every daemon start (so a line torn by a crash is always the last
//!   line of an older segment, and is ignored) and when the current one grows past 1 MiB.
//! - `acked` — the highest `seq` the hub acknowledged (atomic write); segments whose events
//!   are all at or below it are deleted.
//!
//! `STATE/seq` is the high-water mark of sequence numbers: before an event with a number
//! above it is written anywhere, the mark moves [`SEQ_BLOCK`] ahead and is made durable, so
//! a number is never handed out twice, whatever crash happens (docs/architecture.md, "Events": the hub drops
//! duplicates by `seq`, so reuse would lose events). A restart continues after the mark.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_proto::Event;
use serde::Deserialize;

use super::store::{self, StateDir};
use crate::events::EventSink;

/// How far the persisted high-water mark runs ahead of the numbers in use.
pub const SEQ_BLOCK: u64 = 64;
/// A segment is closed once it is this large.
const SEGMENT_BYTES: u64 = 1024 * 1024;
/// A larger event is replaced by a stub saying so (the hub would refuse it forever).
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Events ready to send: their JSON lines, in order.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Vec<String>,
    pub first: u64,
    pub last: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
    pub fn len(&self) -> usize {
        self.lines.len()
    }
    /// The request body `{"events":[…]}`, built from the stored lines without re-encoding.
    pub fn body(&self) -> Vec<u8> {
        let size = self.lines.iter().map(|l| l.len() + 1).sum::<usize>() + 16;
        let mut b = Vec::with_capacity(size);
        b.extend_from_slice(b"{\"events\":[");
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(l.as_bytes());
        }
        b.extend_from_slice(b"]}");
        b
    }
}

/// What `cairn-agent status` shows about the spool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Depth {
    pub pending: u64,
    pub acked: u64,
    pub last_seq: u64,
}

struct Active {
    path: PathBuf,
    file: File,
    size: u64,
}

struct Inner {
    dir: PathBuf,
    seq_path: PathBuf,
    acked_path: PathBuf,
    /// Persisted high-water mark: no number above it has been used.
    hwm: u64,
    acked: u64,
    /// Highest number appended.
    last: u64,
    active: Option<Active>,
}

pub struct Spool {
    inner: Mutex<Inner>,
    notify: Arc<tokio::sync::Notify>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

fn read_number(path: &Path) -> io::Result<u64> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a number", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Open a segment for appending. A segment that exists already and ends in the middle of a
/// line (a write cut short) gets its line ended first, so the fragment stays a line of its
/// own, skipped when read, and never swallows the next event.
fn open_segment(path: &Path) -> io::Result<File> {
    let mut file = store::open_append(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        File::open(path)?.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// Segment files in order.
fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()) == Some("jsonl")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The complete, parseable lines of a segment with their numbers.
fn read_segment(path: &Path) -> io::Result<Vec<(u64, String)>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in store::complete_lines(&bytes) {
        match (seq_of(line), std::str::from_utf8(line)) {
            (Some(seq), Ok(text)) => out.push((seq, text.to_string())),
            _ => tracing::warn!("skipping an unreadable line in {}", path.display()),
        }
    }
    Ok(out)
}

impl Spool {
    /// Open (and recover) the spool of a state directory.
    pub fn open(state: &StateDir, notify: Arc<tokio::sync::Notify>) -> io::Result<Spool> {
        let dir = state.spool();
        let acked_path = dir.join("acked");
        let seq_path = state.seq();
        let acked = read_number(&acked_path)?;
        let hwm = read_number(&seq_path)?;
        let mut last = acked;
        for seg in segments(&dir)? {
            let lines = read_segment(&seg)?;
            let max = lines.iter().map(|(s, _)| *s).max().unwrap_or(0);
            last = last.max(max);
            if max <= acked {
                // Fully delivered (or empty, e.g. only a torn line): no longer needed.
                fs::remove_file(&seg)?;
            }
        }
        let _ = store::sync_dir(&dir);
        Ok(Spool {
            inner: Mutex::new(Inner {
                dir,
                seq_path,
                acked_path,
                hwm,
                acked,
                last,
                active: None,
            }),
            notify,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number to continue after: no event with a number at or below it may be emitted.
    pub fn last_seq(&self) -> u64 {
        let i = self.lock();
        i.hwm.max(i.last).max(i.acked)
    }

    /// Append one event durably and wake the sender.
    pub fn append(&self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_string(event).map_err(io::Error::other)?;
        if line.len() > MAX_EVENT_BYTES {
            let mut stub = event.clone();
            stub.message = format!("(event of {} bytes truncated)", line.len());
            stub.data = serde_json::json!({"truncated": true});
            line = serde_json::to_string(&stub).map_err(io::Error::other)?;
        }
        line.push('\n');
        let mut i = self.lock();
        if event.seq <= i.last.max(i.acked) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("event seq {} was already used", event.seq),
            ));
        }
        if event.seq > i.hwm {
            let hwm = event.seq + SEQ_BLOCK - 1;
            store::write_atomic(&i.seq_path, format!("{hwm}\n").as_bytes())?;
            i.hwm = hwm;
        }
        if i.active.as_ref().is_none_or(|a| a.size >= SEGMENT_BYTES) {
            let path = i.dir.join(format!("{:020}.jsonl", event.seq));
            let file = open_segment(&path)?;
            let _ = store::sync_dir(&i.dir);
            i.active = Some(Active {
                path,
                file,
                size: 0,
            });
        }
        if let Some(a) = i.active.as_mut() {
            let before = a.file.metadata()?.len();
            let written = a
                .file
                .write_all(line.as_bytes())
                .and_then(|()| a.file.sync_data());
            if let Err(e) = written {
                // A line cut short (disk full, I/O error) must not become the head of the
                // next one: cut the segment back, and start the next event in a new segment
                // whatever happens (a fragment left at a segment's end is never read).
                let _ = a.file.set_len(before);
                i.active = None;
                return Err(e);
            }
            a.size += line.len() as u64;
        }
        i.last = event.seq;
        drop(i);
        self.notify.notify_one();
        Ok(())
    }

    /// Up to `max_events` unacknowledged events (and about `max_bytes`), oldest first.
    pub fn pending(&self, max_events: usize, max_bytes: usize) -> io::Result<Batch> {
        let i = self.lock();
        let mut batch = Batch::default();
        let mut bytes = 0;
        for seg in segments(&i.dir)? {
            for (seq, line) in read_segment(&seg)? {
                if seq <= i.acked || seq <= batch.last {
                    continue;
                }
                if batch.len() >= max_events
                    || (!batch.is_empty() && bytes + line.len() > max_bytes)
                {
                    return Ok(batch);
                }
                if batch.is_empty() {
                    batch.first = seq;
                }
                bytes += line.len() + 1;
                batch.last = seq;
                batch.lines.push(line);
            }
        }
        Ok(batch)
    }

    /// The hub stored every event up to `upto`: persist that, drop what is delivered.
    pub fn ack(&self, upto: u64) -> io::Result<()> {
        let mut i = self.lock();
        if upto <= i.acked {
            return Ok(());
        }
        store::write_atomic(&i.acked_path, format!("{upto}\n").as_bytes())?;
        i.acked = upto;
        let active = i.active.as_ref().map(|a| a.path.clone());
        let mut removed = false;
        for seg in segments(&i.dir)? {
            let max = read_segment(&seg)?
                .iter()
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(0);
            if max > upto {
                break;
            }
            if Some(&seg) == active.as_ref() {
                // Everything in the open segment is delivered: start a fresh one next time.
                i.active = None;
            }
            fs::remove_file(&seg)?;
            removed = true;
        }
        if removed {
            let _ = store::sync_dir(&i.dir);
        }
        Ok(())
    }

    /// Pending events and numbers, read from disk (for `status`, with no daemon needed).
    pub fn depth(state: &StateDir) -> Depth {
        let dir = state.spool();
        let acked = read_number(&dir.join("acked")).unwrap_or(0);
        let mut d = Depth {
            pending: 0,
            acked,
            last_seq: acked,
        };
        for seg in segments(&dir).unwrap_or_default() {
            for (seq, _) in read_segment(&seg).unwrap_or_default() {
                if seq > acked {
                    d.pending += 1;
                }
                d.last_seq = d.last_seq.max(seq);
            }
        }
        d
    }
}

/// The daemon's first event sink: everything goes to the spool before any other sink.
pub struct SpoolSink(pub Arc<Spool>);

impl EventSink for SpoolSink {
    fn emit(&mut self, event: &Event) {
        if let Err(e) = self.0.append(event) {
            tracing::error!("event {} could not be spooled: {e}", event.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cairn_proto::EventKind;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            time: store::now(),
            host: "h".into(),
            kind: EventKind::Phase,
            stage: String::new(),
            step: String::new(),
            source: String::new(),
            message: format!("event {seq}"),
            data: serde_json::Value::Null,
        }
    }

    fn open(state: &StateDir) -> Spool {
        Spool::open(state, Arc::new(tokio::sync::Notify::new())).unwrap()
    }

    #[test]
    fn a_fragment_at_a_segments_end_never_swallows_the_next_line() {
        let d = tempfile::tempdir().unwrap();
        let seg = d.path().join(format!("{:020}.jsonl", 7));
        std::fs::write(&seg, b"{\"seq\":6,\"ti").unwrap();
        let mut f = open_segment(&seg).unwrap();
        f.write_all(format!("{}\n", serde_json::to_string(&ev(7)).unwrap()).as_bytes())
            .unwrap();
        let seqs: Vec<u64> = read_segment(&seg).unwrap().iter().map(|l| l.0).collect();
        assert_eq!(seqs, vec![7]);
    }

    #[test]
    fn append_ack_and_restart_never_reuse_a_number() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path());
        state.create().unwrap();
        let s = open(&state);
        assert_eq!(s.last_seq(), 0);
        for n in 1..=5 {
            s.append(&ev(n)).unwrap();
        }
        assert!(s.append(&ev(3)).is_err(), "a used number is refused");
        let b = s.pending(3, 1 << 20).unwrap();
        assert_eq!((b.first, b.last, b.len()), (1, 3, 3));
        let body: serde_json::Value = serde_json::from_slice(&b.body()).unwrap();
        assert_eq!(body["events"][2]["seq"], 3);
        s.ack(3).unwrap();
        let b = s.pending(100, 1 << 20).unwrap();
        assert_eq!((b.first, b.last), (4, 5));
        drop(s);

        // "Crash": a torn line at the end of the segment, then a restart.
        let seg = segments(&state.spool()).unwrap().pop().unwrap();
        let mut f = store::open_append(&seg).unwrap();
        f.write_all(b"{\"seq\":6,\"ti").unwrap();
        let s = open(&state);
        // Continues after the persisted high-water mark, not after 5.
        assert_eq!(s.last_seq(), SEQ_BLOCK);
        let next = s.last_seq() + 1;
        s.append(&ev(next)).unwrap();
        let b = s.pending(100, 1 << 20).unwrap();
        let seqs: Vec<u64> = b
            .lines
            .iter()
            .map(|l| seq_of(l.as_bytes()).unwrap())
            .collect();
        assert_eq!(seqs, vec![4, 5, next], "the torn line is ignored");
        assert_eq!(
            Spool::depth(&state),
            Depth {
                pending: 3,
                acked: 3,
                last_seq: next
            }
        );
        s.ack(next).unwrap();
        assert!(s.pending(100, 1 << 20).unwrap().is_empty());
        assert!(
            segments(&state.spool()).unwrap().is_empty(),
            "delivered segments are removed"
        );
        s.append(&ev(next + 1)).unwrap();
        assert_eq!(s.pending(100, 1 << 20).unwrap().first, next + 1);
    }
}
