"""Job payloads of about 120 bytes of JSON, the size issue 4 measures with."""

from __future__ import annotations

import json

from benchmarks.adapters import Payload

__all__ = ["PAYLOAD_BYTES", "drain_payload", "encoded_size", "latency_payload"]

PAYLOAD_BYTES = 120


def _padded(fields: Payload) -> Payload:
    size = encoded_size({**fields, "pad": ""})
    return {**fields, "pad": "x" * max(0, PAYLOAD_BYTES - size)}


def drain_payload(n: int) -> Payload:
    """Return the ``n``-th drain job's payload: ``{"n": n, "pad": "xx..."}``, ~120 bytes."""
    return _padded({"n": n, "kind": "benchmark"})


def latency_payload(t0: float, label: str) -> Payload:
    """Return a latency job's payload carrying ``t0`` and ``label``, ~120 bytes."""
    return _padded({"t0": t0, "label": label})


def encoded_size(payload: Payload) -> int:
    """Return the size of ``payload`` as compact JSON, in bytes."""
    return len(json.dumps(payload, separators=(",", ":")).encode())
