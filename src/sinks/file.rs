//! The file sink: one message per line (NDJSON), made durable before it confirms.
//!
//! Useful on its own (a USB stick as the cloud), for the demo, and as the
//! reference destination in the crash tests.
//!
//! Why hand-written, and what it guarantees. A message is confirmed only when
//! its whole line is durable in the file that the configured path names:
//!
//! - A write that fails (a full disk, an I/O error, a failed `fdatasync`)
//!   leaves the file as it was: it is cut back to its length before the write,
//!   so a retry never appends onto half a line. If even the cut fails, nothing
//!   more is written until it succeeds.
//! - The line is synced with `fdatasync(2)` before it counts.
//! - Before each message and again after its sync, the sink compares the
//!   device and inode of the path with those of its open file. When an
//!   operator removed the file, renamed it away, or replaced it (a new file
//!   renamed over it, a USB stick swapped), the sink opens or creates the file
//!   the path names now and writes the message there. A line written into a
//!   file that was cut off from its path during the write is written again
//!   (a duplicate under the same message id, never a loss).
//! - When the file's folder was a mount point (a USB stick) and nothing is
//!   mounted there any more, the sink waits (the send fails and is retried)
//!   rather than create the file on the disk under the empty mount point,
//!   where the next stick mounted would hide it.
//! - All file operations run on one thread of its own, not on the async
//!   runtime's blocking pool: a write that hangs (a hung network mount) holds
//!   only that thread. The send waiting for it can be cancelled, and the
//!   process can exit at the stop deadline without waiting for it (the
//!   message was not confirmed and stays in the outbox).

use super::{Sink, SinkError};
use crate::model::Message;
use async_trait::async_trait;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often one message is written again because the path changed during the
/// write, before the send fails (and is retried by the forwarder).
const MAX_MOVES_PER_MESSAGE: usize = 3;

pub(crate) struct FileSink {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

/// One line to make durable, and where to answer.
struct Job {
    line: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

impl FileSink {
    /// Opens (appending) or creates the file and starts its writer thread. A
    /// last line cut short by a crash is removed: that message was never
    /// confirmed, so it will be sent again.
    ///
    /// Errors: the folder cannot be created, the file cannot be opened or
    /// created (for example the path is a folder), or the thread cannot start.
    /// A path that does not answer within [`OPEN_WAIT`] (a hung mount) is no
    /// error: the gateway starts and stores readings, and the sink delivers
    /// once the file opens.
    pub(crate) fn open(path: &Path) -> std::io::Result<FileSink> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (opened_tx, opened) = mpsc::channel::<std::io::Result<()>>();
        let at = path.to_path_buf();
        std::thread::Builder::new().name("file-sink".into()).spawn(move || {
            let started = std::time::Instant::now();
            let file = match SinkFile::open(&at, false) {
                Ok(f) => {
                    if started.elapsed() >= OPEN_WAIT {
                        tracing::info!("the file sink's file {} is open now", at.display());
                    }
                    let _ = opened_tx.send(Ok(()));
                    Some(f)
                }
                Err(e) => {
                    // Told to `open` if it still waits; else the writer
                    // tries again at the first message.
                    let _ = opened_tx.send(Err(e));
                    None
                }
            };
            writer(&at, file, rx)
        })?;
        match opened.recv_timeout(OPEN_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => tracing::warn!(
                "the file sink's file {} does not answer (a hung mount?); readings are stored and delivered once it does",
                path.display()
            ),
        }
        Ok(FileSink { path: path.to_path_buf(), jobs })
    }
}

/// How long [`FileSink::open`] waits for the file to open.
pub(crate) const OPEN_WAIT: Duration = Duration::from_secs(5);

/// The writer thread: one line at a time, until the sink is dropped. Opens
/// the file again when it could not be opened before.
fn writer(path: &Path, mut file: Option<SinkFile>, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // The send was given up (shutdown): don't write what nobody waits for.
        if job.done.is_closed() {
            continue;
        }
        let out = match file.take() {
            Some(f) => Ok(f),
            None => SinkFile::open(path, false),
        };
        let result = out.and_then(|mut f| {
            let r = f.append(&job.line);
            file = Some(f);
            r
        });
        let _ = job.done.send(result);
    }
}

/// The open file, and what the sink knows about it.
struct SinkFile {
    path: PathBuf,
    file: File,
    /// (st_dev, st_ino) of the open file, to notice when the path names
    /// another file (or none).
    id: (u64, u64),
    /// A regular file (not /dev/full, a FIFO...): only those can be cut back.
    regular: bool,
    /// The length a failed write must still be cut back to, when the cut
    /// itself failed: nothing is written until it succeeds.
    cut_to: Option<u64>,
    /// The file's folder was a mount point (a USB stick, a network share).
    /// Then the file is only ever created again while something is mounted
    /// there, never on the disk under an empty mount point, where the next
    /// stick mounted would hide it.
    on_mount: bool,
}

impl SinkFile {
    /// Opens or creates the file; `on_mount`: its folder was a mount point
    /// before, and must be one now.
    fn open(path: &Path, on_mount: bool) -> std::io::Result<SinkFile> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if on_mount && !is_mount_point(dir).unwrap_or(false) {
            return Err(std::io::Error::new(
                ErrorKind::NotFound,
                format!("nothing is mounted at {} any more (a USB stick pulled out, a share gone?); waiting until something is", dir.display()),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let on_mount = on_mount || is_mount_point(dir).unwrap_or(false);
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        if !existed {
            // A new file's name must survive a power cut too, or the lines
            // confirmed into it vanish with it.
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let meta = file.metadata()?;
        let regular = meta.file_type().is_file();
        if regular {
            repair_tail(&mut file)?;
        }
        Ok(SinkFile { path: path.to_path_buf(), file, id: (meta.dev(), meta.ino()), regular, cut_to: None, on_mount })
    }

    /// Whether the path still names the open file. `false` when it names
    /// another file or none; an error when it cannot be looked at.
    fn at_path(&self) -> std::io::Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok((m.dev(), m.ino()) == self.id),
            Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Switches to the file the path names now (creating it if needed).
    fn reopen(&mut self) -> std::io::Result<()> {
        // Best effort: leave no half line in the file we leave behind (it
        // may be an operator's archive).
        let _ = self.finish_cut();
        let fresh = SinkFile::open(&self.path, self.on_mount)?;
        tracing::info!("the file sink's file {} was moved, removed or replaced; writing on into the file now at that path", self.path.display());
        *self = fresh;
        Ok(())
    }

    /// Cuts the file back to `len` (after a failed write) and syncs the cut.
    fn cut_back(&mut self, len: u64) -> std::io::Result<()> {
        if !self.regular {
            return Ok(());
        }
        self.cut_to = Some(len);
        self.finish_cut()
    }

    /// Completes a cut that failed before.
    fn finish_cut(&mut self) -> std::io::Result<()> {
        if let Some(len) = self.cut_to {
            self.file.set_len(len)?;
            self.file.sync_data()?;
            self.cut_to = None;
        }
        Ok(())
    }

    /// Appends one line and makes it durable in the file the path names.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        for _ in 0..MAX_MOVES_PER_MESSAGE {
            if !self.at_path()? {
                self.reopen()?;
            }
            self.finish_cut()?;
            let start = self.file.metadata()?.len();
            let written = self.file.write_all(line).and_then(|()| self.file.sync_data());
            if let Err(e) = written {
                if let Err(cut) = self.cut_back(start) {
                    tracing::debug!("cutting {} back to {start} bytes failed ({cut}); retrying before the next write", self.path.display());
                }
                return Err(e);
            }
            // Moved, removed or replaced while we wrote: the line may sit in a
            // file nobody can reach. Write it again where the path points.
            if self.at_path()? {
                return Ok(());
            }
        }
        Err(std::io::Error::other(format!("the file was moved or replaced during each of {MAX_MOVES_PER_MESSAGE} writes")))
    }
}

/// Whether `dir` is a mount point: its device differs from its parent's (or
/// it is `/`).
fn is_mount_point(dir: &Path) -> std::io::Result<bool> {
    let here = std::fs::metadata(dir)?;
    let parent = std::fs::metadata(dir.join(".."))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

/// Truncates a trailing partial line (no final newline).
fn repair_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.take(window).read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(p) => len - window + p as u64 + 1,
        None if window == len => 0,
        None => return Ok(()), // a single line longer than 1 MiB: leave it alone
    };
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(())
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, message: &Message) -> Result<(), SinkError> {
        let mut line = message.to_json();
        line.push(b'\n');
        let (done, answer) = oneshot::channel();
        let stopped = || SinkError::Retryable("the file writer stopped".into());
        self.jobs.send(Job { line, done }).map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Retryable(format!("cannot write {}: {e}", self.path.display()))),
            Err(_) => Err(stopped()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKind, Reading, ReadingType};

    fn message(seq: u64) -> Message {
        let mut r = Reading::new("dev-a", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 70.0);
        r.seq = seq;
        Message::from_batch("gw", "0123456789abcdef", &[r]).unwrap()
    }

    fn ids(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["messageId"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_removed_file_is_created_again_before_the_next_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let sink = FileSink::open(&path).unwrap();
        let (m1, m2) = (message(1), message(2));
        sink.send(&m1).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        sink.send(&m2).await.unwrap();
        assert_eq!(ids(&path), vec![m2.message_id.clone()], "the message confirmed after the removal is in the file at the path");
    }

    #[tokio::test]
    async fn a_file_replaced_or_renamed_away_gets_no_more_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let sink = FileSink::open(&path).unwrap();
        let (m1, m2, m3) = (message(1), message(2), message(3));
        sink.send(&m1).await.unwrap();
        // Renamed away (logrotate): the archive keeps its line, the next one
        // goes to a new file at the path.
        let archive = dir.path().join("archive.ndjson");
        std::fs::rename(&path, &archive).unwrap();
        sink.send(&m2).await.unwrap();
        assert_eq!(ids(&archive), vec![m1.message_id.clone()]);
        assert_eq!(ids(&path), vec![m2.message_id.clone()]);
        // Replaced by another file renamed over it (its content is kept).
        let other = dir.path().join("other.ndjson");
        std::fs::write(&other, m1.to_json().into_iter().chain(*b"\n").collect::<Vec<u8>>()).unwrap();
        std::fs::rename(&other, &path).unwrap();
        sink.send(&m3).await.unwrap();
        assert_eq!(ids(&path), vec![m1.message_id.clone(), m3.message_id.clone()]);
    }

    #[test]
    fn a_half_line_left_by_a_failed_write_is_cut_before_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        let mut f = SinkFile::open(&path, false).unwrap();
        f.append(b"{\"a\":1}\n").unwrap();
        // A write that failed half-way, and whose cut failed too.
        f.file.write_all(b"{\"half").unwrap();
        f.cut_to = Some(8);
        f.append(b"{\"b\":2}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn the_path_of_a_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileSink::open(dir.path()).is_err());
    }
}
