"""ridectl: the command line of ridesaga. Read commands take --json; every error is one
line on stderr (and, with --json, {"error": {"code", "message"}} on stdout) and a
non-zero exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from deploy.local import environment, lifecycle, paths
from deploy.local.errors import StackError
from ridectl import explain, lab, rides
from services.rider.client import DOWNTOWN, WHARF


def _breakers() -> dict[str, object]:
    """The circuit breakers' states, as the services last published them to Redis."""
    import redis

    from services.blocks.downstream import BREAKERS_KEY
    from services.runtime.topology import INFRA

    client = redis.Redis(
        host="127.0.0.1", port=INFRA.redis, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
    )
    try:
        raw = client.hgetall(BREAKERS_KEY)
    except redis.RedisError:
        return {}
    finally:
        client.close()
    return {str(k): json.loads(v) for k, v in raw.items()}


def _members(args: argparse.Namespace) -> int:
    from ridectl.members import members

    return members(args)


def _raft_sim(args: argparse.Namespace) -> int:
    from ridectl.raft import raft_sim

    return raft_sim(args)


def _status(args: argparse.Namespace) -> int:
    found = lifecycle.status()
    total_kb = sum(s.rss_kb for s in found)
    breakers = _breakers()
    if args.json:
        print(json.dumps({"components": [vars(s) for s in found], "total_rss_kb": total_kb, "breakers": breakers}))
    else:
        width = max(len(s.name) for s in found)
        for s in found:
            memory = f"{s.rss_kb / 1024:.0f} MiB" if s.rss_kb else "-"
            print(f"{s.name:<{width}}  {s.state:<4}  pid {s.pid or '-':<7}  port {s.port or '-':<6}  rss {memory}")
        print(f"{'total':<{width}}  resident memory {total_kb / 1024:.0f} MiB")
        for name, state in breakers.items():
            print(f"breaker {name}: {state['state']} ({state['failures_in_window']}/{state['calls_in_window']} failed)")  # type: ignore[index]
    return 0 if all(s.state == "up" for s in found) else 1


def _up(args: argparse.Namespace) -> int:
    """The stack modes asked for in the environment (ZK_NODES=3, REPLICAS=payment=2, ...)
    become the stack value that `up` starts and keeps."""
    lifecycle.up(paths.RUN, environment.requested_stack(previous=lifecycle.running(paths.RUN)))
    return 0


def _down(args: argparse.Namespace) -> int:
    lifecycle.down()
    return 0


def _probe(args: argparse.Namespace) -> int:
    from ridectl.probe import mesh_probe

    result = mesh_probe()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"trace {result['trace_id']}")
        for name, ready in result["reached"].items():
            print(f"  {name:<8} {'ready' if ready else 'NOT READY'}")
    return 0 if result["complete"] else 1


def _check(args: argparse.Namespace) -> int:
    from drills import checker

    result = checker.report(checker.collect())
    if args.json:
        print(json.dumps(result))
    else:
        in_flight = ", ".join(f"{n} {what}" for what, n in result["in_flight"].items())
        print(f"{result['rides']} rides: {'valid' if result['valid'] else 'INVALID'} (in flight: {in_flight})")
        for kind, label in (("violations", "violation"), ("stuck", "stuck")):
            for name, found in result[kind].items():
                print(f"  {label}: {name}: {len(found)} e.g. {found[:3]}")
    return 0 if result["valid"] else 1


def _demo(args: argparse.Namespace) -> int:
    """Books one ride, waits for it, and prints its saga timeline and trace id."""
    pickup, dropoff = DOWNTOWN, WHARF
    with rides.rider_client() as client:
        rider = client.create_rider("Demo Rider")
        booked = client.book(rider.rider_id, pickup, dropoff)
        print(f"ridectl: booked ride {booked.ride_id} for rider {rider.rider_id}; waiting for it", file=sys.stderr)
        followed = client.follow(booked.ride_id, args.timeout)
    if followed.ride is None or not followed.terminal:
        rides.fail(False, "DEADLINE_EXCEEDED", f"ride {booked.ride_id} did not finish within {args.timeout}s")
        return 1
    rides.print_ride(followed.ride, args.json)
    if not args.json:
        print(f"the whole story of this ride, from the system's own records: ridectl explain {booked.ride_id}")
    return 0 if followed.ride.state == "COMPLETED" else 1


def _trace(args: argparse.Namespace) -> int:
    from ridectl import trace

    with rides.rider_client() as client:
        ride = client.get_ride(args.ride_id)
    try:
        spans = trace.fetch(ride.trace_id)
    except trace.TraceNotFound as error:
        rides.fail(args.json, "NOT_FOUND", str(error))
        return 1
    if args.html:
        with open(args.html, "w", encoding="utf-8") as out:
            out.write(trace.page(ride.trace_id, ride.ride_id, spans))
        print(f"ridectl: wrote {len(spans)} spans to {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(trace.as_json(ride.trace_id, spans)))
    elif not args.html:
        print(trace.waterfall(ride.trace_id, spans))
        link = trace.ui_link(ride.trace_id)
        print(f"Jaeger UI: {link}" if link else "Jaeger UI: not built into this Jaeger; use --html FILE for a page")
    return 0


def _bench_tracing(args: argparse.Namespace) -> int:
    from bench import tracing as bench

    results = bench.tracing(args.rides, args.concurrency, args.rounds)
    if args.json:
        print(json.dumps({"benchmark": "tracing", "results": results}))
    else:
        print("| setting | rides | completed | rides/s | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['label']} | {r['rides']} | {r['completed']} | {r['throughput_rides_per_s']} |"
                f" {r['latency_ms_p50']} | {r['latency_ms_p95']} | {r['latency_ms_p99']} |"
            )
    return 0


def _numbers(flag: str, text: str, kind: type[float] | type[int]) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise rides.UsageError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise rides.UsageError(f"{flag} must list positive numbers, got {text!r}")
    return values


def _bench_all(args: argparse.Namespace) -> int:
    from bench import suite as benchmarks

    rates = _numbers("--rates", args.rates, float)
    concurrencies = _numbers("--concurrency", args.concurrency, int)
    if args.seconds <= 0:
        raise rides.UsageError(f"--seconds must be positive, got {args.seconds}")
    result = benchmarks.main(rates, args.seconds, concurrencies, Path(args.out))
    print(json.dumps(result) if args.json else Path(args.out).read_text())
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ridectl", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    def simple(name: str, handler: object, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        sub.set_defaults(handler=handler)
        return sub

    simple("status", _status, "show every component of the local stack (exit 1 unless all are up)")
    simple("up", _up, "start the local stack and wait until it is healthy", json_flag=False)
    simple("down", _down, "stop the local stack and every process it started", json_flag=False)
    simple("probe", _probe, "call rider through its sidecar and follow the mesh to psp")
    simple("members", _members, "each driver replica's view of the cluster (SWIM); exit 1 unless all agree")
    simple("check", _check, "check the correctness properties over the live system (exit 1 if violated)")
    demo = simple("demo", _demo, "book one ride, wait for it, print its saga timeline and trace id")
    demo.add_argument("--timeout", type=float, default=90.0)
    traced = simple("trace", _trace, "print a ride's trace from Jaeger as a waterfall (critical path marked)")
    traced.add_argument("ride_id")
    traced.add_argument("--html", metavar="FILE", help="also write a self-contained timeline page")
    benches = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    tracing_bench = benches.add_parser("tracing", help="saga latency and throughput with tracing on and off")
    tracing_bench.add_argument("--rides", type=int, default=200, help="rides per setting and round")
    tracing_bench.add_argument("--concurrency", type=int, default=20)
    tracing_bench.add_argument("--rounds", type=int, default=2, help="on/off rounds, alternated")
    tracing_bench.add_argument("--json", action="store_true")
    tracing_bench.set_defaults(handler=_bench_tracing)
    every = benches.add_parser("all", help="rides at fixed rates and at saturation, primitives, memory, warm start")
    every.add_argument("--rates", default="5,10,15,20", help="offered rides per second, open loop (default 5,10,15,20)")
    every.add_argument("--seconds", type=float, default=20.0, help="per measurement (default 20)")
    every.add_argument("--concurrency", default="16,32", help="closed-loop riders (default 16,32)")
    every.add_argument("--out", default=str(paths.REPO / "docs" / "benchmarks.md"))
    every.add_argument("--json", action="store_true")
    every.set_defaults(handler=_bench_all)
    from ridectl import drill as drill_cli

    drill_cli.add_commands(commands)
    from ridectl import mesh

    mesh_commands = commands.add_parser("mesh", help="the Envoy sidecars").add_subparsers(dest="mesh", required=True)
    fault = mesh_commands.add_parser("fault", help="inject aborts or delays at a sidecar, at runtime (0 turns off)")
    mesh.add_arguments(fault)
    fault.set_defaults(handler=mesh.faults)
    rides.add_commands(commands)
    from ridectl import quorum

    quorum.add_commands(commands)
    lab.add_commands(commands)
    explain.add_commands(commands)
    from ridectl import psp_cmd

    psp = commands.add_parser("psp", help="the simulated card processor").add_subparsers(
        dest="psp_command", required=True
    )
    faults = psp.add_parser("faults", help="show or set the psp's fault knobs")
    psp_cmd.add_arguments(faults)
    faults.set_defaults(handler=psp_cmd.faults)
    raft = commands.add_parser("raft", help="Raft consensus, simulated").add_subparsers(
        dest="raft_command", required=True
    )
    raft_sim = raft.add_parser("sim", help="a seeded Raft run, step by step, checked for Raft's safety properties")
    raft_sim.add_argument("--nodes", default="5", help="3..9 (default 5)")
    raft_sim.add_argument("--seed", default="1", help="the same seed, the same run (default 1)")
    raft_sim.add_argument("--scenario", default="crash-leader", help="crash-leader (default), partition or random")
    raft_sim.add_argument("--ticks", help="how long the random scenario runs (default 300)")
    raft_sim.add_argument("--rules", default="correct", help="correct (default), broken-vote or broken-commit")
    raft_sim.add_argument("--json", action="store_true", help="print JSON for scripts")
    raft_sim.set_defaults(handler=_raft_sim)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    # SIGPIPE stays ignored (Python's default): with SIG_DFL any write to a socket whose
    # peer went away, such as Kafka's during a drill's restart, would kill ridectl.
    args = parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        code: int = args.handler(args)
    except StackError as error:
        rides.fail(as_json, "STACK", str(error))
        return 1
    except rides.UsageError as error:
        rides.fail(as_json, "INVALID_ARGUMENT", str(error))
        return 2
    except grpc.RpcError as error:
        rides.fail(as_json, error.code().name, error.details() or "")
        return 1
    except KeyboardInterrupt:
        print("ridectl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ridectl status | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
