//! The file sink: one message per line (NDJSON), fsync'd before it confirms.
//!
//! Useful on its own (a USB stick as the cloud), for the demo, and as the
//! reference destination in the crash tests.

use super::{Sink, SinkError};
use crate::model::Message;
use async_trait::async_trait;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct FileSink {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl FileSink {
    /// Opens (appending) or creates the file. A last line cut short by a crash is
    /// removed: that message was never confirmed, so it will be sent again.
    pub fn open(path: &Path) -> std::io::Result<FileSink> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
        if !existed {
            // A new file's name must survive a power cut too, or the lines
            // confirmed into it vanish with it.
            file.sync_all()?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()?;
        }
        repair_tail(&mut file)?;
        Ok(FileSink { path: path.to_path_buf(), file: Arc::new(Mutex::new(file)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Truncates a trailing partial line (no final newline).
fn repair_tail(file: &mut std::fs::File) -> std::io::Result<()> {
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
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&line)?;
            f.sync_data()
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("file writer stopped: {e}")))?
        .map_err(|e| SinkError::Retryable(format!("cannot write {}: {e}", self.path.display())))
    }
}
