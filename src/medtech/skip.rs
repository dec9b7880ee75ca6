//! Why MedTech would drop a message, a measurement or an observation group.
//! Every entry says it in plain words; docs/medtech.md explains each kind.

use serde::Serialize;

/// The kinds of loss the preview detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SkipKind {
    /// The input is not JSON (MedTech: InvalidDataFormatException).
    NotJson,
    /// No template's type match selected anything (counted as DroppedEvent).
    NoTemplateMatched,
    /// Device id, timestamp, correlation id or a required value is missing,
    /// null or blank (IncompatibleDataException).
    RequiredValueMissing,
    /// An expression other than the type match matched several tokens
    /// (TemplateExpressionException).
    SeveralTokens,
    /// A JMESPath function failed, or an extracted value is an object/array.
    ExpressionError,
    /// The timestamp is not a date and time.
    InvalidTimestamp,
    /// Later templates did not run because an earlier one failed on this message.
    TemplatesNotRun,
    /// The measurement type has no FHIR template (TemplateNotFoundException).
    NoFhirTemplate,
    /// Create mode needs a patient id (ResourceIdentityNotDefinedException).
    PatientIdMissing,
    /// periodInterval -1 needs a correlation id (CorrelationIdNotDefinedException).
    CorrelationIdMissing,
    /// A Quantity or String value got several values in one group
    /// (InvalidQuantityFhirValueException).
    SeveralValuesInGroup,
    /// A second value with the same timestamp in one group is discarded.
    DuplicateTimestamp,
    /// A SampledData value at the same slot as a later one is overwritten.
    SampledDataSlotOverwritten,
    /// The value is not a number where FHIR needs one (Quantity, SampledData):
    /// the service or the FHIR server rejects the Observation.
    NotANumber,
    /// Two observation groups get the same Observation identifier (a time
    /// segment has whole seconds): the service merges the later into the
    /// earlier, and a Quantity or String value is replaced.
    ObservationReplaced,
}

impl SkipKind {
    /// Short plain-words title.
    pub fn title(self) -> &'static str {
        match self {
            SkipKind::NotJson => "input is not JSON",
            SkipKind::NoTemplateMatched => "no template matched",
            SkipKind::RequiredValueMissing => "required value missing",
            SkipKind::SeveralTokens => "expression matched several tokens",
            SkipKind::ExpressionError => "expression failed",
            SkipKind::InvalidTimestamp => "timestamp is not a date and time",
            SkipKind::TemplatesNotRun => "later templates not run after an error",
            SkipKind::NoFhirTemplate => "no FHIR template for the type",
            SkipKind::PatientIdMissing => "no patient id (Create identity mode)",
            SkipKind::CorrelationIdMissing => "no correlation id (periodInterval -1)",
            SkipKind::SeveralValuesInGroup => "several values for a Quantity/String in one group",
            SkipKind::DuplicateTimestamp => "second value with the same timestamp dropped",
            SkipKind::SampledDataSlotOverwritten => "SampledData slot overwritten by a later value",
            SkipKind::NotANumber => "value is not a number",
            SkipKind::ObservationReplaced => "Observation with the same identifier replaced by a later one",
        }
    }
}

/// One thing MedTech would drop.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skip {
    pub kind: SkipKind,
    /// Index of the input message (0-based), when it is about one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// The device template (`template[2] heartrate`) or FHIR template involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The measurement type involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// How many measurements or values this drops.
    pub count: usize,
    /// The reason in plain words.
    pub reason: String,
}
