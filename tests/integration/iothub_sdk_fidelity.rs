//! The emulator is faithful to IoT Hub: Microsoft's own Python device SDK
//! (azure-iot-device) connects with a connection string, sends telemetry,
//! patches and reads its twin, and answers a direct method.

use crate::support::iothub as iothub_support;

use iomt_edge::simulate::iothub::{Emulator, EmulatorConfig, EmulatorEvent};
use iothub_support::SdkClient;
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// The SDK always dials port 8883, so the emulator listens on 8883 of a
/// random loopback address (the whole 127/8 is loopback on Linux).
async fn emulator_on_8883() -> Emulator {
    for _ in 0..30 {
        let ip = [127, rand::random::<u8>().max(1), rand::random::<u8>(), rand::random::<u8>().clamp(2, 254)];
        let cfg = EmulatorConfig { bind: SocketAddr::from((ip, 8883)), ..Default::default() };
        if let Ok(e) = Emulator::start(cfg).await {
            return e;
        }
    }
    panic!("no free loopback address for port 8883");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_device_sdk_talks_to_the_emulator() {
    let Some(py) = iothub_support::python_with_sdk() else { return };
    let emu = emulator_on_8883().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = emu.write_ca(dir.path()).unwrap();
    let cs = emu.add_device("py-device");
    assert!(cs.contains("GatewayHostName=127."));
    let mut sdk = SdkClient::start(&py, &[&cs, ca.to_str().unwrap(), "3"]);
    sdk.wait_ready(String::new).await;
    let lines = sdk.seen.clone();
    // Telemetry arrived with the SDK's properties, decoded.
    let msgs = emu.messages();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.device_id, "py-device");
        assert_eq!(m.property("$.mid"), Some(format!("py-{i}").as_str()));
        assert_eq!(m.property("$.ct"), Some("application/json"));
        assert_eq!(m.property("$.ce"), Some("utf-8"));
        assert_eq!(m.property("site"), Some("ward-3"));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.body).unwrap(), json!({"n": i}));
    }
    // The reported patch landed, and the SDK read it back through twin GET.
    assert_eq!(emu.reported("py-device")["sdk"], "python");
    assert!(lines.iter().any(|l| l.contains("\"twin\"") && l.contains("\"sdk\": \"python\"")), "{lines:?}");
    // Direct method round trip.
    let (status, payload) = emu.invoke_method("py-device", "ping", json!({"x": 1}), Duration::from_secs(15)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(payload, json!({"pong": {"x": 1}}));
    let exit = sdk.finish().await;
    assert!(exit.is_some_and(|s| s.success()), "SDK script failed: {exit:?}");
    let events = emu.events();
    assert!(events.iter().any(|e| matches!(e, EmulatorEvent::Connected { client_id, .. } if client_id == "py-device")));
    assert!(!events.iter().any(|e| matches!(e, EmulatorEvent::Refused { .. })), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_with_a_wrong_key_is_refused() {
    let Some(py) = iothub_support::python_with_sdk() else { return };
    let emu = emulator_on_8883().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = emu.write_ca(dir.path()).unwrap();
    emu.add_device("py-device");
    let cs = emu.connection_string("py-device", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/iothub_sdk_client.py");
    let out = tokio::task::spawn_blocking(move || Command::new(&py).arg(script).arg(&cs).arg(&ca).arg("1").output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    assert!(emu.messages().is_empty());
    assert!(emu.events().iter().any(|e| matches!(e, EmulatorEvent::Refused { reason, .. } if reason.contains("signature"))), "{:?}", emu.events());
}
