"""The Kubernetes deployment as a kustomize base and two overlays: `dev` (one replica of
everything but the driver cluster's three) and `ha` (three Kafka brokers, three ZooKeeper
nodes, two replicas of every other service, PodDisruptionBudgets that keep a quorum and a
serving replica through drains)."""

from __future__ import annotations

from deploy import common
from deploy.common import Doc
from deploy.k8s import infra as k8s_infra
from deploy.k8s.workloads import jobs, service_workload, simulators
from services.runtime.topology import DRIVER_CLUSTER, SERVICES

NAMESPACE = "ridesaga"
HA_SERVICE_REPLICAS = 2
HA_QUORUM = 3
KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
# Infrastructure files of the base, in the order they are applied.
INFRA = {
    "zookeeper.yaml": k8s_infra.zookeeper,
    "kafka.yaml": k8s_infra.kafka,
    "postgres.yaml": k8s_infra.postgres,
    "redis.yaml": k8s_infra.redis,
    "jaeger.yaml": k8s_infra.jaeger,
}


def _base() -> dict[str, str]:
    files = {"namespace.yaml": common.dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})}
    files.update({name: common.dump(*render()) for name, render in INFRA.items()})
    files["jobs.yaml"] = common.dump(*jobs(kafka_replication=1))
    for spec in SERVICES:
        files[f"{spec.name}.yaml"] = common.dump(*service_workload(spec))
    files["simulators.yaml"] = common.dump(*simulators())
    kustomization = {
        **KUSTOMIZATION,
        "namespace": NAMESPACE,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "ridesaga"}}],
        "resources": list(files),
        # The sidecar configs' ConfigMaps, from the one rendered copy in deploy/envoy/.
        "components": ["../../envoy"],
    }
    files["kustomization.yaml"] = common.dump(kustomization)
    return files


def _replicas(services: int, quorum: int) -> list[Doc]:
    """The driver service is a SWIM cluster of DRIVER_CLUSTER in every overlay."""
    counts = [{"name": spec.name, "count": DRIVER_CLUSTER if spec.name == "driver" else services} for spec in SERVICES]
    return [*counts, {"name": "kafka", "count": quorum}, {"name": "zookeeper", "count": quorum}]


def _dev() -> dict[str, str]:
    kustomization = {**KUSTOMIZATION, "resources": ["../../base"], "replicas": _replicas(1, 1)}
    return {"kustomization.yaml": common.dump(kustomization)}


def _env_patch(kind: str, name: str, container: str, values: dict[str, str]) -> Doc:
    template = {
        "spec": {"containers": [{"name": container, "env": [{"name": k, "value": v} for k, v in values.items()]}]}
    }
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": {"template": template}}


def _budget(name: str, rule: Doc) -> Doc:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {**rule, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}},
    }


def _ha() -> dict[str, str]:
    budgets = [_budget(spec.name, {"minAvailable": 1}) for spec in SERVICES if spec.name != "driver"]
    # The driver cluster drains one replica at a time, as the rolling-restart drill does.
    budgets.append(_budget("driver", {"maxUnavailable": 1}))
    # A quorum of three survives one voluntary disruption at a time, never two.
    budgets += [_budget(name, {"maxUnavailable": 1}) for name in ("kafka", "zookeeper")]
    topics = jobs(kafka_replication=HA_QUORUM)[1]
    topics_patch = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "topics"},
        "spec": {"template": {"spec": {"containers": topics["spec"]["template"]["spec"]["containers"]}}},
    }
    patches = {
        "kafka-quorum.yaml": _env_patch("StatefulSet", "kafka", "kafka", k8s_infra.kafka_environment(HA_QUORUM)),
        "zookeeper-quorum.yaml": _env_patch(
            "StatefulSet", "zookeeper", "zookeeper", {"ZOO_SERVERS": k8s_infra.zookeeper_servers(HA_QUORUM)}
        ),
        "topics-replicated.yaml": topics_patch,
    }
    kustomization = {
        **KUSTOMIZATION,
        "resources": ["../../base", "disruption-budgets.yaml"],
        "replicas": _replicas(HA_SERVICE_REPLICAS, HA_QUORUM),
        "patches": [{"path": name} for name in patches],
    }
    files = {name: common.dump(doc) for name, doc in patches.items()}
    files["disruption-budgets.yaml"] = common.dump(*budgets)
    files["kustomization.yaml"] = common.dump(kustomization)
    return files


def render() -> dict[str, str]:
    """Files under deploy/k8s/, by relative path."""
    files = {f"base/{name}": text for name, text in _base().items()}
    files.update({f"overlays/dev/{name}": text for name, text in _dev().items()})
    files.update({f"overlays/ha/{name}": text for name, text in _ha().items()})
    return files
