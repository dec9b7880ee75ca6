//! Incremental framers: bytes in any chunking -> whole records, with noise,
//! cut-off and over-long records reported as [`BadInput`] instead of read.
//!
//! Why hand-written: a serial port delivers whatever the UART has buffered,
//! so one read may end mid-line and the next may start with the tail of a
//! record whose start was lost (the gateway opened the port mid-line, a cable
//! was replugged, the baud rate is wrong). `tokio_util`'s codecs would tie
//! these cores to tokio; the state machines below are small, byte-at-a-time
//! and therefore independent of how reads are split (a property test feeds the
//! same stream in random chunks and compares).
//!
//! - [`LineFramer`]: text lines ended by CR, LF, CR LF or either, optionally
//!   wrapped in start/end bytes (STX 0x02 / ETX 0x03), with a maximum length.
//!   An over-long line is reported once and dropped up to its end, and the
//!   next line is read normally.
//! - [`MllpFramer`]: HL7 Minimal Lower Layer Protocol blocks, `0x0B` message
//!   `0x1C 0x0D` (HL7 v2.x Implementation Guide: Transport Specification,
//!   MLLP Release 2, "Block format"). A new `0x0B` before the end reports the
//!   cut-off message and starts the new one.

use super::BadInput;
use serde::{Deserialize, Serialize};

/// What ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Terminator {
    /// CR (0x0D). LF bytes at either end of a line are removed.
    Cr,
    /// LF (0x0A). CR bytes at either end of a line are removed.
    Lf,
    /// CR LF: the line ends at LF and the CR before it is removed (the same as
    /// `lf`; a device that sends CR LF is read correctly by either).
    Crlf,
    /// CR or LF, whichever comes; the empty line between CR and LF is dropped.
    Any,
}

/// How lines are cut from the byte stream (a profile's `[framing]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFraming {
    pub terminator: Terminator,
    /// A byte that starts every record (STX 0x02); bytes before it are noise.
    pub start_byte: Option<u8>,
    /// A byte that ends every record (ETX 0x03), instead of the terminator.
    pub end_byte: Option<u8>,
    /// Longest record in bytes, without terminator and start/end bytes.
    pub max_length: usize,
}

impl Default for LineFraming {
    fn default() -> LineFraming {
        LineFraming { terminator: Terminator::Any, start_byte: None, end_byte: None, max_length: 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Waiting for the start byte (only with `start_byte`).
    Outside,
    /// Collecting a record.
    Inside,
    /// Dropping the rest of an over-long record.
    Discarding,
}

/// Cuts lines from a byte stream fed in arbitrary chunks.
#[derive(Debug, Clone)]
pub struct LineFramer {
    cfg: LineFraming,
    buf: Vec<u8>,
    state: LineState,
    noise: usize,
}

impl LineFramer {
    pub fn new(cfg: LineFraming) -> LineFramer {
        let state = if cfg.start_byte.is_some() { LineState::Outside } else { LineState::Inside };
        LineFramer { cfg, buf: Vec::new(), state, noise: 0 }
    }

    fn ends_line(&self, b: u8) -> bool {
        if let Some(end) = self.cfg.end_byte {
            return b == end;
        }
        match self.cfg.terminator {
            Terminator::Cr => b == b'\r',
            Terminator::Lf | Terminator::Crlf => b == b'\n',
            Terminator::Any => b == b'\r' || b == b'\n',
        }
    }

    fn after_record(&self) -> LineState {
        if self.cfg.start_byte.is_some() {
            LineState::Outside
        } else {
            LineState::Inside
        }
    }

    fn flush_noise(&mut self, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        if self.noise > 0 {
            out.push(Err(BadInput::Noise { bytes: self.noise }));
            self.noise = 0;
        }
    }

    fn emit_line(&mut self, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        let line = std::mem::take(&mut self.buf);
        let trimmed = trim_line_ends(&line);
        if !trimmed.is_empty() {
            out.push(Ok(trimmed.to_vec()));
        }
    }

    /// Feeds bytes; appends complete lines (without terminator) and bad input.
    /// Empty lines are dropped silently.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        for &b in bytes {
            match self.state {
                LineState::Outside => {
                    if Some(b) == self.cfg.start_byte {
                        self.flush_noise(out);
                        self.buf.clear();
                        self.state = LineState::Inside;
                    } else if !b.is_ascii_whitespace() {
                        self.noise += 1;
                    }
                }
                LineState::Inside => {
                    if Some(b) == self.cfg.start_byte {
                        if !trim_line_ends(&self.buf).is_empty() {
                            out.push(Err(BadInput::Truncated("a new start byte came before the record's end".into())));
                        }
                        self.buf.clear();
                    } else if self.ends_line(b) {
                        self.emit_line(out);
                        self.state = self.after_record();
                    } else {
                        self.buf.push(b);
                        if self.buf.len() > self.cfg.max_length {
                            out.push(Err(BadInput::TooLong { max: self.cfg.max_length }));
                            self.buf.clear();
                            self.state = LineState::Discarding;
                        }
                    }
                }
                LineState::Discarding => {
                    if Some(b) == self.cfg.start_byte {
                        self.buf.clear();
                        self.state = LineState::Inside;
                    } else if self.ends_line(b) {
                        self.state = self.after_record();
                    }
                }
            }
        }
    }

    /// End of input: a line without its terminator is reported as cut short
    /// (a port closed mid-line must not yield a half number), noise as noise.
    pub fn finish(&mut self, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        self.flush_noise(out);
        if self.state == LineState::Inside && !trim_line_ends(&self.buf).is_empty() {
            out.push(Err(BadInput::Truncated("the input ended inside a line".into())));
        }
        self.buf.clear();
        self.state = if self.cfg.start_byte.is_some() { LineState::Outside } else { LineState::Inside };
    }
}

/// Removes CR and LF bytes at both ends (a CR LF device read with `lf`, or the
/// LF after a CR with `cr`).
fn trim_line_ends(line: &[u8]) -> &[u8] {
    let is_eol = |b: &u8| *b == b'\r' || *b == b'\n';
    let start = line.iter().position(|b| !is_eol(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !is_eol(b)).map_or(start, |i| i + 1);
    &line[start..end.max(start)]
}

/// MLLP start block byte (VT).
pub(crate) const MLLP_START: u8 = 0x0B;
/// MLLP end block byte (FS), followed by [`MLLP_END_CR`].
pub(crate) const MLLP_END: u8 = 0x1C;
/// The CR after [`MLLP_END`].
pub(crate) const MLLP_END_CR: u8 = 0x0D;

/// Wraps one message in an MLLP block: `0x0B` message `0x1C 0x0D`.
pub(crate) fn mllp_wrap(message: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(message.len() + 3);
    v.push(MLLP_START);
    v.extend_from_slice(message);
    v.push(MLLP_END);
    v.push(MLLP_END_CR);
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MllpState {
    Idle,
    Inside,
    /// Saw 0x1C; expecting 0x0D.
    SawEnd,
    Discarding,
}

/// Cuts MLLP blocks from a byte stream fed in arbitrary chunks.
#[derive(Debug, Clone)]
pub struct MllpFramer {
    max_length: usize,
    buf: Vec<u8>,
    state: MllpState,
    noise: usize,
}

impl MllpFramer {
    /// `max_length`: longest message accepted, in bytes.
    pub fn new(max_length: usize) -> MllpFramer {
        MllpFramer { max_length, buf: Vec::new(), state: MllpState::Idle, noise: 0 }
    }

    fn flush_noise(&mut self, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        if self.noise > 0 {
            out.push(Err(BadInput::Noise { bytes: self.noise }));
            self.noise = 0;
        }
    }

    /// Feeds bytes; appends complete messages (without the block bytes) and
    /// bad input. Whitespace between blocks is not noise.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        for &b in bytes {
            self.step(b, out);
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        match self.state {
            MllpState::Idle => {
                if b == MLLP_START {
                    self.flush_noise(out);
                    self.buf.clear();
                    self.state = MllpState::Inside;
                } else if !b.is_ascii_whitespace() {
                    self.noise += 1;
                }
            }
            MllpState::Inside => {
                if b == MLLP_START {
                    out.push(Err(BadInput::Truncated("a new MLLP start (0x0B) came before the end (0x1C 0x0D)".into())));
                    self.buf.clear();
                } else if b == MLLP_END {
                    self.state = MllpState::SawEnd;
                } else {
                    self.buf.push(b);
                    if self.buf.len() > self.max_length {
                        out.push(Err(BadInput::TooLong { max: self.max_length }));
                        self.buf.clear();
                        self.state = MllpState::Discarding;
                    }
                }
            }
            MllpState::SawEnd => {
                // The block ends 0x1C 0x0D; a sender that omits the CR still
                // ended its message (0x1C never occurs inside HL7 text).
                out.push(Ok(std::mem::take(&mut self.buf)));
                self.state = MllpState::Idle;
                if b != MLLP_END_CR {
                    self.step(b, out);
                }
            }
            MllpState::Discarding => {
                if b == MLLP_START {
                    self.buf.clear();
                    self.state = MllpState::Inside;
                } else if b == MLLP_END {
                    self.state = MllpState::Idle;
                }
            }
        }
    }

    /// End of input: a block without its end is reported as cut short.
    pub fn finish(&mut self, out: &mut Vec<Result<Vec<u8>, BadInput>>) {
        self.flush_noise(out);
        match self.state {
            MllpState::SawEnd => out.push(Ok(std::mem::take(&mut self.buf))),
            MllpState::Inside => out.push(Err(BadInput::Truncated("the input ended inside an MLLP block".into()))),
            MllpState::Idle | MllpState::Discarding => {}
        }
        self.buf.clear();
        self.state = MllpState::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Out = Vec<Result<Vec<u8>, BadInput>>;

    fn lines(cfg: LineFraming, chunks: &[&[u8]]) -> Out {
        let mut f = LineFramer::new(cfg);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    fn text(v: &Out) -> Vec<String> {
        v.iter()
            .map(|r| match r {
                Ok(l) => String::from_utf8_lossy(l).into_owned(),
                Err(e) => format!("ERR {}", e.kind()),
            })
            .collect()
    }

    #[test]
    fn a_line_split_across_chunks_is_one_line() {
        let out = lines(LineFraming::default(), &[b"SPO2=09", b"7 HR=0", b"72\r", b"\nSPO2=098 HR=071\r\n"]);
        assert_eq!(text(&out), vec!["SPO2=097 HR=072", "SPO2=098 HR=071"]);
    }

    #[test]
    fn terminators() {
        let cr = LineFraming { terminator: Terminator::Cr, ..LineFraming::default() };
        assert_eq!(text(&lines(cr.clone(), &[b"a\rb\r\nc\r"])), vec!["a", "b", "c"]);
        let lf = LineFraming { terminator: Terminator::Lf, ..LineFraming::default() };
        assert_eq!(text(&lines(lf, &[b"a\rb\r\nc\n"])), vec!["a\rb", "c"], "a lone CR is part of an LF line");
        let crlf = LineFraming { terminator: Terminator::Crlf, ..LineFraming::default() };
        assert_eq!(text(&lines(crlf, &[b"a\r\n\r\nb\r\n"])), vec!["a", "b"], "blank lines are dropped");
    }

    #[test]
    fn a_line_cut_by_the_end_of_input_is_reported_not_read() {
        let out = lines(LineFraming::default(), &[b"SPO2=097 HR=072\nSPO2=098 HR=07"]);
        assert_eq!(text(&out), vec!["SPO2=097 HR=072", "ERR truncated"]);
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_next_line_is_read() {
        let cfg = LineFraming { max_length: 8, ..LineFraming::default() };
        let long = [b'x'; 100];
        let out = lines(cfg, &[b"ok\n", &long, &long, b"\nfine\n"]);
        assert_eq!(text(&out), vec!["ok", "ERR tooLong", "fine"]);
        // Exactly the maximum is accepted.
        let cfg = LineFraming { max_length: 4, ..LineFraming::default() };
        assert_eq!(text(&lines(cfg, &[b"abcd\nabcde\n"])), vec!["abcd", "ERR tooLong"]);
    }

    #[test]
    fn start_and_end_bytes_with_noise_between_records() {
        let cfg = LineFraming { start_byte: Some(0x02), end_byte: Some(0x03), ..LineFraming::default() };
        let out = lines(cfg.clone(), &[b"junk\x02A=1\x03\r\n\x02B=", b"2\x03zz\x02C=3\x02D=4\x03"]);
        assert_eq!(text(&out), vec!["ERR noise", "A=1", "B=2", "ERR noise", "ERR truncated", "D=4"]);
        assert_eq!(out[0], Err(BadInput::Noise { bytes: 4 }));
        // A record whose end never came.
        assert_eq!(text(&lines(cfg, &[b"\x02A=1"])), vec!["ERR truncated"]);
    }

    #[test]
    fn mllp_blocks_noise_and_resync() {
        let mut f = MllpFramer::new(1000);
        let mut out = Vec::new();
        f.push(b"garbage\x0bMSH|a\rOBX|1\r\x1c", &mut out);
        f.push(b"\r\r\n\x0bMSH|b\r", &mut out);
        f.push(b"\x0bMSH|c\r\x1c\rxx", &mut out);
        f.finish(&mut out);
        assert_eq!(text(&out), vec!["ERR noise", "MSH|a\rOBX|1\r", "ERR truncated", "MSH|c\r", "ERR noise"]);
        // A sender that omits the final CR still ends its message.
        let mut out = Vec::new();
        f.push(b"\x0bMSH|d\x1c\x0bMSH|e\x1c", &mut out);
        f.finish(&mut out);
        assert_eq!(text(&out), vec!["MSH|d", "MSH|e"]);
        // Over-long, then a normal message.
        let mut f = MllpFramer::new(4);
        let mut out = Vec::new();
        f.push(b"\x0bMSH|toolong\x1c\r\x0bMSH\x1c\r", &mut out);
        assert_eq!(text(&out), vec!["ERR tooLong", "MSH"]);
        assert_eq!(mllp_wrap(b"M"), vec![0x0B, b'M', 0x1C, 0x0D]);
    }

    fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts {
            pieces.push(bytes[start..c.max(start)].to_vec());
            start = c.max(start);
        }
        pieces.push(bytes[start..].to_vec());
        pieces
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// How reads are split never changes what is framed.
        #[test]
        fn chunking_does_not_matter(bytes in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(0x02u8), Just(0x03u8), Just(0x0Bu8), Just(0x1Cu8), Just(b'\r')], 0..300),
                                    cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let cfgs = [
                LineFraming { max_length: 16, ..LineFraming::default() },
                LineFraming { start_byte: Some(0x02), end_byte: Some(0x03), max_length: 16, terminator: Terminator::Cr },
            ];
            for cfg in cfgs {
                let whole = lines(cfg.clone(), &[&bytes]);
                let pieces = chunked(&bytes, &cuts);
                let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
                prop_assert_eq!(&whole, &lines(cfg.clone(), &refs));
                for l in whole.iter().flatten() {
                    prop_assert!(l.len() <= 16 && !l.is_empty());
                }
            }
            let mllp = |chunks: &[&[u8]]| {
                let mut f = MllpFramer::new(64);
                let mut out = Vec::new();
                for c in chunks { f.push(c, &mut out); }
                f.finish(&mut out);
                out
            };
            let pieces = chunked(&bytes, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
            prop_assert_eq!(mllp(&[&bytes]), mllp(&refs));
        }
    }
}
