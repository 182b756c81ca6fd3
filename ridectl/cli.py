"""ridectl: the command line of the local stack. Read commands take --json; every
error is one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import grpc

from ridectl.stack import lifecycle
from ridectl.stack.errors import StackError


def _status(args: argparse.Namespace) -> int:
    found = lifecycle.status()
    total_kb = sum(s.rss_kb for s in found)
    if args.json:
        print(json.dumps({"components": [vars(s) for s in found], "total_rss_kb": total_kb}))
    else:
        width = max(len(s.name) for s in found)
        for s in found:
            memory = f"{s.rss_kb / 1024:.0f} MiB" if s.rss_kb else "-"
            print(f"{s.name:<{width}}  {s.state:<4}  pid {s.pid or '-':<7}  port {s.port or '-':<6}  rss {memory}")
        print(f"{'total':<{width}}  resident memory {total_kb / 1024:.0f} MiB")
    return 0 if all(s.state == "up" for s in found) else 1


def _up(args: argparse.Namespace) -> int:
    lifecycle.up()
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ridectl", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str, json_flag: bool) -> None:
        sub = commands.add_parser(name, help=help_text)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        sub.set_defaults(handler=handler)
        handlers[name] = handler

    command("status", _status, "show every component of the local stack (exit 1 unless all are up)", True)
    command("up", _up, "start the local stack and wait until it is healthy", False)
    command("down", _down, "stop the local stack and every process it started", False)
    command("probe", _probe, "call rider through its sidecar and follow the mesh to psp", True)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except StackError as error:
        print(f"ridectl: error: {error}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"ridectl: error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ridectl: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
