"""``crm rules ...``: automation rules managed from the terminal, through the real CLI, on SQLite
and PostgreSQL. Records are written through the service (the CLI has no record commands); the
rules they trigger fire right after the write commits, so the firing log is read at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import crmcore

from .conftest import crm, run

WELCOME = {"name": "welcome", "entity": "contact", "trigger": {"type": "created"},
           "actions": [{"type": "set_field", "field": "job_title", "value": "Lead"}]}


@pytest.fixture
def path(tmp_path: Path, crm_backend) -> Path:
    """A fresh deployment on the test's backend."""
    folder = tmp_path / "acme"
    crmcore.init_deployment(folder, database_url=crm_backend.database_url)
    return folder


def _file(tmp_path: Path, data, name: str = "rules.json") -> Path:
    file = tmp_path / name
    file.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return file


def _contact(path: Path, **values) -> dict:
    async def create(dep):
        return await dep.records.create("contact", {"last_name": "Lovelace", **values})
    return run(path, create)


def _get_contact(path: Path, record_id: int) -> dict:
    return run(path, lambda dep: dep.records.get("contact", record_id))


def _rules(path: Path) -> list[dict]:
    return json.loads(crm("rules", "list", "--json", deployment=path).output)


def test_add_a_rule_then_a_contact_fires_it_and_the_log_shows_it(path, tmp_path):
    assert "No automation rules yet; add some with: crm rules add FILE" in crm("rules", "list", deployment=path).output
    assert "No firings yet" in crm("rules", "firings", deployment=path).output
    out = crm("rules", "add", _file(tmp_path, WELCOME), deployment=path).output
    assert "Added rule" in out and "welcome: contact, created, 1 action" in out
    listing = crm("rules", "list", deployment=path).output
    assert listing.splitlines()[0].split() == ["id", "name", "entity", "trigger", "active", "actions", "description"]
    assert listing.splitlines()[2].split()[1:] == ["welcome", "contact", "created", "yes", "1"]

    contact = _contact(path)
    assert _get_contact(path, contact["id"])["job_title"] == "Lead"
    log = crm("rules", "firings", deployment=path).output
    row = log.splitlines()[2].split()
    assert row[3:8] == ["welcome", "contact", str(contact["id"]), "created", "done"], log
    [firing] = json.loads(crm("rules", "firings", "--json", deployment=path).output)
    assert firing["rule"] == "welcome" and firing["record_id"] == contact["id"] and firing["outcome"] == "done"
    assert firing["error"] is None and firing["rule_id"] == _rules(path)[0]["id"]

    # The filters: by rule (name or id), entity, record, outcome; the page size.
    for args in (["--rule", "welcome"], ["--rule", str(firing["rule_id"])], ["--entity", "contact"],
                 ["--record", str(contact["id"])], ["--outcome", "done"]):
        assert [f["id"] for f in json.loads(crm("rules", "firings", "--json", *args, deployment=path).output)] \
            == [firing["id"]], args
    assert "No firings match" in crm("rules", "firings", "--outcome", "failed", deployment=path).output
    assert "No firings match" in crm("rules", "firings", "--entity", "deal", deployment=path).output
    second = _contact(path, last_name="Byron")
    newest = json.loads(crm("rules", "firings", "--json", deployment=path).output)
    assert [f["record_id"] for f in newest] == [second["id"], contact["id"]]  # newest first
    out = crm("rules", "firings", "--limit", "1", deployment=path).output
    assert f"(more: --before {newest[0]['id']})" in out
    older = json.loads(crm("rules", "firings", "--json", "--before", newest[0]["id"], deployment=path).output)
    assert [f["id"] for f in older] == [firing["id"]]
    out = crm("rules", "firings", "--outcome", "maybe", deployment=path, ok=False).output
    assert "'maybe' is not one of 'done', 'skipped', 'failed'" in out
    assert "rule 'nope' does not exist" in crm("rules", "firings", "--rule", "nope", deployment=path, ok=False).output


def test_bad_rule_files_are_refused_clearly_and_add_nothing(path, tmp_path):
    bad_delay = {**WELCOME, "trigger": {"type": "created", "delay": "soon"}}
    result = crm("rules", "add", _file(tmp_path, bad_delay), deployment=path, ok=False)
    assert result.exit_code == 1
    assert "Error: rule welcome was not added: trigger.delay: a duration" in result.output
    # A list: every refused rule is named, and none is added (not even the good one).
    batch = [WELCOME, {**WELCOME, "name": "other", "actions": [{"type": "teleport"}]}, 7,
             {**WELCOME, "name": "welcome"}]
    out = crm("rules", "add", _file(tmp_path, batch), deployment=path, ok=False).output
    assert "nothing was added; 3 of 4 rules refused:" in out
    assert "rule 2 of 4 (other): actions[0].type: an action: " in out and "set_field" in out
    assert "rule 3 of 4: not a JSON object" in out
    assert "rule 4 of 4 (welcome): name: rule 1 is named 'welcome' too" in out
    assert _rules(path) == []
    # Unknown keys, a bad entity, a missing trigger: each named.
    for data, field in (({**WELCOME, "colour": "red"}, "colour: a rule has"),
                        ({**WELCOME, "entity": "spaceship"}, "entity: an entity type: "),
                        ({**WELCOME, "trigger": {"type": "created", "when": "now"}},
                         "trigger.when: a created trigger takes"),
                        ({k: v for k, v in WELCOME.items() if k != "trigger"}, "trigger: an object with type")):
        assert field in crm("rules", "add", _file(tmp_path, data), deployment=path, ok=False).output
    # Not JSON, empty, an empty list, no such file.
    assert "not valid JSON" in crm("rules", "add", _file(tmp_path, "{nope"), deployment=path, ok=False).output
    assert "is empty: expected JSON" in crm("rules", "add", _file(tmp_path, ""), deployment=path, ok=False).output
    assert "holds no rules" in crm("rules", "add", _file(tmp_path, []), deployment=path, ok=False).output
    assert "does not exist" in crm("rules", "add", tmp_path / "missing.json", deployment=path, ok=False).output
    assert _rules(path) == []
    # A name taken by a stored rule.
    crm("rules", "add", _file(tmp_path, WELCOME), deployment=path)
    out = crm("rules", "add", _file(tmp_path, WELCOME), deployment=path, ok=False).output
    assert "rule welcome was not added: name: a rule named 'welcome' exists" in out
    assert [r["name"] for r in _rules(path)] == ["welcome"]


def test_add_several_from_standard_input_and_list_them(path):
    batch = [WELCOME, {"name": "big-deals", "entity": "deal", "description": "Tell sales about big deals",
                       "trigger": {"type": "field_changed", "field": "amount"},
                       "actions": [{"type": "notify", "to": {"role": "admin"}, "title": "{{ record.name }}"}]},
             {"name": "follow-up", "entity": "contact", "trigger": {"type": "created", "delay": "2d"},
              "unless": {"has": {"entity": "activity", "via": "contact"}},
              "actions": [{"type": "set_field", "field": "source", "value": "cold"}], "active": False}]
    out = crm("rules", "add", "-", input=json.dumps(batch), deployment=path).output
    assert out.count("Added rule") == 3 and "follow-up: contact, created + 2d, 1 action, disabled" in out
    listing = crm("rules", "list", deployment=path).output
    assert "field_changed amount" in listing and "Tell sales about big deals" in listing
    assert listing.splitlines()[4].split()[1:6] == ["follow-up", "contact", "created", "+", "2d"]
    assert [r["name"] for r in _rules(path)] == ["welcome", "big-deals", "follow-up"]
    only = json.loads(crm("rules", "list", "--entity", "contact", "--json", deployment=path).output)
    assert [r["name"] for r in only] == ["welcome", "follow-up"] and only[1]["active"] is False
    assert "No automation rules for company" in crm("rules", "list", "--entity", "company", deployment=path).output
    assert "no entity type 'spaceship'" in crm("rules", "list", "--entity", "spaceship", deployment=path,
                                               ok=False).output


def test_show_set_enable_disable_remove(path, tmp_path):
    crm("rules", "add", _file(tmp_path, WELCOME), deployment=path)
    rule_id = _rules(path)[0]["id"]
    shown = crm("rules", "show", "welcome", deployment=path).output
    assert f"Rule {rule_id}: welcome (active)" in shown and "1. set_field" in shown and '"value":"Lead"' in shown
    as_json = json.loads(crm("rules", "show", rule_id, "--json", deployment=path).output)
    assert {k: as_json[k] for k in WELCOME} == WELCOME and as_json["id"] == rule_id
    for args in (["show", "nope"], ["show", "9999"], ["set", "9999", _file(tmp_path, {"active": False})],
                 ["enable", "9999"], ["disable", "nope"], ["remove", "9999", "--yes"],
                 ["run", "9999", "--record", "1"]):
        out = crm("rules", *args, deployment=path, ok=False).output
        assert "Error: rule" in out and "does not exist" in out, args

    # set: only the keys given change; what show --json prints can be sent back.
    out = crm("rules", "set", "welcome", _file(tmp_path, {"condition": {"field": "source", "op": "eq", "value": "web"},
                                                           "description": "web leads"}), deployment=path).output
    assert f"Saved rule {rule_id} welcome: contact, created, 1 action" in out
    changed = json.loads(crm("rules", "show", "welcome", "--json", deployment=path).output)
    assert changed["condition"] == {"field": "source", "op": "eq", "value": "web"}
    assert changed["actions"] == WELCOME["actions"] and changed["description"] == "web leads"
    crm("rules", "set", rule_id, "-", input=json.dumps({**changed, "name": "web-welcome"}), deployment=path)
    assert [r["name"] for r in _rules(path)] == ["web-welcome"]
    out = crm("rules", "set", "web-welcome", _file(tmp_path, {"trigger": {"type": "created", "delay": "-5m"}}),
              deployment=path, ok=False).output
    assert "rule web-welcome was not changed: trigger.delay: a duration" in out
    assert "expected a JSON object" in crm("rules", "set", "web-welcome", _file(tmp_path, [WELCOME]),
                                           deployment=path, ok=False).output
    assert _rules(path)[0]["trigger"] == {"type": "created"}

    # disable: a new web lead is left alone; enable: the next one is handled.
    assert f"Rule {rule_id} web-welcome is disabled" in crm("rules", "disable", "web-welcome", deployment=path).output
    assert "is disabled already" in crm("rules", "disable", rule_id, deployment=path).output
    assert _rules(path)[0]["active"] is False and "no" in crm("rules", "list", deployment=path).output.splitlines()[2]
    quiet = _contact(path, source="web")
    assert _get_contact(path, quiet["id"])["job_title"] is None
    assert "(disabled)" in crm("rules", "show", "web-welcome", deployment=path).output
    assert f"Rule {rule_id} web-welcome is enabled" in crm("rules", "enable", rule_id, deployment=path).output
    loud = _contact(path, source="web")
    assert _get_contact(path, loud["id"])["job_title"] == "Lead"
    fired = json.loads(crm("rules", "firings", "--json", deployment=path).output)
    assert [f["record_id"] for f in fired] == [loud["id"]]

    # remove: asks first (no is no), --yes does not; the firing log stays.
    result = crm("rules", "remove", "web-welcome", input="n\n", deployment=path, ok=False)
    assert "Remove rule" in result.output and "Aborted" in result.output
    assert len(_rules(path)) == 1
    assert f"Removed rule {rule_id} web-welcome" in crm("rules", "remove", "web-welcome", input="y\n",
                                                        deployment=path).output
    assert _rules(path) == []
    crm("rules", "add", _file(tmp_path, WELCOME), deployment=path)
    assert "Removed rule" in crm("rules", "remove", "welcome", "--yes", deployment=path).output
    assert "rule 'welcome' does not exist" in crm("rules", "remove", "welcome", "--yes", deployment=path,
                                                  ok=False).output
    assert _rules(path) == []
    log = json.loads(crm("rules", "firings", "--json", "--rule", rule_id, deployment=path).output)
    assert [f["rule"] for f in log] == ["web-welcome"]


def test_run_a_rule_by_hand(path, tmp_path):
    rules = [{**WELCOME, "active": False},
             {"name": "web-only", "entity": "contact", "trigger": {"type": "field_changed", "field": "email"},
              "condition": {"field": "source", "op": "eq", "value": "web"},
              "actions": [{"type": "set_field", "field": "job_title", "value": "Web lead"}]},
             {"name": "call-owner", "entity": "contact", "trigger": {"type": "field_changed", "field": "email"},
              "actions": [{"type": "create_task", "subject": "Call {{ record.last_name }}", "assignee": "owner"}]}]
    crm("rules", "add", _file(tmp_path, rules), deployment=path)
    contact = _contact(path)  # no rule fires: welcome is off, the others watch the e-mail
    assert _get_contact(path, contact["id"])["job_title"] is None

    out = crm("rules", "run", "welcome", "--record", contact["id"], deployment=path).output  # even when off
    assert f"Rule welcome ran on contact {contact['id']}: done" in out
    assert _get_contact(path, contact["id"])["job_title"] == "Lead"
    out = crm("rules", "run", "web-only", "--record", contact["id"], deployment=path).output
    assert f"Rule web-only ran on contact {contact['id']}: skipped (" in out  # its condition does not hold
    assert _get_contact(path, contact["id"])["job_title"] == "Lead"
    result = crm("rules", "run", "call-owner", "--record", contact["id"], deployment=path, ok=False)
    assert result.exit_code == 1
    assert f"Error: rule call-owner failed on contact {contact['id']}: actions[0] (create_task): " in result.output
    assert "has no owner" in result.output

    result = crm("rules", "run", "welcome", deployment=path, ok=False)
    assert result.exit_code == 2 and "rule welcome acts on contact records: give --record ID" in result.output
    assert "contact 99999 does not exist" in crm("rules", "run", "welcome", "--record", "99999", deployment=path,
                                                 ok=False).output
    log = json.loads(crm("rules", "firings", "--json", deployment=path).output)
    assert [(f["rule"], f["outcome"], f["trigger"]) for f in log] == [
        ("call-owner", "failed", "run by hand"), ("web-only", "skipped", "run by hand"),
        ("welcome", "done", "run by hand")]
    table = crm("rules", "firings", "--outcome", "failed", deployment=path).output
    assert "call-owner" in table and "has no owner" in table and "welcome" not in table


def test_actions_lists_the_core_action_types(path):
    out = crm("rules", "actions", deployment=path).output
    assert out.splitlines()[0].split() == ["name", "label", "plugin", "description"]
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert names == sorted(["create_task", "notify", "set_field", "move_stage", "create_record", "webhook",
                            "generate_document"])
    found = json.loads(crm("rules", "actions", "--json", deployment=path).output)
    set_field = next(a for a in found if a["name"] == "set_field")
    assert set_field == {"name": "set_field", "label": "Set a field", "plugin": "core",
                         "description": "give a field of the record a value"}
