"""The quorum experiment on a real Apache Cassandra 5.0 (three nodes on 127.0.0.1/.2/.3,
deploy/local/cassandra.py), beside ours (drills/quorum.py): the same workload (one writer
per key writing 1, 2, 3, ...; readers reading through any node), the same (R, W) rows as
consistency levels (1 = ONE, 2 = QUORUM, 3 = ALL, replication factor 3), the same fault
(one node stopped, then started again) and the same judge of the client's history.

Cassandra orders a key's versions by write timestamp (last write wins, no siblings); the
Python driver stamps each write on the client, so one writer per key makes a line, as the
vector clocks do in ours. Its hints are the coordinator's, delivered once the node is back
(no stand-ins: its quorums are strict)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict
from typing import Any

from deploy.local import bootstrap
from deploy.local import cassandra as nodes
from drills.quorum import (
    CONFIGS,
    KEYS_PER_CONFIG,
    READ_EVERY_SECONDS,
    READERS_PER_CONFIG,
    WRITE_EVERY_SECONDS,
    Op,
    judge,
)

KEYSPACE = "ridesaga_lab"
REQUEST_TIMEOUT_SECONDS = 2.0
TARGET = 3  # the node stopped: not node 1, the seed


def run(before: float = 4.0, during: float = 20.0, after: float = 14.0, seed: int = 1) -> dict[str, Any]:
    """Fetches what the lab needs (once), starts a fresh three-node cluster, runs the
    workload through one stop of a node and stops every node, however it ends."""
    bootstrap.lab_dependencies("cassandra")
    started = time.monotonic()
    nodes.start_cluster(fresh=True)
    try:
        start_seconds = round(time.monotonic() - started, 1)
        resident = {f"node-{n.index}": nodes.resident_mib(n) for n in nodes.nodes()}
        return {
            "engine": "cassandra",
            "version": nodes.CASSANDRA_VERSION,
            "start_seconds": start_seconds,
            "resident_mib": resident,
            **_measure(before, during, after, seed),
        }
    finally:
        nodes.stop_cluster()


def _measure(before: float, during: float, after: float, seed: int) -> dict[str, Any]:
    from cassandra import ConsistencyLevel  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from cassandra.cluster import Cluster  # type: ignore[import-not-found, import-untyped, unused-ignore]

    levels = {1: ConsistencyLevel.ONE, 2: ConsistencyLevel.QUORUM, 3: ConsistencyLevel.ALL}
    cluster = Cluster([n.address for n in nodes.nodes()], port=nodes.NATIVE_PORT)
    session = cluster.connect()
    session.default_timeout = REQUEST_TIMEOUT_SECONDS
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE}"
        " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.kv (key text PRIMARY KEY, seq bigint)")
    insert = session.prepare(f"INSERT INTO {KEYSPACE}.kv (key, seq) VALUES (?, ?)")
    select = session.prepare(f"SELECT seq FROM {KEYSPACE}.kv WHERE key = ?")
    ops: list[Op] = []
    lock = threading.Lock()
    stopping = threading.Event()
    t0 = time.monotonic()
    keys = {c: [f"c-r{c[0]}w{c[1]}-{i}" for i in range(KEYS_PER_CONFIG)] for c in CONFIGS}

    def record(op: Op) -> None:
        with lock:
            ops.append(op)

    def writer(config: tuple[int, int], key: str) -> None:
        seq = 0
        while not stopping.is_set():
            seq += 1
            start = time.monotonic() - t0
            statement = insert.bind((key, seq))
            statement.consistency_level = levels[config[1]]
            try:
                session.execute(statement)
                record(Op(config, "write", key, start, time.monotonic() - t0, True, seq))
            except Exception:  # Unavailable, WriteTimeout, OperationTimedOut, NoHostAvailable
                record(Op(config, "write", key, start, time.monotonic() - t0, False, seq))
            stopping.wait(WRITE_EVERY_SECONDS)

    def reader(config: tuple[int, int], rng: random.Random) -> None:
        while not stopping.is_set():
            key = rng.choice(keys[config])
            start = time.monotonic() - t0
            statement = select.bind((key,))
            statement.consistency_level = levels[config[0]]
            try:
                row = session.execute(statement).one()
                seq = int(row.seq) if row is not None else -1
                record(Op(config, "read", key, start, time.monotonic() - t0, True, seq))
            except Exception:  # Unavailable, ReadTimeout, OperationTimedOut, NoHostAvailable
                record(Op(config, "read", key, start, time.monotonic() - t0, False, 0))
            stopping.wait(READ_EVERY_SECONDS)

    rng = random.Random(seed)
    threads = [threading.Thread(target=writer, args=(c, k), daemon=True) for c in CONFIGS for k in keys[c]]
    threads += [
        threading.Thread(target=reader, args=(c, random.Random(rng.random())), daemon=True)
        for c in CONFIGS
        for _ in range(READERS_PER_CONFIG)
    ]
    target = nodes.nodes()[TARGET - 1]
    try:
        for thread in threads:
            thread.start()
        time.sleep(before)
        nodes.stop_node(target)
        time.sleep(during)
        process = nodes.start_node(target)
        restart_seconds = round(nodes.wait_until_answers(target, process), 1)
        time.sleep(after)  # from when the node answers again, as ours is measured from the heal
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_SECONDS * 3)
        cluster.shutdown()
    return {
        "fault": "stop",
        "target": f"node-{TARGET}",
        "strict": True,
        "restart_seconds": restart_seconds,
        "seconds": {"before": before, "during": during, "after": after},
        "rows": [judge(ops, c) for c in CONFIGS],
        "history": [asdict(op) for op in ops],
    }


def table(result: dict[str, Any]) -> str:
    names = {1: "ONE", 2: "QUORUM", 3: "ALL"}
    lines = [
        "| fault | read CL | write CL | R+W>N | reads | stale reads | reads refused | writes | writes refused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| stop {result['target']} (Cassandra {result['version']}) | {names[row['r']]} | {names[row['w']]} |"
            f" {'yes' if row['overlapping'] else 'no'} | {row['reads']} | {row['stale_reads']} |"
            f" {row['reads_refused']} | {row['writes']} | {row['writes_refused']} |"
        )
    memory = ", ".join(f"{name} {mib} MiB" for name, mib in result["resident_mib"].items())
    lines += [
        "",
        f"- three nodes answered {result['start_seconds']} s after the first was launched; resident: {memory};"
        f" the stopped node answered again {result['restart_seconds']} s after its start",
    ]
    return "\n".join(lines)
