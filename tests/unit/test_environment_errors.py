"""The common failures of a fresh machine each end in one line that says what is missing:
no Java, no PostgreSQL binaries, a failed Jaeger build. (A busy port is in
tests/lifecycle, against the real stack's ports.)"""

from __future__ import annotations

import glob
import importlib.util
import os
import stat
from pathlib import Path
from types import ModuleType

import pytest

from deploy.local import components, paths
from deploy.local.errors import StackError


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap", paths.REPO / "deploy" / "local" / "bootstrap.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"^no Java found .*Kafka and ZooKeeper need Java 17\+$"):
        components.java()


def test_no_postgresql_binaries_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(StackError, match=r"^no PostgreSQL binaries under /usr/lib/postgresql/\*/bin"):
        components.postgres_bindir()


def test_a_failed_jaeger_build_is_one_line_naming_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = _bootstrap()
    tools = tmp_path / "bin"
    tools.mkdir()
    go = tools / "go"
    go.write_text("#!/bin/sh\necho 'go: module lookup disabled' >&2\nexit 1\n")
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    for step in ("debian_packages", "virtualenv", "protos", "jars", "deploy_tools"):
        monkeypatch.setattr(bootstrap, step, lambda: None)

    assert bootstrap.main() == 1

    err = capsys.readouterr().err.strip().splitlines()
    log = tmp_path / "cache" / "logs" / "jaeger-build.log"
    assert err == [
        f"bootstrap: error: the Jaeger build failed: jaeger: `go build -trimpath ...` failed with exit code 1;"
        f" its output is in {log}"
    ]
    assert "module lookup disabled" in log.read_text()
    assert not paths.jaeger_binary().exists(), "a failed build leaves no binary behind"
