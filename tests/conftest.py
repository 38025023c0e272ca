"""Shared fixtures. The PostgreSQL server, ``crm_backend`` (sqlite + postgres) and
``make_deployment`` come from crmcore's own pytest plugin, :mod:`crmcore.testing`."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import crmcore
from crmcore import EntityType, Field, FieldType, hookimpl


def crm(*args, deployment: Path | None = None, input: str | None = None, ok: bool = True):
    """Run ``crm [-d deployment] args...`` in-process: never a traceback; success when ``ok``,
    else a clean error. Returns click's result (``.output``)."""
    from cli import create_cli

    argv = (["-d", str(deployment)] if deployment is not None else []) + [str(a) for a in args]
    result = CliRunner().invoke(create_cli(deployment), argv, input=input)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code in (1, 2), result.output
        assert "Error" in result.output or "Aborted" in result.output, result.output
    return result


def problem(response, status: int, field: str | None = None, *, detail: str | None = None) -> dict:
    """The problem+json body of an error answer with ``status``; it names ``field`` among its
    errors, and its detail holds ``detail``, when given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"], body
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    if detail is not None:
        assert detail in body["detail"], body["detail"]
    return body


def run(path: Path, action):
    """``await action(deployment)`` on the deployment in ``path``, opened for it and closed after."""
    async def go():
        async with await crmcore.Deployment.open(path) as dep:
            return await action(dep)
    return asyncio.run(go())

T = FieldType


class LabPlugin:
    """An in-test plugin with one entity holding a field of every type (``lab_item``)."""

    PLUGIN = crmcore.PluginInfo(name="lab", version="1.0", description="every field type")

    @staticmethod
    @hookimpl
    def crm_register_entities(register):
        register(EntityType(name="item", title_field="name", fields=[
            Field(name="name", type=T.TEXT),
            Field(name="notes", type=T.LONG_TEXT),
            Field(name="qty", type=T.INTEGER),
            Field(name="ratio", type=T.DECIMAL),
            Field(name="price", type=T.MONEY),
            Field(name="active", type=T.BOOLEAN),
            Field(name="day", type=T.DATE),
            Field(name="at", type=T.DATETIME),
            Field(name="color", type=T.CHOICE, choices=["red", "green", "blue"]),
            Field(name="sizes", type=T.MULTI_CHOICE, choices=["s", "m", "l"]),
            Field(name="email", type=T.EMAIL),
            Field(name="phone", type=T.PHONE),
            Field(name="site", type=T.URL),
            Field(name="company", type=T.RELATION, target="company"),
            Field(name="tags", type=T.TAGS),
            Field(name="code", type=T.TEXT, unique=True, max_length=12),
        ]))


#: Field name -> (an accepted value, a refused value) for every field type of ``lab_item``.
VALUES = {
    "name": ("Widget", "two\nlines"),
    "notes": ("long\ntext", 12),
    "qty": (42, "forty-two"),
    "ratio": ("3.25", "abc"),
    "price": ({"amount": "9.99", "currency": "EUR"}, {"amount": "1", "currency": "XXQ"}),
    "active": (True, "maybe"),
    "day": ("2026-05-01", "2026-13-01"),
    "at": ("2026-05-01T15:00:00+02:00", "2026-05-01T15:00:00"),
    "color": ("red", "purple"),
    "sizes": (["s", "l"], ["xl"]),
    "email": ("ayse@example.com", "not-an-email"),
    "phone": ("+44 20 7946 0958", "12"),
    "site": ("https://example.com", "ftp://example.com"),
    "tags": (["vip", "b2b"], ["bad,tag"]),
    "code": ("A-1", "X" * 13),
}


@pytest.fixture
def lab_plugin():
    return LabPlugin


@pytest.fixture
async def dep(make_deployment):
    """A fresh standard deployment read in Turkey (phones), euros by default, plus ``lab_item``."""
    return await make_deployment(region="TR", currency="EUR", extra_plugins=[LabPlugin])


# tests/fixtures/ holds packages the tests install (a plugin and its own tests): not ours to collect.
collect_ignore_glob = ["fixtures/*"]


FIXTURE = Path(__file__).parent / "fixtures" / "sample_plugin"


def _pip(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def sample_plugin(tmp_path_factory):
    """``crm-sample-plugin`` pip-installed into this environment for the session, like a plugin
    from PyPI (built from a copy, so the source tree stays clean); uninstalled afterwards."""
    source = tmp_path_factory.mktemp("plugin") / "sample_plugin"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = _pip("install", "-q", "--no-deps", "--no-build-isolation", str(source))
    if done.returncode != 0:
        pytest.fail(f"could not pip install the sample plugin (needs setuptools>=70.1 in the venv):\n"
                    f"{done.stdout}{done.stderr}", pytrace=False)
    importlib.invalidate_caches()
    try:
        yield source
    finally:
        _pip("uninstall", "-y", "-q", "crm-sample-plugin")
        for name in [m for m in sys.modules if m.startswith("crm_sample_plugin")]:
            del sys.modules[name]
        importlib.invalidate_caches()
