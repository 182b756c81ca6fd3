"""The drill, bench and load commands refuse bad arguments with one clear line and exit 2,
before touching the stack."""

from __future__ import annotations

import pytest

from loadtests import run as load
from ridectl.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["drill", "run", "kill-everything"], "unknown scenario 'kill-everything'"),
        (["drill", "run", "kill-trip-at-LUNCH"], "unknown scenario 'kill-trip-at-LUNCH'"),
        (["drill", "run", "kill-trip", "--rides", "0"], "--rides must be >= 1"),
        (["drill", "run", "kill-trip", "--rate", "-1"], "--rate in (0, 50]"),
        (["drill", "suite", "--only", "kill-trip,nope"], "unknown scenario 'nope'"),
        (["drill", "run", "psp-outage", "--k8s", "ridesaga"], "--k8s runs kill-SERVICE"),
        (["bench", "all", "--rates", "5,x"], "--rates must be comma-separated numbers"),
        (["bench", "all", "--concurrency", "0"], "--concurrency must list positive numbers"),
        (["bench", "all", "--seconds", "0"], "--seconds must be positive"),
    ],
)
def test_bad_arguments_are_refused_clearly(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and says in err, err


def test_load_refuses_no_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        load.main(["--users", "0"])
    assert exit_.value.code == 2
    assert "--users must be >= 1" in capsys.readouterr().err
