"""Installs everything the local stack needs, idempotently, and says what it is doing.

Standard library only (it runs before the virtualenv exists). Each step checks its
cache first; a second run does no network work. The one `make` entry point that every
other target (demo, up, test) calls."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deploy import tools
from deploy.local import environment, paths


class BootstrapError(Exception):
    pass


def say(step: str, message: str) -> None:
    print(f"bootstrap: {step}: {message}", flush=True)


def run(cmd: list[str], step: str, log: Path | None = None, **kwargs: object) -> None:
    if log is None:
        result = subprocess.run(cmd, check=False, **kwargs)  # type: ignore[call-overload]
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            result = subprocess.run(cmd, check=False, stdout=out, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        where = f"; its output is in {log}" if log else ""
        raise BootstrapError(f"{step}: `{' '.join(cmd[:3])} ...` failed with exit code {result.returncode}{where}")


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def missing_debian_packages() -> list[str]:
    missing = []
    if postgres_bindir() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if shutil.which("java") is None:
        missing.append("default-jdk-headless")
    if shutil.which("mvn") is None:
        missing.append("maven")
    if shutil.which("chromium") is None:
        missing.append("chromium")  # the tests load `ridectl trace --html` pages in it, headless
    if shutil.which("nft") is None:
        missing.append("nftables")  # the partition drills drop loopback packets with it (drills/partition.py)
    if shutil.which("ip") is None:
        missing.append("iproute2")  # KAFKA_CONTROLLERS=3 runs its controllers in namespaces (deploy/local/netns.py)
    return missing


def debian_packages() -> None:
    missing = missing_debian_packages()
    if not missing:
        say("debian", "postgresql, redis-server, java, maven, chromium, nft, ip present")
        return
    if os.geteuid() != 0:
        raise BootstrapError(
            f"debian: missing {', '.join(missing)}; install them with `sudo apt-get install {' '.join(missing)}`"
        )
    say("debian", f"installing {', '.join(missing)}")
    env = environment.child(DEBIAN_FRONTEND="noninteractive")
    log = paths.CACHE / "logs" / "apt.log"
    run(["apt-get", "update"], "debian", log, env=env)
    run(["apt-get", "install", "-y", "--no-install-recommends", *missing], "debian", log, env=env)
    still = missing_debian_packages()
    if still:
        raise BootstrapError(f"debian: {', '.join(still)} still missing after apt-get install; see {log}")


def virtualenv() -> None:
    lock_hash = paths.pin_hash(paths.LOCK, paths.REPO / "pyproject.toml")
    wheels = paths.wheelhouse()
    fetched = wheels / f".fetched-{paths.pin_hash(paths.LOCK)}"
    if not fetched.exists():
        say("python", f"downloading pinned wheels into {wheels}")
        wheels.mkdir(parents=True, exist_ok=True)
        run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "-r", str(paths.LOCK)],
            "python",
            paths.CACHE / "logs" / "pip-download.log",
        )
        fetched.touch()
    stamp = paths.VENV / f".installed-{lock_hash}"
    if stamp.exists():
        say("python", f"virtualenv {paths.VENV} up to date")
    else:
        say("python", f"creating {paths.VENV} from the cached wheels (no network)")
        shutil.rmtree(paths.VENV, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(paths.VENV)], "python")
        pip = [str(paths.python()), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels)]
        log = paths.CACHE / "logs" / "pip-install.log"
        run([*pip, "-r", str(paths.LOCK)], "python", log)
        run([*pip, "--no-deps", "--no-build-isolation", "-e", str(paths.REPO)], "python", log)
        stamp.touch()
    site = next((paths.VENV / "lib").glob("python3*/site-packages"))
    (site / "ridesaga_gen.pth").write_text(f"{paths.GEN}\n")


def protos() -> None:
    run([str(paths.python()), str(paths.REPO / "scripts" / "protogen.py")], "protos")


def jars() -> None:
    for name, pom in paths.JARS_POMS.items():
        _jars(name, pom)


def _jars(name: str, pom: Path) -> None:
    target = paths.jars_dir(name)
    if (target / ".complete").exists():
        say("jars", f"{name} cached in {target}")
        return
    say("jars", f"resolving {name} with Maven into {target}")
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=paths.CACHE))
    run(
        [
            "mvn",
            "-q",
            "-B",
            f"-Dmaven.repo.local={paths.CACHE / 'm2'}",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        "jars",
        paths.CACHE / "logs" / f"mvn-{name}.log",
    )
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)


def lab_dependencies(name: str) -> None:
    """What one lab needs beyond the stack, fetched and installed the first time it runs
    (idempotent, cached like the rest): its jars and its pinned Python packages."""
    if name in paths.LAB_POMS:
        _jars(name, paths.LAB_POMS[name])
    lock = paths.LAB_LOCKS.get(name)
    if lock is None:
        return
    stamp = paths.VENV / f".installed-{name}-{paths.pin_hash(lock)}"
    if stamp.exists():
        return
    wheels = paths.wheelhouse()
    wheels.mkdir(parents=True, exist_ok=True)
    say("python", f"installing {name}'s packages into {paths.VENV}")
    log = paths.CACHE / "logs" / f"pip-{name}.log"
    run([str(paths.python()), "-m", "pip", "download", "-q", "-d", str(wheels), "-r", str(lock)], "python", log)
    run(
        [str(paths.python()), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), "-r", str(lock)],
        "python",
        log,
    )
    stamp.touch()


def jaeger() -> None:
    binary = paths.jaeger_binary()
    if binary.exists():
        say("jaeger", f"cached at {binary}")
        return
    if shutil.which("go") is None:
        raise BootstrapError("jaeger: Go >= 1.24 is needed to build Jaeger v2 and `go` is not on PATH")
    say("jaeger", "building Jaeger v2 from the Go module proxy (first time only; several minutes on 2 cores)")
    env = go_environment()
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    log = paths.CACHE / "logs" / "jaeger-build.log"
    started = time.monotonic()
    try:
        run(
            ["go", "build", "-trimpath", "-o", str(partial), "github.com/jaegertracing/jaeger/cmd/jaeger"],
            "jaeger",
            log,
            env=env,
            cwd=paths.JAEGER_MODULE,
        )
    except BootstrapError as error:
        raise BootstrapError(f"the Jaeger build failed: {error}") from None
    partial.rename(binary)
    say("jaeger", f"built in {time.monotonic() - started:.0f}s")


def go_environment() -> dict[str, str]:
    """Go's module and build caches outside the repository; the machine's own toolchain."""
    return environment.child(
        GOPATH=str(paths.CACHE / "go"),
        GOCACHE=str(paths.CACHE / "go-build"),
        GOFLAGS="-modcacherw",
        GOTOOLCHAIN="local",
    )


def go_module_file(module: str, version: str, inside: str, target: Path) -> None:
    """Copies one file out of a pinned Go module (downloaded into the module cache)."""
    say("deploy", f"taking {inside} from {module}@{version}")
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        env=go_environment(),
    )
    if found.returncode != 0:
        raise BootstrapError(
            f"deploy: `go mod download {module}@{version}` failed: {found.stdout}{found.stderr}".strip()
        )
    source = Path(json.loads(found.stdout)["Dir"]) / inside
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.rename(target)


def deploy_tools() -> None:
    """kustomize and the Compose and Kubernetes schemas, for the offline validation of
    deploy/ in the unit tests (tests/unit/test_deploy.py)."""
    if not tools.missing():
        say("deploy", f"kustomize {tools.KUSTOMIZE_VERSION} and the schemas cached in {tools.cache()}")
        return
    if shutil.which("go") is None:
        raise BootstrapError("deploy: Go is needed to build kustomize and `go` is not on PATH")
    binary = tools.kustomize_binary()
    if not binary.exists():
        say("deploy", f"building kustomize {tools.KUSTOMIZE_VERSION} from the Go module proxy")
        env = {**go_environment(), "GOBIN": str(binary.parent)}
        module = f"{tools.KUSTOMIZE}@{tools.KUSTOMIZE_VERSION}"
        run(["go", "install", module], "deploy", paths.CACHE / "logs" / "kustomize-build.log", env=env)
    if not tools.compose_schema().exists():
        go_module_file(
            tools.COMPOSE_GO, tools.COMPOSE_GO_VERSION, tools.COMPOSE_SCHEMA_IN_MODULE, tools.compose_schema()
        )
    if not tools.kubernetes_openapi().exists():
        go_module_file(
            tools.KUBERNETES, tools.KUBERNETES_VERSION, tools.KUBERNETES_OPENAPI_IN_MODULE, tools.kubernetes_openapi()
        )


def main() -> int:
    steps = (debian_packages, virtualenv, protos, jars, jaeger, deploy_tools)
    try:
        for step in steps:
            step()
    except BootstrapError as error:
        print(f"bootstrap: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
