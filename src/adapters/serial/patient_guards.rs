//! The right-patient guards of the HL7 devices whose readings carry the
//! device's patient association (`patient_from = "device"`), kept durably in
//! the state directory (`hl7-patients.json`), so that a restart (a clean stop,
//! `kill -9`, a power cut) does not forget which patient a device charts.
//!
//! Why it is persisted: the guard learns the patient (PID-3) from the first
//! message after the device's association was set. Learned only in memory, a
//! restart would learn again, and a message for **another** patient that
//! happened to arrive first after the restart would be charted on the
//! device's patient (a wrong-patient entry). So each device's charted PID-3 is
//! written, with the association it was learned under, before the message
//! that taught it is stored; the file is replaced atomically and fsync'd
//! ([`crate::fsutil::write_durable`]), as the association store's.
//!
//! The rules ([`PatientGuards::check`]):
//!
//! - **Learning** (no record for the device): the first message naming a
//!   patient is accepted and its PID-3 recorded. If the record cannot be
//!   written the message is refused (`AE`, [`GuardVerdict::NotSaved`]) and
//!   nothing is learned: the sender resends it.
//! - **Charted**: a message naming the same patient (ID number and assigning
//!   authority) is accepted, another patient is refused (`AE`).
//! - **Unknown**: the file could not be read or understood at start. The
//!   gateway does not know whom the device charts, so every message naming a
//!   patient is refused (`AE`) until a person decides: a change of the
//!   device's patient association (the twin), or the file removed while the
//!   gateway is stopped. Learning afresh on its own would silently drop the
//!   guard; refusing keeps the messages at the sender (its retry, its own
//!   queue) and the device's other readings flowing, and says so in the log
//!   and in each `AE`'s reason.
//! - A message without PID-3 is accepted in every state (nothing to compare).
//!
//! A change of the device's association ([`PatientGuards::association_changed`],
//! called by the service) forgets the record durably, so the next patient
//! named is learned. Each record also keeps the association it was learned
//! under: at start a record whose association is no longer the one in force
//! (the config's `patient_id` was edited while the gateway was stopped) is
//! forgotten, for the same reason.
//!
//! File format (patient identifiers: the state directory is the gateway's
//! own, as `associations.json`):
//! `{"version": 1, "devices": {"bedside-1": {"association": "PAT-7", "charted": {"id": "MRN-1", "authority": "HOSP"}}, "bedside-2": {"association": null, "unknown": true}}}`

use super::hl7::{GuardVerdict, PatientIdent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file's name in the state directory.
pub(crate) const FILE_NAME: &str = "hl7-patients.json";
/// Where an unreadable file's bytes are kept (for a person to look at) before
/// the file is rewritten.
pub(crate) const DAMAGED_FILE_NAME: &str = "hl7-patients.json.damaged";
const VERSION: u32 = 1;

/// One device's guard, when it has a record (without one it is learning:
/// the first patient named is remembered, [`GuardVerdict::Learned`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Charted(PatientIdent),
    /// The record was lost (unreadable file): patients named are refused.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedIdent {
    id: String,
    #[serde(default)]
    authority: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    /// The device's patient association the record was made under.
    #[serde(default)]
    association: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    charted: Option<SavedIdent>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unknown: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedFile {
    version: u32,
    devices: BTreeMap<String, Saved>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Devices with a record (charted or unknown); absent: learning.
    records: BTreeMap<String, (Option<String>, State)>,
    /// The association in force per device, as the service last said.
    associations: BTreeMap<String, Option<String>>,
}

/// The guards of every device, persisted in `<state_dir>/hl7-patients.json`
/// (none: in memory only, for tests and tools). See the module docs.
#[derive(Debug, Default)]
pub(crate) struct PatientGuards {
    file: Option<PathBuf>,
    /// Its lock also serialises writes of the file.
    inner: Mutex<Inner>,
}

/// What [`PatientGuards::open`] found, for the service's log and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opened {
    /// No file (first start, or removed by a person): every device learns.
    Fresh,
    /// The file was read: how many devices keep their charted patient, and
    /// how many records were dropped because the association changed while
    /// the gateway was stopped.
    Read { kept: usize, reset: usize },
    /// The file could not be read or understood (the reason): every
    /// configured device's charted patient is unknown.
    Damaged(String),
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PatientGuards {
    /// Guards kept in memory only (nothing survives the process).
    #[cfg(test)]
    pub(crate) fn in_memory() -> PatientGuards {
        PatientGuards::default()
    }

    /// Opens the record in `state_dir` for the configured `devices`, each with
    /// the patient association in force now. Never fails: a damaged or
    /// unreadable file makes every device's charted patient unknown (module
    /// docs); its bytes are kept as [`DAMAGED_FILE_NAME`] and the file is
    /// rewritten with those unknown records (if that write fails, the damaged
    /// file stays and the next start finds it again: still unknown).
    pub(crate) fn open(state_dir: &Path, devices: impl IntoIterator<Item = (String, Option<String>)>) -> (PatientGuards, Opened) {
        let associations: BTreeMap<String, Option<String>> = devices.into_iter().collect();
        let file = state_dir.join(FILE_NAME);
        let mut inner = Inner { records: BTreeMap::new(), associations };
        let read = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<SavedFile>(&bytes) {
                Ok(f) if f.version == VERSION => Ok(Some(f)),
                Ok(f) => Err((format!("version {} is not one this gateway knows ({VERSION})", f.version), Some(bytes))),
                Err(e) => Err((format!("not a valid record ({e})"), Some(bytes))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err((format!("cannot be read ({e})"), None)),
        };
        let opened = match read {
            Ok(None) => Opened::Fresh,
            Ok(Some(saved)) => {
                let (mut kept, mut reset) = (0, 0);
                for (device, s) in saved.devices {
                    let Some(now) = inner.associations.get(&device) else {
                        continue; // no longer configured
                    };
                    if *now != s.association {
                        reset += 1;
                        continue;
                    }
                    let state = match (s.unknown, s.charted) {
                        (true, _) => State::Unknown,
                        (false, Some(c)) => State::Charted(PatientIdent { id: c.id, authority: c.authority, id_type: String::new() }),
                        (false, None) => continue,
                    };
                    kept += 1;
                    inner.records.insert(device, (s.association, state));
                }
                Opened::Read { kept, reset }
            }
            Err((why, bytes)) => {
                for (device, a) in &inner.associations {
                    inner.records.insert(device.clone(), (a.clone(), State::Unknown));
                }
                let kept_aside = match bytes {
                    Some(b) => crate::fsutil::write_durable(&state_dir.join(DAMAGED_FILE_NAME), &b),
                    None => Ok(()),
                };
                if kept_aside.is_ok() {
                    let _ = write(&file, &inner);
                }
                Opened::Damaged(why)
            }
        };
        (PatientGuards { file: Some(file), inner: Mutex::new(inner) }, opened)
    }

    /// Decides about a message of `device_id` naming `patient` (its PID-3),
    /// learning (and recording durably) the first patient named. See the
    /// module docs. Blocks while the record is written (an fsync, once per
    /// association).
    pub(crate) fn check(&self, device_id: &str, patient: Option<&PatientIdent>) -> GuardVerdict {
        let mut inner = lock(&self.inner);
        let Some(p) = patient else {
            return GuardVerdict::Accept;
        };
        match inner.records.get(device_id).map(|(_, s)| s) {
            Some(State::Unknown) => GuardVerdict::Unknown,
            Some(State::Charted(f)) if f.same_patient(p) => GuardVerdict::Accept,
            Some(State::Charted(f)) => GuardVerdict::Other { charted: f.clone() },
            None => {
                let association = inner.associations.get(device_id).cloned().flatten();
                let learned = PatientIdent { id_type: String::new(), ..p.clone() };
                inner.records.insert(device_id.to_string(), (association, State::Charted(learned)));
                if let Some(f) = &self.file {
                    if let Err(e) = write(f, &inner) {
                        inner.records.remove(device_id);
                        return GuardVerdict::NotSaved(format!("{}: {e}", f.display()));
                    }
                }
                GuardVerdict::Learned
            }
        }
    }

    /// The device's patient association changed to `patient` (None: ended):
    /// its guard forgets the charted patient (or the unknown one) and learns
    /// the next, durably. Errors: the record could not be written (the change
    /// is in force in memory; after a restart the record's association no
    /// longer matches, so it is forgotten then too).
    pub(crate) fn association_changed(&self, device_id: &str, patient: Option<&str>) -> std::io::Result<()> {
        let mut inner = lock(&self.inner);
        inner.associations.insert(device_id.to_string(), patient.map(str::to_string));
        if inner.records.remove(device_id).is_none() {
            return Ok(());
        }
        match &self.file {
            Some(f) => write(f, &inner),
            None => Ok(()),
        }
    }
}

/// Writes every record (a learning device has none) durably.
fn write(file: &Path, inner: &Inner) -> std::io::Result<()> {
    let devices = inner
        .records
        .iter()
        .map(|(d, (association, state))| {
            let saved = match state {
                State::Charted(p) => Saved {
                    association: association.clone(),
                    charted: Some(SavedIdent { id: p.id.clone(), authority: p.authority.clone() }),
                    unknown: false,
                },
                State::Unknown => Saved { association: association.clone(), charted: None, unknown: true },
            };
            (d.clone(), saved)
        })
        .collect();
    let bytes = serde_json::to_vec_pretty(&SavedFile { version: VERSION, devices }).map_err(std::io::Error::other)?;
    crate::fsutil::write_durable(file, &bytes)
}
