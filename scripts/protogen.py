"""Generates the Python gRPC stubs from protos/ into build/gen (not kept in git).

`--check` regenerates into a scratch directory and fails if the stubs in use differ,
so stale stubs can never pass the tests."""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DEFAULT_OUT = ROOT / "build" / "gen"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *(str(p) for p in proto_files()),
    ]
    # protoc finds the mypy plugins (protoc-gen-mypy) on its PATH: the ones beside this
    # interpreter first, handed to protoc alone rather than set for this whole process.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if subprocess.run(args, env={**os.environ, "PATH": path}, check=False).returncode != 0:
        raise SystemExit("protogen: protoc failed (see the error above)")
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        cursor = package
        while cursor != out:
            (cursor / "__init__.py").touch()
            cursor = cursor.parent


def differences(expected: Path, actual: Path) -> list[str]:
    found = []
    for path in sorted(expected.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(expected)
        other = actual / rel
        if not other.exists():
            found.append(f"missing {rel}")
        elif not filecmp.cmp(path, other, shallow=False):
            found.append(f"stale {rel}")
    for path in sorted(actual.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not (expected / path.relative_to(actual)).exists():
            found.append(f"extra {path.relative_to(actual)}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="fail if the stubs in --out are stale")
    args = parser.parse_args()
    if not args.check:
        generate(args.out)
        print(f"protogen: {len(proto_files())} protos -> {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        problems = differences(Path(scratch), args.out)
    for problem in problems:
        print(f"protogen: {problem} (run `make protos`)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
