"""The durable job queue on SQLite and PostgreSQL: a controllable clock (no sleeps), keys,
retries with backoff, dead jobs, leases, a restart in between, two workers on one database, the
worker loop and the ``crm worker`` / ``crm jobs`` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

import crmcore
from cli import create_cli
from crmcore.jobs import BACKOFF_BASE, Clock, backoff

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 5, 1, 9, 0, tzinfo=UTC)


def recorder(dep, kind="test.note", fail_times=0):
    """A handler of ``kind`` that records its payloads and fails its first ``fail_times`` calls."""
    calls: list = []

    @dep.jobs.handler(kind)
    async def note(deployment, payload):
        calls.append(payload)
        if len(calls) <= fail_times:
            raise RuntimeError(f"failure {len(calls)}")
    return calls


async def test_clock_follows_time_until_a_test_takes_it_over():
    clock = Clock()
    assert not clock.frozen and abs(clock.now() - dt.datetime.now(UTC)) < dt.timedelta(seconds=5)
    assert clock.set(dt.datetime(2030, 1, 1)) == dt.datetime(2030, 1, 1, tzinfo=UTC)  # naive is UTC
    assert clock.advance(minutes=16) == dt.datetime(2030, 1, 1, 0, 16, tzinfo=UTC)
    assert clock.advance(dt.timedelta(hours=1), seconds=1) == dt.datetime(2030, 1, 1, 1, 16, 1, tzinfo=UTC)
    assert clock.frozen and clock.now() == clock.now()
    clock.resume()
    assert not clock.frozen


async def test_a_job_runs_once_when_due(make_deployment):
    dep = await make_deployment()
    calls = recorder(dep)
    dep.clock.set(T0)
    job_id = await dep.jobs.enqueue("test.note", {"n": 1}, run_at=T0 + dt.timedelta(minutes=15))
    assert await dep.jobs.run_due() == 0
    dep.clock.advance(minutes=14, seconds=59)
    assert await dep.jobs.run_due() == 0 and calls == []
    dep.clock.advance(seconds=1)
    assert await dep.jobs.run_due() == 1 and calls == [{"n": 1}]
    assert await dep.jobs.run_due() == 0 and calls == [{"n": 1}]
    job = await dep.jobs.get(job_id)
    assert job.status == "done" and job.attempts == 1 and job.done_at == T0 + dt.timedelta(minutes=15)
    assert job.locked_by is None

    # delay= and a job due now
    await dep.jobs.enqueue("test.note", {"n": 2})
    await dep.jobs.enqueue("test.note", {"n": 3}, delay=dt.timedelta(seconds=30))
    assert await dep.jobs.run_due() == 1 and calls[-1] == {"n": 2}
    dep.clock.advance(seconds=30)
    assert await dep.jobs.run_due() == 1 and calls[-1] == {"n": 3}


async def test_a_key_keeps_one_pending_job_rescheduled_or_cancelled(make_deployment):
    dep = await make_deployment()
    calls = recorder(dep)
    dep.clock.set(T0)
    first = await dep.jobs.enqueue("test.note", {"v": 1}, run_at=T0 + dt.timedelta(hours=1), key="reminder:12")
    again = await dep.jobs.enqueue("test.note", {"v": 2}, run_at=T0 + dt.timedelta(hours=2), key="reminder:12")
    assert again == first
    [pending] = await dep.jobs.list(status="pending")
    assert pending.payload == {"v": 2} and pending.run_at == T0 + dt.timedelta(hours=2)
    dep.clock.advance(hours=1)
    assert await dep.jobs.run_due() == 0  # moved to the later time
    dep.clock.advance(hours=1)
    assert await dep.jobs.run_due() == 1 and calls == [{"v": 2}]

    # once it ran, the key is free for a new job; cancel withdraws it
    await dep.jobs.enqueue("test.note", {"v": 3}, run_at=T0 + dt.timedelta(hours=3), key="reminder:12")
    assert await dep.jobs.cancel("reminder:12") is True
    assert await dep.jobs.cancel("reminder:12") is False
    dep.clock.advance(hours=5)
    assert await dep.jobs.run_due() == 0 and calls == [{"v": 2}]
    assert [j.status for j in await dep.jobs.list(key="reminder:12")] == ["cancelled", "done"]


async def test_failures_retry_with_exponential_backoff_then_succeed(make_deployment):
    dep = await make_deployment()
    calls = recorder(dep, fail_times=2)
    dep.clock.set(T0)
    job_id = await dep.jobs.enqueue("test.note", {"x": 1})
    assert await dep.jobs.run_due() == 1
    job = await dep.jobs.get(job_id)
    assert job.status == "pending" and job.attempts == 1 and job.last_error == "RuntimeError: failure 1"
    assert job.run_at == T0 + BACKOFF_BASE
    dep.clock.advance(BACKOFF_BASE - dt.timedelta(seconds=1))
    assert await dep.jobs.run_due() == 0
    dep.clock.advance(seconds=1)
    assert await dep.jobs.run_due() == 1
    job = await dep.jobs.get(job_id)
    assert job.attempts == 2 and job.run_at == dep.clock.now() + 2 * BACKOFF_BASE
    dep.clock.advance(2 * BACKOFF_BASE)
    assert await dep.jobs.run_due() == 1
    job = await dep.jobs.get(job_id)
    assert job.status == "done" and job.attempts == 3 and len(calls) == 3
    assert job.last_error == "RuntimeError: failure 2"  # the last failure stays on record
    assert backoff(1) == BACKOFF_BASE and backoff(30) == dt.timedelta(hours=1)


async def test_dead_after_max_attempts_listed_and_retried(make_deployment):
    dep = await make_deployment()
    calls = recorder(dep, fail_times=3)
    dep.clock.set(T0)
    job_id = await dep.jobs.enqueue("test.note", {"y": 1}, max_attempts=3)
    for _ in range(3):
        assert await dep.jobs.run_due() == 1
        dep.clock.advance(hours=2)
    assert await dep.jobs.run_due() == 0
    [dead] = await dep.jobs.list(status="dead")
    assert dead.id == job_id and dead.attempts == 3 and dead.last_error == "RuntimeError: failure 3"
    assert len(calls) == 3
    revived = await dep.jobs.retry(job_id)
    assert revived.status == "pending" and revived.attempts == 0
    assert await dep.jobs.run_due() == 1
    assert (await dep.jobs.get(job_id)).status == "done" and len(calls) == 4
    with pytest.raises(crmcore.ValidationError):  # a pending job is not retried
        await dep.jobs.retry(await dep.jobs.enqueue("test.note"))
    with pytest.raises(crmcore.NotFound):
        await dep.jobs.get(10**9)
    with pytest.raises(crmcore.ValidationError):
        await dep.jobs.list(status="finished")


async def test_a_job_without_handler_fails_and_says_why(make_deployment):
    dep = await make_deployment()
    dep.clock.set(T0)
    job_id = await dep.jobs.enqueue("nobody.home", {}, max_attempts=1)
    assert await dep.jobs.run_due() == 1
    job = await dep.jobs.get(job_id)
    assert job.status == "dead" and "no handler for job kind 'nobody.home'" in job.last_error
    with pytest.raises(ValueError):
        await dep.jobs.enqueue("bad kind!", {})
    with pytest.raises(ValueError):
        await dep.jobs.enqueue("test.note", {}, run_at=dt.datetime(2030, 1, 1))  # naive


async def test_a_job_due_during_downtime_fires_once_after_start(make_deployment):
    dep = await make_deployment()
    dep.clock.set(T0)
    await dep.jobs.enqueue("test.note", {"z": 1}, run_at=T0 + dt.timedelta(minutes=15), key="sla:1")
    path = dep.path
    await dep.close()

    again = await make_deployment(path=path)  # "restarted" an hour later
    calls = recorder(again)
    again.clock.set(T0 + dt.timedelta(hours=1))
    assert await again.jobs.run_due() == 1 and calls == [{"z": 1}]
    assert await again.jobs.run_due() == 0
    await again.close()

    third = await make_deployment(path=path)
    calls = recorder(third)
    third.clock.set(T0 + dt.timedelta(hours=2))
    assert await third.jobs.run_due() == 0 and calls == []


async def test_a_crashed_workers_job_is_taken_again_after_its_lease(make_deployment):
    dep = await make_deployment()
    dep.clock.set(T0)
    job_id = await dep.jobs.enqueue("test.note", {"w": 1})
    # A worker claims the job and dies before finishing: nothing but the claim happens.
    [claimed] = await dep.jobs._claim(10, dt.timedelta(minutes=5))
    assert claimed.id == job_id and claimed.status == "running"

    other = await make_deployment(path=dep.path)  # another worker process
    calls = recorder(other)
    other.clock.set(T0 + dt.timedelta(minutes=4))
    assert await other.jobs.run_due() == 0
    other.clock.set(T0 + dt.timedelta(minutes=5))
    assert await other.jobs.run_due() == 1 and calls == [{"w": 1}]
    job = await other.jobs.get(job_id)
    assert job.status == "done" and job.attempts == 2
    # the dead worker's late finish changes nothing: the job is no longer its own
    await dep.jobs._finish(claimed, "dead", "late")
    assert (await other.jobs.get(job_id)).status == "done"


async def test_two_workers_never_run_a_job_twice(make_deployment):
    first = await make_deployment()
    second = await make_deployment(path=first.path)  # same database, another pool or connection
    ran: list[tuple[str, int]] = []

    for name, dep in (("first", first), ("second", second)):
        dep.clock.set(T0)

        async def work(deployment, payload, name=name):
            await asyncio.sleep(0)  # let the other worker claim meanwhile
            ran.append((name, payload["n"]))

        dep.jobs.handler("test.count")(work)

    for n in range(60):
        await first.jobs.enqueue("test.count", {"n": n})

    async def drain(dep):
        while await dep.jobs.run_due(limit=4):
            pass

    await asyncio.gather(drain(first), drain(second), drain(first), drain(second))
    assert sorted(n for _, n in ran) == list(range(60))
    assert len(await first.jobs.list(status="done", limit=100)) == 60


async def test_the_worker_loop_runs_due_jobs_until_stopped(make_deployment):
    dep = await make_deployment()
    calls = recorder(dep)
    stop = asyncio.Event()
    task = asyncio.create_task(dep.jobs.work(stop, poll=0.05))
    await dep.jobs.enqueue("test.note", {"live": True})  # the real clock: due now
    for _ in range(500):  # wait for the worker, not for a time
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [{"live": True}]

    # while a test holds the clock, the loop leaves the jobs to it
    dep.clock.set(dt.datetime.now(UTC))
    await dep.jobs.enqueue("test.note", {"held": True})
    await asyncio.sleep(0.1)
    assert calls == [{"live": True}]
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await dep.jobs.run_due() == 1 and calls[-1] == {"held": True}


def _crm(path: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(create_cli(str(path)), ["-d", str(path), *args])
    assert "Traceback" not in result.output, result.output
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_crm_worker_once_and_jobs_list(tmp_path, crm_backend):
    path = tmp_path / "acme"
    crmcore.init_deployment(path, database_url=crm_backend.database_url)

    async def setup():
        async with await crmcore.Deployment.open(path) as dep:
            await dep.jobs.enqueue("nobody.home", {"a": 1}, max_attempts=1)
            await dep.jobs.enqueue("webhook.deliver", {"delivery": 999})  # a delivery that no longer exists: done
            await dep.jobs.enqueue("test.later", {}, delay=dt.timedelta(days=1))
    asyncio.run(setup())

    assert "Ran 2 jobs" in _crm(path, "worker", "--once")
    assert "Ran 0 jobs" in _crm(path, "worker", "--once")
    dead = _crm(path, "jobs", "list", "--status", "dead")
    assert "nobody.home" in dead and "no handler" in dead and "webhook.deliver" not in dead
    listing = _crm(path, "jobs", "list")
    assert "test.later" in listing and "pending" in listing and "done" in listing
    assert "No jobs running" in _crm(path, "jobs", "list", "--status", "running")
    job_id = dead.splitlines()[2].split()[0]
    assert f"Job {job_id} (nobody.home) is pending again" in _crm(path, "jobs", "retry", job_id)
    assert "does not exist" in _crm(path, "jobs", "retry", "99999", ok=False)
    assert "Error" in _crm(path, "jobs", "list", "--status", "odd", ok=False)


async def test_a_plugin_failing_to_register_handlers_stops_no_other_job(make_deployment, caplog):
    from crmcore import PluginInfo, hookimpl

    class Broken:
        PLUGIN = PluginInfo(name="broken", version="1")

        @staticmethod
        @hookimpl
        def crm_job_handlers(register):
            raise RuntimeError("cannot register")

    dep = await make_deployment(extra_plugins=[Broken])
    calls = recorder(dep)
    await dep.jobs.enqueue("test.note", {"ok": 1})
    assert await dep.jobs.run_due() == 1 and calls == [{"ok": 1}]
    assert "failed registering job handlers" in caplog.text


async def test_a_worker_in_another_process_wakes_for_a_new_job(make_deployment, crm_backend):
    if crm_backend.name != "postgres":
        pytest.skip("SQLite has no notifications: other processes' workers poll")
    web = await make_deployment()
    worker = await make_deployment(path=web.path)
    calls = recorder(worker)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.jobs.work(stop, poll=60))  # polls rarely: only a notification wakes it
    await web.jobs.enqueue("test.note", {"first": True})
    for _ in range(500):
        if calls:
            break
        await asyncio.sleep(0.01)
    await web.jobs.enqueue("test.note", {"second": True})
    for _ in range(500):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert calls == [{"first": True}, {"second": True}]


def test_crm_worker_runs_in_its_own_process_until_interrupted(tmp_path, crm_backend):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "acme"
    crmcore.init_deployment(path, database_url=crm_backend.database_url)

    async def enqueue_and_read(job_id=None):
        async with await crmcore.Deployment.open(path) as dep:
            if job_id is None:
                return await dep.jobs.enqueue("nobody.home", {"from": "web"}, max_attempts=1)
            return (await dep.jobs.get(job_id)).status

    job_id = asyncio.run(enqueue_and_read())  # the first open makes the tables, before the worker's
    crm = Path(sys.executable).parent / "crm"
    worker = subprocess.Popen([str(crm), "-d", str(path), "worker", "--poll", "0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(2):  # one waiting when it started, one enqueued while it runs
            deadline = time.monotonic() + 20
            while asyncio.run(enqueue_and_read(job_id)) != "dead" and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting for the other process, not timing it
            assert asyncio.run(enqueue_and_read(job_id)) == "dead"
            job_id = asyncio.run(enqueue_and_read())
    finally:
        worker.send_signal(signal.SIGINT)
        output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output
    assert "running jobs of" in output and "Traceback" not in output
