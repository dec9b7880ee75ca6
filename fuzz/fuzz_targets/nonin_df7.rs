//! Fuzz target: the `nonin-df7` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("nonin-df7");
