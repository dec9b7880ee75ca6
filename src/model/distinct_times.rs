//! One device never reports two readings of one type at the same millisecond.
//!
//! MedTech keeps one value per timestamp within a group: a second heart rate,
//! RR interval or SpO2 with the same time is silently dropped by the service.
//! Two values can legitimately land in one millisecond: a PLX spot-check and a
//! continuous notification received together, RR beats back-dated from two
//! notifications that overlap, a burst after a reconnect. [`DistinctTimes`]
//! remembers the recent times per reading type of one device and moves a
//! colliding reading forward by whole milliseconds to the next free one. It
//! changes a time by a few milliseconds at most; it never drops or merges
//! readings.
//!
//! Distinct milliseconds are not enough for a SampledData series, where
//! MedTech keeps one value per 1000 ms (250 ms) slot: that is handled when the
//! reading is committed ([`super::SeriesSlots`] marks a reading whose slot is
//! taken, and the shipped mappings give it an Observation of its own).

use super::{Reading, ReadingType};
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};

/// How many recent times per reading type are remembered. A collision can
/// only come from readings close together, and a 1 Hz device with a few RR
/// beats per notification sends far fewer than this per second.
const REMEMBERED: usize = 64;

/// Recent reading times of one device, per reading type.
#[derive(Debug, Default)]
pub(crate) struct DistinctTimes {
    recent: HashMap<ReadingType, VecDeque<DateTime<Utc>>>,
}

impl DistinctTimes {
    /// An empty history.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Gives `r` a time no other recent reading of its type from this device
    /// has, moving it forward 1 ms at a time if needed, and remembers it.
    /// Returns how many milliseconds the time moved (0 almost always).
    pub(crate) fn assign(&mut self, r: &mut Reading) -> i64 {
        let seen = self.recent.entry(r.kind).or_default();
        let mut moved = 0;
        while seen.contains(&r.time) {
            r.time += Duration::milliseconds(1);
            moved += 1;
        }
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(r.time);
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{time, DeviceKind};

    fn at(kind: ReadingType, t: &str) -> Reading {
        let mut r = Reading::new("ox", DeviceKind::PulseOximeter, kind);
        r.time = time::parse(t).expect("time");
        r
    }

    #[test]
    fn collisions_move_forward_per_type_only() {
        let mut d = DistinctTimes::new();
        let t = "2026-11-21T10:00:00.500Z";
        let mut a = at(ReadingType::Spo2, t);
        let mut b = at(ReadingType::Spo2, t);
        let mut c = at(ReadingType::PulseRate, t);
        let mut e = at(ReadingType::Spo2, t);
        assert_eq!(d.assign(&mut a), 0);
        assert_eq!(d.assign(&mut b), 1);
        assert_eq!(d.assign(&mut c), 0, "another type may share the time");
        assert_eq!(d.assign(&mut e), 2);
        assert_eq!(time::format(&a.time), "2026-11-21T10:00:00.500Z");
        assert_eq!(time::format(&b.time), "2026-11-21T10:00:00.501Z");
        assert_eq!(time::format(&c.time), "2026-11-21T10:00:00.500Z");
        assert_eq!(time::format(&e.time), "2026-11-21T10:00:00.502Z");
    }

    #[test]
    fn an_earlier_time_that_is_free_is_kept() {
        let mut d = DistinctTimes::new();
        let mut late = at(ReadingType::RrInterval, "2026-11-21T10:00:01.000Z");
        let mut early = at(ReadingType::RrInterval, "2026-11-21T10:00:00.200Z");
        d.assign(&mut late);
        assert_eq!(d.assign(&mut early), 0);
        assert_eq!(time::format(&early.time), "2026-11-21T10:00:00.200Z");
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = DistinctTimes::new();
        for _ in 0..1000 {
            let mut r = at(ReadingType::HeartRate, "2026-11-21T10:00:00.000Z");
            d.assign(&mut r);
        }
        assert_eq!(d.recent[&ReadingType::HeartRate].len(), REMEMBERED);
    }
}
