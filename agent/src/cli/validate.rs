//! `cairn-agent validate`: check user-data files and cluster profiles, print every problem.

use std::path::{Path, PathBuf};

use cairn_proto::profile::Arch;
use cairn_userdata::diag::{Location, Severity};
use cairn_userdata::load;
use cairn_userdata::profile::Finding;

use super::{ArchArg, Error, Outcome, Output};
use crate::{kubernetes, profile};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Treat unknown keys as errors instead of warnings.
    #[arg(long)]
    pub strict: bool,
    /// Check profiles for this architecture (repeatable); a missing artifact is an
    /// error. [default: amd64 and arm64, where an architecture the profile lists no
    /// artifact for at all is a warning: the profile is not meant for it, or is a
    /// template]
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    pub arches: Vec<ArchArg>,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// User-data files, cluster profiles, or directories (their *.yaml files, in
    /// lexical order).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Is `path` a file holding a cluster profile (rather than user-data)?
pub fn is_profile(path: &Path) -> bool {
    path.is_file()
        && load::read_text(path).is_ok_and(|t| cairn_userdata::profile::looks_like_profile(&t))
}

/// One line of the report.
struct Reported {
    location: String,
    file: String,
    line: usize,
    col: usize,
    severity: Severity,
    message: String,
}

impl Reported {
    fn of(location: &Location, severity: Severity, message: &str) -> Self {
        Reported {
            location: location.to_string(),
            file: location.file.to_string(),
            line: location.pos.line,
            col: location.pos.col,
            severity,
            message: message.to_string(),
        }
    }
}

/// Check the files; print each problem (stdout) and a summary (stderr, human output).
/// [`Outcome::Invalid`] when any error was found.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let expanded = load::expand(&args.files)?;
    let (profiles, user_data): (Vec<PathBuf>, Vec<PathBuf>) =
        expanded.into_iter().partition(|f| is_profile(f));
    let mut reported = Vec::new();
    for p in &profiles {
        let findings = check_profile(p, &args.arches)?;
        reported.extend(
            findings
                .iter()
                .map(|f| Reported::of(&f.location, f.severity, &f.message)),
        );
    }
    let (steps, stages) = if user_data.is_empty() {
        (0, 0)
    } else {
        let loaded = load::load(&user_data, args.strict)?;
        reported.extend(
            loaded
                .diags
                .sorted()
                .iter()
                .map(|d| Reported::of(&d.location, d.severity, &d.message)),
        );
        (loaded.config.step_count(), loaded.config.stages.len())
    };
    let errors = reported
        .iter()
        .filter(|r| r.severity == Severity::Error)
        .count();
    if args.output == Output::Json {
        let items: Vec<serde_json::Value> = reported
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file,
                    "line": r.line,
                    "col": r.col,
                    "severity": severity_name(r.severity),
                    "message": r.message,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for r in &reported {
            println!(
                "{}: {}: {}",
                r.location,
                severity_name(r.severity),
                r.message
            );
        }
        let mut what = format!(
            "{} file(s); {steps} step(s) in {stages} stage(s)",
            user_data.len() + profiles.len()
        );
        if !profiles.is_empty() {
            what.push_str(&format!("; {} cluster profile(s)", profiles.len()));
        }
        eprintln!(
            "{}: {errors} error(s), {} warning(s) in {what}",
            if errors == 0 { "valid" } else { "invalid" },
            reported.len() - errors,
        );
    }
    Ok(if errors > 0 {
        Outcome::Invalid { errors }
    } else {
        Outcome::Done
    })
}

fn severity_name(severity: Severity) -> &'static str {
    if severity == Severity::Error {
        "error"
    } else {
        "warning"
    }
}

/// Every problem of one profile file: how it reads, then the rules of `apply` for each
/// architecture. Without `--arch`, an architecture the profile lists no artifact for at
/// all gets its missing artifacts as warnings (the profile is not meant for it, or is a
/// template); with `--arch`, or when the profile lists some artifacts for it, they are
/// errors.
pub fn check_profile(path: &Path, arches: &[ArchArg]) -> Result<Vec<Finding>, load::LoadError> {
    let checked = match load::read_profile(path) {
        Ok(c) => c,
        Err(load::ProfileFileError::Refused(r)) => return Ok(r.findings),
        Err(load::ProfileFileError::Read(e)) => return Err(e),
    };
    let explicit = !arches.is_empty();
    let arches: Vec<Arch> = if explicit {
        arches.iter().map(|a| a.arch()).collect()
    } else {
        vec![Arch::Amd64, Arch::Arm64]
    };
    let mut out = checked.warnings.clone();
    for arch in arches {
        let Err(invalid) = profile::validate(&checked, &profile::Machine::of_arch(arch)) else {
            continue;
        };
        let listed = !kubernetes::bundle::profile_artifacts(&checked.profile, &[arch]).is_empty();
        for mut problem in invalid.problems {
            let missing = matches!(
                problem.kind,
                kubernetes::PlanErrorKind::MissingArtifact { .. }
            );
            if missing && !explicit && !listed {
                problem.finding.severity = Severity::Warning;
                problem.finding.message = format!(
                    "{} (the profile lists no artifacts for {}: it cannot be applied to such a machine as it is)",
                    problem.finding.message,
                    kubernetes::arch_name(arch)
                );
            }
            if missing {
                // The reader already warned about this file for the arches the profile does
                // not list files for; this finding says it for this arch, once.
                out.retain(|f| {
                    !(f.severity == Severity::Warning && f.location == problem.finding.location)
                });
            }
            if !out.contains(&problem.finding) {
                out.push(problem.finding);
            }
        }
    }
    Ok(out)
}
