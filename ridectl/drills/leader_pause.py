"""The sweeper leader is frozen (SIGSTOP) past its ZooKeeper session: a new leader is
elected with a higher epoch; the old one is resumed, tries to write, and is refused."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg

from ridectl.drills import Verdict
from ridectl.stack import lifecycle
from ridectl.stack.errors import StackError
from services.shared.topology import INFRA

TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=trip"
TAKEOVER_TIMEOUT_SECONDS = 30.0
REFUSAL_TIMEOUT_SECONDS = 20.0


def _one(sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    with psycopg.connect(TRIP_DB, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchone()


def _leader() -> tuple[int, str, float]:
    row = _one("SELECT epoch, leader, extract(epoch FROM since) FROM sweeper_epoch WHERE id = 1")
    assert row is not None
    return int(row[0]), str(row[1]), float(row[2])


def _until(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise StackError(f"leader-pause: no {what} within {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - started


def run() -> Verdict:
    _until(lambda: _leader()[0] > 0, TAKEOVER_TIMEOUT_SECONDS, "sweeper leader")
    old_epoch, old_leader, _ = _leader()
    pids = {s.name: s.pid for s in lifecycle.status()}
    pid = pids.get(old_leader)
    if not pid:
        raise StackError(f"leader-pause: the leader {old_leader!r} is not running")
    os.kill(pid, signal.SIGSTOP)
    paused_at = time.time()
    try:
        takeover = _until(lambda: _leader()[0] > old_epoch, TAKEOVER_TIMEOUT_SECONDS, "new leader")
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.time()
    new_epoch, new_leader, new_since = _leader()

    def refused() -> bool:
        row = _one(
            "SELECT count(*) FROM sweeper_rejections WHERE sweeper = %s AND epoch = %s AND at >= to_timestamp(%s)",
            (old_leader, old_epoch, resumed_at - 0.5),
        )
        return bool(row and row[0] > 0)

    _until(refused, REFUSAL_TIMEOUT_SECONDS, "refused write from the resumed leader")
    row = _one(
        "SELECT count(*) FROM sweeper_rejections WHERE sweeper = %s AND epoch = %s AND at >= to_timestamp(%s)",
        (old_leader, old_epoch, resumed_at - 0.5),
    )
    refusals = int(row[0]) if row else 0
    last = _one("SELECT epoch, extract(epoch FROM last_run) FROM sweeper_runs WHERE sweeper = %s", (old_leader,))
    accepted_stale = bool(last and int(last[0]) == old_epoch and float(last[1]) > new_since)
    return {
        "scenario": "leader-pause",
        "valid": new_epoch > old_epoch and refusals > 0 and not accepted_stale,
        "old_leader": old_leader,
        "old_epoch": old_epoch,
        "new_leader": new_leader,
        "new_epoch": new_epoch,
        "paused_seconds": round(resumed_at - paused_at, 2),
        "takeover_seconds": round(takeover, 2),
        "stale_writes_refused": refusals,
        "stale_writes_accepted": int(accepted_stale),
    }
