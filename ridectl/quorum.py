"""`ridectl quorum put|get|status|hints`: the driver cluster's replicated store of
positions (services/driver/quorum_store.py), through any replica's sidecar; `status`
also shows the stack's two consensus quorums, KRaft and ZooKeeper
(deploy/local/consensus.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from deploy.local import consensus, paths, stack
from deploy.local.errors import StackError
from ridectl import rides
from ridectl.members import replica_addresses
from ridesaga.driver.v1 import driver_pb2, driver_pb2_grpc

TIMEOUT_SECONDS = 5.0


def _via(args: argparse.Namespace) -> str:
    """The coordinating replica: --via N (1-based) or an address; the first by default."""
    replicas = replica_addresses()
    choice = str(args.via or "1")
    if choice.isdigit():
        if not 1 <= int(choice) <= len(replicas):
            raise rides.UsageError(f"--via must be a replica number in 1..{len(replicas)}, got {choice}")
        return replicas[int(choice) - 1]
    if choice not in replicas:
        raise rides.UsageError(f"--via {choice!r} is not a driver replica; they are {', '.join(replicas)}")
    return choice


def _stub(address: str) -> tuple[grpc.Channel, driver_pb2_grpc.DriverServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, driver_pb2_grpc.DriverServiceStub(channel)


def _dict(message: Any) -> dict[str, Any]:
    found: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return found


def _version(v: dict[str, Any]) -> str:
    clock = ",".join(f"{e['replica']}:{e['counter']}" for e in v.get("clock", []))
    return f"{v.get('value', '')!r}  clock [{clock}]  hlc {v.get('stamp_ms', 0)}.{v.get('stamp_logical', 0)}"


def put(args: argparse.Namespace) -> int:
    channel, stub = _stub(_via(args))
    with channel:
        reply = stub.QuorumPut(
            driver_pb2.QuorumPutRequest(key=args.key, value=args.value, w=args.w, strict=args.strict),
            timeout=TIMEOUT_SECONDS,
        )
    found = _dict(reply)
    if args.json:
        print(json.dumps(found))
        return 0
    print(f"wrote {args.key!r} via {reply.coordinator}: {reply.acks} acknowledgements, W={reply.w}")
    print(f"  version {_version(found['version'])}")
    for p in reply.placements:
        print(f"  copy on {p.member}" + (f" (a hint for {p.hint_for})" if p.hint_for else ""))
    return 0


def get(args: argparse.Namespace) -> int:
    channel, stub = _stub(_via(args))
    with channel:
        reply = stub.QuorumGet(
            driver_pb2.QuorumGetRequest(key=args.key, r=args.r, strict=args.strict), timeout=TIMEOUT_SECONDS
        )
    found = _dict(reply)
    if args.json:
        print(json.dumps(found))
        return 0 if reply.found else 1
    print(f"read {args.key!r} via {reply.coordinator}: {reply.answers} answers, R={reply.r}")
    if not reply.found:
        print("  not found")
        return 1
    print(f"  resolved {_version(found['resolved'])}")
    if len(reply.siblings) > 1:
        for sibling in found["siblings"]:
            print(f"  sibling  {_version(sibling)}")
    if reply.repaired:
        print(f"  read repair sent to {', '.join(reply.repaired)}")
    return 0


def _statuses() -> list[dict[str, Any]]:
    found = []
    for address in replica_addresses():
        channel, stub = _stub(address)
        with channel:
            try:
                found.append(_dict(stub.QuorumStatus(driver_pb2.QuorumStatusRequest(), timeout=TIMEOUT_SECONDS)))
            except grpc.RpcError as error:
                found.append({"me": address, "error": f"{error.code().name}: {error.details()}"})
    return found


def _consensus() -> dict[str, Any]:
    running = stack.load(paths.RUN) or stack.Stack()
    try:
        kraft: dict[str, Any] = consensus.kraft(running.kafka_controllers).as_json()
    except StackError as error:
        kraft = {"error": str(error)}
    return {"kraft": kraft, "zookeeper": consensus.zookeeper_json(consensus.zookeeper(running.zookeeper_nodes))}


def _kraft_line(kraft: dict[str, Any]) -> str:
    if "error" in kraft:
        return f"KRaft (Kafka's controllers, Raft): no answer ({kraft['error']})"
    voters = ", ".join(f"{v['node_id']} {v['role'].lower()} lag {v['lag']}" for v in kraft["voters"])
    observers = ", ".join(f"{v['node_id']} lag {v['lag']}" for v in kraft["observers"])
    return (
        f"KRaft (Kafka's controllers, Raft): leader {kraft['leader_id']}, epoch {kraft['leader_epoch']},"
        f" high watermark {kraft['high_watermark']}; voters {voters}; observers (brokers) {observers or 'none'}"
    )


def _zookeeper_line(zk: dict[str, Any]) -> str:
    nodes = ", ".join(f"{n['name']} {n['mode']} zxid {n['zxid']}" for n in zk["nodes"])
    leader = zk["leader"] or "none"
    return f"ZooKeeper (ZAB): leader {leader}, epoch {zk['epoch']}; {nodes}"


def status(args: argparse.Namespace) -> int:
    found = _statuses()
    agreed = _consensus()
    healthy = not any("error" in s for s in found) and "error" not in agreed["kraft"] and agreed["zookeeper"]["leader"]
    if args.json:
        print(json.dumps({"replicas": found, **agreed}))
        return 0 if healthy else 1
    print("the driver cluster's positions (Dynamo-style quorums):")
    for s in found:
        if "error" in s:
            print(f"  replica {s['me']}: no answer ({s['error']})")
            continue
        mode = "sloppy" if s.get("sloppy") else "strict"
        print(
            f"  replica {s['me']}: N={s.get('n', 0)} R={s.get('r', 0)} W={s.get('w', 0)} {mode};"
            f" {s.get('keys', 0)} keys, {len(s.get('hints', []))} hints held, {s.get('hints_handed_back', 0)} handed"
            f" back, {s.get('read_repairs', 0)} read repairs, {s.get('anti_entropy_repairs', 0)} anti-entropy repairs"
        )
    print(_kraft_line(agreed["kraft"]))
    print(_zookeeper_line(agreed["zookeeper"]))
    return 0 if healthy else 1


def hints(args: argparse.Namespace) -> int:
    found = _statuses()
    held = [{"holder": s["me"], **h} for s in found for h in s.get("hints", [])]
    if args.json:
        print(json.dumps({"hints": held, "errors": [s for s in found if "error" in s]}))
        return 0
    if not held:
        print("no hints held: every write is on its home replicas")
    for h in held:
        print(f"{h['holder']} holds {h['key']!r} for {h['for_member']}")
    return 0


def drill(args: argparse.Namespace) -> int:
    from drills import quorum as experiment

    faults = experiment.FAULTS if args.fault == "all" else (args.fault,)
    try:
        results = [experiment.run(f, args.strict, args.before, args.during, args.after, args.seed) for f in faults]
    except experiment.QuorumDrillError as error:
        raise rides.UsageError(str(error)) from None
    if args.report:
        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        for result in results:
            lines = "".join(json.dumps(op) + "\n" for op in result["history"])
            (folder / f"history-{result['fault']}.jsonl").write_text(lines)
        (folder / "quorum.md").write_text(experiment.table(results) + "\n")
    if args.plot:
        experiment.plot(results, Path(args.plot))
    brief = [{k: v for k, v in r.items() if k != "history"} for r in results]
    print(json.dumps({"results": brief}) if args.json else experiment.table(results))
    return 0


def cassandra(args: argparse.Namespace) -> int:
    from drills import quorum_cassandra

    result = quorum_cassandra.run(args.before, args.during, args.after, args.seed)
    if args.report:
        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history-cassandra.jsonl").write_text("".join(json.dumps(op) + "\n" for op in result["history"]))
        (folder / "cassandra.md").write_text(quorum_cassandra.table(result) + "\n")
    brief = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps(brief) if args.json else quorum_cassandra.table(result))
    return 0


def add_commands(commands: Any) -> None:
    quorum = commands.add_parser("quorum", help="the driver cluster's replicated positions (N, R, W quorums)")
    sub = quorum.add_subparsers(dest="quorum_command", required=True)

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        parser.set_defaults(handler=handler)
        return parser

    writing = command("put", put, "write KEY=VALUE through one replica, waiting for W acknowledgements")
    writing.add_argument("key")
    writing.add_argument("value")
    writing.add_argument("--w", type=int, default=0, help="acknowledgements to wait for (default: the stack's)")
    reading = command("get", get, "read KEY through one replica, waiting for R answers (exit 1 if not found)")
    reading.add_argument("key")
    reading.add_argument("--r", type=int, default=0, help="answers to wait for (default: the stack's)")
    for each in (writing, reading):
        each.add_argument("--strict", action="store_true", help="no stand-ins for down replicas (strict quorum)")
        each.add_argument("--via", help="the coordinating replica: its number (1..) or address (default 1)")
    command("status", status, "each replica's settings, keys and counters; the KRaft and ZooKeeper quorums")
    command("hints", hints, "the hints each replica holds for a down one")
    experiment = command("drill", drill, "stale reads and refusals per (R, W) while one replica is stopped or cut off")
    experiment.add_argument("--fault", choices=("stop", "partition", "all"), default="all")
    experiment.add_argument("--strict", action="store_true", help="strict quorums (no stand-ins)")
    experiment.add_argument("--plot", metavar="PNG", help="also draw stale and refused reads per (N, R, W)")
    real = command("cassandra", cassandra, "the same workload and stop on a real three-node Cassandra (no stack)")
    for each in (experiment, real):
        each.add_argument("--before", type=float, default=4.0, help="seconds of workload before the fault")
        each.add_argument("--during", type=float, default=20.0, help="seconds the fault lasts")
        each.add_argument("--after", type=float, default=14.0, help="seconds of workload after the heal")
        each.add_argument("--report", metavar="DIR", help="also write the table and every operation there")
        each.add_argument("--seed", type=int, default=1, help="chooses the target and the workload's picks")
