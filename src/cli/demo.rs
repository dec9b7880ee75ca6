//! `iomt-edge demo`: the whole pipeline on this machine, no setup needed.
//!
//! Simulated devices -> outbox in a local folder -> file sink, with a live
//! per-device view. Stops on Ctrl-C or after `--duration`.
//!
//! The devices: a heart-rate strap and a pulse oximeter (BLE through a
//! simulated BlueZ, or in-process), and a Masimo monitor whose ASCII 1 lines
//! a simulator writes onto a real pseudo-terminal that the gateway reads
//! through its serial adapter, as it would read a USB-serial adapter.

use super::out::outln;
use crate::adapters::{DeviceStatus, LinkState};
use crate::model::ReadingType;
use crate::service::GatewayHandle;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The demo's configuration, shipped as config/demo.toml.
pub(crate) const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Stop after this long (e.g. `30s`, `5m`); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Folder for the demo's outbox and delivered messages (refused when its
    /// `state` folder belongs to another gateway).
    #[arg(long, default_value = "./iomt-edge-demo")]
    pub(crate) dir: PathBuf,
    /// Start from an empty outbox and an empty delivered file (only in a
    /// folder the demo made).
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Print plain status lines instead of redrawing the screen.
    #[arg(long)]
    pub(crate) plain: bool,
    /// Simulate the devices inside the gateway instead of through a simulated
    /// BlueZ on a private D-Bus (the default when `dbus-daemon` is installed).
    #[arg(long)]
    pub(crate) in_process: bool,
    /// Seed the in-process devices' values (same seed, same values and the
    /// same contact-loss episodes; device N gets seed + N). Default: random.
    /// The devices of the simulated BlueZ are not seeded.
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
}

/// The simulated BlueZ's devices, in the order of the demo config's devices.
const SIM_ADDRESSES: [(&str, crate::config::DeviceKindConfig); 2] =
    [("C0:FF:EE:00:00:01", crate::config::DeviceKindConfig::HeartRateStrap), ("C0:FF:EE:00:00:02", crate::config::DeviceKindConfig::PulseOximeter)];

/// Switches the demo's simulated devices to BLE, addressed at the simulated
/// BlueZ's devices (the serial monitor stays serial).
fn use_ble(devices: &mut [crate::config::RawDevice]) {
    for d in devices.iter_mut().filter(|d| d.simulated.is_some()) {
        if let Some((addr, _)) = SIM_ADDRESSES.iter().find(|(_, k)| *k == d.kind) {
            d.simulated = None;
            d.ble = Some(crate::config::ble::RawBle { address: Some(addr.to_string()), ..Default::default() });
        }
    }
}

/// The demo's config: config/demo.toml as written, adjusted before it is
/// validated like any config file (nothing edits a validated config): its
/// state folder and delivered file in `dir` (made absolute, as a state
/// folder must be), `seed` for the in-process devices (device N gets seed +
/// N), BLE devices at the simulated BlueZ when `ble`, and the serial
/// monitor on `serial_port` (left out when there is none).
fn demo_config(dir: &std::path::Path, seed: Option<u64>, ble: bool, serial_port: Option<&str>) -> anyhow::Result<crate::config::Config> {
    let mut draft = crate::config::ConfigDraft::parse(DEMO_CONFIG, std::path::Path::new("config/demo.toml"))
        .map_err(|e| anyhow::anyhow!("the embedded demo config is invalid: {e}"))?;
    let dir = std::path::absolute(dir).with_context(|| format!("cannot tell the full path of the demo folder {} (--dir)", dir.display()))?;
    let raw = &mut draft.raw;
    raw.gateway.state_dir = dir.join("state");
    raw.sink = crate::config::RawSink { file: Some(crate::config::FileSinkConfig { path: dir.join("delivered.ndjson") }), ..Default::default() };
    if let Some(seed) = seed {
        for (n, s) in raw.devices.iter_mut().filter_map(|d| d.simulated.as_mut()).enumerate() {
            s.seed = Some(seed.wrapping_add(n as u64));
        }
    }
    if ble {
        use_ble(&mut raw.devices);
    }
    match serial_port {
        Some(port) => {
            for s in raw.devices.iter_mut().filter_map(|d| d.serial.as_mut()) {
                s.port = PathBuf::from(port);
            }
        }
        None => raw.devices.retain(|d| d.serial.is_none()),
    }
    draft.validate().map_err(|e| anyhow::anyhow!("the demo's config is invalid: {e}"))
}

/// The gateway id of the embedded demo config.
fn demo_gateway_id() -> anyhow::Result<String> {
    let draft = crate::config::ConfigDraft::parse(DEMO_CONFIG, std::path::Path::new("config/demo.toml"))
        .map_err(|e| anyhow::anyhow!("the embedded demo config is invalid: {e}"))?;
    Ok(draft.raw.gateway.id)
}

/// Marks a folder the demo made, so `--fresh` never clears anything else.
const DEMO_MARK: &str = ".iomt-edge-demo";

/// The gateway id that the status file of the state folder `state` names
/// (`gatewayId`, written by every gateway run and demo), if there is one.
fn gateway_of_state(state: &std::path::Path) -> Option<String> {
    let text = std::fs::read(state.join("status.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("gatewayId")?.as_str().map(str::to_string)
}

/// Refuses a `--dir` whose `state` folder belongs to another gateway (its
/// status file names another gateway id): the demo would deliver that
/// gateway's queued readings into its own file, or `--fresh` remove them.
fn refuse_foreign_outbox(dir: &std::path::Path, demo_id: &str) -> anyhow::Result<()> {
    let state = dir.join("state");
    match gateway_of_state(&state) {
        Some(other) if other != demo_id => anyhow::bail!(
            "the demo refuses {}: {} holds the outbox of gateway `{other}`, not the demo's; pick another --dir",
            dir.display(),
            state.display()
        ),
        _ => Ok(()),
    }
}

/// What `--fresh` removes: only what the demo itself creates in its folder
/// (its state folder and its delivered file), only in a folder the demo made
/// (`demo_id` is the demo's gateway id), and never while a gateway uses that
/// outbox.
fn clear_demo_dir(dir: &std::path::Path, demo_id: &str) -> anyhow::Result<()> {
    // A folder from a demo before the mark existed holds only what it made,
    // and its state folder says it is the demo's (a gateway whose state_dir
    // is `…/state` leaves the same two names).
    let only_demo_files = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).all(|e| matches!(e.file_name().to_str(), Some("state" | "delivered.ndjson"))))
        .unwrap_or(false);
    let demo_state = gateway_of_state(&dir.join("state")).is_some_and(|g| g == demo_id);
    if !(dir.join(DEMO_MARK).exists() || only_demo_files && demo_state) {
        anyhow::bail!(
            "--fresh refuses to clear {}: it was not made by `iomt-edge demo` (no {DEMO_MARK} file in it); pick another --dir",
            dir.display()
        );
    }
    let lock = dir.join("state").join("outbox.lock");
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when `f` is dropped.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!("--fresh refuses to clear {}: a running gateway is using its outbox", dir.display());
        }
    }
    for name in ["state", "delivered.ndjson"] {
        let p = dir.join(name);
        let res = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot clear {}: {e}", p.display()),
        }
    }
    Ok(())
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let demo_id = demo_gateway_id()?;
    refuse_foreign_outbox(&a.dir, &demo_id)?;
    if a.fresh && a.dir.exists() {
        clear_demo_dir(&a.dir, &demo_id)?;
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create the demo folder {} (--dir)", a.dir.display()))?;
    let marker = a.dir.join(DEMO_MARK);
    if !marker.exists() {
        let _ = std::fs::write(&marker, "made by `iomt-edge demo`; `demo --fresh` clears only folders with this file\n");
    }
    let delivered = a.dir.join("delivered.ndjson");

    let fancy = !a.plain && std::io::stdout().is_terminal();
    let ble = !a.in_process && crate::simulate::bluez::daemon::find_dbus_daemon().is_some();
    if ble {
        outln!("iomt-edge demo: simulated BlueZ (private D-Bus) -> btleplug -> outbox -> file sink")?;
    } else {
        if !a.in_process {
            outln!("note: dbus-daemon not found (apt-get install dbus); simulating the devices in-process instead of over BLE")?;
        }
        outln!("iomt-edge demo: simulated devices -> outbox -> file sink")?;
    }
    outln!("  outbox:    {}", a.dir.join("state").join("outbox").display())?;
    outln!("  delivered: {}  (one JSON message per line)", delivered.display())?;
    match a.duration {
        Some(d) => outln!("  stopping after {}; Ctrl-C stops earlier", humantime::format_duration(d))?,
        None => outln!("  Ctrl-C stops")?,
    }
    outln!()?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        // SIGHUP (the terminal closed) stops the demo cleanly; SIGUSR1 logs a status line.
        let signals = crate::service::handle_signals(shutdown.clone(), crate::service::Hangup::Stop);
        if let Some(d) = a.duration {
            let s = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                s.cancel();
            });
        }
        // The serial monitor: a simulated Masimo on a pseudo-terminal, played
        // until the gateway has stopped (so it never sees the port vanish
        // while it shuts down).
        let monitor_stop = CancellationToken::new();
        let pty = match crate::simulate::serial::Pty::open() {
            Ok(pty) => {
                outln!("  serial:    simulated Masimo Radical-7 (ASCII 1) on {}", pty.path())?;
                Some(pty)
            }
            Err(e) => {
                outln!("note: no pseudo-terminal ({e}); the demo runs without its serial monitor")?;
                None
            }
        };
        let config = demo_config(&a.dir, a.seed, ble, pty.as_ref().map(|p| p.path()))?;
        if let Some(mut pty) = pty {
            let stop = monitor_stop.clone();
            tokio::spawn(async move {
                crate::simulate::serial::play(crate::simulate::serial::Monitor::MasimoAscii1, &mut pty, 1, None, stop).await;
            });
        }
        // Keep the simulated BlueZ (and its dbus-daemon) alive for the whole run.
        let _sim = if ble {
            let sim = crate::simulate::bluez::spawn_private(Default::default()).await?;
            crate::adapters::ble::set_system_bus_address(sim.address())?;
            outln!("  BLE:       simulated bluetoothd on {}", sim.address())?;
            Some(sim)
        } else {
            None
        };
        let (gw_tx, gw_rx) = tokio::sync::oneshot::channel::<GatewayHandle>();
        let view_stop = shutdown.clone();
        let view = tokio::spawn(async move {
            let Ok(gw) = gw_rx.await else { return None };
            live_view(gw.clone(), view_stop, fancy).await;
            Some(gw)
        });
        let opts = crate::service::RunOptions { signals, ..Default::default() };
        let result = crate::service::run(config, opts, shutdown, move |gw| {
            let _ = gw_tx.send(gw);
        })
        .await
        .map_err(anyhow::Error::from);
        monitor_stop.cancel();
        // The gateway has stopped (outbox flushed, in-flight messages settled):
        // the totals are final now.
        if let Ok(Some(gw)) = view.await {
            outln!("\n{}", summary(&gw))?;
        }
        result
    })?;
    outln!("\nDemo stopped. Delivered messages are in {}", delivered.display())?;
    outln!("Look at one:  head -n 1 {} | python3 -m json.tool", delivered.display())?;
    Ok(ExitCode::SUCCESS)
}

/// What the MedTech service would make of the delivered messages, using the
/// shipped mappings: follows the delivered file and previews its latest messages.
struct MedtechPanel {
    engine: Option<crate::medtech::MedTech>,
    file: PathBuf,
    offset: u64,
    recent: std::collections::VecDeque<serde_json::Value>,
    skipped_total: usize,
    excluded_total: usize,
}

impl MedtechPanel {
    fn new(file: PathBuf) -> MedtechPanel {
        let engine = crate::medtech::MedTech::shipped().map_err(|e| tracing::warn!("MedTech preview unavailable: {e}")).ok();
        MedtechPanel { engine, file, offset: 0, recent: Default::default(), skipped_total: 0, excluded_total: 0 }
    }

    /// Reads messages delivered since the last call; returns the panel's lines.
    fn refresh(&mut self) -> Vec<String> {
        use std::io::{BufRead, Seek};
        let Some(engine) = &self.engine else { return Vec::new() };
        let mut new_msgs = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.file) {
            if f.seek(std::io::SeekFrom::Start(self.offset)).is_ok() {
                let mut reader = std::io::BufReader::new(f);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if !line.ends_with('\n') {
                        break; // a line still being written; read it next time
                    }
                    self.offset += line.len() as u64;
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        new_msgs.push(v);
                    }
                    line.clear();
                }
            }
        }
        if !new_msgs.is_empty() {
            let p = engine.preview(&new_msgs, &crate::medtech::PreviewOptions::default());
            self.skipped_total += p.skipped.len();
            self.excluded_total += p.excluded.len();
        }
        for m in new_msgs {
            self.recent.push_back(m);
            if self.recent.len() > 12 {
                self.recent.pop_front();
            }
        }
        let msgs: Vec<serde_json::Value> = self.recent.iter().cloned().collect();
        let preview = engine.preview(&msgs, &crate::medtech::PreviewOptions::default());
        // The latest Observation of each type.
        let mut latest: std::collections::BTreeMap<String, String> = Default::default();
        for o in &preview.observations {
            let key = o.pointer("/code/text").and_then(|v| v.as_str()).unwrap_or("?").to_string();
            latest.insert(key, crate::medtech::summary_line(o));
        }
        let mut out = vec![format!(
            "MedTech would create (shipped mappings, latest delivered messages; {} measurement(s) skipped so far; {} reading(s) excluded by device status):",
            self.skipped_total, self.excluded_total
        )];
        out.extend(latest.into_values().map(|l| format!("  {l}")));
        out
    }
}

async fn live_view(gw: GatewayHandle, stop: CancellationToken, fancy: bool) {
    let started = Instant::now();
    let delivered = match &gw.config.sink {
        crate::config::SinkConfig::File(f) => f.path.clone(),
        _ => PathBuf::new(),
    };
    let mut medtech = MedtechPanel::new(delivered);
    let mut tick = tokio::time::interval(Duration::from_secs(if fancy { 1 } else { 5 }));
    let mut view_failed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let mut text = render(&gw, started.elapsed());
        for l in medtech.refresh() {
            text.push_str(&l);
            text.push('\n');
        }
        let written = if fancy { super::out::out!("\x1b[2J\x1b[H{text}") } else { outln!("{text}") };
        if let Err(e) = written {
            if !view_failed {
                view_failed = true;
                tracing::warn!("{e}; the demo goes on, its live view may be incomplete");
            }
        }
        if super::out::stdout_gone() {
            // Nobody reads the view any more (`| head`): stop cleanly, as a
            // Unix tool would stop at a closed pipe.
            stop.cancel();
            break;
        }
    }
}

fn value(d: &DeviceStatus, t: ReadingType, unit: &str) -> String {
    match d.last_values.get(&t) {
        Some((Some(v), flags)) if flags.is_empty() => format!("{v:.0} {unit}"),
        Some((Some(v), _)) => format!("{v:.0} {unit}*"),
        Some((None, _)) => "--".into(),
        None => String::new(),
    }
}

/// The closing line: what this run took, delivered and left queued.
fn summary(gw: &GatewayHandle) -> String {
    let devices = gw.registry.snapshot();
    let taken: u64 = devices.iter().map(|d| d.readings).sum();
    let queued = gw.outbox.stats().queued;
    format!(
        "Summary: {taken} readings from {} device(s); {} delivered in {} messages; {queued} still queued in the outbox{}",
        devices.len(),
        gw.forwarder.delivered_readings.load(Ordering::Relaxed),
        gw.forwarder.delivered_messages.load(Ordering::Relaxed),
        if queued > 0 { " (they go out on the next run)" } else { "" }
    )
}

/// The live table (also used by tests through `--plain`).
pub(crate) fn render(gw: &GatewayHandle, elapsed: Duration) -> String {
    let mut s = String::new();
    s.push_str(&format!("iomt-edge demo   running {}s   sink: {}\n\n", elapsed.as_secs(), gw.sink_name()));
    s.push_str(&format!(
        "{:<16} {:<10} {:>10} {:>9} {:>8} {:>10} {:>6} {:>6} {:>9}\n",
        "DEVICE", "STATE", "HR", "RR", "SpO2", "PULSE", "PI", "BATT", "READINGS"
    ));
    for d in gw.registry.snapshot() {
        let state = match d.state {
            LinkState::Scanning => "scanning",
            LinkState::Connecting => "connecting",
            LinkState::Streaming => "streaming",
            LinkState::Lost => "lost",
        };
        let pi = match d.last_values.get(&ReadingType::PerfusionIndex) {
            Some((Some(v), _)) => format!("{v:.1}%"),
            Some((None, _)) => "--".into(),
            None => String::new(),
        };
        s.push_str(&format!(
            "{:<16} {:<10} {:>10} {:>9} {:>8} {:>10} {:>6} {:>6} {:>9}\n",
            crate::redact::device(&d.device_id),
            state,
            value(&d, ReadingType::HeartRate, "/min"),
            value(&d, ReadingType::RrInterval, "ms"),
            value(&d, ReadingType::Spo2, "%"),
            value(&d, ReadingType::PulseRate, "/min"),
            pi,
            d.battery.map(|b| format!("{b:.0}%")).unwrap_or_default(),
            d.readings
        ));
    }
    let st = gw.outbox.stats();
    s.push_str(&format!(
        "\noutbox: {} readings queued ({})   delivered: {} readings in {} messages",
        st.queued,
        crate::config::units::ByteSize(st.queued_bytes),
        gw.forwarder.delivered_readings.load(Ordering::Relaxed),
        gw.forwarder.delivered_messages.load(Ordering::Relaxed)
    ));
    if let Ok(Some(e)) = gw.forwarder.last_error.lock().map(|e| e.clone()) {
        s.push_str(&format!("\nlast delivery error: {e}"));
    }
    s.push_str("\n(* = flagged: contact lost, sensor off...; -- = value unavailable)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSource, SinkConfig};

    /// Every way the demo runs (BLE or in-process, with or without its serial
    /// monitor, seeded, from a relative --dir) is a config that passed the
    /// same validation as a file: adjusted before it, never after.
    #[test]
    fn every_demo_variant_is_a_valid_config() {
        for ble in [false, true] {
            for port in [Some("/dev/pts/77"), None] {
                let c = demo_config(std::path::Path::new("./demo-dir"), Some(40), ble, port).unwrap();
                let state = &c.gateway.state_dir;
                assert!(state.is_absolute() && state.ends_with("demo-dir/state"), "{}", state.display());
                match &c.sink {
                    SinkConfig::File(f) => assert!(f.path.is_absolute() && f.path.ends_with("demo-dir/delivered.ndjson"), "{}", f.path.display()),
                    other => panic!("the demo delivers into a file: {other:?}"),
                }
                let serial: Vec<PathBuf> = c
                    .devices
                    .iter()
                    .filter_map(|d| match &d.source {
                        DeviceSource::Serial(s) => Some(s.port.clone()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(serial, port.map(PathBuf::from).into_iter().collect::<Vec<_>>());
                let seeds: Vec<Option<u64>> = c
                    .devices
                    .iter()
                    .filter_map(|d| match &d.source {
                        DeviceSource::Simulated(s) => Some(s.seed),
                        _ => None,
                    })
                    .collect();
                let addresses: Vec<String> = c
                    .devices
                    .iter()
                    .filter_map(|d| match &d.source {
                        DeviceSource::Ble(b) => Some(format!("{:?}", b.selector)),
                        _ => None,
                    })
                    .collect();
                if ble {
                    assert!(seeds.is_empty(), "{seeds:?}");
                    assert_eq!(addresses, [r#"Address("C0:FF:EE:00:00:01")"#, r#"Address("C0:FF:EE:00:00:02")"#]);
                } else {
                    assert_eq!(seeds, [Some(40), Some(41)]);
                    assert!(addresses.is_empty(), "{addresses:?}");
                }
            }
        }
    }
}
