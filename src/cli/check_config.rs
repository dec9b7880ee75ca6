//! `iomt-edge check-config FILE`: validate a config file and say what it sets up.
//!
//! [`load_for_run`] is also what `iomt-edge run` calls before it starts
//! anything, so the two refuse the same files: what `run` would refuse at
//! start, `check-config` refuses too (with file, line and column, exit 2), and
//! the systemd unit runs `check-config` as the service user before every start
//! (`ExecStartPre=`). It checks the file ([`crate::config::load`]: syntax,
//! types, ranges, exclusive choices) and then this machine, as the user it runs
//! as: the state folder and the outbox in it, the file sink's path, secrets
//! (files and environment variables), the connection string's shape, and the
//! TLS files. Hand-written because these checks need the file system and the
//! sink's own parsers, which the config module must not depend on.

use super::out::{errln, outln};
use super::EXIT_USAGE;
use crate::config::{Config, ConfigError, DeviceSource, Secret, SinkConfig};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The TOML config file to check.
    pub(crate) file: PathBuf,
    /// Check only the file itself, not this machine (folders, secrets,
    /// certificates): for a file meant for another machine.
    #[arg(long)]
    pub(crate) syntax_only: bool,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let loaded = if a.syntax_only { crate::config::load(&a.file).map(|c| (c, Vec::new())) } else { load_checked(&a.file) };
    match loaded {
        Ok((c, warnings)) => {
            // As `run` does: an inline secret in a file others can read.
            crate::config::secret::warn_if_config_world_readable(&a.file, &c);
            outln!("{}: OK", a.file.display())?;
            outln!("  gateway {} (state in {})", c.gateway.id, c.gateway.state_dir.display())?;
            if a.syntax_only {
                outln!("  {} device(s), outbox bounded to {} (max_bytes)", c.devices.len(), c.outbox.max_bytes)?;
            } else {
                // What this machine's state filesystem allows now (the running
                // gateway checks it again every second).
                let outbox = c.gateway.state_dir.join("outbox");
                let bound = crate::outbox::space::bound_for(&outbox, c.outbox.max_bytes.bytes());
                outln!("  {} device(s), {}", c.devices.len(), bound.describe(&c.gateway.state_dir))?;
            }
            if !a.syntax_only {
                if warnings.is_empty() {
                    outln!("  checked as user {}: state folder, sink and secrets are usable", current_user().0)?;
                } else {
                    outln!(
                        "  checked as user {}: state folder and secrets are usable; the sink could not be checked (see the warning)",
                        current_user().0
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            errln!("{e}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// Loads `path` as `run` needs it: the file is valid, and this machine lets the
/// current user use what it names. The error names the file, and the line and
/// column of the option at fault (or of its table when the value is a default).
pub(crate) fn load_for_run(path: &Path) -> Result<Config, ConfigError> {
    load_checked(path).map(|(c, _)| c)
}

/// [`load_for_run`], also returning the warnings (each already logged).
fn load_checked(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let (config, text) = crate::config::load_with_text(path)?;
    match check_machine(&config) {
        Ok(warnings) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            Ok((config, warnings))
        }
        Err((key, message)) => Err(ConfigError::at_key(path, &text, &key, message)),
    }
}

/// How long the check of the sink's file may take before it is treated as a
/// folder that does not answer (not as an error).
const SHARE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `f` on its own thread and returns its result if it finishes within
/// `wait`. A thread that does not (blocked in the kernel on a hung share) is
/// left behind; it ends when the share answers or the process exits.
fn answers_within<T: Send + 'static>(wait: std::time::Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("check-share".into()).spawn(move || {
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(wait).ok()
}

/// (key path, message) of the first problem found.
type Problem = (String, String);

fn problem(key: &str, message: String) -> Problem {
    // Name the option, so the message says which secret or path it is about.
    let message = if message.contains(key) { message } else { format!("`{key}`: {message}") };
    (key.to_string(), message)
}

/// What the config asks of this machine, in the order `run` needs it.
/// Returns the warnings: what could not be checked but does not stop `run`.
fn check_machine(c: &Config) -> Result<Vec<String>, Problem> {
    let mut warnings = Vec::new();
    let state = &c.gateway.state_dir;
    folder_usable(state, "the state folder (state_dir)").map_err(|m| problem("gateway.state_dir", m))?;
    state_fs_big_enough(state, c.outbox.max_bytes.bytes()).map_err(|m| problem("gateway.state_dir", m))?;
    // The outbox's own files, when they exist (run creates them otherwise).
    let outbox = state.join("outbox");
    if exists(&outbox) {
        folder_usable(&outbox, "the outbox folder").map_err(|m| problem("gateway.state_dir", m))?;
        for f in [outbox.join("db"), outbox.join("conf")] {
            if exists(&f) {
                file_usable(&f, "the outbox file").map_err(|m| problem("gateway.state_dir", m))?;
            }
        }
    }
    let lock = state.join("outbox.lock");
    if exists(&lock) {
        file_usable(&lock, "the outbox lock file").map_err(|m| problem("gateway.state_dir", m))?;
    }
    // [device.serial]: the driver or profile (and HL7 code map) must
    // load. The port itself may be absent now (a USB-serial adapter plugged in
    // later): the gateway waits for it.
    for (i, d) in c.devices.iter().enumerate() {
        match &d.source {
            DeviceSource::Serial(s) => {
                crate::adapters::serial::adapter::resolve(&d.id, d.kind.into(), None, s)
                    .map_err(|(k, m)| problem(&format!("device.{i}.serial.{k}"), m))?;
            }
            DeviceSource::Hl7Tcp(h) => {
                crate::adapters::serial::tcp::resolve(&d.id, None, h).map_err(|(k, m)| problem(&format!("device.{i}.hl7_tcp.{k}"), m))?;
            }
            DeviceSource::Simulated(_) | DeviceSource::Ble(_) => {}
        }
    }
    if let SinkConfig::File(f) = &c.sink {
        if f.path.as_os_str().is_empty() {
            return Err(problem("sink.file.path", "the sink's path is empty: give a file such as \"/var/lib/iomt-edge/delivered.ndjson\"".into()));
        }
        // The sink's file may be on a network share that hangs: a check that
        // never returns would keep the gateway from starting and storing
        // readings. After a bound, say so and go on; the sink retries.
        let path = f.path.clone();
        match answers_within(SHARE_ANSWER_WAIT, move || file_usable(&path, "the sink file")) {
            Some(r) => r.map_err(|m| problem("sink.file.path", m))?,
            None => warnings.push(format!(
                "the sink file {} did not answer within {} s (a hung network share or USB stick?); \
                 the gateway starts anyway: readings are stored in the outbox and the sink retries until it answers",
                f.path.display(),
                SHARE_ANSWER_WAIT.as_secs()
            )),
        }
    }
    match &c.sink {
        SinkConfig::IotHub(h) => check_iothub(h)?,
        SinkConfig::EventHubs(h) => warnings.extend(check_eventhubs(h)?),
        SinkConfig::File(_) | SinkConfig::Stdout(_) => {}
    }
    Ok(warnings)
}

/// The Event Hubs identity as the sink will read it at start: the connection
/// string parses and names one event hub, the client secret, certificate and
/// key can be read and used, the CA file loads. A missing token file is a
/// warning (its helper may write it after the gateway starts).
fn check_eventhubs(h: &crate::config::eventhubs::EventHubsSinkConfig) -> Result<Vec<String>, Problem> {
    use crate::config::eventhubs::{EntraClientCredential, EventHubsIdentity};
    use crate::sinks::eventhubs::{connection_string::EventHubsConnectionString, entra};
    let mut warnings = Vec::new();
    match &h.identity {
        EventHubsIdentity::SharedAccessKey { connection_string: cs, event_hub } => {
            let key = "sink.eventhubs.connection_string";
            let raw = read_secret(cs, "Event Hubs connection string").map_err(|m| problem(key, m))?;
            let parsed = EventHubsConnectionString::parse(&raw).map_err(|e| {
                problem(key, format!("{e}; copy it again from the Azure portal (event hub or namespace, Shared access policies, a policy with Send)"))
            })?;
            parsed
                .hub_name(event_hub.as_deref())
                .map_err(|e| problem(if event_hub.is_some() { "sink.eventhubs.event_hub" } else { key }, e.to_string()))?;
        }
        EventHubsIdentity::Entra { credential: EntraClientCredential::Secret(s), .. } => {
            read_secret(s, "Entra ID client secret").map_err(|m| problem("sink.eventhubs.client_secret", m))?;
        }
        EventHubsIdentity::Entra { credential: EntraClientCredential::Certificate { cert_file: c, key_file: k }, .. } => {
            let cert = std::fs::read(c)
                .map_err(|e| problem("sink.eventhubs.client_certificate_file", format!("cannot read {}: {}", c.display(), os_error(&e))))?;
            entra::certificate_der(&cert).map_err(|e| problem("sink.eventhubs.client_certificate_file", format!("{}: {e}", c.display())))?;
            let key =
                std::fs::read(k).map_err(|e| problem("sink.eventhubs.client_key_file", format!("cannot read {}: {}", k.display(), os_error(&e))))?;
            entra::sign_assertion("check.check", &key).map_err(|e| problem("sink.eventhubs.client_key_file", format!("{}: {e}", k.display())))?;
        }
        EventHubsIdentity::TokenFile { token_file: t, .. } => {
            if std::fs::metadata(t).is_err() {
                warnings.push(format!(
                    "the bearer token file {} (sink.eventhubs.token_file) does not exist yet; readings are stored and sent once its helper writes it",
                    t.display()
                ));
            }
        }
    }
    if let Some(ca) = &h.ca_file {
        crate::sinks::iothub::tls::read_certs(ca).map_err(|e| problem("sink.eventhubs.ca_file", format!("{e:#}")))?;
    }
    Ok(warnings)
}

fn check_iothub(h: &crate::config::iothub::IotHubSinkConfig) -> Result<(), Problem> {
    use crate::config::iothub::IotHubIdentity;
    use crate::sinks::iothub::{connection_string::ConnectionString, sas, tls};
    match &h.identity {
        IotHubIdentity::ConnectionString(cs) => {
            let key = "sink.iothub.connection_string";
            let raw = read_secret(cs, "IoT Hub connection string").map_err(|m| problem(key, m))?;
            ConnectionString::parse(&raw).map_err(|e| {
                problem(
                    key,
                    format!(
                        "the IoT Hub connection string is malformed: {e}; copy it again from the Azure portal (device, Primary connection string)"
                    ),
                )
            })?;
        }
        IotHubIdentity::Dps(d) => {
            let key = d.key.config_key();
            let what = key.rsplit('.').next().unwrap_or(key).replace('_', " ");
            let raw = read_secret(d.key.secret(), &format!("DPS {what}")).map_err(|m| problem(key, m))?;
            if sas::hmac_b64(&raw, b"check").is_err() {
                return Err(problem(key, format!("the DPS {what} is not valid base64; copy it again from the enrollment")));
            }
        }
    }
    if let Some(p) = h.proxy.as_ref().and_then(|p| p.credentials.as_ref()) {
        let key = "sink.iothub.proxy_credentials";
        let raw = read_secret(p, "proxy credentials").map_err(|m| problem(key, m))?;
        if !raw.contains(':') {
            return Err(problem(key, "the proxy credentials must be `user:password`".into()));
        }
    }
    // The same TLS set-up the sink makes at start: trust roots, then the client certificate.
    let ca = h.ca_file.as_deref();
    tls::client_config(true, ca, None).map_err(|e| problem(if ca.is_some() { "sink.iothub.ca_file" } else { "sink.iothub" }, format!("{e:#}")))?;
    if let Some(c) = &h.client_certificate {
        tls::client_config(true, ca, Some((&c.cert_file, &c.key_file))).map_err(|e| problem("sink.iothub.cert_file", format!("{e:#}")))?;
    }
    Ok(())
}

/// Reads a secret as the sink will, with a message that names it and says
/// what to do.
fn read_secret(src: &Secret, what: &str) -> Result<String, String> {
    use crate::config::secret::SecretError;
    src.resolve().map_err(|e| match e {
        SecretError::File { path, error: source } => {
            let hint = match source.kind() {
                ErrorKind::NotFound => format!("write the {what} into it (chmod 600) or fix the path"),
                ErrorKind::PermissionDenied => {
                    let (who, owner) = subject();
                    format!("it must be readable by {who}: `sudo chown {owner}: {}` and `chmod 600`", path.display())
                }
                _ => "check the file".into(),
            };
            format!("cannot read the {what} file {}: {}; {hint}", path.display(), os_error(&source))
        }
        SecretError::Env(var) => format!(
            "environment variable {var} (the {what}) is not set in this environment; under systemd set it with \
             Environment= or EnvironmentFile= in the unit (check-config runs there before every start)"
        ),
        SecretError::Empty(_) => match src {
            Secret::File(p) => format!("the {what} file {} is empty; write the {what} into it", p.display()),
            Secret::Env(v) => format!("environment variable {v} (the {what}) is empty"),
            Secret::Value(_) => format!("the {what} is empty"),
        },
    })
}

/// The path does not exist (or a part of it is a file: `ENOTDIR`).
fn missing(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The OS error in plain words, without Rust's `(os error N)` suffix.
fn os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Whether the current (effective) user may access `p` in `mode` (`libc::W_OK`...).
fn access(p: &Path, mode: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The effective user's name (its number if it has none) and number.
fn current_user() -> (String, u32) {
    // SAFETY: geteuid cannot fail; getpwuid_r writes only into the buffers
    // given, and `pw_name` points into `buf`, which lives until the copy.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        let name = if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned()
        } else {
            uid.to_string()
        };
        (name, uid)
    }
}

/// The user the service runs as (`User=` in systemd/iomt-edge.service).
const SERVICE_USER: &str = "iomt-edge";

/// Whether a user of this name exists.
fn user_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else { return false };
    // SAFETY: getpwnam_r writes only into the buffers given; `c` outlives the call.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) == 0 && !result.is_null()
    }
}

/// Who could not do it, in words, and whom to give the file to. Checked as
/// the service user (as `ExecStartPre=` does), that is the user itself; checked
/// as someone else on a machine that has the service user, the advice is to
/// check as the service user, and to give the file to it.
fn subject() -> (String, String) {
    let (user, uid) = current_user();
    if user != SERVICE_USER && user_exists(SERVICE_USER) {
        (
            format!(
                "user {user} (uid {uid}), the user this check runs as (the service runs as {SERVICE_USER}: \
                 check as that user with `sudo -u {SERVICE_USER} iomt-edge check-config` and this file)"
            ),
            SERVICE_USER.to_string(),
        )
    } else {
        (format!("user {user} (uid {uid}), which runs the gateway"), user)
    }
}

/// A sentence for a folder or file the current user cannot write.
fn not_writable(p: &Path, what: &str, e: &std::io::Error, is_dir: bool) -> String {
    if e.raw_os_error() == Some(libc::EROFS) {
        return format!("{what} {} is on a read-only file system; remount it read-write or choose another place", p.display());
    }
    let (who, owner) = subject();
    let chown = if is_dir { format!("sudo chown -R {owner}: {}", p.display()) } else { format!("sudo chown {owner}: {}", p.display()) };
    format!("{what} {} is not writable by {who} ({}); run `{chown}` or choose another place", p.display(), os_error(e))
}

/// `p` itself if it exists, else its nearest parent that does.
fn nearest_existing(p: &Path) -> &Path {
    let mut probe = p;
    while std::fs::symlink_metadata(probe).is_err() {
        match probe.parent() {
            Some(a) if !a.as_os_str().is_empty() => probe = a,
            _ => return Path::new("."),
        }
    }
    probe
}

/// The name of the kernel filesystem holding `p` (or its nearest existing
/// parent) when it is one that holds no ordinary files (`/proc`, `/sys`...):
/// root passes every permission check there, and `run` then fails to create
/// the outbox or the sink's file. `statfs(2)` `f_type`, values from
/// `linux/magic.h`.
fn kernel_fs(p: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    const KERNEL_FS: [(u64, &str); 16] = [
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x1cd1, "devpts"),
        (0x6265_6570, "configfs"),
        (0xcafe_4a11, "bpf"),
        (0x6165_676c, "pstore"),
        (0xde5e_81e4, "efivarfs"),
        (0x1980_0202, "mqueue"),
        (0x6573_5543, "fusectl"),
        (0x4249_4e4d, "binfmt_misc"),
        (0xf97c_ff8c, "selinuxfs"),
    ];
    let c = std::ffi::CString::new(nearest_existing(p).as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    // f_type is 32 bits wide on 32-bit ARM and may come sign-extended.
    let magic = (s.f_type as u64) & 0xffff_ffff;
    KERNEL_FS.iter().find(|(m, _)| *m == magic).map(|(_, name)| *name)
}

/// The state filesystem can hold an outbox at all: empty, it gives at least
/// [`crate::outbox::space::MIN_BOUND`] (or `max_bytes`, if smaller). A
/// smaller one would bound the outbox near 0, dropping readings as fast as
/// they come. A filesystem that reports no size is not judged.
fn state_fs_big_enough(state: &Path, max_bytes: u64) -> Result<(), String> {
    use crate::config::units::ByteSize;
    use crate::outbox::space;
    let Ok((total, _)) = space::fs_space(nearest_existing(state)) else { return Ok(()) };
    let least = space::MIN_BOUND.min(max_bytes);
    // The outbox's segment: its own, or what a new one gets there.
    let segment = space::segment_to_open(&state.join("outbox"));
    if total == 0 || space::effective_bound(max_bytes, 0, total, total, segment).bytes >= least {
        return Ok(());
    }
    Err(format!(
        "the state folder (state_dir) {} is on a filesystem of {}, too small for an outbox: its store needs {} (sled's log segments and the commit journal) and up to {}x the readings' size, \
         and {} is kept free, so it needs at least {}; give the state folder a larger filesystem",
        state.display(),
        ByteSize(total),
        ByteSize(space::fixed_bytes(segment, total)),
        space::SLED_AMPLIFICATION,
        ByteSize(space::reserve_for(total, segment)),
        ByteSize(space::smallest_filesystem(segment))
    ))
}

/// `dir` is a folder the current user can create files in, or does not exist
/// yet and can be created (as `run` does).
fn folder_usable(dir: &Path, what: &str) -> Result<(), String> {
    if let Some(fs) = kernel_fs(dir) {
        return Err(format!(
            "{what} {} is on the kernel's {fs} filesystem, which holds no files of ours; choose a folder on a disk, such as /var/lib/iomt-edge",
            dir.display()
        ));
    }
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("{what} {} is a file, not a folder; move the file away or choose another place", dir.display())),
        Ok(_) => access(dir, libc::W_OK | libc::X_OK).map_err(|e| not_writable(dir, what, &e, true)),
        Err(e) if missing(&e) => {
            // Created at start: the nearest folder that exists must let us.
            let mut up = dir.parent();
            while let Some(a) = up {
                let a = if a.as_os_str().is_empty() { Path::new(".") } else { a };
                match std::fs::metadata(a) {
                    Ok(m) if !m.is_dir() => {
                        return Err(format!("{what} {} cannot be created: {} is a file, not a folder", dir.display(), a.display()))
                    }
                    Ok(_) => {
                        return access(a, libc::W_OK | libc::X_OK).map_err(|e| {
                            if e.raw_os_error() == Some(libc::EROFS) {
                                return format!("{what} {} cannot be created: {} is on a read-only file system", dir.display(), a.display());
                            }
                            let (who, owner) = subject();
                            format!(
                                "{what} {} does not exist, and {who}, cannot create it in {} ({}); \
                                 create it with `sudo install -d -o {owner} {}` or choose another place",
                                dir.display(),
                                a.display(),
                                os_error(&e),
                                dir.display()
                            )
                        });
                    }
                    Err(e) if missing(&e) => up = a.parent(),
                    Err(e) => return Err(format!("cannot look into {} for {what} {}: {}", a.display(), dir.display(), os_error(&e))),
                }
            }
            Ok(())
        }
        Err(e) => Err(format!("cannot use {what} {}: {}", dir.display(), os_error(&e))),
    }
}

/// `path` is a file the current user can read and append to, or does not exist
/// and its folder can be made to hold it.
fn file_usable(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    // `open` refuses a path ending in `/` (or `/.`) as a folder even when
    // nothing is there yet.
    let raw = path.as_os_str().as_bytes();
    if raw.ends_with(b"/") || path.file_name().is_none() {
        let file = path.file_name().map(|n| path.with_file_name(n)).unwrap_or_else(|| path.to_path_buf()).join("delivered.ndjson");
        return Err(format!(
            "{what} {} ends with a slash, so it names a folder; give the path of a file, such as {}",
            path.display(),
            file.display()
        ));
    }
    if let Some(fs) = kernel_fs(path) {
        return Err(format!("{what} {} is on the kernel's {fs} filesystem, which holds no files of ours; choose a file on a disk", path.display()));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            Err(format!("{what} {} is a folder; give the path of a file, such as {}", path.display(), path.join("delivered.ndjson").display()))
        }
        Ok(_) => access(path, libc::R_OK | libc::W_OK).map_err(|e| not_writable(path, what, &e, false)),
        Err(e) if missing(&e) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            folder_usable(dir, &format!("the folder of {what}"))
        }
        Err(e) => Err(format!("cannot use {what} {}: {}", path.display(), os_error(&e))),
    }
}
