"""The config files of the infrastructure components, rendered into the run directory."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.envoy.render import all_sidecar_configs
from deploy.local import netns
from services.runtime.config import trace_sample_ratio
from services.runtime.topology import INFRA, kafka_controller_ports, zookeeper_ports


@dataclass(frozen=True)
class KafkaNode:
    name: str  # its supervisor program
    node_id: int
    roles: str  # process.roles
    home: Path  # server.properties and data/


def kafka_nodes(run: Path, controllers: int) -> list[KafkaNode]:
    """With one controller, one combined broker+controller in run/kafka. With three, three
    controller-only voters and a broker of their own under run/kafka-quorum: killing or
    cutting off the KRaft leader then leaves the broker, which the saga's transactions go
    through, standing, so a drill shows the election without a broker outage in the way.
    A directory per mode: switching modes starts a fresh cluster instead of mixing two
    metadata logs. The broker is last."""
    if controllers == 1:
        return [KafkaNode("kafka", 1, "broker,controller", run / "kafka")]
    home = run / "kafka-quorum"
    voters = [
        KafkaNode(f"kafka-controller-{i}", i, "controller", home / f"controller-{i}") for i in range(1, controllers + 1)
    ]
    return [*voters, KafkaNode("kafka", controllers + 1, "broker", home / "broker")]


def kafka_controllers(controllers: int) -> list[tuple[str, int]]:
    """Where each voter listens: the combined node on loopback; three controllers each at
    the address of its own network namespace (deploy/local/netns.py)."""
    ports = kafka_controller_ports(controllers)
    if controllers == 1:
        return [("127.0.0.1", ports[0])]
    return [(netns.address(i), port) for i, port in enumerate(ports, start=1)]


def kafka_properties(node: KafkaNode, controllers: int) -> str:
    # Replication factor 1: the transaction state log and the offsets topic have one
    # replica locally, on the one broker, whichever the controller quorum.
    voters = ",".join(f"{i}@{host}:{port}" for i, (host, port) in enumerate(kafka_controllers(controllers), start=1))
    listeners = []
    if "broker" in node.roles:
        listeners.append(f"PLAINTEXT://127.0.0.1:{INFRA.kafka}")
    if "controller" in node.roles:
        host, port = kafka_controllers(controllers)[node.node_id - 1]
        listeners.append(f"CONTROLLER://{host}:{port}")
    lines = [
        f"process.roles={node.roles}",
        f"node.id={node.node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners={','.join(listeners)}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={node.home / 'data'}",
    ]
    if "broker" in node.roles:
        lines += [
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{INFRA.kafka}",
            "inter.broker.listener.name=PLAINTEXT",
            "num.partitions=3",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=6",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=24",
        ]
    return "\n".join([*lines, "num.network.threads=2", "num.io.threads=2", ""])


def new_kafka_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def zookeeper_config(data: Path, node: int, nodes: int) -> str:
    """One node's zoo.cfg; with nodes > 1, a quorum ensemble on loopback ports."""
    lines = [
        "tickTime=2000",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={data}",
        f"clientPort={zookeeper_ports(nodes)[node - 1]}",
        "clientPortAddress=127.0.0.1",
        "admin.enableServer=false",
        "4lw.commands.whitelist=srvr,ruok,mntr,stat",
    ]
    if nodes > 1:
        lines += [
            f"server.{i}=127.0.0.1:{INFRA.zookeeper_peer + i - 1}:{INFRA.zookeeper_election + i - 1}"
            for i in range(1, nodes + 1)
        ]
    return "\n".join([*lines, ""])


def jaeger_config() -> str:
    config = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"127.0.0.1:{INFRA.jaeger_query}"},
                "grpc": {"endpoint": f"127.0.0.1:{INFRA.jaeger_query_grpc}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 20000}}}},
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{INFRA.jaeger_health}"}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{INFRA.jaeger_otlp_grpc}"},
                    "http": {"endpoint": f"127.0.0.1:{INFRA.jaeger_otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
    return json.dumps(config, indent=2)


def write_sidecar_configs(directory: Path, replicas: dict[str, int]) -> list[str]:
    """Writes every sidecar's config; returns the sidecars whose config changed (Envoy
    reads its config at start, so those must be restarted if they are running)."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, config in all_sidecar_configs(trace_sample_ratio(), replicas).items():
        path = directory / f"{name}.json"
        text = json.dumps(config, indent=2)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(name)
    return changed
