//! `iomt-edge check-config FILE`: validate a config file and say what it sets up.

use super::out::{errln, outln};
use super::EXIT_USAGE;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The TOML config file to check.
    pub file: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match crate::config::load(&a.file) {
        Ok(c) => {
            // As `run` does: an inline secret in a file others can read.
            crate::config::secret::warn_if_config_world_readable(&a.file, &c);
            outln!("{}: OK", a.file.display())?;
            outln!("  gateway {} (state in {})", c.gateway.id, c.gateway.state_dir.display())?;
            outln!("  {} device(s), outbox bounded to {}", c.devices.len(), c.outbox.max_bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            errln!("{e}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}
