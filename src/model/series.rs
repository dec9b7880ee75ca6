//! Which readings belong on a chart, and whether a reading still has a free
//! slot in its sampled series.
//!
//! Why this exists: the shipped MedTech mappings (devices/medtech/) chart the
//! high-rate types as hourly SampledData. The service keeps **one value per
//! `defaultPeriod` slot** of such a series: for each slot it takes the latest
//! value and silently drops the others (iomt-fhir `SampledDataProcessor.
//! BuildSampledData`; on a later update `MergeData` lets the new value win a
//! slot the same way). Two heart-rate notifications that reach the gateway in
//! one second (a burst after a short radio gap) are both valid values, yet one
//! of them would vanish. Moving the later one by a millisecond
//! ([`super::DistinctTimes`]) does not leave the slot. The gateway therefore
//! knows the slot period of every shipped series ([`SAMPLED_DATA_SERIES`], kept
//! equal to fhirmapping.json by a test) and marks a reading whose slot already
//! holds an earlier reading of the same device and type with
//! [`super::Reading::slot_taken`]. The shipped mappings turn such a reading
//! into an Observation of its own (`heartRateSingle`, one Quantity, its own
//! time, grouped by a per-reading correlation id), so no value is dropped,
//! merged or re-timed, however long the burst.
//!
//! Which readings go to a series at all depends on the device-status rule
//! ([`CHARTABLE_FLAGS`]): a reading the device marks as not a valid
//! measurement is excluded from the clinical templates, so it never takes a
//! slot either.

use super::{Flag, Reading, ReadingType};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// The flags that still describe a valid measurement of this patient now.
///
/// The shipped device mapping charts a reading only if **every** flag it
/// carries is in this list; any other flag, including flags added in later
/// versions, keeps it out of the clinical templates (it still travels in the
/// message, flags included). Kept equal to the literal list in every
/// clinical template of devices/medtech/devicecontent.json by a test.
///
/// * `lowPerfusion`: PLX Device and Sensor Status bit 5 "Low Perfusion
///   Detected" (Bluetooth SIG, Pulse Oximeter Service / PLX Continuous and
///   Spot-check Measurement characteristics) reports a condition of the
///   patient's circulation, not a fault of the value: PLX has separate bits
///   for a measurement the device considers questionable or invalid
///   (Measurement Status bits 14 and 15, Device and Sensor Status bits 8 and
///   12-14), and a device that doubts the value sets those.
/// * `deviceClockNotSet`: PLX Spot-check flags bit 4 "Device Clock is Not
///   Set" says the device's own timestamp field is meaningless. The value is
///   still valid, and a live reading is timed by the gateway on arrival, so
///   its `time` is right. A stored measurement whose time cannot be known is
///   flagged separately and is not in this list.
///
/// Deliberately **not** in the list: `sensorContactLost` (HRS flags bits 1-2,
/// contact supported but not detected), `sensorDisconnected`,
/// `valueUnavailable` (PLX Measurement Status bit 13, SFLOAT NaN/NRes/INF: no
/// value of this patient), `questionable`, `signalIrregular` (PLX Device and
/// Sensor Status bits 2, 3, 4, 6, 7, 10: the signal the value comes from is
/// impaired), `earlyEstimate` (PLX Measurement Status bit 6: a provisional
/// value, which FHIR would call `preliminary`, while MedTech can only write
/// `final`), `testData` (PLX Measurement Status bits 10-12: demonstration,
/// testing, calibration), `outOfRange` (a value no body can have, see
/// [`super::PLAUSIBLE_RANGES`]), and every flag not listed.
pub const CHARTABLE_FLAGS: [Flag; 2] = [Flag::LowPerfusion, Flag::DeviceClockNotSet];

/// Whether the device-status rule lets `r` into a clinical template: every
/// flag it carries is in [`CHARTABLE_FLAGS`].
pub(crate) fn is_chartable(r: &Reading) -> bool {
    r.flags.iter().all(|f| CHARTABLE_FLAGS.contains(f))
}

/// The window every shipped SampledData series is grouped by: the UTC clock
/// hour (`periodInterval` 60), in milliseconds.
pub const SERIES_WINDOW_MS: i64 = 3_600_000;

/// The reading types the shipped FHIR mapping charts as hourly SampledData,
/// with the `defaultPeriod` (slot length, ms) of each. Spot-checks of these
/// types are not part of the series (they have Quantity templates of their
/// own). Kept equal to devices/medtech/fhirmapping.json by a test; every
/// period divides [`SERIES_WINDOW_MS`], so slots line up with the epoch.
pub const SAMPLED_DATA_SERIES: [(ReadingType, i64); 10] = [
    (ReadingType::HeartRate, 1000),
    (ReadingType::RrInterval, 250),
    (ReadingType::Spo2, 1000),
    (ReadingType::PulseRate, 1000),
    (ReadingType::PerfusionIndex, 1000),
    (ReadingType::RespirationRate, 1000),
    (ReadingType::Spco, 1000),
    (ReadingType::Spmet, 1000),
    (ReadingType::Sphb, 1000),
    (ReadingType::Pvi, 1000),
];

/// The slot period (ms) of the series `kind` is charted in, if it is one.
pub fn series_period_ms(kind: ReadingType) -> Option<i64> {
    SAMPLED_DATA_SERIES.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

/// How long (ms) slots are remembered behind the newest reading of a device
/// and type. Readings reach the gateway in time order give or take a few
/// seconds (RR intervals are back-dated by up to about two beats); a reading
/// older than this is marked as if its slot were taken, which is always safe.
pub(crate) const SLOT_MEMORY_MS: i64 = 5 * 60 * 1000;

/// What [`SeriesSlots::assign`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The reading is not charted in a series (another type, a spot-check, a
    /// reading without its value or excluded by device status).
    NotInSeries,
    /// The slot was free and is now this reading's.
    Free,
    /// The slot already holds an earlier reading: marked `slot_taken`.
    Taken,
    /// The gateway does not remember the slot (before it started, or older
    /// than [`SLOT_MEMORY_MS`]): marked `slot_taken` to be safe.
    Unknown,
}

#[derive(Debug, Default)]
struct Remembered {
    /// Start (epoch ms) of every slot taken since `floor`.
    taken: BTreeSet<i64>,
    /// Slots starting before this are not remembered.
    floor: i64,
}

/// Slot bookkeeping for every device and series type, in commit order.
///
/// Memory is bounded: per device and type at most `SLOT_MEMORY_MS / period`
/// slots (1,200 for RR intervals).
#[derive(Debug)]
pub struct SeriesSlots {
    /// Slots starting before this (the moment bookkeeping began) may hold
    /// readings committed by an earlier run of the gateway.
    since_ms: i64,
    series: HashMap<(String, ReadingType), Remembered>,
}

impl SeriesSlots {
    /// Bookkeeping that starts now: readings committed before `since` are
    /// unknown to it.
    pub fn new(since: DateTime<Utc>) -> SeriesSlots {
        SeriesSlots { since_ms: since.timestamp_millis(), series: HashMap::new() }
    }

    /// Whether `r` goes to a shipped SampledData series: a series type, not a
    /// spot-check, its primary value present, and chartable by device status.
    pub(crate) fn in_series(r: &Reading) -> bool {
        series_period_ms(r.kind).is_some() && !r.spot_check && r.primary_value().is_some() && is_chartable(r)
    }

    /// Takes `r`'s slot, or marks `r.slot_taken` when the slot already holds an
    /// earlier reading of the same device and type (or may, as far as the
    /// gateway knows). Never changes `r.time` and never drops anything.
    pub fn assign(&mut self, r: &mut Reading) -> SlotOutcome {
        let Some(period) = series_period_ms(r.kind) else { return SlotOutcome::NotInSeries };
        if !SeriesSlots::in_series(r) {
            return SlotOutcome::NotInSeries;
        }
        let t = r.time.timestamp_millis();
        let slot = t.div_euclid(period) * period;
        let since = self.since_ms;
        let mem = self.series.entry((r.device_id.clone(), r.kind)).or_insert_with(|| Remembered { taken: BTreeSet::new(), floor: since });
        if slot < mem.floor {
            r.slot_taken = true;
            return SlotOutcome::Unknown;
        }
        if !mem.taken.insert(slot) {
            r.slot_taken = true;
            return SlotOutcome::Taken;
        }
        // Forget slots too far behind the newest one.
        let newest = mem.taken.last().copied().unwrap_or(slot);
        let keep_from = newest - SLOT_MEMORY_MS;
        if keep_from > mem.floor {
            mem.taken = mem.taken.split_off(&keep_from);
            mem.floor = keep_from;
        }
        SlotOutcome::Free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{time, DeviceKind};

    fn hr(t: &str) -> Reading {
        Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 72.0).at(time::parse(t).expect("time"))
    }

    fn slots() -> SeriesSlots {
        SeriesSlots::new(time::parse("2026-11-21T09:00:00.000Z").expect("time"))
    }

    #[test]
    fn periods_divide_the_hour() {
        for (k, p) in SAMPLED_DATA_SERIES {
            assert!(p > 0 && SERIES_WINDOW_MS % p == 0, "{k}: {p}");
        }
    }

    #[test]
    fn a_second_reading_in_one_slot_is_marked_not_moved() {
        let mut s = slots();
        let mut a = hr("2026-11-21T10:00:00.400Z");
        let mut b = hr("2026-11-21T10:00:00.401Z");
        let mut c = hr("2026-11-21T10:00:01.000Z");
        assert_eq!(s.assign(&mut a), SlotOutcome::Free);
        assert_eq!(s.assign(&mut b), SlotOutcome::Taken);
        assert_eq!(s.assign(&mut c), SlotOutcome::Free, "the next second is the next slot");
        assert!(!a.slot_taken && b.slot_taken && !c.slot_taken);
        assert_eq!(time::format(&b.time), "2026-11-21T10:00:00.401Z", "the time is never changed");
    }

    #[test]
    fn slots_are_per_device_and_type_and_rr_slots_are_250_ms() {
        let mut s = slots();
        let mut a = hr("2026-11-21T10:00:00.100Z");
        let mut other_device = hr("2026-11-21T10:00:00.100Z");
        other_device.device_id = "strap-2".into();
        let rr = |t: &str| {
            Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::RrInterval)
                .with_value("rrInterval", 800.0)
                .at(time::parse(t).expect("time"))
        };
        let (mut r1, mut r2, mut r3) = (rr("2026-11-21T10:00:00.100Z"), rr("2026-11-21T10:00:00.260Z"), rr("2026-11-21T10:00:00.200Z"));
        assert_eq!(s.assign(&mut a), SlotOutcome::Free);
        assert_eq!(s.assign(&mut other_device), SlotOutcome::Free);
        assert_eq!(s.assign(&mut r1), SlotOutcome::Free, "another type shares the time");
        assert_eq!(s.assign(&mut r2), SlotOutcome::Free, ".260 is in the next 250 ms slot");
        assert_eq!(s.assign(&mut r3), SlotOutcome::Taken, ".200 shares the slot of .100");
    }

    #[test]
    fn spot_checks_excluded_and_valueless_readings_take_no_slot() {
        let mut s = slots();
        let t = "2026-11-21T10:00:00.500Z";
        let mut flagged = hr(t).with_flag(Flag::SensorContactLost);
        let mut unknown_future_flag_stand_in = hr(t).with_flag(Flag::TestData);
        let mut no_value = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate)
            .at(time::parse(t).expect("time"))
            .with_flag(Flag::ValueUnavailable);
        let mut spot =
            Reading::new("strap-1", DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 97.0).at(time::parse(t).expect("time"));
        spot.spot_check = true;
        let mut low_perfusion = hr(t).with_flag(Flag::LowPerfusion);
        for r in [&mut flagged, &mut unknown_future_flag_stand_in, &mut no_value, &mut spot] {
            assert_eq!(s.assign(r), SlotOutcome::NotInSeries);
            assert!(!r.slot_taken);
        }
        assert_eq!(s.assign(&mut low_perfusion), SlotOutcome::Free, "an allowed flag still charts");
        let mut battery = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::BatteryLevel).with_value("batteryLevel", 80.0);
        assert_eq!(s.assign(&mut battery), SlotOutcome::NotInSeries);
    }

    #[test]
    fn slots_before_the_start_or_beyond_memory_are_treated_as_taken() {
        let mut s = SeriesSlots::new(time::parse("2026-11-21T10:00:00.300Z").expect("time"));
        // The slot 10:00:00.000-.999 may hold a reading from before a restart.
        let mut early = hr("2026-11-21T10:00:00.900Z");
        assert_eq!(s.assign(&mut early), SlotOutcome::Unknown);
        assert!(early.slot_taken);
        let mut live = hr("2026-11-21T10:00:01.100Z");
        assert_eq!(s.assign(&mut live), SlotOutcome::Free);
        let mut later = hr("2026-11-21T10:10:00.000Z");
        assert_eq!(s.assign(&mut later), SlotOutcome::Free);
        // 10:00:01 is now more than SLOT_MEMORY_MS behind: forgotten, so marked.
        let mut straggler = hr("2026-11-21T10:00:02.000Z");
        assert_eq!(s.assign(&mut straggler), SlotOutcome::Unknown);
        let mem = &s.series[&("strap-1".to_string(), ReadingType::HeartRate)];
        assert!(mem.taken.len() as i64 <= SLOT_MEMORY_MS / 1000 + 1);
    }

    #[test]
    fn memory_stays_bounded_over_a_long_stream() {
        let mut s = slots();
        let start = time::parse("2026-11-21T10:00:00.000Z").expect("time");
        for i in 0..20_000 {
            let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::RrInterval)
                .with_value("rrInterval", 250.0)
                .at(start + chrono::Duration::milliseconds(i * 250));
            assert_eq!(s.assign(&mut r), SlotOutcome::Free);
        }
        let mem = &s.series[&("strap-1".to_string(), ReadingType::RrInterval)];
        assert!(mem.taken.len() as i64 <= SLOT_MEMORY_MS / 250 + 1, "{}", mem.taken.len());
    }
}
