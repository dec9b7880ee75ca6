//! Shared by the Debian package tests: the cached Debian `stable` roots
//! (mmdebstrap), the package built with cargo-deb around a given binary, and
//! commands run inside a root in namespaces of their own.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Whether this machine can run the package tests: root (chroot, namespaces,
/// package installs), mmdebstrap, cargo-deb and unshare; for an `emulated`
/// architecture, also its qemu-user-static. Missing: a failure under
/// IOMT_REQUIRE_ALL (scripts/test.sh installs them), else the test is skipped
/// with the reason.
pub fn prerequisites(emulated: Option<&Emulated>) -> bool {
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
    let qemu = emulated.filter(|e| !Path::new(e.qemu).exists()).map(|e| format!("{} (apt-get install qemu-user-static)", e.qemu));
    if missing.is_empty() && qemu.is_none() {
        return true;
    }
    let missing: Vec<String> = missing.into_iter().map(String::from).chain(qemu).collect();
    super::skip(&super::this_test(), format!("the package tests need: {}", missing.join(", ")));
    false
}

/// A foreign architecture run through qemu-user: the Debian architecture, the
/// Rust target, the qemu binary, and the ELF header bytes (with their mask)
/// that binfmt_misc matches (as Debian's qemu-user-static registers them).
pub struct Emulated {
    pub arch: &'static str,
    pub triple: &'static str,
    pub qemu: &'static str,
    magic: [u8; 20],
    mask: [u8; 20],
}

const ELF_MASK: [u8; 20] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff];

/// 64-bit Raspberry Pi OS.
pub const ARM64: Emulated = Emulated {
    arch: "arm64",
    triple: "aarch64-unknown-linux-gnu",
    qemu: "/usr/bin/qemu-aarch64-static",
    magic: [0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xb7, 0],
    mask: ELF_MASK,
};

/// 32-bit Raspberry Pi OS.
pub const ARMHF: Emulated = Emulated {
    arch: "armhf",
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: "/usr/bin/qemu-arm-static",
    magic: [0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x28, 0],
    mask: ELF_MASK,
};

impl Emulated {
    /// Shell lines (for the host's /bin/sh, inside the user namespace) that
    /// mount a binfmt_misc of the namespace's own under `proc` (a mounted
    /// proc) and register qemu there with flag F (the interpreter is opened
    /// now, from the host, so a chroot needs no copy of it). Since Linux 6.7
    /// binfmt_misc is per user namespace: the registration ends with it and the
    /// host's binfmt_misc never sees it.
    fn register(&self, proc: &str) -> String {
        // `\xHH` escapes, which the kernel decodes itself (raw bytes would
        // include NULs, which a shell cannot pass on).
        let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
        format!(
            "mount -t binfmt_misc binfmt_misc {proc}/sys/fs/binfmt_misc && printf '%s' ':iomt-test-{arch}:M::{magic}:{mask}:{qemu}:F' > {proc}/sys/fs/binfmt_misc/register",
            arch = self.arch,
            magic = hex(&self.magic),
            mask = hex(&self.mask),
            qemu = self.qemu
        )
    }
}

/// A command run as root of a new user namespace (with every id mapped to
/// itself, so files keep their owners) and new mount and PID namespaces:
/// `sh -c` waits until [`map_ids`] has written the maps, then runs `script`.
fn userns_command(net: bool, script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--user", "--mount", "--pid", "--uts", "--ipc", "--fork", "--kill-child=SIGKILL"]);
    if net {
        c.arg("--net");
    }
    c.args(["--", "/bin/sh", "-c", &format!("while [ -z \"$(cat /proc/self/uid_map)\" ]; do sleep 0.01; done; {script}")]);
    c
}

/// Maps every user and group id of `child`'s new user namespace to itself (we
/// are root of the host's namespace, so no newuidmap is needed). On failure
/// the child is killed (it would wait for its map for good) and the test fails.
pub fn map_ids(child: &mut std::process::Child) {
    if let Err(e) = try_map_ids(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{e}");
    }
}

fn try_map_ids(pid: u32) -> Result<(), String> {
    let own = std::fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_link(format!("/proc/{pid}/ns/user")).ok().is_none_or(|ns| ns == own) {
        if Instant::now() > deadline {
            return Err(format!("process {pid} did not enter its user namespace"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), "0 0 4294967295\n").map_err(|e| format!("writing {map} of {pid}: {e}"))?;
    }
    Ok(())
}

/// Runs `cmd` (made by [`userns_command`]) to its end, writing its id maps.
fn output_mapped(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().expect("run unshare");
    map_ids(&mut child);
    child.wait_with_output().unwrap()
}

/// Kills (SIGKILL) and reaps a child when dropped, so that a failing test
/// leaves no gateway running in a namespace.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cached Debian `stable` root for `arch` (a tarball), made once by
/// scripts/deb-test-root.sh (mmdebstrap; for a foreign `arch` under qemu-user
/// in a user namespace of its own), which scripts/test.sh may already have run
/// in the background. Kept in `target/tmp/deb-roots/` (or IOMT_DEB_ROOT_CACHE);
/// the script's digest is in the name, so a changed script makes a new root.
pub fn root_tarball(arch: &str) -> PathBuf {
    let dir = std::env::var_os("IOMT_DEB_ROOT_CACHE").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-roots"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deb-test-root.sh");
    let t = Instant::now();
    let out =
        Command::new("bash").arg(&script).arg(arch).env("IOMT_DEB_ROOT_CACHE", &dir).stdin(Stdio::null()).output().expect("run deb-test-root.sh");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("scripts/deb-test-root.sh {arch} (the Debian stable root) failed:\n{}", tail.join("\n"));
    }
    let tar = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(tar.is_file(), "scripts/deb-test-root.sh {arch} printed {tar:?}, which is no file");
    if t.elapsed().as_secs() > 5 {
        eprintln!("made {} in {:.0?}", tar.display(), t.elapsed());
    }
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
    emulated: Option<&'static Emulated>,
}

impl Root {
    pub fn extract(tar: &Path) -> Root {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let o = Command::new("tar").args(["-xf"]).arg(tar).arg("-C").arg(dir.path()).args(["--numeric-owner"]).output().unwrap();
        assert!(o.status.success(), "unpacking {}: {}", tar.display(), String::from_utf8_lossy(&o.stderr));
        Root { dir, emulated: None }
    }

    /// A root of a foreign architecture: its commands run in a user namespace
    /// with its own binfmt_misc (see [`Emulated`]); a command spawned from
    /// [`Root::command`] needs [`map_ids`] once spawned.
    pub fn extract_emulated(e: &'static Emulated) -> Root {
        Root { emulated: Some(e), ..Root::extract(&root_tarball(e.arch)) }
    }

    /// Whether commands of this root need [`map_ids`] after spawning.
    pub fn needs_map(&self) -> bool {
        self.emulated.is_some()
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
        let inner = format!("hostname {hostname} && {script}");
        let mut c = match self.emulated {
            None => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--pid", "--uts", "--ipc", "--net", "--fork", "--kill-child=SIGKILL"])
                    .arg(format!("--mount-proc={}", self.path("/proc").display()))
                    .arg("chroot")
                    .arg(self.dir.path())
                    .args(["/bin/sh", "-c", &inner]);
                c
            }
            Some(e) => {
                let root = self.dir.path().display().to_string();
                let quoted = format!("'{}'", inner.replace('\'', "'\\''"));
                // Not `exec chroot`: the host's shell stays the namespace's first process.
                userns_command(
                    true,
                    &format!(
                        "mount -t proc proc {root}/proc && {} && chroot {root} /bin/sh -c {quoted}; exit $?",
                        e.register(&format!("{root}/proc"))
                    ),
                )
            }
        };
        c.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", "/root")
            .stdin(Stdio::null());
        c
    }

    /// Runs `script` (see [`Root::command`]); exit code and stdout + stderr.
    pub fn sh(&self, hostname: &str, script: &str) -> (i32, String) {
        let mut cmd = self.command(hostname, script);
        let o: Output = if self.needs_map() { output_mapped(cmd) } else { cmd.output().expect("run unshare") };
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

/// The installed config, as the service reads it.
pub const CONF: &str = "/etc/iomt-edge/iomt-edge.toml";

/// Runs the installed gateway as the service would (the service user, the
/// installed config) with `--report-commits`, kills it with SIGKILL after each
/// of `waits_ms`, then checks that every reading it ever reported committed
/// (collected in `committed` across calls) is queued in the outbox. The config
/// must make delivery impossible (nothing leaves the outbox). Returns how many
/// readings were committed in all.
pub fn kill9_cycles(root: &Root, hostname: &str, committed: &super::gateway::Committed, waits_ms: &[u64], label: &str) -> usize {
    for wait in waits_ms {
        // Not `exec`: the shell stays the namespace's first process. The
        // kernel forgets unshare's --kill-child signal in a process that
        // changes its user (setpriv), so that one must not be PID 1.
        let cmd = root.command(
            hostname,
            &format!("setpriv --reuid=iomt-edge --regid=iomt-edge --init-groups iomt-edge run --report-commits --config {CONF}; exit $?"),
        );
        let (mut child, reader) = super::gateway::start_command(cmd, committed.clone(), None);
        if root.needs_map() {
            map_ids(&mut child);
        }
        let mut running = KillOnDrop(Some(child));
        std::thread::sleep(std::time::Duration::from_millis(*wait));
        // SIGKILL to unshare; --kill-child passes it on to the namespace's
        // first process, and the whole PID namespace (the gateway with it)
        // is killed with SIGKILL by the kernel.
        let mut child = running.0.take().expect("child");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
    }
    let c = committed.lock().unwrap().clone();
    assert!(c.len() > 50, "{label}: the gateway should have committed readings, got {}", c.len());
    let queued = queued_seqs(root, hostname);
    let lost: Vec<_> = c.keys().filter(|s| !queued.contains(s)).collect();
    assert!(lost.is_empty(), "{label}: {} committed readings are not in the outbox: {:?}", lost.len(), &lost[..lost.len().min(10)]);
    c.len()
}

/// The administrator's edit of the shipped config: a simulated device every
/// 20 ms (the test's stand-in for a strap) and an IoT hub that cannot be
/// reached (the namespace has no network), so every committed reading stays
/// in the outbox.
pub fn edit_conffile(text: &str) -> String {
    let device =
        "# edited on this gateway\n[[device]]\nid = \"oxi-test\"\nkind = \"pulse_oximeter\"\n[device.simulated]\ninterval_ms = 20\nseed = 7\n\n";
    let sink_file = "[sink.file]\n";
    let i = text.find(sink_file).expect("the shipped config has a [sink.file] table");
    let rest = &text[i + sink_file.len()..];
    let end = rest.find("\n\n").map(|j| i + sink_file.len() + j).unwrap_or(text.len());
    let hub = "[sink.iothub]\nconnection_string = { value = \"HostName=hub.invalid;DeviceId=bed07;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=\" }";
    format!("{}{device}{hub}{}", &text[..i], &text[end..])
}
