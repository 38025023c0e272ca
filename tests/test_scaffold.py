"""``crm plugin new``: the package it writes installs, is discovered, and its own tests pass."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from crmcore.scaffold import ScaffoldError, check_plugin_name, create_plugin

VENV_BIN = Path(sys.executable).parent


def test_create_plugin_files(tmp_path):
    target = create_plugin("hello", tmp_path)
    assert target == tmp_path / "crm-hello"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "README.md", "crm_hello/__init__.py", "pyproject.toml", "tests/test_plugin.py",
    ]
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["name"] == "crm-hello"
    assert project["project"]["entry-points"]["crm.plugins"] == {"hello": "crm_hello"}
    namespace: dict = {}
    exec(compile((target / "crm_hello" / "__init__.py").read_text(), "crm_hello", "exec"), namespace)
    assert namespace["PLUGIN"].name == "hello" and namespace["PLUGIN"].version == "0.1.0"
    registered = []
    namespace["crm_register_entities"](registered.append)
    assert registered[0].name == "item" and registered[0].field("name").required


@pytest.mark.parametrize("name", ["", "Hello", "9lives", "has space", "dash-ed", "a__b", "end_", "core", "import"])
def test_bad_names(name):
    with pytest.raises(ScaffoldError, match="invalid plugin name"):
        check_plugin_name(name)


def test_description_is_made_safe(tmp_path):
    target = create_plugin("quotes", tmp_path, description='Say "hi" \\ and\nbye')
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["description"] == "Say 'hi' / and bye"
    compile((target / "crm_quotes" / "__init__.py").read_text(), "x", "exec")


def test_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScaffoldError, match="not a directory"):
        create_plugin("hello", tmp_path / "file")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_generated_plugin_installs_and_its_tests_pass(tmp_path):
    """pip install the generated package into this venv, run its tests, enable it with crm."""
    name = f"scaffold_probe_{os.getpid()}"
    dist = f"crm-{name.replace('_', '-')}"
    done = subprocess.run([str(VENV_BIN / "crm"), "plugin", "new", name, "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    target = tmp_path / dist
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_DATABASE_URL", "CRM_DEPLOYMENT", "PYTHONPATH")}
    try:
        install = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(target)],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert install.returncode == 0, install.stdout + install.stderr
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target / "tests")],
            cwd=target, capture_output=True, text=True, timeout=300, env=env,
        )
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "3 passed" in tests.stdout

        def crm(*args: str) -> str:
            result = subprocess.run([str(VENV_BIN / "crm"), *args], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=120, env=env)
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
            return result.stdout

        crm("init", "dep")
        assert name in crm("-d", "dep", "plugins", "list")
        assert f"{name}_item" in crm("-d", "dep", "plugins", "enable", name)
        assert "status" in crm("-d", "dep", "fields", "list", f"{name}_item")
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", dist],
                       capture_output=True, text=True, timeout=300, env=env)
