"""The HTTP baseline: a bare Litestar app answering the same reads with one raw query each.

Configured by environment (set by ``bench/run.py``): ``BENCH_DATABASE_URL`` (``sqlite:///...`` or
``postgresql://...``) and ``BENCH_COLUMNS`` (comma-separated: the columns crmcore returns).
"""

from __future__ import annotations

import os
import sqlite3

import msgspec
from litestar import Litestar, Response, get
from litestar.exceptions import NotFoundException

JSON = "application/json"
_encode = msgspec.json.encode


def create_raw_app() -> Litestar:
    url = os.environ["BENCH_DATABASE_URL"]
    columns = os.environ["BENCH_COLUMNS"].split(",")
    select = ", ".join(f'"{c}"' for c in columns)
    by_id = f'SELECT {select} FROM crm_contact WHERE "id" = ? AND "deleted_at" IS NULL'
    by_segment = (f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND "segment" = ? '
                  'ORDER BY "id" LIMIT 51')
    state: dict = {}

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]

        async def startup() -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "cache_size=-65536", "query_only=ON"):
                conn.execute(f"PRAGMA {pragma}")
            state["conn"] = conn

        async def shutdown() -> None:
            state["conn"].close()

        async def fetch(sql: str, *params) -> list:
            return state["conn"].execute(sql, params).fetchall()
    else:
        import asyncpg

        by_id, by_segment = by_id.replace("?", "$1"), by_segment.replace("?", "$1")

        async def startup() -> None:
            state["pool"] = await asyncpg.create_pool(url, min_size=2, max_size=10)

        async def shutdown() -> None:
            await state["pool"].close()

        async def fetch(sql: str, *params) -> list:
            async with state["pool"].acquire() as conn:
                return await conn.fetch(sql, *params)

    @get("/raw/health")
    async def health() -> Response:
        await fetch("SELECT 1")
        return Response(content=b'{"status":"ok"}', media_type=JSON)

    @get("/raw/contact/{record_id:int}")
    async def contact(record_id: int) -> Response:
        rows = await fetch(by_id, record_id)
        if not rows:
            raise NotFoundException()
        return Response(content=_encode(dict(zip(columns, rows[0]))), media_type=JSON)

    @get("/raw/contact")
    async def contacts(segment: str) -> Response:
        rows = await fetch(by_segment, segment)
        items = [dict(zip(columns, row)) for row in rows[:50]]
        return Response(content=_encode({"items": items, "more": len(rows) > 50}), media_type=JSON)

    return Litestar(route_handlers=[health, contact, contacts], on_startup=[startup],
                    on_shutdown=[shutdown], debug=False, openapi_config=None)
