//! Fuzz target: the `hl7` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("hl7");
