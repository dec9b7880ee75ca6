//! Desired properties of the device twin: the device-to-patient association
//! and batching settings, applied live and persisted in the state directory
//! (`iothub-desired.json`) so they survive restarts without the cloud.
//!
//! Twin shape: `{"patients": {"<deviceId>": "<patientId>" | null}, "batching": {...}, "$version": n}`.
//! A full desired document replaces the associations; a patch merges them
//! (`null` removes one).
//!
//! **Versions only move forward.** IoT Hub numbers the desired section with
//! `$version` and guarantees that desired-property notifications carry
//! increasing versions; after a reconnect the device fetches the full twin,
//! and a patch that was in flight can still arrive after it (Azure IoT Hub
//! device twin guide, "Device reconnection flow": the device "can ignore all
//! notifications with `$version` less or equal than the version of the full
//! retrieved document"). So, for the whole desired section (patients,
//! batching and anything added later, because the check runs before any key
//! is looked at):
//!
//! - a patch is applied only when its `$version` is newer than the version
//!   applied; otherwise it is ignored with one info line;
//! - a full document (twin GET) replaces the state when its `$version` is at
//!   least the version applied (equal: the same document again, re-applying
//!   it changes nothing or repairs local drift); a full document with a lower
//!   version should not happen (it would mean the twin was re-created): it is
//!   ignored with a warning and the applied settings stay;
//! - a document without a readable `$version` (a whole number) cannot be
//!   ordered and is ignored with a warning; for a patch the caller then asks
//!   for the full twin, which carries the same change with its version;
//! - the applied version is saved with the state and enforced after a
//!   restart.
//!
//! This hand-written check exists because the MQTT transport gives no order
//! between the twin GET response and desired notifications.

use super::control::GatewayControl;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// File name of the persisted desired state inside the state directory.
pub(crate) const FILE_NAME: &str = "iothub-desired.json";

/// The persisted desired state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DesiredState {
    /// `$version` of the desired section this state came from (the last
    /// document applied). `None` until a versioned document was applied.
    #[serde(default)]
    pub(crate) version: Option<u64>,
    /// Device id -> patient id.
    #[serde(default)]
    pub(crate) patients: BTreeMap<String, String>,
    /// Batching settings, as sent.
    #[serde(default)]
    pub(crate) batching: Option<Value>,
}

/// Where a desired document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The `desired` section of a full twin (`$iothub/twin/GET` answer).
    FullTwin,
    /// A desired-properties notification (`$iothub/twin/PATCH/properties/desired/?$version={v}`),
    /// with the `$version` of its topic, used when the body has none.
    Patch { topic_version: Option<u64> },
}

/// What became of a desired document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Outcome {
    /// Applied (entries listed in `problems` were refused); the state is now at `version`.
    Applied { version: u64 },
    /// Not newer than the applied version (a patch at or below it, a full
    /// document below it): nothing was applied.
    Stale { version: u64, applied: u64 },
    /// No readable `$version`: nothing was applied.
    #[default]
    Unversioned,
}

/// What applying a desired document did.
#[derive(Debug, Default)]
pub(crate) struct ApplyReport {
    /// Plain-language problems, one per refused entry.
    pub(crate) problems: Vec<String>,
    /// Whether anything changed (the version included).
    pub(crate) changed: bool,
    /// Applied, or ignored and why.
    pub(crate) outcome: Outcome,
}

/// Counters of desired documents ignored, for reported properties.
#[derive(Debug, Default)]
pub(crate) struct DesiredCounters {
    /// Documents ignored because they were not newer than the applied version.
    pub(crate) stale: AtomicU64,
    /// Documents ignored because they had no readable `$version`.
    pub(crate) unversioned: AtomicU64,
}

/// Keeps the desired state on disk and applies changes to the gateway.
pub struct DesiredStore {
    path: PathBuf,
    state: Mutex<DesiredState>,
    counters: DesiredCounters,
}

impl DesiredStore {
    /// Opens (or starts) the store in `state_dir` and applies what was saved,
    /// with the version it was saved at.
    pub fn open(state_dir: &Path, control: &dyn GatewayControl) -> DesiredStore {
        let path = state_dir.join(FILE_NAME);
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {} ({e}); waiting for the twin", path.display());
                DesiredState::default()
            }),
            Err(_) => DesiredState::default(),
        };
        for (d, p) in &state.patients {
            control.set_patient(d, Some(p), state.version);
        }
        if let Some(b) = &state.batching {
            let _ = control.set_batching(b);
        }
        DesiredStore { path, state: Mutex::new(state), counters: DesiredCounters::default() }
    }

    /// The current state.
    pub(crate) fn state(&self) -> DesiredState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Documents ignored so far.
    pub(crate) fn counters(&self) -> &DesiredCounters {
        &self.counters
    }

    /// Applies a desired document if its `$version` allows it (see the module
    /// docs for the rule): `doc` is the whole desired section of a twin GET
    /// ([`Source::FullTwin`]) or a notification's body ([`Source::Patch`]).
    pub(crate) fn apply(&self, doc: &Value, source: Source, control: &dyn GatewayControl) -> ApplyReport {
        let mut rep = ApplyReport::default();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let full = source == Source::FullTwin;
        let what = if full { "full desired properties" } else { "desired-properties patch" };
        let body_version = doc.get("$version");
        let version = match (body_version, source) {
            (Some(v), Source::Patch { topic_version: Some(t) }) if v.as_u64() != Some(t) => {
                tracing::debug!("twin: a desired patch says $version {v} in its body and {t} in its topic; using the body's");
                v.as_u64()
            }
            (Some(v), _) => v.as_u64(),
            (None, Source::Patch { topic_version }) => topic_version,
            (None, Source::FullTwin) => None,
        };
        let Some(version) = version else {
            self.counters.unversioned.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "twin: ignored {what} without a readable $version (they cannot be ordered against {}); the applied settings stay",
                applied_text(st.version)
            );
            return rep;
        };
        if let Some(applied) = st.version {
            let stale = if full { version < applied } else { version <= applied };
            if stale {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                rep.outcome = Outcome::Stale { version, applied };
                if full {
                    tracing::warn!(
                        "twin: the hub sent full desired properties at version {version}, older than version {applied} already applied; \
                         keeping the applied settings (if this gateway's identity was re-created in IoT Hub, see docs/iothub.md, Device twin)"
                    );
                } else {
                    tracing::info!(
                        "twin: ignored a stale desired-properties patch (version {version}, not newer than version {applied} already applied){}",
                        summary(doc)
                    );
                }
                return rep;
            }
        }
        rep.outcome = Outcome::Applied { version };
        let mut next = st.clone();
        next.version = Some(version);
        match doc.get("patients") {
            Some(Value::Object(map)) => {
                if full {
                    next.patients.clear();
                }
                for (dev, pid) in map {
                    match pid {
                        Value::String(p) if !p.trim().is_empty() => {
                            next.patients.insert(dev.clone(), p.clone());
                        }
                        Value::Null => {
                            next.patients.remove(dev);
                        }
                        _ => rep.problems.push(format!("patients.{}: expected a patient id string or null", crate::redact::device(dev))),
                    }
                }
            }
            Some(Value::Null) => next.patients.clear(),
            Some(_) => rep.problems.push("patients: expected an object of device id -> patient id".into()),
            None if full => next.patients.clear(),
            None => {}
        }
        match doc.get("batching") {
            Some(Value::Null) => next.batching = None,
            Some(b) => match control.set_batching(b) {
                Ok(()) => next.batching = Some(b.clone()),
                Err(e) => rep.problems.push(format!("batching: {e}")),
            },
            None => {}
        }
        rep.changed = next != *st;
        if rep.changed {
            if let Err(e) = save(&self.path, &next) {
                // Applied anyway: stamping readings with the previous patient
                // because the disk is full would be worse.
                tracing::error!("cannot save the desired twin settings to {}: {e}", self.path.display());
            }
        }
        // Saved first, then applied, so a restart never loses what was applied.
        for (d, p) in &next.patients {
            if st.patients.get(d) != Some(p) {
                control.set_patient(d, Some(p), Some(version));
                tracing::debug!("twin: device {} now assigned to {}", crate::redact::device(d), crate::redact::patient(p));
            }
        }
        for d in st.patients.keys() {
            if !next.patients.contains_key(d) {
                control.set_patient(d, None, Some(version));
                tracing::debug!("twin: device {} no longer assigned to a patient", crate::redact::device(d));
            }
        }
        if rep.changed {
            *st = next;
        }
        for p in &rep.problems {
            tracing::warn!("twin desired properties: {p}");
        }
        rep
    }
}

fn applied_text(v: Option<u64>) -> String {
    match v {
        Some(v) => format!("version {v} already applied"),
        None => "the settings already applied".into(),
    }
}

/// What an ignored patch would have changed, for the log: devices as
/// [`crate::redact::device`], patients only as [`crate::redact::patient`].
fn summary(doc: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(Value::Object(map)) = doc.get("patients") {
        for (d, p) in map.iter().take(4) {
            let to = match p {
                Value::String(p) => crate::redact::patient(p),
                Value::Null => "no patient".into(),
                _ => "an unreadable value".into(),
            };
            parts.push(format!("{} -> {to}", crate::redact::device(d)));
        }
        if map.len() > 4 {
            parts.push(format!("{} more devices", map.len() - 4));
        }
    }
    if doc.get("batching").is_some() {
        parts.push("batching".into());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": it would have changed {}", parts.join(", "))
    }
}

/// Writes durably (see [`crate::fsutil::write_durable`]); the caller holds the state lock.
fn save(path: &Path, st: &DesiredState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
    crate::fsutil::write_durable(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::super::control::SimpleControl;
    use super::*;
    use serde_json::json;

    const PATCH: Source = Source::Patch { topic_version: None };

    #[test]
    fn patch_full_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        let r =
            s.apply(&json!({"patients": {"strap-1": "P1", "strap-2": "P2"}, "batching": {"maxReadings": 50}, "$version": 2}), Source::FullTwin, &c);
        assert!(r.changed && r.problems.is_empty());
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("P1"));
        let r = s.apply(&json!({"patients": {"strap-1": null, "strap-3": 5}, "$version": 3}), PATCH, &c);
        assert_eq!(r.problems.len(), 1);
        assert!(!c.patients().contains_key("strap-1"));
        assert_eq!(c.patients().get("strap-2").map(String::as_str), Some("P2"));
        // Reopen: the association survives a restart.
        let c2 = SimpleControl::default();
        let s2 = DesiredStore::open(dir.path(), &c2);
        assert_eq!(s2.state().version, Some(3));
        assert_eq!(c2.patients().get("strap-2").map(String::as_str), Some("P2"));
        assert_eq!(c2.batching(), Some(json!({"maxReadings": 50})));
        // A full document without strap-2 removes it.
        s2.apply(&json!({"patients": {}, "$version": 4}), Source::FullTwin, &c2);
        assert!(c2.patients().is_empty());
    }

    fn saved(dir: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(FILE_NAME)).unwrap()).unwrap()
    }

    /// A stale patch: full twin at 6 assigns PAT-NEW, then a patch at 5 assigns PAT-OLD.
    #[test]
    fn a_stale_patch_after_the_full_twin_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        assert_eq!(r.outcome, Outcome::Applied { version: 6 });
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 5}), Source::Patch { topic_version: Some(5) }, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 5, applied: 6 });
        assert!(!r.changed);
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(s.state().version, Some(6));
        assert_eq!(s.state().patients.get("strap-1").map(String::as_str), Some("PAT-NEW"));
        let f = saved(dir.path());
        assert_eq!((f["version"].as_u64(), f["patients"]["strap-1"].as_str()), (Some(6), Some("PAT-NEW")), "{f}");
        assert_eq!(s.counters().stale.load(Ordering::Relaxed), 1);
    }

    /// The version is the topic's when the body has none (the body's wins otherwise).
    #[test]
    fn a_stale_patch_is_recognised_by_its_topic_version_too() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}}), Source::Patch { topic_version: Some(5) }, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 5, applied: 6 });
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-7"}}), Source::Patch { topic_version: Some(7) }, &c);
        assert_eq!(r.outcome, Outcome::Applied { version: 7 });
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-7"));
        assert_eq!(saved(dir.path())["version"], 7);
    }

    /// A patch at the applied version is the same change again (or one the
    /// full twin already contains): not newer, ignored.
    #[test]
    fn a_patch_at_the_applied_version_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 6}), PATCH, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 6, applied: 6 });
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(saved(dir.path())["patients"]["strap-1"], "PAT-NEW");
        // A newer patch still applies.
        let r = s.apply(&json!({"patients": {"strap-1": null}, "$version": 7}), PATCH, &c);
        assert_eq!(r.outcome, Outcome::Applied { version: 7 });
        assert!(!c.patients().contains_key("strap-1"));
    }

    /// Documents without a readable `$version` cannot be ordered: ignored,
    /// whether a patch or a full twin, whatever else they hold.
    #[test]
    fn documents_without_a_version_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "batching": {"maxReadings": 10}, "$version": 6}), Source::FullTwin, &c);
        for (doc, src) in [
            (json!({"patients": {"strap-1": "PAT-OLD"}}), PATCH),
            (json!({"patients": {"strap-1": "PAT-OLD"}, "$version": "5"}), PATCH),
            (json!({"patients": {"strap-1": "PAT-OLD"}, "$version": -1}), PATCH),
            (json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 7.5}), Source::Patch { topic_version: Some(8) }),
            (json!({"patients": {"strap-1": "PAT-OLD"}, "batching": {"maxReadings": 99}}), Source::FullTwin),
            (json!({"patients": {}, "$version": null}), Source::FullTwin),
        ] {
            let r = s.apply(&doc, src, &c);
            assert_eq!(r.outcome, Outcome::Unversioned, "{doc}");
            assert!(!r.changed);
        }
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(c.batching(), Some(json!({"maxReadings": 10})));
        assert_eq!(s.state().version, Some(6));
        assert_eq!(s.counters().unversioned.load(Ordering::Relaxed), 6);
        // Even on a fresh gateway nothing unversioned is taken.
        let dir2 = tempfile::tempdir().unwrap();
        let c2 = SimpleControl::default();
        let s2 = DesiredStore::open(dir2.path(), &c2);
        assert_eq!(s2.apply(&json!({"patients": {"strap-1": "PAT-OLD"}}), PATCH, &c2).outcome, Outcome::Unversioned);
        assert!(c2.patients().is_empty());
        assert!(!dir2.path().join(FILE_NAME).exists());
    }

    /// Batching (and any other desired key) is versioned like patients: an
    /// out-of-order batching patch does not undo a newer one.
    #[test]
    fn a_batching_patch_out_of_order_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"batching": {"maxReadings": 500}, "$version": 1}), Source::FullTwin, &c);
        assert_eq!(
            s.apply(&json!({"batching": {"maxReadings": 20, "maxDelayMs": 100}, "$version": 3}), PATCH, &c).outcome,
            Outcome::Applied { version: 3 }
        );
        let r = s.apply(&json!({"batching": {"maxReadings": 200}, "$version": 2}), PATCH, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 2, applied: 3 });
        assert_eq!(c.batching(), Some(json!({"maxReadings": 20, "maxDelayMs": 100})));
        assert_eq!(saved(dir.path())["batching"], json!({"maxReadings": 20, "maxDelayMs": 100}));
        assert_eq!(saved(dir.path())["version"], 3);
        // And a stale `batching: null` does not drop the settings.
        s.apply(&json!({"batching": null, "$version": 2}), PATCH, &c);
        assert_eq!(s.state().batching, Some(json!({"maxReadings": 20, "maxDelayMs": 100})));
    }

    /// A full twin replaces the state at a newer or equal version, never at an older one.
    #[test]
    fn a_full_twin_never_rewinds() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD", "strap-2": "P2"}, "$version": 4}), Source::FullTwin, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 4, applied: 6 });
        assert_eq!(c.patients().len(), 1);
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(saved(dir.path())["version"], 6);
        // Equal: the same document again, applied (nothing changes).
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        assert_eq!(r.outcome, Outcome::Applied { version: 6 });
        assert!(!r.changed);
        // Newer: replaces, including removals.
        let r = s.apply(&json!({"patients": {"strap-2": "P2"}, "$version": 9}), Source::FullTwin, &c);
        assert_eq!(r.outcome, Outcome::Applied { version: 9 });
        assert_eq!(c.patients().keys().collect::<Vec<_>>(), vec!["strap-2"]);
        // A patch older than that full twin, though newer than the last patch seen, is stale.
        s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 8}), PATCH, &c);
        assert!(!c.patients().contains_key("strap-1"));
    }

    /// After a restart the saved version is still enforced, before any twin arrives.
    #[test]
    fn the_saved_version_is_enforced_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = SimpleControl::default();
            let s = DesiredStore::open(dir.path(), &c);
            s.apply(&json!({"patients": {"strap-1": "PAT-NEW"}, "$version": 6}), Source::FullTwin, &c);
        }
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(c.patient_versions().get("strap-1"), Some(&Some(6)), "the association is re-applied with its version");
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 5}), PATCH, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 5, applied: 6 });
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        let r = s.apply(&json!({"patients": {"strap-1": "PAT-OLD"}, "$version": 3}), Source::FullTwin, &c);
        assert_eq!(r.outcome, Outcome::Stale { version: 3, applied: 6 });
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("PAT-NEW"));
        assert_eq!(saved(dir.path())["version"], 6);
    }

    /// Assignments reach the gateway with the version they came from.
    #[test]
    fn assignments_carry_their_twin_version() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        s.apply(&json!({"patients": {"strap-1": "P1"}, "$version": 6}), Source::FullTwin, &c);
        s.apply(&json!({"patients": {"strap-2": "P2"}, "$version": 7}), PATCH, &c);
        s.apply(&json!({"patients": {"strap-1": null}, "$version": 8}), PATCH, &c);
        let v = c.patient_versions();
        assert_eq!(v.get("strap-1"), Some(&Some(8)));
        assert_eq!(v.get("strap-2"), Some(&Some(7)));
    }
}
