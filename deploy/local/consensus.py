"""The two consensus systems of the local stack, as each reports itself: Kafka's KRaft
controller quorum (a Raft) through Kafka's own `kafka-metadata-quorum` tool
(org.apache.kafka.tools.MetadataQuorumCommand), and ZooKeeper (ZAB) through each node's
`srvr` four-letter word. Read-only; a node that does not answer is shown as down."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from deploy.local import components, files, netns, paths
from deploy.local.errors import StackError
from services.runtime.topology import zookeeper_ports

TOOL = "org.apache.kafka.tools.MetadataQuorumCommand"
TOOL_SECONDS = 20.0
ZK_SECONDS = 2.0


@dataclass(frozen=True)
class Voter:
    node_id: int
    role: str  # Leader, Follower, Observer (a broker), as the tool says
    log_end_offset: int
    lag: int  # records behind the leader's log end


@dataclass(frozen=True)
class KRaftQuorum:
    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: list[Voter] = field(default_factory=list)
    observers: list[Voter] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _tool(controllers: int, *describe: str, asking: Sequence[int] = (), inside: int | None = None) -> str:
    """The tool's answer from the voters `asking` (node numbers; every voter if none), run
    in a controller's network namespace if `inside` (to hear a node cut off from the host)."""
    voters = files.kafka_controllers(controllers)
    chosen = [voters[node - 1] for node in asking] if asking else voters
    servers = ",".join(f"{host}:{port}" for host, port in chosen)
    command = [components.java(), "-cp", f"{paths.jars_dir('kafka-tools')}/*", TOOL]
    command += ["--bootstrap-controller", servers, "describe", *describe]
    if inside is not None:
        command = netns.run_inside(inside, command)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise StackError(f"kafka-metadata-quorum gave no answer within {TOOL_SECONDS:.0f} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("SLF4J")]
        raise StackError(f"kafka-metadata-quorum exited {done.returncode}: {(lines or ['no message'])[-1]}")
    return done.stdout


def parse_status(text: str) -> dict[str, str]:
    """`describe --status`: one `Key: value` per line."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def parse_replication(text: str) -> list[Voter]:
    """`describe --replication`: a tab-separated table, one row per voter and observer."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows or rows[0][:1] != ["NodeId"]:
        return []
    header = rows[0]
    found = []
    for row in rows[1:]:
        cell = dict(zip(header, row, strict=False))
        found.append(Voter(int(cell["NodeId"]), cell["Status"], int(cell["LogEndOffset"]), int(cell["Lag"])))
    return found


@dataclass(frozen=True)
class KRaftView:
    """What one controller knows of the quorum: whom it takes for leader (-1: nobody), in
    which epoch, and how far the log is committed as far as it knows."""

    leader_id: int
    leader_epoch: int
    high_watermark: int


def kraft_view(controllers: int, asking: Sequence[int] = (), inside: int | None = None) -> KRaftView:
    """One call of the tool, about a second: the view of the first of `asking` that answers."""
    status = parse_status(_tool(controllers, "--status", asking=asking, inside=inside))
    try:
        return KRaftView(int(status["LeaderId"]), int(status["LeaderEpoch"]), int(status["HighWatermark"]))
    except (KeyError, ValueError):
        raise StackError(f"kafka-metadata-quorum: no leader in its answer {status}") from None


def kraft(controllers: int) -> KRaftQuorum:
    status = parse_status(_tool(controllers, "--status"))
    nodes = parse_replication(_tool(controllers, "--replication"))
    try:
        leader, epoch, hw = int(status["LeaderId"]), int(status["LeaderEpoch"]), int(status["HighWatermark"])
    except (KeyError, ValueError):
        raise StackError(f"kafka-metadata-quorum: no leader in its answer {status}") from None
    return KRaftQuorum(
        leader,
        epoch,
        hw,
        [n for n in nodes if n.role != "Observer"],
        [n for n in nodes if n.role == "Observer"],
    )


@dataclass(frozen=True)
class ZooKeeperNode:
    name: str
    port: int
    mode: str  # leader, follower, standalone, or down
    zxid: int  # the last transaction id it has seen; its high 32 bits are the epoch

    @property
    def epoch(self) -> int:
        return self.zxid >> 32


def zookeeper_node(name: str, port: int) -> ZooKeeperNode:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ZK_SECONDS) as conn:
            conn.sendall(b"srvr")
            reply = conn.recv(4096).decode(errors="replace")
    except OSError:
        return ZooKeeperNode(name, port, "down", 0)
    fields = dict(line.split(":", 1) for line in reply.splitlines() if ":" in line)
    mode = fields.get("Mode", "").strip() or "not serving"
    zxid = fields.get("Zxid", "").strip()
    return ZooKeeperNode(name, port, mode, int(zxid, 16) if zxid.startswith("0x") else 0)


def zookeeper(nodes: int) -> list[ZooKeeperNode]:
    ports = zookeeper_ports(nodes)
    names = ["zookeeper"] if nodes == 1 else [f"zookeeper-{i}" for i in range(1, nodes + 1)]
    return [zookeeper_node(name, port) for name, port in zip(names, ports, strict=True)]


def zookeeper_json(found: list[ZooKeeperNode]) -> dict[str, Any]:
    leaders = [n for n in found if n.mode in ("leader", "standalone")]
    return {
        "leader": leaders[0].name if len(leaders) == 1 else None,
        "epoch": max((n.epoch for n in leaders), default=0),
        "nodes": [{**asdict(n), "zxid": hex(n.zxid), "epoch": n.epoch} for n in found],
    }
