"""Kubernetes objects for one workload each, built from the topology: the five services
(each pod: the app and its Envoy sidecar), the infrastructure from upstream images, the
simulators and the one-shot Jobs.

The services are StatefulSets: a pod's ordinal gives it a stable replica number, so its
Kafka transactional ids survive a restart and the restarted pod fences its zombie
predecessor, as a restarted local process does."""

from __future__ import annotations

from deploy import common
from deploy.common import Doc
from services.runtime.topology import (
    KUBERNETES,
    MEMBERS_NAME,
    SWEEPERS,
    ServiceSpec,
    membership_environment,
    service,
)

TARGET = KUBERNETES
PORTS = TARGET.infra
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
POD_IP = "RIDESAGA_POD_IP"


def labels(name: str, component: str) -> Doc:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def env(values: dict[str, str]) -> list[Doc]:
    return [{"name": key, "value": value} for key, value in values.items()]


def field(name: str, path: str) -> Doc:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Doc:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def locked_down(uid: int, read_only: bool = True) -> Doc:
    """A container that runs as `uid`, cannot gain privileges and holds no capabilities."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_spec(containers: list[Doc], volumes: list[Doc], fs_group: int | None = None) -> Doc:
    security: Doc = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        security["fsGroup"] = fs_group
    return {
        "automountServiceAccountToken": False,
        # Service links would put KAFKA_PORT and the like into every container's
        # environment, where the Kafka image reads KAFKA_* as broker settings.
        "enableServiceLinks": False,
        "securityContext": security,
        "containers": containers,
        "volumes": volumes,
    }


TMP = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def workload(kind: str, name: str, component: str, pod: Doc, extra: Doc | None = None) -> Doc:
    spec: Doc = {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}
    spec.update(extra or {})
    spec["template"] = {"metadata": {"labels": labels(name, component)}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels(name, component)},
        "spec": spec,
    }


def k8s_service(
    name: str,
    component: str,
    ports: dict[str, int],
    headless: bool = False,
    selector: str = "",
    protocol: str = "TCP",
) -> Doc:
    spec: Doc = {"selector": {"app.kubernetes.io/name": selector or name}}
    if headless:
        spec["clusterIP"] = "None"
    spec["ports"] = [
        {"name": port_name, "port": port, "targetPort": port, **({"protocol": protocol} if protocol != "TCP" else {})}
        for port_name, port in ports.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name, component)},
        "spec": spec,
    }


def _grpc_check(spec: ServiceSpec) -> Doc:
    """The app listens on loopback only, out of the kubelet's reach: its probes run the
    gRPC health check inside the pod."""
    return {"exec": {"command": ["ridesaga", "health", str(spec.app_port), spec.grpc_service]}}


def _membership(spec: ServiceSpec) -> list[Doc]:
    """A driver replica is a member named by its pod's IP (Kubernetes expands $(VAR) from
    the variables before it) and joins through MEMBERS_NAME."""
    if spec.name != "driver":
        return []
    return [field(POD_IP, "status.podIP"), *env(membership_environment(spec, f"$({POD_IP})"))]


def _app_container(spec: ServiceSpec) -> Doc:
    container: Doc = {
        "name": spec.name,
        "image": common.APP_IMAGE,
        "args": [spec.name],
        "env": [
            *env(common.app_environment(spec, TARGET)),
            field("RIDESAGA_POD_INDEX", POD_INDEX),
            *_membership(spec),
        ],
        "readinessProbe": {**_grpc_check(spec), "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {
            **_grpc_check(spec),
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": resources("100m", "192Mi", "1", "512Mi"),
        "securityContext": locked_down(common.APP_UID),
        "volumeMounts": [TMP_MOUNT],
    }
    if spec.name == "driver":
        # SWIM's datagrams go app to app on the pod's IP, beside the sidecar's gRPC port.
        container["ports"] = [{"name": "gossip", "containerPort": spec.ingress_port, "protocol": "UDP"}]
    return container


def _sidecar_container(spec: ServiceSpec) -> Doc:
    return {
        "name": "envoy",
        "image": common.ENVOY_IMAGE,
        "command": ["envoy"],
        "args": ["-c", common.ENVOY_CONFIG, "--disable-hot-restart", "--concurrency", "1", "-l", "warn"],
        "ports": [{"name": "grpc", "containerPort": spec.ingress_port}],
        # Ready when a health check through the sidecar reaches the app; alive while it listens.
        "readinessProbe": {"grpc": {"port": spec.ingress_port, "service": spec.grpc_service}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": spec.ingress_port}, "initialDelaySeconds": 10, "periodSeconds": 10},
        "resources": resources("50m", "64Mi", "500m", "256Mi"),
        "securityContext": locked_down(common.ENVOY_UID),
        "volumeMounts": [{"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": True}, TMP_MOUNT],
    }


def service_workload(spec: ServiceSpec) -> list[Doc]:
    """A StatefulSet whose pods carry the app and its sidecar, and a headless Service:
    callers' sidecars resolve the name to every ready pod and balance over them."""
    config = {"name": "envoy-config", "configMap": {"name": spec.sidecar}}
    pod = pod_spec([_app_container(spec), _sidecar_container(spec)], [TMP, config])
    pod["terminationGracePeriodSeconds"] = 20
    extra = {"serviceName": spec.name, "podManagementPolicy": "Parallel"}
    found = [k8s_service(spec.name, "service", {"grpc": spec.ingress_port}, headless=True)]
    if spec.name == "driver":
        found.append(_members_service(spec))
    return [*found, workload("StatefulSet", spec.name, "service", pod, extra)]


def _members_service(spec: ServiceSpec) -> Doc:
    """Every driver replica's IP, ready or not, behind one name: a replica gossips from its
    start, before its readiness probe passes, so its seeds must include the pods that the
    callers' Service still leaves out."""
    members = k8s_service(
        MEMBERS_NAME, "membership", {"gossip": spec.ingress_port}, headless=True, selector=spec.name, protocol="UDP"
    )
    members["spec"]["publishNotReadyAddresses"] = True
    return members


def _app_pod(args: list[str], values: list[Doc], memory: str = "192Mi", memory_limit: str = "384Mi") -> Doc:
    container = {
        "name": args[0],
        "image": common.APP_IMAGE,
        "args": args,
        "env": values,
        "resources": resources("50m", memory, "500m", memory_limit),
        "securityContext": locked_down(common.APP_UID),
        "volumeMounts": [TMP_MOUNT],
    }
    return pod_spec([container], [TMP])


def simulators() -> list[Doc]:
    trip = env(common.app_environment(service("trip"), TARGET))
    driver = service("driver")
    fleet = {
        "PYTHONUNBUFFERED": "1",
        "RIDESAGA_DRIVER_TARGET": TARGET.address("driver", driver.ingress_port),
        "RIDESAGA_FLEET_SIZE": "30",
        "RIDESAGA_FLEET_STATE": common.FLEET_STATE,
    }
    locust = _app_pod(["locust"], env(common.load_environment(TARGET)), "256Mi", "512Mi")
    locust["containers"][0]["ports"] = [{"name": "web", "containerPort": common.LOCUST_PORT}]
    sweeper = workload(
        "Deployment",
        "trip-sweeper",
        "sweeper",
        _app_pod(["sweeper"], [*trip, field("RIDESAGA_SWEEPER_ID", "metadata.name")]),
    )
    sweeper["spec"]["replicas"] = len(SWEEPERS)  # one leader, one standby
    return [
        sweeper,
        workload("Deployment", "fleet", "simulator", _app_pod(["fleet"], env(fleet))),
        workload("Deployment", "locust", "load", locust),
        k8s_service("locust", "load", {"web": common.LOCUST_PORT}),
    ]


def jobs(kafka_replication: int) -> list[Doc]:
    """Idempotent one-shot work: Jobs retry until the database and the brokers answer."""
    migrate = _app_pod(["migrate"], env(common.app_environment(service("trip"), TARGET)))
    topics_container = {
        "name": "topics",
        "image": common.KAFKA_IMAGE,
        "command": ["sh", "-c", common.create_topics_script(f"kafka:{PORTS.kafka}", kafka_replication)],
        "resources": resources("100m", "256Mi", "500m", "512Mi"),
        "securityContext": locked_down(1000, read_only=False),
    }
    topics = pod_spec([topics_container], [])
    found = []
    for name, pod in (("migrate", migrate), ("topics", topics)):
        pod["restartPolicy"] = "OnFailure"
        found.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "labels": labels(name, "job")},
                "spec": {"backoffLimit": 30, "template": {"metadata": {"labels": labels(name, "job")}, "spec": pod}},
            }
        )
    return found
