//! Fuzz target: the `nellcor-n595` driver over arbitrary bytes (see src/lib.rs).
iomt_edge_fuzz::driver_target!("nellcor-n595");
