//! Located diagnostics: every problem found in user-data, printed as `FILE:LINE:COL: message`.
//!
//! Parsing and validation never stop at the first problem; they push [`Diagnostic`]s into a
//! [`Diagnostics`] list and go on, so a user sees every mistake in one run.

use std::fmt;
use std::sync::Arc;

/// A position in a source file (both 1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A position together with the file it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub pos: Pos,
}

impl Location {
    pub fn new(file: &Arc<str>, pos: Pos) -> Self {
        Location {
            file: Arc::clone(file),
            pos,
        }
    }

    /// `file:line`, the form used in events.
    pub fn short(&self) -> String {
        format!("{}:{}", self.file, self.pos.line)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.pos.line, self.pos.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {}: {}", self.location, sev, self.message)
    }
}

/// Collects diagnostics for one or more files.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    /// With `--strict`, unknown keys are errors instead of warnings.
    pub strict: bool,
}

impl Diagnostics {
    pub fn new(strict: bool) -> Self {
        Diagnostics {
            items: Vec::new(),
            strict,
        }
    }

    pub fn error(&mut self, location: Location, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Error,
            location,
            message: message.into(),
        });
    }

    pub fn warning(&mut self, location: Location, message: impl Into<String>) {
        self.items.push(Diagnostic {
            severity: Severity::Warning,
            location,
            message: message.into(),
        });
    }

    /// An unknown key: a warning, or an error under `--strict`.
    pub fn unknown(&mut self, location: Location, message: impl Into<String>) {
        if self.strict {
            self.error(location, message);
        } else {
            self.warning(location, message);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// All diagnostics, sorted by file, line and column.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut v: Vec<&Diagnostic> = self.items.iter().collect();
        v.sort_by(|a, b| {
            (&a.location.file, a.location.pos).cmp(&(&b.location.file, b.location.pos))
        });
        v
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }
}
