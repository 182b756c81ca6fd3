"""The quorum store's settings (services/runtime/config.py quorum): N,R,W and sloppy from
the environment, 3,2,2 and sloppy by default; a malformed or impossible setting is refused
naming the variable."""

from __future__ import annotations

import pytest

from services.blocks.quorum import Quorum
from services.runtime import config


def test_the_default_is_an_overlapping_sloppy_quorum_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIDESAGA_QUORUM", raising=False)
    monkeypatch.delenv("RIDESAGA_QUORUM_SLOPPY", raising=False)
    assert config.quorum() == (Quorum(3, 2, 2), True)
    monkeypatch.setenv("RIDESAGA_QUORUM", "3,1,1")
    monkeypatch.setenv("RIDESAGA_QUORUM_SLOPPY", "0")
    assert config.quorum() == (Quorum(3, 1, 1), False)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RIDESAGA_QUORUM", "3,2", r"RIDESAGA_QUORUM must be N,R,W \(three integers\), got '3,2'"),
        ("RIDESAGA_QUORUM", "3,x,2", "RIDESAGA_QUORUM must be N,R,W"),
        ("RIDESAGA_QUORUM", "3,4,2", r"RIDESAGA_QUORUM '3,4,2': R must be in 1..N=3, got 4"),
        ("RIDESAGA_QUORUM_SLOPPY", "yes", "RIDESAGA_QUORUM_SLOPPY must be 0 or 1, got 'yes'"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        config.quorum()
