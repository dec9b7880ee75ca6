//! `iomt-edge decode ble CHAR HEX...`: decode one captured value offline and
//! print it as JSON (the decoded fields, the bytes it could not use, and the
//! readings the gateway would make, timed by the device-clock rule).
//!
//! `iomt-edge decode serial --profile NAME|PATH|DRIVER [FILE|-]`: decode a
//! serial or HL7 capture with a device profile or a built-in driver and print
//! one JSON object per record (NDJSON); bad input goes to stderr, counted.

use super::out::{errln, outln};
use super::{EXIT_FAILURE, EXIT_PROBLEMS, EXIT_USAGE};
use crate::adapters::ble::gatt::{self, Characteristic};
use crate::adapters::device_clock::{GatewayZone, TimeContext};
use crate::adapters::serial::{self, Counts, Driver};
use crate::model::DeviceKind;
use chrono::FixedOffset;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) what: DecodeCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum DecodeCommand {
    /// Decode a BLE characteristic value (a captured notification or read).
    #[command(after_help = "Examples:\n  iomt-edge decode ble 2a37 16 4B 2E 03\n  iomt-edge decode ble plx-continuous 0862007F08\n\
  iomt-edge decode ble --arrival 2025-03-04T09:00:00Z --device-clock-offset 3600 2a5e 03 62 00 48 00 E9 07 03 04 05 06 07 00 02\n\
Characteristics: heart-rate-measurement (2a37), body-sensor-location (2a38), plx-spot-check (2a5e),\n\
plx-continuous (2a5f), plx-features (2a60), battery-level (2a19), manufacturer-name (2a29),\n\
model-number (2a24), serial-number (2a25), firmware-revision (2a26).")]
    Ble(BleArgs),
    /// Decode a serial or HL7 capture with a device profile or a built-in driver.
    #[command(after_help = "Examples:\n  iomt-edge decode serial --profile masimo-ascii1 capture.txt\n\
  iomt-edge decode serial --profile nonin-df2 --hex packet.hex\n\
  iomt-edge decode serial --profile hl7 --code-map codes.toml oru.hl7\n\
  cat /dev/ttyUSB0 | iomt-edge decode serial --profile ./my-monitor.toml -\n\
Profiles: masimo-ascii1, nonin-ascii, nellcor-n595 (devices/serial/), or a path to a .toml file.\n\
Drivers: hl7 (MLLP blocks or bare segments), nonin-df2, nonin-df7, nonin-df8.\n\
Output: one JSON object per record on stdout; bad input (noise, cut-off lines, checksum errors...) on\n\
stderr, one line each, then a summary line.\n\
Exit codes: 0 at least one record decoded; 1 the input cannot be read; 2 unknown or invalid profile\n\
or code map; 3 the input holds no record (or --hex input is not hex).")]
    Serial(SerialArgs),
}

#[derive(clap::Args)]
pub(crate) struct SerialArgs {
    /// A shipped profile (masimo-ascii1, nonin-ascii, nellcor-n595), a profile file path, or a
    /// built-in driver (hl7, nonin-df2, nonin-df7, nonin-df8).
    #[arg(long, value_name = "NAME|PATH|DRIVER")]
    pub(crate) profile: String,
    /// The capture: a file, or `-` (default) for standard input.
    #[arg(default_value = "-")]
    pub(crate) file: String,
    /// The capture is hex text (`01 81 01 00 83`, as in the samples' .hex files), not raw bytes.
    #[arg(long)]
    pub(crate) hex: bool,
    /// When the bytes arrived (RFC 3339); default: now. Live lines are timed at this instant.
    #[arg(long)]
    pub(crate) arrival: Option<String>,
    /// hl7 only: a TOML file of extra codes (`[[code]] code = "8867-4" system = "LN" type = "heartRate"`).
    #[arg(long, value_name = "FILE")]
    pub(crate) code_map: Option<String>,
    /// The device id readings carry.
    #[arg(long, default_value = "decoded")]
    pub(crate) device_id: String,
}

#[derive(clap::Args)]
pub(crate) struct BleArgs {
    /// The characteristic: a 16-bit UUID such as `2a37`, or a name such as `heart-rate-measurement`.
    pub(crate) characteristic: String,
    /// The value bytes in hex: `16 4B 2E 03` or `164b2e03`. Device Information
    /// strings are given as hex too.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    pub(crate) hex: Vec<String>,
    /// When the value arrived (RFC 3339); default: now. Live readings get this time.
    #[arg(long)]
    pub(crate) arrival: Option<String>,
    /// The device-clock offset measured on the device's live readings, in
    /// seconds (device clock minus UTC); stored measurements are converted with
    /// it. Default: none measured, so the gateway's time zone is used.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) device_clock_offset: Option<i64>,
    /// The gateway's time zone as an offset such as `+01:00`; default: this
    /// machine's local zone.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) gateway_utc_offset: Option<String>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        DecodeCommand::Ble(b) => run_ble(b),
        DecodeCommand::Serial(s) => run_serial(s),
    }
}

fn run_serial(a: SerialArgs) -> anyhow::Result<ExitCode> {
    let mut driver = match Driver::by_name(&a.profile) {
        Ok(d) => d,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Some(path) = &a.code_map {
        let Driver::Hl7(opts) = &driver else {
            errln!("error: --code-map is only used with --profile hl7");
            return Ok(ExitCode::from(EXIT_USAGE));
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: cannot read the code map {path}: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        };
        match opts.clone().with_code_map(&text) {
            Ok(o) => driver = Driver::Hl7(o),
            Err(e) => {
                errln!("error: code map {path}: {e}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        }
    }
    let arrival = match &a.arrival {
        Some(s) => match crate::model::time::parse(s) {
            Ok(t) => t,
            Err(e) => {
                errln!("error: --arrival `{s}` is not an RFC 3339 time ({e}); example: 2025-03-04T09:00:00Z");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
        None => crate::model::time::now_ms(),
    };
    let mut bytes = Vec::new();
    let read = if a.file == "-" {
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| ())
    } else {
        std::fs::read(&a.file).map(|b| bytes = b)
    };
    if let Err(e) = read {
        let what = if a.file == "-" { "standard input".to_string() } else { a.file.clone() };
        errln!("error: cannot read {what}: {e}");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    // A timed capture (`iomt-edge serial record`): each read at its own
    // arrival time, `--arrival` (default now) being the recording's start.
    let mut chunks: Vec<(chrono::DateTime<chrono::Utc>, Vec<u8>)> = Vec::new();
    if serial::capture::is_timed(&bytes) {
        match serial::capture::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(c) => {
                for c in c {
                    let at = arrival + chrono::Duration::from_std(c.offset).unwrap_or_default();
                    chunks.push((at, c.bytes));
                }
                bytes.clear();
            }
            Err(e) => {
                errln!("error: the timed capture is malformed: {e}");
                return Ok(ExitCode::from(EXIT_PROBLEMS));
            }
        }
    } else if a.hex {
        bytes = match serial::parse_hex_capture(&String::from_utf8_lossy(&bytes)) {
            Ok(b) => b,
            Err(e) => {
                errln!("error: --hex input is not hex: {e}");
                return Ok(ExitCode::from(EXIT_PROBLEMS));
            }
        };
    }
    if chunks.is_empty() {
        chunks.push((arrival, bytes));
    }
    let mut decoder = driver.decoder(&a.device_id);
    let mut out = Vec::new();
    let mut last = arrival;
    for (at, b) in &chunks {
        decoder.push(b, *at, &mut out);
        last = *at;
    }
    decoder.finish(last, &mut out);
    let mut counts = Counts::default();
    for item in &out {
        counts.add(item);
        match item {
            Ok(rec) => {
                let mut v = serde_json::to_value(rec)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("record".into(), serde_json::json!(counts.records));
                }
                // A reader that stops early (`| head`) is not an error: see cli::out.
                outln!("{}", serde_json::to_string(&v)?)?;
            }
            Err(e) => errln!("bad input ({}): {e}", e.kind()),
        }
    }
    let bad: Vec<String> = counts.bad.iter().map(|(k, n)| format!("{k} {n}")).collect();
    errln!(
        "{} record(s), {} reading(s); bad input: {}",
        counts.records,
        counts.readings,
        if bad.is_empty() { "none".to_string() } else { bad.join(", ") }
    );
    if counts.records == 0 {
        errln!("error: no record in the input for profile `{}`", a.profile);
        return Ok(ExitCode::from(EXIT_PROBLEMS));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_ble(b: BleArgs) -> anyhow::Result<ExitCode> {
    let Some(ch) = Characteristic::parse(&b.characteristic) else {
        let known: Vec<String> = Characteristic::ALL.iter().map(|c| format!("{} ({:04x})", c.name(), c.uuid16())).collect();
        errln!("error: unknown characteristic `{}`; known: {}", b.characteristic, known.join(", "));
        return Ok(ExitCode::from(EXIT_PROBLEMS));
    };
    // The value bytes take every argument after the characteristic (a byte
    // may look like an option to clap), so an option given after them lands
    // here: name it rather than call its letters bad hex digits.
    if let Some(opt) = b.hex.iter().find(|h| h.starts_with("--")) {
        let name = opt.split('=').next().unwrap_or(opt);
        errln!(
            "error: `{name}` comes after the value bytes; give options before the characteristic, e.g. `iomt-edge decode ble {name} … {} …`",
            b.characteristic
        );
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
                Characteristic::PlxContinuous | Characteristic::PlxSpotCheck | Characteristic::PlxFeatures => DeviceKind::PulseOximeter,
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
