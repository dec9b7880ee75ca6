//! The build and measurement scripts that the suite does not run (a cross
//! build or a fuzz campaign takes far longer than CI allows): they must at
//! least parse, print their usage, and refuse an unknown argument without
//! installing or building anything. `scripts/build-pi.sh` is also called by
//! the Debian packaging, so its documented interface is checked here.

use std::path::PathBuf;
use std::process::Command;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

fn bash(args: &[&str]) -> std::process::Output {
    Command::new("bash").args(args).output().expect("bash runs")
}

#[test]
fn scripts_parse_and_print_their_usage() {
    for (name, usage) in [
        ("build-pi.sh", "Usage: scripts/build-pi.sh [aarch64|armv7|all]"),
        ("fuzz.sh", "Usage: scripts/fuzz.sh [--execs N]"),
        ("serial-cpu.sh", "Usage: scripts/serial-cpu.sh"),
        ("measure-per-1000.sh", "Usage: scripts/measure-per-1000.sh BINARY"),
    ] {
        let path = script(name);
        let path = path.to_str().expect("utf-8 path");
        let syntax = bash(&["-n", path]);
        assert!(syntax.status.success(), "{name}: {}", String::from_utf8_lossy(&syntax.stderr));
        let help = bash(&[path, "--help"]);
        assert!(help.status.success(), "{name} --help failed");
        let text = format!("{}{}", String::from_utf8_lossy(&help.stdout), String::from_utf8_lossy(&help.stderr));
        assert!(text.contains(usage), "{name} --help: {text}");
        assert!(!text.contains("set -euo"), "{name} --help prints code: {text}");
    }
}

#[test]
fn build_pi_documents_its_output_and_refuses_unknown_targets() {
    let path = script("build-pi.sh");
    let path = path.to_str().expect("utf-8 path");
    let help = bash(&[path, "--help"]);
    let text = String::from_utf8_lossy(&help.stderr);
    for needle in ["target/aarch64-unknown-linux-gnu/release/iomt-edge.stripped", "target/armv7-unknown-linux-gnueabihf/release/iomt-edge.stripped"] {
        assert!(text.contains(needle), "--help does not name {needle}: {text}");
    }
    let bad = bash(&[path, "riscv64"]);
    assert_eq!(bad.status.code(), Some(2), "an unknown target is a usage error");
    assert!(bad.stdout.is_empty(), "nothing on stdout, where the binaries' paths go");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown argument 'riscv64'"));
    let bad = bash(&[script("fuzz.sh").to_str().expect("utf-8 path"), "no_such_target"]);
    assert_eq!(bad.status.code(), Some(2));
}
