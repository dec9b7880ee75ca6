//! Fuzz target: the `masimo-ascii1` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("masimo-ascii1");
