//! IoT Hub benchmark: backlog drain to the local emulator, billed 4 KB units
//! per 1,000 readings, publish-to-PUBACK latency, and a side-by-side run of
//! Microsoft's Python device SDK sending the same readings one per message.
//!
//! Run: `IOMT_TEST_PYTHON=/path/to/venv/bin/python cargo bench --bench iothub`
//! (`READINGS=20000 BATCH=500` to change the sizes). The sink runs in a child
//! process so its RSS is measured apart from the emulator.

use iomt_edge::config::iothub::IotHubSinkConfig;
use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig};
use iomt_edge::sinks::iothub::{session::Tuning, IotHubSink, SimpleControl};
use iomt_edge::sinks::Sink;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: u64 = 8;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn readings(n: u64) -> Vec<Reading> {
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    (0..n)
        .map(|i| {
            let dev = format!("strap-{}", i % DEVICES);
            let mut r = Reading::new(dev, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 55.0 + (i % 50) as f64);
            r.seq = i + 1;
            r.time = t0 + chrono::Duration::milliseconds(i as i64 * 100);
            r
        })
        .collect()
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// Child mode: drain a backlog through our sink, then measure latency.
async fn client(cs: String, ca: String, n: u64, batch: u64) {
    let mut cfg = IotHubSinkConfig::with_connection_string(&cs);
    cfg.ca_file = Some(ca.into());
    cfg.max_in_flight = DEVICES as usize;
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(IotHubSink::start(&cfg, dir.path(), Arc::new(SimpleControl::default()), Tuning::default()).unwrap());
    let all = readings(n);
    // Batches per device, as the forwarder builds them (bounded by max_message_bytes).
    let mut per_dev: Vec<Vec<Message>> = vec![Vec::new(); DEVICES as usize];
    for d in 0..DEVICES {
        let mine: Vec<Reading> = all.iter().filter(|r| r.device_id == format!("strap-{d}")).cloned().collect();
        for chunk in mine.chunks(batch as usize) {
            let m = Message::from_batch("bench-gw", "0000beef", chunk).unwrap();
            assert!(m.to_json().len() <= sink.max_message_bytes());
            per_dev[d as usize].push(m);
        }
    }
    let units: u64 = per_dev
        .iter()
        .flatten()
        .map(|m| {
            let props: usize = sink.properties(m).iter().map(|(k, v)| if k.starts_with("$.") { v.len() } else { k.len() + v.len() }).sum();
            (m.to_json().len() + props).div_ceil(4096) as u64
        })
        .sum();
    let msgs: usize = per_dev.iter().map(Vec::len).sum();
    // Warm up the connection.
    sink.send(&Message::from_batch("bench-gw", "0000beef", &readings(1)).unwrap()).await.unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for list in per_dev {
        let s = sink.clone();
        tasks.push(tokio::spawn(async move {
            for m in list {
                while s.send(&m).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let drain = start.elapsed().as_secs_f64();
    // Latency: one reading per message, one at a time.
    let mut lat = Vec::new();
    for m in readings(1000).iter().map(|r| Message::from_batch("bench-gw", "0000cafe", std::slice::from_ref(r)).unwrap()) {
        let t = Instant::now();
        sink.send(&m).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let single_rate = lat.len() as f64 / (lat.iter().sum::<f64>() / 1000.0);
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    sink.close().await;
    println!(
        "{}",
        serde_json::json!({
            "readings": n, "messages": msgs, "drain_s": drain,
            "readings_per_s": n as f64 / drain, "messages_per_s": msgs as f64 / drain,
            "units_per_1000_readings": units as f64 * 1000.0 / n as f64,
            "p50_ms": p50, "p99_ms": p99, "single_msgs_per_s": single_rate, "max_rss_kb": vm_hwm_kb(),
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let a = &args[i + 1..];
        rt.block_on(client(a[0].clone(), a[1].clone(), a[2].parse().unwrap(), a[3].parse().unwrap()));
        return;
    }
    let n = env_num("READINGS", 20_000);
    let batch = env_num("BATCH", 500);
    rt.block_on(async move {
        // Port 8883 on a random loopback address, because the Python SDK always dials 8883.
        let mut emu = None;
        for _ in 0..30 {
            let ip = [127, rand::random::<u8>().max(1), rand::random::<u8>(), rand::random::<u8>().clamp(2, 254)];
            if let Ok(e) = Emulator::start(EmulatorConfig { bind: SocketAddr::from((ip, 8883)), ..Default::default() }).await {
                emu = Some(e);
                break;
            }
        }
        let emu = emu.expect("no loopback address free on 8883");
        let dir = tempfile::tempdir().unwrap();
        let ca = emu.write_ca(dir.path()).unwrap();
        let cs = emu.add_device("bench-rust");
        let exe = std::env::current_exe().unwrap();
        let out = tokio::process::Command::new(exe)
            .args(["--client", &cs, ca.to_str().unwrap(), &n.to_string(), &batch.to_string()])
            .output()
            .await
            .unwrap();
        let ours: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("client failed: {}", String::from_utf8_lossy(&out.stderr)));
        println!("iomt-edge sink : {ours}");
        let got = emu.messages().len();
        println!("emulator received {got} messages from the sink");
        // The Python SDK, same readings, one message per reading.
        let py = std::env::var("IOMT_TEST_PYTHON").ok();
        let Some(py) = py else {
            println!("python SDK     : SKIPPED (set IOMT_TEST_PYTHON to a Python with azure-iot-device)");
            return;
        };
        let py_n = env_num("PY_READINGS", n);
        let bodies = dir.path().join("bodies.ndjson");
        let text: String = readings(py_n)
            .iter()
            .map(|r| String::from_utf8(Message::from_batch("bench-gw", "0000beef", std::slice::from_ref(r)).unwrap().to_json()).unwrap() + "\n")
            .collect();
        std::fs::write(&bodies, text).unwrap();
        let cs_py = emu.add_device("bench-python");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/iothub_bench_sdk.py");
        let out = tokio::process::Command::new(py).args([script, &cs_py, ca.to_str().unwrap(), bodies.to_str().unwrap()]).output().await.unwrap();
        let theirs: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("python failed: {}", String::from_utf8_lossy(&out.stderr)));
        println!("python SDK     : {theirs}");
        let py_units: u64 = emu
            .messages()
            .iter()
            .filter(|m| m.device_id == "bench-python")
            .map(|m| {
                (m.body.len() + m.properties.iter().map(|(k, v)| if k.starts_with("$.") { v.len() } else { k.len() + v.len() }).sum::<usize>())
                    .div_ceil(4096) as u64
            })
            .sum();
        println!("python units per 1000 readings: {:.1}", py_units as f64 * 1000.0 / py_n as f64);
        let ratio = ours["readings_per_s"].as_f64().unwrap_or(0.0) / theirs["msgs_per_s"].as_f64().unwrap_or(1.0);
        println!("throughput ratio (readings/s, sink backlog drain vs SDK one-per-message): {ratio:.1}x");
    });
}
