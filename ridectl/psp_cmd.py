"""`ridectl psp faults`: shows or changes the psp's fault knobs through its sidecar.
Flags change only what they name; --clear starts from no faults at all."""

from __future__ import annotations

import argparse
import json
from typing import Any

import grpc

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.runtime.topology import service

CALL_TIMEOUT_SECONDS = 5.0
# The Faults message's fields, which are also the destinations of the flags that set them.
FIELDS = ("decline_rate", "error_rate", "latency_ms", "outage")
GET = psp_pb2.GetFaultsRequest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decline-rate", type=float, metavar="R", help="share of approvable cards declined, 0..1")
    parser.add_argument("--error-rate", type=float, metavar="R", help="share of money calls failing UNAVAILABLE, 0..1")
    parser.add_argument("--latency-ms", type=int, metavar="N", help="delay added to every money call")
    parser.add_argument(
        "--outage", action=argparse.BooleanOptionalAction, help="fail every money call with UNAVAILABLE"
    )
    parser.add_argument("--clear", action="store_true", help="reset every fault before applying the flags given")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def faults(args: argparse.Namespace) -> int:
    changes = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    with grpc.insecure_channel(f"127.0.0.1:{service('psp').ingress_port}") as channel:
        psp = psp_pb2_grpc.PspServiceStub(channel)
        current = psp_pb2.Faults() if args.clear else psp.GetFaults(GET, timeout=CALL_TIMEOUT_SECONDS)
        if args.clear or changes:
            wanted = psp_pb2.Faults(**{**_fields(current), **changes})
            current = psp.SetFaults(wanted, timeout=CALL_TIMEOUT_SECONDS)
    shown = _fields(current)
    if args.json:
        print(json.dumps(shown))
    else:
        for name, value in shown.items():
            print(f"{name:<12}  {str(value).lower()}")
    return 0


def _fields(current: psp_pb2.Faults) -> dict[str, Any]:
    return {name: getattr(current, name) for name in FIELDS}
