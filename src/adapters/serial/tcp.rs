//! The HL7 TCP listener: monitors and central stations push HL7 v2 ORU^R01
//! over TCP in MLLP blocks (HL7 v2 Transport Specification, MLLP Release 2:
//! `0x0B` message `0x1C 0x0D`); every message is answered with an HL7 ACK.
//!
//! The rule that makes this safe: `MSA|AA` is sent **only after every
//! reading of the message is committed to the outbox** (flushed to stable
//! storage: the committer reports it through
//! [`crate::adapters::DeviceRegistry::observe`], see
//! [`crate::adapters::DeviceRegistry::expect_commits`]). A message that cannot
//! be used gets `AR` (not ORU^R01, no MSH) or `AE` (cannot be processed, or
//! another patient than the device charts) with the reason in MSA-3; one
//! whose readings are not committed within `ack_timeout` gets `AE` too. The sender's own retry (resend until AA) then covers everything the
//! gateway did not store; a message stored but whose ACK was lost is resent
//! and stored twice, never lost. Bytes outside MLLP blocks and cut-off blocks
//! are counted as bad input and not answered (there is no control id to
//! answer), which the sender's timeout turns into a resend.
//!
//! Parsing is the pure [`super::hl7`] driver and the step from a message to
//! stored readings and an ACK (patient rules included) is [`super::intake`],
//! shared with the serial adapter; this file is only the sockets.

use super::framing::{mllp_wrap, MllpFramer};
use super::hl7::Hl7Options;
use super::intake::Hl7Intake;
use crate::adapters::{Adapter, AdapterContext, AdapterError, LinkState};
use crate::config::serial::Hl7TcpConfig;
use crate::config::{DeviceConfig, DeviceSource};
use crate::model::{DeviceEvent, DeviceKind, DistinctTimes, Reading};
use crate::redact;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One configured listener.
#[derive(Debug, Clone)]
pub(crate) struct Hl7Listener {
    pub(crate) id: String,
    pub(crate) patient_id: Option<String>,
    pub(crate) listen: SocketAddr,
    pub(crate) opts: Hl7Options,
    pub(crate) ack_timeout: Duration,
}

/// Resolves a `[device.hl7_tcp]` table: (key under the table, message) on error.
pub(crate) fn resolve(id: &str, patient_id: Option<String>, h: &Hl7TcpConfig) -> Result<Hl7Listener, (String, String)> {
    let listen: SocketAddr = h.listen.trim().parse().map_err(|_| ("listen".to_string(), format!("`{}` is not an address and port", h.listen)))?;
    let mut opts = Hl7Options { patient_from: super::adapter::patient_from(h.patient_from), ..Hl7Options::default() };
    if let Some(path) = &h.code_map {
        let text =
            std::fs::read_to_string(path).map_err(|e| ("code_map".to_string(), format!("cannot read the code map {}: {e}", path.display())))?;
        opts = opts.with_code_map(&text).map_err(|e| ("code_map".to_string(), format!("code map {}: {e}", path.display())))?;
    }
    Ok(Hl7Listener { id: id.to_string(), patient_id, listen, opts, ack_timeout: h.ack_timeout })
}

/// One adapter per `[[device]]` with an `hl7_tcp` table.
pub(crate) fn build(devices: &[DeviceConfig]) -> Result<Vec<Box<dyn Adapter>>, AdapterError> {
    let mut out: Vec<Box<dyn Adapter>> = Vec::new();
    for d in devices {
        let DeviceSource::Hl7Tcp(h) = &d.source else { continue };
        let l = resolve(&d.id, d.patient_id.clone(), h).map_err(|(k, m)| AdapterError::device(&d.id, format!("hl7_tcp.{k}: {m}")))?;
        out.push(Box::new(Hl7TcpAdapter { listener: l }));
    }
    Ok(out)
}

/// The adapter of one HL7 TCP listener.
pub(crate) struct Hl7TcpAdapter {
    pub(crate) listener: Hl7Listener,
}

/// What the connections of one listener share.
struct Shared {
    l: Hl7Listener,
    ctx: AdapterContext,
    /// Device events' times (the readings' are the intake's).
    times: Mutex<DistinctTimes>,
    connections: AtomicUsize,
    /// Messages in, readings out, ACKs built (bad input is logged once per
    /// listener: its episode never ends).
    intake: Hl7Intake,
}

#[async_trait]
impl Adapter for Hl7TcpAdapter {
    fn describe(&self) -> String {
        format!("HL7 over TCP (MLLP): {} listening on {}", redact::device(&self.listener.id), self.listener.listen)
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), AdapterError> {
        let l = self.listener;
        let socket = tokio::net::TcpListener::bind(l.listen).await.map_err(|error| AdapterError::Listen { addr: l.listen, error })?;
        ctx.registry.register(&l.id);
        let intake = Hl7Intake::new(&l.id, l.patient_id.clone(), l.opts.clone(), "HL7 listener");
        let shared = Arc::new(Shared { l, ctx: ctx.clone(), times: Mutex::new(DistinctTimes::new()), connections: AtomicUsize::new(0), intake });
        loop {
            let (stream, peer) = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                a = socket.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("HL7 listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let s = shared.clone();
            tokio::spawn(async move { connection(s, stream, peer).await });
        }
        Ok(())
    }
}

async fn event(s: &Shared, e: DeviceEvent) {
    let mut r = Reading::event(s.l.id.clone(), DeviceKind::BedsideMonitor, e);
    r.patient_id = s.l.patient_id.clone();
    lock(&s.times).assign(&mut r);
    let _ = s.ctx.readings.send(r).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn connection(s: Arc<Shared>, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    if s.connections.fetch_add(1, Ordering::SeqCst) == 0 {
        s.ctx.registry.set_state(&s.l.id, LinkState::Streaming);
        s.intake.set_beds_state(&s.ctx.registry, LinkState::Streaming);
        event(&s, DeviceEvent::Connected).await;
    }
    tracing::info!(device = %redact::device(&s.l.id), "HL7 sender connected from {}", redact::address(&peer.ip().to_string()));
    let mut framer = MllpFramer::new(s.l.opts.max_length);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::select! {
            _ = s.ctx.shutdown.cancelled() => break,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let mut frames = Vec::new();
        framer.push(&buf[..n], &mut frames);
        for f in frames {
            match f {
                Ok(msg) => {
                    let answer = s.intake.message(&s.ctx, &msg, Some(s.l.ack_timeout)).await;
                    if stream.write_all(&mllp_wrap(answer.ack.as_bytes())).await.is_err() {
                        break;
                    }
                }
                Err(e) => s.intake.bad(&s.ctx.registry, &e.to_string(), e.kind()),
            }
        }
    }
    tracing::info!(device = %redact::device(&s.l.id), "HL7 sender {} disconnected", redact::address(&peer.ip().to_string()));
    if s.connections.fetch_sub(1, Ordering::SeqCst) == 1 && !s.ctx.shutdown.is_cancelled() {
        s.ctx.registry.set_state(&s.l.id, LinkState::Lost);
        s.intake.set_beds_state(&s.ctx.registry, LinkState::Lost);
        event(&s, DeviceEvent::Disconnected).await;
    }
}
