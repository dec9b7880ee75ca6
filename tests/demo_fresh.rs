//! `iomt-edge demo --fresh` clears only what the demo made, and never a folder
//! that holds anything else or an outbox a running gateway uses.

use std::process::Command;

fn demo(dir: &std::path::Path, fresh: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iomt-edge"));
    c.args(["demo", "--in-process", "--plain", "--duration", "1s", "--dir"]).arg(dir);
    if fresh {
        c.arg("--fresh");
    }
    c.output().unwrap()
}

#[test]
fn fresh_clears_only_the_demos_own_folder() {
    let d = tempfile::tempdir().unwrap();
    // A folder that is not the demo's: refused, nothing removed.
    let foreign = d.path().join("important");
    std::fs::create_dir_all(foreign.join("state")).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();
    let out = demo(&foreign, true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by `iomt-edge demo`"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "keep me");
    assert!(foreign.join("state").exists());

    // The demo's own folder: cleared and started again.
    let mine = d.path().join("demo");
    assert!(demo(&mine, false).status.success());
    assert!(std::fs::metadata(mine.join("delivered.ndjson")).unwrap().len() > 0);
    std::fs::write(mine.join("my-notes.txt"), "mine").unwrap();
    let out = demo(&mine, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(mine.join("my-notes.txt")).unwrap(), "mine", "--fresh removes only what the demo made");

    // While a gateway holds the outbox lock: refused.
    let lock = std::fs::OpenOptions::new().write(true).open(mine.join("state").join("outbox.lock")).unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on our own descriptor.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let out = demo(&mine, true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running gateway"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(mine.join("state").join("outbox").exists());
}
