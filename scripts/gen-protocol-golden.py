#!/usr/bin/env python3
"""Rewrites the golden-example part of docs/PROTOCOL.md from docs/golden/*.json.

After a deliberate format change:
    STACKNET_BLESS=1 cargo test -p stacknet-protocol --test it golden && scripts/gen-protocol-golden.py
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PROTOCOL.md"
BEGIN, END = "<!-- golden:begin -->", "<!-- golden:end -->"
NAMES = ["contract", "fingerprint", "paperwork", "attestation", "telemetry", "filing", "hello", "node-request"]

parts = []
for name in NAMES:
    g = json.loads((ROOT / "docs" / "golden" / f"{name}.json").read_text())
    text = bytes.fromhex(g["signed_bytes_hex"]).decode()
    obj = json.dumps(g["object"], indent=2, ensure_ascii=False)
    parts.append(
        f"### {name} (`{g['domain']}`)\n\n"
        f"- public key: `{g['public_key']}`\n- signature: `{g['signature']}`\n"
        f"- signed bytes as text:\n\n```\n{text}\n```\n\n"
        f"- signed bytes in hex:\n\n```\n{g['signed_bytes_hex']}\n```\n\n"
        f"- as it travels:\n\n```json\n{obj}\n```\n"
    )
doc = DOC.read_text()
head, rest = doc.split(BEGIN, 1)
_, tail = rest.split(END, 1)
DOC.write_text(head + BEGIN + "\n" + "\n".join(parts) + END + tail)
