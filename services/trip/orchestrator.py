"""The orchestrator's handler: one saga message in, the saga's commands out.

Runs inside the transactional loop (services/blocks/exactly_once.py). Each message's transition,
its saga-log entries and its inbox record (`processed_messages`, services/blocks/inbox.py)
commit in one PostgreSQL transaction; the commands it produced are stored with that
record, so a message redelivered after an aborted Kafka transaction re-emits exactly the
same commands."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import StatusCode
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ridesaga.common.v1 import common_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.inbox import Inbox
from services.runtime.messages import Outgoing, Poison, envelope, observe, outgoing
from services.runtime.topology import Topic
from services.trip import adapters, saga

INBOX = Inbox("processed_messages")


def to_event(env: saga_pb2.Envelope) -> saga.Event:
    kind = env.WhichOneof("body")
    match kind:
        case "ride_requested":
            return saga.RideRequested()
        case "cancel_requested":
            return saga.CancelRequested(env.cancel_requested.reason or "rider_cancelled")
        case "step_timed_out":
            return saga.StepTimedOut(env.step_timed_out.step, env.step_timed_out.attempt)
        case "payment_authorized":
            m = env.payment_authorized
            return saga.PaymentAuthorized(m.hold_id, m.amount_cents)
        case "payment_declined":
            return saga.PaymentDeclined(env.payment_declined.reason)
        case "payment_voided":
            return saga.PaymentVoided(env.payment_voided.hold_id)
        case "payment_captured":
            m2 = env.payment_captured
            return saga.PaymentCaptured(m2.hold_id, m2.amount_cents)
        case "driver_offered":
            o = env.driver_offered
            return saga.DriverOffered(o.driver_id, o.fence, o.attempt)
        case "driver_accepted":
            a = env.driver_accepted
            return saga.DriverAccepted(a.driver_id, a.fence, a.attempt)
        case "driver_declined":
            d = env.driver_declined
            return saga.DriverDeclined(d.driver_id, d.fence, d.attempt, d.reason)
        case "no_driver_available":
            return saga.NoDriverAvailable(env.no_driver_available.attempt)
        case "driver_released":
            return saga.DriverReleased(env.driver_released.driver_id)
        case "trip_completed":
            return saga.TripCompleted(env.trip_completed.driver_id, env.trip_completed.fence)
    raise Poison(f"the orchestrator does not handle messages of type {kind!r}")


def _latlng(point: saga.Point) -> common_pb2.LatLng:
    return common_pb2.LatLng(lat=point.lat, lng=point.lng)


def to_envelope(ride: saga.Ride, command: saga.Command, clock: HybridLogicalClock, cause: str) -> Outgoing:
    mid = saga.message_id(ride.ride_id, command)
    match command:
        case saga.AuthorizePayment(amount_cents=amount):
            body = saga_pb2.AuthorizePayment(
                rider_id=ride.rider_id, amount_cents=amount, payment_method=ride.payment_method
            )
            return outgoing(Topic.PAYMENT_COMMANDS, envelope(clock, mid, ride.ride_id, cause, authorize_payment=body))
        case saga.VoidPayment(hold_id=hold):
            body2 = saga_pb2.VoidPayment(hold_id=hold)
            return outgoing(Topic.PAYMENT_COMMANDS, envelope(clock, mid, ride.ride_id, cause, void_payment=body2))
        case saga.CapturePayment(hold_id=hold, amount_cents=amount, driver_id=driver):
            body3 = saga_pb2.CapturePayment(hold_id=hold, amount_cents=amount, driver_id=driver)
            return outgoing(Topic.PAYMENT_COMMANDS, envelope(clock, mid, ride.ride_id, cause, capture_payment=body3))
        case saga.ReserveDriver(attempt=attempt, excluded=excluded):
            body4 = saga_pb2.ReserveDriver(
                pickup=_latlng(ride.pickup), dropoff=_latlng(ride.dropoff), attempt=attempt, exclude_driver_ids=excluded
            )
            return outgoing(Topic.DRIVER_COMMANDS, envelope(clock, mid, ride.ride_id, cause, reserve_driver=body4))
        case saga.ReleaseDriver(driver_id=driver, fence=fence):
            body5 = saga_pb2.ReleaseDriver(driver_id=driver, fence=fence)
            return outgoing(Topic.DRIVER_COMMANDS, envelope(clock, mid, ride.ride_id, cause, release_driver=body5))
        case saga.ConfirmDriver(driver_id=driver, fence=fence):
            body6 = saga_pb2.ConfirmDriver(driver_id=driver, fence=fence)
            return outgoing(Topic.DRIVER_COMMANDS, envelope(clock, mid, ride.ride_id, cause, confirm_driver=body6))


class Orchestrator:
    def __init__(self, pool: AsyncConnectionPool, clock: HybridLogicalClock) -> None:
        self.pool = pool
        self.clock = clock

    async def handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        observe(self.clock, env)
        event = to_event(env)
        return await INBOX.once(self.pool, env.message_id, lambda conn: self._transition(conn, env, event))

    async def _transition(
        self, conn: AsyncConnection[Any], env: saga_pb2.Envelope, event: saga.Event
    ) -> list[Outgoing]:
        """The ride's transition on one message, in the inbox's transaction."""
        ride = await adapters.load_ride(conn, env.ride_id, lock=True)
        if ride is None:
            raise Poison(f"unknown ride {env.ride_id}")
        epochs = None
        if isinstance(event, saga.StepTimedOut):
            epochs = (env.step_timed_out.epoch, await adapters.sweeper_epoch_in_force(conn))
            if epochs[0] < epochs[1]:
                # Sent by a sweeper that is no longer the leader: fenced, no effect. Its
                # id carries its epoch, so the new leader's timeout is not a duplicate.
                trace.get_current_span().add_event("fenced: stale sweeper epoch", {"epoch": epochs[0]})
                return []
        decision = saga.decide(ride, event, int(time.time() * 1000))
        span = trace.get_current_span()
        if decision.ride.state != ride.state:
            span.add_event("saga.transition", {"from": ride.state.value, "to": decision.ride.state.value})
            if decision.ride.state in (saga.State.COMPENSATING, saga.State.CANCELLED):
                span.set_status(StatusCode.ERROR, f"ride {decision.ride.outcome}: {type(event).__name__}")
            await adapters.save_ride(conn, decision.ride)
        elif decision.ride != ride:
            await adapters.save_ride(conn, decision.ride)
        await adapters.append_log(
            conn,
            ride.ride_id,
            [(entry, str(self.clock.now())) for entry in decision.log],
            env.message_id,
            env.hlc,
            env.sent_wall_ms,
            epochs,
        )
        return [to_envelope(decision.ride, c, self.clock, env.message_id) for c in decision.commands]
