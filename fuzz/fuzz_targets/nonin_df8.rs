//! Fuzz target: the `nonin-df8` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("nonin-df8");
