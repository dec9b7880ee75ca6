"""An independent HL7 sender for tests/integration/hl7_tcp_python.rs: the PyPI `hl7`
package (python-hl7) builds-and-checks ORU^R01 messages, sends them over MLLP
with its MLLPClient, and parses the gateway's ACKs.

Usage: hl7_mllp_sender.py HOST PORT COUNT
Prints one JSON line per message sent: {"id", "spo2", "pulse", "ack", "msa2",
"reason"}; "ack" is null when no ACK came (connection lost).
"""
import datetime
import json
import sys
import time

import hl7
import hl7.client

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def oru(control_id, spo2, pulse):
    ts = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=-5))).strftime("%Y%m%d%H%M%S%z")
    segments = [
        f"MSH|^~\\&|PYSENDER|ICU|IOMT|GW|{ts}||ORU^R01^ORU_R01|{control_id}|P|2.6",
        "PID|||TEST-0001",
        f"OBR|1|||1^MON^99PY|||{ts}",
        f"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||{spo2}|262688^MDC_DIM_PERCENT^MDC|||||F|||{ts}",
        f"OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC||{pulse}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||F|||{ts}",
    ]
    text = "\r".join(segments)
    msg = hl7.parse(text)  # the package checks what we send is HL7
    assert str(msg.segment("MSH")[10]) == control_id
    return text


def ack_of(raw):
    text = raw.decode("utf-8").strip("\x0b\x1c\r\n")
    msg = hl7.parse(text)
    msa = msg.segment("MSA")
    reason = str(msa[3]) if len(msa) > 3 else ""
    return str(msa[1]), str(msa[2]), reason


def send(client, text):
    raw = client.send_message(text)
    # The ACK may arrive in pieces.
    while not raw.rstrip(b"\r").endswith(b"\x1c"):
        more = client.socket.recv(4096)
        if not more:
            raise ConnectionError("closed inside an ACK")
        raw += more
    return ack_of(raw)


out = sys.stdout
with hl7.client.MLLPClient(host, port) as client:
    client.socket.settimeout(20)
    extra = [
        ("ADT1", "MSH|^~\\&|PYSENDER|ICU|IOMT|GW|20250101000000||ADT^A01^ADT_A01|ADT1|P|2.6\rEVN|A01|20250101000000"),
        ("NOMSH", "PID|||TEST-0001"),
    ]
    for cid, text in extra:
        code, msa2, reason = send(client, text)
        out.write(json.dumps({"id": cid, "ack": code, "msa2": msa2, "reason": reason}) + "\n")
        out.flush()
    for i in range(count):
        cid = f"PY{i:04d}"
        spo2, pulse = 80 + i % 20, 50 + i
        try:
            code, msa2, reason = send(client, oru(cid, spo2, pulse))
        except (OSError, ConnectionError) as e:
            out.write(json.dumps({"id": cid, "spo2": spo2, "pulse": pulse, "ack": None, "error": str(e)}) + "\n")
            out.flush()
            break
        out.write(json.dumps({"id": cid, "spo2": spo2, "pulse": pulse, "ack": code, "msa2": msa2, "reason": reason}) + "\n")
        out.flush()
        time.sleep(0.03)
