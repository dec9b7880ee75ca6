"""Fidelity check of the simulated BlueZ with an independent client (bleak).

Scans for the simulated strap and oximeter by service UUID, connects to each,
reads Device Information and Battery, and collects 0x2A37 / 0x2A5F
notifications. Prints one JSON object on stdout; exits non-zero on failure.
Needs DBUS_SYSTEM_BUS_ADDRESS pointing at the simulator's bus.
"""
import asyncio
import json
import sys

from bleak import BleakClient, BleakScanner

HRS = "0000180d-0000-1000-8000-00805f9b34fb"
PLXS = "00001822-0000-1000-8000-00805f9b34fb"
U = "0000{:04x}-0000-1000-8000-00805f9b34fb".format


async def session(device, measurement_uuid, wanted):
    out = {"address": device.address, "name": device.name, "notifications": []}
    got = asyncio.Event()

    def on_notify(_char, data: bytearray):
        out["notifications"].append(data.hex())
        if len(out["notifications"]) >= wanted:
            got.set()

    async with BleakClient(device, timeout=10.0) as client:
        services = client.services
        out["services"] = sorted(s.uuid for s in services)
        out["characteristics"] = sorted(
            {c.uuid: sorted(c.properties) for s in services for c in s.characteristics}.items()
        )
        for name, uuid in (("manufacturer", 0x2A29), ("model", 0x2A24), ("serial", 0x2A25), ("firmware", 0x2A26)):
            out[name] = (await client.read_gatt_char(U(uuid))).decode("utf-8")
        out["battery"] = (await client.read_gatt_char(U(0x2A19)))[0]
        await client.start_notify(U(measurement_uuid), on_notify)
        await asyncio.wait_for(got.wait(), timeout=10.0)
        await client.stop_notify(U(measurement_uuid))
    return out


async def main():
    found = {}

    def on_adv(device, adv):
        for svc in (HRS, PLXS):
            if svc in adv.service_uuids and svc not in found:
                found[svc] = device

    async with BleakScanner(on_adv, service_uuids=[HRS, PLXS]):
        for _ in range(100):
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
    if len(found) != 2:
        print(json.dumps({"error": f"scan found {sorted(found)}"}))
        return 1
    result = {
        "strap": await session(found[HRS], 0x2A37, 3),
        "oximeter": await session(found[PLXS], 0x2A5F, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
