"""Configuration bundles on SQLite and PostgreSQL: a bundle exported from one deployment and
applied to a fresh one gives the same configuration, the diff shows what would change before,
applying twice changes nothing, people and teams travel by e-mail and name; an edition's bundle
is applied by ``crm init``; the ``crm bundle`` commands."""

from __future__ import annotations

import json

import pytest

import crmcore
from crmcore.auth import SYSTEM
from crmcore.bundles import BundleError, apply, export_bundle, load_bundle, plan
from crmcore.contributions import Edition
from crmcore.hookspecs import hookimpl
from crmcore.plugins import PluginInfo
from crmcore.webforms import WebForm
from tests.conftest import crm


async def _configure(dep) -> None:
    """A consultant's work: every section of a bundle."""
    await dep.auth.create_team("Windows", actor=SYSTEM)
    manager = await dep.auth.create_user(name="Manager", email="manager@shop.example", password="manager password 1",
                                         role="agent", teams=["Windows"], actor=SYSTEM)
    await dep.add_custom_field("contact", crmcore.Field(name="loyalty", type="choice", choices=["gold", "silver"],
                                                        indexed=True, label="Loyalty"))
    await dep.add_custom_field("deal", crmcore.Field(name="measurement_at", type="datetime"))
    await dep.pipeline_service.create({"name": "windows", "entity": "deal", "label": "Window orders", "stages": [
        {"name": "new"}, {"name": "measured", "probability": 40}, {"name": "won", "kind": "won"},
        {"name": "lost", "kind": "lost"}]})
    await dep.auth.save_role(crmcore.Role(name="measurer", label="Measurer", entities={"deal": {"read": "all", "edit": "all"}}),
                             actor=SYSTEM)
    await dep.automation.create({
        "name": "lead-task", "entity": "contact", "trigger": {"type": "created"},
        "actions": [{"type": "create_task", "subject": "Call {{ record.last_name }}", "assignee": {"user": manager["id"]},
                     "due": "15m"}]}, actor=SYSTEM)
    await dep.forms.save(WebForm(name="windows", fields={"tel": "phone", "surname": "last_name"}, owner_id=manager["id"]))
    await dep.documents.create_template({"name": "contract", "entity": "deal", "format": "html", "label": "Contract",
                                         "body": "<h1>Contract for {{ record.name }}</h1>"}, actor=SYSTEM)
    await dep.reports.save({"name": "deals_by_stage", "entity": "deal", "group_by": ["stage"],
                            "measures": [{"op": "count"}]}, SYSTEM)


async def _same_people(dep) -> None:
    await dep.auth.create_user(name="Manager", email="manager@shop.example", password="manager password 1",
                               role="agent", actor=SYSTEM)


async def test_a_bundle_gives_a_fresh_deployment_the_same_configuration(make_deployment, tmp_path):
    source = await make_deployment()
    await _configure(source)
    bundle = await export_bundle(source)
    path = tmp_path / "shop.bundle.json"
    path.write_text(json.dumps(bundle, default=str))
    loaded = load_bundle(path)
    assert loaded["web_forms"][0]["owner"] == "manager@shop.example"  # people travel by e-mail
    assert loaded["rules"][0]["actions"][0]["assignee"] == {"user": "manager@shop.example"}

    target = await make_deployment()
    await _same_people(target)
    steps = await plan(target, loaded)
    assert {(s["section"], s["item"], s["change"]) for s in steps} >= {
        ("custom_fields", "contact.loyalty", "add"), ("pipelines", "windows", "add"), ("roles", "measurer", "add"),
        ("rules", "lead-task", "add"), ("web_forms", "windows", "add"), ("teams", "Windows", "add"),
        ("document_templates", "contract", "add"), ("reports", "deals_by_stage", "add")}
    await apply(target, loaded)
    again = await export_bundle(target)
    for section in ("custom_fields", "pipelines", "roles", "rules", "web_forms", "teams", "plugins",
                    "document_templates", "reports"):
        assert again[section] == bundle[section], section
    assert all(s["change"] == "same" for s in await plan(target, loaded))
    assert await apply(target, loaded) == []  # idempotent
    # and it works: the rule assigns the task to this deployment's manager
    contact = await target.records.create("contact", {"last_name": "Kaya", "loyalty": "gold"})
    manager = await target.auth.user_by_email("manager@shop.example")
    [task] = (await target.records.list("activity", crmcore.ListQuery(
        filter={"field": "contact", "op": "eq", "value": contact["id"]}))).items
    assert task["assignee"] == manager["id"]


async def test_the_diff_names_what_changes_and_nothing_is_deleted(make_deployment):
    source = await make_deployment()
    await _configure(source)
    bundle = await export_bundle(source)
    target = await make_deployment()
    await _same_people(target)
    await apply(target, bundle)
    await target.automation.create({"name": "local-only", "entity": "deal", "trigger": {"type": "created"},
                                    "actions": [{"type": "notify", "to": "owner", "title": "x"}]}, actor=SYSTEM)
    bundle["pipelines"][0]["label"] = "Window orders 2027"
    bundle["custom_fields"]["contact"][0]["choices"] = ["gold", "silver", "bronze"]
    steps = {(s["section"], s["item"]): s for s in await plan(target, bundle)}
    assert steps[("pipelines", "windows")]["change"] == "change" and steps[("pipelines", "windows")]["keys"] == ["label"]
    assert steps[("custom_fields", "contact.loyalty")]["keys"] == ["choices"]
    assert steps[("rules", "local-only")]["change"] == "only_here"
    await apply(target, bundle)
    assert target.pipelines["windows"].label == "Window orders 2027"
    assert [r.name for r in await target.automation.list()] == ["lead-task", "local-only"]


async def test_a_bundle_naming_someone_unknown_is_refused_clearly(make_deployment):
    source = await make_deployment()
    await _configure(source)
    bundle = await export_bundle(source)
    target = await make_deployment()
    with pytest.raises(BundleError, match="rules 'lead-task'.*manager@shop.example"):
        await apply(target, bundle)


def test_an_edition_bundle_is_applied_by_init_and_the_commands(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    shop = tmp_path / "shop"
    crm("init", str(shop), "--admin-email", "admin@example.com", "--admin-password-stdin", input="admin password 123\n")
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps({"format": 1, "custom_fields": {"contact": [
        {"name": "shoe_size", "type": "integer", "label": "Shoe size"}]},
        "teams": ["Salon"]}))
    shown = crm("bundle", "diff", str(bundle), deployment=shop)
    assert "+ custom_fields: contact.shoe_size" in shown.output and "+ teams: Salon" in shown.output
    assert "Aborted" in crm("bundle", "apply", str(bundle), deployment=shop, input="n\n", ok=False).output
    assert "Applied 2 changes." in crm("bundle", "apply", str(bundle), "--yes", deployment=shop).output
    assert "Nothing to change" in crm("bundle", "apply", str(bundle), deployment=shop).output
    exported = json.loads(crm("bundle", "export", deployment=shop).output)
    assert exported["custom_fields"]["contact"][0]["name"] == "shoe_size"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "gadgets": []}')
    assert "unknown section 'gadgets'" in crm("bundle", "diff", str(bad), deployment=shop, ok=False).output


def test_init_applies_the_editions_bundle(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)

    class SalonEdition:
        PLUGIN = PluginInfo(name="salon_edition", version="1")

        @staticmethod
        @hookimpl
        def crm_register_editions(register):
            register(Edition(name="parlour", label="Parlour", bundle={"format": 1, "custom_fields": {"contact": [
                {"name": "hair_colour", "type": "text"}]}}))

    import asyncio

    import crmcore.deployment as deployment_module

    original = deployment_module.get_plugin_manager  # an installed edition plugin, as far as crm init sees
    monkeypatch.setattr(deployment_module, "get_plugin_manager",
                        lambda plugins, extra_plugins=(), **kw: original(plugins, extra_plugins=(*extra_plugins, SalonEdition)))
    crm("init", str(tmp_path / "salon"), "--edition", "parlour")

    async def fields() -> list[str]:
        async with await crmcore.Deployment.open(tmp_path / "salon") as dep:
            return [f.name for f, _ in await dep.custom_fields("contact")]

    assert asyncio.run(fields()) == ["hair_colour"]
