"""Which saga states each kill drill aims at, and the riders each needs to make those
states happen: MATCH_BACKOFF and COMPENSATING only exist with riders stranded where no
driver is (who cancel while their ride waits)."""

from __future__ import annotations

from drills.engine import STATES, STEPS
from drills.scenarios import KillAtSteps, all_scenarios, at_step


def _steps(name: str) -> tuple[str, ...]:
    nemesis = all_scenarios()[name].nemesis
    assert isinstance(nemesis, KillAtSteps)
    return nemesis.steps


def test_every_live_saga_state_is_a_step_to_kill_at() -> None:
    assert STATES == (
        "PENDING",
        "AUTHORIZING",
        "MATCHING",
        "MATCH_BACKOFF",
        "OFFERED",
        "ACCEPTED",
        "CAPTURING",
        "COMPENSATING",
    )
    assert set(STEPS) < set(STATES)


def test_kill_trip_covers_every_state_and_the_others_the_states_that_matter_to_them() -> None:
    assert _steps("kill-trip") == STATES
    assert _steps("kill-driver") == ("AUTHORIZING", "MATCHING", "MATCH_BACKOFF", "OFFERED", "ACCEPTED", "CAPTURING")
    assert _steps("kill-payment") == ("AUTHORIZING", "MATCHING", "OFFERED", "ACCEPTED", "CAPTURING", "COMPENSATING")
    assert _steps("kill-rider") == ("PENDING", *STEPS)
    assert _steps("kill-psp") == STEPS


def test_only_drills_aiming_at_backoff_or_compensation_strand_riders() -> None:
    scenarios = all_scenarios()
    assert {name for name, s in scenarios.items() if s.mix.stranded_every} >= {
        "kill-trip",
        "kill-driver",
        "kill-payment",
    }
    assert not scenarios["kill-rider"].mix.stranded_every
    assert not scenarios["kill-psp"].mix.stranded_every
    assert scenarios["riders-give-up"].mix.gives_up
    assert not any(s.mix.gives_up for name, s in scenarios.items() if name != "riders-give-up")


def test_kill_service_at_state_names_any_live_state_in_any_case() -> None:
    pending = at_step("kill-trip-at-pending")
    assert pending is not None and isinstance(pending.nemesis, KillAtSteps)
    assert (pending.nemesis.target, pending.nemesis.steps, pending.mix.stranded_every) == ("trip", ("PENDING",), 0)
    backoff = at_step("kill-driver-at-match-backoff")
    assert backoff is not None and isinstance(backoff.nemesis, KillAtSteps)
    assert backoff.nemesis.steps == ("MATCH_BACKOFF",) and backoff.mix.stranded_every
    compensating = at_step("kill-payment-at-COMPENSATING")
    assert compensating is not None and compensating.mix.stranded_every
    assert at_step("kill-payment-at-CAPTURING") is not None
    for wrong in ("kill-trip-at-COMPLETED", "kill-nobody-at-PENDING", "kill-trip", "restart-trip-at-PENDING"):
        assert at_step(wrong) is None, wrong
