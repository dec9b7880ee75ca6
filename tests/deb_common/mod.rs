//! Shared by the Debian package tests: the cached Debian `stable` roots
//! (mmdebstrap), the package built with cargo-deb around a given binary, and
//! commands run inside a root in namespaces of their own.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// What the root holds besides Debian's minimal base: what the package depends
/// on (so `apt-get install ./x.deb` needs no network) and `hostname`. The
/// cached tarball's name carries a digest of this list, so changing it makes a
/// new root.
pub const ROOT_PACKAGES: &str = "systemd,init-system-helpers,passwd,util-linux,hostname,libgcc-s1,ca-certificates";

/// FNV-1a of `s`, for cache file names.
fn digest(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{:08x}", h as u32)
}

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Whether this machine can run the package tests: root (chroot, namespaces,
/// package installs), mmdebstrap, cargo-deb and unshare; with `emulated`, also
/// qemu-user-static. Missing: a failure under IOMT_REQUIRE_ALL (scripts/test.sh
/// installs them), else the test is skipped with the reason.
pub fn prerequisites(emulated: bool) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (chroot and namespaces)");
    }
    if !works("mmdebstrap", &["--version"]) {
        missing.push("mmdebstrap (apt-get install mmdebstrap)");
    }
    if !works("cargo", &["deb", "--version"]) {
        missing.push("cargo-deb (cargo install cargo-deb --locked)");
    }
    if !works("unshare", &["--version"]) {
        missing.push("unshare (util-linux)");
    }
    if emulated && !Path::new("/usr/bin/qemu-aarch64-static").exists() {
        missing.push("qemu-aarch64-static (apt-get install qemu-user-static)");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var("IOMT_REQUIRE_ALL").is_err(), "the package tests need: {}", missing.join(", "));
    eprintln!("SKIPPED: missing {}", missing.join(", "));
    false
}

/// The Debian mirror this machine's apt uses (its sources.list or deb822
/// .sources files), or IOMT_DEBIAN_MIRROR.
pub fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("IOMT_DEBIAN_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        for line in text.lines().map(str::trim) {
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().filter(|w| !w.starts_with('[') && !w.ends_with(']')).take(1).collect()
            } else {
                continue;
            };
            if let Some(u) = uris.into_iter().find(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return u.to_string();
            }
        }
    }
    panic!("no Debian mirror in /etc/apt/sources.list(.d); set IOMT_DEBIAN_MIRROR to one");
}

/// The cached Debian `stable` root for `arch` (a tarball). The first run makes
/// it with mmdebstrap (about 3 minutes; the suite is named `stable`, not by
/// codename, and only the main suite is used, whose Release file does not expire).
pub fn root_tarball(arch: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-roots");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join(format!("stable-{arch}-{}.tar", digest(ROOT_PACKAGES)));
    if tar.exists() {
        return tar;
    }
    let partial = dir.join(format!("stable-{arch}.partial-{}.tar", std::process::id()));
    let mirror = debian_mirror();
    let t = Instant::now();
    let out = Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            &format!("--architectures={arch}"),
            &format!("--include={ROOT_PACKAGES}"),
            "--aptopt=Acquire::Check-Valid-Until \"false\"",
            "--format=tar",
            "stable",
        ])
        .arg(&partial)
        .arg(format!("deb {mirror} stable main"))
        .stdin(Stdio::null())
        .output()
        .expect("run mmdebstrap");
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("mmdebstrap of Debian stable ({arch}) failed:\n{}", tail.join("\n"));
    }
    std::fs::rename(&partial, &tar).unwrap();
    eprintln!("made {} in {:.0?}", tar.display(), t.elapsed());
    tar
}

/// Builds the package with cargo-deb around `binary` (as if it were the
/// release build of `target`), version `version`, into `out`; returns its path.
pub fn build_deb(binary: &Path, target: Option<&str>, version: &str, out: &Path) -> PathBuf {
    // cargo-deb takes the binary from CARGO_TARGET_DIR/[TRIPLE/]release/.
    let stage = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let release = match target {
        Some(t) => stage.path().join(t).join("release"),
        None => stage.path().join("release"),
    };
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(binary, release.join("iomt-edge")).unwrap();
    let mut cmd = Command::new("cargo");
    cmd.args(["deb", "--no-build", "--fast", "--deb-version", version, "--output"]).arg(out);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let o = cmd.env("CARGO_TARGET_DIR", stage.path()).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run cargo deb");
    assert!(o.status.success(), "cargo deb failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let path = String::from_utf8_lossy(&o.stdout).lines().rev().find(|l| l.ends_with(".deb")).map(PathBuf::from);
    path.unwrap_or_else(|| panic!("cargo deb named no .deb:\n{}", String::from_utf8_lossy(&o.stdout)))
}

/// A Debian root unpacked from a cached tarball into a temporary folder
/// (removed on drop; nothing is ever mounted in it outside a namespace).
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    pub fn extract(tar: &Path) -> Root {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let o = Command::new("tar").args(["-xf"]).arg(tar).arg("-C").arg(dir.path()).args(["--numeric-owner"]).output().unwrap();
        assert!(o.status.success(), "unpacking {}: {}", tar.display(), String::from_utf8_lossy(&o.stderr));
        Root { dir }
    }

    /// The host path of `inside` (an absolute path in the root).
    pub fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }

    /// Copies a host file into the root.
    pub fn put(&self, from: &Path, inside: &str) {
        std::fs::copy(from, self.path(inside)).unwrap();
    }

    /// `sh -c SCRIPT` in the root, with host name `hostname`, in new mount,
    /// PID, UTS, IPC and network namespaces; /proc is mounted in that mount
    /// namespace only. `extra_unshare` goes before `chroot` (e.g. a prelude).
    pub fn command(&self, hostname: &str, script: &str) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--pid", "--uts", "--ipc", "--net", "--fork", "--kill-child=SIGKILL"])
            .arg(format!("--mount-proc={}", self.path("/proc").display()))
            .arg("chroot")
            .arg(self.dir.path())
            .args(["/bin/sh", "-c", &format!("hostname {hostname} && {script}")])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", "/root")
            .stdin(Stdio::null());
        c
    }

    /// Runs `script` (see [`Root::command`]); exit code and stdout + stderr.
    pub fn sh(&self, hostname: &str, script: &str) -> (i32, String) {
        let o: Output = self.command(hostname, script).output().expect("run unshare");
        (o.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }

    /// [`Root::sh`] that must succeed; its output.
    pub fn ok(&self, hostname: &str, script: &str) -> String {
        let (code, out) = self.sh(hostname, script);
        assert_eq!(code, 0, "`{script}` failed in the root:\n{out}");
        out
    }
}

/// The sequence numbers queued in the installed gateway's outbox, read as the
/// service user with `iomt-edge outbox peek` (which changes nothing).
pub fn queued_seqs(root: &Root, hostname: &str) -> BTreeSet<u64> {
    let out = root.ok(
        hostname,
        "setpriv --reuid=iomt-edge --regid=iomt-edge --init-groups iomt-edge outbox peek -n 100000000 --state-dir /var/lib/iomt-edge 2>/dev/null",
    );
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("peek printed {l:?}: {e}"))["seq"].as_u64().unwrap())
        .collect()
}
