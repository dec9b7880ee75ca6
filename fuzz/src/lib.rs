//! The checks every fuzz target runs on one input (the targets in
//! `fuzz_targets/` only pick a driver). Kept apart from the gateway crate so
//! the gateway builds without the fuzzer; run with `scripts/fuzz.sh`.
//!
//! An input is `[chunk seed, stream...]`: the stream is decoded once in one
//! piece and once in chunks whose sizes come from the seed, and must give the
//! same result (a serial port splits reads anywhere). Then a third decoder is
//! fed the same chunks with `Decoder::idle` between them and `Decoder::abort`
//! at the end, the calls the adapter makes on a quiet or broken line. Every
//! reading of every run must be well formed: finite values, a unit per value,
//! and the `outOfRange` flag exactly when a value is implausible. Any panic,
//! including an arithmetic overflow (the fuzz build keeps overflow checks), is
//! a crash the fuzzer records.

use chrono::{DateTime, TimeZone, Utc};
use iomt_edge::adapters::serial::framing::{LineFramer, LineFraming, MllpFramer, Terminator};
use iomt_edge::adapters::serial::hl7;
use iomt_edge::adapters::serial::profile::Profile;
use iomt_edge::adapters::serial::{Decoded, Driver};
use iomt_edge::model::{is_plausible, Flag};

fn arrival() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 10, 0, 0, 0).single().unwrap_or_default()
}

/// Chunk sizes 1..=32 from the seed byte, cycling through a few lengths.
fn chunks<'a>(seed: u8, stream: &'a [u8]) -> Vec<&'a [u8]> {
    let sizes = [1 + (seed & 0x1F) as usize, 1 + (seed >> 5) as usize, 3];
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn run(driver: &Driver, pieces: &[&[u8]], idle_and_abort: bool) -> Decoded {
    let mut d = driver.decoder("fuzz-1");
    let mut out = Vec::new();
    for p in pieces {
        d.push(p, arrival(), &mut out);
        if idle_and_abort {
            d.idle(arrival(), &mut out);
        }
    }
    if idle_and_abort {
        d.abort(arrival(), &mut out);
    } else {
        d.finish(arrival(), &mut out);
    }
    out
}

/// Panics when a reading is malformed (the fuzzer records it as a crash).
pub fn check_readings(out: &Decoded) {
    for rec in out.iter().filter_map(|r| r.as_ref().ok()) {
        for r in &rec.readings {
            for (name, v) in &r.values {
                assert!(v.is_finite(), "{name} = {v} in {r:?}");
                assert!(r.units.contains_key(name), "no unit for {name} in {r:?}");
            }
            let implausible = r.values.values().any(|v| !is_plausible(r.kind, *v));
            assert_eq!(r.flags.contains(&Flag::OutOfRange), implausible, "{r:?}");
        }
        // What the adapter stores must serialise.
        if let Err(e) = serde_json::to_string(rec) {
            panic!("record does not serialise: {e}");
        }
    }
}

/// One input through one driver: chunking-invariance and well-formed readings.
pub fn driver(driver: &Driver, data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let whole = run(driver, &[stream], false);
    let pieces = chunks(seed, stream);
    let split = run(driver, &pieces, false);
    assert_eq!(whole, split, "chunking changed the result");
    check_readings(&whole);
    check_readings(&run(driver, &pieces, true));
}

/// A driver by name, built once per process (the fuzzer runs millions of
/// inputs in one persistent process).
#[macro_export]
macro_rules! driver_target {
    ($name:expr) => {
        fn main() {
            let driver = match iomt_edge::adapters::serial::Driver::by_name($name) {
                Ok(d) => d,
                Err(e) => panic!("{}: {e}", $name),
            };
            afl::fuzz!(|data: &[u8]| {
                iomt_edge_fuzz::driver(&driver, data);
            });
        }
    };
}

/// The line framer under a configuration picked by the first two bytes:
/// chunking-invariance, and every line shorter than the maximum and free of
/// the bytes that delimit it.
pub fn line_framer(data: &[u8]) {
    let [cfg, max, seed, stream @ ..] = data else { return };
    let terminator = [Terminator::Cr, Terminator::Lf, Terminator::Crlf, Terminator::Any][usize::from(cfg & 3)];
    let framing = LineFraming {
        terminator,
        start_byte: (cfg & 4 != 0).then_some(0x02),
        end_byte: (cfg & 8 != 0).then_some(0x03),
        max_length: 1 + usize::from(*max),
    };
    let frame = |pieces: &[&[u8]]| {
        let mut f = LineFramer::new(framing.clone());
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, &mut out);
        }
        f.finish(&mut out);
        out
    };
    let whole = frame(&[stream]);
    assert_eq!(whole, frame(&chunks(*seed, stream)), "chunking changed the lines");
    for line in whole.iter().flatten() {
        assert!(!line.is_empty() && line.len() <= framing.max_length, "{line:?}");
        let eol = |b: Option<&u8>| matches!(b, Some(b'\r' | b'\n'));
        assert!(!eol(line.first()) && !eol(line.last()), "CR/LF kept at an end: {line:?}");
        if framing.end_byte.is_none() {
            let (cr, lf) = match terminator {
                Terminator::Cr => (true, false),
                Terminator::Lf | Terminator::Crlf => (false, true),
                Terminator::Any => (true, true),
            };
            assert!(!(cr && line.contains(&b'\r')) && !(lf && line.contains(&b'\n')), "terminator inside a line: {line:?}");
        }
        if let Some(s) = framing.start_byte {
            assert!(!line.contains(&s), "start byte inside a line: {line:?}");
        }
        if let Some(e) = framing.end_byte {
            assert!(!line.contains(&e), "end byte inside a line: {line:?}");
        }
    }
}

/// The MLLP framer: chunking-invariance, messages within the maximum and
/// free of block bytes.
pub fn mllp_framer(data: &[u8]) {
    let [max, seed, stream @ ..] = data else { return };
    let max = 1 + usize::from(*max);
    let frame = |pieces: &[&[u8]]| {
        let mut f = MllpFramer::new(max);
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, &mut out);
        }
        f.finish(&mut out);
        out
    };
    let whole = frame(&[stream]);
    assert_eq!(whole, frame(&chunks(*seed, stream)), "chunking changed the messages");
    for m in whole.iter().flatten() {
        assert!(m.len() <= max, "{} > {max}", m.len());
        assert!(!m.contains(&0x0B) && !m.contains(&0x1C), "{m:?}");
    }
}

/// One HL7 message straight into the parser, and the ACK built from its
/// header: no panic, well-formed readings, an ACK that is one MSH and one MSA
/// segment; its PID-3/PV1-3 routing and per-bed device id.
pub fn hl7_message(opts: &hl7::Hl7Options, data: &[u8]) {
    let rec = hl7::decode_message(data, opts, "fuzz-1", arrival());
    let header = hl7::header(data).ok();
    let (code, reason) = match &rec {
        Ok(_) => (hl7::AckCode::AA, None),
        Err(e) => (e.code, Some(e.reason.as_str())),
    };
    let ack = hl7::build_ack(header.as_ref(), code, reason, arrival(), "ACK1");
    let segs: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
    assert!(segs.len() == 2 && segs[0].starts_with("MSH") && segs[1].starts_with("MSA"), "{ack:?}");
    // The patient and bed of the message: no panic; a bed gives a
    // bounded, safe device id or an AE.
    if let Ok(r) = hl7::routing(data) {
        if let Some(loc) = r.location {
            match hl7::bed_device_id("fuzz-1", &loc) {
                Ok(id) => assert!(id.len() <= 128 && !id.chars().any(char::is_control), "{id:?}"),
                Err(e) => assert_eq!(e.code, hl7::AckCode::AE),
            }
        }
    }
    if let Ok(r) = rec {
        check_readings(&vec![Ok(r)]);
    }
}

/// A profile file (text a clinical engineer writes): loading never panics,
/// and a profile that loads decodes its own text and a few lines without
/// panicking.
pub fn profile_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = Profile::from_toml(text, "fuzz.toml") else { return };
    let d = Driver::Profile(Box::new(p));
    for line in [text.as_bytes(), b"SPO2=097 HR=072\r\n", b"02/22/16 22:47:45 SN=1 SPO2=098% BPM=097 PI=03.60% EXC=000800\r\n"] {
        check_readings(&run(&d, &[line, b"\n"], false));
    }
}
