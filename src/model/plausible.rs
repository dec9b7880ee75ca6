//! The values a body can have: one range per reading type, and the rule that a
//! reading holding a number outside it is flagged [`super::Flag::OutOfRange`].
//!
//! Why this exists: a decoder checks lengths and special values, not meaning. A
//! PLX oximeter that sends SpO2 1000 % and pulse rate -1 /min, or a strap that
//! sends a uint16 heart rate of 65535 /min, sends well-formed SFLOAT/uint16
//! fields; without this table those numbers would travel, and be charted, as
//! normal vital signs. The check lives in [`super::Reading::set_value`], the
//! only way a number enters a reading, so every adapter (BLE, simulated) and
//! every value name (`spo2Fast`, `pulseRateSlow`, blood pressure's `mean`...)
//! gets it. The value itself is kept as decoded (never clamped): the reading
//! is stored and delivered with the flag, and the shipped MedTech mapping
//! keeps it off the chart because `outOfRange` is not in
//! [`super::CHARTABLE_FLAGS`].
//!
//! The bounds are deliberately wide: a real but extreme value wrongly flagged
//! would be hidden from the chart, which is worse than a doubtful one shown, so
//! a bound sits at or beyond the widest range a clinical monitor measures or
//! the most extreme value documented in a living person. docs/message-format.md
//! ("Plausible ranges") shows the same table; a test keeps the two equal.

use super::ReadingType;

/// The plausible range of every value name of one reading type (all value
/// names of a type share one unit), inclusive at both ends, in the type's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlausibleRange {
    pub(crate) kind: ReadingType,
    /// Lowest plausible value, in the unit of [`ReadingType::value_units`].
    pub min: f64,
    /// Highest plausible value, same unit.
    pub max: f64,
}

/// One range per reading type that carries numbers (every type but
/// `deviceEvent`), inclusive. Sources of each bound:
///
/// * `heartRate`, `pulseRate` (and `pulseRateFast`/`pulseRateSlow`), 15..=350
///   /min: the widest heart-rate measurement range of clinical monitors, 15-350
///   /min for paediatric ECG (Mindray Trio operating instructions, ECG heart
///   rate meter; adult 15-300), which also covers pulse-rate ranges such as
///   25-350 /min from invasive pressure (Mindray BeneVision N22/N19 PR
///   specifications) and 18-321 /min (Nonin oximeters). A heart rate of 0 is
///   the strap's "no signal" and already `valueUnavailable` (decoder).
/// * `rrInterval`, 150..=30000 ms: the shortest interval is bounded by the
///   ventricular refractory period (150 ms = 400 /min, beyond the fastest
///   rates above); a single interval may be far longer than the averaged
///   rate suggests (a sinus pause or block: pauses of 3 s and more are
///   clinically important and must stay charted), so the upper bound is a
///   generous 30 s; longer "intervals" are a strap that missed beats. The
///   HRS field (uint16, 1/1024 s) can carry up to 64 s.
/// * `energyExpended`, 0..=65534 kJ: the whole range of the HRS 1.0 Energy
///   Expended field (uint16 kJ, cumulative since the last reset); 0xFFFF is
///   "65535 kJ or more" and already `valueUnavailable`.
/// * `spo2` (and `spo2Fast`/`spo2Slow`), 0..=100 %: a saturation is a share
///   of haemoglobin; more than 100 % or less than 0 % cannot be. Oximeters
///   display 0-100 % (accuracy is specified only from about 70 %, but low
///   values are real in cyanotic or dying patients, so they are not flagged).
/// * `perfusionIndex`, 0..=100 %: the PLX Pulse Amplitude Index is a
///   percentage (pulsatile over non-pulsatile absorption); monitors show
///   about 0.02-20 %, anything outside 0-100 % is not a percentage at all.
/// * `respirationRate`, 0..=200 /min: 0 is apnoea; monitors measure up to
///   200 /min (Mindray BeneVision T1, impedance respiration, 0-200 rpm).
/// * `bodyTemperature`, 10..=50 Cel: the most extreme body temperatures
///   survived are about 13.7 Cel (accidental hypothermia, Gilbert et al.,
///   Lancet 2000) and 46.5 Cel (heat stroke, Guinness World Records); a
///   thermometer reading below 10 or above 50 is not measuring a body.
/// * `bloodPressure` (`systolic`, `diastolic`, `mean`), 0..=500 `mm[Hg]`: no
///   arterial pressure is below atmospheric; the highest arterial pressures
///   measured in people, 480/350 `mm[Hg]` intra-arterially during maximal leg
///   presses (MacDougall et al., J Appl Physiol 1985), stay below 500.
/// * `batteryLevel`, 0..=100 %: Battery Service 1.0, Battery Level (the
///   decoder already rejects 101-255, which the SIG reserves).
/// * `spco`, `spmet`, 0..=100 %: carboxy- and methaemoglobin as a share of
///   total haemoglobin (LOINC property MFr, mass fraction); outside 0-100 %
///   is not a share at all.
/// * `sphb`, 0..=40 g/dL: whole blood cannot hold more haemoglobin than the
///   red cells themselves, whose haemoglobin concentration (MCHC) is about
///   32-36 g/dL; blood is at most a packed column of cells, so a value above
///   40 g/dL is not a measurement of blood.
/// * `pvi`, 0..=100 %: PVI is (PImax - PImin) / PImax x 100 over a
///   respiratory cycle (Masimo, "Pleth Variability Index" technical bulletin),
///   which by its definition lies in 0-100 %.
pub(crate) const PLAUSIBLE_RANGES: [PlausibleRange; 14] = [
    PlausibleRange { kind: ReadingType::HeartRate, min: 15.0, max: 350.0 },
    PlausibleRange { kind: ReadingType::RrInterval, min: 150.0, max: 30_000.0 },
    PlausibleRange { kind: ReadingType::EnergyExpended, min: 0.0, max: 65_534.0 },
    PlausibleRange { kind: ReadingType::Spo2, min: 0.0, max: 100.0 },
    PlausibleRange { kind: ReadingType::PulseRate, min: 15.0, max: 350.0 },
    PlausibleRange { kind: ReadingType::PerfusionIndex, min: 0.0, max: 100.0 },
    PlausibleRange { kind: ReadingType::RespirationRate, min: 0.0, max: 200.0 },
    PlausibleRange { kind: ReadingType::BodyTemperature, min: 10.0, max: 50.0 },
    PlausibleRange { kind: ReadingType::BloodPressure, min: 0.0, max: 500.0 },
    PlausibleRange { kind: ReadingType::BatteryLevel, min: 0.0, max: 100.0 },
    PlausibleRange { kind: ReadingType::Spco, min: 0.0, max: 100.0 },
    PlausibleRange { kind: ReadingType::Spmet, min: 0.0, max: 100.0 },
    PlausibleRange { kind: ReadingType::Sphb, min: 0.0, max: 40.0 },
    PlausibleRange { kind: ReadingType::Pvi, min: 0.0, max: 100.0 },
];

/// The plausible range of `kind`'s values; `None` for `deviceEvent` (no values).
pub fn plausible_range(kind: ReadingType) -> Option<PlausibleRange> {
    PLAUSIBLE_RANGES.iter().copied().find(|r| r.kind == kind)
}

/// Whether `value` (in `kind`'s unit) is one a body, or the device, can have:
/// inside [`PLAUSIBLE_RANGES`], inclusive. Not finite is never plausible (such
/// values never reach a reading: they become [`super::Flag::ValueUnavailable`]). A
/// type without a range has no values, so nothing is implausible for it.
pub fn is_plausible(kind: ReadingType, value: f64) -> bool {
    if !value.is_finite() {
        return false;
    }
    match plausible_range(kind) {
        Some(r) => (r.min..=r.max).contains(&value),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKind, Flag, Reading};

    /// Every type with values has exactly one range, and every range is sane.
    #[test]
    fn every_type_with_values_has_one_range() {
        for t in ReadingType::ALL {
            let n = PLAUSIBLE_RANGES.iter().filter(|r| r.kind == t).count();
            assert_eq!(n, usize::from(!t.value_units().is_empty()), "{t}");
        }
        for r in PLAUSIBLE_RANGES {
            assert!(r.min.is_finite() && r.max.is_finite() && r.min < r.max, "{r:?}");
        }
    }

    /// Just inside each bound is plausible, just outside is not, for every
    /// value name of every type (the step is below any device's resolution:
    /// SFLOAT and the HRS fields resolve 0.001 at best near these bounds).
    #[test]
    fn bounds_are_inclusive_and_just_outside_is_flagged() {
        for r in PLAUSIBLE_RANGES {
            for (name, _) in r.kind.value_units() {
                for (v, ok) in [(r.min, true), (r.max, true), (r.min - 0.001, false), (r.max + 0.001, false)] {
                    assert_eq!(is_plausible(r.kind, v), ok, "{} {name} = {v}", r.kind);
                    let reading = Reading::new("d", DeviceKind::Other, r.kind).with_value(name, v);
                    assert_eq!(reading.flags.contains(&Flag::OutOfRange), !ok, "{} {name} = {v}", r.kind);
                    assert_eq!(reading.values.get(*name), Some(&v), "the value is kept as sent, never clamped");
                }
            }
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!is_plausible(ReadingType::Spo2, v));
        }
    }

    /// The values, by name.
    #[test]
    fn values_no_body_can_have_are_flagged() {
        for (t, name, v) in [
            (ReadingType::HeartRate, "heartRate", 65535.0),
            (ReadingType::Spo2, "spo2", 1000.0),
            (ReadingType::PulseRate, "pulseRate", -1.0),
            (ReadingType::Spo2, "spo2Slow", 100.5),
            (ReadingType::PulseRate, "pulseRateFast", 2047.0),
            (ReadingType::BloodPressure, "mean", -5.0),
        ] {
            let r = Reading::new("d", DeviceKind::Other, t).with_value(name, v);
            assert!(r.flags.contains(&Flag::OutOfRange), "{t} {name} {v}");
        }
        for (t, name, v) in [(ReadingType::HeartRate, "heartRate", 72.0), (ReadingType::Spo2, "spo2", 97.0)] {
            assert!(Reading::new("d", DeviceKind::Other, t).with_value(name, v).flags.is_empty());
        }
    }

    /// docs/message-format.md shows the same table (one row per type).
    #[test]
    fn docs_show_the_same_table() {
        let doc = include_str!("../../docs/message-format.md");
        for r in PLAUSIBLE_RANGES {
            let row = format!("| `{}` | {} | {} |", r.kind, r.min, r.max);
            assert!(doc.contains(&row), "docs/message-format.md lacks the row `{row}`");
        }
    }
}
