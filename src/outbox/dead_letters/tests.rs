//! Dead letters: the move is one durable write, retry queues again under new
//! numbers and never drops. (That neither the salvage nor a repair queues a
//! dead letter is tested in `outbox::tests`, beside the salvage.)

use super::*;
use crate::config::units::ByteSize;
use crate::config::{OutboxConfig, WhenFull};
use crate::model::{DeviceKind, ReadingType};
use std::path::Path;

fn reading(device: &str, v: f64) -> Reading {
    Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", v)
}

fn open(dir: &Path) -> Outbox {
    Outbox::open(dir, &OutboxConfig::default()).expect("open").0
}

/// An outbox with readings 1..=6 (devices a, b, a, b, a, b) where 1 (a) and 2
/// (b), the first of each device (delivery is in order per device), were
/// refused alone and moved to the dead letters.
fn with_two_dead_letters(dir: &Path) -> (Outbox, Vec<Reading>) {
    let ob = open(dir);
    let mut rs: Vec<Reading> = (0..6).map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, 60.0 + i as f64)).collect();
    ob.append(&mut rs).unwrap();
    for (seq, id) in [(1, "m1"), (2, "m2")] {
        let rec = InFlight { message_id: id.into(), seqs: vec![seq] };
        ob.put_in_flight(&rec).unwrap();
        assert_eq!(ob.dead_letter(&rec, "eventhubs", "413 Request Entity Too Large").unwrap(), 1);
    }
    (ob, rs)
}

#[test]
fn a_refused_reading_leaves_the_queue_for_the_dead_letters_in_one_durable_write() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let ob = open(&dir);
    let mut rs: Vec<Reading> = (0..3).map(|i| reading("a", 60.0 + i as f64)).collect();
    ob.append(&mut rs).unwrap();
    // An earlier batch confirmed and held for the next write (as with a group commit).
    ob.ack_deferred(InFlight { message_id: "m1".into(), seqs: vec![1] });
    let rec = InFlight { message_id: "m2".into(), seqs: vec![2] };
    ob.put_in_flight(&rec).unwrap();
    let syncs = ob.syncs();
    assert_eq!(ob.dead_letter(&rec, "eventhubs", "413 Request Entity Too Large").unwrap(), 1);
    assert_eq!(ob.syncs(), syncs + 1, "one durable write for the whole move");
    let queued: Vec<u64> = ob.read_range(0, u64::MAX, 100).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(queued, vec![3], "1 delivered (the held ack rode along), 2 moved");
    assert!(ob.in_flight().unwrap().is_empty(), "the in-flight record went with it");
    let s = ob.stats();
    assert_eq!((s.queued, s.dead_letters), (1, 1));
    assert!(s.dead_letter_bytes > 0);
    let dl = ob.dead_letters().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].dead_letter_seq, 2);
    assert_eq!((dl[0].device_id.as_str(), dl[0].sink.as_str(), dl[0].reason.as_str()), ("a", "eventhubs", "413 Request Entity Too Large"));
    assert_eq!(dl[0].reading(), Some(rs[1].clone()), "the reading is kept whole, measurement time included");
    assert!(dl[0].committed_ms > 0 && dl[0].at_ms >= dl[0].committed_ms);
    // Moving it again (a resent refusal) finds nothing queued and changes nothing.
    assert_eq!(ob.dead_letter(&rec, "eventhubs", "again").unwrap(), 0);
    assert_eq!(ob.stats().dead_letters, 1);
    // Durable: a store dropped without a clean stop still has it after a reopen.
    drop(ob);
    let ob = open(&dir);
    assert_eq!(ob.dead_letters().unwrap(), dl);
    assert_eq!(ob.stats().dead_letters, 1, "the count is read back from the store");
    assert_eq!(ob.len(), 1);
}

#[test]
fn retry_queues_again_under_new_numbers_by_device_then_all() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let (ob, rs) = with_two_dead_letters(&dir);
    let last = ob.last_seq();
    assert_eq!(ob.retry_dead_letters(&Which::Device("nobody".into())).unwrap(), RetryReport::default());
    let r = ob.retry_dead_letters(&Which::Device("b".into())).unwrap();
    assert_eq!(r.requeued, vec![(2, last + 1)]);
    assert_eq!(ob.dead_letters().unwrap().iter().map(|d| d.dead_letter_seq).collect::<Vec<_>>(), vec![1]);
    let back = ob.get_many(&[last + 1]).unwrap();
    let mut expected = rs[1].clone();
    expected.seq = last + 1;
    assert_eq!(back, vec![expected], "the same reading (same measurement time) under a new number");
    let r = ob.retry_dead_letters(&Which::All).unwrap();
    assert_eq!(r.requeued, vec![(1, last + 2)]);
    let s = ob.stats();
    assert_eq!((s.dead_letters, s.dead_letter_bytes), (0, 0));
    assert_eq!(s.queued, 4 + 2);
    assert_eq!(s.dropped_full + s.refused, 0);
    // Retried once: nothing left to retry, and a reopen agrees.
    assert_eq!(ob.retry_dead_letters(&Which::Seqs(vec![1, 2])).unwrap(), RetryReport::default());
    drop(ob);
    let ob = open(&dir);
    assert!(ob.dead_letters().unwrap().is_empty());
    assert_eq!(ob.len(), 6);
}

#[test]
fn retry_never_drops_queued_readings_to_make_room() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("outbox");
    let c = OutboxConfig { max_bytes: ByteSize(4096), when_full: WhenFull::DropOldest, ..OutboxConfig::default() };
    let ob = Outbox::open(&dir, &c).unwrap().0;
    let mut first = vec![reading("a", 60.0)];
    ob.append(&mut first).unwrap();
    let rec = InFlight { message_id: "m1".into(), seqs: vec![1] };
    ob.dead_letter(&rec, "iothub", "too large").unwrap();
    // Fill the queue to its bound.
    loop {
        let mut more = vec![reading("b", 70.0)];
        ob.append(&mut more).unwrap();
        if ob.stats().dropped_full > 0 {
            break;
        }
    }
    let queued = ob.len();
    let dropped = ob.stats().dropped_full;
    let r = ob.retry_dead_letters(&Which::All).unwrap();
    assert_eq!((r.requeued.len(), r.no_room), (0, 1), "{r:?}");
    assert_eq!(ob.len(), queued);
    assert_eq!(ob.stats().dropped_full, dropped, "a retry dropped queued readings");
    assert_eq!(ob.stats().dead_letters, 1, "it stays a dead letter");
}
