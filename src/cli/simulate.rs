//! `iomt-edge simulate ...`: simulators and emulators to try the gateway without
//! hardware or a cloud subscription: a simulated BlueZ on a private D-Bus, and a
//! local Azure IoT Hub (and DPS) emulator.

use super::out::{errln, outln};
use super::{EXIT_FAILURE, EXIT_USAGE};
use crate::simulate::bluez::{self, BluezSim, SimConfig, SimDeviceSpec};
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) what: SimulateCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum SimulateCommand {
    /// A simulated BlueZ (org.bluez, adapter hci0) with heart-rate straps and
    /// pulse oximeters, on a private dbus-daemon. Prints the bus address on the
    /// first line of stdout; export it as DBUS_SYSTEM_BUS_ADDRESS for the
    /// gateway (or bleak, busctl --address=...). Runs until Ctrl-C.
    #[command(after_help = "Example:\n  iomt-edge simulate bluez &   # prints unix:path=/tmp/iomt-bluez-.../bus,guid=...\n  \
export DBUS_SYSTEM_BUS_ADDRESS='unix:path=/tmp/iomt-bluez-.../bus'\n  iomt-edge run --config config/ble-sim.toml\n\n\
Devices: straps C0:FF:EE:00:00:01.. (serial SN0001..), oximeters C0:FF:EE:00:01:01.. (serial SN0101..).")]
    Bluez(BluezArgs),
    /// Run a local Azure IoT Hub (and DPS) emulator on loopback and print a
    /// device connection string and the CA file to trust.
    Iothub(IothubArgs),
    /// Run a local Azure Event Hubs emulator (HTTPS batch sends, SAS and
    /// Microsoft Entra ID tokens from its own token endpoint) on loopback; print
    /// a connection string, the CA file to trust and config snippets. Events
    /// are recorded per partition key (device) as NDJSON that
    /// `iomt-edge medtech preview --envelope` reads.
    #[command(after_help = "Faults can also be changed while it runs:\n  \
curl --cacert DIR/eventhubs-emulator-ca.pem -X PUT https://127.0.0.1:8443/\\$emulator/faults -d '{\"server_busy\":2}'\n\
Fields: unauthorized, server_busy, too_large_above, delay_ms, resets, lost_answers, down_ms. Counters: GET /$emulator/stats.\n\n\
Entra ID with a certificate (client assertions, as Microsoft identity platform \"certificate credentials\"): make an RSA pair\n  \
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=iomt-edge -keyout client-key.pem -out client-cert.pem\n  \
iomt-edge simulate eventhubs --client-certificate client-cert.pem\n\
and set client_certificate_file = \"client-cert.pem\", client_key_file = \"client-key.pem\" in [sink.eventhubs] (the snippet it prints). \
Assertions are checked like the real token endpoint does: signature (RS256/PS256) with the certificate's key, x5t/x5t#S256 thumbprint, \
aud = the token endpoint URL, iss = sub = client id, exp/nbf/iat (5 min skew), and a jti used once; refusals carry AADSTS codes.")]
    Eventhubs(EventhubsArgs),
    /// A simulated serial monitor on a pseudo-terminal: prints the terminal's
    /// path (the gateway's `port`) on the first line of stdout, then plays the
    /// monitor at its real rate (or a capture) until Ctrl-C.
    #[command(after_help = "Example:\n  iomt-edge simulate serial --profile masimo-ascii1 --link /tmp/ttyMasimo &\n  \
# in the config: [device.serial] port = \"/tmp/ttyMasimo\"  driver = \"masimo-ascii1\"  (kind = \"pulse_oximeter\")\n  \
iomt-edge run --config my.toml\n\n\
Profiles: masimo-ascii1, nonin-ascii, nonin-df2, nonin-df7, nonin-df8, hl7 (MLLP-framed ORU^R01 every 5 s).")]
    Serial(SerialArgs),
}

#[derive(clap::Args)]
pub(crate) struct SerialArgs {
    /// The monitor to play: masimo-ascii1, nonin-ascii, nonin-df2, nonin-df7, nonin-df8 or hl7.
    #[arg(long)]
    pub(crate) profile: String,
    /// Play this capture instead of a simulated patient: a timed capture of
    /// `iomt-edge serial record` at its recorded timing; a text capture one
    /// line per record interval (1 s; hl7: 5 s); raw bytes at 9600 baud.
    #[arg(long, value_name = "FILE")]
    pub(crate) capture: Option<PathBuf>,
    /// The capture is in the text hex format of the `.hex` samples.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Also make this symbolic link to the terminal (a stable path for the
    /// config, as udev's /dev/serial/by-id/ links are); removed at exit.
    #[arg(long, value_name = "PATH")]
    pub(crate) link: Option<PathBuf>,
    /// Seed of the simulated patient.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

#[derive(clap::Args)]
pub(crate) struct BluezArgs {
    /// Join this existing bus instead of starting a private dbus-daemon.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) bus: Option<String>,
    /// Milliseconds between measurement notifications.
    #[arg(long, default_value_t = 1000)]
    pub(crate) interval_ms: u64,
    /// Number of simulated heart-rate straps.
    #[arg(long, default_value_t = 1)]
    pub(crate) straps: u8,
    /// Number of simulated pulse oximeters.
    #[arg(long, default_value_t = 1)]
    pub(crate) oximeters: u8,
}

/// The devices `simulate bluez` exports.
pub(crate) fn devices(straps: u8, oximeters: u8) -> Vec<SimDeviceSpec> {
    let mut v = Vec::new();
    for i in 1..=straps {
        v.push(SimDeviceSpec::strap(&format!("C0:FF:EE:00:00:{i:02X}"), &format!("SN{:04}", i)));
    }
    for i in 1..=oximeters {
        v.push(SimDeviceSpec::oximeter(&format!("C0:FF:EE:00:01:{i:02X}"), &format!("SN{:04}", 100 + i as u32)));
    }
    v
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.what {
        SimulateCommand::Bluez(b) => run_bluez(b),
        SimulateCommand::Iothub(x) => run_iothub(x),
        SimulateCommand::Eventhubs(x) => run_eventhubs(x),
        SimulateCommand::Serial(s) => run_serial(s),
    }
}

fn run_bluez(b: BluezArgs) -> anyhow::Result<ExitCode> {
    if b.interval_ms < 10 {
        errln!("error: --interval-ms must be at least 10");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let config = SimConfig { devices: devices(b.straps, b.oximeters), interval: Duration::from_millis(b.interval_ms) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let code = rt.block_on(async move {
        // Keep whichever we started alive until Ctrl-C / SIGTERM.
        let (address, _private, _joined) = match &b.bus {
            Some(addr) => match BluezSim::start(addr, config).await {
                Ok(sim) => (addr.clone(), None, Some(sim)),
                Err(e) => {
                    errln!("error: {e:#}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
            None => match bluez::spawn_private(config).await {
                Ok(h) => (h.address().to_string(), Some(h), None),
                Err(e) => {
                    errln!("error: {e:#}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
        };
        if let Err(e) = outln!("{address}") {
            errln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        errln!("simulated BlueZ is running; export DBUS_SYSTEM_BUS_ADDRESS='{address}' (Ctrl-C to stop)");
        wait_for_stop().await;
        ExitCode::SUCCESS
    });
    Ok(code)
}

fn run_serial(a: SerialArgs) -> anyhow::Result<ExitCode> {
    use crate::simulate::serial::{self, Monitor, Pty};
    let Some(monitor) = Monitor::by_name(&a.profile) else {
        errln!("error: --profile `{}` is not one the simulator plays; use one of {}", a.profile, Monitor::NAMES.join(", "));
        return Ok(ExitCode::from(EXIT_USAGE));
    };
    let mut timed: Option<Vec<(std::time::Duration, Vec<u8>)>> = None;
    let capture = match &a.capture {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read the capture {}", p.display()))?;
            if crate::adapters::serial::capture::is_timed(&bytes) {
                match crate::adapters::serial::capture::parse(&String::from_utf8_lossy(&bytes)) {
                    Ok(chunks) => timed = Some(chunks.into_iter().map(|c| (c.offset, c.bytes)).collect()),
                    Err(e) => {
                        errln!("error: {}: {e}", p.display());
                        return Ok(ExitCode::from(super::EXIT_PROBLEMS));
                    }
                }
                Some(Vec::new())
            } else if a.hex {
                match parse_hex(&String::from_utf8_lossy(&bytes)) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        errln!("error: {}: {e}", p.display());
                        return Ok(ExitCode::from(super::EXIT_PROBLEMS));
                    }
                }
            } else {
                Some(bytes)
            }
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut pty = Pty::open().context("cannot create a pseudo-terminal")?;
        if let Some(link) = &a.link {
            let _ = std::fs::remove_file(link);
            std::os::unix::fs::symlink(pty.path(), link).with_context(|| format!("cannot create the link {}", link.display()))?;
        }
        outln!("{}", pty.path())?;
        errln!(
            "simulated {} on {}{}; in the gateway config: [device.serial] port = \"{}\", driver = \"{}\" (device kind \"{}\"). Ctrl-C to stop.",
            a.profile,
            pty.path(),
            a.link.as_ref().map(|l| format!(" (link {})", l.display())).unwrap_or_default(),
            a.link.as_ref().map(|l| l.display().to_string()).unwrap_or_else(|| pty.path().to_string()),
            a.profile,
            monitor.config_kind()
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let player_stop = stop.clone();
        let done_with_capture = capture.is_some();
        let player = async {
            match &timed {
                Some(chunks) => serial::play_timed(&mut pty, chunks, player_stop).await,
                None => serial::play(monitor, &mut pty, a.seed, capture, player_stop).await,
            }
        };
        tokio::select! {
            _ = player => {
                if done_with_capture {
                    errln!("the capture has been played");
                }
            }
            _ = wait_for_stop() => stop.cancel(),
        }
        if let Some(link) = &a.link {
            let _ = std::fs::remove_file(link);
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The text hex format of the `.hex` samples (`01 81 01 00 83`, `#` comments).
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    crate::adapters::serial::parse_hex_capture(text)
}

pub(crate) async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct IothubArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,
    /// Port (8883 is what Azure SDKs dial; 0 picks a free port).
    #[arg(long, default_value_t = 8883)]
    pub(crate) port: u16,
    /// Port for MQTT over secure WebSockets (`wss://.../$iothub/websocket`;
    /// 443 is what Azure SDKs dial and needs root; 0 picks a free port).
    #[arg(long, default_value_t = 0)]
    pub(crate) ws_port: u16,
    /// Device id to register.
    #[arg(long, default_value = "iomt-gateway")]
    pub(crate) device: String,
    /// Folder for the CA certificate (created if missing).
    #[arg(long, default_value = "/tmp/iomt-edge-iothub-emulator")]
    pub(crate) dir: PathBuf,
    /// Print every telemetry message received.
    #[arg(long)]
    pub(crate) verbose: bool,
}

fn run_iothub(a: IothubArgs) -> anyhow::Result<ExitCode> {
    use crate::simulate::iothub::{Emulator, EmulatorConfig};
    if !a.bind.is_loopback() {
        errln!("error: the emulator listens on loopback addresses only (got {})", a.bind);
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let emu = Emulator::start(EmulatorConfig {
            bind: SocketAddr::new(a.bind, a.port),
            ws_bind: Some(SocketAddr::new(a.bind, a.ws_port)),
            ..Default::default()
        })
        .await?;
        std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create the folder for the CA certificate {} (--dir)", a.dir.display()))?;
        let ca = emu.write_ca(&a.dir).with_context(|| format!("cannot write the CA certificate into {} (--dir)", a.dir.display()))?;
        let cs = emu.add_device(&a.device);
        let group_key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        };
        emu.add_group_enrollment(&group_key);
        outln!("IoT Hub emulator listening on {} (hub name {})", emu.addr(), emu.hub_name())?;
        let ws_host = emu.ws_gateway_host().unwrap_or_default();
        if let Some(ws) = emu.ws_addr() {
            outln!("MQTT over WebSockets on {ws} (wss://{ws}/$iothub/websocket, subprotocol mqtt)")?;
        }
        outln!()?;
        outln!("Device connection string:")?;
        outln!("  {cs}")?;
        outln!("CA certificate to trust:")?;
        outln!("  {}", ca.display())?;
        outln!()?;
        outln!("In the gateway config:")?;
        outln!("  [sink.iothub]")?;
        outln!("  connection_string = {{ value = \"{cs}\" }}")?;
        outln!("  ca_file = \"{}\"", ca.display())?;
        outln!()?;
        outln!("Or over WebSockets (optionally through an HTTP CONNECT proxy):")?;
        outln!("  [sink.iothub]")?;
        outln!("  connection_string = {{ value = \"{cs}\" }}")?;
        outln!("  ca_file = \"{}\"", ca.display())?;
        outln!("  transport = \"websocket\"")?;
        outln!("  gateway_host_name = \"{ws_host}\"")?;
        outln!("  # proxy = \"127.0.0.1:3128\"")?;
        outln!()?;
        outln!("DPS (same port): id_scope = \"{}\", endpoint = \"{}\", group_key = \"{group_key}\"", emu.id_scope(), emu.addr())?;
        outln!("Press Ctrl-C to stop.")?;
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                    let msgs = emu.messages();
                    for m in msgs.iter().skip(seen) {
                        if a.verbose {
                            outln!("{} {} {} bytes {}", m.device_id, m.property("$.mid").unwrap_or("-"), m.body.len(), String::from_utf8_lossy(&m.body))?;
                        }
                    }
                    if msgs.len() > seen && !a.verbose {
                        outln!("{} message(s) received", msgs.len())?;
                    }
                    seen = msgs.len();
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct EventhubsArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: IpAddr,
    /// HTTPS port (443 is what Azure clients dial and needs root; 0 picks a free port).
    #[arg(long, default_value_t = 8443)]
    pub(crate) port: u16,
    /// Folder for the CA certificate, the emulator's keys (reused by the next
    /// start, so a restarted emulator accepts a running gateway) and
    /// emulator.json (everything a client needs, for scripts).
    #[arg(long, default_value = "/tmp/iomt-edge-eventhubs-emulator")]
    pub(crate) dir: PathBuf,
    /// Folder for the recorded events (default: DIR/events).
    #[arg(long, value_name = "FOLDER")]
    pub(crate) record: Option<PathBuf>,
    /// The event hub's name.
    #[arg(long, default_value = "vitals")]
    pub(crate) hub: String,
    /// Lifetime of the tokens the token endpoint issues (e.g. 1h, 30s).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) token_lifetime: Duration,
    /// A certificate (PEM) registered on the emulator's application: its token
    /// endpoint then gives tokens for client assertions (certificate
    /// credentials, RS256 or PS256) signed with that certificate's RSA private
    /// key. Repeat for several. Without it, client assertions are refused.
    #[arg(long, value_name = "FILE")]
    pub(crate) client_certificate: Vec<PathBuf>,
    /// Largest request accepted, in bytes (1048576: Standard; 262144: Basic).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub(crate) max_request_bytes: usize,
    /// Answer 401 to the next N batch requests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) unauthorized: u32,
    /// Answer 503 ServerBusy to the next N batch requests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) server_busy: u32,
    /// Answer 413 to batch requests larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub(crate) too_large_above: Option<usize>,
    /// Wait this long before each batch answer.
    #[arg(long, default_value_t = 0)]
    pub(crate) delay_ms: u64,
    /// Close the connection without answering or storing, for the next N batch requests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) resets: u32,
    /// Store, then close without answering, for the next N batch requests.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) lost_answers: u32,
    /// Print every event received.
    #[arg(long)]
    pub(crate) verbose: bool,
}

fn run_eventhubs(a: EventhubsArgs) -> anyhow::Result<ExitCode> {
    use crate::simulate::eventhubs::{Emulator, EmulatorConfig, Faults};
    if !a.bind.is_loopback() {
        errln!("error: the emulator listens on loopback addresses only (got {})", a.bind);
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    if a.hub.is_empty() || a.hub.contains(['/', '?', '#']) {
        errln!("error: --hub is an event hub name (letters, digits, `.`, `_`, `-`)");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create the emulator's folder {} (--dir)", a.dir.display()))?;
        let record = a.record.clone().unwrap_or_else(|| a.dir.join("events"));
        let faults = Faults {
            unauthorized: a.unauthorized,
            server_busy: a.server_busy,
            too_large_above: a.too_large_above,
            delay_ms: a.delay_ms,
            resets: a.resets,
            lost_answers: a.lost_answers,
            down_ms: 0,
        };
        let emu = Emulator::start(EmulatorConfig {
            bind: SocketAddr::new(a.bind, a.port),
            hub: a.hub.clone(),
            token_lifetime: a.token_lifetime,
            client_certificates: a.client_certificate.clone(),
            max_request_bytes: a.max_request_bytes,
            record_dir: Some(record.clone()),
            state_dir: Some(a.dir.clone()),
            faults,
            ..Default::default()
        })
        .await?;
        let ca = emu.write_ca(&a.dir).with_context(|| format!("cannot write the CA certificate into {} (--dir)", a.dir.display()))?;
        let desc = emu.description(&ca);
        let json_path = a.dir.join("emulator.json");
        let tmp = a.dir.join(".emulator.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&desc)?).and_then(|_| std::fs::rename(&tmp, &json_path))
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        let cs = emu.connection_string();
        let c = emu.config();
        outln!("Event Hubs emulator listening on {} (event hub {}); token endpoint {}/{}/oauth2/v2.0/token", emu.base_url(), c.hub, emu.base_url(), c.tenant)?;
        outln!()?;
        outln!("Connection string (SAS key):")?;
        outln!("  {cs}")?;
        outln!("CA certificate to trust:")?;
        outln!("  {}", ca.display())?;
        outln!("Everything above as JSON: {}", json_path.display())?;
        outln!()?;
        outln!("In the gateway config, with the SAS key:")?;
        outln!("  [sink.eventhubs]")?;
        outln!("  connection_string = {{ value = \"{cs}\" }}")?;
        outln!("  ca_file = \"{}\"", ca.display())?;
        outln!()?;
        // The lines an Entra ID snippet starts with, whatever its credential.
        let entra_head = || -> Result<(), crate::cli::out::OutputError> {
            outln!("  [sink.eventhubs]")?;
            outln!("  namespace = \"{}\"", emu.addr())?;
            outln!("  event_hub = \"{}\"", c.hub)?;
            outln!("  authority_host = \"{}\"", emu.base_url())?;
            outln!("  tenant = \"{}\"", c.tenant)?;
            outln!("  client_id = \"{}\"", c.client_id)
        };
        outln!("Or with Microsoft Entra ID (client credentials against the emulator's token endpoint):")?;
        entra_head()?;
        outln!("  client_secret = {{ value = \"{}\" }}", emu.client_secret())?;
        outln!("  ca_file = \"{}\"", ca.display())?;
        outln!()?;
        if let Some(cert) = a.client_certificate.first() {
            let cert = std::fs::canonicalize(cert).unwrap_or_else(|_| cert.clone());
            outln!("Or with a certificate credential (client assertions signed with the key of {}):", cert.display())?;
            entra_head()?;
            outln!("  client_certificate_file = \"{}\"", cert.display())?;
            outln!("  client_key_file = \"/path/to/its-private-key.pem\"")?;
            outln!("  ca_file = \"{}\"", ca.display())?;
            outln!()?;
        }
        outln!("Events are recorded per device in {}; see what MedTech would make of them:", record.display())?;
        outln!("  iomt-edge medtech preview --envelope --summary {}/*.ndjson", record.display())?;
        outln!("Press Ctrl-C to stop.")?;
        let mut seen = 0u64;
        loop {
            tokio::select! {
                _ = wait_for_stop() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let total = emu.stats().events;
                    if a.verbose {
                        for e in emu.events().iter().filter(|e| e.sequence_number > seen) {
                            outln!("{} {} {} bytes", e.partition_key.as_deref().unwrap_or("-"), e.message_id.as_deref().unwrap_or("-"), e.body.len())?;
                        }
                    } else if total > seen {
                        outln!("{total} event(s) received")?;
                    }
                    seen = total;
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
