//! Measurements (not pass/fail timing tests; ignored by default):
//! added RSS per connected BLE device, and notification -> ReadingSender latency.
//!
//! `cargo test --release --test integration ble_measure:: -- --ignored --nocapture --test-threads=1`

// The tests share one simulated BlueZ; a std Mutex guard held for a whole
// test (across its awaits) is how they take turns, on purpose.
#![allow(clippy::await_holding_lock)]

use crate::support::ble as ble_common;

use ble_common::*;
use iomt_edge::adapters::ble::Selector;
use iomt_edge::adapters::{Adapter, AdapterContext, DeviceRegistry, ReadingSender};
use iomt_edge::model::{DeviceKind, ReadingType};
use iomt_edge::simulate::bluez::SimConfig;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The simulator runs as a separate process (`iomt-edge simulate bluez --bus`), so
/// this process's RSS is the gateway side only: btleplug + our adapter.
/// Phase A streams 1 strap for 10 s, phase B 7 straps for 10 s, each with a
/// fresh adapter; the added RSS per device is (B - A) / 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rss_per_connected_device() {
    if !have_dbus_daemon("rss_per_connected_device") {
        return;
    }
    let _turn = serial();
    let bus = shared_bus().address().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["simulate", "bluez", "--bus", &bus, "--straps", "7", "--oximeters", "0", "--interval-ms", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(printed, bus);
    let before = rss_kib();
    let mut results = Vec::new();
    for n in [1usize, 7] {
        let devices: Vec<_> = (1..=n)
            .map(|i| device(&format!("strap-{i}"), DeviceKind::HeartRateStrap, Selector::Address(format!("C0:FF:EE:00:00:{i:02X}"))))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
        let registry = Arc::new(DeviceRegistry::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let ctx = AdapterContext { readings: ReadingSender::new(tx), registry: registry.clone(), shutdown: shutdown.clone() };
        let adapter: Box<dyn Adapter> = Box::new(iomt_edge::adapters::ble::BleAdapter::new(devices));
        let task = tokio::spawn(adapter.run(ctx));
        let start = Instant::now();
        while registry.streaming() < n && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(registry.streaming(), n);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = rss_kib();
        eprintln!("{n} connected device(s): VmRSS {rss} KiB (before any adapter: {before} KiB)");
        results.push(rss);
        shutdown.cancel();
        task.await.unwrap().unwrap();
        drain.abort();
    }
    let per = (results[1] as f64 - results[0] as f64) / 6.0;
    eprintln!("added RSS per connected device: {per:.0} KiB");
    let _ = child.kill().await;
}

/// Notification emitted by the simulator -> reading received from the
/// adapter's ReadingSender (same process, same clock), 1 strap at 20 Hz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn notification_to_reading_latency() {
    if !have_dbus_daemon("notification_to_reading_latency") {
        return;
    }
    let _turn = serial();
    let config = SimConfig {
        devices: vec![iomt_edge::simulate::bluez::SimDeviceSpec::strap("C0:FF:EE:00:00:01", "SN0001")],
        interval: Duration::from_millis(50),
    };
    let strap = device("strap-1", DeviceKind::HeartRateStrap, Selector::Address("C0:FF:EE:00:00:01".into()));
    let mut rig = Rig::start(config, vec![strap]).await;
    let mut arrivals = Vec::new();
    let start = Instant::now();
    while arrivals.len() < 300 && start.elapsed() < Duration::from_secs(60) {
        let before = rig.readings.len();
        rig.wait_for("a reading", Duration::from_secs(5), |rs| rs.len() > before).await;
        for r in &rig.readings[before..] {
            if r.kind == ReadingType::HeartRate {
                arrivals.push(Instant::now());
            }
        }
    }
    let sent: Vec<_> = rig.sim.sent().into_iter().filter(|s| s.uuid16 == 0x2A37).collect();
    let mut lat: Vec<f64> = sent.iter().zip(arrivals.iter()).map(|(s, a)| a.saturating_duration_since(s.at).as_secs_f64() * 1000.0).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
    eprintln!(
        "notification -> ReadingSender latency over {} notifications: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    let _ = rig.finish().await;
}

/// Notification emitted by the simulator -> reading durable in the sled outbox,
/// through the real group committer at the default window (100 ms), 1 strap at
/// 20 Hz. The commit instant of each heart rate is when the committer's watch
/// first reports a sequence number at or past the reading's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn notification_to_committed_latency() {
    use iomt_edge::config::OutboxConfig;
    use iomt_edge::outbox::{
        committer::{CommitReport, Committer},
        Outbox,
    };
    if !have_dbus_daemon("notification_to_committed_latency") {
        return;
    }
    let _turn = serial();
    let bus = shared_bus();
    let config = SimConfig {
        devices: vec![iomt_edge::simulate::bluez::SimDeviceSpec::strap("C0:FF:EE:00:00:01", "SN0001")],
        interval: Duration::from_millis(50),
    };
    let sim = iomt_edge::simulate::bluez::BluezSim::start(bus.address(), config).await.expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig::default();
    assert_eq!(cfg.flush_interval_ms, 100, "measure at the default window");
    let (outbox, _) = Outbox::open(dir.path(), &cfg).unwrap();
    let outbox = Arc::new(outbox);
    let registry = Arc::new(DeviceRegistry::new());
    let committer = Committer {
        outbox: outbox.clone(),
        window: Duration::from_millis(cfg.flush_interval_ms),
        hooks: iomt_edge::service::commit_hooks(&Arc::new(iomt_edge::service::associations::Associations::load(&[], None)), &registry),
        health: Arc::new(iomt_edge::health::Health::new()),
        report: CommitReport(false),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let (committer_task, mut committed, _group_sync) = committer.spawn(rx);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = AdapterContext { readings: ReadingSender::new(tx), registry, shutdown: shutdown.clone() };
    let strap = device("strap-1", DeviceKind::HeartRateStrap, Selector::Address("C0:FF:EE:00:00:01".into()));
    let adapter: Box<dyn Adapter> = Box::new(iomt_edge::adapters::ble::BleAdapter::new(vec![strap]).with_system_bus(bus.address()));
    let task = tokio::spawn(adapter.run(ctx));

    // Record when each sequence number became durable.
    let mut commits: Vec<(u64, Instant)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(25) {
        if tokio::time::timeout(Duration::from_secs(1), committed.changed()).await.is_ok_and(|r| r.is_ok()) {
            commits.push((*committed.borrow(), Instant::now()));
        }
    }
    shutdown.cancel();
    let _ = task.await;
    committer_task.await.unwrap();

    // The i-th heart rate in the outbox is the i-th 0x2A37 notification sent
    // (the e2e tests prove nothing is lost or invented).
    let stored = outbox.read_range(0, u64::MAX, usize::MAX).unwrap();
    let hr_seqs: Vec<u64> = stored.iter().filter(|r| r.kind == ReadingType::HeartRate).map(|r| r.seq).collect();
    let sent: Vec<_> = sim.sent().into_iter().filter(|s| s.uuid16 == 0x2A37).collect();
    let mut lat: Vec<f64> = sent
        .iter()
        .zip(&hr_seqs)
        .filter_map(|(s, seq)| commits.iter().find(|(c, _)| c >= seq).map(|(_, at)| at.saturating_duration_since(s.at).as_secs_f64() * 1000.0))
        .collect();
    assert!(lat.len() >= 300, "expected at least 300 committed heart rates, got {}", lat.len());
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
    eprintln!(
        "notification -> committed (group commit {} ms) over {} notifications: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        cfg.flush_interval_ms,
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    sim.stop().await;
}
