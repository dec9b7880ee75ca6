//! The file sink under what an operator does to its file, with the real
//! gateway binary (simulated devices, `--report-commits`):
//!
//! - `a_full_sink_disk_leaves_whole_lines_and_loses_nothing`: the sink file is
//!   on a small tmpfs that the test fills and frees three times while readings
//!   stream in. A write that fails half-way must leave the file as it was (no
//!   partial line that the retry appends onto), and every committed reading
//!   ends up in a whole line once there is room. Needs root (mount -t tmpfs):
//!   SKIPPED otherwise, a failure under IOMT_REQUIRE_ALL=1.
//! - `a_sink_file_removed_or_replaced_while_running_loses_nothing`: the test
//!   removes the file (after archiving what it held), replaces it with a new
//!   file (rename over it) and renames it away, over and over. Every committed
//!   reading must end up in a file someone can reach by name (the archives and
//!   the current file), none only in a deleted inode.
//! - `a_usb_stick_swapped_under_the_sink_loses_nothing`: the sink folder is a
//!   tmpfs (the stick) that the test unmounts (lazily: the gateway holds the
//!   file open) and replaces with a new one, four times. Every committed
//!   reading is on a stick: what the old one held when it was pulled, or the
//!   one in place. Needs root, as the first test.
//! - `sigterm_stops_in_time_while_a_sink_write_hangs`: the sink path is a FIFO
//!   nobody reads, so once its buffer is full a write blocks for good (as on a
//!   hung network mount). SIGTERM must still end the gateway within the stop
//!   deadline with status 0, and a restart with a working sink delivers every
//!   committed reading.
//! - `a_sink_on_a_hung_share_neither_stops_storing_nor_stopping`: the sink
//!   file is on a FUSE share (tests/support/powercut_fs.rs) that hangs before the gateway
//!   starts, so opening the file never returns. The gateway must still start
//!   and store readings, stop on SIGTERM within the deadline, and deliver
//!   everything once the share answers. Needs root and /dev/fuse.

use crate::support::gateway as gateway_common;
use crate::support::powercut_fs;
use crate::support::tmpfs::{self, fill};

use gateway_common::{start_logging_to, terminate, Committed, Delivered};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stop deadline the design documents (docs/design.md, "Stop"): SIGTERM
/// ends the gateway within this, whatever a sink does.
const STOP_DEADLINE: Duration = Duration::from_secs(27);

fn write_config(dir: &Path, state: &Path, out: &Path, batch_max_readings: usize) -> PathBuf {
    let cfg = format!(
        r#"
[gateway]
id = "file-sink-faults"
state_dir = "{state}"

[outbox]
flush_interval_ms = 50

[forwarder]
batch_max_readings = {batch_max_readings}
batch_max_age_ms = 100
retry_initial_ms = 50
retry_max_ms = 300

[[device]]
id = "strap-a"
kind = "heart_rate_strap"
patient_id = "P-1"
[device.simulated]
interval_ms = 20
seed = 11

[[device]]
id = "oxi-b"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 30
seed = 12

[sink.file]
path = "{out}"
"#,
        state = state.display(),
        out = out.display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Kills the gateway if the test fails while it runs (no stray process).
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let pid = self.0 as libc::pid_t;
        let mut status = 0;
        // SAFETY: waitpid and kill on a pid; only a child of ours that is
        // still running (waitpid answers 0) is signalled, never a reaped one
        // whose number may have been reused.
        unsafe {
            if libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                libc::kill(pid, libc::SIGKILL);
                // Bounded: a process blocked in the kernel on a hung share
                // dies only once the share answers (its Drop, after this one).
                let deadline = Instant::now() + Duration::from_secs(10);
                while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the process to exit, at most `limit`; kills it after that.
/// Returns the exit status and how long it took, or None if it had to be killed.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, start.elapsed()));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line of the NDJSON files, in order: (file, line) of those that are
/// not a whole JSON message, and what the good ones delivered.
fn read_delivered(files: &[PathBuf]) -> (Delivered, Vec<String>) {
    let mut d = Delivered::default();
    let mut bad = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let whole = line.last() == Some(&b'\n');
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v) if whole && v["readings"].is_array() => d.add(&v),
                _ => {
                    let text = String::from_utf8_lossy(line);
                    let cut: String = text.chars().take(160).collect();
                    bad.push(format!("{}: {cut}...", f.display()));
                }
            }
        }
    }
    (d, bad)
}

fn missing(committed: &BTreeMap<u64, String>, d: &Delivered) -> Vec<u64> {
    committed.keys().filter(|s| !d.ids.contains_key(s)).copied().collect()
}

/// A gateway of [`write_config`]'s config whose file sink writes `out`: the
/// config, state folder and log (`gateway.log`) in the test's folder, and the
/// readings it reported committed over all its runs.
struct SinkGateway {
    config: PathBuf,
    log: PathBuf,
    committed: Committed,
}

/// One run of a [`SinkGateway`], killed if the test fails while it runs.
struct Running {
    child: Child,
    reader: std::thread::JoinHandle<()>,
    _kill_on_panic: KillOnPanic,
}

impl SinkGateway {
    /// Writes the config into `dir` (sink file `out`, `batch_max_readings`).
    fn new(dir: &Path, out: &Path, batch_max_readings: usize) -> SinkGateway {
        SinkGateway {
            config: write_config(dir, &dir.join("state"), out, batch_max_readings),
            log: dir.join("gateway.log"),
            committed: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Starts a run, its log appended to `gateway.log`.
    fn start(&self) -> Running {
        let (child, reader) = start_logging_to(&self.config, self.committed.clone(), Some(&self.log));
        Running { _kill_on_panic: KillOnPanic(child.id()), child, reader }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every reading reported committed so far: seq -> device id.
    fn committed(&self) -> BTreeMap<u64, String> {
        self.committed.lock().unwrap().clone()
    }

    /// Sends SIGTERM to `run`: it must exit with status 0 within `limit`
    /// (else it is killed and the test fails, saying `during`, what was
    /// going on). Returns how long it took.
    fn stop(&self, mut run: Running, limit: Duration, during: &str) -> Duration {
        terminate(&run.child);
        let stopped = wait_exit(&mut run.child, limit);
        run.reader.join().unwrap();
        let (status, took) = stopped.unwrap_or_else(|| panic!("SIGTERM did not stop the gateway within {limit:?}{during}:\n{}", self.log_text()));
        assert!(status.success(), "SIGTERM{during} must lead to a clean exit (status 0), got {status:?}:\n{}", self.log_text());
        took
    }

    /// Gives `run` up to `patience` to deliver every reading of `expected`
    /// into `files` (what is still missing then, [`Self::check_delivered`]
    /// reports), then [`Self::stop`]s it within `limit`.
    fn stop_once_delivered(&self, run: Running, expected: &BTreeMap<u64, String>, files: &[PathBuf], patience: Duration, limit: Duration) {
        let waited = Instant::now();
        while !missing(expected, &read_delivered(files).0).is_empty() && waited.elapsed() < patience {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop(run, limit, "");
    }

    /// The files hold whole JSON messages only; every reading committed in
    /// any run is in one of them, under one id per message, in order per
    /// device ([`Delivered::check`]); the log shows no panic. `lost_means`
    /// says what a reading missing from the files means in this test.
    /// Returns what was committed and what the files hold.
    fn check_delivered(&self, files: &[PathBuf], lost_means: &str) -> (BTreeMap<u64, String>, Delivered) {
        let all = self.committed();
        let (d, bad) = read_delivered(files);
        assert!(bad.is_empty(), "{} line(s) of the sink files are not whole JSON messages, e.g. {}", bad.len(), bad[0]);
        let lost = missing(&all, &d);
        assert!(lost.is_empty(), "{} of {} committed readings {lost_means}, e.g. {:?}", lost.len(), all.len(), &lost[..lost.len().min(5)]);
        d.check(&all);
        let text = self.log_text();
        assert!(!text.contains("panicked"), "{text}");
        (all, d)
    }
}

// ---------------------------------------------------------------------------
// Item: a full disk under the sink file.

#[test]
fn a_full_sink_disk_leaves_whole_lines_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::mount_or_skip("a_full_sink_disk_leaves_whole_lines_and_loses_nothing", &dir.path().join("sinkfs"), "2m") else {
        return;
    };
    let out = fs.path().join("delivered.ndjson");
    let gw = SinkGateway::new(dir.path(), &out, 25);
    let mut run = gw.start();
    let size = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);

    for round in 0..3 {
        let before = size();
        wait_for("deliveries", 30, || size() > before + 8 * 1024);
        let failures = gw.log_text().matches("delivery to file failed").count();
        let filler = fs.path().join(format!("filler-{round}"));
        assert!(fill(&filler) > 0, "the tmpfs was full before the test filled it");
        wait_for("the gateway to meet the full disk", 30, || gw.log_text().matches("delivery to file failed").count() > failures);
        // A while on a full disk, retrying.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(run.child.try_wait().unwrap().is_none(), "the gateway exited on a full sink disk:\n{}", gw.log_text());
        std::fs::remove_file(&filler).unwrap();
    }

    // Room again: everything committed so far arrives, in whole lines.
    // Generous; what is still missing after that is reported below.
    let files = [out.clone()];
    gw.stop_once_delivered(run, &gw.committed(), &files, Duration::from_secs(60), STOP_DEADLINE + Duration::from_secs(5));

    // Whatever the gateway confirmed left the outbox; the last run had time to
    // deliver all of it. Every reading committed is in a whole line.
    let (all, d) = gw.check_delivered(&files, "are not in the file");
    let text = gw.log_text();
    assert!(text.contains("No space left on device"), "the cause is named: {text}");
    eprintln!("full sink disk: {} readings committed, {} resent under the same id", all.len(), d.duplicated());
}

// ---------------------------------------------------------------------------
// Item: the sink file removed, replaced or renamed while the gateway runs.

/// Copies the whole lines `held` contained when it was cut off from the path
/// (what an operator who archived it before removing it has) into `archive`,
/// and drops `held`. Lines written into the inode after that are unreachable.
fn archive_prefix(held: &Path, archive: &Path) {
    let len = std::fs::metadata(held).unwrap().len() as usize;
    let mut bytes = std::fs::read(held).unwrap();
    bytes.truncate(len);
    // A line still being written when the file was cut off was not confirmed.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    bytes.truncate(whole);
    std::fs::write(archive, bytes).unwrap();
    std::fs::remove_file(held).unwrap();
}

#[test]
fn a_sink_file_removed_or_replaced_while_running_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink_dir = dir.path().join("usb");
    std::fs::create_dir_all(&sink_dir).unwrap();
    let out = sink_dir.join("delivered.ndjson");
    let gw = SinkGateway::new(dir.path(), &out, 20);
    let mut run = gw.start();

    let mut archives: Vec<PathBuf> = Vec::new();
    let mut done = [0usize; 3];
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(10) || done.iter().any(|c| *c < 3) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no file appeared at the path again after {done:?} removals/replacements/renames: the gateway writes into a file nobody can reach\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(150 + (n as u64 * 37) % 200));
        if !out.exists() || std::fs::metadata(&out).unwrap().len() == 0 {
            continue;
        }
        let archive = sink_dir.join(format!("archive-{n:03}.ndjson"));
        let held = dir.path().join(format!("held-{n:03}"));
        // The removal comes first: a gateway that keeps writing into the
        // removed file is caught even if it never notices anything else.
        let op = n % 3;
        match op {
            0 => {
                // Archive and remove (cp + rm, as an operator would).
                std::fs::hard_link(&out, &held).unwrap();
                std::fs::remove_file(&out).unwrap();
                archive_prefix(&held, &archive);
            }
            1 => {
                // Replaced by a new, empty file (rename over it).
                let fresh = sink_dir.join(format!(".fresh-{n:03}"));
                std::fs::write(&fresh, b"").unwrap();
                std::fs::hard_link(&out, &held).unwrap();
                std::fs::rename(&fresh, &out).unwrap();
                archive_prefix(&held, &archive);
            }
            _ => {
                // Renamed away (logrotate): the old file stays reachable.
                std::fs::rename(&out, &archive).unwrap();
            }
        }
        archives.push(archive);
        done[op] += 1;
        n += 1;
    }
    assert!(run.child.try_wait().unwrap().is_none(), "the gateway exited:\n{}", gw.log_text());

    archives.push(out.clone());
    let files = archives;
    // Generous: a gateway that lost readings never gets there.
    gw.stop_once_delivered(run, &gw.committed(), &files, Duration::from_secs(20), STOP_DEADLINE + Duration::from_secs(5));
    let (all, d) = gw.check_delivered(&files, "are in no file that can be reached by name (written into a removed file)");
    eprintln!(
        "sink file removed {} times, replaced {} times, renamed away {} times: {} readings committed, all reachable; {} resent under the same id",
        done[0],
        done[1],
        done[2],
        all.len(),
        d.duplicated()
    );
}

#[test]
fn a_usb_stick_swapped_under_the_sink_loses_nothing() {
    let test = "a_usb_stick_swapped_under_the_sink_loses_nothing";
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    // The first stick. Each stick is pulled out by hand below; the guard
    // only cleans up after a failure.
    let Some(mut stick) = tmpfs::mount_or_skip(test, &usb, "4m") else { return };
    let out = usb.join("delivered.ndjson");
    let gw = SinkGateway::new(dir.path(), &out, 20);
    let run = gw.start();
    let size = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);

    let mut archives = Vec::new();
    for n in 0..4 {
        wait_for("deliveries onto the stick", 30, || size() > 4 * 1024);
        // Pulled out (the gateway keeps its file open, so the unmount is a
        // lazy one: the old stick lives on, detached, where no one can reach
        // it) and a fresh stick put in at the same place. The operator has
        // what the old stick held when it was pulled.
        let held = std::fs::File::open(&out).unwrap();
        stick.pull_out();
        let mut bytes = Vec::new();
        let len = held.metadata().unwrap().len() as usize;
        std::io::Read::read_to_end(&mut &held, &mut bytes).unwrap();
        bytes.truncate(len);
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let archive = dir.path().join(format!("stick-{n}.ndjson"));
        std::fs::write(&archive, &bytes[..whole]).unwrap();
        archives.push(archive);
        drop(held);
        // A while with no stick at all.
        std::thread::sleep(Duration::from_millis(600));
        stick = tmpfs::mount_or_skip(test, &usb, "4m").expect("a tmpfs mounted before");
    }
    archives.push(out.clone());
    let files = archives;
    gw.stop_once_delivered(run, &gw.committed(), &files, Duration::from_secs(20), STOP_DEADLINE + Duration::from_secs(5));
    let (all, d) = gw.check_delivered(&files, "are on no stick anyone has (written to a stick already pulled)");
    let text = gw.log_text();
    assert!(text.contains("nothing is mounted at"), "the wait for a stick is said in plain words: {text}");
    eprintln!("4 sticks swapped: {} readings committed, all on a stick; {} resent under the same id", all.len(), d.duplicated());
}

// ---------------------------------------------------------------------------
// Item: SIGTERM while a sink write hangs.

/// Bytes waiting in a FIFO (FIONREAD), from a handle that only looks.
fn fifo_queued(fifo: &std::fs::File) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which we own.
    let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

#[test]
fn sigterm_stops_in_time_while_a_sink_write_hangs() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("delivered.ndjson");
    let c = std::ffi::CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    // A handle to watch the FIFO fill up (it never reads).
    let watch = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&out).unwrap();
    let gw = SinkGateway::new(dir.path(), &out, 25);
    let mut run = gw.start();

    // The sink accepts bytes until the FIFO's buffer is full (its fsync fails,
    // so nothing is ever confirmed), then a write blocks for good: the
    // buffer stops growing although sends are retried every 300 ms at most.
    let mut last = (0, Instant::now());
    wait_for("a sink write to block", 60, || {
        let q = fifo_queued(&watch);
        if q != last.0 {
            last = (q, Instant::now());
        }
        q > 0 && last.1.elapsed() > Duration::from_millis(1500)
    });
    wait_for("readings to be committed", 30, || gw.committed.lock().unwrap().len() > 100);
    assert!(run.child.try_wait().unwrap().is_none(), "the gateway exited:\n{}", gw.log_text());

    let took = gw.stop(run, STOP_DEADLINE, " while a sink write hung");
    eprintln!("stopped in {:.1} s with a sink write hanging", took.as_secs_f64());
    drop(watch);

    // The sink works again: the restart delivers the whole backlog.
    std::fs::remove_file(&out).unwrap();
    let all = gw.committed();
    assert!(!all.is_empty());
    let run = gw.start();
    let files = [out.clone()];
    gw.stop_once_delivered(run, &all, &files, Duration::from_secs(60), STOP_DEADLINE);
    gw.check_delivered(&files, "were not delivered after the restart");
}

// Once hung the suite: the start-up check of the sink's path (shared with
// `check-config`) waited on the share before anything else started, and
// the harness's stall held its folder's lock so that wait could not even be
// killed. The check is now bounded, and the harness allows parallel lookups
// as network filesystems do.
#[test]
fn a_sink_on_a_hung_share_neither_stops_storing_nor_stopping() {
    let test = "a_sink_on_a_hung_share_neither_stops_storing_nor_stopping";
    let dir = tempfile::tempdir().unwrap();
    let Some(share) = powercut_fs::mount_or_skip(test, &dir.path().join("share")) else { return };
    let out = share.path().join("delivered.ndjson");
    let gw = SinkGateway::new(dir.path(), &out, 25);

    // The server stops answering before the gateway starts.
    share.stall();
    // `check-config` says it could not check the sink, in bounded time, and
    // does not refuse a config that `run` starts with.
    {
        let started = Instant::now();
        let mut check = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
            .args(["check-config"])
            .arg(&gw.config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _kill_on_panic = KillOnPanic(check.id());
        let (status, took) = wait_exit(&mut check, Duration::from_secs(20)).expect("check-config hung on the stalled share");
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        check.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        check.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{status:?}\n{out}\n{err}");
        assert!(err.contains("did not answer within 5 s"), "the hung share is named: {err}");
        assert!(out.contains("the sink could not be checked"), "{out}");
        assert!(took < Duration::from_secs(15), "check-config took {took:?}");
        eprintln!("check-config answered in {:.1} s", started.elapsed().as_secs_f64());
    }
    {
        let run = gw.start();
        wait_for("readings to be stored while the share hangs", 30, || gw.committed.lock().unwrap().len() > 100);
        assert!(gw.log_text().contains("does not answer"), "the hung share is named: {}", gw.log_text());
        let took = gw.stop(run, STOP_DEADLINE, " while its share hung");
        eprintln!("stopped in {:.1} s with the sink's share hanging", took.as_secs_f64());
    }

    // The share answers again: a restart delivers everything stored.
    share.resume();
    let all = gw.committed();
    let run = gw.start();
    let files = [out.clone()];
    gw.stop_once_delivered(run, &all, &files, Duration::from_secs(60), STOP_DEADLINE);
    gw.check_delivered(&files, "were not delivered after the share came back");
}
