"""`ridectl up`, `down` and `status`: the local stack's lifecycle.

`up(run, stack)` starts the stack a `Stack` value describes (deploy/local/stack.py) and
keeps that value in the run directory. It is idempotent: it prepares what is missing (PostgreSQL cluster, Kafka storage,
configs), starts infrastructure, waits until each component answers its health check,
creates databases, migrations and topics, then starts the services, their sidecars and
the driver fleet, and waits again."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.local import components as comp
from deploy.local import files, netns, paths, provision
from deploy.local import stack as stack_file
from deploy.local.components import Component
from deploy.local.errors import StackError
from deploy.local.memory import tree_rss_kb
from deploy.local.ports import owner_of
from deploy.local.stack import Stack
from deploy.local.supervisor import Supervisor, render
from services.runtime.topology import Group

START_TIMEOUT_SECONDS = 240.0
STOP_TIMEOUT_SECONDS = 90.0


def progress(message: str) -> None:
    print(f"ridectl: {message}", file=sys.stderr, flush=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    user = comp.postgres_user()
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def _prepare(run: Path, stack: Stack, components: list[Component]) -> list[str]:
    for sub in ("logs", "kafka", "redis", "jaeger", "envoy", "fleet"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    pg = run / "postgres"
    if not (pg / "data" / "PG_VERSION").exists():
        progress("initializing the PostgreSQL cluster")
        pg.mkdir(parents=True, exist_ok=True)
        user = comp.postgres_user()
        if user:
            shutil.chown(pg, user, user)
        result = subprocess.run(
            _as_postgres(
                [
                    str(comp.postgres_bindir() / "initdb"),
                    "-D",
                    str(pg / "data"),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
    if stack.kafka_controllers > 1:
        netns.create(stack.kafka_controllers)
    _format_kafka(stack.kafka_controllers, files.kafka_nodes(run, stack.kafka_controllers))
    nodes = stack.zookeeper_nodes
    for node in range(1, nodes + 1):
        home = run / "zookeeper" / str(node)
        (home / "data").mkdir(parents=True, exist_ok=True)
        (home / "data" / "myid").write_text(f"{node}\n")
        (home / "zoo.cfg").write_text(files.zookeeper_config(home / "data", node, nodes))
    (run / "jaeger" / "config.yaml").write_text(files.jaeger_config())
    changed = files.write_sidecar_configs(run / "envoy", stack.replica_counts())
    (run / "supervisord.conf").write_text(render(components, run))
    return changed


def _format_kafka(controllers: int, nodes: list[files.KafkaNode]) -> None:
    """Writes every Kafka node's server.properties and formats the storage of those that
    have none, all with one cluster id (an already formatted node's, if any)."""
    ids = []
    for node in nodes:
        node.home.mkdir(parents=True, exist_ok=True)
        (node.home / "server.properties").write_text(files.kafka_properties(node, controllers))
        meta = node.home / "data" / "meta.properties"
        if meta.exists():
            ids += [line.split("=", 1)[1] for line in meta.read_text().splitlines() if line.startswith("cluster.id=")]
    cluster_id = ids[0] if ids else files.new_kafka_cluster_id()
    for node in nodes:
        if (node.home / "data" / "meta.properties").exists():
            continue
        progress(f"formatting Kafka storage (KRaft) for {node.name}")
        result = subprocess.run(
            [
                comp.java(),
                "-cp",
                f"{paths.jars_dir('kafka')}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(node.home / "server.properties"),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {(result.stderr or result.stdout).strip()[-400:]}")


def _check_ports(components: list[Component], supervisor: Supervisor) -> None:
    ours = supervisor.all_info() if supervisor.running() else {}
    for component in components:
        if component.port is None or ours.get(component.name, {}).get("statename") == "RUNNING":
            continue
        owner = owner_of(component.port)
        if owner:
            raise StackError(f"port {component.port} ({component.name}) is already in use by {owner}")


def _wait(supervisor: Supervisor, group: list[Component]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pending = [c.name for c in group]
    shown: list[str] = []
    while pending:
        states = supervisor.all_info()
        for component in group:
            if component.name in pending and states[component.name]["statename"] == "FATAL":
                raise StackError(f"{component.name} keeps exiting; see {supervisor.run / 'logs' / component.name}.log")
        pending = [
            c.name for c in group if c.name in pending and (states[c.name]["statename"] != "RUNNING" or not c.healthy())
        ]
        if pending != shown and pending:
            progress(f"waiting for {', '.join(pending)}")
            shown = pending
        if pending and time.monotonic() > deadline:
            logs = supervisor.run / "logs"
            raise StackError(f"not healthy after {START_TIMEOUT_SECONDS:.0f}s: {', '.join(pending)}; logs in {logs}")
        if pending:
            time.sleep(0.5)


def _wait_for_saga_groups() -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    progress("waiting for the saga's Kafka consumer groups")
    while not provision.saga_groups_stable():
        if time.monotonic() > deadline:
            raise StackError(f"the saga's consumer groups {', '.join(Group)} did not become stable")
        time.sleep(0.5)


def running(run: Path = paths.RUN) -> Stack:
    """The stack the last `up` in this run directory started (the defaults if none did)."""
    return stack_file.load(run) or Stack()


def up(run: Path = paths.RUN, stack: Stack | None = None) -> None:
    """Starts `stack` (by default the one already described in `run`), restarting only what
    its change touched."""
    started = time.monotonic()
    stack = running(run) if stack is None else stack
    everything = comp.all_components(run, stack)
    supervisor = Supervisor(run)
    _check_ports(everything, supervisor)
    stack_file.save(run, stack)
    reconfigured = _prepare(run, stack, everything)
    supervisor.launch()
    for sidecar in reconfigured:
        supervisor.restart_if_running(sidecar)
    for group, after in (("infra", provision.provision), ("services", None), ("sim", None)):
        members = [c for c in everything if c.group == group]
        progress(f"starting {', '.join(c.name for c in members)}")
        for component in members:
            supervisor.start(component.name)
        _wait(supervisor, members)
        if group == "services":
            _wait_for_saga_groups()
        if after is not None:
            after(progress)
    progress(f"stack up in {time.monotonic() - started:.1f}s")


@contextlib.contextmanager
def reconfigured(change: Callable[[Stack], Stack], run: Path = paths.RUN) -> Iterator[Stack]:
    """Runs the block on the running stack changed by `change` (a bench's instant fleet, a
    drill's skewed clock), and puts the stack back as it was when the block ends, however
    it ends. `up` restarts only what the change touched, both ways."""
    before = running(run)
    after = change(before)
    up(run, after)
    try:
        yield after
    finally:
        up(run, before)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str
    pid: int | None
    port: int | None
    rss_kb: int


def status(run: Path = paths.RUN) -> list[ComponentStatus]:
    supervisor = Supervisor(run)
    infos = supervisor.all_info() if supervisor.running() else {}
    pids: dict[str, int] = {}
    healthy: dict[str, bool] = {}
    stack = running(run)
    for component in comp.all_components(run, stack):
        info = infos.get(component.name)
        if info is not None and info["statename"] == "RUNNING":
            pids[component.name] = int(info["pid"])
            healthy[component.name] = component.healthy()
    memory = tree_rss_kb(list(pids.values()))
    return [
        ComponentStatus(
            component.name,
            "up" if healthy.get(component.name) else "down",
            pids.get(component.name),
            component.port,
            memory.get(pids.get(component.name, -1), 0),
        )
        for component in comp.all_components(run, stack)
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def down(run: Path = paths.RUN) -> None:
    supervisor = Supervisor(run)
    if not supervisor.running():
        netns.remove()  # left by an `up` that was killed, if any
        progress("stack is not running")
        return
    pids = [int(info["pid"]) for info in supervisor.all_info().values() if info["pid"]]
    daemon = supervisor.pid()
    progress("stopping every component")
    supervisor.stop_all()
    supervisor.shutdown()
    gone = _wait_until(lambda: not any(_alive(p) for p in [*pids, *([daemon] if daemon else [])]), STOP_TIMEOUT_SECONDS)
    if not gone:
        left = [p for p in pids if _alive(p)]
        raise StackError(f"processes still running after {STOP_TIMEOUT_SECONDS:.0f}s: {left}")
    netns.remove()
    progress("stack stopped")
