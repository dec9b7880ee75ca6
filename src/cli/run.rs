//! `iomt-edge run --config FILE`: the daemon (what systemd starts).

use super::EXIT_USAGE;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, default_value = "/etc/iomt-edge/iomt-edge.toml", env = "IOMT_EDGE_CONFIG")]
    pub config: PathBuf,
    /// Print a JSON line per committed group of readings on stdout (for crash tests).
    #[arg(long, hide = true)]
    pub report_commits: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    // The same checks as `check-config` (file and machine), so the two never disagree.
    let config = match super::check_config::load_for_run(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        crate::service::cancel_on_signals(shutdown.clone());
        let opts = crate::service::RunOptions { report_commits: a.report_commits };
        crate::service::run(config, opts, shutdown, |_| {}).await
    })?;
    Ok(ExitCode::SUCCESS)
}
