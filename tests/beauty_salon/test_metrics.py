"""Client metrics of the beauty salon, on SQLite and PostgreSQL: kept on the contact after every
appointment write, equal to what is worked out by hand and by a plain SQL query, filterable and
sortable through the API ("not seen for N days"), rebuilt by recompute_all, shown on the card.

Visits happen in the past by moving the deployment's clock: the appointments are booked ahead
(the booking's own function, its price from the services), then the clock passes them and they
are marked arrived and completed (or no-show, cancelled). Staff work
every day around the clock, so booking rules never get in the way of the metrics under test."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from lxml import html

from crmcore import SYSTEM, Money, ValidationError
from plugins.beauty_salon import booking, metrics
from plugins.beauty_salon.entities import APPOINTMENT, APPOINTMENT_SERVICE, HOURS, SERVICE, STAFF, WEEKDAYS
from plugins.beauty_salon.scheduling import loading

from .conftest import MONDAY, at, eur, ok

UTC = dt.timezone.utc
BOOKED_ON = dt.datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
TODAY = dt.datetime(2027, 5, 1, 8, 0, tzinfo=UTC)
SETTINGS = {"currency": "EUR", "timezone": "UTC", "region": "DE", "in_process_worker": False}


def _at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T10:00:00+00:00")


class SystemSalon:
    """Staff, services and clients of one deployment, written as the system."""

    def __init__(self, dep):
        self.dep, self.records = dep, dep.records

    async def setup(self):
        self.dep.clock.set(BOOKED_ON)
        self.ayla = await self.staff("Ayla")
        self.berk = await self.staff("Berk")
        self.cut = (await self.records.create(SERVICE, {"name": "Cut", "duration": 30, "price": eur("40.00")}))["id"]
        self.colour = (await self.records.create(SERVICE, {"name": "Colour", "duration": 60, "price": eur("60.00")}))["id"]
        return self

    async def staff(self, name: str) -> int:
        staff = await self.records.create(STAFF, {"name": name})
        for day in WEEKDAYS:
            await self.records.create(HOURS, {"staff": staff["id"], "weekday": day, "start_time": "00:00", "end_time": "23:59"})
        return staff["id"]

    async def client(self, name: str) -> int:
        return (await self.records.create("contact", {"first_name": name, "last_name": "Client"}))["id"]

    async def book(self, client: int, day: str, staff: int, services: list[int], paid: str | None = None) -> int:
        """An appointment at 10:00 UTC on ``day`` booked as the salon books (its price from the
        services), and what was paid for it, if given."""
        appointment = await booking.book(self.dep, SYSTEM, {
            "client": client, "staff": staff, "services": services, "starts_at": _at(day).isoformat()})
        if paid:
            await self.records.update(APPOINTMENT, appointment["id"], {"paid": eur(paid)})
        return appointment["id"]

    async def mark(self, appointment: int, status: str) -> None:
        if status == "completed":
            await self.records.update(APPOINTMENT, appointment, {"status": "arrived"})
        reason = {"cancel_reason": "Ill"} if status == "cancelled" else {}
        await self.records.update(APPOINTMENT, appointment, {"status": status, **reason})

    async def history(self) -> dict:
        """Ana: three visits (Ayla, Ayla, Berk), a no-show, a cancellation and one booked ahead;
        Bora: one visit; Cem: nothing."""
        ana, bora, cem = await self.client("Ana"), await self.client("Bora"), await self.client("Cem")
        visits = [await self.book(ana, "2027-03-02", self.ayla, [self.cut], paid="40.00"),
                  await self.book(ana, "2027-03-12", self.ayla, [self.cut, self.colour]),
                  await self.book(ana, "2027-03-30", self.berk, [self.colour], paid="55.00")]
        no_show = await self.book(ana, "2027-04-05", self.berk, [self.cut])
        cancelled = await self.book(ana, "2027-04-10", self.berk, [self.colour])
        bora_visit = await self.book(bora, "2027-03-05", self.berk, [self.cut])
        self.dep.clock.set(TODAY)
        upcoming = await self.book(ana, "2027-06-01", self.ayla, [self.cut])
        for visit in [*visits, bora_visit]:
            await self.mark(visit, "completed")
        await self.mark(no_show, "no_show")
        await self.mark(cancelled, "cancelled")
        return {"ana": ana, "bora": bora, "cem": cem, "visits": visits, "no_show": no_show, "upcoming": upcoming}


async def _salon(make_deployment) -> SystemSalon:
    return await SystemSalon(await make_deployment(plugins=["beauty_salon"], **SETTINGS)).setup()


def _by_hand_ana(salon: SystemSalon) -> dict:
    return {"salon_visits": 3, "salon_first_visit": _at("2027-03-02"), "salon_last_visit": _at("2027-03-30"),
            "salon_average_days": Decimal("14.0"),  # 28 days over two gaps
            "salon_average_bill": Money(Decimal("66.67"), "EUR"),  # 200.00 / 3
            "salon_total_spent": Money(Decimal("195.00"), "EUR"),  # 40 paid + 100 (no payment: its price) + 55 paid
            "salon_no_shows": 1, "salon_favourite_staff": salon.ayla,
            # cut and colour were each booked in two visits: colour was the latest (30 March)
            "salon_favourite_service": salon.colour}


async def _fields(dep, client: int) -> dict:
    record = await dep.records.get("contact", client)
    return {name: record.get(name) for name in metrics.NAMES}


async def _plain_sql(dep, client: int) -> dict:
    """The same metrics by simple queries of their own, one question each."""
    db, table = dep.db, dep.registry.get(APPOINTMENT).table
    live = f'FROM "{table}" WHERE "client" = ? AND "deleted_at" IS NULL'
    visits, first, last = await db.fetchrow(
        f"SELECT COUNT(*), MIN(\"starts_at\"), MAX(\"starts_at\") {live} AND \"status\" = 'completed'", [client])
    no_shows = await db.fetchval(f"SELECT COUNT(*) {live} AND \"status\" = 'no_show'", [client])
    prices = await db.fetch(f"SELECT \"price\", \"paid\" {live} AND \"status\" = 'completed'", [client])
    staff = await db.fetch(f"SELECT \"staff\", COUNT(*) {live} AND \"status\" = 'completed' GROUP BY \"staff\" "
                           "ORDER BY COUNT(*) DESC, MAX(\"starts_at\") DESC", [client])
    first, last = (metrics._time(first), metrics._time(last))
    return {"salon_visits": visits, "salon_first_visit": first, "salon_last_visit": last,
            "salon_average_days": Decimal((last - first).days) / (visits - 1),
            "salon_total_spent": sum(Decimal(str(paid if paid is not None else price)) for price, paid in prices),
            "salon_average_bill": sum(Decimal(str(price)) for price, _ in prices) / len(prices),
            "salon_no_shows": no_shows, "salon_favourite_staff": staff[0][0]}


async def test_metrics_follow_the_visits_and_equal_the_hand_and_plain_sql_figures(make_deployment):
    salon = await _salon(make_deployment)
    made = await salon.history()
    ana = await _fields(salon.dep, made["ana"])
    assert ana == _by_hand_ana(salon)
    plain = await _plain_sql(salon.dep, made["ana"])
    assert plain["salon_average_bill"].quantize(Decimal("0.01")) == ana["salon_average_bill"].amount
    assert plain["salon_total_spent"] == ana["salon_total_spent"].amount
    assert {k: v for k, v in plain.items() if k not in ("salon_average_bill", "salon_total_spent")} == {
        k: ana[k] for k in plain if k not in ("salon_average_bill", "salon_total_spent")}

    bora = await _fields(salon.dep, made["bora"])
    assert bora["salon_visits"] == 1 and bora["salon_average_days"] is None  # no gap between visits yet
    assert bora["salon_average_bill"] == bora["salon_total_spent"] == Money(Decimal("40.00"), "EUR")
    assert bora["salon_favourite_staff"] == salon.berk and bora["salon_favourite_service"] == salon.cut
    assert (await _fields(salon.dep, made["cem"]))["salon_visits"] is None  # never booked: never written

    # a deleted no-show, a visit moved to another client
    await salon.records.delete(APPOINTMENT, made["no_show"])
    assert (await _fields(salon.dep, made["ana"]))["salon_no_shows"] == 0
    await salon.records.update(APPOINTMENT, made["visits"][2], {"client": made["bora"]})
    ana, bora = await _fields(salon.dep, made["ana"]), await _fields(salon.dep, made["bora"])
    assert (ana["salon_visits"], ana["salon_last_visit"], ana["salon_average_days"]) == (2, _at("2027-03-12"), Decimal("10.0"))
    assert ana["salon_total_spent"] == Money(Decimal("140.00"), "EUR")
    assert (bora["salon_visits"], bora["salon_last_visit"], bora["salon_total_spent"]) == (
        2, _at("2027-03-30"), Money(Decimal("95.00"), "EUR"))

    # Berk leaves (to the trash): he is nobody's favourite any more (a relation to him would be refused)
    await salon.records.delete(STAFF, salon.berk)
    assert await metrics.recompute(salon.dep, [made["bora"]]) == 1
    assert (await _fields(salon.dep, made["bora"]))["salon_favourite_staff"] is None


async def test_a_loaders_history_counts_with_its_service_rows(make_deployment):
    """History from another system, written as given: each visit first, its services after it
    (they move the favourite service), and a service row taken off again."""
    salon = await _salon(make_deployment)
    ana = await salon.client("Ana")
    rows = {}
    with loading():
        for day, services in (("2027-01-10", [salon.cut]), ("2027-02-10", [salon.colour, salon.cut])):
            visit = await salon.records.create(APPOINTMENT, {
                "client": ana, "staff": salon.ayla, "starts_at": _at(day).isoformat(), "status": "completed",
                "price": eur("50.00")})
            for position, service in enumerate(services, 1):
                rows[day, service] = (await salon.records.create(APPOINTMENT_SERVICE, {
                    "appointment": visit["id"], "service": service, "position": position, "duration": 30}))["id"]
    fields = await _fields(salon.dep, ana)
    assert (fields["salon_visits"], fields["salon_average_days"]) == (2, Decimal("31.0"))
    assert fields["salon_favourite_service"] == salon.cut  # twice, colour once
    with loading():
        await salon.records.delete(APPOINTMENT_SERVICE, rows["2027-02-10", salon.cut])
    assert (await _fields(salon.dep, ana))["salon_favourite_service"] == salon.colour  # once each: the latest


async def test_nobody_but_the_salon_writes_the_metrics(make_deployment):
    salon = await _salon(make_deployment)
    ana = (await salon.dep.records.create("contact", {"first_name": "Ana", "last_name": "Client"}))["id"]
    with pytest.raises(ValidationError) as refused:  # not even an admin or the system by hand
        await salon.dep.records.update("contact", ana, {"salon_visits": 12})
    assert [(e.field, e.code) for e in refused.value.errors] == [("salon_visits", "read_only")]
    with pytest.raises(ValidationError):
        await salon.dep.records.create("contact", {"first_name": "Bo", "salon_no_shows": 3})
    with pytest.raises(ValidationError):
        await salon.dep.records.bulk_create("contact", [{"first_name": "Cy"}, {"first_name": "Di", "salon_visits": 1}])
    current = await salon.dep.records.get("contact", ana)  # a form sending the value back unchanged is fine
    await salon.dep.records.update("contact", ana, {"city": "Berlin", "salon_visits": current["salon_visits"]})
    visit = await salon.book(ana, "2027-03-02", salon.ayla, [salon.cut])
    salon.dep.clock.set(TODAY)
    await salon.mark(visit, "completed")
    assert (await salon.dep.records.get("contact", ana))["salon_visits"] == 1


async def test_recompute_all_rebuilds_every_client_in_chunks(make_deployment, monkeypatch):
    salon = await _salon(make_deployment)
    made = await salon.history()
    stale = metrics._storing.set(True)  # figures gone stale, as a restored backup could leave them
    await salon.records.bulk_update("contact", [{"id": made["ana"], "salon_visits": 99, "salon_total_spent": None}])
    metrics._storing.reset(stale)
    monkeypatch.setattr(metrics, "CHUNK", 2)  # three clients: two chunks
    assert await metrics.recompute_all(salon.dep) == 2  # Ana put right, Cem given his zeros
    assert await _fields(salon.dep, made["ana"]) == _by_hand_ana(salon)
    cem = await _fields(salon.dep, made["cem"])
    assert (cem["salon_visits"], cem["salon_no_shows"], cem["salon_last_visit"]) == (0, 0, None)
    assert await metrics.recompute_all(salon.dep) == 0  # nothing changed: nothing written


def _api_list(client, **params) -> list[int]:
    answer = client.get("/api/contact", params=params)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def _salon_app(crm_client):
    client = crm_client(plugins=["beauty_salon"], **SETTINGS)
    dep = client.app.state.deployment

    async def setup():
        salon = await SystemSalon(dep).setup()
        return salon, await salon.history()

    salon, made = client.blocking_portal.call(setup)
    return client, salon, made


def test_metrics_filter_and_sort_contacts_and_find_clients_not_seen_for_a_while(crm_client):
    client, salon, made = _salon_app(crm_client)
    ana, bora = made["ana"], made["bora"]
    assert _api_list(client, salon_visits__gte=2) == [ana]
    assert _api_list(client, filter=json.dumps({"field": "salon_no_shows", "op": "gt", "value": 0})) == [ana]
    assert _api_list(client, filter=json.dumps({"field": "salon_visits", "op": "is_null", "value": False}),
                     sort="-salon_total_spent") == [ana, bora]
    assert _api_list(client, salon_favourite_staff=salon.berk) == [bora]
    # on 1 May: Ana came on 30 March (32 days ago), Bora on 5 March (57 days); Cem never did

    def not_seen(days: int) -> list[int]:
        return _api_list(client, filter=json.dumps(metrics.not_seen_filter(days, TODAY)), sort="salon_last_visit")

    assert not_seen(30) == [bora, ana]
    assert not_seen(45) == [bora]
    assert not_seen(60) == []


def _texts(tree, xpath: str) -> list[str]:
    return [re.sub(r"\s+", " ", node.text_content()).strip() for node in tree.xpath(xpath)]


def test_the_client_card_shows_the_salon_panel(crm_client):
    client, _, made = _salon_app(crm_client)
    answer = client.get(f"/contact/{made['ana']}", headers={"accept": "text/html"})
    assert answer.status_code == 200, answer.text[:500]
    panel = html.fromstring(answer.text).xpath("//*[@data-testid='salon-metrics']")[0]

    def shown(name: str) -> str:
        return _texts(panel, f".//*[@data-testid='{name}']")[0]

    assert shown("salon_visits") == "3"
    assert shown("salon_no_shows") == "1"
    assert shown("salon_average_days") == "14"
    assert shown("salon_average_bill") == "€66.67"
    assert shown("salon_total_spent") == "€195.00"
    assert shown("salon_favourite_staff") == "Ayla"
    assert shown("salon_favourite_service") == "Colour"
    assert "2027" in shown("salon_last_visit") and "30" in shown("salon_last_visit")
    assert "Ayla" in shown("salon-upcoming") and panel.xpath(f".//a[@href='/{APPOINTMENT}/{made['upcoming']}']")
    visits = panel.xpath(".//tr[@data-visit]")
    assert [int(row.get("data-visit")) for row in visits] == made["visits"][::-1]  # newest first
    assert _texts(visits[0], "./td")[1:] == ["Berk", "€60.00", "€55.00"]


def test_a_visit_booked_through_the_salon_counts_once_completed(salon):
    """End to end: booked through the booking route (its price from the services), the day
    passes, arrived, completed: the client's card has the visit."""
    s = salon()
    booked = ok(s.book(at(MONDAY, "10:00"), s.cut, s.colour, staff=s.anna), 201)
    s.client.dep.clock.set(dt.datetime.combine(MONDAY, dt.time(18), UTC))
    for status in ("arrived", "completed"):
        ok(s.client.patch(f"/api/{APPOINTMENT}/{booked['id']}", json={"status": status}))
    card = ok(s.client.get(f"/api/contact/{s.client_id}"))
    assert card["salon_visits"] == 1 and card["salon_no_shows"] == 0 and card["salon_average_days"] is None
    assert card["salon_average_bill"] == card["salon_total_spent"] == {"amount": "80.00", "currency": "EUR"}
    assert card["salon_favourite_staff"] == s.anna["id"]
    assert card["salon_favourite_service"] == s.cut["id"]  # both once, in the same visit: the first made
