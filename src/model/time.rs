//! Timestamps on the wire: RFC 3339, UTC, always `Z`, always milliseconds.
//!
//! MedTech (Json.NET) treats a time without an offset as server-local, so every
//! time we emit carries an explicit `Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a time as `2026-11-21T10:00:00.123Z`.
pub(crate) fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 time and converts it to UTC.
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// The current time truncated to whole milliseconds, so that a reading's time
/// survives a round trip through the wire format unchanged.
pub(crate) fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// The wall clock as Unix milliseconds (0 before 1970): the one clock for
/// counters and deadlines that are stored or compared as numbers.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock as Unix seconds (token expiries).
pub fn unix_s() -> u64 {
    unix_ms() / 1000
}

/// serde adapter for a required timestamp.
pub(crate) mod serde_ms {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_z_and_millis() {
        let t = parse("2026-11-21T11:00:00+01:00").expect("valid time");
        assert_eq!(format(&t), "2026-11-21T10:00:00.000Z");
    }
}
