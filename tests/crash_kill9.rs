//! Crash safety: the gateway runs as a real process with simulated devices and is
//! killed with SIGKILL at random moments, many times, then restarted. Every
//! reading that was reported committed before a kill must be delivered
//! afterwards; a reading delivered twice must carry the same message id both
//! times; each device's readings arrive in order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 60;

fn write_config(dir: &Path, flush_interval_ms: u64) -> std::path::PathBuf {
    let cfg = format!(
        r#"
[gateway]
id = "crash-test"
state_dir = "{state}"

[outbox]
flush_interval_ms = {flush_interval_ms}

[forwarder]
batch_max_readings = 40
batch_max_age_ms = 30
retry_initial_ms = 50
retry_max_ms = 200

[[device]]
id = "strap-a"
kind = "heart_rate_strap"
patient_id = "P-1"
[device.simulated]
interval_ms = 15
seed = 1
dropout_probability = 0.05

[[device]]
id = "oxi-b"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 20
seed = 2

[[device]]
id = "strap-c"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 25
seed = 3

[sink.file]
path = "{out}"
"#,
        state = dir.join("state").display(),
        out = dir.join("delivered.ndjson").display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Starts the gateway; a thread collects the committed (seq, device) pairs it reports.
fn start(config: &Path, committed: Arc<Mutex<BTreeMap<u64, String>>>) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["run", "--report-commits", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gateway");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).expect("commit report is JSON");
            let mut c = committed.lock().unwrap();
            for item in v["committed"].as_array().unwrap() {
                c.insert(item[0].as_u64().unwrap(), item[1].as_str().unwrap().to_string());
            }
        }
    });
    (child, reader)
}

struct Delivered {
    /// seq -> message ids it was delivered under
    ids: HashMap<u64, BTreeSet<String>>,
    /// device -> seqs in file order (first occurrence only)
    order: HashMap<String, Vec<u64>>,
    /// (seq, device) as delivered
    device_of: HashMap<u64, String>,
}

fn read_delivered(path: &Path) -> Delivered {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut d = Delivered { ids: HashMap::new(), order: HashMap::new(), device_of: HashMap::new() };
    for line in text.lines() {
        let m: serde_json::Value = serde_json::from_str(line).expect("every delivered line is a whole JSON message");
        let id = m["messageId"].as_str().unwrap().to_string();
        let device = m["deviceId"].as_str().unwrap().to_string();
        for r in m["readings"].as_array().unwrap() {
            let seq = r["seq"].as_u64().unwrap();
            let first = !d.ids.contains_key(&seq);
            d.ids.entry(seq).or_default().insert(id.clone());
            if first {
                d.order.entry(device.clone()).or_default().push(seq);
                d.device_of.insert(seq, device.clone());
            }
        }
    }
    d
}

fn kill9_cycle(flush_interval_ms: u64, kills: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), flush_interval_ms);
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    let mut rng_state = seed;
    let mut next = || {
        // xorshift: deterministic "random" kill times per seed
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for _ in 0..kills {
        let (mut child, reader) = start(&config, committed.clone());
        let wait_ms = 30 + next() % 400;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
    }
    let total_committed = committed.lock().unwrap().len();
    assert!(total_committed > 500, "the gateway should have committed many readings, got {total_committed}");

    // Final run: let it drain what the killed runs committed, then stop it
    // cleanly with SIGTERM (which delivers what is pending before exiting).
    let before_final: Vec<u64> = committed.lock().unwrap().keys().copied().collect();
    let (child, reader) = start(&config, committed.clone());
    let out = dir.path().join("delivered.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = read_delivered(&out);
        let missing = before_final.iter().filter(|s| !d.ids.contains_key(s)).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} committed readings still undelivered after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut child = child;
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must lead to a clean exit, got {status:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "SIGTERM took {:?}", t.elapsed());
    reader.join().unwrap();

    let d = read_delivered(&out);
    let c = committed.lock().unwrap().clone();
    for (seq, device) in &c {
        let ids = d.ids.get(seq).unwrap_or_else(|| panic!("committed reading {seq} was never delivered"));
        assert_eq!(ids.len(), 1, "reading {seq} was delivered under different message ids: {ids:?}");
        assert_eq!(d.device_of.get(seq), Some(device), "reading {seq} delivered for the wrong device");
    }
    for (device, seqs) in &d.order {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "readings of {device} were delivered out of order");
    }
    let dups: usize = d.ids.values().filter(|s| s.len() > 1).count();
    eprintln!(
        "flush_interval_ms={flush_interval_ms}: {kills} kills, {} committed readings all delivered, {} distinct delivered, {dups} delivered under several ids",
        c.len(),
        d.ids.len()
    );
}

#[test]
fn kill9_group_commit_loses_nothing() {
    kill9_cycle(100, KILLS, 0x9E3779B97F4A7C15);
}

#[test]
fn kill9_flush_every_reading_loses_nothing() {
    kill9_cycle(0, 20, 0xD1B54A32D192ED03);
}
