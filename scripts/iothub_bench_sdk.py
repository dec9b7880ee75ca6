#!/usr/bin/env python3
"""Baseline for the IoT Hub benchmark: Microsoft's Python device SDK sends the
same readings, one message per reading, to the local emulator.

Usage: iothub_bench_sdk.py CONNECTION_STRING CA_FILE BODIES_NDJSON
Prints one JSON line: count, seconds, msgs_per_s, p50_ms, p99_ms, max_rss_kb.
"""
import json
import resource
import sys
import time

from azure.iot.device import IoTHubDeviceClient, Message


def main():
    cs, ca_file, bodies = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(ca_file) as f:
        ca = f.read()
    with open(bodies) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca, connection_retry=False)
    client.connect()
    lat = []
    start = time.perf_counter()
    for i, body in enumerate(lines):
        m = Message(body, message_id=f"py-{i}", content_encoding="utf-8", content_type="application/json")
        t = time.perf_counter()
        client.send_message(m)
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    client.shutdown()
    lat.sort()
    print(json.dumps({
        "count": len(lines),
        "seconds": elapsed,
        "msgs_per_s": len(lines) / elapsed,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


if __name__ == "__main__":
    main()
