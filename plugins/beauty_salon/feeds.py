"""Per-staff iCalendar feeds at a secret URL.

A staff member's phone calendar subscribes to ``GET /beauty_salon/feeds/<token>.ics`` (public:
calendar apps cannot log in): their holding appointments from 30 days back to a year ahead, one
event per appointment, named by the services and the client's name. Nothing more of the client
is in it (no phone, e-mail or notes), since the URL ends up on a phone.

``POST /api/beauty_salon/staff/{id}/feed``, or the "Calendar feed" page of a staff record, makes
a new token for whoever may edit that record and shows the URL once; a leaked URL stops working
as soon as it is replaced. The staff record's ``feed_token`` keeps only the token's SHA-256, as
API tokens are kept: whoever reads staff records, their history or an export cannot rebuild the
URL. An unknown token, or an inactive staff member's, is a bare 404.

The feed is written with the ``icalendar`` library. Its ETag is a digest of the feed itself, so
a calendar polling an unchanged feed gets a 304.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from icalendar import Calendar, Event
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException

import crmcore
from crmcore import SYSTEM, Deployment, ListQuery, UIItem, relation_titles
from crmcore.api import CurrentActor, CurrentDeployment

from .entities import APPOINTMENT, APPOINTMENT_SERVICE, HOLDING, SERVICE, STAFF

__all__ = ["FEED_ROUTES", "feed_ui_items", "staff_calendar"]

#: What the feed covers around now.
PAST = dt.timedelta(days=30)
AHEAD = dt.timedelta(days=365)
#: A token's length as made here: shorter ones (a digest of a guessable word typed into the
#: field by hand) open no feed.
TOKEN_BYTES = 32
MIN_TOKEN_LENGTH = 40
PAGE = 500
PRODID = "-//crmcore//beauty_salon calendar feed//EN"
#: How often subscribers should poll (REFRESH-INTERVAL, and Outlook's X-PUBLISHED-TTL).
REFRESH = dt.timedelta(minutes=15)


def feed_path(token: str) -> str:
    return f"/beauty_salon/feeds/{token}.ics"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _all(deployment: Deployment, entity: str, where: dict, sort: list[str]) -> list[dict[str, Any]]:
    """Every record matching ``where``, read as the system page by page (keyset paging)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await deployment.records.list(entity, ListQuery(filter=where, sort=sort, limit=PAGE, cursor=cursor))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            return items


async def _services_of(deployment: Deployment, appointment_ids: list[int]) -> dict[int, list[str]]:
    """The names of each appointment's services, in their booked order."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(appointment_ids), PAGE):
        rows += await _all(deployment, APPOINTMENT_SERVICE,
                           {"field": "appointment", "op": "in", "value": appointment_ids[start:start + PAGE]},
                           ["position", "id"])
    titles = await relation_titles(deployment, SYSTEM, deployment.registry.get(APPOINTMENT_SERVICE), rows)
    names: dict[int, list[str]] = {}
    for row in rows:
        names.setdefault(row["appointment"], []).append(titles.get((SERVICE, row["service"]), "?"))
    return names


def _event(appointment: dict[str, Any], *, client: str, services: list[str], domain: str) -> Event:
    what = ", ".join(services) or "Appointment"
    event = Event()
    event.add("uid", f"appointment-{appointment['id']}@{domain}")
    # Without a METHOD, DTSTAMP is the object's last revision (RFC 5545, 3.8.7.2), which also
    # keeps the feed, and so its ETag, the same until something in it changes.
    event.add("dtstamp", appointment["updated_at"])
    event.add("last-modified", appointment["updated_at"])
    event.add("created", appointment["created_at"])
    event.add("sequence", appointment["version"] - 1)
    # Times in UTC rather than the salon's zone with a VTIMEZONE: the one icalendar writes (a
    # first STANDARD part without recurrence) is read by dateutil, hence vobject and Radicale, as
    # standard time all year, an hour off in summer. Calendar apps show UTC in the phone's zone.
    event.add("dtstart", appointment["starts_at"].astimezone(dt.UTC))
    if appointment.get("ends_at"):
        event.add("dtend", appointment["ends_at"].astimezone(dt.UTC))
    event.add("summary", f"{what} – {client}")
    event.add("description", f"Client: {client}\nServices: {what}\nStatus: {appointment['status']}")
    event.add("status", "TENTATIVE" if appointment["status"] == "booked" else "CONFIRMED")
    event.add("transp", "OPAQUE")
    return event


async def staff_calendar(deployment: Deployment, staff: dict[str, Any]) -> bytes:
    """The staff member's feed: their holding appointments around now, as an iCalendar file."""
    settings = deployment.settings
    now = deployment.clock.now()
    appointments = await _all(deployment, APPOINTMENT, {"and": [
        {"field": "staff", "op": "eq", "value": staff["id"]},
        {"field": "status", "op": "in", "value": list(HOLDING)},
        {"field": "starts_at", "op": "gte", "value": (now - PAST).isoformat()},
        {"field": "starts_at", "op": "lt", "value": (now + AHEAD).isoformat()},
    ]}, ["starts_at", "id"])
    clients = await relation_titles(deployment, SYSTEM, deployment.registry.get(APPOINTMENT), appointments)
    services = await _services_of(deployment, [a["id"] for a in appointments])
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"{staff['name']} – {settings.name}")
    calendar.add("x-wr-timezone", settings.timezone)
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", REFRESH)
    domain = settings.name.replace(" ", "-")
    for appointment in appointments:
        calendar.add_component(_event(appointment, client=clients.get(("contact", appointment["client"]), "?"),
                                      services=services.get(appointment["id"], []), domain=domain))
    return calendar.to_ical()


@get("/beauty_salon/feeds/{name:str}", opt={"public": True}, include_in_schema=False)
async def feed(name: str, request: Request, deployment: CurrentDeployment) -> Response:
    token = name.removesuffix(".ics")
    if token == name or len(token) < MIN_TOKEN_LENGTH:
        raise NotFoundException()
    # A staff member made inactive (who left) no longer gets the clients' names on their phone.
    found = await deployment.records.list(STAFF, ListQuery(filter={"and": [
        {"field": "feed_token", "op": "eq", "value": _digest(token)}, {"field": "active", "op": "eq", "value": True}]},
        limit=1))
    if not found.items:
        raise NotFoundException()
    body = await staff_calendar(deployment, found.items[0])
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    # The URL is a secret: no shared cache may keep it; the ETag saves the download.
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Robots-Tag": "noindex"}
    given = request.headers.get("if-none-match", "")
    if given.strip() == "*" or etag in (tag.strip().removeprefix("W/") for tag in given.split(",")):
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type="text/calendar; charset=utf-8", headers=headers)


async def rotate_token(deployment: Deployment, actor: Any, staff_id: int) -> str:
    """A new secret for the staff member's feed (the old URL stops working), as ``actor``, who
    must be allowed to edit the record; the feed's path, which only this answer holds."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    await deployment.records.as_actor(actor).update(STAFF, staff_id, {"feed_token": _digest(token)})
    return feed_path(token)


def _absolute(deployment: Deployment, request: Request, path: str) -> str:
    return (deployment.settings.base_url or str(request.base_url)).rstrip("/") + path


@post("/api/beauty_salon/staff/{staff_id:int}/feed", status_code=200)
async def new_feed(staff_id: int, request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> dict:
    """Make a new secret URL for the staff member's calendar feed; the previous one stops working."""
    return {"staff": staff_id, "url": _absolute(deployment, request, await rotate_token(deployment, actor, staff_id))}


# -- the page behind a staff record's "Calendar feed" button ---------------------------------------


async def _page(request: Request, actor: Any, deployment: Deployment, staff: dict[str, Any],
                url: str | None = None) -> Response:
    return await crmcore.render_page(
        request, "beauty_salon/feed_page.html", staff=staff, url=url, exists=bool(staff.get("feed_token")),
        may_edit=actor.reaches(actor.scope(STAFF, "edit"), staff) and actor.field_access(STAFF, "feed_token") == "edit")


@get("/beauty_salon/feed", include_in_schema=False)
async def feed_page(request: Request, actor: CurrentActor, deployment: CurrentDeployment, id: int) -> Response:
    return await _page(request, actor, deployment, await deployment.records.as_actor(actor).get(STAFF, id))


@post("/beauty_salon/feed", include_in_schema=False, status_code=200)
async def feed_page_rotate(request: Request, actor: CurrentActor, deployment: CurrentDeployment) -> Response:
    """The page again, showing the new URL this once (a redirect would carry it in its address)."""
    form = await request.form()
    try:
        staff_id = int(form.get("id", ""))
    except ValueError:
        raise NotFoundException() from None
    path = await rotate_token(deployment, actor, staff_id)
    staff = await deployment.records.as_actor(actor).get(STAFF, staff_id)
    return await _page(request, actor, deployment, staff, _absolute(deployment, request, path))


FEED_ROUTES = [feed, new_feed, feed_page, feed_page_rotate]


def feed_ui_items(register: Any) -> None:
    register(UIItem(slot="record.action", entity=STAFF, name="calendar_feed", label="Calendar feed",
                    url="/beauty_salon/feed", order=40))
