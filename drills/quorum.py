"""The quorum experiment (docs/quorum.md): the driver cluster's replicated store
(services/driver/quorum_store.py) under a workload of writes and reads, for several (R, W)
at once on disjoint keys, while one replica is stopped or cut off, then healed.

Each key has one writer, which writes 1, 2, 3, ... through a random replica, passing the
clock of its last acknowledged write (Dynamo's context), so the history of a key is a line
and "stale" is exact: a read is stale when it returns a number below the newest write
acknowledged before the read began (or nothing, once one was). Readers read through
random replicas. The history is judged afterwards, from the client's side only.

Reported per (R, W): reads, stale reads, reads and writes refused (fewer than R answers or
W acknowledgements in time); and for the run: the hints the replicas held during the fault
and handed back after it, and how long after the heal every replica held the same versions
of every key."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from deploy.local import lifecycle, paths
from deploy.local.supervisor import Supervisor
from drills import partition
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc
from services.blocks.ring import Ring
from services.driver.quorum_store import REFUSED
from services.runtime.topology import ServiceSpec, member_address, member_source, replicas_of, service

N = 3
CONFIGS = ((1, 1), (2, 1), (1, 2), (2, 2), (3, 1))  # (R, W) with N = 3, the rows of the table
KEYS_PER_CONFIG = 2
WRITE_EVERY_SECONDS = 0.2
READ_EVERY_SECONDS = 0.03
READERS_PER_CONFIG = 3
CALL_TIMEOUT_SECONDS = 2.0
AGREE_TIMEOUT_SECONDS = 30.0
FAULTS = ("stop", "partition")


class QuorumDrillError(Exception):
    """The experiment cannot run on this stack; the message says why."""


@dataclass(frozen=True)
class Op:
    config: tuple[int, int]
    kind: str  # write or read
    key: str
    start: float
    end: float
    ok: bool
    seq: int  # written, or read (-1: not found); 0 when refused


@dataclass
class Result:
    fault: str
    target: str
    strict: bool
    seconds: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    hints_held_at_most: int = 0
    hints_left: int = 0  # still held when the run ended
    hints_home_after_heal_seconds: float | None = None  # until no replica held a hint
    caught_up_after_heal_seconds: float | None = None  # until every replica held every newest write
    history: list[dict[str, Any]] = field(default_factory=list)  # every Op, the evidence of the rows


def judge(ops: list[Op], config: tuple[int, int]) -> dict[str, Any]:
    """One row of the table, from the history of one (R, W)'s keys."""
    mine = [op for op in ops if op.config == config]
    acked: dict[str, list[tuple[float, int]]] = {}
    for op in sorted((o for o in mine if o.kind == "write" and o.ok), key=lambda o: o.end):
        acked.setdefault(op.key, []).append((op.end, op.seq))
    reads = [op for op in mine if op.kind == "read" and op.ok]
    stale = 0
    for read in reads:
        before = [seq for end, seq in acked.get(read.key, []) if end < read.start]
        if before and read.seq < max(before):
            stale += 1
    writes = [op for op in mine if op.kind == "write"]
    r, w = config
    return {
        "n": N,
        "r": r,
        "w": w,
        "overlapping": r + w > N,
        "reads": len(reads),
        "stale_reads": stale,
        "reads_refused": sum(1 for op in mine if op.kind == "read" and not op.ok),
        "writes": sum(1 for op in writes if op.ok),
        "writes_refused": sum(1 for op in writes if not op.ok),
    }


def _replicas() -> list[ServiceSpec]:
    found = replicas_of(service("driver"), lifecycle.running(paths.RUN).replica_counts())
    if len(found) < N:
        raise QuorumDrillError(f"the quorum drill needs at least {N} driver replicas (make up DRIVERS={N})")
    return found


class Workload:
    def __init__(self, addresses: list[str], strict: bool, seed: int) -> None:
        self.addresses = addresses
        self.strict = strict
        self.rng = random.Random(seed)
        self.ops: list[Op] = []
        self.t0 = time.monotonic()
        self.stopping = asyncio.Event()
        self.channels = {a: grpc.aio.insecure_channel(a) for a in addresses}
        self.stubs = {a: driver_pb2_grpc.DriverServiceStub(c) for a, c in self.channels.items()}
        run = f"{time.time_ns():x}"
        self.keys = {c: [f"q-{run}-r{c[0]}w{c[1]}-{i}" for i in range(KEYS_PER_CONFIG)] for c in CONFIGS}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _order(self) -> list[str]:
        """The replicas in a random order: a client tries the next when one does not answer."""
        order = list(self.addresses)
        self.rng.shuffle(order)
        return order

    async def _call(self, method: str, request: Any) -> Any:
        """Calls a random replica, the next if the coordinator itself cannot be reached; a
        quorum refusal (UNAVAILABLE naming the acknowledgements or answers) is final."""
        error: grpc.aio.AioRpcError | None = None
        for address in self._order():
            try:
                return await getattr(self.stubs[address], method)(request, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as failed:
                if failed.code() == grpc.StatusCode.UNAVAILABLE and (failed.details() or "").startswith(REFUSED):
                    raise
                error = failed
        assert error is not None
        raise error

    async def _writer(self, config: tuple[int, int], key: str) -> None:
        seq = 0
        context: list[driver_pb2.ClockEntry] = []
        while not self.stopping.is_set():
            start = self.now()
            seq += 1
            request = driver_pb2.QuorumPutRequest(key=key, value=str(seq), w=config[1], strict=self.strict)
            request.context.extend(context)
            try:
                reply = await self._call("QuorumPut", request)
                context = list(reply.version.clock)
                self.ops.append(Op(config, "write", key, start, self.now(), True, seq))
            except grpc.aio.AioRpcError:
                self.ops.append(Op(config, "write", key, start, self.now(), False, seq))
            await asyncio.sleep(WRITE_EVERY_SECONDS)

    async def _reader(self, config: tuple[int, int]) -> None:
        while not self.stopping.is_set():
            key = self.rng.choice(self.keys[config])
            start = self.now()
            request = driver_pb2.QuorumGetRequest(key=key, r=config[0], strict=self.strict)
            try:
                reply = await self._call("QuorumGet", request)
                seq = int(reply.resolved.value) if reply.found else -1
                self.ops.append(Op(config, "read", key, start, self.now(), True, seq))
            except grpc.aio.AioRpcError:
                self.ops.append(Op(config, "read", key, start, self.now(), False, 0))
            await asyncio.sleep(READ_EVERY_SECONDS)

    def tasks(self) -> list[asyncio.Task[None]]:
        found = [asyncio.create_task(self._writer(c, k)) for c in CONFIGS for k in self.keys[c]]
        return found + [asyncio.create_task(self._reader(c)) for c in CONFIGS for _ in range(READERS_PER_CONFIG)]

    async def held(self, address: str, key: str) -> tuple[tuple[Any, ...], ...] | None:
        try:
            reply = await self.stubs[address].ReplicaRead(driver_pb2.ReplicaReadRequest(key=key), timeout=2)
        except grpc.aio.AioRpcError:
            return None
        return tuple(sorted((v.value, tuple((e.replica, e.counter) for e in v.clock)) for v in reply.versions))

    async def caught_up(self) -> bool:
        """Whether each key's N home replicas hold the newest write acknowledged so far."""
        newest: dict[str, int] = {}
        for op in list(self.ops):
            if op.kind == "write" and op.ok:
                newest[op.key] = max(newest.get(op.key, 0), op.seq)
        ring = Ring.of(self.addresses)
        for key, seq in newest.items():
            for address in ring.owners(key, N):  # the key's home replicas, stand-ins aside
                values = await self.held(address, key)
                if values is None or max((int(v[0]) for v in values), default=0) < seq:
                    return False
        return True

    async def hints(self) -> int:
        """The hints held now, summed over the replicas that answer."""
        held = 0
        for stub in self.stubs.values():
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.QuorumStatus(driver_pb2.QuorumStatusRequest(), timeout=2)
                held += len(reply.hints)
        return held

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@contextlib.contextmanager
def _fault(kind: str, target: ServiceSpec, rest: list[ServiceSpec]) -> Iterator[None]:
    if kind == "stop":
        supervisor = Supervisor(paths.RUN)
        supervisor.stop(target.name)
        try:
            yield
        finally:
            supervisor.start(target.name)
        return
    cut = partition.Cut(
        side=(target.ingress_port,),
        others=tuple(r.ingress_port for r in rest),
        side_sources=(member_source(target),),
        others_sources=tuple(member_source(r) for r in rest),
    )
    with partition.cutting(cut):
        yield


async def _run(fault: str, strict: bool, before: float, during: float, after: float, seed: int) -> Result:
    replicas = _replicas()
    target = replicas[random.Random(seed).randrange(N)]
    rest = [r for r in replicas if r is not target]
    work = Workload([member_address(r) for r in replicas], strict, seed)
    result = Result(fault, target.name, strict, {"before": before, "during": during, "after": after})
    tasks = work.tasks()
    try:
        await asyncio.sleep(before)
        loop = asyncio.get_running_loop()
        faulted = _fault(fault, target, rest)
        await loop.run_in_executor(None, faulted.__enter__)
        try:
            deadline = time.monotonic() + during
            while time.monotonic() < deadline:
                result.hints_held_at_most = max(result.hints_held_at_most, await work.hints())
                await asyncio.sleep(0.5)
        finally:
            await loop.run_in_executor(None, faulted.__exit__, None, None, None)
        healed = time.monotonic()
        while time.monotonic() < healed + max(after, AGREE_TIMEOUT_SECONDS):
            since = round(time.monotonic() - healed, 2)
            if result.hints_home_after_heal_seconds is None and await work.hints() == 0:
                result.hints_home_after_heal_seconds = since
            if result.caught_up_after_heal_seconds is None and await work.caught_up():
                result.caught_up_after_heal_seconds = since
            done = None not in (result.hints_home_after_heal_seconds, result.caught_up_after_heal_seconds)
            if done and time.monotonic() >= healed + after:
                break
            await asyncio.sleep(0.25)
    finally:
        work.stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.hints_left = await work.hints()
    result.rows = [judge(work.ops, c) for c in CONFIGS]
    result.history = [asdict(op) for op in work.ops]
    await work.close()
    return result


def run(
    fault: str, strict: bool = False, before: float = 4.0, during: float = 20.0, after: float = 14.0, seed: int = 1
) -> dict[str, Any]:
    """One run of the experiment on the running stack; partitions are removed however it ends."""
    if fault not in FAULTS:
        raise QuorumDrillError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    for name, value in (("before", before), ("during", during), ("after", after)):
        if value < 0:
            raise QuorumDrillError(f"--{name} must be >= 0 seconds, got {value}")
    with partition.guarded():
        return asdict(asyncio.run(_run(fault, strict, before, during, after, seed)))


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | N | R | W | R+W>N | reads | stale reads | reads refused | writes | writes refused |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        mode = "strict" if result["strict"] else "sloppy"
        for row in result["rows"]:
            lines.append(
                f"| {result['fault']} {result['target']} ({mode}) | {row['n']} | {row['r']} | {row['w']} |"
                f" {'yes' if row['overlapping'] else 'no'} | {row['reads']} | {row['stale_reads']} |"
                f" {row['reads_refused']} | {row['writes']} | {row['writes_refused']} |"
            )
    lines.append("")
    for result in results:
        lines.append(
            f"- {result['fault']} {result['target']}: at most {result['hints_held_at_most']} hints held during the"
            f" fault, none left {result['hints_home_after_heal_seconds']} s after the heal"
            f" ({result['hints_left']} at the end); every replica held every newest write"
            f" {result['caught_up_after_heal_seconds']} s after the heal"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Stale and refused reads, as shares of all reads, per (R, W), one panel per fault."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        rows = result["rows"]
        labels = [f"({r['n']},{r['r']},{r['w']})" for r in rows]
        total = [max(1, r["reads"] + r["reads_refused"]) for r in rows]
        stale = [100 * r["stale_reads"] / t for r, t in zip(rows, total, strict=True)]
        refused = [100 * r["reads_refused"] / t for r, t in zip(rows, total, strict=True)]
        places = range(len(rows))
        ax.bar([p - 0.2 for p in places], stale, width=0.4, label="stale")
        ax.bar([p + 0.2 for p in places], refused, width=0.4, label="refused")
        ax.set_xticks(list(places), labels)
        ax.set_xlabel("(N, R, W)")
        ax.set_ylabel("% of reads")
        ax.set_title(f"{result['fault']} {result['target']} (drills/quorum.py)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
