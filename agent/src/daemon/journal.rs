//! The apply journal, `STATE/journal.jsonl`: which profile is being applied and every step
//! that completed, one fsynced JSON record per line.
//!
//! After a crash or power loss, a restart that applies the same profile (same version and
//! ETag) reads it back: steps recorded as done are not run again (the engine reports them
//! `step_unchanged` with `data.resumed = true`) and the step that was interrupted runs
//! again. A new profile starts a new journal (the file is replaced atomically).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store;
use crate::engine::{StepGate, StepJournal, StepResult};
use cairn_userdata::model::Step;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Record {
    /// An apply of this profile began.
    Begin {
        profile: String,
        version: u64,
        etag: String,
        time: String,
    },
    StepStarted {
        stage: String,
        index: usize,
        step: String,
        time: String,
    },
    StepDone {
        stage: String,
        index: usize,
        step: String,
        result: StepOutcome,
        time: String,
    },
    StepFailed {
        stage: String,
        index: usize,
        step: String,
        message: String,
        time: String,
    },
    /// A layer applied as a whole (the Kubernetes layers), or one that was not.
    Layer {
        layer: String,
        result: LayerResult,
        message: String,
        time: String,
    },
    /// The apply ended. An interrupted apply has no end record.
    End {
        result: EndResult,
        message: String,
        time: String,
    },
}

/// How a completed step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Changed,
    Unchanged,
    Skipped,
}

/// What became of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerResult {
    Applied,
    /// Not supported by this agent: not applied.
    Unsupported,
}

/// How an apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndResult {
    Applied,
    Failed,
}

impl EndResult {
    pub fn as_str(self) -> &'static str {
        match self {
            EndResult::Applied => "applied",
            EndResult::Failed => "failed",
        }
    }
}

/// The profile an apply is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRef {
    pub name: String,
    pub version: u64,
    pub etag: String,
}

/// The journal read back.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub records: Vec<Record>,
}

impl View {
    pub fn read(path: &Path) -> View {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(_) => return View::default(),
        };
        let records = store::complete_lines(&bytes)
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        View { records }
    }

    pub fn profile(&self) -> Option<ProfileRef> {
        self.records.iter().find_map(|r| match r {
            Record::Begin {
                profile,
                version,
                etag,
                ..
            } => Some(ProfileRef {
                name: profile.clone(),
                version: *version,
                etag: etag.clone(),
            }),
            _ => None,
        })
    }

    pub fn begun_at(&self) -> Option<&str> {
        self.records.iter().find_map(|r| match r {
            Record::Begin { time, .. } => Some(time.as_str()),
            _ => None,
        })
    }

    /// The end record's result and message, if the apply ended (a failed apply that was
    /// resumed afterwards has not ended).
    pub fn end(&self) -> Option<(EndResult, &str)> {
        let mut end = None;
        for r in &self.records {
            match r {
                Record::End {
                    result, message, ..
                } => end = Some((*result, message.as_str())),
                Record::StepStarted { .. } => end = None,
                _ => {}
            }
        }
        end
    }

    /// `(stage, index, step)` of every step recorded as done.
    pub fn completed(&self) -> HashSet<(String, usize, String)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::StepDone {
                    stage, index, step, ..
                } => Some((stage.clone(), *index, step.clone())),
                _ => None,
            })
            .collect()
    }

    /// The last step that started and has not finished (the one a crash interrupted, or
    /// the one running now).
    pub fn in_progress(&self) -> Option<(&str, usize, &str, &str)> {
        let mut current = None;
        for r in &self.records {
            match r {
                Record::StepStarted {
                    stage,
                    index,
                    step,
                    time,
                } => current = Some((stage.as_str(), *index, step.as_str(), time.as_str())),
                Record::StepDone { .. } | Record::StepFailed { .. } | Record::End { .. } => {
                    current = None
                }
                _ => {}
            }
        }
        current
    }

    pub fn failed(&self) -> Option<&Record> {
        self.records
            .iter()
            .rev()
            .find(|r| matches!(r, Record::StepFailed { .. }))
    }
}

/// The journal being written during an apply; the engine's [`StepJournal`].
pub struct Journal {
    path: PathBuf,
    file: File,
    completed: HashSet<(String, usize, String)>,
    stop: Arc<AtomicBool>,
}

impl Journal {
    /// Start a new journal for `profile` (replacing the old one atomically).
    pub fn begin(path: &Path, profile: &ProfileRef, stop: Arc<AtomicBool>) -> io::Result<Journal> {
        let rec = Record::Begin {
            profile: profile.name.clone(),
            version: profile.version,
            etag: profile.etag.clone(),
            time: store::now(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        line.push(b'\n');
        store::write_atomic(path, &line)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: store::open_append(path)?,
            completed: HashSet::new(),
            stop,
        })
    }

    /// Continue the journal of an interrupted apply of the same profile.
    pub fn resume(path: &Path, view: &View, stop: Arc<AtomicBool>) -> io::Result<Journal> {
        // A torn last line (crash mid-write) would glue onto the next record: cut it off.
        let bytes = std::fs::read(path)?;
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if keep != bytes.len() {
            store::write_atomic(path, &bytes[..keep])?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file: store::open_append(path)?,
            completed: view.completed(),
            stop,
        })
    }

    pub fn completed_steps(&self) -> usize {
        self.completed.len()
    }

    /// Append a record and fsync it. A journal that cannot be written is logged: the apply
    /// goes on (at worst, a crash re-runs a step, which steps are written to survive).
    pub fn record(&mut self, rec: &Record) {
        let result = serde_json::to_vec(rec)
            .map_err(io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                self.file.write_all(&line)?;
                self.file.sync_data()
            });
        if let Err(e) = result {
            tracing::error!("writing the journal {}: {e}", self.path.display());
        }
    }
}

impl StepJournal for Journal {
    fn before_step(&mut self, stage: &str, index: usize, step: &Step) -> StepGate {
        if self.stop.load(Ordering::SeqCst) {
            return StepGate::Stop;
        }
        if self
            .completed
            .contains(&(stage.to_string(), index, step.name.clone()))
        {
            return StepGate::AlreadyDone;
        }
        self.record(&Record::StepStarted {
            stage: stage.into(),
            index,
            step: step.name.clone(),
            time: store::now(),
        });
        StepGate::Run
    }

    fn after_step(&mut self, stage: &str, index: usize, step: &Step, result: StepResult<'_>) {
        let time = store::now();
        let rec = match result {
            StepResult::Failed(message) => Record::StepFailed {
                stage: stage.into(),
                index,
                step: step.name.clone(),
                message: message.into(),
                time,
            },
            other => Record::StepDone {
                stage: stage.into(),
                index,
                step: step.name.clone(),
                result: match other {
                    StepResult::Changed => StepOutcome::Changed,
                    StepResult::Skipped => StepOutcome::Skipped,
                    _ => StepOutcome::Unchanged,
                },
                time,
            },
        };
        self.record(&rec);
        if let Record::StepDone {
            stage, index, step, ..
        } = rec
        {
            self.completed.insert((stage, index, step));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_read_back_and_a_torn_line_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("journal.jsonl");
        let p = ProfileRef {
            name: "p".into(),
            version: 2,
            etag: "\"e\"".into(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut j = Journal::begin(&path, &p, stop.clone()).unwrap();
        j.record(&Record::StepStarted {
            stage: "boot".into(),
            index: 0,
            step: "a".into(),
            time: store::now(),
        });
        j.record(&Record::StepDone {
            stage: "boot".into(),
            index: 0,
            step: "a".into(),
            result: StepOutcome::Changed,
            time: store::now(),
        });
        j.record(&Record::StepStarted {
            stage: "boot".into(),
            index: 1,
            step: "b".into(),
            time: store::now(),
        });
        drop(j);
        store::open_append(&path)
            .unwrap()
            .write_all(b"{\"rec\":\"step_do")
            .unwrap();
        let view = View::read(&path);
        assert_eq!(view.profile(), Some(p));
        assert_eq!(view.in_progress().map(|x| x.2), Some("b"));
        assert!(view.end().is_none());
        let mut j = Journal::resume(&path, &view, stop).unwrap();
        assert_eq!(j.completed_steps(), 1);
        j.record(&Record::End {
            result: EndResult::Applied,
            message: String::new(),
            time: store::now(),
        });
        let view = View::read(&path);
        assert_eq!(view.end().map(|e| e.0), Some(EndResult::Applied));
        // The records' spelling on disk is unchanged by their typing.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""result":"changed""#), "{text}");
        assert!(text.contains(r#""result":"applied""#), "{text}");
        assert_eq!(view.records.len(), 5, "{:?}", view.records);
    }
}
