//! .NET date formats MedTech writes: `"o"` (7 fraction digits), Json.NET's
//! default ISO form (fraction trimmed) and the identifier segment form.

use chrono::{DateTime, Timelike, Utc};

/// `DateTime.ToString("o")` of a UTC time: `2020-10-22T01:00:00.0000000Z`.
pub(crate) fn round_trip(t: &DateTime<Utc>) -> String {
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.nanosecond() % 1_000_000_000 / 100)
}

/// Json.NET's default for a UTC DateTime: `2020-10-22T01:34:56Z`, `...:56.875Z`.
pub(crate) fn json_net(t: &DateTime<Utc>) -> String {
    let ticks = t.nanosecond() % 1_000_000_000 / 100;
    if ticks == 0 {
        format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S"))
    } else {
        let frac = format!("{ticks:07}");
        format!("{}.{}Z", t.format("%Y-%m-%dT%H:%M:%S"), frac.trim_end_matches('0'))
    }
}

/// `yyyyMMddHHmmss'Z'`, the form used in Observation identifiers.
pub(crate) fn id_segment(t: &DateTime<Utc>) -> String {
    format!("{}Z", t.format("%Y%m%d%H%M%S"))
}

/// Truncates to .NET ticks (100 ns), the resolution of the service's times.
pub(crate) fn to_ticks(t: DateTime<Utc>) -> DateTime<Utc> {
    let ns = t.nanosecond();
    t.with_nanosecond(ns - ns % 100).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats() {
        let t = Utc.with_ymd_and_hms(2020, 10, 22, 1, 0, 0).unwrap();
        assert_eq!(round_trip(&t), "2020-10-22T01:00:00.0000000Z");
        assert_eq!(json_net(&t), "2020-10-22T01:00:00Z");
        assert_eq!(id_segment(&t), "20201022010000Z");
        let t2 = t + chrono::Duration::milliseconds(875);
        assert_eq!(json_net(&t2), "2020-10-22T01:00:00.875Z");
        let end = t + chrono::Duration::hours(1) - chrono::Duration::nanoseconds(100);
        assert_eq!(round_trip(&end), "2020-10-22T01:59:59.9999999Z");
    }
}
