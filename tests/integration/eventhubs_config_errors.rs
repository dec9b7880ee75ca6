//! `[sink.eventhubs]` mistakes, each refused by the real `iomt-edge
//! check-config` with the file, the line and column of the option at fault,
//! and words that say how to fix it.

use std::process::Command;

const HEAD: &str = r#"[gateway]
id = "gw-1"
state_dir = "{D}/state"

[[device]]
id = "strap"
kind = "heart_rate_strap"
[device.simulated]
interval_ms = 1000

"#;

const CS: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5a2V5;EntityPath=vitals";

/// Runs check-config on `HEAD + sink`; returns (exit code, stderr with the path as FILE).
fn check(sink: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let text = format!("{HEAD}{sink}\n").replace("{D}", &d);
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, &text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.path().join("cs"), CS).unwrap();
    std::fs::write(dir.path().join("cs-nohub"), "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5").unwrap();
    std::fs::write(dir.path().join("cs-bad"), "HostName=hub.azure-devices.net;DeviceId=d;SharedAccessKey=a2V5").unwrap();
    for f in ["cs", "cs-nohub", "cs-bad"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_iomt-edge")).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), stderr, text)
}

/// `FILE:line:col:` of the first `needle` at or after the `[sink` header.
fn at(text: &str, needle: &str) -> String {
    let from = text.find("[sink").unwrap();
    let off = from + text[from..].find(needle).unwrap_or_else(|| panic!("{needle} not in the text"));
    let line = text[..off].matches('\n').count() + 1;
    let col = off - text[..off].rfind('\n').map_or(0, |p| p + 1) + 1;
    format!("FILE:{line}:{col}:")
}

#[test]
fn good_event_hubs_tables_pass() {
    for sink in [
        "[sink.eventhubs]\nconnection_string = { file = \"{D}/cs\" }\nuser_properties = { site = \"ward-3\" }\ntier = \"basic\"".to_string(),
        "[sink.eventhubs]\nconnection_string = { file = \"{D}/cs-nohub\" }\nevent_hub = \"vitals\"".to_string(),
        "[sink.eventhubs]\nnamespace = \"ns.servicebus.windows.net\"\nevent_hub = \"vitals\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = { value = \"s3cret\" }".to_string(),
    ] {
        let (code, err, _) = check(&sink);
        assert_eq!(code, 0, "{sink}\n{err}");
    }
    // A token file its helper has not written yet: a warning, not a refusal.
    let (code, err, _) = check("[sink.eventhubs]\nnamespace = \"ns.servicebus.windows.net\"\nevent_hub = \"vitals\"\ntoken_file = \"{D}/token\"");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_event_hubs_option_is_refused_at_its_line_and_column() {
    let cs = "connection_string = { file = \"{D}/cs\" }";
    // (sink table, text the location must point at, words the message must contain)
    let cases: Vec<(String, &str, &[&str])> = vec![
        ("[sink.eventhubs]\nevent_hub = \"vitals\"".into(), "eventhubs]", &["set one identity", "connection_string", "token_file"]),
        (format!("[sink.eventhubs]\n{cs}\nbogus = 1"), "bogus", &["unknown field `bogus`", "Remove it"]),
        (format!("[sink.eventhubs]\n{cs}\ntier = \"gold\""), "\"gold\"", &["unknown variant `gold`", "standard", "basic"]),
        (format!("[sink.eventhubs]\n{cs}\nmax_request_bytes = \"2MiB\""), "max_request_bytes", &["max_request_bytes", "4KiB to 1MiB", "standard tier"]),
        (format!("[sink.eventhubs]\n{cs}\ntier = \"basic\"\nmax_request_bytes = \"512KiB\""), "max_request_bytes", &["4KiB to 256KiB", "basic tier"]),
        (format!("[sink.eventhubs]\n{cs}\nmax_request_bytes = \"12 parsecs\""), "\"12 parsecs\"", &["unknown size unit"]),
        (format!("[sink.eventhubs]\n{cs}\ntoken_ttl = \"1s\""), "token_ttl", &["token_ttl", "2s to 365d", "default 1h"]),
        (format!("[sink.eventhubs]\n{cs}\ntoken_ttl = \"soon\""), "\"soon\"", &["not a duration"]),
        (format!("[sink.eventhubs]\n{cs}\nrequest_timeout = \"20min\""), "request_timeout", &["request_timeout", "1s to 10min"]),
        (format!("[sink.eventhubs]\n{cs}\nmax_in_flight = 0"), "max_in_flight", &["max_in_flight", "1 to 64"]),
        (format!("[sink.eventhubs]\n{cs}\nmax_events_per_request = 0"), "max_events_per_request", &["max_events_per_request", "1 to 100"]),
        (format!("[sink.eventhubs]\n{cs}\nmax_events_per_request = 1000"), "max_events_per_request", &["max_events_per_request", "1 to 100"]),
        (format!("[sink.eventhubs]\n{cs}\nuser_properties = {{ \"\" = \"x\" }}"), "user_properties", &["user property names must be non-empty"]),
        (format!("[sink.eventhubs]\n{cs}\nevent_hub = \"a/b\""), "event_hub", &["event hub name"]),
        (format!("[sink.eventhubs]\n{cs}\nnamespace = \"ns.servicebus.windows.net\""), "namespace", &["comes from the connection string"]),
        (format!("[sink.eventhubs]\n{cs}\ntenant = \"t\"\nclient_id = \"c\""), "tenant", &["only one identity"]),
        ("[sink.eventhubs]\nconnection_string = { file = \"/a\", env = \"B\" }".into(), "connection_string", &["exactly one of `file`, `env` or `value`"]),
        ("[sink.eventhubs]\nevent_hub = \"v\"\ntoken_file = \"/t\"".into(), "token_file", &["need `namespace`"]),
        ("[sink.eventhubs]\nnamespace = \"sb://ns/\"\nevent_hub = \"v\"\ntoken_file = \"/t\"".into(), "namespace", &["host name", "without scheme"]),
        ("[sink.eventhubs]\nnamespace = \"ns\"\ntoken_file = \"/t\"".into(), "eventhubs]", &["set `event_hub`"]),
        ("[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"".into(), "client_id", &["client_secret", "client_certificate_file"]),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"a/b\"\nclient_id = \"c\"\nclient_secret = { value = \"s\" }".into(),
            "tenant",
            &["directory id"],
        ),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = { value = \"s\" }\nauthority_host = \"http://login\"".into(),
            "authority_host",
            &["https://", "login.microsoftonline.us"],
        ),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = { value = \"s\" }\nclient_certificate_file = \"/c.pem\"".into(),
            "client_secret",
            &["either `client_secret` or `client_certificate_file`"],
        ),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_certificate_file = \"/c.pem\"".into(),
            "client_certificate_file",
            &["needs both `client_certificate_file` and `client_key_file`"],
        ),
        (format!("[sink.file]\npath = \"{{D}}/out\"\n[sink.eventhubs]\n{cs}"), "sink.file", &["exactly one destination table", "[sink.eventhubs]", "found 2"]),
        // Checks of this machine (secrets read as the sink will read them).
        ("[sink.eventhubs]\nconnection_string = { file = \"{D}/cs-bad\" }".into(), "connection_string", &["unknown key `HostName`", "Azure portal"]),
        ("[sink.eventhubs]\nconnection_string = { file = \"{D}/cs-nohub\" }".into(), "connection_string", &["no event hub name", "EntityPath"]),
        ("[sink.eventhubs]\nconnection_string = { file = \"{D}/cs\" }\nevent_hub = \"other\"".into(), "event_hub", &["differs", "vitals", "other"]),
        ("[sink.eventhubs]\nconnection_string = { file = \"{D}/missing\" }".into(), "connection_string", &["cannot read the Event Hubs connection string file"]),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_secret = { env = \"IOMT_EDGE_TEST_SURELY_UNSET\" }".into(),
            "client_secret",
            &["IOMT_EDGE_TEST_SURELY_UNSET", "Entra ID client secret"],
        ),
        (
            "[sink.eventhubs]\nnamespace = \"ns\"\nevent_hub = \"v\"\ntenant = \"t\"\nclient_id = \"c\"\nclient_certificate_file = \"{D}/cs\"\nclient_key_file = \"{D}/cs\"".into(),
            "client_certificate_file",
            &["BEGIN CERTIFICATE"],
        ),
        (format!("[sink.eventhubs]\n{cs}\nca_file = \"{{D}}/nope.pem\""), "ca_file", &["nope.pem"]),
    ];
    for (sink, point, words) in cases {
        let (code, err, text) = check(&sink);
        assert_ne!(code, 0, "accepted:\n{sink}");
        let want = at(&text, point);
        assert!(err.starts_with(&want), "{sink}\nexpected {want}, got: {err}");
        for w in words {
            assert!(err.contains(w), "{sink}\nmessage lacks {w:?}: {err}");
        }
    }
}
