//! Every number, size and duration in the config has a documented range
//! (config/iomt-edge.toml): a table over extreme values of each option (0, 1,
//! the bounds and one past them, 2^32, i64::MAX, huge durations) asserts either
//! a clear error at the option's line, or a value the gateway's arithmetic
//! handles (deadlines, backoff, expiry cut-offs cannot overflow). And the
//! outbox's expiry with a huge `max_age` (built without the config check)
//! drops nothing: `max_age = 18446744073709552` seconds once wrapped to 384 ms.

use iomt_edge::config::iothub::IotHubSinkConfig;
use iomt_edge::config::{ble::BleDeviceConfig, parse_str, Config, DeviceSource, OutboxConfig, SimulatedDeviceConfig, SinkConfig};
use iomt_edge::forwarder::ForwarderSettings;
use iomt_edge::model::{DeviceKind, Reading, ReadingType};
use iomt_edge::outbox::Outbox;
use std::path::Path;
use std::time::{Duration, Instant};

/// A valid file with a slot in each table for the option under test.
const TEMPLATE: &str = r#"[gateway]
id = "gw"
state_dir = "/tmp/x"

[outbox]
{outbox}
[forwarder]
{forwarder}
[[device]]
id = "sim"
kind = "heart_rate_strap"
[device.simulated]
{simulated}
[[device]]
id = "strap"
kind = "heart_rate_strap"
[device.ble]
address = "AA:BB:CC:DD:EE:FF"
{ble}
[sink.iothub]
connection_string = { env = "IOMT_EDGE_RANGES_TEST" }
{iothub}
"#;

/// The loaded config's parts the table reads back.
fn simulated(c: &Config, i: usize) -> &SimulatedDeviceConfig {
    match &c.devices[i].source {
        DeviceSource::Simulated(s) => s,
        other => panic!("device {i} is not simulated: {other:?}"),
    }
}
fn ble(c: &Config, i: usize) -> &BleDeviceConfig {
    match &c.devices[i].source {
        DeviceSource::Ble(b) => b,
        other => panic!("device {i} is not BLE: {other:?}"),
    }
}
fn iothub(c: &Config) -> &IotHubSinkConfig {
    match &c.sink {
        SinkConfig::IotHub(h) => h,
        other => panic!("the sink is not IoT Hub: {other:?}"),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// An integer (a count, or milliseconds).
    Int,
    /// A size: an integer of bytes or a string like "4MiB".
    Bytes,
    /// A duration: an integer of seconds or a string like "30s".
    Duration,
}

/// One option: its table slot, key, kind, range (in bytes, ms or units) and
/// how to read it back from a loaded config. `extra` is set beside it (an
/// option whose range depends on another).
struct Opt {
    slot: &'static str,
    key: &'static str,
    kind: Kind,
    lo: u128,
    hi: u128,
    extra: &'static str,
    get: fn(&Config) -> u128,
}

const MIB: u128 = 1 << 20;
const DAY_MS: u128 = 86_400_000;

fn options() -> Vec<Opt> {
    let o = |slot, key, kind, lo, hi, get| Opt { slot, key, kind, lo, hi, extra: "", get };
    vec![
        o("outbox", "flush_interval_ms", Kind::Int, 0, 10_000, |c| c.outbox.flush_interval_ms.into()),
        o("outbox", "max_bytes", Kind::Bytes, MIB, 1024 * 1024 * MIB, |c| c.outbox.max_bytes.bytes().into()),
        o("outbox", "max_age", Kind::Duration, 60_000, 3650 * DAY_MS, |c| c.outbox.max_age.as_millis()),
        o("outbox", "cache_bytes", Kind::Bytes, MIB / 4, 1024 * MIB, |c| c.outbox.cache_bytes.bytes().into()),
        o("forwarder", "batch_max_readings", Kind::Int, 1, 100_000, |c| c.forwarder.batch_max_readings as u128),
        o("forwarder", "batch_max_bytes", Kind::Bytes, 1024, 16 * MIB, |c| c.forwarder.batch_max_bytes.bytes().into()),
        o("forwarder", "batch_max_age_ms", Kind::Int, 0, 600_000, |c| c.forwarder.batch_max_age_ms.into()),
        Opt {
            extra: "retry_max_ms = 3600000",
            ..o("forwarder", "retry_initial_ms", Kind::Int, 1, 3_600_000, |c| c.forwarder.retry_initial_ms.into())
        },
        Opt { extra: "retry_initial_ms = 1", ..o("forwarder", "retry_max_ms", Kind::Int, 1, 3_600_000, |c| c.forwarder.retry_max_ms.into()) },
        o("forwarder", "auth_retry_ms", Kind::Int, 1000, DAY_MS, |c| c.forwarder.auth_retry_ms.into()),
        o("simulated", "interval_ms", Kind::Int, 10, DAY_MS, |c| simulated(c, 0).interval_ms.into()),
        o("ble", "silence_timeout", Kind::Duration, 200, 600_000, |c| ble(c, 1).silence_timeout.as_millis()),
        o("ble", "reconnect_max", Kind::Duration, 500, 3_600_000, |c| ble(c, 1).reconnect_max.as_millis()),
        o("iothub", "token_ttl", Kind::Duration, 2000, 365 * DAY_MS, |c| iothub(c).token_ttl.as_millis()),
        o("iothub", "keep_alive", Kind::Duration, 5000, 1_177_000, |c| iothub(c).keep_alive.as_millis()),
        o("iothub", "ack_timeout", Kind::Duration, 500, 600_000, |c| iothub(c).ack_timeout.as_millis()),
        o("iothub", "max_in_flight", Kind::Int, 1, 1000, |c| iothub(c).max_in_flight as u128),
    ]
}

/// Values to try, as TOML text, with the value they mean (ms for durations,
/// bytes for sizes) or `None` when the text itself is not a valid value.
fn values(kind: Kind, lo: u128, hi: u128) -> Vec<(String, Option<u128>)> {
    let mut v: Vec<(String, Option<u128>)> = Vec::new();
    let int = |n: u128| (n.to_string(), Some(n));
    match kind {
        Kind::Int | Kind::Bytes => {
            for n in [0, 1, lo.saturating_sub(1), lo, hi, hi + 1, 1 << 32, i64::MAX as u128] {
                v.push(int(n));
            }
            v.push(("-1".into(), None));
            if kind == Kind::Bytes {
                v.push(("\"0B\"".into(), Some(0)));
                v.push((format!("\"{}KiB\"", hi / 1024), Some(hi / 1024 * 1024)));
                v.push((format!("\"{}KiB\"", hi / 1024 + 1), Some((hi / 1024 + 1) * 1024)));
                v.push(("\"99999999999GiB\"".into(), None));
                v.push(("\"16EiB\"".into(), None));
            }
        }
        Kind::Duration => {
            // Whole seconds as integers.
            for s in [0u128, 1, 18_446_744_073_709_552, i64::MAX as u128] {
                v.push((s.to_string(), Some(s * 1000)));
            }
            for ms in [0, 1, lo.saturating_sub(1), lo, hi, hi + 1] {
                v.push((format!("\"{ms}ms\""), Some(ms)));
            }
            v.push(("\"0s\"".into(), Some(0)));
            v.push(("\"213503982334601d\"".into(), Some(213_503_982_334_601 * DAY_MS)));
            v.push(("\"600000000000000000000y\"".into(), None));
            v.push(("\"soon\"".into(), None));
            v.push(("-5".into(), None));
        }
    }
    v
}

fn file_with(opt: &Opt, value: &str) -> String {
    let mut text = TEMPLATE.to_string();
    for slot in ["outbox", "forwarder", "simulated", "ble", "iothub"] {
        let fill = if slot == opt.slot { format!("{} = {value}\n{}", opt.key, opt.extra) } else { String::new() };
        text = text.replace(&format!("{{{slot}}}"), &fill);
    }
    text
}

/// What the runtime makes of an accepted config must not overflow: deadlines
/// from now, the backoff, the outbox's expiry cut-off.
fn runtime_arithmetic_holds(c: &Config) {
    let now = Instant::now();
    let mut durations = vec![
        c.outbox.max_age,
        Duration::from_millis(c.outbox.flush_interval_ms),
        Duration::from_millis(c.forwarder.batch_max_age_ms),
        Duration::from_millis(c.forwarder.retry_initial_ms),
        Duration::from_millis(c.forwarder.retry_max_ms),
        Duration::from_millis(c.forwarder.auth_retry_ms),
    ];
    for d in &c.devices {
        match &d.source {
            DeviceSource::Simulated(s) => durations.push(Duration::from_millis(s.interval_ms)),
            DeviceSource::Ble(b) => {
                durations.push(b.silence_timeout);
                durations.push(b.reconnect_max.saturating_mul(2));
            }
            _ => {}
        }
    }
    if let SinkConfig::IotHub(h) = &c.sink {
        durations.extend([h.token_ttl, h.keep_alive, h.ack_timeout]);
    }
    for d in durations {
        assert!(now.checked_add(d).is_some(), "now + {d:?} overflows");
        assert!(u64::try_from(d.as_millis()).is_ok(), "{d:?} in ms overflows a u64");
    }
    let f = ForwarderSettings::from_config(c);
    assert_eq!(f.batching.max_age(), Duration::from_millis(c.forwarder.batch_max_age_ms));
    for attempt in [0, 1, 10, 31, 32, 1000, u32::MAX] {
        let d = f.retry.delay(attempt);
        assert!(d <= Duration::from_millis(c.forwarder.retry_max_ms), "backoff {d:?} beyond retry_max_ms");
    }
    // The expiry cut-off of a reading committed now is in the past, not wrapped.
    let max_age_ms = u64::try_from(c.outbox.max_age.as_millis()).unwrap();
    assert!(max_age_ms >= 60_000);
}

#[test]
fn every_option_at_extreme_values_is_refused_clearly_or_handled() {
    let mut checked = 0;
    for opt in options() {
        for (value, means) in values(opt.kind, opt.lo, opt.hi) {
            let text = file_with(&opt, &value);
            let line = text.lines().position(|l| l.starts_with(&format!("{} = ", opt.key))).unwrap() + 1;
            let result = std::panic::catch_unwind(|| parse_str(&text, Path::new("t.toml")));
            let result = result.unwrap_or_else(|_| panic!("{} = {value}: loading panicked", opt.key));
            let accept = means.is_some_and(|m| (opt.lo..=opt.hi).contains(&m));
            match result {
                Ok(c) => {
                    assert!(accept, "{} = {value} was accepted; the documented range is {}..={}", opt.key, opt.lo, opt.hi);
                    assert_eq!((opt.get)(&c), means.unwrap(), "{} = {value} read back", opt.key);
                    runtime_arithmetic_holds(&c);
                }
                Err(e) => {
                    assert!(!accept, "{} = {value} was refused although in range: {e}", opt.key);
                    assert_eq!(e.line, line, "{} = {value}: the error must name the option's line: {e}", opt.key);
                    assert!(e.column >= 1);
                    let shown = e.to_string();
                    assert!(shown.starts_with(&format!("t.toml:{line}:")), "{shown}");
                    if means.is_some() {
                        // A number the file could hold: the message names the
                        // option and its range.
                        assert!(e.message.contains(opt.key), "{} = {value}: {e}", opt.key);
                        assert!(e.message.contains(" to "), "{} = {value}: the range is given: {e}", opt.key);
                    }
                    assert!(!e.message.contains("panicked") && !e.message.is_empty());
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn defaults_are_inside_their_ranges() {
    let text = file_with(&options()[0], "100");
    let c = parse_str(&text, Path::new("t.toml")).unwrap();
    for opt in options() {
        let v = (opt.get)(&c);
        assert!((opt.lo..=opt.hi).contains(&v), "default {} = {v} outside {}..={}", opt.key, opt.lo, opt.hi);
    }
    runtime_arithmetic_holds(&c);
}

#[test]
fn outbox_expire_with_a_huge_max_age_drops_nothing() {
    let d = tempfile::tempdir().unwrap();
    let ages = [
        Duration::from_secs(18_446_744_073_709_552), // ms wrap to 384 ms with `as u64`
        Duration::from_secs(u64::MAX),
        Duration::MAX,
        Duration::from_secs(3650 * 86_400),
    ];
    let boxes: Vec<Outbox> = ages
        .iter()
        .enumerate()
        .map(|(i, &max_age)| {
            let (ob, _) = Outbox::open(&d.path().join(format!("outbox-{i}")), &OutboxConfig { max_age, ..OutboxConfig::default() }).unwrap();
            let mut rs: Vec<Reading> = (0..5)
                .map(|v| Reading::new("strap", DeviceKind::HeartRateStrap, ReadingType::HeartRate).with_value("heartRate", 60.0 + v as f64))
                .collect();
            ob.append(&mut rs).unwrap();
            ob
        })
        .collect();
    // Older than the 384 ms the first max_age once wrapped to.
    std::thread::sleep(Duration::from_millis(600));
    for (ob, age) in boxes.iter().zip(ages) {
        assert_eq!(ob.expire().unwrap(), 0, "max_age {age:?} dropped readings");
        assert_eq!(ob.len(), 5);
        assert_eq!(ob.stats().dropped_age, 0);
    }
}
