//! Simulators that stand in for the outside world in tests, the demo and by hand.

pub mod bluez;
