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

/// The queued readings of the outbox in `state`, as `outbox stats` counts them.
fn queued(state: &std::path::Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["outbox", "stats", "--state-dir"]).arg(state).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.trim_start().starts_with("queued readings")).unwrap_or_else(|| panic!("no count in {text:?}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn the_demo_never_clears_or_uses_another_gateways_outbox() {
    // A gateway whose state_dir is `<folder>/state`, stopped with readings
    // queued (its sink, /dev/full, takes none): the folder then holds only
    // `state`, as a demo folder from before the mark did.
    let d = tempfile::tempdir().unwrap();
    let srv = d.path().join("srv");
    let state = srv.join("state");
    let config = d.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"ward3-bed12\"\nstate_dir = \"{}\"\n[[device]]\nid = \"ox\"\nkind = \"pulse_oximeter\"\n\
             [device.simulated]\ninterval_ms = 20\n[sink.file]\npath = \"/dev/full\"\n",
            state.display()
        ),
    )
    .unwrap();
    let mut gw =
        Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["run", "--config"]).arg(&config).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(gw.id() as i32, libc::SIGTERM) };
    assert!(gw.wait().unwrap().success());
    let before = queued(&state);
    assert!(before > 0, "the gateway queued readings");

    // --fresh: refused, nothing removed.
    let out = demo(&srv, true);
    assert!(!out.status.success(), "--fresh cleared another gateway's outbox");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway `ward3-bed12`"), "{err}");
    assert_eq!(queued(&state), before, "the gateway's readings are all still queued");
    // Without --fresh: refused too, rather than delivering that gateway's
    // readings into the demo's file.
    let out = demo(&srv, false);
    assert!(!out.status.success(), "the demo used another gateway's outbox");
    assert_eq!(queued(&state), before);
    assert!(!srv.join("delivered.ndjson").exists());

    // A folder marked as the demo's whose state folder a gateway took over:
    // refused as well.
    let mine = d.path().join("demo");
    assert!(demo(&mine, false).status.success());
    std::fs::remove_dir_all(mine.join("state")).unwrap();
    std::fs::rename(&state, mine.join("state")).unwrap();
    let out = demo(&mine, true);
    assert!(!out.status.success());
    assert_eq!(queued(&mine.join("state")), before);

    // An unmarked folder holding only `state` that names no gateway (no
    // status file): not provably the demo's, so --fresh refuses it.
    let bare = d.path().join("bare");
    std::fs::create_dir_all(bare.join("state").join("outbox")).unwrap();
    std::fs::write(bare.join("state").join("outbox").join("db"), "keep").unwrap();
    let out = demo(&bare, true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by `iomt-edge demo`"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(bare.join("state").join("outbox").join("db")).unwrap(), "keep");
}
