//! The command runner: every subprocess Cairn starts goes through [`Runner`].
//!
//! Errors carry the full argv, the exit status and the tail of stderr. A timeout kills the
//! whole process group (a command that forks a daemon cannot hang a stage). Tests can swap
//! in a recording runner.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Arguments to hide in logs and errors (e.g. password hashes), by index in `args`.
    pub secret_args: Vec<usize>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An argument that must never be shown (logged as `<redacted>`).
    pub fn secret_arg(mut self, a: impl Into<String>) -> Self {
        self.secret_args.push(self.args.len());
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    /// The argv as a person would read it, secrets redacted.
    pub fn display(&self) -> String {
        let mut parts = vec![self.program.clone()];
        for (i, a) in self.args.iter().enumerate() {
            if self.secret_args.contains(&i) {
                parts.push("<redacted>".into());
            } else if a.is_empty() || a.contains(char::is_whitespace) {
                parts.push(format!("'{a}'"));
            } else {
                parts.push(a.clone());
            }
        }
        parts.join(" ")
    }

    /// Wrap this command to run inside `root` with chroot(8).
    pub fn in_chroot(self, root: &std::path::Path) -> Cmd {
        let shift = 2;
        let mut args = vec![root.display().to_string(), self.program];
        args.extend(self.args);
        Cmd {
            program: "chroot".into(),
            args,
            env: self.env,
            stdin: self.stdin,
            timeout: self.timeout,
            secret_args: self.secret_args.iter().map(|i| i + shift).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting `{argv}`: {source}")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` exited with status {status}{}", tail_suffix(.stderr_tail))]
    Exit {
        argv: String,
        status: i32,
        stderr_tail: String,
    },
    /// A dry run asked to execute a command; nothing was run.
    #[error("a dry run runs no commands; `{argv}` was not run")]
    DryRun { argv: String },
    #[error("`{argv}` did not finish within {secs} s and was killed{}", tail_suffix(.stderr_tail))]
    Timeout {
        argv: String,
        secs: u64,
        stderr_tail: String,
    },
}

/// The runner of a dry run: refuses every command, so a step's dry-run path that would
/// execute something fails loudly instead of changing (or even querying) the target.
#[derive(Debug, Default, Clone)]
pub struct DryRunRunner;

impl Runner for DryRunRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        Err(RunError::DryRun {
            argv: cmd.display(),
        })
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// The last lines of a command's error output (at most 10 lines / 2000 bytes).
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(10);
    let mut t = lines[start..].join(" | ");
    if t.len() > 2000 {
        let cut = t.len() - 2000;
        let cut = (cut..t.len())
            .find(|i| t.is_char_boundary(*i))
            .unwrap_or(t.len());
        t = format!("…{}", &t[cut..]);
    }
    t
}

/// Runs commands. `run` returns the output whatever the exit status; `check` fails on non-zero.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    fn check(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.run(cmd)?;
        if out.status == 0 {
            Ok(out)
        } else {
            let mut err = out.stderr.clone();
            if err.iter().all(u8::is_ascii_whitespace) {
                err = out.stdout.clone();
            }
            Err(RunError::Exit {
                argv: cmd.display(),
                status: out.status,
                stderr_tail: tail(&err),
            })
        }
    }
}

/// Runs real processes.
#[derive(Debug, Default, Clone)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.display();
        let started = Instant::now();
        tracing::debug!(target: "cairn::run", command = %argv, "running");
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in &cmd.env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|source| RunError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        if let (Some(data), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let out_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let err_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(source) => {
                    return Err(RunError::Spawn { argv, source });
                }
            }
            if let Some(limit) = cmd.timeout {
                if started.elapsed() > limit {
                    kill_group(child.id());
                    let _ = child.wait();
                    break None;
                }
            }
            std::thread::sleep(poll_interval(started.elapsed()));
        };
        let stdout = out_thread.join().unwrap_or_default();
        let stderr = err_thread.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(RunError::Timeout {
                argv,
                secs: cmd.timeout.map_or(0, |t| t.as_secs()),
                stderr_tail: tail(&stderr),
            });
        };
        let code = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        tracing::debug!(target: "cairn::run", command = %argv, status = code,
            elapsed_ms = started.elapsed().as_millis() as u64, "finished");
        Ok(Output {
            status: code,
            stdout,
            stderr,
        })
    }
}

/// Poll quickly at first (most commands take milliseconds), then back off.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(20) {
        Duration::from_micros(200)
    } else if elapsed < Duration::from_secs(1) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(20)
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_reports_failures_with_stderr_tail() {
        let r = SystemRunner;
        let out = r.check(&Cmd::new("sh").args(["-c", "echo hi"])).unwrap();
        assert_eq!(out.stdout_str(), "hi\n");
        let err = r
            .check(&Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("status 3") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let r = SystemRunner;
        let started = Instant::now();
        let err = r
            .run(
                &Cmd::new("sh")
                    .args(["-c", "sleep 30 & sleep 30"])
                    .timeout(Duration::from_millis(300)),
            )
            .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn secrets_are_redacted_and_chroot_shifts_them() {
        let c = Cmd::new("useradd")
            .arg("-p")
            .secret_arg("$6$hash")
            .arg("bob");
        assert_eq!(c.display(), "useradd -p <redacted> bob");
        let c = c.in_chroot(std::path::Path::new("/r"));
        assert_eq!(c.display(), "chroot /r useradd -p <redacted> bob");
    }
}
