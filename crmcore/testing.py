"""A pytest plugin for crmcore's tests and for plugin authors' (entry point ``pytest11: crmcore``).

Fixtures:

``crm_postgres`` (session)
    A throw-away PostgreSQL server: ``initdb`` into a temporary folder, listening on a free
    loopback port with its unix socket in that folder, ``fsync=off``; stopped at the end of the
    session. When the binaries are missing the test is skipped with a message saying how to
    install them, except when the ``CI`` environment variable is set: then it fails loudly.
    ``CRM_TEST_POSTGRES_URL`` (``postgresql://user@host:port/db``) uses an existing server instead.

``crm_backend``
    Parametrised over ``sqlite`` and ``postgres``: every test that uses it (directly or through
    ``make_deployment``) runs once on each. ``crm_backend.name`` is the backend's name,
    ``crm_backend.database_url`` a fresh, empty database for the test (``None`` on SQLite: the
    deployment's own file), ``crm_backend.new_database_url()`` another one. PostgreSQL databases
    are created from ``template0`` and dropped after the test. Deselect a backend with
    ``-m "not postgres"``.

``crm_database_url``
    ``crm_backend.database_url``, for code that takes a URL (``create_app(path, database_url=...)``).

``make_deployment``
    ``await make_deployment(plugins=[...], extra_plugins=[...], **settings)`` writes a deployment
    into ``tmp_path`` with :func:`crmcore.init_deployment`, enables ``plugins``, applies
    ``settings`` (``region="TR"``, ``currency="TRY"``...) and opens it on the test's backend; every
    deployment it opened is closed after the test. ``path=`` re-opens an existing deployment
    folder (on the same database) instead of making a new one.

``crm_client``
    ``crm_client(path=None, *, plugins=[...], extra_plugins=[...], role="admin", **settings)``: a
    litestar ``TestClient`` of the deployment's web app (made in ``tmp_path`` unless ``path`` is
    one already) on the test's backend, at ``https://testserver.local`` (the session cookie is
    Secure). It is authenticated with an API token of a new user with ``role`` (``role=None``:
    anonymous); that user is ``client.crm_user`` (a :class:`CrmUser`). Closed after the test.

:func:`crm_user` ``(client, role=..., ...)`` adds another user (and token) to a client's
deployment; :func:`make_user` does it on an open :class:`~crmcore.Deployment`.
:func:`serve_app` ``(path, database_url=...)`` serves a deployment with uvicorn on a free port of
127.0.0.1 for tests that need a real server (a browser, a PBX calling in).

A plugin's own test::

    async def test_my_entity(make_deployment):
        dep = await make_deployment(plugins=["hello"])
        record = await dep.records.create("hello_greeting", {"text": "hi"})
        assert record["version"] == 1

    def test_my_route(crm_client):
        client = crm_client(plugins=["hello"])           # an admin's token in client.headers
        assert client.get("/api/hello/count").status_code == 200
        agent = crm_user(client, role="agent")
        assert client.get("/api/hello/count", headers=agent.headers).status_code == 200

Async tests and fixtures need ``pytest-asyncio`` (``pip install 'crmcore[test]'``; set
``asyncio_mode = "auto"`` or mark the tests ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - crmcore installed without its test extra
    pytest_asyncio = None

__all__ = ["PostgresServer", "Backend", "CrmUser", "ServedApp", "crm_user", "find_postgres_bin", "make_user",
           "serve_app"]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found; install them "
    "(Debian/Ubuntu: apt-get install -y postgresql) or set CRM_TEST_PG_BIN to their folder, "
    "or CRM_TEST_POSTGRES_URL to an existing server"
)


def find_postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None``."""
    candidates: list[str] = []
    if os.environ.get("CRM_TEST_PG_BIN"):
        candidates.append(os.environ["CRM_TEST_PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(Exception):
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    candidates += ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"]
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedApp:
    """An app served by :func:`serve_app`: ``url``, ``app``, ``loop`` (the server's event loop)."""

    def __init__(self, url: str, app: Any, loop: asyncio.AbstractEventLoop):
        self.url, self.app, self.loop = url, app, loop

    @property
    def deployment(self) -> Any:
        return self.app.state.deployment

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Await ``coro`` on the server's loop (where the deployment's connections live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def serve_app(path: str | Path, *, database_url: str | None = None, extra_plugins: Any = (),
              **uvicorn_options: Any) -> Iterator[ServedApp]:
    """The deployment in ``path`` served by uvicorn on a free port of 127.0.0.1, in a thread of
    this process (so a test can reach its deployment), until the block ends: for tests that
    need a real server, a browser or a PBX calling in."""
    import httpx
    import uvicorn

    from .api import create_app

    app = create_app(path, database_url=database_url, extra_plugins=extra_plugins)
    options = {"host": "127.0.0.1", "port": free_port(), "log_level": "warning", "lifespan": "on", **uvicorn_options}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{options['port']}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/api/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not come up")
        time.sleep(0.05)
    try:
        yield ServedApp(url, app, loop)
    finally:
        server.should_exit = True
        thread.join(30)


def _run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop is running here."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


class PostgresServer:
    """A PostgreSQL server owned by the test session (or an existing one given by URL)."""

    def __init__(self, bindir: Path | None = None, *, url: str | None = None, settings: dict[str, str] | None = None):
        self.bindir = bindir
        #: Server settings (``-c name=value``) beyond the test defaults, e.g. for a benchmark.
        self.settings = {"max_connections": "300", "shared_buffers": "64MB", **(settings or {})}
        self.dir: Path | None = None
        self.port: int | None = None
        self.user = "postgres"
        self.host = "127.0.0.1"
        self._url = url
        self._counter = itertools.count(1)

    # -- life cycle ---------------------------------------------------------------------------

    def _as_owner(self, args: list[str]) -> list[str]:
        """initdb and postgres refuse to run as root: run them as the ``postgres`` user."""
        if os.geteuid() != 0:
            return args
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", "postgres", "--", *args]
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]

    def start(self) -> None:
        if self._url:
            return
        assert self.bindir is not None
        self.dir = Path(tempfile.mkdtemp(prefix="crm-pg-"))
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        self._check(self._as_owner([
            str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]), "initdb")
        last_error = ""
        for _ in range(5):  # the free port may be taken between choosing and binding it
            self.port = free_port()
            options = " ".join([
                f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.dir}",
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ])
            proc = subprocess.run(self._as_owner([
                str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"),
                "-o", options, "-w", "-t", "60", "start",
            ]), capture_output=True, text=True)
            if proc.returncode == 0:
                return
            last_error = proc.stdout + proc.stderr + self.log_tail()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run(self._as_owner([
                str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop",
            ]), capture_output=True, text=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def log_tail(self) -> str:
        log = self.dir / "server.log" if self.dir else None
        if log and log.exists():
            return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        return ""

    @staticmethod
    def _check(args: list[str], what: str) -> None:
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")

    # -- databases ----------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        if self._url:
            base, _, _ = self._url.rpartition("/")
            return f"{base}/{database}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    async def _admin(self, statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def create_database(self) -> str:
        """A fresh, empty database (from ``template0``); returns its URL."""
        name = f"crm_test_{os.getpid()}_{next(self._counter)}_{uuid.uuid4().hex[:6]}"
        _run_sync(self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\''))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rpartition("/")[2]
        _run_sync(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Backend:
    """The database a test runs on: ``name`` is ``sqlite`` or ``postgres``."""

    def __init__(self, name: str, server: PostgresServer | None = None):
        self.name = name
        self.server = server
        self._created: list[str] = []
        self.database_url: str | None = self.new_database_url() if server is not None else None

    def new_database_url(self) -> str | None:
        """Another fresh database on this backend (``None`` on SQLite), dropped after the test."""
        if self.server is None:
            return None
        url = self.server.create_database()
        self._created.append(url)
        return url

    def close(self) -> None:
        for url in self._created:
            with contextlib.suppress(Exception):
                self.server.drop_database(url)
        self._created.clear()

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs on the PostgreSQL server the test setup starts")
    config.addinivalue_line("markers", "slow: long-running tests")


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so PostgreSQL tests must run: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def crm_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session."""
    url = os.environ.get("CRM_TEST_POSTGRES_URL")
    if url:
        yield PostgresServer(url=url)
        return
    bindir = find_postgres_bin()
    if bindir is None:
        _missing(INSTALL_HINT)
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root needs a 'postgres' system user to run the server as "
                     "(the Debian postgresql package creates it)")
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"could not start PostgreSQL from {bindir}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crm_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The backend a test runs on; every test using it runs on SQLite and on PostgreSQL."""
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    server = request.getfixturevalue("crm_postgres") if request.param == "postgres" else None
    backend = Backend(request.param, server)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def crm_database_url(crm_backend: Backend) -> str | None:
    """A fresh database URL on the test's backend (``None``: the deployment's SQLite file)."""
    return crm_backend.database_url


def _deployment_folder(path: Path, *, edition: str, plugins: Any, settings: dict[str, Any]) -> Path:
    """A test deployment folder: made (its ``plugins`` enabled besides the edition's), or, when
    it exists, given ``settings`` and, if any are named, exactly ``plugins``."""
    import crmcore
    from crmcore.deployment import load_settings, save_settings

    exists = (path / "crm.toml").exists()
    if not exists:
        crmcore.init_deployment(path, edition=edition, **settings)
    if plugins or (exists and settings):
        current = load_settings(path)
        if exists:
            for key, value in settings.items():
                setattr(current, key, value)
        if plugins:
            current.plugins = list(plugins) if exists else list(dict.fromkeys([*current.plugins, *plugins]))
        save_settings(path, current)
    return path.resolve()


def _database_url(path: Path, urls: dict[Path, str | None], backend: Backend) -> str | None:
    """The database of a test deployment folder: its SQLite file, or a PostgreSQL database of
    its own (the first folder gets the test's database, later ones new ones)."""
    from crmcore.deployment import DB_FILE

    if path not in urls:
        if backend.name == "sqlite":
            urls[path] = f"sqlite:///{path / DB_FILE}"
        else:
            urls[path] = backend.database_url if not urls else backend.new_database_url()
    return urls[path]


async def _make_deployment_fixture(tmp_path: Path, crm_backend: Backend):
    import crmcore

    opened: list[Any] = []
    urls: dict[Path, str | None] = {}
    counter = itertools.count(1)

    async def make(
        plugins: list[str] | tuple[str, ...] = (), *, path: str | Path | None = None,
        extra_plugins: Any = (), edition: str = "standard", **settings: Any,
    ) -> crmcore.Deployment:
        path = _deployment_folder(Path(path) if path is not None else tmp_path / f"deployment{next(counter)}",
                                  edition=edition, plugins=plugins, settings=settings)
        url = _database_url(path, urls, crm_backend)
        deployment = await crmcore.Deployment.open(path, database_url=url, extra_plugins=extra_plugins)
        opened.append(deployment)
        return deployment

    try:
        yield make
    finally:
        for deployment in reversed(opened):
            with contextlib.suppress(Exception):
                await deployment.close()


if pytest_asyncio is not None:
    make_deployment = pytest_asyncio.fixture(_make_deployment_fixture, name="make_deployment")
else:  # pragma: no cover

    @pytest.fixture
    def make_deployment():
        pytest.fail("crmcore's make_deployment fixture needs pytest-asyncio: pip install 'crmcore[test]'")


# -- users and authenticated clients ----------------------------------------------------------

_user_counter = itertools.count(1)
BASE_URL = "https://testserver.local"


class CrmUser:
    """A user made for a test: ``id``, ``email``, ``password``, ``token`` (its API token, or
    ``None``), ``headers`` (``Authorization: Bearer <token>``) and ``info`` (``AuthService.user``)."""

    def __init__(self, info: dict[str, Any], password: str, token: str | None):
        self.info, self.password, self.token = info, password, token
        self.id: int = info["id"]
        self.email: str = info["email"]
        self.headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:
        return f"CrmUser({self.id}, {self.email!r}, role={self.info.get('role')!r})"


async def make_user(
    deployment: Any, *, role: str = "admin", email: str | None = None, name: str | None = None,
    password: str | None = None, teams: Any = (), token: bool = True, read_only: bool = False,
) -> CrmUser:
    """A new user of ``deployment`` with ``role`` and ``teams`` (made when missing), a password
    and, unless ``token=False``, an API token (``read_only``); made as the system."""
    from .auth import SYSTEM

    n = next(_user_counter)
    email = email or f"{role or 'user'}{n}@example.com"
    password = password or f"correct horse {n} battery"
    known = {t["name"] for t in await deployment.auth.teams()}
    for team in teams:
        if team not in known:
            await deployment.auth.create_team(team, actor=SYSTEM)
    info = await deployment.auth.create_user(name=name or f"Test {role} {n}", email=email, password=password,
                                             role=role, teams=list(teams), actor=SYSTEM)
    secret = None
    if token:
        secret = (await deployment.auth.create_token(info["id"], "tests", read_only=read_only, actor=SYSTEM)).token
    return CrmUser(info, password, secret)


def crm_user(client: Any, **options: Any) -> CrmUser:
    """:func:`make_user` in the deployment a running ``TestClient`` serves (on its event loop)."""
    import functools

    return client.blocking_portal.call(functools.partial(make_user, client.app.state.deployment, **options))


@pytest.fixture
def crm_client(tmp_path: Path, crm_backend: Backend) -> Iterator[Any]:
    """A factory of authenticated test clients; see the module's docstring."""
    from crmcore.api import create_app
    from litestar.testing import TestClient

    clients: list[Any] = []
    urls: dict[Path, str | None] = {}
    counter = itertools.count(1)

    def make(
        path: str | Path | None = None, *, plugins: Any = (), extra_plugins: Any = (), role: str | None = "admin",
        edition: str = "standard", **settings: Any,
    ) -> Any:
        path = _deployment_folder(Path(path) if path is not None else tmp_path / f"app{next(counter)}",
                                  edition=edition, plugins=plugins, settings=settings)
        client = TestClient(create_app(path, database_url=_database_url(path, urls, crm_backend),
                                       extra_plugins=extra_plugins), base_url=BASE_URL)
        client.__enter__()
        clients.append(client)
        client.crm_user = None
        if role is not None:
            client.crm_user = crm_user(client, role=role)
            client.headers.update(client.crm_user.headers)
        return client

    try:
        yield make
    finally:
        for client in reversed(clients):
            with contextlib.suppress(Exception):
                client.__exit__(None, None, None)
