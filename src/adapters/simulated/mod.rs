//! In-process simulated devices: a heart-rate strap and a pulse oximeter with
//! realistic, slowly varying values, RR intervals and occasional sensor-off
//! episodes. They sit behind the same [`Adapter`] interface as BLE and serial.
//!
//! The value generators ([`HeartRateModel`], [`OximeterModel`]) are pure: given a
//! seed they produce the same sequence, which the tests rely on.

use super::{Adapter, AdapterContext, AdapterError, LinkState};
use crate::config::SimulatedDeviceConfig;
use crate::model::{DeviceEvent, DeviceKind, Flag, Reading, ReadingType};
use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// A bounded random walk that drifts back toward a mean.
#[derive(Debug, Clone)]
struct Walk {
    value: f64,
    mean: f64,
    step: f64,
    min: f64,
    max: f64,
}

impl Walk {
    fn next(&mut self, rng: &mut StdRng) -> f64 {
        let pull = (self.mean - self.value) * 0.05;
        self.value = (self.value + pull + rng.gen_range(-self.step..=self.step)).clamp(self.min, self.max);
        self.value
    }
}

/// Heart-rate strap values: heart rate, RR intervals, contact episodes, battery.
#[derive(Debug, Clone)]
pub(crate) struct HeartRateModel {
    rng: StdRng,
    hr: Walk,
    battery: f64,
    off_left: u32,
    dropout_probability: f64,
}

/// One simulated strap measurement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StrapSample {
    pub(crate) heart_rate: u16,
    pub(crate) rr_ms: Vec<f64>,
    pub(crate) contact: bool,
    pub(crate) battery: u8,
}

impl HeartRateModel {
    pub(crate) fn new(seed: u64, dropout_probability: f64) -> HeartRateModel {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = rng.gen_range(62.0..80.0);
        HeartRateModel {
            rng,
            hr: Walk { value: start, mean: start, step: 1.5, min: 40.0, max: 180.0 },
            battery: 100.0,
            off_left: 0,
            dropout_probability,
        }
    }

    /// The next one-second sample.
    pub(crate) fn sample(&mut self) -> StrapSample {
        if self.off_left == 0 && self.rng.gen_bool(self.dropout_probability.clamp(0.0, 1.0)) {
            self.off_left = self.rng.gen_range(3..10);
        }
        let contact = if self.off_left > 0 {
            self.off_left -= 1;
            false
        } else {
            true
        };
        let hr = self.hr.next(&mut self.rng);
        self.battery = (self.battery - 0.001).max(0.0);
        // About one RR interval per beat in a one-second window, with variability.
        let mut rr_ms = Vec::new();
        if contact {
            let mean_rr = 60_000.0 / hr;
            let mut elapsed = 0.0;
            while elapsed < 1000.0 {
                let rr = (mean_rr + self.rng.gen_range(-25.0..25.0)).max(250.0);
                // RR travels in 1/1024 s on BLE; keep the same resolution.
                let rr = (rr * 1.024).round() / 1.024;
                rr_ms.push((rr * 1000.0).round() / 1000.0);
                elapsed += rr;
            }
        }
        StrapSample { heart_rate: hr.round() as u16, rr_ms, contact, battery: self.battery.round() as u8 }
    }
}

/// Pulse-oximeter values: SpO2, pulse rate, perfusion index, finger-out episodes.
#[derive(Debug, Clone)]
pub(crate) struct OximeterModel {
    rng: StdRng,
    spo2: Walk,
    pr: Walk,
    pi: Walk,
    battery: f64,
    off_left: u32,
    dropout_probability: f64,
}

/// One simulated oximeter measurement (`None` = unavailable: finger out).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OximeterSample {
    pub(crate) spo2: Option<f64>,
    pub(crate) pulse_rate: Option<f64>,
    pub(crate) perfusion_index: Option<f64>,
    pub(crate) battery: u8,
}

impl OximeterModel {
    pub(crate) fn new(seed: u64, dropout_probability: f64) -> OximeterModel {
        let mut rng = StdRng::seed_from_u64(seed);
        let spo2 = rng.gen_range(95.0..99.0);
        let pr = rng.gen_range(60.0..85.0);
        OximeterModel {
            rng,
            spo2: Walk { value: spo2, mean: spo2, step: 0.4, min: 85.0, max: 100.0 },
            pr: Walk { value: pr, mean: pr, step: 1.2, min: 40.0, max: 180.0 },
            pi: Walk { value: 4.0, mean: 4.0, step: 0.2, min: 0.2, max: 20.0 },
            battery: 100.0,
            off_left: 0,
            dropout_probability,
        }
    }

    pub(crate) fn sample(&mut self) -> OximeterSample {
        if self.off_left == 0 && self.rng.gen_bool(self.dropout_probability.clamp(0.0, 1.0)) {
            self.off_left = self.rng.gen_range(3..10);
        }
        let spo2 = self.spo2.next(&mut self.rng);
        let pr = self.pr.next(&mut self.rng);
        let pi = self.pi.next(&mut self.rng);
        self.battery = (self.battery - 0.001).max(0.0);
        let battery = self.battery.round() as u8;
        if self.off_left > 0 {
            self.off_left -= 1;
            return OximeterSample { spo2: None, pulse_rate: None, perfusion_index: None, battery };
        }
        OximeterSample { spo2: Some(spo2.round()), pulse_rate: Some(pr.round()), perfusion_index: Some((pi * 10.0).round() / 10.0), battery }
    }
}

/// Turns a strap sample into readings (heart rate, one per RR interval).
pub(crate) fn strap_readings(device_id: &str, s: &StrapSample) -> Vec<Reading> {
    let kind = DeviceKind::HeartRateStrap;
    let mut hr = Reading::new(device_id, kind, ReadingType::HeartRate).with_value("heartRate", s.heart_rate as f64);
    if !s.contact {
        hr.add_flag(Flag::SensorContactLost);
    }
    let times = crate::model::rr_beat_times(hr.time, &s.rr_ms);
    let mut out = vec![hr];
    for (rr, t) in s.rr_ms.iter().zip(times) {
        out.push(Reading::new(device_id, kind, ReadingType::RrInterval).at(t).with_value("rrInterval", *rr));
    }
    out
}

/// Turns an oximeter sample into readings (SpO2, pulse rate, perfusion index).
pub(crate) fn oximeter_readings(device_id: &str, s: &OximeterSample) -> Vec<Reading> {
    let kind = DeviceKind::PulseOximeter;
    let mut out = Vec::with_capacity(3);
    let t = crate::model::time::now_ms();
    for (ty, name, v) in [
        (ReadingType::Spo2, "spo2", s.spo2),
        (ReadingType::PulseRate, "pulseRate", s.pulse_rate),
        (ReadingType::PerfusionIndex, "perfusionIndex", s.perfusion_index),
    ] {
        let mut r = Reading::new(device_id, kind, ty).at(t);
        match v {
            Some(v) => r.set_value(name, v),
            None => {
                r.add_flag(Flag::ValueUnavailable);
                r.add_flag(Flag::SensorDisconnected);
            }
        }
        out.push(r);
    }
    out
}

/// A simulated device of one kind.
pub(crate) struct SimulatedDevice {
    pub(crate) device_id: String,
    pub(crate) kind: DeviceKind,
    pub(crate) cfg: SimulatedDeviceConfig,
}

#[async_trait]
impl Adapter for SimulatedDevice {
    fn describe(&self) -> String {
        format!("simulated {} \"{}\" every {} ms", self.kind.name(), self.device_id, self.cfg.interval_ms)
    }

    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), AdapterError> {
        let seed = self.cfg.seed.unwrap_or_else(rand::random);
        let mut strap = HeartRateModel::new(seed, self.cfg.dropout_probability);
        let mut oxi = OximeterModel::new(seed, self.cfg.dropout_probability);
        let id = self.device_id.clone();
        ctx.registry.set_state(&id, LinkState::Streaming);
        if ctx.readings.send(Reading::event(&id, self.kind, DeviceEvent::Connected)).await.is_err() {
            return Ok(());
        }
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut last_battery = None;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (mut readings, battery) = match self.kind {
                DeviceKind::PulseOximeter => {
                    let s = oxi.sample();
                    (oximeter_readings(&id, &s), s.battery)
                }
                _ => {
                    let s = strap.sample();
                    (strap_readings(&id, &s), s.battery)
                }
            };
            if last_battery != Some(battery) || n % 600 == 0 {
                readings.push(Reading::new(&id, self.kind, ReadingType::BatteryLevel).with_value("batteryLevel", battery as f64));
                last_battery = Some(battery);
            }
            n += 1;
            for r in readings {
                if ctx.readings.send(r).await.is_err() {
                    return Ok(());
                }
            }
        }
        ctx.registry.set_state(&id, LinkState::Lost);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strap_values_are_plausible_and_deterministic() {
        let mut a = HeartRateModel::new(7, 0.05);
        let mut b = HeartRateModel::new(7, 0.05);
        let mut saw_off = false;
        for _ in 0..2000 {
            let s = a.sample();
            assert_eq!(s, b.sample());
            assert!((40..=180).contains(&s.heart_rate));
            // Only values a body can have (model::PLAUSIBLE_RANGES): the demo charts them all.
            assert!(strap_readings("strap", &s).iter().all(|r| !r.flags.contains(&Flag::OutOfRange)), "{s:?}");
            if s.contact {
                assert!(!s.rr_ms.is_empty());
                for rr in &s.rr_ms {
                    assert!(*rr >= 250.0 && *rr < 1600.0, "rr {rr}");
                }
            } else {
                saw_off = true;
                assert!(s.rr_ms.is_empty());
            }
        }
        assert!(saw_off, "a 5% dropout rate over 2000 samples must produce an episode");
    }

    #[test]
    fn oximeter_finger_out_is_flagged_not_a_number() {
        let mut m = OximeterModel::new(3, 0.2);
        let mut saw = false;
        for _ in 0..500 {
            let s = m.sample();
            let rs = oximeter_readings("ox", &s);
            assert_eq!(rs.len(), 3);
            assert!(rs.iter().all(|r| !r.flags.contains(&Flag::OutOfRange)), "{s:?}");
            if s.spo2.is_none() {
                saw = true;
                assert!(rs[0].values.is_empty());
                assert!(rs[0].flags.contains(&Flag::SensorDisconnected));
            } else {
                let v = rs[0].values["spo2"];
                assert!((85.0..=100.0).contains(&v));
            }
        }
        assert!(saw);
    }
}
