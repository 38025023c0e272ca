"""crmcore benchmark: one command, crmcore against raw baselines on the same data.

    .venv/bin/python bench/run.py [--rows 1000000] [--backend sqlite|postgres|both] [--quick]

See bench/README.md for what each figure means. Results: a table on stdout and
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

import crmcore  # noqa: E402
from crmcore import Field, FieldType, ListQuery  # noqa: E402
from crmcore.records.service import AUDIT_SLICE  # noqa: E402
from crmcore.storage.schema import search_columns, search_expression  # noqa: E402

import datagen  # noqa: E402
import loadgen  # noqa: E402
import salon  # noqa: E402
from crmcore.testing import PostgresServer, find_postgres_bin, free_port, make_user  # noqa: E402

RAW_INSERT_COLUMNS = ["version", "created_at", "updated_at", "created_by", "updated_by", "owner_id",
                      "first_name", "last_name", "email", "city", "segment", "score"]
USERS = 50


def log(message: str) -> None:
    print(message, flush=True)


# -- timing helpers --------------------------------------------------------------------------------


class Timing(msgspec.Struct):
    mean_ms: float
    iterations: int


async def time_loop(fn: Callable[[Any], Awaitable[Any]], args: list[Any], iterations: int) -> float:
    """Mean milliseconds per call over ``iterations`` calls cycling through ``args``."""
    n = len(args)
    start = time.perf_counter()
    for i in range(iterations):
        await fn(args[i % n])
    return (time.perf_counter() - start) * 1000 / iterations


async def compare(crm: Callable, raw: Callable, args: list[Any], max_iter: int, budget_s: float) -> tuple[Timing, Timing]:
    """Time crmcore and the raw baseline on the same arguments: warm both, size the loop so one
    pass of crmcore takes at most ``budget_s``, then alternate crm/raw twice and keep each one's best."""
    for a in args[:5]:
        await crm(a)
        await raw(a)
    probe = await time_loop(crm, args, min(20, max_iter))
    iterations = max(10, min(max_iter, int(budget_s * 1000 / max(probe, 1e-3))))
    best_crm, best_raw = float("inf"), float("inf")
    for _ in range(2):
        best_crm = min(best_crm, await time_loop(crm, args, iterations))
        best_raw = min(best_raw, await time_loop(raw, args, iterations))
    return Timing(best_crm, iterations), Timing(best_raw, iterations)


# -- results table ---------------------------------------------------------------------------------


class Figure(msgspec.Struct, omit_defaults=True):
    key: str
    name: str
    unit: str
    crmcore: float
    baseline: float | None
    baseline_name: str = ""
    #: "higher" (throughput: ratio = crm / baseline) or "lower" (time: ratio = crm / baseline).
    better: str = "higher"
    target: float | None = None  # for "higher": ratio >= target; for "lower": ratio <= target
    #: An absolute target instead (throughput at least this many units).
    minimum: float | None = None
    ratio: float | None = None
    result: str = "info"
    notes: str = ""
    #: In-process figures: calls per timed loop (each side, best of two loops).
    iterations: int | None = None

    def __post_init__(self) -> None:
        if self.baseline:
            self.ratio = self.crmcore / self.baseline
        if self.target is not None and self.ratio is not None:
            ok = self.ratio >= self.target if self.better == "higher" else self.ratio <= self.target
            self.result = "PASS" if ok else "MISS"
        if self.minimum is not None:
            self.result = "PASS" if self.crmcore >= self.minimum else "MISS"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("rows/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if value < 1:
        return f"{value * 1000:,.0f} us"
    return f"{value:,.2f} ms"


def table(backend: str, figures: list[Figure]) -> str:
    head = ["figure", "crmcore", "baseline", "ratio", "target", "result"]
    rows = []
    for f in figures:
        target = "-" if f.target is None else (f">= {f.target:g}" if f.better == "higher" else f"<= {f.target:g}x")
        if f.minimum is not None:
            target = f">= {fmt(f.minimum, f.unit)}"
        ratio = "-" if f.ratio is None else (f"{f.ratio:.2f}" if f.better == "higher" else f"{f.ratio:.2f}x")
        rows.append([f.name, fmt(f.crmcore, f.unit), fmt(f.baseline, f.unit), ratio, target, f.result])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [f"crmcore benchmark: {backend}", line,
           "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                     for i, (c, w) in enumerate(zip(r, widths))) + " |")
    out.append(line)
    return "\n".join(out)


# -- seeding -----------------------------------------------------------------------------------------


async def seed_crmcore(dep: crmcore.Deployment, rows: int, batch: int, owners: list[int], backend: str) -> float:
    """One bulk_create call for all the rows, as an import makes it (the rows are made first,
    so only crmcore's work is timed); progress is logged as bulk_create consumes them."""
    data = [row for chunk in datagen.contacts(rows, batch, owners) for row in chunk]
    step = min(100_000, max(rows // 10, 1))
    start = time.perf_counter()

    def consumed():
        for done, row in enumerate(data, 1):
            yield row
            if done % step == 0:
                log(f"  [{backend}] crmcore bulk_create: {done:>9,}/{rows:,} rows read "
                    f"{done / (time.perf_counter() - start):>9,.0f} rows/s")

    await dep.records.bulk_create("contact", consumed())
    return rows / (time.perf_counter() - start)


def _raw_row(values: dict, stamp: Any) -> tuple:
    return (1, stamp, stamp, None, None, values["owner_id"], values["first_name"], values["last_name"],
            values["email"], values["city"], values["segment"], values["score"])


def sqlite_copy(crm_db: str | Path, target: str | Path, tables: list[str]) -> sqlite3.Connection:
    """A connection (autocommit) to a new SQLite file holding ``tables`` of crmcore's database
    (columns and indexes, no rows) with the same physical settings as crmcore's writer (page
    size, cache), so that only the work differs."""
    src = sqlite3.connect(crm_db)
    ddl = [sql for (sql,) in src.execute(
        f"SELECT sql FROM sqlite_master WHERE tbl_name IN ({', '.join('?' for _ in tables)}) AND sql IS NOT NULL "
        "ORDER BY type = 'index'", tables)]
    page_size = src.execute("PRAGMA page_size").fetchone()[0]
    src.close()
    conn = sqlite3.connect(target, isolation_level=None)
    for pragma in (f"page_size={page_size}", "journal_mode=WAL", "synchronous=NORMAL", "cache_size=-524288",
                   "temp_store=MEMORY"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        conn.execute(statement)
    return conn


def seed_raw_sqlite(crm_db: str, target: str, rows: int, batch: int, owners: list[int], searched: list[str],
                    same_work: bool) -> float:
    """Raw executemany into a separate file holding the same table and indexes (``same_work``:
    plus the FTS index and one audit row per record, as crmcore writes)."""
    conn = sqlite_copy(crm_db, target, ["crm_contact"] + (["crm_contact__search", "crm_audit"] if same_work else []))
    insert = (f'INSERT INTO crm_contact ({", ".join(chr(34) + c + chr(34) for c in RAW_INSERT_COLUMNS)}) '
              f'VALUES ({", ".join("?" for _ in RAW_INSERT_COLUMNS)})')
    listed = ", ".join(f'"{c}"' for c in searched)
    fts = f'INSERT INTO crm_contact__search (rowid, {listed}) SELECT "id", {listed} FROM crm_contact WHERE "id" BETWEEN ? AND ?'
    audit = ('INSERT INTO crm_audit ("entity", "record_id", "last_record_id", "action", "user_id", "at", "changes") '
             'VALUES (?, ?, ?, ?, ?, ?, ?)')
    encode = msgspec.json.encode
    elapsed = 0.0
    # One transaction for the whole load, like crmcore's bulk_create; indexes kept up row by row.
    conn.execute("BEGIN IMMEDIATE")
    for chunk in datagen.contacts(rows, batch, owners):
        start = time.perf_counter()
        now = dt.datetime.now(dt.timezone.utc)
        stamp = now.isoformat(timespec="microseconds")
        conn.executemany(insert, [_raw_row(v, stamp) for v in chunk])
        if same_work:
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            first = last - len(chunk) + 1
            conn.execute(fts, (first, last))
            at = now.isoformat()
            conn.executemany(audit, [
                ("contact", first + i, min(first + i + AUDIT_SLICE - 1, last), "create", None, at,
                 encode({"ids": list(range(first + i, min(first + i + AUDIT_SLICE, last + 1))),
                         "values": chunk[i:i + AUDIT_SLICE]}).decode())
                for i in range(0, len(chunk), AUDIT_SLICE)])
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("COMMIT")
    elapsed += time.perf_counter() - start
    conn.close()
    return rows / elapsed


async def seed_raw_postgres(url: str, rows: int, batch: int, owners: list[int], expression: str,
                            same_work: bool) -> float:
    """asyncpg COPY into a table like crm_contact (same columns and indexes); ``same_work``: plus
    the tsvector update and one audit row per record, as crmcore writes."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""
            DROP TABLE IF EXISTS bench_raw_contact; DROP TABLE IF EXISTS bench_raw_audit;
            CREATE TABLE bench_raw_contact (LIKE crm_contact INCLUDING ALL);
            CREATE SEQUENCE bench_raw_contact_id_seq OWNED BY bench_raw_contact.id;
            ALTER TABLE bench_raw_contact ALTER COLUMN id SET DEFAULT nextval('bench_raw_contact_id_seq');
            CREATE TABLE bench_raw_audit (LIKE crm_audit INCLUDING ALL);
            CREATE SEQUENCE bench_raw_audit_id_seq OWNED BY bench_raw_audit.id;
            ALTER TABLE bench_raw_audit ALTER COLUMN id SET DEFAULT nextval('bench_raw_audit_id_seq');
        """)
        update = (f"UPDATE bench_raw_contact SET \"_search\" = to_tsvector('simple', {expression}) "
                  'WHERE "id" BETWEEN $1 AND $2')
        encode = msgspec.json.encode
        elapsed = 0.0
        for chunk in datagen.contacts(rows, batch, owners):
            start = time.perf_counter()
            now = dt.datetime.now(dt.timezone.utc)
            async with conn.transaction():
                before = await conn.fetchval("SELECT last_value + (CASE WHEN is_called THEN 1 ELSE 0 END) FROM bench_raw_contact_id_seq")
                await conn.copy_records_to_table("bench_raw_contact", records=[_raw_row(v, now) for v in chunk],
                                                 columns=RAW_INSERT_COLUMNS)
                if same_work:
                    last = before + len(chunk) - 1
                    await conn.execute(update, before, last)
                    at = now.isoformat()
                    await conn.copy_records_to_table(
                        "bench_raw_audit",
                        columns=["entity", "record_id", "last_record_id", "action", "user_id", "at", "changes"],
                        records=[("contact", before + i, min(before + i + AUDIT_SLICE - 1, last), "create", None, at,
                                  encode({"ids": list(range(before + i, min(before + i + AUDIT_SLICE, last + 1))),
                                          "values": chunk[i:i + AUDIT_SLICE]}).decode())
                                 for i in range(0, len(chunk), AUDIT_SLICE)])
            elapsed += time.perf_counter() - start
        await conn.execute("DROP TABLE bench_raw_contact; DROP TABLE bench_raw_audit")
    finally:
        await conn.close()
    return rows / elapsed


# -- raw read connection -----------------------------------------------------------------------------


class RawReader:
    """The baseline's read path: one plain connection, the query, ``fetchall``."""

    def __init__(self, backend: str, target: str):
        self.backend, self.target = backend, target
        self.conn: Any = None

    async def open(self) -> None:
        if self.backend == "sqlite":
            self.conn = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "cache_size=-65536", "query_only=ON"):
                self.conn.execute(f"PRAGMA {pragma}")
        else:
            import asyncpg

            self.conn = await asyncpg.connect(self.target)

    async def close(self) -> None:
        if self.conn is not None:
            r = self.conn.close()
            if asyncio.iscoroutine(r):
                await r

    def sql(self, sql: str) -> str:
        if self.backend == "sqlite":
            return sql
        parts = sql.split("?")
        return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))

    def query(self, sql: str) -> Callable[..., Awaitable[list]]:
        sql = self.sql(sql)
        if self.backend == "sqlite":
            conn = self.conn

            async def run(*params: Any) -> list:
                return conn.execute(sql, params).fetchall()
        else:
            conn = self.conn

            async def run(*params: Any) -> list:
                return await conn.fetch(sql, *params)
        return run


# -- HTTP servers ------------------------------------------------------------------------------------


class Server:
    def __init__(self, kind: str, env: dict[str, str], loop: str, http: str, logdir: Path,
                 headers: dict[str, str] | None = None):
        self.kind, self.port = kind, free_port()
        #: Sent with every request (crmcore: an API token; the raw baseline has no auth).
        self.headers = dict(headers or {})
        self.log = logdir / f"{kind}-server.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "serve.py"), kind, str(self.port), loop, http],
            env={**os.environ, **env}, stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait(self, health: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + health, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server did not answer {health} within {timeout}s")

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(urllib.request.Request(self.base + path, headers=self.headers), timeout=10) as response:
            return response.status, response.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_impl() -> tuple[str, str]:
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401
        http = "httptools"
    except ImportError:
        http = "h11"
    return loop, http


async def http_pair(crm: Server, raw: Server, crm_paths: list[str], raw_paths: list[str], *, seconds: float,
                    warmup: float, rounds: int, connections: int) -> tuple[dict, dict]:
    for server, paths in ((crm, crm_paths), (raw, raw_paths)):
        status, _ = server.get(paths[0])
        if status != 200:
            raise RuntimeError(f"{server.kind}: GET {paths[0]} answered {status}")
        await asyncio.to_thread(loadgen.run_load, server.base, paths, warmup, connections, 1, server.headers)
    best: dict[str, dict] = {}
    for i in range(rounds):
        for server, paths in ((crm, crm_paths), (raw, raw_paths)):
            result = await asyncio.to_thread(loadgen.run_load, server.base, paths, seconds, connections, i + 1,
                                             server.headers)
            if result["non_2xx"] or result["socket_errors"]:
                raise RuntimeError(f"{server.kind}: {result['non_2xx']} non-2xx answers, "
                                   f"{result['socket_errors']} socket errors under load")
            if server.kind not in best or result["rps"] > best[server.kind]["rps"]:
                best[server.kind] = result
    return best[crm.kind], best[raw.kind]


# -- the salon: availability search -----------------------------------------------------------------


async def salon_figure(backend: str, tmp: Path, pg: PostgresServer | None, max_iter: int, budget: float,
                       info: dict[str, Any]) -> Figure:
    """(h) a booking page's availability search over a salon with a year of appointments."""
    url = None
    if pg is not None:
        import asyncpg

        admin = await asyncpg.connect(pg.url())
        await admin.execute("CREATE DATABASE crm_salon")
        await admin.close()
        url = pg.url("crm_salon")
    dep = await salon.open_salon(tmp / "salon", url)
    raw = None
    try:
        today = dt.date.today()
        started = time.perf_counter()
        info["salon_appointments"] = await salon.seed(dep, today)
        log(f"[{backend}] salon: {info['salon_appointments']:,} appointments of {salon.STAFF} staff loaded in "
            f"{time.perf_counter() - started:.1f} s")
        if backend == "postgres":  # as autovacuum soon would, like the contacts above
            async with dep.db.pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE")
        raw = RawReader(backend, url or dep.db.path)
        await raw.open()
        cut = await dep.db.fetchval('SELECT MIN("id") FROM beauty_salon_service')
        mondays = salon.weeks(today, 8)
        info["salon_slots_per_search"] = sum(len(m["slots"]) for m in (await salon.search(dep, cut, mondays[0]))["staff"])
        crm_t, raw_t = await compare(lambda monday: salon.search(dep, cut, monday), salon.raw_queries(dep, raw),
                                     mondays, max_iter, budget)
        return Figure("h_salon_availability", "(h) salon availability, 1 service, any of 20 staff, a week", "ms",
                      crm_t.mean_ms, raw_t.mean_ms, "raw SELECTs of the same rows", better="lower",
                      iterations=crm_t.iterations,
                      notes=f"{info['salon_appointments']:,} appointments over a year; every start tried against the "
                            "week's appointments, hours, time off and chairs in memory")
    finally:
        if raw is not None:
            await raw.close()
        await dep.close()


# -- one backend -------------------------------------------------------------------------------------


async def run_backend(backend: str, args: argparse.Namespace) -> dict:
    quick = args.quick
    tmp = Path(tempfile.mkdtemp(prefix=f"crm-bench-{backend}-"))
    pg: PostgresServer | None = None
    servers: list[Server] = []
    dep = raw = None
    figures: list[Figure] = []
    info: dict[str, Any] = {"rows": args.rows, "batch": args.batch}
    try:
        url = None
        if backend == "postgres":
            import asyncpg

            bindir = find_postgres_bin()
            if bindir is None:
                raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
            pg = PostgresServer(bindir, settings={"shared_buffers": "512MB", "max_wal_size": "4GB"})
            pg.start()
            admin = await asyncpg.connect(pg.url())
            await admin.execute('CREATE DATABASE crm_bench')
            await admin.close()
            url = pg.url("crm_bench")
            info["postgres"] = str(pg.bindir)
        path = tmp / "deployment"
        crmcore.init_deployment(path)
        dep = await crmcore.Deployment.open(path, database_url=url)
        await dep.add_custom_field("contact", Field(
            name="segment", type=FieldType.CHOICE, choices=datagen.SEGMENTS, indexed=True))
        await dep.add_custom_field("contact", Field(name="score", type=FieldType.INTEGER, indexed=True))
        owners = await dep.records.bulk_create("user", [
            {"name": f"User {i}", "email": f"user{i}@example.com"} for i in range(USERS)])
        # The crmcore HTTP server is called as an admin, with an API token (one query per request).
        bench_admin = await make_user(dep, role="admin", email="bench-admin@example.com")
        entity = dep.registry.get("contact")
        expression = search_expression(entity)
        columns = dep.records.codec(entity).columns
        select = dep.records.codec(entity).select_list

        # (a) bulk create ------------------------------------------------------------------------
        log(f"[{backend}] seeding {args.rows:,} contacts through one crmcore bulk_create call")
        crm_rate = await seed_crmcore(dep, args.rows, args.batch, owners, backend)
        log(f"[{backend}] raw baseline inserts (same rows, same table and indexes)")
        if backend == "sqlite":
            crm_db = dep.db.path
            raw_plain = await asyncio.to_thread(seed_raw_sqlite, crm_db, str(tmp / "raw1.db"), args.rows,
                                                args.batch, owners, search_columns(entity), False)
            raw_same = await asyncio.to_thread(seed_raw_sqlite, crm_db, str(tmp / "raw2.db"), args.rows,
                                               args.batch, owners, search_columns(entity), True)
            for name in ("raw1.db", "raw2.db"):
                for suffix in ("", "-wal", "-shm"):
                    (tmp / (name + suffix)).unlink(missing_ok=True)
            raw_target = crm_db
            raw_name, raw_same_name = "sqlite3 executemany", "sqlite3 + FTS + audit"
        else:
            raw_plain = await seed_raw_postgres(url, args.rows, args.batch, owners, expression, False)
            raw_same = await seed_raw_postgres(url, args.rows, args.batch, owners, expression, True)
            raw_target = url
            raw_name, raw_same_name = "asyncpg COPY", "COPY + tsvector + audit"
        log(f"[{backend}] raw: {raw_plain:,.0f} rows/s plain, {raw_same:,.0f} rows/s with search index + audit")
        figures.append(Figure("a_bulk_create", "(a) bulk create", "rows/s", crm_rate, raw_plain, raw_name,
                              minimum=100_000 if backend == "sqlite" else None,
                              notes="raw: same table and indexes, no search index, no audit; "
                                    "target (SQLite): 100,000 rows/s"))
        figures.append(Figure("a_bulk_create_same_work", "(a') bulk create vs raw same SQL work", "rows/s",
                              crm_rate, raw_same, raw_same_name,
                              notes="raw also fills the search index and writes one audit row per record"))

        if backend == "postgres":  # what autovacuum would soon do; SQLite runs as crmcore leaves it
            async with dep.db.pool.acquire() as conn:
                await conn.execute("VACUUM ANALYZE crm_contact")
        raw = RawReader(backend, raw_target)
        await raw.open()
        records = dep.records
        max_iter = 100 if quick else args.iterations
        budget = 0.3 if quick else args.budget
        ids = list(range(1, args.rows + 1))
        import random

        rnd = random.Random(3)
        sample_ids = [rnd.choice(ids) for _ in range(2000)] if ids else [1]
        first_id = (await dep.db.fetchval('SELECT MIN("id") FROM crm_contact')) or 1
        sample_ids = [first_id - 1 + i for i in sample_ids]

        # in-process get by id (informational: separates HTTP cost from service cost)
        by_id = raw.query(f'SELECT {select} FROM crm_contact WHERE "id" = ? AND "deleted_at" IS NULL')
        crm_t, raw_t = await compare(lambda i: records.get("contact", i), lambda i: by_id(i), sample_ids, max_iter * 5, budget)
        figures.append(Figure("get_by_id_inprocess", "get by id (in-process)", "ms", crm_t.mean_ms, raw_t.mean_ms,
                              "raw SELECT", better="lower", iterations=crm_t.iterations))

        # (c) 50-row list filtered on an indexed custom field ------------------------------------
        segments = [datagen.SEGMENTS[i % len(datagen.SEGMENTS)] for i in range(64)]
        seg_q = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND "segment" = ? ORDER BY "id" LIMIT 51')
        seg_q2 = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND "segment" = ? AND "id" > ? '
                           'ORDER BY "id" LIMIT 51')

        def seg_filter(value: str) -> dict:
            return {"field": "segment", "op": "eq", "value": value}

        crm_t, raw_t = await compare(
            lambda s: records.list("contact", ListQuery(filter=seg_filter(s), limit=50)), lambda s: seg_q(s),
            segments, max_iter, budget)
        figures.append(Figure("c_list_indexed", "(c) list 50, segment=X, page 1", "ms", crm_t.mean_ms, raw_t.mean_ms,
                              "raw SELECT", better="lower", target=3, iterations=crm_t.iterations))
        cursors = {}
        for s in datagen.SEGMENTS:
            page = await records.list("contact", ListQuery(filter=seg_filter(s), limit=50))
            if page.next_cursor:
                cursors[s] = (page.next_cursor, page.items[-1]["id"])
        page2 = [s for s in segments if s in cursors]
        if page2:
            crm_t, raw_t = await compare(
                lambda s: records.list("contact", ListQuery(filter=seg_filter(s), limit=50, cursor=cursors[s][0])),
                lambda s: seg_q2(s, cursors[s][1]), page2, max_iter, budget)
            figures.append(Figure("c_list_indexed_page2", "(c) list 50, segment=X, page 2 (cursor)", "ms",
                                  crm_t.mean_ms, raw_t.mean_ms, "raw SELECT", better="lower", target=3,
                                  iterations=crm_t.iterations))

        # (d) full-text search --------------------------------------------------------------------
        prefixes = datagen.search_prefixes(64)
        if backend == "sqlite":
            fts_q = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND "id" IN '
                              '(SELECT rowid FROM crm_contact__search WHERE crm_contact__search MATCH ?) '
                              'ORDER BY "id" LIMIT 51')
            fts_arg = lambda p: f'"{p}"*'  # noqa: E731
        else:
            fts_q = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND '
                              "\"_search\" @@ to_tsquery('simple', ?) ORDER BY \"id\" LIMIT 51")
            fts_arg = lambda p: f"{p}:*"  # noqa: E731
        crm_t, raw_t = await compare(
            lambda p: records.list("contact", ListQuery(search=p, limit=50)), lambda p: fts_q(fts_arg(p)),
            prefixes, max_iter, budget)
        figures.append(Figure("d_search", "(d) search 50, last-name prefix", "ms", crm_t.mean_ms, raw_t.mean_ms,
                              "raw FTS query", better="lower", target=3, iterations=crm_t.iterations))

        # (e) count with a filter -----------------------------------------------------------------
        count_q = raw.query('SELECT COUNT(*) FROM crm_contact WHERE "deleted_at" IS NULL AND "segment" = ?')

        async def raw_count(s: str) -> Any:
            await seg_q(s)
            return await count_q(s)

        crm_t, raw_t = await compare(
            lambda s: records.list("contact", ListQuery(filter=seg_filter(s), limit=50, count=True)), raw_count,
            segments, max_iter, budget)
        figures.append(Figure("e_count_filtered", "(e) list 50 + count, segment=X", "ms", crm_t.mean_ms, raw_t.mean_ms,
                              "raw SELECT + COUNT", better="lower", iterations=crm_t.iterations))

        # (f) an agent's list (scope "own") against an unscoped one ---------------------------------
        own_q = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL AND "owner_id" = ? ORDER BY "id" LIMIT 51')
        all_q = raw.query(f'SELECT {select} FROM crm_contact WHERE "deleted_at" IS NULL ORDER BY "id" LIMIT 51')
        agents = {}
        for owner in owners[:8]:  # agents: their role limits every read to the records they own
            await dep.auth.set_role(owner, "agent", actor=crmcore.SYSTEM)
            agents[owner] = records.as_actor(await dep.auth.actor_for_user(owner))
        owner_args = [owners[i % len(agents)] for i in range(64)]
        crm_own, raw_own = await compare(
            lambda o: agents[o].list("contact", ListQuery(limit=50)), lambda o: own_q(o), owner_args, max_iter, budget)
        crm_all, raw_all = await compare(
            lambda _: records.list("contact", ListQuery(limit=50)), lambda _: all_q(), [None], max_iter, budget)
        figures.append(Figure("f_list_own", "(f) agent's list 50 (scope own)", "ms", crm_own.mean_ms,
                              raw_own.mean_ms, "raw SELECT owner_id=?", better="lower", target=3,
                              iterations=crm_own.iterations))
        figures.append(Figure("f_list_unscoped", "(f) admin's list 50 (unscoped)", "ms", crm_all.mean_ms,
                              raw_all.mean_ms, "raw SELECT", better="lower", target=3, iterations=crm_all.iterations))
        figures.append(Figure("f_own_vs_unscoped", "(f) agent's list vs admin's list", "ms", crm_own.mean_ms,
                              crm_all.mean_ms, "crmcore unscoped list", better="lower", target=1.5,
                              notes="the agent's scope is a WHERE on the partial owner index"))
        await raw.close()
        raw = None
        await dep.close()
        dep = None
        figures.append(await salon_figure(backend, tmp, pg, max_iter, budget, info))

        # (b) HTTP --------------------------------------------------------------------------------
        loop, http = server_impl()
        info.update(loop=loop, http=http, load_tool="wrk" if loadgen.have_wrk() else "httpx",
                    connections=args.connections)
        env = {"BENCH_DEPLOYMENT": str(path), "BENCH_COLUMNS": ",".join(columns),
               "BENCH_DATABASE_URL": url or f"sqlite:///{raw_target}"}
        if url:
            env["CRM_DATABASE_URL"] = url
        log(f"[{backend}] HTTP: uvicorn ({loop}, {http}, 1 worker, no access log) crmcore app and raw app; "
            f"load: {info['load_tool']}, {args.connections} connections")
        crm_server = Server("crm", env, loop, http, tmp, headers=bench_admin.headers)
        servers.append(crm_server)
        raw_server = Server("raw", env, loop, http, tmp)
        servers.append(raw_server)
        crm_server.wait("/api/health")
        raw_server.wait("/raw/health")
        seconds = 2 if quick else args.seconds
        warmup = 1 if quick else 2
        rounds = 1 if quick else 2
        crm_r, raw_r = await http_pair(
            crm_server, raw_server, [f"/api/contact/{i}" for i in sample_ids], [f"/raw/contact/{i}" for i in sample_ids],
            seconds=seconds, warmup=warmup, rounds=rounds, connections=args.connections)
        info["http_get"] = {"crmcore": crm_r, "raw": raw_r}
        figures.append(Figure("b_http_get", "(b) HTTP GET contact by id", "req/s", crm_r["rps"], raw_r["rps"],
                              "bare litestar + raw SELECT", target=0.5,
                              notes=f"p50 {crm_r['p50_ms']} ms vs {raw_r['p50_ms']} ms"))
        crm_r, raw_r = await http_pair(
            crm_server, raw_server, [f"/api/contact?segment={s}&limit=50" for s in segments],
            [f"/raw/contact?segment={s}" for s in segments],
            seconds=seconds, warmup=warmup, rounds=rounds, connections=args.connections)
        info["http_list"] = {"crmcore": crm_r, "raw": raw_r}
        figures.append(Figure("c_http_list", "(c) HTTP GET list 50, segment=X", "req/s", crm_r["rps"], raw_r["rps"],
                              "bare litestar + raw SELECT"))

        # (g) the web UI's list page against the API's list, same query, same server --------------
        page_view = copy.copy(crm_server)
        page_view.kind, page_view.headers = "page", {**crm_server.headers, "accept": "text/html"}
        api_view = copy.copy(crm_server)
        api_view.kind = "api"
        pages = [f"/contact?limit=50&filter={quote(json.dumps({'field': 'segment', 'op': 'eq', 'value': s}))}"
                 for s in segments]
        page_r, api_r = await http_pair(
            page_view, api_view, pages, [f"/api/contact?segment={s}&limit=50" for s in segments],
            seconds=seconds, warmup=warmup, rounds=rounds, connections=args.connections)
        info["http_list_page"] = {"page": page_r, "api": api_r}
        figures.append(Figure("g_list_page", "(g) web list page 50 rows, segment=X", "req/s", page_r["rps"], api_r["rps"],
                              "the API's list (JSON)",
                              notes=f"p50 {page_r['p50_ms']} ms vs {api_r['p50_ms']} ms"))
    finally:
        for server in servers:
            server.stop()
        if raw is not None:
            await raw.close()
        if dep is not None:
            await dep.close()
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"info": info, "figures": [msgspec.to_builtins(f) for f in figures], "table": table(backend, figures),
            "_figures": figures}


def main() -> int:
    parser = argparse.ArgumentParser(description="crmcore benchmark against raw baselines")
    parser.add_argument("--rows", type=int, default=1_000_000, help="contacts to seed (default 1,000,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--batch", type=int, default=10_000, help="rows per executemany (raw baselines); crmcore gets all rows in one bulk_create call")
    parser.add_argument("--iterations", type=int, default=2000, help="max iterations per in-process read loop")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timed read loop, at most")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per HTTP load round")
    parser.add_argument("--connections", type=int, default=16, help="concurrent HTTP connections")
    parser.add_argument("--quick", action="store_true", help="short timed loops (smoke test)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    started = time.perf_counter()
    results = {}
    for backend in backends:
        results[backend] = asyncio.run(run_backend(backend, args))
    tables = []
    for backend, result in results.items():
        tables.append(result.pop("table"))
        result.pop("_figures")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "crmcore"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    document = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit + ("+dirty" if dirty else ""), "rows": args.rows, "quick": args.quick,
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
        "machine": platform.machine(), "elapsed_s": round(time.perf_counter() - started, 1),
        "backends": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, default=str))
    print()
    for text in tables:
        print(text)
        print()
    print(f"{args.rows:,} rows, commit {document['commit']}, {document['elapsed_s']} s; results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
