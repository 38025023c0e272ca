"""Booking through the HTTP API, on SQLite and PostgreSQL: the end, cleaning-up time, price and
chair are computed in the one write path; every way a booking can be wrong is refused naming the
field; moves keep their history and a stale one is a 409; cancelling or a no-show frees the
slot; and two concurrent bookings of one slot, on two servers of one database, leave one."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx

from crmcore.testing import serve_app

from .conftest import MONDAY, at, ok, problem

TUESDAY = MONDAY + dt.timedelta(days=1)


def test_booking_computes_end_buffer_price_and_resource(salon):
    s = salon()
    booked = ok(s.book(at(MONDAY, "10:00"), s.cut, s.nails, staff=s.anna, notes="first visit"), 201)
    assert dt.datetime.fromisoformat(booked["ends_at"]) == dt.datetime.fromisoformat(at(MONDAY, "11:15"))
    assert booked["blocked_until"] == booked["ends_at"]  # nails, last, has no buffer
    assert booked["price"] == {"amount": "55.00", "currency": "EUR"}
    assert booked["resource"] == s.chair["id"] and booked["status"] == "booked" and booked["staff"] == s.anna["id"]
    assert [(row["service"], row["position"], row["duration"]) for row in booked["services"]] == [
        (s.cut["id"], 1, 45), (s.nails["id"], 2, 30)]
    # The last service's buffer blocks the staff member: the cut ends 12:30, cleaning until 12:45.
    other = ok(s.book(at(MONDAY, "11:15"), s.nails, s.cut, staff=s.anna), 201)
    assert dt.datetime.fromisoformat(other["blocked_until"]) == dt.datetime.fromisoformat(at(MONDAY, "12:45"))
    read = ok(s.client.get(f"/api/beauty_salon/appointments/{booked['id']}"))
    assert read["notes"] == "first visit" and len(read["services"]) == 2


def test_any_staff_takes_the_first_free_one(salon):
    s = salon()
    s.resource("Chair 2")
    first = ok(s.book(at(MONDAY, "10:00")), 201)
    second = ok(s.book(at(MONDAY, "10:00")), 201)
    assert (first["staff"], second["staff"]) == (s.anna["id"], s.ben["id"])
    assert first["resource"] != second["resource"]
    assert problem(s.book(at(MONDAY, "10:00"))) == {"staff": "unavailable"}


def test_refusals_name_the_field(salon):
    s = salon()
    ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)  # 10:00-10:45, cleaning until 11:00
    # Another appointment of the staff member, its buffer included.
    assert problem(s.book(at(MONDAY, "10:45"), s.nails, staff=s.anna)) == {"staff": "busy"}
    ok(s.book(at(MONDAY, "11:00"), s.nails, staff=s.anna), 201)
    # Out of hours, in the break, on a day off (Sunday), ending after closing.
    assert problem(s.book(at(MONDAY, "08:30"), staff=s.anna)) == {"starts_at": "out_of_hours"}
    assert problem(s.book(at(MONDAY, "12:30"), staff=s.anna)) == {"starts_at": "break"}
    assert problem(s.book(at(MONDAY - dt.timedelta(days=1), "10:00"), staff=s.anna)) == {"starts_at": "out_of_hours"}
    assert problem(s.book(at(MONDAY, "17:30"), staff=s.anna)) == {"starts_at": "out_of_hours"}
    # Time off.
    s.make("time_off", staff=s.ben["id"], starts_at=at(TUESDAY, "00:00"), ends_at=at(TUESDAY, "12:00"), reason="dentist")
    assert problem(s.book(at(TUESDAY, "11:30"), s.nails, staff=s.ben)) == {"starts_at": "time_off"}
    ok(s.book(at(TUESDAY, "12:00"), s.nails, staff=s.ben), 201)
    # The one chair is Anna's at 10:00: Ben has no chair then, but can do nails.
    assert problem(s.book(at(MONDAY, "10:15"), staff=s.ben)) == {"resource": "unavailable"}
    ok(s.book(at(MONDAY, "10:15"), s.nails, staff=s.ben), 201)
    # A service the staff member does not do (staff_service lists theirs), inactive staff or service.
    s.make("staff_service", staff=s.ben["id"], service=s.nails["id"])
    assert problem(s.book(at(MONDAY, "15:00"), staff=s.ben)) == {"staff": "not_offered"}
    ok(s.client.patch(f"/api/beauty_salon_staff/{s.anna['id']}", json={"active": False}))
    assert problem(s.book(at(MONDAY, "15:00"), staff=s.anna)) == {"staff": "inactive"}
    ok(s.client.patch(f"/api/beauty_salon_service/{s.colour['id']}", json={"active": False}))
    assert problem(s.book(at(MONDAY, "15:00"), s.colour, staff=s.ben)) == {"services": "inactive"}
    # The past, bad input.
    assert problem(s.book("2027-01-04T10:00:00+01:00", s.nails, staff=s.ben)) == {"starts_at": "past"}
    assert problem(s.book(at(MONDAY, "15:00"), s.nails, staff=s.ben, price="1")) == {"price": "unknown_field"}
    assert "starts_at" in problem(s.book("tomorrow", s.nails, staff=s.ben))
    assert problem(s.client.post("/api/beauty_salon/appointments", json={
        "client": s.client_id, "staff": s.ben["id"], "starts_at": at(MONDAY, "15:00"), "services": []})) == {"services": "invalid"}
    assert problem(s.book(at(MONDAY, "15:00"), s.nails, staff=s.ben, status="completed")) == {"status": "invalid"}


def test_generic_writes_cannot_bypass_the_booking(salon):
    s = salon()
    assert problem(s.client.post("/api/beauty_salon_appointment", json={
        "client": s.client_id, "staff": s.anna["id"], "starts_at": at(MONDAY, "10:00")})) == {"services": "required"}
    booked = ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    url = f"/api/beauty_salon_appointment/{booked['id']}"
    assert problem(s.client.patch(url, json={"ends_at": at(MONDAY, "18:00")})) == {"ends_at": "read_only"}
    assert problem(s.client.patch(url, json={"price": {"amount": "1", "currency": "EUR"}})) == {"price": "read_only"}
    assert problem(s.client.post("/api/beauty_salon_appointment_service", json={
        "appointment": booked["id"], "service": s.nails["id"], "position": 2, "duration": 1})) == {"appointment": "read_only"}
    # A generic move is checked and recomputed like the route's.
    moved = ok(s.client.patch(url, json={"starts_at": at(MONDAY, "15:00")}))
    assert dt.datetime.fromisoformat(moved["ends_at"]) == dt.datetime.fromisoformat(at(MONDAY, "15:45"))
    assert problem(s.client.patch(url, json={"starts_at": at(MONDAY, "13:00")})) == {"starts_at": "break"}


def test_reschedule_keeps_history_and_refuses_a_stale_version(salon):
    s = salon()
    booked = ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    url = f"/api/beauty_salon/appointments/{booked['id']}"
    moved = ok(s.client.patch(url, json={"version": booked["version"], "starts_at": at(TUESDAY, "11:00"),
                                         "staff": s.ben["id"], "services": [s.colour["id"]]}))
    assert moved["staff"] == s.ben["id"] and moved["price"] == {"amount": "50.00", "currency": "EUR"}
    assert dt.datetime.fromisoformat(moved["ends_at"]) == dt.datetime.fromisoformat(at(TUESDAY, "12:00"))
    assert [row["service"] for row in moved["services"]] == [s.colour["id"]]
    # The old slot is free again: Anna can be booked at 10:00.
    ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    stale = s.client.patch(url, json={"version": booked["version"], "starts_at": at(TUESDAY, "15:00")})
    assert stale.status_code == 409, stale.text
    assert problem(s.client.patch(url, json={"starts_at": at(TUESDAY, "15:00")})) == {"version": "required"}
    history = ok(s.client.get(f"/api/beauty_salon_appointment/{booked['id']}/history"))
    update = next(entry for entry in history if entry["action"] == "update")
    old, new = update["changes"]["starts_at"]
    assert dt.datetime.fromisoformat(old) == dt.datetime.fromisoformat(at(MONDAY, "10:00"))
    assert dt.datetime.fromisoformat(new) == dt.datetime.fromisoformat(at(TUESDAY, "11:00"))
    assert update["changes"]["staff"] == [s.anna["id"], s.ben["id"]]
    # The appointment's timeline shows the move too.
    timeline = ok(s.client.get(f"/api/beauty_salon_appointment/{booked['id']}/timeline"))["items"]
    moves = [item for item in timeline if item["kind"] == "change" and "starts_at" in item["data"]["changes"]]
    assert len(moves) == 1 and moves[0]["data"]["changes"]["staff"] == [s.anna["id"], s.ben["id"]]
    # The replaced service row is in the trash, not lost.
    trash = ok(s.client.get("/api/beauty_salon_appointment_service/trash"))
    assert [row["service"] for row in trash["items"]] == [s.cut["id"]]


def test_status_moves_and_cancelling_frees_the_slot(salon):
    s = salon()
    booked = ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    url = f"/api/beauty_salon_appointment/{booked['id']}"
    assert problem(s.client.patch(url, json={"status": "completed"})) == {"status": "invalid_move"}
    assert problem(s.client.patch(url, json={"status": "cancelled"})) == {"cancel_reason": "required"}
    assert problem(s.book(at(MONDAY, "10:30"), staff=s.anna)) == {"staff": "busy"}
    ok(s.client.patch(url, json={"status": "cancelled", "cancel_reason": "ill"}))
    again = ok(s.book(at(MONDAY, "10:30"), staff=s.anna), 201)
    assert problem(s.client.patch(url, json={"status": "booked"})) == {"status": "invalid_move"}
    # A no-show frees the slot too; an arrived appointment is completed, never moved.
    ok(s.client.patch(f"/api/beauty_salon_appointment/{again['id']}", json={"status": "no_show"}))
    third = ok(s.book(at(MONDAY, "10:30"), staff=s.anna), 201)
    third_url = f"/api/beauty_salon_appointment/{third['id']}"
    for status in ("confirmed", "arrived"):
        ok(s.client.patch(third_url, json={"status": status}))
    assert problem(s.client.patch(third_url, json={"starts_at": at(MONDAY, "15:00")})) == {"starts_at": "not_movable"}
    assert ok(s.client.patch(third_url, json={"status": "completed"}))["status"] == "completed"


def test_a_deleted_appointment_frees_its_slot_and_comes_back_only_to_a_free_one(salon):
    s = salon()
    first = ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    assert s.client.delete(f"/api/beauty_salon_appointment/{first['id']}").status_code == 204
    second = ok(s.book(at(MONDAY, "10:00"), staff=s.anna), 201)
    restore = f"/api/beauty_salon_appointment/{first['id']}/restore"
    assert problem(s.client.post(restore)) == {"staff": "busy"}
    ok(s.client.patch(f"/api/beauty_salon_appointment/{second['id']}", json={"staff": s.ben["id"]}))
    # Anna is free again, but Ben's appointment has the only chair.
    assert problem(s.client.post(restore)) == {"resource": "unavailable"}
    s.resource("Chair 2")
    assert problem(s.client.post(restore)) == {"resource": "unavailable"}  # it had chair 1
    assert s.client.delete(f"/api/beauty_salon_appointment/{second['id']}").status_code == 204
    assert ok(s.client.post(restore))["status"] == "booked"


def test_working_hours_are_checked(salon):
    s = salon()
    assert problem(s.client.post("/api/beauty_salon_working_hours", json={
        "staff": s.anna["id"], "weekday": "sunday", "start_time": "9:00", "end_time": "12:00"})) == {"start_time": "invalid"}
    assert problem(s.client.post("/api/beauty_salon_working_hours", json={
        "staff": s.anna["id"], "weekday": "sunday", "start_time": "12:00", "end_time": "09:00"})) == {"end_time": "invalid"}
    assert problem(s.client.post("/api/beauty_salon_working_hours", json={
        "staff": s.anna["id"], "weekday": "sunday", "start_time": "09:00", "end_time": "12:00",
        "break_start": "11:00"})) == {"break_end": "required"}
    # Bulk writes are checked row by row; appointments are never bulk-booked.
    good = {"staff": s.anna["id"], "weekday": "sunday", "start_time": "10:00", "end_time": "12:00"}
    assert problem(s.client.post("/api/beauty_salon_working_hours/bulk", json=[good, {**good, "end_time": "25:00"}])) == {
        "rows[1].end_time": "invalid"}
    assert problem(s.client.post("/api/beauty_salon_appointment/bulk", json=[{
        "client": s.client_id, "staff": s.anna["id"], "starts_at": at(MONDAY, "10:00")}])) == {"rows": "one_at_a_time"}


#: A Monday one or two weeks ahead of the real clock, which the servers below keep.
AHEAD = dt.date.today() + dt.timedelta(days=(7 - dt.date.today().weekday()) % 7 + 7)


def ahead(hhmm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(at(AHEAD, hhmm))


def in_parallel(s, crm_backend, requests) -> list[httpx.Response]:
    """``(method, path, body)`` requests sent at once, spread over two servers of the salon's
    database (two connection pools, as two `crm serve` processes would be)."""
    path = s.client.dep.path
    url = crm_backend.database_url if crm_backend.name == "postgres" else f"sqlite:///{path / 'crm.db'}"

    async def send(servers: tuple[str, str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=s.client.crm_user.headers, timeout=60) as http:
            return await asyncio.gather(*[http.request(method, servers[n % 2] + target, json=body)
                                          for n, (method, target, body) in enumerate(requests)])

    with serve_app(path, database_url=url) as one, serve_app(path, database_url=url) as two:
        return asyncio.run(send((one.url, two.url)))


def test_concurrent_bookings_of_one_slot_leave_one(salon, crm_backend):
    s = salon()
    s.resource("Chair 2")
    booking = {"client": s.client_id, "services": [s.cut["id"]]}
    requests = [("POST", "/api/beauty_salon/appointments", {**booking, "starts_at": at(AHEAD, "10:00"),
                                                            "staff": s.anna["id"]})] * 6
    # Anyone, at another time: Anna and Ben get one each, the others nobody.
    requests += [("POST", "/api/beauty_salon/appointments", {**booking, "starts_at": at(AHEAD, "15:00")})] * 4
    answers = in_parallel(s, crm_backend, requests)
    assert all(a.status_code in (201, 422) for a in answers), [a.text for a in answers if a.status_code not in (201, 422)]
    assert [a.status_code for a in answers[:6]].count(201) == 1
    assert [a.status_code for a in answers[6:]].count(201) == 2
    refused = [a.json()["errors"][0]["field"] for a in answers if a.status_code == 422]
    assert set(refused) <= {"staff", "starts_at"}, refused
    listed = ok(s.client.get("/api/beauty_salon_appointment", params={"limit": 50}))["items"]
    assert sorted((dt.datetime.fromisoformat(item["starts_at"]), item["staff"]) for item in listed) == [
        (ahead("10:00"), s.anna["id"]), (ahead("15:00"), s.anna["id"]), (ahead("15:00"), s.ben["id"])]


def test_concurrent_moves_into_one_slot_leave_one(salon, crm_backend):
    s = salon()
    s.resource("Chair 2")
    s.resource("Chair 3")
    s.client.dep.clock.resume()  # book on the servers' day
    booked = [ok(s.book(at(AHEAD, start), staff=who), 201) for start, who in
              (("09:00", s.anna), ("09:00", s.ben), ("15:00", s.ben))]
    answers = in_parallel(s, crm_backend, [
        ("PATCH", f"/api/beauty_salon/appointments/{item['id']}",
         {"version": item["version"], "staff": s.anna["id"], "starts_at": at(AHEAD, "12:00")}) for item in booked])
    assert sorted(a.status_code for a in answers) == [200, 422, 422], [a.text for a in answers]
    assert all(a.json()["errors"][0]["field"] == "staff" for a in answers if a.status_code == 422)
    annas = ok(s.client.get("/api/beauty_salon_appointment", params={"staff": s.anna["id"], "limit": 50}))["items"]
    moved_hers = answers[0].status_code == 200
    assert sorted(dt.datetime.fromisoformat(item["starts_at"]) for item in annas) == (
        [ahead("12:00")] if moved_hers else [ahead("09:00"), ahead("12:00")])
