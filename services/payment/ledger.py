"""Double-entry postings for a captured fare; no I/O.

Property: the entries of every posting sum to zero, so money is only ever moved, never
created: the rider pays the fare, the driver and the platform receive it."""

from __future__ import annotations

DRIVER_SHARE_PERCENT = 75


def capture_postings(amount_cents: int) -> list[tuple[str, int]]:
    if amount_cents <= 0:
        raise ValueError(f"a capture moves a positive amount, got {amount_cents}")
    driver = amount_cents * DRIVER_SHARE_PERCENT // 100
    return [("rider", -amount_cents), ("driver", driver), ("platform", amount_cents - driver)]


def write_off_postings(amount_cents: int) -> list[tuple[str, int]]:
    """A deferred ride the processor later declined: the driver is paid all the same, by
    the platform. This is the business risk of deferring."""
    if amount_cents <= 0:
        raise ValueError(f"a write-off moves a positive amount, got {amount_cents}")
    driver = amount_cents * DRIVER_SHARE_PERCENT // 100
    return [("driver", driver), ("platform", -driver)]
