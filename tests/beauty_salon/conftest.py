"""Helpers of the beauty salon's booking tests: a salon in Berlin time with services, staff,
working hours and chairs, made through the generic API, and its client's calls."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

BERLIN = ZoneInfo("Europe/Berlin")
WEEK = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: A Monday well ahead of the fixed clock (below), in winter time.
MONDAY = dt.date(2027, 3, 1)
NOW = dt.datetime(2027, 2, 1, 8, 0, tzinfo=dt.UTC)


def ok(answer, status: int = 200):
    assert answer.status_code == status, answer.text
    return answer.json()


def problem(answer, status: int = 422) -> dict[str, str]:
    """The field errors of a refused request, by field."""
    assert answer.status_code == status, answer.text
    return {error["field"]: error["code"] for error in answer.json().get("errors", [])}


def at(day: dt.date, hhmm: str) -> str:
    """A local Berlin time of ``day`` as ISO with its offset."""
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), tzinfo=BERLIN).isoformat()


def eur(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "EUR"}


class Salon:
    """A salon's records, made through the client: ``cut`` (45 min + 15 cleaning, 30 EUR, a
    chair), ``colour`` (60 min + 15, 50 EUR, a chair), ``nails`` (30 min, no resource); ``anna``
    and ``ben`` work Monday to Saturday 09:00-18:00 with a 13:00-14:00 break; one ``chair``
    (more with :meth:`resource`); one client."""

    def __init__(self, client):
        self.client = client
        self.cut = self.make("service", name="Cut", duration=45, buffer_after=15, price=eur("30.00"), resource_kind="chair")
        self.colour = self.make("service", name="Colour", duration=60, buffer_after=15, price=eur("50.00"),
                                resource_kind="chair")
        self.nails = self.make("service", name="Nails", duration=30, price=eur("25.00"))
        self.chair = self.resource("Chair 1")
        self.anna = self.staff("Anna")
        self.ben = self.staff("Ben")
        self.client_id = self.make("contact", first_name="Clara", last_name="Kunde")["id"]

    def make(self, entity: str, **values) -> dict:
        name = entity if entity == "contact" else f"beauty_salon_{entity}"
        return ok(self.client.post(f"/api/{name}", json=values), 201)

    def resource(self, name: str, kind: str = "chair") -> dict:
        return self.make("resource", name=name, kind=kind)

    def staff(self, name: str, days=WEEK[:6], start="09:00", end="18:00", pause=("13:00", "14:00")) -> dict:
        member = self.make("staff", name=name)
        for day in days:
            self.make("working_hours", staff=member["id"], weekday=day, start_time=start, end_time=end,
                      break_start=pause[0] if pause else None, break_end=pause[1] if pause else None)
        return member

    def book(self, start: str, *services, staff=None, **extra):
        body = {"client": self.client_id, "services": [s["id"] for s in services or [self.cut]],
                "starts_at": start, **extra}
        if staff is not None:
            body["staff"] = staff["id"]
        return self.client.post("/api/beauty_salon/appointments", json=body)

    def slots(self, *services, first=MONDAY, last=None, staff=None, step=15) -> dict[str, list[str]]:
        """Free starts per staff name."""
        params = [("service", s["id"]) for s in services or [self.cut]]
        params += [("from", first.isoformat()), ("to", (last or first).isoformat()), ("step", step)]
        if staff is not None:
            params.append(("staff", staff["id"]))
        body = ok(self.client.get("/api/beauty_salon/availability", params=params))
        return {member["name"]: member["slots"] for member in body["staff"]}


@pytest.fixture
def salon(crm_client):
    """``make(**settings)``: an admin's client of a salon (beauty_salon on, EUR, Berlin time,
    the clock stopped at NOW) and its :class:`Salon`."""

    def make(**settings):
        client = crm_client(plugins=["beauty_salon"], currency="EUR", timezone="Europe/Berlin", region="DE",
                            in_process_worker=False, **settings)
        client.dep = client.app.state.deployment
        client.dep.clock.set(NOW)
        return Salon(client)

    return make
