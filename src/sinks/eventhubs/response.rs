//! What an Event Hubs REST answer means for the readings in the batch.
//!
//! Sources: Azure REST docs "Send batch events" (201 success with an empty
//! body, 401 authorization failure, 500 internal error), "Send Message Batch"
//! for the same Service Bus HTTP gateway (also 400 bad request, 403 quota
//! exceeded or message too large, 410 entity does not exist), Azure docs
//! "Event Hubs messaging exceptions" (ServerBusy, error 50002: wait at least
//! 4 seconds before retrying) and "Authorize access to Event Hubs with
//! Microsoft Entra ID" (the sending identity needs the "Azure Event Hubs Data
//! Sender" role). 413, 429 and 503 are not documented for this operation and
//! are handled defensively. `Retry-After` is RFC 9110 §10.2.3 (delay in
//! seconds, or an HTTP-date).
//!
//! Only 201 means delivered: readings leave the outbox on nothing else.

use crate::sinks::SinkError;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The shortest wait after ServerBusy ("Event Hubs messaging exceptions").
pub(crate) const SERVER_BUSY_MIN: Duration = Duration::from_secs(4);
/// The longest `Retry-After` honoured; a larger value is capped so a bad
/// header cannot stall the gateway for hours (backoff continues after it).
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(15 * 60);
/// Longest service error text kept for logs (bytes of UTF-8, cut on a char boundary).
const DETAIL_MAX: usize = 300;

/// How the gateway authenticates, so an auth error names what to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthKind {
    /// SAS token from a connection string's key.
    SharedAccessKey,
    /// Entra ID client credentials (secret or certificate).
    EntraClientCredentials,
    /// A bearer token read from a file (managed identity helper).
    BearerTokenFile,
}

/// The meaning of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// 201: the whole batch is stored by the service.
    Delivered,
    /// Credentials refused or lacking rights: keep buffering, retry slowly,
    /// tell the operator `what_to_check`.
    Auth { status: u16, what_to_check: String, detail: String },
    /// Try again after at least `min_delay` (ServerBusy, Retry-After), with
    /// the usual jittered backoff on top.
    Throttled { min_delay: Option<Duration>, detail: String },
    /// A passing failure (5xx, timeout, reset): retry with backoff.
    Retry { detail: String },
    /// The batch is larger than the service accepts: split it and resend.
    TooLarge { detail: String },
    /// The namespace or event hub does not exist (404, 410): a configuration
    /// error; keep buffering and retry slowly.
    EntityMissing { status: u16, detail: String },
    /// Any other status (400, unexpected 2xx/3xx/4xx): not delivered; retry
    /// with backoff and log the detail.
    Unexpected { status: u16, detail: String },
}

/// A failure before any HTTP status arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportFailure {
    Timeout,
    Connect,
    Reset,
    Tls,
}

/// Classifies an HTTP answer. `retry_after` is the raw `Retry-After` header,
/// `body` the response body (XML or text; only a bounded excerpt is kept),
/// `now` the wall clock (for an HTTP-date `Retry-After`).
pub(crate) fn classify(status: u16, retry_after: Option<&str>, body: &[u8], now: DateTime<Utc>, auth: AuthKind) -> SendOutcome {
    let detail = error_detail(body);
    let lower = detail.to_ascii_lowercase();
    let server_busy = lower.contains("serverbusy") || lower.contains("server busy") || lower.contains("50002");
    let too_large = lower.contains("too large")
        || lower.contains("messagesizeexceeded")
        || lower.contains("size exceed")
        || lower.contains("exceeds the maximum")
        || lower.contains("exceeded the maximum");
    let quota = lower.contains("quota") || lower.contains("throttl");
    let after = retry_after.and_then(|v| parse_retry_after(v, now));
    let busy_delay = |after: Option<Duration>| Some(after.unwrap_or(SERVER_BUSY_MIN).max(SERVER_BUSY_MIN));
    match status {
        201 => SendOutcome::Delivered,
        413 => SendOutcome::TooLarge { detail },
        401 => SendOutcome::Auth { status, what_to_check: what_to_check(status, auth), detail },
        403 if too_large => SendOutcome::TooLarge { detail },
        403 if quota || server_busy => SendOutcome::Throttled { min_delay: busy_delay(after), detail },
        403 => SendOutcome::Auth { status, what_to_check: what_to_check(status, auth), detail },
        404 | 410 => SendOutcome::EntityMissing { status, detail },
        400 if too_large => SendOutcome::TooLarge { detail },
        429 => SendOutcome::Throttled { min_delay: if server_busy { busy_delay(after) } else { after }, detail },
        500..=599 if server_busy => SendOutcome::Throttled { min_delay: busy_delay(after), detail },
        500..=599 if after.is_some() => SendOutcome::Throttled { min_delay: after, detail },
        408 | 500..=599 => SendOutcome::Retry { detail: format!("HTTP {status}: {detail}") },
        _ => SendOutcome::Unexpected { status, detail },
    }
}

/// Classifies a failure with no HTTP answer: all are passing; retry.
pub(crate) fn classify_transport(f: TransportFailure) -> SendOutcome {
    let detail = match f {
        TransportFailure::Timeout => "no answer in time",
        TransportFailure::Connect => "cannot connect",
        TransportFailure::Reset => "the connection was reset",
        TransportFailure::Tls => "TLS handshake failed",
    };
    SendOutcome::Retry { detail: detail.to_string() }
}

/// What the operator should check after a 401/403, per authentication kind.
pub(crate) fn what_to_check(status: u16, auth: AuthKind) -> String {
    match (auth, status) {
        (AuthKind::SharedAccessKey, 401) => {
            "check SharedAccessKeyName and SharedAccessKey (the policy must exist on the namespace or event hub), \
            the namespace host and the event hub name (tokens are signed for https://NAMESPACE/HUB), and the gateway's clock (tokens carry an expiry)"
                .to_string()
        }
        (AuthKind::SharedAccessKey, _) => "the SAS policy lacks the Send right, or the namespace has local (SAS) authentication disabled: \
            give the policy Send, or use Microsoft Entra ID with the role \"Azure Event Hubs Data Sender\""
            .to_string(),
        (AuthKind::EntraClientCredentials, 401) => "check the tenant, client id and client secret or certificate, the authority host, \
            and that the token scope is https://eventhubs.azure.net/.default"
            .to_string(),
        (AuthKind::BearerTokenFile, 401) => "check that the token file holds a current Microsoft Entra access token for \
            https://eventhubs.azure.net (its helper may have stopped renewing it)"
            .to_string(),
        (_, _) => "the identity has no send rights: assign it the role \"Azure Event Hubs Data Sender\" on the event hub or namespace \
            (role assignments can take several minutes to apply)"
            .to_string(),
    }
}

/// Parses `Retry-After`: whole seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`; a date in the past
/// is zero; capped at [`RETRY_AFTER_CAP`]. `None` when unparsable.
pub(crate) fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    let d = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(d.min(RETRY_AFTER_CAP))
}

/// A short, printable excerpt of a service error body: the text of the
/// `<Detail>` element of the Service Bus XML error when there is one, else
/// the body itself; control characters removed, at most ~300 bytes.
pub(crate) fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let inner = match (text.find("<Detail>"), text.find("</Detail>")) {
        (Some(a), Some(b)) if b > a + 8 => &text[a + 8..b],
        _ => text.as_ref(),
    };
    let clean: String = inner.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.trim();
    if clean.len() <= DETAIL_MAX {
        return clean.to_string();
    }
    let mut cut = DETAIL_MAX;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &clean[..cut])
}

impl SendOutcome {
    /// The forwarder's view: `Ok(())` only for [`SendOutcome::Delivered`].
    ///
    /// `EntityMissing` maps to [`SinkError::FatalAuth`] because that is the
    /// variant with the wanted handling (keep buffering, retry slowly, tell
    /// the operator), although its text says "credentials refused";
    /// `Unexpected` maps to [`SinkError::Retryable`].
    pub(crate) fn into_sink_result(self) -> Result<(), SinkError> {
        match self {
            SendOutcome::Delivered => Ok(()),
            SendOutcome::Auth { status, what_to_check, detail } => {
                Err(SinkError::FatalAuth(format!("Event Hubs answered HTTP {status} ({detail}); {what_to_check}")))
            }
            SendOutcome::Throttled { min_delay, detail } => Err(SinkError::Throttled { retry_after: min_delay, detail }),
            SendOutcome::Retry { detail } => Err(SinkError::Retryable(detail)),
            SendOutcome::TooLarge { detail } => Err(SinkError::TooLarge(detail)),
            SendOutcome::EntityMissing { status, detail } => Err(SinkError::FatalAuth(format!(
                "Event Hubs answered HTTP {status} ({detail}); the namespace or event hub does not exist: check the Endpoint and EntityPath (or hub name)"
            ))),
            SendOutcome::Unexpected { status, detail } => Err(SinkError::Retryable(format!("unexpected HTTP {status}: {detail}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap()
    }
    fn c(status: u16, ra: Option<&str>, body: &str) -> SendOutcome {
        classify(status, ra, body.as_bytes(), now(), AuthKind::SharedAccessKey)
    }

    #[test]
    fn only_201_is_delivered() {
        assert_eq!(c(201, None, ""), SendOutcome::Delivered);
        for s in [200, 202, 204, 301, 302] {
            assert!(matches!(c(s, None, ""), SendOutcome::Unexpected { .. }), "{s}");
            assert!(c(s, None, "").into_sink_result().is_err(), "{s}");
        }
    }

    #[test]
    fn auth_errors_name_what_to_check() {
        let body = "<Error><Code>401</Code><Detail>InvalidSignature: The token has an invalid signature. TrackingId:abc</Detail></Error>";
        let SendOutcome::Auth { status, what_to_check, detail } = c(401, None, body) else { panic!() };
        assert_eq!(status, 401);
        assert!(what_to_check.contains("SharedAccessKeyName") && what_to_check.contains("clock"));
        assert_eq!(detail, "InvalidSignature: The token has an invalid signature. TrackingId:abc");
        let o = classify(403, None, b"Unauthorized access. 'Send' claim(s) are required", now(), AuthKind::EntraClientCredentials);
        let SendOutcome::Auth { what_to_check, .. } = &o else { panic!("{o:?}") };
        assert!(what_to_check.contains("Azure Event Hubs Data Sender"));
        assert!(matches!(o.into_sink_result(), Err(SinkError::FatalAuth(m)) if m.contains("Data Sender")));
        let o = classify(401, None, b"", now(), AuthKind::EntraClientCredentials);
        assert!(matches!(o, SendOutcome::Auth { ref what_to_check, .. } if what_to_check.contains("eventhubs.azure.net/.default")));
        let o = classify(401, None, b"", now(), AuthKind::BearerTokenFile);
        assert!(matches!(o, SendOutcome::Auth { ref what_to_check, .. } if what_to_check.contains("token file")));
    }

    #[test]
    fn server_busy_waits_at_least_four_seconds() {
        let busy = "<Error><Code>503</Code><Detail>The request was terminated because the namespace is being throttled. Error code : 50002. Sub error: 102.</Detail></Error>";
        assert_eq!(c(503, None, busy), SendOutcome::Throttled { min_delay: Some(SERVER_BUSY_MIN), detail: error_detail(busy.as_bytes()) });
        assert!(matches!(c(503, Some("1"), busy), SendOutcome::Throttled { min_delay: Some(d), .. } if d == SERVER_BUSY_MIN));
        assert!(matches!(c(503, Some("30"), busy), SendOutcome::Throttled { min_delay: Some(d), .. } if d == Duration::from_secs(30)));
        assert!(matches!(c(429, None, "ServerBusy"), SendOutcome::Throttled { min_delay: Some(d), .. } if d == SERVER_BUSY_MIN));
        assert!(matches!(c(403, None, "Quota exceeded"), SendOutcome::Throttled { min_delay: Some(d), .. } if d >= SERVER_BUSY_MIN));
        let e = c(503, None, busy).into_sink_result();
        assert!(matches!(e, Err(SinkError::Throttled { retry_after: Some(d), .. }) if d == SERVER_BUSY_MIN));
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        assert!(matches!(c(429, Some("7"), ""), SendOutcome::Throttled { min_delay: Some(d), .. } if d == Duration::from_secs(7)));
        assert!(matches!(c(429, None, ""), SendOutcome::Throttled { min_delay: None, .. }));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now()), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now()), Some(RETRY_AFTER_CAP));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert!(matches!(c(500, Some("12"), ""), SendOutcome::Throttled { min_delay: Some(d), .. } if d == Duration::from_secs(12)));
    }

    #[test]
    fn server_errors_and_transport_failures_are_retried() {
        for s in [408, 500, 502, 503, 504] {
            assert!(matches!(c(s, None, "oops"), SendOutcome::Retry { .. }), "{s}");
            assert!(matches!(c(s, None, "oops").into_sink_result(), Err(SinkError::Retryable(_))));
        }
        for f in [TransportFailure::Timeout, TransportFailure::Connect, TransportFailure::Reset, TransportFailure::Tls] {
            assert!(matches!(classify_transport(f).into_sink_result(), Err(SinkError::Retryable(_))));
        }
    }

    #[test]
    fn too_large_means_split() {
        assert!(matches!(c(413, None, ""), SendOutcome::TooLarge { .. }));
        assert!(matches!(c(403, None, "<Error><Code>403</Code><Detail>The received message (delivery-id:0, size:1048700 bytes) exceeds the limit (1048576 bytes)... MessageSizeExceeded</Detail></Error>"), SendOutcome::TooLarge { .. }));
        assert!(matches!(c(400, None, "Batch too large"), SendOutcome::TooLarge { .. }));
        assert!(matches!(c(413, None, "").into_sink_result(), Err(SinkError::TooLarge(_))));
    }

    #[test]
    fn missing_entity_is_a_configuration_error() {
        for s in [404, 410] {
            let o = c(s, None, "The messaging entity 'sb://x/vitals' could not be found.");
            assert!(matches!(o, SendOutcome::EntityMissing { .. }));
            assert!(matches!(o.into_sink_result(), Err(SinkError::FatalAuth(m)) if m.contains("EntityPath")));
        }
    }

    #[test]
    fn detail_is_bounded_and_printable() {
        let long = format!("<Detail>{}\n\u{7}é</Detail>", "é".repeat(400));
        let d = error_detail(long.as_bytes());
        assert!(d.len() <= DETAIL_MAX + "…".len() && !d.chars().any(|c| c.is_control()), "{d}");
        assert_eq!(error_detail(b"<Detail></Detail>"), "<Detail></Detail>");
    }

    proptest! {
        #[test]
        fn arbitrary_answers_never_panic_and_only_201_delivers(status in 0u16..1000, ra in proptest::option::of(".{0,40}"), body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let o = classify(status, ra.as_deref(), &body, now(), AuthKind::SharedAccessKey);
            prop_assert_eq!(o == SendOutcome::Delivered, status == 201);
            if let SendOutcome::Throttled { min_delay: Some(d), .. } = o {
                prop_assert!(d <= RETRY_AFTER_CAP);
            }
        }
    }
}
