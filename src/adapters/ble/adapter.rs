//! The BLE adapter: btleplug (BlueZ over D-Bus) I/O and per-device supervision.
//!
//! One [`BleAdapter`] manages every configured BLE device on one controller:
//!
//! - a *session* owns a btleplug `Manager` + `Adapter`, scans filtered by the
//!   configured kinds' service UUIDs, and runs one task per device; when
//!   bluetoothd goes away (health check or D-Bus "service unknown" errors) the
//!   session ends and a new `Manager` is built, instead of the adapter dying;
//! - a device task walks `scanning -> connecting -> streaming -> lost`: find the
//!   peripheral (address / name glob / any device with the service), connect,
//!   discover services (retried when the measurement service is missing), read
//!   Device Information and battery, open the notification stream *before*
//!   subscribing, then turn notifications into readings. A silence timer ends a
//!   session whose device stops notifying although BlueZ says connected. After a
//!   loss it reconnects with capped exponential backoff, and removes the stale
//!   BlueZ device object after repeated connect failures.
//! - At most [`MAX_CONNECTED`] devices hold a connection at once.
//!
//! Link changes become `deviceEvent` readings (connected / disconnected /
//! silent) and battery changes `batteryLevel` readings, so gaps are explained.
//! Bytes are decoded by the pure [`super::gatt`] module.

use super::error::BleError;
use super::gatt::{self, Characteristic, Decoded, Decoding};
use crate::adapters::device_clock::{GatewayZone, TimeContext};
use crate::adapters::{Adapter, AdapterContext, AdapterError, LinkState};
use crate::backoff::Backoff;
use crate::config::ble::BleDeviceConfig;
use crate::config::{DeviceConfig, DeviceSource};
use crate::logging::Episode;
use crate::model::{DeviceEvent, DeviceKind, DistinctTimes, Reading};
use crate::redact;
use async_trait::async_trait;
use btleplug::api::{Central, CharPropFlags, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter as BtAdapter, Manager, Peripheral};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Connections one controller holds reliably (a Pi 3B+ refuses around the 9th-10th).
pub(crate) const MAX_CONNECTED: usize = 7;

/// First reconnect delay; doubles up to the device's `reconnect_max`.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Cap of the delay between attempts to rebuild the btleplug manager.
const REBUILD_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const LINK_POLL: Duration = Duration::from_millis(500);
const HEALTH_POLL: Duration = Duration::from_millis(500);
const FIND_POLL: Duration = Duration::from_millis(250);
/// Connect failures in a row before the BlueZ device object is removed.
const REMOVE_STALE_AFTER: u32 = 2;

static MANAGER_CREATED: AtomicBool = AtomicBool::new(false);

/// Points btleplug (libdbus) at another system bus, e.g. the simulator's.
///
/// libdbus reads `DBUS_SYSTEM_BUS_ADDRESS` once per process, at the first
/// system-bus connection, so this must run before the first BLE adapter starts;
/// later calls with a different address fail instead of being silently ignored.
pub fn set_system_bus_address(address: &str) -> Result<(), BleError> {
    let current = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok();
    if current.as_deref() == Some(address) {
        return Ok(());
    }
    if MANAGER_CREATED.load(Ordering::SeqCst) {
        return Err(BleError::BusAddressFixed);
    }
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", address);
    Ok(())
}

/// How a configured device is recognised: the config's selector (exact
/// upper-case address, glob on the advertised name, or any device
/// advertising the kind's service).
pub use crate::config::ble::BleSelector as Selector;

/// One configured BLE device.
#[derive(Debug, Clone)]
pub struct BleDevice {
    /// The configured id (alias).
    pub alias: String,
    pub kind: DeviceKind,
    pub patient_id: Option<String>,
    /// Which device in range it is ([`BleDeviceConfig::selector`]) and its timers.
    pub config: BleDeviceConfig,
}

/// The measurement service of a device kind.
pub(crate) fn service_of(kind: DeviceKind) -> Option<Uuid> {
    match kind {
        DeviceKind::HeartRateStrap => Some(gatt::sig_uuid(0x180D)),
        DeviceKind::PulseOximeter => Some(gatt::sig_uuid(0x1822)),
        _ => None,
    }
}

/// The characteristics to subscribe to for a kind (at least one must exist).
fn measurement_chars(kind: DeviceKind) -> &'static [Characteristic] {
    match kind {
        DeviceKind::HeartRateStrap => &[Characteristic::HeartRateMeasurement],
        DeviceKind::PulseOximeter => &[Characteristic::PlxContinuous, Characteristic::PlxSpotCheck],
        _ => &[],
    }
}

/// Glob match (`*` any run, `?` one character), case-sensitive.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).map(|rest| rest.iter().all(|c| *c == '*')).unwrap_or(true)
}

/// The device id: the configured alias, unless `id_from_device` asks for
/// manufacturer+serial from Device Information (else the address).
pub(crate) fn stable_device_id(alias: &str, id_from_device: bool, manufacturer: Option<&str>, serial: Option<&str>, address: &str) -> String {
    if !id_from_device && !alias.trim().is_empty() {
        return alias.to_string();
    }
    match (manufacturer.map(str::trim).filter(|s| !s.is_empty()), serial.map(str::trim).filter(|s| !s.is_empty())) {
        (Some(m), Some(s)) => format!("{m}-{s}").replace(char::is_whitespace, "_"),
        (None, Some(s)) => s.to_string(),
        _ => address.to_string(),
    }
}

/// Builds the BLE adapter for the `[[device]]` entries read over BLE (one
/// adapter manages them all). `Ok(None)` when there are none. The config is
/// validated: a BLE device's kind has a measurement service, its selector is
/// one of three and its timers are in range.
pub(crate) fn build(devices: &[DeviceConfig]) -> Option<Box<dyn Adapter>> {
    let out: Vec<BleDevice> = devices
        .iter()
        .filter_map(|d| match &d.source {
            DeviceSource::Ble(b) => Some(BleDevice { alias: d.id.clone(), kind: d.kind.into(), patient_id: d.patient_id.clone(), config: b.clone() }),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        return None;
    }
    Some(Box::new(BleAdapter::new(out)))
}

/// The adapter for all configured BLE devices.
pub struct BleAdapter {
    devices: Vec<BleDevice>,
    system_bus: Option<String>,
}

impl BleAdapter {
    pub fn new(devices: Vec<BleDevice>) -> BleAdapter {
        BleAdapter { devices, system_bus: None }
    }

    /// Uses this D-Bus address as the system bus (see [`set_system_bus_address`]).
    pub fn with_system_bus(mut self, address: impl Into<String>) -> BleAdapter {
        self.system_bus = Some(address.into());
        self
    }
}

/// Per-device state that survives sessions (manager rebuilds).
struct DeviceRun {
    dev: BleDevice,
    /// The id readings carry; settled after the first Device Information read.
    device_id: String,
    backoff: Backoff,
    connect_failures: u32,
    /// Last battery level sent, to drop BlueZ's duplicate battery notifications.
    last_battery: Option<u8>,
    /// Malformed notifications (all counted in the registry; logged once per
    /// device: the episode never ends).
    bad_values: Episode,
    /// Values with bytes the decoder could not use (counted; logged once per
    /// device).
    extra_bytes: Episode,
    /// Open from a logged silence until the device sends data: a device that
    /// connects and stays silent is logged once, not at every reconnect.
    silent: Episode,
    /// Device clock minus gateway UTC (s), measured on the latest live
    /// timestamped value; converts the device's stored measurements to UTC.
    clock_offset: Option<i64>,
    /// A streaming session is open (a `connected` event was sent).
    streaming: bool,
    /// Recent reading times, so no two readings of one type share a millisecond.
    times: DistinctTimes,
}

/// One life of the btleplug manager and its Bluetooth controller (until
/// bluetoothd goes away), shared by the device tasks.
struct ControllerSession {
    adapter: BtAdapter,
    /// The BlueZ object path of the controller (`/org/bluez/hci0`).
    adapter_path: String,
    /// Addresses claimed by a device task, so two entries never take one device.
    claimed: Mutex<HashSet<String>>,
    connections: Arc<Semaphore>,
    /// A device task saw bluetoothd vanish: rebuild the manager.
    broken: Notify,
    cancel: CancellationToken,
}

#[async_trait]
impl Adapter for BleAdapter {
    fn describe(&self) -> String {
        format!("BLE (btleplug/BlueZ): {} device(s)", self.devices.len())
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), AdapterError> {
        if let Some(addr) = &self.system_bus {
            set_system_bus_address(addr)?;
        }
        if self.devices.len() > MAX_CONNECTED {
            tracing::warn!(
                "{} BLE devices configured; one controller holds about {MAX_CONNECTED} links, the others wait for a free slot",
                self.devices.len()
            );
        }
        let mut runs: Vec<DeviceRun> = self
            .devices
            .iter()
            .cloned()
            .map(|dev| {
                let device_id = match (&dev.config.selector, dev.config.id_from_device) {
                    (Selector::Address(a), true) => a.clone(),
                    _ => dev.alias.clone(),
                };
                ctx.registry.register(&device_id);
                let backoff = Backoff::new(BACKOFF_START, dev.config.reconnect_max.max(BACKOFF_START));
                DeviceRun {
                    dev,
                    device_id,
                    backoff,
                    connect_failures: 0,
                    last_battery: None,
                    bad_values: Episode::default(),
                    extra_bytes: Episode::default(),
                    silent: Episode::default(),
                    clock_offset: None,
                    streaming: false,
                    times: DistinctTimes::new(),
                }
            })
            .collect();
        let services: Vec<Uuid> = {
            let mut s: Vec<Uuid> = self.devices.iter().filter_map(|d| service_of(d.kind)).collect();
            s.sort();
            s.dedup();
            s
        };
        let connections = Arc::new(Semaphore::new(MAX_CONNECTED));
        let mut rebuild_backoff = Backoff::new(BACKOFF_START, REBUILD_MAX);
        // Open from a failure to use bluetoothd until it answers again.
        let mut bluetoothd_down = Episode::default();
        while !ctx.shutdown.is_cancelled() {
            let session = match open_session(&services, connections.clone(), ctx.shutdown.child_token()).await {
                Ok(s) => {
                    if bluetoothd_down.end().is_some() {
                        tracing::info!("BLE: bluetoothd is back; rescanning");
                    }
                    rebuild_backoff.reset();
                    Arc::new(s)
                }
                Err(e) => {
                    if bluetoothd_down.occurred() {
                        tracing::warn!("BLE: cannot use bluetoothd ({e:#}); retrying");
                    }
                    for r in &runs {
                        ctx.registry.set_state(&r.device_id, LinkState::Lost);
                    }
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(rebuild_backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            let mut tasks = Vec::new();
            for run in runs.drain(..) {
                tasks.push(tokio::spawn(device_loop(run, session.clone(), ctx.clone())));
            }
            // Health: bluetoothd must keep answering; a device task may also flag it.
            loop {
                tokio::select! {
                    _ = session.cancel.cancelled() => break,
                    _ = session.broken.notified() => break,
                    _ = tokio::time::sleep(HEALTH_POLL) => {
                        let ok = tokio::time::timeout(CALL_TIMEOUT, session.adapter.adapter_info()).await;
                        if !matches!(ok, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            session.cancel.cancel();
            for t in tasks {
                match t.await {
                    Ok(r) => runs.push(r),
                    Err(e) => return Err(BleError::DeviceTask(e).into()),
                }
            }
            if !ctx.shutdown.is_cancelled() {
                tracing::warn!("BLE: lost bluetoothd; rebuilding the btleplug manager");
                bluetoothd_down.occurred();
            }
        }
        Ok(())
    }
}

async fn open_session(services: &[Uuid], connections: Arc<Semaphore>, cancel: CancellationToken) -> Result<ControllerSession, BleError> {
    MANAGER_CREATED.store(true, Ordering::SeqCst);
    let manager = tokio::time::timeout(CALL_TIMEOUT, Manager::new()).await.map_err(timed_out("D-Bus connect"))??;
    let adapter = tokio::time::timeout(CALL_TIMEOUT, manager.adapters())
        .await
        .map_err(timed_out("listing adapters"))??
        .into_iter()
        .next()
        .ok_or(BleError::NoAdapter)?;
    let info = tokio::time::timeout(CALL_TIMEOUT, adapter.adapter_info()).await.map_err(timed_out("adapter info"))??;
    let name = info.split_whitespace().next().unwrap_or("hci0").to_string();
    tokio::time::timeout(CALL_TIMEOUT, adapter.start_scan(ScanFilter { services: services.to_vec() })).await.map_err(timed_out("start_scan"))??;
    Ok(ControllerSession {
        adapter,
        adapter_path: format!("/org/bluez/{name}"),
        claimed: Mutex::new(HashSet::new()),
        connections,
        broken: Notify::new(),
        cancel,
    })
}

/// The error of a bluetoothd call (`what`) that got no answer in time.
fn timed_out(what: &'static str) -> impl Fn(tokio::time::error::Elapsed) -> BleError {
    move |elapsed| BleError::Timeout { what, elapsed }
}

/// Whether a btleplug error means bluetoothd itself is gone.
fn bluez_gone(e: &btleplug::Error) -> bool {
    let s = e.to_string();
    ["ServiceUnknown", "NameHasNoOwner", "UnknownObject", "NoReply", "Disconnected", "was not provided by any .service"].iter().any(|k| s.contains(k))
}

/// Why a connection attempt or streaming session ended.
enum Ended {
    Shutdown,
    OutboxClosed,
    /// Never streamed (not found, connect or discovery failed).
    Failed(String),
    /// Was streaming; the link dropped or the device went silent.
    Lost,
}

async fn device_loop(mut run: DeviceRun, session: Arc<ControllerSession>, ctx: AdapterContext) -> DeviceRun {
    loop {
        if session.cancel.is_cancelled() {
            return run;
        }
        ctx.registry.set_state(&run.device_id, LinkState::Scanning);
        let ended = attempt(&mut run, &session, &ctx).await;
        match ended {
            Ended::Shutdown | Ended::OutboxClosed => {
                if matches!(ended, Ended::OutboxClosed) {
                    ctx.shutdown.cancel();
                }
                return run;
            }
            Ended::Lost => {
                run.backoff.reset();
                run.connect_failures = 0;
            }
            Ended::Failed(why) => {
                tracing::debug!(device = %redact::device(&run.device_id), "BLE attempt failed: {why}");
            }
        }
        ctx.registry.set_state(&run.device_id, LinkState::Lost);
        tokio::select! {
            _ = session.cancel.cancelled() => return run,
            _ = tokio::time::sleep(run.backoff.next_delay()) => {}
        }
    }
}

fn matches(dev: &BleDevice, props: &btleplug::api::PeripheralProperties) -> bool {
    let service = service_of(dev.kind);
    let offers = service.map(|s| props.services.contains(&s)).unwrap_or(false);
    match &dev.config.selector {
        Selector::Address(a) => props.address.to_string().eq_ignore_ascii_case(a),
        Selector::NamePattern(p) => props.local_name.as_deref().map(|n| glob_match(p, n)).unwrap_or(false),
        Selector::AnyDevice => offers,
    }
}

/// Finds an unclaimed peripheral for this device; claims its address.
async fn find(run: &DeviceRun, session: &ControllerSession) -> Result<Option<(Peripheral, String)>, btleplug::Error> {
    let peripherals = match tokio::time::timeout(CALL_TIMEOUT, session.adapter.peripherals()).await {
        Ok(r) => r?,
        Err(_) => return Ok(None),
    };
    for p in peripherals {
        let Ok(Ok(Some(props))) = tokio::time::timeout(CALL_TIMEOUT, p.properties()).await else { continue };
        if !matches(&run.dev, &props) {
            continue;
        }
        let addr = props.address.to_string();
        let mut claimed = session.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.insert(addr.clone()) {
            return Ok(Some((p, addr)));
        }
    }
    Ok(None)
}

struct Claim<'a> {
    session: &'a ControllerSession,
    addr: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.session.claimed.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.addr);
    }
}

async fn send(ctx: &AdapterContext, run: &mut DeviceRun, mut r: Reading) -> Result<(), Ended> {
    r.patient_id = run.dev.patient_id.clone();
    // Two values of one type in one millisecond (a spot-check next to a
    // continuous notification): MedTech would keep only one, so move it on.
    if run.times.assign(&mut r) > 0 {
        tracing::debug!(device = %redact::device(&run.device_id), kind = r.kind.name(), "moved a reading 1 ms so its time is unique");
    }
    ctx.readings.send(r).await.map_err(|_| Ended::OutboxClosed)
}

async fn event(ctx: &AdapterContext, run: &mut DeviceRun, e: DeviceEvent) -> Result<(), Ended> {
    send(ctx, run, Reading::event(run.device_id.clone(), run.dev.kind, e)).await
}

/// One find -> connect -> stream cycle.
async fn attempt(run: &mut DeviceRun, session: &ControllerSession, ctx: &AdapterContext) -> Ended {
    // Scanning: wait until the device shows up.
    let (peripheral, addr) = loop {
        match find(run, session).await {
            Ok(Some(found)) => break found,
            Ok(None) => {}
            Err(e) => {
                if bluez_gone(&e) {
                    session.broken.notify_one();
                }
                return Ended::Failed(format!("listing devices: {e}"));
            }
        }
        tokio::select! {
            _ = session.cancel.cancelled() => return Ended::Shutdown,
            _ = tokio::time::sleep(FIND_POLL) => {}
        }
    };
    let _claim = Claim { session, addr: addr.clone() };
    let _permit = tokio::select! {
        _ = session.cancel.cancelled() => return Ended::Shutdown,
        p = session.connections.clone().acquire_owned() => match p {
            Ok(p) => p,
            Err(_) => return Ended::Shutdown,
        },
    };
    ctx.registry.set_state(&run.device_id, LinkState::Connecting);
    let res = tokio::select! {
        _ = session.cancel.cancelled() => None,
        r = connect_and_stream(run, session, ctx, &peripheral, &addr) => Some(r),
    };
    match res {
        Some(r) => r,
        None => {
            // Session ended (bluetoothd gone, or the gateway is stopping).
            let _ = tokio::time::timeout(Duration::from_secs(2), peripheral.disconnect()).await;
            if run.streaming && !ctx.shutdown.is_cancelled() {
                if let Ended::OutboxClosed = lost(run, ctx, DeviceEvent::Disconnected).await {
                    return Ended::OutboxClosed;
                }
            }
            run.streaming = false;
            Ended::Shutdown
        }
    }
}

async fn connect_and_stream(run: &mut DeviceRun, session: &ControllerSession, ctx: &AdapterContext, p: &Peripheral, addr: &str) -> Ended {
    let shown = redact::address(addr);
    // Connect.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, p.connect()).await;
    match connected {
        Ok(Ok(())) => {}
        other => {
            run.connect_failures += 1;
            let why = match other {
                Ok(Err(e)) => {
                    if bluez_gone(&e) {
                        session.broken.notify_one();
                    }
                    e.to_string()
                }
                _ => "timed out".to_string(),
            };
            if run.connect_failures >= REMOVE_STALE_AFTER {
                // Stale BlueZ object (btleplug cannot remove it): drop it so the
                // next discovery creates a fresh one.
                remove_device(&session.adapter_path, addr).await;
                run.connect_failures = 0;
            }
            return Ended::Failed(format!("connect to {shown}: {why}"));
        }
    }
    run.connect_failures = 0;

    // Discover services; BlueZ may report ServicesResolved before it exports them.
    let wanted = measurement_chars(run.dev.kind);
    let mut chars = std::collections::BTreeSet::new();
    for i in 0..3 {
        if let Ok(Ok(())) = tokio::time::timeout(CALL_TIMEOUT, p.discover_services()).await {
            chars = p.characteristics();
            if chars.iter().any(|c| wanted.iter().any(|w| c.uuid == w.uuid())) {
                break;
            }
        }
        if i < 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if !chars.iter().any(|c| wanted.iter().any(|w| c.uuid == w.uuid())) {
        let _ = tokio::time::timeout(CALL_TIMEOUT, p.disconnect()).await;
        return Ended::Failed(format!("{shown}: measurement service missing after 3 discoveries"));
    }
    let find_char = |c: Characteristic| chars.iter().find(|x| x.uuid == c.uuid()).cloned();

    // Device Information and battery.
    let mut dis: [Option<String>; 4] = Default::default();
    for (i, c) in [Characteristic::ManufacturerName, Characteristic::SerialNumber, Characteristic::ModelNumber, Characteristic::FirmwareRevision]
        .into_iter()
        .enumerate()
    {
        if let Some(ch) = find_char(c) {
            if let Ok(Ok(bytes)) = tokio::time::timeout(CALL_TIMEOUT, p.read(&ch)).await {
                if let Ok(Decoded::DeviceInformation { text, .. }) = gatt::decode(c, &bytes) {
                    if let Some(slot) = dis.get_mut(i) {
                        *slot = Some(text);
                    }
                }
            }
        }
    }
    let [manufacturer, serial, model, firmware] = dis;
    let new_id = stable_device_id(&run.dev.alias, run.dev.config.id_from_device, manufacturer.as_deref(), serial.as_deref(), addr);
    if new_id != run.device_id {
        run.device_id = new_id;
        ctx.registry.register(&run.device_id);
    }
    tracing::info!(
        device = %redact::device(&run.device_id),
        "BLE connected: {} {} (firmware {})",
        manufacturer.as_deref().unwrap_or("?"),
        model.as_deref().unwrap_or("?"),
        firmware.as_deref().unwrap_or("?")
    );
    if let Err(e) = event(ctx, run, DeviceEvent::Connected).await {
        return e;
    }
    run.streaming = true;
    let battery_char = find_char(Characteristic::BatteryLevel);
    if let Some(ch) = &battery_char {
        if let Ok(Ok(bytes)) = tokio::time::timeout(CALL_TIMEOUT, p.read(ch)).await {
            if let Err(e) = handle_value(run, ctx, Characteristic::BatteryLevel, &bytes, addr).await {
                return e;
            }
        }
    }

    // Notifications: open the stream before subscribing, so nothing is missed.
    let mut stream = match tokio::time::timeout(CALL_TIMEOUT, p.notifications()).await {
        Ok(Ok(s)) => s,
        _ => {
            let _ = tokio::time::timeout(CALL_TIMEOUT, p.disconnect()).await;
            return lost(run, ctx, DeviceEvent::Disconnected).await;
        }
    };
    let mut subscribed = 0;
    for c in wanted.iter().copied().chain(std::iter::once(Characteristic::BatteryLevel)) {
        let Some(ch) = find_char(c) else { continue };
        if !ch.properties.intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE) {
            continue;
        }
        match tokio::time::timeout(CALL_TIMEOUT, p.subscribe(&ch)).await {
            Ok(Ok(())) => {
                if c != Characteristic::BatteryLevel {
                    subscribed += 1;
                }
            }
            _ => tracing::debug!(device = %redact::device(&run.device_id), "subscribe to {c} failed"),
        }
    }
    if subscribed == 0 {
        let _ = tokio::time::timeout(CALL_TIMEOUT, p.disconnect()).await;
        return lost(run, ctx, DeviceEvent::Disconnected).await;
    }
    ctx.registry.set_state(&run.device_id, LinkState::Streaming);

    // Streaming.
    // At most 10 min, as the config allows: `last_data + silence` cannot overflow.
    let silence = run.dev.config.silence_timeout.min(Duration::from_secs(600));
    let mut last_data = Instant::now();
    let mut link_check = tokio::time::interval(LINK_POLL);
    link_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = tokio::time::Instant::from_std(last_data + silence);
        tokio::select! {
            biased;
            n = stream.next() => match n {
                Some(n) => {
                    let Some(c) = Characteristic::from_uuid(&n.uuid) else { continue };
                    last_data = Instant::now();
                    if run.silent.end().is_some() {
                        tracing::info!(device = %redact::device(&run.device_id), "BLE device sends data again");
                    }
                    if let Err(e) = handle_value(run, ctx, c, &n.value, addr).await {
                        return e;
                    }
                }
                None => return lost(run, ctx, DeviceEvent::Disconnected).await,
            },
            _ = tokio::time::sleep_until(deadline) => {
                if run.silent.occurred() {
                    tracing::warn!(
                        device = %redact::device(&run.device_id),
                        "BLE device silent for {silence:?}; reconnecting (logged once until it sends data again)"
                    );
                } else {
                    tracing::debug!(device = %redact::device(&run.device_id), "BLE device silent for {silence:?} again; reconnecting");
                }
                if let Err(e) = drain(run, ctx, &mut stream, addr).await {
                    return e;
                }
                let _ = tokio::time::timeout(CALL_TIMEOUT, p.disconnect()).await;
                return lost(run, ctx, DeviceEvent::Silent).await;
            }
            _ = link_check.tick() => {
                match tokio::time::timeout(CALL_TIMEOUT, p.is_connected()).await {
                    Ok(Ok(true)) => {}
                    Ok(Err(e)) if bluez_gone(&e) => {
                        session.broken.notify_one();
                        if let Err(e) = drain(run, ctx, &mut stream, addr).await {
                            return e;
                        }
                        return lost(run, ctx, DeviceEvent::Disconnected).await;
                    }
                    Ok(Ok(false)) => {
                        tracing::info!(device = %redact::device(&run.device_id), "BLE link lost");
                        if let Err(e) = drain(run, ctx, &mut stream, addr).await {
                            return e;
                        }
                        return lost(run, ctx, DeviceEvent::Disconnected).await;
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn lost(run: &mut DeviceRun, ctx: &AdapterContext, e: DeviceEvent) -> Ended {
    run.streaming = false;
    ctx.registry.set_state(&run.device_id, LinkState::Lost);
    match event(ctx, run, e).await {
        Ok(()) => Ended::Lost,
        Err(e) => e,
    }
}

/// Processes notifications already delivered before a session ends, so a
/// value that arrived just before the link dropped is not lost.
async fn drain(
    run: &mut DeviceRun,
    ctx: &AdapterContext,
    stream: &mut (impl futures::Stream<Item = btleplug::api::ValueNotification> + Unpin),
    addr: &str,
) -> Result<(), Ended> {
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
        if let Some(c) = Characteristic::from_uuid(&n.uuid) {
            handle_value(run, ctx, c, &n.value, addr).await?;
        }
    }
    Ok(())
}

/// Decodes one value and sends its readings; malformed input is counted and
/// logged once per device, never fatal. Bytes a value carries beyond its
/// complete fields (a stray byte after the last RR interval) cost nothing but
/// themselves: the complete fields are kept, the bytes counted and logged once
/// per device. A live timestamped value updates the device-clock offset that
/// times the device's stored measurements.
async fn handle_value(run: &mut DeviceRun, ctx: &AdapterContext, c: Characteristic, bytes: &[u8], addr: &str) -> Result<(), Ended> {
    let arrival = crate::model::time::now_ms();
    match gatt::decode_value(c, bytes) {
        Ok(Decoding { decoded: d, extra_bytes }) => {
            ctx.registry.value_decoded(&run.device_id, extra_bytes.map(|e| e.count).unwrap_or(0));
            if let Some(extra) = extra_bytes {
                if run.extra_bytes.occurred() {
                    tracing::warn!(
                        device = %redact::device(&run.device_id),
                        "BLE: {c}: {} byte(s) after the last complete field{} ignored; the complete fields were kept; \
                         further ones are only counted (`iomt-edge status`, EXTRA BYTES)",
                        extra.count,
                        extra.cut_field.map(|f| format!(" (a cut-off `{f}`)")).unwrap_or_default()
                    );
                } else {
                    tracing::debug!(device = %redact::device(&run.device_id), "{c}: {} extra byte(s)", extra.count);
                }
            }
            if let Decoded::BatteryLevel { percent } = d {
                if run.last_battery == Some(percent) {
                    return Ok(());
                }
                run.last_battery = Some(percent);
            }
            if let Some(offset) = d.clock_offset(arrival) {
                if run.clock_offset != Some(offset) {
                    tracing::debug!(device = %redact::device(&run.device_id), "device clock offset now {offset} s");
                }
                run.clock_offset = Some(offset);
            }
            let time = TimeContext { arrival, measured_offset: run.clock_offset, zone: GatewayZone::Local };
            for r in d.to_readings(&run.device_id, run.dev.kind, &time) {
                send(ctx, run, r).await?;
            }
            Ok(())
        }
        Err(e) => {
            ctx.registry.input_error(&run.device_id);
            if run.bad_values.occurred() {
                tracing::warn!(
                    device = %redact::device(&run.device_id),
                    address = %redact::address(addr),
                    "BLE: ignoring a malformed value ({e}; bytes {}); further ones are only counted",
                    hex::encode_upper(bytes)
                );
            } else {
                tracing::debug!(device = %redact::device(&run.device_id), "malformed value: {e}");
            }
            Ok(())
        }
    }
}

/// `Adapter1.RemoveDevice` for a stale device object (btleplug has no call for it).
async fn remove_device(adapter_path: &str, addr: &str) {
    let adapter_path = adapter_path.to_string();
    let dev_path = format!("{adapter_path}/dev_{}", addr.to_ascii_uppercase().replace(':', "_"));
    let res = tokio::task::spawn_blocking(move || -> Result<(), dbus::Error> {
        let conn = dbus::blocking::Connection::new_system()?;
        let proxy = conn.with_proxy("org.bluez", adapter_path.as_str(), CALL_TIMEOUT);
        let path = dbus::Path::new(dev_path).map_err(|e| dbus::Error::new_failed(&e))?;
        proxy.method_call::<(), _, _, _>("org.bluez.Adapter1", "RemoveDevice", (path,))
    })
    .await;
    match res {
        Ok(Ok(())) => tracing::debug!(address = %redact::address(addr), "removed stale BlueZ device object"),
        Ok(Err(e)) => tracing::debug!(address = %redact::address(addr), "RemoveDevice: {e}"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("Polar H10 *", "Polar H10 1234ABCD"));
        assert!(glob_match("HRM-???", "HRM-SIM"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("HRM-??", "HRM-SIM"));
        assert!(!glob_match("Polar*", "Wahoo"));
    }

    #[test]
    fn device_ids() {
        assert_eq!(stable_device_id("strap-1", false, Some("Acme"), Some("SN1"), "AA"), "strap-1");
        assert_eq!(stable_device_id("strap-1", true, Some("Acme Medical"), Some("SN1"), "AA"), "Acme_Medical-SN1");
        assert_eq!(stable_device_id("strap-1", true, None, None, "C0:FF:EE:00:00:01"), "C0:FF:EE:00:00:01");
        assert_eq!(stable_device_id("", false, None, Some("SN9"), "AA"), "SN9");
    }
}
