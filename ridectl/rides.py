"""`ridectl rider ...` and `ridectl ride ...`: the rider's side of the system, through
rider's public address (its sidecar)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from google.protobuf.json_format import MessageToDict

from ridesaga.trip.v1 import trip_pb2
from services.blocks.retry import Backoff
from services.rider.client import Place, Retry, RiderClient, parse_latlng

# A command retries a blip for a few seconds, then says what failed.
RETRY = Retry(give_up_after_seconds=5.0, backoff=Backoff(base_seconds=0.1, cap_seconds=1.0))


class UsageError(Exception):
    """A bad command-line value; the message is the one line the user sees."""


def rider_client() -> RiderClient:
    return RiderClient(retry=RETRY)


def place(flag: str, text: str) -> Place:
    try:
        return parse_latlng(flag, text)
    except ValueError as error:
        raise UsageError(str(error)) from None


def ride_dict(ride: trip_pb2.Ride) -> dict[str, Any]:
    return {
        "ride_id": ride.ride_id,
        "rider_id": ride.rider_id,
        "state": ride.state,
        "outcome": ride.outcome,
        "terminal": ride.terminal,
        "fare_cents": ride.fare_cents,
        "driver_id": ride.driver_id,
        "hold_id": ride.hold_id,
        "trace_id": ride.trace_id,
        "steps": [
            MessageToDict(s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for s in ride.steps
        ],
    }


def print_ride(ride: trip_pb2.Ride, as_json: bool) -> None:
    if as_json:
        print(json.dumps(ride_dict(ride)))
        return
    print(f"ride {ride.ride_id}  {ride.state}  {ride.outcome}  fare {ride.fare_cents / 100:.2f}  trace {ride.trace_id}")
    start = ride.steps[0].at_ms if ride.steps else 0
    previous = start
    for step in ride.steps:
        print(
            f"  +{(step.at_ms - start) / 1000:7.3f}s  {step.step:<18} {step.status:<13} {step.detail:<40}"
            f" hlc {step.hlc}  ({step.at_ms - previous} ms)"
        )
        previous = step.at_ms


def rider_create(args: argparse.Namespace) -> int:
    with rider_client() as client:
        rider = client.create_rider(args.name, args.card or "")
    if args.json:
        print(json.dumps({"rider_id": rider.rider_id, "name": rider.name, "payment_method": rider.payment_method}))
    else:
        print(rider.rider_id)
    return 0


def ride_request(args: argparse.Namespace) -> int:
    pickup, dropoff = place("--pickup", args.pickup), place("--dropoff", args.dropoff)
    with rider_client() as client:
        booked = client.book(args.rider, pickup, dropoff, key=args.idempotency_key)
    if args.json:
        print(json.dumps({"ride_id": booked.ride_id, "state": booked.state, "idempotency_key": booked.key}))
    else:
        print(f"{booked.ride_id} {booked.state}")
    return 0


def ride_show(args: argparse.Namespace) -> int:
    with rider_client() as client:
        ride = client.get_ride(args.ride_id)
    print_ride(ride, args.json)
    return 0


def ride_wait(args: argparse.Namespace) -> int:
    with rider_client() as client:
        followed = client.follow(args.ride_id, args.timeout)
        if followed.ride is None or not followed.terminal:
            current = followed.ride or client.get_ride(args.ride_id)
            fail(args.json, "DEADLINE_EXCEEDED", f"ride {args.ride_id} is still {current.state} after {args.timeout}s")
            return 1
    print_ride(followed.ride, args.json)
    return 0


def ride_watch(args: argparse.Namespace) -> int:
    with rider_client() as client:
        for ride in client.watch(args.ride_id):
            if args.json:
                print(json.dumps({"ride_id": ride.ride_id, "state": ride.state, "terminal": ride.terminal}), flush=True)
            else:
                print(f"{time.strftime('%H:%M:%S')} {ride.state} {ride.outcome}", flush=True)
    return 0


def ride_cancel(args: argparse.Namespace) -> int:
    with rider_client() as client:
        ride = client.cancel(args.ride_id)
    if args.json:
        print(json.dumps({"ride_id": ride.ride_id, "state": ride.state}))
    else:
        print(f"{ride.ride_id} cancellation requested (was {ride.state})")
    return 0


def fail(as_json: bool, code: str, message: str) -> None:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"ridectl: error: {code}: {message}", file=sys.stderr)


def add_commands(commands: Any) -> None:
    rider = commands.add_parser("rider", help="riders").add_subparsers(dest="rider_command", required=True)
    create = rider.add_parser("create", help="create a rider")
    create.add_argument("--name", required=True)
    create.add_argument("--card", help="payment method token: tok_visa (default), tok_mastercard, tok_chargeDeclined")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=rider_create)

    ride = commands.add_parser("ride", help="rides").add_subparsers(dest="ride_command", required=True)
    request = ride.add_parser("request", help="request a ride (prints its id and state)")
    request.add_argument("--rider", required=True)
    request.add_argument("--pickup", required=True, metavar="LAT,LNG")
    request.add_argument("--dropoff", required=True, metavar="LAT,LNG")
    request.add_argument("--idempotency-key", help="replaying a key returns the first answer (default: a new key)")
    request.add_argument("--json", action="store_true")
    request.set_defaults(handler=ride_request)
    for name, handler, text in (
        ("show", ride_show, "show a ride and its saga timeline"),
        ("watch", ride_watch, "stream the ride's states until it ends"),
        ("cancel", ride_cancel, "cancel a ride before pickup"),
    ):
        sub = ride.add_parser(name, help=text)
        sub.add_argument("ride_id")
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(handler=handler)
    wait = ride.add_parser("wait", help="wait until the ride is COMPLETED or CANCELLED")
    wait.add_argument("ride_id")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    wait.add_argument("--json", action="store_true")
    wait.set_defaults(handler=ride_wait)
