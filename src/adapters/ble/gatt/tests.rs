//! Decoder tests on the worked examples of shared/reference/ble-gatt-and-bluez.md,
//! plus a property test over arbitrary bytes.

use super::*;
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
    let rs = d.to_readings("strap", DeviceKind::HeartRateStrap, t0());
    let kinds: Vec<_> = rs.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![ReadingType::HeartRate, ReadingType::RrInterval, ReadingType::RrInterval]);
    assert_eq!(rs[0].values.get("heartRate"), Some(&60.0));
    assert_eq!(rs[0].units.get("heartRate").map(String::as_str), Some("/min"));
    assert_eq!(rs[1].values.get("rrInterval"), Some(&1000.0));
    assert_eq!(rs[1].units.get("rrInterval").map(String::as_str), Some("ms"));
    assert!(rs.iter().all(|r| r.flags == vec![Flag::SensorContactLost]));

    let d = decode(Characteristic::HeartRateMeasurement, &hx("19 B4 00 2C 01 55 01")).unwrap();
    let rs = d.to_readings("strap", DeviceKind::HeartRateStrap, t0());
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
    let e = decode_heart_rate(&hx("08 48 2C")).unwrap_err();
    assert!(matches!(e, GattError::Truncated { field: "energyExpended", .. }));
    let e = decode_heart_rate(&hx("16 4B 2E 03 01")).unwrap_err();
    assert!(matches!(e, GattError::OddRrBytes { count: 1, .. }));
    assert!(e.to_string().contains("heart-rate-measurement"));
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
        values(&d.to_readings("ox", ox, t0())),
        vec![(ReadingType::Spo2, Some(98.0), vec![]), (ReadingType::PulseRate, Some(72.0), vec![])]
    );
    let rs = d.to_readings("ox", ox, t0());
    assert!(rs.iter().all(|r| !r.spot_check), "continuous readings are not spot-checks");
    assert_eq!(rs[0].units.get("spo2").map(String::as_str), Some("%"));
    assert_eq!(rs[1].units.get("pulseRate").map(String::as_str), Some("/min"));

    let m = decode_plx_continuous(&hx("14 CF F3 D0 F2 20 00 22 F0")).unwrap();
    assert_eq!(m.normal.spo2, SFloat::Value(97.5));
    assert_eq!(m.normal.pulse_rate, SFloat::Value(72.0));
    assert_eq!(m.measurement_status.as_ref().map(|s| s.set.clone()), Some(vec!["measurementOngoing"]));
    assert_eq!(m.pulse_amplitude_index, Some(SFloat::Value(3.4)));
    let rs = Decoded::PlxContinuous(m).to_readings("ox", ox, t0());
    assert_eq!(rs[2].kind, ReadingType::PerfusionIndex);
    assert_eq!(rs[2].values.get("perfusionIndex"), Some(&3.4));

    // Finger out.
    let d = decode(Characteristic::PlxContinuous, &hx("08 FF 07 FF 07 00 80 00")).unwrap();
    let rs = d.to_readings("ox", ox, t0());
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert!(r.values.is_empty(), "no number for an unavailable value");
        assert_eq!(r.flags, vec![Flag::ValueUnavailable, Flag::SensorDisconnected]);
    }

    let d = decode(Characteristic::PlxContinuous, &hx("03 61 00 4A 00 60 00 4C 00 62 00 48 00")).unwrap();
    let rs = d.to_readings("ox", ox, t0());
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
        values(&d.to_readings("ox", ox, t0())),
        vec![(ReadingType::Spo2, Some(98.0), vec![]), (ReadingType::PulseRate, Some(72.0), vec![])]
    );

    let m = decode_plx_spot_check(&hx("01 61 00 4E 00 E9 07 03 0E 09 1A 35")).unwrap();
    assert_eq!(
        m.timestamp,
        Some(DateTimeFields { year: 2025, month: 3, day: 14, hours: 9, minutes: 26, seconds: 53 })
    );
    let rs = Decoded::PlxSpotCheck(m).to_readings("ox", ox, t0());
    assert!(rs.iter().all(|r| r.spot_check), "every reading of a spot-check is marked");
    assert_eq!(rs[0].values.get("spo2"), Some(&97.0));
    assert_eq!(rs[1].values.get("pulseRate"), Some(&78.0));
    let expected = NaiveDate::from_ymd_opt(2025, 3, 14).unwrap().and_hms_opt(9, 26, 53).unwrap().and_utc();
    assert!(rs.iter().all(|r| r.device_time == Some(expected) && r.time == t0()));

    let m = decode_plx_spot_check(&hx("12 5F 00 58 00 80 00")).unwrap();
    assert!(m.device_clock_not_set);
    assert_eq!(m.measurement_status.as_ref().map(|s| s.set.clone()), Some(vec!["validatedData"]));
    let rs = Decoded::PlxSpotCheck(m).to_readings("ox", ox, t0());
    assert_eq!(
        values(&rs),
        vec![
            (ReadingType::Spo2, Some(95.0), vec![Flag::DeviceClockNotSet]),
            (ReadingType::PulseRate, Some(88.0), vec![Flag::DeviceClockNotSet])
        ]
    );
    assert!(rs.iter().all(|r| r.device_time.is_none()));

    let d = decode(Characteristic::PlxSpotCheck, &hx("08 62 00 00 08 1E F0")).unwrap();
    assert_eq!(
        values(&d.to_readings("ox", ox, t0())),
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
    let rs = d.to_readings("s", DeviceKind::HeartRateStrap, t0());
    assert_eq!(rs[0].values.get("batteryLevel"), Some(&90.0));
    assert_eq!(rs[0].units.get("batteryLevel").map(String::as_str), Some("%"));
    assert!(matches!(decode(Characteristic::BatteryLevel, &hx("65")), Err(GattError::OutOfRange { value: 101, .. })));
    assert!(matches!(decode(Characteristic::BatteryLevel, &[]), Err(GattError::Empty { .. })));

    let d = decode(Characteristic::BodySensorLocation, &hx("01")).unwrap();
    assert_eq!(d, Decoded::BodySensorLocation { location: BodySensorLocation::Chest });
    assert!(d.to_readings("s", DeviceKind::HeartRateStrap, t0()).is_empty());

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes give readings or a typed error, never a panic; and whatever
    /// decodes yields readings whose values are finite and have units.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        for c in Characteristic::ALL {
            if let Ok(d) = decode(c, &bytes) {
                for r in d.to_readings("x", DeviceKind::Other, t0()) {
                    for (name, v) in &r.values {
                        prop_assert!(v.is_finite());
                        prop_assert!(r.units.contains_key(name));
                    }
                    if r.values.is_empty() {
                        prop_assert!(r.flags.contains(&Flag::ValueUnavailable));
                    }
                }
                prop_assert!(serde_json::to_string(&d).is_ok());
            }
        }
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
