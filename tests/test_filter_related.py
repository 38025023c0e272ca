"""Related-records conditions in the filter language: ``{"has": {entity, via, filter}}``.

Through the records service (as the system, agents and limited roles) and through the HTTP API;
every test runs on SQLite and PostgreSQL (``dep`` and ``crm_client`` are parametrised by
crmcore.testing's ``crm_backend``).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from crmcore import ListQuery, ValidationError
from crmcore.auth.permissions import BUILTIN_ROLES, Actor, Role, Scope, effective_grants
from crmcore.testing import crm_user

from .conftest import problem

CALLS = {"field": "kind", "op": "in", "value": ["call", "email"]}


def has(entity: str, via: str, filter: dict | None = None) -> dict:
    body = {"entity": entity, "via": via}
    if filter is not None:
        body["filter"] = filter
    return {"has": body}


async def ids(records, entity: str, filter: dict | None, **options) -> set[int]:
    """The ids of every record the filter lists, paging one record at a time (so the cursor's
    parameters follow the filter's), checked against the count the same query gives."""
    first = await records.list(entity, ListQuery(filter=filter, limit=1, count=True, **options))
    found = [r["id"] for r in first.items]
    cursor = first.next_cursor
    while cursor is not None:
        page = await records.list(entity, ListQuery(filter=filter, limit=1, cursor=cursor, count=True, **options))
        assert page.total == first.total
        found += [r["id"] for r in page.items]
        cursor = page.next_cursor
    assert len(found) == len(set(found)) == first.total
    return set(found)


class World:
    """Two agents, Ali and Sam; contacts, companies, deals and activities between them.

    - contact ``kaya`` (Ali's): a call (Ali's), an e-mail (Sam's), a meeting in the trash
    - contact ``demir`` (Ali's): a note (Ali's)
    - contact ``yildiz`` (Ali's): only a call in the trash
    - company ``acme``: deal ``big`` (contact kaya) with a call, deal ``small`` without activity;
      company ``globex``: deal ``tiny`` without activity; company ``initech``: no deal
    - lab items ``one`` (an activity relates to it by related_entity/related_id) and ``two``
      (an activity names its id, but as a contact's)
    """

    def __init__(self, dep):
        self.dep = dep
        self.id: dict[str, int] = {}

    def actor(self, name: str, role: str | Role = "agent") -> Actor:
        role = BUILTIN_ROLES[role] if isinstance(role, str) else role
        return Actor(user_id=self.id[name], role=role, grants=effective_grants(role, {}), via="session")

    def records(self, name: str, role: str | Role = "agent"):
        return self.dep.records.as_actor(self.actor(name, role))

    async def build(self) -> World:
        system = self.dep.records
        for name in ("ali", "sam"):
            user = await system.create("user", {"name": name.capitalize(), "email": f"{name}@example.com"})
            self.id[name] = user["id"]
        ali, sam = self.records("ali"), self.records("sam")
        for name in ("kaya", "demir", "yildiz"):
            self.id[name] = (await ali.create("contact", {"last_name": name.capitalize(), "city": "Izmir"}))["id"]
        for name in ("acme", "globex", "initech"):
            self.id[name] = (await system.create("company", {"name": name.capitalize()}))["id"]
        for name, company, contact in (("big", "acme", "kaya"), ("small", "acme", None), ("tiny", "globex", None)):
            data = {"name": name, "company": self.id[company], "amount": "100"}
            if contact:
                data["contact"] = self.id[contact]
            self.id[name] = (await system.create("deal", data))["id"]
        for name in ("one", "two"):
            self.id[name] = (await system.create("lab_item", {"name": name}))["id"]

        async def activity(name, actor, kind, **links):
            data = {"kind": kind, "subject": name}
            for field, target in links.items():
                data[field] = target if field == "related_entity" else self.id[target]
            self.id[name] = (await actor.create("activity", data))["id"]

        await activity("kaya_call", ali, "call", contact="kaya")
        await activity("kaya_email", sam, "email", contact="kaya")
        await activity("kaya_meeting", ali, "meeting", contact="kaya")
        await activity("demir_note", ali, "note", contact="demir")
        await activity("yildiz_call", ali, "call", contact="yildiz")
        await activity("big_call", system, "call", deal="big")
        await activity("one_task", system, "task", related_entity="lab_item", related_id="one")
        await activity("not_two", system, "task", related_entity="contact", related_id="two")
        await system.delete("activity", self.id["kaya_meeting"])
        await system.delete("activity", self.id["yildiz_call"])
        return self

    def named(self, *names: str) -> set[int]:
        return {self.id[n] for n in names}


@pytest.fixture
async def world(dep):
    return await World(dep).build()


# -- meaning -----------------------------------------------------------------------------------


async def test_has_and_has_not_with_and_without_a_sub_filter(world):
    records = world.dep.records
    assert await ids(records, "contact", has("activity", "contact")) == world.named("kaya", "demir")
    assert await ids(records, "contact", {"not": has("activity", "contact")}) == world.named("yildiz")
    assert await ids(records, "contact", has("activity", "contact", CALLS)) == world.named("kaya")
    assert await ids(records, "contact", {"not": has("activity", "contact", CALLS)}) == world.named("demir", "yildiz")
    notes = has("activity", "contact", {"field": "kind", "op": "eq", "value": "note"})
    assert await ids(records, "contact", notes) == world.named("demir")
    # Beside other conditions, sorting, paging and search: parameters stay in order.
    mixed = {"and": [{"field": "city", "op": "eq", "value": "Izmir"},
                     {"or": [has("activity", "contact", {"field": "subject", "op": "startswith", "value": "demir"}),
                             {"field": "last_name", "op": "eq", "value": "Kaya"}]}]}
    assert await ids(records, "contact", mixed, sort=["-last_name"]) == world.named("kaya", "demir")
    assert await ids(records, "contact", has("activity", "contact", CALLS), search="kaya") == world.named("kaya")
    assert await ids(records, "contact", has("activity", "contact", CALLS), search="demir") == set()
    # Other relations of the same related entity, and other entities.
    assert await ids(records, "deal", has("activity", "deal")) == world.named("big")
    assert await ids(records, "company", has("deal", "company")) == world.named("acme", "globex")
    assert await ids(records, "company", {"not": has("deal", "company")}) == world.named("initech")


async def test_trashed_related_records_do_not_count(world):
    records = world.dep.records
    meetings = has("activity", "contact", {"field": "kind", "op": "eq", "value": "meeting"})
    assert await ids(records, "contact", meetings) == set()  # kaya's meeting is in the trash
    assert world.id["yildiz"] not in await ids(records, "contact", has("activity", "contact"))
    await records.restore("activity", world.id["yildiz_call"])
    assert await ids(records, "contact", has("activity", "contact", CALLS)) == world.named("kaya", "yildiz")
    # Listing the trash itself, the related records still count only while live.
    await records.delete("contact", world.id["yildiz"])
    trashed = await records.list("contact", ListQuery(filter=has("activity", "contact"), deleted=True))
    assert [r["id"] for r in trashed.items] == [world.id["yildiz"]]


async def test_via_related_for_plugin_entities(world):
    records = world.dep.records
    assert await ids(records, "lab_item", has("activity", "related")) == world.named("one")
    assert await ids(records, "lab_item", {"not": has("activity", "related")}) == world.named("two")
    tasks = has("activity", "related", {"field": "kind", "op": "eq", "value": "task"})
    assert await ids(records, "lab_item", tasks) == world.named("one")
    assert await ids(records, "lab_item", has("activity", "related", CALLS)) == set()
    # The pair names the entity: the activity naming lab item two's id is a contact's (the
    # contact with that id, if there is one), not the item's.
    contacts = world.named("kaya", "demir", "yildiz")
    assert await ids(records, "contact", has("activity", "related")) == contacts & {world.id["two"]}
    # A plugin entity relating to a core one by a relation field: lab_item.company.
    await records.update("lab_item", world.id["two"], {"company": world.id["initech"]})
    assert await ids(records, "company", has("lab_item", "company")) == world.named("initech")


async def test_nesting_with_a_fresh_alias_per_level(world):
    records = world.dep.records
    deals_with_activity = has("deal", "company", has("activity", "deal"))
    assert await ids(records, "company", deals_with_activity) == world.named("acme")
    assert await ids(records, "company", {"not": deals_with_activity}) == world.named("globex", "initech")
    # Three levels, each with its own parameters: company -> contact -> deal -> activity.
    three = has("contact", "company", {"and": [
        {"field": "city", "op": "eq", "value": "Izmir"},
        has("deal", "contact", {"and": [
            {"field": "amount", "op": "gte", "value": "50"},
            has("activity", "deal", CALLS),
        ]}),
    ]})
    assert await ids(records, "company", three) == set()  # no contact has a company yet
    await records.update("contact", world.id["kaya"], {"company": world.id["globex"]})
    assert await ids(records, "company", three) == world.named("globex")
    # Each level's outer id is its own level's: the deal of the activity must be the contact's.
    await records.update("deal", world.id["big"], {"contact": world.id["demir"]})
    assert await ids(records, "company", three) == set()
    # A level may be the same table as the one around it.
    same_table = has("activity", "contact", has("activity", "related", {"field": "kind", "op": "eq", "value": "task"}))
    assert await ids(records, "contact", same_table) == set()
    await records.create("activity", {"kind": "task", "subject": "follow-up", "related_entity": "activity",
                                      "related_id": world.id["demir_note"]})
    assert await ids(records, "contact", same_table) == world.named("demir")


# -- permissions -------------------------------------------------------------------------------


async def test_an_agent_counts_only_related_records_within_its_read_scope(world):
    ali, sam = world.records("ali"), world.records("sam")
    # Kaya's e-mail is Sam's: Ali does not see it, so it does not count for Ali.
    emails = has("activity", "contact", {"field": "kind", "op": "eq", "value": "email"})
    assert await ids(world.dep.records, "contact", emails) == world.named("kaya")
    assert await ids(ali, "contact", emails) == set()
    assert await ids(ali, "contact", {"not": emails}) == world.named("kaya", "demir", "yildiz")
    assert await ids(ali, "contact", has("activity", "contact")) == world.named("kaya", "demir")
    await world.dep.records.delete("activity", world.id["kaya_call"])
    assert await ids(ali, "contact", has("activity", "contact")) == world.named("demir")
    assert await ids(world.dep.records, "contact", has("activity", "contact")) == world.named("kaya", "demir")
    # Sam sees none of Ali's contacts, whatever their activities.
    assert await ids(sam, "contact", has("activity", "contact")) == set()
    # The big deal and its call belong to the system, not to Ali.
    assert await ids(world.records("ali", "read_only"), "company", has("deal", "company", has("activity", "deal"))) \
        == world.named("acme")
    assert await ids(ali, "company", has("deal", "company")) == set()


async def test_hidden_fields_of_the_related_entity_are_unknown(world):
    role = Role(name="no_kind", entities={"*": {"read": Scope.ALL}},
                fields={"activity": {"kind": "hidden", "deal": "hidden", "related_id": "hidden"}})
    limited = world.records("ali", role)
    assert await ids(limited, "contact", has("activity", "contact")) == world.named("kaya", "demir")
    with pytest.raises(ValidationError) as refused:
        await limited.list("contact", ListQuery(filter=has("activity", "contact", CALLS)))
    error = refused.value.errors[0]
    assert (error.field, error.code) == ("filter.has.filter.kind", "unknown_field")
    assert "subject" in error.message and "kind" not in error.message.split("known fields:")[1].split(", ")
    # A hidden relation is no way in either, nor a half-hidden related_entity/related_id pair.
    for entity, spec, path in (
        ("deal", has("activity", "deal"), "filter.has.via"),
        ("lab_item", has("activity", "related"), "filter.has.via"),
    ):
        with pytest.raises(ValidationError) as refused:
            await limited.list(entity, ListQuery(filter=spec))
        assert refused.value.errors[0].field == path
        assert "accepted: none" in refused.value.errors[0].message
    # The system sees every field.
    assert await ids(world.dep.records, "contact", has("activity", "contact", CALLS)) == world.named("kaya")


async def test_an_entity_the_actor_may_not_read_is_a_validation_error(world):
    role = Role(name="no_activities", entities={"*": {"read": Scope.ALL}, "activity": {"create": Scope.OWN}})
    limited = world.records("ali", role)
    assert len((await limited.list("contact", ListQuery())).items) == 3
    for spec, path in (
        (has("activity", "contact"), "filter.has.entity"),
        ({"or": [{"field": "city", "op": "eq", "value": "x"}, {"not": has("activity", "contact")}]},
         "filter.or[1].not.has.entity"),
        (has("deal", "contact", has("activity", "deal")), "filter.has.filter.has.entity"),
    ):
        with pytest.raises(ValidationError) as refused:
            await limited.list("contact", ListQuery(filter=spec))
        error = refused.value.errors[0]
        assert (error.field, error.code) == (path, "forbidden")
        assert "activities" in error.message


# -- errors ------------------------------------------------------------------------------------

BAD = [
    # (listed entity, filter, path, words of the message)
    ("contact", {"has": "activity"}, "filter.has", "object"),
    ("contact", {"has": None}, "filter.has", "object"),
    ("contact", {"has": {"entity": "activity", "via": "contact"}, "field": "city"}, "filter", "nothing beside"),
    ("contact", {"has": {"entity": "activity", "via": "contact", "where": {}}}, "filter.has.where", "unknown key"),
    ("contact", {"has": {"via": "contact"}}, "filter.has.entity", "needs 'entity'"),
    ("contact", {"has": {"entity": 5, "via": "contact"}}, "filter.has.entity", "needs 'entity'"),
    ("contact", has("nope", "contact"), "filter.has.entity", "unknown entity type 'nope'"),
    ("contact", {"has": {"entity": "activity"}}, "filter.has.via", "accepted: contact, related"),
    ("contact", has("activity", "company"), "filter.has.via", "accepted: contact, related"),
    ("contact", has("activity", "subject"), "filter.has.via", "accepted: contact, related"),
    ("contact", {"has": {"entity": "activity", "via": ["contact"]}}, "filter.has.via", "accepted: contact, related"),
    ("contact", has("deal", "company"), "filter.has.via", "accepted: contact"),
    ("contact", has("company", "name"), "filter.has.via", "accepted: none"),
    ("company", has("activity", "deal"), "filter.has.via", "accepted: company, related"),
    ("contact", has("activity", "contact", {}), "filter.has.filter", "a condition needs 'field'"),
    ("contact", has("activity", "contact", [CALLS]), "filter.has.filter", "a filter is an object"),
    ("contact", has("activity", "contact", {"field": "last_name", "op": "eq", "value": "Kaya"}),
     "filter.has.filter.last_name", "unknown field"),
    ("contact", has("activity", "contact", {"field": "kind", "op": "eq", "value": "dance"}),
     "filter.has.filter.kind", ""),
    ("contact", has("activity", "contact", {"field": "kind", "op": "near", "value": "x"}),
     "filter.has.filter.kind", "unknown operator"),
    ("contact", {"and": [{"field": "city", "op": "eq", "value": "Izmir"},
                         has("activity", "contact", {"field": "done", "op": "lt", "value": True})]},
     "filter.and[1].has.filter.done", "boolean"),
    ("company", has("deal", "company", {"not": has("activity", "deal", {"field": "nope", "op": "eq", "value": 1})}),
     "filter.has.filter.not.has.filter.nope", "unknown field"),
    ("company", has("deal", "company", has("contact", "company")), "filter.has.filter.has.via", "accepted: none"),
    ("company", has("contact", "company", has("deal", "contact", has("activity", "deal", has("activity", "related")))),
     "filter.has.filter.has.filter.has.filter.has", "at most 3"),
]


@pytest.mark.parametrize("entity, spec, path, words", BAD, ids=[b[2] + ":" + json.dumps(b[1])[:40] for b in BAD])
async def test_bad_related_conditions_name_the_path(dep, entity, spec, path, words):
    with pytest.raises(ValidationError) as refused:
        await dep.records.list(entity, ListQuery(filter=spec))
    assert [e.field for e in refused.value.errors] == [path], refused.value
    assert words in refused.value.errors[0].message


# -- through HTTP ------------------------------------------------------------------------------


def listed(client, entity: str, filter: dict, extra: str = "", headers: dict | None = None) -> set[int]:
    response = client.get(f"/api/{entity}?limit=500&filter={quote(json.dumps(filter))}{extra}", headers=headers)
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()["items"]}


def test_related_conditions_through_the_api(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent")

    def create(entity, data, headers=None):
        response = client.post(f"/api/{entity}", json=data, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    kaya = create("contact", {"last_name": "Kaya", "city": "Izmir"}, agent.headers)
    demir = create("contact", {"last_name": "Demir", "city": "Ankara"}, agent.headers)
    yildiz = create("contact", {"last_name": "Yıldız", "city": "Izmir"}, agent.headers)
    create("activity", {"kind": "call", "subject": "first call", "contact": kaya}, agent.headers)
    create("activity", {"kind": "email", "subject": "admin's mail", "contact": demir})  # the admin's
    gone = create("activity", {"kind": "call", "subject": "lost call", "contact": yildiz}, agent.headers)
    assert client.delete(f"/api/activity/{gone}").status_code == 204

    assert listed(client, "contact", has("activity", "contact")) == {kaya, demir}
    assert listed(client, "contact", {"not": has("activity", "contact")}) == {yildiz}
    assert listed(client, "contact", has("activity", "contact", CALLS)) == {kaya, demir}
    calls = has("activity", "contact", {"field": "kind", "op": "eq", "value": "call"})
    assert listed(client, "contact", calls) == {kaya}
    # The JSON filter beside query-string conditions (ANDed), and a count.
    assert listed(client, "contact", has("activity", "contact"), "&city=Izmir") == {kaya}
    counted = client.get(f"/api/contact?count=1&filter={quote(json.dumps(has('activity', 'contact')))}").json()
    assert counted["total"] == 2
    # The agent: only its own contacts, and only its own activities count.
    assert listed(client, "contact", has("activity", "contact"), headers=agent.headers) == {kaya}
    assert listed(client, "contact", {"not": has("activity", "contact")}, headers=agent.headers) == {demir, yildiz}
    # The generic pair, for plugin entities' records.
    create("activity", {"kind": "note", "subject": "about", "related_entity": "contact", "related_id": yildiz})
    assert listed(client, "contact", has("activity", "related")) == {yildiz}
    # Nesting.
    acme = create("company", {"name": "Acme"})
    create("company", {"name": "Globex"})
    deal = create("deal", {"name": "Big", "company": acme})
    assert listed(client, "company", has("deal", "company", has("activity", "deal"))) == set()
    create("activity", {"kind": "meeting", "subject": "kick-off", "deal": deal})
    assert listed(client, "company", has("deal", "company", has("activity", "deal"))) == {acme}


def test_related_condition_errors_are_422_naming_the_path(crm_client):
    client = crm_client()
    admin = client.headers
    saved = client.put("/api/auth/roles/no_activities", json={
        "entities": {"contact": {"read": "all"}, "company": {"read": "all"}, "deal": {"read": "all"}},
        "fields": {"deal": {"contact": "hidden", "name": "hidden"}},
    }, headers=admin)
    assert saved.status_code == 200, saved.text
    limited = crm_user(client, role="no_activities")
    cases = [
        (client.headers, "contact", has("nope", "contact"), "filter.has.entity"),
        (client.headers, "contact", has("activity", "deal"), "filter.has.via"),
        (client.headers, "contact", {"has": {"entity": "activity", "via": "contact", "x": 1}}, "filter.has.x"),
        (client.headers, "contact", has("activity", "contact", {"field": "bogus", "op": "eq", "value": 1}),
         "filter.has.filter.bogus"),
        (client.headers, "contact", {"and": [has("activity", "contact", {"field": "kind", "op": "eq", "value": 1})]},
         "filter.and[0].has.filter.kind"),
        (client.headers, "company", has("contact", "company", has("deal", "contact", has("activity", "deal", has(
            "activity", "related")))), "filter.has.filter.has.filter.has.filter.has"),
        (limited.headers, "contact", has("activity", "contact"), "filter.has.entity"),
        (limited.headers, "contact", has("deal", "contact"), "filter.has.via"),
        (limited.headers, "company", has("deal", "company", {"field": "name", "op": "eq", "value": "x"}),
         "filter.has.filter.name"),
    ]
    for headers, entity, spec, path in cases:
        response = client.get(f"/api/{entity}?filter={quote(json.dumps(spec))}", headers=headers)
        problem(response, 422, path)
    # A JSON filter beside query-string ones is the first of an "and".
    response = client.get(f"/api/contact?city=Izmir&filter={quote(json.dumps(has('nope', 'contact')))}")
    problem(response, 422, "filter.and[0].has.entity")
    # The limited role may still filter on what it may read.
    assert client.get(f"/api/company?filter={quote(json.dumps(has('deal', 'company')))}",
                      headers=limited.headers).status_code == 200
