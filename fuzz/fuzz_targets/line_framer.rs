//! Fuzz target: the line framer under every framing configuration (see src/lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| iomt_edge_fuzz::line_framer(data));
}
