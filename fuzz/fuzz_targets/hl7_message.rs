//! Fuzz target: one HL7 message straight into the parser and the ACK builder
//! (see src/lib.rs).
fn main() {
    let opts = iomt_edge::adapters::serial::hl7::Hl7Options::default();
    afl::fuzz!(|data: &[u8]| iomt_edge_fuzz::hl7_message(&opts, data));
}
