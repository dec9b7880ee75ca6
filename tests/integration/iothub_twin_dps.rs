//! Device twin, direct methods and DPS provisioning through the sink, against
//! the local emulator.

use crate::support::iothub as iothub_support;

use iomt_edge::config::iothub::{DpsKey, IotHubIdentity, IotHubSinkConfig};
use iomt_edge::config::SinkConfig;
use iomt_edge::simulate::iothub::EmulatorEvent;
use iomt_edge::sinks::iothub::dps::CACHE_FILE;
use iomt_edge::sinks::Sink;
use iothub_support::*;
use serde_json::json;
use std::time::Duration;

/// Polls `f` for up to 20 s (generous: CI shares 2 cores with the build).
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_assigns_patients_live_and_methods_answer() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-1", dir.path());
    // Desired properties set before the gateway connects arrive with the twin GET.
    emu.patch_desired("gw-1", json!({"patients": {"strap-1": "PAT-001"}, "batching": {"maxReadings": 100}}));
    let (sink, control) = sink(&cfg, dir.path());
    assert!(eventually(|| control.patients().get("strap-1").map(String::as_str) == Some("PAT-001")).await);
    assert_eq!(control.batching(), Some(json!({"maxReadings": 100})));
    // Reported properties carry the gateway's status.
    assert!(eventually(|| emu.reported("gw-1")["gatewayVersion"].is_string()).await, "{}", emu.reported("gw-1"));
    assert!(emu.reported("gw-1")["iothub"]["connects"].as_u64() >= Some(1));
    // A live patch re-assigns and removes.
    emu.patch_desired("gw-1", json!({"patients": {"strap-1": null, "strap-2": "PAT-002"}}));
    assert!(
        eventually(|| control.patients().get("strap-2").map(String::as_str) == Some("PAT-002") && !control.patients().contains_key("strap-1")).await
    );
    // Persisted in the state directory.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("iothub-desired.json")).unwrap()).unwrap();
    assert_eq!(saved["patients"], json!({"strap-2": "PAT-002"}));
    // Direct methods.
    let (status, body) = emu.invoke_method("gw-1", "getStatus", json!({}), Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 200);
    assert!(body["gatewayVersion"].is_string() && body["iothub"]["connects"].is_u64(), "{body}");
    let (status, body) = emu.invoke_method("gw-1", "flush", json!({}), Duration::from_secs(5)).await.unwrap();
    assert_eq!((status, body["flushed"].as_bool()), (200, Some(true)));
    assert_eq!(control.flushes(), 1);
    let (status, _) = emu.invoke_method("gw-1", "reboot", json!({}), Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 404);
    sink.close().await;
}

/// A `[sink.iothub]` with a DPS group enrollment at the emulator, read and
/// validated from a config file's text as the gateway reads it (a config the
/// validation refuses fails the test here).
fn dps_config(emu: &iomt_edge::simulate::iothub::Emulator, dir: &std::path::Path, reg: &str, group_key: &str) -> IotHubSinkConfig {
    let text = format!(
        "[gateway]\nid = \"gw\"\n[sink.iothub]\ngateway_host_name = \"{}\"\nca_file = \"{}\"\n\
         [sink.iothub.dps]\nid_scope = \"{}\"\nregistration_id = \"{reg}\"\nendpoint = \"{}\"\ngroup_key = {{ value = \"{group_key}\" }}\n",
        emu.gateway_host(),
        emu.write_ca(dir).unwrap().display(),
        emu.id_scope(),
        emu.addr()
    );
    match iomt_edge::config::parse_str(&text, std::path::Path::new("dps.toml")) {
        Ok(iomt_edge::config::Config { sink: SinkConfig::IotHub(h), .. }) => {
            assert!(matches!(&h.identity, IotHubIdentity::Dps(d) if d.registration_id == reg && matches!(d.key, DpsKey::Group(_))), "{h:?}");
            h
        }
        other => panic!("the DPS config must validate as an IoT Hub sink: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dps_group_enrollment_provisions_caches_and_reprovisions() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let group_key = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
    emu.add_group_enrollment(group_key);
    let cfg = dps_config(&emu, dir.path(), "gw-ward-3", group_key);
    let (sink, _) = sink(&cfg, dir.path());
    let sent = messages("strap-1", 1, 3);
    send_all(sink.as_ref(), &sent).await;
    check_delivery(&sent, &emu.messages());
    assert!(emu.messages().iter().all(|m| m.device_id == "gw-ward-3"));
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(CACHE_FILE)).unwrap()).unwrap();
    assert_eq!(cache["assignedHub"], emu.hub_name());
    assert_eq!(cache["deviceId"], "gw-ward-3");
    // The hub forgets the device: the sink provisions again and carries on.
    emu.remove_device("gw-ward-3");
    let more = messages("strap-1", 4, 3);
    send_all(sink.as_ref(), &more).await;
    let provisioned = emu.events().iter().filter(|e| matches!(e, EmulatorEvent::Provisioned { .. })).count();
    assert_eq!(provisioned, 2, "{:?}", emu.events());
    let mut all = sent;
    all.extend(more);
    check_delivery(&all, &emu.messages());
    sink.close().await;
    // A restart uses the cached assignment without asking DPS.
    let (sink2, _) = iothub_support::sink(&cfg, dir.path());
    send_all(sink2.as_ref(), &messages("strap-1", 7, 1)).await;
    assert_eq!(emu.events().iter().filter(|e| matches!(e, EmulatorEvent::Provisioned { .. })).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dps_with_an_unknown_group_key_is_refused() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    emu.add_group_enrollment("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==");
    let cfg = dps_config(&emu, dir.path(), "gw-x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let (sink, _) = sink(&cfg, dir.path());
    let err = sink.send(&messages("s", 1, 1)[0]).await.unwrap_err();
    assert!(matches!(&err, iomt_edge::sinks::SinkError::FatalAuth(d) if d.contains("DPS")), "{err:?}");
    assert!(emu.messages().is_empty());
}

/// The twin task may start after the session already connected (a loaded
/// machine): it must still fetch the twin and apply the desired properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_is_fetched_when_the_session_connected_first() {
    use iomt_edge::sinks::iothub::connection_string::ConnectionString;
    use iomt_edge::sinks::iothub::desired::DesiredStore;
    use iomt_edge::sinks::iothub::session::{FixedIdentity, HubSession, Identity, MqttLinkState, SessionOptions, TransportKind};
    use iomt_edge::sinks::iothub::{tls, twin, SimpleControl};
    use std::sync::Arc;

    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cs = emu.add_device("gw-late");
    emu.patch_desired("gw-late", json!({"patients": {"strap-9": "PAT-009"}}));
    let id = Identity::from_connection_string(&ConnectionString::parse(&cs).unwrap(), 8883);
    let ca = emu.write_ca(dir.path()).unwrap();
    let opts = SessionOptions {
        transport: TransportKind::Mqtt,
        tls: tls::client_config(false, Some(&ca), None).unwrap(),
        keep_alive: Duration::from_secs(60),
        token_ttl: Duration::from_secs(3600),
        max_in_flight: 8,
        tuning: fast_tuning(),
    };
    let session = Arc::new(HubSession::start(opts, Arc::new(FixedIdentity(id))));
    let mut state = session.state();
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| matches!(s, MqttLinkState::Connected { .. })))
        .await
        .expect("session connects")
        .unwrap();
    // Only now does the twin task start.
    let control = Arc::new(SimpleControl::default());
    let store = Arc::new(DesiredStore::open(dir.path(), control.as_ref()));
    let task = tokio::spawn(twin::run(session.clone(), control.clone(), store, Duration::from_secs(300)));
    assert!(
        eventually(|| control.patients().get("strap-9").map(String::as_str) == Some("PAT-009")).await,
        "the desired properties were never fetched"
    );
    session.close().await;
    let _ = task.await;
}

/// Issue 9, item 1, through the real emulator: desired-property patches
/// reordered against the full twin (reconnection race of the IoT Hub device
/// twin guide), against each other on a live link, and across a restart of
/// the gateway. A patch whose `$version` is not newer than the one applied
/// never changes a device's patient, and the saved state keeps the newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_desired_patches_never_reassign_a_device() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-race", dir.path());
    let strap = |c: &iomt_edge::sinks::iothub::SimpleControl| c.patients().get("strap-1").cloned();
    let saved =
        |dir: &std::path::Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.join("iothub-desired.json")).unwrap()).unwrap() };
    let delivered = |emu: &iomt_edge::simulate::iothub::Emulator, v: u64| {
        emu.events().iter().any(|e| matches!(e, EmulatorEvent::HeldPatchDelivered { version, .. } if *version == v))
    };
    // Versions 1 to 4 exist before the gateway connects; 4 gives strap-1 its first patient.
    for n in 1..=3 {
        emu.patch_desired("gw-race", json!({"batching": {"maxReadings": 100 + n}}));
    }
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-FIRST"}})), 4);
    let (sink, control) = sink(&cfg, dir.path());
    assert!(eventually(|| strap(&control).as_deref() == Some("PAT-FIRST")).await);

    // 1. Reconnect: patch 5 (PAT-OLD) is in flight when the link drops;
    //    patch 6 (PAT-NEW) is made while the gateway is away (not notified);
    //    the gateway reconnects, fetches the full twin at 6, then patch 5 arrives.
    emu.update_faults(|f| f.hold_desired_patches = true);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-OLD"}})), 5);
    emu.update_faults(|f| f.hold_desired_patches = false);
    assert_eq!(emu.held_patches("gw-race"), vec![5]);
    emu.go_away(Duration::from_secs(1));
    assert!(eventually(|| !emu.is_connected("gw-race")).await);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-NEW"}})), 6);
    assert!(eventually(|| delivered(&emu, 5)).await, "the held patch was never delivered: {:?}", emu.events());
    // Patch 7 is a barrier: the link keeps order, so once 7 is applied, 5 was handled.
    assert_eq!(emu.patch_desired("gw-race", json!({"batching": {"maxReadings": 200}})), 7);
    assert!(eventually(|| control.batching() == Some(json!({"maxReadings": 200}))).await);
    assert_eq!(strap(&control).as_deref(), Some("PAT-NEW"), "a stale patch re-assigned the device");
    assert!(eventually(|| saved(dir.path())["version"].as_u64() == Some(7)).await, "{}", saved(dir.path()));
    let s = saved(dir.path());
    assert_eq!((s["version"].as_u64(), s["patients"]["strap-1"].as_str()), (Some(7), Some("PAT-NEW")), "{s}");
    // The cloud sees the applied version and the ignored patch.
    assert!(
        eventually(|| emu.reported("gw-race")["iothub"]["desiredVersion"] == 7 && emu.reported("gw-race")["iothub"]["desiredIgnored"]["stale"] == 1)
            .await,
        "{}",
        emu.reported("gw-race")
    );

    // 2. Live link: patch 8 (PAT-OLD) is delayed past patch 9 (PAT-NEW-2).
    emu.update_faults(|f| f.hold_desired_patches = true);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-OLD"}})), 8);
    emu.update_faults(|f| f.hold_desired_patches = false);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-NEW-2"}})), 9);
    assert!(eventually(|| strap(&control).as_deref() == Some("PAT-NEW-2")).await);
    assert_eq!(emu.release_held_patches("gw-race"), 1);
    assert_eq!(emu.patch_desired("gw-race", json!({"batching": {"maxReadings": 300}})), 10);
    assert!(eventually(|| control.batching() == Some(json!({"maxReadings": 300}))).await);
    assert_eq!(strap(&control).as_deref(), Some("PAT-NEW-2"), "a patch delayed past a newer one re-assigned the device");
    sink.close().await;

    // 3. Restart: patch 11 (PAT-OLD) is in flight, patch 12 (PAT-NEW-3) is
    //    made while the gateway is down; the restarted gateway starts from its
    //    saved state, fetches the twin at 12, then patch 11 arrives.
    assert!(eventually(|| !emu.is_connected("gw-race")).await);
    emu.update_faults(|f| f.hold_desired_patches = true);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-OLD"}})), 11);
    emu.update_faults(|f| f.hold_desired_patches = false);
    assert_eq!(emu.patch_desired("gw-race", json!({"patients": {"strap-1": "PAT-NEW-3"}})), 12);
    let (sink, control) = iothub_support::sink(&cfg, dir.path());
    assert!(eventually(|| delivered(&emu, 11)).await, "the held patch was never delivered: {:?}", emu.events());
    assert_eq!(emu.patch_desired("gw-race", json!({"batching": {"maxReadings": 400}})), 13);
    assert!(eventually(|| control.batching() == Some(json!({"maxReadings": 400}))).await);
    assert_eq!(strap(&control).as_deref(), Some("PAT-NEW-3"), "after a restart a stale patch re-assigned the device");
    // The in-memory state changes just before the file is written: wait for the file.
    assert!(eventually(|| saved(dir.path())["version"].as_u64() == Some(13)).await, "{}", saved(dir.path()));
    let s = saved(dir.path());
    assert_eq!((s["version"].as_u64(), s["patients"]["strap-1"].as_str()), (Some(13), Some("PAT-NEW-3")), "{s}");
    sink.close().await;
}

/// A desired patch without `$version` (IoT Hub never sends one) cannot be
/// ordered: it is ignored, counted, and the gateway fetches the full twin,
/// which carries the real desired state with its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_patch_is_ignored_and_the_full_twin_fetched() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, "gw-nov", dir.path());
    emu.patch_desired("gw-nov", json!({"patients": {"strap-1": "PAT-1"}}));
    let (sink, control) = sink(&cfg, dir.path());
    assert!(eventually(|| control.patients().get("strap-1").map(String::as_str) == Some("PAT-1")).await);
    let gets = |emu: &iomt_edge::simulate::iothub::Emulator| emu.events().iter().filter(|e| matches!(e, EmulatorEvent::TwinRequested { .. })).count();
    assert!(eventually(|| gets(&emu) == 1).await);
    let body = serde_json::to_vec(&json!({"patients": {"strap-1": "PAT-X"}})).unwrap();
    assert!(emu.send_raw("gw-nov", "$iothub/twin/PATCH/properties/desired/", body));
    assert!(eventually(|| gets(&emu) == 2).await, "no full twin fetched after an unversioned patch: {:?}", emu.events());
    assert!(eventually(|| emu.reported("gw-nov")["iothub"]["desiredIgnored"]["unversioned"] == 1).await, "{}", emu.reported("gw-nov"));
    // A real patch after it still applies.
    emu.patch_desired("gw-nov", json!({"batching": {"maxReadings": 7}}));
    assert!(eventually(|| control.batching() == Some(json!({"maxReadings": 7}))).await);
    assert_eq!(control.patients().get("strap-1").map(String::as_str), Some("PAT-1"));
    sink.close().await;
}
