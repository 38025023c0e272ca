"""Backup and restore of a whole deployment: its settings (``crm.toml``) and its database, every
table of it (records, their history, users, rules, jobs, the schema's own history).

A backup is one zip file holding ``manifest.json`` (format version, crmcore's version, the
database's dialect, when), ``crm.toml`` and the database, copied by the database's own tool:

- SQLite: ``crm.db``, made with SQLite's online backup API: a consistent copy even while the
  deployment is in use;
- PostgreSQL: ``database.dump``, made by ``pg_dump --format=custom`` (its major version must be
  the server's or newer: it is found on ``PATH``, in ``CRM_PG_BIN``, or where Debian puts it).

Restoring puts that database back exactly, into the deployment's database: SQLite through the
backup API (which replaces the file's whole content), PostgreSQL by emptying the ``public``
schema and running ``pg_restore`` in one transaction. A restore refuses a backup of the other
dialect (records move between backends with export and import) and, unless forced, a database
that holds records already. Nothing else may use the deployment meanwhile: stop its servers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import crmcore

from .deployment import CONFIG_FILE, DB_FILE, load_settings

__all__ = ["backup", "restore", "BackupError", "FORMAT"]

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "crm.db"
POSTGRES_MEMBER = "database.dump"


class BackupError(Exception):
    """The backup cannot be made or restored; the message says why."""


def database_url(path: Path, database_url: str | None = None) -> str:
    """The database a deployment folder uses (as :meth:`Deployment.open` chooses it)."""
    settings = load_settings(path)
    url = database_url or os.environ.get("CRM_DATABASE_URL") or settings.database_url
    return url or f"sqlite:///{(path / DB_FILE).resolve()}"


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:") else "postgres"


def _sqlite_path(url: str) -> str:
    return url.split("sqlite:///", 1)[1]


def pg_tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: from ``CRM_PG_BIN``, ``PATH`` or Debian's folders (newest)."""
    folders = [os.environ["CRM_PG_BIN"]] if os.environ.get("CRM_PG_BIN") else []
    found = shutil.which(name)
    if found:
        folders.append(str(Path(found).parent))
    folders += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2])
                      if p.split("/")[-2].isdigit() else 0, reverse=True)
    for folder in folders:
        if (Path(folder) / name).exists():
            return str(Path(folder) / name)
    raise BackupError(f"{name} is not installed: install PostgreSQL's client tools (Debian: postgresql-client) "
                      "or name their folder in CRM_PG_BIN")


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {(done.stderr or done.stdout).strip()[:2000]}")


def _libpq_url(url: str) -> str:
    """The URL as libpq tools take it (no SQLAlchemy-style driver suffix)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


async def backup(path: str | Path, target: str | Path | None = None, *, database_url_: str | None = None) -> Path:
    """Back the deployment in ``path`` up into ``target`` (a file, or a folder to put a dated
    ``<name>-<time>.crmbackup`` in; default: the deployment's ``backups/`` folder)."""
    path = Path(path)
    settings = load_settings(path)
    url = database_url(path, database_url_)
    dialect = _dialect(url)
    stamp = dt.datetime.now(dt.timezone.utc)
    target = Path(target) if target is not None else path / "backups"
    if target.is_dir() or target.suffix == "":
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"{settings.name}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.crmbackup"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / (SQLITE_MEMBER if dialect == "sqlite" else POSTGRES_MEMBER)
        if dialect == "sqlite":
            source = _sqlite_path(url)
            if not Path(source).exists():
                raise BackupError(f"{source} does not exist: the deployment was never opened")
            await asyncio.to_thread(_sqlite_copy, source, str(copy))
        else:
            await asyncio.to_thread(_run, [pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                                           f"--file={copy}", f"--dbname={_libpq_url(url)}"], "pg_dump")
        manifest = {"format": FORMAT, "crmcore": crmcore.__version__, "dialect": dialect, "name": settings.name,
                    "created_at": stamp.isoformat(), "database": copy.name}
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            archive.write(path / CONFIG_FILE, CONFIG_FILE)
            archive.write(copy, copy.name)
        partial.replace(target)  # a backup file is whole or absent
    return target


def _sqlite_copy(source: str, target: str) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def read_manifest(source: str | Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(source) as archive:
            manifest = json.loads(archive.read(MANIFEST))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BackupError(f"{source} is not a crmcore backup: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: backup format {manifest.get('format')!r}, this crmcore reads format {FORMAT}")
    return manifest


async def restore(path: str | Path, source: str | Path, *, force: bool = False, database_url_: str | None = None) -> dict:
    """Restore the backup ``source`` into the deployment in ``path`` (a folder without a
    deployment gets the backup's ``crm.toml``). Returns the manifest."""
    path, source = Path(path), Path(source)
    manifest = read_manifest(source)
    fresh = not (path / CONFIG_FILE).exists()
    with zipfile.ZipFile(source) as archive, tempfile.TemporaryDirectory() as work:
        if fresh:
            path.mkdir(parents=True, exist_ok=True)
            archive.extract(CONFIG_FILE, path)
        url = database_url(path, database_url_)
        if _dialect(url) != manifest["dialect"]:
            raise BackupError(f"this backup is of a {manifest['dialect']} database and the deployment uses "
                              f"{_dialect(url)}: move records between backends with export and import")
        member = archive.extract(manifest["database"], work)
        if manifest["dialect"] == "sqlite":
            target = _sqlite_path(url)
            if not force and _sqlite_has_records(target):
                raise BackupError(f"{target} holds records: restoring replaces them all (force it to)")
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(_sqlite_copy, member, target)
        else:
            if not force and await _postgres_has_records(url):
                raise BackupError("the database holds records: restoring replaces them all (force it to)")
            await _postgres_empty(url)
            await asyncio.to_thread(_run, [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction",
                                           "--exit-on-error", f"--dbname={_libpq_url(url)}", member], "pg_restore")
    return manifest


def _sqlite_has_records(target: str) -> bool:
    if not Path(target).exists():
        return False
    conn = sqlite3.connect(target)
    try:
        return bool(conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'crm_audit'").fetchone()
            and conn.execute("SELECT 1 FROM crm_audit LIMIT 1").fetchone())
    finally:
        conn.close()


async def _postgres_has_records(url: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(_libpq_url(url))
    try:
        if await conn.fetchval("SELECT to_regclass('public.crm_audit')") is None:
            return False
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM crm_audit)"))
    finally:
        await conn.close()


async def _postgres_empty(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_libpq_url(url))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
