"""`ridectl mesh fault SERVICE ...`: switch the fault-injection filter of a service's
sidecar at runtime (deploy/envoy/faults.py)."""

from __future__ import annotations

import argparse
import json

from deploy.envoy.faults import set_faults


def faults(args: argparse.Namespace) -> int:
    values = set_faults(args.service, args.abort_percent, args.delay_percent, args.delay_ms)
    if args.json:
        print(json.dumps({"sidecar": f"{args.service}-envoy", **values}))
    else:
        print(f"{args.service}-envoy: abort {args.abort_percent} %, delay {args.delay_ms} ms at {args.delay_percent} %")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="whose sidecar: rider, trip, driver, payment or psp")
    parser.add_argument("--abort-percent", type=int, default=0, help="calls failing with UNAVAILABLE (0-100)")
    parser.add_argument("--delay-percent", type=int, default=0, help="calls delayed (0-100)")
    parser.add_argument("--delay-ms", type=int, default=1000, help="the delay (default 1000)")
    parser.add_argument("--json", action="store_true")
