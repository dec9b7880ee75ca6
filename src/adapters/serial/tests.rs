//! Tests of the serial cores: the public captures in tests/data/serial (values
//! as their README states), each framer, driver and profile feature, and
//! property tests over arbitrary bytes.

use super::hl7::{self, AckCode, Hl7Options};
use super::nonin::{Format, NoninDecoder};
use super::profile::Profile;
use super::*;
use crate::model::{is_chartable, Flag, ReadingType, TimeFrom, CHARTABLE_FLAGS};
use chrono::NaiveDate;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    crate::model::time::parse("2025-06-10T00:00:00.000Z").unwrap()
}

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/serial/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a driver over the bytes in the given chunks; returns the output.
fn run(driver: &Driver, chunks: &[&[u8]]) -> Decoded {
    let mut d = driver.decoder("dev-1");
    let mut out = Vec::new();
    for c in chunks {
        d.push(c, t0(), &mut out);
    }
    d.finish(t0(), &mut out);
    out
}

fn records(out: &Decoded) -> Vec<&Record> {
    out.iter().filter_map(|r| r.as_ref().ok()).collect()
}

fn bad_kinds(out: &Decoded) -> Vec<&'static str> {
    out.iter().filter_map(|r| r.as_ref().err().map(BadInput::kind)).collect()
}

fn reading(rec: &Record, kind: ReadingType) -> &Reading {
    rec.readings.iter().find(|r| r.kind == kind).unwrap_or_else(|| panic!("no {kind} in {rec:#?}"))
}

fn value(rec: &Record, kind: ReadingType, name: &str) -> Option<f64> {
    reading(rec, kind).values.get(name).copied()
}

fn driver(name: &str) -> Driver {
    Driver::by_name(name).unwrap_or_else(|e| panic!("{e}"))
}

// ---- Masimo ASCII 1 (samples) ----------------------------------------------

#[test]
fn masimo_rad8_capture_decodes_to_the_stated_values() {
    let out = run(&driver("masimo-ascii1"), &[&sample("masimo_rad8_ascii1_yahnatan.txt")]);
    assert!(bad_kinds(&out).is_empty(), "{out:#?}");
    let recs = records(&out);
    assert_eq!(recs.len(), 5, "five lines, blank lines skipped");
    let r = recs[0];
    let local = NaiveDate::from_ymd_opt(2016, 2, 22).unwrap().and_hms_opt(22, 47, 45).unwrap();
    assert_eq!(r.device_clock, Some(local));
    assert_eq!(r.serial.as_deref(), Some("0000056661"));
    assert_eq!(value(r, ReadingType::Spo2, "spo2"), Some(98.0));
    assert_eq!(value(r, ReadingType::PulseRate, "pulseRate"), Some(97.0));
    assert_eq!(value(r, ReadingType::PerfusionIndex, "perfusionIndex"), Some(3.60));
    assert_eq!(r.readings.len(), 3, "SpCO/SpMet absent (dashes) and not read: {r:#?}");
    assert_eq!(r.device_status, vec!["set"], "EXC 0x800 = SET only");
    for rd in &r.readings {
        assert!(rd.flags.is_empty(), "normal line, no flags: {rd:?}");
        assert!(is_chartable(rd));
        assert_eq!(rd.time, t0(), "timed on arrival");
        let dt = rd.device_time.expect("monitor clock kept");
        assert_eq!((dt.local, dt.time_from), (local, TimeFrom::Arrival));
        assert_eq!(rd.device_kind, DeviceKind::PulseOximeter);
    }
    let pulse: Vec<f64> = recs.iter().filter_map(|r| value(r, ReadingType::PulseRate, "pulseRate")).collect();
    assert_eq!(pulse, vec![97.0, 96.0, 96.0, 96.0, 97.0]);
    let pi: Vec<f64> = recs.iter().filter_map(|r| value(r, ReadingType::PerfusionIndex, "perfusionIndex")).collect();
    assert_eq!(pi, vec![3.60, 3.95, 4.25, 3.19, 2.41]);
}

#[test]
fn masimo_other_layouts_decode_with_their_exception_bits() {
    let out = run(&driver("masimo-ascii1"), &[&sample("masimo_ascii1_other_models.txt")]);
    assert!(bad_kinds(&out).is_empty(), "{out:#?}");
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    // Radical-7 colour: SpO2 98, BPM 123, PI 0.55, EXC 0xC00 = low Signal IQ + SET.
    let r = recs[0];
    assert_eq!(value(r, ReadingType::Spo2, "spo2"), Some(98.0));
    assert_eq!(value(r, ReadingType::PulseRate, "pulseRate"), Some(123.0));
    assert_eq!(value(r, ReadingType::PerfusionIndex, "perfusionIndex"), Some(0.55));
    assert_eq!(r.serial, None, "SN=---------- is no serial number");
    assert_eq!(r.device_status, vec!["lowSignalIq", "set"]);
    for rd in &r.readings {
        assert_eq!(rd.flags, vec![Flag::SignalIrregular]);
        assert!(!is_chartable(rd), "low Signal IQ is not charted as a normal value");
    }
    // Radical-7 "blue" manual example: every value dashed.
    let r = recs[1];
    assert_eq!(r.readings.len(), 3);
    for rd in &r.readings {
        assert!(rd.values.is_empty());
        assert_eq!(rd.flags, vec![Flag::ValueUnavailable]);
    }
    // Rad-8 without sensor (EXC=000001), line cut before PI.
    let r = recs[2];
    assert_eq!(r.device_status, vec!["noSensor"]);
    assert_eq!(r.readings.len(), 2, "no PI field, no PI reading");
    for rd in &r.readings {
        assert!(rd.values.is_empty());
        assert_eq!(rd.flags, vec![Flag::ValueUnavailable, Flag::SensorDisconnected]);
        assert!(!is_chartable(rd));
    }
}

/// Rainbow parameters (Radical-7 layout) become readings with their units; a
/// dashed one (no rainbow option, or no value now) gives no reading; the EXC
/// flags apply to them as to SpO2, so a flagged SpHb is not charted either.
#[test]
fn masimo_rainbow_parameters_are_read() {
    let d = driver("masimo-ascii1");
    let line = b"03/17/16 19:19:36 SN=0000093112 SPO2=097% BPM=071 PI=02.10 SPCO=01.5% SPMET=00.8% SPHB=13.4 SPOC=18 RESVD=--- DESAT=-- PIDELTA=+-- PVI=014 ALARM=000000 EXC=0000800 EXC1=00000000\n";
    let out = run(&d, &[line]);
    assert!(bad_kinds(&out).is_empty(), "{out:#?}");
    let r = records(&out)[0];
    assert_eq!(value(r, ReadingType::Spco, "spco"), Some(1.5));
    assert_eq!(value(r, ReadingType::Spmet, "spmet"), Some(0.8));
    assert_eq!(value(r, ReadingType::Sphb, "sphb"), Some(13.4));
    assert_eq!(value(r, ReadingType::Pvi, "pvi"), Some(14.0));
    assert_eq!(reading(r, ReadingType::Sphb).units.get("sphb").map(String::as_str), Some("g/dL"));
    assert_eq!(reading(r, ReadingType::Spco).units.get("spco").map(String::as_str), Some("%"));
    assert_eq!(r.readings.len(), 7);
    assert!(r.readings.iter().all(|rd| rd.flags.is_empty() && is_chartable(rd)), "{r:#?}");
    assert_eq!(r.device_status, vec!["set", "rainbowValueNotRead"], "SpOC has no reading type");
    // Sensor off: every value, rainbow included, is kept off the chart.
    let off = String::from_utf8_lossy(line).replace("EXC=0000800", "EXC=0000820");
    let out = run(&d, &[off.as_bytes()]);
    let r = records(&out)[0];
    assert_eq!(value(r, ReadingType::Sphb, "sphb"), Some(13.4));
    assert!(r.readings.iter().all(|rd| rd.flags == vec![Flag::SensorDisconnected] && !is_chartable(rd)), "{r:#?}");
    // Dashed rainbow fields give no reading (a monitor without the option sends them on every line).
    let out = run(&d, &[&sample("masimo_ascii1_other_models.txt")]);
    for r in records(&out) {
        assert!(r.readings.iter().all(|rd| matches!(rd.kind, ReadingType::Spo2 | ReadingType::PulseRate | ReadingType::PerfusionIndex)), "{r:#?}");
    }
}

#[test]
fn masimo_lines_cut_garbled_or_unknown_are_bad_input_not_readings() {
    let d = driver("masimo-ascii1");
    let good = b"02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% ALARM=0000 EXC=000800\r\n";
    // Cut mid-line (port closed): no half number.
    let out = run(&d, &[&good[..50]]);
    assert_eq!(bad_kinds(&out), vec!["truncated"]);
    // The tail of a line whose start was missed (no date prefix).
    let out = run(&d, &[&good[30..]]);
    assert_eq!(bad_kinds(&out), vec!["noMatch"]);
    // Noise inside a number.
    let out = run(&d, &[b"02/22/16 22:47:45 SN=1 SPO2=0\xff8% BPM=097 EXC=000800\n"]);
    assert_eq!(bad_kinds(&out), vec!["notText"]);
    let out = run(&d, &[b"02/22/16 22:47:45 SN=1 SPO2=0x8% BPM=097 EXC=000800\n"]);
    assert_eq!(bad_kinds(&out), vec!["badField"]);
    let out = run(&d, &[b"02/22/16 22:47:45 SN=1 SPO2=098% BPM=097 EXC=00G800\n"]);
    assert_eq!(bad_kinds(&out), vec!["badField"]);
    // Unknown exception bits: questionable, not charted.
    let out = run(&d, &[b"02/22/16 22:47:45 SPO2=098% BPM=097 EXC=000900\n"]);
    let r = records(&out)[0];
    assert!(r.device_status.contains(&"EXC:unknown:0x100".to_string()), "{r:?}");
    assert!(r.readings.iter().all(|rd| rd.flags == vec![Flag::Questionable]));
    // SpOC, which has no reading type, is visible, not silent.
    let out = run(&d, &[b"02/22/16 22:47:45 SPO2=098% BPM=097 SPCO=05.0% SPOC=18 EXC=000800\n"]);
    assert_eq!(records(&out)[0].device_status, vec!["set", "rainbowValueNotRead"]);
    // Low perfusion alone is still a valid, charted value.
    let out = run(&d, &[b"02/22/16 22:47:45 SPO2=098% BPM=097 EXC=000804\n"]);
    assert!(records(&out)[0].readings.iter().all(|rd| rd.flags == vec![Flag::LowPerfusion] && is_chartable(rd)));
    // A month 13 is a clock not set: the values are kept, timed on arrival.
    let out = run(&d, &[b"13/22/16 22:47:45 SPO2=098% BPM=097 EXC=000800\n"]);
    let r = records(&out)[0];
    assert_eq!(r.device_clock, None);
    assert!(r.readings.iter().all(|rd| rd.flags == vec![Flag::DeviceClockNotSet] && rd.device_time.is_none()));
    // An over-long line (binary junk without newline) is dropped, the next line read.
    let mut junk = vec![b'A'; 2000];
    junk.extend_from_slice(b"\n");
    junk.extend_from_slice(good);
    let out = run(&d, &[&junk]);
    assert_eq!(bad_kinds(&out), vec!["tooLong"]);
    assert_eq!(records(&out).len(), 1);
}

// ---- Nonin ASCII, Nellcor -----------------------------------------------------

#[test]
fn nonin_ascii_lines() {
    let d = driver("nonin-ascii");
    let input = b"NONIN 7500FO 14:00:00 01/02/20\r\nSPO2=097 HR=072\r\nSPO2=--- HR=---\r\nSPO2=096 HR=070 F\r\nSPO2=095 HR=071*\r\n14:00:05 SPO2=094 HR=069\r\nSPO2=0-7 HR=072\r\n";
    let out = run(&d, &[input]);
    assert_eq!(bad_kinds(&out), vec!["badField"], "the header is skipped, the garbled line counted");
    let recs = records(&out);
    assert_eq!(recs.len(), 5);
    assert_eq!(value(recs[0], ReadingType::Spo2, "spo2"), Some(97.0));
    assert_eq!(value(recs[0], ReadingType::PulseRate, "pulseRate"), Some(72.0));
    assert!(recs[1].readings.iter().all(|r| r.values.is_empty() && r.flags == vec![Flag::ValueUnavailable]));
    assert_eq!(value(recs[2], ReadingType::Spo2, "spo2Fast"), Some(96.0), "` F`: fast-responding values");
    assert_eq!(value(recs[2], ReadingType::PulseRate, "pulseRateFast"), Some(70.0));
    assert_eq!(value(recs[2], ReadingType::Spo2, "spo2"), None);
    assert_eq!(value(recs[3], ReadingType::PulseRate, "pulseRate"), Some(71.0));
    assert_eq!(recs[3].device_status, vec!["eventMarker"]);
    assert_eq!(value(recs[4], ReadingType::Spo2, "spo2"), Some(94.0));
}

#[test]
fn nellcor_n595_lines() {
    let d = driver("nellcor-n595");
    let input = b"N-595 VERSION 1.0.0.1 CRC: XXXX SpO2 Limit: 85-100% PR Limit: 40-170BPM\r\n\
TIME               %SPO2  BPM  PA  Status\r\n\
12-NOV-98 14:00:05   100  120  50\r\n\
12-NOV-98 14:00:07    84* 120  50  SL\r\n\
12-NOV-98 14:00:09   ---  ---  --- SO PS\r\n";
    let out = run(&d, &[input]);
    assert!(bad_kinds(&out).is_empty(), "{out:#?}");
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].device_clock, NaiveDate::from_ymd_opt(1998, 11, 12).and_then(|d| d.and_hms_opt(14, 0, 5)));
    assert_eq!(value(recs[0], ReadingType::Spo2, "spo2"), Some(100.0));
    assert_eq!(value(recs[0], ReadingType::PulseRate, "pulseRate"), Some(120.0));
    assert_eq!(value(recs[1], ReadingType::Spo2, "spo2"), Some(84.0));
    assert_eq!(recs[1].device_status, vec!["saturationLowerLimit", "alarmLimitViolated"]);
    assert!(recs[1].readings.iter().all(|r| r.flags.is_empty()), "an alarm is not an invalid value");
    assert_eq!(recs[2].device_status, vec!["sensorOff", "pulseSearch"]);
    for r in &recs[2].readings {
        assert_eq!(r.flags, vec![Flag::ValueUnavailable, Flag::SensorDisconnected, Flag::EarlyEstimate]);
    }
}

/// Every flag a shipped profile sets for a device condition is either one
/// that leaves the value valid by the device-status rule (low perfusion) or
/// one that keeps it off the chart.
#[test]
fn shipped_profiles_never_chart_an_invalid_condition() {
    for (name, _) in profile::SHIPPED {
        let p = Profile::load(name).unwrap_or_else(|e| panic!("{e}"));
        for rule in &p.status {
            let mut flags: Vec<Option<Flag>> = vec![rule.unknown_flag];
            match &rule.source {
                profile::StatusSource::Bits { bits, .. } => flags.extend(bits.iter().map(|b| b.2)),
                profile::StatusSource::Codes { codes, .. } => flags.extend(codes.iter().map(|c| c.2)),
                profile::StatusSource::Pattern { flag, .. } => flags.push(*flag),
            }
            for f in flags.into_iter().flatten() {
                assert!(f == Flag::LowPerfusion || !CHARTABLE_FLAGS.contains(&f), "{name}: {f:?}");
            }
        }
        assert!(!p.readings.is_empty());
    }
}

// ---- Profile loading and validation -----------------------------------------

const MINIMAL: &str = r#"
name = "t"
device_kind = "pulseOximeter"
[parse]
mode = "regex"
pattern = '^S(?P<s>\d+)$'
[[reading]]
field = "s"
type = "spo2"
unit = "%"
"#;

fn profile_error(text: &str) -> profile::ProfileError {
    match Profile::from_toml(text, "t.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn profile_errors_name_the_key() {
    assert!(Profile::from_toml(MINIMAL, "t.toml").is_ok());
    let cases: [(&str, &str, &str); 11] = [
        ("unit = \"%\"", "unit = \"percent\"", "reading[0].unit"),
        ("type = \"spo2\"", "type = \"spo3\"", "reading[0].type"),
        ("field = \"s\"", "field = \"x\"", "reading[0].field"),
        ("pattern = '^S(?P<s>\\d+)$'", "pattern = '^S(?P<s>\\d+$'", "parse.pattern"),
        ("pattern = '^S(?P<s>\\d+)$'", "pattern = '^S(\\d+)$'", "parse.pattern"),
        ("mode = \"regex\"", "mode = \"regex\"\nseparator = \",\"", "parse.separator"),
        ("device_kind = \"pulseOximeter\"", "device_kind = \"toaster\"", "device_kind"),
        ("unit = \"%\"", "unit = \"%\"\nscale = 0", "reading[0].scale"),
        ("unit = \"%\"", "unit = \"%\"\nvalue = \"systolic\"", "reading[0].value"),
        ("[[reading]]", "[time]\nfields = [\"s\"]\nformat = \"%H:%M:%S\"\n[[reading]]", "time.format"),
        ("[[reading]]", "[[status]]\nfield = \"s\"\nbits = [{ mask = 1, name = \"x\", flag = \"broken\" }]\n[[reading]]", "status[0].bits[0].flag"),
    ];
    for (from, to, key) in cases {
        assert!(MINIMAL.contains(from), "{from}");
        let e = profile_error(&MINIMAL.replacen(from, to, 1));
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().starts_with("t.toml: `"), "{e}");
    }
    // Unknown keys are refused by name (a typo must not be ignored).
    let e = profile_error(&MINIMAL.replace("unit = \"%\"", "unit = \"%\"\nsentinel = [127]"));
    assert!(e.to_string().contains("sentinel"), "{e}");
    // Two fields for one value.
    let dup = format!("{MINIMAL}[[reading]]\nfield = \"s\"\ntype = \"spo2\"\nunit = \"%\"\n");
    assert_eq!(profile_error(&dup).key, "reading[1].value");
    assert!(Profile::load("no-such-profile").unwrap_err().to_string().contains("masimo-ascii1"));
    assert!(Profile::load("/nonexistent/p.toml").unwrap_err().to_string().contains("cannot read"));
}

#[test]
fn delimited_columns_sentinels_scale_and_start_end_bytes() {
    let text = r#"
name = "csv-monitor"
device_kind = "bedside_monitor"
[framing]
start_byte = 0x02
end_byte = 0x03
max_length = 64
[parse]
mode = "delimited"
separator = ";"
columns = ["hr", "_", "temp", "sys", "dia"]
decimal_comma = true
invalid = ['^-+$']
[[reading]]
field = "hr"
type = "heartRate"
unit = "/min"
sentinels = [511]
[[reading]]
field = "temp"
type = "bodyTemperature"
unit = "Cel"
scale = 0.1
[[reading]]
field = "sys"
type = "bloodPressure"
value = "systolic"
unit = "mm[Hg]"
[[reading]]
field = "dia"
type = "bloodPressure"
value = "diastolic"
unit = "mm[Hg]"
if_unavailable = "omit"
"#;
    let p = Profile::from_toml(text, "csv").unwrap_or_else(|e| panic!("{e}"));
    let d = Driver::Profile(Box::new(p));
    let out = run(&d, &[b"xx\x0272;9;37", b"0;120;80\x03\r\n\x02511; ;368,5;118;--\x03"]);
    assert_eq!(bad_kinds(&out), vec!["noise"]);
    let recs = records(&out);
    assert_eq!(value(recs[0], ReadingType::HeartRate, "heartRate"), Some(72.0));
    assert_eq!(value(recs[0], ReadingType::BodyTemperature, "bodyTemperature"), Some(37.0));
    let bp = reading(recs[0], ReadingType::BloodPressure);
    assert_eq!((bp.values.get("systolic"), bp.values.get("diastolic")), (Some(&120.0), Some(&80.0)));
    assert_eq!(bp.units.get("systolic").map(String::as_str), Some("mm[Hg]"));
    let hr = reading(recs[1], ReadingType::HeartRate);
    assert!(hr.values.is_empty() && hr.flags == vec![Flag::ValueUnavailable], "511 is a sentinel");
    assert!((value(recs[1], ReadingType::BodyTemperature, "bodyTemperature").unwrap() - 36.85).abs() < 1e-9, "decimal comma, then scale");
    let bp = reading(recs[1], ReadingType::BloodPressure);
    assert_eq!(bp.values.get("diastolic"), None);
    assert!(bp.flags.is_empty(), "an omitted value sets no flag");
}

// ---- Nonin binary -----------------------------------------------------------

fn df2_vector() -> Vec<u8> {
    parse_hex_capture(&String::from_utf8(sample("nonin_df2_packet_pufferfish_testvector.hex")).unwrap()).unwrap()
}

#[test]
fn nonin_df2_vector_decodes_to_hr_72_spo2_97() {
    let bytes = df2_vector();
    assert_eq!(bytes.len(), 125);
    let d = Driver::Nonin(Format::Df2);
    let out = run(&d, &[&bytes]);
    assert!(bad_kinds(&out).is_empty(), "{out:#?}");
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(value(recs[0], ReadingType::PulseRate, "pulseRate"), Some(72.0));
    assert_eq!(value(recs[0], ReadingType::Spo2, "spo2"), Some(97.0));
    assert!(recs[0].device_status.contains(&"firmware:48".to_string()), "SREV 0x30");
    assert!(recs[0].readings.iter().all(|r| r.flags.is_empty()));
    // Byte by byte, and after garbage and a half frame: the same packet.
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(&d, &one_by_one), out);
    let mut noisy = vec![0xFF, 0x01, 0x80, 0x13, 0x01, 0x80];
    noisy.extend_from_slice(&bytes);
    noisy.extend_from_slice(&bytes);
    let mut dec = NoninDecoder::new(Format::Df2, "dev-1");
    let mut out = Vec::new();
    dec.push(&noisy, t0(), &mut out);
    assert_eq!(records(&out).len(), 1, "the second, identical packet within the second is thinned");
    assert_eq!(dec.thinned(), 1, "and counted");
    assert_eq!(value(records(&out)[0], ReadingType::Spo2, "spo2"), Some(97.0));
    assert_eq!(bad_kinds(&out), vec!["noise"]);
}

/// DF2/DF7 rate (nonin.rs, "Rate"): of packets with the same status, one in
/// three (one a second) is kept, whatever their values; a packet whose status
/// or flags differ from the last kept one is always kept and restarts the
/// count; thinned packets are counted, never reported as bad input; a new
/// stream (after `finish`) starts with a kept packet.
#[test]
fn nonin_df7_keeps_one_packet_a_second_and_every_status_change() {
    let mut floats = [0u8; 25];
    floats[1] = 60;
    let mut d = NoninDecoder::new(Format::Df7, "ox");
    let mut out = Vec::new();
    let mut feed = |d: &mut NoninDecoder, spo2: u8, status: u8, out: &mut Decoded| {
        floats[2] = spo2;
        d.push(&df7_packet(&floats, status), t0(), out);
    };
    // Three seconds of normal packets, the 4-beat average moving every packet.
    for i in 0..9u8 {
        feed(&mut d, 90 + i, 0, &mut out);
    }
    let spo2 = |out: &Decoded| -> Vec<Option<f64>> { records(out).iter().map(|r| value(r, ReadingType::Spo2, "spo2")).collect() };
    assert_eq!(spo2(&out), vec![Some(90.0), Some(93.0), Some(96.0)]);
    assert_eq!(d.thinned(), 6);
    // Sensor alarm (SNSA): kept at once; the same alarm again: thinned; back to normal: kept.
    out.clear();
    feed(&mut d, 99, 0x08, &mut out);
    feed(&mut d, 98, 0x08, &mut out);
    feed(&mut d, 97, 0, &mut out);
    feed(&mut d, 96, 0, &mut out);
    assert_eq!(spo2(&out), vec![Some(99.0), Some(97.0)]);
    assert_eq!(records(&out)[0].readings[0].flags, vec![Flag::Invalid], "the alarm packet is never thinned away");
    assert_eq!(d.thinned(), 8);
    assert!(bad_kinds(&out).is_empty(), "thinning is not bad input: {out:?}");
    // A new stream starts with a kept packet.
    d.finish(t0(), &mut out);
    out.clear();
    feed(&mut d, 95, 0, &mut out);
    assert_eq!(spo2(&out), vec![Some(95.0)]);
    // The same bytes split differently give the same packets kept.
    let mut bytes = Vec::new();
    for i in 0..7u8 {
        floats[2] = 90 + i;
        bytes.extend(df7_packet(&floats, if i == 4 { 0x40 } else { 0 }));
    }
    let whole = run(&Driver::Nonin(Format::Df7), &[&bytes]);
    let split: Vec<&[u8]> = bytes.chunks(7).collect();
    assert_eq!(run(&Driver::Nonin(Format::Df7), &split), whole);
    assert_eq!(spo2(&whole), vec![Some(90.0), Some(93.0), Some(94.0), Some(95.0)], "0, 3, the disconnect at 4, and 5 back to normal");
}

#[test]
fn nonin_df2_negative_vectors_give_no_reading() {
    let d = Driver::Nonin(Format::Df2);
    // Checksum: frame 2's CHK 0xCA -> 0xCB.
    let mut bad = df2_vector();
    assert_eq!(bad[9], 0xCA);
    bad[9] = 0xCB;
    let out = run(&d, &[&bad]);
    assert!(records(&out).is_empty(), "{out:#?}");
    assert_eq!(bad_kinds(&out)[0], "checksum");
    // Status 0x7F (bit 7 clear), checksum made consistent: a framing error.
    let mut bad = df2_vector();
    bad[6] = 0x7F;
    bad[9] = bad[5..9].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let out = run(&d, &[&bad]);
    assert!(records(&out).is_empty());
    assert_eq!(bad_kinds(&out)[0], "framing");
    // A packet cut by the next SYNC frame, then a whole one.
    let good = df2_vector();
    let mut cut = good[..60].to_vec();
    cut.extend_from_slice(&good);
    let out = run(&d, &[&cut]);
    assert_eq!(records(&out).len(), 1);
    assert_eq!(bad_kinds(&out), vec!["truncated"]);
}

/// Builds a DF7 packet (16-bit pleth) from FLOAT bytes and a status byte.
fn df7_packet(floats: &[u8; 25], status: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, f) in floats.iter().enumerate() {
        let s = status | 0x80 | u8::from(i == 0);
        let frame = [s, 0x12, 0x34, *f];
        v.extend_from_slice(&frame);
        v.push(frame.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
    }
    v
}

#[test]
fn nonin_df7_and_df8() {
    let mut floats = [0u8; 25];
    floats[0] = 0x01; // HR MSB: 128 + ...
    floats[1] = 0x04; // ... 4 = 132
    floats[2] = 95;
    let d7 = Driver::Nonin(Format::Df7);
    let out = run(&d7, &[&df7_packet(&floats, 0)]);
    let r = records(&out)[0];
    assert_eq!((value(r, ReadingType::PulseRate, "pulseRate"), value(r, ReadingType::Spo2, "spo2")), (Some(132.0), Some(95.0)));
    // Missing values and status: sensor alarm, out of track.
    floats[0] = 0x03;
    floats[1] = 0x7F;
    floats[2] = 127;
    let out = run(&d7, &[&df7_packet(&floats, 0x18)]);
    let r = records(&out)[0];
    assert_eq!(r.device_status[..2], ["outOfTrack".to_string(), "sensorAlarm".to_string()]);
    for rd in &r.readings {
        assert!(rd.values.is_empty());
        assert_eq!(rd.flags, vec![Flag::ValueUnavailable, Flag::SignalIrregular, Flag::Invalid]);
    }
    // Red perfusion alone is low perfusion (a valid value).
    floats[0] = 0;
    floats[1] = 60;
    floats[2] = 96;
    let out = run(&d7, &[&df7_packet(&floats, 0x04)]);
    assert!(records(&out)[0].readings.iter().all(|r| r.flags == vec![Flag::LowPerfusion]));

    // DF8: [STATUS, HR bits 6-0, SpO2, STAT2].
    let d8 = Driver::Nonin(Format::Df8);
    let stream = [0x80, 72, 97, 0x00, 0x81, 0x04, 98, 0x01, 0xC3, 0x7F, 127, 0x08];
    let out = run(&d8, &[&[0x55, 0x13], &stream]);
    assert_eq!(bad_kinds(&out), vec!["noise"]);
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    assert_eq!(value(recs[0], ReadingType::PulseRate, "pulseRate"), Some(72.0));
    assert_eq!(value(recs[1], ReadingType::PulseRate, "pulseRate"), Some(132.0));
    assert_eq!(value(recs[1], ReadingType::Spo2, "spo2"), Some(98.0));
    assert!(recs[1].device_status.contains(&"lowBattery".to_string()));
    assert!(recs[2].readings.iter().all(|r| r.values.is_empty() && r.flags == vec![Flag::ValueUnavailable, Flag::SensorDisconnected, Flag::Invalid]));
    // A lone record cannot prove its alignment (no checksum): no reading.
    assert!(records(&run(&d8, &[&stream[..4]])).is_empty());
}

#[test]
fn nonin_format_select_commands_and_replies() {
    assert_eq!(Format::Df2.select_command(), [0x02, 0x70, 0x02, 0x02, 0x02, 0x03]);
    assert_eq!(Format::Df7.select_command(), [0x02, 0x70, 0x02, 0x02, 0x07, 0x03]);
    assert_eq!(Format::Df8.select_command(), [0x02, 0x70, 0x02, 0x02, 0x08, 0x03]);
    let mut d = NoninDecoder::new(Format::Df2, "ox");
    let mut out = Vec::new();
    let mut bytes = vec![nonin::ACK];
    bytes.extend(df2_vector());
    bytes.push(nonin::NAK);
    d.push(&bytes, t0(), &mut out);
    d.finish(t0(), &mut out);
    assert_eq!(d.replies(), (1, 1));
    assert!(bad_kinds(&out).is_empty(), "a reply is not noise: {out:?}");
}

// ---- HL7 ----------------------------------------------------------------------

fn hl7_sample_cr() -> Vec<u8> {
    String::from_utf8(sample("hl7_oru_r01_comen_unverified.txt")).unwrap().replace('\n', "\r").into_bytes()
}

fn check_comen(rec: &Record) {
    assert_eq!(value(rec, ReadingType::Spo2, "spo2"), Some(97.0));
    assert_eq!(value(rec, ReadingType::PulseRate, "pulseRate"), Some(59.0));
    assert_eq!(value(rec, ReadingType::RespirationRate, "respirationRate"), Some(20.0));
    assert_eq!(value(rec, ReadingType::BodyTemperature, "bodyTemperature"), Some(37.0));
    let bp = reading(rec, ReadingType::BloodPressure);
    let v = |n: &str| bp.values.get(n).copied();
    assert_eq!((v("systolic"), v("diastolic"), v("mean")), (Some(120.0), Some(80.0), Some(90.0)));
    assert_eq!(rec.readings.len(), 5, "the second, equal SpO2 OBX is merged: {rec:#?}");
    let measured = crate::model::time::parse("2025-06-09T17:51:27Z").unwrap();
    for r in &rec.readings {
        assert!(r.flags.is_empty(), "{r:?}");
        assert_eq!(r.time, measured, "OBX-14 with its zone is the measurement time");
        let dt = r.device_time.expect("device time");
        assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::DeviceZone, Some(8 * 3600)));
        assert_eq!(dt.local.to_string(), "2025-06-10 01:51:27");
        assert_eq!(r.device_kind, DeviceKind::BedsideMonitor);
    }
    assert!(rec.ignored.iter().any(|i| i.contains("160324")), "{:?}", rec.ignored);
    assert!(rec.ignored.iter().any(|i| i.contains("188736")), "weight, empty and not mapped");
    assert_eq!(rec.source, "HL7 ORU^R01 202506100151270003");
}

#[test]
fn hl7_sample_decodes_to_the_stated_values_bare_and_mllp() {
    let d = driver("hl7");
    // As the file is (LF), as on the wire (CR), and MLLP-framed in pieces.
    let lf = sample("hl7_oru_r01_comen_unverified.txt");
    let cr = hl7_sample_cr();
    let mllp = framing::mllp_wrap(&cr);
    for input in [lf, cr.clone()] {
        let out = run(&d, &[&input]);
        assert!(bad_kinds(&out).is_empty(), "{out:#?}");
        assert_eq!(records(&out).len(), 1);
        check_comen(records(&out)[0]);
    }
    // Noise before the first block: taken for bare segments, still right.
    let mut late = b"xx".to_vec();
    late.extend_from_slice(&mllp);
    let out = run(&d, &[&late]);
    assert_eq!(bad_kinds(&out), vec!["noise"]);
    check_comen(records(&out)[0]);
    let mut twice = mllp.clone();
    twice.extend_from_slice(b"noise");
    twice.extend_from_slice(&mllp);
    let pieces: Vec<&[u8]> = twice.chunks(7).collect();
    let out = run(&d, &pieces);
    assert_eq!(bad_kinds(&out), vec!["noise"]);
    assert_eq!(records(&out).len(), 2);
    check_comen(records(&out)[1]);
}

#[test]
fn hl7_status_empty_values_units_codes_and_time() {
    let msg = "MSH|^~\\&|MON|W3|||20250610015127+0200||ORU^R01|C1|P|2.6\r\
OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||96|262688^MDC_DIM_PERCENT^MDC|||||X|||20250610015100+0200\r\
OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC||||||||F|||20250610015100+0200\r\
OBX|3|NM|150344^MDC_TEMP^MDC||98.6|[degF]^[degF]^UCUM|||||F|||20250610015100\r\
OBX|4|NM|99HR^Heart rate^99COMEN||77|/min|||||F\r\
OBX|5|NM|151562^MDC_RESP_RATE^MDC||18|furlongs|||||F\r\
OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC||118|mm[Hg]|||||P|||20250610015000+0200\r\
OBX|7|NM|147842^MDC_ECG_HEART_RATE^MDC||80|/min|||||F|||20300101000000+0000\r";
    let opts = Hl7Options::default().with_code_map("[[code]]\ncode = \"99HR\"\nsystem = \"99COMEN\"\ntype = \"heartRate\"\n").unwrap();
    let rec = hl7::decode_message(msg.as_bytes(), &opts, "mon", t0()).unwrap();
    let spo2 = reading(&rec, ReadingType::Spo2);
    assert!(spo2.values.is_empty() && spo2.flags == vec![Flag::ValueUnavailable], "OBX-11 X: cannot be obtained");
    let pr = reading(&rec, ReadingType::PulseRate);
    assert!(pr.values.is_empty() && pr.flags == vec![Flag::ValueUnavailable], "empty OBX-5");
    let temp = reading(&rec, ReadingType::BodyTemperature);
    assert!((temp.values["bodyTemperature"] - 37.0).abs() < 1e-9, "98.6 degF");
    // OBX-14 without zone takes MSH-7's zone.
    assert_eq!(crate::model::time::format(&temp.time), "2025-06-09T23:51:00.000Z");
    let hrs: Vec<&Reading> = rec.readings.iter().filter(|r| r.kind == ReadingType::HeartRate).collect();
    assert_eq!(hrs[0].values["heartRate"], 77.0, "vendor code from the extra map");
    assert_eq!(hrs[0].time, t0(), "no OBX-14/OBR-7: arrival");
    assert!(rec.ignored.iter().any(|i| i.contains("furlongs")), "unknown unit: not guessed");
    let bp = reading(&rec, ReadingType::BloodPressure);
    assert_eq!(bp.flags, vec![Flag::EarlyEstimate, Flag::ValueUnavailable], "preliminary, and a panel without diastolic");
    assert_eq!(hrs[1].flags, vec![Flag::TimeUnknown], "a time in the future is not believed");
    assert_eq!(hrs[1].time, t0());
    // Without the extra map the vendor code is only listed.
    let rec = hl7::decode_message(msg.as_bytes(), &Hl7Options::default(), "mon", t0()).unwrap();
    assert!(rec.ignored.iter().any(|i| i.contains("99HR")));
}

#[test]
fn hl7_separators_escapes_rejections_and_acks() {
    // Other delimiters, honoured as MSH-1/MSH-2 say.
    let msg = "MSH#$%*@#MON#W3###20250610015127+0000##ORU$R01#C2#P#2.6\rOBX#1#NM#150456$SpO2$MDC##97#%#####F\r";
    let rec = hl7::decode_message(msg.as_bytes(), &Hl7Options::default(), "mon", t0()).unwrap();
    assert_eq!(value(&rec, ReadingType::Spo2, "spo2"), Some(97.0));
    let h = hl7::header(b"MSH|^~\\&|A|B|C|D|20250101||ORU^R01|X|P|2.6\r").unwrap();
    assert_eq!(hl7::unescape("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41\\\\H\\g", &h), "a|b^c&d~e\\fAg");
    assert_eq!(hl7::unescape("lone \\ backslash", &h), "lone \\ backslash");
    // Not ORU^R01, no MSH, bad MSH-2: rejected with a reason.
    let e = hl7::decode_message(b"MSH|^~\\&|A|B|||20250101||ADT^A01|X|P|2.6\r", &Hl7Options::default(), "m", t0()).unwrap_err();
    assert_eq!(e.code, AckCode::AR);
    assert!(e.reason.contains("ADT^A01"), "{e}");
    assert_eq!(hl7::decode_message(b"PID|||1\r", &Hl7Options::default(), "m", t0()).unwrap_err().code, AckCode::AR);
    assert!(hl7::header(b"MSH|^^\\&|A\r").is_err());
    // ACKs.
    let orig = hl7::header(&hl7_sample_cr()).unwrap();
    let ack = hl7::build_ack(Some(&orig), AckCode::AA, None, t0(), "ACK1");
    let segs: Vec<&str> = ack.split('\r').collect();
    assert_eq!(segs[0], "MSH|^~\\&|iomt-edge||NC_Monitor|KC261551373G|20250610000000+0000||ACK^R01^ACK|ACK1|P|2.6");
    assert_eq!(segs[1], "MSA|AA|202506100151270003");
    assert_eq!(segs[2], "");
    let ack = hl7::build_ack(Some(&orig), AckCode::AE, Some("outbox full | retry"), t0(), "ACK2");
    assert!(ack.contains("\rMSA|AE|202506100151270003|outbox full \\F\\ retry\r"), "{ack}");
    let ack = hl7::build_ack(None, AckCode::AR, Some("no MSH"), t0(), "ACK3");
    assert!(ack.starts_with("MSH|^~\\&|iomt-edge|") && ack.contains("\rMSA|AR||no MSH\r"), "{ack}");
    // DTM forms.
    assert!(hl7::parse_dtm("202506100151").is_some());
    assert!(hl7::parse_dtm("20250610015127.1234-0500").is_some_and(|(_, z)| z.map(|z| z.local_minus_utc()) == Some(-18000)));
    for bad in ["2025061001", "20251310015127", "20250610015127+99", "2025061001512x"] {
        assert!(hl7::parse_dtm(bad).is_none(), "{bad}");
    }
}

// ---- Properties -----------------------------------------------------------------

fn all_drivers() -> Vec<Driver> {
    let mut v: Vec<Driver> = profile::SHIPPED.iter().map(|(n, _)| driver(n)).collect();
    v.extend(Driver::BUILT_IN.iter().map(|n| driver(n)));
    v
}

fn check_readings(out: &Decoded) -> Result<(), TestCaseError> {
    for rec in records(out) {
        for r in &rec.readings {
            for (name, v) in &r.values {
                prop_assert!(v.is_finite());
                prop_assert!(r.units.contains_key(name), "{:?}", r);
            }
            prop_assert_eq!(r.flags.contains(&Flag::OutOfRange), r.values.values().any(|v| !crate::model::is_plausible(r.kind, *v)));
        }
    }
    Ok(())
}

fn noisy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..20),
        Just(b"SPO2=097 HR=072\r\n".to_vec()),
        Just(b"02/22/16 22:47:45 SN=1 SPO2=098% BPM=097 PI=03.60% EXC=000800\r\n".to_vec()),
        Just(b"12-NOV-98 14:00:05   100  120  50 SO\r\n".to_vec()),
        Just(b"MSH|^~\\&|M||||20250610015127+0800||ORU^R01|1|P|2.6\r".to_vec()),
        Just(b"OBX||NM|150456^X^MDC||97|%|||||F|||20250610015127+0800\r".to_vec()),
        Just(vec![0x0B]),
        Just(vec![0x1C, 0x0D]),
        Just(vec![0x01, 0x81, 0x01, 0x00, 0x83]),
        Just(vec![0x80, 72, 97, 0x00]),
    ];
    proptest::collection::vec(pieces, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any bytes, in any chunking, through every driver and shipped profile:
    /// no panic, the same result however the reads were split, and every
    /// reading well-formed.
    #[test]
    fn any_bytes_any_chunking_never_panic(bytes in noisy_bytes(), cut in 1usize..40) {
        for d in all_drivers() {
            let whole = run(&d, &[&bytes]);
            let pieces: Vec<&[u8]> = bytes.chunks(cut).collect();
            prop_assert_eq!(&whole, &run(&d, &pieces));
            check_readings(&whole)?;
        }
    }

    /// Pure junk (no valid packet built in) never yields a Nonin DF2/DF7
    /// reading: a packet needs 25 frames that all pass the checksum.
    #[test]
    fn junk_never_gives_a_checksummed_reading(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        for f in [Format::Df2, Format::Df7] {
            prop_assert!(records(&run(&Driver::Nonin(f), &[&bytes])).is_empty());
        }
    }

    /// Any single corrupted byte in a packet loses that packet, never
    /// yields a reading from it; the next packet is read.
    #[test]
    fn a_corrupted_byte_loses_only_its_packet(at in 0usize..125, xor in 1u8..=255) {
        let mut bytes = df2_vector();
        bytes[at] ^= xor;
        bytes.extend(df2_vector());
        let out = run(&Driver::Nonin(Format::Df2), &[&bytes]);
        prop_assert_eq!(records(&out).len(), 1, "{:?}", out);
        prop_assert!(!bad_kinds(&out).is_empty());
        let mut floats = [0u8; 25];
        floats[1] = 70;
        floats[2] = 96;
        let mut bytes = df7_packet(&floats, 0);
        bytes[at] ^= xor;
        bytes.extend(df7_packet(&floats, 0));
        let out = run(&Driver::Nonin(Format::Df7), &[&bytes]);
        prop_assert_eq!(records(&out).len(), 1, "{:?}", out);
    }

    /// The profile engine over text lines made of the tokens monitors send.
    #[test]
    fn profile_engine_over_token_soup(tokens in proptest::collection::vec(prop_oneof![
        Just("SPO2="), Just("BPM="), Just("HR="), Just("PI="), Just("EXC="), Just("%"), Just("-"), Just("."), Just(" "),
        Just("*"), Just("F"), Just("02/22/16 22:47:45 "), Just("9"), Just("0"), Just("FFFFFFFFFFFFFFFFFFFF"), Just("1e308"),
        Just("12-NOV-98 14:00:05 "), Just("SO"), Just("\r\n"), Just("=")], 0..60)) {
        let line = tokens.concat();
        for (name, _) in profile::SHIPPED {
            let out = run(&driver(name), &[line.as_bytes(), b"\n"]);
            check_readings(&out)?;
        }
    }
}

/// Every single corrupted byte of a DF2 and a DF7 packet, every value: the
/// packet is lost (reported), the next one is read. A corrupted last frame
/// can look like a SYNC frame that overlaps the next packet's start (seen by
/// the property test above at byte 121, xor 149); the decoder rescans from
/// the byte after a failed packet's start, so the next packet is found.
#[test]
fn every_corrupted_byte_loses_only_its_packet() {
    let mut floats = [0u8; 25];
    floats[1] = 70;
    floats[2] = 96;
    let df7 = df7_packet(&floats, 0);
    for (format, packet) in [(Format::Df2, df2_vector()), (Format::Df7, df7.clone())] {
        for at in 0..packet.len() {
            for xor in 1..=255u8 {
                let mut bytes = packet.clone();
                bytes[at] ^= xor;
                bytes.extend(&packet);
                let out = run(&Driver::Nonin(format), &[&bytes]);
                assert_eq!(records(&out).len(), 1, "{format:?} byte {at} xor {xor}: {out:?}");
                assert!(!bad_kinds(&out).is_empty(), "{format:?} byte {at} xor {xor}");
            }
        }
    }
}

/// Every piece a driver can meet: [`noisy_bytes`] plus whole DF7 packets and
/// DF8 records, so the binary decoders get past their sync checks too.
fn noisy_bytes_with_packets() -> impl Strategy<Value = Vec<u8>> {
    let mut floats = [0u8; 25];
    floats[1] = 72;
    floats[2] = 97;
    let pieces = prop_oneof![
        noisy_bytes(),
        Just(df7_packet(&floats, 0x02)),
        Just(vec![0x82, 72, 97, 0x00]),
        Just(vec![0xC3, 0x7F, 127, 0x09]),
        Just(df2_vector()),
    ];
    proptest::collection::vec(pieces, 0..6).prop_map(|v| v.concat())
}

/// Feeds `bytes` in `cut`-sized reads, calling `idle` after each read where
/// `idle_at` says so and `abort` at the end: what the adapter does on a quiet
/// or broken line.
fn run_idle_abort(driver: &Driver, bytes: &[u8], cut: usize, idle_at: &[bool]) -> Decoded {
    let mut d = driver.decoder("dev-1");
    let mut out = Vec::new();
    for (i, c) in bytes.chunks(cut).enumerate() {
        d.push(c, t0(), &mut out);
        if idle_at.get(i % idle_at.len().max(1)).copied().unwrap_or(false) {
            d.idle(t0(), &mut out);
        }
    }
    d.abort(t0(), &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Arbitrary bytes with real packets among them, through every driver,
    /// with idle calls between reads and an abort at the end: no panic,
    /// every reading well-formed, and `finish` after `abort` adds nothing.
    #[test]
    fn idle_and_abort_anywhere_never_panic(bytes in noisy_bytes_with_packets(), cut in 1usize..70,
                                           idle_at in proptest::collection::vec(any::<bool>(), 1..8)) {
        for d in all_drivers() {
            let out = run_idle_abort(&d, &bytes, cut, &idle_at);
            check_readings(&out)?;
            let whole = run(&d, &[&bytes]);
            let pieces: Vec<&[u8]> = bytes.chunks(cut).collect();
            prop_assert_eq!(&whole, &run(&d, &pieces));
            check_readings(&whole)?;
        }
    }

    /// One HL7 message of arbitrary bytes straight into the parser (what the
    /// TCP listener does with each MLLP block) and the ACK built for it: no
    /// panic, an ACK of exactly one MSH and one MSA segment whose code is the
    /// parser's verdict, readings well-formed.
    #[test]
    fn hl7_message_and_ack_over_arbitrary_bytes(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        noisy_bytes(),
        (0usize..2000, any::<u8>()).prop_map(|(at, b)| {
            let mut m = hl7_sample_cr();
            let at = at % m.len();
            m[at] = b;
            m
        }),
    ]) {
        let opts = Hl7Options::default();
        let rec = hl7::decode_message(&bytes, &opts, "dev-1", t0());
        let header = hl7::header(&bytes).ok();
        let (code, reason) = match &rec {
            Ok(_) => (AckCode::AA, None),
            Err(e) => (e.code, Some(e.reason.as_str())),
        };
        let ack = hl7::build_ack(header.as_ref(), code, reason, t0(), "A1");
        let segs: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
        prop_assert_eq!(segs.len(), 2, "{:?}", ack);
        prop_assert!(segs[0].starts_with("MSH") && segs[1].starts_with("MSA"), "{:?}", ack);
        prop_assert!(segs[1].contains(code.as_str()), "{:?}", ack);
        if let Ok(r) = rec {
            check_readings(&vec![Ok(r)])?;
        }
    }

    /// A shipped profile's text with a slice replaced by arbitrary text (what
    /// a person editing a profile file can produce): loading gives a profile
    /// or an error, never a panic; a profile that loads decodes lines without
    /// panicking and with well-formed readings.
    #[test]
    fn profile_loader_over_edited_files(which in 0usize..3, at in any::<usize>(), cut in 0usize..40,
                                        insert in "[ -~\n]{0,40}") {
        let (name, text) = profile::SHIPPED[which];
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) { at -= 1; }
        let mut end = (at + cut).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let edited = format!("{}{}{}", &text[..at], insert, &text[end.max(at)..]);
        if let Ok(p) = Profile::from_toml(&edited, name) {
            let d = Driver::Profile(Box::new(p));
            let out = run(&d, &[b"02/22/16 22:47:45 SN=1 SPO2=098% BPM=097 PI=03.60% EXC=000800\r\nSPO2=097 HR=072\r\n12-NOV-98 14:00:05   100  120  50 SO\r\n", edited.as_bytes()]);
            check_readings(&out)?;
        }
    }
}

// ---- A broken stream, an idle line (what the adapter calls) ---------------------

/// The port goes away mid-record: `abort` reports the cut record as
/// truncated and never decodes it, for every driver. A bare HL7 message cut
/// inside the SpO2 value (`...|9`) would otherwise give SpO2 9 %, and a
/// Nonin ASCII line cut after `HR=07` a pulse of 7.
#[test]
fn abort_never_decodes_a_cut_record() {
    let masimo = sample("masimo_rad8_ascii1_yahnatan.txt");
    let first = masimo.iter().position(|b| *b == b'\n').unwrap() + 1;
    let hl7 = hl7_sample_cr();
    let spo2_at = String::from_utf8_lossy(&hl7).find("|97|").unwrap() + 2;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nonin-ascii", b"SPO2=097 HR=072\r\nSPO2=098 HR=07".to_vec()),
        ("masimo-ascii1", [&masimo[..first], &masimo[first..first + 60]].concat()),
        ("hl7", hl7[..spo2_at].to_vec()),
        ("hl7", framing::mllp_wrap(&hl7)[..spo2_at + 1].to_vec()),
    ];
    for (name, bytes) in cases {
        let mut d = driver(name).decoder("dev-1");
        let mut out = Vec::new();
        d.push(&bytes, t0(), &mut out);
        let before = records(&out).len();
        d.abort(t0(), &mut out);
        assert_eq!(records(&out).len(), before, "{name}: abort decoded a cut record: {out:#?}");
        assert_eq!(bad_kinds(&out).last(), Some(&"truncated"), "{name}: {out:#?}");
        // The decoder starts clean: the next whole record reads normally.
        let mut again = Vec::new();
        d.push(b"SPO2=099 HR=070\r\n", t0(), &mut again);
        if name == "nonin-ascii" {
            assert_eq!(value(records(&again)[0], ReadingType::PulseRate, "pulseRate"), Some(70.0));
        }
    }
    // DF2: a packet cut after its SpO2 frame.
    let df2 = parse_hex_capture(&String::from_utf8(sample("nonin_df2_packet_pufferfish_testvector.hex")).unwrap()).unwrap();
    let mut d = driver("nonin-df2").decoder("dev-1");
    let mut out = Vec::new();
    d.push(&df2[..5 * 10], t0(), &mut out);
    d.abort(t0(), &mut out);
    assert!(records(&out).is_empty());
    assert_eq!(bad_kinds(&out), vec!["truncated"]);
}

/// An idle line ends a bare HL7 message whose last segment was ended (CR);
/// a message whose last segment is still open waits (for its CR or the next
/// MSH); line profiles are not affected by idle.
#[test]
fn idle_ends_a_finished_bare_hl7_message_only() {
    let hl7 = hl7_sample_cr();
    let mut d = driver("hl7").decoder("dev-1");
    let mut out = Vec::new();
    d.push(&hl7[..hl7.len() - 1], t0(), &mut out);
    d.idle(t0(), &mut out);
    assert!(out.is_empty(), "last segment still open: {out:#?}");
    d.push(b"\r", t0(), &mut out);
    d.idle(t0(), &mut out);
    assert_eq!(records(&out).len(), 1);
    check_comen(records(&out)[0]);
    d.idle(t0(), &mut out);
    assert_eq!(out.len(), 1, "idle twice decodes once");
    let mut d = driver("nonin-ascii").decoder("dev-1");
    let mut out = Vec::new();
    d.push(b"SPO2=098 HR=07", t0(), &mut out);
    d.idle(t0(), &mut out);
    assert!(out.is_empty());
}
