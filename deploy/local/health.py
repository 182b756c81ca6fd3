"""Health checks, one per kind of component, each a real protocol-level probe with a
short timeout: ZooKeeper `srvr`, Kafka metadata, pg_isready, Redis PING, the Jaeger
query API, and the gRPC health checking protocol (through the sidecar for `*-envoy`)."""

from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import redis
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 2.0


def zookeeper(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as conn:
            conn.sendall(b"srvr")
            reply = conn.recv(4096)
        return reply.startswith(b"Zookeeper version")
    except OSError:
        return False


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on the port (a KRaft controller, which has no broker API)."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def kafka(port: int) -> bool:
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 2000, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_SECONDS)
    except Exception:  # confluent_kafka raises KafkaException or a C-level error
        return False
    return bool(metadata.brokers)


def postgres(port: int, bindir: Path) -> bool:
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-q", "-U", "postgres", "-h", "127.0.0.1", "-p", str(port), "-t", "2"], check=False
    )
    return result.returncode == 0


def redis_ping(port: int) -> bool:
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(port: int, service: str = "") -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
