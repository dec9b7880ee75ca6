//! How a device's own clock becomes a reading's UTC time.
//!
//! Why this exists: a BLE Date Time (GATT Specification Supplement, "Date
//! Time") has no zone; it is whatever the device's clock shows, often set by
//! hand, by a phone in another zone, or not at all. A stored measurement (PLX
//! Measurement Status bit 9, "Data from Measurement Storage") must be charted at
//! the time it was measured, not when it arrived, so the device clock has to be
//! turned into UTC. The rule follows the HL7 Personal Health Device IG's
//! "coincident timestamp" idea: the gateway compares the device clock with its
//! own UTC clock on live readings, and corrects stored ones by that offset,
//! keeping the original device time.
//!
//! The rule (docs/message-format.md, "Times"):
//! - live reading (not from storage): `time` = arrival time; a valid device
//!   timestamp is kept as `deviceTime` and gives the measured offset
//!   (device clock minus arrival, whole seconds);
//! - stored reading with a valid device time: `time` = device time minus the
//!   offset measured on this device's live readings; when none was measured
//!   yet, the device time read in the gateway's local time zone (labelled so);
//!   a result that does not exist, is ambiguous in that zone, or lies after the
//!   arrival time (beyond [`FUTURE_TOLERANCE_SECONDS`]) cannot be right:
//!   `timeUnknown`;
//! - device clock not set (PLX flag, or a Date Time with a 0 or out-of-range
//!   field): `deviceClockNotSet`, the timestamp is not used; a live reading keeps
//!   arrival time, a stored one gets `timeUnknown`;
//! - stored reading without a timestamp: `timeUnknown`.
//!
//! Pure: the arrival time, the measured offset and the gateway zone are inputs;
//! nothing here reads a clock.

use crate::model::{DeviceTime, Flag, TimeFrom};
use chrono::{DateTime, FixedOffset, Local, LocalResult, NaiveDateTime, TimeZone, Utc};

/// A stored measurement converted to a time this many seconds after its arrival
/// is still accepted (BLE Date Time has whole seconds, and offsets are rounded
/// to whole seconds); later than that, the conversion is wrong.
pub(crate) const FUTURE_TOLERANCE_SECONDS: i64 = 2;

/// The gateway's time zone, used for a stored reading before any offset has
/// been measured for its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayZone {
    /// The machine's local zone (TZ / /etc/localtime), with its daylight-saving
    /// rules applied at the device's date.
    Local,
    /// A fixed offset from UTC (tests, `decode ble --gateway-utc-offset`).
    Fixed(FixedOffset),
}

impl GatewayZone {
    /// The UTC time of a local date-time in this zone, and the zone's offset
    /// then (seconds); `None` when the local time does not exist or is ambiguous
    /// (a daylight-saving change).
    pub(crate) fn to_utc(self, local: NaiveDateTime) -> Option<(DateTime<Utc>, i64)> {
        match self {
            GatewayZone::Local => match Local.from_local_datetime(&local) {
                LocalResult::Single(t) => Some((t.with_timezone(&Utc), t.offset().local_minus_utc() as i64)),
                _ => None,
            },
            GatewayZone::Fixed(z) => match z.from_local_datetime(&local) {
                LocalResult::Single(t) => Some((t.with_timezone(&Utc), z.local_minus_utc() as i64)),
                _ => None,
            },
        }
    }
}

/// What the gateway knows about time when a value arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeContext {
    /// When the gateway received the value (its own clock, UTC).
    pub(crate) arrival: DateTime<Utc>,
    /// Device clock minus gateway UTC in whole seconds, as last measured on a
    /// live timestamped reading from the same device; `None` when not measured
    /// yet (since the gateway started).
    pub(crate) measured_offset: Option<i64>,
    /// Fallback for stored readings when no offset was measured.
    pub(crate) zone: GatewayZone,
}

impl TimeContext {
    /// A context with no measured offset.
    pub fn new(arrival: DateTime<Utc>, zone: GatewayZone) -> TimeContext {
        TimeContext { arrival, measured_offset: None, zone }
    }

    /// The same context with a measured offset.
    pub fn with_offset(mut self, offset: Option<i64>) -> TimeContext {
        self.measured_offset = offset;
        self
    }
}

/// What a device said about the time of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DeviceClock {
    /// The device's timestamp, when it sent a valid one (no zone).
    pub(crate) timestamp: Option<NaiveDateTime>,
    /// The device says its clock is not set, or sent a timestamp that is not a
    /// valid date and time.
    pub(crate) clock_not_set: bool,
    /// The measurement comes from the device's storage, not live.
    pub(crate) stored: bool,
}

/// The rule's result for one measurement: its time, the labelled device time,
/// and the flags to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) time: DateTime<Utc>,
    pub(crate) device_time: Option<DeviceTime>,
    pub(crate) flags: Vec<Flag>,
}

/// The offset (device clock minus `arrival`, whole seconds, rounded to the
/// nearest) that a live timestamped reading measures; `None` for any other
/// reading (stored, no timestamp, clock not set).
pub(crate) fn measured_offset(clock: &DeviceClock, arrival: DateTime<Utc>) -> Option<i64> {
    if clock.stored || clock.clock_not_set {
        return None;
    }
    let local = clock.timestamp?;
    let ms = (local.and_utc() - arrival).num_milliseconds();
    Some((ms + 500).div_euclid(1000))
}

/// Applies the rule (module docs) to one measurement.
pub(crate) fn resolve(clock: &DeviceClock, ctx: &TimeContext) -> Timing {
    let arrival = ctx.arrival;
    let mut flags = Vec::new();
    if clock.clock_not_set {
        flags.push(Flag::DeviceClockNotSet);
    }
    let timestamp = if clock.clock_not_set { None } else { clock.timestamp };
    let Some(local) = timestamp else {
        if clock.stored {
            flags.push(Flag::TimeUnknown);
        }
        return Timing { time: arrival, device_time: None, flags };
    };
    if !clock.stored {
        let device_time = DeviceTime { local, time_from: TimeFrom::Arrival, utc_offset_seconds: measured_offset(clock, arrival) };
        return Timing { time: arrival, device_time: Some(device_time), flags };
    }
    // Checked: an offset or a time outside chrono's range (an absurd offset
    // given to `decode ble`) makes the time unknown, never a panic.
    let converted = match ctx.measured_offset {
        Some(offset) => {
            Some((chrono::TimeDelta::try_seconds(offset).and_then(|d| local.and_utc().checked_sub_signed(d)), offset, TimeFrom::MeasuredOffset))
        }
        None => ctx.zone.to_utc(local).map(|(t, offset)| (Some(t), offset, TimeFrom::GatewayZone)),
    };
    let latest = arrival.checked_add_signed(chrono::TimeDelta::seconds(FUTURE_TOLERANCE_SECONDS)).unwrap_or(arrival);
    match converted {
        Some((Some(t), offset, from)) if t <= latest => {
            Timing { time: t, device_time: Some(DeviceTime { local, time_from: from, utc_offset_seconds: Some(offset) }), flags }
        }
        other => {
            flags.push(Flag::TimeUnknown);
            let device_time = DeviceTime { local, time_from: TimeFrom::Unknown, utc_offset_seconds: other.map(|(_, o, _)| o) };
            Timing { time: arrival, device_time: Some(device_time), flags }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, s)).expect("valid date")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        crate::model::time::parse(s).expect("valid time")
    }

    fn plus_one() -> GatewayZone {
        GatewayZone::Fixed(FixedOffset::east_opt(3600).expect("offset"))
    }

    fn stored(ts: Option<NaiveDateTime>) -> DeviceClock {
        DeviceClock { timestamp: ts, clock_not_set: false, stored: true }
    }

    #[test]
    fn live_reading_keeps_arrival_and_measures_the_offset() {
        let arrival = utc("2025-03-04T04:06:09.400Z");
        let clock = DeviceClock { timestamp: Some(local(2025, 3, 4, 5, 6, 7)), clock_not_set: false, stored: false };
        let t = resolve(&clock, &TimeContext::new(arrival, plus_one()).with_offset(Some(99)));
        assert_eq!(t.time, arrival, "a live reading is timed when it arrived");
        assert!(t.flags.is_empty());
        let dt = t.device_time.expect("device time kept");
        assert_eq!(dt.time_from, TimeFrom::Arrival);
        // 05:06:07 device clock vs 04:06:09.4 UTC: the device runs 3597.6 s ahead.
        assert_eq!(dt.utc_offset_seconds, Some(3598));
        assert_eq!(measured_offset(&clock, arrival), Some(3598));
        assert_eq!(measured_offset(&stored(Some(local(2025, 3, 4, 5, 6, 7))), arrival), None);
    }

    #[test]
    fn stored_reading_uses_the_measured_offset() {
        let arrival = utc("2025-03-04T09:00:00.000Z");
        let t = resolve(&stored(Some(local(2025, 3, 4, 5, 6, 7))), &TimeContext::new(arrival, plus_one()).with_offset(Some(3597)));
        assert_eq!(crate::model::time::format(&t.time), "2025-03-04T04:06:10.000Z");
        assert!(t.flags.is_empty());
        let dt = t.device_time.expect("device time kept");
        assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::MeasuredOffset, Some(3597)));
    }

    #[test]
    fn stored_reading_without_a_measured_offset_uses_the_gateway_zone() {
        let arrival = utc("2025-03-04T09:00:00.000Z");
        let t = resolve(&stored(Some(local(2025, 3, 4, 5, 6, 7))), &TimeContext::new(arrival, plus_one()));
        assert_eq!(crate::model::time::format(&t.time), "2025-03-04T04:06:07.000Z");
        let dt = t.device_time.expect("device time kept");
        assert_eq!((dt.time_from, dt.utc_offset_seconds), (TimeFrom::GatewayZone, Some(3600)));
        assert!(t.flags.is_empty());
    }

    #[test]
    fn stored_reading_converted_into_the_future_has_no_known_time() {
        // The device clock is 3 h ahead of the gateway's zone: converted, the
        // measurement would have happened after it arrived.
        let arrival = utc("2025-03-04T02:00:00.000Z");
        let t = resolve(&stored(Some(local(2025, 3, 4, 5, 6, 7))), &TimeContext::new(arrival, plus_one()));
        assert_eq!(t.time, arrival);
        assert_eq!(t.flags, vec![Flag::TimeUnknown]);
        assert_eq!(t.device_time.map(|d| d.time_from), Some(TimeFrom::Unknown));
        // Within the tolerance it is accepted.
        let arrival = utc("2025-03-04T04:06:05.500Z");
        let t = resolve(&stored(Some(local(2025, 3, 4, 5, 6, 7))), &TimeContext::new(arrival, plus_one()));
        assert!(t.flags.is_empty(), "{:?}", t.flags);
    }

    #[test]
    fn an_offset_beyond_any_calendar_gives_an_unknown_time_not_a_panic() {
        let arrival = utc("2025-03-04T09:00:00.000Z");
        let clock = stored(Some(local(2025, 3, 4, 5, 6, 7)));
        for offset in [i64::MIN, i64::MIN / 1000, -(i64::MAX / 1000), i64::MAX / 1000, i64::MAX] {
            let t = resolve(&clock, &TimeContext::new(arrival, plus_one()).with_offset(Some(offset)));
            assert_eq!(t.time, arrival, "offset {offset}");
            assert_eq!(t.flags, vec![Flag::TimeUnknown], "offset {offset}");
            assert_eq!(t.device_time.map(|d| d.time_from), Some(TimeFrom::Unknown));
        }
    }

    #[test]
    fn clock_not_set_live_keeps_arrival_stored_has_no_known_time() {
        let arrival = utc("2025-03-04T09:00:00.000Z");
        let ctx = TimeContext::new(arrival, plus_one()).with_offset(Some(0));
        let live = DeviceClock { timestamp: Some(local(2025, 3, 4, 5, 6, 7)), clock_not_set: true, stored: false };
        let t = resolve(&live, &ctx);
        assert_eq!((t.time, t.device_time, t.flags.clone()), (arrival, None, vec![Flag::DeviceClockNotSet]));
        assert_eq!(measured_offset(&live, arrival), None, "a clock that is not set measures nothing");
        let t = resolve(&DeviceClock { stored: true, ..live }, &ctx);
        assert_eq!((t.time, t.device_time), (arrival, None));
        assert_eq!(t.flags, vec![Flag::DeviceClockNotSet, Flag::TimeUnknown]);
    }

    #[test]
    fn stored_without_timestamp_has_no_known_time_live_without_is_plain() {
        let arrival = utc("2025-03-04T09:00:00.000Z");
        let ctx = TimeContext::new(arrival, plus_one()).with_offset(Some(0));
        let t = resolve(&stored(None), &ctx);
        assert_eq!((t.time, t.device_time, t.flags), (arrival, None, vec![Flag::TimeUnknown]));
        let t = resolve(&DeviceClock::default(), &ctx);
        assert_eq!((t.time, t.device_time, t.flags), (arrival, None, vec![]));
    }
}
