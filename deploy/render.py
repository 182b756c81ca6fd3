"""Renders deploy/envoy (every sidecar config, once), deploy/compose and deploy/k8s from the
topology.

`--check` renders into memory and fails, naming each file, if the committed files differ
or a file no longer rendered is left behind, so stale manifests can never pass the tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.compose import render as compose
from deploy.envoy import render as envoy
from deploy.k8s import render as k8s

ROOT = Path(__file__).resolve().parents[1]
# Written by hand, kept beside the rendered files.
HAND_WRITTEN = {"deploy/k8s/drill.sh"}


def rendered() -> dict[str, str]:
    """Every generated file, by path relative to the repository."""
    files = {f"deploy/envoy/{name}": text for name, text in envoy.rendered_files().items()}
    files.update({f"deploy/compose/{name}": text for name, text in compose.render().items()})
    files.update({f"deploy/k8s/{name}": text for name, text in k8s.render().items()})
    return files


def on_disk(root: Path) -> set[str]:
    found = set()
    for folder in ("deploy/envoy", "deploy/compose", "deploy/k8s"):
        found |= {str(p.relative_to(root)) for p in (root / folder).rglob("*.yaml")}
    return found - HAND_WRITTEN


def check(root: Path) -> list[str]:
    """One line per file that differs from what the topology renders."""
    files = rendered()
    problems = [f"stale {path}" for path, text in files.items() if _read(root / path) != text]
    problems += [f"not rendered any more: {path}" for path in sorted(on_disk(root) - set(files))]
    return problems


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def write(root: Path) -> int:
    for path in on_disk(root):
        (root / path).unlink()
    files = rendered()
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed files are stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    args = parser.parse_args()
    if args.check:
        problems = check(args.root)
        for line in problems:
            print(f"render_deploy: {line}; run python -m deploy.render", file=sys.stderr)
        return 1 if problems else 0
    print(f"render_deploy: {write(args.root)} files under deploy/envoy, deploy/compose and deploy/k8s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
