"""The sidecars' fault-injection filter, switched on and off at runtime."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from deploy.envoy.faults import set_faults
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from tests.support import sidecar_channel


@pytest.fixture
def psp() -> Iterator[psp_pb2_grpc.PspServiceStub]:
    with sidecar_channel("psp") as channel:
        yield psp_pb2_grpc.PspServiceStub(channel)
    set_faults("psp")  # always off again


def test_aborts_can_be_switched_on_and_off_without_a_restart(psp: psp_pb2_grpc.PspServiceStub) -> None:
    assert psp.GetFaults(psp_pb2.GetFaultsRequest(), timeout=5) is not None
    set_faults("psp", abort_percent=100)
    with pytest.raises(grpc.RpcError) as error:
        psp.GetFaults(psp_pb2.GetFaultsRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    set_faults("psp")
    assert psp.GetFaults(psp_pb2.GetFaultsRequest(), timeout=5) is not None


def test_delays_hold_calls_back(psp: psp_pb2_grpc.PspServiceStub) -> None:
    set_faults("psp", delay_percent=100, delay_ms=3000)
    with pytest.raises(grpc.RpcError) as error:
        psp.GetFaults(psp_pb2.GetFaultsRequest(), timeout=1)  # the delay outlasts the deadline
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_bad_fault_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"abort percent must be in 0\.\.100"):
        set_faults("psp", abort_percent=101)
