//! Fuzz target: the `nonin-ascii` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("nonin-ascii");
