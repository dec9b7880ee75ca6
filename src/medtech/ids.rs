//! Resource ids and the Observation identifier, computed as the service does in
//! Create identity mode (`R4DeviceAndPatientCreateIdentityService`,
//! `IdentifierExtensions`, `FhirImportService`).

use sha2::{Digest, Sha256};

/// The identifier system MedTech puts on every Observation (and its extra coding).
pub const SERVICE_SYSTEM: &str = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

/// Lower-case hex SHA-256 of `text`.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The Patient logical id created for `patient_id`: sha256(`"_" + patientId`).
pub fn patient_resource_id(patient_id: &str) -> String {
    sha256_hex(&format!("_{patient_id}"))
}

/// The Device logical id created for `device_id`: sha256(`"{system}_" + deviceId`),
/// where `system` is `DefaultDeviceIdentifierSystem` (empty by default).
pub fn device_resource_id(system: Option<&str>, device_id: &str) -> String {
    sha256_hex(&format!("{}_{device_id}", system.unwrap_or("")))
}

/// The Observation identifier value `"{patient}.{device}.{type}.{segment}"`.
pub fn observation_identifier(patient_res: &str, device_res: &str, type_name: &str, segment: &str) -> String {
    format!("{patient_res}.{device_res}.{type_name}.{segment}")
}

/// The Observation logical id: sha256(`"{system}_{identifier value}"`).
pub fn observation_id(identifier_value: &str) -> String {
    sha256_hex(&format!("{SERVICE_SYSTEM}_{identifier_value}"))
}
