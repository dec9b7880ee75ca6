//! Forwarder tests with a scripted sink: batching, retry without loss, same id on
//! resend, per-device order, splitting on "too large", resend after restart.

use super::*;
use crate::config::OutboxConfig;
use crate::model::{DeviceKind, Reading, ReadingType};
use std::sync::Mutex;

/// A sink that fails according to a script and records what it accepted.
#[derive(Default)]
struct ScriptedSink {
    /// Answers for the next sends; empty = accept.
    script: Mutex<VecDeque<SinkError>>,
    accepted: Mutex<Vec<Message>>,
    attempts: Mutex<Vec<String>>,
    max_bytes: Option<usize>,
    /// Refuse (TooLarge) any message whose body exceeds this.
    too_large_above: Option<usize>,
    /// Messages one request may carry (0: one).
    per_request: usize,
    /// Refuse (TooLarge) any request whose message bodies together exceed this.
    request_too_large_above: Option<usize>,
    /// Accepted requests: the message ids of each, in order.
    requests: Mutex<Vec<Vec<String>>>,
}

#[async_trait::async_trait]
impl Sink for ScriptedSink {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn max_message_bytes(&self) -> usize {
        self.max_bytes.unwrap_or(usize::MAX)
    }
    fn max_in_flight(&self) -> usize {
        4
    }
    fn max_messages_per_request(&self) -> usize {
        self.per_request.max(1)
    }
    async fn send_many(&self, ms: &[Message]) -> Result<(), SinkError> {
        assert!(ms.len() <= self.per_request.max(1), "{} messages in one request", ms.len());
        self.attempts.lock().unwrap().extend(ms.iter().map(|m| m.message_id.clone()));
        let total: usize = ms.iter().map(|m| m.to_json().len()).sum();
        if let Some(limit) = self.request_too_large_above.filter(|l| total > *l) {
            return Err(SinkError::TooLarge(format!("{total} > {limit}")));
        }
        if let Some(e) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        self.accepted.lock().unwrap().extend(ms.iter().cloned());
        self.requests.lock().unwrap().push(ms.iter().map(|m| m.message_id.clone()).collect());
        Ok(())
    }
    async fn send(&self, m: &Message) -> Result<(), SinkError> {
        self.attempts.lock().unwrap().push(m.message_id.clone());
        if let Some(limit) = self.too_large_above {
            if m.to_json().len() > limit {
                return Err(SinkError::TooLarge(format!("{} > {limit}", m.to_json().len())));
            }
        }
        if let Some(e) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        self.accepted.lock().unwrap().push(m.clone());
        self.requests.lock().unwrap().push(vec![m.message_id.clone()]);
        Ok(())
    }
}

fn settings() -> ForwarderSettings {
    ForwarderSettings {
        gateway_id: "gw".into(),
        batching: LiveBatching::new(50, Duration::from_millis(20)),
        batch_max_bytes: 64 * 1024,
        retry: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)).with_jitter(),
        auth_retry: Duration::from_millis(30),
        shutdown_grace: Duration::from_secs(2),
        idle_tick: IDLE_TICK,
    }
}

fn fill(ob: &Outbox, n: usize, devices: usize) -> Vec<Reading> {
    let mut rs: Vec<Reading> = (0..n)
        .map(|i| {
            Reading::new(format!("dev-{}", i % devices), DeviceKind::HeartRateStrap, ReadingType::HeartRate)
                .with_value("heartRate", (60 + i % 50) as f64)
        })
        .collect();
    ob.append(&mut rs).unwrap();
    rs
}

/// A forwarder over `ob`, with the sender of its `committed` watch and its stats.
fn forwarder(ob: Arc<Outbox>, sink: Arc<ScriptedSink>, settings: ForwarderSettings) -> (Forwarder, watch::Sender<u64>, Arc<ForwarderStats>) {
    let (tx, committed) = watch::channel(ob.last_seq());
    let stats = Arc::new(ForwarderStats::default());
    let f = Forwarder {
        outbox: ob,
        sink,
        settings,
        committed,
        stats: stats.clone(),
        health: Arc::new(Health::new()),
        flush: FlushHandle::default(),
        group_sync: None,
    };
    (f, tx, stats)
}

/// Runs a forwarder over `ob` until `n` readings were delivered (or 10 s).
async fn drain(ob: Arc<Outbox>, sink: Arc<ScriptedSink>, n: u64) -> Arc<ForwarderStats> {
    let (f, _tx, stats) = forwarder(ob, sink, settings());
    let stop = CancellationToken::new();
    let task = tokio::spawn(f.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.delivered_readings.load(Ordering::Relaxed) + stats.dead_lettered_readings.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "not drained in time: {} delivered, {} dead-lettered, {} failed sends",
            stats.delivered_readings.load(Ordering::Relaxed),
            stats.dead_lettered_readings.load(Ordering::Relaxed),
            stats.failed_sends.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    stats
}

fn check_delivery(sink: &ScriptedSink, expected: &[Reading]) {
    let accepted = sink.accepted.lock().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let mut last_per_device: std::collections::HashMap<String, u64> = Default::default();
    for m in accepted.iter() {
        for r in &m.readings {
            let prev = last_per_device.insert(m.device_id.clone(), r.seq);
            assert!(prev.is_none_or(|p| p < r.seq), "device {} out of order", m.device_id);
            assert!(seen.insert(r.seq, m.message_id.clone()).is_none(), "seq {} delivered twice", r.seq);
        }
        assert!(m.readings.len() <= 50);
    }
    for r in expected {
        assert!(seen.contains_key(&r.seq), "reading {} lost", r.seq);
    }
}

#[tokio::test]
async fn delivers_everything_in_per_device_order_in_full_batches() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 1000, 3);
    let sink = Arc::new(ScriptedSink::default());
    drain(ob.clone(), sink.clone(), 1000).await;
    check_delivery(&sink, &rs);
    let msgs = sink.accepted.lock().unwrap().len();
    assert!(msgs <= 1000 / 50 + 3, "a backlog must go in full batches, got {msgs} messages for 1000 readings");
    assert_eq!(ob.len(), 0, "everything confirmed leaves the outbox");
    assert!(ob.in_flight().unwrap().is_empty());
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 300, 2);
    let sink = Arc::new(ScriptedSink::default());
    {
        let mut s = sink.script.lock().unwrap();
        s.push_back(SinkError::Retryable("network down".into()));
        s.push_back(SinkError::Throttled { retry_after: Some(Duration::from_millis(10)), detail: "429".into() });
        s.push_back(SinkError::FatalAuth("bad key".into()));
        s.push_back(SinkError::Retryable("again".into()));
    }
    let stats = drain(ob.clone(), sink.clone(), 300).await;
    check_delivery(&sink, &rs);
    assert_eq!(stats.failed_sends.load(Ordering::Relaxed), 4);
    // Every id that failed was retried under the same id and finally accepted.
    let attempts = sink.attempts.lock().unwrap().clone();
    let accepted: std::collections::HashSet<String> = sink.accepted.lock().unwrap().iter().map(|m| m.message_id.clone()).collect();
    for id in &attempts {
        assert!(accepted.contains(id), "message {id} was attempted, then abandoned or renamed");
    }
    assert_eq!(ob.len(), 0);
}

#[tokio::test]
async fn too_large_splits_and_delivers_all() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 200, 1);
    let sink = Arc::new(ScriptedSink { too_large_above: Some(2500), ..Default::default() });
    drain(ob.clone(), sink.clone(), 200).await;
    check_delivery(&sink, &rs);
    for m in sink.accepted.lock().unwrap().iter() {
        assert!(m.to_json().len() <= 2500);
    }
}

#[tokio::test]
async fn messages_respect_the_sink_size_limit() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 500, 1);
    let sink = Arc::new(ScriptedSink { max_bytes: Some(4096), ..Default::default() });
    drain(ob.clone(), sink.clone(), 500).await;
    check_delivery(&sink, &rs);
    for m in sink.accepted.lock().unwrap().iter() {
        assert!(m.to_json().len() <= 4096, "message of {} bytes over the sink's 4096", m.to_json().len());
    }
}

#[tokio::test]
async fn batches_in_flight_at_a_crash_are_resent_first_with_their_ids() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 100, 1);
    // A previous run had sent seqs 1..=7 as message "earlier-id" and crashed
    // before the confirmation.
    let rec = InFlight { message_id: "earlier-id".into(), seqs: (1..=7).collect() };
    ob.put_in_flight(&rec).unwrap();
    let sink = Arc::new(ScriptedSink::default());
    drain(ob.clone(), sink.clone(), 100).await;
    check_delivery(&sink, &rs);
    let accepted = sink.accepted.lock().unwrap();
    assert_eq!(accepted[0].message_id, "earlier-id");
    assert_eq!(accepted[0].seqs().collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_backlog_larger_than_memory_still_goes_in_full_batches_for_every_device() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let n = BUFFER_CAP + 5_000;
    let rs = fill(&ob, n, 10);
    let sink = Arc::new(ScriptedSink::default());
    drain(ob.clone(), sink.clone(), n as u64).await;
    check_delivery(&sink, &rs);
    let msgs = sink.accepted.lock().unwrap().len();
    assert!(msgs <= n / 50 + 20, "{msgs} messages for {n} readings: batches are not full (or a device starves)");
}

/// A live reading is sent when it reaches the batch age, on its own timer: not
/// at the loop's next idle tick (here an hour away).
#[tokio::test]
async fn a_live_reading_leaves_at_its_batch_age_not_at_the_next_idle_tick() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let sink = Arc::new(ScriptedSink::default());
    let mut s = settings();
    s.idle_tick = Duration::from_secs(3600);
    let (f, tx, stats) = forwarder(ob.clone(), sink.clone(), s);
    let stop = CancellationToken::new();
    let task = tokio::spawn(f.run(stop.clone()));
    // Let the forwarder reach its idle wait, then commit one live reading.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rs = fill(&ob, 1, 1);
    tx.send(ob.last_seq()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.delivered_readings.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "a live reading waited for the idle tick instead of its 20 ms batch age");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    check_delivery(&sink, &rs);
}

/// In-flight records ride along with the group commits: with devices that
/// report in step (as a bed's strap and oximeter at 1 Hz), each cycle costs
/// one sync of the store, not one for the readings and one for the batch
/// record. Without the group sync the same run costs about two per cycle.
#[tokio::test]
async fn in_flight_records_ride_along_with_group_commits() {
    use crate::outbox::committer::{CommitHooks, CommitReport, Committer};
    async fn run(with_group_sync: bool) -> (u64, u64, usize) {
        let dir = tempfile::tempdir().unwrap();
        let (ob, _) = Outbox::open(dir.path(), &OutboxConfig::default()).unwrap();
        let ob = Arc::new(ob);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let committer = Committer {
            outbox: ob.clone(),
            window: Duration::from_millis(100),
            hooks: CommitHooks::default(),
            health: Arc::new(Health::new()),
            report: CommitReport(false),
        };
        let (ctask, committed, group_sync) = committer.spawn(rx);
        let sink = Arc::new(ScriptedSink::default());
        let mut s = settings();
        s.batching = LiveBatching::new(50, Duration::from_millis(600));
        let stats = Arc::new(ForwarderStats::default());
        let f = Forwarder {
            outbox: ob.clone(),
            sink: sink.clone(),
            settings: s,
            committed,
            stats: stats.clone(),
            health: Arc::new(Health::new()),
            flush: FlushHandle::default(),
            group_sync: with_group_sync.then_some(group_sync),
        };
        let stop = CancellationToken::new();
        let ftask = tokio::spawn(f.run(stop.clone()));
        // Two devices in step, every 300 ms, for 20 cycles.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cycles = 20u64;
        for i in 0..cycles {
            for d in ["strap", "oxi"] {
                let r = Reading::new(d, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + i as f64);
                tx.send(r).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let syncs_during = ob.syncs();
        drop(tx);
        ctask.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.delivered_readings.load(Ordering::Relaxed) < 2 * cycles {
            assert!(Instant::now() < deadline, "not all delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        ftask.await.unwrap().unwrap();
        let messages = sink.accepted.lock().unwrap().len();
        (syncs_during, cycles, messages)
    }
    let (with, cycles, m_with) = run(true).await;
    let (without, _, m_without) = run(false).await;
    let _ = (m_with, m_without);
    // A loaded machine may answer a group's opening after the group closed:
    // that record then costs a sync of its own, hence the margin.
    assert!(with <= cycles + cycles / 4, "in-flight records cost syncs of their own: {with} syncs for {cycles} group commits");
    assert!(without >= with + cycles / 4, "the run without the group sync should show the extra syncs: {without} vs {with}");
}

/// A reading too large for the destination even alone goes to the outbox's
/// dead letters (kept, counted, durable), and its device's later readings and
/// the other devices go on; nothing is removed without a trace.
#[tokio::test]
async fn a_reading_refused_alone_goes_to_the_dead_letters_and_the_rest_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let mut rs = fill(&ob, 60, 2);
    // A device whose every message is too large (its id alone is over the limit).
    let big = "x".repeat(3000);
    let mut huge: Vec<Reading> = (0..3)
        .map(|i| Reading::new(big.clone(), DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 70.0 + i as f64))
        .collect();
    ob.append(&mut huge).unwrap();
    rs.extend(fill(&ob, 40, 2));
    let sink = Arc::new(ScriptedSink { too_large_above: Some(2500), ..Default::default() });
    let (stats, logs) = logs_of(drain(ob.clone(), sink.clone(), 103)).await;
    let moved: Vec<&str> = logs.lines().filter(|l| l.contains("moved to the outbox's dead letters")).collect();
    assert_eq!(moved.len(), 3, "one error line per dead letter:\n{logs}");
    assert!(moved.iter().all(|l| l.contains("ERROR") && l.contains("outbox dead-letters list")), "{logs}");
    check_delivery(&sink, &rs);
    assert_eq!(stats.dead_lettered_readings.load(Ordering::Relaxed), 3);
    assert_eq!(stats.delivered_readings.load(Ordering::Relaxed), 100);
    let dead = ob.dead_letters().unwrap();
    assert_eq!(dead.iter().map(|d| d.dead_letter_seq).collect::<Vec<_>>(), huge.iter().map(|r| r.seq).collect::<Vec<_>>());
    for (d, r) in dead.iter().zip(&huge) {
        assert_eq!(d.reading().as_ref(), Some(r));
        assert_eq!(d.sink, "scripted");
        assert!(d.reason.contains("> 2500"), "the destination's reason is kept: {}", d.reason);
    }
    let s = ob.stats();
    assert_eq!((s.queued, s.dead_letters, s.in_flight_batches), (0, 3, 0));
}

/// Log lines (info and above, no colours) written while `f` runs on this
/// thread (the test runtime is single-threaded).
async fn logs_of<F: std::future::Future>(f: F) -> (F::Output, String) {
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Capture(Arc::new(Mutex::new(Vec::new())));
    let w = buf.clone();
    let sub = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_ansi(false).without_time().with_writer(move || w.clone()).finish();
    let guard = tracing::subscriber::set_default(sub);
    let out = f.await;
    drop(guard);
    let bytes = buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (out, String::from_utf8_lossy(&bytes).into_owned())
}

/// A refused credential gets its one clear error line naming what to check
/// even when the failure episode began with something else (a connection
/// reset): before, only the episode's first failure was logged, and the 401
/// that followed a reset was at debug level. Once per auth episode: a second
/// refusal in a row is not logged again; after a delivery, a new refusal is.
#[tokio::test(flavor = "current_thread")]
async fn an_auth_failure_is_always_said_once_per_auth_episode() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 1, 1);
    let sink = Arc::new(ScriptedSink::default());
    {
        let mut s = sink.script.lock().unwrap();
        s.push_back(SinkError::Retryable("connection reset by peer".into()));
        s.push_back(SinkError::FatalAuth("HTTP 401; check the key name and key".into()));
        s.push_back(SinkError::FatalAuth("HTTP 401; check the key name and key".into()));
    }
    let (stats, logs) = logs_of(drain(ob.clone(), sink.clone(), 1)).await;
    check_delivery(&sink, &rs);
    assert_eq!(stats.failed_sends.load(Ordering::Relaxed), 3);
    let auth_lines: Vec<&str> = logs.lines().filter(|l| l.contains("refused the gateway's credentials")).collect();
    assert_eq!(auth_lines.len(), 1, "one line per auth episode:\n{logs}");
    assert!(auth_lines[0].contains("ERROR") && auth_lines[0].contains("check the key name and key"), "{logs}");
    assert!(logs.contains("connection reset by peer"), "the episode's first failure is still said: {logs}");
    assert!(!stats.auth_failing.is_open(), "a delivery ends the auth episode");

    // A new episode after the delivery: said again.
    let rs = fill(&ob, 1, 1);
    sink.script.lock().unwrap().push_back(SinkError::FatalAuth("HTTP 403; the identity needs Data Sender".into()));
    let (_, logs) = logs_of(drain(ob.clone(), sink.clone(), 1)).await;
    check_delivery(&sink, &rs);
    assert_eq!(logs.lines().filter(|l| l.contains("refused the gateway's credentials") && l.contains("Data Sender")).count(), 1, "{logs}");
}

/// A sink that carries several messages per request (Event Hubs) gets a
/// backlog in requests of up to that many consecutive messages of one device,
/// each message still at most `batch_max_readings`; nothing is lost or
/// reordered. With one message per request (before), every request held one.
#[tokio::test]
async fn a_backlog_goes_out_in_requests_of_several_messages_of_one_device() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 1000, 3);
    let sink = Arc::new(ScriptedSink { per_request: 4, ..Default::default() });
    let stats = drain(ob.clone(), sink.clone(), 1000).await;
    check_delivery(&sink, &rs);
    let accepted = sink.accepted.lock().unwrap().clone();
    let by_id: std::collections::HashMap<&str, &Message> = accepted.iter().map(|m| (m.message_id.as_str(), m)).collect();
    let requests = sink.requests.lock().unwrap().clone();
    for r in &requests {
        assert!(!r.is_empty() && r.len() <= 4, "{} messages in a request", r.len());
        let devices: std::collections::BTreeSet<&str> = r.iter().map(|id| by_id[id.as_str()].device_id.as_str()).collect();
        assert_eq!(devices.len(), 1, "a request mixes devices: {devices:?}");
        let seqs: Vec<u64> = r.iter().flat_map(|id| by_id[id.as_str()].seqs()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a request out of order: {seqs:?}");
    }
    let several = requests.iter().filter(|r| r.len() > 1).count();
    assert!(several > 0, "no request carried more than one message: {requests:?}");
    assert!(accepted.len() <= 1000 / 50 + 3, "messages must still be full: {}", accepted.len());
    assert!(requests.len() * 2 <= accepted.len(), "{} requests for {} messages", requests.len(), accepted.len());
    assert_eq!(stats.delivered_messages.load(Ordering::Relaxed), accepted.len() as u64);
    assert_eq!(ob.len(), 0);
    assert!(ob.in_flight().unwrap().is_empty());
}

/// A request of several messages refused as too large goes again in requests
/// of half as many, each message unchanged under its id (no message is
/// split while a smaller request would do, none is renamed).
#[tokio::test]
async fn a_request_refused_as_too_large_is_halved_and_its_messages_keep_their_ids() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 400, 1);
    let one = Message::from_batch("gw", ob.epoch(), &rs[..50]).unwrap().to_json().len();
    // Two full messages fit in a request, three do not.
    let sink = Arc::new(ScriptedSink { per_request: 4, request_too_large_above: Some(one * 5 / 2), ..Default::default() });
    drain(ob.clone(), sink.clone(), 400).await;
    check_delivery(&sink, &rs);
    let accepted = sink.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 8, "400 readings in full messages of 50, none split");
    let ids: std::collections::HashSet<&str> = accepted.iter().map(|m| m.message_id.as_str()).collect();
    let attempts = sink.attempts.lock().unwrap().clone();
    assert!(attempts.len() > accepted.len(), "no request was refused");
    for id in &attempts {
        assert!(ids.contains(id.as_str()), "message {id} was refused in a request, then renamed or split");
    }
    let requests = sink.requests.lock().unwrap().clone();
    assert!(requests.iter().all(|r| r.len() <= 2), "{requests:?}");
    assert!(requests.iter().any(|r| r.len() == 2), "halved to two, not to one: {requests:?}");
    assert_eq!(ob.len(), 0);
    assert!(ob.in_flight().unwrap().is_empty());
}

/// Messages of one device in flight at a crash (a request of several) go
/// first, in order, under their ids, before that device's newer readings.
#[tokio::test]
async fn several_messages_of_one_device_in_flight_at_a_crash_go_first_in_order() {
    let d = tempfile::tempdir().unwrap();
    let ob = Arc::new(Outbox::open(&d.path().join("o"), &OutboxConfig::default()).unwrap().0);
    let rs = fill(&ob, 100, 1);
    ob.put_in_flight(&InFlight { message_id: "earlier-1".into(), seqs: (1..=7).collect() }).unwrap();
    ob.put_in_flight(&InFlight { message_id: "earlier-2".into(), seqs: (8..=12).collect() }).unwrap();
    let sink = Arc::new(ScriptedSink { per_request: 4, ..Default::default() });
    drain(ob.clone(), sink.clone(), 100).await;
    check_delivery(&sink, &rs);
    let accepted = sink.accepted.lock().unwrap();
    assert_eq!(accepted[0].message_id, "earlier-1");
    assert_eq!(accepted[0].seqs().collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(accepted[1].message_id, "earlier-2");
    assert_eq!(accepted[1].seqs().collect::<Vec<_>>(), (8..=12).collect::<Vec<_>>());
    assert_eq!(sink.requests.lock().unwrap()[0][..2], ["earlier-1".to_string(), "earlier-2".to_string()], "regrouped in one request");
    assert!(ob.in_flight().unwrap().is_empty());
}
