"""The infrastructure on Kubernetes, from upstream images: ZooKeeper and Kafka (KRaft) as
StatefulSets whose size an overlay chooses, PostgreSQL and Redis on persistent volumes,
Jaeger with its UI. Each runs as a non-root user."""

from __future__ import annotations

from deploy import common
from deploy.common import Doc
from deploy.k8s.workloads import (
    PORTS,
    TMP,
    TMP_MOUNT,
    env,
    k8s_service,
    locked_down,
    pod_spec,
    resources,
    workload,
)

KAFKA_UID = 1000  # appuser of apache/kafka
ZOOKEEPER_UID = 1000
POSTGRES_UID = 999  # postgres of the postgres image
REDIS_UID = 999
JAEGER_UID = 10001


def _claim(size: str) -> Doc:
    return {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def _stateful(name: str, pod: Doc, size: str) -> Doc:
    extra = {"serviceName": f"{name}-peers", "podManagementPolicy": "Parallel", "volumeClaimTemplates": [_claim(size)]}
    return workload("StatefulSet", name, "infra", pod, extra)


def _peers(name: str, ports: dict[str, int]) -> Doc:
    """Per-pod DNS names (NAME-0.NAME-peers) for the quorum, published before the pods are
    ready: members must find each other to become ready at all."""
    peers = k8s_service(f"{name}-peers", "infra", ports, headless=True, selector=name)
    peers["spec"]["publishNotReadyAddresses"] = True
    return peers


def zookeeper_servers(nodes: int) -> str:
    return " ".join(
        f"server.{i + 1}=zookeeper-{i}.zookeeper-peers:{PORTS.zookeeper_peer}:{PORTS.zookeeper_election};{PORTS.zookeeper}"
        for i in range(nodes)
    )


def zookeeper_environment(nodes: int) -> dict[str, str]:
    return {
        "ZOO_SERVERS": zookeeper_servers(nodes),
        "ZOO_CFG_EXTRA": "quorumListenOnAllIPs=true",
        "ZOO_ADMINSERVER_ENABLED": "false",
        "ZOO_4LW_COMMANDS_WHITELIST": "srvr,ruok,mntr",
    }


def zookeeper() -> list[Doc]:
    container = {
        "name": "zookeeper",
        "image": common.ZOOKEEPER_IMAGE,
        # myid is the pod's ordinal + 1.
        "command": [
            "sh",
            "-c",
            "export ZOO_MY_ID=$((${HOSTNAME##*-} + 1)); exec /docker-entrypoint.sh zkServer.sh start-foreground",
        ],
        "env": env({**zookeeper_environment(1), "JVMFLAGS": "-Xms64m -Xmx256m"}),
        "ports": [
            {"name": "client", "containerPort": PORTS.zookeeper},
            {"name": "quorum", "containerPort": PORTS.zookeeper_peer},
            {"name": "election", "containerPort": PORTS.zookeeper_election},
        ],
        "readinessProbe": {"tcpSocket": {"port": PORTS.zookeeper}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": PORTS.zookeeper}, "initialDelaySeconds": 20, "periodSeconds": 10},
        "resources": resources("100m", "256Mi", "1", "512Mi"),
        "securityContext": locked_down(ZOOKEEPER_UID),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data", "subPath": "data"},
            {"name": "data", "mountPath": "/datalog", "subPath": "datalog"},
            {"name": "conf", "mountPath": "/conf"},
            {"name": "logs", "mountPath": "/logs"},
            TMP_MOUNT,
        ],
    }
    pod = pod_spec(
        [container], [TMP, {"name": "conf", "emptyDir": {}}, {"name": "logs", "emptyDir": {}}], ZOOKEEPER_UID
    )
    return [
        k8s_service("zookeeper", "infra", {"client": PORTS.zookeeper}),
        _peers("zookeeper", {"quorum": PORTS.zookeeper_peer, "election": PORTS.zookeeper_election}),
        _stateful("zookeeper", pod, "1Gi"),
    ]


def kafka_voters(brokers: int) -> str:
    return ",".join(f"{i}@kafka-{i}.kafka-peers:{PORTS.kafka_controller}" for i in range(brokers))


def kafka_environment(brokers: int) -> dict[str, str]:
    return {"KAFKA_CONTROLLER_QUORUM_VOTERS": kafka_voters(brokers), **common.kafka_settings(brokers)}


def kafka() -> list[Doc]:
    start = (
        'export KAFKA_NODE_ID="${HOSTNAME##*-}"'
        f' KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://${{HOSTNAME}}.kafka-peers:{PORTS.kafka}"; '
        "exec /etc/kafka/docker/run"
    )
    container = {
        "name": "kafka",
        "image": common.KAFKA_IMAGE,
        # node.id is the pod's ordinal; each broker advertises its own stable name.
        "command": ["sh", "-c", start],
        "env": env({**common.kafka_common(), **kafka_environment(1), "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m"}),
        "ports": [
            {"name": "broker", "containerPort": PORTS.kafka},
            {"name": "controller", "containerPort": PORTS.kafka_controller},
        ],
        "readinessProbe": {"tcpSocket": {"port": PORTS.kafka}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": PORTS.kafka}, "initialDelaySeconds": 60, "periodSeconds": 10},
        "resources": resources("250m", "768Mi", "2", "1Gi"),
        # The image writes its rendered server.properties into its own tree at start.
        "securityContext": locked_down(KAFKA_UID, read_only=False),
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kafka/data"}, TMP_MOUNT],
    }
    pod = pod_spec([container], [TMP], KAFKA_UID)
    return [
        k8s_service("kafka", "infra", {"broker": PORTS.kafka}),
        _peers("kafka", {"broker": PORTS.kafka, "controller": PORTS.kafka_controller}),
        _stateful("kafka", pod, "2Gi"),
    ]


def postgres() -> list[Doc]:
    container = {
        "name": "postgres",
        "image": common.POSTGRES_IMAGE,
        "args": ["postgres", "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
        # Trust inside the namespace only: a learning setup; use a Secret and md5/scram beyond it.
        "env": env({"POSTGRES_HOST_AUTH_METHOD": "trust", "PGDATA": "/var/lib/postgresql/data/pgdata"}),
        "ports": [{"name": "postgres", "containerPort": PORTS.postgres}],
        "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres"]}, "periodSeconds": 5},
        "livenessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres"]}, "initialDelaySeconds": 30},
        "resources": resources("100m", "256Mi", "1", "512Mi"),
        "securityContext": locked_down(POSTGRES_UID),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            TMP_MOUNT,
        ],
    }
    pod = pod_spec([container], [TMP, {"name": "run", "emptyDir": {}}], POSTGRES_UID)
    return [k8s_service("postgres", "infra", {"postgres": PORTS.postgres}), _stateful("postgres", pod, "2Gi")]


def redis() -> list[Doc]:
    container = {
        "name": "redis",
        "image": common.REDIS_IMAGE,
        # appendfsync always: fencing tokens never go backwards after a crash.
        "args": ["redis-server", "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        "ports": [{"name": "redis", "containerPort": PORTS.redis}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": PORTS.redis}, "initialDelaySeconds": 10},
        "resources": resources("50m", "64Mi", "500m", "256Mi"),
        "securityContext": locked_down(REDIS_UID),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = pod_spec([container], [], REDIS_UID)
    return [k8s_service("redis", "infra", {"redis": PORTS.redis}), _stateful("redis", pod, "1Gi")]


def jaeger() -> list[Doc]:
    ports = {"otlp-grpc": PORTS.jaeger_otlp_grpc, "otlp-http": PORTS.jaeger_otlp_http, "ui": PORTS.jaeger_query}
    container = {
        "name": "jaeger",
        "image": common.JAEGER_IMAGE,
        "ports": [{"name": name, "containerPort": port} for name, port in ports.items()],
        "readinessProbe": {"httpGet": {"path": "/", "port": PORTS.jaeger_query}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": PORTS.jaeger_otlp_grpc}, "initialDelaySeconds": 10},
        "resources": resources("100m", "256Mi", "1", "1Gi"),
        "securityContext": locked_down(JAEGER_UID),
        "volumeMounts": [TMP_MOUNT],
    }
    pod = pod_spec([container], [TMP])
    return [k8s_service("jaeger", "infra", ports), workload("Deployment", "jaeger", "infra", pod)]
