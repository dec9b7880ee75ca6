//! Bad config files, each with the exact line and column the error must name,
//! through the real `iomt-edge check-config` command.

use crate::support::tmpfs;
use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"[gateway]
id = "gw-1"
state_dir = "/tmp/x"

[[device]]
id = "strap"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 1000

[sink.file]
path = "/tmp/x/out.ndjson"
"#;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn the_good_file_passes() {
    let (code, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn shipped_example_configs_pass() {
    // The example is meant for a gateway (its state_dir is /var/lib/iomt-edge):
    // its file alone is checked here; the demo's is checked on this machine too.
    for args in [&["check-config", "--syntax-only", "config/iomt-edge.toml"][..], &["check-config", "config/demo.toml"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bad_files_name_line_column_and_fix() {
    // (file text, expected "FILE:line:col:" prefix, words the message must contain)
    let cases: Vec<(String, &str, &[&str])> = vec![
        (GOOD.replace("state_dir = \"/tmp/x\"", "state_dir = \"/tmp/x\"\nstat_dir = 3"), "FILE:4:1:", &["unknown field `stat_dir`", "Remove it"]),
        (GOOD.replace("interval_ms = 1000", "interval_ms = \"fast\""), "FILE:9:15:", &["invalid type", "quoting"]),
        (GOOD.replace("kind = \"heart_rate_strap\"", "kind = \"heartrate\""), "FILE:7:8:", &["unknown variant `heartrate`", "heart_rate_strap"]),
        (GOOD.replace("id = \"gw-1\"\n", ""), "FILE:1:1:", &["missing field `id`", "Add it"]),
        (GOOD.replace("[gateway]", "[outbox]\nmax_bytes = \"12 parsecs\"\n[gateway]"), "FILE:2:13:", &["unknown size unit", "MiB"]),
        (GOOD.replace("[gateway]", "[outbox]\nmax_age = \"soon\"\n[gateway]"), "FILE:2:11:", &["not a duration", "7d"]),
        (GOOD.replace("[gateway]", "[outbox]\nflush_interval_ms = 60000\n[gateway]"), "FILE:2:1:", &["flush_interval_ms", "0 to 10000"]),
        (GOOD.replace("[gateway]", "[outbox]\nwhen_full = \"panic\"\n[gateway]"), "FILE:2:13:", &["unknown variant `panic`", "drop_oldest"]),
        (GOOD.replace("id = \"gw-1\"", "id = \"gw 1\""), "FILE:2:1:", &["printable ASCII"]),
        (format!("{GOOD}\n[[device]]\nid = \"strap\"\nkind = \"pulse_oximeter\"\n[device.simulated]\n"), "FILE:15:1:", &["used twice"]),
        (GOOD.replace("[device.simulated]\ninterval_ms = 1000\n", ""), "FILE:5:1:", &["exactly one adapter table"]),
        (
            GOOD.replace("[device.simulated]\ninterval_ms = 1000", "[device.ble]\nname_pattern = \"H10*\"\naddress = \"AA:BB:CC:DD:EE:FF\""),
            "FILE:8:9:",
            &["exactly one of `address`"],
        ),
        // [device.serial]: the driver must exist and read this kind of device;
        // line settings, timers and init/poll bytes are checked.
        (serial("driver = \"ivy\""), "FILE:10:1:", &["ivy", "no such profile", "masimo-ascii1", "hl7"]),
        (serial("driver = \"masimo-ascii1\"").replace("pulse_oximeter", "heart_rate_strap"), "FILE:10:1:", &["set kind = \"pulse_oximeter\""]),
        (serial("driver = \"nonin-df7\"\ninit = \"02 7\""), "FILE:11:1:", &["init", "`7` is not hex", "02 70 02 02 07 03"]),
        (serial("driver = \"nonin-ascii\"\nquiet_timeout = \"50ms\""), "FILE:11:1:", &["quiet_timeout must be 200ms to 10min", "default 5s"]),
        (serial("driver = \"nonin-ascii\"\nparity = \"mark\""), "FILE:11:10:", &["unknown variant `mark`", "even"]),
        (serial("driver = \"nonin-ascii\"\nstop_bits = 3"), "FILE:11:1:", &["stop_bits must be 1 or 2"]),
        (serial("driver = \"nonin-ascii\"\ncode_map = \"/x.toml\""), "FILE:11:1:", &["code_map is for the hl7 driver only"]),
        (
            serial("driver = \"hl7\"\ncode_map = \"/nonexistent/codes.toml\"").replace("pulse_oximeter", "bedside_monitor"),
            "FILE:11:1:",
            &["cannot read the code map"],
        ),
        // [device.hl7_tcp]: an HL7 feed over TCP.
        (hl7_tcp("listen = \"2575\"", "bedside_monitor"), "FILE:9:1:", &["not an address and port", "0.0.0.0:2575"]),
        (hl7_tcp("listen = \"0.0.0.0:2575\"", "pulse_oximeter"), "FILE:7:1:", &["[device.hl7_tcp] device is a bedside_monitor"]),
        (hl7_tcp("listen = \"0.0.0.0:2575\"\nack_timeout = \"1h\"", "bedside_monitor"), "FILE:10:1:", &["ack_timeout must be 1s to 10min"]),
        // HL7 patient rules and serial ACKs: options of the hl7 driver only,
        // a known mode, no fixed patient with patients from PID-3, no id a bed could take.
        (serial("driver = \"nonin-ascii\"\nack = false"), "FILE:11:1:", &["ack is for the hl7 driver only"]),
        (serial("driver = \"nonin-ascii\"\npatient_from = \"pid\""), "FILE:11:1:", &["patient_from is for the hl7 driver only"]),
        (hl7_tcp("listen = \"0.0.0.0:2575\"\npatient_from = \"bed\"", "bedside_monitor"), "FILE:10:16:", &["unknown variant `bed`", "pid"]),
        (
            hl7_tcp("listen = \"0.0.0.0:2575\"\npatient_from = \"pid\"", "bedside_monitor")
                .replace("kind = \"bedside_monitor\"", "kind = \"bedside_monitor\"\npatient_id = \"P-1\""),
            "FILE:8:1:",
            &["patient_id is not used when patients come from the messages' PID-3"],
        ),
        (
            format!(
                "{}\n[[device]]\nid = \"strap/4\"\nkind = \"pulse_oximeter\"\n[device.simulated]\n",
                hl7_tcp("listen = \"0.0.0.0:2575\"\npatient_from = \"pid\"", "bedside_monitor")
            ),
            "FILE:6:1:",
            &["names its beds \"strap/<bed>\"", "strap/4"],
        ),
        (
            GOOD.replace("[sink.file]\npath = \"/tmp/x/out.ndjson\"", "[sink.stdout]\n[sink.file]\npath = \"/x\""),
            "FILE:11:2:",
            &["exactly one destination"],
        ),
        (
            GOOD.replace("[sink.file]\npath = \"/tmp/x/out.ndjson\"", "[sink.iothub]\nconnection_string = { file = \"/a\", env = \"B\" }"),
            "FILE:12:1:",
            &["exactly one of `file`, `env` or `value`"],
        ),
        (GOOD.replace("[gateway]", "[gateway\n"), "FILE:1:9:", &["unclosed table", "expected `]`"]),
        (
            GOOD.replace("[device.simulated]\ninterval_ms = 1000", "[device.simulated]\ninterval_ms = 1000\ndropout_probability = 1.5"),
            "FILE:10:1:",
            &["between 0 and 1"],
        ),
    ];
    for (text, prefix, words) in cases {
        let (code, err) = check(&text);
        assert_eq!(code, 2, "exit code for:\n{text}\n{err}");
        assert!(err.starts_with(prefix), "expected {prefix} for:\n{text}\ngot: {err}");
        for w in words {
            assert!(err.contains(w), "expected {w:?} in: {err}");
        }
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    }
}

/// GOOD with its device read over a serial port: `[device.serial]` on line
/// 8, `port` on 9, `rest` from line 10.
fn serial(rest: &str) -> String {
    GOOD.replace("kind = \"heart_rate_strap\"", "kind = \"pulse_oximeter\"")
        .replace("[device.simulated]\ninterval_ms = 1000", &format!("[device.serial]\nport = \"/dev/ttyUSB0\"\n{rest}"))
}

/// GOOD with its device an HL7 TCP listener: `[device.hl7_tcp]` on line 8.
fn hl7_tcp(rest: &str, kind: &str) -> String {
    GOOD.replace("kind = \"heart_rate_strap\"", &format!("kind = \"{kind}\""))
        .replace("[device.simulated]\ninterval_ms = 1000", &format!("[device.hl7_tcp]\n{rest}"))
}

#[test]
fn a_serial_device_passes() {
    let (code, err) = check(&serial("driver = \"masimo-ascii1\"\nbaud = 19200\ninit = \"0d 0a\"\npoll = \"05\"\npoll_interval = \"2s\""));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn missing_file_is_a_sentence_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["check-config", "/nonexistent/iomt.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the config file"), "{err}");
}

/// One input of the table below: a config (with `{D}` for a scratch folder),
/// what to prepare in that folder, the text on the line the error must name,
/// and words the message must contain.
struct Refusal {
    name: &'static str,
    prepare: fn(&std::path::Path),
    text: String,
    at: &'static str,
    words: &'static [&'static str],
    /// Run both commands as an unprivileged user (when the tests run as root).
    unprivileged: bool,
}

fn refusal(name: &'static str, text: String, at: &'static str, words: &'static [&'static str]) -> Refusal {
    Refusal { name, prepare: |_| {}, text, at, words, unprivileged: false }
}

/// A state folder anybody can write, for the cases run as an unprivileged user.
fn writable_state(d: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(d.join("state")).unwrap();
    std::fs::set_permissions(d.join("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
}

const IOTHUB_GOOD: &str = "connection_string = { value = \"HostName=hub.azure-devices.net;DeviceId=d;SharedAccessKey=a2V5\" }";

fn with_sink(sink: &str) -> String {
    GOOD.replace("[sink.file]\npath = \"/tmp/x/out.ndjson\"", sink).replace("/tmp/x", "{D}/state")
}

fn refusals() -> Vec<Refusal> {
    let good = GOOD.replace("/tmp/x", "{D}/state");
    vec![
        Refusal {
            prepare: |d| std::fs::write(d.join("statefile"), "").unwrap(),
            ..refusal("state_dir is a file", good.replace("{D}/state\"", "{D}/statefile\""), "state_dir =", &["is a file, not a folder"])
        },
        Refusal {
            prepare: |d| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir(d.join("ro")).unwrap();
                std::fs::set_permissions(d.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
            },
            unprivileged: true,
            ..refusal(
                "state_dir not writable by the service user",
                good.replace("{D}/state\"", "{D}/ro\""),
                "state_dir =",
                &["not writable by user", "chown -R"],
            )
        },
        Refusal {
            prepare: |d| std::fs::write(d.join("state"), "").unwrap(),
            ..refusal(
                "state_dir's parent is a file",
                good.replace("{D}/state\"", "{D}/state/sub\""),
                "state_dir =",
                &["cannot be created", "is a file"],
            )
        },
        Refusal {
            prepare: |d| {
                std::fs::create_dir(d.join("state")).unwrap();
                std::fs::write(d.join("state/outbox"), "").unwrap();
            },
            ..refusal("the outbox folder is a file", good.clone(), "state_dir =", &["outbox folder", "is a file"])
        },
        refusal("state_dir empty", good.replace("\"{D}/state\"", "\"\""), "state_dir =", &["state_dir must not be empty"]),
        // systemd runs the service with the working directory /: a relative
        // state_dir is another outbox for `run` by hand than for the service.
        refusal("state_dir relative", good.replace("\"{D}/state\"", "\"var/lib/iomt-edge\""), "state_dir =", &["relative path", "full path"]),
        refusal("state_dir starting with a dot", good.replace("\"{D}/state\"", "\"./state\""), "state_dir =", &["relative path"]),
        refusal(
            "state_dir padded with a space",
            good.replace("\"{D}/state\"", "\" {D}/state\""),
            "state_dir =",
            &["starts or ends with a space", "remove it"],
        ),
        refusal("state_dir ending with a tab", good.replace("\"{D}/state\"", "\"{D}/state\\t\""), "state_dir =", &["starts or ends with a space"]),
        refusal(
            "a device id longer than an IoT Hub device id",
            good.replace("id = \"strap\"", &format!("id = \"{}\"", "s".repeat(129))),
            "id = \"sss",
            &["129 bytes long", "at most 128"],
        ),
        refusal(
            "secret file missing",
            with_sink("[sink.iothub]\nconnection_string = { file = \"{D}/missing.secret\" }"),
            "connection_string =",
            &["cannot read the IoT Hub connection string file", "missing.secret", "No such file"],
        ),
        Refusal {
            prepare: |d| std::fs::write(d.join("empty.secret"), "\n").unwrap(),
            ..refusal(
                "secret file empty",
                with_sink("[sink.iothub]\nconnection_string = { file = \"{D}/empty.secret\" }"),
                "connection_string =",
                &["empty.secret is empty"],
            )
        },
        Refusal {
            prepare: |d| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(d.join("locked.secret"), "HostName=h;DeviceId=d;SharedAccessKey=a2V5").unwrap();
                std::fs::set_permissions(d.join("locked.secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
                writable_state(d);
            },
            unprivileged: true,
            ..refusal(
                "secret file not readable by the service user",
                with_sink("[sink.iothub]\nconnection_string = { file = \"{D}/locked.secret\" }"),
                "connection_string =",
                &["cannot read the IoT Hub connection string file", "Permission denied", "must be readable by user", "chown"],
            )
        },
        Refusal {
            prepare: |d| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(d.join("out.ndjson"), "").unwrap();
                std::fs::set_permissions(d.join("out.ndjson"), std::fs::Permissions::from_mode(0o444)).unwrap();
                writable_state(d);
            },
            unprivileged: true,
            ..refusal(
                "sink file not writable by the service user",
                with_sink("[sink.file]\npath = \"{D}/out.ndjson\""),
                "path =",
                &["the sink file", "not writable by user", "chown"],
            )
        },
        refusal(
            "environment variable unset",
            with_sink("[sink.iothub]\nconnection_string = { env = \"IOMT_EDGE_TEST_SURELY_UNSET\" }"),
            "connection_string =",
            &["environment variable IOMT_EDGE_TEST_SURELY_UNSET", "not set"],
        ),
        refusal(
            "bad connection string",
            with_sink("[sink.iothub]\nconnection_string = { value = \"HostName=hub.azure-devices.net;SharedAccessKey=a2V5\" }"),
            "connection_string =",
            &["malformed", "DeviceId"],
        ),
        refusal(
            "CA file missing",
            with_sink(&format!("[sink.iothub]\n{IOTHUB_GOOD}\nca_file = \"{{D}}/nope.pem\"")),
            "ca_file =",
            &["cannot read certificate file", "nope.pem"],
        ),
        refusal(
            "proxy credentials without a colon",
            with_sink(&format!(
                "[sink.iothub]\n{IOTHUB_GOOD}\ntransport = \"websocket\"\nproxy = \"p:3128\"\nproxy_credentials = {{ value = \"nurse\" }}"
            )),
            "proxy_credentials =",
            &["user:password"],
        ),
        refusal(
            "sink path ending in a slash, nothing there yet",
            with_sink("[sink.file]\npath = \"{D}/new/\""),
            "path =",
            &["ends with a slash", "path of a file", "new/delivered.ndjson"],
        ),
        refusal("sink file on /proc", with_sink("[sink.file]\npath = \"/proc/version\""), "path =", &["kernel's proc filesystem"]),
        refusal(
            "state_dir on /proc, not there yet",
            good.replace("\"{D}/state\"", "\"/proc/iomt-edge-test\""),
            "state_dir =",
            &["kernel's proc filesystem"],
        ),
        refusal("state_dir on /sys", good.replace("\"{D}/state\"", "\"/sys/kernel\""), "state_dir =", &["kernel's sysfs filesystem"]),
        Refusal {
            prepare: |d| std::fs::create_dir_all(d.join("sinkdir")).unwrap(),
            ..refusal("sink path is a folder", with_sink("[sink.file]\npath = \"{D}/sinkdir\""), "path =", &["is a folder", "path of a file"])
        },
        refusal(
            "retry_initial_ms = i64::MAX",
            good.replace("[gateway]", "[forwarder]\nretry_initial_ms = 9223372036854775807\nretry_max_ms = 9223372036854775807\n[gateway]"),
            "retry_initial_ms =",
            &["retry_initial_ms must be 1 to 3600000 ms"],
        ),
        refusal(
            "auth_retry_ms = 0",
            good.replace("[gateway]", "[forwarder]\nauth_retry_ms = 0\n[gateway]"),
            "auth_retry_ms =",
            &["auth_retry_ms must be 1000 to 86400000 ms"],
        ),
        refusal(
            "ack_timeout = 0s",
            with_sink(&format!("[sink.iothub]\n{IOTHUB_GOOD}\nack_timeout = \"0s\"")),
            "ack_timeout =",
            &["ack_timeout must be 500ms to 10min"],
        ),
        refusal(
            "max_age that wrapped to 384 ms",
            good.replace("[gateway]", "[outbox]\nmax_age = 18446744073709552\n[gateway]"),
            "max_age =",
            &["max_age must be 1min to 3650d"],
        ),
        refusal(
            "a control character in a device id",
            good.replace("id = \"strap\"", "id = \"strap\\u001b[2J\""),
            "id = \"strap",
            &["control characters"],
        ),
        refusal(
            "a newline in a patient id",
            good.replace("kind = \"heart_rate_strap\"", "kind = \"heart_rate_strap\"\npatient_id = \"MRN\\n1\""),
            "patient_id =",
            &["control characters"],
        ),
        refusal(
            "a BLE address that is not one",
            good.replace("[device.simulated]\ninterval_ms = 1000", "[device.ble]\naddress = \"AA:BB:CC:DD:EE\""),
            "address =",
            &["six two-digit hex numbers", "AA:BB:CC:DD:EE:FF"],
        ),
        refusal(
            "a BLE bedside monitor",
            good.replace(
                "kind = \"heart_rate_strap\"\n[device.simulated]\ninterval_ms = 1000",
                "kind = \"bedside_monitor\"\n[device.ble]\nname_pattern = \"X*\"",
            ),
            "kind =",
            &["heart_rate_strap or a pulse_oximeter"],
        ),
        refusal(
            "a BLE silence timeout run refused at start",
            good.replace("[device.simulated]\ninterval_ms = 1000", "[device.ble]\nname_pattern = \"X*\"\nsilence_timeout = \"100ms\""),
            "silence_timeout =",
            &["silence_timeout must be 200ms to 10min"],
        ),
    ]
}

/// A copy of the binary in a folder every user may enter (made once).
fn unprivileged_copy() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iomt-edge-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("iomt-edge");
        std::fs::copy(env!("CARGO_BIN_EXE_iomt-edge"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    })
    .clone()
}

/// Runs `iomt-edge ARGS` (as nobody when asked and running as root), killing
/// it after `limit`; `None` when it was still running then.
fn run_cli(args: &[&std::ffi::OsStr], unprivileged: bool, limit: std::time::Duration) -> Option<(i32, String)> {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    let drop_privileges = unprivileged && unsafe { libc::geteuid() } == 0;
    // The build folder may sit under a folder only root can enter (a clone in
    // a `mktemp -d` folder): run a copy that the unprivileged user can reach.
    let exe = if drop_privileges { unprivileged_copy() } else { std::path::PathBuf::from(env!("CARGO_BIN_EXE_iomt-edge")) };
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    if drop_privileges {
        cmd.uid(65534).gid(65534);
    }
    // While the copy is written, another test thread's fork may briefly hold
    // its write handle (until that child's exec closes it): exec then fails
    // with "Text file busy" for a moment. Retry, as Go's os/exec does.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return Some((status.code().unwrap_or(-1), err));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whatever `run` refuses at start, `check-config` refuses too, with the same
/// sentence naming file, line and column, and exit 2 (they share one check).
#[test]
fn check_config_refuses_what_run_refuses() {
    use std::os::unix::fs::PermissionsExt;
    for case in refusals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        (case.prepare)(dir.path());
        let text = case.text.replace("{D}", &dir.path().display().to_string());
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let line = text.lines().position(|l| l.starts_with(case.at)).unwrap_or_else(|| panic!("{}: no line {:?}", case.name, case.at)) + 1;
        let prefix = format!("{}:{line}:1: ", path.display());

        let run = run_cli(&["run".as_ref(), "--config".as_ref(), path.as_os_str()], case.unprivileged, std::time::Duration::from_secs(20));
        let (run_code, run_err) = run.unwrap_or_else(|| panic!("{}: `run` started with this config:\n{text}", case.name));
        let (code, err) = run_cli(&["check-config".as_ref(), path.as_os_str()], case.unprivileged, std::time::Duration::from_secs(20)).unwrap();
        assert_eq!(code, 2, "{}: check-config must refuse what run refuses (run said: {run_err})\n{text}\ncheck-config said: {err}", case.name);
        // The error is the last line (a warning about a secret file's mode may come first).
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with(&prefix), "{}: expected {prefix}... got: {err}", case.name);
        for w in case.words {
            assert!(err.contains(w), "{}: expected {w:?} in: {err}", case.name);
        }
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(run_code, 2, "{}: run refuses a bad config with exit 2: {run_err}", case.name);
        assert!(run_err.contains(last), "{}: run and check-config say the same:\nrun: {run_err}\ncheck-config: {err}", case.name);
        assert!(!dir.path().join("state/outbox").is_dir(), "{}: a refused start created an outbox", case.name);
    }
}

#[test]
fn syntax_only_skips_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, with_sink("[sink.iothub]\nconnection_string = { env = \"IOMT_EDGE_TEST_SURELY_UNSET\" }").replace("{D}", "/tmp/x"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).arg("check-config").arg("--syntax-only").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Unmounts a bind mount when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A state folder on a read-only file system (a read-only bind mount, which
/// needs root; elsewhere SKIPPED, a failure under `IOMT_REQUIRE_ALL=1`).
#[test]
fn a_read_only_state_folder_is_refused_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("ro"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["--bind", "-o", "ro"]).arg(&src).arg(&mnt).status().is_ok_and(|s| s.success());
    if !mounted {
        crate::support::skip(&crate::support::this_test(), "cannot make a read-only bind mount here (needs root)");
        return;
    }
    let _unmount = Unmount(mnt.clone());
    // Some kernels ignore `ro` on the first bind; remount to be sure.
    let _ = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&mnt).status();
    if std::fs::write(mnt.join("probe"), "").is_ok() {
        crate::support::skip(&crate::support::this_test(), "a read-only bind mount stays writable on this kernel");
        return;
    }
    for state in [mnt.clone(), mnt.join("sub")] {
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, GOOD.replace("state_dir = \"/tmp/x\"", &format!("state_dir = \"{}\"", state.display()))).unwrap();
        for cmd in ["check-config", "run"] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_iomt-edge"));
            if cmd == "run" {
                c.arg("run").arg("--config").arg(&path);
            } else {
                c.arg("check-config").arg(&path);
            }
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {}: {err}", state.display());
            assert!(err.starts_with(&format!("{}:3:1: ", path.display())) && err.contains("read-only file system"), "{cmd}: {err}");
        }
    }
}

/// A state folder on a filesystem too small for any outbox (a 768 KiB tmpfs,
/// below the 1.0 MiB an outbox with small sled segments needs; root; elsewhere SKIPPED): before, both
/// accepted it with the outbox "bounded to 0 B", and the gateway dropped every
/// reading as soon as the next one was committed, with the destination up.
#[test]
fn a_state_filesystem_too_small_for_an_outbox_is_refused_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tiny) = tmpfs::mount_or_skip(&crate::support::this_test(), &dir.path().join("tiny"), "768k") else { return };
    let mnt = tiny.path();
    let path = dir.path().join("gw.toml");
    let state = mnt.join("state");
    std::fs::write(&path, GOOD.replace("/tmp/x", &state.display().to_string())).unwrap();
    for cmd in ["check-config", "run"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iomt-edge"));
        if cmd == "run" {
            c.arg("run").arg("--config").arg(&path);
        } else {
            c.arg("check-config").arg(&path);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.starts_with(&format!("{}:3:1: ", path.display())) && err.contains("too small for an outbox") && err.contains("at least 1.0 MiB"),
            "{cmd}: {err}"
        );
    }
    assert!(!state.join("outbox").exists(), "a refused start created an outbox");
}

/// A config path that names a FIFO, a folder or a device: refused at once
/// (exit 2, saying what it is) by every command that reads a config. Before,
/// a FIFO made `check-config`, `run` (and the unit's `ExecStartPre=`) and
/// `status --config` wait for a writer for good.
#[test]
fn a_config_that_is_a_fifo_a_folder_or_a_device_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gw.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    for (path, what) in [(fifo.as_path(), "FIFO"), (dir.path(), "folder"), (Path::new("/dev/zero"), "device")] {
        for args in [&["check-config"][..], &["run", "--config"], &["status", "--config"]] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
                .args(args)
                .arg(path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{args:?} {} waited instead of refusing it", path.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {}: {err}", path.display());
            assert!(err.contains(what) && err.contains(&path.display().to_string()), "{args:?}: {err}");
        }
    }
}
