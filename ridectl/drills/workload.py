"""The drill's clients: open-loop arrivals of riders, each booking one ride through
rider's public address and following it until it ends, recording every operation in
the history. A client does what a real app does: a call that fails in an unknown way is
retried with the same idempotency key, and a broken watch is resumed."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable

import grpc

from ridectl.drills.history import FAIL, INFO, INVOKE, OK, History
from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.shared.topology import service

CALL_TIMEOUT_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.5
REQUEST_GIVE_UP_SECONDS = 90.0  # a client stops retrying its request after this
FOLLOW_GIVE_UP_SECONDS = 180.0  # and stops following its ride after this
# Codes that say the call certainly had no effect; anything else is unknown (info).
DEFINITE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
# Definite failures a client retries (with the same key): rate limiting and a busy key.
RETRY_ANYWAY = {grpc.StatusCode.RESOURCE_EXHAUSTED}
PICKUP = common_pb2.LatLng(lat=37.7793, lng=-122.4193)
DROPOFF = common_pb2.LatLng(lat=37.8080, lng=-122.4177)


def _error(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {"code": error.code().name, "details": (error.details() or "")[:200]}


class Clients:
    def __init__(self, history: History, started: float) -> None:
        self.history = history
        self.started = started

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _create_rider(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int) -> str:
        give_up = self.now() + REQUEST_GIVE_UP_SECONDS
        while True:
            self.history.add(self.now(), process, INVOKE, "create-rider")
            try:
                reply = await stub.CreateRider(
                    rider_pb2.CreateRiderRequest(name=f"drill rider {process}"), timeout=CALL_TIMEOUT_SECONDS
                )
                self.history.add(self.now(), process, OK, "create-rider", value={"rider_id": reply.rider_id})
                return str(reply.rider_id)
            except grpc.aio.AioRpcError as error:
                kind = FAIL if error.code() in DEFINITE else INFO
                self.history.add(self.now(), process, kind, "create-rider", value=_error(error))
                if (kind == FAIL and error.code() not in RETRY_ANYWAY) or self.now() > give_up:
                    return ""
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _request(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int, rider_id: str) -> str:
        key = str(uuid.uuid4())
        trace_id = secrets.token_hex(16)
        request = rider_pb2.RequestRideRequest(rider_id=rider_id, pickup=PICKUP, dropoff=DROPOFF, idempotency_key=key)
        give_up = self.now() + REQUEST_GIVE_UP_SECONDS
        while True:
            # Each attempt is a new span of the same trace, so the ride's trace id is known
            # before the answer (and a retry lands in the same trace).
            metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
            self.history.add(self.now(), process, INVOKE, "request", key=key, trace_id=trace_id)
            try:
                reply = await stub.RequestRide(request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
                self.history.add(
                    self.now(),
                    process,
                    OK,
                    "request",
                    key=key,
                    ride_id=reply.ride_id,
                    trace_id=trace_id,
                    value={"state": reply.state},
                )
                return str(reply.ride_id)
            except grpc.aio.AioRpcError as error:
                kind = FAIL if error.code() in DEFINITE else INFO
                self.history.add(self.now(), process, kind, "request", key=key, trace_id=trace_id, value=_error(error))
                if (kind == FAIL and error.code() not in RETRY_ANYWAY) or self.now() > give_up:
                    return ""
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def _follow(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int, ride_id: str) -> None:
        self.history.add(self.now(), process, INVOKE, "read", ride_id=ride_id)
        give_up = self.now() + FOLLOW_GIVE_UP_SECONDS
        last: dict[str, str] = {}
        while self.now() < give_up:
            try:
                stream = stub.WatchRide(rider_pb2.RideRef(ride_id=ride_id), timeout=give_up - self.now())
                async for ride in stream:
                    last = {"state": ride.state, "outcome": ride.outcome}
                    if ride.terminal:
                        self.history.add(self.now(), process, OK, "read", ride_id=ride_id, value=last)
                        return
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self.history.add(self.now(), process, FAIL, "read", ride_id=ride_id, value=_error(error))
                    return
            await asyncio.sleep(RETRY_PAUSE_SECONDS)  # the watch broke (a crash on the way): resume it
        self.history.add(self.now(), process, INFO, "read", ride_id=ride_id, value={"last": last, "gave_up": True})

    async def ride(self, stub: rider_pb2_grpc.RiderServiceAsyncStub, process: int) -> None:
        rider_id = await self._create_rider(stub, process)
        if not rider_id:
            return
        ride_id = await self._request(stub, process, rider_id)
        if ride_id:
            await self._follow(stub, process, ride_id)

    async def run(self, rate: float, keep_going: Callable[[int], bool]) -> None:
        """Starts a client every 1/rate seconds while keep_going(started so far) holds,
        whatever the earlier ones are waiting for; then waits for all of them."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service('rider').ingress_port}") as channel:
            stub = rider_pb2_grpc.RiderServiceStub(channel)
            tasks: list[asyncio.Task[None]] = []
            next_at = self.now()
            while keep_going(len(tasks)):
                tasks.append(asyncio.create_task(self.ride(stub, len(tasks))))
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - self.now()))
            await asyncio.gather(*tasks)
