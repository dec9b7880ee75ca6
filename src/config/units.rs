//! Human-friendly sizes (`256MiB`) and durations (`7d`) in the config file.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A size in bytes, written as an integer or a string such as `4MiB`, `64 KiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `123`, `4KiB`, `4 KB`, `16MiB`, `1GiB` (binary and decimal units).
    pub(crate) fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if unit.starts_with(['.', ',']) && unit[1..].starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("`{s}`: sizes are whole numbers; write it in a smaller unit, such as `1536MiB` for 1.5GiB"));
        }
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size; write it like `256MiB` or `65536`"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1024,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1024 * 1024,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1024 * 1024 * 1024,
            other => return Err(format!("unknown size unit `{other}`; use B, KiB, MiB, GiB (or KB, MB, GB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if b >= 1024.0 * 1024.0 * 1024.0 {
            write!(f, "{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
        } else if b >= 1024.0 * 1024.0 {
            write!(f, "{:.1} MiB", b / (1024.0 * 1024.0))
        } else if b >= 1024.0 {
            write!(f, "{:.1} KiB", b / 1024.0)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a size such as `256MiB` or a number of bytes"))? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// How a numeric option is written, for range messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A plain number (`batch_max_readings`).
    Count,
    /// A number of milliseconds (`retry_initial_ms`).
    Millis,
    /// A size in bytes (`max_bytes`), shown as `1MiB`.
    Bytes,
    /// A duration, given here in milliseconds, shown as `7d`, `30s`, `200ms`.
    Duration,
}

/// `Some(message)` when `value` lies outside `lo..=hi`: the option's name, its
/// range and default in the units it is written in, and the value given.
/// Values are `u128` so that any `Duration` in milliseconds fits.
pub(crate) fn out_of_range(name: &str, value: u128, lo: u128, hi: u128, unit: Unit, default: &str) -> Option<String> {
    if (lo..=hi).contains(&value) {
        return None;
    }
    let show = |v: u128| match unit {
        Unit::Count => v.to_string(),
        Unit::Millis => format!("{v} ms"),
        Unit::Bytes => format_bytes(v),
        Unit::Duration => format_millis(v),
    };
    let range = match unit {
        Unit::Millis => format!("{lo} to {hi} ms"),
        _ => format!("{} to {}", show(lo), show(hi)),
    };
    Some(format!("{name} must be {range} (default {default}); {} is out of range", show(value)))
}

/// Bytes in the largest binary unit that divides them exactly (`1MiB`, `1536KiB`, `1000`).
pub(crate) fn format_bytes(b: u128) -> String {
    for (unit, size) in [("GiB", 1u128 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= size && b % size == 0 {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

/// Milliseconds in the largest unit that divides them exactly (`7d`, `90s`, `200ms`),
/// written so that the config file accepts it back.
pub(crate) fn format_millis(ms: u128) -> String {
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("min", 60_000), ("s", 1000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// serde adapter for durations written as `30s`, `15min`, `7d` or whole seconds.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a duration such as `7d`, `12h` or `30s`"))? {
            Raw::Int(n) => Ok(Duration::from_secs(n)),
            Raw::Str(s) => humantime::parse_duration(&s)
                .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write it like `7d`, `12h` or `30s`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("4MiB"), Ok(ByteSize(4 << 20)));
        assert_eq!(ByteSize::parse("64 KiB"), Ok(ByteSize(64 << 10)));
        assert_eq!(ByteSize::parse("1000"), Ok(ByteSize(1000)));
        assert_eq!(ByteSize::parse("2GB"), Ok(ByteSize(2_000_000_000)));
        assert!(ByteSize::parse("4 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999GiB").is_err());
        // A fraction is not taken for a unit named ".5gib".
        let e = ByteSize::parse("1.5GiB").unwrap_err();
        assert!(e.contains("whole numbers") && e.contains("1536MiB"), "{e}");
        assert!(ByteSize::parse("2,5 MB").unwrap_err().contains("whole numbers"));
    }

    #[test]
    fn range_messages_use_the_units_of_the_file() {
        assert_eq!(out_of_range("x", 5, 0, 10, Unit::Count, "1"), None);
        assert_eq!(out_of_range("x", 0, 0, 10, Unit::Count, "1"), None);
        assert_eq!(out_of_range("x", 10, 0, 10, Unit::Count, "1"), None);
        let m = out_of_range("max_age", 18_446_744_073_709_552_000, 60_000, 3650 * 86_400_000, Unit::Duration, "7d").unwrap();
        assert_eq!(m, "max_age must be 1min to 3650d (default 7d); 18446744073709552s is out of range");
        let m = out_of_range("flush_interval_ms", 60_000, 0, 10_000, Unit::Millis, "100").unwrap();
        assert!(m.contains("0 to 10000 ms"), "{m}");
        let m = out_of_range("max_bytes", 1, 1 << 20, 1 << 40, Unit::Bytes, "256MiB").unwrap();
        assert!(m.contains("1MiB to 1024GiB") && m.contains("; 1 is out of range"), "{m}");
        assert_eq!(format_millis(1500), "1500ms");
        assert_eq!(format_millis(0), "0ms");
        // What it writes, the file accepts back.
        for ms in [200u128, 1000, 90_000, 3_600_000, 86_400_000 * 3650] {
            let back = humantime::parse_duration(&format_millis(ms)).unwrap();
            assert_eq!(back.as_millis(), ms);
        }
        for b in [1u128 << 20, 1536 << 10, 1000, 1 << 40] {
            assert_eq!(ByteSize::parse(&format_bytes(b)).unwrap().bytes() as u128, b);
        }
    }
}
