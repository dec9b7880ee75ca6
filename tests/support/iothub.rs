//! Helpers shared by the IoT Hub integration tests.
#![allow(dead_code)]

use iomt_edge::config::iothub::IotHubSinkConfig;
use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig, ReceivedMessage};
use iomt_edge::sinks::iothub::session::Tuning;
use iomt_edge::sinks::iothub::{IotHubSink, SimpleControl};
use iomt_edge::sinks::{Sink, SinkError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Fast reconnection timing for tests.
pub fn fast_tuning() -> Tuning {
    Tuning {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        auth_retry: Duration::from_millis(700),
        drain_timeout: Duration::from_secs(2),
        connect_wait: Duration::from_secs(2),
        report_every: Duration::from_secs(60),
    }
}

/// An emulator on 127.0.0.1 with a random port.
pub async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

/// A config for a device of `emu`, trusting its CA (written into `dir`).
pub fn config(emu: &Emulator, device: &str, dir: &Path) -> IotHubSinkConfig {
    let cs = emu.add_device(device);
    let mut cfg = IotHubSinkConfig::with_connection_string(&cs);
    cfg.ca_file = Some(emu.write_ca(dir).unwrap());
    cfg.ack_timeout = Duration::from_secs(2);
    cfg
}

/// Starts the sink.
pub fn sink(cfg: &IotHubSinkConfig, dir: &Path) -> (Arc<IotHubSink>, Arc<SimpleControl>) {
    let control = Arc::new(SimpleControl::default());
    let s = IotHubSink::start(cfg, dir, control.clone(), fast_tuning()).unwrap();
    (Arc::new(s), control)
}

/// `n` one-reading messages for `device`, seqs starting at `first`.
pub fn messages(device: &str, first: u64, n: u64) -> Vec<Message> {
    (first..first + n)
        .map(|seq| {
            let mut r = Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + (seq % 40) as f64);
            r.seq = seq;
            Message::from_batch("gw-test", "0000beef", &[r]).unwrap()
        })
        .collect()
}

/// Sends like the forwarder does: retry each message until it is confirmed
/// (bounded), in order. Returns the errors seen.
pub async fn send_all(sink: &dyn Sink, msgs: &[Message]) -> Vec<String> {
    let mut errors = Vec::new();
    for m in msgs {
        let mut tries = 0;
        loop {
            match sink.send(m).await {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 200, "message {} never confirmed: {e}", m.message_id);
                    assert!(!matches!(e, SinkError::TooLarge(_)), "unexpected {e}");
                    errors.push(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    errors
}

/// Checks the delivery contract: every sent message arrived, each extra copy
/// has the same id and body, and first arrivals are in send order (per device).
/// Returns the number of duplicates.
pub fn check_delivery(sent: &[Message], got: &[ReceivedMessage]) -> usize {
    let mut first_index: HashMap<String, usize> = HashMap::new();
    let mut dups = 0;
    for (i, g) in got.iter().enumerate() {
        let mid = g.property("$.mid").expect("every message carries $.mid").to_string();
        if let std::collections::hash_map::Entry::Vacant(e) = first_index.entry(mid.clone()) {
            e.insert(i);
        } else {
            dups += 1;
            let orig = sent.iter().find(|m| m.message_id == mid).expect("duplicate of a sent message");
            assert_eq!(g.body, orig.to_json(), "a duplicate differs from the original");
        }
    }
    let mut last: HashMap<&str, usize> = HashMap::new();
    for m in sent {
        let idx = *first_index.get(&m.message_id).unwrap_or_else(|| panic!("message {} was never delivered", m.message_id));
        let prev = last.insert(m.device_id.as_str(), idx);
        assert!(prev.is_none_or(|p| p < idx), "message {} arrived out of order", m.message_id);
    }
    assert_eq!(first_index.len(), sent.len(), "the hub received messages that were never sent");
    dups
}

/// The Python interpreter with azure-iot-device, or None (after printing SKIPPED)
/// when it is missing and not required.
pub fn python_with_sdk() -> Option<String> {
    let py = std::env::var("IOMT_TEST_PYTHON").ok();
    let ok =
        py.as_ref().is_some_and(|p| std::process::Command::new(p).args(["-c", "import azure.iot.device"]).output().is_ok_and(|o| o.status.success()));
    if ok {
        return py;
    }
    super::skip(&super::this_test(), "IOMT_TEST_PYTHON does not point at a Python with azure-iot-device (scripts/requirements-test.txt)");
    None
}

/// Microsoft's Python device SDK running `scripts/iothub_sdk_client.py`, its
/// stdout lines collected as they come; killed on drop.
pub struct SdkClient {
    child: Option<std::process::Child>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
}

impl SdkClient {
    /// Starts the script with these arguments.
    pub fn start(py: &str, args: &[&str]) -> SdkClient {
        use std::io::{BufRead, BufReader};
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/iothub_sdk_client.py");
        let mut child = std::process::Command::new(py)
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the SDK script");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        SdkClient { child: Some(child), lines, seen: Vec::new() }
    }

    /// Waits up to 60 s for the script's `"ready"` line; panics with its
    /// output and `context()` otherwise.
    pub async fn wait_ready(&mut self, context: impl Fn() -> String) {
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = self.lines.recv().await {
                let done = l.contains("\"ready\"");
                self.seen.push(l);
                if done {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !ready {
            let mut err = String::new();
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                if let Some(e) = c.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(e, &mut err);
                }
            }
            panic!("SDK did not get ready; stdout {:?}; stderr {err}; {}", self.seen, context());
        }
    }

    /// Waits up to 30 s for the script to end; its exit status, if it ended.
    pub async fn finish(mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    return Some(s);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for SdkClient {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
