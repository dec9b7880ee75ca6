//! A damaged outbox is salvaged, not emptied: the real gateway builds a
//! backlog during an outage, stops, a page of the store is zeroed (sled 0.34
//! refuses that store), and the restarted gateway delivers every committed
//! reading it can still read, says in plain words how many it salvaged and how
//! many it could not read (and that count is honest: every committed reading
//! is delivered or counted), keeps the damaged copy, and `outbox export
//! --from` reads the same readings out of that copy.

use crate::support::gateway as gateway_common;

use gateway_common::{start_logging_to, terminate, Delivered};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn write_config(dir: &Path, sink: &Path) -> std::path::PathBuf {
    let cfg = format!(
        r#"
[gateway]
id = "salvage-test"
state_dir = "{state}"

[forwarder]
batch_max_readings = 40
batch_max_age_ms = 30
retry_initial_ms = 50
retry_max_ms = 200

[[device]]
id = "strap-a"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 10
seed = 1

[[device]]
id = "oxi-b"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 15
seed = 2

[sink.file]
path = "{sink}"
"#,
        state = dir.join("state").display(),
        sink = sink.display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Zeroes one 4 KiB page at `num/den` of the store's log.
fn zero_a_page(db: &Path, num: u64, den: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(db).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start((len * num / den) & !4095)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    f.sync_all().unwrap();
}

/// The `K` of "K damaged records could not be read" in the salvage line.
fn unreadable_in(log: &str) -> Option<usize> {
    let (head, _) = log.split_once(" damaged records could not be read")?;
    head.rsplit("; ").next()?.trim().parse().ok()
}

/// One trial: a backlog, a damaged page at `num/den`, a restart. Returns
/// whether the gateway had to salvage (sled cannot always tell that a page
/// is damaged: then it reads the store as it is, and nothing may be missing).
fn trial(num: u64, den: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    // 1. An outage: every write of the sink fails, readings pile up.
    let config = write_config(dir.path(), Path::new("/dev/full"));
    let log1 = dir.path().join("run1.log");
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log1));
    std::thread::sleep(Duration::from_secs(3));
    terminate(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let before: Vec<u64> = committed.lock().unwrap().keys().copied().collect();
    assert!(before.len() > 200, "a backlog of committed readings, got {}", before.len());

    // 2. Damage one page of the store.
    zero_a_page(&dir.path().join("state").join("outbox").join("db"), num, den);

    // 3. Restart with the sink working: everything readable arrives, what is
    //    not is counted, and new readings keep flowing.
    let out = dir.path().join("delivered.ndjson");
    let config = write_config(dir.path(), &out);
    let log2 = dir.path().join("run2.log");
    let (child, reader) = start_logging_to(&config, committed.clone(), Some(&log2));
    let log = || std::fs::read_to_string(&log2).unwrap_or_default();
    let newest_before = *before.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let d = Delivered::from_ndjson(&out);
        let missing = before.iter().filter(|s| !d.ids.contains_key(s)).count();
        let new_ones = d.ids.keys().filter(|s| **s > newest_before).count();
        let allowed = unreadable_in(&log()).unwrap_or(0);
        if missing <= allowed && new_ones > 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} committed readings undelivered ({allowed} reported unreadable), {new_ones} new ones delivered:\n{}",
            before.len(),
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let l = log();
    for noise in ["panicked", "Corruption", "serialize", "backtrace", "lsn"] {
        assert!(!l.contains(noise), "the log is in plain words, without {noise:?}:\n{l}");
    }
    let d = Delivered::from_ndjson(&out);
    let c = committed.lock().unwrap().clone();
    // Every reading delivered is one that was committed, under one id, in order.
    let delivered_committed: BTreeMap<u64, String> = c.into_iter().filter(|(s, _)| d.ids.contains_key(s)).collect();
    d.check(&delivered_committed);
    let salvaged = l.matches("was damaged and could not be read as it was").count();
    assert!(salvaged <= 1, "{l}");
    if salvaged == 0 {
        let missing = before.iter().filter(|s| !d.ids.contains_key(s)).count();
        assert_eq!(missing, 0, "no salvage, so nothing may be missing:\n{l}");
        return false;
    }
    let unreadable = unreadable_in(&l).unwrap();

    // 4. The damaged copy is kept, marked salvaged, and readable by hand.
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("outbox.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join("SALVAGED.json").exists());
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["outbox", "export", "--from"]).arg(&aside[0]).output().unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(exported.len() + unreadable >= before.len(), "export found {} of {} ({unreadable} unreadable)", exported.len(), before.len());
    for r in &exported {
        let seq = r["seq"].as_u64().unwrap();
        assert!(d.ids.contains_key(&seq), "exported reading {seq} was salvaged and delivered");
    }
    // A manual salvage of a copy the gateway already salvaged is refused.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
        .args(["outbox", "salvage", "--from"])
        .arg(&aside[0])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already salvaged"));
    true
}

#[test]
fn a_damaged_outbox_is_salvaged_and_delivered() {
    // Pages at several places: sled refuses some damaged stores and reads
    // others as they are; at least one must need (and get) a salvage.
    let salvaged: Vec<bool> = [(3, 4), (1, 2), (1, 3), (5, 6)].iter().map(|(n, d)| trial(*n, *d)).collect();
    assert!(salvaged.iter().any(|s| *s), "no trial needed a salvage: {salvaged:?}");
}
