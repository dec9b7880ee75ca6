//! The whole gateway against the Event Hubs emulator, both as real processes:
//! simulated devices -> outbox -> forwarder -> Event Hubs sink (HTTPS) ->
//! `iomt-edge simulate eventhubs`. Through every injected fault (401,
//! ServerBusy, 413 above a size, slow answers, connection resets, lost
//! answers), a `kill -9` of the gateway with batches in flight, an outage of
//! the event hub (its process killed and restarted on the same port), and
//! short-lived tokens (SAS and Entra ID) that must be renewed: every
//! committed reading arrives, for its device, under one message id, in
//! per-device order, with the documented event properties. A backlog drains
//! in requests of several events of one device.

use crate::support::gateway as gateway_common;

use gateway_common::{start, terminate, Committed, Delivered};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A gateway process, killed if a failed assertion leaves it running.
struct Gw(Child);

impl Drop for Gw {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The emulator as a separate process; killed when dropped.
struct Emu {
    child: Child,
    dir: PathBuf,
    desc: Value,
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emu {
    /// Starts `simulate eventhubs` with its state in `dir` and waits for its emulator.json.
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Emu {
        let json = dir.join("emulator.json");
        let _ = std::fs::remove_file(&json);
        let child = Command::new(env!("CARGO_BIN_EXE_iomt-edge"))
            .args(["simulate", "eventhubs", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        // Owned from here on, so a failed wait below still kills it.
        let mut emu = Emu { child, dir: dir.to_path_buf(), desc: Value::Null };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(desc) = std::fs::read(&json).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
                emu.desc = desc;
                return emu;
            }
            assert!(Instant::now() < deadline, "the emulator did not write {}", json.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, k: &str) -> String {
        match &self.desc[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn port(&self) -> u16 {
        self.desc["port"].as_u64().unwrap() as u16
    }

    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.get("ca_file")).unwrap()).unwrap();
        reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
    }

    async fn set_faults(&self, faults: Value) {
        let r = self.client().put(format!("{}/$emulator/faults", self.get("url"))).body(faults.to_string()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    }

    async fn stats(&self) -> Value {
        self.client().get(format!("{}/$emulator/stats", self.get("url"))).send().await.unwrap().json().await.unwrap()
    }

    /// Every recorded event, checked against the documented properties.
    fn delivered(&self) -> Delivered {
        let mut d = Delivered::default();
        let Ok(entries) = std::fs::read_dir(self.dir.join("events")) else { return d };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let ev: Value = serde_json::from_str(line).expect("a recorded event is one JSON line");
                let body = &ev["Body"];
                assert_eq!(ev["SystemProperties"]["message-id"], body["messageId"], "MessageId is the message id");
                assert_eq!(ev["SystemProperties"]["x-opt-partition-key"], body["deviceId"], "PartitionKey is the device id");
                assert_eq!(ev["Properties"]["site"], "ward-3", "configured user properties travel with every event");
                d.add(body);
            }
        }
        d
    }
}

/// The gateway's config ([`gateway_common::write_two_device_cloud_config`]):
/// `sink` is the rest of the `[sink.eventhubs]` table, which sends the
/// user property `site = "ward-3"` and waits 5 s at most for an answer.
fn gateway_config(dir: &Path, sink: &str) -> PathBuf {
    let sink = format!("[sink.eventhubs]\nuser_properties = {{ site = \"ward-3\" }}\nrequest_timeout = \"5s\"\n{sink}");
    gateway_common::write_two_device_cloud_config(dir, "eh-e2e", "auth_retry_ms = 1000\n", (21, 22), &sink)
}

/// Waits until every reading committed so far (at least one) is recorded by
/// the emulator ([`gateway_common::wait_delivered`]).
async fn wait_delivered(emu: &Emu, committed: &Committed, what: &str, limit: Duration) {
    gateway_common::wait_delivered(committed, what, limit, || emu.delivered()).await
}

fn refused(stats: &Value, what: &str) -> u64 {
    stats["refused"][what].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_to_event_hubs_survives_every_fault_kill9_outage_and_token_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let emu_dir = dir.path().join("emu");
    let emu = Emu::start(&emu_dir, 0, &[]);
    let port = emu.port();
    // SAS tokens of 5 s: renewed every 4 s, so several renewals during the test.
    let cfg = gateway_config(
        dir.path(),
        &format!("connection_string = {{ value = \"{}\" }}\nca_file = \"{}\"\ntoken_ttl = \"5s\"", emu.get("connection_string"), emu.get("ca_file")),
    );
    let committed: Committed = Default::default();

    // 1. Live streaming.
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = Gw(gw);
    wait_delivered(&emu, &committed, "live", Duration::from_secs(30)).await;

    // 2. Every fault at once: 401, ServerBusy (>= 4 s wait), 413 above 1500
    //    bytes (messages are split until they fit), slow answers, resets,
    //    answers lost after the batch was stored (resent under the same id).
    emu.set_faults(serde_json::json!({
        "unauthorized": 1, "server_busy": 1, "too_large_above": 1500, "delay_ms": 150, "resets": 2, "lost_answers": 2
    }))
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_delivered(&emu, &committed, "with faults", Duration::from_secs(40)).await;
    let s = emu.stats().await;
    for f in ["401:injected", "503:ServerBusy", "413", "reset", "lost-answer"] {
        assert!(refused(&s, f) > 0, "fault {f} was never hit: {s}");
    }
    // Several SAS tokens (renewed before their 5 s expiry), none used expired.
    assert!(s["distinct_tokens"].as_u64().unwrap_or(0) >= 2, "{s}");
    assert_eq!(refused(&s, "401:ExpiredToken"), 0, "a token was used after its expiry: {s}");

    // 3. kill -9 with batches in flight (stored, answered 1.5 s later).
    emu.set_faults(serde_json::json!({"delay_ms": 1500})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();
    reader.join().unwrap();
    let before_restart = committed.lock().unwrap().len();

    // 4. Outage: the event hub's process dies; the gateway restarts and
    //    buffers; the event hub comes back on the same port with the same keys.
    drop(emu);
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = Gw(gw);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let emu = Emu::start(&emu_dir, port, &[]);
    wait_delivered(&emu, &committed, "after kill -9 and outage", Duration::from_secs(60)).await;
    let s = emu.stats().await;
    terminate(&gw.0);
    let status = gw.0.wait().unwrap();
    assert!(status.success(), "clean stop expected, got {status:?}");
    reader.join().unwrap();

    let c = committed.lock().unwrap().clone();
    assert!(c.len() > before_restart, "the restarted gateway kept committing");
    let d = emu.delivered();
    d.check(&c);
    assert!(d.duplicated() > 0, "lost answers must have caused resends under the same id");
    assert_eq!(refused(&s, "401:ExpiredToken"), 0, "a token was used after its expiry: {s}");
    let with_patient =
        emu.delivered().order.contains_key("strap-1") && std::fs::read_to_string(emu_dir.join("events/strap-1.ndjson")).unwrap().contains("P-77");
    assert!(with_patient, "strap-1's events carry its patient id");
    eprintln!("{} committed readings delivered to the Event Hubs emulator; {} resent under the same id", c.len(), d.duplicated());
}

/// Several events per request (`max_events_per_request`): during an outage
/// of the event hub each device's readings pile up; when it is back, the
/// backlog drains in batch requests carrying several events (messages) of one
/// device, each message still at most `batch_max_readings` readings. The
/// emulator's own checks see one `PartitionKey` per batch (a mixed one is
/// refused with 400) and count the events per batch; every committed reading
/// arrives once per message id, in per-device order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_in_requests_of_several_events_of_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("emu"), 0, &[]);
    let sink = format!(
        "[sink.eventhubs]\nuser_properties = {{ site = \"ward-3\" }}\nrequest_timeout = \"5s\"\nmax_events_per_request = 8\n\
         connection_string = {{ value = \"{}\" }}\nca_file = \"{}\"",
        emu.get("connection_string"),
        emu.get("ca_file")
    );
    let cfg =
        gateway_common::write_two_device_cloud_config(dir.path(), "eh-batches", "auth_retry_ms = 1000\nbatch_max_readings = 5\n", (31, 32), &sink);
    let committed: Committed = Default::default();
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = Gw(gw);
    wait_delivered(&emu, &committed, "live", Duration::from_secs(30)).await;
    let live = emu.stats().await;
    // The event hub is unreachable for 5 s: about 125 readings of strap-1
    // and 100 of oxi-1 wait, 25 and 20 messages of 5.
    emu.set_faults(serde_json::json!({"down_ms": 5000})).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    wait_delivered(&emu, &committed, "after the outage", Duration::from_secs(40)).await;
    terminate(&gw.0);
    assert!(gw.0.wait().unwrap().success());
    reader.join().unwrap();
    let s = emu.stats().await;
    assert!(refused(&s, "down") > 0, "the outage was never hit: {s}");
    let multi = |v: &Value| v["multi_event_batches"].as_u64().unwrap_or(0);
    assert!(multi(&s) > multi(&live), "the backlog drained without a request of several events: {s}");
    let most = s["max_batch_events"].as_u64().unwrap_or(0);
    assert!((2..=8).contains(&most), "at most 8 events per request, and several at least once: {s}");
    assert!(s["events"].as_u64().unwrap_or(0) > s["accepted_batches"].as_u64().unwrap_or(0), "{s}");
    assert_eq!(refused(&s, "400"), 0, "a batch mixed partition keys or was malformed: {s}");
    let c = committed.lock().unwrap().clone();
    let d = emu.delivered();
    d.check(&c);
    for f in std::fs::read_dir(dir.path().join("emu/events")).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let ev: Value = serde_json::from_str(line).unwrap();
            let n = ev["Body"]["readings"].as_array().map_or(0, Vec::len);
            assert!((1..=5).contains(&n), "an event of {n} readings; batch_max_readings is 5");
        }
    }
    eprintln!(
        "{} readings in {} events, {} batches ({} of several events, at most {})",
        c.len(),
        s["events"],
        s["accepted_batches"],
        s["multi_event_batches"],
        s["max_batch_events"]
    );
}

/// Microsoft Entra ID end to end: the gateway asks the emulator's token
/// endpoint (client credentials, client secret) and sends with the bearer
/// token; tokens live 35 s and the sink stops using one 30 s before expiry,
/// so it must fetch new ones while streaming. A wrong secret is refused with
/// nothing lost, and delivery resumes once the secret file is corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_client_credentials_with_expiring_tokens_and_a_corrected_secret() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("emu"), 0, &["--token-lifetime", "35s"]);
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "not-the-secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = gateway_config(
        dir.path(),
        &format!(
            "namespace = \"{}\"\nevent_hub = \"{}\"\nauthority_host = \"{}\"\ntenant = \"{}\"\nclient_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\nca_file = \"{}\"",
            emu.get("namespace"),
            emu.get("event_hub"),
            emu.get("authority_host"),
            emu.get("tenant"),
            emu.get("client_id"),
            secret_file.display(),
            emu.get("ca_file")
        ),
    );
    let committed: Committed = Default::default();
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = Gw(gw);
    // Refused: readings are committed and kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = emu.stats().await;
    assert!(refused(&s, "token:invalid_client") > 0, "{s}");
    assert_eq!(s["events"].as_u64(), Some(0), "nothing is sent without a token: {s}");
    assert!(!committed.lock().unwrap().is_empty());
    // The operator fixes the secret file: the next token request uses it
    // (the Entra retry waits 2 s, doubling).
    std::fs::write(&secret_file, emu.get("client_secret")).unwrap();
    wait_delivered(&emu, &committed, "after the secret was corrected", Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    wait_delivered(&emu, &committed, "with renewed tokens", Duration::from_secs(30)).await;
    terminate(&gw.0);
    assert!(gw.0.wait().unwrap().success());
    reader.join().unwrap();
    let s = emu.stats().await;
    assert!(s["tokens_issued"].as_u64().unwrap_or(0) >= 2, "tokens must have been renewed: {s}");
    assert_eq!(refused(&s, "401:ExpiredToken"), 0, "a token was used after its expiry: {s}");
    let c = committed.lock().unwrap().clone();
    emu.delivered().check(&c);
}

/// Microsoft Entra ID with a certificate credential, end to end, configured
/// as a user would (`client_certificate_file` + `client_key_file`): the
/// gateway signs a client assertion for each token request and the
/// emulator's token endpoint checks it (signature with the registered
/// certificate, thumbprint, audience, issuer, times, a `jti` used once).
/// First the app registration holds another certificate: every token request
/// is refused (AADSTS700027) and readings are kept; then the emulator comes
/// back on the same port with the right certificate registered and
/// everything arrives, with tokens of 35 s renewed through fresh assertions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_certificate_credential_is_checked_by_the_token_endpoint_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eventhubs");
    let (cert, key, other) = (data.join("test-assertion-cert.pem"), data.join("test-assertion-key.pem"), data.join("test-assertion-other-cert.pem"));
    let emu_dir = dir.path().join("emu");
    let emu = Emu::start(&emu_dir, 0, &["--token-lifetime", "35s", "--client-certificate", other.to_str().unwrap()]);
    let port = emu.port();
    let cfg = gateway_config(
        dir.path(),
        &format!(
            "namespace = \"{}\"\nevent_hub = \"{}\"\nauthority_host = \"{}\"\ntenant = \"{}\"\nclient_id = \"{}\"\n\
             client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\nca_file = \"{}\"",
            emu.get("namespace"),
            emu.get("event_hub"),
            emu.get("authority_host"),
            emu.get("tenant"),
            emu.get("client_id"),
            cert.display(),
            key.display(),
            emu.get("ca_file")
        ),
    );
    let committed: Committed = Default::default();
    let (gw, reader) = start(&cfg, committed.clone());
    let mut gw = Gw(gw);
    // Signed with a key whose certificate is not registered: refused, kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = emu.stats().await;
    assert!(refused(&s, "token:AADSTS700027") > 0, "{s}");
    assert_eq!(s["tokens_issued"].as_u64(), Some(0), "{s}");
    assert_eq!(s["events"].as_u64(), Some(0), "nothing is sent without a token: {s}");
    assert!(!committed.lock().unwrap().is_empty());
    // The right certificate registered (same port, same CA and keys).
    drop(emu);
    let emu = Emu::start(&emu_dir, port, &["--token-lifetime", "35s", "--client-certificate", cert.to_str().unwrap()]);
    wait_delivered(&emu, &committed, "with the certificate registered", Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    wait_delivered(&emu, &committed, "with renewed tokens", Duration::from_secs(30)).await;
    terminate(&gw.0);
    assert!(gw.0.wait().unwrap().success());
    reader.join().unwrap();
    let s = emu.stats().await;
    let by_cert = s["assertions_accepted"].as_u64().unwrap_or(0);
    assert!(by_cert >= 2, "tokens must have been renewed with fresh assertions: {s}");
    assert_eq!(s["tokens_issued"].as_u64(), Some(by_cert), "every token came from a certificate assertion: {s}");
    for r in ["token:invalid_client", "token:invalid_request", "401:ExpiredToken"] {
        assert_eq!(refused(&s, r), 0, "{r} once the right certificate was registered: {s}");
    }
    let c = committed.lock().unwrap().clone();
    emu.delivered().check(&c);
}

/// `iomt-edge outbox dead-letters ...` on the gateway's state folder: (exit code, stdout).
fn dead_letters_cli(state: &Path, args: &[&str]) -> (i32, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_iomt-edge")).args(["outbox", "dead-letters"]).args(args).arg("--state-dir").arg(state).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A reading that can never fit (the event hub refuses every request above
/// 300 bytes, and one reading makes a larger request) is split down to one
/// reading, then kept as a dead letter: none is dropped, each is logged
/// without the patient id, the status file counts them; after the limit is
/// gone, `outbox dead-letters retry --all` on the stopped gateway queues them
/// again and the restarted gateway delivers every one of them (same device,
/// time and values, under a new sequence number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_that_never_fit_become_dead_letters_and_a_retry_delivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("emu"), 0, &["--too-large-above", "300"]);
    let cfg = gateway_config(
        dir.path(),
        &format!("connection_string = {{ value = \"{}\" }}\nca_file = \"{}\"", emu.get("connection_string"), emu.get("ca_file")),
    );
    let state = dir.path().join("state");
    let log = dir.path().join("gw.log");

    // 1. Everything committed is refused, even alone: all dead letters.
    let committed: Committed = Default::default();
    let (gw, reader) = gateway_common::start_logging_to(&cfg, committed.clone(), Some(&log));
    let mut gw = Gw(gw);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    terminate(&gw.0);
    assert!(gw.0.wait().unwrap().success());
    reader.join().unwrap();
    let c = committed.lock().unwrap().clone();
    assert!(c.len() >= 10, "{} readings committed", c.len());
    assert_eq!(emu.delivered().ids.len(), 0, "nothing fits, nothing may be recorded");
    assert!(refused(&emu.stats().await, "413") > 0);
    let (code, out) = dead_letters_cli(&state, &["export"]);
    assert_eq!(code, 0);
    let exported: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Readings committed just before the stop may still be queued (the stop
    // gives in-flight work a grace period); each committed reading is one or
    // the other, none dropped.
    let queued: Vec<u64> = {
        let (ob, _) = iomt_edge::outbox::Outbox::inspect(&state.join("outbox"), &iomt_edge::config::OutboxConfig::default()).unwrap();
        ob.read_range(0, u64::MAX, 1_000_000).unwrap().iter().map(|r| r.seq).collect()
    };
    let mut accounted: Vec<u64> = exported.iter().map(|e| e["deadLetterSeq"].as_u64().unwrap()).chain(queued.iter().copied()).collect();
    accounted.sort_unstable();
    assert_eq!(accounted, c.keys().copied().collect::<Vec<_>>(), "every committed reading is a dead letter or still queued");
    for dev in ["strap-1", "oxi-1"] {
        assert!(exported.iter().any(|e| e["deviceId"] == dev), "no dead letter for {dev}");
    }
    for e in &exported {
        assert_eq!(e["deviceId"].as_str(), c.get(&e["deadLetterSeq"].as_u64().unwrap()).map(String::as_str));
        assert!(e["reason"].as_str().unwrap_or("").contains("exceeds the limit (300 bytes)"), "the service's reason is kept: {e}");
    }
    let status: Value = serde_json::from_slice(&std::fs::read(state.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["deadLetters"]["readings"].as_u64(), Some(exported.len() as u64), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("moved to the outbox's dead letters")).count();
    assert_eq!(lines, exported.len(), "one line per dead letter:\n{text}");
    assert!(!text.contains("P-77"), "a patient id reached the log:\n{text}");
    let (code, out) = dead_letters_cli(&state, &["list"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("strap-1")) && out.lines().any(|l| l.starts_with("oxi-1")), "{out}");

    // 2. The limit is gone; retry on the stopped gateway, then start it again.
    emu.set_faults(serde_json::json!({})).await;
    let (code, out) = dead_letters_cli(&state, &["retry", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("queued {} dead letters again", exported.len())), "{out}");
    let committed2: Committed = Default::default();
    let (gw, reader) = gateway_common::start_logging_to(&cfg, committed2.clone(), Some(&log));
    let mut gw = Gw(gw);
    let key = |device: &Value, r: &Value| (device.to_string(), r["time"].to_string(), r["values"].to_string());
    let wanted: std::collections::BTreeSet<_> = exported.iter().map(|e| key(&e["deviceId"], &e["reading"])).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got = std::collections::BTreeSet::new();
        for f in std::fs::read_dir(dir.path().join("emu/events")).map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>()).unwrap_or_default() {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let body = &serde_json::from_str::<Value>(line).unwrap()["Body"];
                for r in body["readings"].as_array().unwrap() {
                    got.insert(key(&body["deviceId"], r));
                }
            }
        }
        let missing = wanted.difference(&got).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} of {} retried dead letters not delivered", wanted.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_delivered(&emu, &committed2, "live after the retry", Duration::from_secs(30)).await;
    let d = emu.delivered();
    assert!(queued.iter().all(|q| d.ids.contains_key(q)), "the readings left queued at the stop were delivered too");
    terminate(&gw.0);
    assert!(gw.0.wait().unwrap().success());
    reader.join().unwrap();
    let (code, out) = dead_letters_cli(&state, &["list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("no dead letters"), "{out}");
    let status: Value = serde_json::from_slice(&std::fs::read(state.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["deadLetters"]["readings"].as_u64(), Some(0), "{status}");
}
