//! `[gateway] id = { from = "hostname" | "machine-id" }` through the real
//! `iomt-edge check-config`: the id it derives on this machine, cross-checked
//! with the machine's own tools (gethostname through `hostname`, and
//! `systemd-id128 machine-id --app-specific=`), and the errors of a wrong table.

use std::process::Command;

fn config(id: &str, sink: &str) -> String {
    format!("[gateway]\nid = {id}\nstate_dir = \"/tmp/x\"\n\n[[device]]\nid = \"strap\"\nkind = \"heart_rate_strap\"\n[device.simulated]\n\n{sink}\n")
}

const FILE_SINK: &str = "[sink.file]\npath = \"/tmp/x/out.ndjson\"";

/// (exit code, stdout, stderr with the file's path replaced by FILE)
fn check_syntax(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["check-config", "--syntax-only"]).arg(&path).output().unwrap();
    let p = path.display().to_string();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&p, "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(&p, "FILE"),
    )
}

fn host_name() -> String {
    let out = Command::new("hostname").output().expect("the hostname command (package hostname) is part of every Debian");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn id_from_hostname_is_this_machines_short_name_in_lowercase() {
    let host = host_name();
    let expected = host.split('.').next().unwrap().to_ascii_lowercase();
    let (code, out, err) = check_syntax(&config("{ from = \"hostname\", prefix = \"icu-\" }", FILE_SINK));
    if ["localhost", "raspberrypi"].contains(&expected.as_str()) {
        // A machine with the image's default name is refused (the unit test covers the wording).
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.starts_with("FILE:2:6:") && err.contains("hostnamectl"), "{err}");
        return;
    }
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("gateway icu-{expected} ")), "expected gateway icu-{expected} in:\n{out}");
}

#[test]
fn id_from_machine_id_matches_systemd_id128_app_specific() {
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let (code, out, err) = check_syntax(&config("{ from = \"machine-id\" }", FILE_SINK));
    if machine_id.trim().len() != 32 {
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("systemd-machine-id-setup"), "{err}");
        return;
    }
    assert_eq!(code, 0, "{err}");
    let tool = Command::new("systemd-id128").args(["machine-id", "--app-specific=f8a9a8a570154526919296a492ea801f"]).output();
    match tool {
        Ok(t) if t.status.success() => {
            let expected = String::from_utf8_lossy(&t.stdout).trim().to_string();
            assert_eq!(expected.len(), 32, "systemd-id128 printed {expected:?}");
            assert!(out.contains(&format!("gateway {expected} ")), "expected gateway {expected} in:\n{out}");
            assert!(!out.contains(machine_id.trim()), "the machine id itself must not be the gateway id:\n{out}");
        }
        _ => {
            crate::support::skip(&crate::support::this_test(), "systemd-id128 is not installed (apt-get install systemd)");
        }
    }
}

#[test]
fn a_wrong_id_table_names_the_line_and_what_to_write() {
    for (id, words) in [
        ("{ from = \"serial-number\" }", &["cannot come from \"serial-number\"", "from = \"hostname\""][..]),
        ("{ prefix = \"icu-\" }", &["needs `from`"][..]),
        ("{ from = \"hostname\", suffix = \"x\" }", &["unknown key `suffix`"][..]),
        ("42", &["a gateway id such as"][..]),
    ] {
        let (code, out, err) = check_syntax(&config(id, FILE_SINK));
        assert_eq!(code, 2, "{id}: {out}{err}");
        assert!(err.starts_with("FILE:2:"), "{id}: the error must name line 2:\n{err}");
        for w in words {
            assert!(err.contains(w), "{id}: expected {w:?} in:\n{err}");
        }
    }
}

#[test]
fn dps_registration_id_left_out_is_the_gateway_id() {
    // A group enrollment with no registration_id: valid, one config for every gateway.
    let sink = "[sink.iothub.dps]\nid_scope = \"0ne00000000\"\ngroup_key = { env = \"IOMT_TEST_GROUP_KEY\" }";
    let (code, _, err) = check_syntax(&config("\"ward3-bed12\"", sink));
    assert_eq!(code, 0, "{err}");
    // ... and the derived one must then make a valid registration id.
    let (code, _, err) = check_syntax(&config("\"ward3_bed12\"", sink));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("left out, it is the gateway id"), "{err}");
}
