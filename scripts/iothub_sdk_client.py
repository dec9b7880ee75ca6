#!/usr/bin/env python3
"""Independent check of the IoT Hub emulator with Microsoft's own device SDK.

Usage: iothub_sdk_client.py [--websockets] CONNECTION_STRING CA_FILE [COUNT]

Connects with azure-iot-device (paho MQTT on port 8883 of GatewayHostName, or
with --websockets MQTT over WSS on port 443, path /$iothub/websocket),
sends COUNT telemetry messages with system and custom properties, patches
reported properties, reads the twin back, then answers one direct method
(`ping`) if it arrives within 20 s. Prints one JSON line per step; exits 0
only if every step succeeded.
"""
import json
import sys
import threading

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse


def main():
    args = sys.argv[1:]
    websockets = "--websockets" in args
    args = [a for a in args if a != "--websockets"]
    cs, ca_file = args[0], args[1]
    count = int(args[2]) if len(args) > 2 else 3
    with open(ca_file) as f:
        ca = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=ca, connection_retry=False, websockets=websockets
    )
    client.connect()
    print(json.dumps({"step": "connected"}), flush=True)
    for i in range(count):
        m = Message(json.dumps({"n": i}), message_id=f"py-{i}", content_encoding="utf-8", content_type="application/json")
        m.custom_properties["site"] = "ward-3"
        client.send_message(m)
    print(json.dumps({"step": "sent", "count": count}), flush=True)
    client.patch_twin_reported_properties({"sdk": "python", "ok": True})
    twin = client.get_twin()
    print(json.dumps({"step": "twin", "reported": twin.get("reported", {})}), flush=True)
    done = threading.Event()

    def on_method(req):
        client.send_method_response(MethodResponse.create_from_method_request(req, 200, {"pong": req.payload}))
        done.set()

    client.on_method_request_received = on_method
    print(json.dumps({"step": "ready"}), flush=True)
    answered = done.wait(20)
    print(json.dumps({"step": "method", "answered": answered}), flush=True)
    client.shutdown()
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
