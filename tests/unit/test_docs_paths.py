"""The docs cite only files of this repository, and every file they cite exists: after a
file moves, a stale path in docs/ fails here instead of sending a learner nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
TOP = ("services/", "deploy/", "drills/", "bench/", "ridectl/", "loadtests/", "scripts/", "tests/", "protos/", "docs/")
# A path in backticks or a Markdown link: `services/blocks/fencing.py`, (docs/saga.md).
CITED = re.compile(r"[`(]((?:" + "|".join(re.escape(t) for t in TOP) + r")[\w./<>*-]*?)[`):#\s]")


def _cited(doc: Path) -> list[str]:
    found = []
    for path in CITED.findall(doc.read_text()):
        path = path.rstrip(".,")
        if any(mark in path for mark in ("<", "*", "NNN")):
            continue  # a pattern (services/<name>/schema/NNN_*.sql), not one file
        found.append(path)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_cited_path_exists(doc: Path) -> None:
    base = doc.parent if doc.parent.name == "docs" else REPO
    missing = [p for p in _cited(doc) if not (REPO / p).exists() and not (base / p).exists()]
    assert missing == [], f"{doc.name} cites files that are not in the repository"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_no_doc_cites_the_product_spec(doc: Path) -> None:
    assert not re.search(r"\bSPEC\b", doc.read_text()), f"{doc.name}: cite docs/properties.md or a file here instead"


def test_the_pattern_finds_a_missing_file() -> None:
    assert CITED.findall("see `services/blocks/nothing.py` and (docs/saga.md)") == [
        "services/blocks/nothing.py",
        "docs/saga.md",
    ]


TEST_CITED = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_cited_test_exists(doc: Path) -> None:
    missing = [
        f"{path}::{name}"
        for path, name in TEST_CITED.findall(doc.read_text())
        if not (REPO / path).exists() or f"def {name}(" not in (REPO / path).read_text()
    ]
    assert missing == [], f"{doc.name} cites tests that are not there"
