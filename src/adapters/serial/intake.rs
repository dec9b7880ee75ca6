//! One HL7 message in, its readings in the outbox, its ACK out: the step the
//! TCP listener ([`super::tcp`]) and the serial adapter ([`super::adapter`])
//! share, so both answer by the same rules.
//!
//! Why it exists apart from the pure [`super::hl7`] parser: what happens to a
//! message depends on the running gateway (the device's patient association,
//! the outbox, the committer's report that a reading is durable). The rules:
//!
//! 1. A message that cannot be used gets `AR` (not ORU^R01, no MSH, several
//!    patients in one message) or `AE` (cannot be processed), with the reason
//!    in MSA-3; it is counted as bad input and stores nothing.
//! 2. Its patient ([`PatientFrom`]):
//!    - `Device` (default): the readings carry the device's patient
//!      association (the committer stamps the one in force). The PID-3 of
//!      the first message since the association was set is remembered,
//!      durably, across restarts ([`super::patient_guards`], through
//!      [`DeviceRegistry::patient_guards`]); a message naming **another**
//!      patient stores nothing and gets `AE` ("this device charts one
//!      patient..."), is counted as bad input and logged once per episode
//!      (patient ids hashed, [`crate::redact::patient`]). A change of the
//!      association starts over. When the record of the charted patient was
//!      lost (a damaged file at start) or cannot be written, a message naming
//!      a patient gets `AE` too and stores nothing.
//!    - `Pid`: each message's readings carry its PID-3 ID number (CX.1) as
//!      their patient id and the device id `<device id>/<bed>` (PV1-3, else
//!      OBX-18; [`hl7::bed_device_id`]), so each bed is a device of its own
//!      in the outbox (per-device order and batches) and in MedTech. A
//!      message without PID-3 or without a bed stores nothing and gets `AR`.
//! 3. The readings go to the outbox; with a commit timeout, `AA` is built
//!    only after every one of them is committed (flushed to stable storage:
//!    the committer reports each through
//!    [`crate::adapters::DeviceRegistry::observe`]), `AE` when that does not
//!    happen in time. The sender's own retry then covers whatever was not
//!    stored.

use super::hl7::{self, AckCode, GuardVerdict, Hl7Options, PatientFrom};
use crate::adapters::{AdapterContext, DeviceRegistry, LinkState};
use crate::logging::SharedEpisode;
use crate::model::{DistinctTimes, Reading};
use crate::redact;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Beds whose recent reading times are remembered; beyond this the memory
/// starts over (a feed never has that many beds; a stream of made-up
/// locations must not grow it without bound).
const MAX_BEDS: usize = 1024;

/// The HL7 intake of one configured device (a serial port or a TCP listener).
pub(crate) struct Hl7Intake {
    device_id: String,
    /// The config's patient (the committer replaces it with the association
    /// in force for the device).
    patient_id: Option<String>,
    opts: Hl7Options,
    /// What the logs call the feed: `HL7 listener`, `serial HL7`.
    label: &'static str,
    state: Mutex<State>,
    acks: AtomicU64,
    /// Unusable messages (logged once per episode; see [`Hl7Intake::end_bad_input`]).
    bad_input: SharedEpisode,
    /// Messages refused by the right-patient guard (ends at the next accepted message).
    other_patient: SharedEpisode,
    /// Messages refused because the guard's record is lost or cannot be
    /// written (ends at the next accepted message).
    guard_failing: SharedEpisode,
}

#[derive(Default)]
struct State {
    /// Per device id (the device's, or a bed's): recent reading times.
    times: HashMap<String, DistinctTimes>,
    /// Bed device ids seen (`Pid` mode), for their link state.
    beds: BTreeSet<String>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The HL7 ACK to send (segments ended by CR, no MLLP bytes).
    pub(crate) ack: String,
    pub(crate) code: AckCode,
    /// The outbox is closed (the gateway stops): the adapter should stop too.
    pub(crate) stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hl7Intake {
    pub(crate) fn new(device_id: &str, patient_id: Option<String>, opts: Hl7Options, label: &'static str) -> Hl7Intake {
        Hl7Intake {
            device_id: device_id.to_string(),
            patient_id,
            opts,
            label,
            state: Mutex::new(State::default()),
            acks: AtomicU64::new(0),
            bad_input: SharedEpisode::default(),
            other_patient: SharedEpisode::default(),
            guard_failing: SharedEpisode::default(),
        }
    }

    /// Counts bad input of the device (`kind`: [`super::BadInput::kind`] or
    /// `otherPatient`) and logs it once per episode; `detail` (which may
    /// quote the message) only at debug.
    pub(crate) fn bad(&self, registry: &DeviceRegistry, detail: &str, kind: &str) {
        registry.input_error(&self.device_id);
        if self.bad_input.occurred() {
            tracing::warn!(
                device = %redact::device(&self.device_id),
                "{}: refused input ({kind}); further bad input is only counted (`iomt-edge status`, INPUT ERRORS)",
                self.label
            );
        }
        tracing::debug!(device = %redact::device(&self.device_id), "{} bad input: {detail}", self.label);
    }

    /// Ends the bad-input episode (a serial port was opened again), so the
    /// next bad input is logged.
    pub(crate) fn end_bad_input(&self) {
        self.bad_input.end();
    }

    /// Sets the link state of every bed seen so far (`Pid` mode) to `state`,
    /// as the device's own.
    pub(crate) fn set_beds_state(&self, registry: &DeviceRegistry, state: LinkState) {
        for bed in &lock(&self.state).beds {
            registry.set_state(bed, state);
        }
    }

    fn answer(&self, header: Option<&hl7::Header>, code: AckCode, reason: Option<&str>) -> Answer {
        let ack_id = format!("ACK{}", self.acks.fetch_add(1, Ordering::SeqCst) + 1);
        Answer { ack: hl7::build_ack(header, code, reason, crate::model::time::now_ms(), &ack_id), code, stopping: false }
    }

    /// Takes one message (without MLLP bytes): decodes it, decides its
    /// patient and device (module docs), hands its readings to the outbox
    /// and, with `commit_timeout`, waits until they are committed. Returns
    /// the ACK to send: `AA` only when every reading is committed (or, with
    /// no timeout, handed to the outbox: for a sender that gets no ACK).
    pub(crate) async fn message(&self, ctx: &AdapterContext, msg: &[u8], commit_timeout: Option<Duration>) -> Answer {
        let now = crate::model::time::now_ms();
        let header = match hl7::header(msg) {
            Ok(h) => h,
            Err(e) => {
                self.bad(&ctx.registry, &e.reason, "hl7");
                return self.answer(None, e.code, Some(&e.reason));
            }
        };
        let decoded = hl7::decode_message(msg, &self.opts, &self.device_id, now).and_then(|r| hl7::routing(msg).map(|w| (r, w)));
        let (record, routing) = match decoded {
            Ok(x) => x,
            Err(e) => {
                self.bad(&ctx.registry, &e.reason, "hl7");
                return self.answer(Some(&header), e.code, Some(&e.reason));
            }
        };
        // The device id and patient the readings carry.
        let (device_id, patient_id) = match self.opts.patient_from {
            PatientFrom::Device => {
                let verdict = ctx.registry.patient_guards().check(&self.device_id, routing.patient.as_ref());
                match verdict {
                    GuardVerdict::Unknown => {
                        ctx.registry.input_error(&self.device_id);
                        if self.guard_failing.occurred() {
                            tracing::warn!(
                                device = %redact::device(&self.device_id),
                                "{}: refusing messages that name a patient (answered AE, not stored): the record of which patient this device \
                                 charts was lost (the state directory's {} could not be read at start). Check the monitor's patient, then \
                                 change the device's patient association (or, with the gateway stopped, remove the file: every HL7 device \
                                 then learns its patient anew). Further such messages are only counted (`iomt-edge status`, INPUT ERRORS)",
                                self.label,
                                super::patient_guards::FILE_NAME
                            );
                        }
                        return self.answer(
                            Some(&header),
                            AckCode::AE,
                            Some(
                                "the gateway lost its record of which patient this device charts (damaged state file); not stored. \
                                 Change the device's patient association to go on",
                            ),
                        );
                    }
                    GuardVerdict::NotSaved(why) => {
                        if self.guard_failing.occurred() {
                            tracing::warn!(
                                device = %redact::device(&self.device_id),
                                "{}: cannot record which patient this device charts ({why}); messages that would set it are answered AE \
                                 and not stored until the record can be written",
                                self.label
                            );
                        }
                        return self.answer(
                            Some(&header),
                            AckCode::AE,
                            Some("the gateway could not record the patient of this device (state directory not writable); not stored, resend later"),
                        );
                    }
                    GuardVerdict::Other { charted } => {
                        let sent = routing.patient.as_ref().map(|p| p.key()).unwrap_or_default();
                        ctx.registry.input_error(&self.device_id);
                        if self.other_patient.occurred() {
                            tracing::warn!(
                                device = %redact::device(&self.device_id),
                                "{}: a message names patient {} in PID-3, but this device charts one patient and its messages named {} \
                                 since its patient association was set; not stored, answered AE. If the monitor now serves another \
                                 patient, change the device's patient association; for a feed of several beds set patient_from = \"pid\". \
                                 Further such messages are only counted (`iomt-edge status`, INPUT ERRORS)",
                                self.label,
                                redact::patient(&sent),
                                redact::patient(&charted.key())
                            );
                        }
                        tracing::debug!(device = %redact::device(&self.device_id), "{}: refused a message for another patient", self.label);
                        return self.answer(
                            Some(&header),
                            AckCode::AE,
                            Some(
                                "this device charts one patient and the message names another patient in PID-3 than the ones before; \
                                 not stored. Change the device's patient association, or configure patient_from = \"pid\" for a feed of several beds",
                            ),
                        );
                    }
                    GuardVerdict::Learned => {
                        if let Some(p) = &routing.patient {
                            tracing::info!(
                                device = %redact::device(&self.device_id),
                                "{}: charting the messages of patient {} (PID-3 of the first message since the device's patient association was set); \
                                 messages naming another patient are refused",
                                self.label,
                                redact::patient(&p.key())
                            );
                        }
                    }
                    GuardVerdict::Accept => {}
                }
                if let Some(end) = self.other_patient.end() {
                    tracing::info!(device = %redact::device(&self.device_id), "{}: messages for the charted patient again ({end})", self.label);
                }
                if let Some(end) = self.guard_failing.end() {
                    tracing::info!(device = %redact::device(&self.device_id), "{}: the patient guard works again ({end})", self.label);
                }
                (self.device_id.clone(), self.patient_id.clone())
            }
            PatientFrom::Pid => {
                let Some(patient) = routing.patient else {
                    let reason =
                        "no patient identifier in PID-3; this device takes each message's patient from PID-3 (patient_from = \"pid\"); not stored";
                    self.bad(&ctx.registry, reason, "hl7");
                    return self.answer(Some(&header), AckCode::AR, Some(reason));
                };
                let Some(location) = routing.location else {
                    let reason = "no bed: neither PV1-3 (assigned patient location) nor OBX-18 (equipment instance) is sent; \
                                  with patients from PID-3 each bed needs its own device id; not stored";
                    self.bad(&ctx.registry, reason, "hl7");
                    return self.answer(Some(&header), AckCode::AR, Some(reason));
                };
                match hl7::bed_device_id(&self.device_id, &location) {
                    Ok(id) => (id, Some(patient.id)),
                    Err(e) => {
                        self.bad(&ctx.registry, &e.reason, "hl7");
                        return self.answer(Some(&header), e.code, Some(&e.reason));
                    }
                }
            }
        };
        ctx.registry.value_decoded(&self.device_id, 0);
        let mut readings = record.readings;
        {
            let mut st = lock(&self.state);
            if device_id != self.device_id && st.beds.insert(device_id.clone()) {
                ctx.registry.set_state(&device_id, LinkState::Streaming);
            }
            if st.times.len() >= MAX_BEDS && !st.times.contains_key(&device_id) {
                st.times.clear();
            }
            let times = st.times.entry(device_id.clone()).or_default();
            for r in &mut readings {
                r.device_id = device_id.clone();
                r.patient_id = patient_id.clone();
                times.assign(r);
            }
        }
        match store(ctx, readings, commit_timeout).await {
            Ok(()) => self.answer(Some(&header), AckCode::AA, None),
            Err((why, stopping)) => {
                tracing::warn!(device = %redact::device(&self.device_id), "{}: answering AE: {why}", self.label);
                Answer { stopping, ..self.answer(Some(&header), AckCode::AE, Some(&why)) }
            }
        }
    }
}

/// Hands readings to the outbox and, with a timeout, waits until all are
/// committed. Errors: (reason for MSA-3, the outbox is closed).
async fn store(ctx: &AdapterContext, readings: Vec<Reading>, timeout: Option<Duration>) -> Result<(), (String, bool)> {
    let wait = timeout.map(|_| ctx.registry.expect_commits(&readings));
    for r in readings {
        if ctx.readings.send(r).await.is_err() {
            return Err(("the gateway is stopping; resend later".into(), true));
        }
    }
    match (wait, timeout) {
        (Some(w), Some(t)) if !w.wait(t).await => Err((format!("the readings were not stored within {t:?}; resend the message"), false)),
        _ => Ok(()),
    }
}
