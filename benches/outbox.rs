//! Criterion micro-benchmarks of the outbox's hot paths: storing a group of
//! readings (with and without the flush) and building a message from a batch.
//! The end-to-end figures (group commit, forwarding, reopen, daemon RSS) come
//! from `iomt-edge bench`; see docs/performance.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use iomt_edge::config::OutboxConfig;
use iomt_edge::model::{DeviceKind, Message, Reading, ReadingType};
use iomt_edge::outbox::Outbox;

fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading::new("strap-1", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", (60 + i % 40) as f64))
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig { max_bytes: iomt_edge::config::units::ByteSize(8 << 30), ..OutboxConfig::default() };
    let (ob, _) = Outbox::open(&dir.path().join("outbox"), &cfg).unwrap();
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append 1000 readings, no flush", |b| {
        b.iter_batched(|| readings(1000), |mut rs| ob.append_unflushed(&mut rs).unwrap(), BatchSize::SmallInput)
    });
    g.sample_size(20);
    g.bench_function("append 1000 readings + flush (one group commit)", |b| {
        b.iter_batched(|| readings(1000), |mut rs| ob.append(&mut rs).unwrap(), BatchSize::SmallInput)
    });
    g.finish();

    let mut rs = readings(500);
    for (i, r) in rs.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Elements(500));
    g.bench_function("build + serialize a 500-reading message", |b| b.iter(|| Message::from_batch("gw", "00000000", &rs).unwrap().to_json().len()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
