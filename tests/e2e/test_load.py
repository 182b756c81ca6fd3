"""A short `make load`: Locust headless against the stack ends with zero failures, its
CSV files and HTML report, and a valid `ridectl check`."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from deploy.local import paths


def test_a_short_headless_load_has_no_failures_and_a_valid_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(paths.VENV / "bin" / "python"),
            "-m",
            "loadtests.run",
            "--users",
            "8",
            "--spawn-rate",
            "8",
            "--duration",
            "15s",
            "--results",
            str(tmp_path),
        ],
        cwd=paths.REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["check"]["valid"] is True
    with (tmp_path / "load_stats.csv").open() as f:
        rows = {f"{r['Type']} {r['Name']}": r for r in csv.DictReader(f)}
    assert int(rows["grpc /ridesaga.rider.v1.RiderService/RequestRide"]["Request Count"]) > 0
    rides = [r for name, r in rows.items() if name.startswith("ride ")]
    assert sum(int(r["Request Count"]) for r in rides) > 0, rows.keys()
    assert (tmp_path / "report.html").stat().st_size > 0
