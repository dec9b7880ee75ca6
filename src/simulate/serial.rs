//! Simulated serial monitors on a pseudo-terminal: `iomt-edge simulate serial`
//! and the serial integration tests.
//!
//! The generators below write each monitor's output format from its
//! documentation, with code of their own: they never call the gateway's
//! decoders (`crate::adapters::serial`), so a test that feeds their bytes to
//! the gateway checks the decoders against an independent writer. Sources:
//!
//! - Masimo "ASCII 1" (Rad-8 layout): `MM/dd/yy HH:mm:ss SN=... SPO2=098%
//!   BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000
//!   EXC=000800`, CR LF, one line per second, dashes for a missing value
//!   (Masimo Rad-8 Operator's Manual pp. 4-20, 4-24; the published capture of
//!   github.com/yahnatan/pulseox);
//! - Masimo "ASCII 1" (Radical-7 layout, with the rainbow parameters):
//!   `... PI=00.55 SPCO=--% SPMET=--.-% SPHB=--.- SPOC=-- RESVD=--- DESAT=--
//!   PIDELTA=+-- PVI=--- ALARM=000000 EXC=0000C00 EXC1=00000000` (the
//!   published capture of github.com/nmenon/masimo-datacapture; numbers in
//!   place of the dashes when the parameter is measured);
//! - Nonin ASCII: `SPO2=097 HR=072`, CR LF, once per second, `---` for no
//!   data (Nonin 7500FO Operator's Manual, "Serial Patient Data Output");
//! - Nonin Data Formats 2 and 7: 25 five-byte frames per packet, 75 frames/s;
//!   DF2 `01 STATUS PLETH FLOAT CHK`, DF7 `STATUS PLETH_MSB PLETH_LSB FLOAT
//!   CHK`; CHK = sum of the other four bytes mod 256; STATUS bit 7 always set,
//!   bit 0 (SYNC) on frame 1; FLOAT by frame 1-2 HR MSB/LSB, 3 SpO2, 4
//!   firmware, 8 STAT2, 9 SpO2-D, 14-15 E-HR, 16 E-SpO2, 20-21 HR-D; HR 511
//!   and SpO2 127 mean missing; DF8: one 4-byte record per second (Nonin 9560
//!   specification, "Data Formats");
//! - HL7 v2.6 ORU^R01 with IEEE 11073 MDC codes (OBX-3) and units (OBX-6),
//!   OBX-11 `F`, OBX-14 the observation time with its zone, segments ended
//!   by CR, optionally MLLP-framed `0x0B ... 0x1C 0x0D` (IHE PCD-01 examples;
//!   HL7 MLLP Release 2).

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Values of one simulated measurement; `None` is "no value" (finger out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vitals {
    pub spo2: Option<u8>,
    pub pulse: Option<u16>,
    /// Perfusion index in %, two decimals on the wire.
    pub pi: Option<f64>,
    /// Respiration rate (/min), temperature (°C), NIBP systolic/diastolic/mean (mmHg): HL7 only.
    pub rr: Option<u16>,
    pub temp: Option<f64>,
    pub nibp: Option<(u16, u16, u16)>,
    /// Masimo rainbow parameters (Radical-7 layout only).
    pub rainbow: Option<Rainbow>,
}

/// Masimo rainbow parameters: SpCO and SpMet in % (one decimal), SpHb in
/// g/dL (one decimal), PVI in % (whole number).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rainbow {
    pub(crate) spco: f64,
    pub(crate) spmet: f64,
    pub(crate) sphb: f64,
    pub(crate) pvi: u16,
}

impl Vitals {
    /// Finger out: nothing measured.
    pub const NONE: Vitals = Vitals { spo2: None, pulse: None, pi: None, rr: None, temp: None, nibp: None, rainbow: None };
}

/// Masimo EXC code with only "SET" (normal operation).
pub const MASIMO_EXC_SET: u32 = 0x800;
/// Masimo EXC "sensor off" bit.
pub const MASIMO_EXC_SENSOR_OFF: u32 = 0x020;

/// One Masimo ASCII 1 line (Rad-8 layout), with CR LF.
pub fn masimo_line(clock: NaiveDateTime, v: &Vitals, exc: u32) -> String {
    let spo2 = v.spo2.map(|s| format!("{s:03}")).unwrap_or_else(|| "---".into());
    let bpm = v.pulse.map(|p| format!("{p:03}")).unwrap_or_else(|| "---".into());
    let pi = v.pi.map(|p| format!("{p:05.2}")).unwrap_or_else(|| "--.--".into());
    format!(
        "{} SN=0000056661 SPO2={spo2}% BPM={bpm} PI={pi}% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC={exc:06X}\r\n",
        clock.format("%m/%d/%y %H:%M:%S")
    )
}

/// One Masimo ASCII 1 line in the Radical-7 layout (rainbow parameters,
/// 6-digit ALARM, 7-digit EXC, EXC1), with CR LF; dashes for what `v` lacks.
pub(crate) fn masimo_radical7_line(clock: NaiveDateTime, v: &Vitals, exc: u32) -> String {
    let spo2 = v.spo2.map(|s| format!("{s:03}")).unwrap_or_else(|| "---".into());
    let bpm = v.pulse.map(|p| format!("{p:03}")).unwrap_or_else(|| "---".into());
    let pi = v.pi.map(|p| format!("{p:05.2}")).unwrap_or_else(|| "--.--".into());
    let r = v.rainbow.filter(|_| v.spo2.is_some());
    let spco = r.map(|r| format!("{:04.1}", r.spco)).unwrap_or_else(|| "--.-".into());
    let spmet = r.map(|r| format!("{:04.1}", r.spmet)).unwrap_or_else(|| "--.-".into());
    let sphb = r.map(|r| format!("{:04.1}", r.sphb)).unwrap_or_else(|| "--.-".into());
    let pvi = r.map(|r| format!("{:03}", r.pvi)).unwrap_or_else(|| "---".into());
    format!(
        "{} SN=0000093112 SPO2={spo2}% BPM={bpm} PI={pi} SPCO={spco}% SPMET={spmet}% SPHB={sphb} SPOC=-- RESVD=--- DESAT=-- PIDELTA=+-- PVI={pvi} ALARM=000000 EXC={exc:07X} EXC1=00000000\r\n",
        clock.format("%m/%d/%y %H:%M:%S")
    )
}

/// One Nonin ASCII line, with CR LF.
pub fn nonin_ascii_line(v: &Vitals) -> String {
    let spo2 = v.spo2.map(|s| format!("{s:03}")).unwrap_or_else(|| "---".into());
    let hr = v.pulse.map(|p| format!("{p:03}")).unwrap_or_else(|| "---".into());
    format!("SPO2={spo2} HR={hr}\r\n")
}

/// Nonin binary format of [`nonin_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoninBinary {
    Df2,
    Df7,
}

/// Nonin STATUS byte of a normal frame: bit 7 set, green perfusion (bits 2-1 = 01).
pub const NONIN_STATUS_OK: u8 = 0x82;
/// STATUS bit 6: sensor disconnected (SNSD, OEM III).
pub(crate) const NONIN_SNSD: u8 = 0x40;

/// One DF2 or DF7 packet: 25 frames, checksummed; `status` is OR-ed into
/// every frame's STATUS byte (bit 7 is always set, SYNC on frame 1).
/// `pleth` gives the 25 waveform samples' base.
pub fn nonin_packet(format: NoninBinary, v: &Vitals, status: u8, pleth: u16) -> Vec<u8> {
    let hr = v.pulse.map(|h| h.min(510)).unwrap_or(511);
    let spo2 = v.spo2.map(|s| s.min(100)).unwrap_or(127);
    let (msb, lsb) = (((hr >> 7) & 0x03) as u8, (hr & 0x7F) as u8);
    let mut float = [0u8; 25];
    float[0] = msb;
    float[1] = lsb;
    float[2] = spo2;
    float[3] = 0x30; // firmware revision
    float[8] = spo2; // SpO2-D
    float[9] = spo2; // SpO2 fast
    float[10] = spo2; // SpO2 beat-to-beat
    float[13] = msb; // E-HR
    float[14] = lsb;
    float[15] = spo2; // E-SpO2
    float[16] = spo2; // E-SpO2-D
    float[19] = msb; // HR-D
    float[20] = lsb;
    float[21] = msb; // E-HR-D
    float[22] = lsb;
    let mut out = Vec::with_capacity(125);
    for (i, f) in float.iter().enumerate() {
        let st = 0x80 | status | u8::from(i == 0);
        let p = pleth.wrapping_add((i as u16) * 37);
        let frame: Vec<u8> = match format {
            NoninBinary::Df2 => vec![0x01, st, (p & 0xFF) as u8, *f],
            NoninBinary::Df7 => vec![st, (p >> 8) as u8, (p & 0xFF) as u8, *f],
        };
        let sum = frame.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        out.extend_from_slice(&frame);
        out.push(sum);
    }
    out
}

/// One DF8 record (once per second): status (bit 7 set, HR bits 8-7 in bits
/// 1-0), HR bits 6-0, SpO2-D, STAT2.
pub fn nonin_df8_record(v: &Vitals, status: u8) -> [u8; 4] {
    let hr = v.pulse.map(|h| h.min(510)).unwrap_or(511);
    let spo2 = v.spo2.map(|s| s.min(100)).unwrap_or(127);
    [0x80 | (status & 0x7C) | ((hr >> 7) & 0x03) as u8, (hr & 0x7F) as u8, spo2, 0]
}

/// One HL7 v2.6 ORU^R01 message, segments ended by CR: the values that are
/// `Some`, each with its MDC code and unit, observed at `time` (OBX-14 with
/// its zone); a missing SpO2 or pulse is sent with an empty OBX-5 and
/// OBX-11 `X`. No patient identification (PID-3 is a test id).
pub fn hl7_oru(control_id: &str, time: DateTime<FixedOffset>, v: &Vitals) -> String {
    let ts = time.format("%Y%m%d%H%M%S%z").to_string();
    let mut s = format!("MSH|^~\\&|SIM_MONITOR|BED12|||{ts}||ORU^R01^ORU_R01|{control_id}|P|2.6\rPID|||SIM-0001\rOBR|1|||1^MON_PARAM^99SIM|||{ts}\r");
    let mut n = 0;
    let mut obx = |code: &str, value: Option<String>, unit: &str| {
        n += 1;
        let (value, status) = match value {
            Some(v) => (v, "F"),
            None => (String::new(), "X"),
        };
        s.push_str(&format!("OBX|{n}|NM|{code}||{value}|{unit}|||||{status}|||{ts}\r"));
    };
    obx("150456^MDC_PULS_OXIM_SAT_O2^MDC", v.spo2.map(|x| x.to_string()), "262688^MDC_DIM_PERCENT^MDC");
    obx("149530^MDC_PULS_OXIM_PULS_RATE^MDC", v.pulse.map(|x| x.to_string()), "264864^MDC_DIM_BEAT_PER_MIN^MDC");
    if let Some(rr) = v.rr {
        obx("151562^MDC_RESP_RATE^MDC", Some(rr.to_string()), "264928^MDC_DIM_RESP_PER_MIN^MDC");
    }
    if let Some(t) = v.temp {
        obx("150344^MDC_TEMP^MDC", Some(format!("{t:.1}")), "268192^MDC_DIM_DEGC^MDC");
    }
    if let Some((sys, dia, mean)) = v.nibp {
        obx("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", Some(sys.to_string()), "266016^MDC_DIM_MMHG^MDC");
        obx("150022^MDC_PRESS_BLD_NONINV_DIA^MDC", Some(dia.to_string()), "266016^MDC_DIM_MMHG^MDC");
        obx("150023^MDC_PRESS_BLD_NONINV_MEAN^MDC", Some(mean.to_string()), "266016^MDC_DIM_MMHG^MDC");
    }
    s
}

/// Wraps a message in an MLLP block.
pub fn mllp(message: &str) -> Vec<u8> {
    let mut v = vec![0x0B];
    v.extend_from_slice(message.as_bytes());
    v.extend_from_slice(&[0x1C, 0x0D]);
    v
}

/// The monitors `simulate serial` plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Monitor {
    MasimoAscii1,
    NoninAscii,
    NoninDf2,
    NoninDf7,
    NoninDf8,
    /// HL7 ORU^R01 over the line, MLLP-framed, every `interval`.
    Hl7,
}

impl Monitor {
    /// The names `--profile` takes: the gateway's driver names.
    pub(crate) const NAMES: [&'static str; 6] = ["masimo-ascii1", "nonin-ascii", "nonin-df2", "nonin-df7", "nonin-df8", "hl7"];

    pub(crate) fn by_name(name: &str) -> Option<Monitor> {
        Some(match name {
            "masimo-ascii1" => Monitor::MasimoAscii1,
            "nonin-ascii" => Monitor::NoninAscii,
            "nonin-df2" => Monitor::NoninDf2,
            "nonin-df7" => Monitor::NoninDf7,
            "nonin-df8" => Monitor::NoninDf8,
            "hl7" => Monitor::Hl7,
            _ => return None,
        })
    }

    /// The device kind the gateway config needs for it.
    pub(crate) fn config_kind(self) -> &'static str {
        if self == Monitor::Hl7 {
            "bedside_monitor"
        } else {
            "pulse_oximeter"
        }
    }

    /// Time between records at the monitor's real rate (DF2/DF7: a packet
    /// every third of a second, written frame by frame).
    pub(crate) fn interval(self) -> Duration {
        match self {
            Monitor::NoninDf2 | Monitor::NoninDf7 => Duration::from_millis(333),
            Monitor::Hl7 => Duration::from_secs(5),
            _ => Duration::from_secs(1),
        }
    }
}

/// A slowly varying patient, with occasional finger-out spells.
#[derive(Debug)]
pub struct Patient {
    rng: StdRng,
    spo2: f64,
    pulse: f64,
    pi: f64,
    sphb: f64,
    off: u32,
}

impl Patient {
    pub fn new(seed: u64) -> Patient {
        Patient { rng: StdRng::seed_from_u64(seed), spo2: 97.0, pulse: 72.0, pi: 3.5, sphb: 13.8, off: 0 }
    }

    /// The next second's values.
    pub fn sample(&mut self) -> Vitals {
        if self.off == 0 && self.rng.gen_bool(0.01) {
            self.off = self.rng.gen_range(3..8);
        }
        if self.off > 0 {
            self.off -= 1;
            return Vitals::NONE;
        }
        self.spo2 = (self.spo2 + (97.0 - self.spo2) * 0.1 + self.rng.gen_range(-0.7..0.7)).clamp(88.0, 100.0);
        self.pulse = (self.pulse + (72.0 - self.pulse) * 0.05 + self.rng.gen_range(-2.0..2.0)).clamp(45.0, 160.0);
        self.pi = (self.pi + self.rng.gen_range(-0.2..0.2)).clamp(0.3, 12.0);
        self.sphb = (self.sphb + (13.8 - self.sphb) * 0.05 + self.rng.gen_range(-0.1..0.1)).clamp(11.0, 16.0);
        let rainbow = Rainbow {
            spco: (self.rng.gen_range(10..25) as f64) / 10.0,
            spmet: (self.rng.gen_range(5..12) as f64) / 10.0,
            sphb: (self.sphb * 10.0).round() / 10.0,
            pvi: self.rng.gen_range(9..18),
        };
        Vitals {
            spo2: Some(self.spo2.round() as u8),
            pulse: Some(self.pulse.round() as u16),
            pi: Some((self.pi * 100.0).round() / 100.0),
            rr: Some(self.rng.gen_range(12..20)),
            temp: Some(36.8),
            nibp: Some((118, 76, 90)),
            rainbow: Some(rainbow),
        }
    }
}

/// A pseudo-terminal pair: the monitor's end (the master, written here) and
/// the path of the gateway's end (`/dev/pts/N`). The slave is not kept open,
/// so the gateway is its only reader; closing the master makes the node
/// disappear (a USB-serial adapter unplugged).
pub struct Pty {
    master: tokio_serial::SerialStream,
    path: String,
}

impl Pty {
    /// Opens a new pair.
    pub fn open() -> std::io::Result<Pty> {
        use tokio_serial::SerialPort;
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
        let path = slave.name().ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
        drop(slave);
        Ok(Pty { master, path })
    }

    /// The gateway's end, e.g. `/dev/pts/3`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Writes bytes as the monitor sends them. Nobody reading (the gateway's
    /// end not open) is not an error: a monitor sends regardless; bytes that
    /// do not fit in the terminal's buffer within 200 ms are dropped.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.master.write_all(bytes)).await;
    }

    /// Reads (and discards) what the gateway sent (init or poll bytes); returns them.
    pub fn take_received(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = self.master.try_read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

/// Plays `monitor` on `pty` at its real rate until `stop`: a simulated
/// patient, or (with `capture`) the bytes of a capture: a text capture one
/// line per `interval`, a binary one at the line's speed (9600 baud: 960
/// bytes/s) in 1/75 s pieces.
pub(crate) async fn play(monitor: Monitor, pty: &mut Pty, seed: u64, capture: Option<Vec<u8>>, stop: tokio_util::sync::CancellationToken) {
    let interval = monitor.interval();
    if let Some(bytes) = capture {
        let text = !bytes.iter().any(|b| *b == 0 || *b >= 0x80) && monitor != Monitor::Hl7 && bytes.contains(&b'\n');
        let pieces: Vec<Vec<u8>> =
            if text { bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect() } else { bytes.chunks(13).map(<[u8]>::to_vec).collect() };
        let every = if text { interval } else { Duration::from_micros(1_000_000 / 75) };
        let mut tick = tokio::time::interval(every);
        for p in pieces {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            pty.send(&p).await;
            pty.take_received();
        }
        return;
    }
    let mut patient = Patient::new(seed);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let v = patient.sample();
        let exc = if v.spo2.is_some() { MASIMO_EXC_SET } else { MASIMO_EXC_SET | MASIMO_EXC_SENSOR_OFF };
        let received = pty.take_received();
        match monitor {
            // A Radical-7 with the rainbow option (SpCO, SpMet, SpHb, PVI).
            Monitor::MasimoAscii1 => pty.send(masimo_radical7_line(chrono::Local::now().naive_local(), &v, exc).as_bytes()).await,
            Monitor::NoninAscii => pty.send(nonin_ascii_line(&v).as_bytes()).await,
            Monitor::NoninDf8 => {
                let status = if v.spo2.is_some() { 0 } else { NONIN_SNSD };
                pty.send(&nonin_df8_record(&v, status)).await
            }
            Monitor::NoninDf2 | Monitor::NoninDf7 => {
                // Answer a format-select command (02 70 02 02 ZZ 03) with ACK.
                if received.windows(3).any(|w| w == [0x02, 0x70, 0x02]) {
                    pty.send(&[0x06]).await;
                }
                let f = if monitor == Monitor::NoninDf2 { NoninBinary::Df2 } else { NoninBinary::Df7 };
                let status = if v.spo2.is_some() { NONIN_STATUS_OK } else { NONIN_SNSD };
                let packet = nonin_packet(f, &v, status, (n * 11) as u16);
                // 75 frames per second: five frames every 1/15 s.
                for chunk in packet.chunks(25) {
                    pty.send(chunk).await;
                    tokio::time::sleep(Duration::from_micros(1_000_000 / 15)).await;
                }
            }
            Monitor::Hl7 => {
                let now: DateTime<Utc> = Utc::now();
                let time = now.with_timezone(&chrono::Local).fixed_offset();
                pty.send(&mllp(&hl7_oru(&format!("SIM{n:08}"), time, &v))).await
            }
        }
    }
}

/// Plays a timed capture (`iomt-edge serial record`): each chunk of bytes at
/// its offset from the start, as it was recorded, until the end (then one
/// second for the reader to drain the terminal) or `stop`.
/// Offsets are non-decreasing (the caller parsed them).
pub(crate) async fn play_timed(pty: &mut Pty, chunks: &[(Duration, Vec<u8>)], stop: tokio_util::sync::CancellationToken) {
    let start = tokio::time::Instant::now();
    for (offset, bytes) in chunks {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(start + *offset) => {}
        }
        pty.send(bytes).await;
        pty.take_received();
    }
    // Closing the terminal at once would discard what the reader has not
    // read yet (a hang-up flushes the queue): let it drain first.
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masimo_line_matches_the_published_capture() {
        let clock = chrono::NaiveDate::from_ymd_opt(2016, 2, 22).unwrap().and_hms_opt(22, 47, 45).unwrap();
        let v = Vitals { spo2: Some(98), pulse: Some(97), pi: Some(3.6), ..Vitals::NONE };
        assert_eq!(
            masimo_line(clock, &v, MASIMO_EXC_SET),
            "02/22/16 22:47:45 SN=0000056661 SPO2=098% BPM=097 PI=03.60% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- ALARM=0000 EXC=000800\r\n"
        );
        assert!(masimo_line(clock, &Vitals::NONE, 0x820).contains("SPO2=---% BPM=--- PI=--.--% "));
    }

    #[test]
    fn radical7_line_matches_the_published_layout() {
        let clock = chrono::NaiveDate::from_ymd_opt(2016, 3, 17).unwrap().and_hms_opt(19, 19, 36).unwrap();
        let v = Vitals { spo2: Some(98), pulse: Some(123), pi: Some(0.55), ..Vitals::NONE };
        assert_eq!(
            masimo_radical7_line(clock, &v, 0xC00),
            "03/17/16 19:19:36 SN=0000093112 SPO2=098% BPM=123 PI=00.55 SPCO=--.-% SPMET=--.-% SPHB=--.- SPOC=-- RESVD=--- DESAT=-- PIDELTA=+-- PVI=--- ALARM=000000 EXC=0000C00 EXC1=00000000\r\n"
        );
        let v = Vitals { rainbow: Some(Rainbow { spco: 1.5, spmet: 0.8, sphb: 13.4, pvi: 14 }), ..v };
        assert!(masimo_radical7_line(clock, &v, 0x800).contains(" SPCO=01.5% SPMET=00.8% SPHB=13.4 SPOC=-- RESVD=--- DESAT=-- PIDELTA=+-- PVI=014 "));
        let off = Vitals { spo2: None, ..v };
        assert!(masimo_radical7_line(clock, &off, 0x820).contains("SPCO=--.-% SPMET=--.-% SPHB=--.- "), "finger out: no rainbow values");
    }

    /// The DF2 packet of the published test vector (pufferfish-software
    /// TestNoninOEM3.cpp): frames `01 81 01 00 83 | 01 80 01 48 CA | 01 80 01 61 E3 ...`.
    #[test]
    fn df2_packet_starts_like_the_published_vector() {
        let v = Vitals { spo2: Some(97), pulse: Some(72), ..Vitals::NONE };
        let p = nonin_packet(NoninBinary::Df2, &v, 0, 1);
        assert_eq!(p.len(), 125);
        // Our pleth varies per frame; status, HR and SpO2 bytes and checksums are as published.
        assert_eq!((p[0], p[1], p[3]), (0x01, 0x81, 0x00));
        assert_eq!((p[5], p[6], p[8]), (0x01, 0x80, 0x48));
        assert_eq!((p[10], p[11], p[13]), (0x01, 0x80, 0x61));
        for f in p.chunks(5) {
            assert_eq!(f[..4].iter().fold(0u8, |a, b| a.wrapping_add(*b)), f[4]);
        }
        let missing = nonin_packet(NoninBinary::Df7, &Vitals::NONE, NONIN_SNSD, 0);
        assert_eq!((missing[3] & 3, missing[8], missing[13]), (3, 0x7F, 127), "HR 511, SpO2 127");
    }

    #[test]
    fn hl7_message_shape() {
        let t = chrono::DateTime::parse_from_rfc3339("2025-06-10T01:51:27+08:00").unwrap();
        let v = Vitals { spo2: Some(97), pulse: None, nibp: Some((120, 80, 90)), ..Vitals::NONE };
        let m = hl7_oru("C1", t, &v);
        assert!(m.starts_with("MSH|^~\\&|SIM_MONITOR|BED12|||20250610015127+0800||ORU^R01^ORU_R01|C1|P|2.6\r"));
        assert!(m.contains("OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||F|||20250610015127+0800\r"));
        assert!(m.contains("OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|||264864^MDC_DIM_BEAT_PER_MIN^MDC|||||X|||"));
        assert_eq!(m.matches("266016^MDC_DIM_MMHG").count(), 3);
    }
}
