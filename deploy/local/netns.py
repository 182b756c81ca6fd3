"""Network namespaces of the stack's own, for processes a partition must tell apart by
address. With KAFKA_CONTROLLERS=3 each KRaft controller runs in a namespace of its own
(`ridesaga-kraft-N`, address 10.77.0.N) joined by a bridge in the host namespace, where
the broker, the tools and the drills are (10.77.0.254).

Why namespaces for them, when the driver cluster is cut on loopback ports
(drills/partition.py): a controller's connections to the other voters leave from ephemeral
ports, and Kafka cannot bind them to an address of the controller's own, so on loopback
nothing tells a packet of the leader's from one of the broker's. In a namespace every
packet a controller sends carries its address. Made by `ridectl up`, removed by
`ridectl down`; making them needs root, and without it the mode is refused in one line."""

from __future__ import annotations

import os
import shutil
import subprocess

from deploy.local.errors import StackError

PREFIX = "ridesaga-kraft-"
BRIDGE = "rs-kraft"
SUBNET = "10.77.0"
HOST_ADDRESS = f"{SUBNET}.254"
IP_SECONDS = 10.0


def name(node: int) -> str:
    return f"{PREFIX}{node}"


def address(node: int) -> str:
    return f"{SUBNET}.{node}"


def _ip(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_SECONDS, check=False)
    except FileNotFoundError:
        raise StackError("`ip` not found: deploy/local/bootstrap.py installs iproute2") from None
    if check and done.returncode != 0:
        raise StackError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def _links() -> set[str]:
    return {line.split(": ")[1].split("@")[0] for line in _ip("-o", "link", "show").splitlines() if ": " in line}


def ours() -> list[str]:
    """The namespaces of ours that exist now (one left by a killed `up` included)."""
    if shutil.which("ip") is None:
        return []  # without iproute2 none was ever made
    return sorted(line.split()[0] for line in _ip("netns", "list").splitlines() if line.startswith(PREFIX))


def create(nodes: int) -> None:
    """The bridge and one namespace per node, each with its address; idempotent."""
    if os.geteuid() != 0:
        raise StackError("KAFKA_CONTROLLERS=3 runs each controller in a network namespace of its own, which needs root")
    if BRIDGE not in _links():
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    present = set(ours())
    for node in range(1, nodes + 1):
        if name(node) in present:
            continue
        host_end = f"rs-kraft-{node}"
        _ip("netns", "add", name(node))
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name(node))
        _ip("link", "set", host_end, "master", BRIDGE, "up")
        inside = ("netns", "exec", name(node), "ip")
        _ip(*inside, "addr", "add", f"{address(node)}/24", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "link", "set", "lo", "up")


def remove() -> None:
    """Every namespace of ours and the bridge (their veth ends go with them)."""
    for found in ours():
        _ip("netns", "del", found, check=False)
    if BRIDGE in _links():
        _ip("link", "del", BRIDGE, check=False)


def run_inside(node: int, command: list[str]) -> list[str]:
    """`command` as run in the node's namespace."""
    return ["ip", "netns", "exec", name(node), *command]
