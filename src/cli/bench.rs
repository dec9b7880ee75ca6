//! `iomt-edge bench`: measures this machine's outbox and pipeline, so an
//! installer can see what the SD card and CPU allow. Figures go in
//! docs/performance.md with the command that produced them.

use crate::adapters::DeviceRegistry;
use crate::config::{OutboxConfig, units::ByteSize};
use crate::forwarder::{FlushHandle, Forwarder, ForwarderSettings, ForwarderStats, LiveBatching};
use crate::model::{DeviceKind, Reading, ReadingType};
use crate::outbox::committer::{CommitReport, Committer};
use crate::outbox::Outbox;
use crate::service::associations::Associations;
use crate::service::health::Health;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Readings per ingest measurement.
    #[arg(long, default_value_t = 200_000)]
    pub readings: u64,
    /// Readings queued for the reopen measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Simulated devices for the daemon RSS measurement.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// How long the daemon runs before its RSS is read.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub daemon_time: Duration,
    /// Folder for the scratch outboxes (default: a temporary folder). Put it on
    /// the disk you want to measure (the SD card, not /tmp in RAM).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only open the outbox in DIR and print open time and RSS as JSON (used by
    /// the reopen measurement, in a fresh process).
    #[arg(long, hide = true)]
    pub reopen_only: Option<PathBuf>,
    /// Skip the slow measurements (reopen with a large backlog, daemon RSS).
    #[arg(long)]
    pub quick: bool,
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
async fn ingest(dir: &Path, window_ms: u64, n: u64) -> anyhow::Result<f64> {
    let (ob, _) = Outbox::open(&dir.join(format!("ingest-{window_ms}")), &outbox_cfg(window_ms))?;
    let ob = Arc::new(ob);
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let c = Committer {
        outbox: ob.clone(),
        window: Duration::from_millis(window_ms),
        registry: Arc::new(DeviceRegistry::new()),
        associations: Arc::new(Associations::load(&[], None)),
        health: Arc::new(Health::new()),
        report: CommitReport(false),
    };
    let (task, mut committed) = c.spawn(rx);
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
            retry: crate::forwarder::backoff::Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) },
            auth_retry: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            idle_tick: crate::forwarder::IDLE_TICK,
        },
        committed,
        stats: stats.clone(),
        health: Arc::new(Health::new()),
        flush: FlushHandle::default(),
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
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(dir) = a.reopen_only {
        let start = Instant::now();
        let (ob, _) = Outbox::open(&dir, &OutboxConfig::default())?;
        let open_ms = start.elapsed().as_secs_f64() * 1000.0;
        // What the forwarder does first after a restart: read the oldest readings.
        let first = ob.read_range(0, u64::MAX, 2000)?.len();
        let total_ms = start.elapsed().as_secs_f64() * 1000.0;
        println!(
            "{}",
            serde_json::json!({"queued": ob.len(), "open_ms": open_ms, "open_and_first_read_ms": total_ms,
                "first_read": first, "rss_kib": rss_kib("VmRSS:"), "peak_rss_kib": rss_kib("VmHWM:")})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let tmp = tempfile_dir(a.dir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    println!("iomt-edge bench (scratch folder {})", dir.display());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let r = ingest(&dir, 100, a.readings).await?;
        println!("durable ingest, group commit (100 ms window): {:>10.0} readings/s", r);
        let n_single = (a.readings / 20).max(1000);
        let r = ingest(&dir, 0, n_single).await?;
        println!("durable ingest, flush every reading:          {:>10.0} readings/s  ({n_single} readings)", r);
        let (r, m) = forward(&dir, a.readings).await?;
        println!("forward + ack to the file sink (fsync):       {:>10.0} readings/s  ({m:.0} messages/s)", r);
        anyhow::Ok(())
    })?;
    if a.quick {
        return Ok(ExitCode::SUCCESS);
    }
    let backlog_dir = dir.join("backlog");
    let fill = fill_backlog(&backlog_dir, a.backlog)?;
    println!("filled an outbox with {} readings in {:.1} s", a.backlog, fill);
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(&exe).args(["bench", "--reopen-only"]).arg(&backlog_dir).output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("reopen run failed ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    println!(
        "reopen with {} queued: open {:.0} ms, open + first read {:.0} ms, RSS {} KiB (peak {} KiB)",
        v["queued"], v["open_ms"].as_f64().unwrap_or(0.0), v["open_and_first_read_ms"].as_f64().unwrap_or(0.0),
        v["rss_kib"], v["peak_rss_kib"]
    );
    let (rss, peak) = daemon_rss(&exe, &dir, a.devices, a.daemon_time)?;
    println!("daemon with {} simulated devices after {}: RSS {} KiB (peak {} KiB)", a.devices, humantime::format_duration(a.daemon_time), rss, peak);
    Ok(ExitCode::SUCCESS)
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
    std::fs::write(&path, cfg)?;
    let mut child = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
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
    std::fs::create_dir_all(&p)?;
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
