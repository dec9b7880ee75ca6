//! The Debian package (Cargo.toml's `[package.metadata.deb]`, packaging/debian/)
//! built with cargo-deb around the binary under test, then installed with
//! `apt-get install ./iomt-edge_*.deb`, upgraded over a previous build while
//! its outbox holds a backlog, and purged, inside a minimal Debian `stable` root
//! made with mmdebstrap by scripts/deb-test-root.sh (cached as
//! target/tmp/deb-roots/stable-ARCH-*.tar, so only the first run makes it).
//!
//! Everything inside the root runs in its own mount, PID, UTS, IPC and network
//! namespaces (unshare): /proc is mounted in that mount namespace only, the host
//! name is set in that UTS namespace only, and the gateway has no network (so
//! the hub it is pointed at cannot be reached and its readings stay queued).
//! When the namespaces end, their mounts go with them: nothing is left on the
//! host, even when a test fails half-way.
//!
//! The emulated arm64 root (qemu-user) is in tests/integration/deb_package_arm64.rs.

use crate::support::deb as deb_common;

use deb_common::{build_deb, edit_conffile, kill9_cycles, prerequisites, queued_seqs, root_tarball, Root, CONF};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[test]
fn amd64_package_installs_upgrades_keeping_the_backlog_and_purges() {
    if !prerequisites(None) {
        return;
    }
    let debs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_iomt-edge"));
    let previous = build_deb(binary, None, "0.0.1-1", debs.path());
    let current = build_deb(binary, None, &format!("{}-1", env!("CARGO_PKG_VERSION")), debs.path());
    let root = Root::extract(&root_tarball("amd64"));
    root.put(&previous, "/tmp/previous.deb");
    root.put(&current, "/tmp/current.deb");

    // 1. A first install on a Pi that still has the image's host name: the
    //    package installs, the service is enabled but not started, and the
    //    output says what to change.
    let out = root.ok("raspberrypi", "apt-get install -y /tmp/previous.deb");
    assert!(out.contains("enabled but NOT started") && out.contains("hostnamectl set-hostname"), "{out}");

    // 2. What the package set up.
    let facts = root.ok(
        "bed07",
        "id iomt-edge; stat -c '%n %U:%G %a' /var/lib/iomt-edge /etc/iomt-edge /etc/iomt-edge/iomt-edge.toml; \
         readlink /etc/systemd/system/multi-user.target.wants/iomt-edge.service; \
         dpkg-query -W -f='conffiles:${Conffiles}\\n' iomt-edge; iomt-edge --version",
    );
    for expected in [
        "(bluetooth)",
        "(dialout)",
        "/var/lib/iomt-edge iomt-edge:iomt-edge 750",
        "/etc/iomt-edge root:iomt-edge 750",
        "/etc/iomt-edge/iomt-edge.toml root:iomt-edge 640",
        "/usr/lib/systemd/system/iomt-edge.service",
        "conffiles: /etc/iomt-edge/iomt-edge.toml ",
        &format!("iomt-edge {}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(facts.contains(expected), "expected {expected:?} in:\n{facts}");
    }
    assert!(facts.lines().any(|l| l.starts_with("uid=") && l.contains("(iomt-edge)")), "{facts}");

    // 3. The shipped config passes check-config as the service user once the
    //    machine has a name of its own, and the gateway id is that name.
    let out = root.ok("bed07", &format!("setpriv --reuid=iomt-edge --regid=iomt-edge --init-groups iomt-edge check-config {CONF}"));
    assert!(out.contains("gateway bed07 ") && out.contains("checked as user iomt-edge"), "{out}");

    // 4. The administrator edits the conffile; the gateway runs as the
    //    service would and is killed with SIGKILL a few times, with the hub
    //    unreachable: a backlog builds up in the outbox.
    let conf_path = root.path(CONF);
    let edited = edit_conffile(&std::fs::read_to_string(&conf_path).unwrap());
    std::fs::write(&conf_path, &edited).unwrap();
    root.ok("bed07", &format!("setpriv --reuid=iomt-edge --regid=iomt-edge --init-groups iomt-edge check-config {CONF}"));
    let committed = Arc::new(Mutex::new(BTreeMap::new()));
    let before_upgrade = kill9_cycles(&root, "bed07", &committed, &[1500, 900, 1200], "before the upgrade");

    // 5. The upgrade keeps the edited conffile (no prompt, no .dpkg-* copy)
    //    and the backlog, and the new binary goes on with it.
    let out = root.ok("bed07", "apt-get install -y /tmp/current.deb");
    assert!(out.contains("passes check-config"), "{out}");
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), edited, "the upgrade must keep the edited conffile");
    let leftovers = root.ok("bed07", "ls -a /etc/iomt-edge; dpkg-query -W -f='${Version}\\n' iomt-edge");
    assert!(!leftovers.contains(".dpkg-"), "{leftovers}");
    assert!(leftovers.contains(&format!("{}-1", env!("CARGO_PKG_VERSION"))), "{leftovers}");
    let queued = queued_seqs(&root, "bed07");
    assert!(queued.len() >= before_upgrade, "the backlog of {before_upgrade} readings shrank to {} over the upgrade", queued.len());
    let after_upgrade = kill9_cycles(&root, "bed07", &committed, &[1500, 900, 1200], "after the upgrade");
    assert!(after_upgrade > before_upgrade);

    // 6. Purge asks nothing and removes the user, the group, the config and
    //    the enablement; the outbox (readings not yet delivered) is kept, owned by root.
    let out = root.ok("bed07", "apt-get purge -y iomt-edge </dev/null");
    assert!(out.contains("kept /var/lib/iomt-edge"), "{out}");
    let after = root.ok(
        "bed07",
        "getent passwd iomt-edge || echo no-user; getent group iomt-edge || echo no-group; \
         test -e /etc/iomt-edge || echo no-config; test -e /usr/bin/iomt-edge || echo no-binary; \
         test -e /etc/systemd/system/multi-user.target.wants/iomt-edge.service || echo no-enable-link; \
         stat -c 'state %U:%G %a' /var/lib/iomt-edge; test -s /var/lib/iomt-edge/outbox/db && echo outbox-kept; \
         find /var/lib/iomt-edge -nouser | head -1",
    );
    for expected in ["no-user", "no-group", "no-config", "no-binary", "no-enable-link", "state root:root 700", "outbox-kept"] {
        assert!(after.lines().any(|l| l == expected), "expected {expected:?} after purge:\n{after}");
    }
    assert!(!after.lines().any(|l| l.starts_with("/var/lib")), "files of a deleted user are left:\n{after}");
}
