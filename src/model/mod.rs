//! The data model every stage shares: a [`Reading`] taken from a device, and the
//! [`Message`] that carries a batch of one device's readings to the cloud.
//!
//! Adapters produce readings, the outbox stores them, the forwarder groups them
//! into messages and the sinks deliver those. Side tools (`decode`, `medtech`)
//! read the same types, so the wire format is defined in exactly one place.

mod distinct_times;
mod message;
mod plausible;
mod reading;
mod series;
pub(crate) mod status;
pub mod time;

pub(crate) use distinct_times::DistinctTimes;
pub use message::Message;
pub(crate) use message::WireReading;
pub use plausible::{is_plausible, plausible_range};
pub(crate) use reading::{rr_beat_times, DeviceTime};
pub use reading::{DeviceEvent, DeviceKind, Flag, Reading, ReadingType, TimeFrom};
#[cfg(test)]
pub(crate) use series::is_chartable;
pub(crate) use series::SlotOutcome;
pub use series::{series_period_ms, SeriesSlots, CHARTABLE_FLAGS, SAMPLED_DATA_SERIES, SERIES_WINDOW_MS};
