//! `iomt-edge bench`: measures this machine's outbox and pipeline, so an
//! installer can see what the SD card and CPU allow. Figures go in
//! docs/performance.md with the command that produced them.

use super::out::{errln, outln};
use crate::adapters::DeviceRegistry;
use crate::config::{units::ByteSize, OutboxConfig};
use crate::forwarder::{FlushHandle, Forwarder, ForwarderSettings, ForwarderStats, LiveBatching};
use crate::health::Health;
use crate::model::{DeviceKind, Reading, ReadingType};
use crate::outbox::committer::{CommitReport, Committer};
use crate::outbox::Outbox;
use crate::service::associations::Associations;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Readings per ingest measurement.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) readings: u64,
    /// Readings queued for the reopen measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) backlog: u64,
    /// Simulated devices for the daemon RSS measurement.
    #[arg(long, default_value_t = 10)]
    pub(crate) devices: usize,
    /// How long the daemon runs before its RSS is read.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub(crate) daemon_time: Duration,
    /// Folder for the scratch outboxes (default: a temporary folder). Put it on
    /// the disk you want to measure (the SD card, not /tmp in RAM).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Only open the outbox in DIR and print open time and RSS as JSON (used by
    /// the reopen measurement, in a fresh process).
    #[arg(long, hide = true)]
    pub(crate) reopen_only: Option<PathBuf>,
    /// Skip the slow measurements (reopen with a large backlog, daemon RSS,
    /// storage wear).
    #[arg(long)]
    pub(crate) quick: bool,
    /// How long each storage-wear run measures (after a 5 s warm-up); four
    /// runs: one bed and 10 devices, with 100 ms and 1 s commit windows.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) wear_time: Duration,
    /// Only the storage-wear measurement.
    #[arg(long)]
    pub(crate) wear_only: bool,
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn proc_rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn sample(i: u64) -> Reading {
    let dev = format!("device-{}", i % 10);
    if i % 3 == 0 {
        Reading::new(dev, DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 90.0 + (i % 10) as f64)
    } else {
        Reading::new(dev, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + (i % 40) as f64)
    }
}

fn outbox_cfg(window_ms: u64) -> OutboxConfig {
    OutboxConfig { flush_interval_ms: window_ms, max_bytes: ByteSize(4 << 30), ..OutboxConfig::default() }
}

/// Readings/s through the real committer (channel -> group commit -> flush).
/// `durable = false` leaves out the `fdatasync` after sled's flush, to show
/// what durability across a power cut costs.
async fn ingest(dir: &Path, window_ms: u64, n: u64, durable: bool) -> anyhow::Result<f64> {
    let (ob, _) = Outbox::open(&dir.join(format!("ingest-{window_ms}-{durable}")), &outbox_cfg(window_ms))?;
    if !durable {
        ob.bench_without_fdatasync();
    }
    let ob = Arc::new(ob);
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let c = Committer {
        outbox: ob.clone(),
        window: Duration::from_millis(window_ms),
        hooks: crate::service::commit_hooks(&Arc::new(Associations::load(&[], None)), &Arc::new(DeviceRegistry::new())),
        health: Arc::new(Health::new()),
        report: CommitReport(false),
    };
    let (task, mut committed, _group_sync) = c.spawn(rx);
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            if tx.send(sample(i)).await.is_err() {
                break;
            }
        }
    });
    while *committed.borrow_and_update() < n {
        if committed.changed().await.is_err() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    producer.await?;
    task.await?;
    Ok(n as f64 / secs)
}

/// Readings/s from a full outbox through the forwarder to the file sink, acked.
async fn forward(dir: &Path, n: u64) -> anyhow::Result<(f64, f64)> {
    let (ob, _) = Outbox::open(&dir.join("forward"), &outbox_cfg(100))?;
    let mut i = 0;
    while i < n {
        let mut group: Vec<Reading> = (i..(i + 5000).min(n)).map(sample).collect();
        ob.append(&mut group)?;
        i += group.len() as u64;
    }
    let ob = Arc::new(ob);
    let sink = Arc::new(crate::sinks::file::FileSink::open(&dir.join("forward.ndjson"))?);
    let (_tx, committed) = tokio::sync::watch::channel(ob.last_seq());
    let stats = Arc::new(ForwarderStats::default());
    let f = Forwarder {
        outbox: ob.clone(),
        sink,
        settings: ForwarderSettings {
            gateway_id: "bench".into(),
            batching: LiveBatching::new(500, Duration::from_secs(1)),
            batch_max_bytes: 64 * 1024,
            retry: crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(),
            auth_retry: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            idle_tick: crate::forwarder::IDLE_TICK,
        },
        committed,
        stats: stats.clone(),
        health: Arc::new(Health::new()),
        flush: FlushHandle::default(),
        group_sync: None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(f.run(stop.clone()));
    while stats.delivered_readings.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    let messages = stats.delivered_messages.load(Ordering::Relaxed) as f64;
    Ok((n as f64 / secs, messages / secs))
}

fn fill_backlog(dir: &Path, n: u64) -> anyhow::Result<f64> {
    let (ob, _) = Outbox::open(dir, &outbox_cfg(100))?;
    let start = Instant::now();
    let mut i = ob.last_seq();
    while i < n {
        let mut group: Vec<Reading> = (i..(i + 10_000).min(n)).map(sample).collect();
        ob.append(&mut group)?;
        i += group.len() as u64;
    }
    ob.close_clean()?;
    Ok(start.elapsed().as_secs_f64())
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = a.reopen_only {
        let start = Instant::now();
        let (ob, _) = Outbox::open(&dir, &OutboxConfig::default())?;
        let open_ms = start.elapsed().as_secs_f64() * 1000.0;
        // What the forwarder does first after a restart: read the oldest readings.
        let first = ob.read_range(0, u64::MAX, 2000)?.len();
        let total_ms = start.elapsed().as_secs_f64() * 1000.0;
        outln!(
            "{}",
            serde_json::json!({"queued": ob.len(), "open_ms": open_ms, "open_and_first_read_ms": total_ms,
                "first_read": first, "rss_kib": rss_kib("VmRSS:"), "peak_rss_kib": rss_kib("VmHWM:")})
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let tmp = tempfile_dir(a.dir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    outln!("iomt-edge bench (scratch folder {})", dir.display())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if a.wear_only {
        wear_report(&dir, a.wear_time)?;
        return Ok(ExitCode::SUCCESS);
    }
    rt.block_on(async {
        let r = ingest(&dir, 100, a.readings, true).await?;
        let old = ingest(&dir, 100, a.readings, false).await?;
        outln!("durable ingest, group commit (100 ms window): {:>10.0} readings/s  (without fdatasync: {old:.0})", r)?;
        let n_single = (a.readings / 20).max(1000);
        let r = ingest(&dir, 0, n_single, true).await?;
        let old = ingest(&dir, 0, n_single, false).await?;
        outln!("durable ingest, flush every reading:          {:>10.0} readings/s  (without fdatasync: {old:.0}; {n_single} readings)", r)?;
        let (r, m) = forward(&dir, a.readings).await?;
        outln!("forward + ack to the file sink (fsync):       {:>10.0} readings/s  ({m:.0} messages/s)", r)?;
        anyhow::Ok(())
    })?;
    if a.quick {
        return Ok(ExitCode::SUCCESS);
    }
    let backlog_dir = dir.join("backlog");
    let fill = fill_backlog(&backlog_dir, a.backlog)?;
    outln!("filled an outbox with {} readings in {:.1} s", a.backlog, fill)?;
    let exe = std::env::current_exe().context("cannot find this program's own path to start it again")?;
    // The first reopen follows a clean stop; it does not stop cleanly itself
    // (the process just exits), so the second one is an unclean start, which
    // recounts the store.
    for after in ["a clean stop", "an unclean stop (recount)"] {
        let out = std::process::Command::new(&exe).args(["bench", "--reopen-only"]).arg(&backlog_dir).output()?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| anyhow::anyhow!("reopen run failed ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
        outln!(
            "reopen with {} queued after {after}: open {:.0} ms, open + first read {:.0} ms, RSS {} KiB (peak {} KiB)",
            v["queued"],
            v["open_ms"].as_f64().unwrap_or(0.0),
            v["open_and_first_read_ms"].as_f64().unwrap_or(0.0),
            v["rss_kib"],
            v["peak_rss_kib"]
        )?;
    }
    let (rss, peak) = daemon_rss(&exe, &dir, a.devices, a.daemon_time)?;
    outln!("daemon with {} simulated devices after {}: RSS {} KiB (peak {} KiB)", a.devices, humantime::format_duration(a.daemon_time), rss, peak)?;
    wear_report(&dir, a.wear_time)?;
    Ok(ExitCode::SUCCESS)
}

/// Storage writes of the real daemon, per committed reading and per day.
struct Wear {
    readings: u64,
    groups: u64,
    write_bytes: u64,
    /// Bytes the filesystem sent to its block device (data, metadata and
    /// journal), when the state folder is on a [`WearFs`].
    device_bytes: Option<u64>,
    secs: f64,
}

/// A fresh ext4 filesystem on a loop device (4 KiB blocks, journal, as on a
/// Raspberry Pi's SD card), so that what reaches the card can be counted:
/// `/sys/block/loopN/stat` counts every sector the filesystem writes, its
/// journal and metadata included. `/proc/PID/io` `write_bytes` cannot stand
/// in for it on kernels with large page-cache folios: there, dirtying 200
/// bytes of a file read or written in large chunks is counted as a whole
/// folio (up to megabytes), and journal writes are not counted at all.
/// Needs root, `losetup`, `mkfs.ext4` and `mount`; unmounted when dropped.
struct WearFs {
    image: PathBuf,
    mount: PathBuf,
    device: String,
}

impl WearFs {
    fn create(dir: &Path) -> anyhow::Result<WearFs> {
        use std::process::Command;
        let run = |cmd: &mut Command| -> anyhow::Result<String> {
            let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
            anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let image = dir.join("wear-ext4.img");
        let mount = dir.join("wear-ext4");
        std::fs::File::create(&image)?.set_len(512 << 20)?;
        // No lazy initialisation: its background writes would be counted.
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0"]).arg(&image))?;
        let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
        std::fs::create_dir_all(&mount)?;
        if let Err(e) = run(Command::new("mount").arg(&device).arg(&mount)) {
            let _ = Command::new("losetup").args(["-d", &device]).status();
            let _ = std::fs::remove_file(&image);
            return Err(e);
        }
        let device = device.trim_start_matches("/dev/").to_string();
        Ok(WearFs { image, mount, device })
    }

    /// Bytes written to the block device so far.
    fn device_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/sys/block/{}/stat", self.device))
            .ok()
            .and_then(|s| s.split_whitespace().nth(6)?.parse::<u64>().ok())
            .map_or(0, |sectors| sectors * 512)
    }
}

impl Drop for WearFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
        let _ = std::process::Command::new("losetup").args(["-d", &format!("/dev/{}", self.device)]).status();
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// The floor: every group commit must write at least one 4 KiB page.
const PAGE: f64 = 4096.0;

fn wear_report(dir: &Path, time: Duration) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's own path to start it again")?;
    let fs = match WearFs::create(dir) {
        Ok(fs) => Some(fs),
        Err(e) => {
            errln!("note: no ext4 on a loop device for the wear runs ({e:#}); only /proc/PID/io write_bytes is shown, which overstates small writes on kernels with large folios");
            None
        }
    };
    let state_root = fs.as_ref().map_or(dir.to_path_buf(), |f| f.mount.clone());
    outln!(
        "storage wear over {} after a 5 s warm-up, simulated devices at 1 Hz, sink on {}; state folder on {}",
        humantime::format_duration(time),
        wear_sink_dir(dir).display(),
        if fs.is_some() { "a fresh ext4 on a loop device (device = bytes written to it, journal included)" } else { "DIR" }
    )?;
    let cases = [
        ("one bed (strap + oximeter)", 2usize, 100u64, false),
        ("one bed (strap + oximeter)", 2, 1000, false),
        ("10 devices", 10, 100, false),
        ("10 devices", 10, 1000, false),
        ("one bed, cloud unreachable", 2, 100, true),
        ("10 devices, cloud unreachable", 10, 100, true),
    ];
    for (label, devices, window_ms, outage) in cases {
        {
            let w = wear(&exe, dir, &state_root, fs.as_ref(), devices, window_ms, outage, time)?;
            // The device's count when there is one (what the card sees).
            let bytes = w.device_bytes.unwrap_or(w.write_bytes);
            let per_reading = bytes as f64 / w.readings.max(1) as f64;
            let per_day = bytes as f64 / w.secs * 86_400.0;
            let floor = w.groups as f64 * PAGE;
            let process = match w.device_bytes {
                Some(_) => format!(" (write_bytes {:.0} B/reading)", w.write_bytes as f64 / w.readings.max(1) as f64),
                None => String::new(),
            };
            outln!(
                "  {label:<29} window {window_ms:>4} ms: {:>6.0} B/reading, {:>6.1} MB/day, {:>5.2} commits/s, {:>5.1} readings/s, {:.2}x the page floor{process}",
                per_reading,
                per_day / 1e6,
                w.groups as f64 / w.secs,
                w.readings as f64 / w.secs,
                bytes as f64 / floor.max(1.0)
            )?;
        }
    }
    Ok(())
}

/// Where the wear runs' file sink writes: RAM when there is a /dev/shm, so
/// that only the state folder's writes are counted (a real gateway sends to
/// the cloud, not to its SD card).
fn wear_sink_dir(dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("write_bytes:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn wear(
    exe: &Path,
    dir: &Path,
    state_root: &Path,
    fs: Option<&WearFs>,
    devices: usize,
    window_ms: u64,
    outage: bool,
    time: Duration,
) -> anyhow::Result<Wear> {
    use std::io::BufRead;
    use std::sync::atomic::AtomicU64;
    let tag = format!("wear-{devices}-{window_ms}-{outage}-{}", std::process::id());
    let state = state_root.join(&tag);
    // An outage: every write of the file sink fails ("no space"), as a cloud
    // that cannot be reached; readings pile up in the outbox.
    let sink = if outage { PathBuf::from("/dev/full") } else { wear_sink_dir(dir).join(format!("{tag}.ndjson")) };
    // The status file goes where systemd's RuntimeDirectory would put it (RAM).
    let runtime = wear_sink_dir(dir).join(format!("{tag}-run"));
    std::fs::create_dir_all(&runtime).with_context(|| format!("cannot create {}", runtime.display()))?;
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n\n[outbox]\nflush_interval_ms = {window_ms}\n\n[sink.file]\npath = \"{}\"\n",
        state.display(),
        sink.display()
    );
    for i in 0..devices {
        let kind = if i % 2 == 0 { "heart_rate_strap" } else { "pulse_oximeter" };
        cfg.push_str(&format!("\n[[device]]\nid = \"sim-{i}\"\nkind = \"{kind}\"\n[device.simulated]\ninterval_ms = 1000\n"));
    }
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, cfg).with_context(|| format!("cannot write {}", path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(["run", "--report-commits", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .env("RUNTIME_DIRECTORY", &runtime)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let readings = Arc::new(AtomicU64::new(0));
    let groups = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout from the daemon"))?;
    let (r2, g2) = (readings.clone(), groups.clone());
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let n =
                serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["committed"].as_array().map(|a| a.len() as u64)).unwrap_or(0);
            if n > 0 {
                r2.fetch_add(n, Ordering::Relaxed);
                g2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let d0 = fs.map(WearFs::device_bytes);
    let (w0, r0, g0, t0) = (io_write_bytes(child.id()), readings.load(Ordering::Relaxed), groups.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(time);
    let (w1, r1, g1, secs) =
        (io_write_bytes(child.id()), readings.load(Ordering::Relaxed), groups.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let device_bytes = fs.map(WearFs::device_bytes).zip(d0).map(|(d1, d0)| d1.saturating_sub(d0));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    let _ = reader.join();
    if !outage {
        let _ = std::fs::remove_file(&sink);
    }
    let _ = std::fs::remove_dir_all(&runtime);
    if r1 == r0 {
        anyhow::bail!("the wear run with {devices} devices committed nothing; is the daemon failing? (config {})", path.display());
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(Wear { readings: r1 - r0, groups: g1 - g0, write_bytes: w1.saturating_sub(w0), device_bytes, secs })
}

fn daemon_rss(exe: &Path, dir: &Path, devices: usize, time: Duration) -> anyhow::Result<(u64, u64)> {
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\n\n[sink.file]\npath = \"{}\"\n",
        dir.join("daemon-state").display(),
        dir.join("daemon.ndjson").display()
    );
    for i in 0..devices {
        let kind = if i % 2 == 0 { "heart_rate_strap" } else { "pulse_oximeter" };
        cfg.push_str(&format!("\n[[device]]\nid = \"sim-{i}\"\nkind = \"{kind}\"\n[device.simulated]\ninterval_ms = 1000\n"));
    }
    let path = dir.join("daemon.toml");
    std::fs::write(&path, cfg).with_context(|| format!("cannot write {}", path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    std::thread::sleep(time);
    let rss = proc_rss_kib(child.id(), "VmRSS:");
    let peak = proc_rss_kib(child.id(), "VmHWM:");
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    Ok((rss, peak))
}

/// A scratch folder that is removed afterwards.
fn tempfile_dir(base: Option<&Path>) -> anyhow::Result<ScratchDir> {
    let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let p = base.join(format!("iomt-edge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("cannot create the scratch folder {} (--dir)", p.display()))?;
    Ok(ScratchDir(p))
}

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
