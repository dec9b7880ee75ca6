//! The serial adapter: the I/O loop on tokio-serial, one task per configured
//! `[device.serial]`.
//!
//! Everything that decides is pure and lives elsewhere: the decoders
//! ([`super::Driver`]) turn bytes into records, [`super::link::Link`] decides
//! events, states, backoff and what to log. This loop only opens the port,
//! reads, writes init/poll bytes, and carries out those decisions:
//!
//! 1. open the port with the driver's line settings (a profile's `[port]`,
//!    else 9600 8N1) and the device's overrides, in exclusive mode (TIOCEXCL:
//!    a second reader would steal bytes); set DTR/RTS if configured; send the
//!    init bytes;
//! 2. read: every chunk goes to the decoder with its arrival time (gateway
//!    UTC); each record's readings go to the outbox, each bad input is counted
//!    in the registry (`inputErrors`) and logged once per open port. The
//!    `hl7` driver instead cuts messages ([`super::hl7::Hl7Framer`]) and hands
//!    each to the same intake as the TCP listener ([`super::intake`]: patient
//!    rules, outbox, commit); an MLLP-framed message is answered on the port
//!    with its ACK (`AA` only after its readings are committed) unless the
//!    device says `ack = false`;
//! 3. quiet for `quiet_timeout`: a `silent` event, the init bytes again;
//!    idle for [`super::IDLE_GAP`]: [`super::Decoder::idle`] (ends a bare HL7
//!    message); every `poll_interval`: the poll bytes;
//! 4. a read error or end of file (USB-serial adapter unplugged: the device
//!    node goes away) ends the port: [`super::Decoder::abort`] reports a record
//!    cut mid-way as truncated (never decoded), a `disconnected` event, and
//!    the port is reopened by path with backoff until the node is back (use
//!    the stable `/dev/serial/by-id/...` link: udev recreates it on replug).

use super::framing::mllp_wrap;
use super::hl7::{FramedOut, Hl7Framer, Hl7Options, PatientFrom};
use super::intake::Hl7Intake;
use super::link::{Link, Step};
use super::profile::{FlowControl, Parity, PortSettings};
use super::{BadInput, Decoded, Decoder, Driver, IDLE_GAP};
use crate::adapters::{Adapter, AdapterContext, AdapterError, OutboxClosed};
use crate::config::serial::{Hl7PatientFrom, SerialDeviceConfig, SerialDriver};
use crate::config::{DeviceConfig, DeviceSource};
use crate::logging::Episode;
use crate::model::{DeviceEvent, DeviceKind, DistinctTimes, Reading};
use crate::redact;
use async_trait::async_trait;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt};

/// A write (init, poll bytes) that cannot complete in this time is dropped:
/// with hardware flow control a monitor that is off never lets it through.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// An HL7 message whose readings are not committed within this time is
/// answered `AE` (the sender resends it); the TCP listener's default
/// `ack_timeout`.
pub(crate) const HL7_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The config's `patient_from` as the driver's option (default: the device's
/// association).
pub(crate) fn patient_from(p: Option<Hl7PatientFrom>) -> PatientFrom {
    match p {
        Some(Hl7PatientFrom::Pid) => PatientFrom::Pid,
        Some(Hl7PatientFrom::Device) | None => PatientFrom::Device,
    }
}

/// One configured serial device, resolved: driver loaded, settings merged.
#[derive(Debug, Clone)]
pub(crate) struct SerialDevice {
    /// The configured id: the device id readings carry.
    pub(crate) id: String,
    pub(crate) kind: DeviceKind,
    pub(crate) patient_id: Option<String>,
    pub(crate) port: PathBuf,
    pub(crate) driver: Driver,
    /// The profile's `[port]` with the device's overrides applied.
    pub(crate) settings: PortSettings,
    pub(crate) dtr: Option<bool>,
    pub(crate) rts: Option<bool>,
    pub(crate) quiet_timeout: Duration,
    pub(crate) reopen_max: Duration,
    pub(crate) init: Option<Vec<u8>>,
    pub(crate) poll: Option<(Vec<u8>, Duration)>,
    /// `hl7` only: answer MLLP-framed messages with an ACK on the port.
    pub(crate) ack: bool,
}

/// Loads the driver a `[device.serial]` table names and merges its line
/// settings with the table's overrides. The table is validated (its
/// options and bytes); what can still fail is on this machine (a profile or
/// code map that cannot be read, a driver for another kind of device).
/// Errors: (key under the table, such as `driver` or `code_map`, and a
/// sentence that says how to fix it).
pub(crate) fn resolve(id: &str, kind: DeviceKind, patient_id: Option<String>, s: &SerialDeviceConfig) -> Result<SerialDevice, (String, String)> {
    let (driver, ack) = match &s.driver {
        SerialDriver::Hl7 { code_map, ack, patient_from: from } => {
            let mut opts = Hl7Options { patient_from: patient_from(*from), ..Hl7Options::default() };
            if let Some(path) = code_map {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ("code_map".to_string(), format!("cannot read the code map {}: {e}", path.display())))?;
                opts = opts.with_code_map(&text).map_err(|e| ("code_map".to_string(), format!("code map {}: {e}", path.display())))?;
            }
            (Driver::Hl7(opts), *ack)
        }
        SerialDriver::Named(name) => (Driver::by_name(name).map_err(|e| ("driver".to_string(), e.to_string()))?, true),
    };
    let driver_kind = driver.device_kind();
    if driver_kind != kind && driver_kind != DeviceKind::Other {
        let want = match driver_kind {
            DeviceKind::HeartRateStrap => "heart_rate_strap",
            DeviceKind::PulseOximeter => "pulse_oximeter",
            _ => "bedside_monitor",
        };
        return Err(("driver".into(), format!("driver `{}` reads a {}; set kind = \"{want}\" for this device", s.driver.name(), driver_kind.name())));
    }
    let mut settings = match &driver {
        Driver::Profile(p) => p.port.clone(),
        _ => PortSettings::default(),
    };
    if let Some(b) = s.baud {
        settings.baud = b;
    }
    if let Some(d) = s.data_bits {
        settings.data_bits = d;
    }
    if let Some(p) = s.parity {
        settings.parity = p;
    }
    if let Some(d) = s.stop_bits {
        settings.stop_bits = d;
    }
    if let Some(f) = s.flow_control {
        settings.flow_control = f;
    }
    let poll = s.poll.clone().map(|b| (b, s.poll_interval));
    Ok(SerialDevice {
        id: id.to_string(),
        kind,
        patient_id,
        port: s.port.clone(),
        driver,
        settings,
        dtr: s.dtr,
        rts: s.rts,
        quiet_timeout: s.quiet_timeout,
        reopen_max: s.reopen_max,
        init: s.init.clone(),
        poll,
        ack,
    })
}

/// One adapter per `[[device]]` read over a serial port. Fails when a
/// driver, profile or code map cannot be loaded (files on this machine; the
/// config itself is validated).
pub(crate) fn build(devices: &[DeviceConfig]) -> Result<Vec<Box<dyn Adapter>>, AdapterError> {
    let mut out: Vec<Box<dyn Adapter>> = Vec::new();
    for d in devices {
        let DeviceSource::Serial(s) = &d.source else { continue };
        let dev = resolve(&d.id, d.kind.into(), d.patient_id.clone(), s).map_err(|(k, m)| AdapterError::device(&d.id, format!("serial.{k}: {m}")))?;
        out.push(Box::new(SerialAdapter { dev }));
    }
    Ok(out)
}

/// The adapter of one serial device.
pub(crate) struct SerialAdapter {
    pub(crate) dev: SerialDevice,
}

fn builder(dev: &SerialDevice) -> tokio_serial::SerialPortBuilder {
    port_builder(&dev.port, &dev.settings)
}

/// A tokio-serial builder for `port` with line settings `s` (also used by
/// `iomt-edge serial record`).
pub(crate) fn port_builder(port: &std::path::Path, s: &PortSettings) -> tokio_serial::SerialPortBuilder {
    let data_bits = match s.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let stop_bits = if s.stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
    let flow = match s.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        FlowControl::Software => tokio_serial::FlowControl::Software,
    };
    tokio_serial::new(port.to_string_lossy(), s.baud).data_bits(data_bits).parity(parity).stop_bits(stop_bits).flow_control(flow)
}

/// Per-device state across port openings.
struct Run<'a> {
    dev: &'a SerialDevice,
    ctx: &'a AdapterContext,
    link: Link,
    times: DistinctTimes,
    /// Bad input since the port was opened (logged once; reopening ends it).
    bad_input: Episode,
    /// Failed DTR/RTS settings and writes (logged once per device: the
    /// episode never ends).
    control_failed: Episode,
    /// `hl7` driver: the message intake (shared with the TCP listener's code).
    intake: Option<Hl7Intake>,
}

/// What reads a port: a decoder, or (`hl7`) the framer whose messages go to
/// the intake.
enum Reader {
    Decoder(Box<dyn Decoder>),
    Hl7(Hl7Framer),
}

/// What a [`Reader`] produced.
enum Input {
    Records(Decoded),
    Hl7(FramedOut),
}

impl Reader {
    fn push(&mut self, bytes: &[u8], arrival: chrono::DateTime<chrono::Utc>) -> Input {
        match self {
            Reader::Decoder(d) => {
                let mut out = Vec::new();
                d.push(bytes, arrival, &mut out);
                Input::Records(out)
            }
            Reader::Hl7(f) => {
                let mut out = Vec::new();
                f.push(bytes, &mut out);
                Input::Hl7(out)
            }
        }
    }

    fn abort(&mut self, arrival: chrono::DateTime<chrono::Utc>) -> Input {
        match self {
            Reader::Decoder(d) => {
                let mut out = Vec::new();
                d.abort(arrival, &mut out);
                Input::Records(out)
            }
            Reader::Hl7(f) => {
                let mut out = Vec::new();
                f.abort(&mut out);
                Input::Hl7(out)
            }
        }
    }

    fn idle(&mut self, arrival: chrono::DateTime<chrono::Utc>) -> Input {
        match self {
            Reader::Decoder(d) => {
                let mut out = Vec::new();
                d.idle(arrival, &mut out);
                Input::Records(out)
            }
            Reader::Hl7(f) => {
                let mut out = Vec::new();
                f.idle(&mut out);
                Input::Hl7(out)
            }
        }
    }
}

impl Run<'_> {
    async fn steps(&mut self, steps: Vec<Step>) -> Result<(), OutboxClosed> {
        for s in steps {
            match s {
                Step::Event(e) => self.event(e).await?,
                Step::State(st) => {
                    self.ctx.registry.set_state(&self.dev.id, st);
                    if let Some(i) = &self.intake {
                        i.set_beds_state(&self.ctx.registry, st);
                    }
                }
                Step::Warn(m) => tracing::warn!(device = %redact::device(&self.dev.id), "{m}"),
                Step::Info(m) => tracing::info!(device = %redact::device(&self.dev.id), "{m}"),
            }
        }
        Ok(())
    }

    async fn event(&mut self, e: DeviceEvent) -> Result<(), OutboxClosed> {
        self.send(Reading::event(self.dev.id.clone(), self.dev.kind, e)).await
    }

    async fn send(&mut self, mut r: Reading) -> Result<(), OutboxClosed> {
        r.patient_id = self.dev.patient_id.clone();
        // Two lines in one read share an arrival time; MedTech keeps one value
        // per time and type, so the second moves on by a millisecond.
        self.times.assign(&mut r);
        self.ctx.readings.send(r).await
    }

    /// Sends the readings of decoded records, counts and logs bad input.
    async fn decoded(&mut self, out: Decoded) -> Result<(), OutboxClosed> {
        for item in out {
            match item {
                Ok(rec) => {
                    self.ctx.registry.value_decoded(&self.dev.id, 0);
                    for r in rec.readings {
                        self.send(r).await?;
                    }
                }
                Err(e) => {
                    self.ctx.registry.input_error(&self.dev.id);
                    self.bad(&e);
                }
            }
        }
        Ok(())
    }

    /// Hands what a reader produced on: records to the outbox, HL7 messages
    /// to the intake (answering MLLP-framed ones on the port), bad input to
    /// the counts.
    async fn input(&mut self, port: &mut tokio_serial::SerialStream, input: Input) -> Result<(), OutboxClosed> {
        let framed = match input {
            Input::Records(out) => return self.decoded(out).await,
            Input::Hl7(framed) => framed,
        };
        let Some(intake) = &self.intake else { return Ok(()) };
        for item in framed {
            match item {
                Ok(m) => {
                    let answer_it = self.dev.ack && m.mllp;
                    let answer = intake.message(self.ctx, &m.bytes, answer_it.then_some(HL7_ACK_TIMEOUT)).await;
                    if answer_it {
                        let ack = mllp_wrap(answer.ack.as_bytes());
                        let ok = matches!(tokio::time::timeout(WRITE_TIMEOUT, port.write_all(&ack)).await, Ok(Ok(())));
                        if !ok && self.control_failed.occurred() {
                            tracing::warn!(
                                device = %redact::device(&self.dev.id),
                                "serial: could not send an HL7 ACK within {WRITE_TIMEOUT:?}; the monitor will resend its message (logged once)"
                            );
                        }
                    }
                    if answer.stopping {
                        return Err(OutboxClosed);
                    }
                }
                Err(e) => intake.bad(&self.ctx.registry, &e.to_string(), e.kind()),
            }
        }
        Ok(())
    }

    fn bad(&mut self, e: &BadInput) {
        // The error text may quote the line (vital signs): kind only above debug.
        if self.bad_input.occurred() {
            tracing::warn!(
                device = %redact::device(&self.dev.id),
                "serial: ignoring input the {} driver cannot read ({}); further bad input on this port is only counted \
                 (`iomt-edge status`, INPUT ERRORS) until it is reopened",
                driver_name(&self.dev.driver),
                e.kind()
            );
        }
        tracing::debug!(device = %redact::device(&self.dev.id), "serial bad input: {e}");
    }

    async fn write(&mut self, port: &mut tokio_serial::SerialStream, bytes: &[u8], what: &str) {
        let ok = matches!(tokio::time::timeout(WRITE_TIMEOUT, port.write_all(bytes)).await, Ok(Ok(())));
        if !ok && self.control_failed.occurred() {
            tracing::warn!(device = %redact::device(&self.dev.id), "serial: could not send the {what} bytes within {WRITE_TIMEOUT:?} (logged once)");
        }
    }
}

fn driver_name(d: &Driver) -> String {
    match d {
        Driver::Profile(p) => p.name.clone(),
        Driver::Hl7(_) => "hl7".into(),
        Driver::Nonin(f) => f.name().into(),
    }
}

/// How a port session ended.
enum Ended {
    Shutdown,
    Lost(String),
}

#[async_trait]
impl Adapter for SerialAdapter {
    fn describe(&self) -> String {
        format!("serial ({}): {} on {}", driver_name(&self.dev.driver), redact::device(&self.dev.id), self.dev.port.display())
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), AdapterError> {
        let dev = &self.dev;
        ctx.registry.register(&dev.id);
        let mut run = Run {
            dev,
            ctx: &ctx,
            link: Link::new(&dev.port.display().to_string(), dev.quiet_timeout, dev.reopen_max),
            times: DistinctTimes::new(),
            bad_input: Episode::default(),
            control_failed: Episode::default(),
            intake: match &dev.driver {
                Driver::Hl7(o) => Some(Hl7Intake::new(&dev.id, dev.patient_id.clone(), o.clone(), "serial HL7")),
                _ => None,
            },
        };
        while !ctx.shutdown.is_cancelled() {
            let delay = match builder(dev).open_native_async() {
                Ok(port) => {
                    let steps = run.link.opened(Instant::now());
                    if run.steps(steps).await.is_err() {
                        return Ok(());
                    }
                    match session(&mut run, port).await {
                        Ok(Ended::Shutdown) => return Ok(()),
                        Ok(Ended::Lost(why)) => {
                            let (steps, delay) = run.link.lost(&why);
                            if run.steps(steps).await.is_err() {
                                return Ok(());
                            }
                            delay
                        }
                        Err(OutboxClosed) => return Ok(()),
                    }
                }
                Err(e) => {
                    let (steps, delay) = run.link.open_failed(&e.to_string());
                    if run.steps(steps).await.is_err() {
                        return Ok(());
                    }
                    delay
                }
            };
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        Ok(())
    }
}

/// One open port: reads until it fails or the gateway stops.
async fn session(run: &mut Run<'_>, mut port: tokio_serial::SerialStream) -> Result<Ended, OutboxClosed> {
    let dev = run.dev;
    for (what, level) in [("DTR", dev.dtr), ("RTS", dev.rts)] {
        let Some(level) = level else { continue };
        let r = if what == "DTR" { port.write_data_terminal_ready(level) } else { port.write_request_to_send(level) };
        if let Err(e) = r {
            if run.control_failed.occurred() {
                tracing::warn!(device = %redact::device(&dev.id), "serial: cannot set {what} on {} ({e}); reading anyway (logged once)", dev.port.display());
            }
        }
    }
    run.bad_input.end();
    let mut reader = match (&dev.driver, &run.intake) {
        (Driver::Hl7(o), Some(intake)) => {
            intake.end_bad_input();
            Reader::Hl7(Hl7Framer::new(o.max_length))
        }
        _ => Reader::Decoder(dev.driver.decoder(&dev.id)),
    };
    if let Some(init) = &dev.init {
        run.write(&mut port, init, "init").await;
    }
    let mut poll = dev.poll.as_ref().map(|(bytes, every)| {
        let mut i = tokio::time::interval(*every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (bytes.clone(), i)
    });
    let mut buf = vec![0u8; 4096];
    // When the line went idle after bytes (for Decoder::idle), if it has not been called since.
    let mut idle_at: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let quiet_at = run.link.deadline().map(tokio::time::Instant::from_std).unwrap_or(far);
        tokio::select! {
            biased;
            _ = run.ctx.shutdown.cancelled() => {
                // A record cut by the stop is dropped unread and uncounted: it
                // is no reading, and the monitor did nothing wrong.
                return Ok(Ended::Shutdown);
            }
            r = port.read(&mut buf) => {
                let why = match r {
                    Ok(0) => "end of file".to_string(),
                    Ok(n) => {
                        let arrival = crate::model::time::now_ms();
                        let steps = run.link.data(Instant::now());
                        run.steps(steps).await?;
                        let input = reader.push(&buf[..n], arrival);
                        run.input(&mut port, input).await?;
                        idle_at = Some(tokio::time::Instant::now() + IDLE_GAP);
                        continue;
                    }
                    Err(e) => e.to_string(),
                };
                let input = reader.abort(crate::model::time::now_ms());
                run.input(&mut port, input).await?;
                return Ok(Ended::Lost(why));
            }
            _ = tokio::time::sleep_until(idle_at.unwrap_or(far)), if idle_at.is_some() => {
                idle_at = None;
                let input = reader.idle(crate::model::time::now_ms());
                run.input(&mut port, input).await?;
            }
            _ = tokio::time::sleep_until(quiet_at) => {
                let steps = run.link.quiet(Instant::now());
                run.steps(steps).await?;
                if let Some(init) = &dev.init {
                    run.write(&mut port, init, "init").await;
                }
            }
            _ = async { match poll.as_mut() { Some((_, i)) => { i.tick().await; } None => std::future::pending().await } } => {
                if let Some((bytes, _)) = &poll {
                    let bytes = bytes.clone();
                    run.write(&mut port, &bytes, "poll").await;
                }
            }
        }
    }
}
