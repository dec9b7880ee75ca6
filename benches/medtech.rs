//! Messages per second through normalize + group + transform, for the shipped
//! mappings (our messages) and the workshop mappings (its sample messages).
//!
//! `cargo bench --bench medtech`

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iomt_edge::medtech::{MedTech, PreviewOptions};
use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use serde_json::Value;

/// `n` gateway messages of 10 readings each (heart rate + RR + SpO2 + ...), one second apart.
fn gateway_messages(n: usize) -> Vec<Value> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let t = t0 + chrono::Duration::seconds(i as i64);
            let mut rs = Vec::new();
            for kind in [ReadingType::HeartRate, ReadingType::RrInterval, ReadingType::Spo2, ReadingType::PulseRate, ReadingType::PerfusionIndex] {
                let mut r = Reading::new("strap-1", DeviceKind::HeartRateStrap, kind).at(t);
                for (name, _) in kind.value_units() {
                    r.set_value(name, 70.0 + (i % 7) as f64);
                }
                r.patient_id = Some("patient-1".into());
                rs.push(r);
            }
            let mut bp = Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::BloodPressure).at(t);
            bp.set_value("systolic", 120.0);
            bp.set_value("diastolic", 80.0);
            bp.patient_id = Some("patient-1".into());
            rs.push(bp);
            serde_json::to_value(Message::from_batch("gw", "00000001", &rs).unwrap()).unwrap()
        })
        .collect()
}

fn workshop_messages(n: usize) -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/medtech/ahds-workshop-ch09-messages.fixed.json");
    let base: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
    let t0 = Utc.with_ymd_and_hms(2020, 10, 22, 1, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let mut m = base[i % base.len()].clone();
            let t = t0 + chrono::Duration::seconds(i as i64 * 5);
            m["data"][0]["utctimestamp"] = Value::String(t.to_rfc3339());
            m
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let opts = PreviewOptions { ingestion_time: Some(Utc::now()), issued: Some(Utc::now()), ..Default::default() };
    let shipped = MedTech::shipped().unwrap();
    let read = |n: &str| std::fs::read_to_string(format!("{}/tests/data/medtech/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let workshop = MedTech::new(&read("ahds-workshop-ch09-devicecontent.json"), &read("ahds-workshop-ch09-fhirmapping.json")).unwrap();
    let mut g = c.benchmark_group("medtech_pipeline");
    g.sample_size(20);
    for n in [100usize, 1000] {
        let msgs = gateway_messages(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("shipped_6_readings_per_msg", n), &msgs, |b, m| b.iter(|| shipped.preview(m, &opts)));
        let msgs = workshop_messages(n);
        g.bench_with_input(BenchmarkId::new("workshop", n), &msgs, |b, m| b.iter(|| workshop.preview(m, &opts)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
