//! Bad config files, each with the exact line and column the error must name,
//! through the real `iomt-edge check-config` command.

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
    for f in ["config/iomt-edge.toml", "config/demo.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["check-config", f]).output().unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
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
        (GOOD.replace("[device.simulated]\ninterval_ms = 1000", "[device.ble]\nname_pattern = \"H10*\"\naddress = \"AA:BB:CC:DD:EE:FF\""), "FILE:8:9:", &["exactly one of `address`"]),
        (GOOD.replace("[device.simulated]\ninterval_ms = 1000", "[device.serial]\nport = \"/dev/ttyUSB0\"\nprotocol = \"ivy\""), "FILE:8:9:", &["serial adapter is planned", "[device.ble]"]),
        (GOOD.replace("[sink.file]\npath = \"/tmp/x/out.ndjson\"", "[sink.stdout]\n[sink.file]\npath = \"/x\""), "FILE:11:2:", &["exactly one destination"]),
        (GOOD.replace("[sink.file]\npath = \"/tmp/x/out.ndjson\"", "[sink.iothub]\nconnection_string = { file = \"/a\", env = \"B\" }"), "FILE:12:1:", &["exactly one of `file`, `env` or `value`"]),
        (GOOD.replace("[gateway]", "[gateway\n"), "FILE:1:9:", &["unclosed table", "expected `]`"]),
        (GOOD.replace("[device.simulated]\ninterval_ms = 1000", "[device.simulated]\ninterval_ms = 1000\ndropout_probability = 1.5"), "FILE:10:1:", &["between 0 and 1"]),
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

#[test]
fn missing_file_is_a_sentence_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["check-config", "/nonexistent/iomt.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the config file"), "{err}");
}
