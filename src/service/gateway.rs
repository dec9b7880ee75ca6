//! The handles on a running gateway that status views read (the demo's live
//! view, the status file, `STATUS=` for systemd). Its own module so that
//! `status` can read a gateway without depending on `run`, which starts it
//! (`run` -> `control` -> `status` -> `run` was a cycle).

use super::associations::Associations;
use crate::adapters::{DeviceRegistry, LinkState};
use crate::config::Config;
use crate::forwarder::{FlushHandle, ForwarderStats};
use crate::outbox::Outbox;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Shared handles on a running gateway, for status views (demo, twin, STATUS=).
#[derive(Clone)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub outbox: Arc<Outbox>,
    pub registry: Arc<DeviceRegistry>,
    pub associations: Arc<Associations>,
    pub forwarder: Arc<ForwarderStats>,
    pub flush: FlushHandle,
    pub sink_name: &'static str,
}

impl Gateway {
    /// One line for `systemctl status` and logs (no patient data).
    pub fn status_line(&self) -> String {
        let devices = self.registry.snapshot();
        let streaming = devices.iter().filter(|d| d.state == LinkState::Streaming).count();
        let delivered = self.forwarder.delivered_readings.load(Ordering::Relaxed);
        let mut line = format!(
            "{}/{} devices streaming, outbox {} readings, {} delivered to {}",
            streaming,
            devices.len(),
            self.outbox.len(),
            delivered,
            self.sink_name
        );
        if self.forwarder.failing.load(Ordering::Relaxed) {
            line.push_str(", delivery failing (retrying)");
        }
        line
    }
}
