//! Issue 11 item 15: an error names what it is about (which secret, which
//! duplicate key, which folder given to `demo`/`bench`/`simulate`), says an OS
//! error once, and `status --config BROKEN` reports the config's own error
//! instead of looking for a status file somewhere else.

use std::process::Command;

struct Case {
    what: &'static str,
    args: Vec<String>,
    code: i32,
    /// Words stderr must contain.
    says: Vec<String>,
}

fn run(args: &[String]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(args).env("NO_COLOR", "1").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn errors_name_the_thing_and_say_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    let write = |name: &str, text: &str| {
        std::fs::write(d.join(name), text).unwrap();
        p(name)
    };
    // A plain file where a folder is expected: every folder below it fails.
    let file = write("a-file", "");
    let under_file = format!("{file}/sub");
    let state = p("state");
    let missing_secret = p("no-such-connection-string");
    let hub_missing_file = write(
        "hub-missing.toml",
        &format!("[gateway]\nid = \"gw\"\nstate_dir = \"{state}\"\n[sink.iothub]\nconnection_string = {{ file = \"{missing_secret}\" }}\n"),
    );
    let hub_unset_env = write(
        "hub-env.toml",
        &format!("[gateway]\nid = \"gw\"\nstate_dir = \"{state}\"\n[sink.iothub]\nconnection_string = {{ env = \"IOMT_TEST_SURELY_UNSET_CS\" }}\n"),
    );
    let empty_secret = write("empty-cs", "\n");
    let hub_empty = write(
        "hub-empty.toml",
        &format!("[gateway]\nid = \"gw\"\nstate_dir = \"{state}\"\n[sink.iothub]\nconnection_string = {{ file = \"{empty_secret}\" }}\n"),
    );
    let dup_key = write("dup-key.toml", "[gateway]\nid = \"a\"\nid = \"b\"\n[sink.stdout]\n");
    let dup_table = write("dup-table.toml", "[gateway]\nid = \"a\"\n[gateway]\nstate_dir = \"/x\"\n[sink.stdout]\n");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    // `run` refuses what `check-config` refuses, before it starts anything,
    // with the config's exit code (2).
    let cases = vec![
        Case {
            what: "a secret file that does not exist",
            args: s(&["run", "--config", &hub_missing_file]),
            code: 2,
            says: s(&["sink.iothub.connection_string", &missing_secret, "No such file or directory"]),
        },
        Case {
            what: "a secret variable that is not set",
            args: s(&["run", "--config", &hub_unset_env]),
            code: 2,
            says: s(&["sink.iothub.connection_string", "IOMT_TEST_SURELY_UNSET_CS"]),
        },
        Case {
            what: "an empty secret file",
            args: s(&["run", "--config", &hub_empty]),
            code: 2,
            says: s(&["sink.iothub.connection_string", "empty", &empty_secret]),
        },
        Case { what: "a key given twice", args: s(&["check-config", &dup_key]), code: 2, says: s(&[":3:1:", "duplicate key `id`"]) },
        Case { what: "a table given twice", args: s(&["check-config", &dup_table]), code: 2, says: s(&[":3:2:", "[gateway]", "twice"]) },
        Case {
            what: "status with a broken config",
            args: s(&["status", "--config", &dup_key]),
            code: 2,
            says: s(&[&format!("{dup_key}:3:1:"), "duplicate key `id`"]),
        },
        Case {
            what: "status with a config that is not there",
            args: s(&["status", "--config", &p("typo.toml")]),
            code: 2,
            says: s(&[&p("typo.toml"), "cannot read the config file", "No such file or directory"]),
        },
        Case {
            what: "demo in a folder that cannot be made",
            args: s(&["demo", "--in-process", "--duration", "1s", "--dir", &under_file]),
            code: 1,
            says: s(&[&under_file, "--dir", "Not a directory"]),
        },
        Case {
            what: "bench in a folder that cannot be made",
            args: s(&["bench", "--quick", "--dir", &under_file]),
            code: 1,
            says: s(&[&under_file, "--dir", "Not a directory"]),
        },
        Case {
            what: "the emulator's CA folder that cannot be made",
            args: s(&["simulate", "iothub", "--port", "0", "--dir", &under_file]),
            code: 1,
            says: s(&[&under_file, "--dir", "Not a directory"]),
        },
        Case {
            what: "an outbox folder that is a file",
            args: s(&["outbox", "stats", "--state-dir", d.to_str().unwrap()]),
            // Inspection finds no outbox there (nothing is created): bad usage.
            code: 2,
            says: s(&[d.to_str().unwrap(), "no `outbox` folder"]),
        },
    ];
    // The outbox case above: a state folder whose `outbox` is a plain file.
    std::fs::write(d.join("outbox"), "").unwrap();
    let mut failed = Vec::new();
    for c in &cases {
        let (code, err) = run(&c.args);
        let missing: Vec<&String> = c.says.iter().filter(|w| !err.contains(w.as_str())).collect();
        let os_errors = err.matches("(os error").count();
        if code != c.code || !missing.is_empty() || os_errors > 1 || err.contains("panicked") {
            failed.push(format!("{}: exit {code} (want {}), missing {missing:?}, {os_errors} OS errors:\n{err}", c.what, c.code));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n---\n"));
}
