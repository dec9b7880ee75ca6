//! The live view of every configured device: link state, battery, last values.
//!
//! Adapters write it; the demo view, systemd `STATUS=`, the IoT Hub twin and
//! `getStatus` read it. It holds no history, only the latest state.

use crate::adapters::serial::patient_guards::PatientGuards;
use crate::model::{Flag, Reading, ReadingType};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

/// How many of a device's most recent values the undecodable share covers: a
/// device that keeps failing shows it within seconds, and one that recovered
/// stops showing it.
pub(crate) const RECENT_VALUES: usize = 100;

pub use crate::model::status::LinkState;

/// The latest known state of one device.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub device_id: String,
    pub state: LinkState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_seen: Option<DateTime<Utc>>,
    /// Reading type -> (primary value if available, flags).
    #[serde(skip)]
    pub(crate) last_values: BTreeMap<ReadingType, (Option<f64>, Vec<Flag>)>,
    pub(crate) readings: u64,
    /// Values (notifications, reads) received from this device and handed to
    /// the decoder, decodable or not.
    pub(crate) values: u64,
    /// Malformed input from this device (bad notification, serial noise): values
    /// that gave no reading at all.
    pub input_errors: u64,
    /// Bytes the decoder could not use in values it otherwise decoded (a stray
    /// byte after the last complete RR interval...); the complete fields were kept.
    pub extra_bytes: u64,
    /// Stored readings holding a value no body can have (flagged
    /// [`Flag::OutOfRange`], see [`crate::model::PLAUSIBLE_RANGES`]); they were
    /// kept and forwarded, flagged.
    pub(crate) out_of_range: u64,
    /// The reading types of this device whose latest value was out of range
    /// (an episode: logged once when it starts, quiet until a value of that
    /// type is back in range).
    #[serde(skip)]
    pub(crate) out_of_range_now: BTreeSet<ReadingType>,
    /// Whether each of the last [`RECENT_VALUES`] values was undecodable.
    #[serde(skip)]
    pub(crate) recent: VecDeque<bool>,
}

impl DeviceStatus {
    /// The share of the recent values (at most [`RECENT_VALUES`]) that could not
    /// be decoded, in whole percent rounded up (one failure never shows as 0 %);
    /// `None` before the first value.
    pub fn undecodable_percent(&self) -> Option<u8> {
        let n = self.recent.len();
        if n == 0 {
            return None;
        }
        let bad = self.recent.iter().filter(|b| **b).count();
        Some(((bad * 100).div_ceil(n)).min(100) as u8)
    }

    /// The state as people read it: `streaming`, or `streaming, 100% undecodable`
    /// when recent values failed to decode (a device that sends only garbage is
    /// not healthy, although its link is up).
    pub(crate) fn state_text(&self) -> String {
        let state = match self.state {
            LinkState::Scanning => "scanning",
            LinkState::Connecting => "connecting",
            LinkState::Streaming => "streaming",
            LinkState::Lost => "lost",
        };
        match self.undecodable_percent() {
            Some(p) if p > 0 => format!("{state}, {p}% undecodable"),
            _ => state.to_string(),
        }
    }

    fn push_recent(&mut self, undecodable: bool) {
        self.values += 1;
        if self.recent.len() == RECENT_VALUES {
            self.recent.pop_front();
        }
        self.recent.push_back(undecodable);
    }
}

/// All devices, keyed by device id.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    devices: Mutex<BTreeMap<String, DeviceStatus>>,
    /// Adapters waiting for their readings to be committed (the HL7 listener
    /// acknowledges a message only then).
    commit_waits: Mutex<Vec<std::sync::Weak<CommitWait>>>,
    /// The HL7 right-patient guards (which patient each HL7 device charts),
    /// durable when the service opened them in the state directory.
    patient_guards: crate::adapters::serial::patient_guards::PatientGuards,
}

/// A reading's identity until it is committed: device, type and time. One
/// device never has two recent readings of a type at the same millisecond
/// ([`crate::model::DistinctTimes`]), so this names one reading.
type CommitKey = (String, ReadingType, DateTime<Utc>);

/// Readings an adapter handed to the outbox and waits to see committed; see
/// [`DeviceRegistry::expect_commits`].
#[derive(Debug)]
pub(crate) struct CommitWait {
    pending: Mutex<std::collections::HashSet<CommitKey>>,
    done: tokio::sync::Notify,
}

impl CommitWait {
    /// Waits until every reading is committed (true), or `timeout` (false).
    pub(crate) async fn wait(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            if self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pending.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            }
        }
    }
}

impl DeviceRegistry {
    /// A registry whose HL7 right-patient guards live in memory only.
    pub fn new() -> DeviceRegistry {
        DeviceRegistry::default()
    }

    /// A registry with these right-patient guards (the service opens them in
    /// the state directory, [`PatientGuards::open`]).
    pub(crate) fn with_patient_guards(patient_guards: PatientGuards) -> DeviceRegistry {
        DeviceRegistry { patient_guards, ..DeviceRegistry::default() }
    }

    fn with<R>(&self, device_id: &str, f: impl FnOnce(&mut DeviceStatus) -> R) -> R {
        let mut map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(device_id.to_string()).or_insert_with(|| DeviceStatus {
            device_id: device_id.to_string(),
            state: LinkState::Scanning,
            battery: None,
            last_seen: None,
            last_values: BTreeMap::new(),
            readings: 0,
            values: 0,
            input_errors: 0,
            extra_bytes: 0,
            out_of_range: 0,
            out_of_range_now: BTreeSet::new(),
            recent: VecDeque::new(),
        });
        f(entry)
    }

    /// Makes a configured device known (state `scanning`).
    pub(crate) fn register(&self, device_id: &str) {
        self.with(device_id, |_| ());
    }

    pub(crate) fn set_state(&self, device_id: &str, state: LinkState) {
        self.with(device_id, |d| d.state = state);
    }

    /// Records a stored reading: its values become the device's latest and it
    /// is counted. The committer calls this once per reading, after the flush,
    /// so counts are of durable readings (adapters do not call it).
    ///
    /// A reading flagged [`Flag::OutOfRange`] is counted in
    /// [`DeviceStatus::out_of_range`] and, when it starts an episode for its
    /// type (the device's previous value of that type was in range), logged
    /// once at warn: device id redacted, no value (a vital sign is patient
    /// data). The episode ends at the next in-range value of that type.
    pub fn observe(&self, reading: &Reading) {
        self.tick_commit(reading);
        let started = self.with(&reading.device_id, |d| {
            let mut started = false;
            if reading.flags.contains(&Flag::OutOfRange) {
                d.out_of_range += 1;
                started = d.out_of_range_now.insert(reading.kind);
            } else if !reading.values.is_empty() && d.out_of_range_now.remove(&reading.kind) {
                tracing::info!(
                    device = %crate::redact::device(&reading.device_id),
                    "{} values are in the plausible range again",
                    reading.kind
                );
            }
            d.readings += 1;
            d.last_seen = Some(reading.time);
            if reading.kind == ReadingType::BatteryLevel {
                if let Some(v) = reading.primary_value() {
                    d.battery = Some(v);
                }
            }
            if reading.kind != ReadingType::DeviceEvent {
                d.last_values.insert(reading.kind, (reading.primary_value(), reading.flags.clone()));
            }
            started
        });
        if started {
            let range = crate::model::plausible_range(reading.kind)
                .map(|r| format!(" ({} to {} {})", r.min, r.max, reading.kind.value_units().first().map(|(_, u)| *u).unwrap_or("")))
                .unwrap_or_default();
            tracing::warn!(
                device = %crate::redact::device(&reading.device_id),
                "the device sent a {} value no body can have, outside the plausible range{range}; \
                 the reading is kept and forwarded, flagged outOfRange, and kept off the chart; \
                 further ones are only counted (`iomt-edge status`, OUT OF RANGE) until its {} values are plausible again",
                reading.kind,
                reading.kind
            );
        }
    }

    /// Registers readings about to be sent to the outbox (their final times:
    /// after [`crate::model::DistinctTimes::assign`]) and returns what to wait
    /// on: [`DeviceRegistry::observe`], which the committer calls after the
    /// flush, ticks them off. Register before sending, or a fast commit is missed.
    pub(crate) fn expect_commits(&self, readings: &[Reading]) -> std::sync::Arc<CommitWait> {
        let w = std::sync::Arc::new(CommitWait {
            pending: Mutex::new(readings.iter().map(|r| (r.device_id.clone(), r.kind, r.time)).collect()),
            done: tokio::sync::Notify::new(),
        });
        let mut waits = self.commit_waits.lock().unwrap_or_else(|p| p.into_inner());
        waits.retain(|x| x.strong_count() > 0);
        waits.push(std::sync::Arc::downgrade(&w));
        w
    }

    fn tick_commit(&self, r: &Reading) {
        let waits = self.commit_waits.lock().unwrap_or_else(|p| p.into_inner());
        if waits.is_empty() {
            return;
        }
        let key = (r.device_id.clone(), r.kind, r.time);
        for w in waits.iter().filter_map(std::sync::Weak::upgrade) {
            let mut pending = w.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.remove(&key) && pending.is_empty() {
                w.done.notify_waiters();
            }
        }
    }

    /// The patient association of `device_id` changed to `patient` (the
    /// service calls this when a live change, e.g. from the IoT Hub twin,
    /// names another patient or ends the association): its HL7 right-patient
    /// guard forgets the charted patient and learns the next one. Errors: the
    /// guards' record could not be written (the change is in force; see
    /// [`PatientGuards::association_changed`]).
    pub(crate) fn association_changed(&self, device_id: &str, patient: Option<&str>) -> std::io::Result<()> {
        self.patient_guards.association_changed(device_id, patient)
    }

    /// The HL7 right-patient guards ([`crate::adapters::serial::intake`] asks them).
    pub(crate) fn patient_guards(&self) -> &PatientGuards {
        &self.patient_guards
    }

    /// A value from this device could not be decoded at all.
    pub(crate) fn input_error(&self, device_id: &str) {
        self.with(device_id, |d| {
            d.input_errors += 1;
            d.push_recent(true);
        });
    }

    /// A value from this device was decoded; `extra_bytes` of it could not be
    /// used (0 almost always).
    pub(crate) fn value_decoded(&self, device_id: &str, extra_bytes: usize) {
        self.with(device_id, |d| {
            d.extra_bytes += extra_bytes as u64;
            d.push_recent(false);
        });
    }

    pub fn snapshot(&self) -> Vec<DeviceStatus> {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// How many devices are streaming right now.
    pub fn streaming(&self) -> usize {
        let map = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|d| d.state == LinkState::Streaming).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeviceKind;
    use std::sync::{Arc, Mutex as StdMutex};

    /// Log lines written while `f` runs (warn and above, no colours).
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone)]
        struct Capture(Arc<StdMutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Capture(Arc::new(StdMutex::new(Vec::new())));
        let w = buf.clone();
        let sub =
            tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_ansi(false).without_time().with_writer(move || w.clone()).finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Readings with a value no body can have are counted per device and
    /// logged once per episode and type, in plain words, without the value or
    /// a device address.
    #[test]
    fn out_of_range_readings_are_counted_and_logged_once_per_episode() {
        let r = DeviceRegistry::new();
        let id = "C0:FF:EE:00:00:01";
        let hr = |v: f64| Reading::new(id, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", v);
        let rr = |v: f64| Reading::new(id, DeviceKind::HeartRateStrap, ReadingType::RrInterval).with_value("rrInterval", v);
        let d = |r: &DeviceRegistry| r.snapshot().into_iter().next().expect("one device");
        let logs = logs_of(|| {
            r.observe(&hr(72.0));
            r.observe(&hr(65535.0));
            r.observe(&hr(65534.0));
            // Another type in range does not end the heart-rate episode...
            r.observe(&rr(800.0));
            // ...nor does a reading without a value.
            r.observe(&Reading::new(id, DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_flag(Flag::ValueUnavailable));
            r.observe(&hr(400.0));
        });
        assert_eq!(d(&r).out_of_range, 3);
        assert_eq!(d(&r).readings, 6);
        assert_eq!(logs.matches("no body can have").count(), 1, "one warning for one episode: {logs}");
        assert!(logs.contains("WARN") && logs.contains("heartRate") && logs.contains("15 to 350 /min"), "{logs}");
        assert!(logs.contains("kept and forwarded, flagged outOfRange"), "{logs}");
        assert!(!logs.contains("65535") && !logs.contains("400"), "no value in the log: {logs}");
        assert!(!logs.contains(id), "the device address is redacted: {logs}");
        // Back in range ends the episode; the next implausible value warns again.
        let logs = logs_of(|| {
            r.observe(&hr(71.0));
            r.observe(&hr(0.5));
            r.observe(&rr(10.0));
        });
        assert_eq!(logs.matches("no body can have").count(), 2, "a new heart-rate episode and a first RR one: {logs}");
        assert_eq!(d(&r).out_of_range, 5);
    }

    /// A wait ends when every registered reading is observed (committed), and
    /// not before: another device's or another time's reading does not count.
    #[tokio::test]
    async fn commit_waits_end_when_every_reading_is_committed() {
        let r = DeviceRegistry::new();
        let t = crate::model::time::parse("2026-01-01T00:00:00.000Z").unwrap();
        let spo2 = |id: &str, ms: i64| {
            Reading::new(id, DeviceKind::BedsideMonitor, ReadingType::Spo2).with_value("spo2", 97.0).at(t + chrono::Duration::milliseconds(ms))
        };
        let w = r.expect_commits(&[spo2("m", 0), spo2("m", 1)]);
        r.observe(&spo2("m", 0));
        r.observe(&spo2("other", 1));
        r.observe(&spo2("m", 2));
        assert!(!w.wait(std::time::Duration::from_millis(50)).await, "one of two is not committed yet");
        r.observe(&spo2("m", 1));
        assert!(w.wait(std::time::Duration::from_millis(50)).await);
        assert!(r.expect_commits(&[]).wait(std::time::Duration::ZERO).await, "nothing to wait for");
    }

    #[test]
    fn undecodable_share_shows_in_the_state() {
        let r = DeviceRegistry::new();
        r.register("strap");
        r.set_state("strap", LinkState::Streaming);
        let d = |r: &DeviceRegistry| r.snapshot().into_iter().next().expect("one device");
        assert_eq!((d(&r).undecodable_percent(), d(&r).state_text()), (None, "streaming".to_string()));
        for _ in 0..5 {
            r.input_error("strap");
        }
        assert_eq!(d(&r).state_text(), "streaming, 100% undecodable");
        assert_eq!((d(&r).values, d(&r).input_errors), (5, 5));
        r.value_decoded("strap", 1);
        r.value_decoded("strap", 0);
        assert_eq!(d(&r).undecodable_percent(), Some(72), "5 of 7, rounded up");
        assert_eq!(d(&r).extra_bytes, 1);
        // A recovered device stops showing it once the failures leave the window.
        for _ in 0..RECENT_VALUES {
            r.value_decoded("strap", 0);
        }
        assert_eq!(d(&r).state_text(), "streaming");
        assert_eq!(d(&r).input_errors, 5, "the lifetime count stays");
        assert_eq!(d(&r).values, 7 + RECENT_VALUES as u64);
    }
}
