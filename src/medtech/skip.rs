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
    pub(crate) fn title(self) -> &'static str {
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
    pub(crate) input: Option<usize>,
    /// The device template (`template[2] heartrate`) or FHIR template involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) template: Option<String>,
    /// The measurement type involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// How many measurements or values this drops.
    pub(crate) count: usize,
    /// The reason in plain words.
    pub reason: String,
}

/// Kinds of value the service would store differently from what was sent, or
/// that readers of the Observation would misread. Nothing is dropped, which is
/// what makes them dangerous: `medtech check` reports them loudly and both
/// `preview` and `check` exit 3. docs/medtech.md explains each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum WarningKind {
    /// A Quantity value with `,`: the service's invariant-culture
    /// `decimal.Parse` skips it as a thousands separator (`"36,6"` -> 366).
    GroupSeparatorRead,
    /// A Quantity value with its sign after the digits (`"5-"` -> -5).
    TrailingSignRead,
    /// A Quantity value with more digits than a .NET decimal holds: rounded.
    DecimalRounded,
    /// A SampledData value that is not a decimal: written into `data` as is.
    SampledDataNotDecimal,
    /// A SampledData value containing a space: becomes several data points and
    /// shifts every later slot.
    SampledDataValueSplit,
    /// JMESPath integer arithmetic that .NET does in 64-bit integers:
    /// `divide` truncates (`divide(\`7\`, \`2\`)` is 3), add/subtract/multiply wrap on overflow.
    IntegerArithmetic,
    /// A JMESPath float result that is not finite: stored as `Infinity`/`NaN` text.
    NotFinite,
    /// A string that Json.NET reads as a date when it parses the message: the
    /// service stores it as `MM/dd/yyyy HH:mm:ss` text (fraction and offset lost).
    DateStringRewritten,
    /// A time string .NET reads in a way the sender probably did not mean:
    /// month/day order, no date (the service's processing day is used), no offset.
    TimeReadDifferently,
}

impl WarningKind {
    /// Short plain-words title.
    pub(crate) fn title(self) -> &'static str {
        match self {
            WarningKind::GroupSeparatorRead => "',' read as a thousands separator (probable unit/locale error)",
            WarningKind::TrailingSignRead => "sign after the digits read as the value's sign",
            WarningKind::DecimalRounded => "value rounded to a .NET decimal",
            WarningKind::SampledDataNotDecimal => "SampledData value is not a decimal",
            WarningKind::SampledDataValueSplit => "SampledData value with a space shifts later samples",
            WarningKind::IntegerArithmetic => "JMESPath integer arithmetic truncated or wrapped",
            WarningKind::NotFinite => "JMESPath result is not a finite number",
            WarningKind::DateStringRewritten => "date-like string rewritten by Json.NET",
            WarningKind::TimeReadDifferently => "time read differently from how it is written",
        }
    }

    /// Whether the stored data differs from what was sent (exit 3). Every kind
    /// does today; the hook is for informational kinds.
    pub(crate) fn alters_data(self) -> bool {
        true
    }
}

/// One value the service would store differently from what was sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Warning {
    pub(crate) kind: WarningKind,
    /// Index of the input message (0-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<usize>,
    /// The device template or FHIR template involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) template: Option<String>,
    /// The measurement type involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) type_name: Option<String>,
    /// The value (or field) involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value_name: Option<String>,
    /// What was sent, as the service extracted it.
    pub(crate) sent: String,
    /// What the service stores, when it stores something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stored: Option<String>,
    /// The reason in plain words.
    pub(crate) reason: String,
}
