//! Sanity tests of the power-cut harness (tests/support/powercut_fs.rs): it must lose
//! exactly what a power cut loses, or the gateway's power-cut test proves
//! nothing. Needs root and /dev/fuse (SKIPPED otherwise; a failure under
//! IOMT_REQUIRE_ALL=1).

use crate::support::powercut_fs;

use powercut_fs::{mount_or_skip, PowerCutFs, PAGE};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn harness(test: &str) -> Option<(tempfile::TempDir, PowerCutFs)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = mount_or_skip(test, dir.path())?;
    Some((dir, fs))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn read(path: &Path) -> Vec<u8> {
    let mut buf = Vec::new();
    File::open(path).expect("open").read_to_end(&mut buf).expect("read");
    buf
}

#[test]
fn synced_data_survives_a_cut_unsynced_data_does_not() {
    let Some((_dir, fs)) = harness("synced_data_survives_a_cut_unsynced_data_does_not") else { return };
    let path = fs.path().join("f");
    let old = pattern(3 * PAGE as usize + 100, 1);
    let mut f = File::create(&path).unwrap();
    f.write_all(&old).unwrap();
    f.sync_data().unwrap();
    // Overwrite the middle without syncing: every reader sees it before the cut.
    let new = pattern(PAGE as usize, 7);
    f.write_all_at(&new, 1000).unwrap();
    let mut expected_before = old.clone();
    expected_before[1000..1000 + new.len()].copy_from_slice(&new);
    assert_eq!(read(&path), expected_before, "a second reader must see unsynced data, as with the page cache");
    drop(f);

    let lost = fs.power_cut().unwrap();
    assert_eq!(read(&path), old, "the unsynced overwrite must be gone, the synced data kept");
    assert_eq!(lost, 2 * PAGE, "two dirty pages were thrown away");
    assert_eq!(std::fs::read(fs.backing().join("f")).unwrap(), old, "the backing folder holds the synced data");
}

#[test]
fn unsynced_growth_and_truncation_are_undone() {
    let Some((_dir, fs)) = harness("unsynced_growth_and_truncation_are_undone") else { return };
    let path = fs.path().join("log");
    let base = pattern(100, 3);
    let mut f = File::create(&path).unwrap();
    f.write_all(&base).unwrap();
    f.sync_all().unwrap();
    f.write_all(&pattern(5000, 4)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5100, "the size grows before the sync");
    drop(f);
    fs.power_cut().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100, "unsynced growth must be undone");
    assert_eq!(read(&path), base);

    // An unsynced truncation is undone too.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(10).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    drop(f);
    fs.power_cut().unwrap();
    assert_eq!(read(&path), base, "an unsynced truncation must be undone");

    // Truncate then grow, synced: the cut-off bytes come back as zeros.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(10).unwrap();
    f.set_len(60).unwrap();
    f.write_all_at(b"xy", 80).unwrap();
    f.sync_data().unwrap();
    drop(f);
    fs.power_cut().unwrap();
    let mut expected = base[..10].to_vec();
    expected.resize(80, 0);
    expected.extend_from_slice(b"xy");
    assert_eq!(read(&path), expected);
}

#[test]
fn create_rename_and_append_work_and_survive_once_synced() {
    let Some((_dir, fs)) = harness("create_rename_and_append_work_and_survive_once_synced") else { return };
    let dir = fs.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    // The temp-file + fsync + rename + fsync(dir) pattern.
    let tmp = dir.join("twin.json.tmp");
    let mut f = File::create(&tmp).unwrap();
    f.write_all(b"{\"version\":3}").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&tmp, dir.join("twin.json")).unwrap();
    File::open(&dir).unwrap().sync_all().unwrap();
    // Written but never synced: the name survives, the data does not.
    std::fs::write(dir.join("careless.json"), b"{\"version\":4}").unwrap();
    // O_APPEND writes land at the end.
    let mut a = OpenOptions::new().create(true).append(true).open(dir.join("append.log")).unwrap();
    a.write_all(b"one\n").unwrap();
    a.write_all(b"two\n").unwrap();
    a.sync_data().unwrap();
    a.write_all(b"three\n").unwrap();
    assert_eq!(read(&dir.join("append.log")), b"one\ntwo\nthree\n");
    drop(a);
    let before = fs.counters();

    fs.power_cut().unwrap();
    assert_eq!(read(&dir.join("twin.json")), b"{\"version\":3}");
    assert!(!tmp.exists(), "the renamed temp file is gone");
    assert_eq!(read(&dir.join("careless.json")), b"", "an unsynced file survives a cut empty");
    assert_eq!(read(&dir.join("append.log")), b"one\ntwo\n");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["append.log", "careless.json", "twin.json"]);
    assert!(fs.counters().dir_fsyncs >= 1);
    assert_eq!(fs.counters().since(&before).power_cuts, 1);
}

#[test]
fn fsync_through_a_second_handle_counts_for_the_inode() {
    let Some((_dir, fs)) = harness("fsync_through_a_second_handle_counts_for_the_inode") else { return };
    let path = fs.path().join("shared");
    let data = pattern(10_000, 9);
    let mut writer = File::create(&path).unwrap();
    writer.write_all(&data).unwrap();
    let before = fs.counters();
    let other = File::open(&path).unwrap(); // read-only, as sled's flusher might hold it
    other.sync_data().unwrap();
    let c = fs.counters().since(&before);
    assert_eq!(c.fsyncs, 1);
    assert_eq!(c.pages_synced, 3, "10,000 bytes are three 4 KiB pages");
    assert_eq!(c.bytes_synced, 10_000);
    drop((writer, other));
    fs.power_cut().unwrap();
    assert_eq!(read(&path), data);
}

#[test]
fn sync_file_range_alone_does_not_make_data_durable() {
    // What sled's Db::flush does on Linux; FUSE never sees it, and neither
    // does an SD card's write cache.
    let Some((_dir, fs)) = harness("sync_file_range_alone_does_not_make_data_durable") else { return };
    let path = fs.path().join("db");
    let mut f = File::create(&path).unwrap();
    f.write_all(&pattern(8192, 2)).unwrap();
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid file descriptor we own.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    assert_eq!(rc, 0, "sync_file_range: {}", std::io::Error::last_os_error());
    drop(f);
    fs.power_cut().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn counters_count_application_bytes_durable_bytes_and_fsyncs() {
    let Some((_dir, fs)) = harness("counters_count_application_bytes_durable_bytes_and_fsyncs") else { return };
    let path = fs.path().join("c");
    let before = fs.counters();
    let f = File::create(&path).unwrap();
    // Ten 100-byte writes into one page, then one sync: one page reaches the disk.
    for i in 0..10u64 {
        f.write_all_at(&[i as u8; 100], i * 100).unwrap();
    }
    f.sync_data().unwrap();
    f.sync_data().unwrap(); // nothing dirty: counted as an fsync, writes nothing
    f.write_all_at(&[1; 50], 5000).unwrap();
    drop(f);
    let lost = fs.power_cut().unwrap();
    let c = fs.counters().since(&before);
    assert_eq!(c.bytes_written, 1050);
    assert_eq!((c.bytes_synced, c.pages_synced, c.fsyncs), (1000, 1, 2));
    assert_eq!(lost, 5050 - 4096, "the one dirty page held bytes 4096..5050 of the file");
    assert_eq!((c.bytes_lost, c.power_cuts), (lost, 1));
}

#[test]
fn torn_write_leaves_half_of_the_last_page() {
    let Some((_dir, fs)) = harness("torn_write_leaves_half_of_the_last_page") else { return };
    let path = fs.path().join("t");
    let f = File::create(&path).unwrap();
    f.write_all_at(&[0xAB; 2 * PAGE as usize], 0).unwrap();
    drop(f);
    fs.set_torn_writes(true);
    fs.power_cut().unwrap();
    let data = read(&path);
    let half = (PAGE + PAGE / 2) as usize;
    assert_eq!(data.len(), half, "half of the last written page reached the disk");
    assert!(data[..PAGE as usize].iter().all(|b| *b == 0), "the first page never reached the disk");
    assert!(data[PAGE as usize..].iter().all(|b| *b == 0xAB));
}

#[test]
fn a_cut_is_real_and_drop_leaves_no_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = mount_or_skip("a_cut_is_real_and_drop_leaves_no_mount", dir.path()) else { return };
    let mnt = fs.path().to_path_buf();
    let path = mnt.join("open-across-the-cut");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"data").unwrap();
    fs.power_cut().unwrap();
    // A handle from before the cut belongs to a machine that is gone.
    let mut buf = [0u8; 4];
    assert!(f.read_at(&mut buf, 0).is_err(), "a file opened before the cut must not be readable after it");
    assert!(f.write_all(b"more").is_err());
    drop(f);
    assert_eq!(read(&path), b"");
    let mounted =
        |p: &Path| std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()));
    assert!(mounted(&mnt));
    drop(fs);
    assert!(!mounted(&mnt), "the harness must unmount on drop");

    // ... also when the test panics while a file is open.
    let fs2 = mount_or_skip("a_cut_is_real_and_drop_leaves_no_mount", dir.path()).unwrap();
    let held = File::create(fs2.path().join("held")).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _fs = fs2;
        panic!("a failing test");
    }));
    assert!(r.is_err());
    assert!(!mounted(&mnt), "unmounted while unwinding, even with a file still open");
    drop(held);
}

#[test]
fn a_stall_hangs_every_operation_until_resumed_and_a_blocked_process_can_be_killed() {
    let Some((_dir, fs)) = harness("a_stall_hangs_every_operation_until_resumed_and_a_blocked_process_can_be_killed") else {
        return;
    };
    let path = fs.path().join("f");
    std::fs::write(&path, b"before").unwrap();
    fs.stall();
    // A reader in this process waits as long as the stall lasts.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    let reader = std::thread::spawn(move || tx.send(std::fs::read(p).map_err(|e| e.to_string())).unwrap());
    assert!(rx.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "a read answered while the share hangs");
    // Another process blocked on it dies at SIGKILL (its request was never read).
    let mut cat = std::process::Command::new("cat").arg(&path).stdout(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(cat.try_wait().unwrap().is_none(), "cat finished while the share hangs");
    cat.kill().unwrap();
    let started = std::time::Instant::now();
    while cat.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "a process blocked on the hung share could not be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs.resume();
    let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the read answers after resume");
    assert_eq!(got.unwrap(), b"before");
    reader.join().unwrap();
}
