//! `iomt-edge scan ble`: which heart-rate straps and pulse oximeters are in
//! range, as BlueZ discovers them, with a `[[device]]` config block for each.
//!
//! The field engineer's first step when wiring a bed: find the strap's address
//! (or a name pattern) to put into the config. Scanning is filtered by the
//! Heart Rate (0x180D) and Pulse Oximeter (0x1822) services unless `--all`.
//! The listing is the command's output, so addresses are printed in clear;
//! nothing is logged.
//!
//! `iomt-edge scan serial`: the serial ports a monitor could be on, from what
//! udev and the kernel publish (no port is opened): the stable
//! `/dev/serial/by-id/` links udev makes for USB-serial adapters, and for
//! each USB tty (`ttyUSB*`, `ttyACM*`) the adapter's USB vendor and product
//! id, manufacturer, product and serial number from sysfs (the `idVendor`,
//! `idProduct`, `manufacturer`, `product`, `serial` attributes of the USB
//! device above `/sys/class/tty/NAME/device`), each with a `[[device]]`
//! block to paste.

use super::out::{errln, out, outln};
use crate::adapters::ble::gatt::{sig_uuid, sig_uuid16};
use btleplug::api::{Central, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::Manager;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long one BlueZ call may take before the scan gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) what: ScanCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum ScanCommand {
    /// Scan for BLE heart-rate straps and pulse oximeters (through BlueZ).
    #[command(after_help = "Examples:\n  iomt-edge scan ble\n  iomt-edge scan ble --duration 20s --json\n\n\
Put the device next to the Pi and wake it (straps advertise only while worn or moistened).\n\
Needs bluetoothd and a powered adapter (`bluetoothctl power on`); the service user must be allowed\n\
to use BlueZ on the system bus (the systemd unit is).")]
    Ble(BleArgs),
    /// List serial ports (USB-serial adapters) with config blocks to paste.
    #[command(after_help = "Examples:\n  iomt-edge scan serial\n  iomt-edge scan serial --json\n\n\
Plug the USB-serial adapter in first (`dmesg | tail` shows it). Use the /dev/serial/by-id/ name in the\n\
config: ttyUSB0 can become ttyUSB1 after a replug or a reboot, the by-id name does not.")]
    Serial(SerialArgs),
}

#[derive(clap::Args)]
pub(crate) struct SerialArgs {
    /// Print one JSON document instead of a table and config blocks.
    #[arg(long)]
    pub(crate) json: bool,
    /// Look under this directory instead of `/` (its dev/ and sys/ folders;
    /// for tests and for inspecting another system's tree).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub(crate) root: std::path::PathBuf,
}

/// One serial port found.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SerialPortFound {
    /// The kernel's name (`ttyUSB0`).
    pub(crate) tty: String,
    /// `/dev/ttyUSB0`.
    pub(crate) dev: String,
    /// The udev by-id links to it (`/dev/serial/by-id/usb-FTDI_...`).
    pub(crate) by_id: Vec<String>,
    /// USB vendor and product id, 4 hex digits each.
    pub(crate) vendor_id: Option<String>,
    pub(crate) product_id: Option<String>,
    pub(crate) manufacturer: Option<String>,
    pub(crate) product: Option<String>,
    pub(crate) serial: Option<String>,
}

/// Lists the serial ports under `root` (module docs); sorted by tty name.
pub(crate) fn scan_serial(root: &std::path::Path) -> Vec<SerialPortFound> {
    let mut ports: BTreeMap<String, SerialPortFound> = BTreeMap::new();
    // USB ttys the kernel knows.
    if let Ok(entries) = std::fs::read_dir(root.join("sys/class/tty")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ttyUSB") || name.starts_with("ttyACM") {
                ports.insert(name.clone(), SerialPortFound { tty: name.clone(), dev: format!("/dev/{name}"), ..Default::default() });
            }
        }
    }
    // udev's by-id links (which also name ports sysfs does not show here).
    if let Ok(entries) = std::fs::read_dir(root.join("dev/serial/by-id")) {
        let mut links: Vec<_> = entries.flatten().collect();
        links.sort_by_key(|e| e.file_name());
        for e in links {
            let Ok(target) = std::fs::read_link(e.path()) else { continue };
            let Some(tty) = target.file_name().map(|t| t.to_string_lossy().into_owned()) else { continue };
            let p =
                ports.entry(tty.clone()).or_insert_with(|| SerialPortFound { tty: tty.clone(), dev: format!("/dev/{tty}"), ..Default::default() });
            p.by_id.push(format!("/dev/serial/by-id/{}", e.file_name().to_string_lossy()));
        }
    }
    for p in ports.values_mut() {
        usb_attributes(root, p);
    }
    ports.into_values().collect()
}

/// Fills in the USB attributes of the device above `/sys/class/tty/NAME/device`.
fn usb_attributes(root: &std::path::Path, p: &mut SerialPortFound) {
    let Ok(mut dir) = std::fs::canonicalize(root.join("sys/class/tty").join(&p.tty).join("device")) else { return };
    let stop = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let read = |d: &std::path::Path, f: &str| std::fs::read_to_string(d.join(f)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    while dir.starts_with(&stop) && dir != stop {
        if let Some(v) = read(&dir, "idVendor") {
            p.vendor_id = Some(v);
            p.product_id = read(&dir, "idProduct");
            p.manufacturer = read(&dir, "manufacturer");
            p.product = read(&dir, "product");
            p.serial = read(&dir, "serial");
            return;
        }
        if !dir.pop() {
            return;
        }
    }
}

/// The table and a config block per port, as printed.
pub(crate) fn render_serial(found: &[SerialPortFound]) -> String {
    let mut out = String::new();
    if found.is_empty() {
        out.push_str(
            "No USB serial port found. Plug the USB-serial adapter in (`dmesg | tail` should show ttyUSB0 or ttyACM0)              and scan again. A built-in UART (the Pi's /dev/ttyAMA0 or /dev/serial0) is not listed: configure it by its path.
",
        );
        return out;
    }
    out.push_str(&format!(
        "{:<8} {:<9} {:<26} {}
",
        "TTY", "USB ID", "ADAPTER", "BY-ID NAME"
    ));
    for p in found {
        let id = match (&p.vendor_id, &p.product_id) {
            (Some(v), Some(d)) => format!("{v}:{d}"),
            _ => "-".into(),
        };
        let adapter = [p.manufacturer.as_deref(), p.product.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let adapter = if adapter.is_empty() { "-".to_string() } else { adapter };
        out.push_str(&format!(
            "{:<8} {:<9} {:<26} {}
",
            p.tty,
            id,
            adapter,
            p.by_id.first().map(String::as_str).unwrap_or("- (no by-id link)")
        ));
    }
    out.push_str(
        "
Config blocks (pick an id, set `driver` to the monitor's format and `kind` to match: masimo-ascii1, nonin-ascii,          nellcor-n595, nonin-df2, nonin-df7, nonin-df8 read pulse_oximeter; hl7 reads bedside_monitor):
",
    );
    for (i, p) in found.iter().enumerate() {
        let port = p.by_id.first().cloned().unwrap_or_else(|| p.dev.clone());
        let note = if p.by_id.is_empty() { "   # no by-id link: this name can change after a replug" } else { "" };
        let serial = p.serial.as_deref().map(|s| format!(" (adapter serial {s})")).unwrap_or_default();
        out.push_str(&format!(
            "\n# {}{serial}\n[[device]]\nid = \"bed-XX-monitor-{}\"\nkind = \"pulse_oximeter\"\n[device.serial]\nport = \"{port}\"{note}\ndriver = \"masimo-ascii1\"\n",
            p.tty,
            i + 1
        ));
    }
    out
}

fn run_serial(a: SerialArgs) -> anyhow::Result<ExitCode> {
    let found = scan_serial(&a.root);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ports": found }))?)?;
    } else {
        out!("{}", render_serial(&found))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct BleArgs {
    /// How long to listen for advertisements.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Print one JSON document instead of a table and config blocks.
    #[arg(long)]
    pub(crate) json: bool,
    /// List every device BlueZ sees, not only straps and oximeters.
    #[arg(long)]
    pub(crate) all: bool,
}

/// One device found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Found {
    pub(crate) address: String,
    pub(crate) name: Option<String>,
    /// `heart_rate_strap`, `pulse_oximeter`, or none (only with `--all`).
    pub(crate) kind: Option<&'static str>,
    pub(crate) rssi: Option<i16>,
    /// Advertised services, by name where known (`heart rate`) else UUID.
    pub(crate) services: Vec<String>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        ScanCommand::Ble(b) => run_ble(b),
        ScanCommand::Serial(s) => run_serial(s),
    }
}

fn run_ble(a: BleArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let found = match rt.block_on(scan(&a)) {
        Ok(f) => f,
        Err(e) => {
            errln!("error: {e:#}");
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "devices": found }))?)?;
    } else {
        out!("{}", render(&found))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn scan(a: &BleArgs) -> anyhow::Result<Vec<Found>> {
    use anyhow::Context;
    let manager = tokio::time::timeout(CALL_TIMEOUT, Manager::new())
        .await
        .context("connecting to the D-Bus system bus timed out")?
        .context("cannot reach BlueZ on the D-Bus system bus (is bluetoothd running?)")?;
    let adapter = tokio::time::timeout(CALL_TIMEOUT, manager.adapters())
        .await
        .context("listing Bluetooth adapters timed out")??
        .into_iter()
        .next()
        .context("no Bluetooth adapter found (is one plugged in and powered? `bluetoothctl power on`)")?;
    let filter = if a.all { Vec::new() } else { vec![sig_uuid(0x180D), sig_uuid(0x1822)] };
    tokio::time::timeout(CALL_TIMEOUT, adapter.start_scan(ScanFilter { services: filter }))
        .await
        .context("starting the scan timed out")?
        .context("BlueZ refused to scan (is the adapter powered? `bluetoothctl power on`)")?;
    errln!("scanning for {} ...", humantime::format_duration(a.duration));
    let deadline = Instant::now() + a.duration;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut reported = 0;
    loop {
        if let Ok(Ok(list)) = tokio::time::timeout(CALL_TIMEOUT, adapter.peripherals()).await {
            for p in list {
                let Ok(Ok(Some(props))) = tokio::time::timeout(CALL_TIMEOUT, p.properties()).await else { continue };
                let kind = kind_of(&props.services);
                if kind.is_none() && !a.all {
                    continue;
                }
                let f = Found {
                    address: props.address.to_string(),
                    name: props.local_name.clone(),
                    kind,
                    rssi: props.rssi,
                    services: props.services.iter().map(service_name).collect(),
                };
                found.insert(f.address.clone(), f);
            }
        }
        if found.len() != reported {
            reported = found.len();
            errln!("  {reported} found");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, adapter.stop_scan()).await;
    let mut list: Vec<Found> = found.into_values().collect();
    // Strongest signal first: the device next to the Pi is usually the one wanted.
    list.sort_by_key(|f| std::cmp::Reverse(f.rssi.unwrap_or(i16::MIN)));
    Ok(list)
}

/// The gateway's device kind for a set of advertised services.
fn kind_of(services: &[uuid::Uuid]) -> Option<&'static str> {
    let has = |s: u16| services.iter().any(|u| sig_uuid16(u) == Some(s));
    if has(0x180D) {
        Some("heart_rate_strap")
    } else if has(0x1822) {
        Some("pulse_oximeter")
    } else {
        None
    }
}

fn service_name(u: &uuid::Uuid) -> String {
    match sig_uuid16(u) {
        Some(0x180D) => "heart rate".into(),
        Some(0x1822) => "pulse oximeter".into(),
        Some(0x180F) => "battery".into(),
        Some(0x180A) => "device information".into(),
        Some(s) => format!("{s:04x}"),
        None => u.to_string(),
    }
}

/// The table and a config block per strap or oximeter, as printed.
pub(crate) fn render(found: &[Found]) -> String {
    let mut out = String::new();
    if found.is_empty() {
        out.push_str(
            "No heart-rate strap or pulse oximeter found. Wake the device (wear or moisten a strap, put a finger \
             in the oximeter), bring it close, and scan again; `--all` lists every device BlueZ sees.\n",
        );
        return out;
    }
    out.push_str(&format!("{:<19} {:<20} {:<17} {:>5}  {}\n", "ADDRESS", "NAME", "KIND", "RSSI", "SERVICES"));
    for f in found {
        out.push_str(&format!(
            "{:<19} {:<20} {:<17} {:>5}  {}\n",
            f.address,
            f.name.as_deref().unwrap_or("-"),
            f.kind.unwrap_or("-"),
            f.rssi.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            f.services.join(", ")
        ));
    }
    let usable: Vec<&Found> = found.iter().filter(|f| f.kind.is_some()).collect();
    if !usable.is_empty() {
        out.push_str("\nConfig blocks (pick an id; add patient_id or assign it later through the IoT Hub twin):\n");
    }
    let mut numbers: BTreeMap<&str, usize> = BTreeMap::new();
    for f in usable {
        let kind = f.kind.unwrap_or_default();
        let short = if kind == "heart_rate_strap" { "strap" } else { "oximeter" };
        let n = numbers.entry(short).or_insert(0);
        *n += 1;
        out.push_str(&format!("\n[[device]]\nid = \"bed-XX-{short}-{n}\"\nkind = \"{kind}\"\n[device.ble]\naddress = \"{}\"\n", f.address));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_rendering() {
        assert_eq!(kind_of(&[sig_uuid(0x180F), sig_uuid(0x180D)]), Some("heart_rate_strap"));
        assert_eq!(kind_of(&[sig_uuid(0x1822)]), Some("pulse_oximeter"));
        assert_eq!(kind_of(&[sig_uuid(0x1809)]), None);
        let f = vec![
            Found {
                address: "C0:FF:EE:00:00:01".into(),
                name: Some("HRM-SIM".into()),
                kind: Some("heart_rate_strap"),
                rssi: Some(-55),
                services: vec!["heart rate".into()],
            },
            Found { address: "AA:BB:CC:DD:EE:FF".into(), name: None, kind: None, rssi: None, services: vec![] },
        ];
        let text = render(&f);
        assert!(text.contains("C0:FF:EE:00:00:01   HRM-SIM"), "{text}");
        assert!(text.contains("address = \"C0:FF:EE:00:00:01\""), "{text}");
        assert!(!text.contains("address = \"AA:BB"), "only straps and oximeters get a config block: {text}");
        // The config block is a valid device config of the gateway.
        let block = &text[text.find("[[device]]").unwrap()..];
        let parsed = crate::config::parse_str(&format!("[gateway]\nid = \"gw\"\n[sink.stdout]\n{block}"), std::path::Path::new("scan")).unwrap();
        assert_eq!(parsed.devices.len(), 1);
        assert!(matches!(parsed.devices[0].source, crate::config::DeviceSource::Ble(_)));
        assert!(render(&[]).contains("No heart-rate strap"));
    }
}
