"""Where everything lives. Standard library only: the bootstrap imports it before the
virtualenv exists.

Downloads and builds are cached outside the repository, keyed by a hash of the file
that pins them (a pom, a go.sum, the Python lock), so a second bootstrap finds them and
does no network work, and changing a pin can never reuse a stale build."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deploy.local import environment

REPO = Path(__file__).resolve().parents[2]
CACHE = environment.cache_dir()
RUN = environment.run_dir()
VENV = REPO / ".venv"
GEN = REPO / "build" / "gen"
LOCK = REPO / "requirements.lock"
JARS_POMS = {
    name: REPO / "deploy" / "local" / "jars" / name / "pom.xml" for name in ("kafka", "kafka-tools", "zookeeper")
}
# Fetched only by the lab that needs them, never by `make demo` or `make test`.
LAB_POMS = {"cassandra": REPO / "deploy" / "local" / "jars" / "cassandra" / "pom.xml"}
LAB_LOCKS = {"cassandra": REPO / "deploy" / "local" / "requirements-cassandra.lock"}
JAEGER_MODULE = REPO / "deploy" / "local" / "jaeger"


def pin_hash(*files: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def jars_dir(name: str) -> Path:
    return CACHE / "jars" / f"{name}-{pin_hash({**JARS_POMS, **LAB_POMS}[name])}"


def jaeger_binary() -> Path:
    return CACHE / "jaeger" / pin_hash(JAEGER_MODULE / "go.mod", JAEGER_MODULE / "go.sum") / "jaeger"


def wheelhouse() -> Path:
    return CACHE / "wheels"


def envoy_binary() -> Path:
    return VENV / "bin" / "envoy"


def python() -> Path:
    return VENV / "bin" / "python"
