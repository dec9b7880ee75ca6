//! Starting, running and stopping the whole pipeline.

use super::associations::Associations;
use super::error::ServiceError;
use super::gateway::GatewayHandle;
use super::notify;
use crate::adapters::serial::patient_guards::{self, Opened, PatientGuards};
use crate::adapters::simulated::SimulatedDevice;
use crate::adapters::{Adapter, AdapterContext, DeviceRegistry, ReadingSender};
use crate::config::{Config, DeviceSource, SinkConfig};
use crate::forwarder::{FlushHandle, Forwarder, ForwarderSettings, ForwarderStats};
use crate::health::Health;
use crate::logging::Episode;
use crate::model::{DeviceEvent, Reading};
use crate::outbox::committer::{CommitHooks, CommitReport, Committer};
use crate::outbox::Outbox;
use crate::sinks::iothub::control::GatewayControl;
use crate::sinks::Sink;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Readings an adapter may hand over before it has to wait for the disk.
const INTAKE_CAPACITY: usize = 10_000;

/// Options of a run besides the config file.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    /// Print a line per committed group on stdout (crash tests).
    pub(crate) report_commits: bool,
    /// The config file the gateway was started from, and its text then:
    /// SIGHUP re-reads the file and says whether it changed (see [`handle_signals`]).
    pub(crate) config_file: Option<(std::path::PathBuf, String)>,
    /// Requests that came in as signals (SIGHUP, SIGUSR1, SIGUSR2).
    pub(crate) signals: ControlSignals,
    /// The check `run` makes of a config file before it starts (the file and
    /// this machine; `cli::check_config`), for SIGHUP's "is it valid?"; when
    /// `None`, the file alone is checked.
    pub(crate) check_config: Option<ConfigCheck>,
}

/// Checks a config file as a start would (file and machine).
pub(crate) type ConfigCheck = fn(&std::path::Path) -> Result<(), String>;

/// The committer's hooks in the running gateway: each reading is stamped
/// with its device's patient association before it is stored, and counted in
/// the device registry (readings, last seen, out-of-range) once it is durable.
pub fn commit_hooks(associations: &Arc<Associations>, registry: &Arc<DeviceRegistry>) -> CommitHooks {
    let associations = associations.clone();
    let registry = registry.clone();
    CommitHooks {
        stamp: Some(Arc::new(move |r: &mut Reading| associations.stamp(r))),
        committed: Some(Arc::new(move |r: &Reading| registry.observe(r))),
    }
}

/// Builds the sink named in the config. `control` is what the IoT Hub sink
/// exposes through the twin and direct methods.
pub(crate) async fn build_sink(config: &Config, control: Arc<dyn GatewayControl>) -> Result<Arc<dyn Sink>, ServiceError> {
    Ok(match &config.sink {
        SinkConfig::File(f) => {
            Arc::new(crate::sinks::file::FileSink::open(&f.path).map_err(|error| ServiceError::FileSink { path: f.path.clone(), error })?)
        }
        SinkConfig::Stdout(o) => Arc::new(crate::sinks::stdout::StdoutSink::new(o.pretty)),
        SinkConfig::IotHub(h) => crate::sinks::iothub::build(h, &config.gateway.state_dir, control).await?,
        SinkConfig::EventHubs(h) => crate::sinks::eventhubs::build(h).await?,
    })
}

/// Builds one adapter per simulated device (and the BLE/serial adapters).
fn build_adapters(config: &Config) -> Result<Vec<Box<dyn Adapter>>, ServiceError> {
    let mut out: Vec<Box<dyn Adapter>> = Vec::new();
    for d in &config.devices {
        if let DeviceSource::Simulated(sim) = &d.source {
            out.push(Box::new(SimulatedDevice { device_id: d.id.clone(), kind: d.kind.into(), cfg: sim.clone() }));
        }
    }
    // [device.serial] and [device.hl7_tcp]: one adapter per device.
    out.extend(crate::adapters::serial::adapter::build(&config.devices)?);
    out.extend(crate::adapters::serial::tcp::build(&config.devices)?);
    if let Some(ble) = crate::adapters::ble::build(&config.devices) {
        out.push(ble);
    }
    Ok(out)
}

/// Runs the gateway until `shutdown` is cancelled. `on_start` receives the
/// handle once everything is up (the demo uses it for its live view).
///
/// Three stages, as in tokio's mini-redis: [`start`] opens the outbox and
/// starts every task, [`supervise`] answers signals, feeds the watchdog and
/// keeps the status file until `shutdown`, [`stop`] stops the tasks in
/// pipeline order within bounded times.
pub(crate) async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
    on_start: impl FnOnce(GatewayHandle),
) -> Result<(), ServiceError> {
    let Some(mut running) = start(config, &opts, &shutdown).await? else {
        tracing::info!("stopped while waiting for room on the state filesystem; the outbox was not opened and is as it was");
        return Ok(());
    };
    on_start(running.gateway.clone());
    notify::ready();
    let config = &running.gateway.config;
    tracing::info!(
        "iomt-edge {} running: gateway {}, {} device(s), sink {}",
        env!("CARGO_PKG_VERSION"),
        config.gateway.id,
        config.devices.len(),
        running.gateway.sink_name()
    );
    supervise(&mut running, &opts, &shutdown).await?;
    stop(running).await
}

/// A started gateway: its handle and the tasks [`stop`] stops.
struct Running {
    gateway: GatewayHandle,
    sink: Arc<dyn Sink>,
    health: Arc<Health>,
    adapter_stop: CancellationToken,
    adapter_tasks: Vec<tokio::task::JoinHandle<()>>,
    committer_task: tokio::task::JoinHandle<()>,
    forwarder_stop: CancellationToken,
    forwarder_task: tokio::task::JoinHandle<Result<(), crate::forwarder::ForwarderError>>,
    status: StatusWriter,
}

/// Opens the HL7 right-patient guards' record in the state directory, for
/// every configured device with its association in force, and says in the
/// log what it found (a damaged record in plain words: every HL7 device
/// then refuses messages that name a patient until its association changes).
fn open_patient_guards(config: &Config, associations: &Associations, state_dir: &std::path::Path) -> PatientGuards {
    let devices = config.devices.iter().map(|d| (d.id.clone(), associations.patient_of(&d.id).flatten()));
    let (guards, opened) = PatientGuards::open(state_dir, devices);
    match opened {
        Opened::Fresh => {}
        Opened::Read { kept, reset } => {
            tracing::info!("HL7 patient guards: {kept} device(s) keep their charted patient; {reset} start over (their association changed)")
        }
        Opened::Damaged(why) => tracing::error!(
            "the record of which patient each HL7 device charts ({}) could not be used: {why}. So as not to chart another patient's data, every HL7 \
             device whose patient comes from its association now refuses messages that name a patient (answered AE, not stored; \
             the monitor keeps them) until its patient association is changed. The unreadable file was kept as {} \
             (docs/serial.md, \"Patients from HL7\")",
            state_dir.join(patient_guards::FILE_NAME).display(),
            state_dir.join(patient_guards::DAMAGED_FILE_NAME).display()
        ),
    }
    guards
}

/// Opens the outbox (waiting for room if the state filesystem has none; `None`
/// when `shutdown` came first), builds the sink and the adapters, and starts
/// the committer, the forwarder and the adapters.
async fn start(config: Config, opts: &RunOptions, shutdown: &CancellationToken) -> Result<Option<Running>, ServiceError> {
    let config = Arc::new(config);
    crate::redact::init(&config.gateway.id);
    let state_dir = config.gateway.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|error| ServiceError::StateFolder { path: state_dir.clone(), error })?;

    let outbox_dir = state_dir.join("outbox");
    let Some((outbox, report)) = open_outbox_waiting_for_room(&outbox_dir, &config.outbox, shutdown).await? else {
        return Ok(None);
    };
    let outbox = Arc::new(outbox);
    tracing::info!(
        "outbox open in {:.0} ms: {} readings queued, {} batches to resend",
        report.took.as_secs_f64() * 1000.0,
        outbox.len(),
        outbox.stats().in_flight_batches
    );
    log_previous_stop(&report);

    let associations = Arc::new(Associations::load(&config.devices, Some(&state_dir)));
    let registry = Arc::new(DeviceRegistry::with_patient_guards(open_patient_guards(&config, &associations, &state_dir)));
    for d in &config.devices {
        registry.register(&d.id);
    }
    let health = Arc::new(Health::new());

    let stats = Arc::new(ForwarderStats::default());
    let flush = FlushHandle::default();
    let settings = ForwarderSettings::from_config(&config);
    let gateway = GatewayHandle::new(
        config.clone(),
        outbox.clone(),
        registry.clone(),
        associations.clone(),
        stats.clone(),
        flush.clone(),
        settings.batching.clone(),
    );
    let sink = build_sink(&config, Arc::new(gateway.clone())).await?;
    gateway.set_sink_name(sink.name());
    let adapters = build_adapters(&config)?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Reading>(INTAKE_CAPACITY);
    let committer = Committer {
        outbox: outbox.clone(),
        window: Duration::from_millis(config.outbox.flush_interval_ms),
        hooks: commit_hooks(&associations, &registry),
        health: health.clone(),
        report: CommitReport(opts.report_commits),
    };
    let (committer_task, committed, group_sync) = committer.spawn(rx);

    let forwarder = Forwarder {
        outbox: outbox.clone(),
        sink: sink.clone(),
        settings,
        committed,
        stats,
        health: health.clone(),
        flush,
        group_sync: Some(group_sync),
    };
    let forwarder_stop = CancellationToken::new();
    let forwarder_task = tokio::spawn(forwarder.run(forwarder_stop.clone()));

    let adapter_stop = CancellationToken::new();
    let sender = ReadingSender::new(tx);
    let mut adapter_tasks = Vec::new();
    for d in &config.devices {
        let _ = sender.send(Reading::event(&d.id, d.kind.into(), DeviceEvent::GatewayStarted)).await;
    }
    for a in adapters {
        tracing::info!("starting adapter: {}", a.describe());
        let ctx = AdapterContext { readings: sender.clone(), registry: registry.clone(), shutdown: adapter_stop.clone() };
        adapter_tasks.push(tokio::spawn(async move {
            let what = a.describe();
            if let Err(e) = a.run(ctx).await {
                tracing::error!("adapter stopped: {what}: {}", crate::logging::error_chain(&e));
            }
        }));
    }
    drop(sender);
    let status = StatusWriter::new(super::status::file_path(&config.gateway.state_dir));
    Ok(Some(Running { gateway, sink, health, adapter_stop, adapter_tasks, committer_task, forwarder_stop, forwarder_task, status }))
}

/// The status file `iomt-edge status` reads, and whether writing it failed
/// (said once).
struct StatusWriter {
    path: std::path::PathBuf,
    last: Option<tokio::time::Instant>,
    failed: bool,
}

impl StatusWriter {
    fn new(path: std::path::PathBuf) -> StatusWriter {
        StatusWriter { path, last: None, failed: false }
    }

    fn write(&mut self, gw: &GatewayHandle, running: bool) {
        self.last = Some(tokio::time::Instant::now());
        if let Err(e) = super::status::write_file(&self.path, gw, running) {
            if !self.failed {
                tracing::warn!("cannot write the status file {} ({e}); `iomt-edge status` will not see this gateway", self.path.display());
                self.failed = true;
            }
        }
    }

    fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= STATUS_FILE_EVERY)
    }
}

/// How often readings older than `max_age` are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// The watchdog is fed every third of its interval; without a watchdog the
/// health and status tick is this.
const TICK_WITHOUT_WATCHDOG: Duration = Duration::from_secs(2);
/// The shortest tick, however short the watchdog interval.
const TICK_MIN: Duration = Duration::from_millis(200);
/// A stage that has not reported for this long is unhealthy when there is no
/// watchdog (with one: half its interval, at least 2 s).
const HEALTH_LIMIT_WITHOUT_WATCHDOG_MS: u64 = 30_000;

/// Status, watchdog, signals and outbox housekeeping until `shutdown`. An
/// error means the forwarder ended by itself (a bug: it rides out outbox
/// errors); the gateway then exits without the orderly stop.
async fn supervise(r: &mut Running, opts: &RunOptions, shutdown: &CancellationToken) -> Result<(), ServiceError> {
    let watchdog = notify::watchdog_interval();
    let health_limit = watchdog.map(|w| (w.as_millis() as u64 / 2).max(2000)).unwrap_or(HEALTH_LIMIT_WITHOUT_WATCHDOG_MS);
    let mut tick = tokio::time::interval(watchdog.map(|w| w / 3).unwrap_or(TICK_WITHOUT_WATCHDOG).max(TICK_MIN));
    let mut last_expire = tokio::time::Instant::now();
    let mut unhealthy = Episode::default();
    let gateway = r.gateway.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = opts.signals.status.notified() => {
                // SIGUSR1/SIGUSR2: one status line in the log, the status file now.
                tracing::info!("status (SIGUSR1/SIGUSR2): {}", gateway.status_line());
                r.status.write(&gateway, true);
            }
            _ = opts.signals.reload.notified() => {
                // SIGHUP: re-read what can be re-read; never stop.
                let file = opts.config_file.clone();
                let check = opts.check_config;
                let said = tokio::task::spawn_blocking(move || reload_report(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), check))
                    .await
                    .unwrap_or_else(|e| Err(format!("checking the config file failed ({e})")));
                // A file the next start would refuse is a warning: a restart
                // (a reboot, a crash) would not come back up.
                match said {
                    Ok(said) => tracing::info!("SIGHUP: {said}; {}", gateway.status_line()),
                    Err(said) => tracing::warn!("SIGHUP: {said}; {}", gateway.status_line()),
                }
                r.status.write(&gateway, true);
            }
            res = &mut r.forwarder_task => {
                // The forwarder rides out outbox errors itself; ending early is a bug.
                let why = match res { Ok(Ok(())) => "stopped".to_string(), Ok(Err(e)) => crate::logging::error_chain(&e), Err(e) => e.to_string() };
                return Err(ServiceError::ForwarderStopped(why));
            }
            _ = tick.tick() => {
                notify::status(&gateway.status_line());
                if r.status.due() {
                    r.status.write(&gateway, true);
                }
                match r.health.check(health_limit) {
                    Ok(()) => { notify::watchdog(); unhealthy.end(); }
                    Err(why) => if unhealthy.occurred() {
                        tracing::error!("not feeding the watchdog: {why}");
                    }
                }
                if last_expire.elapsed() >= EXPIRE_EVERY {
                    last_expire = tokio::time::Instant::now();
                    let ob = gateway.outbox.clone();
                    if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || ob.expire()).await {
                        if n > 0 {
                            tracing::warn!("dropped {n} readings older than max_age ({})", humantime::format_duration(gateway.config.outbox.max_age));
                        }
                    }
                }
            }
        }
    }
}

/// Orderly stop: adapters first, then let the committer drain and flush,
/// then give in-flight sends a moment, then flush the outbox. Every stage
/// has a bound (STOP_ADAPTERS + STOP_COMMITTER + STOP_FORWARDER + STOP_SINK
/// = 27 s, under the unit's TimeoutStopSec=30s), and no stage waits for a
/// sink that hangs: a send that never returns (a hung network mount under the
/// file sink) is given up after the forwarder's grace period and its readings
/// stay in the outbox for the next start.
async fn stop(r: Running) -> Result<(), ServiceError> {
    let Running { gateway, sink, adapter_stop, adapter_tasks, committer_task, forwarder_stop, mut forwarder_task, mut status, .. } = r;
    notify::stopping();
    tracing::info!("stopping: committing what adapters handed over");
    adapter_stop.cancel();
    let adapters_until = tokio::time::Instant::now() + STOP_ADAPTERS;
    for t in adapter_tasks {
        if tokio::time::timeout_at(adapters_until, t).await.is_err() {
            tracing::warn!("an adapter did not stop in time");
            break;
        }
    }
    let _ = tokio::time::timeout(STOP_COMMITTER, committer_task).await;
    forwarder_stop.cancel();
    match tokio::time::timeout(STOP_FORWARDER, &mut forwarder_task).await {
        Ok(Ok(Err(e))) => tracing::error!("forwarder: {}", crate::logging::error_chain(&e)),
        Ok(_) => {}
        Err(_) => {
            // It must not touch the outbox once it is closed below.
            forwarder_task.abort();
            tracing::warn!("the forwarder did not stop in time; unconfirmed readings stay in the outbox");
        }
    }
    if tokio::time::timeout(STOP_SINK, sink.close()).await.is_err() {
        tracing::warn!("closing the {} sink took too long; stopping without it", gateway.sink_name());
    }
    let ob = gateway.outbox.clone();
    tokio::task::spawn_blocking(move || {
        let closed = ob.flush().and_then(|_| ob.close_clean());
        let Err(first) = closed else { return };
        // The store can be closed after a write error (a full disk): try
        // once to reopen it. Either way every reading reported committed is
        // on disk already (each commit was synced); only the record of a
        // clean stop is missing, and the next start recounts.
        let again = ob.recover(&mut []).and_then(|_| ob.flush()).and_then(|_| ob.close_clean());
        if let Err(e) = again {
            tracing::warn!(
                "cannot record a clean stop in the outbox ({first}; {e}); every committed reading is on disk, and the next start recounts them"
            );
        }
    })
    .await?;
    status.write(&gateway, false);
    tracing::info!("stopped: {}", gateway.status_line());
    Ok(())
}

/// How often a start that found no room for its outbox tries again.
const OPEN_RETRY: Duration = Duration::from_secs(5);

/// Opens the outbox; when the state filesystem has no room for that (sled
/// writes when it opens; a damaged store needs room for its salvage), says so
/// once in plain words and tries again every [`OPEN_RETRY`] instead of
/// exiting, which under systemd was a restart loop. While it waits, nothing is
/// taken from the devices (there is nowhere to commit it), the stored
/// readings stay as they are, systemd is told READY with a status line saying
/// why, and the watchdog is fed (the process is doing what it should).
/// `None` if asked to stop while waiting.
async fn open_outbox_waiting_for_room(
    dir: &std::path::Path,
    cfg: &crate::config::OutboxConfig,
    shutdown: &CancellationToken,
) -> Result<Option<(Outbox, crate::outbox::OpenReport)>, ServiceError> {
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        let (d, c) = (dir.to_path_buf(), cfg.clone());
        match tokio::task::spawn_blocking(move || Outbox::open(&d, &c)).await? {
            Ok(opened) => {
                if let Some(t) = waiting_since {
                    tracing::warn!("the state filesystem has room again after {} s; the outbox is open", t.elapsed().as_secs());
                }
                return Ok(Some(opened));
            }
            Err(e) if e.is_no_space() => {
                if waiting_since.is_none() {
                    waiting_since = Some(std::time::Instant::now());
                    let state_fs = dir.parent().unwrap_or(dir);
                    let free = crate::outbox::space::fs_space(state_fs).map(|(_, f)| crate::config::units::ByteSize(f).to_string());
                    tracing::error!(
                        "cannot open the outbox: the state filesystem {} is full ({} free; {e}); the stored readings are kept as they are; \
                         waiting for room and trying again every {} s, without taking readings from the devices until then. Free space on {} (or remove what fills it)",
                        state_fs.display(),
                        free.unwrap_or_else(|_| "unknown".into()),
                        OPEN_RETRY.as_secs(),
                        state_fs.display()
                    );
                    notify::ready();
                    notify::status("waiting for room on the state filesystem to open the outbox");
                }
                notify::watchdog();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(OPEN_RETRY) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line on what the previous stop left behind: after a power cut, a crash
/// or `kill -9`, how many readings were recovered and whether the store's own
/// counters disagreed with what it holds.
fn log_previous_stop(report: &crate::outbox::OpenReport) {
    use crate::outbox::PreviousStop;
    match (report.previous_stop, report.recount) {
        (PreviousStop::Unclean { .. } | PreviousStop::Unknown, Some(rc)) => {
            let discarded = if rc.readings == rc.counted_before {
                "nothing had to be discarded".to_string()
            } else if rc.readings < rc.counted_before {
                format!(
                    "{} readings the store had counted could not be found (the storage lost writes it had confirmed); the counters were corrected",
                    rc.counted_before - rc.readings
                )
            } else {
                format!("the store's counters were behind by {} readings and were corrected; nothing was lost", rc.readings - rc.counted_before)
            };
            tracing::warn!(
                "the last stop was not clean (power cut, crash or kill); recovered {} committed readings and {} batches to resend; {}",
                rc.readings,
                rc.in_flight_batches,
                discarded
            );
        }
        (PreviousStop::Clean { .. }, _) => tracing::debug!("the last stop was clean"),
        _ => {}
    }
}

/// How often the running daemon rewrites its status file.
const STATUS_FILE_EVERY: Duration = Duration::from_secs(5);

/// How long the adapters have, together, to stop after SIGTERM.
const STOP_ADAPTERS: Duration = Duration::from_secs(5);
/// How long the committer has to store what the adapters handed over.
const STOP_COMMITTER: Duration = Duration::from_secs(10);
/// How long the forwarder has to stop: its grace period for confirmations
/// (5 s, [`ForwarderSettings::shutdown_grace`]) and a margin.
const STOP_FORWARDER: Duration = Duration::from_secs(8);
/// How long a sink may take to close (the IoT Hub sink bounds its MQTT
/// DISCONNECT at 3 s itself).
const STOP_SINK: Duration = Duration::from_secs(4);

/// What SIGHUP means to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hangup {
    /// The daemon (`run`): SIGHUP asks it to re-read what it can and say what
    /// needs a restart ([`reload_report`]); it never stops the gateway.
    Reload,
    /// An interactive run (`demo`): SIGHUP means the terminal went away, so the
    /// run stops cleanly, as on Ctrl-C.
    Stop,
}

/// Signals that ask a running gateway for something other than a stop; the
/// main loop of [`run`] answers them. A request that comes in before the
/// loop runs (while the outbox opens) is kept until it does.
#[derive(Debug, Clone, Default)]
pub(crate) struct ControlSignals {
    /// SIGUSR1 or SIGUSR2: log a status line and rewrite the status file.
    pub(crate) status: Arc<tokio::sync::Notify>,
    /// SIGHUP (daemon): re-read the config file and report.
    pub(crate) reload: Arc<tokio::sync::Notify>,
}

/// Installs the gateway's signal handlers; call it inside the runtime before
/// [`run`]. SIGTERM and SIGINT (Ctrl-C) cancel `token`: a clean stop.
/// SIGUSR1 and SIGUSR2 ask for a status line. SIGHUP reloads or stops, as
/// `hangup` says. The handlers are in place when this returns, so none of
/// these signals can kill the process with their default action (which would
/// leave `status.json` saying "running" and the outbox unclosed). SIGPIPE
/// stays ignored (Rust's default): a closed socket is an error to handle, not
/// a reason to die.
pub(crate) fn handle_signals(token: CancellationToken, hangup: Hangup) -> ControlSignals {
    use tokio::signal::unix::{signal, SignalKind};
    let control = ControlSignals::default();
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for {name}: {e}");
            None
        }
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut int = listen(SignalKind::interrupt(), "SIGINT");
    let mut hup = listen(SignalKind::hangup(), "SIGHUP");
    let mut usr1 = listen(SignalKind::user_defined1(), "SIGUSR1");
    let mut usr2 = listen(SignalKind::user_defined2(), "SIGUSR2");
    let c = control.clone();
    tokio::spawn(async move {
        // A signal we could not listen for never arrives here.
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                _ = next(&mut term) => break,
                _ = next(&mut int) => break,
                _ = next(&mut hup) => match hangup {
                    Hangup::Reload => c.reload.notify_one(),
                    Hangup::Stop => {
                        tracing::info!("SIGHUP (the terminal closed): stopping");
                        break;
                    }
                },
                _ = next(&mut usr1) => c.status.notify_one(),
                _ = next(&mut usr2) => c.status.notify_one(),
            }
        }
        token.cancel();
    });
    control
}

/// What SIGHUP can do without a restart, in one sentence: the config file is
/// read again and compared with the one the gateway started from (it is
/// applied only by a restart: outbox, devices and sink are set up at start);
/// secrets in files or the environment are read again at every connection
/// anyway, and the file sink follows a moved or removed file by itself.
/// `check` is the check `run` makes at start (the file and this machine);
/// without it the file alone is checked. `Err` when the next start would
/// fail (the file cannot be read or is not valid).
pub(crate) fn reload_report(started_from: Option<(&std::path::Path, &str)>, check: Option<ConfigCheck>) -> Result<String, String> {
    let Some((path, old)) = started_from else {
        return Ok("nothing to re-read (no config file)".into());
    };
    let now = match crate::config::read_text(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(format!(
                "cannot read the config file {} ({e}); the gateway keeps running with the settings it started with; \
                 put the file back before the next restart",
                path.display()
            ))
        }
    };
    if now == old {
        return Ok(format!("the config file {} is unchanged; secrets are re-read at each connection", path.display()));
    }
    let checked = match check {
        Some(check) => check(path),
        None => crate::config::load(path).map(|_| ()).map_err(|e| e.to_string()),
    };
    match checked {
        Ok(()) => Ok(format!(
            "the config file {} changed and is valid; `systemctl restart iomt-edge` applies it (the gateway keeps running with the settings it started with)",
            path.display()
        )),
        Err(e) => Err(format!(
            "the config file changed and is NOT valid: {e}; the gateway keeps running with the settings it started with; fix the file before the next restart"
        )),
    }
}
