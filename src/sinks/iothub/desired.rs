//! Desired properties of the device twin: the device-to-patient association
//! and batching settings, applied live and persisted in the state directory
//! (`iothub-desired.json`) so they survive restarts without the cloud.
//!
//! Twin shape: `{"patients": {"<deviceId>": "<patientId>" | null}, "batching": {...}}`.
//! A full desired document replaces the associations; a patch merges them
//! (`null` removes one).

use super::control::GatewayControl;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File name of the persisted desired state inside the state directory.
pub const FILE_NAME: &str = "iothub-desired.json";

/// The persisted desired state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Last twin version applied.
    #[serde(default)]
    pub version: Option<u64>,
    /// Device id -> patient id.
    #[serde(default)]
    pub patients: BTreeMap<String, String>,
    /// Batching settings, as sent.
    #[serde(default)]
    pub batching: Option<Value>,
}

/// Keeps the desired state on disk and applies changes to the gateway.
pub struct DesiredStore {
    path: PathBuf,
    state: Mutex<DesiredState>,
}

/// A desired document that was (partly) refused.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Plain-language problems, one per refused entry.
    pub problems: Vec<String>,
    /// Whether anything changed.
    pub changed: bool,
}

impl DesiredStore {
    /// Opens (or starts) the store in `state_dir` and applies what was saved.
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
            control.set_patient(d, Some(p));
        }
        if let Some(b) = &state.batching {
            let _ = control.set_batching(b);
        }
        DesiredStore { path, state: Mutex::new(state) }
    }

    /// The current state.
    pub fn state(&self) -> DesiredState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a desired document (`full`: the whole desired section from a
    /// twin GET; otherwise a PATCH).
    pub fn apply(&self, doc: &Value, full: bool, control: &dyn GatewayControl) -> ApplyReport {
        let mut rep = ApplyReport::default();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = st.clone();
        next.version = doc.get("$version").and_then(Value::as_u64).or(next.version);
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
                tracing::error!("cannot save the desired twin settings to {}: {e}", self.path.display());
            }
        }
        // Saved first, then applied, so a restart never loses what was applied.
        for (d, p) in &next.patients {
            if st.patients.get(d) != Some(p) {
                control.set_patient(d, Some(p));
                tracing::debug!("twin: device {} now assigned to {}", crate::redact::device(d), crate::redact::patient(p));
            }
        }
        for d in st.patients.keys() {
            if !next.patients.contains_key(d) {
                control.set_patient(d, None);
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

/// Writes atomically: temporary file, fsync, rename.
fn save(path: &Path, st: &DesiredState) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(st).unwrap_or_default())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::super::control::SimpleControl;
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_full_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let c = SimpleControl::default();
        let s = DesiredStore::open(dir.path(), &c);
        let r = s.apply(&json!({"patients": {"strap-1": "P1", "strap-2": "P2"}, "batching": {"maxReadings": 50}, "$version": 2}), true, &c);
        assert!(r.changed && r.problems.is_empty());
        assert_eq!(c.patients().get("strap-1").map(String::as_str), Some("P1"));
        let r = s.apply(&json!({"patients": {"strap-1": null, "strap-3": 5}, "$version": 3}), false, &c);
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
        s2.apply(&json!({"patients": {}, "$version": 4}), true, &c2);
        assert!(c2.patients().is_empty());
    }
}
