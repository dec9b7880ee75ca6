//! Batch bodies for the Event Hubs REST "Send batch events" operation.
//!
//! Source: Azure REST docs "Send batch events" (Event Hubs) and "Send Message
//! Batch" (Service Bus, the same HTTP gateway): `POST
//! https://{ns}.servicebus.windows.net/{hub}/messages?timeout=60&api-version=2014-01`
//! with `Content-Type: application/vnd.microsoft.servicebus.json` (no
//! `charset` parameter) and a JSON array of
//! `{"Body":"<string>","BrokerProperties":{…},"UserProperties":{…}}`.
//! Properties set as HTTP headers are ignored for batches, so each event
//! carries its own. `Body` is a string: the event's JSON (a
//! [`Message`], see docs/message-format.md) serialized, then embedded as a
//! JSON string, which MedTech parses back as the event body.
//!
//! Each event sets `BrokerProperties.MessageId` to the message id (the same
//! readings always travel under the same id, so a resend after a lost 201 is
//! recognisable downstream) and `BrokerProperties.PartitionKey` to the device
//! id, so one device's events land in one partition, in order.
//!
//! Size limits (Azure docs "Azure Event Hubs quotas and limits"): 256 KB per
//! publication (one event or a whole batch) on Basic, 1 MB on Standard and
//! above. The bound here counts the serialized JSON request body, which is
//! larger than what the service counts (the `Body` string is escaped), so a
//! batch within it is within the service's limit.

use crate::model::Message;
use serde::Serialize;
use std::collections::BTreeMap;

/// The batch request's `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";
/// Publication limit of the Standard, Premium and Dedicated tiers (1 MB).
#[cfg(test)]
pub(crate) const STANDARD_TIER_LIMIT: usize = 1024 * 1024;
/// Publication limit of the Basic tier (256 KB).
#[cfg(test)]
pub(crate) const BASIC_TIER_LIMIT: usize = 256 * 1024;

/// The path and query of the batch send for one event hub:
/// `/{hub}/messages?timeout=60&api-version=2014-01` (the hub name
/// percent-encoded as a path segment).
pub(crate) fn send_path(hub: &str) -> String {
    format!("/{}/messages?timeout=60&api-version=2014-01", urlencoding::encode(hub))
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "Body")]
    body: &'a str,
    #[serde(rename = "BrokerProperties")]
    broker: WireBroker<'a>,
    #[serde(rename = "UserProperties", skip_serializing_if = "BTreeMap::is_empty")]
    user: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct WireBroker<'a> {
    #[serde(rename = "MessageId")]
    message_id: &'a str,
    #[serde(rename = "PartitionKey")]
    partition_key: &'a str,
}

/// One event of a batch, serialized: `{"Body":…,"BrokerProperties":{"MessageId":…,"PartitionKey":…}[,"UserProperties":{…}]}`.
/// `user_properties` come from the configuration (string names and values).
pub(crate) fn event_json(message: &Message, user_properties: &BTreeMap<String, String>) -> Vec<u8> {
    let body = String::from_utf8_lossy(&message.to_json()).into_owned();
    let ev =
        WireEvent { body: &body, broker: WireBroker { message_id: &message.message_id, partition_key: &message.device_id }, user: user_properties };
    // Plain strings and string maps always serialize.
    serde_json::to_vec(&ev).unwrap_or_default()
}

/// Size of the request body `[e1,e2,…]` holding events of these sizes.
pub(crate) fn body_len(event_lens: impl IntoIterator<Item = usize>) -> usize {
    let (n, sum) = event_lens.into_iter().fold((0usize, 0usize), |(n, s), l| (n + 1, s.saturating_add(l)));
    2usize.saturating_add(sum).saturating_add(n.saturating_sub(1))
}

/// How batches are cut.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackOptions {
    /// Largest request body in bytes ([`STANDARD_TIER_LIMIT`] by default,
    /// [`BASIC_TIER_LIMIT`] for Basic namespaces, lower if configured).
    pub(crate) max_body_bytes: usize,
    /// Start a new batch when the partition key (device) changes. On by
    /// default: Azure SDKs' AMQP producers refuse a batch with mixed partition
    /// keys, and the REST docs do not say whether the HTTP gateway accepts
    /// one, so a batch never mixes devices unless this is turned off.
    pub(crate) one_partition_key_per_batch: bool,
}

#[cfg(test)]
impl Default for PackOptions {
    fn default() -> Self {
        PackOptions { max_body_bytes: STANDARD_TIER_LIMIT, one_partition_key_per_batch: true }
    }
}

/// One request body and which input messages it carries.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The request body (`application/vnd.microsoft.servicebus.json`).
    pub(crate) body: Vec<u8>,
    /// Indices into the `messages` given to [`pack`], ascending.
    pub(crate) messages: Vec<usize>,
}

/// The messages cut into batches, in input order.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Packed {
    /// Request bodies, each at most `max_body_bytes`, in input order.
    pub(crate) batches: Vec<Batch>,
    /// Indices of messages that do not fit even alone in a request of
    /// `max_body_bytes` (never sent; for the dead-letter tree), with the size
    /// of their one-event body.
    pub(crate) never_fits: Vec<(usize, usize)>,
}

/// Cuts `messages` into request bodies of at most `opts.max_body_bytes`,
/// keeping input order (so each device's order is kept). A message whose
/// one-event body is larger than the limit is reported in
/// [`Packed::never_fits`] and left out; the others are not held back by it.
#[cfg(test)]
pub(crate) fn pack(messages: &[Message], user_properties: &BTreeMap<String, String>, opts: PackOptions) -> Packed {
    let mut out = Packed::default();
    let mut cur: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut cur_len = 0usize;
    let flush = |cur: &mut Vec<(usize, Vec<u8>)>, out: &mut Packed| {
        if cur.is_empty() {
            return;
        }
        let mut body = Vec::with_capacity(body_len(cur.iter().map(|(_, e)| e.len())));
        body.push(b'[');
        for (k, (_, e)) in cur.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.push(b']');
        out.batches.push(Batch { body, messages: cur.iter().map(|(i, _)| *i).collect() });
        cur.clear();
    };
    for (i, m) in messages.iter().enumerate() {
        let ev = event_json(m, user_properties);
        let alone = body_len([ev.len()]);
        if alone > opts.max_body_bytes {
            out.never_fits.push((i, alone));
            continue;
        }
        let key_changed = opts.one_partition_key_per_batch && cur.last().is_some_and(|(j, _)| messages[*j].device_id != m.device_id);
        // Adding one event costs its length plus a comma.
        if !cur.is_empty() && (key_changed || cur_len + 1 + ev.len() > opts.max_body_bytes) {
            flush(&mut cur, &mut out);
        }
        cur_len = if cur.is_empty() { alone } else { cur_len + 1 + ev.len() };
        cur.push((i, ev));
    }
    flush(&mut cur, &mut out);
    out
}

/// Splits a batch that the service refused as too large into two halves
/// (by message count), for a resend. `None` when it holds one message (that
/// one cannot be split: it goes to the dead-letter tree).
#[cfg(test)]
pub(crate) fn halves(indices: &[usize]) -> Option<(&[usize], &[usize])> {
    (indices.len() >= 2).then(|| indices.split_at(indices.len() / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKind, Reading, ReadingType};

    fn msg(device: &str, first_seq: u64, n: usize) -> Message {
        let rs: Vec<Reading> = (0..n)
            .map(|k| {
                let mut r = Reading::new(device, DeviceKind::PulseOximeter, ReadingType::Spo2).with_value("spo2", 97.0);
                r.seq = first_seq + k as u64;
                r
            })
            .collect();
        Message::from_batch("gw-1", "0a1b2c3d", &rs).unwrap()
    }

    #[test]
    fn an_event_has_the_documented_shape_with_the_message_as_a_json_string() {
        let m = msg("ox-7", 1, 2);
        let mut props = BTreeMap::new();
        props.insert("source".to_string(), "iomt-edge".to_string());
        let v: serde_json::Value = serde_json::from_slice(&event_json(&m, &props)).unwrap();
        let body = v["Body"].as_str().expect("Body is a string");
        let inner: Message = serde_json::from_str(body).unwrap();
        assert_eq!(inner, m);
        assert_eq!(v["BrokerProperties"]["MessageId"], m.message_id.as_str());
        assert_eq!(v["BrokerProperties"]["PartitionKey"], "ox-7");
        assert_eq!(v["UserProperties"]["source"], "iomt-edge");
        assert_eq!(v.as_object().unwrap().len(), 3);
        // No user properties: the object is left out, as in the docs' examples.
        let v: serde_json::Value = serde_json::from_slice(&event_json(&m, &BTreeMap::new())).unwrap();
        assert!(v.get("UserProperties").is_none());
    }

    #[test]
    fn batches_stay_within_the_limit_keep_order_and_split_by_device() {
        let ms: Vec<Message> = (0..30).map(|i| msg(if i < 20 { "a" } else { "b" }, 1000 + i * 10, 3)).collect();
        // Equal sizes (4-digit seqs, 1-letter devices), so the counts below are exact.
        assert!(ms.iter().all(|m| event_json(m, &BTreeMap::new()).len() == event_json(&ms[0], &BTreeMap::new()).len()));
        let one = event_json(&ms[0], &BTreeMap::new()).len();
        let limit = body_len([one; 4]) + 10; // room for 4 events, not 5
        let p = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: limit, one_partition_key_per_batch: true });
        assert!(p.never_fits.is_empty());
        let order: Vec<usize> = p.batches.iter().flat_map(|b| b.messages.clone()).collect();
        assert_eq!(order, (0..30).collect::<Vec<_>>());
        for b in &p.batches {
            assert!(b.body.len() <= limit, "{} > {limit}", b.body.len());
            let arr: Vec<serde_json::Value> = serde_json::from_slice(&b.body).unwrap();
            assert_eq!(arr.len(), b.messages.len());
            let keys: std::collections::BTreeSet<_> =
                arr.iter().map(|e| e["BrokerProperties"]["PartitionKey"].as_str().map(str::to_string)).collect();
            assert_eq!(keys.len(), 1, "one device per batch");
        }
        // 20 of "a" in batches of 4, then 10 of "b": 4,4,4,4,4,4,4,2.
        assert_eq!(p.batches.iter().map(|b| b.messages.len()).collect::<Vec<_>>(), vec![4, 4, 4, 4, 4, 4, 4, 2]);
        // Mixing allowed: the device change no longer cuts (30 = 7×4 + 2).
        let mixed = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: limit, one_partition_key_per_batch: false });
        assert_eq!(mixed.batches.len(), 8);
        assert_eq!(mixed.batches[4].messages, vec![16, 17, 18, 19]);
    }

    #[test]
    fn exact_limit_fits_and_one_byte_less_does_not() {
        let ms = vec![msg("a", 1, 1), msg("a", 2, 1)];
        let lens: Vec<usize> = ms.iter().map(|m| event_json(m, &BTreeMap::new()).len()).collect();
        let both = body_len(lens.clone());
        let p = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: both, ..Default::default() });
        assert_eq!(p.batches.len(), 1);
        assert_eq!(p.batches[0].body.len(), both);
        let p = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: both - 1, ..Default::default() });
        assert_eq!(p.batches.len(), 2);
    }

    #[test]
    fn a_message_that_can_never_fit_is_reported_not_dropped_and_does_not_block_others() {
        let ms = vec![msg("a", 1, 1), msg("a", 10, 400), msg("a", 500, 1)];
        let small = body_len([event_json(&ms[0], &BTreeMap::new()).len()]);
        let p = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: small * 3, ..Default::default() });
        assert_eq!(p.never_fits.len(), 1);
        assert_eq!(p.never_fits[0].0, 1);
        assert!(p.never_fits[0].1 > small * 3);
        let sent: Vec<usize> = p.batches.iter().flat_map(|b| b.messages.clone()).collect();
        assert_eq!(sent, vec![0, 2]);
    }

    proptest::proptest! {
        /// Any messages and limit: every message is in exactly one batch or
        /// in `never_fits`, in input order, and no body exceeds the limit.
        #[test]
        fn packing_loses_nothing_keeps_order_and_respects_the_limit(
            sizes in proptest::collection::vec((0usize..3, 1usize..40), 0..40),
            limit in 50usize..20_000,
            one_key in proptest::bool::ANY,
        ) {
            let ms: Vec<Message> = sizes.iter().enumerate().map(|(i, (d, n))| msg(["a", "bb", "ccc"][*d], 1000 + 100 * i as u64, *n)).collect();
            let p = pack(&ms, &BTreeMap::new(), PackOptions { max_body_bytes: limit, one_partition_key_per_batch: one_key });
            let mut seen: Vec<usize> = p.batches.iter().flat_map(|b| b.messages.clone()).chain(p.never_fits.iter().map(|(i, _)| *i)).collect();
            seen.sort_unstable();
            proptest::prop_assert_eq!(seen, (0..ms.len()).collect::<Vec<_>>());
            let sent: Vec<usize> = p.batches.iter().flat_map(|b| b.messages.clone()).collect();
            proptest::prop_assert!(sent.windows(2).all(|w| w[0] < w[1]));
            for b in &p.batches {
                proptest::prop_assert!(b.body.len() <= limit);
                let arr: Vec<serde_json::Value> = serde_json::from_slice(&b.body).unwrap();
                proptest::prop_assert_eq!(arr.len(), b.messages.len());
            }
            for (i, len) in &p.never_fits {
                proptest::prop_assert!(*len > limit && *len == body_len([event_json(&ms[*i], &BTreeMap::new()).len()]));
            }
        }
    }

    #[test]
    fn tier_limits_and_path() {
        assert_eq!(BASIC_TIER_LIMIT, 262_144);
        assert_eq!(STANDARD_TIER_LIMIT, 1_048_576);
        assert_eq!(send_path("vitals"), "/vitals/messages?timeout=60&api-version=2014-01");
        assert_eq!(send_path("a b"), "/a%20b/messages?timeout=60&api-version=2014-01");
        assert_eq!(halves(&[1, 2, 3]), Some((&[1][..], &[2, 3][..])));
        assert_eq!(halves(&[1]), None);
    }
}
