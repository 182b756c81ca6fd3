"""A local three-node Apache Cassandra 5.0 cluster on loopback, run straight from the
Maven Central jars (deploy/local/jars/cassandra/pom.xml), with no tarball and no bin/ scripts.

The jars ship no cassandra.yaml, no logback.xml and none of the conf/jvm*-server.options
that bin/cassandra would read, so this module renders all three for node N as pure
functions (render_cassandra_yaml, render_logback_xml, jvm_command), plus:

- start_cluster(): writes each node's files under /tmp/ridesaga-cassandra/node-N/, starts
  the nodes one at a time as subprocesses (node N+1 only after node N's native port answers
  a CQL OPTIONS request, since Cassandra bootstraps one joining node at a time) and returns
  once all of them answer;
- stop_cluster(): SIGTERM, then SIGKILL after a grace period, for every node it finds by
  pid file, so that nothing is left running.

Node N listens on 127.0.0.N: storage (gossip) on 7400, CQL on 9142; node 1 is the seed and
the only one with JMX (local only, 7499: a local-only JMX server binds 127.0.0.1 whatever
the node's address, so only one node can have it). Each node gets a 256-512 MiB heap and
holds about 0.5 GiB resident; as root it runs without CAP_IPC_LOCK so that Cassandra's
mlockall fails (it warns and goes on) instead of pinning ~0.7 GiB. Standard library only.

    ridectl quorum cassandra                  # fetches what it needs, starts, measures, stops
    python -m deploy.local.cassandra start    # or: stop (after the lab fetched the jars)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.local import paths

CASSANDRA_VERSION = "5.0.9"
CLUSTER_NAME = "ridesaga"
NODE_COUNT = 3
STORAGE_PORT = 7400
NATIVE_PORT = 9142
JMX_PORT = 7499
SEED_NODE = 1
DATA_ROOT = Path("/tmp/ridesaga-cassandra")
JAR_DIR = paths.jars_dir("cassandra")
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
START_TIMEOUT_SECONDS = 240.0
STOP_TIMEOUT_SECONDS = 45.0

# conf/jvm17-server.options of Cassandra 5.0 (JPMS and Netty sections), which bin/cassandra
# would add; without them startup dies on inaccessible JDK internals.
JVM17_MODULE_OPTIONS: tuple[str, ...] = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)


class CassandraError(RuntimeError):
    """The cluster could not be started: a missing jar directory, a busy port, a node that
    died or never answered. The message names the node and its log."""


@dataclass(frozen=True)
class Node:
    """Where node N lives: its loopback address and its own directory of config and data."""

    index: int
    root: Path = DATA_ROOT

    @property
    def address(self) -> str:
        return f"127.0.0.{self.index}"

    @property
    def home(self) -> Path:
        return self.root / f"node-{self.index}"

    @property
    def conf(self) -> Path:
        return self.home / "conf"

    @property
    def yaml_path(self) -> Path:
        return self.conf / "cassandra.yaml"

    @property
    def logback_path(self) -> Path:
        return self.conf / "logback.xml"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def stdout_path(self) -> Path:
        return self.logs / "stdout.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "cassandra.pid"


def nodes(count: int = NODE_COUNT, root: Path = DATA_ROOT) -> list[Node]:
    if not 1 <= count <= 254:
        raise ValueError(f"node count must be 1..254, got {count}")
    return [Node(index, root) for index in range(1, count + 1)]


def render_cassandra_yaml(node: Node, cluster_name: str = CLUSTER_NAME, num_tokens: int = 16) -> str:
    """The smallest cassandra.yaml 5.0 starts with, using 5.0's key names (durations such as
    commitlog_sync_period: 10000ms, not the old *_in_ms), plus settings that keep three
    nodes small on a 2-core machine."""
    seed = Node(SEED_NODE, node.root).address
    home = node.home
    return f"""\
# Rendered by deploy/local/cassandra.py for node {node.index}; do not edit.
cluster_name: {cluster_name}
num_tokens: {num_tokens}
allocate_tokens_for_local_replication_factor: 3
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seed}:{STORAGE_PORT}"
listen_address: {node.address}
rpc_address: {node.address}
storage_port: {STORAGE_PORT}
native_transport_port: {NATIVE_PORT}
start_native_transport: true
auto_bootstrap: true
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
data_file_directories:
  - {home / "data"}
commitlog_directory: {home / "commitlog"}
saved_caches_directory: {home / "saved_caches"}
hints_directory: {home / "hints"}
cdc_raw_directory: {home / "cdc_raw"}
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
prepared_statements_cache_size: 8MiB
native_transport_max_threads: 32
dynamic_snitch: false
"""


def render_logback_xml(node: Node, level: str = "INFO") -> str:
    """Logback for one node: everything at `level` to logs/system.log (rolled at 20 MB,
    5 kept), warnings and errors also to stdout, which start_cluster sends to logs/stdout.log."""
    logs = node.logs
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Rendered by deploy/local/cassandra.py for node {node.index}; do not edit. -->
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{logs / "system.log"}</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>{logs / "system.log"}.%i.zip</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>5</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter">
      <level>WARN</level>
    </filter>
    <encoder>
      <pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="{level}">
    <appender-ref ref="SYSTEMLOG"/>
    <appender-ref ref="STDOUT"/>
  </root>
  <logger name="org.apache.cassandra" level="{level}"/>
</configuration>
"""


def classpath(jar_dir: Path) -> str:
    return ":".join(str(jar) for jar in sorted(jar_dir.glob("*.jar")))


def jamm_jar(jar_dir: Path) -> Path | None:
    found = sorted(jar_dir.glob("jamm-*.jar"))
    return found[-1] if found else None


def jvm_command(
    node: Node,
    jar_dir: Path = JAR_DIR,
    java: str = "java",
    heap_mb: int = 512,
    ring_delay_ms: int = 5000,
) -> list[str]:
    """The java command line for node N: what bin/cassandra and conf/jvm17-server.options
    would give it, with a small heap, a short ring delay (so nodes join seconds apart,
    not 30 s) and JMX only on the seed. Reads the jar directory for the classpath."""
    command = [
        java,
        f"-Xms{min(256, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-Xss256k",
        "-XX:+UseG1GC",
        "-XX:+ParallelRefProcEnabled",
        "-XX:MaxTenuringThreshold=1",
        "-XX:ParallelGCThreads=1",
        "-XX:ConcGCThreads=1",
        "-XX:CICompilerCount=2",
        "-XX:MaxDirectMemorySize=256m",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:+HeapDumpOnOutOfMemoryError",
        f"-XX:HeapDumpPath={node.home}",
        "-XX:+PerfDisableSharedMem",
        "-Djava.net.preferIPv4Stack=true",
        *JVM17_MODULE_OPTIONS,
    ]
    agent = jamm_jar(jar_dir)
    if agent is not None:
        command.append(f"-javaagent:{agent}")
    if node.index == SEED_NODE:
        command.append(f"-Dcassandra.jmx.local.port={JMX_PORT}")
    command += [
        f"-Dcassandra.config=file://{node.yaml_path}",
        f"-Dcassandra.storagedir={node.home}",
        f"-Dcassandra.logdir={node.logs}",
        f"-Dlogback.configurationFile=file://{node.logback_path}",
        f"-Djava.io.tmpdir={node.home / 'tmp'}",
        f"-Dcassandra.ring_delay_ms={ring_delay_ms}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.load_ring_state=true",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra-pidfile={node.pid_path}",
        "-cp",
        classpath(jar_dir),
        MAIN_CLASS,
    ]
    return command


def native_port_answers(address: str, port: int = NATIVE_PORT, timeout: float = 2.0) -> bool:
    """True when a CQL server at address:port answers an OPTIONS request (protocol v4) with
    SUPPORTED. An open port is not enough: Cassandra binds it only once it has joined."""
    options_frame = bytes([0x04, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00])
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.sendall(options_frame)
            header = b""
            while len(header) < 9:
                chunk = conn.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return header[0] == 0x84 and header[4] == 0x06


def _port_busy(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def write_node_files(node: Node, owner: str | None = None) -> None:
    """Creates node N's directories and writes its cassandra.yaml and logback.xml."""
    for sub in ("conf", "logs", "data", "commitlog", "saved_caches", "hints", "cdc_raw", "tmp"):
        (node.home / sub).mkdir(parents=True, exist_ok=True)
    node.yaml_path.write_text(render_cassandra_yaml(node))
    node.logback_path.write_text(render_logback_xml(node))
    if owner is not None:
        for path in [node.home, *node.home.rglob("*")]:
            shutil.chown(path, user=owner)


def _running_pid(node: Node) -> int | None:
    """The pid in node N's pid file if that process is still a CassandraDaemon of this node."""
    try:
        pid = int(node.pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if MAIN_CLASS in cmdline and str(node.yaml_path) in cmdline else None


def launch_command(
    node: Node,
    jar_dir: Path = JAR_DIR,
    user: str | None = None,
    lock_memory: bool = False,
    as_root: bool = False,
) -> list[str]:
    """jvm_command, wrapped for who runs it. With `user`, through runuser (the jar directory
    must then be readable by that user). As root otherwise, and unless lock_memory, through
    setpriv without CAP_IPC_LOCK: Cassandra calls mlockall at startup, which root always
    gets, pinning ~700 MiB per node instead of ~500 MiB on a machine that has no swap anyway."""
    command = jvm_command(node, jar_dir)
    if user is not None:
        return ["runuser", "-u", user, "--", *command]
    if as_root and not lock_memory:
        return ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *command]
    return command


def start_node(
    node: Node, jar_dir: Path = JAR_DIR, user: str | None = None, lock_memory: bool = False
) -> subprocess.Popen[bytes]:
    """Starts one node in its own process group, stdout and stderr to logs/stdout.log, and
    records its pid (see launch_command for `user` and `lock_memory`)."""
    as_root = os.geteuid() == 0 and shutil.which("setpriv") is not None
    command = launch_command(node, jar_dir, user, lock_memory, as_root)
    with node.stdout_path.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    node.pid_path.write_text(f"{process.pid}\n")
    return process


def wait_until_answers(node: Node, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT_SECONDS) -> float:
    """Seconds until node N's native port answered; raises if it exits or takes too long."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if native_port_answers(node.address):
            return time.monotonic() - started
        if process.poll() is not None:
            raise CassandraError(
                f"cassandra node {node.index} exited with {process.returncode} before its native port answered;"
                f" see {node.logs / 'system.log'} and {node.stdout_path}"
            )
        time.sleep(1.0)
    raise CassandraError(
        f"cassandra node {node.index} did not answer on {node.address}:{NATIVE_PORT} in {timeout:.0f}s"
    )


def start_cluster(
    count: int = NODE_COUNT,
    jar_dir: Path = JAR_DIR,
    root: Path = DATA_ROOT,
    user: str | None = None,
    fresh: bool = False,
    lock_memory: bool = False,
) -> list[subprocess.Popen[bytes]]:
    """Starts `count` nodes one at a time and returns once every native port answers.
    With fresh=True the data under `root` is wiped first. On failure every node it started
    is stopped again before the error is raised."""
    if not (jar_dir / f"cassandra-all-{CASSANDRA_VERSION}.jar").is_file():
        raise CassandraError(
            f"no cassandra-all-{CASSANDRA_VERSION}.jar in {jar_dir}; `ridectl quorum cassandra` fetches it"
        )
    cluster = nodes(count, root)
    for node in cluster:
        for port in (STORAGE_PORT, NATIVE_PORT):
            if _port_busy(node.address, port):
                raise CassandraError(f"{node.address}:{port} is already in use")
    if fresh and root.exists():
        shutil.rmtree(root)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for node in cluster:
            write_node_files(node, owner=user)
            process = start_node(node, jar_dir, user, lock_memory)
            processes.append(process)
            wait_until_answers(node, process)
    except BaseException:
        stop_cluster(count, root)
        raise
    return processes


def stop_cluster(count: int = NODE_COUNT, root: Path = DATA_ROOT, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stops every node that its pid file names and that is still this node's
    CassandraDaemon: SIGCONT (in case a drill paused it), SIGTERM to its process group, then
    SIGKILL for whatever is left after `timeout`. Returns when none is running."""
    running = {node: pid for node in nodes(count, root) if (pid := _running_pid(node)) is not None}
    for pid in running.values():
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        running = {node: pid for node, pid in running.items() if _alive(pid)}
        time.sleep(0.5)
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in running.values():
        while _alive(pid):
            time.sleep(0.2)
    for node in nodes(count, root):
        node.pid_path.unlink(missing_ok=True)


def stop_node(node: Node, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stops one node (SIGTERM, then SIGKILL after `timeout`), as an operator's stop does."""
    pid = _running_pid(node)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.2)
    node.pid_path.unlink(missing_ok=True)


def resident_mib(node: Node) -> float | None:
    """The node's resident memory (VmRSS), or None if it is not running."""
    pid = _running_pid(node)
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (a child of ours not yet reaped counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=("start", "stop", "print"))
    parser.add_argument("--nodes", type=int, default=NODE_COUNT)
    parser.add_argument("--jars", type=Path, default=JAR_DIR)
    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    parser.add_argument("--user", default=None, help="run the nodes as this user (through runuser)")
    parser.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    parser.add_argument("--lock-memory", action="store_true", help="let Cassandra mlockall its memory (root only)")
    args = parser.parse_args(argv)
    if args.action == "print":
        for node in nodes(args.nodes, args.root):
            print(" ".join(jvm_command(node, args.jars)))
        return 0
    if args.action == "stop":
        stop_cluster(args.nodes, args.root)
        return 0
    started = time.monotonic()
    try:
        start_cluster(args.nodes, args.jars, args.root, args.user, args.fresh, args.lock_memory)
    except CassandraError as error:
        print(error, file=sys.stderr)
        return 1
    print(
        f"{args.nodes} cassandra nodes answering on 127.0.0.1..{args.nodes}:{NATIVE_PORT} after {time.monotonic() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
