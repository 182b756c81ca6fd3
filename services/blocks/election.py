"""Leader election on ZooKeeper, with an epoch for fencing.

Candidates queue as ephemeral sequential znodes (kazoo's Lock recipe); the lowest is the
leader, and its sequence number is its epoch: every later leader has a larger one. A
leader's session can expire while it is paused (GC, SIGSTOP, a network partition), and a
paused process does not know it; so leadership is a lease the leader only *believes* it
holds. Safety comes from the epoch: the leader's writes carry it, and the storage refuses
any epoch older than the newest it has seen. ZooKeeper (ZAB) grants leadership only with
a majority of its ensemble, so the minority side of a partition cannot elect anyone."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, hosts: str, path: str, identity: str, session_timeout_seconds: float) -> None:
        self.client = KazooClient(hosts=hosts, timeout=session_timeout_seconds)
        self.path = path
        self.identity = identity
        self._lock = self.client.Lock(path, identity)

    async def start(self) -> None:
        await asyncio.to_thread(self.client.start, 30)

    async def campaign(self, stopping: asyncio.Event) -> int | None:
        """Blocks until this candidate leads; returns its epoch, or None if stopping first."""
        self._lock = self.client.Lock(self.path, self.identity)
        acquire = asyncio.ensure_future(asyncio.to_thread(self._lock.acquire, True, None))
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        if acquire not in done:
            self._lock.cancel()
            with contextlib.suppress(Exception):
                await acquire
            return None
        stop.cancel()
        await acquire
        # The node is "<uuid>__lock__<10-digit sequence>": the sequence is the epoch.
        return int((self._lock.node or "").rsplit("__lock__", 1)[-1])

    def still_leading(self) -> bool:
        """What this process believes; it can be wrong after a pause (hence the epoch)."""
        return bool(self._lock.is_acquired) and self.client.connected

    async def resign(self) -> None:
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self._lock.release)

    def leader(self) -> str | None:
        contenders = self._lock.contenders()
        return str(contenders[0]) if contenders else None

    async def stop(self) -> None:
        await self.resign()
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.stop)
        await asyncio.to_thread(self.client.close)
