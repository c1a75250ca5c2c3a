//! `cairn-agent run`: the daemon ([`crate::daemon`]).

use std::path::PathBuf;
use std::time::Duration;

use super::{Error, Outcome, Output};
use crate::daemon;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent configuration (user-data with a `cairn:` block) [default:
    /// /etc/cairn/agent.yaml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Identity, journal, event spool and the last profile.
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The target root profiles are applied to.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// How events are printed on stdout (the journal, under systemd).
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Seconds between runs of the applied profile's `reconcile` stage.
    #[arg(long, default_value_t = daemon::DEFAULT_RECONCILE_SECS, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_interval: u64,
}

/// Run the daemon until it stops; it reports its own errors, and its exit status is
/// passed on ([`Outcome::Stopped`]).
pub fn run(args: Args) -> Result<Outcome, Error> {
    let code = daemon::run(daemon::RunOptions {
        config: args.config,
        state_dir: args.state_dir,
        root: args.root,
        reconcile_every: Duration::from_secs(args.reconcile_interval),
        output: match args.output {
            Output::Human => daemon::EventOutput::Human,
            Output::Json => daemon::EventOutput::Json,
        },
    });
    Ok(Outcome::Stopped { code })
}
