//! Bedside monitors and oximeters on a serial line (RS-232, USB-serial) or an
//! HL7 v2 feed: the pure cores. Bytes in, [`Record`]s of [`Reading`]s or
//! counted [`BadInput`] out; no I/O, no clock, no async.
//!
//! Why this is hand-written: the serial world has no common protocol. Some
//! monitors print one text line per second whose layout differs per model and
//! firmware (Masimo "ASCII 1", Nonin ASCII, Nellcor printer lines), so those
//! are described by data, in a **device profile** (`devices/serial/*.toml`,
//! [`profile`]) that a clinical engineer can write without code. What a profile
//! cannot express is built in: HL7 v2 ORU^R01 ([`hl7`], segment grammar,
//! escapes, IEEE 11073 codes, ACKs) and Nonin's checksummed binary Data Formats
//! 2, 7 and 8 ([`nonin`]). Existing crates were considered: the HL7/MLLP crates
//! (`hl7-2-mllp`, `mllp-rs`) are async transports or full message models, and
//! none turns OBX observations into our readings or keeps the device-status and
//! time rules of this gateway, so the small parser is ours.
//!
//! - [`framing`]: incremental line and MLLP framers (records split across
//!   chunks, noise between records, over-long lines, resynchronisation).
//! - [`profile`]: the profile type, its validation at load, and the engine that
//!   turns one line into a [`Record`].
//! - [`hl7`]: ORU^R01 parser, PID-3/PV1-3 routing, the right-patient
//!   guard's verdicts and the ACK builder.
//! - [`nonin`]: DF2, DF7, DF8 decoders and the format-select command.
//!
//! Every decoder implements [`Decoder`]: feed it byte chunks as they arrive,
//! with the arrival time, and collect `Result<Record, BadInput>`s.
//!
//! - [`link`]: the pure supervision of one port (reopen backoff, quiet-time
//!   watchdog, device-link events, one log line per episode).
//! - [`adapter`]: the only I/O, on tokio-serial: opens the port with the
//!   profile's line settings and the device's overrides, feeds the decoder,
//!   sends init/poll bytes, and acts on what [`link`] decides.
//! - [`tcp`]: the HL7 TCP (MLLP) listener, ACK after commit.
//! - [`intake`]: one HL7 message to stored readings and its ACK (patient from
//!   the device's association with a right-patient guard, or from PID-3 per
//!   bed), shared by the serial adapter and the TCP listener.
//! - [`patient_guards`]: the right-patient guards' charted PID-3 per device,
//!   kept durably in the state directory so a restart does not forget them.
//!
//! Time rule (docs/message-format.md, "Times"): a live line is timed by the
//! gateway on arrival (UTC) and the monitor's own clock, when the line carries
//! one, travels beside it as `deviceTime` (`timeFrom: arrival`, with the
//! measured offset); an HL7 observation time with a zone (OBX-14) is the
//! measurement time (`timeFrom: deviceZone`).

pub(crate) mod adapter;
pub(crate) mod capture;
pub mod framing;
pub mod hl7;
pub(crate) mod intake;
pub(crate) mod link;
pub(crate) mod nonin;
pub(crate) mod patient_guards;
pub mod profile;
pub(crate) mod tcp;

#[cfg(test)]
mod patient_tests;
#[cfg(test)]
mod tests;

use crate::model::{DeviceKind, Reading};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One record decoded from a monitor's stream: a text line, an HL7 message, a
/// Nonin packet or record. It may hold no readings (a line with only status).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// What the record was, for people: the text line, `HL7 ORU^R01 <control
    /// id>`, `DF2 packet`. HL7 messages are not copied here (PID holds patient
    /// data); do not log this at info level or above.
    pub(crate) source: String,
    /// The readings the gateway would store, in record order.
    pub readings: Vec<Reading>,
    /// Device status in the device's own terms (`set`, `lowSignalIq`, `SO`,
    /// `artifact`), whether or not it sets a reading flag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) device_status: Vec<String>,
    /// The monitor's serial number, when the record names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) serial: Option<String>,
    /// The monitor's own clock as sent (no zone), when the record carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) device_clock: Option<NaiveDateTime>,
    /// Parts of the record that made no reading, with why (`OBX 3: code
    /// 160324 not mapped`); empty for most records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ignored: Vec<String>,
}

impl Record {
    fn new(source: impl Into<String>) -> Record {
        Record { source: source.into(), readings: Vec::new(), device_status: Vec::new(), serial: None, device_clock: None, ignored: Vec::new() }
    }
}

/// Input the decoders could not use. Each is counted per device by its
/// [`BadInput::kind`] and never produces a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    /// Bytes outside any frame (line noise, a wrong baud rate, binary junk, the
    /// tail of a record whose start was missed).
    #[error("{bytes} byte(s) of noise outside any record")]
    Noise { bytes: usize },
    /// A line or message longer than the configured maximum; dropped up to its
    /// end, the next one is read normally.
    #[error("a record longer than {max} bytes (dropped up to its end)")]
    TooLong { max: usize },
    /// A record cut short: a new start byte, sync frame or end of input came
    /// before its end.
    #[error("a record cut short ({0})")]
    Truncated(String),
    /// A frame whose checksum does not match (Nonin DF2/DF7).
    #[error("checksum mismatch: frame says {sent:#04x}, bytes sum to {computed:#04x}")]
    Checksum { sent: u8, computed: u8 },
    /// A frame that breaks the format's fixed bits (Nonin: status bit 7 clear).
    #[error("framing error: {0}")]
    Framing(String),
    /// A line that is not text (invalid UTF-8).
    #[error("a line that is not text (invalid UTF-8)")]
    NotText,
    /// A line that does not have the profile's shape, or lacks a required field.
    #[error("a line the profile does not match: {0}")]
    NoMatch(String),
    /// A field whose value is neither a number nor an invalid-value pattern.
    #[error("field `{field}`: {problem}")]
    BadField { field: String, problem: String },
    /// An HL7 message that cannot be used (no MSH, not ORU^R01, bad MSH-2).
    #[error("HL7: {0}")]
    Hl7(String),
}

impl BadInput {
    /// Stable counter name (status file, logs): `noise`, `tooLong`,
    /// `truncated`, `checksum`, `framing`, `notText`, `noMatch`, `badField`,
    /// `hl7`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            BadInput::Noise { .. } => "noise",
            BadInput::TooLong { .. } => "tooLong",
            BadInput::Truncated(_) => "truncated",
            BadInput::Checksum { .. } => "checksum",
            BadInput::Framing(_) => "framing",
            BadInput::NotText => "notText",
            BadInput::NoMatch(_) => "noMatch",
            BadInput::BadField { .. } => "badField",
            BadInput::Hl7(_) => "hl7",
        }
    }
}

/// What a decoder produced, counted: what the adapter reports per device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) readings: u64,
    /// [`BadInput::kind`] -> how many.
    pub(crate) bad: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Counts one decoder result.
    pub(crate) fn add(&mut self, item: &Result<Record, BadInput>) {
        match item {
            Ok(r) => {
                self.records += 1;
                self.readings += r.readings.len() as u64;
            }
            Err(e) => *self.bad.entry(e.kind()).or_insert(0) += 1,
        }
    }
}

/// Output of one [`Decoder::push`] or [`Decoder::finish`].
pub type Decoded = Vec<Result<Record, BadInput>>;

/// An incremental decoder for one device's byte stream. Pure: the caller
/// supplies the bytes as they were read (any chunking) and when they arrived.
pub trait Decoder: Send {
    /// Feeds bytes read at `arrival` (gateway clock, UTC); appends what they
    /// completed to `out`. Never panics, whatever the bytes.
    fn push(&mut self, bytes: &[u8], arrival: DateTime<Utc>, out: &mut Decoded);

    /// End of input (end of a capture file, port closed, or an idle gap that
    /// ends a bare HL7 message): completes or reports what is still pending.
    fn finish(&mut self, arrival: DateTime<Utc>, out: &mut Decoded);

    /// The stream broke (the port went away, the gateway stops): a record
    /// still pending is reported as [`BadInput::Truncated`] and **never
    /// decoded**, so a line cut mid-number (`HR=07` of `HR=072`) cannot give a
    /// value. The default is [`Decoder::finish`], right for every decoder
    /// whose `finish` already refuses an unfinished record (line framing,
    /// MLLP, Nonin); a decoder whose `finish` completes a pending record must
    /// override it.
    fn abort(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        self.finish(arrival, out);
    }

    /// The line has been idle for a while (the adapter calls this after
    /// [`IDLE_GAP`] without bytes). Ends a record that has no end marker of its
    /// own, when it is complete (a bare HL7 message whose last segment ended
    /// with CR); does nothing for the others.
    fn idle(&mut self, _arrival: DateTime<Utc>, _out: &mut Decoded) {}
}

/// The gap after which [`Decoder::idle`] is called: senders write a message in
/// one go, so half a second of silence after a CR ends a bare HL7 message.
pub(crate) const IDLE_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// How a device's stream is decoded: a profile or a built-in driver. The
/// future `[device.serial]` config names one (`driver = "masimo-ascii1"`, a
/// profile path, `hl7`, `nonin-df7`...).
#[derive(Debug, Clone)]
pub enum Driver {
    Profile(Box<profile::Profile>),
    Hl7(hl7::Hl7Options),
    Nonin(nonin::Format),
}

impl Driver {
    /// The built-in drivers' names.
    pub(crate) const BUILT_IN: [&'static str; 4] = ["hl7", "nonin-df2", "nonin-df7", "nonin-df8"];

    /// `hl7`, `nonin-df2`, `nonin-df7`, `nonin-df8`, a shipped profile's name
    /// (`masimo-ascii1`), or a path to a profile file (contains `/` or ends in
    /// `.toml`).
    pub fn by_name(name: &str) -> Result<Driver, profile::ProfileError> {
        match name {
            "hl7" => Ok(Driver::Hl7(hl7::Hl7Options::default())),
            "nonin-df2" => Ok(Driver::Nonin(nonin::Format::Df2)),
            "nonin-df7" => Ok(Driver::Nonin(nonin::Format::Df7)),
            "nonin-df8" => Ok(Driver::Nonin(nonin::Format::Df8)),
            other => profile::Profile::load(other).map(|p| Driver::Profile(Box::new(p))),
        }
    }

    /// The kind of device this driver reads.
    pub(crate) fn device_kind(&self) -> DeviceKind {
        match self {
            Driver::Profile(p) => p.device_kind,
            Driver::Hl7(_) => DeviceKind::BedsideMonitor,
            Driver::Nonin(_) => DeviceKind::PulseOximeter,
        }
    }

    /// A fresh decoder for one device's stream; readings carry `device_id`.
    pub fn decoder(&self, device_id: &str) -> Box<dyn Decoder> {
        match self {
            Driver::Profile(p) => Box::new(profile::LineDecoder::new((**p).clone(), device_id)),
            Driver::Hl7(o) => Box::new(hl7::Hl7Decoder::new(o.clone(), device_id)),
            Driver::Nonin(f) => Box::new(nonin::NoninDecoder::new(*f, device_id)),
        }
    }
}

/// Parses the text hex format of captures (`01 81 01 00 83`, one or more per
/// line, `#` comments, any whitespace, optional `0x`): bytes, or which token is
/// not hex.
pub(crate) fn parse_hex_capture(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for token in line.split(|c: char| c.is_whitespace() || c == ',') {
            let t = token.trim_start_matches("0x").trim_start_matches("0X");
            if t.is_empty() {
                continue;
            }
            if t.len() % 2 != 0 {
                return Err(format!("line {}: `{token}` has an odd number of hex digits", n + 1));
            }
            let bytes = hex::decode(t).map_err(|_| format!("line {}: `{token}` is not hex", n + 1))?;
            out.extend(bytes);
        }
    }
    Ok(out)
}
