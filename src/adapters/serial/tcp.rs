//! The HL7 TCP listener: monitors and central stations push HL7 v2 ORU^R01
//! over TCP in MLLP blocks (HL7 v2 Transport Specification, MLLP Release 2:
//! `0x0B` message `0x1C 0x0D`); every message is answered with an HL7 ACK.
//!
//! The rule that makes this safe: `MSA|AA` is sent **only after every
//! reading of the message is committed to the outbox** (flushed to stable
//! storage: the committer reports it through [`DeviceRegistry::observe`], see
//! [`DeviceRegistry::expect_commits`]). A message that cannot be used gets
//! `AR` (not ORU^R01, no MSH) or `AE` (cannot be processed) with the reason in
//! MSA-3; one whose readings are not committed within `ack_timeout` gets `AE`
//! too. The sender's own retry (resend until AA) then covers everything the
//! gateway did not store; a message stored but whose ACK was lost is resent
//! and stored twice, never lost. Bytes outside MLLP blocks and cut-off blocks
//! are counted as bad input and not answered (there is no control id to
//! answer), which the sender's timeout turns into a resend.
//!
//! Parsing is the pure [`super::hl7`] driver; this file is only the sockets.

use super::framing::{mllp_wrap, MllpFramer};
use super::hl7::{self, AckCode, Hl7Options};
use crate::adapters::{Adapter, AdapterContext, DeviceRegistry};
use crate::config::serial::Hl7TcpConfig;
use crate::config::DeviceConfig;
use crate::logging::SharedEpisode;
use crate::model::{DeviceEvent, DeviceKind, DistinctTimes, Reading};
use crate::redact;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One configured listener.
#[derive(Debug, Clone)]
pub struct Hl7Listener {
    pub id: String,
    pub patient_id: Option<String>,
    pub listen: SocketAddr,
    pub opts: Hl7Options,
    pub ack_timeout: Duration,
}

/// Resolves a `[device.hl7_tcp]` table: (key under the table, message) on error.
pub fn resolve(id: &str, patient_id: Option<String>, h: &Hl7TcpConfig) -> Result<Hl7Listener, (String, String)> {
    let listen: SocketAddr = h.listen.trim().parse().map_err(|_| ("listen".to_string(), format!("`{}` is not an address and port", h.listen)))?;
    let mut opts = Hl7Options::default();
    if let Some(path) = &h.code_map {
        let text =
            std::fs::read_to_string(path).map_err(|e| ("code_map".to_string(), format!("cannot read the code map {}: {e}", path.display())))?;
        opts = opts.with_code_map(&text).map_err(|e| ("code_map".to_string(), format!("code map {}: {e}", path.display())))?;
    }
    Ok(Hl7Listener { id: id.to_string(), patient_id, listen, opts, ack_timeout: h.ack_timeout })
}

/// One adapter per `[[device]]` with an `hl7_tcp` table.
pub fn build(devices: &[DeviceConfig]) -> anyhow::Result<Vec<Box<dyn Adapter>>> {
    let mut out: Vec<Box<dyn Adapter>> = Vec::new();
    for d in devices {
        let Some(h) = &d.hl7_tcp else { continue };
        let l = resolve(&d.id, d.patient_id.clone(), h).map_err(|(k, m)| anyhow::anyhow!("device \"{}\": hl7_tcp.{k}: {m}", d.id))?;
        out.push(Box::new(Hl7TcpAdapter { listener: l }));
    }
    Ok(out)
}

/// The adapter of one HL7 TCP listener.
pub struct Hl7TcpAdapter {
    pub listener: Hl7Listener,
}

/// What the connections of one listener share.
struct Shared {
    l: Hl7Listener,
    ctx: AdapterContext,
    times: Mutex<DistinctTimes>,
    connections: AtomicUsize,
    acks: AtomicU64,
    /// Bad input (logged once per listener: the episode never ends).
    bad_input: SharedEpisode,
}

#[async_trait]
impl Adapter for Hl7TcpAdapter {
    fn describe(&self) -> String {
        format!("HL7 over TCP (MLLP): {} listening on {}", redact::device(&self.listener.id), self.listener.listen)
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) -> anyhow::Result<()> {
        let l = self.listener;
        let socket = tokio::net::TcpListener::bind(l.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", l.listen))?;
        ctx.registry.register(&l.id);
        let shared = Arc::new(Shared {
            l,
            ctx: ctx.clone(),
            times: Mutex::new(DistinctTimes::new()),
            connections: AtomicUsize::new(0),
            acks: AtomicU64::new(0),
            bad_input: SharedEpisode::default(),
        });
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
        s.ctx.registry.set_state(&s.l.id, crate::adapters::LinkState::Streaming);
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
                    let ack = handle(&s, &msg).await;
                    if stream.write_all(&mllp_wrap(ack.as_bytes())).await.is_err() {
                        break;
                    }
                }
                Err(e) => bad(&s, &e.to_string(), e.kind()),
            }
        }
    }
    tracing::info!(device = %redact::device(&s.l.id), "HL7 sender {} disconnected", redact::address(&peer.ip().to_string()));
    if s.connections.fetch_sub(1, Ordering::SeqCst) == 1 && !s.ctx.shutdown.is_cancelled() {
        s.ctx.registry.set_state(&s.l.id, crate::adapters::LinkState::Lost);
        event(&s, DeviceEvent::Disconnected).await;
    }
}

fn bad(s: &Shared, detail: &str, kind: &str) {
    s.ctx.registry.input_error(&s.l.id);
    if s.bad_input.occurred() {
        tracing::warn!(
            device = %redact::device(&s.l.id),
            "HL7 listener: refused input ({kind}); further bad input is only counted (`iomt-edge status`, INPUT ERRORS)"
        );
    }
    tracing::debug!(device = %redact::device(&s.l.id), "HL7 bad input: {detail}");
}

/// Decodes one message, stores its readings, and returns the ACK to send.
async fn handle(s: &Shared, msg: &[u8]) -> String {
    let now = crate::model::time::now_ms();
    let ack_id = format!("ACK{}", s.acks.fetch_add(1, Ordering::SeqCst) + 1);
    let header = match hl7::header(msg) {
        Ok(h) => h,
        Err(e) => {
            bad(s, &e.reason, "hl7");
            return hl7::build_ack(None, e.code, Some(&e.reason), now, &ack_id);
        }
    };
    let record = match hl7::decode_message(msg, &s.l.opts, &s.l.id, now) {
        Ok(r) => r,
        Err(e) => {
            bad(s, &e.reason, "hl7");
            return hl7::build_ack(Some(&header), e.code, Some(&e.reason), now, &ack_id);
        }
    };
    s.ctx.registry.value_decoded(&s.l.id, 0);
    let mut readings = record.readings;
    {
        let mut times = lock(&s.times);
        for r in &mut readings {
            r.patient_id = s.l.patient_id.clone();
            times.assign(r);
        }
    }
    let (code, reason) = match store(&s.ctx.registry, &s.ctx, readings, s.l.ack_timeout).await {
        Ok(()) => (AckCode::AA, None),
        Err(why) => {
            tracing::warn!(device = %redact::device(&s.l.id), "HL7 listener: answering AE: {why}");
            (AckCode::AE, Some(why))
        }
    };
    hl7::build_ack(Some(&header), code, reason.as_deref(), crate::model::time::now_ms(), &ack_id)
}

/// Hands readings to the outbox and waits until all are committed.
async fn store(registry: &DeviceRegistry, ctx: &AdapterContext, readings: Vec<Reading>, timeout: Duration) -> Result<(), String> {
    let wait = registry.expect_commits(&readings);
    for r in readings {
        if ctx.readings.send(r).await.is_err() {
            return Err("the gateway is stopping; resend later".into());
        }
    }
    if wait.wait(timeout).await {
        Ok(())
    } else {
        Err(format!("the readings were not stored within {timeout:?}; resend the message"))
    }
}
