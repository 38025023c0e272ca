"""The availability search through the HTTP API, on SQLite and PostgreSQL: free starts leave gaps
around appointments and their cleaning-up time, breaks, time off, a shared chair in use, the
past; the staff who do the services; and days when Berlin's clocks change have their real hours."""

from __future__ import annotations

import datetime as dt

from .conftest import BERLIN, MONDAY, at, ok, problem

SPRING_FORWARD = dt.date(2027, 3, 28)  # 02:00 -> 03:00
FALL_BACK = dt.date(2027, 10, 31)  # 03:00 -> 02:00


def quarters(day: dt.date, first: str, last: str, *, minutes: int, busy=()) -> list[str]:
    """Every quarter hour from ``first`` to ``last`` whose ``minutes`` avoid the ``busy`` spans."""
    start = dt.datetime.combine(day, dt.time.fromisoformat(first), tzinfo=BERLIN)
    out = []
    while start <= dt.datetime.combine(day, dt.time.fromisoformat(last), tzinfo=BERLIN):
        end = start + dt.timedelta(minutes=minutes)
        if not any(start.strftime("%H:%M") < b_end and end.strftime("%H:%M") > b_start for b_start, b_end in busy):
            out.append(start.isoformat())
        start += dt.timedelta(minutes=15)
    return out


def test_free_starts_around_appointments_breaks_time_off_and_resources(salon):
    s = salon()
    ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)  # a cut: 10:00-10:45, cleaning and the chair until 11:00
    s.make("time_off", staff=s.ben["id"], starts_at=at(MONDAY, "15:00"), ends_at=at(MONDAY, "16:00"))
    pause = ("13:00", "14:00")
    # Nails (30 min, no chair): around Anna's appointment and her break; Ben's time off.
    assert s.slots(s.nails, staff=s.anna) == {"Anna": quarters(MONDAY, "09:00", "17:30", minutes=30,
                                                               busy=[("10:00", "11:00"), pause])}
    assert s.slots(s.nails, staff=s.ben) == {"Ben": quarters(MONDAY, "09:00", "17:30", minutes=30,
                                                             busy=[pause, ("15:00", "16:00")])}
    # A cut (45 min + 15 cleaning, a chair): its cleaning must not run into the next appointment,
    # but may run into the break; the only chair is Anna's until 11:00, so Ben waits for it too.
    cut_busy = [("10:00", "11:00")]
    anna = [t for t in quarters(MONDAY, "09:00", "17:15", minutes=60, busy=cut_busy)
            if not "12:15" < t[11:16] < "14:00"]
    # Time off counts for the service, not the cleaning: Ben's 14:15 cut ends as it starts.
    assert s.slots(s.cut) == {"Anna": anna, "Ben": [t for t in anna if not "14:15" < t[11:16] < "16:00"]}
    # A second chair frees Ben at 10:00.
    s.resource("Chair 2")
    assert at(MONDAY, "10:00") in s.slots(s.cut, staff=s.ben)["Ben"]
    # Only the staff who do the services; not inactive ones.
    s.make("staff_service", staff=s.ben["id"], service=s.nails["id"])
    assert list(s.slots(s.cut)) == ["Anna"]
    ok(s.client.patch(f"/api/beauty_salon_staff/{s.anna['id']}", json={"active": False}))
    assert s.slots(s.cut) == {}


def test_what_is_offered_can_be_booked_and_then_is_gone(salon):
    s = salon()
    s.client.dep.clock.set(dt.datetime.fromisoformat(at(MONDAY, "11:07")))
    slots = s.slots(s.colour, s.nails, staff=s.anna)["Anna"]
    assert slots[0] == at(MONDAY, "11:15")  # not before now
    assert s.slots(s.nails, first=MONDAY - dt.timedelta(days=7), last=MONDAY - dt.timedelta(days=1)) == {
        "Anna": [], "Ben": []}
    for start in (slots[0], slots[-1]):
        ok(s.book(start, s.colour, s.nails, staff=s.anna), 201)
    left = s.slots(s.colour, s.nails, staff=s.anna)["Anna"]
    assert slots[0] not in left and slots[-1] not in left and set(left) < set(slots)
    # Over a week: Sunday has no hours.
    week = s.slots(s.nails, first=MONDAY, last=MONDAY + dt.timedelta(days=6), staff=s.ben)["Ben"]
    assert {dt.date.fromisoformat(t[:10]).weekday() for t in week} == {0, 1, 2, 3, 4, 5}


def test_days_when_the_clocks_change(salon):
    s = salon()
    night = s.staff("Nora", days=("saturday", "sunday", "monday"), start="01:00", end="04:00", pause=None)
    spring = s.slots(s.nails, first=SPRING_FORWARD, staff=night, step=30)["Nora"]
    # 01:00-04:00 on the night the clocks skip 02:00-03:00 is two hours.
    assert spring == ["2027-03-28T01:00:00+01:00", "2027-03-28T01:30:00+01:00",
                      "2027-03-28T03:00:00+02:00", "2027-03-28T03:30:00+02:00"]
    autumn = s.slots(s.nails, first=FALL_BACK, staff=night, step=30)["Nora"]
    # ... and four on the night 02:00-03:00 comes twice.
    assert autumn == ["2027-10-31T01:00:00+02:00", "2027-10-31T01:30:00+02:00", "2027-10-31T02:00:00+02:00",
                      "2027-10-31T02:30:00+02:00", "2027-10-31T02:00:00+01:00", "2027-10-31T02:30:00+01:00",
                      "2027-10-31T03:00:00+01:00", "2027-10-31T03:30:00+01:00"]
    # Booking the second 02:30 leaves the first one free.
    booked = ok(s.book("2027-10-31T02:30:00+01:00", s.nails, staff=night), 201)
    assert booked["ends_at"].startswith("2027-10-31T02:00:00")  # UTC
    after = s.slots(s.nails, first=FALL_BACK, staff=night, step=30)["Nora"]
    assert "2027-10-31T02:30:00+02:00" in after and "2027-10-31T02:30:00+01:00" not in after
    assert problem(s.book("2027-03-28T03:45:00+02:00", s.nails, staff=night)) == {"starts_at": "out_of_hours"}
    # Daytime hours keep their wall-clock times on both sides of a change.
    days = s.slots(s.nails, first=SPRING_FORWARD - dt.timedelta(days=1), last=SPRING_FORWARD + dt.timedelta(days=1),
                   staff=s.anna)["Anna"]
    assert days[0] == "2027-03-27T09:00:00+01:00" and "2027-03-29T09:00:00+02:00" in days
    assert days[-1] == "2027-03-29T17:30:00+02:00"


def test_bad_searches_name_the_parameter(salon):
    s = salon()
    url = "/api/beauty_salon/availability"
    day = MONDAY.isoformat()
    assert problem(s.client.get(url, params={"from": day, "to": day})) == {"service": "invalid"}
    assert problem(s.client.get(url, params={"service": s.cut["id"], "from": "monday", "to": day})) == {"from": "invalid"}
    assert problem(s.client.get(url, params={"service": s.cut["id"], "from": day, "to": "2027-02-01"})) == {"to": "invalid"}
    assert problem(s.client.get(url, params={"service": s.cut["id"], "from": day, "to": "2027-06-01"})) == {"to": "too_long"}
    assert problem(s.client.get(url, params={"service": s.cut["id"], "from": day, "to": day, "step": "1"})) == {
        "step": "invalid"}
    assert problem(s.client.get(url, params={"service": 999, "from": day, "to": day})) == {"service": "not_found"}
