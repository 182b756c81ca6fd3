"""The saga's compensations: which command undoes which step, and in which order
(Garcia-Molina and Salem, "Sagas", 1987; docs/saga.md). Pure: no I/O.

Property (property 8, docs/properties.md): a ride's compensations undo exactly the steps
it did, last step first (the reserved driver is released, then the payment hold is
voided), one at a time, the next only once the previous one is answered; and no ride past
the pivot (the driver's acceptance) is ever given one: from there the saga only moves
forward. The state machine (saga.py) decides when to compensate; this module, what."""

from __future__ import annotations

from services.trip import saga

RELEASE = "release_driver"  # undoes match_driver: ReleaseDriver, fenced by the reservation's token
VOID = "void_payment"  # undoes authorize_payment: VoidPayment of the hold


def plan(ride: saga.Ride, *, driver_held: bool) -> tuple[str, ...]:
    """The compensations the ride needs, in the order they run: the reverse of the order
    its steps ran (authorize, then match)."""
    if ride.state not in saga.BEFORE_PIVOT:
        raise ValueError(f"ride {ride.ride_id} is {ride.state.value}, past the pivot: it is never compensated")
    done = ((VOID, bool(ride.hold_id)), (RELEASE, driver_held))
    return tuple(step for step, needed in reversed(done) if needed)


def command(ride: saga.Ride) -> saga.Command:
    """The command of the ride's next compensation; a timeout re-sends the same one."""
    if ride.compensations[0] == RELEASE:
        return saga.ReleaseDriver(ride.driver_id, ride.fence)
    return saga.VoidPayment(ride.hold_id)


def answered(ride: saga.Ride, event: saga.Event) -> str | None:
    """The compensation this reply completes, if it answers the one the ride awaits; a
    reply to any other (late, duplicate, out of order) completes nothing."""
    awaited = ride.compensations[:1]
    match event:
        case saga.DriverReleased(driver_id=driver) if awaited == (RELEASE,) and driver == ride.driver_id:
            return RELEASE
        case saga.PaymentVoided() if awaited == (VOID,):
            return VOID
    return None
