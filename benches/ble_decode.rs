//! Decode throughput of the BLE GATT decoders (notifications per second):
//! `cargo bench --bench ble_decode`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use iomt_edge::adapters::ble::gatt::{decode, Characteristic};
use iomt_edge::adapters::device_clock::{GatewayZone, TimeContext};
use iomt_edge::model::DeviceKind;

fn bench(c: &mut Criterion) {
    let cases: [(&str, Characteristic, &[u8], DeviceKind); 4] = [
        ("2a37_hr_rr", Characteristic::HeartRateMeasurement, &[0x16, 0x4B, 0x2E, 0x03], DeviceKind::HeartRateStrap),
        (
            "2a37_hr_ee_4rr",
            Characteristic::HeartRateMeasurement,
            &[0x19, 0xB4, 0x00, 0x2C, 0x01, 0x55, 0x01, 0x55, 0x01, 0x55, 0x01, 0x55, 0x01],
            DeviceKind::HeartRateStrap,
        ),
        ("2a5f_status_pai", Characteristic::PlxContinuous, &[0x14, 0xCF, 0xF3, 0xD0, 0xF2, 0x20, 0x00, 0x22, 0xF0], DeviceKind::PulseOximeter),
        (
            "2a5f_fast_slow",
            Characteristic::PlxContinuous,
            &[0x03, 0x61, 0x00, 0x4A, 0x00, 0x60, 0x00, 0x4C, 0x00, 0x62, 0x00, 0x48, 0x00],
            DeviceKind::PulseOximeter,
        ),
    ];
    let now = TimeContext::new(chrono::Utc::now(), GatewayZone::Local);
    let mut g = c.benchmark_group("ble_decode");
    g.throughput(Throughput::Elements(1));
    for (name, ch, bytes, kind) in cases {
        g.bench_function(format!("{name}/decode"), |b| b.iter(|| decode(ch, black_box(bytes))));
        g.bench_function(format!("{name}/decode_to_readings"), |b| {
            b.iter(|| decode(ch, black_box(bytes)).map(|d| d.to_readings("strap-1", kind, &now)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
