//! Nonin binary serial Data Formats 2, 7 and 8 (Nonin 9560 specification;
//! the same formats are used by Nonin OEM modules), and the command that
//! selects one.
//!
//! Why hand-written: these are tiny fixed frames, but a reader that starts
//! mid-stream, or meets line noise, must find the frame boundary again without
//! ever turning a misaligned or corrupted frame into a value. No crate does
//! this; the state machine below checks every frame (sync byte, status bit 7,
//! checksum) and only reads a packet whose 25 frames all passed.
//!
//! Formats (Nonin 9560 specification, "Data Format 2", "Data Format 7", "Data
//! Format 8"; bit names as there):
//! - **DF2**: 5-byte frames `[0x01, STATUS, PLETH, FLOAT, CHK]`, CHK = sum of
//!   the first four bytes mod 256; 25 frames make a packet, 3 packets per
//!   second. STATUS bit 7 is always 1, bit 0 (SYNC) is set on frame 1 only.
//!   FLOAT carries one byte of a value per frame: frames 1-2 HR MSB/LSB
//!   (HR = `((MSB & 3) << 7) | LSB`), 3 SpO2, 4 firmware revision, 8 STAT2.
//! - **DF7**: as DF2 without the 0x01 byte and with a 16-bit pleth:
//!   `[STATUS, PLETH MSB, PLETH LSB, FLOAT, CHK]`, CHK over the first four.
//! - **DF8**: one 4-byte record per second, no checksum: `[STATUS, HR bits
//!   6-0, SpO2, STAT2]`, STATUS bit 7 = 1 and HR bits 8-7 in STATUS bits 1-0;
//!   the other bytes have bit 7 clear (7-bit fields), which is the only sync.
//!
//! Missing values: HR 511, SpO2 127 -> `valueUnavailable`. Status bits ->
//! flags: SNSD (bit 6; "reserved" on the 9560, "sensor disconnect" on the
//! OEM III) `sensorDisconnected`; ARTF (artifact) and OOT (out of track: no
//! consecutive good pulses) `signalIrregular`; SNSA (sensor alarm: the device
//! is providing unusable data) `invalid`; red perfusion alone (DF2/DF7
//! RPRF, DF8 LPRF: low signal amplitude) `lowPerfusion`. For a DF2/DF7
//! packet the status of all 25 frames counts. Only the standard 4-beat
//! averages are read: the display values ("-D") hold the last value for 10 s
//! after the finger is removed, and the extended averages add nothing a
//! chart needs.
//!
//! Rate: a DF2/DF7 device sends a packet every third of a second (75 frames
//! per second, 25 per packet), but the values in it are 4-beat averages that
//! a packet mostly repeats, and a chart keeps one value per second (the
//! shipped MedTech series have 1000 ms slots; three readings a second would
//! make two of them `slotTaken` Observations of their own, doubling the
//! Observations for nothing). So the decoder keeps **one packet in three**,
//! the first of each group of three (by the device's own packet clock, so the
//! result does not depend on when or how the bytes arrived), and **every
//! packet whose device status or flags differ from the last one kept** (a
//! finger coming out or an alarm is never thinned away; the count of three
//! starts again there). Thinned packets are counted ([`NoninDecoder::thinned`]),
//! not reported as bad input. DF8 is already one record per second.
//!
//! Resynchronisation: bytes that do not start a valid frame are skipped one at
//! a time and reported as [`BadInput::Noise`] once the next valid frame is
//! found; a frame that fails while in sync is reported ([`BadInput::Checksum`],
//! [`BadInput::Framing`]) and its packet is dropped; frames before the first
//! SYNC frame (the reader started mid-packet) are noise. DF8, which has no
//! checksum, needs two consecutive well-formed records to (re)gain sync.

use super::{BadInput, Decoded, Decoder, Record};
use crate::model::{DeviceKind, Flag, Reading, ReadingType};
use chrono::{DateTime, Utc};

/// A Nonin binary data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Df2,
    Df7,
    Df8,
}

/// The device's reply to a command: ACK (Nonin 9560 specification, "Serial
/// Commands").
pub(crate) const ACK: u8 = 0x06;
/// Negative reply (NAK).
pub(crate) const NAK: u8 = 0x15;

/// DF2/DF7 frames per packet.
pub(crate) const FRAMES_PER_PACKET: usize = 25;

impl Format {
    /// The format's number in the specification (2, 7, 8).
    #[cfg(test)]
    pub(crate) fn number(self) -> u8 {
        match self {
            Format::Df2 => 2,
            Format::Df7 => 7,
            Format::Df8 => 8,
        }
    }

    /// The command that selects this format: `02 70 02 02 ZZ 03` (STX, op
    /// code 0x70 "set data format", length 2, data type 2, format ZZ, ETX);
    /// the device answers [`ACK`] or [`NAK`] (Nonin 9560 specification).
    #[cfg(test)]
    pub(crate) fn select_command(self) -> [u8; 6] {
        [0x02, 0x70, 0x02, 0x02, self.number(), 0x03]
    }

    fn frame_len(self) -> usize {
        match self {
            Format::Df2 | Format::Df7 => 5,
            Format::Df8 => 4,
        }
    }

    /// The format's name as a driver (`nonin-df2`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Df2 => "nonin-df2",
            Format::Df7 => "nonin-df7",
            Format::Df8 => "nonin-df8",
        }
    }
}

/// One checked DF2/DF7 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    status: u8,
    float: u8,
}

const SYNC: u8 = 0x01;

/// Checks one DF2/DF7 frame: bytes `w[..5]`.
fn check_frame(format: Format, w: &[u8]) -> Result<Frame, BadInput> {
    let sum = w[..4].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let (status, float) = match format {
        Format::Df2 => {
            if w[0] != 0x01 {
                return Err(BadInput::Framing(format!("DF2 frame starts with {:#04x}, not 0x01", w[0])));
            }
            (w[1], w[3])
        }
        _ => (w[0], w[3]),
    };
    if status & 0x80 == 0 {
        return Err(BadInput::Framing(format!("status byte {status:#04x} has bit 7 clear")));
    }
    if sum != w[4] {
        return Err(BadInput::Checksum { sent: w[4], computed: sum });
    }
    Ok(Frame { status, float })
}

/// Checks one DF8 record: bytes `w[..4]`.
fn check_df8(w: &[u8]) -> bool {
    w[0] & 0x80 != 0 && w[1..4].iter().all(|b| b & 0x80 == 0) && (w[2] <= 100 || w[2] == 127)
}

/// Status flags shared by the formats, with the device's names.
fn status_names(status: &mut Vec<String>, flags: &mut Vec<Flag>, name: &str, flag: Option<Flag>) {
    if !status.iter().any(|s| s == name) {
        status.push(name.to_string());
    }
    if let Some(f) = flag {
        if !flags.contains(&f) {
            flags.push(f);
        }
    }
}

/// Incremental decoder for one Nonin device in one binary format.
#[derive(Debug, Clone)]
pub(crate) struct NoninDecoder {
    format: Format,
    device_id: String,
    buf: Vec<u8>,
    packet: Vec<Frame>,
    /// The bytes of the frames in `packet`, for a rescan when it fails.
    raw: Vec<u8>,
    synced: bool,
    noise: usize,
    acks: u64,
    naks: u64,
    /// Device status and reading flags of the last packet kept, and how many
    /// packets have been thinned since (DF2/DF7 rate, module docs).
    last_kept: Option<(Vec<String>, Vec<Vec<Flag>>)>,
    since_kept: usize,
    thinned: u64,
}

/// DF2/DF7: one packet kept in this many (3 packets per second, Nonin 9560
/// specification, "Data Format 2": 75 frames per second, 25 per packet).
pub(crate) const KEEP_ONE_PACKET_IN: usize = 3;

impl NoninDecoder {
    pub(crate) fn new(format: Format, device_id: &str) -> NoninDecoder {
        NoninDecoder {
            format,
            device_id: device_id.to_string(),
            buf: Vec::new(),
            packet: Vec::new(),
            raw: Vec::new(),
            synced: false,
            noise: 0,
            acks: 0,
            naks: 0,
            last_kept: None,
            since_kept: 0,
            thinned: 0,
        }
    }

    /// Replies seen to commands: (ACKs, NAKs).
    #[cfg(test)]
    pub(crate) fn replies(&self) -> (u64, u64) {
        (self.acks, self.naks)
    }

    /// DF2/DF7 packets checked and decoded but not kept because the packet
    /// kept less than a second before said the same (module docs, "Rate").
    #[cfg(test)]
    pub(crate) fn thinned(&self) -> u64 {
        self.thinned
    }

    /// Whether to keep a complete DF2/DF7 packet's record (module docs, "Rate").
    fn keep(&mut self, rec: &Record) -> bool {
        let signature = (rec.device_status.clone(), rec.readings.iter().map(|r| r.flags.clone()).collect::<Vec<_>>());
        let changed = self.last_kept.as_ref() != Some(&signature);
        if changed || self.since_kept + 1 >= KEEP_ONE_PACKET_IN {
            self.last_kept = Some(signature);
            self.since_kept = 0;
            true
        } else {
            self.since_kept += 1;
            self.thinned += 1;
            false
        }
    }

    fn flush_noise(&mut self, out: &mut Decoded) {
        if self.noise > 0 {
            out.push(Err(BadInput::Noise { bytes: self.noise }));
            self.noise = 0;
        }
    }

    /// Skips one byte that starts no frame: a reply, or noise.
    fn skip_byte(&mut self) {
        match self.buf.first() {
            Some(&ACK) => self.acks += 1,
            Some(&NAK) => self.naks += 1,
            _ => self.noise += 1,
        }
        self.buf.drain(..1);
    }

    fn run(&mut self, arrival: DateTime<Utc>, out: &mut Decoded) {
        let n = self.format.frame_len();
        let mut pos = 0;
        // Work on a cursor and drain once (bytes arrive in small chunks, but a
        // capture file is one large one).
        let mut buf = std::mem::take(&mut self.buf);
        while buf.len() - pos >= n {
            let w = &buf[pos..pos + n];
            if self.format == Format::Df8 {
                let need_second = !self.synced;
                if need_second && buf.len() - pos < 2 * n {
                    break;
                }
                let ok = check_df8(w) && (!need_second || check_df8(&buf[pos + n..pos + 2 * n]));
                if ok {
                    self.flush_noise(out);
                    self.synced = true;
                    out.push(Ok(self.df8_record(w, arrival)));
                    pos += n;
                } else {
                    if self.synced {
                        out.push(Err(BadInput::Framing("DF8 record with misplaced bit 7 (sync lost)".into())));
                        self.synced = false;
                    }
                    self.count_skipped(buf[pos]);
                    pos += 1;
                }
                continue;
            }
            match check_frame(self.format, w) {
                Ok(frame) => {
                    self.flush_noise(out);
                    self.synced = true;
                    if frame.status & SYNC != 0 {
                        if !self.packet.is_empty() {
                            out.push(Err(BadInput::Truncated(format!("a packet of {} frames (SYNC came early)", self.packet.len()))));
                        }
                        self.packet.clear();
                        self.raw.clear();
                    } else if self.packet.is_empty() {
                        // Mid-packet: its frame numbers are unknown.
                        self.noise += n;
                        pos += n;
                        continue;
                    }
                    self.packet.push(frame);
                    self.raw.extend_from_slice(w);
                    pos += n;
                    if self.packet.len() == FRAMES_PER_PACKET {
                        let rec = self.packet_record(arrival);
                        self.packet.clear();
                        self.raw.clear();
                        if self.keep(&rec) {
                            out.push(Ok(rec));
                        }
                    }
                }
                Err(e) => {
                    let at_reply = matches!(buf[pos], ACK | NAK);
                    if !self.packet.is_empty() && !self.raw.is_empty() && !at_reply {
                        // The packet being assembled fails. Its start may
                        // have been a false one (a damaged frame's bytes and
                        // the next packet's first bytes can look like a SYNC
                        // frame): scan again from the byte after it, so that
                        // a real packet start inside it is not lost. Each
                        // rescan drops that first byte: the scan always moves on.
                        out.push(Err(e));
                        self.synced = false;
                        self.packet.clear();
                        let raw = std::mem::take(&mut self.raw);
                        self.count_skipped(raw[0]);
                        let mut again = raw[1..].to_vec();
                        again.extend_from_slice(&buf[pos..]);
                        buf = again;
                        pos = 0;
                        continue;
                    }
                    if self.synced && !at_reply {
                        out.push(Err(e));
                        self.synced = false;
                        self.packet.clear();
                    }
                    self.count_skipped(buf[pos]);
                    pos += 1;
                }
            }
        }
        self.buf = buf[pos..].to_vec();
    }

    fn count_skipped(&mut self, b: u8) {
        match b {
            ACK => self.acks += 1,
            NAK => self.naks += 1,
            _ => self.noise += 1,
        }
    }

    fn reading(&self, kind: ReadingType, name: &str, v: u16, missing: u16, arrival: DateTime<Utc>) -> Reading {
        let mut r = Reading::new(self.device_id.as_str(), DeviceKind::PulseOximeter, kind).at(arrival);
        if v == missing {
            r.add_flag(Flag::ValueUnavailable);
        } else {
            r.set_value(name, f64::from(v));
        }
        r
    }

    fn finish_record(&self, source: &str, hr: u16, spo2: u16, status: Vec<String>, flags: Vec<Flag>, arrival: DateTime<Utc>) -> Record {
        let mut rec = Record::new(source);
        for mut r in
            [self.reading(ReadingType::Spo2, "spo2", spo2, 127, arrival), self.reading(ReadingType::PulseRate, "pulseRate", hr, 511, arrival)]
        {
            for f in &flags {
                r.add_flag(*f);
            }
            rec.readings.push(r);
        }
        rec.device_status = status;
        rec
    }

    fn packet_record(&self, arrival: DateTime<Utc>) -> Record {
        let v: Vec<u8> = self.packet.iter().map(|f| f.float).collect();
        let hr = (u16::from(v[0] & 0x03) << 7) | u16::from(v[1] & 0x7F);
        let spo2 = u16::from(v[2]);
        let (mut status, mut flags) = (Vec::new(), Vec::new());
        for f in &self.packet {
            let s = f.status;
            if s & 0x40 != 0 {
                status_names(&mut status, &mut flags, "sensorDisconnect", Some(Flag::SensorDisconnected));
            }
            if s & 0x20 != 0 {
                status_names(&mut status, &mut flags, "artifact", Some(Flag::SignalIrregular));
            }
            if s & 0x10 != 0 {
                status_names(&mut status, &mut flags, "outOfTrack", Some(Flag::SignalIrregular));
            }
            if s & 0x08 != 0 {
                status_names(&mut status, &mut flags, "sensorAlarm", Some(Flag::Invalid));
            }
            match (s >> 1) & 0x03 {
                1 => status_names(&mut status, &mut flags, "greenPerfusion", None),
                2 => status_names(&mut status, &mut flags, "redPerfusion", Some(Flag::LowPerfusion)),
                3 => status_names(&mut status, &mut flags, "yellowPerfusion", None),
                _ => {}
            }
        }
        let stat2 = v[7];
        if stat2 & 0x20 != 0 {
            status_names(&mut status, &mut flags, "smartPoint", None);
        }
        if stat2 & 0x01 != 0 {
            status_names(&mut status, &mut flags, "lowBattery", None);
        }
        status_names(&mut status, &mut flags, &format!("firmware:{}", v[3]), None);
        let source = if self.format == Format::Df2 { "DF2 packet" } else { "DF7 packet" };
        self.finish_record(source, hr, spo2, status, flags, arrival)
    }

    fn df8_record(&self, w: &[u8], arrival: DateTime<Utc>) -> Record {
        let hr = (u16::from(w[0] & 0x03) << 7) | u16::from(w[1] & 0x7F);
        let spo2 = u16::from(w[2]);
        let (mut status, mut flags) = (Vec::new(), Vec::new());
        let bits: [(u8, u8, &str, Option<Flag>); 8] = [
            (0, 0x40, "sensorDisconnect", Some(Flag::SensorDisconnected)),
            (0, 0x20, "outOfTrack", Some(Flag::SignalIrregular)),
            (0, 0x10, "lowPerfusion", Some(Flag::LowPerfusion)),
            (0, 0x08, "marginalPerfusion", None),
            (0, 0x04, "artifact", Some(Flag::SignalIrregular)),
            (3, 0x20, "smartPoint", None),
            (3, 0x08, "sensorAlarm", Some(Flag::Invalid)),
            (3, 0x01, "lowBattery", None),
        ];
        for (byte, mask, name, flag) in bits {
            if w[usize::from(byte)] & mask != 0 {
                status_names(&mut status, &mut flags, name, flag);
            }
        }
        self.finish_record("DF8 record", hr, spo2, status, flags, arrival)
    }
}

impl Decoder for NoninDecoder {
    fn push(&mut self, bytes: &[u8], arrival: DateTime<Utc>, out: &mut Decoded) {
        self.buf.extend_from_slice(bytes);
        self.run(arrival, out);
    }

    fn finish(&mut self, _arrival: DateTime<Utc>, out: &mut Decoded) {
        // DF8 waits for a second record to gain sync; at the end there is none.
        while !self.buf.is_empty() {
            self.skip_byte();
        }
        self.flush_noise(out);
        if !self.packet.is_empty() {
            out.push(Err(BadInput::Truncated(format!("the input ended after {} frames of a packet", self.packet.len()))));
            self.packet.clear();
        }
        self.raw.clear();
        self.synced = false;
        // A new stream (the port reopened) starts with a kept packet.
        self.last_kept = None;
        self.since_kept = 0;
    }
}
