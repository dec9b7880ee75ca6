//! The integration tests: one test binary (it links the whole crate once,
//! where one binary per file linked it 48 times), one module per area, named
//! after the file, so a test's path reads `power_cut::power_cut_long_run`.
//!
//! Run one area with `cargo test --test integration power_cut::`, one test with
//! `cargo test --test integration power_cut::power_cut_long_run -- --exact`.
//! The helpers the areas share are in `tests/support/`.
//!
//! All areas run in one process, in parallel threads: a test must not change
//! what another can see (process environment, working directory, fixed ports,
//! shared paths); see `tests/support/mod.rs` for the shared locks.

#[path = "../support/mod.rs"]
mod support;

mod ble_adapter_e2e;
mod ble_bleak_fidelity;
mod ble_decode_cli;
mod ble_measure;
mod ble_scan_cli;
mod cli_closed_pipe;
mod cli_errors_name_things;
mod config_errors;
mod config_ranges;
mod crash_kill9;
mod daemon_signals_and_logs;
mod deb_package;
mod deb_package_arm64;
mod demo_fresh;
mod eventhubs_assertion_python;
mod eventhubs_config_errors;
mod eventhubs_emulator_python;
mod eventhubs_sas_python;
mod file_sink_faults;
mod gateway_eventhubs_e2e;
mod gateway_id_derived;
mod gateway_iothub_e2e;
mod hl7_patient_guard;
mod hl7_serial_pty;
mod hl7_tcp_python;
mod iothub_sdk_fidelity;
mod iothub_sink;
mod iothub_twin_dps;
mod iothub_websocket;
mod medtech_coercions;
mod medtech_compat;
mod medtech_shipped;
mod medtech_status_and_slots;
mod message_schema;
mod outbox_dead_letters_cli;
mod outbox_disk_full;
mod outbox_inspect_cli;
mod outbox_salvage;
mod outbox_small_disk;
mod power_cut;
mod powercut_harness;
mod restored_backup;
mod scripts_help;
mod serial_decode_cli;
mod serial_pty_e2e;
mod serial_record_scan;
mod service_notify;
mod status_cli;
mod stdout_sink;
mod systemd_unit;
