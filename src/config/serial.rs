//! `[device.serial]`: a monitor on a serial port (RS-232, USB-serial) and how
//! it is read.
//!
//! The port's line settings come from the driver's device profile
//! (`devices/serial/*.toml`, `[port]`); every one of them can be overridden
//! here. Which drivers and profiles exist is checked when the gateway starts
//! (and by `iomt-edge check-config`), not here: the config module does not
//! know the adapters.
//!
//! As written ([`RawSerial`]) the HL7 driver's options (`code_map`, `ack`,
//! `patient_from`) sit beside `driver` and `init`/`poll` are hex text;
//! validated, they are [`SerialDriver::Hl7`]'s fields and bytes.

use super::units::{self, Unit};
use super::Problem;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// One serial device, validated.
#[derive(Debug, Clone)]
pub struct SerialDeviceConfig {
    /// The device node, best a stable `/dev/serial/by-id/...` link (udev
    /// creates it when the adapter is plugged in and removes it when it is
    /// unplugged; `/dev/ttyUSB0` may become `ttyUSB1` after a replug).
    pub port: PathBuf,
    /// What reads the port, with its own options.
    pub(crate) driver: SerialDriver,
    /// Line settings; each overrides the profile's `[port]` value.
    pub(crate) baud: Option<u32>,
    pub(crate) data_bits: Option<u8>,
    pub(crate) parity: Option<SerialParity>,
    pub(crate) stop_bits: Option<u8>,
    pub(crate) flow_control: Option<SerialFlowControl>,
    /// Set (true) or clear (false) the DTR / RTS lines after opening; unset
    /// leaves them as the driver of the port sets them.
    pub(crate) dtr: Option<bool>,
    pub(crate) rts: Option<bool>,
    /// Nothing received for this long: the monitor is marked silent.
    pub(crate) quiet_timeout: Duration,
    /// Upper bound of the backoff between attempts to reopen the port.
    pub(crate) reopen_max: Duration,
    /// `init`: bytes sent after every open and every quiet timeout (1 to 256).
    pub(crate) init: Option<Vec<u8>>,
    /// `poll`: bytes sent every `poll_interval` while the port is open (1 to 256).
    pub(crate) poll: Option<Vec<u8>>,
    pub(crate) poll_interval: Duration,
}

/// `driver`: the HL7 driver with its options, or another driver by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SerialDriver {
    /// `driver = "hl7"`: HL7 v2 over the port.
    Hl7 {
        /// `code_map`: a TOML file of extra OBX-3 code mappings (`[[code]]`),
        /// tried before the built-in IEEE 11073 MDC table.
        code_map: Option<PathBuf>,
        /// `ack` (default true): answer every MLLP-framed message with an HL7
        /// ACK on the same port (HL7 v2 original-mode acknowledgment).
        ack: bool,
        /// `patient_from`: see [`Hl7PatientFrom`].
        patient_from: Option<Hl7PatientFrom>,
    },
    /// A shipped profile (`masimo-ascii1`, `nonin-ascii`, `nellcor-n595`), a
    /// built-in driver (`nonin-df2`, `nonin-df7`, `nonin-df8`) or the path of
    /// a profile file, as written (trimmed). Whether it exists is checked on
    /// the machine (the adapter, `check-config`), not here.
    Named(String),
}

impl SerialDriver {
    /// The name as written in `driver`.
    pub(crate) fn name(&self) -> &str {
        match self {
            SerialDriver::Hl7 { .. } => "hl7",
            SerialDriver::Named(n) => n,
        }
    }
}

/// `[device.serial]` as written: the hl7-only options beside `driver`
/// ([`RawSerial::validate`] allows them only with `driver = "hl7"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSerial {
    /// The device node, best a stable `/dev/serial/by-id/...` link (udev
    /// creates it when the adapter is plugged in and removes it when it is
    /// unplugged; `/dev/ttyUSB0` may become `ttyUSB1` after a replug).
    pub(crate) port: PathBuf,
    /// A shipped profile (`masimo-ascii1`, `nonin-ascii`, `nellcor-n595`), a
    /// built-in driver (`hl7`, `nonin-df2`, `nonin-df7`, `nonin-df8`) or the
    /// path of a profile file.
    pub(crate) driver: String,
    /// Line settings; each overrides the profile's `[port]` value.
    #[serde(default)]
    pub(crate) baud: Option<u32>,
    #[serde(default)]
    pub(crate) data_bits: Option<u8>,
    #[serde(default)]
    pub(crate) parity: Option<SerialParity>,
    #[serde(default)]
    pub(crate) stop_bits: Option<u8>,
    #[serde(default)]
    pub(crate) flow_control: Option<SerialFlowControl>,
    /// Set (true) or clear (false) the DTR / RTS lines after opening; unset
    /// leaves them as the driver of the port sets them. Some monitors and
    /// isolated RS-232 adapters take their power from DTR/RTS.
    #[serde(default)]
    pub(crate) dtr: Option<bool>,
    #[serde(default)]
    pub(crate) rts: Option<bool>,
    /// Nothing received for this long: the monitor is marked silent (a
    /// `silent` device event, state `lost`) until it sends again. Default `5s`.
    #[serde(default = "default_quiet", with = "units::duration")]
    pub(crate) quiet_timeout: Duration,
    /// Upper bound of the backoff between attempts to reopen a port that
    /// disappeared (starts at 0.5 s, doubles). Default `30s`.
    #[serde(default = "default_reopen_max", with = "units::duration")]
    pub(crate) reopen_max: Duration,
    /// Bytes sent after every open, and again after every quiet timeout (a
    /// monitor that was switched off needs them again), in hex:
    /// `"02 70 02 02 07 03"` (Nonin's select-Data-Format-7 command).
    #[serde(default)]
    pub(crate) init: Option<String>,
    /// Bytes sent every `poll_interval` while the port is open (monitors that
    /// only answer when asked, keep-alives), in hex.
    #[serde(default)]
    pub(crate) poll: Option<String>,
    /// Default `1s`.
    #[serde(default = "default_poll_interval", with = "units::duration")]
    pub(crate) poll_interval: Duration,
    /// `hl7` only: a TOML file of extra OBX-3 code mappings (`[[code]]`), tried
    /// before the built-in IEEE 11073 MDC table.
    #[serde(default)]
    pub(crate) code_map: Option<PathBuf>,
    /// `hl7` only: answer every MLLP-framed message with an HL7 ACK on the
    /// same port (`AA` once its readings are committed, `AE`/`AR` with the
    /// reason otherwise). Default `true`: a sender that frames with MLLP
    /// expects an ACK (HL7 v2 original-mode acknowledgment); set `false` for
    /// a monitor that only streams and does not read its receive line.
    #[serde(default)]
    pub(crate) ack: Option<bool>,
    /// `hl7` only: where readings take their patient from; see [`Hl7PatientFrom`].
    #[serde(default)]
    pub(crate) patient_from: Option<Hl7PatientFrom>,
}

/// Where the readings of an HL7 device take their patient from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Hl7PatientFrom {
    /// The device's patient association (`patient_id`, or the twin), as for
    /// every device; a message naming another patient in PID-3 than the
    /// first since the association was set is refused (AE). The default.
    Device,
    /// Each message's PID-3 (ID number); the readings' device id becomes
    /// `<id>/<bed>` (PV1-3, else OBX-18): a central station's feed of
    /// several beds.
    Pid,
}

/// `[device.hl7_tcp]`: a monitor or central station that pushes HL7 v2
/// ORU^R01 over TCP, MLLP-framed (HL7 v2 Transport Specification, MLLP
/// Release 2). The gateway listens; each message is acknowledged `AA` only
/// after its readings are committed to the outbox, `AE`/`AR` with the reason
/// otherwise, so the sender's own retry covers whatever was not stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7TcpConfig {
    /// `address:port` to listen on, e.g. `0.0.0.0:2575` (2575 is the port
    /// IANA registered for HL7 over MLLP).
    pub(crate) listen: String,
    /// Extra OBX-3 code mappings, as for the serial `hl7` driver.
    #[serde(default)]
    pub(crate) code_map: Option<PathBuf>,
    /// Where readings take their patient from; see [`Hl7PatientFrom`].
    #[serde(default)]
    pub(crate) patient_from: Option<Hl7PatientFrom>,
    /// A message whose readings are not committed within this time gets
    /// `AE` (the sender resends it). Default `10s`.
    #[serde(default = "default_ack_timeout", with = "units::duration")]
    pub(crate) ack_timeout: Duration,
}

fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks a `[device.hl7_tcp]` table at `prefix` (`device.3.hl7_tcp`).
pub(crate) fn validate_hl7_tcp(prefix: &str, h: &Hl7TcpConfig) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if h.listen.trim().parse::<std::net::SocketAddr>().is_err() {
        errs.push((
            format!("{prefix}.listen"),
            format!("listen = \"{}\" is not an address and port; write it like \"0.0.0.0:2575\" or \"127.0.0.1:2575\"", h.listen),
        ));
    }
    if let Some(m) = units::out_of_range("ack_timeout", h.ack_timeout.as_millis(), 1000, 600_000, Unit::Duration, "10s") {
        errs.push((format!("{prefix}.ack_timeout"), m));
    }
    errs
}

/// Parity as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SerialParity {
    None,
    Odd,
    Even,
}

/// Flow control as written in the config: `hardware` is RTS/CTS, `software`
/// XON/XOFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SerialFlowControl {
    None,
    Hardware,
    Software,
}

/// `none`, `odd`, `even` (the config's spelling), for command-line options.
impl std::str::FromStr for SerialParity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        from_config_word(s, "none, odd or even")
    }
}

/// `none`, `hardware`, `software` (the config's spelling), for command-line options.
impl std::str::FromStr for SerialFlowControl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        from_config_word(s, "none, hardware or software")
    }
}

/// A unit variant read from `s` as the config file spells it.
fn from_config_word<T: serde::de::DeserializeOwned>(s: &str, choices: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(s)).map_err(|_| format!("use {choices}"))
}

fn default_quiet() -> Duration {
    Duration::from_secs(5)
}

fn default_reopen_max() -> Duration {
    Duration::from_secs(30)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

/// Parses the hex form of `init` / `poll`: pairs of hex digits, separated by
/// spaces, commas or nothing, each optionally `0x`-prefixed. At most 256 bytes.
pub(crate) fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || c == ',') {
        let t = token.trim_start_matches("0x").trim_start_matches("0X");
        if t.is_empty() {
            continue;
        }
        if t.len() % 2 != 0 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{token}` is not hex bytes; write the bytes as hex pairs such as \"02 70 02 02 07 03\""));
        }
        for i in (0..t.len()).step_by(2) {
            out.push(u8::from_str_radix(&t[i..i + 2], 16).map_err(|e| e.to_string())?);
        }
    }
    if out.is_empty() {
        return Err("no bytes given; remove the option or write the bytes as hex pairs such as \"02 70 02 02 07 03\"".into());
    }
    if out.len() > 256 {
        return Err(format!("{} bytes; at most 256 are sent at once", out.len()));
    }
    Ok(out)
}

impl RawSerial {
    /// The table checked and converted. Problems' keys are relative to the
    /// `[[device]]` (`serial.baud`).
    pub(crate) fn validate(self) -> Result<SerialDeviceConfig, Vec<Problem>> {
        let errs = problems("serial", &self);
        if !errs.is_empty() {
            return Err(errs);
        }
        let hex =
            |k: &str, v: Option<String>| v.map(|t| parse_hex_bytes(&t).map_err(|m| vec![(format!("serial.{k}"), format!("{k}: {m}"))])).transpose();
        let driver = self.driver.trim();
        let driver = if driver == "hl7" {
            SerialDriver::Hl7 { code_map: self.code_map, ack: self.ack.unwrap_or(true), patient_from: self.patient_from }
        } else {
            SerialDriver::Named(driver.to_string())
        };
        Ok(SerialDeviceConfig {
            port: self.port,
            driver,
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            flow_control: self.flow_control,
            dtr: self.dtr,
            rts: self.rts,
            quiet_timeout: self.quiet_timeout,
            reopen_max: self.reopen_max,
            init: hex("init", self.init)?,
            poll: hex("poll", self.poll)?,
            poll_interval: self.poll_interval,
        })
    }
}

/// Checks what the types cannot, for the table at `prefix` (`serial`):
/// (key path, message) of each problem.
fn problems(prefix: &str, s: &RawSerial) -> Vec<Problem> {
    let mut errs = Vec::new();
    let key = |k: &str| format!("{prefix}.{k}");
    if s.port.as_os_str().is_empty() {
        errs.push((key("port"), "port is empty: give the device node, best its /dev/serial/by-id/... link".into()));
    }
    if s.driver.trim().is_empty() {
        errs.push((key("driver"), "driver is empty: name a profile (masimo-ascii1, nonin-ascii, nellcor-n595), a built-in driver (hl7, nonin-df2, nonin-df7, nonin-df8) or a profile file".into()));
    }
    if let Some(b) = s.baud {
        if !(50..=4_000_000).contains(&b) {
            errs.push((key("baud"), format!("baud must be 50 to 4000000; {b} is out of range")));
        }
    }
    if let Some(d) = s.data_bits {
        if !(5..=8).contains(&d) {
            errs.push((key("data_bits"), format!("data_bits must be 5, 6, 7 or 8; {d} is not")));
        }
    }
    if let Some(d) = s.stop_bits {
        if !(1..=2).contains(&d) {
            errs.push((key("stop_bits"), format!("stop_bits must be 1 or 2; {d} is not")));
        }
    }
    let mut range = |k: &str, value: u128, lo: u128, hi: u128, default: &str| {
        if let Some(m) = units::out_of_range(k, value, lo, hi, Unit::Duration, default) {
            errs.push((key(k), m));
        }
    };
    range("quiet_timeout", s.quiet_timeout.as_millis(), 200, 600_000, "5s");
    range("reopen_max", s.reopen_max.as_millis(), 500, 3_600_000, "30s");
    range("poll_interval", s.poll_interval.as_millis(), 50, 3_600_000, "1s");
    for (k, v) in [("init", &s.init), ("poll", &s.poll)] {
        if let Some(text) = v {
            if let Err(m) = parse_hex_bytes(text) {
                errs.push((key(k), format!("{k}: {m}")));
            }
        }
    }
    for (k, set) in [("code_map", s.code_map.is_some()), ("ack", s.ack.is_some()), ("patient_from", s.patient_from.is_some())] {
        if set && s.driver.trim() != "hl7" {
            errs.push((key(k), format!("{k} is for the hl7 driver only; remove it or set driver = \"hl7\"")));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_bytes() {
        assert_eq!(parse_hex_bytes("02 70 02 02 07 03"), Ok(vec![2, 0x70, 2, 2, 7, 3]));
        assert_eq!(parse_hex_bytes("0x0D,0x0a"), Ok(vec![0x0D, 0x0A]));
        assert_eq!(parse_hex_bytes("0270"), Ok(vec![2, 0x70]));
        assert!(parse_hex_bytes("027").unwrap_err().contains("`027` is not hex"));
        assert!(parse_hex_bytes("zz").is_err());
        assert!(parse_hex_bytes("  ").unwrap_err().contains("no bytes"));
        assert!(parse_hex_bytes(&"00 ".repeat(257)).unwrap_err().contains("at most 256"));
    }
}
