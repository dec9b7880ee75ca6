//! `iomt-edge outbox dead-letters list|retry|export` and the dead letters in
//! `outbox stats`, on a stopped gateway's outbox: list and export change
//! nothing; retry needs the gateway stopped (its lock held: exit 1, nothing
//! changed), queues the chosen dead letters again under new numbers, and
//! names a device that has none (exit 2).

use iomt_edge::config::OutboxConfig;
use iomt_edge::model::{DeviceKind, Reading, ReadingType};
use iomt_edge::outbox::{InFlight, Outbox};
use std::path::Path;
use std::process::Command;

/// One test at a time: a child process forked by one test while another
/// test's outbox is open shares that outbox's lock until it execs, so the
/// other test could find its own outbox "in use".
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// (exit code, stdout, stderr)
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A stopped gateway's outbox: readings 1..=6 of strap-1 and oxi-2 in turn;
/// 1 (strap-1) and 2 (oxi-2) and 3 (strap-1) were refused alone and are dead
/// letters. Returns the readings.
fn outbox_with_dead_letters(state: &Path) -> Vec<Reading> {
    let (ob, _) = Outbox::open(&state.join("outbox"), &OutboxConfig::default()).unwrap();
    let mut rs: Vec<Reading> = (0..6)
        .map(|i| {
            let (dev, kind, ty, name) = if i % 2 == 0 {
                ("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate, "heartRate")
            } else {
                ("oxi-2", DeviceKind::PulseOximeter, ReadingType::Spo2, "spo2")
            };
            Reading::new(dev, kind, ty).with_value(name, 90.0 + i as f64)
        })
        .collect();
    ob.append(&mut rs).unwrap();
    for seq in [1, 2, 3] {
        let rec = InFlight { message_id: format!("m{seq}"), seqs: vec![seq] };
        ob.put_in_flight(&rec).unwrap();
        assert_eq!(ob.dead_letter(&rec, "eventhubs", "Event Hubs answered HTTP 413 (MessageSizeExceeded)").unwrap(), 1);
    }
    ob.close_clean().unwrap();
    rs
}

#[test]
fn list_export_and_stats_show_the_dead_letters_and_change_nothing() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let rs = outbox_with_dead_letters(&state);
    let s = state.to_str().unwrap();
    let before = std::fs::read(state.join("outbox/db")).unwrap();

    let (code, out, err) = cli(&["outbox", "stats", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("dead letters") && l.contains(" 3 (")), "{out}");
    let (code, out, _) = cli(&["outbox", "stats", "--state-dir", s, "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((j["dead_letters"].as_u64(), j["queued"].as_u64()), (Some(3), Some(3)), "{j}");

    let (code, out, err) = cli(&["outbox", "dead-letters", "list", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("3 dead letters in"), "{out}");
    let line = |dev: &str| out.lines().find(|l| l.starts_with(dev)).unwrap_or_default().to_string();
    assert_eq!(line("strap-1").split_whitespace().nth(1), Some("2"), "{out}");
    assert_eq!(line("oxi-2").split_whitespace().nth(1), Some("1"), "{out}");
    assert!(line("oxi-2").contains("eventhubs") && line("oxi-2").contains("MessageSizeExceeded"), "{out}");
    let (code, out, _) = cli(&["outbox", "dead-letters", "list", "--state-dir", s, "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[1]["deviceId"], "strap-1");
    assert_eq!(j[1]["seqs"], serde_json::json!([1, 3]));

    // Export: one JSON line per dead letter, the reading whole.
    let (code, out, err) = cli(&["outbox", "dead-letters", "export", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for (l, r) in lines.iter().zip(&rs) {
        assert_eq!(l["deadLetterSeq"].as_u64(), Some(r.seq));
        assert_eq!(l["reading"], serde_json::to_value(r).unwrap(), "the reading as it was queued");
        assert_eq!(l["sink"], "eventhubs");
    }
    let file = d.path().join("dead.ndjson");
    let (code, _, err) = cli(&["outbox", "dead-letters", "export", "--state-dir", s, "--device", "oxi-2", "--out", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"deviceId\":\"oxi-2\""), "{text}");

    assert_eq!(std::fs::read(state.join("outbox/db")).unwrap(), before, "list, export and stats changed the store");
}

#[test]
fn retry_needs_the_gateway_stopped_and_queues_them_again() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let rs = outbox_with_dead_letters(&state);
    let s = state.to_str().unwrap();

    // A running gateway holds the outbox: refused, nothing changed.
    {
        let (ob, _) = Outbox::open(&state.join("outbox"), &OutboxConfig::default()).unwrap();
        let (code, _, err) = cli(&["outbox", "dead-letters", "retry", "--all", "--state-dir", s]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("stop it first"), "{err}");
        assert_eq!(ob.stats().dead_letters, 3);
        ob.close_clean().unwrap();
    }
    let (code, _, err) = cli(&["outbox", "dead-letters", "retry", "--state-dir", s]);
    assert_eq!(code, 2, "one of --all, --device, --seq is required: {err}");
    let (code, _, err) = cli(&["outbox", "dead-letters", "retry", "--device", "nobody", "--state-dir", s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no dead letter") && err.contains("nobody"), "{err}");

    let (code, out, err) = cli(&["outbox", "dead-letters", "retry", "--device", "strap-1", "--state-dir", s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued 2 dead letters again") && out.contains("7..=8") && out.contains("1 dead letters left"), "{out}");
    let (ob, _) = Outbox::inspect(&state.join("outbox"), &OutboxConfig::default()).unwrap();
    let queued = ob.read_range(0, u64::MAX, 100).unwrap();
    assert_eq!(queued.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
    for (new, old) in queued[3..].iter().zip([&rs[0], &rs[2]]) {
        assert_eq!((new.device_id.as_str(), new.time, &new.values), (old.device_id.as_str(), old.time, &old.values), "same reading, new number");
    }
    drop(ob);
    let (code, out, _) = cli(&["outbox", "dead-letters", "retry", "--seq", "2", "--state-dir", s]);
    assert_eq!(code, 0);
    assert!(out.contains("0 dead letters left"), "{out}");
    let (code, out, _) = cli(&["outbox", "dead-letters", "list", "--state-dir", s]);
    assert_eq!(code, 0);
    assert!(out.starts_with("no dead letters"), "{out}");
    let (code, out, _) = cli(&["outbox", "dead-letters", "retry", "--all", "--state-dir", s]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to retry"), "{out}");

    // No outbox there: exit 2, nothing created.
    let none = d.path().join("none");
    let (code, _, err) = cli(&["outbox", "dead-letters", "retry", "--all", "--state-dir", none.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(!none.exists());
    let (code, _, _) = cli(&["outbox", "dead-letters", "list", "--state-dir", none.to_str().unwrap()]);
    assert_eq!(code, 2);
}
