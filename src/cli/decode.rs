//! `iomt-edge decode ble CHAR HEX...`: decode one captured value offline and
//! print it as JSON (the decoded fields, the bytes it could not use, and the
//! readings the gateway would make, timed by the device-clock rule).

use super::out::{errln, outln};
use super::{EXIT_PROBLEMS, EXIT_USAGE};
use crate::adapters::ble::gatt::{self, Characteristic};
use crate::adapters::device_clock::{GatewayZone, TimeContext};
use crate::model::DeviceKind;
use chrono::FixedOffset;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: DecodeCommand,
}

#[derive(clap::Subcommand)]
pub enum DecodeCommand {
    /// Decode a BLE characteristic value (a captured notification or read).
    #[command(after_help = "Examples:\n  iomt-edge decode ble 2a37 16 4B 2E 03\n  iomt-edge decode ble plx-continuous 0862007F08\n\
  iomt-edge decode ble --arrival 2025-03-04T09:00:00Z --device-clock-offset 3600 2a5e 03 62 00 48 00 E9 07 03 04 05 06 07 00 02\n\
Characteristics: heart-rate-measurement (2a37), body-sensor-location (2a38), plx-spot-check (2a5e),\n\
plx-continuous (2a5f), plx-features (2a60), battery-level (2a19), manufacturer-name (2a29),\n\
model-number (2a24), serial-number (2a25), firmware-revision (2a26).")]
    Ble(BleArgs),
}

#[derive(clap::Args)]
pub struct BleArgs {
    /// The characteristic: a 16-bit UUID such as `2a37`, or a name such as `heart-rate-measurement`.
    pub characteristic: String,
    /// The value bytes in hex: `16 4B 2E 03` or `164b2e03`. Device Information
    /// strings are given as hex too.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    pub hex: Vec<String>,
    /// When the value arrived (RFC 3339); default: now. Live readings get this time.
    #[arg(long)]
    pub arrival: Option<String>,
    /// The device-clock offset measured on the device's live readings, in
    /// seconds (device clock minus UTC); stored measurements are converted with
    /// it. Default: none measured, so the gateway's time zone is used.
    #[arg(long, allow_hyphen_values = true)]
    pub device_clock_offset: Option<i64>,
    /// The gateway's time zone as an offset such as `+01:00`; default: this
    /// machine's local zone.
    #[arg(long, allow_hyphen_values = true)]
    pub gateway_utc_offset: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        DecodeCommand::Ble(b) => run_ble(b),
    }
}

fn run_ble(b: BleArgs) -> anyhow::Result<ExitCode> {
    let Some(ch) = Characteristic::parse(&b.characteristic) else {
        let known: Vec<String> =
            Characteristic::ALL.iter().map(|c| format!("{} ({:04x})", c.name(), c.uuid16())).collect();
        errln!("error: unknown characteristic `{}`; known: {}", b.characteristic, known.join(", "));
        return Ok(ExitCode::from(EXIT_PROBLEMS));
    };
    // The value bytes take every argument after the characteristic (a byte
    // may look like an option to clap), so an option given after them lands
    // here: name it rather than call its letters bad hex digits.
    if let Some(opt) = b.hex.iter().find(|h| h.starts_with("--")) {
        let name = opt.split('=').next().unwrap_or(opt);
        errln!("error: `{name}` comes after the value bytes; give options before the characteristic, e.g. `iomt-edge decode ble {name} … {} …`", b.characteristic);
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let bytes = match gatt::parse_hex(&b.hex) {
        Ok(v) => v,
        Err(e) => {
            errln!("error: bad hex input: {e}");
            return Ok(ExitCode::from(EXIT_PROBLEMS));
        }
    };
    let arrival = match &b.arrival {
        Some(s) => match crate::model::time::parse(s) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: --arrival `{s}` is not an RFC 3339 time ({e}); example: 2025-03-04T09:00:00Z");
                return Ok(ExitCode::from(EXIT_PROBLEMS));
            }
        },
        None => crate::model::time::now_ms(),
    };
    let zone = match &b.gateway_utc_offset {
        Some(s) => match s.parse::<FixedOffset>() {
            Ok(z) => GatewayZone::Fixed(z),
            Err(_) => {
                errln!("error: --gateway-utc-offset `{s}` is not an offset such as +01:00 or -05:00");
                return Ok(ExitCode::from(EXIT_PROBLEMS));
            }
        },
        None => GatewayZone::Local,
    };
    let time = TimeContext { arrival, measured_offset: b.device_clock_offset, zone };
    match gatt::decode_value(ch, &bytes) {
        Ok(gatt::Decoding { decoded, extra_bytes }) => {
            let kind = match ch {
                Characteristic::HeartRateMeasurement | Characteristic::BodySensorLocation => DeviceKind::HeartRateStrap,
                Characteristic::PlxContinuous | Characteristic::PlxSpotCheck | Characteristic::PlxFeatures => {
                    DeviceKind::PulseOximeter
                }
                _ => DeviceKind::Other,
            };
            let readings = decoded.to_readings("decoded", kind, &time);
            let out = serde_json::json!({
                "uuid": format!("{:04x}", ch.uuid16()),
                "name": ch.name(),
                "bytes": hex::encode_upper(&bytes),
                "decoded": decoded,
                "extraBytes": extra_bytes,
                "arrival": crate::model::time::format(&arrival),
                "measuredClockOffsetSeconds": b.device_clock_offset,
                "clockOffsetMeasured": decoded.clock_offset(arrival),
                "readings": readings,
            });
            // A reader that stops early (`| head`) is not an error: see cli::out.
            outln!("{}", serde_json::to_string_pretty(&out)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            errln!("error: malformed value: {e}");
            Ok(ExitCode::from(EXIT_PROBLEMS))
        }
    }
}
