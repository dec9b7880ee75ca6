//! A full disk, for real: the gateway runs as a process with its state folder
//! on a small tmpfs, and the test fills that tmpfs while readings stream in.
//!
//! sled refuses every write after one I/O error until it is reopened, so
//! before the outbox learned to reopen itself the gateway stopped storing
//! (and its forwarder stopped) for good. Now: it says so in plain words, once;
//! it keeps running and keeps what it could not store in memory; and when
//! there is room again everything is stored and delivered, with no hole in
//! the sequence numbers, nothing delivered twice under different ids.
//!
//! Needs root (mount -t tmpfs). Without it the test says SKIPPED (a failure
//! under `IOMT_REQUIRE_ALL=1`).

use crate::support::gateway as gateway_common;
use crate::support::tmpfs::{self, fill};

use gateway_common::{start_logging_to, terminate, Committed, Delivered};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_loses_nothing_and_the_gateway_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), "24m") else { return };
    let out = dir.path().join("delivered.ndjson");
    let log = dir.path().join("gateway.log");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
id = "disk-full-test"
state_dir = "{state}"

[outbox]
flush_interval_ms = 50

[forwarder]
batch_max_readings = 50
batch_max_age_ms = 100
retry_initial_ms = 50
retry_max_ms = 500

[[device]]
id = "strap-a"
kind = "heart_rate_strap"
patient_id = "P-1"
[device.simulated]
interval_ms = 20
seed = 7

[sink.file]
path = "{out}"
"#,
            state = state_fs.path().display(),
            out = out.display()
        ),
    )
    .unwrap();

    let committed: Committed = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log));
    let count = || committed.lock().unwrap().len();
    wait_for("the first readings to be committed", 30, || count() > 100);

    // Fill the disk under the running gateway.
    let filler = state_fs.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the gateway to notice the full disk", 30, || log_text().contains("cannot store readings in the outbox"));
    let stalled_at = count();
    // A few seconds on a full disk: the gateway keeps running.
    std::thread::sleep(Duration::from_secs(3));
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the gateway exited on a full disk ({status:?}):\n{}", log_text());
    }
    // Commits may go on while the disk is full as long as they are durable:
    // the commit journal's records land in space it already has. Whatever
    // was reported committed must be delivered (checked below, with no hole
    // in the numbers); whatever could not be stored waits in memory.
    let while_full = count() - stalled_at;

    // Room again: no restart, no operator.
    std::fs::remove_file(&filler).unwrap();
    wait_for("commits to resume", 60, || count() > stalled_at + 200);
    assert!(log_text().contains("outbox writes work again"), "{}", log_text());

    // Let it deliver everything committed, then stop it cleanly.
    let all: Vec<u64> = committed.lock().unwrap().keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = Delivered::from_ndjson(&out);
        let missing: Vec<u64> = all.iter().copied().filter(|s| !d.ids.contains_key(s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 60 s waiting for every committed reading to be delivered: {} missing, the first {:?}; stalled at {stalled_at}\n--- gateway log ---\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&child);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "SIGTERM must lead to a clean exit, got {status:?}:\n{}", log_text());

    let c = committed.lock().unwrap().clone();
    let d = Delivered::from_ndjson(&out);
    d.check(&c);
    // No hole: a group that failed was stored again under the same numbers,
    // or found on disk and not stored twice.
    let max = *c.keys().last().unwrap();
    assert_eq!(c.len() as u64, max, "committed sequence numbers have holes: {} of 1..={max}", c.len());

    // Plain words, once per episode, not once per retry.
    let text = log_text();
    assert_eq!(text.matches("cannot store readings in the outbox").count(), 1, "{text}");
    assert!(text.contains("No space left on device"), "the cause is named: {text}");
    assert!(!text.contains("panicked"), "{text}");
    eprintln!(
        "full disk: {} readings committed ({while_full} in the 3 s the disk was full, {} after it had room again), {} delivered, {} resent under the same id",
        c.len(),
        c.len() - stalled_at,
        d.ids.len(),
        d.duplicated()
    );
}
