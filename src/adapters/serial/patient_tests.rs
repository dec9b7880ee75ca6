//! Tests of the HL7 patient rules and the serial ACK framing: PID-3,
//! PV1-3 and OBX-18 parsing ([`hl7::routing`]), the right-patient guard
//! ([`super::patient_guards`], also across restarts and a damaged record),
//! per-bed device ids, the framer's choice of MLLP
//! (what the serial adapter answers), and the intake shared by the serial
//! adapter and the TCP listener, run against a stand-in committer.

use super::hl7::{self, AckCode, Framed, GuardVerdict, Hl7Framer, Hl7Options, PatientFrom, PatientIdent};
use super::intake::Hl7Intake;
use super::patient_guards::{Opened, PatientGuards, DAMAGED_FILE_NAME, FILE_NAME};
use super::BadInput;
use crate::adapters::{AdapterContext, DeviceRegistry, ReadingSender};
use crate::model::{Reading, ReadingType};
use std::sync::Arc;
use std::time::Duration;

fn oru(control: &str, pid: &str, pv1: Option<&str>, spo2: u32) -> String {
    let mut m = format!("MSH|^~\\&|MON|CS|||20250610015127+0000||ORU^R01^ORU_R01|{control}|P|2.6\r");
    if !pid.is_empty() {
        m.push_str(&format!("PID|||{pid}||Doe^Jane\r"));
    }
    if let Some(loc) = pv1 {
        m.push_str(&format!("PV1||I|{loc}\r"));
    }
    m.push_str(&format!("OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||{spo2}|262688^MDC_DIM_PERCENT^MDC|||||F|||20250610015127+0000\r"));
    m
}

fn ident(id: &str, authority: &str) -> PatientIdent {
    PatientIdent { id: id.into(), authority: authority.into(), id_type: String::new() }
}

#[test]
fn pid3_with_and_without_assigning_authority() {
    let r = hl7::routing(oru("C1", "10006", None, 97).as_bytes()).unwrap();
    assert_eq!(r.patient, Some(ident("10006", "")));
    let r = hl7::routing(oru("C1", "MRN-1^^^HOSP&1.2.840.1&ISO^MR", None, 97).as_bytes()).unwrap();
    let p = r.patient.unwrap();
    assert_eq!((p.id.as_str(), p.authority.as_str(), p.id_type.as_str()), ("MRN-1", "HOSP&1.2.840.1&ISO", "MR"));
    // The same number from another authority is another patient.
    assert!(!p.same_patient(&ident("MRN-1", "OTHER")));
    assert!(p.same_patient(&PatientIdent { id_type: "PI".into(), ..p.clone() }), "the type code is not compared");
    assert_eq!(p.key(), "MRN-1^^^HOSP&1.2.840.1&ISO");
}

#[test]
fn pid3_repetitions_prefer_the_medical_record_number() {
    let r = hl7::routing(oru("C1", "123-45-6789^^^SSA^SS~MRN-7^^^HOSP^MR", None, 97).as_bytes()).unwrap();
    assert_eq!(r.patient.map(|p| p.id), Some("MRN-7".into()));
    // Without an MR, the first repetition that has an ID number.
    let r = hl7::routing(oru("C1", "^^^HOSP~V-1^^^VISIT^VN~V-2", None, 97).as_bytes()).unwrap();
    assert_eq!(r.patient.map(|p| p.id), Some("V-1".into()));
    // PID present, PID-3 empty: no patient.
    let r = hl7::routing(oru("C1", "", None, 97).replace("OBX|", "PID|1||\rOBX|").as_bytes()).unwrap();
    assert_eq!(r.patient, None);
}

#[test]
fn escaped_separators_stay_in_the_identifier() {
    // \S\ is an escaped component separator, \T\ a subcomponent one: text,
    // not structure.
    let r = hl7::routing(oru("C1", "AB\\S\\12^^^WARD\\T\\A", None, 97).as_bytes()).unwrap();
    assert_eq!(r.patient, Some(ident("AB^12", "WARD&A")));
    // Other delimiters, as MSH-1/MSH-2 say.
    let msg = "MSH#$%*@#MON#W3###20250610015127+0000##ORU$R01#C2#P#2.6\rPID###P-9$$$H1#\rPV1##I#ICU$$7\r";
    let r = hl7::routing(msg.as_bytes()).unwrap();
    assert_eq!(r.patient, Some(ident("P-9", "H1")));
    assert_eq!(r.location.as_deref(), Some("ICU-7"));
}

#[test]
fn bed_from_pv1_else_obx18_else_none() {
    // The Comen sample's PV1-3 `^^&10`: bed 10 (in PL.3's second subcomponent).
    let r = hl7::routing(oru("C1", "10006", Some("^^&10"), 97).as_bytes()).unwrap();
    assert_eq!(r.location.as_deref(), Some("10"));
    let r = hl7::routing(oru("C1", "1", Some("ICU3^R5^12^HOSP"), 97).as_bytes()).unwrap();
    assert_eq!(r.location.as_deref(), Some("ICU3-R5-12"), "point of care, room, bed; not the facility");
    // Missing PV1: OBX-18 (equipment instance identifier, EI.1).
    let with_eq = oru("C1", "1", None, 97).replace("|||20250610015127+0000\r", "|||20250610015127+0000||||0123456789ABCDEF^EUI-64\r");
    assert_eq!(hl7::routing(with_eq.as_bytes()).unwrap().location.as_deref(), Some("0123456789ABCDEF"));
    // Neither.
    assert_eq!(hl7::routing(oru("C1", "1", None, 97).as_bytes()).unwrap().location, None);
    assert_eq!(hl7::routing(oru("C1", "1", Some(""), 97).as_bytes()).unwrap().location, None);
}

#[test]
fn several_patients_in_one_message_are_refused() {
    let two = oru("C1", "P-1", Some("^^1"), 97) + "PID|||P-2\rPV1||I|^^2\rOBX|1|NM|150456^^MDC||95|%|||||F\r";
    let e = hl7::routing(two.as_bytes()).unwrap_err();
    assert_eq!(e.code, AckCode::AR);
    assert!(e.reason.contains("2 patients"), "{e}");
    // The same patient twice is one patient.
    let same = oru("C1", "P-1", Some("^^1"), 97) + "PID|||P-1\rOBX|1|NM|150456^^MDC||95|%|||||F\r";
    assert!(hl7::routing(same.as_bytes()).is_ok());
    assert!(hl7::routing(b"PID|||1\r").is_err(), "no MSH");
}

#[test]
fn bed_device_ids_are_safe_and_bounded() {
    assert_eq!(hl7::bed_device_id("central-1", "ICU3-12").unwrap(), "central-1/ICU3-12");
    assert_eq!(hl7::bed_device_id("central-1", "Bed 4/B\u{0}\u{e9}").unwrap(), "central-1/Bed_4_B__");
    let e = hl7::bed_device_id("central-1", &"x".repeat(120)).unwrap_err();
    assert_eq!(e.code, AckCode::AE);
    assert!(e.reason.contains("at most 128"));
}

#[test]
fn guard_same_patient_other_patient_and_association_change() {
    let g = PatientGuards::in_memory();
    let (a, b) = (ident("P-A", "HOSP"), ident("P-B", "HOSP"));
    assert_eq!(g.check("dev", None), GuardVerdict::Accept, "no PID-3: nothing to compare, nothing learned");
    assert_eq!(g.check("dev", Some(&a)), GuardVerdict::Learned);
    assert_eq!(g.check("dev", Some(&a)), GuardVerdict::Accept);
    assert_eq!(g.check("dev", Some(&b)), GuardVerdict::Other { charted: a.clone() });
    assert_eq!(g.check("dev", Some(&ident("P-A", "OTHER"))), GuardVerdict::Other { charted: a.clone() }, "same number, other authority");
    assert_eq!(g.check("dev", None), GuardVerdict::Accept);
    assert_eq!(g.check("dev", Some(&a)), GuardVerdict::Accept, "the charted patient is still accepted");
    assert_eq!(g.check("other-dev", Some(&b)), GuardVerdict::Learned, "each device has its own guard");
    // The association changed: the next patient named is learned afresh.
    g.association_changed("dev", Some("PAT-2")).unwrap();
    assert_eq!(g.check("dev", Some(&b)), GuardVerdict::Learned);
    assert_eq!(g.check("dev", Some(&a)), GuardVerdict::Other { charted: b.clone() });
    // A change with no message in between, then a message without PID-3: the
    // next named patient is the first.
    g.association_changed("dev", None).unwrap();
    assert_eq!(g.check("dev", None), GuardVerdict::Accept);
    assert_eq!(g.check("dev", Some(&a)), GuardVerdict::Learned);
}

fn devices(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    list.iter().map(|(d, p)| (d.to_string(), p.map(str::to_string))).collect()
}

/// Wrong-patient risk: the charted patient survives a restart,
/// so the first message after it cannot teach the guard another patient; a
/// change of the association is durable too.
#[test]
fn the_charted_patient_survives_a_restart_and_a_change_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ident("P-A", "HOSP"), ident("P-B", "HOSP"));
    let cfg = devices(&[("bedside-1", Some("PAT-1")), ("bedside-2", None)]);
    let (g, opened) = PatientGuards::open(dir.path(), cfg.clone());
    assert_eq!(opened, Opened::Fresh);
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Learned);
    assert_eq!(g.check("bedside-2", Some(&b)), GuardVerdict::Learned);
    drop(g);
    // Restart: another patient first is refused, the charted one accepted.
    let (g, opened) = PatientGuards::open(dir.path(), cfg.clone());
    assert_eq!(opened, Opened::Read { kept: 2, reset: 0 });
    assert_eq!(g.check("bedside-1", Some(&b)), GuardVerdict::Other { charted: a.clone() });
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Accept);
    // The twin changes bedside-1's patient: the guard starts over, durably.
    g.association_changed("bedside-1", Some("PAT-2")).unwrap();
    drop(g);
    let cfg2 = devices(&[("bedside-1", Some("PAT-2")), ("bedside-2", None)]);
    let (g, opened) = PatientGuards::open(dir.path(), cfg2.clone());
    assert_eq!(opened, Opened::Read { kept: 1, reset: 0 });
    assert_eq!(g.check("bedside-1", Some(&b)), GuardVerdict::Learned);
    assert_eq!(g.check("bedside-2", Some(&a)), GuardVerdict::Other { charted: b.clone() }, "the other device keeps its patient");
    drop(g);
    let (g, _) = PatientGuards::open(dir.path(), cfg2);
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Other { charted: b.clone() }, "learned after the change, kept");
    drop(g);
    // The association changed while the gateway was stopped (the config's
    // patient_id edited): that device starts over, the other keeps its patient.
    let (g, opened) = PatientGuards::open(dir.path(), devices(&[("bedside-1", Some("PAT-3")), ("bedside-2", None)]));
    assert_eq!(opened, Opened::Read { kept: 1, reset: 1 });
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Learned);
    assert_eq!(g.check("bedside-2", Some(&a)), GuardVerdict::Other { charted: b });
    // No patient ids beyond the state directory's own file.
    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains("\"P-A\"") && text.contains("\"HOSP\""), "{text}");
}

/// A damaged or unreadable record never silently drops the guard: every
/// device refuses messages naming a patient until its association changes,
/// also after another restart; the damaged bytes are kept aside.
#[test]
fn a_damaged_record_refuses_patients_until_the_association_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = ident("P-A", "HOSP");
    let cfg = devices(&[("bedside-1", Some("PAT-1")), ("bedside-2", Some("PAT-2"))]);
    for damaged in [&b"{\"version\": 1, \"devices\": {\"bedside-1\": {\"assoc"[..], b"", b"{\"version\": 7, \"devices\": {}}"] {
        std::fs::write(dir.path().join(FILE_NAME), damaged).unwrap();
        let (g, opened) = PatientGuards::open(dir.path(), cfg.clone());
        assert!(matches!(opened, Opened::Damaged(_)), "{opened:?}");
        assert_eq!(std::fs::read(dir.path().join(DAMAGED_FILE_NAME)).unwrap(), damaged, "kept aside");
        assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Unknown);
        assert_eq!(g.check("bedside-1", None), GuardVerdict::Accept, "no PID-3: nothing to compare");
        drop(g);
        // Restarted again without anyone acting: still unknown.
        let (g, opened) = PatientGuards::open(dir.path(), cfg.clone());
        assert_eq!(opened, Opened::Read { kept: 2, reset: 0 });
        assert_eq!(g.check("bedside-2", Some(&a)), GuardVerdict::Unknown);
        // A change of the association is the decision that unblocks (durably).
        g.association_changed("bedside-1", Some("PAT-9")).unwrap();
        assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Learned);
        drop(g);
        let (g, _) = PatientGuards::open(dir.path(), devices(&[("bedside-1", Some("PAT-9")), ("bedside-2", Some("PAT-2"))]));
        assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Accept);
        assert_eq!(g.check("bedside-2", Some(&a)), GuardVerdict::Unknown);
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
    }
    // A record that cannot be read at all (here: a directory in its place).
    std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
    let (g, opened) = PatientGuards::open(dir.path(), cfg);
    assert!(matches!(&opened, Opened::Damaged(why) if why.contains("cannot be read")), "{opened:?}");
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Unknown);
}

/// A patient that cannot be recorded is not learned: the message is refused
/// (the sender resends) and the next one, once the record can be written,
/// teaches the guard.
#[test]
fn a_patient_that_cannot_be_recorded_is_not_learned() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ident("P-A", "HOSP"), ident("P-B", "HOSP"));
    let (g, _) = PatientGuards::open(dir.path(), devices(&[("bedside-1", None)]));
    // The record's path is taken by a non-empty directory: the atomic
    // replace fails.
    std::fs::create_dir_all(dir.path().join(FILE_NAME).join("x")).unwrap();
    assert!(matches!(g.check("bedside-1", Some(&a)), GuardVerdict::NotSaved(_)));
    std::fs::remove_dir_all(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(g.check("bedside-1", Some(&b)), GuardVerdict::Learned, "nothing was learned from the refused message");
    assert_eq!(g.check("bedside-1", Some(&a)), GuardVerdict::Other { charted: b });
}

/// The serial adapter answers only MLLP blocks (`Framed::mllp`); a port opened
/// in the middle of an MLLP stream (the tail of a block first) must still
/// find the blocks as MLLP, or no ACK would ever be sent.
#[test]
fn a_port_opened_mid_block_still_finds_mllp_blocks() {
    let msg = oru("C1", "P-1", None, 97);
    let mut bytes = b"OBX|9|NM|150456^^MDC||96|%|||||F\r\x1c\r".to_vec();
    bytes.extend_from_slice(&super::framing::mllp_wrap(msg.as_bytes()));
    for cut in [1, 3, 7, bytes.len()] {
        let mut f = Hl7Framer::new(1 << 20);
        let mut out = Vec::new();
        for c in bytes.chunks(cut) {
            f.push(c, &mut out);
        }
        let msgs: Vec<&Framed> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(msgs.len(), 1, "{out:?}");
        assert!(msgs[0].mllp, "the block after the tail is MLLP");
        assert_eq!(msgs[0].bytes, msg.as_bytes());
        assert!(out.iter().any(|r| matches!(r, Err(BadInput::Noise { .. }))), "the tail is noise");
    }
    // Bare segments stay bare (never answered).
    let mut f = Hl7Framer::new(1 << 20);
    let mut out = Vec::new();
    f.push(format!("{msg}{msg}").as_bytes(), &mut out);
    f.idle(&mut out);
    assert_eq!(out.iter().filter(|r| matches!(r, Ok(Framed { mllp: false, .. }))).count(), 2, "{out:?}");
}

// ---- The intake, against a stand-in committer -------------------------------

/// An adapter context whose "outbox" commits every reading at once (reports
/// it to the registry, as the committer does after its flush) and keeps it.
fn context() -> (AdapterContext, Arc<std::sync::Mutex<Vec<Reading>>>) {
    context_with(Arc::new(DeviceRegistry::new()))
}

/// [`context`] with this registry.
fn context_with(registry: Arc<DeviceRegistry>) -> (AdapterContext, Arc<std::sync::Mutex<Vec<Reading>>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Reading>(64);
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (reg, st) = (registry.clone(), stored.clone());
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            reg.observe(&r);
            st.lock().unwrap().push(r);
        }
    });
    let ctx = AdapterContext { readings: ReadingSender::new(tx), registry, shutdown: tokio_util::sync::CancellationToken::new() };
    (ctx, stored)
}

fn msa(ack: &str) -> Vec<String> {
    let seg = ack.split('\r').find(|s| s.starts_with("MSA|")).unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    seg.split('|').map(str::to_string).collect()
}

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

#[tokio::test]
async fn default_mode_refuses_a_second_patient_until_the_association_changes() {
    let (ctx, stored) = context();
    let intake = Hl7Intake::new("bedside-1", Some("PAT-CONFIG".into()), Hl7Options::default(), "test");
    let a = intake.message(&ctx, oru("M1", "P-A^^^HOSP", Some("^^12"), 97).as_bytes(), WAIT).await;
    assert_eq!((a.code, msa(&a.ack)[2].as_str()), (AckCode::AA, "M1"));
    let a = intake.message(&ctx, oru("M2", "P-B^^^HOSP", Some("^^12"), 88).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AE);
    let m = msa(&a.ack);
    assert_eq!(m[2], "M2");
    assert!(m[3].contains("charts one patient") && m[3].contains("patient_from"), "reason in plain words: {m:?}");
    assert!(!a.ack.contains("P-A") && !a.ack.contains("P-B"), "no patient ids in the answer");
    // Without PID-3: accepted (a monitor that sends no patient).
    let a = intake.message(&ctx, oru("M3", "", None, 96).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AA);
    assert_eq!(ctx.registry.snapshot()[0].input_errors, 1, "the refused message is counted as bad input");
    // The association changes: the next patient is charted.
    ctx.registry.association_changed("bedside-1", Some("PAT-TWIN")).unwrap();
    let a = intake.message(&ctx, oru("M4", "P-B^^^HOSP", None, 91).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AA);
    let a = intake.message(&ctx, oru("M5", "P-A^^^HOSP", None, 92).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AE);
    let spo2: Vec<(String, Option<String>, f64)> = stored
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.kind == ReadingType::Spo2)
        .map(|r| (r.device_id.clone(), r.patient_id.clone(), r.values["spo2"]))
        .collect();
    let cfg = Some("PAT-CONFIG".to_string());
    assert_eq!(
        spo2,
        vec![("bedside-1".into(), cfg.clone(), 97.0), ("bedside-1".into(), cfg.clone(), 96.0), ("bedside-1".into(), cfg, 91.0)],
        "nothing of the refused messages (88, 92) is stored; readings carry the device's patient"
    );
}

#[tokio::test]
async fn pid_mode_routes_each_bed_and_refuses_what_it_cannot_place() {
    let (ctx, stored) = context();
    let opts = Hl7Options { patient_from: PatientFrom::Pid, ..Hl7Options::default() };
    let intake = Hl7Intake::new("central-1", None, opts, "test");
    for (c, pid, bed, v) in [("B10a", "P-10^^^HOSP", "^^&10", 97), ("B12a", "P-12^^^HOSP", "ICU^^12", 93), ("B10b", "P-10^^^HOSP", "^^&10", 96)] {
        let a = intake.message(&ctx, oru(c, pid, Some(bed), v).as_bytes(), WAIT).await;
        assert_eq!((a.code, msa(&a.ack)[2].clone()), (AckCode::AA, c.to_string()));
    }
    // No PID-3, or no bed: refused with the reason, nothing stored.
    let a = intake.message(&ctx, oru("N1", "", Some("^^&10"), 50).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AR);
    assert!(msa(&a.ack)[3].contains("PID-3"), "{}", a.ack);
    let a = intake.message(&ctx, oru("N2", "P-10", None, 51).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AR);
    assert!(msa(&a.ack)[3].contains("PV1-3"), "{}", a.ack);
    let got: Vec<(String, Option<String>, f64)> =
        stored.lock().unwrap().iter().map(|r| (r.device_id.clone(), r.patient_id.clone(), r.values["spo2"])).collect();
    assert_eq!(
        got,
        vec![
            ("central-1/10".into(), Some("P-10".into()), 97.0),
            ("central-1/ICU-12".into(), Some("P-12".into()), 93.0),
            ("central-1/10".into(), Some("P-10".into()), 96.0),
        ]
    );
    let status = ctx.registry.snapshot();
    let dev = |id: &str| status.iter().find(|d| d.device_id == id).cloned().unwrap();
    assert_eq!(dev("central-1").input_errors, 2);
    assert_eq!(dev("central-1/10").readings, 2, "each bed is a device of its own");
}

/// The guard's record was lost at start: a message naming a patient gets AE
/// with the reason and nothing of it is stored, until the association changes.
#[tokio::test]
async fn a_lost_record_answers_ae_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "not json").unwrap();
    let (guards, _) = PatientGuards::open(dir.path(), devices(&[("bedside-1", Some("PAT-1"))]));
    let (ctx, stored) = context_with(Arc::new(DeviceRegistry::with_patient_guards(guards)));
    let intake = Hl7Intake::new("bedside-1", Some("PAT-1".into()), Hl7Options::default(), "test");
    let a = intake.message(&ctx, oru("M1", "P-A^^^HOSP", None, 97).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AE);
    assert!(msa(&a.ack)[3].contains("lost its record") && msa(&a.ack)[3].contains("association"), "{}", a.ack);
    ctx.registry.association_changed("bedside-1", Some("PAT-2")).unwrap();
    let a = intake.message(&ctx, oru("M2", "P-B^^^HOSP", None, 91).as_bytes(), WAIT).await;
    assert_eq!(a.code, AckCode::AA);
    let spo2: Vec<f64> = stored.lock().unwrap().iter().filter(|r| r.kind == ReadingType::Spo2).map(|r| r.values["spo2"]).collect();
    assert_eq!(spo2, vec![91.0], "nothing of the refused message is stored");
    assert_eq!(ctx.registry.snapshot().iter().find(|d| d.device_id == "bedside-1").map(|d| d.input_errors), Some(1));
}

/// AA only after the commit: with a committer that never commits, the answer
/// is AE (resend), never AA.
#[tokio::test]
async fn no_aa_before_the_commit() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Reading>(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ctx = AdapterContext { readings: ReadingSender::new(tx), registry: Arc::new(DeviceRegistry::new()), shutdown: Default::default() };
    let intake = Hl7Intake::new("bedside-1", None, Hl7Options::default(), "test");
    let a = intake.message(&ctx, oru("M1", "P-A", None, 97).as_bytes(), Some(Duration::from_millis(200))).await;
    assert_eq!(a.code, AckCode::AE);
    assert!(msa(&a.ack)[3].contains("not stored"), "{}", a.ack);
}

proptest::proptest! {
    /// Arbitrary bytes after a valid MSH (and edits of a real message): the
    /// routing parser never panics; a bed always gives a device id that is
    /// safe (no control characters, no second `/`) and at most 128 bytes, or
    /// an AE.
    #[test]
    fn routing_over_arbitrary_bytes(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), at in 0usize..400, b in proptest::prelude::any::<u8>()) {
        let mut msg = b"MSH|^~\\&|MON|CS|||20250610015127+0000||ORU^R01|C1|P|2.6\rPID|||".to_vec();
        msg.extend_from_slice(&tail);
        let mut edited = oru("C1", "P-1^^^H&1.2&ISO^MR~X", Some("ICU^R^12"), 97).into_bytes();
        let i = at % edited.len();
        edited[i] = b;
        for m in [msg, edited] {
            if let Ok(r) = hl7::routing(&m) {
                if let Some(loc) = r.location {
                    match hl7::bed_device_id("central-1", &loc) {
                        Ok(id) => {
                            proptest::prop_assert!(id.len() <= 128);
                            proptest::prop_assert!(!id.chars().any(char::is_control));
                            proptest::prop_assert_eq!(id.matches('/').count(), 1);
                        }
                        Err(e) => proptest::prop_assert_eq!(e.code, AckCode::AE),
                    }
                }
            }
        }
    }
}
