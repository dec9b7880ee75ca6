//! Unit tests for each rule, and property tests that drive the batcher with
//! arbitrary sequences of admit / deliver / fail / too large / restart
//! through a model of the outbox and the sink, with requests of one to four
//! messages, checking that nothing is lost, nothing is sent twice under
//! different ids, per-device order holds, and a request never mixes keys nor
//! exceeds its message count or byte limit.

use super::*;
use crate::model::{DeviceKind, ReadingType};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const MS: Duration = Duration::from_millis(1);

fn reading(seq: u64, device: &str) -> Reading {
    let mut r = Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + (seq % 50) as f64);
    r.seq = seq;
    r
}

fn key(device: &str) -> Key {
    (device.to_string(), None)
}

fn limits(max_readings: usize, max_age_ms: u64) -> Limits {
    Limits { max_readings, max_age: Duration::from_millis(max_age_ms) }
}

/// A pass with nothing but the queues to go on (no backlog, no group, no shutdown).
fn quiet(committed: u64) -> Pass {
    Pass { committed, draining: false, group_open: false, room: 64 }
}

fn seqs(b: &Batch) -> Vec<u64> {
    b.readings().map(|r| r.seq).collect()
}

#[test]
fn a_full_batch_is_ready_at_once_and_holds_at_most_max_readings() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    for s in 1..=9 {
        b.admit(reading(s, "a"), t0);
    }
    assert!(b.take_ready(limits(10, 1000), quiet(9), t0).is_empty(), "9 of 10 readings, young: not ready");
    b.admit(reading(10, "a"), t0);
    b.admit(reading(11, "a"), t0);
    let out = b.take_ready(limits(10, 1000), quiet(11), t0);
    assert_eq!(out.len(), 1);
    assert_eq!(seqs(&out[0]), (1..=10).collect::<Vec<_>>());
    assert_eq!(b.buffered(), 1);
}

#[test]
fn a_key_has_one_batch_in_flight_until_its_outcome() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    for s in 1..=25 {
        b.admit(reading(s, "a"), t0);
    }
    let first = b.take_ready(limits(10, 1000), quiet(25), t0);
    assert_eq!(first.len(), 1);
    assert!(b.take_ready(limits(10, 1000), quiet(25), t0).is_empty(), "a second batch of a busy key");
    assert_eq!(b.next_deadline(Duration::from_secs(1)), None, "a busy key has no deadline");
    b.finished(&key("a"));
    let second = b.take_ready(limits(10, 1000), quiet(25), t0);
    assert_eq!(seqs(&second[0]), (11..=20).collect::<Vec<_>>());
}

#[test]
fn a_reading_waits_for_its_age_and_the_deadline_says_when() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.admit(reading(1, "a"), t0);
    b.admit(reading(2, "a"), t0 + 30 * MS);
    assert_eq!(b.next_deadline(100 * MS), Some(t0 + 100 * MS), "the oldest reading sets the deadline");
    assert!(b.take_ready(limits(50, 100), quiet(2), t0 + 99 * MS).is_empty());
    let out = b.take_ready(limits(50, 100), quiet(2), t0 + 100 * MS);
    assert_eq!(seqs(&out[0]), vec![1, 2]);
    assert_eq!(b.next_deadline(100 * MS), None);
}

#[test]
fn backlog_draining_and_flush_make_everything_ready() {
    let t0 = Instant::now();
    let young = |b: &mut Batcher| {
        b.admit(reading(b.cursor() + 1, "a"), t0);
    };
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    young(&mut b);
    assert_eq!(b.take_ready(limits(50, 1000), quiet(5), t0).len(), 1, "cursor 1 < committed 5: backlog");
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    young(&mut b);
    assert_eq!(b.take_ready(limits(50, 1000), Pass { draining: true, ..quiet(1) }, t0).len(), 1);
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    young(&mut b);
    b.request_flush();
    assert_eq!(b.take_ready(limits(50, 1000), quiet(1), t0).len(), 1);
    // The flush request ends once the queues are empty.
    b.finished(&key("a"));
    young(&mut b);
    assert!(b.take_ready(limits(50, 1000), quiet(2), t0).is_empty(), "a spent flush request still in force");
}

#[test]
fn queues_half_due_go_along_with_a_due_one_or_an_open_group() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.admit(reading(1, "a"), t0);
    b.admit(reading(2, "b"), t0 + 50 * MS);
    b.admit(reading(3, "c"), t0 + 51 * MS);
    // At 100 ms: a is due, b is exactly half due, c is younger than half.
    let out = b.take_ready(limits(50, 100), quiet(3), t0 + 100 * MS);
    let keys: Vec<&str> = out.iter().map(|x| x.key.0.as_str()).collect();
    assert_eq!(keys, vec!["a", "b"]);

    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.admit(reading(1, "a"), t0);
    b.admit(reading(2, "b"), t0 + 20 * MS);
    assert!(b.take_ready(limits(50, 100), quiet(2), t0 + 60 * MS).is_empty(), "nothing due, no group");
    let out = b.take_ready(limits(50, 100), Pass { group_open: true, ..quiet(2) }, t0 + 60 * MS);
    assert_eq!(out.len(), 1, "with a group open, only the half-due queue goes");
    assert_eq!(out[0].key, key("a"));
}

#[test]
fn keys_are_served_round_robin_within_the_room_given() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    for s in 1..=30 {
        b.admit(reading(s, ["a", "b", "c"][(s % 3) as usize]), t0);
    }
    let mut order = Vec::new();
    for _ in 0..6 {
        let out = b.take_ready(limits(2, 1000), Pass { room: 1, ..quiet(100) }, t0);
        assert_eq!(out.len(), 1, "room for one batch");
        order.push(out[0].key.0.clone());
        b.finished(&out[0].key);
    }
    assert_eq!(order, vec!["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn batches_keep_to_the_byte_cap_but_always_hold_one_reading() {
    let t0 = Instant::now();
    let size = wire_size(&reading(1, "a"));
    let mut b = Batcher::new(size * 3, BUFFER_CAP);
    for s in 1..=7 {
        b.admit(reading(s, "a"), t0);
    }
    let mut lens = Vec::new();
    while let Some(x) = b.take_ready(limits(50, 1000), quiet(100), t0).pop() {
        assert!(x.readings().map(wire_size).sum::<usize>() <= size * 3);
        lens.push(x.readings().count());
        b.finished(&x.key);
    }
    assert_eq!(lens, vec![3, 3, 1]);
    let mut b = Batcher::new(1, BUFFER_CAP);
    b.admit(reading(1, "a"), t0);
    assert_eq!(b.take_ready(limits(50, 1000), quiet(100), t0)[0].readings().count(), 1);
}

#[test]
fn too_large_puts_the_readings_back_in_front_with_half_the_cap() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    for s in 1..=12 {
        b.admit(reading(s, "a"), t0);
    }
    let first = b.take_ready(limits(8, 1000), quiet(12), t0).remove(0);
    assert_eq!(seqs(&first), (1..=8).collect::<Vec<_>>());
    let total: usize = first.readings().map(wire_size).sum();
    assert!(matches!(b.too_large(first.key, first.parts, t0), TooLarge::Split));
    assert_eq!(b.buffered(), 12);
    let again = b.take_ready(limits(8, 1000), quiet(12), t0).remove(0);
    assert_eq!(seqs(&again)[0], 1, "split readings go first, in order");
    assert!(again.readings().map(wire_size).sum::<usize>() <= (total / 2).max(MIN_BYTE_CAP));
    assert!(again.readings().count() < 8);
    // A single reading that is too large comes back to be removed.
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.admit(reading(1, "a"), t0);
    let one = b.take_ready(limits(8, 1000), quiet(9), t0).remove(0);
    match b.too_large(one.key, one.parts, t0) {
        TooLarge::Rejected(r) => assert_eq!(r.len(), 1),
        other => panic!("a single reading cannot be split: {other:?}"),
    }
    assert_eq!(b.buffered(), 0);
    assert_eq!(b.in_flight(), 0);
}

/// Readings that together are smaller than the minimum cap, refused as too
/// large (the message's own fields made it so): the next batch is smaller,
/// down to one reading, instead of the same batch again for ever.
#[test]
fn a_refused_batch_of_small_readings_shrinks_down_to_one_reading() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    for s in 1..=2 {
        b.admit(reading(s, "a"), t0);
    }
    let both = b.take_ready(limits(2, 1000), quiet(2), t0).remove(0);
    assert!(both.readings().map(wire_size).sum::<usize>() < MIN_BYTE_CAP, "the case needs readings below the floor");
    assert!(matches!(b.too_large(both.key, both.parts, t0), TooLarge::Split));
    let later = t0 + 2000 * MS;
    let next = b.take_ready(limits(8, 1000), quiet(2), later).remove(0);
    assert_eq!(seqs(&next), vec![1], "the same batch was formed again");
    assert!(matches!(b.too_large(next.key, next.parts, later), TooLarge::Rejected(_)));
}

#[test]
fn the_buffer_is_bounded_and_reads_come_in_chunks() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, 5);
    assert_eq!(b.wants(0), None, "nothing committed");
    assert_eq!(b.wants(100), Some(5));
    for s in 1..=5 {
        b.admit(reading(s, "a"), t0);
    }
    assert_eq!(b.wants(100), None, "the buffer is full");
    assert!(!b.is_idle(100));
    let big = Batcher::new(usize::MAX, BUFFER_CAP);
    assert_eq!(big.wants(u64::MAX), Some(READ_CHUNK));
    let mut c = Batcher::new(usize::MAX, 5);
    c.caught_up(100);
    assert_eq!(c.wants(100), None);
    assert!(c.is_idle(100));
}

fn rec(id: &str, seqs: &[u64]) -> InFlight {
    InFlight { message_id: id.to_string(), seqs: seqs.to_vec() }
}

fn ids(b: &Batch) -> Vec<Option<&str>> {
    b.parts.iter().map(|p| p.record.as_ref().map(|r| r.message_id.as_str())).collect()
}

fn part_seqs(b: &Batch) -> Vec<Vec<u64>> {
    b.parts.iter().map(|p| p.readings.iter().map(|r| r.seq).collect()).collect()
}

/// With records already in the outbox, no batch is formed for them: each
/// `Some` part needs no new record (and keeps its id).
fn with_records(mut b: Batch, prefix: &str) -> Vec<Part> {
    for (i, p) in b.parts.iter_mut().enumerate() {
        p.record.get_or_insert_with(|| rec(&format!("{prefix}{i}"), &p.readings.iter().map(|r| r.seq).collect::<Vec<_>>()));
    }
    b.parts
}

#[test]
fn resumed_messages_go_first_whole_under_their_record_and_are_not_read_twice() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.resume(key("a"), rec("earlier", &[1, 2]), vec![reading(1, "a"), reading(2, "a")], t0);
    for s in 1..=4 {
        b.admit(reading(s, "a"), t0);
    }
    assert_eq!(b.buffered(), 4, "two resumed, two read (1 and 2 were skipped)");
    assert_eq!(b.cursor(), 4);
    assert_eq!(b.next_deadline(Duration::from_secs(1)), Some(t0), "a resumed message is due at once (all before it was read)");
    // Due at once, though young and no backlog.
    let out = b.take_ready(limits(50, 1000), quiet(4), t0);
    assert_eq!(out.len(), 1);
    assert_eq!(part_seqs(&out[0]), vec![vec![1, 2]], "alone and whole, without the readings behind it");
    assert_eq!(ids(&out[0]), vec![Some("earlier")]);
    assert!(b.take_ready(limits(50, 1000), Pass { draining: true, ..quiet(4) }, t0).is_empty(), "the resumed message is in flight");
    b.finished(&key("a"));
    let out = b.take_ready(limits(50, 1000), Pass { draining: true, ..quiet(4) }, t0);
    assert_eq!(seqs(&out[0]), vec![3, 4]);
    assert_eq!(ids(&out[0]), vec![None]);
}

/// Deferred acknowledgements are lost in a crash, so a device can come back
/// with two recorded messages: one already delivered, one not. They go out
/// one request at a time, oldest first, before any newer one.
#[test]
fn a_key_resumed_twice_sends_its_messages_in_order_one_request_at_a_time() {
    let t0 = Instant::now();
    let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
    b.resume(key("a"), rec("m1", &[1, 2]), vec![reading(1, "a"), reading(2, "a")], t0);
    b.resume(key("a"), rec("m2", &[3, 4]), vec![reading(3, "a"), reading(4, "a")], t0);
    for s in 1..=6 {
        b.admit(reading(s, "a"), t0);
    }
    let drain = Pass { draining: true, ..quiet(6) };
    let mut sent = Vec::new();
    while let Some(x) = b.take_ready(limits(50, 1000), drain, t0).pop() {
        assert!(b.take_ready(limits(50, 1000), drain, t0).is_empty(), "two requests of one key in flight");
        assert_eq!(b.in_flight(), 1);
        sent.push((part_seqs(&x), ids(&x).into_iter().map(|i| i.map(str::to_string)).collect::<Vec<_>>()));
        b.finished(&x.key);
    }
    assert_eq!(
        sent,
        vec![(vec![vec![1, 2]], vec![Some("m1".to_string())]), (vec![vec![3, 4]], vec![Some("m2".to_string())]), (vec![vec![5, 6]], vec![None])]
    );
    // With requests of several messages, the two resumed ones go together.
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 4, max_bytes: usize::MAX });
    b.resume(key("a"), rec("m1", &[1, 2]), vec![reading(1, "a"), reading(2, "a")], t0);
    b.resume(key("a"), rec("m2", &[3, 4]), vec![reading(3, "a"), reading(4, "a")], t0);
    for s in 1..=6 {
        b.admit(reading(s, "a"), t0);
    }
    let out = b.take_ready(limits(2, 1000), drain, t0);
    assert_eq!(part_seqs(&out[0]), vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
    assert_eq!(ids(&out[0]), vec![Some("m1"), Some("m2"), None]);
}

/// A resumed message waits until every older reading was read (one of its
/// device could be among them), however small the buffer; resumed readings
/// do not count against the buffer, or they could stop that reading.
#[test]
fn a_resumed_message_waits_for_older_readings_to_be_read() {
    let t0 = Instant::now();
    let mut b = Batcher::with_requests(usize::MAX, 2, RequestLimits { max_messages: 2, max_bytes: usize::MAX });
    b.resume(key("a"), rec("m1", &[6, 7]), vec![reading(6, "a"), reading(7, "a")], t0);
    assert_eq!(b.wants(9), Some(2), "resumed readings leave the buffer's room to read");
    let drain = Pass { draining: true, ..quiet(9) };
    assert!(b.take_ready(limits(2, 1000), drain, t0).is_empty(), "readings 1..=5 are not read yet");
    assert_eq!(b.next_deadline(Duration::from_secs(1)), None, "no deadline to spin on while it waits for reads");
    b.admit(reading(4, "a"), t0);
    b.admit(reading(5, "a"), t0);
    let out = b.take_ready(limits(2, 1000), drain, t0);
    assert_eq!(part_seqs(&out[0]), vec![vec![4, 5], vec![6, 7]], "the older readings first, then the resumed message");
    assert_eq!(ids(&out[0]), vec![None, Some("m1")]);
}

/// A message split after "too large" is no longer recorded; if the gateway
/// stops before its readings go out, they come back as plain readings older
/// than a message still recorded behind them, and must go first. (Found by
/// the property test below.)
#[test]
fn readings_older_than_a_resumed_message_go_before_it() {
    let t0 = Instant::now();
    let resumed = || vec![reading(9, "a"), reading(10, "a"), reading(11, "a")];
    for k in [1, 4] {
        let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: k, max_bytes: usize::MAX });
        b.resume(key("a"), rec("m1", &[9, 10, 11]), resumed(), t0);
        for s in [1, 6, 7, 9, 10, 11, 12] {
            b.admit(reading(s, "a"), t0);
        }
        let mut sent = Vec::new();
        while let Some(x) = b.take_ready(limits(3, 1000), Pass { draining: true, ..quiet(12) }, t0).pop() {
            sent.extend(part_seqs(&x).into_iter().zip(ids(&x).into_iter().map(|i| i.map(str::to_string))));
            b.finished(&x.key);
        }
        assert_eq!(sent, vec![(vec![1, 6, 7], None), (vec![9, 10, 11], Some("m1".to_string())), (vec![12], None)], "k = {k}");
    }
}

#[test]
fn a_request_holds_up_to_k_consecutive_full_messages_of_one_key() {
    let t0 = Instant::now();
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 3, max_bytes: usize::MAX });
    for s in 1..=25 {
        b.admit(reading(s, "a"), t0);
    }
    b.admit(reading(26, "b"), t0);
    let out = b.take_ready(limits(5, 1000), quiet(26), t0);
    assert_eq!(out.len(), 1, "b's one young reading is not due");
    assert_eq!(out[0].key, key("a"));
    assert_eq!(part_seqs(&out[0]), vec![(1..=5).collect::<Vec<_>>(), (6..=10).collect(), (11..=15).collect()]);
    assert!(out[0].parts.iter().all(|p| p.record.is_none()));
    assert!(b.take_ready(limits(5, 1000), quiet(26), t0).is_empty(), "one request per key in flight");
    b.finished(&key("a"));
    let out = b.take_ready(limits(5, 1000), quiet(26), t0);
    assert_eq!(part_seqs(&out[0]), vec![(16..=20).collect::<Vec<_>>(), (21..=25).collect()]);
    b.finished(&key("a"));
    // Live: a second message goes along only when it is full too.
    for s in 27..=33 {
        b.admit(reading(s, "c"), t0);
    }
    let out = b.take_ready(limits(5, 1000), quiet(33), t0);
    assert_eq!(part_seqs(&out[0]), vec![(27..=31).collect::<Vec<_>>()], "32 and 33 wait for their age");
    b.finished(&key("c"));
    // Due by age (or in a backlog): the rest go too, the last message short.
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 3, max_bytes: usize::MAX });
    for s in 1..=7 {
        b.admit(reading(s, "a"), t0);
    }
    let out = b.take_ready(limits(5, 100), quiet(7), t0 + 100 * MS);
    assert_eq!(part_seqs(&out[0]), vec![(1..=5).collect::<Vec<_>>(), vec![6, 7]]);
}

#[test]
fn a_request_keeps_to_its_byte_limit_but_always_holds_one_message() {
    let t0 = Instant::now();
    let size = wire_size(&reading(1, "a"));
    let message = 2 * size + MESSAGE_OVERHEAD;
    let max_bytes = 2 * message + 1;
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 10, max_bytes });
    for s in 1..=10 {
        b.admit(reading(s, "a"), t0);
    }
    let mut shapes = Vec::new();
    while let Some(x) = b.take_ready(limits(2, 1000), Pass { draining: true, ..quiet(10) }, t0).pop() {
        let bytes: usize = x.parts.iter().map(|p| p.readings.iter().map(wire_size).sum::<usize>() + MESSAGE_OVERHEAD).sum();
        assert!(bytes <= max_bytes, "{bytes} > {max_bytes}");
        shapes.push(x.parts.len());
        b.finished(&x.key);
    }
    assert_eq!(shapes, vec![2, 2, 1]);
    // Smaller than one message: one message per request all the same.
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 10, max_bytes: 1 });
    for s in 1..=4 {
        b.admit(reading(s, "a"), t0);
    }
    assert_eq!(part_seqs(&b.take_ready(limits(2, 1000), Pass { draining: true, ..quiet(4) }, t0)[0]), vec![vec![1, 2]]);
}

/// "Too large" for a request of several messages halves the request, keeping
/// each message whole under its record (so its id), before any message is
/// split; a message refused alone is then split in place, ahead of the
/// messages still waiting whole, and a reading refused alone is handed back.
#[test]
fn a_refused_request_goes_again_in_halves_before_any_message_is_split() {
    let t0 = Instant::now();
    let mut b = Batcher::with_requests(usize::MAX, BUFFER_CAP, RequestLimits { max_messages: 4, max_bytes: usize::MAX });
    for s in 1..=8 {
        b.admit(reading(s, "a"), t0);
    }
    let first = b.take_ready(limits(2, 1000), quiet(8), t0).remove(0);
    assert_eq!(part_seqs(&first), vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7, 8]]);
    assert!(matches!(b.too_large(key("a"), with_records(first, "m"), t0), TooLarge::Regroup));
    assert_eq!((b.buffered(), b.in_flight()), (8, 0));
    let half = b.take_ready(limits(2, 1000), quiet(8), t0).remove(0);
    assert_eq!(part_seqs(&half), vec![vec![1, 2], vec![3, 4]], "half as many messages, the same ones");
    assert_eq!(ids(&half), vec![Some("m0"), Some("m1")], "kept under their records");
    assert!(matches!(b.too_large(key("a"), half.parts, t0), TooLarge::Regroup));
    let one = b.take_ready(limits(2, 1000), quiet(8), t0).remove(0);
    assert_eq!(ids(&one), vec![Some("m0")]);
    // Refused alone: split (back in the queue, smaller), still before m1..m3.
    assert!(matches!(b.too_large(key("a"), one.parts, t0), TooLarge::Split));
    let mut sent = Vec::new();
    while let Some(x) = b.take_ready(limits(2, 1000), quiet(8), t0).pop() {
        sent.push((part_seqs(&x), ids(&x).into_iter().map(|i| i.map(str::to_string)).collect::<Vec<_>>()));
        if x.parts[0].readings[0].seq == 1 {
            // The single reading 1 is refused too: handed back.
            match b.too_large(x.key, x.parts, t0) {
                TooLarge::Rejected(r) => assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]),
                other => panic!("one reading cannot be split: {other:?}"),
            }
            continue;
        }
        b.finished(&x.key);
    }
    let m = |s: &str| Some(s.to_string());
    assert_eq!(
        sent,
        vec![
            (vec![vec![1]], vec![None]),
            (vec![vec![2]], vec![None]),
            (vec![vec![3, 4]], vec![m("m1")]),
            (vec![vec![5, 6]], vec![m("m2")]),
            (vec![vec![7, 8]], vec![m("m3")]),
        ],
        "in order, the untouched messages whole under their ids"
    );
    assert_eq!((b.buffered(), b.in_flight()), (0, 0));
}

// ---- Property tests: the batcher inside a model of the outbox and the sink.

#[derive(Debug, Clone)]
enum Op {
    /// Commit readings of a device (0..4) to the outbox.
    Commit { device: usize, n: usize },
    /// One pass of the loop: read, take ready batches, record them in flight.
    Pass { advance_ms: u64, group_open: bool, flush: bool },
    /// The sink confirms an in-flight message; the acknowledgement is written
    /// at once or deferred to the next group commit.
    Deliver { pick: usize, deferred: bool },
    /// A send fails and is retried under the same id; `reached` = the sink
    /// got it but its answer was lost.
    Fail { pick: usize, reached: bool },
    /// The sink refuses an in-flight message as too large.
    TooLarge { pick: usize },
    /// Deferred acknowledgements are written (a group commit).
    ApplyAcks,
    /// The loop starts over (`crash`: deferred acknowledgements are lost).
    Restart { crash: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 1..6usize).prop_map(|(device, n)| Op::Commit { device, n }),
        4 => (0..150u64, any::<bool>(), prop::bool::weighted(0.1)).prop_map(|(advance_ms, group_open, flush)| Op::Pass { advance_ms, group_open, flush }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, deferred)| Op::Deliver { pick, deferred }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, reached)| Op::Fail { pick, reached }),
        1 => any::<usize>().prop_map(|pick| Op::TooLarge { pick }),
        1 => Just(Op::ApplyAcks),
        1 => any::<bool>().prop_map(|crash| Op::Restart { crash }),
    ]
}

/// A request with the sink: its key and its messages (id, readings).
type Sending = (Key, Vec<(String, Vec<Reading>)>);

/// The outbox, the sink and the forwarder loop, reduced to what the delivery
/// guarantee depends on.
struct World {
    limits: Limits,
    byte_cap: usize,
    buffer_cap: usize,
    request: RequestLimits,
    now: Instant,
    /// Committed readings not yet acknowledged.
    outbox: BTreeMap<u64, Reading>,
    committed: u64,
    /// Durable in-flight records: message id -> seqs.
    records: BTreeMap<String, Vec<u64>>,
    /// Acknowledged in memory, not yet written (lost on a crash).
    deferred: Vec<String>,
    /// Requests with the sink.
    sending: Vec<Sending>,
    /// Recorded, not yet with the sink (the loop hands at most `MAX_SENDING`).
    recorded: VecDeque<Sending>,
    batcher: Batcher,
    next_id: u64,
    /// Everything the sink accepted, in order: id, key, seqs.
    accepted: Vec<(String, Key, Vec<u64>)>,
    rejected: BTreeSet<u64>,
}

const MAX_SENDING: usize = 3;
const MAX_RECORDED: usize = 4;

impl World {
    fn new(limits: Limits, byte_cap: usize, buffer_cap: usize, request: RequestLimits) -> World {
        World {
            limits,
            byte_cap,
            buffer_cap,
            request,
            now: Instant::now(),
            outbox: BTreeMap::new(),
            committed: 0,
            records: BTreeMap::new(),
            deferred: Vec::new(),
            sending: Vec::new(),
            recorded: VecDeque::new(),
            batcher: Batcher::with_requests(byte_cap, buffer_cap, request),
            next_id: 0,
            accepted: Vec::new(),
            rejected: BTreeSet::new(),
        }
    }

    /// What `Forwarder::run_once` does at its start: hand the leftovers to
    /// the batcher, in the outbox's order (by first sequence number).
    fn start(&mut self) {
        self.batcher = Batcher::with_requests(self.byte_cap, self.buffer_cap, self.request);
        self.sending.clear();
        self.recorded.clear();
        let mut records: Vec<(String, Vec<u64>)> = self.records.clone().into_iter().collect();
        records.sort_by_key(|(_, s)| s.iter().copied().min());
        for (id, s) in records {
            let readings: Vec<Reading> = s.iter().filter_map(|q| self.outbox.get(q).cloned()).collect();
            let Some(first) = readings.first() else {
                self.records.remove(&id);
                continue;
            };
            let key: Key = (first.device_id.clone(), first.patient_id.clone());
            self.batcher.resume(key, InFlight { message_id: id, seqs: s }, readings, self.now);
        }
    }

    fn apply_acks(&mut self) {
        for id in std::mem::take(&mut self.deferred) {
            if let Some(s) = self.records.remove(&id) {
                for q in s {
                    self.outbox.remove(&q);
                }
            }
        }
    }

    fn pass(&mut self, draining: bool, group_open: bool) -> Result<(), TestCaseError> {
        while let Some(n) = self.batcher.wants(self.committed) {
            let cursor = self.batcher.cursor();
            let chunk: Vec<Reading> = self.outbox.range(cursor + 1..=self.committed).take(n).map(|(_, r)| r.clone()).collect();
            if chunk.is_empty() {
                self.batcher.caught_up(self.committed);
                break;
            }
            for r in chunk {
                self.batcher.admit(r, self.now);
            }
        }
        let room = MAX_RECORDED.saturating_sub(self.recorded.len());
        let batches = self.batcher.take_ready(self.limits, Pass { committed: self.committed, draining, group_open, room }, self.now);
        prop_assert!(batches.len() <= room);
        for b in batches {
            // A request: 1..=k messages of one key, within the byte limit
            // unless it holds one message, in sequence order.
            prop_assert!(!b.parts.is_empty() && b.parts.len() <= self.request.max_messages, "{} messages in one request", b.parts.len());
            let bytes: usize = b.parts.iter().map(|p| p.readings.iter().map(wire_size).sum::<usize>() + MESSAGE_OVERHEAD).sum();
            prop_assert!(b.parts.len() == 1 || bytes <= self.request.max_bytes, "{} bytes in a request of {}", bytes, b.parts.len());
            let all: Vec<&Reading> = b.readings().collect();
            prop_assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
            prop_assert!(all.iter().all(|r| (r.device_id.clone(), r.patient_id.clone()) == b.key), "a request mixes keys");
            let mut messages = Vec::new();
            for p in b.parts {
                prop_assert!(!p.readings.is_empty());
                prop_assert!(p.readings.len() <= self.limits.max_readings);
                prop_assert!(p.readings.len() == 1 || p.readings.iter().map(wire_size).sum::<usize>() <= self.byte_cap);
                let seqs: Vec<u64> = p.readings.iter().map(|r| r.seq).collect();
                let id = match p.record {
                    // Its record must still be in the outbox: a crash now
                    // resends it under this id.
                    Some(rec) => {
                        prop_assert_eq!(self.records.get(&rec.message_id), Some(&rec.seqs), "a whole message lost its record");
                        prop_assert_eq!(&rec.seqs, &seqs, "a whole message changed");
                        rec.message_id
                    }
                    None => {
                        let id = format!("m{}", self.next_id);
                        self.next_id += 1;
                        self.records.insert(id.clone(), seqs);
                        id
                    }
                };
                messages.push((id, p.readings));
            }
            self.recorded.push_back((b.key, messages));
        }
        while self.sending.len() < MAX_SENDING {
            let Some(m) = self.recorded.pop_front() else { break };
            self.sending.push(m);
        }
        Ok(())
    }

    /// The sink accepted request `i` whole (its messages in order).
    fn accept(&mut self, i: usize) {
        let (key, messages) = &self.sending[i];
        for (id, readings) in messages {
            self.accepted.push((id.clone(), key.clone(), readings.iter().map(|r| r.seq).collect()));
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Commit { device, n } => {
                for _ in 0..n {
                    self.committed += 1;
                    let mut r = reading(self.committed, &format!("dev-{device}"));
                    // Device 3 is associated with a patient.
                    if device == 3 {
                        r.patient_id = Some("p-3".into());
                    }
                    self.outbox.insert(self.committed, r);
                }
            }
            Op::Pass { advance_ms, group_open, flush } => {
                self.now += Duration::from_millis(advance_ms);
                if flush {
                    self.batcher.request_flush();
                }
                self.pass(false, group_open)?;
            }
            Op::Deliver { pick, deferred } => {
                if self.sending.is_empty() {
                    return Ok(());
                }
                let i = pick % self.sending.len();
                self.accept(i);
                let (key, messages) = self.sending.remove(i);
                self.deferred.extend(messages.into_iter().map(|(id, _)| id));
                if !deferred {
                    self.apply_acks();
                }
                self.batcher.finished(&key);
            }
            Op::Fail { pick, reached } => {
                if reached && !self.sending.is_empty() {
                    self.accept(pick % self.sending.len());
                }
            }
            Op::TooLarge { pick } => {
                // A destination that accepted a message does not refuse it later.
                let fresh: Vec<usize> = (0..self.sending.len())
                    .filter(|i| !self.sending[*i].1.iter().any(|(m, _)| self.accepted.iter().any(|(id, _, _)| id == m)))
                    .collect();
                if fresh.is_empty() {
                    return Ok(());
                }
                let (key, messages) = self.sending.remove(fresh[pick % fresh.len()]);
                let n = messages.len();
                let parts: Vec<Part> = messages
                    .iter()
                    .map(|(id, rs)| Part {
                        readings: rs.clone(),
                        record: Some(InFlight { message_id: id.clone(), seqs: rs.iter().map(|r| r.seq).collect() }),
                    })
                    .collect();
                match self.batcher.too_large(key, parts, self.now) {
                    // Kept whole: the records stay.
                    TooLarge::Regroup => prop_assert!(n > 1),
                    TooLarge::Split => {
                        prop_assert_eq!(n, 1);
                        self.records.remove(&messages[0].0);
                    }
                    TooLarge::Rejected(rs) => {
                        prop_assert_eq!((n, rs.len()), (1, 1));
                        self.records.remove(&messages[0].0);
                        for r in rs {
                            self.rejected.insert(r.seq);
                            self.outbox.remove(&r.seq);
                        }
                    }
                }
            }
            Op::ApplyAcks => self.apply_acks(),
            Op::Restart { crash } => {
                if crash {
                    self.deferred.clear();
                } else {
                    self.apply_acks();
                }
                self.start();
            }
        }
        Ok(())
    }

    /// Shutdown, then runs (delivering everything) until the outbox is empty.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.outbox.is_empty() {
                return Ok(());
            }
            self.pass(true, false)?;
            if self.sending.is_empty() {
                prop_assert!(self.recorded.is_empty(), "recorded batches wait although the sink has room");
                prop_assert!(self.batcher.is_idle(self.committed), "readings wait in memory but no batch was formed");
                // Everything read, nothing queued: what is left must be recorded
                // in flight from a previous life (start over to resend it).
                prop_assert!(!self.records.is_empty(), "readings left in the outbox that no batch carries");
                self.apply_acks();
                self.start();
                continue;
            }
            self.step(Op::Deliver { pick: 0, deferred: false })?;
        }
        Err(TestCaseError::fail("the outbox did not drain"))
    }

    fn check(&self) -> Result<(), TestCaseError> {
        // Nothing lost: every committed reading was accepted or rejected alone.
        let mut carried: HashMap<u64, &str> = HashMap::new();
        for (id, _, s) in &self.accepted {
            for q in s {
                // Nothing sent twice under different ids.
                let prev = carried.insert(*q, id.as_str());
                prop_assert!(prev.is_none_or(|p| p == id), "seq {} sent as {:?} and as {}", q, prev, id);
            }
        }
        for q in 1..=self.committed {
            prop_assert!(carried.contains_key(&q) || self.rejected.contains(&q), "reading {} lost", q);
        }
        // Per-device order: each message, the first time it arrives, carries
        // readings after everything that device had sent before.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut last: HashMap<&Key, u64> = HashMap::new();
        for (id, key, s) in &self.accepted {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let first = s.first().copied().unwrap_or(0);
            if let Some(prev) = last.insert(key, s.last().copied().unwrap_or(0)) {
                prop_assert!(prev < first, "device {:?} out of order: {} after {}", key, first, prev);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lost_nothing_sent_twice_under_different_ids_per_device_order(
        ops in prop::collection::vec(op(), 1..120),
        max_readings in 1..6usize,
        max_age_ms in 0..300u64,
        caps in (1..4usize, prop_oneof![Just(3usize), Just(50usize)]),
        request in (1..5usize, 0..3usize),
    ) {
        let size = wire_size(&reading(1, "dev-0"));
        let byte_cap = match caps.0 { 1 => size, 2 => size * 3, _ => 64 * 1024 };
        // Requests of 1 to 4 messages; no byte limit, room for about two
        // messages of two readings, or for one.
        let max_bytes = match request.1 { 0 => usize::MAX, 1 => 2 * (2 * size + MESSAGE_OVERHEAD), _ => size + MESSAGE_OVERHEAD };
        let request = RequestLimits { max_messages: request.0, max_bytes };
        let mut w = World::new(limits(max_readings, max_age_ms), byte_cap, caps.1, request);
        w.start();
        for op in ops {
            w.step(op)?;
        }
        w.drain()?;
        w.check()?;
    }

    /// A reading that waits is always sent by its deadline: after the time
    /// the batcher names, a quiet pass forms a batch.
    #[test]
    fn the_deadline_is_kept(
        arrivals in prop::collection::vec((0..3usize, 0..80u64), 1..30),
        max_age_ms in 1..200u64,
    ) {
        let t0 = Instant::now();
        let mut b = Batcher::new(usize::MAX, BUFFER_CAP);
        let mut now = t0;
        for (i, (device, gap)) in arrivals.iter().enumerate() {
            now += Duration::from_millis(*gap);
            b.admit(reading(i as u64 + 1, &format!("dev-{device}")), now);
        }
        let committed = arrivals.len() as u64;
        let max_age = Duration::from_millis(max_age_ms);
        let mut sent = 0;
        while let Some(due) = b.next_deadline(max_age) {
            prop_assert!(b.take_ready(limits(1000, max_age_ms), quiet(committed), due - MS).is_empty(), "a batch formed before any reading was due");
            let out = b.take_ready(limits(1000, max_age_ms), quiet(committed), due);
            prop_assert!(!out.is_empty(), "nothing formed at the deadline");
            for x in out {
                sent += x.readings().count();
                b.finished(&x.key);
            }
        }
        prop_assert_eq!(sent, arrivals.len());
    }
}
