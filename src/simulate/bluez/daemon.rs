//! A private `dbus-daemon` for the simulated BlueZ: own socket in a temporary
//! directory, permissive system-bus policy (`bus.conf`), killed on drop.
//!
//! The daemon is started from a dedicated thread with `PR_SET_PDEATHSIG`, so
//! it also dies if the process exits without dropping the handle (a test that
//! panics, a killed demo): no stray daemons.

use super::error::BluezSimError;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The shipped bus configuration; `@LISTEN@` is replaced by the socket address.
pub(crate) const BUS_CONF: &str = include_str!("bus.conf");

/// A running private bus.
pub struct PrivateBus {
    address: String,
    dir: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `dbus-daemon` on PATH, if installed.
pub fn find_dbus_daemon() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("dbus-daemon")).find(|p| p.is_file())
}

impl PrivateBus {
    /// Starts `dbus-daemon` and waits (up to 10 s) for its address.
    pub fn start() -> Result<PrivateBus, BluezSimError> {
        let exe = find_dbus_daemon().ok_or(BluezSimError::NoDbusDaemon)?;
        let dir = std::env::temp_dir().join(format!("iomt-bluez-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|error| BluezSimError::Prepare { what: "creating", path: dir.clone(), error })?;
        let conf = dir.join("bus.conf");
        let listen = format!("unix:path={}", dir.join("bus").display());
        std::fs::write(&conf, BUS_CONF.replace("@LISTEN@", &listen)).map_err(|error| BluezSimError::Prepare {
            what: "writing",
            path: conf.clone(),
            error,
        })?;

        let (addr_tx, addr_rx) = mpsc::channel::<Result<String, BluezSimError>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("dbus-daemon".into()).spawn(move || {
            run_daemon(&exe, &conf, addr_tx, stop_rx);
        })?;
        let mut bus = PrivateBus { address: String::new(), dir, stop: Some(stop_tx), thread: Some(thread) };
        match addr_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(address)) => {
                bus.address = address;
                Ok(bus)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BluezSimError::NoAddress),
        }
    }

    /// The bus address (`unix:path=...,guid=...`).
    pub fn address(&self) -> &str {
        &self.address
    }
}

fn run_daemon(exe: &Path, conf: &Path, addr_tx: mpsc::Sender<Result<String, BluezSimError>>, stop_rx: mpsc::Receiver<()>) {
    let mut cmd = Command::new(exe);
    cmd.arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--nopidfile")
        .arg("--print-address=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = addr_tx.send(Err(BluezSimError::DaemonStart { exe: exe.to_path_buf(), error: e }));
            return;
        }
    };
    let mut line = String::new();
    let read = child.stdout.take().map(|out| BufReader::new(out).read_line(&mut line));
    match read {
        Some(Ok(n)) if n > 0 && !line.trim().is_empty() => {
            let _ = addr_tx.send(Ok(line.trim().to_string()));
        }
        _ => {
            let _ = addr_tx.send(Err(BluezSimError::DaemonExited));
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
    }
    // Wait until told to stop (or the handle is dropped).
    let _ = stop_rx.recv();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
