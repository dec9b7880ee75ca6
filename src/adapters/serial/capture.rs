//! The timed capture format that `iomt-edge serial record` writes and that
//! `iomt-edge simulate serial --capture` plays back at its recorded timing
//! (and `iomt-edge decode serial` reads, each chunk at its own arrival time).
//!
//! Why a format of our own: a profile author needs the bytes exactly as the
//! monitor sent them (line noise and binary frames included) **and** when
//! they came (one line per second, a packet every third of a second, a
//! pause), so that a replay exercises the quiet-time watchdog and the idle
//! gap that ends a bare HL7 message as the real monitor did. Plain text,
//! readable with `less`, one read of the port per line:
//!
//! ```text
//! # iomt-edge serial capture v1
//! # port /dev/ttyUSB0, 9600 8N1, started 2026-11-30T09:20:00.123Z
//! +0.000000 30 32 2f 32 32 2f 31 36 20
//! +0.004113 32 32 3a 34 37 3a 34 35 0d 0a
//! ```
//!
//! The first line is exactly [`HEADER`]; further `#` lines are comments.
//! Each data line is `+SECONDS` (the time since the recording started,
//! microseconds, non-decreasing) and the bytes of one read, two hex digits
//! each, separated by spaces. Blank lines are ignored.

use std::time::Duration;

/// The first line of every timed capture.
pub(crate) const HEADER: &str = "# iomt-edge serial capture v1";

/// One read of the port: when (since the start of the recording) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) offset: Duration,
    pub(crate) bytes: Vec<u8>,
}

/// Whether `data` is a timed capture (starts with [`HEADER`]).
pub(crate) fn is_timed(data: &[u8]) -> bool {
    data.starts_with(HEADER.as_bytes())
}

/// The data line of one chunk, with its newline: `+1.234567 0d 0a\n`.
pub(crate) fn chunk_line(offset: Duration, bytes: &[u8]) -> String {
    let mut s = format!("+{}.{:06}", offset.as_secs(), offset.subsec_micros());
    for b in bytes {
        s.push_str(&format!(" {b:02x}"));
    }
    s.push('\n');
    s
}

/// Parses a timed capture. Errors name the line (1-based) and what is wrong
/// with it; nothing is guessed.
pub(crate) fn parse(text: &str) -> Result<Vec<Chunk>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim_end() == HEADER => {}
        _ => return Err(format!("line 1 is not `{HEADER}`")),
    }
    let mut out: Vec<Chunk> = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let mut tokens = line.split_whitespace();
        let t = tokens.next().unwrap_or_default();
        let offset = t
            .strip_prefix('+')
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("line {n}: `{t}` is not a time offset like +1.250000"))?;
        if let Some(prev) = out.last() {
            if offset < prev.offset {
                return Err(format!("line {n}: time offset {t} goes back in time"));
            }
        }
        let bytes = tokens
            .map(|h| if h.len() == 2 { u8::from_str_radix(h, 16).map_err(|_| h) } else { Err(h) })
            .collect::<Result<Vec<u8>, &str>>()
            .map_err(|h| format!("line {n}: `{h}` is not a byte in hex (two digits)"))?;
        out.push(Chunk { offset, bytes });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_errors_name_the_line() {
        let mut text = format!("{HEADER}\n# port /dev/ttyUSB0\n");
        text.push_str(&chunk_line(Duration::from_micros(0), b"AB"));
        text.push_str(&chunk_line(Duration::from_micros(1_250_001), &[0x0d, 0x0a, 0xff]));
        assert!(text.ends_with("+1.250001 0d 0a ff\n"), "{text}");
        assert!(is_timed(text.as_bytes()));
        let chunks = parse(&text).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0], Chunk { offset: Duration::ZERO, bytes: b"AB".to_vec() });
        assert_eq!(chunks[1].offset, Duration::from_micros(1_250_001));
        assert_eq!(chunks[1].bytes, vec![0x0d, 0x0a, 0xff]);
        assert!(parse("01 02\n").unwrap_err().contains("line 1"));
        assert_eq!(parse(&format!("{HEADER}\n+1.0 0g\n")).unwrap_err(), "line 2: `0g` is not a byte in hex (two digits)");
        assert_eq!(parse(&format!("{HEADER}\n1.0 00\n")).unwrap_err(), "line 2: `1.0` is not a time offset like +1.250000");
        assert!(parse(&format!("{HEADER}\n+2.0 00\n+1.0 00\n")).unwrap_err().contains("back in time"));
        assert!(!is_timed(b"02/22/16 22:47:45 SPO2=098%"));
    }
}
