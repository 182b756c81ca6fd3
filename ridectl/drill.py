"""`ridectl drill list | run SCENARIO | suite`: the fault drills from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from deploy.local import paths
from drills import Verdict
from ridectl.rides import UsageError

DEFAULT_REPORTS = paths.REPO / "reports" / "drills"


def _scenario(name: str) -> Any:
    from drills import scenarios

    found = scenarios.all_scenarios().get(name) or scenarios.at_step(name)
    if found is None:
        raise UsageError(
            f"unknown scenario {name!r}; `ridectl drill list` shows them (also kill-SERVICE-at-STATE,"
            f" e.g. kill-payment-at-CAPTURING or kill-trip-at-PENDING)"
        )
    return found


def _one(name: str, args: argparse.Namespace, reports: Path) -> Verdict:
    from drills import engine, report

    scenario = _scenario(name)
    if (args.rides is not None and args.rides < 1) or (args.rate is not None and not 0 < args.rate <= 50):
        raise UsageError(f"--rides must be >= 1 and --rate in (0, 50], got {args.rides} and {args.rate}")
    print(
        f"ridectl: drill {name}: {args.rides or scenario.rides} rides or more at {args.rate or scenario.rate}/s",
        file=sys.stderr,
        flush=True,
    )
    if args.k8s and not (name.startswith("kill-") and "envoy" not in name):
        raise UsageError(f"--k8s runs kill-SERVICE and kill-SERVICE-at-STATE scenarios (pod deletion), not {name!r}")
    verdict = engine.run(scenario, rides=args.rides, rate=args.rate, seed=args.seed, k8s_namespace=args.k8s or "")
    return report.write(verdict, reports / name)


def _print(verdict: Verdict) -> None:
    print(f"{verdict['scenario']}: {'VALID' if verdict['valid'] else 'INVALID'}")
    for key in ("rides", "completed", "cancelled", "unfinished", "recovery_seconds", "seconds", "violations", "stuck"):
        print(f"  {key}: {verdict[key]}")
    for fault in verdict["faults"]:
        step = fault["detail"].get("step", "")
        print(f"  fault: {fault['name']} {fault['target']} {step} {fault['start']}..{fault['end']} s")
    print(f"  report: {verdict['report']['dir']}/summary.md")


def list_(args: argparse.Namespace) -> int:
    from drills import scenarios

    found = scenarios.all_scenarios()
    width = max(len(name) for name in found)
    for name, scenario in found.items():
        print(f"{name:<{width}} {' '.join(scenario.doc.split())}")
    print(
        f"{'kill-SERVICE-at-STATE':<{width}} SIGKILL one service when a ride is in one saga state,"
        " e.g. kill-trip-at-ACCEPTED, kill-trip-at-PENDING, kill-payment-at-COMPENSATING"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    verdict = _one(args.scenario, args, Path(args.report) if args.report else DEFAULT_REPORTS)
    if args.json:
        print(json.dumps(verdict))
    else:
        _print(verdict)
    return 0 if verdict["valid"] else 1


def _why(verdict: dict[str, Any]) -> str:
    """One line saying what made a drill invalid: each violated or stuck property with its
    count and first example, the failed checks, and where the outcomes stood."""
    parts = [
        f"{kind} {name}: {len(found)} e.g. {str(found[:1])[:160]}"
        for kind in ("violations", "stuck")
        for name, found in verdict.get(kind, {}).items()
    ]
    parts += [f"check failed: {name}" for name, ok in verdict.get("checks", {}).items() if not ok]
    parts.append(f"outcomes {verdict.get('outcomes')}, in flight {verdict.get('in_flight')}")
    return "; ".join(parts)


def suite(args: argparse.Namespace) -> int:
    """Every scenario of `drill list`, one after another; an index of their verdicts."""
    from drills import scenarios

    names = list(scenarios.all_scenarios())
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        for name in names:
            _scenario(name)
    reports = Path(args.report) if args.report else DEFAULT_REPORTS
    started = time.monotonic()
    verdicts = []
    for name in names:
        verdict = _one(name, args, reports)
        verdicts.append(verdict)
        print(
            f"ridectl: drill {name}: {'VALID' if verdict['valid'] else 'INVALID'} ({verdict['rides']} rides,"
            f" {verdict['seconds']} s, recovery {verdict['recovery_seconds']} s)",
            file=sys.stderr,
            flush=True,
        )
        if not verdict["valid"]:
            print(f"ridectl: drill {name}: why: {_why(verdict)}", file=sys.stderr, flush=True)
    total = round(time.monotonic() - started, 1)
    rows = [
        f"| [{v['scenario']}]({v['scenario']}/summary.md) | {'valid' if v['valid'] else '**INVALID**'} | {v['rides']}"
        f" | {v['completed']} | {v['cancelled']} | {v['recovery_seconds']} | {v['seconds']} |"
        for v in verdicts
    ]
    index = [
        f"# Drill suite: {sum(v['valid'] for v in verdicts)} of {len(verdicts)} valid, {total} s",
        "",
        "| scenario | verdict | rides | completed | cancelled | recovery (s) | seconds |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "index.md").write_text("\n".join(index))
    summary = {"valid": all(v["valid"] for v in verdicts), "seconds": total, "verdicts": verdicts}
    (reports / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(index))
    return 0 if summary["valid"] else 1


def add_commands(commands: Any) -> None:
    drill = commands.add_parser("drill", help="fault drills with a verdict").add_subparsers(dest="drill", required=True)
    drill.add_parser("list", help="the drills and what each proves").set_defaults(handler=list_)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--rides", type=int, help="at least this many rides (default: the scenario's, 30)")
        sub.add_argument("--rate", type=float, help="rides requested per second (default 3)")
        sub.add_argument("--seed", type=int, default=1, help="seed for the random choices (steps, schedule)")
        sub.add_argument("--report", metavar="DIR", help=f"where reports go (default {DEFAULT_REPORTS})")
        sub.add_argument("--json", action="store_true")
        sub.add_argument(
            "--k8s",
            metavar="NAMESPACE",
            help="delete pods in this Kubernetes namespace instead of killing local processes"
            " (rider, psp and PostgreSQL port-forwarded to the local ports; see deploy/k8s/drill.sh)",
        )

    one = drill.add_parser("run", help="run one drill; exit 1 if its verdict is invalid")
    one.add_argument("scenario")
    common(one)
    one.set_defaults(handler=run)
    every = drill.add_parser("suite", help="run every drill (make drill); exit 1 if any verdict is invalid")
    every.add_argument("--only", metavar="A,B", help="just these scenarios")
    common(every)
    every.set_defaults(handler=suite)
