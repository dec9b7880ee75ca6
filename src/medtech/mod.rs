//! A local copy of the Azure MedTech service's pipeline (iomt-fhir), so users see
//! what their device mapping and FHIR destination mapping do to real messages
//! before the service silently skips them.
//!
//! ```text
//! message -> envelope {Body, Properties, SystemProperties}
//!   -> normalize (device mapping)  -> measurements
//!   -> group (device/type/patient/encounter/correlation, periodInterval)
//!   -> transform (FHIR mapping)    -> Observations (+ ids as the service computes them)
//! ```
//!
//! Semantics follow the public microsoft/iomt-fhir source (3d8741f): Newtonsoft
//! JSONPath quirks in [`jsonpath`], .NET number and date parsing in [`dotnet`]
//! (what the service silently stores), strict template parsing in
//! [`device_mapping`]/[`fhir_mapping`], grouping in [`group`], Observation build in
//! [`fhir`], ids in [`ids`]; [`preview`] ties them together and [`check`] counts
//! per template. [`status`] reports readings the device marked as not valid.

pub mod check;
pub(crate) mod device_mapping;
pub(crate) mod dotnet;
pub(crate) mod expr;
pub(crate) mod fhir;
pub(crate) mod fhir_mapping;
pub(crate) mod fields;
pub(crate) mod group;
pub mod ids;
pub(crate) mod jsonpath;
pub(crate) mod normalize;
pub(crate) mod preview;
pub(crate) mod skip;
pub(crate) mod status;
pub(crate) mod times;

pub use device_mapping::DeviceMapping;
pub use fhir_mapping::FhirMapping;
pub(crate) use preview::warning_line;
pub use preview::{summary_line, summary_lines, IdentityMode, MedTech, Preview, PreviewOptions};
pub use skip::SkipKind;
pub(crate) use skip::{Skip, Warning};

/// The shipped device mapping (devices/medtech/devicecontent.json).
pub(crate) const SHIPPED_DEVICE_MAPPING: &str = include_str!("../../devices/medtech/devicecontent.json");
/// The shipped FHIR destination mapping (devices/medtech/fhirmapping.json).
pub(crate) const SHIPPED_FHIR_MAPPING: &str = include_str!("../../devices/medtech/fhirmapping.json");

/// The shipped mappings as `(device mapping JSON, FHIR mapping JSON)`.
pub fn shipped_mappings() -> (&'static str, &'static str) {
    (SHIPPED_DEVICE_MAPPING, SHIPPED_FHIR_MAPPING)
}

/// Reading types deliberately left out of the shipped mappings, with the reason.
/// The coverage test accepts exactly these; every other [`crate::model::ReadingType`]
/// must produce an Observation.
pub const UNMAPPED_READING_TYPES: &[(crate::model::ReadingType, &str)] = &[(
    crate::model::ReadingType::BatteryLevel,
    "device telemetry, not a patient observation: an Observation with subject Patient would put the sensor's battery \
     into the patient's record; the gateway's own status shows it",
)];
