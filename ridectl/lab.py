"""`ridectl lab list | run ID`: the course's items (ridectl/labs.py) and the one command that
shows each; and the labs that need no stack, `lab election` (bully and ring,
simulated), `lab detectors` (failure detectors on a simulated fleet) and `lab gossip`
(SWIM membership on a simulated lossy network)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ridectl.labs import BY_ID, CATALOGUE

WIDTH = 100
ELECTION_SIZES = (5, 10, 50)


def list_(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps([lab.as_json() for lab in CATALOGUE]))
        return 0
    id_width = max(len(lab.id) for lab in CATALOGUE)
    state_width = max(len(lab.state) for lab in CATALOGUE)
    print(f"{'id':<{id_width}}  {'kind':<8}  {'state':<{state_width}}  lab")
    for lab in CATALOGUE:
        line = f"{lab.id:<{id_width}}  {lab.kind:<8}  {lab.state:<{state_width}}  {lab.command or '-'}"
        print(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
    runnable = sum(lab.state == "runnable" for lab in CATALOGUE)
    print(f"{runnable} of {len(CATALOGUE)} runnable; `ridectl lab run ID` runs one; docs/course.md explains each")
    return 0


def run(args: argparse.Namespace) -> int:
    lab = BY_ID.get(args.id)
    if lab is None:
        print(f"ridectl: error: unknown lab {args.id!r}; valid ids: {', '.join(BY_ID)}", file=sys.stderr)
        return 2
    if lab.state != "runnable":
        print(f"ridectl: error: lab {lab.id} is {lab.state}: {lab.why}", file=sys.stderr)
        return 2
    print(f"ridectl: lab {lab.id}: {lab.command}", file=sys.stderr, flush=True)
    _, *argv = shlex.split(lab.command)  # "ridectl" itself: the same interpreter runs it
    return subprocess.run([sys.executable, "-m", "ridectl.cli", *argv], check=False).returncode


def election(args: argparse.Namespace) -> int:
    """Messages sent by bully and ring with n members, ids 1..n, and a split network."""
    from services.exhibits.election_sim import ElectionResult, bully, ring

    runs: dict[str, Callable[[int], ElectionResult]] = {
        "bully, nobody crashed, id 1 starts (worst)": lambda n: bully(range(1, n + 1), [], 1),
        "bully, coordinator n crashed, id 1 notices": lambda n: bully(range(1, n + 1), [n], 1),
        "bully, coordinator n crashed, id n-1 notices": lambda n: bully(range(1, n + 1), [n], n - 1),
        "ring, coordinator n crashed, any id notices": lambda n: ring(range(1, n + 1), [n], 1),
    }
    width = max(len(name) for name in runs)
    print(f"{'messages sent':<{width}}" + "".join(f"  {f'n = {n}':>7}" for n in ELECTION_SIZES))
    for name, election_run in runs.items():
        print(f"{name:<{width}}" + "".join(f"  {election_run(n).total:>7}" for n in ELECTION_SIZES))
    # A partition looks to each side like the other side crashed.
    low = bully(range(1, 6), [4, 5], 1).leader
    high = bully(range(1, 6), [1, 2, 3], 4).leader
    print(f"split {{1,2,3}} | {{4,5}}: bully elects {low} on one side and {high} on the other: two leaders")
    return 0


def detectors(args: argparse.Namespace) -> int:
    from bench import detectors as bench

    return bench.main(["--seed", str(args.seed), *(["--json"] if args.json else [])])


def gossip(args: argparse.Namespace) -> int:
    from bench import gossip as bench

    return bench.main(["--seeds", str(args.seeds), "--sizes", args.sizes, *(["--json"] if args.json else [])])


def add_commands(commands: Any) -> None:
    lab = commands.add_parser("lab", help="the course's labs: one command per topic").add_subparsers(
        dest="lab", required=True
    )
    listed = lab.add_parser("list", help="every topic, problem and question, its lab and whether it runs")
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(handler=list_)
    one = lab.add_parser("run", help="run one item's lab; exit 2 if it has none yet")
    one.add_argument("id", help="an id from `ridectl lab list`")
    one.set_defaults(handler=run)
    lab.add_parser("election", help="bully and ring election, simulated: messages sent").set_defaults(handler=election)
    detected = lab.add_parser("detectors", help="fixed timeout and phi accrual on a simulated fleet (no stack)")
    detected.add_argument("--seed", type=int, default=1)
    detected.add_argument("--json", action="store_true")
    detected.set_defaults(handler=detectors)
    gossiped = lab.add_parser(
        "gossip", help="SWIM membership on a simulated lossy network: detection, spread (no stack)"
    )
    gossiped.add_argument("--seeds", type=int, default=2, help="runs per setting")
    gossiped.add_argument("--sizes", default="10,30,100,300", help="group sizes, comma-separated (up to 1000)")
    gossiped.add_argument("--json", action="store_true")
    gossiped.set_defaults(handler=gossip)
