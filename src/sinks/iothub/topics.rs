//! IoT Hub MQTT topic grammar: telemetry topics with their property bag, twin
//! and direct-method topics. Pure functions shared by the client and the
//! emulator.

/// Topic prefix for device-to-cloud telemetry of an identity.
pub(crate) fn telemetry_prefix(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!("devices/{device_id}/modules/{m}/messages/events/"),
        None => format!("devices/{device_id}/messages/events/"),
    }
}

/// Percent-encodes one key or value of a property bag (`$` becomes `%24`, as the SDKs send it).
fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

/// Encodes a property bag as a query string: `%24.mid=1&%24.ct=application%2Fjson`.
pub(crate) fn encode_bag<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    props.into_iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// Decodes a property bag (decodes once; accepts `$` and `%24`). Returns `None`
/// when an escape is malformed or a key is empty.
pub(crate) fn decode_bag(bag: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for kv in bag.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = urlencoding::decode(&k.replace('+', " ")).ok()?.into_owned();
        let v = urlencoding::decode(&v.replace('+', " ")).ok()?.into_owned();
        if k.is_empty() {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

/// What a published topic means to the hub.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceTopic {
    /// `devices/{d}[/modules/{m}]/messages/events/{bag}`.
    Telemetry { device_id: String, module_id: Option<String>, properties: Vec<(String, String)> },
    /// `$iothub/twin/GET/?$rid={r}`.
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={r}`.
    TwinReported { rid: String },
    /// `$iothub/methods/res/{status}/?$rid={r}`.
    MethodResponse { status: u16, rid: String },
}

fn query_param(q: &str, name: &str) -> Option<String> {
    decode_bag(q)?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Parses a topic a device publishes to. `None` means the hub would close the connection.
#[cfg(test)]
pub(crate) fn parse_device_topic(topic: &str) -> Option<DeviceTopic> {
    if let Some(rest) = topic.strip_prefix("devices/") {
        let (device_id, rest) = rest.split_once('/')?;
        let (module_id, rest) = match rest.strip_prefix("modules/") {
            Some(r) => {
                let (m, r) = r.split_once('/')?;
                (Some(m.to_string()), r)
            }
            None => (None, rest),
        };
        let bag = rest.strip_prefix("messages/events/").or_else(|| if rest == "messages/events" { Some("") } else { None })?;
        if device_id.is_empty() {
            return None;
        }
        return Some(DeviceTopic::Telemetry { device_id: device_id.to_string(), module_id, properties: decode_bag(bag)? });
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/GET/?") {
        return Some(DeviceTopic::TwinGet { rid: query_param(q, "$rid")? });
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return Some(DeviceTopic::TwinReported { rid: query_param(q, "$rid")? });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
        let (status, q) = rest.split_once("/?")?;
        return Some(DeviceTopic::MethodResponse { status: status.parse().ok()?, rid: query_param(q, "$rid")? });
    }
    None
}

/// What the hub sends to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HubTopic {
    /// `$iothub/twin/res/{status}/?$rid={r}[&$version={v}]`.
    TwinResponse { status: u16, rid: String, version: Option<u64> },
    /// `$iothub/twin/PATCH/properties/desired/?$version={v}`.
    DesiredPatch { version: Option<u64> },
    /// `$iothub/methods/POST/{name}/?$rid={r}`.
    MethodRequest { name: String, rid: String },
    /// Anything else (cloud-to-device messages...).
    Other,
}

/// Parses a topic the hub publishes to a device.
pub(crate) fn parse_hub_topic(topic: &str) -> HubTopic {
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        if let Some((status, q)) = rest.split_once("/?") {
            if let (Ok(status), Some(rid)) = (status.parse(), query_param(q, "$rid")) {
                let version = query_param(q, "$version").and_then(|v| v.parse().ok());
                return HubTopic::TwinResponse { status, rid, version };
            }
        }
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
        let q = q.trim_start_matches('?');
        return HubTopic::DesiredPatch { version: query_param(q, "$version").and_then(|v| v.parse().ok()) };
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
        if let Some((name, q)) = rest.split_once("/?") {
            if let Some(rid) = query_param(q, "$rid") {
                return HubTopic::MethodRequest { name: name.to_string(), rid };
            }
        }
    }
    HubTopic::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bag_round_trip_and_sdk_trace() {
        let bag = encode_bag([("$.mid", "a-1"), ("$.ct", "application/json"), ("$.ce", "utf-8")]);
        assert_eq!(bag, "%24.mid=a-1&%24.ct=application%2Fjson&%24.ce=utf-8");
        let t = format!("devices/test/messages/events/{bag}");
        let DeviceTopic::Telemetry { device_id, properties, .. } = parse_device_topic(&t).unwrap() else { panic!() };
        assert_eq!(device_id, "test");
        assert_eq!(properties[1], ("$.ct".to_string(), "application/json".to_string()));
        // `$` unescaped is accepted too
        let p = parse_device_topic("devices/test/messages/events/$.mid=x").unwrap();
        assert!(matches!(p, DeviceTopic::Telemetry { properties, .. } if properties[0].0 == "$.mid"));
    }

    #[test]
    fn twin_and_method_topics() {
        assert_eq!(parse_device_topic("$iothub/twin/GET/?$rid=7"), Some(DeviceTopic::TwinGet { rid: "7".into() }));
        assert_eq!(parse_device_topic("$iothub/methods/res/200/?$rid=abc"), Some(DeviceTopic::MethodResponse { status: 200, rid: "abc".into() }));
        assert_eq!(parse_device_topic("devices/x/other"), None);
        assert_eq!(parse_device_topic("random"), None);
        assert_eq!(
            parse_hub_topic("$iothub/twin/res/204/?$rid=3&$version=9"),
            HubTopic::TwinResponse { status: 204, rid: "3".into(), version: Some(9) }
        );
        assert_eq!(parse_hub_topic("$iothub/twin/PATCH/properties/desired/?$version=4"), HubTopic::DesiredPatch { version: Some(4) });
        assert_eq!(parse_hub_topic("$iothub/methods/POST/getStatus/?$rid=1"), HubTopic::MethodRequest { name: "getStatus".into(), rid: "1".into() });
    }
}
