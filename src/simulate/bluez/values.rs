//! Deterministic measurement bytes for the simulated peripherals: the n-th
//! notification of a strap or oximeter, encoded as the SIG specifies.

/// SFLOAT with exponent 0 (integers up to 2047).
fn sfloat_int(v: u16) -> [u8; 2] {
    (v & 0x0FFF).to_le_bytes()
}

/// SFLOAT with exponent -1 (tenths).
fn sfloat_tenths(v: u16) -> [u8; 2] {
    (0xF000 | (v & 0x0FFF)).to_le_bytes()
}

const SFLOAT_NAN: [u8; 2] = [0xFF, 0x07];

/// Heart Rate Measurement n: uint8 HR 60-99, contact detected, one RR
/// interval; every 10th also carries Energy Expended.
pub(crate) fn heart_rate(tick: u64) -> Vec<u8> {
    let hr = 60 + ((tick * 7) % 40) as u8;
    let rr = ((60.0 / hr as f64) * 1024.0).round() as u16;
    let mut flags = 0x16u8;
    let mut b = vec![0, hr];
    if tick % 10 == 0 {
        flags |= 0x08;
        b.extend(((tick % 60000) as u16).to_le_bytes());
    }
    b.extend(rr.to_le_bytes());
    if let Some(f) = b.first_mut() {
        *f = flags;
    }
    b
}

/// PLX Continuous n: SpO2 95-99 %, PR 70-84, status "measurement ongoing",
/// PAI 2.0-3.9 %. Finger out: NaN/NaN and "sensor disconnected".
pub(crate) fn plx_continuous(tick: u64, finger_out: bool) -> Vec<u8> {
    if finger_out {
        let mut b = vec![0x08];
        b.extend(SFLOAT_NAN);
        b.extend(SFLOAT_NAN);
        b.extend([0x00, 0x80, 0x00]);
        return b;
    }
    let mut b = vec![0x14];
    b.extend(sfloat_int(95 + (tick % 5) as u16));
    b.extend(sfloat_int(70 + ((tick * 3) % 15) as u16));
    b.extend([0x20, 0x00]);
    b.extend(sfloat_tenths(20 + (tick % 20) as u16));
    b
}

/// PLX Spot-check n (sent as an indication every 5th tick).
pub(crate) fn plx_spot_check(tick: u64, finger_out: bool) -> Vec<u8> {
    if finger_out {
        let mut b = vec![0x04];
        b.extend(SFLOAT_NAN);
        b.extend(SFLOAT_NAN);
        b.extend([0x00, 0x80, 0x00]);
        return b;
    }
    let mut b = vec![0x00];
    b.extend(sfloat_int(96 + (tick % 3) as u16));
    b.extend(sfloat_int(72 + (tick % 7) as u16));
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::ble::gatt::{decode_heart_rate, decode_plx_continuous, decode_plx_spot_check, SFloat};

    #[test]
    fn generated_values_decode() {
        for t in 0..50 {
            let m = decode_heart_rate(&heart_rate(t)).unwrap();
            assert_eq!(m.heart_rate as u64, 60 + (t * 7) % 40);
            assert_eq!(m.rr_intervals_ms.len(), 1);
            assert_eq!(m.energy_expended_kj.is_some(), t % 10 == 0);
            let c = decode_plx_continuous(&plx_continuous(t, false)).unwrap();
            assert_eq!(c.normal.spo2, SFloat::Value((95 + t % 5) as f64));
            let s = decode_plx_spot_check(&plx_spot_check(t, false)).unwrap();
            assert!(s.measurement.spo2.value().is_some());
        }
        // The simulated peripherals send only values a body can have, so the
        // demo's readings are all charted (model::PLAUSIBLE_RANGES).
        use crate::adapters::ble::gatt::{decode, Characteristic};
        use crate::adapters::device_clock::{GatewayZone, TimeContext};
        use crate::model::{DeviceKind, Flag};
        let ctx = TimeContext::new(chrono::Utc::now(), GatewayZone::Local);
        for t in 0..70_000 {
            for (c, b) in [
                (Characteristic::HeartRateMeasurement, heart_rate(t)),
                (Characteristic::PlxContinuous, plx_continuous(t, false)),
                (Characteristic::PlxSpotCheck, plx_spot_check(t, false)),
            ] {
                let rs = decode(c, &b).unwrap().to_readings("sim", DeviceKind::Other, &ctx);
                assert!(rs.iter().all(|r| !r.flags.contains(&Flag::OutOfRange)), "tick {t}: {rs:?}");
            }
        }
        let c = decode_plx_continuous(&plx_continuous(3, true)).unwrap();
        assert_eq!(c.normal.spo2, SFloat::Nan);
        assert_eq!(c.device_and_sensor_status.map(|s| s.raw), Some(0x8000));
    }
}
