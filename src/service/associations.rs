//! Which patient each device is associated with.
//!
//! Starts from the config (`patient_id` of each `[[device]]`); can be changed
//! live (IoT Hub desired properties) and is then persisted in the state folder
//! (`associations.json`), where it overrides the config on the next start.
//! Readings are stamped with the association in force when they are committed.
//!
//! Only live changes are saved, each with the twin `$version` it came from:
//! `{"strap-1": {"patient": "PAT-NEW", "twinVersion": 6}, "oxi-2": {"patient": null, "twinVersion": 7}}`
//! (files written by earlier releases, `{"strap-1": "PAT-NEW"}`, still load,
//! without a version). A change from an older twin version than the one saved
//! for that device is refused, also after a restart, so a stale twin patch can
//! never move a device back to a previous patient even if the twin's own saved
//! state was lost. The file is replaced durably ([`crate::fsutil::write_durable`]).
//!
//! A damaged or unreadable file is never replaced by the config's
//! associations: a device the twin had moved to another patient would then
//! chart on its previous one. Instead every device without an entry of its
//! own is stamped with no patient (the readings are kept, with device and
//! time, and can be attributed later), which the file then records with the
//! entry `"*": {"patient": null}`, so a restart keeps it. Each twin change
//! gives its device a patient again; removing the file while the gateway is
//! stopped goes back to the config's associations. The damaged bytes are
//! kept as `associations.json.damaged`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// One live (saved) association.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveAssociation {
    /// The patient, or `None` when the association was ended.
    pub(crate) patient: Option<String>,
    /// `$version` of the twin desired properties it came from (`None`: unknown).
    #[serde(rename = "twinVersion", default)]
    pub(crate) twin_version: Option<u64>,
}

/// An entry of `associations.json`, current or as earlier releases wrote it.
#[derive(Deserialize)]
#[serde(untagged)]
enum SavedEntry {
    Current(LiveAssociation),
    Legacy(Option<String>),
}

pub struct Associations {
    /// What readings are stamped with: the config overlaid with live changes.
    map: RwLock<BTreeMap<String, Option<String>>>,
    /// Live changes, as saved; its lock also serialises writes of the file.
    live: Mutex<BTreeMap<String, LiveAssociation>>,
    file: Option<PathBuf>,
    /// `<id>/` of each HL7 device whose patients come from the messages'
    /// PID-3 (`patient_from = "pid"`): its beds' readings carry the patient
    /// the message names, which no association may replace.
    from_messages: Vec<String>,
    /// The saved associations were lost (a damaged or unreadable file): a
    /// device without an entry of its own has no patient, whatever the
    /// config or its adapter says ([`LOST`] in the file).
    lost: bool,
}

/// The key of the file's entry saying that the saved associations were lost
/// (see the module doc).
pub(crate) const LOST: &str = "*";

impl Associations {
    /// From the config's device list, then overrides persisted in `state_dir`.
    pub fn load(devices: &[crate::config::DeviceConfig], state_dir: Option<&Path>) -> Associations {
        let mut map: BTreeMap<String, Option<String>> = devices.iter().map(|d| (d.id.clone(), d.patient_id.clone())).collect();
        let mut live = BTreeMap::new();
        let file = state_dir.map(|d| d.join("associations.json"));
        let mut lost = false;
        if let Some(f) = &file {
            let damage = match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, SavedEntry>>(&bytes) {
                    Ok(saved) => {
                        for (d, e) in saved {
                            let e = match e {
                                SavedEntry::Current(e) => e,
                                SavedEntry::Legacy(patient) => LiveAssociation { patient, twin_version: None },
                            };
                            lost |= d == LOST;
                            live.insert(d, e);
                        }
                        None
                    }
                    Err(e) => {
                        let mut aside = f.clone().into_os_string();
                        aside.push(".damaged");
                        let kept = std::fs::rename(f, &aside).map(|_| format!("; its bytes are kept as {}", Path::new(&aside).display()));
                        Some(format!("{} is damaged ({e}){}", f.display(), kept.unwrap_or_default()))
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(format!("cannot read {} ({e})", f.display())),
            };
            if let Some(why) = damage {
                tracing::error!(
                    "the saved patient associations are lost: {why}. Readings of every device are stored without a patient \
                     (never with a possibly outdated one) until the IoT Hub twin sets the device's patient again; \
                     to go back to the config's patient_id instead, remove {} while the gateway is stopped",
                    f.display()
                );
                lost = true;
                live.insert(LOST.to_string(), LiveAssociation { patient: None, twin_version: None });
                if let Err(e) = serde_json::to_vec_pretty(&live).map_err(std::io::Error::other).and_then(|b| crate::fsutil::write_durable(f, &b)) {
                    tracing::error!("cannot record in {} that the associations were lost ({e}); readings stay without a patient", f.display());
                }
            }
        }
        if lost {
            for p in map.values_mut() {
                *p = None;
            }
        }
        for (d, e) in live.iter().filter(|(d, _)| *d != LOST) {
            map.insert(d.clone(), e.patient.clone());
        }
        let from_messages = devices.iter().filter(|d| d.patients_from_messages()).map(|d| format!("{}/", d.id)).collect();
        Associations { map: RwLock::new(map), live: Mutex::new(live), file, from_messages, lost }
    }

    /// Stamps a reading with the association in force for its device. A device
    /// this map does not know (a BLE device whose id came from its Device
    /// Information) keeps what its adapter set from the config; a known device
    /// always gets the map's answer, so a change made through the twin wins
    /// over the config. A bed of an HL7 feed whose patients come from PID-3
    /// (`<id>/<bed>`) keeps the patient its message named.
    pub(crate) fn stamp(&self, r: &mut crate::model::Reading) {
        if self.is_from_messages(&r.device_id) {
            return;
        }
        match self.map.read().unwrap_or_else(|p| p.into_inner()).get(&r.device_id) {
            Some(p) => r.patient_id = p.clone(),
            None if self.lost => r.patient_id = None,
            None => {}
        }
    }

    fn is_from_messages(&self, device_id: &str) -> bool {
        self.from_messages.iter().any(|p| device_id.starts_with(p.as_str()))
    }

    /// The patient in force for a device (`Some(None)`: known, no patient;
    /// `None`: a device this map does not know).
    pub(crate) fn patient_of(&self, device_id: &str) -> Option<Option<String>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned()
    }

    /// The live association saved for a device, with its twin version.
    #[cfg(test)]
    pub(crate) fn live(&self, device_id: &str) -> Option<LiveAssociation> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned()
    }

    /// Changes an association (None ends it) that came from twin desired
    /// properties at `twin_version`, and persists it. Returns `Ok(false)`
    /// when the change is refused because the association in force came from
    /// a newer twin version (or from a known version while this change has
    /// none), when it names the patient already in force, or for a bed of an
    /// HL7 feed whose patients come from PID-3 (`<id>/<bed>`). An equal
    /// version is accepted (the same twin document applied again). Errors: the file could not be
    /// written (the change is in force anyway).
    pub(crate) fn set(&self, device_id: &str, patient_id: Option<String>, twin_version: Option<u64>) -> std::io::Result<bool> {
        if self.is_from_messages(device_id) {
            tracing::info!(
                "ignored an association for device {}: it is a bed of an HL7 feed whose patients come from the messages (PID-3)",
                crate::redact::device(device_id)
            );
            return Ok(false);
        }
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = live.get(device_id) {
            let older = match (twin_version, prev.twin_version) {
                (Some(v), Some(p)) => v < p,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if older {
                tracing::info!(
                    "ignored a stale association for device {} (from twin version {}; the association in force came from version {})",
                    crate::redact::device(device_id),
                    twin_version.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into()),
                    prev.twin_version.unwrap_or_default()
                );
                return Ok(false);
            }
            // The same patient again keeps the version it first came from
            // (a legacy entry without one learns it).
            if prev.patient == patient_id && !(prev.twin_version.is_none() && twin_version.is_some()) {
                return Ok(false);
            }
        }
        let entry = LiveAssociation { patient: patient_id.clone(), twin_version };
        let changed_patient = live.get(device_id).map(|p| &p.patient) != Some(&patient_id);
        live.insert(device_id.to_string(), entry);
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(device_id.to_string(), patient_id.clone());
        if changed_patient {
            tracing::info!(
                "device {} is now associated with {}",
                crate::redact::device(device_id),
                patient_id.as_deref().map(crate::redact::patient).unwrap_or_else(|| "no patient".into())
            );
        }
        if let Some(f) = &self.file {
            let bytes = serde_json::to_vec_pretty(&*live).map_err(std::io::Error::other)?;
            crate::fsutil::write_durable(f, &bytes)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKind, Reading, ReadingType};

    fn reading(device: &str, adapter_patient: Option<&str>) -> Reading {
        let mut r = Reading::new(device, DeviceKind::HeartRateStrap, ReadingType::HeartRate);
        r.patient_id = adapter_patient.map(str::to_string);
        r
    }

    #[test]
    fn a_live_change_wins_over_what_the_adapter_set_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let a = Associations::load(&[], Some(dir.path()));
        // Unknown device: the adapter's (config) patient stays.
        let mut r = reading("Acme-SN1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-config"));
        // Assigned live: the new patient, also for readings the adapter stamped.
        assert!(a.set("Acme-SN1", Some("P-twin".into()), Some(3)).unwrap());
        let mut r = reading("Acme-SN1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-twin"));
        // Ended live: no patient, although the config named one.
        assert!(a.set("Acme-SN1", None, Some(4)).unwrap());
        let mut r = reading("Acme-SN1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id, None);
        // And it survives a restart.
        let again = Associations::load(&[], Some(dir.path()));
        let mut r = reading("Acme-SN1", Some("P-config"));
        again.stamp(&mut r);
        assert_eq!(r.patient_id, None);
    }

    /// The beds of an HL7 feed with `patient_from = "pid"` keep the
    /// patient their message named; no association (config, twin) replaces it.
    #[test]
    fn a_bed_of_a_pid_feed_keeps_the_patient_its_message_named() {
        let cfg = crate::config::parse_str(
            "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n[[device]]\nid = \"central-1\"\nkind = \"bedside_monitor\"\n\
             [device.hl7_tcp]\nlisten = \"127.0.0.1:2575\"\npatient_from = \"pid\"\n[sink.stdout]\n",
            std::path::Path::new("gw.toml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = Associations::load(&cfg.devices, Some(dir.path()));
        assert!(!a.set("central-1/ICU-12", Some("P-twin".into()), Some(3)).unwrap(), "refused");
        let mut r = reading("central-1/ICU-12", Some("P-12"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-12"));
        // The feed's own id is an ordinary device.
        assert!(a.set("central-1", Some("P-twin".into()), Some(4)).unwrap());
        assert_eq!(a.patient_of("central-1"), Some(Some("P-twin".into())));
        assert_eq!(a.patient_of("central-1/ICU-12"), None);
    }

    fn saved(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("associations.json")).unwrap()).unwrap()
    }

    /// The association from twin version 6 is not replaced
    /// by one from version 5, and the file keeps version 6, also after a restart.
    #[test]
    fn an_association_from_an_older_twin_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Associations::load(&[], Some(dir.path()));
        assert!(a.set("strap-1", Some("PAT-NEW".into()), Some(6)).unwrap());
        assert!(!a.set("strap-1", Some("PAT-OLD".into()), Some(5)).unwrap());
        let mut r = reading("strap-1", None);
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("PAT-NEW"));
        assert_eq!(saved(dir.path())["strap-1"], serde_json::json!({"patient": "PAT-NEW", "twinVersion": 6}));
        // A change without a version cannot override a versioned one either.
        assert!(!a.set("strap-1", Some("PAT-OLD".into()), None).unwrap());
        // After a restart the saved version still holds.
        let again = Associations::load(&[], Some(dir.path()));
        assert_eq!(again.live("strap-1"), Some(LiveAssociation { patient: Some("PAT-NEW".into()), twin_version: Some(6) }));
        assert!(!again.set("strap-1", Some("PAT-OLD".into()), Some(5)).unwrap());
        let mut r = reading("strap-1", None);
        again.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("PAT-NEW"));
        // An ended association keeps its version too.
        assert!(again.set("strap-1", None, Some(7)).unwrap());
        assert!(!again.set("strap-1", Some("PAT-NEW".into()), Some(6)).unwrap());
        assert_eq!(saved(dir.path())["strap-1"], serde_json::json!({"patient": null, "twinVersion": 7}));
        // Newer still works, and the same patient again keeps the version it came from.
        assert!(again.set("strap-1", Some("PAT-3".into()), Some(8)).unwrap());
        assert!(!again.set("strap-1", Some("PAT-3".into()), Some(9)).unwrap());
        assert_eq!(again.live("strap-1").unwrap().twin_version, Some(8));
    }

    /// A damaged file never hands the devices back to the config's patients
    /// (a device the twin had moved would chart on its previous patient):
    /// every device without an entry of its own has no patient, across
    /// restarts, until the twin sets it again; the damaged bytes are kept.
    #[test]
    fn damaged_saved_associations_leave_devices_without_a_patient_not_on_the_config_one() {
        let dev = |id: &str, p: &str| crate::config::DeviceConfig {
            id: id.into(),
            kind: crate::config::DeviceKindConfig::HeartRateStrap,
            patient_id: Some(p.into()),
            source: crate::config::DeviceSource::Simulated(Default::default()),
        };
        let devices = [dev("strap-1", "P-A"), dev("strap-2", "P-B")];
        for damaged in [&b"{\"strap-1\": {\"patient\": \"P-tw"[..], b"", b"\x00\x00\x00\x00", b"[1, 2]"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("associations.json"), damaged).unwrap();
            let a = Associations::load(&devices, Some(dir.path()));
            for (id, adapter) in [("strap-1", None), ("strap-2", Some("P-B")), ("Acme-SN9", Some("P-config"))] {
                let mut r = reading(id, adapter);
                a.stamp(&mut r);
                assert_eq!(r.patient_id, None, "{id} after {damaged:?}");
            }
            assert_eq!(std::fs::read(dir.path().join("associations.json.damaged")).unwrap(), damaged, "the damaged bytes are kept");
            assert_eq!(saved(dir.path())[LOST], serde_json::json!({"patient": null, "twinVersion": null}));
            // A restart keeps it; a twin change gives one device its patient.
            let again = Associations::load(&devices, Some(dir.path()));
            assert_eq!(again.patient_of("strap-2"), Some(None));
            assert!(again.set("strap-1", Some("P-twin".into()), Some(9)).unwrap());
            let third = Associations::load(&devices, Some(dir.path()));
            let mut r = reading("strap-1", None);
            third.stamp(&mut r);
            assert_eq!(r.patient_id.as_deref(), Some("P-twin"));
            let mut r = reading("strap-2", Some("P-B"));
            third.stamp(&mut r);
            assert_eq!(r.patient_id, None);
        }
    }

    /// Files written by earlier releases (`{"device": "patient" | null}`) still load.
    #[test]
    fn a_file_from_an_earlier_release_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("associations.json"), r#"{"strap-1": "P-old-format", "oxi-1": null}"#).unwrap();
        let a = Associations::load(&[], Some(dir.path()));
        let mut r = reading("strap-1", None);
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-old-format"));
        let mut r = reading("oxi-1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id, None);
        // The first versioned change for the same patient records its version.
        assert!(a.set("strap-1", Some("P-old-format".into()), Some(4)).unwrap());
        assert_eq!(saved(dir.path())["strap-1"]["twinVersion"], 4);
    }

    /// Only live changes are saved: a later edit of the config's patient_id
    /// for another device is honoured after a restart.
    #[test]
    fn config_associations_are_not_frozen_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let dev = |id: &str, p: &str| crate::config::DeviceConfig {
            id: id.into(),
            kind: crate::config::DeviceKindConfig::HeartRateStrap,
            patient_id: Some(p.into()),
            source: crate::config::DeviceSource::Simulated(Default::default()),
        };
        let a = Associations::load(&[dev("strap-1", "P-A"), dev("strap-2", "P-B")], Some(dir.path()));
        a.set("strap-1", Some("P-twin".into()), Some(2)).unwrap();
        let s = saved(dir.path());
        assert!(s.get("strap-2").is_none(), "{s}");
        let again = Associations::load(&[dev("strap-1", "P-A"), dev("strap-2", "P-C")], Some(dir.path()));
        let mut r = reading("strap-2", None);
        again.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-C"));
        let mut r = reading("strap-1", None);
        again.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-twin"));
    }
}
