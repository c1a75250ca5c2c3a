//! `commands`, `runcmd`, `bootcmd`: strings under `sh -c`, lists exec'd, in the target.
//!
//! A command step runs according to its frequency (always, once per boot, once) recorded
//! in Cairn's state, so a second apply does not run it again unless asked to.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Changes, StepCx, StepError};
use crate::events::now_rfc3339;
use crate::host::Cmd;
use crate::state::CommandRecord;
use cairn_userdata::model::{CommandSpec, Frequency};

/// How long one command may run before its process group is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A digest of the commands, so an edited step counts as new.
pub fn digest(cmds: &[CommandSpec]) -> String {
    let mut h = Sha256::new();
    for c in cmds {
        match c {
            CommandSpec::Shell(s, _) => {
                h.update(b"sh\0");
                h.update(s.as_bytes());
            }
            CommandSpec::Exec(argv, _) => {
                h.update(b"exec\0");
                for a in argv {
                    h.update(a.as_bytes());
                    h.update(b"\0");
                }
            }
        }
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..12])
}

pub fn apply(cx: &mut StepCx, cmds: &[CommandSpec]) -> Result<Changes, StepError> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    let key = format!("{}#{}", cx.step_key, digest(cmds));
    let already = match (cx.frequency, cx.state.commands.get(&key)) {
        (Frequency::Always, _) | (_, None) => false,
        (Frequency::Once, Some(_)) => true,
        (Frequency::PerBoot, Some(rec)) => !cx.boot_id.is_empty() && rec.boot_id == cx.boot_id,
    };
    if already {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    for c in cmds {
        if cx.dry_run {
            changes.push(format!("would run `{}`", c.display()));
            continue;
        }
        changes.push(format!("ran `{}`", c.display()));
        let cmd = match c {
            CommandSpec::Shell(s, _) => Cmd::new("/bin/sh").arg("-c").arg(s),
            CommandSpec::Exec(argv, _) => Cmd::new(&argv[0]).args(argv[1..].iter().cloned()),
        }
        .timeout(COMMAND_TIMEOUT);
        cx.host.check_in_target(cmd).map_err(|e| {
            StepError::msg(format!("command at line {}: {e}", c.location().pos.line))
        })?;
    }
    if !cx.dry_run && cx.frequency != Frequency::Always {
        cx.state.commands.insert(
            key,
            CommandRecord {
                boot_id: cx.boot_id.clone(),
                time: now_rfc3339(),
            },
        );
    }
    Ok(changes)
}
