//! Serial monitors through the whole gateway: four simulated monitors write
//! real bytes at their real rates onto pseudo-terminals, the `iomt-edge`
//! binary reads them through tokio-serial (`[device.serial]`), commits them
//! to its outbox and delivers them to a file; the readings are checked value
//! by value against what was sent.
//!
//! The bytes come from `iomt_edge::simulate::serial`, whose writers follow the
//! format documents and never call the gateway's decoders. Besides good
//! records the monitors send line noise, binary junk, a corrupted Nonin packet
//! and an HL7 message that is not ORU^R01 (none may give a reading), a Masimo
//! line cut in the middle by the port disappearing (the half line must not
//! give a reading), the port coming back under the same path after a while
//! (the gateway reopens it), and a pause longer than the quiet timeout (a
//! `silent` event). Each device's `init` bytes, sent by the gateway after
//! every open, tell the monitor that the gateway is listening.

use crate::support::gateway as gateway_common;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use iomt_edge::simulate::serial::{
    hl7_oru, masimo_line, mllp, nonin_ascii_line, nonin_packet, NoninBinary, Pty, Vitals, MASIMO_EXC_SENSOR_OFF, MASIMO_EXC_SET, NONIN_STATUS_OK,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Opens a terminal pair and points `link` at it (a udev by-id link).
fn plug(link: &Path) -> Pty {
    let pty = Pty::open().expect("a pseudo-terminal");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(pty.path(), link).expect("link");
    pty
}

/// Waits until the gateway opened the port and sent its init bytes; returns them.
async fn wait_for_init(pty: &mut Pty, what: &str) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let got = pty.take_received();
        if !got.is_empty() {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: the gateway never opened the port (no init bytes)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn v(spo2: u8, pulse: u16) -> Vitals {
    Vitals { spo2: Some(spo2), pulse: Some(pulse), ..Vitals::NONE }
}

/// What one device's readings must be, per type, in order (None: no value).
type Expected = BTreeMap<&'static str, Vec<Option<f64>>>;

fn push(e: &mut Expected, kind: &'static str, value: Option<f64>) {
    e.entry(kind).or_default().push(value);
}

/// Masimo ASCII 1, one line per second: good lines, junk, a sensor-off line;
/// then a line cut in the middle as the port disappears; 1.5 s later the
/// port is back under the same path and three more lines follow.
async fn masimo(link: PathBuf) -> (Expected, Pty) {
    let mut e = Expected::new();
    let mut pty = plug(&link);
    wait_for_init(&mut pty, "masimo").await;
    let clock = NaiveDate::from_ymd_opt(2016, 2, 22).unwrap().and_hms_opt(22, 47, 45).unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let lines: Vec<(Vitals, u32)> = vec![
        (Vitals { pi: Some(3.6), ..v(98, 97) }, MASIMO_EXC_SET),
        (Vitals { pi: Some(0.55), ..v(97, 96) }, MASIMO_EXC_SET),
        (Vitals::NONE, MASIMO_EXC_SET | MASIMO_EXC_SENSOR_OFF),
        (Vitals { pi: Some(12.25), ..v(95, 101) }, MASIMO_EXC_SET),
    ];
    for (i, (vit, exc)) in lines.iter().enumerate() {
        tick.tick().await;
        if i == 2 {
            pty.send(b"\x00\xff\xfe\x13 SPO2=\x7f\r\n").await;
        }
        pty.send(masimo_line(clock + chrono::Duration::seconds(i as i64), vit, *exc).as_bytes()).await;
        push(&mut e, "spo2", vit.spo2.map(f64::from));
        push(&mut e, "pulseRate", vit.pulse.map(f64::from));
        push(&mut e, "perfusionIndex", vit.pi);
    }
    // Cut mid-line (in the middle of BPM), then the device node goes away.
    tick.tick().await;
    let cut = masimo_line(clock, &Vitals { pi: Some(2.0), ..v(99, 123) }, MASIMO_EXC_SET);
    let at = cut.find("BPM=").unwrap() + 5;
    pty.send(&cut.as_bytes()[..at]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(pty);
    std::fs::remove_file(&link).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pty = plug(&link);
    wait_for_init(&mut pty, "masimo after the replug").await;
    for (i, vit) in
        [Vitals { pi: Some(1.5), ..v(94, 88) }, Vitals { pi: Some(1.25), ..v(93, 87) }, Vitals { pi: Some(1.0), ..v(92, 86) }].iter().enumerate()
    {
        tick.tick().await;
        pty.send(masimo_line(clock + chrono::Duration::seconds(10 + i as i64), vit, MASIMO_EXC_SET).as_bytes()).await;
        push(&mut e, "spo2", vit.spo2.map(f64::from));
        push(&mut e, "pulseRate", vit.pulse.map(f64::from));
        push(&mut e, "perfusionIndex", vit.pi);
    }
    (e, pty)
}

/// Nonin ASCII, one line per second, polled: good lines, a `---` line, junk
/// with `=` signs, then a pause longer than the quiet timeout, then more.
async fn nonin_ascii(link: PathBuf) -> (Expected, Vec<u8>, Pty) {
    let mut e = Expected::new();
    let mut pty = plug(&link);
    let mut received = wait_for_init(&mut pty, "nonin-ascii").await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let script: Vec<Option<Vitals>> = vec![Some(v(97, 72)), Some(Vitals::NONE), None, Some(v(96, 75)), Some(v(99, 61)), Some(v(100, 159))];
    for (i, s) in script.iter().enumerate() {
        tick.tick().await;
        if i == 4 {
            // Longer than quiet_timeout (1.5 s): the gateway marks it silent.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            tick.reset();
        }
        match s {
            Some(vit) => {
                pty.send(nonin_ascii_line(vit).as_bytes()).await;
                push(&mut e, "spo2", vit.spo2.map(f64::from));
                push(&mut e, "pulseRate", vit.pulse.map(f64::from));
            }
            None => pty.send(b"SPO2=9\x1b[7 HR==\r\n").await,
        }
        received.extend(pty.take_received());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    received.extend(pty.take_received());
    (e, received, pty)
}

/// Nonin DF7 at 75 frames/s (a packet every 1/3 s), with junk between
/// packets and one packet with a corrupted byte (lost, counted); then it
/// stops sending. Of the good packets (all with the same status) the
/// gateway keeps one in three, one a second (nonin.rs, "Rate").
async fn nonin_df7(link: PathBuf) -> (Expected, Vec<u8>, Pty) {
    let mut e = Expected::new();
    let mut pty = plug(&link);
    let init = wait_for_init(&mut pty, "nonin-df7").await;
    pty.send(&[0x06]).await; // ACK of the format-select command
    let mut good = 0;
    for i in 0..9u16 {
        let vit = v(90 + i as u8, 60 + 7 * i);
        let mut packet = nonin_packet(NoninBinary::Df7, &vit, NONIN_STATUS_OK, 1000 + i * 50);
        if i == 4 {
            packet[5 * 7 + 2] ^= 0x10; // a bit flipped in frame 8: checksum mismatch
        } else {
            if good % 3 == 0 {
                push(&mut e, "spo2", vit.spo2.map(f64::from));
                push(&mut e, "pulseRate", vit.pulse.map(f64::from));
            }
            good += 1;
        }
        if i == 2 || i == 6 {
            pty.send(&[0x00, 0x13, 0x37, 0x42, 0x7f, 0x00, 0x00]).await;
        }
        for frames in packet.chunks(25) {
            pty.send(frames).await;
            tokio::time::sleep(Duration::from_micros(1_000_000 / 15)).await;
        }
    }
    // Then silence, longer than its quiet timeout (2 s).
    tokio::time::sleep(Duration::from_millis(2600)).await;
    (e, init, pty)
}

/// HL7 ORU^R01 over the serial line, MLLP-framed, one message every 1.5 s,
/// with noise between blocks and a message of another type.
async fn hl7(link: PathBuf) -> (Expected, Vec<DateTime<FixedOffset>>, Pty) {
    let mut e = Expected::new();
    let mut times = Vec::new();
    let mut pty = plug(&link);
    wait_for_init(&mut pty, "hl7").await;
    let zone = FixedOffset::east_opt(2 * 3600).unwrap();
    let msgs = [
        Vitals { rr: Some(16), temp: Some(36.9), nibp: Some((121, 79, 93)), ..v(97, 64) },
        Vitals { rr: Some(18), temp: Some(37.4), nibp: Some((135, 85, 102)), ..Vitals::NONE },
        Vitals { rr: Some(22), temp: None, nibp: None, ..v(95, 70) },
    ];
    for (i, vit) in msgs.iter().enumerate() {
        // Whole seconds: HL7 DTM carries seconds.
        let now = Utc::now().with_timezone(&zone);
        let t = now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos()));
        if i == 1 {
            pty.send(b"\r\n#junk#").await;
            pty.send(&mllp("MSH|^~\\&|X|Y|||20250610015127+0800||ADT^A01|Q1|P|2.6\rEVN|A01\r")).await;
        }
        pty.send(&mllp(&hl7_oru(&format!("C{i}"), t, vit))).await;
        times.push(t);
        push(&mut e, "spo2", vit.spo2.map(f64::from));
        push(&mut e, "pulseRate", vit.pulse.map(f64::from));
        push(&mut e, "respirationRate", vit.rr.map(f64::from));
        if let Some(temp) = vit.temp {
            push(&mut e, "bodyTemperature", Some(temp));
        }
        if let Some((s, d, m)) = vit.nibp {
            push(&mut e, "systolic", Some(f64::from(s)));
            push(&mut e, "diastolic", Some(f64::from(d)));
            push(&mut e, "mean", Some(f64::from(m)));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    (e, times, pty)
}

/// Readings delivered for one device, in order.
fn delivered(sink: &Path, device: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let m: Value = serde_json::from_str(line).expect("a whole JSON message per line");
        if m["deviceId"] == device {
            out.extend(m["readings"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

/// The delivered values per type (blood pressure split into its components).
fn values(readings: &[Value]) -> Expected {
    let mut e = Expected::new();
    for r in readings.iter().filter(|r| r["type"] != "deviceEvent") {
        let ty = r["type"].as_str().unwrap();
        if ty == "bloodPressure" {
            for k in ["systolic", "diastolic", "mean"] {
                push(&mut e, k, r["values"][k].as_f64());
            }
            continue;
        }
        let kind: &'static str = Box::leak(ty.to_string().into_boxed_str());
        push(&mut e, kind, r["values"][ty].as_f64());
    }
    e
}

fn events(readings: &[Value]) -> Vec<String> {
    readings.iter().filter_map(|r| r["event"].as_str().map(str::to_string)).collect()
}

/// [`events`] without a last `silent` that follows a `connected`: the
/// simulated monitor stops sending once its script is done, and the gateway
/// is stopped only after every delivery arrived; on a loaded machine that
/// can be longer than the quiet timeout, and the gateway then rightly says
/// the monitor went silent. Every event before the end must still be there.
fn events_until_the_script_ended(readings: &[Value]) -> Vec<String> {
    let mut e = events(readings);
    if e.len() >= 2 && e[e.len() - 1] == "silent" && e[e.len() - 2] == "connected" {
        e.pop();
    }
    e
}

fn flags(r: &Value) -> Vec<String> {
    r["flags"].as_array().map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_monitors_through_the_gateway_value_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = d.join("delivered.ndjson");
    let link = |n: &str| d.join(n);
    let config = format!(
        r#"[gateway]
id = "gw-serial-e2e"
state_dir = "{state}"
[outbox]
flush_interval_ms = 20
[forwarder]
batch_max_age_ms = 100

[[device]]
id = "masimo-1"
kind = "pulse_oximeter"
[device.serial]
port = "{masimo}"
driver = "masimo-ascii1"
init = "0d 0a"
reopen_max = "1s"

[[device]]
id = "nonin-1"
kind = "pulse_oximeter"
[device.serial]
port = "{nonin}"
driver = "nonin-ascii"
stop_bits = 2
init = "0d"
poll = "05"
poll_interval = "400ms"
quiet_timeout = "1500ms"

[[device]]
id = "df7-1"
kind = "pulse_oximeter"
[device.serial]
port = "{df7}"
driver = "nonin-df7"
init = "02 70 02 02 07 03"
quiet_timeout = "2s"

[[device]]
id = "monitor-1"
kind = "bedside_monitor"
[device.serial]
port = "{hl7}"
driver = "hl7"
baud = 115200
init = "0d"

[sink.file]
path = "{sink}"
"#,
        state = d.join("state").display(),
        masimo = link("ttyMasimo").display(),
        nonin = link("ttyNonin").display(),
        df7 = link("ttyDf7").display(),
        hl7 = link("ttyHl7").display(),
        sink = sink.display(),
    );
    let cfg = d.join("gw.toml");
    std::fs::write(&cfg, config).unwrap();
    let started = Instant::now();
    // The ports exist before the gateway starts, except the Masimo's: it is
    // plugged in a moment later (the gateway waits for it).
    let nonin_task = tokio::spawn(nonin_ascii(link("ttyNonin")));
    let df7_task = tokio::spawn(nonin_df7(link("ttyDf7")));
    let hl7_task = tokio::spawn(hl7(link("ttyHl7")));
    std::env::remove_var("RUNTIME_DIRECTORY");
    let (mut child, reader) = gateway_common::start(&cfg, Default::default());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let masimo_task = tokio::spawn(masimo(link("ttyMasimo")));
    // The monitors stay plugged in (their terminals open) until the gateway stopped.
    let (want_masimo, _masimo_port) = masimo_task.await.unwrap();
    let (want_nonin, nonin_received, _nonin_port) = nonin_task.await.unwrap();
    let (want_df7, df7_init, _df7_port) = df7_task.await.unwrap();
    let (want_hl7, hl7_times, _hl7_port) = hl7_task.await.unwrap();

    // Everything sent is read; wait for its delivery, then stop the gateway.
    let want = [("masimo-1", &want_masimo), ("nonin-1", &want_nonin), ("df7-1", &want_df7), ("monitor-1", &want_hl7)];
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if want.iter().all(|(id, w)| values(&delivered(&sink, id)).get("spo2").map(Vec::len) >= w.get("spo2").map(Vec::len)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway_common::terminate(&child);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "the gateway stopped cleanly");
    eprintln!("took {:?}", started.elapsed());

    // Value by value, in order: nothing lost, nothing invented (the cut line,
    // the junk, the corrupted packet and the ADT message gave nothing).
    for (id, w) in &want {
        let got = values(&delivered(&sink, id));
        assert_eq!(&got, *w, "{id}: delivered values differ from what the monitor sent");
    }

    // Masimo: the sensor-off line is a gap with its reason, never a number.
    let masimo = delivered(&sink, "masimo-1");
    let off: Vec<&Value> = masimo.iter().filter(|r| r["type"] == "spo2" && r["values"].get("spo2").is_none()).collect();
    assert_eq!(off.len(), 1);
    assert!(flags(off[0]).contains(&"valueUnavailable".to_string()) && flags(off[0]).contains(&"sensorDisconnected".to_string()), "{:?}", off[0]);
    // The monitor's clock travels beside the arrival time.
    let first = masimo.iter().find(|r| r["type"] == "spo2").unwrap();
    assert_eq!(first["deviceTime"]["local"], "2016-02-22T22:47:45", "{first}");
    assert_eq!(first["deviceTime"]["timeFrom"], "arrival");
    // The replug: connected, disconnected when the port went away, connected again.
    assert_eq!(events_until_the_script_ended(&masimo), vec!["gatewayStarted", "connected", "disconnected", "connected"]);

    // Nonin ASCII: the pause gave a silent event, then connected again; polls were sent.
    assert_eq!(events_until_the_script_ended(&delivered(&sink, "nonin-1")), vec!["gatewayStarted", "connected", "silent", "connected"]);
    assert!(nonin_received.iter().filter(|b| **b == 0x05).count() >= 5, "poll bytes: {nonin_received:02x?}");
    // The init bytes were sent again at the quiet timeout.
    assert!(nonin_received.iter().filter(|b| **b == 0x0d).count() >= 2, "init again after the quiet timeout: {nonin_received:02x?}");

    // DF7: the format-select command was the init.
    assert_eq!(df7_init, vec![0x02, 0x70, 0x02, 0x02, 0x07, 0x03]);
    assert_eq!(events(&delivered(&sink, "df7-1")), vec!["gatewayStarted", "connected", "silent"]);

    // HL7: OBX-14 (with its zone) is the measurement time; a missing SpO2 is a gap.
    let hl7 = delivered(&sink, "monitor-1");
    for (i, t) in hl7_times.iter().enumerate() {
        let rr: Vec<&Value> = hl7.iter().filter(|r| r["type"] == "respirationRate").collect();
        let time = DateTime::parse_from_rfc3339(rr[i]["time"].as_str().unwrap()).unwrap();
        assert_eq!(time, *t, "message {i}: time is OBX-14");
        assert_eq!(rr[i]["deviceTime"]["timeFrom"], "deviceZone");
        assert_eq!(rr[i]["deviceTime"]["utcOffsetSeconds"], 7200);
    }
    let no_spo2 = hl7.iter().filter(|r| r["type"] == "spo2").nth(1).unwrap();
    assert_eq!(flags(no_spo2), vec!["valueUnavailable"]);

    // Bad input was counted per device, in the status file of the stopped gateway.
    let st: Value = serde_json::from_str(&std::fs::read_to_string(d.join("state/status.json")).unwrap()).unwrap();
    let dev = |id: &str| st["devices"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap();
    assert!(dev("masimo-1")["inputErrors"].as_u64().unwrap() >= 2, "junk line and the cut line: {}", dev("masimo-1"));
    assert!(dev("nonin-1")["inputErrors"].as_u64().unwrap() >= 1, "{}", dev("nonin-1"));
    assert!(dev("df7-1")["inputErrors"].as_u64().unwrap() >= 2, "junk and the corrupted packet: {}", dev("df7-1"));
    assert!(dev("monitor-1")["inputErrors"].as_u64().unwrap() >= 2, "junk and the ADT message: {}", dev("monitor-1"));
    assert!(started.elapsed() < Duration::from_secs(60));
}
