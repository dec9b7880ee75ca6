//! `iomt-edge serial record` over a real pseudo-terminal (the bytes and their
//! timing land in the capture; `decode serial` reads it with each read's own
//! time; `simulate serial --capture` plays it back at the recorded timing),
//! and `iomt-edge scan serial` over a fake udev/sysfs tree (`--root`).

use iomt_edge::simulate::serial::{masimo_line, Pty, Vitals, MASIMO_EXC_SET};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
}

/// The chunks of a timed capture: (seconds since start, bytes).
fn chunks(text: &str) -> Vec<(f64, Vec<u8>)> {
    text.lines()
        .filter(|l| l.starts_with('+'))
        .map(|l| {
            let mut t = l.split_whitespace();
            let at: f64 = t.next().unwrap()[1..].parse().unwrap();
            (at, t.map(|h| u8::from_str_radix(h, 16).unwrap()).collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_captures_bytes_with_their_timing_and_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("bed12.cap");
    let mut pty = Pty::open().unwrap();
    let rec = bin()
        .args(["serial", "record", "--profile", "masimo-ascii1", "--duration", "4s", "--port", pty.path(), "--out"])
        .arg(&cap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The header is written once the port is open.
    let start = Instant::now();
    while !std::fs::read_to_string(&cap).is_ok_and(|t| t.starts_with("# iomt-edge serial capture v1\n# port ")) {
        assert!(start.elapsed() < Duration::from_secs(10), "record never opened the port");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clock = chrono::NaiveDate::from_ymd_opt(2016, 2, 22).unwrap().and_hms_opt(22, 47, 45).unwrap();
    let v = Vitals { spo2: Some(98), pulse: Some(97), pi: Some(3.6), ..Vitals::NONE };
    let line1 = masimo_line(clock, &v, MASIMO_EXC_SET);
    let line2 = masimo_line(clock + chrono::Duration::seconds(1), &Vitals { pulse: Some(96), ..v }, MASIMO_EXC_SET);
    let junk = [0x00u8, 0xff, 0x13];
    pty.send(line1.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pty.send(line2.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    pty.send(&junk).await;
    let out = rec.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("duration reached"), "{err}");
    assert!(err.contains("9600 8N1"), "the profile's line settings: {err}");

    let text = std::fs::read_to_string(&cap).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777, 0o600, "a capture may hold vital signs");
    let c = chunks(&text);
    let all: Vec<u8> = c.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut sent = line1.clone().into_bytes();
    sent.extend_from_slice(line2.as_bytes());
    sent.extend_from_slice(&junk);
    assert_eq!(all, sent, "every byte, in order: {text}");
    // The time of the read that holds byte `i` of what was sent.
    let time_of = |i: usize| {
        let mut end = 0;
        c.iter()
            .find(|(_, b)| {
                end += b.len();
                end > i
            })
            .unwrap()
            .0
    };
    let (t1, t2, t3) = (time_of(0), time_of(line1.len()), time_of(line1.len() + line2.len()));
    assert!((0.8..1.5).contains(&(t2 - t1)), "the second line about 1 s after the first: {text}");
    assert!((0.15..0.7).contains(&(t3 - t2)), "the junk about 0.3 s after the second line: {text}");

    // decode serial: each read at its own time (--arrival is the recording's start).
    let out = bin().args(["decode", "serial", "--profile", "masimo-ascii1", "--arrival", "2026-01-15T10:00:00Z"]).arg(&cap).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 2);
    let time = |r: &serde_json::Value| iomt_edge::model::time::parse(r["readings"][0]["time"].as_str().unwrap()).unwrap();
    let gap = (time(&recs[1]) - time(&recs[0])).num_milliseconds();
    assert!((800..1500).contains(&gap), "timed on their own arrival: {gap} ms");

    // simulate serial --capture: the same bytes at the recorded timing.
    let mut sim = bin()
        .args(["simulate", "serial", "--profile", "masimo-ascii1", "--capture"])
        .arg(&cap)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut path = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut path).unwrap();
    let path = path.trim().to_string();
    assert!(path.starts_with("/dev/pts/"), "{path}");
    use tokio::io::AsyncReadExt;
    use tokio_serial::SerialPortBuilderExt;
    let mut port = tokio_serial::new(&path, 9600).open_native_async().unwrap();
    let opened = Instant::now();
    let mut got: Vec<(Duration, u8)> = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < sent.len() && opened.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), port.read(&mut buf)).await {
            got.extend(buf[..n].iter().map(|b| (opened.elapsed(), *b)));
        }
    }
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(got.iter().map(|(_, b)| *b).collect::<Vec<u8>>(), sent, "the capture's bytes, in order");
    let at = |i: usize| got[i].0.as_secs_f64();
    let gap = at(line1.len()) - at(0);
    assert!((0.7..1.4).contains(&gap), "played at the recorded timing (second line {gap:.2} s after the first, recorded {:.2} s)", t2 - t1);
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A tree as udev and the kernel make it for an FTDI adapter (ttyUSB0, by-id
/// link) and a CDC-ACM device without a by-id link (ttyACM0), plus a
/// built-in UART (ttyS0, not listed).
fn fake_root(root: &Path) {
    use std::os::unix::fs::symlink;
    let usb = root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-1");
    for (f, v) in [("idVendor", "0403"), ("idProduct", "6001"), ("manufacturer", "FTDI"), ("product", "FT232R USB UART"), ("serial", "A10K1234")] {
        write(&usb.join(f), &format!("{v}\n"));
    }
    let port = usb.join("1-1:1.0/ttyUSB0");
    std::fs::create_dir_all(port.join("tty/ttyUSB0")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/tty")).unwrap();
    symlink("../../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0", root.join("sys/class/tty/ttyUSB0")).unwrap();
    symlink("../../../ttyUSB0", port.join("tty/ttyUSB0/device")).unwrap();
    let acm = root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-2");
    for (f, v) in [("idVendor", "1234"), ("idProduct", "5678"), ("product", "Monitor CDC")] {
        write(&acm.join(f), &format!("{v}\n"));
    }
    std::fs::create_dir_all(acm.join("1-2:1.0/tty/ttyACM0")).unwrap();
    symlink("../../devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/tty/ttyACM0", root.join("sys/class/tty/ttyACM0")).unwrap();
    symlink("../../../1-2:1.0", acm.join("1-2:1.0/tty/ttyACM0/device")).unwrap();
    std::fs::create_dir_all(root.join("sys/devices/platform/serial8250/tty/ttyS0")).unwrap();
    symlink("../../devices/platform/serial8250/tty/ttyS0", root.join("sys/class/tty/ttyS0")).unwrap();
    std::fs::create_dir_all(root.join("dev/serial/by-id")).unwrap();
    symlink("../../ttyUSB0", root.join("dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0")).unwrap();
}

#[test]
fn scan_serial_lists_usb_ports_with_by_id_names_and_config_blocks() {
    let dir = tempfile::tempdir().unwrap();
    fake_root(dir.path());
    let out = bin().args(["scan", "serial", "--root"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = text.lines().skip(1).take(2).collect();
    assert!(rows[0].starts_with("ttyACM0  1234:5678 Monitor CDC ") && rows[0].ends_with("- (no by-id link)"), "{text}");
    assert!(
        rows[1].starts_with("ttyUSB0  0403:6001 FTDI FT232R USB UART ")
            && rows[1].ends_with("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"),
        "{text}"
    );
    assert!(!text.contains("ttyS0"), "built-in UARTs are not listed: {text}");
    // The blocks are a valid device config of the gateway, the by-id name where there is one.
    let blocks = &text[text.find("\n# ttyACM0").unwrap()..];
    let parsed = iomt_edge::config::parse_str(&format!("[gateway]\nid = \"gw\"\n[sink.stdout]\n{blocks}"), std::path::Path::new("scan")).unwrap();
    let ports: Vec<String> = parsed
        .devices
        .iter()
        .map(|d| match &d.source {
            iomt_edge::config::DeviceSource::Serial(s) => s.port.display().to_string(),
            other => panic!("not a serial device: {other:?}"),
        })
        .collect();
    assert_eq!(ports, ["/dev/ttyACM0", "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"]);
    assert!(text.contains("# ttyUSB0 (adapter serial A10K1234)"), "{text}");

    let out = bin().args(["scan", "serial", "--json", "--root"]).arg(dir.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ports"][1]["vendorId"], "0403");
    assert_eq!(v["ports"][1]["byId"][0], "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0");
    assert_eq!(v["ports"][1]["serial"], "A10K1234");
    assert_eq!(v["ports"][0]["manufacturer"], serde_json::Value::Null);

    // Nothing plugged in: a plain hint, exit 0.
    let empty = tempfile::tempdir().unwrap();
    let out = bin().args(["scan", "serial", "--root"]).arg(empty.path()).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("No USB serial port found"));
}
