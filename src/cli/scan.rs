//! `iomt-edge scan ble`: which heart-rate straps and pulse oximeters are in
//! range, as BlueZ discovers them, with a `[[device]]` config block for each.
//!
//! The field engineer's first step when wiring a bed: find the strap's address
//! (or a name pattern) to put into the config. Scanning is filtered by the
//! Heart Rate (0x180D) and Pulse Oximeter (0x1822) services unless `--all`.
//! The listing is the command's output, so addresses are printed in clear;
//! nothing is logged.

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
pub struct Args {
    #[command(subcommand)]
    pub what: ScanCommand,
}

#[derive(clap::Subcommand)]
pub enum ScanCommand {
    /// Scan for BLE heart-rate straps and pulse oximeters (through BlueZ).
    #[command(after_help = "Examples:\n  iomt-edge scan ble\n  iomt-edge scan ble --duration 20s --json\n\n\
Put the device next to the Pi and wake it (straps advertise only while worn or moistened).\n\
Needs bluetoothd and a powered adapter (`bluetoothctl power on`); the service user must be allowed\n\
to use BlueZ on the system bus (the systemd unit is).")]
    Ble(BleArgs),
}

#[derive(clap::Args)]
pub struct BleArgs {
    /// How long to listen for advertisements.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Print one JSON document instead of a table and config blocks.
    #[arg(long)]
    pub json: bool,
    /// List every device BlueZ sees, not only straps and oximeters.
    #[arg(long)]
    pub all: bool,
}

/// One device found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Found {
    pub address: String,
    pub name: Option<String>,
    /// `heart_rate_strap`, `pulse_oximeter`, or none (only with `--all`).
    pub kind: Option<&'static str>,
    pub rssi: Option<i16>,
    /// Advertised services, by name where known (`heart rate`) else UUID.
    pub services: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        ScanCommand::Ble(b) => run_ble(b),
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
pub fn render(found: &[Found]) -> String {
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
        // The config block parses as the gateway's device config.
        let block = &text[text.find("[[device]]").unwrap()..];
        #[derive(serde::Deserialize)]
        struct Devices {
            device: Vec<crate::config::DeviceConfig>,
        }
        let parsed: Devices = toml::from_str(block).unwrap();
        assert_eq!(parsed.device.len(), 1);
        assert!(parsed.device[0].ble.is_some());
        assert!(render(&[]).contains("No heart-rate strap"));
    }
}
