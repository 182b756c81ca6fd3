"""Errors the domain raises, and their one mapping onto gRPC status codes (bad input is
INVALID_ARGUMENT naming the field, an unknown id NOT_FOUND, a rate limit
RESOURCE_EXHAUSTED with retry-after): the domain never imports grpc, the servicers never
build messages by hand. A store that is down (PostgreSQL, Redis) becomes UNAVAILABLE,
which callers may retry."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import psycopg
import redis


class DomainError(Exception):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(DomainError):
    """A request field is missing or malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")


class FailedPrecondition(DomainError):
    """The request is well formed but the resource's state forbids it, e.g. capturing a voided charge."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent request conflicts with this one, e.g. one with the same idempotency key is in flight."""

    code = grpc.StatusCode.ABORTED


class RetryLater(DomainError):
    """Refused for now; the wait is sent in `retry-after-ms` trailing metadata."""

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_ms = max(1, round(retry_after_seconds * 1000))


class RateLimited(RetryLater):
    """Too many requests: RESOURCE_EXHAUSTED."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, what: str, retry_after_seconds: float) -> None:
        super().__init__(f"{what}: rate limit exceeded; retry after {retry_after_seconds:.2f} s", retry_after_seconds)


class DependencyUnavailable(RetryLater):
    """A dependency's circuit breaker is open (or its bulkhead full): UNAVAILABLE, fast."""

    code = grpc.StatusCode.UNAVAILABLE


R = TypeVar("R")
Method = Callable[..., Awaitable[R]]


def grpc_errors(method: Method[R]) -> Method[R]:
    """Turns a DomainError raised by a servicer method into its status code."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await method(self, request, context)
        except DomainError as error:
            if isinstance(error, RetryLater):
                context.set_trailing_metadata((("retry-after-ms", str(error.retry_after_ms)),))
            await context.abort(error.code, str(error))
            raise  # abort() always raises; this line only satisfies the type checker
        except psycopg.OperationalError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable; retry with backoff")
            raise
        except redis.RedisError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "redis unavailable; retry with backoff")
            raise

    return wrapper
