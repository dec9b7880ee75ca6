//! The BlueZ D-Bus objects the simulator exports (`org.bluez.Adapter1`,
//! `Device1`, `GattService1`, `GattCharacteristic1`, `GattDescriptor1`) and the
//! link choreography (connect, disconnect, link loss) that adds and removes them.
//!
//! Every interface reads its properties from the shared [`SimState`], so the
//! scripted behaviours in `mod.rs` change state in one place and then emit the
//! matching `PropertiesChanged` signal.

use super::state::{Layout, ServiceLayout, Shared, SimState};
use std::collections::HashMap;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// The simulated controller's object path.
pub(crate) const ADAPTER_PATH: &str = "/org/bluez/hci0";

/// Errors with BlueZ's names (`org.bluez.Error.Failed` ...).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bluez.Error")]
pub(crate) enum BluezError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Failed(String),
    NotConnected(String),
    InProgress(String),
    NotPermitted(String),
    NotSupported(String),
    DoesNotExist(String),
    InvalidArguments(String),
}

fn lock(st: &Shared) -> std::sync::MutexGuard<'_, SimState> {
    st.lock().unwrap_or_else(|p| p.into_inner())
}

fn opath(s: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(s.to_string()).unwrap_or_else(|_| OwnedObjectPath::from(zbus::zvariant::ObjectPath::from_static_str_unchecked("/")))
}

// ---------------------------------------------------------------- Adapter1

/// `org.bluez.Adapter1` at `/org/bluez/hci0`.
pub(crate) struct AdapterIface {
    pub(crate) st: Shared,
}

#[zbus::interface(name = "org.bluez.Adapter1")]
impl AdapterIface {
    async fn set_discovery_filter(&self, filter: HashMap<String, OwnedValue>) -> Result<(), BluezError> {
        let mut uuids = Vec::new();
        if let Some(v) = filter.get("UUIDs") {
            let list: Vec<String> = v.try_clone().ok().and_then(|v| Vec::<String>::try_from(v).ok()).unwrap_or_default();
            uuids = list.into_iter().map(|s| s.to_ascii_lowercase()).collect();
        }
        lock(&self.st).adapter.filter_uuids = uuids;
        Ok(())
    }

    async fn start_discovery(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] em: SignalEmitter<'_>,
    ) -> Result<(), BluezError> {
        lock(&self.st).adapter.discovering = true;
        self.discovering_changed(&em).await?;
        export_visible_devices(&self.st, server).await?;
        Ok(())
    }

    async fn stop_discovery(&self, #[zbus(signal_emitter)] em: SignalEmitter<'_>) -> Result<(), BluezError> {
        lock(&self.st).adapter.discovering = false;
        self.discovering_changed(&em).await?;
        Ok(())
    }

    async fn remove_device(&self, device: OwnedObjectPath, #[zbus(object_server)] server: &ObjectServer) -> Result<(), BluezError> {
        let idx = lock(&self.st).device_by_path(device.as_str());
        let Some(idx) = idx else {
            return Err(BluezError::DoesNotExist("Does Not Exist".into()));
        };
        drop_link(&self.st, server, idx).await?;
        let path = lock(&self.st).devices.get(idx).map(|d| d.path.clone()).unwrap_or_default();
        server.remove::<DeviceIface, _>(path.as_str()).await?;
        let mut s = lock(&self.st);
        s.removed += 1;
        if let Some(d) = s.devices.get_mut(idx) {
            d.exported = false;
        }
        Ok(())
    }

    async fn get_discovery_filters(&self) -> Vec<String> {
        ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"].iter().map(|s| s.to_string()).collect()
    }

    #[zbus(property)]
    fn address(&self) -> String {
        "00:11:22:33:44:55".into()
    }
    #[zbus(property)]
    fn address_type(&self) -> String {
        "public".into()
    }
    #[zbus(property)]
    fn name(&self) -> String {
        "iomt-sim".into()
    }
    #[zbus(property)]
    fn alias(&self) -> String {
        "iomt-sim".into()
    }
    #[zbus(property)]
    fn class(&self) -> u32 {
        0
    }
    #[zbus(property)]
    fn powered(&self) -> bool {
        lock(&self.st).adapter.powered
    }
    #[zbus(property)]
    fn set_powered(&self, v: bool) {
        lock(&self.st).adapter.powered = v;
    }
    #[zbus(property)]
    fn discoverable(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn pairable(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn discovering(&self) -> bool {
        lock(&self.st).adapter.discovering
    }
    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        Vec::new()
    }
    #[zbus(property)]
    fn modalias(&self) -> String {
        "usb:v1D6Bp0246d0540".into()
    }
    #[zbus(property)]
    fn roles(&self) -> Vec<String> {
        vec!["central".into(), "peripheral".into()]
    }
}

/// Exports the `Device1` object of every reachable device the discovery
/// filter admits (InterfacesAdded is emitted by the object server).
pub(crate) async fn export_visible_devices(st: &Shared, server: &ObjectServer) -> zbus::Result<()> {
    let todo: Vec<(usize, String)> = {
        let s = lock(st);
        let filter = s.adapter.filter_uuids.clone();
        s.devices
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.exported && d.reachable())
            .filter(|(_, d)| filter.is_empty() || d.uuids().iter().any(|u| filter.contains(u)))
            .map(|(i, d)| (i, d.path.clone()))
            .collect()
    };
    for (idx, path) in todo {
        server.at(path.as_str(), DeviceIface { st: st.clone(), idx }).await?;
        if let Some(d) = lock(st).devices.get_mut(idx) {
            d.exported = true;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- Device1

/// `org.bluez.Device1` at `/org/bluez/hci0/dev_XX_...`.
pub(crate) struct DeviceIface {
    pub(crate) st: Shared,
    pub(crate) idx: usize,
}

impl DeviceIface {
    fn get<T>(&self, f: impl FnOnce(&super::state::DevState) -> T) -> T
    where
        T: Default,
    {
        lock(&self.st).devices.get(self.idx).map(f).unwrap_or_default()
    }
}

#[zbus::interface(name = "org.bluez.Device1")]
impl DeviceIface {
    async fn connect(&self, #[zbus(object_server)] server: &ObjectServer) -> Result<(), BluezError> {
        let (reachable, connected) = self.get(|d| (d.reachable(), d.connected));
        if !reachable {
            // What BlueZ answers when the peer does not respond to the LE connect.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return Err(BluezError::Failed("le-connection-abort-by-local".into()));
        }
        if connected {
            return Ok(());
        }
        establish_link(&self.st, server, self.idx).await?;
        Ok(())
    }

    async fn disconnect(&self, #[zbus(object_server)] server: &ObjectServer) -> Result<(), BluezError> {
        drop_link(&self.st, server, self.idx).await?;
        Ok(())
    }

    async fn pair(&self) -> Result<(), BluezError> {
        Err(BluezError::NotSupported("Operation is not supported".into()))
    }

    #[zbus(property)]
    fn address(&self) -> String {
        self.get(|d| d.spec.address.clone())
    }
    #[zbus(property)]
    fn address_type(&self) -> String {
        "random".into()
    }
    #[zbus(property)]
    fn name(&self) -> String {
        self.get(|d| d.spec.name.clone())
    }
    #[zbus(property)]
    fn alias(&self) -> String {
        self.get(|d| d.spec.name.clone())
    }
    #[zbus(property)]
    fn appearance(&self) -> u16 {
        self.get(|d| d.spec.kind.appearance())
    }
    #[zbus(property)]
    fn paired(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn bonded(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn trusted(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn blocked(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn legacy_pairing(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn wake_allowed(&self) -> bool {
        false
    }
    #[zbus(property, name = "RSSI")]
    fn rssi(&self) -> i16 {
        self.get(|d| d.rssi)
    }
    #[zbus(property)]
    fn connected(&self) -> bool {
        self.get(|d| d.connected)
    }
    #[zbus(property)]
    fn services_resolved(&self) -> bool {
        self.get(|d| d.services_resolved)
    }
    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        self.get(|d| d.uuids())
    }
    #[zbus(property)]
    fn adapter(&self) -> OwnedObjectPath {
        opath(ADAPTER_PATH)
    }
}

/// Emits `PropertiesChanged` for the named `Device1` properties.
pub(crate) async fn emit_device(server: &ObjectServer, path: &str, names: &[&str]) -> zbus::Result<()> {
    let iref = server.interface::<_, DeviceIface>(path).await?;
    let iface = iref.get().await;
    let em = iref.signal_emitter();
    for n in names {
        match *n {
            "Connected" => iface.connected_changed(em).await?,
            "ServicesResolved" => iface.services_resolved_changed(em).await?,
            "RSSI" => iface.r_s_s_i_changed(em).await?,
            _ => {}
        }
    }
    Ok(())
}

/// Connect choreography: `Connected=true`, GATT objects exported (each an
/// InterfacesAdded), then `ServicesResolved=true`. A scripted missing or late
/// measurement service (the first service of the layout) is honoured here.
pub(crate) async fn establish_link(st: &Shared, server: &ObjectServer, idx: usize) -> zbus::Result<()> {
    let (path, layout, hide, late) = {
        let mut s = lock(st);
        let Some(d) = s.devices.get_mut(idx) else { return Ok(()) };
        d.connected = true;
        d.muted = false;
        d.links += 1;
        for c in d.chars.iter_mut() {
            c.notifying = false;
        }
        let hide = d.hide_service_links > 0;
        d.hide_service_links = d.hide_service_links.saturating_sub(1);
        let late = if hide { None } else { d.late_service.take() };
        (d.path.clone(), d.layout(), hide, late)
    };
    emit_device(server, &path, &["Connected"]).await?;
    for (i, svc) in layout.services.iter().enumerate() {
        if i == 0 && (hide || late.is_some()) {
            continue;
        }
        export_service(st, server, &path, &layout, svc, idx).await?;
    }
    {
        let mut s = lock(st);
        if let Some(d) = s.devices.get_mut(idx) {
            d.services_resolved = true;
        }
    }
    emit_device(server, &path, &["ServicesResolved"]).await?;
    if let (Some(delay), Some(svc)) = (late, layout.services.first().cloned()) {
        let (st, server) = (st.clone(), server.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let still_up = lock(&st).devices.get(idx).is_some_and(|d| d.connected);
            if still_up {
                let _ = export_service(&st, &server, &path, &layout, &svc, idx).await;
            }
        });
    }
    Ok(())
}

/// Exports one GATT service with its characteristics and descriptors.
async fn export_service(st: &Shared, server: &ObjectServer, path: &str, layout: &Layout, svc: &ServiceLayout, idx: usize) -> zbus::Result<()> {
    let spath = format!("{path}/service{:04x}", svc.handle);
    server.at(spath.as_str(), ServiceIface { uuid16: svc.uuid16, handle: svc.handle, device: path.to_string() }).await?;
    for ci in svc.chars.iter().copied() {
        let Some(c) = layout.chars.get(ci) else { continue };
        let cpath = format!("{spath}/char{:04x}", c.handle);
        server.at(cpath.as_str(), CharIface { st: st.clone(), idx, ci, service: spath.clone() }).await?;
        if let Some(dh) = c.cccd {
            let dpath = format!("{cpath}/desc{:04x}", dh);
            server.at(dpath.as_str(), DescIface { handle: dh, characteristic: cpath.clone() }).await?;
        }
    }
    Ok(())
}

/// Disconnect / link-loss choreography: `Connected` and `ServicesResolved`
/// false, GATT objects removed (InterfacesRemoved), notifications stop.
pub(crate) async fn drop_link(st: &Shared, server: &ObjectServer, idx: usize) -> zbus::Result<()> {
    let (path, layout, was) = {
        let mut s = lock(st);
        let Some(d) = s.devices.get_mut(idx) else { return Ok(()) };
        let was = d.connected;
        d.connected = false;
        d.services_resolved = false;
        d.muted = false;
        for c in d.chars.iter_mut() {
            c.notifying = false;
        }
        (d.path.clone(), d.layout(), d.exported && was)
    };
    if !was {
        return Ok(());
    }
    emit_device(server, &path, &["ServicesResolved", "Connected"]).await?;
    for svc in &layout.services {
        let spath = format!("{path}/service{:04x}", svc.handle);
        for ci in svc.chars.iter().copied() {
            let Some(c) = layout.chars.get(ci) else { continue };
            let cpath = format!("{spath}/char{:04x}", c.handle);
            if let Some(dh) = c.cccd {
                gone(server.remove::<DescIface, _>(format!("{cpath}/desc{:04x}", dh).as_str()).await)?;
            }
            gone(server.remove::<CharIface, _>(cpath.as_str()).await)?;
        }
        gone(server.remove::<ServiceIface, _>(spath.as_str()).await)?;
    }
    Ok(())
}

/// A removal of an object that was never exported (a hidden or late service)
/// is not an error.
fn gone(r: zbus::Result<bool>) -> zbus::Result<()> {
    match r {
        Ok(_) | Err(zbus::Error::InterfaceNotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- GATT

/// `org.bluez.GattService1`.
pub(crate) struct ServiceIface {
    pub(crate) uuid16: u16,
    pub(crate) handle: u16,
    pub(crate) device: String,
}

#[zbus::interface(name = "org.bluez.GattService1")]
impl ServiceIface {
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        super::sig_uuid_string(self.uuid16)
    }
    #[zbus(property)]
    fn primary(&self) -> bool {
        true
    }
    #[zbus(property)]
    fn device(&self) -> OwnedObjectPath {
        opath(&self.device)
    }
    #[zbus(property)]
    fn includes(&self) -> Vec<OwnedObjectPath> {
        Vec::new()
    }
    #[zbus(property)]
    fn handle(&self) -> u16 {
        self.handle
    }
}

/// `org.bluez.GattCharacteristic1`.
pub(crate) struct CharIface {
    pub(crate) st: Shared,
    pub(crate) idx: usize,
    pub(crate) ci: usize,
    pub(crate) service: String,
}

impl CharIface {
    fn get<T: Default>(&self, f: impl FnOnce(&super::state::DevState, &super::state::CharState) -> T) -> T {
        let s = lock(&self.st);
        match s.devices.get(self.idx) {
            Some(d) => d.chars.get(self.ci).map(|c| f(d, c)).unwrap_or_default(),
            None => T::default(),
        }
    }
    fn update(&self, f: impl FnOnce(&mut super::state::CharState)) {
        let mut s = lock(&self.st);
        if let Some(c) = s.devices.get_mut(self.idx).and_then(|d| d.chars.get_mut(self.ci)) {
            f(c)
        }
    }
}

#[zbus::interface(name = "org.bluez.GattCharacteristic1")]
impl CharIface {
    async fn read_value(&self, _options: HashMap<String, OwnedValue>, #[zbus(signal_emitter)] em: SignalEmitter<'_>) -> Result<Vec<u8>, BluezError> {
        let (connected, readable, value) = self.get(|d, c| (d.connected, c.flags.contains(&"read"), c.value.clone()));
        if !connected {
            return Err(BluezError::Failed("Not connected".into()));
        }
        if !readable {
            return Err(BluezError::NotPermitted("Read not permitted".into()));
        }
        // Real BlueZ updates the cached Value after a read, which emits it.
        self.value_changed(&em).await?;
        Ok(value)
    }

    async fn write_value(&self, value: Vec<u8>, _options: HashMap<String, OwnedValue>) -> Result<(), BluezError> {
        let (connected, writable) = self.get(|d, c| (d.connected, c.flags.iter().any(|f| f.starts_with("write"))));
        if !connected {
            return Err(BluezError::Failed("Not connected".into()));
        }
        if !writable {
            return Err(BluezError::NotPermitted("Write not permitted".into()));
        }
        self.update(|c| c.value = value);
        Ok(())
    }

    async fn start_notify(&self, #[zbus(signal_emitter)] em: SignalEmitter<'_>) -> Result<(), BluezError> {
        let (connected, can, already) = self.get(|d, c| (d.connected, c.flags.iter().any(|f| *f == "notify" || *f == "indicate"), c.notifying));
        if !connected {
            return Err(BluezError::Failed("Not connected".into()));
        }
        if !can {
            return Err(BluezError::NotSupported("Operation is not supported".into()));
        }
        if already {
            return Err(BluezError::InProgress("In Progress".into()));
        }
        self.update(|c| c.notifying = true);
        self.notifying_changed(&em).await?;
        Ok(())
    }

    async fn stop_notify(&self, #[zbus(signal_emitter)] em: SignalEmitter<'_>) -> Result<(), BluezError> {
        if !self.get(|_, c| c.notifying) {
            return Err(BluezError::Failed("No notify session started".into()));
        }
        self.update(|c| c.notifying = false);
        self.notifying_changed(&em).await?;
        Ok(())
    }

    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.get(|_, c| super::sig_uuid_string(c.uuid16))
    }
    #[zbus(property)]
    fn service(&self) -> OwnedObjectPath {
        opath(&self.service)
    }
    #[zbus(property)]
    fn value(&self) -> Vec<u8> {
        self.get(|_, c| c.value.clone())
    }
    #[zbus(property)]
    fn notifying(&self) -> bool {
        self.get(|_, c| c.notifying)
    }
    #[zbus(property)]
    fn flags(&self) -> Vec<String> {
        self.get(|_, c| c.flags.iter().map(|s| s.to_string()).collect())
    }
    #[zbus(property, name = "MTU")]
    fn mtu(&self) -> u16 {
        247
    }
    #[zbus(property)]
    fn handle(&self) -> u16 {
        self.get(|_, c| c.handle)
    }
}

/// `org.bluez.GattDescriptor1` (the CCCD 0x2902 under notify/indicate characteristics).
pub(crate) struct DescIface {
    pub(crate) handle: u16,
    pub(crate) characteristic: String,
}

#[zbus::interface(name = "org.bluez.GattDescriptor1")]
impl DescIface {
    async fn read_value(&self, _options: HashMap<String, OwnedValue>) -> Vec<u8> {
        vec![0, 0]
    }
    async fn write_value(&self, _value: Vec<u8>, _options: HashMap<String, OwnedValue>) -> Result<(), BluezError> {
        Err(BluezError::NotPermitted("Write not permitted".into()))
    }
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        super::sig_uuid_string(0x2902)
    }
    #[zbus(property)]
    fn characteristic(&self) -> OwnedObjectPath {
        opath(&self.characteristic)
    }
    #[zbus(property)]
    fn value(&self) -> Vec<u8> {
        vec![0, 0]
    }
    #[zbus(property)]
    fn handle(&self) -> u16 {
        self.handle
    }
}

/// Sets a characteristic's value and emits it as a notification
/// (`PropertiesChanged` with `Value`), if the device is connected and the
/// characteristic is notifying. Returns whether it was sent.
pub(crate) async fn notify(st: &Shared, server: &ObjectServer, idx: usize, uuid16: u16, bytes: Vec<u8>) -> zbus::Result<bool> {
    let target = {
        let mut s = lock(st);
        let Some(d) = s.devices.get_mut(idx) else { return Ok(false) };
        let connected = d.connected;
        let path = d.path.clone();
        let layout = d.layout();
        let Some(ci) = d.chars.iter().position(|c| c.uuid16 == uuid16) else { return Ok(false) };
        let Some(c) = d.chars.get_mut(ci) else { return Ok(false) };
        c.value = bytes;
        if !(connected && c.notifying) {
            return Ok(false);
        }
        layout.char_path(&path, ci)
    };
    let Some(cpath) = target else { return Ok(false) };
    let iref = server.interface::<_, CharIface>(cpath.as_str()).await?;
    iref.get().await.value_changed(iref.signal_emitter()).await?;
    Ok(true)
}
