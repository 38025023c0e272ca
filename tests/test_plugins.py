"""Plugins: discovery of a pip-installed package, enabling per deployment, ``requires`` ordering,
clear errors for missing, broken and clashing plugins, and disabling that keeps the data."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import crmcore
from crmcore import EntityType, Field, FieldType, NotFound, PluginError, PluginInfo, hookimpl
from crmcore.plugins import AvailablePlugin, discover, get_plugin_manager

# -- discovery and enabling ---------------------------------------------------------------------


def test_discover_finds_the_installed_plugin(sample_plugin):
    found = discover()
    sample = found["sample"]
    assert sample.error is None
    assert sample.info.name == "sample" and sample.info.version == "0.1.0"
    assert sample.source == "crm-sample-plugin"
    broken = found["sample_broken"]
    assert "cannot be imported" in broken.error
    assert "crm_sample_plugin_dependency_that_does_not_exist" in broken.error


async def test_enabled_plugin_gets_its_tables_and_records_work(sample_plugin, make_deployment):
    dep = await make_deployment(plugins=["sample"])
    ticket_type = dep.registry.get("sample_ticket")
    assert ticket_type is not None and ticket_type.plugin == "sample" and ticket_type.table == "sample_ticket"
    assert dep.registry.get("ticket") is None  # namespaced by the plugin's name
    assert "sample_ticket" in await dep.schema.tables()
    assert "sample_ticket__opened_at" in await dep.schema.indexes()
    assert dep.registry.get("contact").field("sample_support_level") is not None

    contact = await dep.records.create("contact", {"last_name": "Kaya", "sample_support_level": "gold"})
    ticket = await dep.records.create("sample_ticket", {"subject": "Printer on fire", "contact": contact["id"]})
    assert ticket["priority"] == "normal" and ticket["contact"] == contact["id"]
    with pytest.raises(crmcore.ValidationError) as exc:
        await dep.records.create("sample_ticket", {"priority": "urgent"})
    assert {e.field for e in exc.value.errors} == {"priority", "subject"}
    page = await dep.records.list("sample_ticket", crmcore.ListQuery(search="printer"))
    assert [r["id"] for r in page.items] == [ticket["id"]]


async def test_plugin_not_enabled_is_not_loaded(sample_plugin, make_deployment):
    dep = await make_deployment()
    assert dep.registry.get("sample_ticket") is None
    assert "sample" not in dict(dep.pm.list_name_plugin())


async def test_missing_plugin_is_named(make_deployment):
    with pytest.raises(PluginError) as exc:
        await make_deployment(plugins=["no_such_plugin"])
    message = str(exc.value)
    assert "'no_such_plugin'" in message and "not installed" in message


async def test_broken_plugin_is_named(sample_plugin, make_deployment):
    with pytest.raises(PluginError) as exc:
        await make_deployment(plugins=["sample_broken"])
    message = str(exc.value)
    assert "'sample_broken'" in message and "crm-sample-plugin" in message and "cannot be imported" in message


async def test_set_plugins_refuses_a_missing_plugin_before_writing(dep):
    before = (dep.path / "crm.toml").read_text()
    with pytest.raises(PluginError) as exc:
        dep.set_plugins(["no_such_plugin"])
    assert "no_such_plugin" in str(exc.value)
    assert (dep.path / "crm.toml").read_text() == before
    with pytest.raises(PluginError):
        await dep.set_plugins_live(["no_such_plugin"])
    assert dep.registry.get("contact") is not None  # still working


# -- requires -----------------------------------------------------------------------------------


def fake_plugin(name: str, requires: list[str] = (), **hooks) -> AvailablePlugin:
    module = types.ModuleType(f"fake_{name}")
    module.PLUGIN = PluginInfo(name=name, version="1", requires=list(requires))
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return AvailablePlugin(name=name, source=f"fake-{name}", info=module.PLUGIN, module=module)


def test_requires_orders_plugins():
    available = {p.name: p for p in (
        fake_plugin("c", ["b"]), fake_plugin("b", ["a"]), fake_plugin("a"), fake_plugin("d"),
    )}
    pm = get_plugin_manager(["c", "d", "b", "a"], available)
    assert [name for name, _ in pm.list_name_plugin()] == ["core", "a", "b", "c", "d"]


def test_missing_requirement_is_named():
    available = {p.name: p for p in (fake_plugin("reports", ["crm_charts"]), fake_plugin("crm_charts"))}
    with pytest.raises(PluginError) as exc:
        get_plugin_manager(["reports"], available)
    message = str(exc.value)
    assert "'reports' requires plugin 'crm_charts'" in message and "not enabled" in message
    with pytest.raises(PluginError) as exc:
        get_plugin_manager(["reports"], {"reports": available["reports"]})
    assert "crm_charts" in str(exc.value)


def test_requirement_cycle_is_named():
    available = {p.name: p for p in (fake_plugin("a", ["b"]), fake_plugin("b", ["a"]))}
    with pytest.raises(PluginError) as exc:
        get_plugin_manager(["a", "b"], available)
    assert "cycle" in str(exc.value) and "a -> b -> a" in str(exc.value)


def test_hook_implementation_without_a_spec_is_refused():
    available = {"typo": fake_plugin("typo", crm_register_entitys=lambda register: None)}
    with pytest.raises(PluginError) as exc:
        get_plugin_manager(["typo"], available)
    assert "crm_register_entitys" in str(exc.value)


async def test_required_plugin_entities_are_there_for_the_dependent(make_deployment):
    """A plugin extends an entity of the plugin it requires."""

    class Base:
        PLUGIN = PluginInfo(name="base", version="1")

        @staticmethod
        @hookimpl
        def crm_register_entities(register):
            register(EntityType(name="thing", fields=[Field(name="label", type=FieldType.TEXT)]))

    class Addon:
        PLUGIN = PluginInfo(name="addon", version="1", requires=["base"])

        @staticmethod
        @hookimpl
        def crm_extend_entities(add_field):
            add_field("base_thing", Field(name="addon_weight", type=FieldType.DECIMAL))

    dep = await make_deployment(extra_plugins=[Base, Addon])
    record = await dep.records.create("base_thing", {"label": "x", "addon_weight": "1.5"})
    assert str(record["addon_weight"]) == "1.5"


# -- clashes ------------------------------------------------------------------------------------


def entity_plugin(plugin_name: str, *names: str):
    class Plugin:
        PLUGIN = PluginInfo(name=plugin_name, version="1")

        @staticmethod
        @hookimpl
        def crm_register_entities(register):
            for name in names:
                register(EntityType(name=name, fields=[Field(name="title", type=FieldType.TEXT)]))

    return Plugin


async def test_duplicate_entity_is_refused_clearly(make_deployment):
    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[entity_plugin("shop", "order", "order")])
    message = str(exc.value)
    assert "'shop'" in message and "'shop_order'" in message and "already declared" in message


async def test_entity_clashing_with_a_core_table_is_refused(make_deployment):
    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[entity_plugin("crm", "contact")])
    message = str(exc.value)
    assert "'crm'" in message and "crm_contact" in message and "already used" in message


async def test_two_plugins_with_the_same_entity_name_do_not_collide(make_deployment):
    dep = await make_deployment(extra_plugins=[entity_plugin("shop", "order"), entity_plugin("kitchen", "order")])
    assert {"shop_order", "kitchen_order"} <= set(dep.registry.entities)
    await dep.records.create("shop_order", {"title": "a"})
    assert (await dep.records.list("kitchen_order", crmcore.ListQuery(count=True))).total == 0


async def test_invalid_entity_name_is_refused(make_deployment):
    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[entity_plugin("shop", "Bad Name")])
    assert "'Bad Name'" in str(exc.value) and "invalid" in str(exc.value)


async def test_plugin_field_clashing_with_an_existing_field_is_refused(make_deployment):
    class Clash:
        PLUGIN = PluginInfo(name="clash", version="1")

        @staticmethod
        @hookimpl
        def crm_extend_entities(add_field):
            add_field("contact", Field(name="email", type=FieldType.TEXT))

    with pytest.raises(PluginError) as exc:
        await make_deployment(extra_plugins=[Clash])
    assert "'clash'" in str(exc.value) and "'email'" in str(exc.value)


# -- disabling ----------------------------------------------------------------------------------


async def test_disabling_keeps_the_table_and_data(sample_plugin, make_deployment):
    dep = await make_deployment(plugins=["sample"])
    contact = await dep.records.create("contact", {"last_name": "Kaya", "sample_support_level": "gold"})
    ticket = await dep.records.create("sample_ticket", {"subject": "Keep me"})

    await dep.set_plugins_live([])
    assert dep.settings.plugins == []
    assert "sample" not in (dep.path / "crm.toml").read_text()
    assert dep.registry.get("sample_ticket") is None
    with pytest.raises(NotFound):
        await dep.records.get("sample_ticket", ticket["id"])
    assert "sample_support_level" not in await dep.records.get("contact", contact["id"])
    assert "sample_ticket" in await dep.schema.tables()  # the table and its rows stay
    assert await dep.db.fetchval('SELECT "subject" FROM sample_ticket WHERE "id" = ?', (ticket["id"],)) == "Keep me"
    assert "sample_support_level" in await dep.schema.columns("crm_contact")
    assert "sample_ticket" not in {c.table for c in dep.pending_changes}

    await dep.close()
    reopened = await make_deployment(path=dep.path)
    assert reopened.registry.get("sample_ticket") is None
    reopened.set_plugins(["sample"])
    await reopened.close()
    again = await make_deployment(path=dep.path)
    assert (await again.records.get("sample_ticket", ticket["id"]))["subject"] == "Keep me"
    assert (await again.records.get("contact", contact["id"]))["sample_support_level"] == "gold"


async def test_disabling_proposes_no_drop_of_plugin_columns(sample_plugin, make_deployment):
    dep = await make_deployment(plugins=["sample"])
    await dep.set_plugins_live([])
    assert dep.pending_changes == []


async def test_enabling_live_creates_the_tables(sample_plugin, make_deployment):
    dep = await make_deployment()
    await dep.set_plugins_live(["sample"])
    assert "sample_ticket" in await dep.schema.tables()
    created = await dep.records.create("sample_ticket", {"subject": "new"})
    assert created["priority"] == "normal"


@pytest.mark.slow
def test_plugin_authors_test_runs_with_crmcore_pytest_plugin(sample_plugin, tmp_path):
    """The plugin's own test, run by pytest in its folder, gets make_deployment from crmcore."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=sample_plugin, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout  # once on SQLite, once on PostgreSQL
