//! `iomt-edge simulate ...`: simulators and emulators to try the gateway
//! without hardware or a cloud subscription.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: SimulateCommand,
}

#[derive(clap::Subcommand)]
pub enum SimulateCommand {
    /// Run a local Azure IoT Hub (and DPS) emulator on loopback and print a
    /// device connection string and the CA file to trust.
    Iothub(IothubArgs),
}

#[derive(clap::Args)]
pub struct IothubArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port (8883 is what Azure SDKs dial; 0 picks a free port).
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// Device id to register.
    #[arg(long, default_value = "iomt-gateway")]
    pub device: String,
    /// Folder for the CA certificate (created if missing).
    #[arg(long, default_value = "/tmp/iomt-edge-iothub-emulator")]
    pub dir: PathBuf,
    /// Print every telemetry message received.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        SimulateCommand::Iothub(x) => run_iothub(x),
    }
}

fn run_iothub(a: IothubArgs) -> anyhow::Result<ExitCode> {
    use crate::simulate::iothub::{Emulator, EmulatorConfig};
    if !a.bind.is_loopback() {
        eprintln!("error: the emulator listens on loopback addresses only (got {})", a.bind);
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let emu = Emulator::start(EmulatorConfig { bind: SocketAddr::new(a.bind, a.port), ..Default::default() }).await?;
        std::fs::create_dir_all(&a.dir)?;
        let ca = emu.write_ca(&a.dir)?;
        let cs = emu.add_device(&a.device);
        let group_key = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        };
        emu.add_group_enrollment(&group_key);
        println!("IoT Hub emulator listening on {} (hub name {})", emu.addr(), emu.hub_name());
        println!();
        println!("Device connection string:");
        println!("  {cs}");
        println!("CA certificate to trust:");
        println!("  {}", ca.display());
        println!();
        println!("In the gateway config:");
        println!("  [sink.iothub]");
        println!("  connection_string = {{ value = \"{cs}\" }}");
        println!("  ca_file = \"{}\"", ca.display());
        println!();
        println!("DPS (same port): id_scope = \"{}\", endpoint = \"{}\", group_key = \"{group_key}\"", emu.id_scope(), emu.addr());
        println!("Press Ctrl-C to stop.");
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                    let msgs = emu.messages();
                    for m in msgs.iter().skip(seen) {
                        if a.verbose {
                            println!("{} {} {} bytes {}", m.device_id, m.property("$.mid").unwrap_or("-"), m.body.len(), String::from_utf8_lossy(&m.body));
                        }
                    }
                    if msgs.len() > seen && !a.verbose {
                        println!("{} message(s) received", msgs.len());
                    }
                    seen = msgs.len();
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
