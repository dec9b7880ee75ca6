//! Log hygiene shared by every stage: where the log goes, how an error chain
//! reads, and saying a recurring problem once per episode.
//!
//! Why hand-written: the gateway's log ends up in journald, read by someone
//! on call. A reconnect loop that warns at every retry buries the one line
//! that matters, colour codes show up as `^[[32m` in `journalctl`, and an
//! error whose text already holds its cause (`cannot read X: No such file or
//! directory (os error 2)`) printed with the cause again reads as two faults.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Sets up logging to stderr (journald picks it up under systemd).
///
/// `level` is a tracing filter (`info`, `debug`, `iomt_edge=trace`...); without
/// one, `RUST_LOG` decides, else `info`. Colours only when stderr is a
/// terminal and `NO_COLOR` is not set (<https://no-color.org>): under systemd
/// stderr is a socket to journald, which stores escape codes verbatim.
pub(crate) fn init(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let mut filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // The storage engine's own messages (sled's internal corruption and
    // recovery details) are not for operators: the outbox says what happened
    // in plain words. `RUST_LOG=sled=debug` still shows them.
    let asked_for_sled = level.map(str::to_string).or_else(|| std::env::var("RUST_LOG").ok()).is_some_and(|l| l.contains("sled"));
    if !asked_for_sled {
        if let Ok(d) = "sled=off".parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref()))
        .with_target(false)
        .try_init();
}

/// Whether log lines get ANSI colours: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string.
pub(crate) fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// An error and its causes in one line, `outer: inner: root`, leaving out a
/// cause whose text the line already holds (many errors print their source
/// in their own message, and `{:#}` would print it a second time).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// A recurring problem (a connection that keeps failing, a device that stays
/// silent) told once per episode: the first occurrence is logged at warn or
/// error, repeats at debug, and the end of the episode at info with how many
/// repeats it had and how long it lasted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Episode {
    since: Option<Instant>,
    repeats: u64,
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpisodeEnd {
    /// Occurrences after the first (the ones logged at debug only).
    pub(crate) repeats: u64,
    /// From the first occurrence to the end.
    pub(crate) lasted: Duration,
}

impl Episode {
    /// Records one occurrence; true when it is the first of its episode (log it
    /// at warn or error), false for a repeat (log it at debug at most).
    pub(crate) fn occurred(&mut self) -> bool {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            self.repeats = 0;
            true
        } else {
            self.repeats += 1;
            false
        }
    }

    /// Whether an episode is open.
    pub(crate) fn is_open(&self) -> bool {
        self.since.is_some()
    }

    /// Closes the episode (the problem is gone); `Some` when one was open.
    pub(crate) fn end(&mut self) -> Option<EpisodeEnd> {
        let since = self.since.take()?;
        Some(EpisodeEnd { repeats: std::mem::take(&mut self.repeats), lasted: since.elapsed() })
    }
}

/// An [`Episode`] that tasks share (a sink's sends run concurrently): the
/// same calls through `&self`. Only one caller is told that an episode began,
/// and only one that it ended.
#[derive(Debug, Default)]
pub(crate) struct SharedEpisode(std::sync::Mutex<Episode>);

impl SharedEpisode {
    fn lock(&self) -> std::sync::MutexGuard<'_, Episode> {
        // An Episode is two plain fields, valid after any panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Episode::occurred`].
    pub(crate) fn occurred(&self) -> bool {
        self.lock().occurred()
    }

    /// [`Episode::is_open`].
    pub(crate) fn is_open(&self) -> bool {
        self.lock().is_open()
    }

    /// [`Episode::end`].
    pub(crate) fn end(&self) -> Option<EpisodeEnd> {
        self.lock().end()
    }
}

impl std::fmt::Display for EpisodeEnd {
    /// "after 3 more failures in 12s"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lasted = humantime::format_duration(Duration::from_secs(self.lasted.as_secs()));
        match self.repeats {
            0 => write!(f, "after {lasted}"),
            1 => write!(f, "after 1 more failure in {lasted}"),
            n => write!(f, "after {n} more failures in {lasted}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_logs_the_first_occurrence_only_until_it_ends() {
        let mut e = Episode::default();
        assert!(!e.is_open());
        assert_eq!(e.end(), None, "no episode, nothing to close");
        assert!(e.occurred(), "the first failure is logged");
        assert!(!e.occurred() && !e.occurred(), "repeats are not");
        assert!(e.is_open());
        let end = e.end().unwrap();
        assert_eq!(end.repeats, 2);
        assert!(end.to_string().starts_with("after 2 more failures in "), "{end}");
        assert!(e.occurred(), "a new episode is logged again");
        assert_eq!(e.end().unwrap().repeats, 0);
    }

    #[test]
    fn a_shared_episode_tells_one_of_many_tasks() {
        let e = std::sync::Arc::new(SharedEpisode::default());
        let firsts: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| (0..100).filter(|_| e.occurred()).count())).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(firsts, 1, "800 failures in one episode: one first");
        assert!(e.is_open());
        let end = e.end().unwrap();
        assert_eq!(end.repeats, 799);
        assert!(!e.is_open());
        assert_eq!(e.end(), None, "only one caller is told it ended");
        assert!(e.occurred(), "the next failure starts a new episode");
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read /x: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::from_raw_os_error(2);
        let line = error_chain(&Outer(io));
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert!(line.starts_with("cannot read /x: "), "{line}");
        // Causes that add something are kept.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot store")]
        struct Store(#[source] std::io::Error);
        let line = error_chain(&Store(std::io::Error::other("disk full")));
        assert_eq!(line, "cannot store: disk full");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(!use_colour(false, None), "journald, pipes and files get plain text");
        assert!(use_colour(true, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(use_colour(true, Some(OsStr::new(""))), "NO_COLOR= (empty) does not count");
    }
}
