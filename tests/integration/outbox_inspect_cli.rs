//! Inspection commands change nothing they inspect: `outbox stats|peek` and
//! `medtech preview --outbox` on a mistyped path fail clearly (exit 2) and
//! create nothing; on a damaged outbox they fail (exit 3) and move nothing.

use iomt_edge::config::OutboxConfig;
use iomt_edge::model::{DeviceKind, Reading, ReadingType};
use iomt_edge::outbox::{Outbox, OutboxError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file and folder under `root`, with each file's length and a hash
/// of its contents (folders: `None`).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<(usize, u64)>> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.insert(path.clone(), None);
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(path.clone(), Some((bytes.len(), h.finish())));
            }
        }
    }
    out
}

fn cli(args: &[&std::ffi::OsStr]) -> (i32, String) {
    cli_with_tmp(args, &std::env::temp_dir()).0
}

/// Runs the command with `TMPDIR=tmp`; returns (exit code, stderr) and stdout.
fn cli_with_tmp(args: &[&std::ffi::OsStr], tmp: &Path) -> ((i32, String), String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(args).env("TMPDIR", tmp).output().unwrap();
    ((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A cleanly closed outbox with 2,000 readings in `dir`.
fn store(dir: &Path) {
    let (ob, _) = Outbox::open(dir, &OutboxConfig::default()).unwrap();
    for g in 0..100 {
        let mut rs: Vec<Reading> = (0..20)
            .map(|i| Reading::new("strap", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", (g * 20 + i) as f64))
            .collect();
        ob.append(&mut rs).unwrap();
    }
    ob.close_clean().unwrap();
}

#[test]
fn inspect_creates_nothing_where_there_is_no_outbox() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("empty")).unwrap();
    std::fs::create_dir(d.path().join("only-conf")).unwrap();
    std::fs::write(d.path().join("only-conf/conf"), "segment_size: 524288\n").unwrap();
    std::fs::write(d.path().join("a-file"), "").unwrap();
    let before = snapshot(d.path());
    for p in ["missing/outbox", "TYPO", "empty", "only-conf", "a-file"] {
        match Outbox::inspect(&d.path().join(p), &OutboxConfig::default()) {
            Err(OutboxError::NotFound(at)) => assert_eq!(at, d.path().join(p)),
            Err(e) => panic!("{p}: {e}"),
            Ok(_) => panic!("{p}: inspection opened an outbox where there was none"),
        }
        assert_eq!(snapshot(d.path()), before, "{p}: inspection changed the folder");
    }
}

#[test]
fn medtech_preview_of_a_mistyped_outbox_fails_and_creates_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("empty")).unwrap();
    let before = snapshot(d.path());
    for p in ["TYPO", "empty", "missing/outbox"] {
        let dir = d.path().join(p);
        let (code, err) = cli(&["medtech".as_ref(), "preview".as_ref(), "--outbox".as_ref(), dir.as_os_str()]);
        assert_eq!(code, 2, "{p}: {err}");
        assert!(err.contains("no outbox in") && err.contains(&dir.display().to_string()), "{p}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(snapshot(d.path()), before, "{p}: the preview changed the folder");
    }
}

#[test]
fn outbox_stats_and_peek_without_an_outbox_fail_and_create_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("empty-state")).unwrap();
    std::fs::create_dir_all(d.path().join("state-with-empty-outbox/outbox")).unwrap();
    // A `db` of 0 bytes (sled never wrote to it): no readings, no outbox;
    // before, `stats` reported a new outbox and created `outbox.lock`.
    std::fs::create_dir_all(d.path().join("state-with-empty-db/outbox")).unwrap();
    std::fs::File::create(d.path().join("state-with-empty-db/outbox/db")).unwrap();
    let before = snapshot(d.path());
    for state in ["missing-state", "empty-state", "state-with-empty-outbox", "state-with-empty-db"] {
        let s = d.path().join(state);
        for cmd in ["stats", "peek"] {
            let (code, err) = cli(&["outbox".as_ref(), cmd.as_ref(), "--state-dir".as_ref(), s.as_os_str()]);
            assert_eq!(code, 2, "{state} {cmd}: {err}");
            assert!(err.contains("no outbox in") && err.contains("--state-dir"), "{state} {cmd}: {err}");
            assert_eq!(snapshot(d.path()), before, "{state} {cmd}: the command changed the folder");
        }
    }
}

/// `outbox export|salvage --from` a path that is not an outbox folder is bad
/// usage, exit 2 as for `outbox stats` (README, exit codes); before, exit 1
/// (a runtime failure). Nothing is created, not even the state folder.
#[test]
fn outbox_export_and_salvage_from_a_missing_folder_are_bad_usage_like_stats() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("not-an-outbox")).unwrap();
    let before = snapshot(d.path());
    let state = d.path().join("state");
    for from in ["missing", "not-an-outbox"] {
        let from = d.path().join(from);
        let (code, err) = cli(&["outbox".as_ref(), "export".as_ref(), "--from".as_ref(), from.as_os_str()]);
        assert_eq!(code, 2, "export: {err}");
        assert!(err.contains("is not an outbox folder") && err.contains("--from"), "export: {err}");
        let (code, err) =
            cli(&["outbox".as_ref(), "salvage".as_ref(), "--from".as_ref(), from.as_os_str(), "--state-dir".as_ref(), state.as_os_str()]);
        assert_eq!(code, 2, "salvage: {err}");
        assert!(err.contains("is not an outbox folder"), "salvage: {err}");
        let (code, _) = cli(&["outbox".as_ref(), "stats".as_ref(), "--state-dir".as_ref(), from.as_os_str()]);
        assert_eq!(code, 2, "stats on the same path");
    }
    assert_eq!(snapshot(d.path()), before, "a refused command changed the folder");
}

#[test]
fn outbox_stats_and_peek_on_a_damaged_outbox_fail_and_move_nothing() {
    use std::io::{Seek, SeekFrom, Write};
    // Zero the first 4 KiB page (sled 0.34 cannot open that). Now and then
    // that page holds nothing sled still needs and `stats` finds the store
    // whole (2000 readings): then try a new store, the check must run.
    let mut attempt = 0;
    let (d, state) = loop {
        attempt += 1;
        assert!(attempt <= 6, "zeroing the first page never damaged a store: the test shows nothing");
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        store(&state.join("outbox"));
        let mut f = std::fs::OpenOptions::new().write(true).open(state.join("outbox/db")).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let tmp = tempfile::tempdir().unwrap();
        let ((code, _), out) = cli_with_tmp(&["outbox".as_ref(), "stats".as_ref(), "--state-dir".as_ref(), state.as_os_str()], tmp.path());
        if code != 0 {
            break (d, state);
        }
        assert!(out.contains("queued readings     2000"), "opened after the damage, so it must be whole: {out}");
    };
    let before = snapshot(d.path());
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["stats", "peek"] {
        let ((code, err), _) = cli_with_tmp(&["outbox".as_ref(), cmd.as_ref(), "--state-dir".as_ref(), state.as_os_str()], tmp.path());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the private copy is removed");
        assert_eq!(code, 3, "{cmd}: a damaged outbox is a problem found: {err}");
        // The last line says it in plain words (the storage engine may print its own panic before it).
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains("damaged") && last.contains("salvage"), "{cmd}: {err}");
        assert_eq!(snapshot(d.path()), before, "{cmd}: the command changed the damaged outbox or moved it");
    }
}

#[test]
fn inspecting_a_healthy_outbox_leaves_it_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    store(&state.join("outbox"));
    let before = snapshot(d.path());
    let tmp = tempfile::tempdir().unwrap();
    let ((code, err), out) = cli_with_tmp(&["outbox".as_ref(), "stats".as_ref(), "--state-dir".as_ref(), state.as_os_str()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued readings     2000") && out.contains(&format!("outbox in {}", state.join("outbox").display())), "{out}");
    let ((code, err), out) =
        cli_with_tmp(&["outbox".as_ref(), "peek".as_ref(), "-n".as_ref(), "3".as_ref(), "--state-dir".as_ref(), state.as_os_str()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let outbox = state.join("outbox");
    let ((code, err), out) =
        cli_with_tmp(&["medtech".as_ref(), "preview".as_ref(), "--summary".as_ref(), "--outbox".as_ref(), outbox.as_os_str()], tmp.path());
    assert!(code == 0 || code == 3, "{err}");
    assert!(!out.is_empty());
    assert_eq!(snapshot(d.path()), before, "inspection changed the outbox");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the private copies are removed");
}
