//! The emulator's WebSocket layer, as IoT Hub serves MQTT on port 443: an
//! HTTP/1.1 upgrade on `/$iothub/websocket` that must offer the `mqtt`
//! subprotocol (echoed back in the reply), then MQTT bytes in binary frames.
//!
//! The upgrade request is judged by a pure function ([`check_upgrade`]);
//! async-tungstenite does the handshake and the framing, and
//! ws_stream_tungstenite turns the frames back into a byte stream, so an MQTT
//! packet may span frames or share one with the next packet, exactly as the
//! broker's TLS path reads it.

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{self, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use ws_stream_tungstenite::WsStream;

/// The path IoT Hub serves MQTT-over-WebSockets on.
pub(crate) const PATH: &str = "/$iothub/websocket";
/// The WebSocket subprotocol clients must ask for.
pub(crate) const SUBPROTOCOL: &str = "mqtt";

/// Why an upgrade did not produce a WebSocket.
#[derive(Debug)]
pub(crate) enum UpgradeError {
    /// The request was answered with this HTTP status (wrong path, no `mqtt`).
    Refused { status: u16, reason: String },
    /// The HTTP exchange itself failed (not HTTP, not an upgrade, connection lost).
    Handshake,
}

/// Checks an upgrade request's path (without the query; `%24` accepted for
/// `$`) and its offered subprotocols (each `Sec-WebSocket-Protocol` header
/// value, comma-separated lists allowed). Returns the HTTP status and reason
/// to refuse with.
pub(crate) fn check_upgrade<'a>(path: &str, offered: impl IntoIterator<Item = &'a str>) -> Result<(), (u16, String)> {
    let decoded = path.replacen("%24", "$", 1);
    if decoded != PATH && decoded != format!("{PATH}/") {
        return Err((404, format!("no WebSocket endpoint at `{path}` (IoT Hub serves {PATH})")));
    }
    let has_mqtt = offered.into_iter().flat_map(|v| v.split(',')).any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !has_mqtt {
        return Err((400, "the `mqtt` WebSocket subprotocol (Sec-WebSocket-Protocol: mqtt) is required".into()));
    }
    Ok(())
}

/// A WebSocket carrying MQTT, read and written as bytes.
pub(crate) type MqttOverWs<S> = WsStream<TokioAdapter<S>>;

/// Performs the server side of the upgrade on `stream` (already inside TLS).
// The callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S>(stream: S) -> Result<MqttOverWs<S>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut refused: Option<(u16, String)> = None;
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offered: Vec<&str> = req.headers().get_all("sec-websocket-protocol").iter().filter_map(|v| v.to_str().ok()).collect();
        match check_upgrade(req.uri().path(), offered) {
            Ok(()) => {
                resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
                Ok(resp)
            }
            Err((status, reason)) => {
                let mut err = http::Response::new(Some(format!("{reason}\n")));
                *err.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                refused = Some((status, reason));
                Err(err)
            }
        }
    };
    let result = async_tungstenite::tokio::accept_hdr_async(stream, callback).await;
    match (result, refused) {
        (Ok(ws), _) => Ok(WsStream::new(ws)),
        (Err(_), Some((status, reason))) => Err(UpgradeError::Refused { status, reason }),
        (Err(_), None) => Err(UpgradeError::Handshake),
    }
}

#[cfg(test)]
mod tests {
    use super::check_upgrade;

    #[test]
    fn path_and_subprotocol_rules() {
        assert!(check_upgrade("/$iothub/websocket", ["mqtt"]).is_ok());
        assert!(check_upgrade("/%24iothub/websocket", ["mqtt"]).is_ok());
        assert!(check_upgrade("/$iothub/websocket", ["mqttv3.1, mqtt"]).is_ok());
        assert!(check_upgrade("/$iothub/websocket", ["wamp", "MQTT"]).is_ok());
        assert_eq!(check_upgrade("/", ["mqtt"]).unwrap_err().0, 404);
        assert_eq!(check_upgrade("/$iothub/websocketx", ["mqtt"]).unwrap_err().0, 404);
        assert_eq!(check_upgrade("/$iothub/websocket", []).unwrap_err().0, 400);
        assert_eq!(check_upgrade("/$iothub/websocket", ["mqttv5"]).unwrap_err().0, 400);
    }
}
