//! How the MedTech service (.NET 8) turns extracted strings into numbers, and
//! how .NET writes numbers back as text. Hand-written because the service's
//! behaviour is not any Rust parser's: `decimal.Parse(s, CultureInfo.InvariantCulture)`
//! silently reads `"36,6"` as 366, accepts `"5-"` as -5 and refuses `"1E-05"`,
//! which is how Json.NET writes the JSON number 0.00001.
//!
//! Sources:
//! * iomt-fhir `QuantityFhirValueProcessor.cs`: a Quantity value is
//!   `decimal.Parse(values.Single().Item2, CultureInfo.InvariantCulture)`; any
//!   exception becomes InvalidQuantityFhirValueException, which the FHIR stage
//!   handles by dropping the group (`FhirExceptionTelemetryProcessor.cs`).
//! * iomt-fhir `SampledDataProcessor.cs`: SampledData values are not parsed at
//!   all; each string is appended to `SampledData.data` followed by a space.
//! * .NET docs, `Decimal.Parse(String, IFormatProvider)`: "s is interpreted
//!   using the NumberStyles.Number style". `NumberStyles.Number` =
//!   AllowLeadingWhite | AllowTrailingWhite | AllowLeadingSign |
//!   AllowTrailingSign | AllowDecimalPoint | AllowThousands; no AllowExponent,
//!   AllowParentheses, AllowCurrencySymbol or AllowHexSpecifier (`NumberStyles`
//!   enum docs; `NumberStyles.Float`, used for doubles, has AllowExponent but
//!   no AllowThousands/AllowTrailingSign).
//! * .NET docs, `NumberFormatInfo.InvariantInfo`: PositiveSign `+`,
//!   NegativeSign `-`, NumberDecimalSeparator `.`, NumberGroupSeparator `,`.
//!   White space for parsing is U+0009..U+000D and U+0020 only.
//! * .NET runtime `Number.Parsing.cs` (`TryParseNumber`,
//!   `TryNumberToDecimal`): a group separator is skipped anywhere after the
//!   first digit and before the decimal point (not only every third digit); a
//!   sign may lead or trail but not both; white space may not follow a leading
//!   sign; the decimal keeps at most 96 bits of mantissa and 28 fraction
//!   digits and rounds the rest half to even; more than that in the integer
//!   part is an OverflowException.

use std::fmt;

/// A .NET `System.Decimal`: `(-1)^negative * mantissa / 10^scale`,
/// mantissa < 2^96, scale 0..=28. Trailing zeros are kept (`"1.50"` has scale 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DotnetDecimal {
    pub(crate) negative: bool,
    pub(crate) mantissa: u128,
    pub(crate) scale: u8,
}

impl fmt::Display for DotnetDecimal {
    /// `decimal.ToString(CultureInfo.InvariantCulture)`: all digits of the
    /// mantissa with the point `scale` digits from the right (`1.50`, `0.05`, `366`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = self.scale as usize;
        let body = if scale == 0 {
            digits
        } else if digits.len() > scale {
            format!("{}.{}", &digits[..digits.len() - scale], &digits[digits.len() - scale..])
        } else {
            format!("0.{}{digits}", "0".repeat(scale - digits.len()))
        };
        if self.negative && self.mantissa != 0 {
            write!(f, "-{body}")
        } else {
            f.write_str(&body)
        }
    }
}

impl DotnetDecimal {
    /// The value as a JSON number: an integer when it has no fraction digits and
    /// fits an i64, else the nearest f64 (a JSON number cannot keep a decimal's
    /// trailing zeros or more than ~17 significant digits; see docs/medtech.md).
    pub(crate) fn to_json(self) -> serde_json::Value {
        if self.scale == 0 {
            if let Ok(i) = i64::try_from(self.mantissa) {
                return serde_json::Value::from(if self.negative { -i } else { i });
            }
        }
        let f: f64 = self.to_string().parse().unwrap_or(0.0);
        serde_json::Number::from_f64(f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
    }
}

/// A string `decimal.Parse` accepted, and what it did on the way that a
/// sender probably did not mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalReading {
    pub(crate) value: DotnetDecimal,
    /// How many `,` were skipped as group (thousands) separators: `"36,6"` -> 366.
    pub(crate) group_separators: usize,
    /// The sign came after the digits: `"5-"` -> -5.
    pub(crate) trailing_sign: bool,
    /// Non-zero digits beyond what a decimal holds (96-bit mantissa, 28
    /// fraction digits) were rounded away.
    pub(crate) rounded: bool,
}

/// Why `decimal.Parse` throws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecimalError {
    /// FormatException, with the plain-words reason.
    Format(String),
    /// OverflowException: the integer part exceeds 79228162514264337593543950335.
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::Format(m) => write!(f, "FormatException: {m}"),
            DecimalError::Overflow => f.write_str("OverflowException: larger than a .NET decimal (79228162514264337593543950335)"),
        }
    }
}

/// .NET's parse-time white space (`Number.IsWhite`): U+0009..U+000D and U+0020.
fn is_white(c: char) -> bool {
    c == ' ' || ('\u{9}'..='\u{d}').contains(&c)
}

/// `decimal.Parse(s, CultureInfo.InvariantCulture)` (NumberStyles.Number) as
/// the MedTech service runs it on a Quantity value. Pure; see the module docs
/// for the rules and their sources.
///
/// Examples: `"36.6"` -> 36.6; `"36,6"` -> 366 (group separator);
/// `" +5 "` -> 5; `"5-"` -> -5; `"1E-05"`, `"(5)"`, `"$5"`, `"0x1A"`, `"NaN"`,
/// `"True"`, `"- 5"`, `"1.2.3"`, `"36.6,1"` -> FormatException;
/// `"1e30"` written out in full -> OverflowException.
pub(crate) fn parse_decimal(s: &str) -> Result<DecimalReading, DecimalError> {
    let chars: Vec<char> = s.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut p = 0usize;
    let mut negative = false;
    let mut signed = false;
    // Leading white space and one sign; no white space after the sign.
    while let Some(ch) = at(p) {
        if is_white(ch) && !signed {
            p += 1;
        } else if !signed && (ch == '+' || ch == '-') {
            signed = true;
            negative = ch == '-';
            p += 1;
        } else {
            break;
        }
    }
    // Digits, one decimal point, group separators after the first digit and before the point.
    let mut digits: Vec<u8> = Vec::new();
    let mut exp10: i32 = 0; // digits before the point (number.Scale)
    let (mut any_digit, mut nonzero, mut point) = (false, false, false);
    let mut groups = 0usize;
    while let Some(ch) = at(p) {
        if ch.is_ascii_digit() {
            any_digit = true;
            if ch != '0' || nonzero {
                digits.push(ch as u8 - b'0');
                nonzero = true;
                if !point {
                    exp10 += 1;
                }
            } else if point {
                exp10 -= 1;
            }
        } else if ch == '.' && !point {
            point = true;
        } else if ch == ',' && any_digit && !point {
            groups += 1;
        } else {
            break;
        }
        p += 1;
    }
    if !any_digit {
        return Err(DecimalError::Format(match at(p) {
            None if chars.iter().all(|c| is_white(*c)) => "empty or blank".to_string(),
            None => "no digits".to_string(),
            Some(c) => format!("no digits: {}", refused_char(c)),
        }));
    }
    // Trailing white space and, if none led, one sign.
    let mut trailing_sign = false;
    while let Some(ch) = at(p) {
        if is_white(ch) {
            p += 1;
        } else if !signed && (ch == '+' || ch == '-') {
            signed = true;
            trailing_sign = true;
            negative = ch == '-';
            p += 1;
        } else {
            break;
        }
    }
    // Only NUL characters may remain (Number.TrailingZeros).
    if let Some(bad) = chars.get(p..).and_then(|rest| rest.iter().find(|c| **c != '\0')) {
        return Err(DecimalError::Format(refused_char(*bad)));
    }
    let value = to_decimal(negative, &digits, exp10)?;
    let rounded = digits_used(&digits, exp10) < digits.len() && digits[digits_used(&digits, exp10)..].iter().any(|d| *d != 0);
    Ok(DecimalReading { value, group_separators: groups, trailing_sign, rounded })
}

/// Why `decimal.Parse` (NumberStyles.Number, invariant) stops at `c`.
fn refused_char(c: char) -> String {
    match c {
        'e' | 'E' => "an exponent is not allowed (NumberStyles.Number has no AllowExponent)".to_string(),
        '(' | ')' => "parentheses are not allowed (no AllowParentheses)".to_string(),
        'x' | 'X' => "hexadecimal is not allowed (no AllowHexSpecifier)".to_string(),
        ',' => "a group separator ',' is allowed only after a digit and before the decimal point".to_string(),
        '.' => "a second decimal point".to_string(),
        '+' | '-' => "a second sign, or white space after the sign".to_string(),
        c if c.is_whitespace() => format!("{c:?} inside the number (only ASCII space and tab/CR/LF/VT/FF are white space, and only at the ends)"),
        c => format!("{c:?} is not part of an invariant-culture number (no currency symbols, NaN, Infinity or letters)"),
    }
}

const MANTISSA_LIMIT: u128 = 1 << 96;

/// How many of `digits` fit (the loop of `TryNumberToDecimal`).
fn digits_used(digits: &[u8], exp10: i32) -> usize {
    let mut m: u128 = 0;
    let mut e = exp10;
    let mut i = 0;
    while e > 0 || (i < digits.len() && e > -28) {
        let d = digits.get(i).copied().unwrap_or(0) as u128;
        let next = m * 10 + d;
        if next >= MANTISSA_LIMIT {
            break;
        }
        m = next;
        i += 1;
        e -= 1;
    }
    i.min(digits.len())
}

/// `TryNumberToDecimal`: significant `digits` (no leading zeros) with the
/// point `exp10` digits from their start.
fn to_decimal(negative: bool, digits: &[u8], exp10: i32) -> Result<DotnetDecimal, DecimalError> {
    if digits.is_empty() {
        return Ok(DotnetDecimal { negative, mantissa: 0, scale: (-exp10).clamp(0, 28) as u8 });
    }
    if exp10 > 29 {
        return Err(DecimalError::Overflow);
    }
    let mut m: u128 = 0;
    let mut e = exp10;
    let mut i = 0;
    while e > 0 || (i < digits.len() && e > -28) {
        let d = digits.get(i).copied().unwrap_or(0) as u128;
        let next = m * 10 + d;
        if next >= MANTISSA_LIMIT {
            break;
        }
        m = next;
        i += 1;
        e -= 1;
    }
    if let Some(&c) = digits.get(i) {
        let tie_to_even = c == 5 && m % 2 == 0 && digits[i + 1..].iter().all(|d| *d == 0);
        if c >= 5 && !tie_to_even {
            m += 1;
            if m == MANTISSA_LIMIT {
                m = MANTISSA_LIMIT / 10 + 1;
                e += 1;
            }
        }
    }
    if e > 0 {
        return Err(DecimalError::Overflow);
    }
    Ok(DotnetDecimal { negative, mantissa: m, scale: (-e) as u8 })
}

/// Whether `s` is a FHIR `decimal` as JSON writes it (FHIR R4 datatypes,
/// decimal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) or one of the
/// SampledData markers `E`, `L`, `U` (FHIR R4 SampledData.data).
pub(crate) fn is_fhir_sampled_token(s: &str) -> bool {
    if matches!(s, "E" | "L" | "U") {
        return true;
    }
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s0 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s0 {
            return false;
        }
    }
    i == b.len()
}

// ---------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------

/// A .NET `DateTime` as the service holds it. `utc` assumes the service's local
/// time zone is UTC (Azure hosts run in UTC): a time with an offset is
/// converted, a time without one is taken as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetDateTime {
    pub(crate) utc: chrono::DateTime<chrono::Utc>,
    /// The text said which zone it is in (`Z` or an offset).
    pub(crate) has_offset: bool,
}

/// Json.NET `DateTimeUtils.TryParseDateTime` with `DateParseHandling.DateTime`
/// (the `JsonTextReader` default the service reads event bodies with,
/// iomt-fhir `EventMessageJObjectConverter.cs`): a JSON string of 19..=40
/// UTF-16 units, starting with a digit, with `T` at index 10, in the exact
/// shape `yyyy-MM-ddTHH:mm:ss[.f{1,7}][Z|±hh[[:]mm]]`, becomes a Date token
/// while the message is parsed. Hour 24 (with zero minutes and seconds) is the
/// next midnight; offsets up to ±99:99 are accepted; more than 7 fraction
/// digits, a space instead of `T`, or no seconds leave it a string.
/// (Json.NET `DateTimeParser.Parse`/`ParseTime`/`ParseZone`; the `/Date(...)/`
/// form is not modelled.)
pub(crate) fn json_net_date(s: &str) -> Option<NetDateTime> {
    use chrono::{Duration, NaiveDate, TimeZone, Utc};
    let t: Vec<u16> = s.encode_utf16().collect();
    let n = t.len();
    if !(19..=40).contains(&n) {
        return None;
    }
    let ch = |i: usize| t.get(i).and_then(|u| char::from_u32(*u as u32)).unwrap_or('\u{ffff}');
    let dig = |i: usize| ch(i).to_digit(10).filter(|_| ch(i).is_ascii_digit());
    let d2 = |i: usize| Some(dig(i)? * 10 + dig(i + 1)?);
    let d4 = |i: usize| Some(d2(i)? * 100 + d2(i + 2)?);
    if !ch(0).is_ascii_digit() || ch(10) != 'T' {
        return None;
    }
    let year = d4(0)?;
    let month = d2(5)?;
    let day = d2(8)?;
    if year < 1 || ch(4) != '-' || ch(7) != '-' || !(1..=12).contains(&month) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let (hour, minute, second) = (d2(11)?, d2(14)?, d2(17)?);
    if ch(13) != ':' || ch(16) != ':' || hour > 24 || minute > 59 || second > 59 || (hour == 24 && (minute != 0 || second != 0)) {
        return None;
    }
    let mut i = 19;
    let mut ticks: i64 = 0;
    if ch(i) == '.' {
        let mut digits = 0;
        i += 1;
        while i < n && digits < 7 {
            let Some(d) = dig(i) else { break };
            ticks = ticks * 10 + d as i64;
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        ticks *= 10i64.pow(7 - digits);
        if hour == 24 && ticks != 0 {
            return None;
        }
    }
    // ParseZone.
    let mut zone: i8 = 0; // 0 none, 1 UTC, 2 west (-), 3 east (+)
    let (mut zh, mut zm) = (0u32, 0u32);
    if i < n {
        let c = ch(i);
        if c == 'z' || c == 'Z' {
            zone = 1;
            i += 1;
        } else {
            if i + 2 < n {
                if let Some(h) = d2(i + 1) {
                    if c == '-' || c == '+' {
                        zone = if c == '-' { 2 } else { 3 };
                        zh = h;
                        i += 3;
                    }
                }
            }
            if i < n {
                if ch(i) == ':' {
                    i += 1;
                    if i + 1 < n {
                        if let Some(m) = d2(i) {
                            zm = m;
                            i += 2;
                        }
                    }
                } else if i + 1 < n {
                    if let Some(m) = d2(i) {
                        zm = m;
                        i += 2;
                    }
                }
            }
        }
    }
    if i != n {
        return None;
    }
    let naive = date.and_hms_opt(hour % 24, minute, second)? + Duration::nanoseconds(ticks * 100) + Duration::days(i64::from(hour == 24));
    let offset = Duration::seconds(i64::from(zh) * 3600 + i64::from(zm) * 60);
    let naive = match zone {
        2 => naive + offset,
        3 => naive - offset,
        _ => naive,
    };
    Some(NetDateTime { utc: Utc.from_utc_datetime(&naive), has_offset: zone != 0 })
}

/// `DateTime.ToString(CultureInfo.InvariantCulture)` ("G": `MM/dd/yyyy HH:mm:ss`),
/// which is what Json.NET's `Value<string>()` gives for a Date token. The
/// fraction of a second and the offset are lost.
pub(crate) fn invariant_general(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%m/%d/%Y %H:%M:%S").to_string()
}

/// What a time string reads as that the sender may not have meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeNote {
    /// No `Z` or offset: the service takes it as its local time (UTC on Azure).
    NoOffset,
    /// `a/b/yyyy` with both parts up to 12: the invariant culture reads month first.
    MonthFirst,
    /// A time of day with no date: .NET uses the date of the day it parses it.
    NoDate,
    /// A date with no time of day: midnight.
    NoTime,
}

impl TimeNote {
    /// Plain words.
    pub(crate) fn text(self) -> &'static str {
        match self {
            TimeNote::NoOffset => {
                "it has no UTC offset, so the service takes it as its own local time (UTC on Azure); if the device meant its local time, \
                 the Observation is off by the device's UTC offset"
            }
            TimeNote::MonthFirst => "the service's invariant culture reads a/b/yyyy as month/day/year; a day/month sender gets the wrong date",
            TimeNote::NoDate => "it has no date, so .NET puts it on the day the service processes the event (the preview uses the ingestion day)",
            TimeNote::NoTime => "it has no time of day, so it is stored as midnight",
        }
    }
}

/// A subset of `DateTime.Parse(s, CultureInfo.InvariantCulture)`, which
/// Json.NET's `Value<DateTime?>()` calls on a string token (a string that was
/// not read as a Date token, or a `Properties` value). Recognised:
/// `yyyy-M-d`, `M/d/yyyy` or no date, then optionally `H:mm[:ss[.f…]]` (after
/// `T` or spaces) with `AM`/`PM`, then optionally `Z`, `GMT` or `±h[h][[:]mm]`.
/// The fraction is rounded to 100 ns ticks. `today` is the date .NET uses for
/// a time with no date. `None` means "not one of these forms": .NET accepts
/// more (month names, RFC 1123) and refuses others, so the caller must not say "fine".
pub(crate) fn date_time_parse(s: &str, today: chrono::NaiveDate) -> Option<(NetDateTime, Vec<TimeNote>)> {
    use chrono::{Duration, NaiveDate, TimeZone, Utc};
    let s = s.trim_matches(|c: char| c.is_whitespace());
    let mut notes = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let num = |i: &mut usize, min: usize, max: usize| -> Option<u32> {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - st < max {
            *i += 1;
        }
        if *i - st < min {
            return None;
        }
        b[st..*i].iter().collect::<String>().parse().ok()
    };
    // Date part.
    let save = i;
    let date = if let (Some(y), true) = (num(&mut i, 4, 4), b.get(i) == Some(&'-')) {
        i += 1;
        let m = num(&mut i, 1, 2)?;
        if b.get(i) != Some(&'-') {
            return None;
        }
        i += 1;
        let d = num(&mut i, 1, 2)?;
        Some(NaiveDate::from_ymd_opt(y as i32, m, d)?)
    } else {
        i = save;
        let a = num(&mut i, 1, 2);
        if let (Some(a), true) = (a, b.get(i) == Some(&'/')) {
            i += 1;
            let d = num(&mut i, 1, 2)?;
            if b.get(i) != Some(&'/') {
                return None;
            }
            i += 1;
            let y = num(&mut i, 4, 4)?;
            if a <= 12 && d <= 12 && a != d {
                notes.push(TimeNote::MonthFirst);
            }
            Some(NaiveDate::from_ymd_opt(y as i32, a, d)?)
        } else {
            i = save;
            None
        }
    };
    if date.is_some() {
        if b.get(i) == Some(&'T') {
            i += 1;
        } else {
            while b.get(i) == Some(&' ') {
                i += 1;
            }
        }
    }
    // Time part.
    let mut time: Option<(u32, u32, u32, i64)> = None;
    let save = i;
    if let (Some(h), true) = (num(&mut i, 1, 2), b.get(i) == Some(&':')) {
        i += 1;
        let mi = num(&mut i, 2, 2)?;
        let mut sec = 0;
        let mut ticks = 0i64;
        if b.get(i) == Some(&':') {
            i += 1;
            sec = num(&mut i, 2, 2)?;
            if b.get(i) == Some(&'.') {
                i += 1;
                let st = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let frac: String = b[st..i].iter().collect();
                if frac.is_empty() {
                    return None;
                }
                let f: f64 = format!("0.{frac}").parse().ok()?;
                ticks = (f * 1e7).round() as i64;
            }
        }
        while b.get(i) == Some(&' ') {
            i += 1;
        }
        let rest: String = b[i..].iter().collect::<String>().to_ascii_uppercase();
        let mut h = h;
        if rest.starts_with("AM") || rest.starts_with("PM") {
            if !(1..=12).contains(&h) {
                return None;
            }
            h = h % 12 + if rest.starts_with("PM") { 12 } else { 0 };
            i += 2;
            while b.get(i) == Some(&' ') {
                i += 1;
            }
        }
        if h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        time = Some((h, mi, sec, ticks));
    } else {
        i = save;
    }
    if date.is_none() && time.is_none() {
        return None;
    }
    // Zone.
    let rest: String = b[i..].iter().collect();
    let offset_secs: Option<i64> = if rest.is_empty() {
        None
    } else if rest == "Z" || rest == "z" || rest.eq_ignore_ascii_case("GMT") || rest.eq_ignore_ascii_case("UTC") {
        Some(0)
    } else {
        let (sign, digits) = match rest.chars().next() {
            Some('+') => (1, &rest[1..]),
            Some('-') => (-1, &rest[1..]),
            _ => return None,
        };
        let (hh, mm) = match digits.split_once(':') {
            Some((h, m)) => (h, m),
            None if digits.len() > 2 => digits.split_at(digits.len() - 2),
            None => (digits, "0"),
        };
        if hh.is_empty() || hh.len() > 2 || mm.len() > 2 || !hh.chars().chain(mm.chars()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (hh, mm): (i64, i64) = (hh.parse().ok()?, mm.parse().ok()?);
        if hh > 14 || mm > 59 {
            return None;
        }
        Some(sign * (hh * 3600 + mm * 60))
    };
    let day = match date {
        Some(d) => d,
        None => {
            notes.push(TimeNote::NoDate);
            today
        }
    };
    let (h, mi, sec, ticks) = match time {
        Some(t) => t,
        None => {
            notes.push(TimeNote::NoTime);
            (0, 0, 0, 0)
        }
    };
    if offset_secs.is_none() {
        notes.push(TimeNote::NoOffset);
    }
    let naive = day.and_hms_opt(h, mi, sec)? + Duration::nanoseconds(ticks * 100) - Duration::seconds(offset_secs.unwrap_or(0));
    Some((NetDateTime { utc: Utc.from_utc_datetime(&naive), has_offset: offset_secs.is_some() }, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(input, Ok(stored text, group separators, trailing sign, rounded) | Err(kind))`.
    /// Built from the .NET rules cited in the module docs (NumberStyles.Number,
    /// invariant culture), not from running .NET.
    #[test]
    fn decimal_parse_table() {
        enum Want {
            Ok(&'static str, usize, bool, bool),
            Format,
            Overflow,
        }
        use Want::*;
        let table: &[(&str, Want)] = &[
            // Plain.
            ("36.6", Ok("36.6", 0, false, false)),
            ("366", Ok("366", 0, false, false)),
            ("0.5", Ok("0.5", 0, false, false)),
            (".5", Ok("0.5", 0, false, false)),
            ("5.", Ok("5", 0, false, false)),
            ("1.50", Ok("1.50", 0, false, false)),
            ("007", Ok("7", 0, false, false)),
            ("0", Ok("0", 0, false, false)),
            ("0.0", Ok("0.0", 0, false, false)),
            // Group separators: skipped anywhere after the first digit and before the point.
            ("36,6", Ok("366", 1, false, false)),
            ("1,234.5", Ok("1234.5", 1, false, false)),
            ("1,2,3", Ok("123", 2, false, false)),
            ("1,,2", Ok("12", 2, false, false)),
            ("1,", Ok("1", 1, false, false)),
            (",5", Format),
            ("1.234,5", Format),
            ("1 234", Format),
            ("1\u{a0}234", Format),
            // Signs: leading or trailing, not both; no white space after a leading sign.
            ("-5", Ok("-5", 0, false, false)),
            ("+5", Ok("5", 0, false, false)),
            ("5-", Ok("-5", 0, true, false)),
            ("5+", Ok("5", 0, true, false)),
            ("5 -", Ok("-5", 0, true, false)),
            (" -5 ", Ok("-5", 0, false, false)),
            ("- 5", Format),
            ("-5-", Format),
            ("--5", Format),
            ("+-5", Format),
            ("\u{2212}5", Format),
            ("-0", Ok("0", 0, false, false)),
            // White space: ASCII space and U+0009..U+000D only.
            (" 36.6 ", Ok("36.6", 0, false, false)),
            ("\t36.6\r\n", Ok("36.6", 0, false, false)),
            ("\u{a0}36.6", Format),
            ("36.6\0", Ok("36.6", 0, false, false)),
            ("", Format),
            ("   ", Format),
            // No exponent (NumberStyles.Number): Json.NET writes 0.00001 as "1E-05" and 1e21 as "1E+21".
            ("1E-05", Format),
            ("1E+21", Format),
            ("1e3", Format),
            // No parentheses, currency, hex, special values, booleans.
            ("(5)", Format),
            ("$5", Format),
            ("5\u{a4}", Format),
            ("0x1A", Format),
            ("NaN", Format),
            ("Infinity", Format),
            ("-Infinity", Format),
            ("\u{221e}", Format),
            ("True", Format),
            ("1.2.3", Format),
            ("36.6 C", Format),
            ("\u{ff13}\u{ff16}", Format),
            // Range and precision: 96-bit mantissa, 28 fraction digits, round half to even.
            ("79228162514264337593543950335", Ok("79228162514264337593543950335", 0, false, false)),
            ("79228162514264337593543950336", Overflow),
            ("-79228162514264337593543950336", Overflow),
            ("1000000000000000000000000000000", Overflow),
            ("0.00000000000000000000000000001", Ok("0.0000000000000000000000000000", 0, false, true)),
            ("0.1234567890123456789012345678", Ok("0.1234567890123456789012345678", 0, false, false)),
            ("0.12345678901234567890123456785", Ok("0.1234567890123456789012345678", 0, false, true)),
            ("0.12345678901234567890123456775", Ok("0.1234567890123456789012345678", 0, false, true)),
            ("1.00000000000000000000000000005", Ok("1.0000000000000000000000000000", 0, false, true)),
            ("1.00000000000000000000000000015", Ok("1.0000000000000000000000000002", 0, false, true)),
            ("7922816251426433759354395033.56", Ok("7922816251426433759354395034", 0, false, true)),
        ];
        for (input, want) in table {
            let got = parse_decimal(input);
            match (want, &got) {
                (Ok(text, g, t, r), Result::Ok(d)) => {
                    assert_eq!(d.value.to_string(), *text, "{input:?}");
                    assert_eq!((d.group_separators, d.trailing_sign, d.rounded), (*g, *t, *r), "{input:?}");
                }
                (Format, Err(DecimalError::Format(_))) | (Overflow, Err(DecimalError::Overflow)) => {}
                _ => panic!("{input:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn decimal_json_and_reasons() {
        assert_eq!(parse_decimal("36,6").unwrap().value.to_json(), serde_json::json!(366));
        assert_eq!(parse_decimal("-12").unwrap().value.to_json(), serde_json::json!(-12));
        assert_eq!(parse_decimal("36.60").unwrap().value.to_json(), serde_json::json!(36.6));
        assert!(parse_decimal("1E-05").unwrap_err().to_string().contains("exponent"));
        assert!(parse_decimal("(5)").unwrap_err().to_string().contains("parentheses"));
    }

    /// Json.NET's date detection while parsing a message, then `Value<string>()`.
    #[test]
    fn json_net_date_table() {
        use chrono::{TimeZone, Utc};
        let at = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        let yes: &[(&str, chrono::DateTime<Utc>, bool)] = &[
            ("2020-10-22T01:34:56Z", at(2020, 10, 22, 1, 34, 56), true),
            ("2020-10-22T01:34:56+00:00", at(2020, 10, 22, 1, 34, 56), true),
            ("2020-10-22T03:34:56+02:00", at(2020, 10, 22, 1, 34, 56), true),
            ("2020-10-21T20:34:56-05", at(2020, 10, 22, 1, 34, 56), true),
            ("2020-10-22T03:34:56+0200", at(2020, 10, 22, 1, 34, 56), true),
            ("2020-10-22T01:34:56", at(2020, 10, 22, 1, 34, 56), false),
            ("2020-10-22T24:00:00Z", at(2020, 10, 23, 0, 0, 0), true),
        ];
        for (s, want, off) in yes {
            let d = json_net_date(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!((d.utc, d.has_offset), (*want, *off), "{s}");
        }
        let frac = json_net_date("2019-02-01T22:46:01.8750000Z").unwrap();
        assert_eq!(frac.utc.timestamp_subsec_millis(), 875);
        assert_eq!(invariant_general(&frac.utc), "02/01/2019 22:46:01");
        for no in [
            "2020-10-22 01:34:56Z",
            "2020-10-22T01:34Z",
            "2020-10-22T01:34:56.12345678Z",
            "2020-10-22T24:00:01Z",
            "2020-02-30T00:00:00Z",
            "2020-10-22T01:34:60Z",
            "2020-10-22t01:34:56Z",
            "2020-10-22T01:34:56+0",
            "2020-10-22",
            "36.6",
        ] {
            assert_eq!(json_net_date(no), None, "{no}");
        }
    }

    /// The DateTime.Parse subset, with what a sender may not have meant.
    #[test]
    fn date_time_parse_table() {
        use chrono::{NaiveDate, TimeZone, Utc};
        let today = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        let at = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        let table: &[(&str, chrono::DateTime<Utc>, &[TimeNote])] = &[
            ("2020-10-22 01:34:56Z", at(2020, 10, 22, 1, 34, 56), &[]),
            ("2020-10-22T01:34Z", at(2020, 10, 22, 1, 34, 0), &[]),
            ("2020-10-22T01:34:56+0", at(2020, 10, 22, 1, 34, 56), &[]),
            ("2020-10-22 03:34:56 +02:00", at(2020, 10, 22, 1, 34, 56), &[]),
            ("2020-10-22", at(2020, 10, 22, 0, 0, 0), &[TimeNote::NoTime, TimeNote::NoOffset]),
            ("01/02/2020 10:00:00", at(2020, 1, 2, 10, 0, 0), &[TimeNote::MonthFirst, TimeNote::NoOffset]),
            ("12/31/2020 1:00 PM", at(2020, 12, 31, 13, 0, 0), &[TimeNote::NoOffset]),
            ("10:15:00Z", at(2026, 1, 15, 10, 15, 0), &[TimeNote::NoDate]),
        ];
        for (s, want, notes) in table {
            let (d, n) = date_time_parse(s, today).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(d.utc, *want, "{s}");
            assert_eq!(&n[..], *notes, "{s}");
        }
        let t = date_time_parse("2020-10-22T01:34:56.123456789Z", today).unwrap().0;
        assert_eq!(t.utc.timestamp_subsec_nanos(), 123_456_800);
        for no in ["31/12/2020", "22 Oct 2020", "1603330496", "", "2020-10-22T25:00:00Z", "yesterday"] {
            assert!(date_time_parse(no, today).is_none(), "{no}");
        }
    }

    #[test]
    fn fhir_sampled_tokens() {
        for ok in ["0", "-1", "36.6", "1E-05", "1e+21", "E", "L", "U"] {
            assert!(is_fhir_sampled_token(ok), "{ok}");
        }
        for bad in ["36,6", "", "007", ".5", "5.", "True", "NaN", "Infinity", "1 2", "+5"] {
            assert!(!is_fhir_sampled_token(bad), "{bad}");
        }
    }
}
