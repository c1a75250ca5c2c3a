//! Event emission: the engine reports through an [`Emitter`] to any number of sinks.
//!
//! Sinks: [`HumanSink`] (one line per step, live), [`JsonSink`] (the JSON lines of docs/architecture.md, "Events"),
//! [`MemorySink`] (tests, and later the hub reporter's spool).

use std::io::Write;
use std::sync::{Arc, Mutex};

use cairn_proto::{Event, EventKind};
use serde_json::Value;

pub trait EventSink: Send {
    fn emit(&mut self, event: &Event);
}

/// Assigns `seq` and time, and fans events out to sinks.
pub struct Emitter {
    host: String,
    seq: u64,
    sinks: Vec<Box<dyn EventSink>>,
}

impl Emitter {
    pub fn new(host: impl Into<String>) -> Self {
        Emitter {
            host: host.into(),
            seq: 0,
            sinks: Vec::new(),
        }
    }

    /// Continue numbering after `seq` (the daemon restores this from its journal).
    pub fn starting_at(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
    }

    pub fn with_sink(mut self, sink: Box<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    pub fn emit(
        &mut self,
        kind: EventKind,
        stage: &str,
        step: &str,
        source: &str,
        message: impl Into<String>,
        data: Value,
    ) {
        self.seq += 1;
        let event = Event {
            seq: self.seq,
            time: now_rfc3339(),
            host: self.host.clone(),
            kind,
            stage: stage.to_string(),
            step: step.to_string(),
            source: source.to_string(),
            message: message.into(),
            data,
        };
        for sink in &mut self.sinks {
            sink.emit(&event);
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One JSON object per line on the given writer.
pub struct JsonSink<W: Write + Send>(pub W);

impl<W: Write + Send> EventSink for JsonSink<W> {
    fn emit(&mut self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.0, "{line}");
            let _ = self.0.flush();
        }
    }
}

/// Keeps every event (shared, so a test can read them after the run).
#[derive(Clone, Default)]
pub struct MemorySink(pub Arc<Mutex<Vec<Event>>>);

impl MemorySink {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    fn emit(&mut self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

/// Human output: a header per stage and one line per step with its outcome.
pub struct HumanSink<W: Write + Send> {
    out: W,
    color: bool,
    step_index: usize,
    step_total: usize,
}

impl<W: Write + Send> HumanSink<W> {
    pub fn new(out: W, color: bool) -> Self {
        HumanSink {
            out,
            color,
            step_index: 0,
            step_total: 0,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

impl<W: Write + Send> EventSink for HumanSink<W> {
    fn emit(&mut self, e: &Event) {
        let line = match e.kind {
            EventKind::StageStarted => {
                self.step_index = 0;
                self.step_total = e.data.get("steps").and_then(Value::as_u64).unwrap_or(0) as usize;
                let title = self.paint("1", &format!("stage {}", e.stage));
                match self.step_total {
                    0 => format!("{title} (no steps left)"),
                    1 => format!("{title} (1 step)"),
                    n => format!("{title} ({n} steps)"),
                }
            }
            EventKind::StepChanged | EventKind::StepUnchanged | EventKind::StepFailed => {
                // A step without a source is the engine's own work after the stage's steps
                // (removing stale drop-ins): it is not one of the numbered steps.
                let numbered = !e.source.is_empty();
                if numbered {
                    self.step_index += 1;
                }
                let (mark, word) = match e.kind {
                    EventKind::StepChanged => (self.paint("32", "✔"), "changed"),
                    EventKind::StepFailed => (self.paint("31", "✘"), "FAILED"),
                    _ if e.data.get("skipped").is_some() => (self.paint("2", "·"), "skipped"),
                    _ => (self.paint("2", "✔"), "unchanged"),
                };
                let ms = e.data.get("ms").and_then(Value::as_u64).unwrap_or(0);
                let mut l = if numbered {
                    format!(
                        "  {mark} [{}/{}] {} ({}) {word} in {ms} ms",
                        self.step_index, self.step_total, e.step, e.source
                    )
                } else {
                    format!("  {mark} {} {word}", e.step)
                };
                if e.kind == EventKind::StepChanged {
                    if e.data.get("would_evaluate").is_some() {
                        l.push_str(&format!(": {}", e.message));
                    }
                    if let Some(changes) = e.data.get("changes").and_then(Value::as_array) {
                        for c in changes.iter().filter_map(Value::as_str) {
                            l.push_str(&format!("\n      {c}"));
                        }
                    }
                } else if !e.message.is_empty() {
                    l.push_str(&format!(": {}", e.message));
                }
                l
            }
            EventKind::StageFinished => String::new(),
            _ => format!("  {}", e.message),
        };
        if !line.is_empty() {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn human_lines_number_the_steps_but_not_the_engines_own_sweep() {
        let out = Shared::default();
        let mut em = Emitter::new("h").with_sink(Box::new(HumanSink::new(out.clone(), false)));
        em.emit(
            EventKind::StageStarted,
            "boot",
            "",
            "",
            "",
            json!({"steps": 1}),
        );
        em.emit(
            EventKind::StepChanged,
            "boot",
            "net",
            "ud.yaml:3",
            "",
            json!({"ms": 2, "changes": ["rewrote /etc/x"]}),
        );
        em.emit(
            EventKind::StepChanged,
            "boot",
            "remove stale drop-ins",
            "",
            "",
            json!({"changes": ["removed /etc/y"]}),
        );
        em.emit(
            EventKind::StageStarted,
            "network",
            "",
            "",
            "",
            json!({"steps": 0}),
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "stage boot (1 step)\n  ✔ [1/1] net (ud.yaml:3) changed in 2 ms\n      rewrote /etc/x\n  ✔ remove stale drop-ins changed\n      removed /etc/y\nstage network (no steps left)\n"
        );
    }
}
