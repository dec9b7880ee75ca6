//! A small state filesystem, for real: the gateway runs as a process with its
//! state folder on a 2, 3 or 5 MiB tmpfs and the default `max_bytes =
//! 256MiB`; its store gets 64 KiB sled segments there (a filesystem under
//! 16 MiB, see `src/outbox/space.rs`). With sled's 512 KiB segments a 3 MiB
//! filesystem could not hold an outbox (sled's log alone keeps 5 to 6
//! segments under churn); with 64 KiB segments it can, and the 2 MiB and
//! 3 MiB cases, which lost committed readings before the checkpoint put
//! every removal in its last sled batch, check that nothing is lost.
//!
//! 1. Filled and freed under the running gateway (a ballast file), then a
//!    stop (SIGTERM, and `kill -9`) and a restart: before, sled left an
//!    unfinished index snapshot on the full disk, the next start (or the
//!    running gateway's reopen) declared the store damaged and moved it aside,
//!    and the new store could not be created (exit 1, a restart loop). Now
//!    every committed reading is delivered after the restart, or was dropped
//!    oldest-first by the bound and counted; nothing is moved aside.
//! 2. The destination away for long: before, the outbox filled its own disk
//!    (256 MiB was never reached), stopped storing, never reopened, SIGTERM
//!    exited 1 and a restart failed. Now the bound is what the filesystem can
//!    hold (said once in the log and in `outbox stats`), the oldest readings
//!    are dropped and counted, delivery resumes when the destination comes
//!    back, SIGTERM exits 0, and a restart works.
//! 3. The outbox itself filled the filesystem (sled's log took more than the
//!    bound allows for): before, a start waited for room for ever; now the
//!    spare file kept beside the outbox is given back and the store opens.
//!
//! Needs root (mount -t tmpfs). Without it the tests say SKIPPED (a failure
//! under `IOMT_REQUIRE_ALL=1`).

use crate::support::gateway as gateway_common;
use crate::support::tmpfs::{self, fill};

use gateway_common::{start_logging_to, terminate, Committed, Delivered};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Default `[outbox]` (so `max_bytes = 256MiB`), two simulated devices at
/// 100 readings/s each, the file sink at `sink`.
fn write_config(dir: &Path, state: &Path, sink: &Path, name: &str) -> PathBuf {
    let cfg = format!(
        r#"
[gateway]
id = "small-disk-test"
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
[device.simulated]
interval_ms = 10
seed = 7

[[device]]
id = "oxi-b"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 10
seed = 2

[sink.file]
path = "{sink}"
"#,
        state = state.display(),
        sink = sink.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, cfg).unwrap();
    path
}

/// `iomt-edge outbox stats --json` of a stopped gateway.
fn stats(state: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["outbox", "stats", "--json", "--state-dir"]).arg(state).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every committed reading was delivered, or dropped by the bound: the ones
/// missing are exactly the oldest `dropped_full` sequence numbers (drop
/// oldest, in order, counted). Delivered under one id each, in order per
/// device, and no message id was used for two different sets of readings.
fn check_delivered_or_counted(committed: &BTreeMap<u64, String>, out: &Path, dropped_full: u64, log: &str) {
    let d = Delivered::from_ndjson(out);
    let missing: Vec<u64> = committed.keys().copied().filter(|s| !d.ids.contains_key(s)).collect();
    assert!(
        missing.iter().copied().eq(1..=missing.len() as u64),
        "readings missing that are not the oldest ones: {:?}...\n{log}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        missing.len() as u64 <= dropped_full,
        "{} committed readings neither delivered nor counted as dropped ({dropped_full} counted)\n{log}",
        missing.len()
    );
    let delivered: BTreeMap<u64, String> = committed.iter().filter(|(s, _)| d.ids.contains_key(s)).map(|(s, v)| (*s, v.clone())).collect();
    d.check(&delivered);
    let mut by_id: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for line in std::fs::read_to_string(out).unwrap().lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let seqs: BTreeSet<u64> = m["readings"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        let id = m["messageId"].as_str().unwrap().to_string();
        if let Some(before) = by_id.insert(id.clone(), seqs.clone()) {
            assert_eq!(before, seqs, "message id {id} used for different readings");
        }
    }
}

/// Whether every committed reading up to `upto` has been delivered, except
/// a run of the oldest ones (those the bound dropped).
fn drained(committed: &Committed, out: &Path, upto: u64) -> bool {
    let d = Delivered::from_ndjson_so_far(out);
    let c = committed.lock().unwrap();
    let missing: Vec<u64> = c.keys().copied().filter(|s| *s <= upto && !d.ids.contains_key(s)).collect();
    missing.iter().copied().eq(1..=missing.len() as u64) && d.ids.keys().any(|s| *s > upto)
}

fn no_quarantined_store(state: &Path) {
    let aside: Vec<String> =
        std::fs::read_dir(state).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains("corrupt")).collect();
    assert!(aside.is_empty(), "the store was declared damaged and moved aside: {aside:?}");
}

fn filled_and_freed_then(size: &str, kill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), size) else { return };
    let state = state_fs.path().to_path_buf();
    let out = dir.path().join("delivered.ndjson");
    let log1 = dir.path().join("run1.log");
    let log2 = dir.path().join("run2.log");
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    // 1. The destination is away (/dev/full: every write fails); the state
    //    filesystem is filled and freed under the running gateway.
    let config = write_config(dir.path(), &state, Path::new("/dev/full"), "away.toml");
    let committed: Committed = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log1));
    wait_for("readings to be committed", 30, || committed.lock().unwrap().len() > 1000 || child.try_wait().unwrap().is_some());
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the gateway exited ({status:?}) on a {size} state filesystem:\n{}", text(&log1));
    }
    // The gateway made its store with small segments (a filesystem under
    // 16 MiB), as sled recorded it.
    let conf = String::from_utf8_lossy(&std::fs::read(state.join("outbox").join("conf")).unwrap_or_default()).into_owned();
    let segment = iomt_edge::outbox::space::SEGMENT_SMALL;
    assert!(conf.contains(&format!("segment_size: {segment}\n")), "sled's conf: {conf:?}");
    fill(&state.join("ballast"));
    // A write the full disk refuses, usually within a second or two. (sled
    // may also go on for a while inside the blocks its log already has.)
    let noticed = Instant::now() + Duration::from_secs(20);
    while !text(&log1).contains("cannot store readings in the outbox") && Instant::now() < noticed {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = text(&log1).contains("cannot store readings in the outbox");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(state.join("ballast")).unwrap();
    // Until what it held in memory is stored (the moment sled used to leave
    // its unfinished snapshot behind), and a little longer.
    if refused {
        wait_for("writes to work again", 30, || text(&log1).contains("outbox writes work again"));
    }
    std::thread::sleep(Duration::from_secs(2));
    if kill {
        child.kill().unwrap();
        child.wait().unwrap();
    } else {
        terminate(&child);
        let status = child.wait().unwrap();
        assert!(status.success(), "SIGTERM after a full disk must exit 0, got {status:?}:\n{}", text(&log1));
    }
    reader.join().unwrap();
    no_quarantined_store(&state);
    let first_run = committed.lock().unwrap().len();

    // 2. Restart with the destination back: everything arrives.
    let config = write_config(dir.path(), &state, &out, "back.toml");
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log2));
    let newest_before = *committed.lock().unwrap().keys().last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !drained(&committed, &out, newest_before) {
        if Instant::now() > deadline {
            let d = Delivered::from_ndjson_so_far(&out);
            let c = committed.lock().unwrap();
            let missing: Vec<u64> = c.keys().copied().filter(|s| *s <= newest_before && !d.ids.contains_key(s)).collect();
            let gaps: Vec<u64> = missing.iter().copied().enumerate().filter(|(i, s)| *s != *i as u64 + 1).map(|(_, s)| s).take(10).collect();
            let newer = d.ids.keys().filter(|s| **s > newest_before).count();
            panic!(
                "timed out after 60 s waiting for the backlog and new readings to be delivered: {} missing up to {newest_before} (not a prefix from: {gaps:?}), {newer} newer delivered\n--- state folder ---\n{}\n--- restart log ---\n{}",
                missing.len(),
                String::from_utf8_lossy(&std::process::Command::new("du").args(["-ab"]).arg(&state).output().map(|o| o.stdout).unwrap_or_default()),
                text(&log2)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&child);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = format!("{}\n--- restart ---\n{}", text(&log1), text(&log2));
    assert!(status.success(), "the restarted gateway must stop with exit 0, got {status:?}:\n{log}");
    no_quarantined_store(&state);
    assert!(!log.contains("damaged"), "{log}");
    assert!(!log.contains("cannot open the outbox"), "{log}");
    let dropped = stats(&state)["dropped_full"].as_u64().unwrap();
    let c: BTreeMap<u64, String> = committed.lock().unwrap().iter().filter(|(s, _)| **s <= newest_before).map(|(s, v)| (*s, v.clone())).collect();
    check_delivered_or_counted(&c, &out, dropped, &log);
    eprintln!(
        "filled and freed ({size}, {}): {first_run} committed in the first run, {dropped} dropped oldest by the bound, {}",
        if kill { "kill -9" } else { "SIGTERM" },
        if refused { "writes refused while full" } else { "no write refused while full" }
    );
}

#[test]
fn a_small_state_filesystem_filled_and_freed_keeps_its_backlog_after_sigterm() {
    filled_and_freed_then("5m", false);
}

#[test]
fn a_small_state_filesystem_filled_and_freed_keeps_its_backlog_after_kill_9() {
    filled_and_freed_then("5m", true);
}

/// Issue 11's filesystems, 2 MiB and 3 MiB (refused at start before, as
/// too small with sled's 512 KiB segments): the gateway makes its store with
/// 64 KiB segments there. Filled and freed, they lost 64-913 committed
/// readings in most runs before the checkpoint put every removal in its last
/// sled batch (`Store::checkpoint` in `src/outbox/mod.rs`). Two of the four
/// cases run by default (about 35 s together); all four, and the smallest
/// filesystem accepted:
/// `cargo test --test integration mib_state -- --include-ignored`.
#[test]
#[ignore]
fn a_2_mib_state_filesystem_filled_and_freed_keeps_its_backlog_after_sigterm() {
    filled_and_freed_then("2m", false);
}

#[test]
fn a_2_mib_state_filesystem_filled_and_freed_keeps_its_backlog_after_kill_9() {
    filled_and_freed_then("2m", true);
}

#[test]
fn a_3_mib_state_filesystem_filled_and_freed_keeps_its_backlog_after_sigterm() {
    filled_and_freed_then("3m", false);
}

#[test]
#[ignore]
fn a_3_mib_state_filesystem_filled_and_freed_keeps_its_backlog_after_kill_9() {
    filled_and_freed_then("3m", true);
}

/// The smallest state filesystem `check-config` and `run` accept
/// (`space::smallest_filesystem`), filled and freed.
#[test]
#[ignore]
fn the_smallest_mib_state_filesystem_filled_and_freed_keeps_its_backlog_after_kill_9() {
    let least = iomt_edge::outbox::space::smallest_filesystem(iomt_edge::outbox::space::SEGMENT_SMALL);
    filled_and_freed_then(&format!("{}k", least.div_ceil(1024)), true);
}

#[test]
fn default_max_bytes_on_a_small_disk_is_bounded_by_the_disk_and_keeps_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), "5m") else { return };
    let Some(sink_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("sink"), "32m") else { return };
    let state = state_fs.path().to_path_buf();
    let out = sink_fs.path().join("delivered.ndjson");
    let log = dir.path().join("run1.log");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let config = write_config(dir.path(), &state, &out, "gateway.toml");

    // The destination's disk is full: every delivery fails, for long enough
    // that the backlog would take several times the state filesystem.
    let ballast = sink_fs.path().join("ballast");
    std::fs::File::create(&out).unwrap();
    fill(&ballast);
    let committed: Committed = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log));
    let count = || committed.lock().unwrap().len();
    wait_for("a backlog bigger than the state filesystem can hold", 90, || count() > 6000);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the gateway exited ({status:?}):\n{}", text());
    }
    let before = count();
    std::thread::sleep(Duration::from_secs(2));
    assert!(count() > before + 100, "commits go on at the bound:\n{}", text());

    // The destination comes back: delivery resumes without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let newest = *committed.lock().unwrap().keys().last().unwrap();
    wait_for("new readings to be delivered after the destination came back", 60, || {
        Delivered::from_ndjson_so_far(&out).ids.keys().any(|s| *s > newest + 100)
    });
    terminate(&child);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let t = text();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}:\n{t}");
    assert!(!t.contains("cannot store readings in the outbox"), "the outbox filled its disk:\n{t}");
    assert_eq!(t.matches("by free space on").count(), 1, "one warning for the episode:\n{t}");
    assert!(t.contains("max_bytes 256.0 MiB"), "{t}");

    // The bound and its reason, in `outbox stats`.
    let s = stats(&state);
    assert_eq!(s["bound"]["by"], "freeSpace", "{s}");
    assert!(s["bound"]["bytes"].as_u64().unwrap() < 3 << 20, "{s}");
    let dropped = s["dropped_full"].as_u64().unwrap();
    assert!(dropped > 0, "the oldest readings were dropped and counted: {s}");
    let text_stats = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["outbox", "stats", "--state-dir"]).arg(&state).output().unwrap();
    let text_stats = String::from_utf8_lossy(&text_stats.stdout);
    assert!(text_stats.contains("by free space on") && text_stats.contains("(max_bytes 256.0 MiB"), "{text_stats}");

    // A restart works, and delivers under new ids only.
    let log2 = dir.path().join("run2.log");
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log2));
    let newest = *committed.lock().unwrap().keys().last().unwrap();
    wait_for("the backlog and readings of the restarted gateway to be delivered", 60, || drained(&committed, &out, newest));
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", std::fs::read_to_string(&log2).unwrap_or_default());
    reader.join().unwrap();
    let c: BTreeMap<u64, String> = committed.lock().unwrap().iter().filter(|(q, _)| **q <= newest).map(|(q, v)| (*q, v.clone())).collect();
    let dropped = stats(&state)["dropped_full"].as_u64().unwrap();
    check_delivered_or_counted(&c, &out, dropped, &std::fs::read_to_string(&log2).unwrap_or_default());
    no_quarantined_store(&state);
    eprintln!("bounded by the disk: {} committed, {dropped} dropped oldest, bound {}", c.len(), s["bound"]["bytes"]);
}

/// The store itself filled its filesystem (what sled did about 1 run in 4
/// on 3 MiB before the bound allowed for its segments): a start then had no
/// room to open (sled writes when it opens) and waited for room for ever,
/// with every reading in it out of reach. Now the spare file kept beside the
/// outbox is given back and the store opens with every reading. (The ballast
/// here stands in for sled's own growth: a file nothing else will free.)
#[test]
fn a_store_that_filled_its_filesystem_opens_again_with_the_spare() {
    use iomt_edge::config::OutboxConfig;
    use iomt_edge::model::{DeviceKind, Reading, ReadingType};
    use iomt_edge::outbox::Outbox;
    let dir = tempfile::tempdir().unwrap();
    let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), "5m") else { return };
    let outbox = state_fs.path().join("outbox");
    let cfg = OutboxConfig::default();
    {
        let (ob, _) = Outbox::open(&outbox, &cfg).unwrap();
        let mut rs: Vec<Reading> = (0..300)
            .map(|i| Reading::new("strap-a", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", (60 + i % 40) as f64))
            .collect();
        ob.append(&mut rs).unwrap();
        ob.flush().unwrap();
        assert!(state_fs.path().join("outbox.spare").is_file(), "a filesystem that bounds the outbox keeps the spare file");
        ob.close_clean().unwrap();
    }
    fill(&state_fs.path().join("ballast"));
    let (ob, _) = match Outbox::open(&outbox, &cfg) {
        Ok(opened) => opened,
        Err(e) => panic!("a store on a full filesystem did not open ({e}); free: {:?}", iomt_edge::outbox::space::fs_space(state_fs.path())),
    };
    assert_eq!(ob.len(), 300, "every reading is still there");
    assert_eq!(ob.read_range(0, u64::MAX, 1000).unwrap().len(), 300);
    assert!(!state_fs.path().join("outbox.spare").exists(), "the spare was given back to open the store");
}

/// After a kill -9 of a store that had filled its filesystem, a start finds
/// just enough room to copy the log aside before opening (the copy leaves
/// the reserve free), but sled's recovery needs more than the reserve: the
/// open failed with no space and the gateway waited 5 s, logging "cannot
/// open the outbox" (1 run in 25 of the kill -9 test above), until its next
/// try began by deleting that copy. Now the copy gives its room back and the
/// store opens at once. The filesystem is left with exactly the room the
/// copy takes above the reserve, and no spare file (the start that failed
/// had none left to give back).
#[test]
fn a_start_with_room_only_for_the_log_copy_opens_without_it() {
    use iomt_edge::config::OutboxConfig;
    use iomt_edge::outbox::{space, Outbox};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), "5m") else { return };
    let state = state_fs.path().to_path_buf();
    let log = dir.path().join("run.log");
    // A real store, stopped uncleanly: the gateway with its sink away, killed.
    let config = write_config(dir.path(), &state, Path::new("/dev/full"), "away.toml");
    let committed: Committed = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut child, reader) = start_logging_to(&config, committed.clone(), Some(&log));
    wait_for("readings to be committed", 30, || committed.lock().unwrap().len() > 4000 || child.try_wait().unwrap().is_some());
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let outbox = state.join("outbox");
    let _ = std::fs::remove_file(space::spare_path(&outbox));
    let log_len = std::fs::metadata(outbox.join("db")).unwrap().len();
    let (total, free) = space::fs_space(&state).unwrap();
    let reserve = space::reserve_for(total, space::segment_to_open(&outbox));
    // Ballast up to: reserve + the copy + one page.
    let keep = reserve + log_len + 4096;
    assert!(free > keep, "the test needs room to shape: {free} free, {keep} to keep");
    let mut f = std::fs::File::create(state.join("ballast")).unwrap();
    let chunk = vec![0x5Au8; 4096];
    let mut left = free - keep;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    drop(f);
    let before = committed.lock().unwrap().len() as u64;
    let (ob, report) = match Outbox::open(&outbox, &OutboxConfig::default()) {
        Ok(opened) => opened,
        Err(e) => panic!(
            "the store did not open ({e}); {log_len} B log, {reserve} B reserve, free now {:?}, files: {:?}",
            space::fs_space(&state),
            std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()
        ),
    };
    assert!(matches!(report.previous_stop, iomt_edge::outbox::PreviousStop::Unclean { .. }), "{:?}", report.previous_stop);
    let held = ob.len() + ob.stats().dropped_full;
    assert!(held >= before, "{held} readings held or counted as dropped, {before} committed");
}

/// Makes `outbox` a folder whose sled `conf` (sled 0.34's
/// `StorageParameters`: three lines and a CRC-32) names `segment`, so the
/// store made there uses it.
fn preset_segment(outbox: &Path, segment: u64) {
    std::fs::create_dir_all(outbox).unwrap();
    let mut conf = format!("segment_size: {segment}\nuse_compression: false\nversion: 0.34\n").into_bytes();
    let crc = crc32fast::hash(&conf);
    conf.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(outbox.join("conf"), conf).unwrap();
}

/// How much room sled's log takes for the records it holds, with small and
/// with default segments: the figures behind `SLED_FIXED_SEGMENTS` and
/// `SLED_AMPLIFICATION` in `src/outbox/space.rs`. The outbox is driven as
/// the gateway drives it with two devices at 100 readings/s each and the
/// sink down (a group commit of 20 readings every 100 ms, split as the
/// committer splits it), with drop-oldest churn at a fixed bound, for 60 s of
/// readings; then a burst (4,096 readings held in memory while the disk was
/// full, written at once). Prints the peak of the store's files on disk.
/// Run: `cargo test --test integration outbox_small_disk::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_the_stores_room_on_disk_per_record() {
    use iomt_edge::config::{units::ByteSize, OutboxConfig};
    use iomt_edge::model::{DeviceKind, Reading, ReadingType};
    use iomt_edge::outbox::{space, Outbox};
    for (fs, seg) in [("12m", space::SEGMENT_SMALL), ("20m", space::SEGMENT_DEFAULT)] {
        for bound in [64u64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), fs) else { return };
            let outbox = state_fs.path().join("outbox");
            let cfg = OutboxConfig { max_bytes: ByteSize(bound), ..OutboxConfig::default() };
            preset_segment(&outbox, seg);
            let (ob, _) = Outbox::open(&outbox, &cfg).unwrap();
            let segment = space::store_segment(&outbox).unwrap();
            assert_eq!(segment, seg);
            let peak = std::cell::Cell::new(0u64);
            let peak_queued = std::cell::Cell::new(0u64);
            let mut n = 0u32;
            let mut group = |size: usize, ob: &Outbox| {
                let mut rs: Vec<Reading> = (0..size)
                    .map(|i| {
                        n += 1;
                        if i % 2 == 0 {
                            Reading::new("strap-a", DeviceKind::HeartRateStrap, ReadingType::HeartRate)
                                .with_value("heartRate", (60 + n % 40) as f64)
                                .with_value("rrInterval", 0.8 + (n % 7) as f64 / 100.0)
                        } else {
                            Reading::new("oxi-b", DeviceKind::PulseOximeter, ReadingType::Spo2)
                                .with_value("spo2", (90 + n % 9) as f64)
                                .with_value("pulseRate", (70 + n % 30) as f64)
                        }
                    })
                    .collect();
                let limit = ob.group_limit();
                for part in rs.chunks_mut(limit) {
                    ob.append(part).unwrap();
                    peak.set(peak.get().max(space::disk_usage(&outbox)));
                    peak_queued.set(peak_queued.get().max(ob.stats().queued_bytes));
                }
            };
            for _ in 0..600 {
                group(20, &ob);
            }
            let steady = peak.get();
            group(4096, &ob);
            let (peak, peak_queued) = (peak.get(), peak_queued.get());
            let s = ob.stats();
            eprintln!(
                "segment {:>3} KiB, bound {:>4} KiB: peak {:>5} KiB on disk in churn ({:.1} segments beyond 5x the records), {:>5} KiB after the burst; {} KiB queued at most, {} dropped",
                segment >> 10,
                bound >> 10,
                steady >> 10,
                (steady.saturating_sub(space::journal_bytes(12 << 20)) as f64 - 5.0 * bound as f64) / segment as f64,
                peak >> 10,
                peak_queued >> 10,
                s.dropped_full
            );
        }
    }
}

/// The same churn without a full disk, stopped cleanly or not and reopened
/// six times: every reading is kept, with small segments and with sled's
/// default (what tells the losses with small segments apart as sled's
/// behaviour after a full disk). Run with `-- --ignored`.
#[test]
#[ignore]
fn without_a_full_disk_every_segment_keeps_every_reading_across_reopen() {
    use iomt_edge::config::{units::ByteSize, OutboxConfig};
    use iomt_edge::model::{DeviceKind, Reading, ReadingType};
    use iomt_edge::outbox::space::{SEGMENT_DEFAULT, SEGMENT_SMALL};
    use iomt_edge::outbox::Outbox;
    for (fs, bound, seg) in [("12m", 256u64 << 10, SEGMENT_SMALL), ("20m", 256 << 10, SEGMENT_DEFAULT), ("12m", 64 << 10, SEGMENT_SMALL)] {
        let dir = tempfile::tempdir().unwrap();
        let Some(state_fs) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("state"), fs) else { return };
        let outbox = state_fs.path().join("outbox");
        preset_segment(&outbox, seg);
        let cfg = OutboxConfig { max_bytes: ByteSize(bound), ..OutboxConfig::default() };
        let mut n = 0u32;
        for round in 0..6 {
            let (ob, _) = Outbox::open(&outbox, &cfg).unwrap();
            let before: Vec<u64> = ob.read_range(0, u64::MAX, 1_000_000).unwrap().iter().map(|r| r.seq).collect();
            assert_eq!(before.len() as u64, ob.len(), "{fs} round {round}: counted vs found at open");
            for _ in 0..200 {
                let mut rs: Vec<Reading> = (0..20)
                    .map(|_| {
                        n += 1;
                        Reading::new("strap-a", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", (60 + n % 40) as f64)
                    })
                    .collect();
                ob.append(&mut rs).unwrap();
            }
            let after: Vec<u64> = ob.read_range(0, u64::MAX, 1_000_000).unwrap().iter().map(|r| r.seq).collect();
            assert_eq!(after.len() as u64, ob.len(), "{fs} round {round}: counted vs found while open");
            let last = ob.last_seq();
            assert!(after.windows(2).all(|w| w[1] == w[0] + 1) && after.last() == Some(&last), "{fs} round {round}: a gap");
            if round % 2 == 0 {
                ob.close_clean().unwrap();
            }
            drop(ob);
            let (ob, _) = Outbox::open(&outbox, &cfg).unwrap();
            let reopened: Vec<u64> = ob.read_range(0, u64::MAX, 1_000_000).unwrap().iter().map(|r| r.seq).collect();
            assert_eq!(reopened, after, "{fs} round {round}: the reopened store differs");
            eprintln!("{fs} round {round}: {} readings kept, {} dropped", reopened.len(), ob.stats().dropped_full);
            ob.close_clean().unwrap();
        }
    }
}
