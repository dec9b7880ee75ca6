//! Fuzz target: the `nonin-df2` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("nonin-df2");
