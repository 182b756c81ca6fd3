"""PostgreSQL access for a service: one async connection pool on the service's own
database (database-per-service), traced by the psycopg instrumentation."""

from __future__ import annotations

import psycopg
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from psycopg_pool import AsyncConnectionPool

POOL_TIMEOUT_SECONDS = 5.0


async def open_pool(conninfo: str, max_size: int = 8) -> AsyncConnectionPool:
    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    # check: a pooled connection is tested before use, so a PostgreSQL restart costs no failed call.
    pool = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=POOL_TIMEOUT_SECONDS,
        check=AsyncConnectionPool.check_connection,
    )
    # wait=False: the service starts even while PostgreSQL restarts; calls fail until it is back.
    await pool.open(wait=False)
    return pool


async def ready(pool: AsyncConnectionPool) -> bool:
    try:
        async with pool.connection(timeout=POOL_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT 1")
        return True
    except (psycopg.Error, TimeoutError):
        return False
