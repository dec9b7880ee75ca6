//! A simulated BlueZ (`bluetoothd`) on D-Bus, written with zbus: it owns
//! `org.bluez` on a (private) bus and exports adapter `hci0` with simulated
//! heart-rate straps and pulse oximeters, object for object as BlueZ does, so
//! the gateway's real btleplug path (and Python `bleak`) can run against it.
//!
//! - [`objects`]: the D-Bus interfaces and the connect/disconnect choreography.
//! - [`state`]: the shared state and GATT layouts.
//! - [`values`]: the deterministic measurement bytes.
//! - [`daemon`]: a private `dbus-daemon` with a permissive system-bus policy.
//!
//! Scripted behaviours ([`BluezSim`] methods): normal streaming at the
//! configured interval, [`link_loss`](BluezSim::link_loss),
//! [`mute`](BluezSim::mute) (notifications stop, link stays up),
//! [`inject`](BluezSim::inject) (malformed bytes), [`set_finger_out`](BluezSim::set_finger_out),
//! [`set_battery`](BluezSim::set_battery) and [`restart`](BluezSim::restart)
//! (bluetoothd restart: `org.bluez` vanishes, then comes back knowing nothing).
//!
//! By hand: `iomt-edge simulate bluez` prints the bus address; export it as
//! `DBUS_SYSTEM_BUS_ADDRESS` for the gateway, `bleak` or `busctl --address`.

pub mod daemon;
mod error;
pub(crate) mod objects;
pub(crate) mod state;
pub(crate) mod values;

pub use daemon::PrivateBus;
pub(crate) use error::BluezSimError;
pub(crate) use state::SimKind;
pub use state::{Sent, SimDeviceSpec};

use state::{Shared, SimState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: Vec<SimDeviceSpec>,
    /// Time between measurement notifications (1 s like real straps; tests use less).
    pub interval: Duration,
}

impl Default for SimConfig {
    /// One strap (`C0:FF:EE:00:00:01`, serial SN0001) and one oximeter
    /// (`C0:FF:EE:00:00:02`, SN0002) at 1 Hz.
    fn default() -> Self {
        SimConfig {
            devices: vec![SimDeviceSpec::strap("C0:FF:EE:00:00:01", "SN0001"), SimDeviceSpec::oximeter("C0:FF:EE:00:00:02", "SN0002")],
            interval: Duration::from_secs(1),
        }
    }
}

/// A running simulated bluetoothd on some bus.
pub struct BluezSim {
    st: Shared,
    bus_address: String,
    interval: Duration,
    conn: Option<zbus::Connection>,
    ticker: Option<JoinHandle<()>>,
    stop_ticker: tokio_util::sync::CancellationToken,
}

fn lock(st: &Shared) -> std::sync::MutexGuard<'_, SimState> {
    st.lock().unwrap_or_else(|p| p.into_inner())
}

impl BluezSim {
    /// Connects to the bus at `bus_address`, claims `org.bluez`, exports `/`
    /// (ObjectManager) and `/org/bluez/hci0`, and starts streaming.
    pub async fn start(bus_address: &str, config: SimConfig) -> Result<BluezSim, BluezSimError> {
        let st: Shared = Arc::new(Mutex::new(SimState::new(config.devices)));
        let mut sim = BluezSim {
            st,
            bus_address: bus_address.to_string(),
            interval: config.interval,
            conn: None,
            ticker: None,
            stop_ticker: Default::default(),
        };
        sim.bring_up().await?;
        Ok(sim)
    }

    async fn bring_up(&mut self) -> Result<(), BluezSimError> {
        let mut last_err = None;
        // After a restart the daemon may not have released the old name yet.
        for _ in 0..50 {
            let built = async {
                zbus::connection::Builder::address(self.bus_address.as_str())?
                    .serve_at("/", zbus::fdo::ObjectManager)?
                    .serve_at(objects::ADAPTER_PATH, objects::AdapterIface { st: self.st.clone() })?
                    .name("org.bluez")?
                    .build()
                    .await
            }
            .await;
            match built {
                Ok(c) => {
                    self.stop_ticker = tokio_util::sync::CancellationToken::new();
                    let ticker = tokio::spawn(run_ticker(self.st.clone(), c.clone(), self.interval, self.stop_ticker.clone()));
                    self.conn = Some(c);
                    self.ticker = Some(ticker);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(BluezSimError::Claim { bus: self.bus_address.clone(), last: last_err.map(Box::new) })
    }

    async fn take_down(&mut self) {
        if let Some(mut t) = self.ticker.take() {
            // Let the current round finish, so the sent log matches the bus.
            self.stop_ticker.cancel();
            if tokio::time::timeout(Duration::from_secs(2), &mut t).await.is_err() {
                t.abort();
            }
        }
        if let Some(c) = self.conn.take() {
            let _ = c.release_name("org.bluez").await;
            let _ = c.close().await;
        }
        lock(&self.st).reset_links();
    }

    /// Simulates a bluetoothd restart: `org.bluez` disappears from the bus for
    /// `down_for`, then a fresh instance comes back with no devices exported
    /// and no links (like BlueZ after a restart, before discovery).
    pub async fn restart(&mut self, down_for: Duration) -> Result<(), BluezSimError> {
        self.take_down().await;
        tokio::time::sleep(down_for).await;
        self.bring_up().await
    }

    /// Stops the simulator (`org.bluez` leaves the bus).
    pub async fn stop(mut self) {
        self.take_down().await;
    }

    fn index(&self, address: &str) -> Result<usize, BluezSimError> {
        lock(&self.st).device_by_address(address).ok_or_else(|| BluezSimError::NoDevice(address.to_string()))
    }

    fn server(&self) -> Result<&zbus::ObjectServer, BluezSimError> {
        Ok(self.conn.as_ref().ok_or(BluezSimError::Down)?.object_server())
    }

    /// Link loss: the device drops the connection and stays out of range for
    /// `outage` (connect attempts fail with `le-connection-abort-by-local`).
    pub async fn link_loss(&self, address: &str, outage: Duration) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        if let Some(d) = lock(&self.st).devices.get_mut(idx) {
            d.unreachable_until = Some(Instant::now() + outage);
        }
        objects::drop_link(&self.st, self.server()?, idx).await?;
        Ok(())
    }

    /// The device keeps the link but stops notifying (a hung strap) until it
    /// is disconnected and connected again.
    pub fn mute(&self, address: &str) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        if let Some(d) = lock(&self.st).devices.get_mut(idx) {
            d.muted = true;
        }
        Ok(())
    }

    /// Sends these raw bytes on `uuid16` at the next tick (e.g. a malformed
    /// notification), if the device is connected and subscribed.
    pub fn inject(&self, address: &str, uuid16: u16, bytes: Vec<u8>) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        lock(&self.st).inject.push((idx, uuid16, bytes));
        Ok(())
    }

    /// Finger out (true) or back in (false) on an oximeter.
    pub fn set_finger_out(&self, address: &str, out: bool) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        if let Some(d) = lock(&self.st).devices.get_mut(idx) {
            d.finger_out = out;
        }
        Ok(())
    }

    /// Changes the battery level; notified at the next tick if subscribed.
    pub fn set_battery(&self, address: &str, percent: u8) -> Result<(), BluezSimError> {
        self.inject(address, 0x2A19, vec![percent])
    }

    /// The measurement service is missing for the next `links` connections
    /// (ServicesResolved comes, the service never appears).
    pub fn hide_measurement_service(&self, address: &str, links: u32) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        if let Some(d) = lock(&self.st).devices.get_mut(idx) {
            d.hide_service_links = links;
        }
        Ok(())
    }

    /// On the next connection the measurement service appears `by` after
    /// ServicesResolved.
    pub fn delay_measurement_service(&self, address: &str, by: Duration) -> Result<(), BluezSimError> {
        let idx = self.index(address)?;
        if let Some(d) = lock(&self.st).devices.get_mut(idx) {
            d.late_service = Some(by);
        }
        Ok(())
    }

    /// How many links this device has had (successful `Connect` calls).
    pub fn links(&self, address: &str) -> u32 {
        self.index(address).ok().and_then(|i| lock(&self.st).devices.get(i).map(|d| d.links)).unwrap_or(0)
    }

    /// Every notification emitted so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.st).sent.clone()
    }

    /// Whether the device is connected (per the simulator).
    pub fn is_connected(&self, address: &str) -> bool {
        let s = lock(&self.st);
        s.device_by_address(address).and_then(|i| s.devices.get(i)).map(|d| d.connected).unwrap_or(false)
    }

    /// How many times a client removed a device object (`Adapter1.RemoveDevice`).
    pub fn removed_devices(&self) -> u32 {
        lock(&self.st).removed
    }
}

impl Drop for BluezSim {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

/// The streaming loop: every `interval`, each connected, unmuted device sends
/// its next measurement on the characteristics that are notifying; queued
/// injections go out first; while discovering, RSSI moves a little.
async fn run_ticker(st: Shared, conn: zbus::Connection, interval: Duration, stop: tokio_util::sync::CancellationToken) {
    let server = conn.object_server();
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = timer.tick() => {}
        }
        round += 1;
        let (events, rssi, discovering) = {
            let mut s = lock(&st);
            let mut events: Vec<(usize, u16, Vec<u8>)> = std::mem::take(&mut s.inject);
            for (i, d) in s.devices.iter_mut().enumerate() {
                if !d.connected || d.muted {
                    continue;
                }
                let t = d.tick;
                let mut sent_any = false;
                match d.spec.kind {
                    SimKind::HeartRateStrap => {
                        if d.notifying(0x2A37) {
                            events.push((i, 0x2A37, values::heart_rate(t)));
                            sent_any = true;
                        }
                    }
                    SimKind::PulseOximeter => {
                        if d.notifying(0x2A5F) {
                            events.push((i, 0x2A5F, values::plx_continuous(t, d.finger_out)));
                            sent_any = true;
                        }
                        if t % 5 == 4 && d.notifying(0x2A5E) {
                            events.push((i, 0x2A5E, values::plx_spot_check(t, d.finger_out)));
                            sent_any = true;
                        }
                    }
                }
                if sent_any {
                    d.tick += 1;
                }
            }
            let discovering = s.adapter.discovering;
            let mut rssi = Vec::new();
            if discovering && round % 5 == 0 {
                for d in s.devices.iter_mut().filter(|d| d.exported) {
                    d.rssi = -55 - (round % 7) as i16;
                    rssi.push(d.path.clone());
                }
            }
            (events, rssi, discovering)
        };
        if discovering {
            // Devices whose outage ended become visible again.
            let _ = objects::export_visible_devices(&st, server).await;
        }
        for path in rssi {
            let _ = objects::emit_device(server, &path, &["RSSI"]).await;
        }
        for (idx, uuid16, bytes) in events {
            let at = Instant::now();
            let sent = objects::notify(&st, server, idx, uuid16, bytes.clone()).await.unwrap_or(false);
            if sent {
                let mut s = lock(&st);
                let address = s.devices.get(idx).map(|d| d.spec.address.clone()).unwrap_or_default();
                s.sent.push(Sent { address, uuid16, bytes, at });
            }
        }
    }
}

/// A private `dbus-daemon` with the simulator on it. Dropping it stops both.
pub struct SimHandle {
    /// The simulator (scripted behaviours, sent log).
    pub sim: BluezSim,
    bus: PrivateBus,
}

impl SimHandle {
    /// The bus address, e.g. `unix:path=/tmp/iomt-bluez-…/bus,guid=…`; export it
    /// as `DBUS_SYSTEM_BUS_ADDRESS` for BlueZ clients.
    pub fn address(&self) -> &str {
        self.bus.address()
    }
}

/// Starts a private `dbus-daemon` (needs `dbus-daemon` on PATH) and the
/// simulator on it. Call from inside a tokio runtime; the simulator's tasks
/// run on it.
pub async fn spawn_private(config: SimConfig) -> Result<SimHandle, BluezSimError> {
    let bus = PrivateBus::start()?;
    let sim = BluezSim::start(bus.address(), config).await?;
    Ok(SimHandle { sim, bus })
}

/// The 128-bit UUID of a 16-bit Bluetooth SIG number, as BlueZ writes it
/// (`0000xxxx-0000-1000-8000-00805f9b34fb`: the Bluetooth Base UUID, Core
/// Specification Vol 3 Part B §2.5.1). The emulator's own, not the adapter's.
pub(crate) fn sig_uuid_string(short: u16) -> String {
    format!("0000{short:04x}-0000-1000-8000-00805f9b34fb")
}

#[cfg(test)]
mod uuid_tests {
    #[test]
    fn a_sig_number_becomes_the_base_uuid_form_bluez_shows() {
        assert_eq!(super::sig_uuid_string(0x180D), "0000180d-0000-1000-8000-00805f9b34fb");
        assert_eq!(super::sig_uuid_string(0x2A37), "00002a37-0000-1000-8000-00805f9b34fb");
    }
}
