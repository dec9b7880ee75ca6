//! `iomt-edge run --config FILE`: the daemon (what systemd starts).
//!
//! Signals: SIGTERM or SIGINT stop it cleanly; SIGHUP re-reads the config file
//! and logs whether it changed (a restart applies it); SIGUSR1 or SIGUSR2 log a
//! status line. None of the last three stops it.

use super::out::errln;
use super::EXIT_USAGE;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The config file.
    #[arg(long, short, default_value = "/etc/iomt-edge/iomt-edge.toml", env = "IOMT_EDGE_CONFIG")]
    pub(crate) config: PathBuf,
    /// Print a JSON line per committed group of readings on stdout (for crash tests).
    #[arg(long, hide = true)]
    pub(crate) report_commits: bool,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    // The same checks as `check-config` (file and machine), so the two never disagree.
    let config = match super::check_config::load_for_run(&a.config) {
        Ok(c) => c,
        Err(e) => {
            errln!("{e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    // The text the gateway starts from, for SIGHUP's "did the file change?".
    let text = crate::config::read_text(&a.config).unwrap_or_default();
    crate::config::secret::warn_if_config_world_readable(&a.config, &config);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = crate::service::handle_signals(shutdown.clone(), crate::service::Hangup::Reload);
        let opts = crate::service::RunOptions {
            report_commits: a.report_commits,
            config_file: Some((a.config.clone(), text)),
            signals,
            // SIGHUP judges an edited file as the next start will.
            check_config: Some(|p| super::check_config::load_for_run(p).map(|_| ()).map_err(|e| e.to_string())),
        };
        crate::service::run(config, opts, shutdown, |_| {}).await
    })?;
    Ok(ExitCode::SUCCESS)
}
