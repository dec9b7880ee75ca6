//! Fuzz target: loading a device profile file, then decoding with it (see
//! src/lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| iomt_edge_fuzz::profile_toml(data));
}
