//! Decoder tests on worked examples of the SIG characteristic layouts (HRS 1.0,
//! PLX Continuous / Spot-check, IEEE 11073-20601 SFLOAT), plus property tests
//! over arbitrary bytes.

use super::*;
use crate::adapters::device_clock::GatewayZone;
use crate::model::TimeFrom;
use chrono::FixedOffset;
use proptest::prelude::*;

fn hx(s: &str) -> Vec<u8> {
    parse_hex(&[s.to_string()]).unwrap()
}

fn hr(s: &str) -> HeartRateMeasurement {
    decode_heart_rate(&hx(s)).unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// The gateway's zone in these tests: UTC+01:00.
fn zone() -> GatewayZone {
    GatewayZone::Fixed(FixedOffset::east_opt(3600).unwrap())
}

/// Arrival at `t`, no device-clock offset measured yet.
fn at(t: DateTime<Utc>) -> TimeContext {
    TimeContext::new(t, zone())
}

#[test]
fn heart_rate_examples() {
    let m = hr("06 48");
    assert_eq!((m.heart_rate, m.sensor_contact, m.uint16_format), (72, SensorContact::Detected, false));
    assert!(m.rr_intervals_ms.is_empty() && m.energy_expended_kj.is_none());

    let m = hr("16 4B 2E 03");
    assert_eq!(m.heart_rate, 75);
    assert_eq!(m.sensor_contact, SensorContact::Detected);
    assert_eq!(m.rr_intervals_ms, vec![814.0 * 1000.0 / 1024.0]);
    assert!((m.rr_intervals_ms[0] - 794.9).abs() < 0.05);

    let m = hr("14 3C 00 04 1A 04");
    assert_eq!(m.heart_rate, 60);
    assert_eq!(m.sensor_contact, SensorContact::NotDetected);
    assert_eq!(m.rr_intervals_ms, vec![1000.0, 1050.0 * 1000.0 / 1024.0]);
    assert!((m.rr_intervals_ms[1] - 1025.4).abs() < 0.05);

    let m = hr("19 B4 00 2C 01 55 01");
    assert_eq!(m.heart_rate, 180);
    assert!(m.uint16_format);
    assert_eq!(m.sensor_contact, SensorContact::NotSupported);
    assert_eq!(m.energy_expended_kj, Some(300));
    assert!((m.rr_intervals_ms[0] - 333.0).abs() < 0.05);

    let m = hr("01 E0 00");
    assert_eq!(m.heart_rate, 224);
}

#[test]
fn heart_rate_readings_carry_units_flags_and_order() {
    let d = decode(Characteristic::HeartRateMeasurement, &hx("14 3C 00 04 1A 04")).unwrap();
    let rs = d.to_readings("strap", DeviceKind::HeartRateStrap, &at(t0()));
    let kinds: Vec<_> = rs.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![ReadingType::HeartRate, ReadingType::RrInterval, ReadingType::RrInterval]);
    assert_eq!(rs[0].values.get("heartRate"), Some(&60.0));
    assert_eq!(rs[0].units.get("heartRate").map(String::as_str), Some("/min"));
    assert_eq!(rs[1].values.get("rrInterval"), Some(&1000.0));
    assert_eq!(rs[1].units.get("rrInterval").map(String::as_str), Some("ms"));
    assert!(rs.iter().all(|r| r.flags == vec![Flag::SensorContactLost]));

    let d = decode(Characteristic::HeartRateMeasurement, &hx("19 B4 00 2C 01 55 01")).unwrap();
    let rs = d.to_readings("strap", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(rs[1].kind, ReadingType::EnergyExpended);
    assert_eq!(rs[1].values.get("energyExpended"), Some(&300.0));
    assert_eq!(rs[1].units.get("energyExpended").map(String::as_str), Some("kJ"));
    assert!(rs.iter().all(|r| r.flags.is_empty()));
}

#[test]
fn heart_rate_malformed() {
    let e = decode_heart_rate(&[]).unwrap_err();
    assert!(matches!(e, GattError::Empty { .. }));
    let e = decode_heart_rate(&hx("16")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "heartRate", offset: 1, need: 1, len: 1, .. }), "{e}");
    let e = decode_heart_rate(&hx("01 E0")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "heartRate", need: 2, .. }));
    assert!(e.to_string().contains("heart-rate-measurement"), "{e}");
}

#[test]
fn sfloat_specials_and_values() {
    assert_eq!(SFloat::from_raw(0x07FF), SFloat::Nan);
    assert_eq!(SFloat::from_raw(0x0800), SFloat::Nres);
    assert_eq!(SFloat::from_raw(0x07FE), SFloat::PositiveInfinity);
    assert_eq!(SFloat::from_raw(0x0802), SFloat::NegativeInfinity);
    assert_eq!(SFloat::from_raw(0x0801), SFloat::Reserved);
    assert_eq!(SFloat::from_raw(0x0062), SFloat::Value(98.0));
    assert_eq!(SFloat::from_raw(0xF3CF), SFloat::Value(97.5));
    assert_eq!(SFloat::from_raw(0xF2D0), SFloat::Value(72.0));
    assert_eq!(SFloat::from_raw(0xF022), SFloat::Value(3.4));
    // Negative mantissa: 0x0FFF = -1 * 10^0.
    assert_eq!(SFloat::from_raw(0x0FFF), SFloat::Value(-1.0));
    // Positive exponent: 0x1005 = 5 * 10^1.
    assert_eq!(SFloat::from_raw(0x1005), SFloat::Value(50.0));
}

fn values(rs: &[Reading]) -> Vec<(ReadingType, Option<f64>, Vec<Flag>)> {
    rs.iter().map(|r| (r.kind, r.primary_value(), r.flags.clone())).collect()
}

#[test]
fn plx_continuous_examples() {
    let ox = DeviceKind::PulseOximeter;
    let d = decode(Characteristic::PlxContinuous, &hx("00 62 00 48 00")).unwrap();
    assert_eq!(
        values(&d.to_readings("ox", ox, &at(t0()))),
        vec![(ReadingType::Spo2, Some(98.0), vec![]), (ReadingType::PulseRate, Some(72.0), vec![])]
    );
    let rs = d.to_readings("ox", ox, &at(t0()));
    assert!(rs.iter().all(|r| !r.spot_check), "continuous readings are not spot-checks");
    assert_eq!(rs[0].units.get("spo2").map(String::as_str), Some("%"));
    assert_eq!(rs[1].units.get("pulseRate").map(String::as_str), Some("/min"));

    let m = decode_plx_continuous(&hx("14 CF F3 D0 F2 20 00 22 F0")).unwrap();
    assert_eq!(m.normal.spo2, SFloat::Value(97.5));
    assert_eq!(m.normal.pulse_rate, SFloat::Value(72.0));
    assert_eq!(m.measurement_status.as_ref().map(|s| s.set.clone()), Some(vec!["measurementOngoing"]));
    assert_eq!(m.pulse_amplitude_index, Some(SFloat::Value(3.4)));
    let rs = Decoded::PlxContinuous(m).to_readings("ox", ox, &at(t0()));
    assert_eq!(rs[2].kind, ReadingType::PerfusionIndex);
    assert_eq!(rs[2].values.get("perfusionIndex"), Some(&3.4));

    // Finger out.
    let d = decode(Characteristic::PlxContinuous, &hx("08 FF 07 FF 07 00 80 00")).unwrap();
    let rs = d.to_readings("ox", ox, &at(t0()));
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert!(r.values.is_empty(), "no number for an unavailable value");
        assert_eq!(r.flags, vec![Flag::ValueUnavailable, Flag::SensorDisconnected]);
    }

    let d = decode(Characteristic::PlxContinuous, &hx("03 61 00 4A 00 60 00 4C 00 62 00 48 00")).unwrap();
    let rs = d.to_readings("ox", ox, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![(ReadingType::Spo2, Some(97.0), vec![]), (ReadingType::PulseRate, Some(74.0), vec![])],
        "Fast/Slow pairs are values of the normal readings, not readings with the same time"
    );
    assert_eq!(rs[0].values.get("spo2Fast"), Some(&96.0));
    assert_eq!(rs[0].values.get("spo2Slow"), Some(&98.0));
    assert_eq!(rs[1].values.get("pulseRateFast"), Some(&76.0));
    assert_eq!(rs[1].values.get("pulseRateSlow"), Some(&72.0));
    assert_eq!(rs[0].units.get("spo2Slow").map(String::as_str), Some("%"));
    assert_eq!(rs[1].units.get("pulseRateFast").map(String::as_str), Some("/min"));
}

#[test]
fn plx_spot_check_examples() {
    let ox = DeviceKind::PulseOximeter;
    let d = decode(Characteristic::PlxSpotCheck, &hx("00 62 00 48 00")).unwrap();
    assert_eq!(
        values(&d.to_readings("ox", ox, &at(t0()))),
        vec![(ReadingType::Spo2, Some(98.0), vec![]), (ReadingType::PulseRate, Some(72.0), vec![])]
    );

    let m = decode_plx_spot_check(&hx("01 61 00 4E 00 E9 07 03 0E 09 1A 35")).unwrap();
    assert_eq!(m.timestamp, Some(DateTimeFields { year: 2025, month: 3, day: 14, hours: 9, minutes: 26, seconds: 53 }));
    let rs = Decoded::PlxSpotCheck(m).to_readings("ox", ox, &at(t0()));
    assert!(rs.iter().all(|r| r.spot_check), "every reading of a spot-check is marked");
    assert_eq!(rs[0].values.get("spo2"), Some(&97.0));
    assert_eq!(rs[1].values.get("pulseRate"), Some(&78.0));
    // Live (no "from storage"): timed at arrival; the device clock is kept, labelled.
    let local = NaiveDate::from_ymd_opt(2025, 3, 14).unwrap().and_hms_opt(9, 26, 53).unwrap();
    let offset = (local.and_utc() - t0()).num_seconds();
    let expected = crate::model::DeviceTime { local, time_from: TimeFrom::Arrival, utc_offset_seconds: Some(offset) };
    assert!(rs.iter().all(|r| r.device_time == Some(expected) && r.time == t0()));

    let m = decode_plx_spot_check(&hx("12 5F 00 58 00 80 00")).unwrap();
    assert!(m.device_clock_not_set);
    assert_eq!(m.measurement_status.as_ref().map(|s| s.set.clone()), Some(vec!["validatedData"]));
    let rs = Decoded::PlxSpotCheck(m).to_readings("ox", ox, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![(ReadingType::Spo2, Some(95.0), vec![Flag::DeviceClockNotSet]), (ReadingType::PulseRate, Some(88.0), vec![Flag::DeviceClockNotSet])]
    );
    assert!(rs.iter().all(|r| r.device_time.is_none()));

    let d = decode(Characteristic::PlxSpotCheck, &hx("08 62 00 00 08 1E F0")).unwrap();
    assert_eq!(
        values(&d.to_readings("ox", ox, &at(t0()))),
        vec![
            (ReadingType::Spo2, Some(98.0), vec![]),
            (ReadingType::PulseRate, None, vec![Flag::ValueUnavailable]),
            (ReadingType::PerfusionIndex, Some(3.0), vec![]),
        ]
    );
}

#[test]
fn plx_features_examples() {
    let f = decode_plx_features(&hx("00 00")).unwrap();
    assert_eq!(f.raw, 0);
    assert!(f.supported_measurement_status.is_none() && f.supported_device_and_sensor_status.is_none());

    let f = decode_plx_features(&hx("03 00 E0 FF FF FF 00")).unwrap();
    assert_eq!(f.supported_measurement_status.as_ref().map(|s| s.raw), Some(0xFFE0));
    assert_eq!(f.supported_measurement_status.as_ref().map(|s| s.set.len()), Some(11));
    assert_eq!(f.supported_device_and_sensor_status.as_ref().map(|s| s.raw), Some(0x00FFFF));
    assert_eq!(f.supported_device_and_sensor_status.as_ref().map(|s| s.set.len()), Some(16));

    let f = decode_plx_features(&hx("5C 00")).unwrap();
    assert!(f.spot_check_measurement_storage && f.spot_check_timestamp && f.spo2pr_fast && f.pulse_amplitude_index);
    assert!(!f.spo2pr_slow && !f.multiple_bonds && !f.measurement_status_support);

    let f = decode_plx_features(&hx("01 00 E0 01")).unwrap();
    assert_eq!(
        f.supported_measurement_status.map(|s| s.set),
        Some(vec!["measurementOngoing", "earlyEstimatedData", "validatedData", "fullyQualifiedData"])
    );

    // Bit1 set but the u24 is missing.
    let e = decode_plx_features(&hx("1A 00")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "deviceAndSensorStatusSupport", .. }), "{e}");
    let e = decode_plx_continuous(&hx("08 62 00 48 00 00")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "deviceAndSensorStatus", .. }), "{e}");
    let e = decode_plx_spot_check(&hx("01 61 00 4E 00 E9 07 03")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "timestamp.day", .. }), "{e}");
}

#[test]
fn battery_location_and_device_information() {
    let d = decode(Characteristic::BatteryLevel, &hx("5A")).unwrap();
    assert_eq!(d, Decoded::BatteryLevel { percent: 90 });
    let rs = d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(rs[0].values.get("batteryLevel"), Some(&90.0));
    assert_eq!(rs[0].units.get("batteryLevel").map(String::as_str), Some("%"));
    assert!(matches!(decode(Characteristic::BatteryLevel, &hx("65")), Err(GattError::OutOfRange { value: 101, .. })));
    assert!(matches!(decode(Characteristic::BatteryLevel, &[]), Err(GattError::Empty { .. })));

    let d = decode(Characteristic::BodySensorLocation, &hx("01")).unwrap();
    assert_eq!(d, Decoded::BodySensorLocation { location: BodySensorLocation::Chest });
    assert!(d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0())).is_empty());

    let d = decode(Characteristic::ManufacturerName, b"Acme Medical").unwrap();
    assert_eq!(d, Decoded::DeviceInformation { field: Characteristic::ManufacturerName, text: "Acme Medical".into() });
    let d = decode(Characteristic::SerialNumber, b"SN0001\0").unwrap();
    assert_eq!(d, Decoded::DeviceInformation { field: Characteristic::SerialNumber, text: "SN0001".into() });
    assert!(matches!(decode(Characteristic::ModelNumber, &[0xFF, 0xFE]), Err(GattError::NotUtf8 { .. })));
}

#[test]
fn characteristic_names_and_uuids() {
    for c in Characteristic::ALL {
        assert_eq!(Characteristic::parse(c.name()), Some(c));
        assert_eq!(Characteristic::parse(&format!("{:04x}", c.uuid16())), Some(c));
        assert_eq!(Characteristic::parse(&format!("0x{:04X}", c.uuid16())), Some(c));
        assert_eq!(Characteristic::parse(&c.uuid().to_string()), Some(c));
        assert_eq!(Characteristic::from_uuid(&c.uuid()), Some(c));
    }
    assert_eq!(sig_uuid(0x2A37).to_string(), "00002a37-0000-1000-8000-00805f9b34fb");
    assert_eq!(Characteristic::parse("heart_rate_measurement"), Some(Characteristic::HeartRateMeasurement));
    assert_eq!(Characteristic::parse("2a39"), None);
    assert_eq!(Characteristic::parse("nonsense"), None);
    assert_eq!(sig_uuid16(&uuid::Uuid::from_u128(0x1234_5678_0000_1000_8000_0080_5f9b_34fb)), None);
}

#[test]
fn hex_input_forms() {
    assert_eq!(parse_hex(&["16 4B 2E 03".into()]).unwrap(), vec![0x16, 0x4B, 0x2E, 0x03]);
    assert_eq!(parse_hex(&["164b2e03".into()]).unwrap(), vec![0x16, 0x4B, 0x2E, 0x03]);
    assert_eq!(parse_hex(&["16".into(), "4B".into(), "2e03".into()]).unwrap(), vec![0x16, 0x4B, 0x2E, 0x03]);
    assert_eq!(parse_hex(&["0x16,0x4b".into()]).unwrap(), vec![0x16, 0x4B]);
    assert_eq!(parse_hex(&["6 48".into()]).unwrap(), vec![0x06, 0x48]);
    assert!(parse_hex(&["16 4G".into()]).unwrap_err().contains("`G`"));
    assert!(parse_hex(&["164".into()]).unwrap_err().contains("odd"));
    assert!(parse_hex(&[]).is_err());
}

fn flags_of(ch: Characteristic, bytes: &str) -> Vec<Vec<Flag>> {
    let d = decode(ch, &hx(bytes)).unwrap();
    d.to_readings("x", DeviceKind::PulseOximeter, &at(t0())).into_iter().map(|r| r.flags).collect()
}

// ---- Every bit that says "not a valid measurement", every sentinel.

#[test]
fn invalid_is_kept_apart_from_questionable() {
    // PLX spot-check, Measurement Status bit 15 "Invalid Measurement Detected".
    let d = decode(Characteristic::PlxSpotCheck, &hx("02 62 00 48 00 00 80")).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![(ReadingType::Spo2, Some(98.0), vec![Flag::Invalid]), (ReadingType::PulseRate, Some(72.0), vec![Flag::Invalid])],
        "the values travel, flagged invalid (not questionable)"
    );
    // Bit 14 alone is questionable, not invalid.
    assert_eq!(flags_of(Characteristic::PlxSpotCheck, "02 62 00 48 00 00 40"), vec![vec![Flag::Questionable]; 2]);
    let json = serde_json::to_value(&rs[0]).unwrap();
    assert_eq!(json["flags"], serde_json::json!(["invalid"]));
}

#[test]
fn demo_and_contact_lost_are_flagged() {
    // PLX continuous, Measurement Status bit 10 "Data for Demonstration".
    assert_eq!(flags_of(Characteristic::PlxContinuous, "04 62 00 48 00 00 04"), vec![vec![Flag::TestData]; 2]);
    // Heart rate, contact supported but not detected: the value is kept, flagged.
    let d = decode(Characteristic::HeartRateMeasurement, &hx("04 50")).unwrap();
    let rs = d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(values(&rs), vec![(ReadingType::HeartRate, Some(80.0), vec![Flag::SensorContactLost])]);
}

/// Every named bit of both PLX status words, one at a time, in a spot-check and
/// a continuous measurement: the flag it sets (or none), per the table in
/// docs/message-format.md.
#[test]
fn every_plx_status_bit_maps_to_its_flag() {
    use Flag::*;
    let ms: [(u8, Option<Flag>); 16] = [
        (0, None),
        (1, None),
        (2, None),
        (3, None),
        (4, None),
        (5, None), // measurement ongoing: the device is measuring
        (6, Some(EarlyEstimate)),
        (7, None),
        (8, None), // validated, fully qualified
        (9, None), // from storage: the time rule (no status flag when its time is known)
        (10, Some(TestData)),
        (11, Some(TestData)),
        (12, Some(CalibrationOngoing)),
        (13, Some(ValueUnavailable)),
        (14, Some(Questionable)),
        (15, Some(Invalid)),
    ];
    for (bit, flag) in ms {
        let w = (1u16 << bit).to_le_bytes();
        // Spot-check with a timestamp so that bit 9 (stored) has a known time.
        let spot = format!("03 62 00 48 00 E9 07 03 04 05 06 07 {:02X} {:02X}", w[0], w[1]);
        let d = decode(Characteristic::PlxSpotCheck, &hx(&spot)).unwrap();
        let after = crate::model::time::parse("2026-01-01T00:00:00Z").unwrap();
        let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(after).with_offset(Some(0)));
        let want: Vec<Flag> = flag.into_iter().collect();
        for r in &rs {
            assert_eq!(r.flags, want, "measurement status bit {bit} (spot-check)");
            // The value travels unless the bit says it is unavailable.
            assert_eq!(r.values.is_empty(), flag == Some(ValueUnavailable), "bit {bit}");
        }
        if bit != 9 {
            let cont = format!("04 62 00 48 00 {:02X} {:02X}", w[0], w[1]);
            assert_eq!(flags_of(Characteristic::PlxContinuous, &cont), vec![want.clone(); 2], "bit {bit} (continuous)");
        }
    }
    let dss: [(u8, Option<Flag>); 24] = [
        (0, None), // extended display update: about the display
        (1, Some(DeviceMalfunction)),
        (2, Some(SignalIrregular)),
        (3, Some(SignalIrregular)),
        (4, Some(SignalIrregular)),
        (5, Some(LowPerfusion)),
        (6, Some(SignalIrregular)),
        (7, Some(SignalIrregular)),
        (8, Some(Questionable)),
        (9, Some(EarlyEstimate)),
        (10, Some(SignalIrregular)),
        (11, Some(SensorDisconnected)),
        (12, Some(Questionable)),
        (13, Some(Questionable)),
        (14, Some(DeviceMalfunction)),
        (15, Some(SensorDisconnected)),
        (16, None),
        (17, None),
        (18, None),
        (19, None),
        (20, None),
        (21, None),
        (22, None),
        (23, None),
    ];
    for (bit, flag) in dss {
        let w = (1u32 << bit).to_le_bytes();
        let want: Vec<Flag> = flag.into_iter().collect();
        let spot = format!("04 62 00 48 00 {:02X} {:02X} {:02X}", w[0], w[1], w[2]);
        assert_eq!(flags_of(Characteristic::PlxSpotCheck, &spot), vec![want.clone(); 2], "dss bit {bit} (spot-check)");
        let cont = format!("08 62 00 48 00 {:02X} {:02X} {:02X}", w[0], w[1], w[2]);
        assert_eq!(flags_of(Characteristic::PlxContinuous, &cont), vec![want; 2], "dss bit {bit} (continuous)");
    }
}

#[test]
fn heart_rate_sentinels_give_no_value() {
    // 0 /min from a strap is "no signal", in both formats.
    for bytes in ["00 00", "01 00 00", "06 00"] {
        let d = decode(Characteristic::HeartRateMeasurement, &hx(bytes)).unwrap();
        let rs = d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
        assert_eq!(rs[0].kind, ReadingType::HeartRate);
        assert!(rs[0].values.is_empty(), "{bytes}: no 0 /min value");
        assert_eq!(rs[0].flags, vec![Flag::ValueUnavailable], "{bytes}");
    }
    // Energy Expended 0xFFFF: "65535 kJ or more" (HRS 1.0), not a value.
    let d = decode(Characteristic::HeartRateMeasurement, &hx("08 48 FF FF")).unwrap();
    let rs = d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(values(&rs), vec![(ReadingType::HeartRate, Some(72.0), vec![]), (ReadingType::EnergyExpended, None, vec![Flag::ValueUnavailable])]);
    let d = decode(Characteristic::HeartRateMeasurement, &hx("08 48 FE FF")).unwrap();
    assert_eq!(d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()))[1].primary_value(), Some(65534.0));
    // An RR interval of 0 is not a beat; its neighbours are kept.
    let d = decode(Characteristic::HeartRateMeasurement, &hx("10 48 00 00 00 04")).unwrap();
    let rs = d.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![
            (ReadingType::HeartRate, Some(72.0), vec![]),
            (ReadingType::RrInterval, None, vec![Flag::ValueUnavailable]),
            (ReadingType::RrInterval, Some(1000.0), vec![]),
        ]
    );
}

#[test]
fn plx_sfloat_sentinels_give_no_value() {
    for raw in ["FF 07", "00 08", "FE 07", "02 08", "01 08"] {
        let d = decode(Characteristic::PlxContinuous, &hx(&format!("10 {raw} 48 00 {raw}"))).unwrap();
        let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
        assert_eq!(
            values(&rs),
            vec![
                (ReadingType::Spo2, None, vec![Flag::ValueUnavailable]),
                (ReadingType::PulseRate, Some(72.0), vec![]),
                (ReadingType::PerfusionIndex, None, vec![Flag::ValueUnavailable]),
            ],
            "{raw}"
        );
    }
}

/// Every SFLOAT special value (IEEE 11073-20601: 0x07FF NaN, 0x0800 NRes,
/// 0x07FE +INF, 0x0802 -INF, 0x0801 reserved) in every SFLOAT field of both
/// PLX measurements gives no number: the normal SpO2 or pulse rate and PAI
/// become `valueUnavailable`; a Fast/Slow value is left out of `values` (the
/// normal value it accompanies stays); never `outOfRange`.
#[test]
fn every_sfloat_special_value_in_every_field_is_unavailable() {
    let good = ["62 00", "48 00"];
    for raw in ["FF 07", "00 08", "FE 07", "02 08", "01 08"] {
        for (ch, flags, n_fields) in [(Characteristic::PlxContinuous, "13", 7), (Characteristic::PlxSpotCheck, "08", 3)] {
            for bad in 0..n_fields {
                // Fields in order: spo2, pulseRate, [spo2Fast, prFast, spo2Slow, prSlow,] PAI.
                let fields: Vec<&str> = (0..n_fields).map(|i| if i == bad { raw } else { good[i % 2] }).collect();
                let d = decode(ch, &hx(&format!("{flags} {}", fields.join(" ")))).unwrap();
                let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
                let all: Vec<(&str, f64)> = rs.iter().flat_map(|r| r.values.iter().map(|(n, v)| (n.as_str(), *v))).collect();
                assert_eq!(all.len(), n_fields - 1, "{ch} {raw} in field {bad}: {all:?}");
                assert!(all.iter().all(|(_, v)| *v == 98.0 || *v == 72.0), "{ch} {raw} in field {bad}: {all:?}");
                assert!(rs.iter().all(|r| !r.flags.contains(&Flag::OutOfRange)), "{ch} {raw} in field {bad}");
                let main = match bad {
                    0 => Some(0),
                    1 => Some(1),
                    b if b == n_fields - 1 => Some(2),
                    _ => None,
                };
                for (i, r) in rs.iter().enumerate() {
                    assert_eq!(r.flags.contains(&Flag::ValueUnavailable), main == Some(i), "{ch} {raw} in field {bad}: {r:?}");
                }
            }
        }
    }
}

/// The issue's oximeter (SpO2 1000 %, pulse rate -1 /min) and strap (65535
/// /min): the values are kept as sent and flagged `outOfRange`, in every
/// field that carries a number.
#[test]
fn values_no_body_can_have_are_flagged_out_of_range() {
    let d = decode(Characteristic::PlxContinuous, &hx("00 E8 03 FF 0F")).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![(ReadingType::Spo2, Some(1000.0), vec![Flag::OutOfRange]), (ReadingType::PulseRate, Some(-1.0), vec![Flag::OutOfRange])]
    );
    let d = decode(Characteristic::HeartRateMeasurement, &hx("19 FF FF 10 00 00 01 00 80")).unwrap();
    let rs = d.to_readings("strap", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(
        values(&rs),
        vec![
            (ReadingType::HeartRate, Some(65535.0), vec![Flag::OutOfRange]),
            (ReadingType::EnergyExpended, Some(16.0), vec![]),
            (ReadingType::RrInterval, Some(250.0), vec![]),
            (ReadingType::RrInterval, Some(32000.0), vec![Flag::OutOfRange]),
        ]
    );
    // A Fast or Slow value out of range flags its reading; PAI too (101 %).
    let d = decode(Characteristic::PlxContinuous, &hx("13 62 00 48 00 62 00 48 00 65 00 48 00 F5 F3")).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
    assert_eq!(rs[0].values.get("spo2Slow"), Some(&101.0));
    assert_eq!((rs[0].flags.clone(), rs[1].flags.clone()), (vec![Flag::OutOfRange], vec![]));
    assert_eq!((rs[2].kind, rs[2].primary_value(), rs[2].flags.clone()), (ReadingType::PerfusionIndex, Some(101.3), vec![Flag::OutOfRange]));
    // A spot-check too, beside the device's own flags.
    let d = decode(Characteristic::PlxSpotCheck, &hx("02 E8 03 48 00 00 40")).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
    assert_eq!(rs[0].flags, vec![Flag::OutOfRange, Flag::Questionable]);
    assert_eq!(rs[1].flags, vec![Flag::Questionable]);
}

/// Date Time fields 0 mean "not known" (GATT Specification Supplement, Date
/// Time); out-of-range fields cannot be a time either: the clock is not set.
#[test]
fn date_time_sentinels_mean_clock_not_set() {
    for ts in [
        "00 00 03 04 05 06 07",
        "E9 07 00 04 05 06 07",
        "E9 07 03 00 05 06 07",
        "E9 07 0D 04 05 06 07",
        "E9 07 02 1E 05 06 07",
        "E9 07 03 04 18 06 07",
        "E9 07 03 04 05 3C 07",
        "E9 07 03 04 05 06 3C",
        "2D 06 03 04 05 06 07",
    ] {
        // Live spot-check: arrival time, deviceClockNotSet, no device time.
        let d = decode(Characteristic::PlxSpotCheck, &hx(&format!("01 62 00 48 00 {ts}"))).unwrap();
        assert_eq!(d.clock_offset(t0()), None, "{ts}: nothing to measure");
        for r in d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()).with_offset(Some(0))) {
            assert_eq!((r.time, r.device_time, r.flags.clone()), (t0(), None, vec![Flag::DeviceClockNotSet]), "{ts}");
            assert!(r.primary_value().is_some());
        }
        // Stored: its time cannot be known.
        let d = decode(Characteristic::PlxSpotCheck, &hx(&format!("03 62 00 48 00 {ts} 00 02"))).unwrap();
        for r in d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()).with_offset(Some(0))) {
            assert_eq!(r.flags, vec![Flag::DeviceClockNotSet, Flag::TimeUnknown], "{ts}");
        }
    }
}

// ---- A stored measurement keeps its measurement time.

const STORED: &str = "03 62 00 48 00 E9 07 03 04 05 06 07 00 02";

fn utc(s: &str) -> DateTime<Utc> {
    crate::model::time::parse(s).unwrap()
}

#[test]
fn stored_spot_check_is_timed_by_the_measured_offset() {
    let arrival = utc("2025-03-06T12:00:00.000Z");
    let d = decode(Characteristic::PlxSpotCheck, &hx(STORED)).unwrap();
    assert_eq!(d.clock_offset(arrival), None, "a stored value measures no offset");
    // The device clock runs one hour ahead of UTC (measured on live readings).
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(arrival).with_offset(Some(3600)));
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert_eq!(crate::model::time::format(&r.time), "2025-03-04T04:06:07.000Z", "measurement time, not arrival");
        assert!(r.flags.is_empty(), "{:?}", r.flags);
        let dt = r.device_time.unwrap();
        assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::MeasuredOffset, Some(3600)));
    }
    let json = serde_json::to_value(&rs[0]).unwrap();
    assert_eq!(
        json["deviceTime"],
        serde_json::json!({"local": "2025-03-04T05:06:07", "timeFrom": "measuredOffset", "utcOffsetSeconds": 3600}),
        "the device clock is labelled as local, never with a Z"
    );
    assert_eq!(json["time"], "2025-03-04T04:06:07.000Z");
    // A clock that runs 7 min 30 s behind UTC.
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(arrival).with_offset(Some(-450)));
    assert_eq!(crate::model::time::format(&rs[0].time), "2025-03-04T05:13:37.000Z");
}

#[test]
fn stored_spot_check_without_measured_offset_uses_the_gateway_zone() {
    let arrival = utc("2025-03-06T12:00:00.000Z");
    let d = decode(Characteristic::PlxSpotCheck, &hx(STORED)).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(arrival));
    for r in &rs {
        assert_eq!(crate::model::time::format(&r.time), "2025-03-04T04:06:07.000Z");
        let dt = r.device_time.unwrap();
        assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::GatewayZone, Some(3600)), "says how it was converted");
        assert!(r.flags.is_empty());
    }
    // A zone where the conversion lands after the arrival: not a possible time.
    let early = utc("2025-03-04T03:00:00.000Z");
    for r in d.to_readings("ox", DeviceKind::PulseOximeter, &at(early)) {
        assert_eq!((r.time, r.flags.clone()), (early, vec![Flag::TimeUnknown]));
        assert_eq!(r.device_time.map(|t| t.time_from), Some(TimeFrom::Unknown));
    }
}

#[test]
fn live_timestamped_spot_check_keeps_arrival_and_measures_the_offset() {
    let arrival = utc("2025-03-04T04:06:09.000Z");
    // Same measurement, status 0: live.
    let d = decode(Characteristic::PlxSpotCheck, &hx("03 62 00 48 00 E9 07 03 04 05 06 07 00 00")).unwrap();
    assert_eq!(d.clock_offset(arrival), Some(3598));
    for r in d.to_readings("ox", DeviceKind::PulseOximeter, &at(arrival).with_offset(Some(-5))) {
        assert_eq!(r.time, arrival);
        assert_eq!(r.device_time.map(|t| (t.time_from, t.utc_offset_seconds)), Some((TimeFrom::Arrival, Some(3598))));
    }
    // The live offset then times a stored record from the same device.
    let stored = decode(Characteristic::PlxSpotCheck, &hx(STORED)).unwrap();
    let later = utc("2025-03-05T10:00:00.000Z");
    let rs = stored.to_readings("ox", DeviceKind::PulseOximeter, &at(later).with_offset(d.clock_offset(arrival)));
    assert_eq!(crate::model::time::format(&rs[0].time), "2025-03-04T04:06:09.000Z");
}

#[test]
fn stored_measurement_without_a_usable_time_is_flagged_time_unknown() {
    let arrival = utc("2025-03-06T12:00:00.000Z");
    let ctx = at(arrival).with_offset(Some(3600));
    // Clock-not-set bit with a plausible timestamp: the timestamp is not used.
    let d = decode(Characteristic::PlxSpotCheck, &hx("13 62 00 48 00 E9 07 03 04 05 06 07 00 02")).unwrap();
    for r in d.to_readings("ox", DeviceKind::PulseOximeter, &ctx) {
        assert_eq!((r.time, r.device_time), (arrival, None));
        assert_eq!(r.flags, vec![Flag::DeviceClockNotSet, Flag::TimeUnknown]);
    }
    // Stored without any timestamp.
    assert_eq!(flags_of(Characteristic::PlxSpotCheck, "02 62 00 48 00 00 02"), vec![vec![Flag::TimeUnknown]; 2]);
    // A continuous measurement from storage has no timestamp field at all.
    assert_eq!(flags_of(Characteristic::PlxContinuous, "14 62 00 48 00 00 02 1E F0"), vec![vec![Flag::TimeUnknown]; 3]);
    // Live, clock not set: arrival time, only deviceClockNotSet.
    assert_eq!(flags_of(Characteristic::PlxSpotCheck, "12 5F 00 58 00 80 00"), vec![vec![Flag::DeviceClockNotSet]; 2]);
}

#[test]
fn device_time_from_before_it_was_labelled_still_reads() {
    // Readings already in an outbox carry the old form: a string with Z.
    let old = r#"{"seq":3,"deviceId":"ox","deviceKind":"pulseOximeter","type":"spo2","time":"2026-11-21T10:00:00.000Z",
                 "deviceTime":"2025-03-14T09:26:53.000Z","values":{"spo2":97.0},"units":{"spo2":"%"},"spotCheck":true}"#;
    let r: Reading = serde_json::from_str(old).unwrap();
    let dt = r.device_time.unwrap();
    assert_eq!(dt.local, NaiveDate::from_ymd_opt(2025, 3, 14).unwrap().and_hms_opt(9, 26, 53).unwrap());
    assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::Arrival, None));
    let back: Reading = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r, "the new form round-trips");
}

// ---- Complete fields are kept, extra bytes counted.

#[test]
fn stray_byte_after_rr_intervals_keeps_the_beats() {
    for (n, bytes) in ["10 3e b1 03 de", "10 3e b1 03 b1 03 de", "10 3e b1 03 b1 03 b1 03 de"].iter().enumerate() {
        let v = decode_value(Characteristic::HeartRateMeasurement, &hx(bytes)).unwrap();
        assert_eq!(v.extra_bytes, Some(ExtraBytes { count: 1, cut_field: Some("rrInterval") }), "{bytes}");
        let rs = v.decoded.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
        assert_eq!(rs.len(), 2 + n, "{bytes}: heart rate and {} RR", n + 1);
        assert_eq!(rs[0].values.get("heartRate"), Some(&62.0));
        for r in &rs[1..] {
            // 0x03B1 = 945 / 1024 s = 922.8515625 ms (kept unrounded; 922.9 to one decimal).
            assert_eq!(r.values.get("rrInterval"), Some(&(945.0 * 1000.0 / 1024.0)));
            assert!(r.flags.is_empty());
        }
    }
    // The same with Energy Expended and 16-bit heart rate.
    let v = decode_value(Characteristic::HeartRateMeasurement, &hx("19 B4 00 2C 01 55 01 7F")).unwrap();
    assert_eq!(v.extra_bytes.map(|e| e.count), Some(1));
    let rs = v.decoded.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(rs.iter().map(|r| r.kind).collect::<Vec<_>>(), vec![ReadingType::HeartRate, ReadingType::EnergyExpended, ReadingType::RrInterval]);
    // A cut Energy Expended (nothing depends on it): heart rate kept, byte counted.
    let v = decode_value(Characteristic::HeartRateMeasurement, &hx("18 48 2C")).unwrap();
    assert_eq!(v.extra_bytes, Some(ExtraBytes { count: 1, cut_field: Some("energyExpended") }));
    let rs = v.decoded.to_readings("s", DeviceKind::HeartRateStrap, &at(t0()));
    assert_eq!(values(&rs), vec![(ReadingType::HeartRate, Some(72.0), vec![])]);
    // A complete value has nothing extra.
    assert_eq!(decode_value(Characteristic::HeartRateMeasurement, &hx("16 4B 2E 03")).unwrap().extra_bytes, None);
}

/// The per-field table of docs/ble.md: what is cut-and-useless (rejected) and
/// what is complete-plus-extra (kept, the extra counted), per characteristic.
#[test]
fn complete_fields_kept_cut_qualifiers_rejected() {
    let extra = |ch, b: &str| decode_value(ch, &hx(b)).map(|v| v.extra_bytes);
    let cut = |ch, b: &str| match decode_value(ch, &hx(b)) {
        Err(GattError::Truncated { field, .. }) => field,
        other => panic!("{b}: expected a truncation, got {other:?}"),
    };
    use Characteristic::*;
    // Heart rate: flags and value are the core.
    assert_eq!(cut(HeartRateMeasurement, "10"), "heartRate");
    assert_eq!(cut(HeartRateMeasurement, "11 3E"), "heartRate");
    assert_eq!(extra(HeartRateMeasurement, "06 48 00"), Ok(Some(ExtraBytes { count: 1, cut_field: None })));
    // PLX Continuous: the normal pair is the core; status fields qualify the values.
    assert_eq!(cut(PlxContinuous, "00 62 00 48"), "pulseRate");
    assert_eq!(extra(PlxContinuous, "00 62 00 48 00 AA"), Ok(Some(ExtraBytes { count: 1, cut_field: None })));
    assert_eq!(extra(PlxContinuous, "01 62 00 48 00 61 00"), Ok(Some(ExtraBytes { count: 2, cut_field: Some("spo2PrFast") })));
    assert_eq!(cut(PlxContinuous, "05 62 00 48 00 61 00 20"), "spo2PrFast", "a cut pair before a status word rejects");
    assert_eq!(cut(PlxContinuous, "04 62 00 48 00 20"), "measurementStatus");
    assert_eq!(extra(PlxContinuous, "14 62 00 48 00 20 00 1E"), Ok(Some(ExtraBytes { count: 1, cut_field: Some("pulseAmplitudeIndex") })));
    let d = decode(PlxContinuous, &hx("11 62 00 48 00 61 00")).unwrap();
    let rs = d.to_readings("ox", DeviceKind::PulseOximeter, &at(t0()));
    assert_eq!(values(&rs), vec![(ReadingType::Spo2, Some(98.0), vec![]), (ReadingType::PulseRate, Some(72.0), vec![])]);
    assert!(!rs[0].values.contains_key("spo2Fast"), "a cut pair is dropped whole");
    // PLX Spot-check: timestamp and status fields are required when announced.
    assert_eq!(cut(PlxSpotCheck, "01 62 00 48 00 E9 07 03 04 05 06"), "timestamp.seconds");
    assert_eq!(cut(PlxSpotCheck, "02 62 00 48 00 00"), "measurementStatus");
    assert_eq!(cut(PlxSpotCheck, "04 62 00 48 00 00 00"), "deviceAndSensorStatus");
    assert_eq!(extra(PlxSpotCheck, "08 62 00 48 00 1E"), Ok(Some(ExtraBytes { count: 1, cut_field: Some("pulseAmplitudeIndex") })));
    assert_eq!(extra(PlxSpotCheck, "00 62 00 48 00 00 00"), Ok(Some(ExtraBytes { count: 2, cut_field: None })));
    // Features, battery, location: the fields are required, the rest extra.
    assert_eq!(cut(PlxFeatures, "01 00 E0"), "measurementStatusSupport");
    assert_eq!(extra(PlxFeatures, "00 00 FF"), Ok(Some(ExtraBytes { count: 1, cut_field: None })));
    assert_eq!(extra(BatteryLevel, "5A 00"), Ok(Some(ExtraBytes { count: 1, cut_field: None })));
    assert_eq!(extra(BodySensorLocation, "01 00 00"), Ok(Some(ExtraBytes { count: 2, cut_field: None })));
    assert_eq!(extra(ManufacturerName, "41 63 6D 65 00"), Ok(None), "a string has no extra bytes");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes give readings or a typed error, never a panic; and whatever
    /// decodes yields readings whose values are finite and have units.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        for c in Characteristic::ALL {
            if let Ok(d) = decode(c, &bytes) {
                for r in d.to_readings("x", DeviceKind::Other, &at(t0())) {
                    for (name, v) in &r.values {
                        prop_assert!(v.is_finite());
                        prop_assert!(r.units.contains_key(name));
                    }
                    prop_assert_eq!(
                        r.flags.contains(&Flag::OutOfRange),
                        r.values.values().any(|v| !crate::model::is_plausible(r.kind, *v)),
                        "outOfRange exactly when a value is outside the table: {:?}", r
                    );
                    if r.values.is_empty() {
                        prop_assert!(r.flags.contains(&Flag::ValueUnavailable));
                    }
                }
                prop_assert!(serde_json::to_string(&d).is_ok());
            }
            if let Ok(v) = decode_value(c, &bytes) {
                let extra = v.extra_bytes.map(|e| e.count).unwrap_or(0);
                prop_assert!(extra == 0 || extra < bytes.len(), "extra bytes are never the whole value");
                // With a measured offset too: a stored time is never after arrival
                // (beyond the tolerance), and an unknown time is the arrival time.
                let ctx = at(t0()).with_offset(Some(-86_400));
                for r in v.decoded.to_readings("x", DeviceKind::Other, &ctx) {
                    prop_assert!(r.time <= t0() + chrono::Duration::seconds(crate::adapters::device_clock::FUTURE_TOLERANCE_SECONDS));
                    if r.flags.contains(&Flag::TimeUnknown) {
                        prop_assert_eq!(r.time, t0());
                    }
                }
            }
        }
    }

    /// Whatever numbers a device puts in the fields that carry them (heart
    /// rate uint8/uint16, Energy Expended, RR intervals, every PLX SFLOAT:
    /// normal, Fast and Slow pairs, PAI, in both PLX measurements), a reading
    /// holds a value outside [`crate::model::PLAUSIBLE_RANGES`] if and only if
    /// it is flagged `outOfRange`, and the value is the one sent (not clamped).
    #[test]
    fn no_value_outside_the_table_lacks_the_flag(hr in any::<u16>(), ee in any::<u16>(), rr in proptest::collection::vec(any::<u16>(), 0..6),
                                                 sf in proptest::collection::vec(any::<u16>(), 7), status in any::<u16>()) {
        let mut strap = vec![0x19];
        strap.extend(hr.to_le_bytes());
        strap.extend(ee.to_le_bytes());
        for r in &rr { strap.extend(r.to_le_bytes()); }
        let mut cont = vec![0x17];
        for v in &sf[..6] { cont.extend(v.to_le_bytes()); }
        cont.extend(status.to_le_bytes());
        cont.extend(sf[6].to_le_bytes());
        let mut spot = vec![0x0A];
        for v in &sf[..2] { spot.extend(v.to_le_bytes()); }
        spot.extend(status.to_le_bytes());
        spot.extend(sf[6].to_le_bytes());
        let mut numbers = 0;
        for (c, b) in [(Characteristic::HeartRateMeasurement, strap), (Characteristic::PlxContinuous, cont), (Characteristic::PlxSpotCheck, spot)] {
            let d = decode(c, &b).unwrap();
            for r in d.to_readings("x", DeviceKind::Other, &at(t0())) {
                let outside = r.values.values().any(|v| !crate::model::is_plausible(r.kind, *v));
                prop_assert_eq!(r.flags.contains(&Flag::OutOfRange), outside, "{} {:?}", c, r);
                numbers += r.values.len();
            }
        }
        // Values are kept as sent: the SFLOATs that are numbers all appear.
        let sent = |raw: u16| SFloat::from_raw(raw).value();
        let d = decode(Characteristic::PlxContinuous, &{ let mut b = vec![0x01]; for v in &sf[..4] { b.extend(v.to_le_bytes()); } b }).unwrap();
        let rs = d.to_readings("x", DeviceKind::Other, &at(t0()));
        if let Some(v) = sent(sf[0]) { prop_assert_eq!(rs[0].values.get("spo2"), Some(&v)); }
        if let Some(v) = sent(sf[3]) { prop_assert_eq!(rs[1].values.get("pulseRateFast"), Some(&v)); }
        prop_assert!(numbers > 0 || hr == 0);
    }

    /// A complete heart-rate value followed by one stray byte keeps every field
    /// of the complete value.
    #[test]
    fn one_stray_byte_costs_nothing_but_itself(hr in 1u8..=255, rr in proptest::collection::vec(1u16.., 1..6), stray in any::<u8>()) {
        let mut b = vec![0x10, hr];
        for r in &rr { b.extend(r.to_le_bytes()); }
        let whole = decode_value(Characteristic::HeartRateMeasurement, &b).unwrap();
        b.push(stray);
        let v = decode_value(Characteristic::HeartRateMeasurement, &b).unwrap();
        prop_assert_eq!(v.decoded, whole.decoded);
        prop_assert_eq!(v.extra_bytes, Some(ExtraBytes { count: 1, cut_field: Some("rrInterval") }));
    }

    /// Heart-rate values we encode come back unchanged.
    #[test]
    fn heart_rate_round_trip(hr16 in any::<bool>(), value in any::<u16>(), ee in proptest::option::of(any::<u16>()),
                             rr in proptest::collection::vec(any::<u16>(), 0..8), contact in 0u8..3) {
        let value = if hr16 { value } else { value & 0xFF };
        let mut flags = hr16 as u8;
        flags |= match contact { 0 => 0, 1 => 0x06, _ => 0x04 };
        if ee.is_some() { flags |= 0x08; }
        if !rr.is_empty() { flags |= 0x10; }
        let mut b = vec![flags];
        if hr16 { b.extend(value.to_le_bytes()); } else { b.push(value as u8); }
        if let Some(e) = ee { b.extend(e.to_le_bytes()); }
        for r in &rr { b.extend(r.to_le_bytes()); }
        let m = decode_heart_rate(&b).unwrap();
        prop_assert_eq!(m.heart_rate, value);
        prop_assert_eq!(m.energy_expended_kj, ee);
        prop_assert_eq!(m.rr_intervals_ms.len(), rr.len());
        // Any strict prefix of a value with fields is an error, not a panic.
        for n in 0..b.len() {
            let _ = decode_heart_rate(&b[..n]);
        }
    }
}
