//! Writing a command's output to standard output and standard error.
//!
//! Why this exists: `println!` panics (exit 101, "failed printing to stdout:
//! Broken pipe") when the reader of a pipe goes away, as in
//! `iomt-edge outbox peek | head -1`. Unix tools end quietly there. The
//! usual way, restoring SIGPIPE's default action, would also let a write to a
//! closed network or D-Bus socket kill the daemon and the demo (rustls,
//! rumqttc and zbus write to sockets; Rust ignores SIGPIPE for that reason),
//! and it would end a one-shot command with a signal instead of its exit code.
//! So SIGPIPE stays ignored everywhere and every command writes through
//! [`outln!`]/[`out!`] (and [`errln!`] for stderr) instead:
//!
//! - a closed stdout (EPIPE) is remembered and later output is dropped; the
//!   command finishes quietly with its usual exit code, and a command that
//!   streams output checks [`stdout_gone`] to stop early (`outbox peek`; the
//!   demo stops cleanly);
//! - any other write error (a full disk under `> file`) is returned as an
//!   [`OutputError`] that names standard output, so the command fails with
//!   exit 1 and one sentence;
//! - stderr write errors are ignored: there is nowhere left to report them.
//!
//! The daemon's stdout sink does not use this: it must see the error and keep
//! the readings queued.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Standard output refused a write for a reason other than a closed pipe.
#[derive(Debug)]
pub(crate) struct OutputError(pub std::io::Error);

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// True once a write found that nobody reads standard output any more.
pub(crate) fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// Writes formatted text to stdout and flushes it (so a closed pipe is seen
/// at once). A closed pipe is not an error: see the module docs.
pub(crate) fn write_stdout(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    if stdout_gone() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(OutputError(e)),
    }
}

/// Writes formatted text to stderr, ignoring errors (never panics).
pub(crate) fn write_stderr(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `println!` that does not panic on a closed pipe; returns
/// `Result<(), OutputError>`.
macro_rules! outln {
    () => { $crate::cli::out::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that does not panic on a closed pipe; returns
/// `Result<(), OutputError>`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write_stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::out::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {errln, out, outln};
