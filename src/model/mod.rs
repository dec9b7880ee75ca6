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
pub mod status;
pub mod time;

pub use distinct_times::DistinctTimes;
pub use message::{message_id, Message, WireReading, MESSAGE_SCHEMA};
pub use plausible::{is_plausible, plausible_range, PlausibleRange, PLAUSIBLE_RANGES};
pub use reading::{rr_beat_times, DeviceEvent, DeviceKind, DeviceTime, Flag, Reading, ReadingType, TimeFrom};
pub use series::{is_chartable, series_period_ms, SeriesSlots, SlotOutcome, CHARTABLE_FLAGS, SAMPLED_DATA_SERIES, SERIES_WINDOW_MS, SLOT_MEMORY_MS};
