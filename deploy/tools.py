"""The pinned tools that validate deploy/ offline, and where the bootstrap caches them
(outside the repository). Standard library only: the bootstrap imports it before the
virtualenv exists.

kustomize is built from the Go module proxy; the Compose specification's JSON schema
ships in the compose-go module, and Kubernetes' OpenAPI document in the kubernetes one."""

from __future__ import annotations

from pathlib import Path

from deploy.local import paths

KUSTOMIZE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.1"
COMPOSE_GO = "github.com/compose-spec/compose-go/v2"
COMPOSE_GO_VERSION = "v2.16.2"
COMPOSE_SCHEMA_IN_MODULE = "schema/compose-spec.json"
KUBERNETES = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.34.4"
KUBERNETES_OPENAPI_IN_MODULE = "api/openapi-spec/swagger.json"


def cache() -> Path:
    return paths.CACHE / "deploy-tools"


def kustomize_binary() -> Path:
    return cache() / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"


def compose_schema() -> Path:
    return cache() / f"compose-spec-{COMPOSE_GO_VERSION}.json"


def kubernetes_openapi() -> Path:
    return cache() / f"kubernetes-{KUBERNETES_VERSION}-swagger.json"


def missing() -> list[Path]:
    return [p for p in (kustomize_binary(), compose_schema(), kubernetes_openapi()) if not p.exists()]
