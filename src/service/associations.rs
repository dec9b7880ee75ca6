//! Which patient each device is associated with.
//!
//! Starts from the config (`patient_id` of each `[[device]]`); can be changed
//! live (IoT Hub desired properties) and is then persisted in the state folder,
//! where it overrides the config on the next start. Readings are stamped with
//! the association in force when they are committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub struct Associations {
    map: RwLock<BTreeMap<String, Option<String>>>,
    file: Option<PathBuf>,
}

impl Associations {
    /// From the config's device list, then overrides persisted in `state_dir`.
    pub fn load(devices: &[crate::config::DeviceConfig], state_dir: Option<&Path>) -> Associations {
        let mut map: BTreeMap<String, Option<String>> =
            devices.iter().map(|d| (d.id.clone(), d.patient_id.clone())).collect();
        let file = state_dir.map(|d| d.join("associations.json"));
        if let Some(f) = &file {
            match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, Option<String>>>(&bytes) {
                    Ok(saved) => map.extend(saved),
                    Err(e) => tracing::warn!("ignoring unreadable {} ({e}); using the config's associations", f.display()),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot read {} ({e}); using the config's associations", f.display()),
            }
        }
        Associations { map: RwLock::new(map), file }
    }

    /// Stamps a reading with the association in force for its device. A device
    /// this map does not know (a BLE device whose id came from its Device
    /// Information) keeps what its adapter set from the config; a known device
    /// always gets the map's answer, so a change made through the twin wins
    /// over the config.
    pub fn stamp(&self, r: &mut crate::model::Reading) {
        if let Some(p) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(&r.device_id) {
            r.patient_id = p.clone();
        }
    }

    /// Changes an association (None ends it) and persists all changes.
    pub fn set(&self, device_id: &str, patient_id: Option<String>) -> std::io::Result<()> {
        let snapshot = {
            let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
            m.insert(device_id.to_string(), patient_id.clone());
            m.clone()
        };
        tracing::info!(
            "device {} is now associated with {}",
            crate::redact::device(device_id),
            patient_id.as_deref().map(crate::redact::patient).unwrap_or_else(|| "no patient".into())
        );
        if let Some(f) = &self.file {
            let tmp = f.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&snapshot).unwrap_or_default())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, f)?;
        }
        Ok(())
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
        a.set("Acme-SN1", Some("P-twin".into())).unwrap();
        let mut r = reading("Acme-SN1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id.as_deref(), Some("P-twin"));
        // Ended live: no patient, although the config named one.
        a.set("Acme-SN1", None).unwrap();
        let mut r = reading("Acme-SN1", Some("P-config"));
        a.stamp(&mut r);
        assert_eq!(r.patient_id, None);
        // And it survives a restart.
        let again = Associations::load(&[], Some(dir.path()));
        let mut r = reading("Acme-SN1", Some("P-config"));
        again.stamp(&mut r);
        assert_eq!(r.patient_id, None);
    }
}
