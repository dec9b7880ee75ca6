//! Fuzz target: the MLLP framer (see src/lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| iomt_edge_fuzz::mllp_framer(data));
}
