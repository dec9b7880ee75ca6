//! Outbox unit and property tests: ordering, ack, bounds, drop accounting, reopen,
//! corruption handling.

use super::*;
use crate::config::units::ByteSize;
use crate::model::{DeviceKind, ReadingType};
use proptest::prelude::*;

fn cfg(max_bytes: u64, when_full: WhenFull) -> OutboxConfig {
    OutboxConfig { max_bytes: ByteSize(max_bytes), when_full, ..OutboxConfig::default() }
}

fn reading(device: &str, v: f64) -> Reading {
    Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", v)
}

fn open(dir: &Path, c: &OutboxConfig) -> Outbox {
    Outbox::open(&dir.join("outbox"), c).expect("open").0
}

#[test]
fn append_assigns_increasing_seqs_and_reads_in_order() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &OutboxConfig::default());
    let mut rs: Vec<Reading> = (0..10).map(|i| reading("a", i as f64)).collect();
    let out = ob.append(&mut rs).unwrap();
    let seqs: Vec<u64> = out.seqs.iter().map(|s| s.unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let back = ob.read_range(0, u64::MAX, 100).unwrap();
    assert_eq!(back, rs);
    assert_eq!(ob.read_range(4, 7, 100).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert_eq!(ob.read_range(0, u64::MAX, 3).unwrap().len(), 3);
    assert_eq!(ob.len(), 10);
}

#[test]
fn ack_removes_only_the_batch_and_its_record() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &OutboxConfig::default());
    let mut rs: Vec<Reading> = (0..6).map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, i as f64)).collect();
    ob.append(&mut rs).unwrap();
    let batch = InFlight { message_id: "m1".into(), seqs: vec![1, 3, 5] };
    ob.put_in_flight(&batch).unwrap();
    assert_eq!(ob.in_flight().unwrap(), vec![batch.clone()]);
    ob.ack(&batch).unwrap();
    assert!(ob.in_flight().unwrap().is_empty());
    let left: Vec<u64> = ob.read_range(0, u64::MAX, 100).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(left, vec![2, 4, 6]);
    assert_eq!(ob.len(), 3);
    // Acking again (a duplicate confirmation) changes nothing.
    ob.ack(&batch).unwrap();
    assert_eq!(ob.len(), 3);
}

#[test]
fn reopen_keeps_readings_counters_and_in_flight_with_a_new_epoch() {
    let d = tempfile::tempdir().unwrap();
    let (epoch, stats) = {
        let ob = open(d.path(), &OutboxConfig::default());
        let mut rs: Vec<Reading> = (0..5).map(|i| reading("a", i as f64)).collect();
        ob.append(&mut rs).unwrap();
        ob.put_in_flight(&InFlight { message_id: "x".into(), seqs: vec![1, 2] }).unwrap();
        (ob.epoch().to_string(), ob.stats())
    };
    let ob = open(d.path(), &OutboxConfig::default());
    assert_ne!(ob.epoch(), epoch, "every life gets a fresh epoch, so no message id is ever made twice");
    assert_eq!(ob.epoch().len(), 16, "64 random bits");
    assert_eq!(ob.in_flight().unwrap()[0].message_id, "x", "in-flight batches keep their recorded id");
    assert_eq!(ob.len(), 5);
    assert_eq!(ob.stats().queued_bytes, stats.queued_bytes);
    assert_eq!(ob.in_flight().unwrap().len(), 1);
    let mut more = vec![reading("a", 9.0)];
    ob.append(&mut more).unwrap();
    assert_eq!(more[0].seq, 6, "sequence numbers continue after a reopen");
}

#[test]
fn a_second_gateway_cannot_open_a_locked_outbox() {
    let d = tempfile::tempdir().unwrap();
    let _ob = open(d.path(), &OutboxConfig::default());
    match Outbox::open(&d.path().join("outbox"), &OutboxConfig::default()) {
        Err(OutboxError::Locked(_)) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn drop_oldest_keeps_within_bounds_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(64 * 1024, WhenFull::DropOldest);
    let ob = open(d.path(), &c);
    let mut total = 0u64;
    for round in 0..50 {
        let mut rs: Vec<Reading> = (0..20).map(|i| reading("a", (round * 20 + i) as f64)).collect();
        ob.append(&mut rs).unwrap();
        total += 20;
        assert!(ob.stats().queued_bytes <= 64 * 1024, "bound exceeded");
    }
    let s = ob.stats();
    assert!(s.dropped_full > 0);
    assert_eq!(s.queued + s.dropped_full, total, "every reading is either queued or counted as dropped");
    // The oldest were dropped: what is left is the newest, contiguous, in order.
    let left: Vec<u64> = ob.read_range(0, u64::MAX, 10_000).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(*left.last().unwrap(), total);
    assert!(left.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn refuse_newest_keeps_the_old_and_counts_refusals() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &cfg(32 * 1024, WhenFull::RefuseNewest));
    let mut total = 0u64;
    let mut refused = 0u64;
    for _ in 0..40 {
        let mut rs: Vec<Reading> = (0..10).map(|i| reading("a", i as f64)).collect();
        let out = ob.append(&mut rs).unwrap();
        total += 10;
        refused += out.refused;
        for (r, s) in rs.iter().zip(&out.seqs) {
            assert_eq!(s.is_some(), r.seq != 0);
        }
    }
    let s = ob.stats();
    assert!(refused > 0);
    assert_eq!(s.refused, refused);
    assert_eq!(s.queued + refused, total);
    let first = ob.read_range(0, u64::MAX, 1).unwrap();
    assert_eq!(first[0].seq, 1, "the oldest reading is kept under refuse_newest");
}

#[test]
fn corrupt_outbox_is_moved_aside_and_replaced() {
    let d = tempfile::tempdir().unwrap();
    {
        let ob = open(d.path(), &OutboxConfig::default());
        let mut rs: Vec<Reading> = (0..100).map(|i| reading("a", i as f64)).collect();
        ob.append(&mut rs).unwrap();
    }
    // Overwrite every file sled wrote with garbage.
    let dir = d.path().join("outbox");
    for entry in walk(&dir) {
        let len = std::fs::metadata(&entry).unwrap().len().max(64);
        std::fs::write(&entry, vec![0xA5u8; len as usize]).unwrap();
    }
    let (ob, report) = Outbox::open(&dir, &OutboxConfig::default()).expect("a corrupt outbox must not stop the gateway");
    let aside = report.moved_aside.expect("the corrupt outbox is kept aside");
    assert!(aside.exists());
    assert!(aside.file_name().unwrap().to_string_lossy().starts_with("outbox.corrupt-"));
    assert_eq!(ob.len(), 0);
    let mut rs = vec![reading("a", 1.0)];
    ob.append(&mut rs).unwrap();
    assert_eq!(ob.len(), 1);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn expire_drops_only_old_readings_and_counts_them() {
    let d = tempfile::tempdir().unwrap();
    // Generous margins: on a loaded machine an append (with its fdatasync)
    // can take a good part of a second.
    let c = OutboxConfig { max_age: Duration::from_millis(1500), ..OutboxConfig::default() };
    let ob = open(d.path(), &c);
    let mut old: Vec<Reading> = (0..5).map(|i| reading("a", i as f64)).collect();
    ob.append(&mut old).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    let mut new: Vec<Reading> = (0..3).map(|i| reading("a", i as f64)).collect();
    ob.append(&mut new).unwrap();
    assert_eq!(ob.expire().unwrap(), 5);
    assert_eq!(ob.stats().dropped_age, 5);
    assert_eq!(ob.len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any interleaving of appends, acks and reopens keeps: FIFO order, no
    /// reading lost unless counted as dropped, counters equal to the contents.
    #[test]
    fn model_check(ops in proptest::collection::vec((0u8..4, 1usize..30), 1..40), small in any::<bool>()) {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(if small { 24 * 1024 } else { 64 * 1024 * 1024 }, WhenFull::DropOldest);
        let mut ob = Some(open(d.path(), &c));
        let mut model: std::collections::BTreeSet<u64> = Default::default();
        let mut appended = 0u64;
        let mut acked = 0u64;
        for (op, n) in ops {
            let o = ob.as_ref().unwrap();
            match op {
                0 | 1 => {
                    let mut rs: Vec<Reading> = (0..n).map(|i| reading(if i % 3 == 0 { "x" } else { "y" }, i as f64)).collect();
                    let out = o.append(&mut rs).unwrap();
                    for s in out.seqs.into_iter().flatten() { model.insert(s); }
                    appended += n as u64;
                }
                2 => {
                    let take: Vec<u64> = o.read_range(0, u64::MAX, n).unwrap().iter().map(|r| r.seq).collect();
                    if !take.is_empty() {
                        let b = InFlight { message_id: "m".into(), seqs: take.clone() };
                        o.put_in_flight(&b).unwrap();
                        o.ack(&b).unwrap();
                        for s in take { model.remove(&s); acked += 1; }
                    }
                }
                _ => {
                    drop(ob.take());
                    ob = Some(open(d.path(), &c));
                }
            }
            let o = ob.as_ref().unwrap();
            let stored: Vec<u64> = o.read_range(0, u64::MAX, usize::MAX).unwrap().iter().map(|r| r.seq).collect();
            // What is stored is the model minus what drop-oldest evicted: a suffix.
            prop_assert!(stored.windows(2).all(|w| w[0] < w[1]));
            let s = o.stats();
            prop_assert_eq!(s.queued, stored.len() as u64);
            prop_assert_eq!(appended, acked + s.queued + s.dropped_full);
            let evicted: Vec<u64> = model.iter().copied().filter(|x| !stored.contains(x)).collect();
            prop_assert_eq!(evicted.len() as u64, s.dropped_full);
            if let (Some(max_evicted), Some(min_stored)) = (evicted.iter().max(), stored.first()) {
                prop_assert!(max_evicted < min_stored, "drop_oldest evicted a newer reading");
            }
            prop_assert!(s.queued_bytes <= c.max_bytes.bytes());
        }
    }
}

#[test]
fn recover_reopens_and_tells_whether_the_failed_group_reached_the_disk() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &OutboxConfig::default());
    // A group that made it to disk (the flush error came after sled wrote it):
    // recover keeps its numbers and says it is committed.
    let mut stored: Vec<Reading> = (0..4).map(|i| reading("a", i as f64)).collect();
    ob.append(&mut stored).unwrap();
    assert!(ob.recover(&mut stored).unwrap());
    assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // A group that did not: its numbers are cleared for the retry, which
    // gets the next numbers, with no hole and no second copy.
    let mut lost: Vec<Reading> = (0..3).map(|i| reading("b", i as f64)).collect();
    for (i, r) in lost.iter_mut().enumerate() {
        r.seq = 5 + i as u64;
    }
    assert!(!ob.recover(&mut lost).unwrap());
    assert!(lost.iter().all(|r| r.seq == 0));
    ob.append(&mut lost).unwrap();
    assert_eq!(lost.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert_eq!(ob.len(), 7);
    assert_eq!(ob.read_range(0, u64::MAX, 100).unwrap().len(), 7);
    // The reopened store is the same outbox life (same epoch), and it survives a reopen.
    let epoch = ob.epoch().to_string();
    assert_eq!(ob.stats().epoch, epoch);
    drop(ob);
    let ob = open(d.path(), &OutboxConfig::default());
    assert_eq!(ob.len(), 7);
}

#[test]
fn clean_and_unclean_stops_are_recorded_and_an_unclean_start_recounts() {
    let d = tempfile::tempdir().unwrap();
    let (ob, report) = Outbox::open(&d.path().join("outbox"), &OutboxConfig::default()).unwrap();
    assert_eq!(report.previous_stop, PreviousStop::None);
    assert!(report.recount.is_none());
    let mut rs: Vec<Reading> = (0..3).map(|i| reading("a", i as f64)).collect();
    ob.append(&mut rs).unwrap();
    ob.close_clean().unwrap();
    drop(ob);

    let (ob, report) = Outbox::open(&d.path().join("outbox"), &OutboxConfig::default()).unwrap();
    assert!(matches!(report.previous_stop, PreviousStop::Clean { .. }), "{:?}", report.previous_stop);
    assert!(report.recount.is_none(), "a clean stop needs no recount");
    let started = ob.stats().started_ms;
    assert!(started > 0);
    let mut more = vec![reading("a", 9.0)];
    ob.append(&mut more).unwrap();
    ob.put_in_flight(&InFlight { message_id: "m".into(), seqs: vec![1] }).unwrap();
    // No close_clean: a kill or a power cut.
    drop(ob);

    // Inspection reports the unclean stop and does not change it.
    for _ in 0..2 {
        let (ob, report) = Outbox::inspect(&d.path().join("outbox"), &OutboxConfig::default()).unwrap();
        assert_eq!(report.previous_stop, PreviousStop::Unclean { started_ms: started }, "the last life never stopped cleanly");
        assert!(report.recount.is_none(), "inspection changes nothing");
        assert_eq!(ob.stats().started_ms, started, "inspect shows the last life and records none of its own");
        ob.close_clean().unwrap();
    }

    let (ob, report) = Outbox::open(&d.path().join("outbox"), &OutboxConfig::default()).unwrap();
    assert_eq!(report.previous_stop, PreviousStop::Unclean { started_ms: started });
    let rc = report.recount.expect("an unclean start recounts");
    assert_eq!(rc, Recount { readings: 4, in_flight_batches: 1, counted_before: 4 });
    assert_eq!(ob.stats().previous_stop, PreviousStop::Unclean { started_ms: started });
    assert_eq!(ob.len(), 4);
}

#[test]
fn an_unclean_start_corrects_counters_that_disagree_with_the_store() {
    let d = tempfile::tempdir().unwrap();
    {
        let ob = open(d.path(), &OutboxConfig::default());
        let mut rs: Vec<Reading> = (0..5).map(|i| reading("a", i as f64)).collect();
        ob.append(&mut rs).unwrap();
    }
    // Damage the counters the way lost writes would: they claim more readings
    // than the store holds. (A next sequence number behind the raw log's is
    // a log cut short, which is salvaged: see a_store_damaged_at_open_….)
    {
        // sled's own threads may hold its file lock a moment after the
        // outbox is dropped (a truncation in flight): retry briefly.
        let mut tries = 0;
        let db = loop {
            match sled::open(d.path().join("outbox")) {
                Ok(db) => break db,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let tree = db.open_tree(TREE).unwrap();
        tree.insert(META_COUNT, &9u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
        // The committed groups since the last checkpoint are in the
        // journal, which the start applies over sled: the same lie there.
        journal::append_for_test(&d.path().join("outbox"), vec![journal::Op::Put(META_COUNT.to_vec(), 9u64.to_be_bytes().to_vec())]);
    }
    let (ob, report) = Outbox::open(&d.path().join("outbox"), &OutboxConfig::default()).unwrap();
    let rc = report.recount.expect("recount");
    assert_eq!((rc.readings, rc.counted_before), (5, 9));
    assert_eq!(ob.len(), 5);
    let mut more = vec![reading("a", 9.0)];
    ob.append(&mut more).unwrap();
    assert_eq!(more[0].seq, 6, "a stored sequence number is never handed out again");
}

/// Overwrites `len` bytes of the store's log at `offset` with `byte`.
fn damage(dir: &Path, offset: u64, len: usize, byte: u8) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(dir.join("db")).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![byte; len]).unwrap();
    f.sync_all().unwrap();
}

/// A store with 2,000 readings of two devices, some of them delivered, one
/// batch in flight; closed cleanly.
fn store_with_history(dir: &Path) -> (Vec<u64>, InFlight) {
    let (ob, _) = Outbox::open(dir, &OutboxConfig::default()).unwrap();
    for g in 0..100 {
        let mut rs: Vec<Reading> = (0..20).map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, (g * 20 + i) as f64)).collect();
        ob.append(&mut rs).unwrap();
    }
    // Device a's first 300 readings were delivered.
    let delivered: Vec<u64> = (1..=600).filter(|s| s % 2 == 1).collect();
    ob.ack(&InFlight { message_id: "done".into(), seqs: delivered.clone() }).unwrap();
    let flying = InFlight { message_id: "gw-ep-2-40".into(), seqs: (2..=40).step_by(2).collect() };
    ob.put_in_flight(&flying).unwrap();
    ob.close_clean().unwrap();
    (delivered, flying)
}

#[test]
fn a_store_damaged_at_open_is_salvaged_not_emptied() {
    // Zero the first 4 KiB page (sled 0.34 panics on this at open). Now and
    // then that page holds nothing sled still needs and the store opens
    // whole; then try a new store (the check below must run).
    let mut attempt = 0;
    let (_d, ob, report, delivered, flying) = loop {
        attempt += 1;
        assert!(attempt <= 6, "zeroing the first page never damaged a store: the test shows nothing");
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("outbox");
        let (delivered, flying) = store_with_history(&dir);
        damage(&dir, 0, 4096, 0);
        let (ob, report) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
        if report.salvaged.is_some() {
            break (d, ob, report, delivered, flying);
        }
        assert_eq!(ob.read_range(0, u64::MAX, 10_000).unwrap().len(), 2000 - delivered.len(), "opened after the damage, so it must be whole");
    };
    let s = report.salvaged.clone().expect("salvaged");
    assert!(report.moved_aside.as_ref().is_some_and(|p| p.exists()), "the damaged copy is kept");
    let queued = ob.read_range(0, u64::MAX, 10_000).unwrap();
    let seqs: Vec<u64> = queued.iter().map(|r| r.seq).collect();
    assert!(seqs.iter().all(|q| !delivered.contains(q)), "delivered readings do not come back");
    // Everything not delivered is back under its own number, except what sat
    // in the zeroed page, which is counted.
    assert_eq!(s.readings as usize, queued.len());
    assert!(queued.len() + s.unreadable as usize >= 1400 - 4 * 20, "salvaged {} of 1,400, {} unreadable", queued.len(), s.unreadable);
    for r in &queued {
        assert_eq!(r.values["heartRate"], (r.seq - 1) as f64, "a salvaged reading is the reading stored under its number");
    }
    assert_eq!(ob.in_flight().unwrap(), if flying.seqs.iter().all(|q| seqs.contains(q)) { vec![flying] } else { vec![] });
    let mut more = vec![reading("a", 1.0)];
    ob.append(&mut more).unwrap();
    assert!(more[0].seq > 2000, "no number is handed out twice");
}

#[test]
fn repair_while_running_keeps_numbers_ids_and_the_epoch() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (delivered, flying) = store_with_history(&dir);
    let (ob, _) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
    let epoch = ob.epoch().to_string();
    let before: Vec<Reading> = ob.read_range(0, u64::MAX, 10_000).unwrap();
    assert_eq!(before.len(), 2000 - delivered.len());
    let report = ob.repair().unwrap();
    assert_eq!(report.readings as usize, before.len());
    assert_eq!(report.unreadable, 0);
    assert_eq!(ob.read_range(0, u64::MAX, 10_000).unwrap(), before, "same readings, same numbers");
    assert_eq!(ob.in_flight().unwrap(), vec![flying]);
    assert_eq!(ob.epoch(), epoch);
    assert_eq!(ob.len(), before.len() as u64);
    let mut more = vec![reading("a", 1.0)];
    ob.append(&mut more).unwrap();
    assert_eq!(more[0].seq, 2001);
}

#[test]
fn inspection_reports_damage_and_moves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (delivered, _) = store_with_history(&dir);
    // The same damage as in a_store_damaged_at_open_is_salvaged_not_emptied,
    // which sled 0.34 usually cannot open. (When the zeroed page held
    // nothing sled still needed, it opens: then nothing may be missing.)
    damage(&dir, 0, 4096, 0);
    match Outbox::inspect(&dir, &OutboxConfig::default()) {
        Err(e) => assert!(e.is_damage(), "{e}"),
        Ok((ob, _)) => {
            let held = ob.read_range(0, u64::MAX, 10_000).unwrap().len();
            assert_eq!(held, 2000 - delivered.len(), "a store that opened after the damage must be whole");
        }
    }
    assert!(dir.join("db").exists(), "inspection left the store where it was");
    let siblings: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!siblings.iter().any(|n| n.to_string_lossy().contains("corrupt")), "{siblings:?}");
}

#[test]
fn inspection_reports_a_log_cut_short_as_damage_as_the_start_would() {
    // A log cut short (a copy to a full card, a restored image written only
    // in part): sled opens what is left and, when the cut tears a message,
    // keeps less than the log holds. Inspection must call damaged exactly
    // what the next start salvages, and change nothing.
    let d = tempfile::tempdir().unwrap();
    let original = d.path().join("original");
    store_with_history(&original);
    // Where sled's writes end (the zeros kept ahead of them are not log).
    let bytes = std::fs::read(original.join("db")).unwrap();
    let len = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
    let mut damaged = 0;
    for k in 0..12u64 {
        let dir = d.path().join(format!("cut{k}")).join("outbox");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["db", "conf", "journal"] {
            std::fs::copy(original.join(f), dir.join(f)).unwrap();
        }
        let db = dir.join("db");
        std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 3 + k * 7919).unwrap();
        let before = std::fs::read(&db).unwrap();
        let inspected = match Outbox::inspect(&dir, &OutboxConfig::default()) {
            Err(e) => {
                assert!(e.is_damage(), "{e}");
                true
            }
            Ok(_) => false,
        };
        assert_eq!(std::fs::read(&db).unwrap(), before, "inspection left the store as it was");
        let (_ob, report) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
        assert_eq!(inspected, report.salvaged.is_some(), "cut at {}: inspection says damaged exactly when the start salvages", len / 3 + k * 7919);
        // A cut that tears one write is kept in place (its complete readings
        // kept, as salvage would); a cut that drops several is salvaged.
        damaged += (inspected || report.interrupted_write_kept.is_some()) as usize;
    }
    assert!(damaged > 0, "no cut tore a message: the test shows nothing");
}

#[test]
fn an_unfinished_or_torn_index_snapshot_does_not_make_the_store_damaged() {
    // A full disk (or a crash) while sled writes its snapshot leaves a
    // `snap.*.generating` file, or a short one; sled then refused the whole
    // store and the backlog was moved aside as damaged.
    for (name, bytes) in [("snap.7FFFFFFFFFFFFFFF.generating", &b""[..]), ("snap.7FFFFFFFFFFFFFFF", &b"\x01\x02\x03\x04\x05"[..])] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("outbox");
        {
            let ob = open(d.path(), &OutboxConfig::default());
            let mut rs: Vec<Reading> = (0..100).map(|i| reading("a", i as f64)).collect();
            ob.append(&mut rs).unwrap();
            ob.close_clean().unwrap();
        }
        std::fs::write(dir.join(name), bytes).unwrap();
        let (ob, report) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
        assert!(report.moved_aside.is_none(), "{name}: the store was declared damaged and moved aside");
        assert!(report.salvaged.is_none(), "{name}");
        assert_eq!(ob.len(), 100, "{name}");
        assert_eq!(ob.read_range(0, u64::MAX, 1000).unwrap().len(), 100, "{name}");
        assert!(matches!(report.previous_stop, PreviousStop::Clean { .. }), "{name}: {:?}", report.previous_stop);
        assert!(!dir.join(name).exists(), "{name}");
        if !name.ends_with(".generating") {
            assert!(dir.join(format!("unused-{name}")).exists(), "{name}: kept for a post-mortem");
        }
        assert!(!std::fs::read_dir(d.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("corrupt")));
    }
}

#[test]
fn stats_show_the_bound_in_force() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &cfg(1 << 20, WhenFull::DropOldest));
    let b = ob.stats().bound;
    assert_eq!(b.max_bytes, 1 << 20);
    assert!(b.bytes <= 1 << 20);
    assert!(b.fs_bytes > 0, "the state filesystem was asked");
    match b.by {
        space::BoundBy::MaxBytes => assert_eq!(b.bytes, 1 << 20),
        space::BoundBy::FreeSpace => assert!(b.bytes < 1 << 20),
    }
}

#[test]
fn counters_one_write_ahead_are_an_interrupted_write_several_are_a_log_cut_short() {
    use salvage::{log_verdict, LogVerdict};
    fn log(counters: &[u64]) -> Vec<u8> {
        let mut b = b"sled header ".to_vec();
        for c in counters {
            b.extend_from_slice(b"\x09mnext_seq\x08");
            b.extend_from_slice(&c.to_be_bytes());
            b.extend_from_slice(b" other bytes ");
        }
        b
    }
    assert_eq!(log_verdict(&log(&[5, 9, 12]), 12, 4096), LogVerdict::Intact);
    assert_eq!(log_verdict(&log(&[5, 9, 12, 13]), 12, 4096), LogVerdict::Interrupted { next: 13 });
    assert_eq!(log_verdict(&log(&[5, 9, 12, 13, 13]), 12, 4096), LogVerdict::Interrupted { next: 13 }, "the same counter twice is one write");
    assert_eq!(
        log_verdict(&log(&[5, 9, 12, 13, 20]), 12, 4096),
        LogVerdict::CutShort { raw_next: 20 },
        "two writes beyond: committed data was dropped"
    );
    assert_eq!(log_verdict(&log(&[12, 9000]), 12, 4096), LogVerdict::CutShort { raw_next: 9000 }, "more numbers than one group can take");
}

#[test]
fn a_torn_write_after_the_last_sync_keeps_the_store_and_its_complete_readings() {
    // What a power cut in the middle of a write leaves: the synced log, then
    // part of a write that was never synced (never reported committed). The
    // start must not take it for damage (moving the store aside), must keep
    // what is complete in it, and must never hand its numbers out again.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (first, torn_seq) = {
        let ob = open(d.path(), &OutboxConfig::default());
        let mut rs: Vec<Reading> = (0..5).map(|i| reading("a", i as f64)).collect();
        ob.append(&mut rs).unwrap();
        (rs, ob.last_seq() + 1)
        // dropped without a clean stop
    };
    {
        // The interrupted write, as raw bytes at the end of sled's log: a
        // complete reading with the next number and the counter after it.
        let mut torn = reading("a", 99.0);
        torn.seq = torn_seq;
        let mut bytes = now_ms().to_be_bytes().to_vec();
        bytes.extend_from_slice(&serde_json::to_vec(&torn).unwrap());
        bytes.extend_from_slice(b"\x09mnext_seq\x08");
        bytes.extend_from_slice(&(torn_seq + 1).to_be_bytes());
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("db")).unwrap();
        f.write_all(&bytes).unwrap();
    }
    let (ob, report) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
    assert!(report.salvaged.is_none(), "an interrupted write is not damage: {report:?}");
    let siblings: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!siblings.iter().any(|n| n.to_string_lossy().contains("corrupt")), "{siblings:?}");
    let all = ob.read_range(0, u64::MAX, 100).unwrap();
    assert!(first.iter().all(|r| all.iter().any(|s| s.seq == r.seq)), "the committed readings are all there");
    assert!(all.iter().any(|s| s.seq == torn_seq && s.values.get("heartRate") == Some(&99.0)), "the complete reading of the torn write is kept");
    let mut more = vec![reading("a", 1.0)];
    ob.append(&mut more).unwrap();
    assert!(more[0].seq > torn_seq, "numbering goes on after the interrupted write");
}

/// The committer's write: on success every reading's number comes back in
/// input order (`None` for one refused under `refuse_newest`, never a 0 to
/// filter out), and the in-flight records are stored with the group.
#[test]
fn append_or_recover_numbers_each_reading_or_says_it_was_refused() {
    let d = tempfile::tempdir().unwrap();
    let ob = open(d.path(), &cfg(32 * 1024, WhenFull::RefuseNewest));
    let record = InFlight { message_id: "m1".into(), seqs: vec![1, 2] };
    let mut first: Vec<Reading> = (0..3).map(|i| reading("a", i as f64)).collect();
    let done = ob.append_or_recover(&mut first, std::slice::from_ref(&record)).unwrap();
    assert!(done.records_stored);
    assert_eq!(done.appended.seqs, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(ob.in_flight().unwrap(), vec![record]);
    // Fill the bound: the group that no longer fits is refused in part.
    let mut refused_seen = false;
    for _ in 0..40 {
        let mut rs: Vec<Reading> = (0..10).map(|i| reading("b", i as f64)).collect();
        let done = ob.append_or_recover(&mut rs, &[]).unwrap();
        assert_eq!(done.appended.seqs.len(), rs.len());
        let numbered = done.appended.seqs.iter().filter(|s| s.is_some()).count() as u64;
        assert_eq!(numbered + done.appended.refused, 10);
        for (r, s) in rs.iter().zip(&done.appended.seqs) {
            match s {
                Some(s) => {
                    let got = ob.get_many(&[*s]).unwrap();
                    assert_eq!(got.iter().map(|g| (g.seq, &g.values)).collect::<Vec<_>>(), vec![(*s, &r.values)]);
                }
                None => refused_seen = true,
            }
        }
    }
    assert!(refused_seen, "the bound was never reached");
}

/// An outbox with readings 1..=6 (devices a, b in turn) where 1 (a) and 2 (b),
/// the first of each device (delivery is in order per device), were refused
/// alone and moved to the dead letters.
fn with_two_dead_letters(dir: &Path) -> Outbox {
    let ob = Outbox::open(dir, &OutboxConfig::default()).unwrap().0;
    let mut rs: Vec<Reading> = (0..6).map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, 60.0 + i as f64)).collect();
    ob.append(&mut rs).unwrap();
    for (seq, id) in [(1, "m1"), (2, "m2")] {
        let rec = InFlight { message_id: id.into(), seqs: vec![seq] };
        ob.put_in_flight(&rec).unwrap();
        assert_eq!(ob.dead_letter(&rec, "eventhubs", "413 Request Entity Too Large").unwrap(), 1);
    }
    ob
}

/// The salvage (raw bytes of a damaged store) brings dead letters back as
/// dead letters, never as queued readings, even when the delivery mark that
/// would have told it so is gone; a retried one comes back only as the
/// reading it was queued again as.
#[test]
fn the_raw_salvage_keeps_dead_letters_apart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let ob = with_two_dead_letters(&dir);
    let requeued = ob.retry_dead_letters(&dead_letters::Which::Device("b".into())).unwrap().requeued;
    ob.close_clean().unwrap();
    drop(ob);
    let (found, _) = salvage::scan_dir(&dir).unwrap();
    assert_eq!(found.dead_letters.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(found.dead_letters[&1].reason, "413 Request Entity Too Large");
    let queued: Vec<u64> = found.readings.keys().copied().collect();
    assert_eq!(queued, vec![3, 4, 5, 6, requeued[0].1], "1 and 2 were dead-lettered, 2 queued again as {}", requeued[0].1);
    assert_eq!(found.unreadable, 0, "dead-lettered numbers are not counted as lost");

    // The same without any delivery mark: only the dead letter says that the
    // stale queue entry of seq 9 is not queued.
    let mut r = reading("c", 80.0);
    r.seq = 9;
    let mut file = 1_700_000_000_000u64.to_be_bytes().to_vec();
    file.extend(serde_json::to_vec(&r).unwrap());
    let dl = dead_letters::DeadLetter {
        dead_letter_seq: 9,
        device_id: "c".into(),
        sink: "eventhubs".into(),
        reason: "413".into(),
        at_ms: 1_700_000_001_000,
        committed_ms: 1_700_000_000_000,
        reading: serde_json::to_string(&r).unwrap(),
    };
    file.extend(b"\x00noise");
    file.extend(serde_json::to_vec(&dl).unwrap());
    let s = salvage::scan(&[&file]);
    assert!(s.readings.is_empty(), "a dead letter was salvaged as a queued reading: {:?}", s.readings.keys());
    assert_eq!(s.dead_letters.get(&9), Some(&dl));
    assert_eq!(s.max_seq, 9);
    // And once retried (as 12), it is no dead letter any more.
    file.extend(br#"{"deadLetterRetried":9,"requeuedAs":12}"#);
    let s = salvage::scan(&[&file]);
    assert!(s.dead_letters.is_empty() && s.readings.is_empty());
    assert_eq!(s.max_seq, 12, "the number the retry handed out is never handed out again");
}

/// A repair (damage found while running) rebuilds the store from the raw
/// bytes: the dead letters come back as dead letters with their reasons, and
/// the queue holds exactly what it held.
#[test]
fn a_repair_keeps_dead_letters_as_dead_letters() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let ob = with_two_dead_letters(&dir);
    let queued = ob.read_range(0, u64::MAX, 100).unwrap();
    let dead = ob.dead_letters().unwrap();
    let report = ob.repair().unwrap();
    assert_eq!(report.dead_letters, 2);
    assert_eq!(report.readings, queued.len() as u64);
    assert_eq!(ob.read_range(0, u64::MAX, 100).unwrap(), queued, "no dead letter came back as queued");
    assert_eq!(ob.dead_letters().unwrap(), dead);
    assert_eq!(ob.stats().dead_letters, 2);
    // A manual salvage of the moved-aside copy into the live outbox adds nothing twice.
    let (found, _) = salvage::scan_dir(&report.moved_to).unwrap();
    let again: Vec<dead_letters::DeadLetter> = found.dead_letters.into_values().collect();
    assert_eq!(ob.restore_dead_letters(&again).unwrap(), 0);
    assert_eq!(ob.stats().dead_letters, 2);
    // Into another outbox (`outbox salvage --from` elsewhere): dead letters, not queued.
    let other = Outbox::open(&d.path().join("other"), &OutboxConfig::default()).unwrap().0;
    assert_eq!(other.restore_dead_letters(&again).unwrap(), 2);
    assert_eq!((other.len(), other.stats().dead_letters), (0, 2));
    assert_eq!(other.dead_letters().unwrap(), dead);
}

/// A group commit larger than a page is a compressed journal record; until
/// the next checkpoint its readings are nowhere else. The raw-byte salvage
/// must still find them (it inflates the journal's compressed records).
#[test]
fn readings_only_in_a_compressed_journal_record_are_salvaged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (ob, _) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
    let mut rs: Vec<Reading> = (0..40).map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, i as f64)).collect();
    ob.append(&mut rs).unwrap();
    // A power cut now: no checkpoint, sled's log never got the group.
    std::mem::forget(ob);
    let raw = std::fs::read(dir.join(journal::FILE_NAME)).unwrap();
    assert!(!journal::inflated_records(&raw).is_empty(), "the group was written compressed");
    let plain = salvage::scan(&[raw.as_slice()]);
    assert!(rs.iter().all(|r| !plain.readings.contains_key(&r.seq)), "the raw bytes alone hide the readings");
    std::fs::remove_file(dir.join("db")).unwrap();
    let (found, skipped) = salvage::scan_dir(&dir).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    for r in &rs {
        let (_, got) = found.readings.get(&r.seq).unwrap_or_else(|| panic!("reading {} not salvaged", r.seq));
        assert_eq!(got.values["heartRate"], r.values["heartRate"]);
    }
}

/// A compressed group commit is replayed by the next open like a plain one:
/// a power cut right after the commit (no checkpoint) keeps every reading,
/// under its number, with its values.
#[test]
fn a_compressed_group_survives_a_cut_before_any_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (ob, _) = Outbox::open(&dir, &OutboxConfig::default()).unwrap();
    let mut rs: Vec<Reading> = (0..60).map(|i| reading(if i % 3 == 0 { "a" } else { "b" }, i as f64)).collect();
    ob.append(&mut rs).unwrap();
    let raw = std::fs::read(dir.join(journal::FILE_NAME)).unwrap();
    assert!(!journal::inflated_records(&raw).is_empty(), "the group was written compressed");
    std::mem::forget(ob);
    // What the disk holds now, opened as the next start would (a copy: the
    // forgotten outbox still holds its lock in this process).
    let after = d.path().join("after-cut");
    std::fs::create_dir_all(&after).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), after.join(f.file_name())).unwrap();
        }
    }
    let (ob, report) = Outbox::open(&after, &OutboxConfig::default()).unwrap();
    assert!(report.salvaged.is_none(), "replayed, not salvaged");
    let back = ob.read_range(0, u64::MAX, 1000).unwrap();
    assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), rs.iter().map(|r| r.seq).collect::<Vec<_>>());
    for (b, r) in back.iter().zip(&rs) {
        assert_eq!((&b.device_id, &b.values), (&r.device_id, &r.values));
    }
}

/// A checkpoint cut short (a kill, or a write the full disk refused) after
/// sled wrote part of it leaves no committed reading removed without being
/// counted, and leaves the journal's records in place. When the journal is
/// full, the checkpoint also carries the group being committed, which is in
/// no journal record yet: the oldest readings it drops to make room must not
/// reach sled unless the counters that count them do. Before, the removals
/// went into the first sled batches and the counters into the last: a 2-3 MiB
/// state filesystem filled and freed lost 64-913 committed readings per run,
/// always the oldest still queued, a multiple of the 64-change sled batch.
#[test]
fn a_checkpoint_cut_short_leaves_no_committed_reading_removed_and_uncounted() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg(64 * 1024, WhenFull::DropOldest);
    let ob = open(d.path(), &c);
    let mut round = 0;
    while ob.stats().dropped_full == 0 {
        let mut rs: Vec<Reading> = (0..20).map(|i| reading("a", (round * 20 + i) as f64)).collect();
        ob.append(&mut rs).unwrap();
        round += 1;
    }
    // Everything so far in sled; then one group committed in the journal
    // only (it drops the oldest to make room).
    ob.store().unwrap().checkpoint().unwrap();
    let mut b: Vec<Reading> = (0..20).map(|i| reading("b", i as f64)).collect();
    ob.append(&mut b).unwrap();
    let committed: Vec<u64> = ob.read_range(0, u64::MAX, 100_000).unwrap().iter().map(|r| r.seq).collect();
    let dropped = ob.stats().dropped_full;
    // The group being committed when the journal is full: applied, in no
    // record yet; it drops the oldest 100 or so.
    let mut pending: Vec<Reading> = (0..100).map(|i| reading("c", i as f64)).collect();
    let out = ob.append_unflushed(&mut pending).unwrap();
    assert!(out.dropped_oldest > 64, "the pending group drops more than one sled batch of readings: {out:?}");
    let generation = ob.store().unwrap().journal.lock().generation();
    {
        let st = ob.store().unwrap();
        st.cut_checkpoint_after.store(1, std::sync::atomic::Ordering::Relaxed);
        assert!(st.checkpoint().is_err(), "the cut checkpoint reports its failure");
        assert_eq!(st.journal.lock().generation(), generation, "a failed checkpoint retires no journal record");
    }
    // What a kill at that moment leaves on disk.
    let image = tempfile::tempdir().unwrap();
    let cp = std::process::Command::new("cp").arg("-a").arg(d.path().join("outbox")).arg(image.path()).status().unwrap();
    assert!(cp.success());
    drop(ob);
    let (ob, report) = Outbox::open(&image.path().join("outbox"), &c).unwrap();
    assert!(report.salvaged.is_none(), "{report:?}");
    let stored: std::collections::BTreeSet<u64> = ob.read_range(0, u64::MAX, 100_000).unwrap().iter().map(|r| r.seq).collect();
    let missing: Vec<u64> = committed.iter().copied().filter(|s| !stored.contains(s)).collect();
    assert!(missing.is_empty(), "{} committed readings lost by the cut checkpoint: {:?}...", missing.len(), &missing[..missing.len().min(10)]);
    let s = ob.stats();
    assert_eq!(s.dropped_full, dropped, "only the committed drops are counted (the journal was applied again)");
    assert_eq!(s.queued, stored.len() as u64, "the counters count what is stored");
    let mut more = vec![reading("d", 1.0)];
    ob.append(&mut more).unwrap();
    assert!(stored.iter().all(|s| *s < more[0].seq), "a stored number is never handed out again");
}
