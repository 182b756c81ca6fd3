"""`ridectl raft sim`: one seeded run of the Raft simulation (services/exhibits/raft_sim.py),
step by step, then who led which term, each node's commit index, the commands lost and the
verdict of the safety checkers (services/exhibits/raft_checks.py). Exit 1 when a property was
violated, or when the command sent after the heal did not commit in time."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ridectl.rides import UsageError
from services.exhibits import raft_checks
from services.exhibits.raft_sim import LIVENESS_BOUND, PROBE, RULES, Simulation, crash_leader, partition, random_run

SCENARIOS = ("crash-leader", "partition", "random")
DEFAULT_TICKS = "300"


def _integer(flag: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{flag} must be an integer in {low}..{high}, got {text!r}")
    return value


def _run(args: argparse.Namespace) -> Simulation:
    nodes = _integer("--nodes", args.nodes, 3, 9)
    seed = _integer("--seed", args.seed, 0, 2**32 - 1)
    if args.scenario not in SCENARIOS:
        raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}, got {args.scenario!r}")
    if args.rules not in RULES:
        raise UsageError(f"--rules must be one of {', '.join(RULES)}, got {args.rules!r}")
    if args.ticks is not None and args.scenario != "random":
        raise UsageError(f"--ticks is for --scenario random only, not {args.scenario}")
    rules = RULES[args.rules]
    if args.scenario == "random":
        return random_run(nodes, seed, rules, _integer("--ticks", args.ticks or DEFAULT_TICKS, 1, 100_000))
    return (crash_leader if args.scenario == "crash-leader" else partition)(nodes, seed, rules)


def summary(sim: Simulation) -> dict[str, Any]:
    history = sim.history
    nodes = list(sim.nodes.values())
    kept = {entry.command for node in nodes for entry in node.log}
    accepted = dict.fromkeys(entry.command for _, log in history.logs for entry in log)
    violations = raft_checks.check(history)
    found: dict[str, Any] = {
        "leaders": [{"term": e.term, "node": e.node, "tick": e.tick} for e in history.elections],
        "commit_index": {f"n{node.id}": node.commit_index for node in nodes},
        "down": [f"n{node.id}" for node in nodes if not node.up],
        "logs": {f"n{node.id}": [[entry.term, entry.command] for entry in node.log] for node in nodes},
        "lost": [command for command in accepted if command not in kept],
        "messages": {"sent": history.sent, "dropped": history.dropped},
        "violations": violations,
        "safe": not any(violations.values()),
    }
    if PROBE in history.submitted:
        delay = raft_checks.commit_delay(history, PROBE)
        held = delay is not None and delay <= LIVENESS_BOUND and sim.leader() is not None
        found["liveness"] = {"command": PROBE, "committed_after_ticks": delay, "bound": LIVENESS_BOUND, "held": held}
    return found


def _print(found: dict[str, Any]) -> None:
    for event in found["events"]:
        print(event)
    print()
    print("leaders: " + ", ".join(f"term {e['term']} n{e['node']} (t={e['tick']})" for e in found["leaders"]))
    indexes = [f"{n} {i}" + (" (down)" if n in found["down"] else "") for n, i in found["commit_index"].items()]
    print("commit index: " + ", ".join(indexes))
    lost = found["lost"]
    print(f"lost: {', '.join(lost)} (accepted by a leader, in no log at the end)" if lost else "lost: nothing")
    print(f"messages: {found['messages']['sent']} sent, {found['messages']['dropped']} dropped")
    if live := found.get("liveness"):
        after = live["committed_after_ticks"]
        took = "never committed" if after is None else f"committed {after} ticks after it was sent"
        print(f"liveness: {live['command']} {took} (bound {live['bound']}): {'held' if live['held'] else 'MISSED'}")
    if found["safe"]:
        print("safety: every property held: " + ", ".join(found["violations"]))
        return
    print("safety: VIOLATED")
    for name, where in found["violations"].items():
        more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
        print(f"  {name}: {where[0] + more if where else 'held'}")


def raft_sim(args: argparse.Namespace) -> int:
    sim = _run(args)
    found = {"scenario": args.scenario, "nodes": len(sim.nodes), "seed": int(args.seed), "rules": sim.rules.name}
    found |= {"events": sim.history.events, **summary(sim)}
    if args.json:
        print(json.dumps(found))
    else:
        _print(found)
    live = found.get("liveness", {"held": True})["held"]
    return 0 if found["safe"] and live else 1
