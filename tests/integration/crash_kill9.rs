//! Crash safety: the gateway runs as a real process with simulated devices and is
//! killed with SIGKILL at random moments, many times, then restarted. Every
//! reading that was reported committed before a kill must be delivered
//! afterwards; a reading delivered twice must carry the same message id both
//! times; each device's readings arrive in order.

use crate::support::gateway as gateway_common;

use gateway_common::{start, terminate, Delivered};
use std::collections::BTreeMap;
use std::path::Path;
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
{devices}
[sink.file]
path = "{out}"
"#,
        state = dir.join("state").display(),
        out = dir.join("delivered.ndjson").display(),
        devices = gateway_common::CRASH_TEST_DEVICES
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    path
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
    // Every other run is killed at a random moment after it was started
    // (the start itself: opening the outbox, applying its journal); the
    // others at a random moment after their first commit, so that on a
    // loaded machine, where a start can take a whole short run, the test
    // still kills gateways with many committed readings behind them.
    const MIN_COMMITTED: usize = 500;
    let mut done = 0;
    while done < kills || (committed.lock().unwrap().len() <= MIN_COMMITTED && done < 4 * kills) {
        let before = committed.lock().unwrap().len();
        let (mut child, reader) = start(&config, committed.clone());
        if done % 2 == 1 {
            let up_by = Instant::now() + Duration::from_secs(20);
            while committed.lock().unwrap().len() == before && Instant::now() < up_by {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let wait_ms = 30 + next() % 400;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        done += 1;
    }
    let total_committed = committed.lock().unwrap().len();
    assert!(total_committed > MIN_COMMITTED, "the gateway should have committed many readings, got {total_committed} in {done} runs");

    // After a kill the outbox says its last life did not stop cleanly.
    let state = dir.path().join("state");
    assert_eq!(last_stop(&state), "unclean", "after kill -9");

    // Final run: let it drain what the killed runs committed, then stop it
    // cleanly with SIGTERM (which delivers what is pending before exiting).
    let before_final: Vec<u64> = committed.lock().unwrap().keys().copied().collect();
    let log = dir.path().join("final.log");
    let (child, reader) = gateway_common::start_logging_to(&config, committed.clone(), Some(&log));
    let out = dir.path().join("delivered.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = Delivered::from_ndjson(&out);
        let missing = before_final.iter().filter(|s| !d.ids.contains_key(s)).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} committed readings still undelivered after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Up before SIGTERM (its handlers are in place once it says it runs):
    // when everything was delivered before this start, the loop above ends
    // at once, and a SIGTERM in the first milliseconds would meet the
    // default action instead.
    let status_file = dir.path().join("state").join("status.json");
    let pid = u64::from(child.id());
    let up = || {
        let doc: serde_json::Value = std::fs::read(&status_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        doc["running"] == true && doc["pid"].as_u64() == Some(pid)
    };
    let up_by = Instant::now() + Duration::from_secs(30);
    while !up() {
        assert!(Instant::now() < up_by, "the final run did not write its status file in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&child);
    let mut child = child;
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must lead to a clean exit, got {status:?}");
    assert!(t.elapsed() < Duration::from_secs(15), "SIGTERM took {:?}", t.elapsed());
    reader.join().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("the last stop was not clean").count(), 1, "one line on what the unclean stop left behind, got:\n{log}");
    assert!(log.contains("nothing had to be discarded"), "{log}");
    assert_eq!(last_stop(&state), "clean", "after SIGTERM");

    let d = Delivered::from_ndjson(&out);
    let c = committed.lock().unwrap().clone();
    d.check(&c);
    eprintln!(
        "flush_interval_ms={flush_interval_ms}: {kills} kills, {} committed readings all delivered, {} distinct delivered, {} resent (same id)",
        c.len(),
        d.ids.len(),
        d.duplicated()
    );
}

/// `outbox stats --json`'s `previousStop.kind` of a stopped gateway.
fn last_stop(state_dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["outbox", "stats", "--json", "--state-dir"])
        .arg(state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "outbox stats: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["previous_stop"]["kind"].as_str().unwrap_or_default().to_string()
}

#[test]
fn kill9_group_commit_loses_nothing() {
    kill9_cycle(100, KILLS, 0x9E3779B97F4A7C15);
}

#[test]
fn kill9_flush_every_reading_loses_nothing() {
    kill9_cycle(0, 20, 0xD1B54A32D192ED03);
}
