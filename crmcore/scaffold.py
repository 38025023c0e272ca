"""``crm plugin new NAME``: write a working plugin package to start from.

The package is what a plugin on PyPI looks like: a ``pyproject.toml`` declaring the
``crm.plugins`` entry point, a module with ``PLUGIN = crmcore.PluginInfo(...)`` and one
``crm_register_entities`` implementation, and a test that boots a throw-away deployment with the
plugin enabled and creates a record through the records service.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

__all__ = ["ScaffoldError", "create_plugin", "check_plugin_name"]

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
MAX_NAME = 30
RESERVED = {"core", "crm", "crmcore", "custom", "test", "tests"}


class ScaffoldError(Exception):
    """The plugin cannot be created; the message says why and what is accepted."""


def check_plugin_name(name: str) -> None:
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and single underscores, "
            f"starting with a letter, at most {MAX_NAME} characters (e.g. hello, real_estate)"
        )
    if keyword.iskeyword(name) or name in RESERVED:
        raise ScaffoldError(f"invalid plugin name {name!r}: it is reserved; choose another")


PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "crm-$dash"
version = "0.1.0"
description = "$description"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["crmcore>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This is what makes crmcore find the plugin: `crm plugins enable $name`.
[project.entry-points."crm.plugins"]
$name = "crm_$name"

[tool.setuptools]
packages = ["crm_$name"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''')

INIT = Template('''\
"""crm-$dash: $description

A crmcore plugin. It reaches the core only through the hook contract and the public API
(``crmcore``). Its entity names are namespaced by the plugin's name: ``item`` becomes
``${name}_item``, with routes at ``/api/${name}_item``.
"""

import crmcore
from crmcore import EntityType, Field, FieldType, hookimpl

PLUGIN = crmcore.PluginInfo(
    name="$name",
    version="0.1.0",
    description="$description",
    requires=[],  # other plugins this one needs, e.g. ["telephony"]
)


@hookimpl
def crm_register_entities(register):
    """Declare the plugin's entity types (see crmcore/hookspecs.py for every hook)."""
    register(EntityType(name="item", label="$title item", title_field="name", fields=[
        Field(name="name", type=FieldType.TEXT, required=True, in_list=True),
        Field(name="status", type=FieldType.CHOICE, choices=["new", "active", "done"], default="new",
              in_list=True),
        Field(name="contact", type=FieldType.RELATION, target="contact"),
        Field(name="notes", type=FieldType.LONG_TEXT),
    ]))
''')

TEST = Template('''\
"""Boots a throw-away deployment with the plugin enabled and writes through the records service."""

import asyncio

import pytest

import crmcore

PLUGIN_NAME = "$name"
ENTITY = "${name}_item"


async def _deployment(path):
    """A new deployment in ``path`` with this plugin enabled (its tables created on open)."""
    crmcore.init_deployment(path)
    async with await crmcore.Deployment.open(path) as dep:
        dep.set_plugins([PLUGIN_NAME])
    return await crmcore.Deployment.open(path)


def test_plugin_declares_its_entity(tmp_path):
    async def check():
        dep = await _deployment(tmp_path / "crm")
        try:
            entity = dep.registry.get(ENTITY)
            assert entity is not None and entity.plugin == PLUGIN_NAME
            assert [f.name for f in entity.fields][:2] == ["name", "status"]
        finally:
            await dep.close()

    asyncio.run(check())


def test_create_and_list_a_record(tmp_path):
    async def check():
        dep = await _deployment(tmp_path / "crm")
        try:
            contact = await dep.records.create("contact", {"first_name": "Ada", "last_name": "Lovelace"})
            record = await dep.records.create(ENTITY, {"name": "First", "contact": contact["id"]})
            assert record["version"] == 1
            assert record["status"] == "new"  # the default
            page = await dep.records.list(ENTITY, crmcore.ListQuery(
                filter={"field": "status", "op": "eq", "value": "new"}, count=True,
            ))
            assert page.total == 1 and page.items[0]["name"] == "First"
        finally:
            await dep.close()

    asyncio.run(check())


def test_invalid_values_are_refused(tmp_path):
    async def check():
        dep = await _deployment(tmp_path / "crm")
        try:
            with pytest.raises(crmcore.ValidationError) as refused:
                await dep.records.create(ENTITY, {"status": "unknown"})
            assert {e.field for e in refused.value.errors} == {"name", "status"}
        finally:
            await dep.close()

    asyncio.run(check())
''')

README = Template('''\
# crm-$dash

$description

A plugin for [crmcore](https://github.com/). Install it next to crmcore and enable it in a
deployment:

```sh
pip install -e .
crm plugins enable $name
```

Run its tests:

```sh
pip install -e '.[test]'
pytest
```
''')


def create_plugin(name: str, directory: str | Path = ".", *, description: str = "") -> Path:
    """Write the package ``crm-<name>/`` into ``directory`` and return its path."""
    check_plugin_name(name)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError(f"{directory} is not a directory")
    dash = name.replace("_", "-")
    target = directory / f"crm-{dash}"
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another name or --dir")
    # One line, safe inside TOML and Python strings and a docstring as it is.
    description = " ".join(description.replace("\\", "/").replace('"', "'").split())
    description = description or f"The {name} plugin for crmcore"
    values = {"name": name, "dash": dash, "title": name.replace("_", " ").capitalize(), "description": description}
    files = {
        "pyproject.toml": PYPROJECT, f"crm_{name}/__init__.py": INIT,
        "tests/test_plugin.py": TEST, "README.md": README,
    }
    try:
        for relative, template in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template.substitute(values), encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
