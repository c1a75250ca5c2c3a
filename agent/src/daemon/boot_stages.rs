//! Boot-stage reports: the boot-stage units (`cairn-agent stage NAME --output json`) run
//! before the daemon and append their events, one JSON object a line, to
//! `/run/cairn/boot-stages.jsonl` (tmpfs: this boot only). When the daemon starts it moves
//! them into its spool, renumbered after its own sequence, so the hub sees what the boot
//! stages applied, then renames the file so a daemon restart does not send them twice.

use std::path::Path;

use cairn_proto::Event;

use super::spool::Spool;

/// Where the boot-stage units append their JSON events (relative to the target root).
pub const BOOT_STAGE_EVENTS: &str = "run/cairn/boot-stages.jsonl";

/// Forward this boot's stage events into `spool`; returns how many were forwarded.
/// Lines that are not events (a stray message) are skipped. Errors are logged, never
/// fatal: the daemon's job does not depend on them.
pub fn forward(root: &Path, spool: &Spool) -> usize {
    // Through the host seam: /run/cairn is in the target, links there stay inside it.
    let host = crate::host::Host::system(root);
    let path = format!("/{BOOT_STAGE_EVENTS}");
    let text = match host.read_opt(&path) {
        Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
        Ok(None) => return 0,
        Err(e) => {
            tracing::warn!("reading boot-stage events: {e}");
            return 0;
        }
    };
    let done = format!("{path}.forwarded");
    // Renamed first: after a crash half-way, some events are missing rather than sent twice.
    if let Err(e) = host.rename(&path, &done) {
        tracing::warn!("moving boot-stage events aside: {e}");
        return 0;
    }
    let mut sent = 0;
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let Ok(mut event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        event.seq = spool.last_seq() + 1;
        match spool.append(&event) {
            Ok(()) => sent += 1,
            Err(e) => {
                tracing::warn!("spooling a boot-stage event: {e}");
                break;
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::store::StateDir;
    use std::sync::Arc;

    #[test]
    fn forwards_once_renumbered_after_the_spool() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path().join("state"));
        state.create().unwrap();
        let spool = Spool::open(&state, Arc::new(tokio::sync::Notify::new())).unwrap();
        assert_eq!(forward(root.path(), &spool), 0, "no file: nothing");
        let file = root.path().join(BOOT_STAGE_EVENTS);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let ev = |seq: u64, kind: &str, stage: &str| {
            format!(
                r#"{{"seq":{seq},"time":"2026-11-24T18:00:00Z","host":"h","kind":"{kind}","stage":"{stage}","step":"","source":"","message":"","data":{{}}}}"#
            )
        };
        std::fs::write(
            &file,
            format!(
                "{}\nnot an event\n{}\n{}\n",
                ev(1, "stage_started", "initramfs"),
                ev(2, "stage_finished", "initramfs"),
                ev(1, "stage_finished", "boot")
            ),
        )
        .unwrap();
        assert_eq!(forward(root.path(), &spool), 3);
        let batch = spool.pending(100, 1 << 20).unwrap();
        assert_eq!(batch.len(), 3);
        let body = String::from_utf8(batch.body()).unwrap();
        assert!(body.contains(r#""stage":"boot""#), "{body}");
        assert!(!file.exists());
        assert_eq!(forward(root.path(), &spool), 0, "sent once");
    }
}
