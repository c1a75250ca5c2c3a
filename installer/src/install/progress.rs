//! Progress of long work (verifying, writing): a bar with bytes, rate and ETA on a terminal,
//! one JSON object per second with `--output json`, a log line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
}

/// One phase's progress reporter.
pub struct Progress {
    mode: Mode,
    phase: &'static str,
    total: Option<u64>,
    started: Instant,
    last: Instant,
    every: Duration,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Start reporting `phase` ("verify", "write") of `total` bytes when known.
    pub fn start(mode: Mode, phase: &'static str, total: Option<u64>) -> Self {
        let now = Instant::now();
        let bar = (mode == Mode::Human && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(t) => {
                    ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr_with_hz(2))
                }
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(2)),
            };
            let template = if total.is_some() {
                "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
            } else {
                "{msg:>8} {spinner} {bytes} {binary_bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(phase);
            bar
        });
        Self {
            mode,
            phase,
            total,
            started: now,
            last: now,
            every: if mode == Mode::Json {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
            bar,
        }
    }

    /// `done` bytes of the phase are finished.
    pub fn update(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        self.report(done, false);
    }

    /// The phase is over.
    pub fn finish(&mut self, done: u64) {
        if let Some(bar) = self.bar.take() {
            bar.set_position(done);
            bar.finish_and_clear();
        }
        if self.mode == Mode::Json {
            self.report(done, true);
        }
    }

    fn report(&self, done: u64, finished: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = done as f64 / secs;
        let eta = self
            .total
            .filter(|_| rate > 0.0 && !finished)
            .map(|t| (t.saturating_sub(done) as f64 / rate).round() as u64);
        match self.mode {
            Mode::Json => {
                let line = serde_json::json!({
                    "kind": "progress",
                    "phase": self.phase,
                    "bytes": done,
                    "total": self.total,
                    "bytes_per_sec": rate.round() as u64,
                    "eta_seconds": eta,
                    "finished": finished,
                });
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Mode::Human => {
                let pct = self
                    .total
                    .filter(|t| *t > 0)
                    .map(|t| format!(" ({:.0}%)", done as f64 * 100.0 / t as f64))
                    .unwrap_or_default();
                tracing::info!(
                    "{}: {}{pct} at {}/s{}",
                    self.phase,
                    human_bytes(done),
                    human_bytes(rate as u64),
                    eta.map(|e| format!(", {e} s left")).unwrap_or_default()
                );
            }
        }
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
