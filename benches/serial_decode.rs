//! Parse throughput of every serial driver and shipped profile, from bytes as
//! they arrive on the port to records of readings: `cargo bench --bench
//! serial_decode`. Each case decodes a stream of 100 records in 64-byte reads
//! (a UART FIFO's worth, what the adapter gets from a USB-serial port), once
//! as records per second (`records/`) and once as bytes per second
//! (`bytes/`). The streams come from the simulator's writers
//! (`simulate::serial`, which share no code with the decoders) and, for the
//! Nellcor N-595, from the printer lines of its manual's example
//! (docs/serial.md). docs/performance.md has the figures and what they mean
//! per monitor at its real rate.

use chrono::{FixedOffset, NaiveDate, TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use iomt_edge::adapters::serial::{Decoded, Driver};
use iomt_edge::simulate::serial::{self as sim, NoninBinary, Patient};
use std::time::Duration;

const RECORDS: usize = 100;
const READ: usize = 64;

/// (driver name, stream of RECORDS records)
fn streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut p = Patient::new(7);
    let clock = NaiveDate::from_ymd_opt(2025, 6, 10).and_then(|d| d.and_hms_opt(1, 0, 0)).unwrap_or_default();
    let zone = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).unwrap());
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut masimo = Vec::new();
    let mut nonin = Vec::new();
    let mut nellcor = Vec::new();
    let mut hl7 = Vec::new();
    let mut df2 = Vec::new();
    let mut df7 = Vec::new();
    let mut df8 = Vec::new();
    for i in 0..RECORDS {
        let v = p.sample();
        let t = clock + chrono::Duration::seconds(i as i64);
        masimo.extend(sim::masimo_line(t, &v, sim::MASIMO_EXC_SET).bytes());
        nonin.extend(sim::nonin_ascii_line(&v).bytes());
        let spo2 = v.spo2.map(|s| format!("{s:>3}")).unwrap_or_else(|| "---".into());
        let bpm = v.pulse.map(|s| format!("{s:>3}")).unwrap_or_else(|| "---".into());
        nellcor.extend(format!("{}   {spo2}  {bpm}  50\r\n", t.format("%d-%b-%y %H:%M:%S").to_string().to_uppercase()).bytes());
        let at = zone.from_local_datetime(&t).single().unwrap_or_else(|| Utc::now().with_timezone(&zone));
        hl7.extend(sim::mllp(&sim::hl7_oru(&format!("MSG{i}"), at, &v)));
        df2.extend(sim::nonin_packet(NoninBinary::Df2, &v, sim::NONIN_STATUS_OK, 1000));
        df7.extend(sim::nonin_packet(NoninBinary::Df7, &v, sim::NONIN_STATUS_OK, 1000));
        df8.extend(sim::nonin_df8_record(&v, sim::NONIN_STATUS_OK));
    }
    out.push(("masimo-ascii1", masimo));
    out.push(("nonin-ascii", nonin));
    out.push(("nellcor-n595", nellcor));
    out.push(("hl7", hl7));
    out.push(("nonin-df2", df2));
    out.push(("nonin-df7", df7));
    out.push(("nonin-df8", df8));
    out
}

fn decode(driver: &Driver, stream: &[u8]) -> Decoded {
    let now = Utc::now();
    let mut d = driver.decoder("bench-1");
    let mut out = Vec::with_capacity(RECORDS + 4);
    for chunk in stream.chunks(READ) {
        d.push(chunk, now, &mut out);
    }
    d.finish(now, &mut out);
    out
}

fn bench(c: &mut Criterion) {
    let cases: Vec<(&str, Driver, Vec<u8>)> = streams()
        .into_iter()
        .map(|(name, s)| match Driver::by_name(name) {
            Ok(d) => (name, d, s),
            Err(e) => panic!("{name}: {e}"),
        })
        .collect();
    // The stream must decode to its records and nothing bad, or the figure
    // measures the error path. Nonin DF2 and DF7 send three packets a second
    // and the decoder keeps one in three (the first of each three), so their
    // RECORDS packets give a third as many records; their "records" below
    // are packets read.
    for (name, d, s) in &cases {
        let out = decode(d, s);
        let good = out.iter().filter(|r| r.is_ok()).count();
        let expected = if matches!(*name, "nonin-df2" | "nonin-df7") { RECORDS.div_ceil(3) } else { RECORDS };
        assert!(
            good == expected && good == out.len(),
            "{name}: {good} of {} results are records, {expected} expected: {:?}",
            out.len(),
            out.iter().find(|r| r.is_err())
        );
        eprintln!("{name}: {} bytes per record", s.len() / RECORDS);
    }
    for (unit, per_record) in [("records", false), ("bytes", true)] {
        let mut g = c.benchmark_group(format!("serial_decode/{unit}"));
        g.measurement_time(Duration::from_secs(3)).sample_size(20);
        for (name, d, s) in &cases {
            g.throughput(if per_record { Throughput::Bytes(s.len() as u64) } else { Throughput::Elements(RECORDS as u64) });
            g.bench_function(*name, |b| b.iter(|| decode(d, black_box(s))));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
