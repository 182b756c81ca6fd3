"""`make load`: Locust headless against the running stack, then the invariant checker.

Runs Locust with the given users, spawn rate and duration, writing its CSV files and HTML
report to the results folder; waits until every ride has ended (Locust's users stop
booking at the end, the sagas they started run on); then runs `ridectl check`. Exit 0
only with zero Locust failures and a valid check. `--ui` serves Locust's web UI instead."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from deploy.local import paths
from drills import checker

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SETTLE_SECONDS = 180.0


def _totals(stats: Path) -> dict[str, dict[str, float]]:
    with stats.open() as f:
        return {
            f"{row['Type']} {row['Name']}": {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "p50_ms": float(row["50%"] or 0),
                "p95_ms": float(row["95%"] or 0),
                "p99_ms": float(row["99%"] or 0),
                "rps": round(float(row["Requests/s"] or 0), 2),
            }
            for row in csv.DictReader(f)
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make load", description=__doc__)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=5)
    parser.add_argument("--duration", default="60s", help="Locust's --run-time, e.g. 60s, 5m")
    parser.add_argument("--results", default=str(paths.REPO / "results" / "load"))
    parser.add_argument("--ui", action="store_true", help="serve Locust's web UI on 127.0.0.1:8089 instead")
    args = parser.parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0:
        parser.error(f"--users must be >= 1 and --spawn-rate > 0, got {args.users} and {args.spawn_rate}")
    locust = [str(paths.VENV / "bin" / "locust"), "-f", str(LOCUSTFILE)]
    if args.ui:
        print("load: Locust's web UI on http://127.0.0.1:8089 (Ctrl-C to stop)", flush=True)
        return subprocess.call([*locust, "--web-host", "127.0.0.1", "--web-port", "8089"])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    command = [
        *locust,
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.duration,
        "--stop-timeout",
        "30s",
        "--csv",
        str(results / "load"),
        "--html",
        str(results / "report.html"),
        "--only-summary",
    ]
    print(f"load: {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command)
    totals = _totals(results / "load_stats.csv")
    failures = int(totals.get(" Aggregated", {}).get("failures", 0))
    deadline = time.monotonic() + SETTLE_SECONDS
    while checker.live_rides() and time.monotonic() < deadline:
        time.sleep(0.5)  # the sagas Locust started run on after its users stopped
    verdict = checker.report(checker.collect())
    summary = {"locust_exit_code": code, "failures": failures, "check": verdict, "stats": totals}
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"failures": failures, "check_valid": verdict["valid"], "rides": verdict["rides"]}))
    print(f"load: CSV files, report.html and summary.json in {results}", file=sys.stderr)
    return 0 if failures == 0 and verdict["valid"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
