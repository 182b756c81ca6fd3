"""Idempotency keys with Stripe's semantics (docs/saga.md, "Idempotency keys at the edge");
the pure decision, no I/O.

Property: for one key, at most one execution is ever in flight, a finished execution is
answered from its stored response, and a key is never reused for different parameters.
A crashed execution leaves its key locked only until `locked_until`; the next retry takes
it over and resumes from the recovery point the crash left behind."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from services.runtime.errors import Aborted, InvalidArgument

MAX_KEY_LENGTH = 255
LOCK_MS = 10_000
KEEP_MS = 24 * 3600 * 1000


def validate_key(key: str) -> str:
    if not key.strip():
        raise InvalidArgument("idempotency_key", "is required")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument("idempotency_key", f"must be at most {MAX_KEY_LENGTH} characters, got {len(key)}")
    return key


def fingerprint(params: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    key: str
    fingerprint: str
    recovery_point: str
    has_response: bool
    locked_until_ms: int | None


@dataclass(frozen=True)
class Replay:
    """Answer with the stored response; execute nothing."""


@dataclass(frozen=True)
class Resume:
    """Take the key over and continue from its recovery point."""

    recovery_point: str


def on_existing_key(record: KeyRecord, request_fingerprint: str, now_ms: int) -> Replay | Resume:
    """What a request carrying an already-known key does; raises for the refusals."""
    if record.fingerprint != request_fingerprint:
        raise InvalidArgument(
            "idempotency_key", f"{record.key!r} was already used with other parameters; use a new key"
        )
    if record.has_response:
        return Replay()
    if record.locked_until_ms is not None and record.locked_until_ms > now_ms:
        raise Aborted(f"idempotency_key {record.key!r}: a request with this key is in progress; retry later")
    return Resume(record.recovery_point)
