//! The `iomt-edge` command. All logic lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    iomt_edge::cli::main()
}
