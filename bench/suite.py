"""`make bench` (`ridectl bench all`): in one run, on the running stack,

1. end-to-end ride latency (client side: RequestRide until the ride is seen terminal) at
   fixed offered rates, open loop, and the saturation throughput (closed loop);
2. the primitives a ride is built from: a gRPC unary call direct and through two Envoy
   sidecars, a Kafka transaction commit at the saga's batching (two records and the
   consumed offsets), a PostgreSQL commit, a Redis fenced-lock round trip;
3. the ratio of the ride's latency to the sum of the primitives on its critical path;
4. the stack's resident memory and its warm start time;

and writes docs/benchmarks.md with a plot of latency against offered load. The simulated
drivers answer at once during the ride measurements, so the numbers are the system's.
Benchmarks measure; nothing here passes or fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.tracing import RideNotEnded, bench_client, book_and_follow
from deploy.local import lifecycle
from deploy.local.stack import INSTANT
from drills import checker
from drills.stats import percentile
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.blocks.exactly_once import new_transactional_producer
from services.blocks.fencing import FencedLock
from services.rider.client import AsyncRiderClient
from services.runtime.topology import INFRA, service

BENCH_TOPIC = "ridesaga.bench"
# The critical path of one ride (docs/benchmarks.md explains each count).
PATH = {"grpc_two_sidecars": 6, "kafka_txn": 9, "postgres_commit": 14, "redis_lock": 1}


@dataclass(frozen=True)
class Sample:
    name: str
    ms: list[float]

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.ms)
        found = {name: round(percentile(ordered, q), 3) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
        return {"n": len(ordered), **found, "mean": round(statistics.fmean(ordered), 3)}


def _timed(name: str, n: int, call: Callable[[], object], warmup: int = 20) -> Sample:
    for _ in range(warmup):
        call()
    found = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        found.append((time.perf_counter() - started) * 1000)
    return Sample(name, found)


def primitives(n: int = 500) -> dict[str, Sample]:
    found: dict[str, Sample] = {}
    request = psp_pb2.GetFaultsRequest()
    with grpc.insecure_channel(f"127.0.0.1:{service('psp').app_port}") as direct:
        stub = psp_pb2_grpc.PspServiceStub(direct)
        found["grpc_direct"] = _timed("grpc_direct", n, lambda: stub.GetFaults(request, timeout=5))
    # payment's egress listener -> psp's ingress listener -> psp: the path of payment's calls.
    with grpc.insecure_channel(f"127.0.0.1:{service('payment').egress_port}") as meshed:
        stub = psp_pb2_grpc.PspServiceStub(meshed)
        found["grpc_two_sidecars"] = _timed("grpc_two_sidecars", n, lambda: stub.GetFaults(request, timeout=5))
    found["kafka_txn"] = _kafka_transactions(n // 2)
    with psycopg.connect(f"host=127.0.0.1 port={INFRA.postgres} dbname=postgres user=postgres") as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"
        )
        conn.commit()

        def commit() -> None:
            conn.execute("INSERT INTO bench_commits DEFAULT VALUES")
            conn.commit()

        found["postgres_commit"] = _timed("postgres_commit", n, commit)
        conn.execute("DROP TABLE bench_commits")
        conn.commit()
    found["redis_lock"] = asyncio.run(_lock_round_trips(n))
    return found


def _kafka_transactions(n: int) -> Sample:
    """begin, two records, the consumed offsets, commit: one saga hop's transaction."""
    bootstrap = f"127.0.0.1:{INFRA.kafka}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(BENCH_TOPIC, 1, 1)]).values():
        with contextlib.suppress(Exception):  # it already exists
            future.result(10)
    # The saga's own transactional producer settings (services/blocks/exactly_once.py).
    producer = new_transactional_producer(bootstrap, f"bench-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ridesaga-bench", "enable.auto.commit": False})
    offset = [0]

    def transaction() -> None:
        producer.begin_transaction()
        producer.produce(BENCH_TOPIC, key=b"ride", value=b"x" * 200)
        producer.produce(BENCH_TOPIC, key=b"ride", value=b"y" * 200)
        offset[0] += 1
        producer.send_offsets_to_transaction(
            [TopicPartition(BENCH_TOPIC, 0, offset[0])], consumer.consumer_group_metadata(), 10
        )
        producer.commit_transaction(10)

    try:
        return _timed("kafka_txn", n, transaction, warmup=10)
    finally:
        consumer.close()
        admin.delete_topics([BENCH_TOPIC])


async def _lock_round_trips(n: int) -> Sample:
    client = redis.asyncio.Redis(host="127.0.0.1", port=INFRA.redis)
    lock = FencedLock(client)
    found = []
    try:
        for i in range(n + 20):
            started = time.perf_counter()
            lease = await lock.acquire(f"bench:{i % 50}", 5000)
            assert lease is not None
            await lock.release(lease)
            if i >= 20:
                found.append((time.perf_counter() - started) * 1000)
    finally:
        await client.aclose()
    return Sample("redis_lock", found)


async def _ride(client: AsyncRiderClient, rider_id: str) -> tuple[str, float]:
    """(terminal state, or what ended the attempt; the client's milliseconds)."""
    started = time.perf_counter()
    try:
        ride, ms = await book_and_follow(client, rider_id)
    except grpc.aio.AioRpcError as error:  # overload shows as errors: counted, not fatal
        return error.code().name, (time.perf_counter() - started) * 1000
    except RideNotEnded:
        return "UNFINISHED", (time.perf_counter() - started) * 1000
    return ride.state, ms


async def _riders(client: AsyncRiderClient, n: int) -> list[str]:
    return [(await client.create_rider(f"bench {i}")).rider_id for i in range(n)]


async def _open_loop(rate: float, seconds: float) -> dict[str, Any]:
    """A new ride every 1/rate seconds for `seconds`, each by a rider of its own."""
    async with bench_client() as client:
        riders = await _riders(client, int(rate * seconds))
        started = time.monotonic()
        tasks = []
        for i, rider_id in enumerate(riders):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(_ride(client, rider_id)))
        outcomes = await asyncio.gather(*tasks)
        wall = time.monotonic() - started
    completed = [ms for state, ms in outcomes if state == "COMPLETED"]
    return {
        "offered_rides_per_s": rate,
        "rides": len(outcomes),
        "completed": len(completed),
        "errors": sum(1 for state, _ in outcomes if state not in ("COMPLETED", "CANCELLED")),
        # Completions per second of the offered window; the last ride's end is reported apart.
        "completed_per_s": round(len(completed) / seconds, 2),
        "drained_after_s": round(wall - seconds, 1),
        **{f"latency_ms_{k}": v for k, v in Sample("ride", completed).summary().items() if k != "n"},
    }


async def _closed_loop(concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` riders book back to back for `seconds`: the saturation throughput."""
    async with bench_client() as client:
        riders = await _riders(client, concurrency)
        latencies: list[float] = []
        started = time.monotonic()

        async def worker(rider_id: str) -> None:
            while time.monotonic() - started < seconds:
                state, ms = await _ride(client, rider_id)
                if state == "COMPLETED":
                    latencies.append(ms)

        await asyncio.gather(*(worker(r) for r in riders))
        wall = time.monotonic() - started
    return {
        "concurrency": concurrency,
        "completed": len(latencies),
        "completed_per_s": round(len(latencies) / wall, 2),
        **{f"latency_ms_{k}": v for k, v in Sample("ride", latencies).summary().items() if k != "n"},
    }


def _drain(timeout: float = 300.0) -> None:
    """Waits until no ride is in flight (every saga has ended)."""
    deadline = time.monotonic() + timeout
    while checker.live_rides() and time.monotonic() < deadline:
        time.sleep(0.5)


def warm_start() -> dict[str, float]:
    lifecycle.down()
    started = time.monotonic()
    lifecycle.up()
    seconds = round(time.monotonic() - started, 1)
    components = lifecycle.status()
    rss = sum(c.rss_kb for c in components) // 1024
    return {"warm_start_seconds": seconds, "resident_mib": rss, "components": len(components)}


def run(rates: list[float], seconds: float, concurrencies: list[int]) -> dict[str, Any]:
    start = warm_start()
    # The fleet restarts with drivers that answer at once.
    with lifecycle.reconfigured(lambda stack: stack.replace(fleet_pace=INSTANT)):
        asyncio.run(_open_loop(2, 5))  # warm-up
        prims = {name: s.summary() for name, s in primitives().items()}
        loads, saturation = [], []
        for rate in rates:
            loads.append(asyncio.run(_open_loop(rate, seconds)))
            _drain()  # an overloaded phase must not leave its backlog to the next one
        for concurrency in concurrencies:
            saturation.append(asyncio.run(_closed_loop(concurrency, seconds)))
            _drain()
    floor = sum(prims[name]["p50"] * count for name, count in PATH.items())
    lowest = loads[0]
    return {
        "start": start,
        "primitives": prims,
        "open_loop": loads,
        "closed_loop": saturation,
        "critical_path_ms": round(floor, 2),
        "ride_p50_over_primitives": round(lowest["latency_ms_p50"] / floor, 1) if floor else None,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpu": _cpu_model(),
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plot(result: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = result["open_loop"]
    offered = [r["offered_rides_per_s"] for r in loads]
    fig, axis = plt.subplots(figsize=(8, 4))
    for key, label in (("latency_ms_p50", "p50"), ("latency_ms_p95", "p95"), ("latency_ms_p99", "p99")):
        axis.plot(offered, [r[key] for r in loads], marker="o", label=f"open loop {label}")
    for point in result["closed_loop"]:
        axis.scatter([point["completed_per_s"]], [point["latency_ms_p50"]], marker="x", c="#c0392b")
        axis.annotate(
            f"closed loop, {point['concurrency']} riders: {point['completed_per_s']}/s (p50)",
            (point["completed_per_s"], point["latency_ms_p50"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    axis.set_yscale("log")
    axis.set_xlabel("rides per second (offered; for the closed loop: completed)")
    axis.set_ylabel("ride latency (ms), request to terminal")
    axis.set_title("ride latency against load")
    axis.legend(fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    plt.close(fig)


def markdown(result: dict[str, Any], command: str) -> str:
    m, s, p = result["machine"], result["start"], result["primitives"]
    lines = [
        "# Benchmarks",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB,"
        f" Linux {m['kernel']}, Python {m['python']}; the whole stack local, tracing on (every ride sampled),"
        " simulated drivers answering at once. Numbers in milliseconds unless stated.",
        "",
        "## Rides",
        "",
        "| offered rides/s | rides | completed | errors | completed/s | p50 | p95 | p99 | ended after the window (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["open_loop"]:
        lines.append(
            f"| {r['offered_rides_per_s']} | {r['rides']} | {r['completed']} | {r['errors']} | {r['completed_per_s']} |"
            f" {r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | {r['latency_ms_p99']:.0f} |"
            f" {r['drained_after_s']} |"
        )
    lines += [
        "",
        "| closed loop (riders booking back to back) | completed | completed/s | p50 | p95 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["closed_loop"]:
        lines.append(
            f"| {r['concurrency']} riders | {r['completed']} | {r['completed_per_s']} |"
            f" {r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | {r['latency_ms_p99']:.0f} |"
        )
    lines += [
        "",
        "![ride latency against load](img/bench-latency.png)",
        "",
        "## Primitives",
        "",
        "| primitive | n | p50 | p95 | p99 | on a ride's critical path | contributes (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in p.items():
        count = PATH.get(name, 0)
        lines.append(
            f"| {name} | {summary['n']} | {summary['p50']} | {summary['p95']} | {summary['p99']} | {count or '-'} |"
            f" {round(summary['p50'] * count, 2) if count else '-'} |"
        )
    lines += [
        "",
        f"Sum of the primitives on the critical path: **{result['critical_path_ms']} ms**; the ride's p50 at the"
        f" lowest offered rate is **{result['ride_p50_over_primitives']}x** that.",
        "",
        "## The stack",
        "",
        f"{s['components']} components, {s['resident_mib']} MiB resident in total after a warm start;"
        f" `ridectl up` from stopped, caches warm: {s['warm_start_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def main(rates: list[float], seconds: float, concurrencies: list[int], out: Path) -> dict[str, Any]:
    result = run(rates, seconds, concurrencies)
    plot(result, out.parent / "img" / "bench-latency.png")
    command = "make bench"
    body = markdown(result, command)
    notes = out.with_name("benchmarks-notes.md")
    if notes.exists():
        body += "\n" + notes.read_text()
    out.write_text(body)
    return result
