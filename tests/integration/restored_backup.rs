//! A restored older copy of the state folder (an SD-card image, a VM snapshot,
//! a backup) must not make the gateway reuse a message id for other readings:
//! a receiver that drops duplicates by id would silently drop those readings.
//! The restored outbox hands out sequence numbers it had already used (it
//! cannot know better), but every start draws a fresh epoch for the ids.

use crate::support::gateway as gateway_common;

use gateway_common::{start, terminate};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn write_config(dir: &Path) -> std::path::PathBuf {
    let cfg = format!(
        r#"
[gateway]
id = "backup-test"
state_dir = "{state}"

[forwarder]
batch_max_readings = 20
batch_max_age_ms = 50

[[device]]
id = "strap-a"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 20
seed = 7

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

fn run_for(config: &Path, time: Duration) {
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut child, reader) = start(config, committed);
    std::thread::sleep(time);
    terminate(&child);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

#[test]
fn a_restored_state_folder_never_reuses_a_message_id_for_other_readings() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    run_for(&config, Duration::from_secs(2));
    // The backup, taken while the gateway is stopped.
    copy_dir(&dir.path().join("state"), &dir.path().join("backup"));
    run_for(&config, Duration::from_secs(2));
    // Restore it and run again, twice (two lives on the same old copy).
    for _ in 0..2 {
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        copy_dir(&dir.path().join("backup"), &dir.path().join("state"));
        run_for(&config, Duration::from_secs(2));
    }
    // Every message id names one set of readings (by their content, since the
    // restored outbox reuses sequence numbers).
    let text = std::fs::read_to_string(dir.path().join("delivered.ndjson")).unwrap();
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut reused_seqs = 0;
    let mut seen_seq: HashMap<u64, String> = HashMap::new();
    for line in text.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = m["messageId"].as_str().unwrap().to_string();
        let content = serde_json::to_string(&m["readings"]).unwrap();
        for r in m["readings"].as_array().unwrap() {
            let seq = r["seq"].as_u64().unwrap();
            let body = serde_json::to_string(r).unwrap();
            if seen_seq.get(&seq).is_some_and(|b| *b != body) {
                reused_seqs += 1;
            }
            seen_seq.insert(seq, body);
        }
        if let Some(earlier) = by_id.get(&id) {
            assert_eq!(earlier, &content, "message id {id} was used for different readings");
        }
        by_id.insert(id, content);
    }
    // The scenario is real: the restored copy did hand out old numbers again.
    assert!(reused_seqs > 0, "the restored outbox should have reused sequence numbers");
}
