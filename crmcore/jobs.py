"""Durable jobs: a queue in the database, a controllable clock, the worker.

A job is a row of ``crm_job``: a ``kind`` (which handler runs it), a JSON ``payload`` and the
time it is due (``run_at``). Because the queue is the database, a job survives a restart: one
that fell due while nothing ran fires once when a worker next looks. ``crm serve`` runs a worker
in its own process by default (setting ``in_process_worker``); ``crm worker`` runs more.

Claiming (so a job fires once however many workers run):

- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claiming ``UPDATE``: two workers
  never claim the same row, and neither waits for the other.
- SQLite: the claim is one ``UPDATE ... RETURNING`` in a ``BEGIN IMMEDIATE`` transaction, which
  holds the database's single write lock, across processes too.

A claimed job is leased to its worker (``locked_by``, ``locked_until``). A worker that dies
mid-job leaves the lease to run out; then another worker takes the job again. Handlers should
therefore be idempotent, or at least harmless when run twice after a crash.

A handler that raises is retried with exponential backoff until ``max_attempts``; then the job is
``dead``: kept, listable (``crm jobs list --status dead``) and retryable. Every time is read from
``deployment.clock``, which tests set and advance: no job logic reads the wall clock.

Handlers::

    @deployment.jobs.handler("reminder.send")
    async def send_reminder(deployment, payload):
        ...

    await deployment.jobs.enqueue("reminder.send", {"activity": 12},
                                  run_at=due, key="reminder:activity:12")

A ``key`` makes enqueueing idempotent: while a job with that key is pending, enqueueing again
replaces its payload and time (a rescheduled reminder) rather than adding a second one, and
``cancel(key)`` withdraws it. Plugins register handlers through ``crm_job_handlers``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .plugins import PluginError, call_each
from .records.errors import FieldError, NotFound, ValidationError
from .storage.database import IntegrityError

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["Clock", "Job", "JobQueue", "JOB_TABLES", "JOB_STATUSES", "Handler"]

log = logging.getLogger("crmcore.jobs")
UTC = dt.timezone.utc

#: pending: waiting for run_at; running: leased to a worker; done; dead: failed max_attempts
#: times; cancelled: withdrawn (cancel) or superseded by a newer job with the same key.
JOB_STATUSES = ("pending", "running", "done", "dead", "cancelled")

# Same placeholders as storage.schema.SYSTEM_TABLES; times are fixed-width ISO text in UTC (they
# compare and sort as text), as everywhere in the system tables.
JOB_TABLES: list[str] = [
    """CREATE TABLE IF NOT EXISTS crm_job (
        "id" {serial}, "kind" TEXT NOT NULL, "payload" TEXT NOT NULL, "key" TEXT,
        "status" TEXT NOT NULL DEFAULT 'pending', "run_at" TEXT NOT NULL,
        "attempts" INTEGER NOT NULL DEFAULT 0, "max_attempts" INTEGER NOT NULL,
        "last_error" TEXT, "locked_by" TEXT, "locked_until" TEXT,
        "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL, "done_at" TEXT)""",
    # One pending job per key: enqueueing again with the key updates it (ON CONFLICT below).
    # Running, done and dead jobs keep their key but no longer block a new pending one.
    """CREATE UNIQUE INDEX IF NOT EXISTS crm_job_key ON crm_job ("key") WHERE "status" = 'pending'""",
    # What a worker looks for: due pending jobs, and running ones whose lease ran out.
    """CREATE INDEX IF NOT EXISTS crm_job_due ON crm_job ("run_at") WHERE "status" = 'pending'""",
    """CREATE INDEX IF NOT EXISTS crm_job_lease ON crm_job ("locked_until") WHERE "status" = 'running'""",
    """CREATE INDEX IF NOT EXISTS crm_job_status ON crm_job ("status", "id")""",
]

DEFAULT_MAX_ATTEMPTS = 8
#: Retry n waits BACKOFF_BASE * 2**(n-1), at most BACKOFF_MAX: 30 s, 1 min, 2 min ... 1 h.
#: No jitter: retries of one job are never simultaneous, and tests can name the exact time.
BACKOFF_BASE = dt.timedelta(seconds=30)
BACKOFF_MAX = dt.timedelta(hours=1)
#: How long a claimed job is its worker's; after that another worker may take it again.
DEFAULT_LEASE = dt.timedelta(minutes=5)
#: Done and cancelled jobs are deleted after this long (dead ones are kept until retried or purged).
KEEP_FINISHED = dt.timedelta(days=7)

Handler = Callable[["Deployment", Any], Awaitable[Any]]
#: PostgreSQL notification channel: a job due now was enqueued (workers in other processes wake).
JOB_CHANNEL = "crm_jobs"


def _ts(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class Clock:
    """What time it is, in UTC, for everything that schedules: jobs, reminders, time-based rules.

    It follows the system clock until a test takes it over with :meth:`set` or :meth:`advance`;
    from then on it stands still except when moved. ``clock.frozen`` tells which.
    """

    def __init__(self) -> None:
        self._fixed: dt.datetime | None = None

    def now(self) -> dt.datetime:
        return self._fixed if self._fixed is not None else dt.datetime.now(UTC)

    @property
    def frozen(self) -> bool:
        return self._fixed is not None

    def set(self, when: dt.datetime) -> dt.datetime:
        """Stop the clock at ``when`` (an aware datetime; a naive one is read as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        self._fixed = when.astimezone(UTC)
        return self._fixed

    def advance(self, delta: dt.timedelta | None = None, **parts: float) -> dt.datetime:
        """Move the clock forward (``advance(minutes=16)``); stops it first if it was running."""
        step = (delta or dt.timedelta()) + dt.timedelta(**parts)
        return self.set(self.now() + step)

    def resume(self) -> None:
        """Follow the system clock again."""
        self._fixed = None


class Job(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    payload: Any
    key: str | None
    status: str
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    last_error: str | None
    locked_by: str | None
    locked_until: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    done_at: dt.datetime | None


_COLUMNS = ('"id", "kind", "payload", "key", "status", "run_at", "attempts", "max_attempts", "last_error", '
            '"locked_by", "locked_until", "created_at", "updated_at", "done_at"')


def _job(row: tuple) -> Job:
    (id_, kind, payload, key, status, run_at, attempts, max_attempts, last_error, locked_by, locked_until,
     created_at, updated_at, done_at) = row
    return Job(id=id_, kind=kind, payload=msgspec.json.decode(payload), key=key, status=status, run_at=_time(run_at),
               attempts=attempts, max_attempts=max_attempts, last_error=last_error, locked_by=locked_by,
               locked_until=_time(locked_until), created_at=_time(created_at), updated_at=_time(updated_at),
               done_at=_time(done_at))


class _Registration(msgspec.Struct):
    fn: Handler
    max_attempts: int | None = None
    on_dead: Callable[["Deployment", Any, str], Awaitable[Any]] | None = None
    plugin: str | None = None


def backoff(attempts: int) -> dt.timedelta:
    """The wait before retry number ``attempts`` (1 after the first failure)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


class JobQueue:
    """The deployment's job queue (``deployment.jobs``)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.db = deployment.db
        self._handlers: dict[str, _Registration] = {}
        self._plugin_handlers: dict[str, _Registration] | None = None
        self._plugin_pm: Any = None
        #: Names this worker in ``locked_by``: host, process and a per-queue suffix, so two
        #: deployments opened in one process (tests) are two workers.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()

    @property
    def clock(self) -> Clock:
        return self.deployment.clock

    # -- handlers ----------------------------------------------------------------------------

    def handler(
        self, kind: str, *, max_attempts: int | None = None,
        on_dead: Callable[[Deployment, Any, str], Awaitable[Any]] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register ``async def fn(deployment, payload)`` for jobs of ``kind`` (a decorator).

        ``max_attempts``: the default of this kind's jobs. ``on_dead(deployment, payload, error)``
        runs when a job of this kind fails for the last time.
        """
        _check_kind(kind)

        def register(fn: Handler) -> Handler:
            self._handlers[kind] = _Registration(fn, max_attempts, on_dead)
            return fn
        return register

    def handlers(self) -> dict[str, _Registration]:
        """Every registered kind: the core's (``handler``) and the enabled plugins'."""
        if self._plugin_handlers is None or self._plugin_pm is not self.deployment.pm:
            found: dict[str, _Registration] = {}

            def make(plugin: str) -> dict[str, Any]:
                def register(kind: str, fn: Handler, *, max_attempts: int | None = None, on_dead: Any = None) -> None:
                    name = kind if plugin == "core" else f"{plugin}.{kind}"
                    _check_kind(name)
                    if name in found or name in self._handlers:
                        raise ValueError(f"job kind {name!r} already has a handler")
                    found[name] = _Registration(fn, max_attempts, on_dead, plugin)
                return {"register": register, "deployment": self.deployment}

            try:
                call_each(self.deployment.pm, "crm_job_handlers", make)
            except PluginError:  # one broken plugin must not stop every job: its kinds fail alone
                log.exception("a plugin failed registering job handlers")
            self._plugin_handlers, self._plugin_pm = found, self.deployment.pm
        return {**self._plugin_handlers, **self._handlers}

    # -- enqueueing --------------------------------------------------------------------------

    async def enqueue(
        self, kind: str, payload: Any = None, *, run_at: dt.datetime | None = None,
        delay: dt.timedelta | None = None, key: str | None = None, max_attempts: int | None = None,
    ) -> int:
        """Add a job; returns its id. Due at ``run_at`` (aware datetime) or after ``delay``, else
        now. With ``key``, a pending job with that key is updated instead (one pending job per
        key). Inside a ``db.transaction()`` the job commits (or not) with the caller's writes."""
        _check_kind(kind)
        now = self.clock.now()
        if run_at is None:
            run_at = now + (delay or dt.timedelta())
        elif run_at.tzinfo is None:
            raise ValueError("run_at must be an aware datetime (UTC or with an offset)")
        if max_attempts is None:
            registration = self.handlers().get(kind)
            max_attempts = (registration.max_attempts if registration else None) or DEFAULT_MAX_ATTEMPTS
        body = msgspec.json.encode(payload).decode()
        async with self.db.transaction():
            job_id = await self.db.fetchval(
                f"""INSERT INTO crm_job ("kind", "payload", "key", "status", "run_at", "attempts", "max_attempts",
                        "created_at", "updated_at")
                    VALUES (?, ?, ?, 'pending', ?, 0, ?, ?, ?)
                    ON CONFLICT ("key") WHERE "status" = 'pending' DO UPDATE SET
                        "kind" = excluded."kind", "payload" = excluded."payload", "run_at" = excluded."run_at",
                        "attempts" = 0, "max_attempts" = excluded."max_attempts", "last_error" = NULL,
                        "updated_at" = excluded."updated_at"
                    RETURNING "id\"""",
                (kind, body, key, _ts(run_at), max_attempts, _ts(now), _ts(now)),
            )
            if run_at <= now and self.db.dialect == "postgres":
                await self.db.announce(JOB_CHANNEL)  # delivered when the transaction commits
        if run_at <= now:
            self._wake.set()
        return job_id

    async def cancel(self, key: str) -> bool:
        """Withdraw the pending job with ``key``; False when there is none."""
        now = _ts(self.clock.now())
        async with self.db.transaction():
            row = await self.db.fetchrow(
                """UPDATE crm_job SET "status" = 'cancelled', "updated_at" = ?, "done_at" = ?
                   WHERE "key" = ? AND "status" = 'pending' RETURNING "id\"""", (now, now, key))
        return row is not None

    async def cancel_prefix(self, prefix: str) -> int:
        """Withdraw every pending job whose key starts with ``prefix``; how many."""
        now = _ts(self.clock.now())
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self.db.transaction():
            rows = await self.db.fetch(
                """UPDATE crm_job SET "status" = 'cancelled', "updated_at" = ?, "done_at" = ?
                   WHERE "status" = 'pending' AND "key" LIKE ? ESCAPE '\\' RETURNING "id\"""", (now, now, pattern))
        return len(rows)

    async def retry(self, job_id: int) -> Job:
        """Run a dead (or cancelled, or done) job again, now, with a fresh count of attempts."""
        job = await self.get(job_id)
        if job.status in ("pending", "running"):
            raise ValidationError([FieldError("status", "invalid", f"job {job_id} is {job.status} already")])
        now = _ts(self.clock.now())
        try:
            async with self.db.transaction():
                await self.db.execute(
                    """UPDATE crm_job SET "status" = 'pending', "run_at" = ?, "attempts" = 0, "updated_at" = ?,
                           "done_at" = NULL, "locked_by" = NULL, "locked_until" = NULL WHERE "id" = ?""",
                    (now, now, job_id))
        except IntegrityError:
            raise ValidationError([FieldError("key", "pending", f"another job with key {job.key!r} is pending")]) from None
        self._wake.set()
        return await self.get(job_id)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job:
        row = await self.db.fetchrow(f'SELECT {_COLUMNS} FROM crm_job WHERE "id" = ?', (job_id,))
        if row is None:
            raise NotFound("job", job_id)
        return _job(row)

    async def list(
        self, *, status: str | None = None, kind: str | None = None, key: str | None = None,
        before_id: int | None = None, limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first, by ``status``, ``kind`` or ``key``; ``before_id`` pages."""
        if status is not None and status not in JOB_STATUSES:
            raise ValidationError([FieldError("status", "invalid", f"status is one of {', '.join(JOB_STATUSES)}")])
        rows = await self.db.newest(_COLUMNS, "crm_job", limit=limit, before_id=before_id,
                                    status=status, kind=kind, key=key)
        return [_job(row) for row in rows]

    # -- running -----------------------------------------------------------------------------

    async def _claim(self, limit: int, lease: dt.timedelta, ids: list[int] | None = None) -> list[Job]:
        now = self.clock.now()
        due = """("status" = 'pending' AND "run_at" <= ?) OR ("status" = 'running' AND "locked_until" <= ?)"""
        due_params = [_ts(now), _ts(now)]
        if ids is not None:  # only these jobs, and only those still pending and due
            due = f""""id" IN ({", ".join("?" for _ in ids)}) AND "status" = 'pending' AND "run_at" <= ?"""
            due_params = [*ids, _ts(now)]
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgres" else ""
        async with self.db.transaction():
            rows = await self.db.fetch(
                f"""UPDATE crm_job SET "status" = 'running', "attempts" = "attempts" + 1, "locked_by" = ?,
                        "locked_until" = ?, "updated_at" = ?
                    WHERE "id" IN (SELECT "id" FROM crm_job WHERE {due} ORDER BY "run_at", "id" LIMIT ?{lock})
                      AND ({due})
                    RETURNING {_COLUMNS}""",
                (self.worker_id, _ts(now + lease), _ts(now), *due_params, limit, *due_params),
            )
        return sorted((_job(row) for row in rows), key=lambda j: (j.run_at, j.id))

    async def run_due(self, limit: int = 20, *, lease: dt.timedelta = DEFAULT_LEASE) -> int:
        """Claim up to ``limit`` due jobs and run them (concurrently); returns how many ran.
        Tests call it after advancing the clock; the worker calls it in a loop."""
        jobs = await self._claim(limit, lease)
        if jobs:
            handlers = self.handlers()
            await asyncio.gather(*(self._run(job, handlers.get(job.kind)) for job in jobs))
        return len(jobs)

    async def run_now(self, job_ids: list[int], *, lease: dt.timedelta = DEFAULT_LEASE) -> int:
        """Run these jobs here and now if they are still pending and due (one after another,
        in order); returns how many ran. What a write's transaction enqueued for right after
        its commit is run so by the writer, while the queue keeps it safe should this process
        stop first: a job another worker took already is left to it."""
        ran = 0
        for start in range(0, len(job_ids), 500):
            jobs = await self._claim(500, lease, job_ids[start:start + 500])
            handlers = self.handlers()
            for job in jobs:
                await self._run(job, handlers.get(job.kind))
            ran += len(jobs)
        return ran

    async def _run(self, job: Job, registration: _Registration | None) -> None:
        error: str | None = None
        if job.attempts > job.max_attempts:  # its lease ran out more often than it may fail
            error = job.last_error or "its worker stopped before finishing (lease expired)"
        elif registration is None:
            error = f"no handler for job kind {job.kind!r} (is the plugin that runs it enabled?)"
        else:
            try:
                result = registration.fn(self.deployment, job.payload)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # a failing job is recorded and retried, never fatal to the worker
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("job %s (%s) failed, attempt %s of %s: %s", job.id, job.kind, job.attempts,
                            job.max_attempts, error)
        if error is None:
            await self._finish(job, "done")
        elif job.attempts >= job.max_attempts:
            await self._finish(job, "dead", error)
            if registration is not None and registration.on_dead is not None:
                try:
                    await registration.on_dead(self.deployment, job.payload, error)
                except Exception:
                    log.exception("on_dead of job %s (%s) failed", job.id, job.kind)
        else:
            await self._retry_later(job, error)

    async def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        now = _ts(self.clock.now())
        async with self.db.transaction():
            # Only while the lease is still ours: after it ran out another worker owns the job.
            await self.db.execute(
                """UPDATE crm_job SET "status" = ?, "last_error" = COALESCE(?, "last_error"), "done_at" = ?,
                       "updated_at" = ?, "locked_by" = NULL, "locked_until" = NULL
                   WHERE "id" = ? AND "status" = 'running' AND "locked_by" = ?""",
                (status, error, now, now, job.id, self.worker_id))

    async def _retry_later(self, job: Job, error: str) -> None:
        now = self.clock.now()
        params = (_ts(now + backoff(job.attempts)), error, _ts(now), job.id, self.worker_id)
        sql = """UPDATE crm_job SET "status" = 'pending', "run_at" = ?, "last_error" = ?, "updated_at" = ?,
                     "locked_by" = NULL, "locked_until" = NULL
                 WHERE "id" = ? AND "status" = 'running' AND "locked_by" = ?"""
        try:
            async with self.db.transaction():
                await self.db.execute(sql, params)
        except IntegrityError:
            # Meanwhile a new job with the same key was enqueued: it supersedes this one.
            await self._finish(job, "cancelled", f"{error} (superseded by a newer job with key {job.key!r})")

    async def purge(self, older_than: dt.timedelta = KEEP_FINISHED) -> int:
        """Delete done and cancelled jobs finished longer than ``older_than`` ago."""
        cutoff = _ts(self.clock.now() - older_than)
        async with self.db.transaction():
            rows = await self.db.fetch(
                """DELETE FROM crm_job WHERE "status" IN ('done', 'cancelled') AND "done_at" < ? RETURNING "id\"""",
                (cutoff,))
        return len(rows)

    def wake(self) -> None:
        """Make this process's worker look for due jobs now rather than at its next poll."""
        self._wake.set()

    async def work(self, stop: asyncio.Event, *, poll: float = 1.0, batch: int = 20) -> None:
        """Run due jobs until ``stop`` is set: the loop of ``crm worker`` and ``crm serve``.

        It sleeps ``poll`` seconds (real time: how often to look, not when jobs are due) when
        nothing is due, or until :meth:`wake`. While a test holds the clock (``clock.frozen``)
        it leaves the jobs to the test, which runs them with :meth:`run_due`.
        """
        last_purge = None
        if self.db.dialect == "postgres":
            try:  # woken by other processes' enqueues rather than waiting for the next poll
                await self.db.watch(JOB_CHANNEL, self._wake.set)
            except Exception:
                log.warning("cannot listen for new jobs; polling every %s s", poll, exc_info=True)
        while not stop.is_set():
            ran = 0
            self._wake.clear()  # before looking: a job enqueued meanwhile wakes the wait below
            if not self.clock.frozen:
                try:
                    # custom fields or plugins changed by another process: handlers see them
                    await self.deployment.refresh()
                    ran = await self.run_due(batch)
                    today = self.clock.now().date()
                    if last_purge != today:
                        last_purge = today
                        await self.purge()
                except Exception:  # a lost database connection: log it, try again after a poll
                    log.exception("the job worker failed to claim jobs; retrying")
            if ran:
                continue
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not kind or len(kind) > 100 or not all(c.isalnum() or c in "._-:" for c in kind):
        raise ValueError(f"job kind {kind!r}: use letters, digits and . _ - :, e.g. webhook.deliver")
