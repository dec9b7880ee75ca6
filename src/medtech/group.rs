//! Grouping measurements into observation groups, as
//! `MeasurementGroupFhirImportService` and the `periodInterval` group factories do.
//!
//! First by `"{DeviceId}-{Type}-{PatientId}-{EncounterId}-{CorrelationId}"`, then
//! by window: one per distinct time (0), UTC hour (60), UTC day (1440) or the
//! correlation id (-1, window from the earliest to the latest time). Inside a
//! group each value name keeps a time-sorted set; a second value with the same
//! time is dropped (the one ingested latest is added first and wins).

use super::fhir_mapping::PeriodInterval;
use super::normalize::Measurement;
use super::times;
use chrono::{DateTime, Duration, DurationRound, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The measurements of one device/type/patient/encounter/correlation key.
#[derive(Debug, Clone)]
pub(crate) struct KeyGroup<'a> {
    /// The service's grouping key string.
    #[cfg(test)]
    pub(crate) key: String,
    pub(crate) measurements: Vec<&'a Measurement>,
}

/// Groups by the service's key, in order of first appearance.
pub(crate) fn by_key(measurements: &[Measurement]) -> Vec<KeyGroup<'_>> {
    let mut out: Vec<KeyGroup<'_>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for m in measurements {
        let key = format!(
            "{}-{}-{}-{}-{}",
            m.device_id,
            m.type_name,
            m.patient_id.as_deref().unwrap_or(""),
            m.encounter_id.as_deref().unwrap_or(""),
            m.correlation_id.as_deref().unwrap_or("")
        );
        match index.get(&key) {
            Some(i) => {
                if let Some(g) = out.get_mut(*i) {
                    g.measurements.push(m);
                }
            }
            None => {
                index.insert(key.clone(), out.len());
                out.push(KeyGroup {
                    #[cfg(test)]
                    key,
                    measurements: vec![m],
                });
            }
        }
    }
    out
}

/// One Observation's worth of values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObservationGroup {
    /// The measurement type (the group's `Name`).
    pub(crate) type_name: String,
    pub(crate) device_id: String,
    pub(crate) patient_id: Option<String>,
    pub(crate) encounter_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) period: PeriodInterval,
    /// Window start and end (inclusive, 100 ns resolution).
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    /// Value name -> time-sorted `(time, value)`, at most one per time.
    pub(crate) values: BTreeMap<String, Vec<(DateTime<Utc>, String)>>,
    /// Input messages that contributed.
    pub(crate) inputs: BTreeSet<usize>,
}

/// A value that grouping discarded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DroppedValue {
    pub(crate) type_name: String,
    pub(crate) value_name: String,
    pub(crate) time: DateTime<Utc>,
    pub(crate) dropped: String,
    pub(crate) kept: String,
    pub(crate) input: usize,
}

impl ObservationGroup {
    /// The identifier segment: `yyyyMMddHHmmssZ.yyyyMMddHHmmssZ`, or the correlation id.
    pub(crate) fn id_segment(&self) -> String {
        match (self.period, &self.correlation_id) {
            (PeriodInterval::CorrelationId, Some(c)) => c.clone(),
            _ => format!("{}.{}", times::id_segment(&self.start), times::id_segment(&self.end)),
        }
    }
}

fn window(period: PeriodInterval, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let tick = Duration::nanoseconds(100);
    match period {
        PeriodInterval::Instance | PeriodInterval::CorrelationId => (t, t),
        PeriodInterval::Hour => {
            let s = t.duration_trunc(Duration::hours(1)).unwrap_or(t);
            (s, s + Duration::hours(1) - tick)
        }
        PeriodInterval::Day => {
            let s = t.duration_trunc(Duration::days(1)).unwrap_or(t);
            (s, s + Duration::days(1) - tick)
        }
    }
}

/// Splits one key group into observation groups. The caller has checked that a
/// correlation id exists when `period` is `CorrelationId`.
pub(crate) fn split(group: &KeyGroup<'_>, period: PeriodInterval) -> (Vec<ObservationGroup>, Vec<DroppedValue>) {
    // Latest ingestion first, so that it wins a tie on occurrence time (stable otherwise).
    let mut ms: Vec<&Measurement> = group.measurements.clone();
    ms.sort_by_key(|m| std::cmp::Reverse(m.ingestion_time));
    let mut groups: Vec<ObservationGroup> = Vec::new();
    let mut index: BTreeMap<(DateTime<Utc>, DateTime<Utc>), usize> = BTreeMap::new();
    let mut dropped = Vec::new();
    for m in ms {
        let (start, end) = window(period, m.occurrence_time);
        let gi = match index.get(&(start, end)) {
            Some(i) if period != PeriodInterval::CorrelationId => *i,
            _ if period == PeriodInterval::CorrelationId && !groups.is_empty() => 0,
            _ => {
                index.insert((start, end), groups.len());
                groups.push(ObservationGroup {
                    type_name: m.type_name.clone(),
                    device_id: m.device_id.clone(),
                    patient_id: m.patient_id.clone(),
                    encounter_id: m.encounter_id.clone(),
                    correlation_id: m.correlation_id.clone(),
                    period,
                    start,
                    end,
                    values: BTreeMap::new(),
                    inputs: BTreeSet::new(),
                });
                groups.len() - 1
            }
        };
        let Some(g) = groups.get_mut(gi) else { continue };
        if period == PeriodInterval::CorrelationId {
            g.start = g.start.min(m.occurrence_time);
            g.end = g.end.max(m.occurrence_time);
        }
        g.inputs.insert(m.input);
        for (name, value) in &m.properties {
            let series = g.values.entry(name.clone()).or_default();
            match series.binary_search_by(|(t, _)| t.cmp(&m.occurrence_time)) {
                Ok(pos) => {
                    let kept = series.get(pos).map(|(_, v)| v.clone()).unwrap_or_default();
                    dropped.push(DroppedValue {
                        type_name: m.type_name.clone(),
                        value_name: name.clone(),
                        time: m.occurrence_time,
                        dropped: value.clone(),
                        kept,
                        input: m.input,
                    });
                }
                Err(pos) => series.insert(pos, (m.occurrence_time, value.clone())),
            }
        }
    }
    groups.sort_by_key(|g| g.start);
    (groups, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn m(t: DateTime<Utc>, v: &str, corr: Option<&str>) -> Measurement {
        Measurement {
            type_name: "hr".into(),
            occurrence_time: t,
            ingestion_time: t,
            device_id: "d".into(),
            patient_id: Some("p".into()),
            encounter_id: None,
            correlation_id: corr.map(str::to_string),
            properties: vec![("hr".into(), v.into())],
            input: 0,
        }
    }

    #[test]
    fn windows_for_each_period() {
        let t0 = Utc.with_ymd_and_hms(2020, 10, 22, 1, 34, 56).unwrap();
        let t1 = Utc.with_ymd_and_hms(2020, 10, 22, 1, 59, 0).unwrap();
        let t2 = Utc.with_ymd_and_hms(2020, 10, 22, 2, 0, 0).unwrap();
        let t3 = Utc.with_ymd_and_hms(2020, 10, 23, 0, 0, 0).unwrap();
        let ms = vec![m(t0, "1", Some("c")), m(t1, "2", Some("c")), m(t2, "3", Some("c")), m(t3, "4", Some("c")), m(t0, "5", Some("c"))];
        let kg = by_key(&ms);
        assert_eq!(kg.len(), 1);
        assert_eq!(kg[0].key, "d-hr-p--c");
        let (g0, d0) = split(&kg[0], PeriodInterval::Instance);
        assert_eq!(g0.len(), 4);
        assert_eq!(d0.len(), 1, "same time twice: the second is dropped");
        assert_eq!((d0[0].kept.as_str(), d0[0].dropped.as_str()), ("1", "5"));
        assert_eq!(g0[0].start, g0[0].end);
        let (g60, _) = split(&kg[0], PeriodInterval::Hour);
        assert_eq!(g60.len(), 3);
        assert_eq!(g60[0].values["hr"].len(), 2);
        assert_eq!(g60[0].id_segment(), "20201022010000Z.20201022015959Z");
        let (g1440, _) = split(&kg[0], PeriodInterval::Day);
        assert_eq!(g1440.len(), 2);
        assert_eq!(g1440[0].id_segment(), "20201022000000Z.20201022235959Z");
        let (gc, _) = split(&kg[0], PeriodInterval::CorrelationId);
        assert_eq!(gc.len(), 1);
        assert_eq!((gc[0].start, gc[0].end), (t0, t3));
        assert_eq!(gc[0].id_segment(), "c");
    }
}
