//! Shared by the tests that run the gateway binary as a real process: start it
//! with `--report-commits`, collect what it reports committed, and read what
//! was delivered.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// seq -> device id of every reading the gateway reported committed.
pub type Committed = Arc<Mutex<BTreeMap<u64, String>>>;

/// Three simulated devices at 15, 20 and 25 ms (one with dropouts, one
/// with a patient): the `[[device]]` tables of the crash and power-cut
/// tests, which count on their rate and seeds.
pub const CRASH_TEST_DEVICES: &str = r#"
[[device]]
id = "strap-a"
kind = "heart_rate_strap"
patient_id = "P-1"
[device.simulated]
interval_ms = 15
seed = 1
dropout_probability = 0.05

[[device]]
id = "oxi-b"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 20
seed = 2

[[device]]
id = "strap-c"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 25
seed = 3
"#;

/// Starts `iomt-edge run --report-commits --config CONFIG`; a thread adds each
/// reported (seq, device) to `committed` until the process's stdout closes.
pub fn start(config: &Path, committed: Committed) -> (Child, std::thread::JoinHandle<()>) {
    // Debugging aid: IOMT_TEST_GATEWAY_LOG appends the gateway's log to a file.
    let log = std::env::var_os("IOMT_TEST_GATEWAY_LOG").map(std::path::PathBuf::from);
    start_logging_to(config, committed, log.as_deref())
}

/// [`start`], appending the gateway's log (stderr) to `log` when given.
pub fn start_logging_to(config: &Path, committed: Committed, log: Option<&Path>) -> (Child, std::thread::JoinHandle<()>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iomt-edge"));
    cmd.args(["run", "--report-commits", "--config"]).arg(config);
    start_command(cmd, committed, log)
}

/// Starts `cmd`, a command that ends in `iomt-edge run --report-commits ...`
/// (possibly inside a chroot), collecting what it reports as [`start`] does.
pub fn start_command(mut cmd: Command, committed: Committed, log: Option<&Path>) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .env("RUST_LOG", std::env::var("IOMT_TEST_GATEWAY_RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(match log {
            Some(path) => std::fs::OpenOptions::new().create(true).append(true).open(path).map(Stdio::from).unwrap_or(Stdio::null()),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start gateway");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // SIGKILL can cut the last line short: those readings were not
            // reported, so they are not counted.
            if !line.ends_with('\n') {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(&line).expect("commit report is JSON");
            let mut c = committed.lock().unwrap();
            for item in v["committed"].as_array().unwrap() {
                c.insert(item[0].as_u64().unwrap(), item[1].as_str().unwrap().to_string());
            }
        }
    });
    (child, reader)
}

/// Sends SIGTERM.
pub fn terminate(child: &Child) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// What arrived at the destination, message by message, in arrival order.
#[derive(Default)]
pub struct Delivered {
    /// seq -> message ids it was delivered under
    pub ids: HashMap<u64, BTreeSet<String>>,
    /// device -> seqs in arrival order (first occurrence only)
    pub order: HashMap<String, Vec<u64>>,
    /// seq -> device it was delivered for
    pub device_of: HashMap<u64, String>,
    /// seq -> how many times it arrived
    pub copies: HashMap<u64, u32>,
}

impl Delivered {
    /// Adds one delivered message body (our JSON message format).
    pub fn add(&mut self, body: &serde_json::Value) {
        let id = body["messageId"].as_str().unwrap().to_string();
        let device = body["deviceId"].as_str().unwrap().to_string();
        for r in body["readings"].as_array().unwrap() {
            let seq = r["seq"].as_u64().unwrap();
            *self.copies.entry(seq).or_default() += 1;
            let first = !self.ids.contains_key(&seq);
            self.ids.entry(seq).or_default().insert(id.clone());
            if first {
                self.order.entry(device.clone()).or_default().push(seq);
                self.device_of.insert(seq, device.clone());
            }
        }
    }

    /// Reads an NDJSON file written by the file sink.
    pub fn from_ndjson(path: &Path) -> Delivered {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut d = Delivered::default();
        for line in text.lines() {
            d.add(&serde_json::from_str(line).expect("every delivered line is a whole JSON message"));
        }
        d
    }

    /// As [`Delivered::from_ndjson`] while the gateway may still be writing
    /// the file: a last line without its newline is a write in progress
    /// (the sink writes a line in more than one `write`), not yet delivered.
    pub fn from_ndjson_so_far(path: &Path) -> Delivered {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        let mut d = Delivered::default();
        for line in complete.lines() {
            d.add(&serde_json::from_str(line).expect("every delivered line is a whole JSON message"));
        }
        d
    }

    /// The delivery contract: every committed reading arrived, for its device,
    /// under a single message id; each device's readings arrived in order.
    pub fn check(&self, committed: &BTreeMap<u64, String>) {
        for (seq, device) in committed {
            let ids = self.ids.get(seq).unwrap_or_else(|| panic!("committed reading {seq} was never delivered"));
            assert_eq!(ids.len(), 1, "reading {seq} was delivered under different message ids: {ids:?}");
            assert_eq!(self.device_of.get(seq), Some(device), "reading {seq} delivered for the wrong device");
        }
        for (device, seqs) in &self.order {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "readings of {device} were delivered out of order");
        }
    }

    /// How many readings arrived more than once (always under the same id).
    pub fn duplicated(&self) -> usize {
        self.copies.values().filter(|n| **n > 1).count()
    }
}

/// Writes the config of the cloud end-to-end tests (`gateway_iothub_e2e`,
/// `gateway_eventhubs_e2e`) to `dir/gw.toml`, mode 0600 (its sink table
/// holds a secret), with the state folder `dir/state`: gateway `id`; group
/// commit every 50 ms; batches at most 200 ms old, retried after 100 ms to
/// 1 s (`forwarder_extra`: more `[forwarder]` lines, each ending in a
/// newline); two simulated devices, strap-1 (patient P-77, every 40 ms,
/// seed `seeds.0`) and oxi-1 (every 50 ms, seed `seeds.1`); then `sink`, the
/// whole `[sink.…]` table. Returns the config's path.
pub fn write_two_device_cloud_config(dir: &Path, id: &str, forwarder_extra: &str, seeds: (u64, u64), sink: &str) -> std::path::PathBuf {
    let text = format!(
        r#"[gateway]
id = "{id}"
state_dir = "{state}"
[outbox]
flush_interval_ms = 50
[forwarder]
batch_max_age_ms = 200
retry_initial_ms = 100
retry_max_ms = 1000
{forwarder_extra}[[device]]
id = "strap-1"
kind = "heart_rate_strap"
patient_id = "P-77"
[device.simulated]
interval_ms = 40
seed = {strap_seed}
[[device]]
id = "oxi-1"
kind = "pulse_oximeter"
[device.simulated]
interval_ms = 50
seed = {oxi_seed}
{sink}
"#,
        state = dir.join("state").display(),
        strap_seed = seeds.0,
        oxi_seed = seeds.1,
    );
    let p = dir.join("gw.toml");
    std::fs::write(&p, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Waits until every reading committed so far (at least one) is in what
/// `delivered` reads from the destination, polling every 200 ms; fails the
/// test, saying `what` and how many are missing, after `limit`. Readings
/// committed meanwhile are not waited for: while devices stream, some are
/// always on their way, so "nothing missing" would depend on catching a
/// quiet instant. The tests' final checks cover those.
pub async fn wait_delivered(committed: &Committed, what: &str, limit: std::time::Duration, delivered: impl Fn() -> Delivered) {
    let deadline = std::time::Instant::now() + limit;
    let mut target: Vec<u64> = Vec::new();
    loop {
        if target.is_empty() {
            target = committed.lock().unwrap().keys().copied().collect();
        }
        let d = delivered();
        let missing = target.iter().filter(|s| !d.ids.contains_key(s)).count();
        if missing == 0 && !target.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {missing} of {} committed readings not delivered", target.len());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
