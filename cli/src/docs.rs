//! Shell completions and man pages generated from a binary's clap definition, shared by
//! every Cairn binary (`completions SHELL`, `manpages DIR`).

use std::io::Write;
use std::path::Path;

/// Print the completion script for `shell` on stdout. Generated into memory first:
/// clap_complete panics on a write error (e.g. `| head`), a closed pipe is not an error.
pub fn print_completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    let _ = std::io::stdout().write_all(&script);
}

/// Write `NAME.1` and one page per subcommand into `dir` (created if missing).
pub fn write_manpages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
}
