"""The public online booking page (no login).

``GET /book``: a visitor picks a service (active and bookable online), a staff member (bookable
online) or anyone, and a day, and sees its free starts in the salon's time zone (from
:func:`.availability.free_slots`); ``POST /book`` with a start, name, phone, e-mail and note
books it. The contact part goes through the core's web-form service (a form named
``beauty_salon-online``, made on first use): a filled honeypot books nothing, an address that
made ``online_rate_limit`` (5) bookings within an hour, or sent as many forms within a minute,
gets 429, and the client is found by normalised phone or e-mail, else created with source
``online``. The appointment is then booked
through :func:`.booking.book` as the system (all the write path's rules); a start taken meanwhile
shows the next free ones.

Each booking gets a secret link, ``/book/a/<token>``, whose SHA-256 alone is kept (the
appointment's ``online_token``, as feed tokens are kept): it shows the appointment, confirms it
(a POST: mail scanners open GET links), and cancels or moves it until ``online_cutoff_hours``
(24) before the start; later, the visitor is asked to call the salon. The link is e-mailed when
the deployment has an SMTP server and the visitor gave an address, and is always shown on the
thank-you page, so a booking without e-mail can still be managed.

The public forms carry no CSRF token: booking is open to anyone anyway, and the manage link's
token is the secret a cross-site page cannot know.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, get, post

from crmcore import SYSTEM, ListQuery, NotFound, UIItem, ValidationError
from crmcore.api import CurrentDeployment
from crmcore.auth import RateLimited
from crmcore.notifications import send_mail
from crmcore.web.render import PAGE_HEADERS, environment, user_format
from crmcore.webforms import WebForm

from .availability import free_slots
from .booking import book, booked_services, move
from .entities import APPOINTMENT, SERVICE, STAFF
from .feeds import MIN_TOKEN_LENGTH, TOKEN_BYTES, _absolute, _digest, _services_of

__all__ = ["ONLINE_ROUTES", "online_ui_items"]

log = logging.getLogger(__name__)
FORM = "beauty_salon-online"
ACTOR = msgspec.structs.replace(SYSTEM, via="online")
DAYS_AHEAD = 14
#: How many other starts a visitor is offered when theirs was taken.
ALTERNATIVES = 6
#: The window of the bookings-per-address limit, and how much of the submission log it reads.
HOUR = dt.timedelta(hours=1)
LOG_PAGE, LOG_PAGES = 200, 10
PUBLIC = {"public": True}


def _settings(deployment: Any) -> tuple[dt.timedelta, int]:
    """The cut-off before a start after which only the salon changes it, and the bookings one
    address may make in an hour (and in a minute: the web form's own limit)."""
    own = deployment.plugin_settings("beauty_salon")
    return dt.timedelta(hours=float(own.get("online_cutoff_hours", 24))), int(own.get("online_rate_limit", 5))


def _render(deployment: Any, template: str, status: int = 200, headers: dict[str, str] | None = None,
            **context: Any) -> Response:
    fmt = user_format(deployment, None)
    html = environment(deployment, fmt.locale, is_async=False).get_template(f"beauty_salon/{template}").render(
        site=deployment.settings.name, lang=fmt.babel.language, dir=fmt.dir, fmt=fmt,
        phone=deployment.plugin_settings("beauty_salon").get("phone"), **context)
    return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                    headers={**PAGE_HEADERS, "x-robots-tag": "noindex", **(headers or {})})


async def _bookable(deployment: Any, entity: str, **where: Any) -> dict[int, dict[str, Any]]:
    conditions = [{"field": name, "op": "eq", "value": value} for name, value in {**where, "online": True}.items()]
    page = await deployment.records.list(entity, ListQuery(filter={"and": conditions}, sort=["name", "id"], limit=200))
    return {item["id"]: item for item in page.items}


async def _starts(deployment: Any, services: list[int], staff: int | None, first: dt.date, last: dt.date,
                  who: set[int]) -> dict[dt.datetime, list[int]]:
    """Free starts (salon-local) -> the staff in ``who`` free then, in time order."""
    found = await free_slots(deployment, services, staff, first, last)
    starts: dict[dt.datetime, list[int]] = {}
    for member in found["staff"]:
        if member["id"] in who:
            for slot in member["slots"]:
                starts.setdefault(dt.datetime.fromisoformat(slot), []).append(member["id"])
    return dict(sorted(starts.items()))


def _today(deployment: Any) -> dt.date:
    return deployment.clock.now().astimezone(ZoneInfo(deployment.settings.timezone)).date()


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _day(deployment: Any, value: Any) -> dt.date:
    today = _today(deployment)
    try:
        day = dt.date.fromisoformat(value or "")
    except ValueError:
        return today
    return min(max(day, today), today + dt.timedelta(days=DAYS_AHEAD - 1))


def _slot(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(value or "")
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


async def _picker(deployment: Any, services: list[int], staff: int | None, day: dt.date,
                  staff_ids: set[int]) -> dict[str, Any]:
    """The days a visitor may pick and the free starts of ``day``."""
    today = _today(deployment)
    days = [today + dt.timedelta(days=n) for n in range(DAYS_AHEAD)]
    slots = list(await _starts(deployment, services, staff, day, day, staff_ids)) if services else []
    return {"days": days, "day": day, "slots": slots}


async def _alternatives(deployment: Any, service: int, staff: int | None, after: dt.datetime,
                        staff_ids: set[int]) -> list[dt.datetime]:
    """The next free starts after ``after``, over the week it falls in."""
    day = after.astimezone(ZoneInfo(deployment.settings.timezone)).date()
    starts = await _starts(deployment, [service], staff, day, day + dt.timedelta(days=6), staff_ids)
    return [start for start in starts if start > after][:ALTERNATIVES]


# -- booking -----------------------------------------------------------------------------------------


async def _book_page(deployment: Any, values: dict[str, Any], status: int = 200,
                     **context: Any) -> Response:
    services = await _bookable(deployment, SERVICE, active=True)
    staff = await _bookable(deployment, STAFF, active=True)
    service = _int(values.get("service"))
    service = service if service in services else None
    chosen = _int(values.get("staff"))
    chosen = chosen if chosen in staff else None
    picked = await _picker(deployment, [service] if service else [], chosen, _day(deployment, values.get("day")),
                           {chosen} if chosen else set(staff))
    return _render(deployment, "online_book.html", status, services=services.values(), staff=staff.values(),
                   service=service, chosen=chosen, values=values, errors=context.pop("errors", {}), **picked, **context)


@get("/book", opt=PUBLIC, include_in_schema=False)
async def book_page(request: Request, deployment: CurrentDeployment) -> Response:
    return await _book_page(deployment, dict(request.query_params))


async def _client_form(deployment: Any) -> None:
    """The web form the visitors' contact details go through (its rate limit from the settings)."""
    rate = _settings(deployment)[1]
    try:
        if (await deployment.forms.get(FORM)).rate_limit == rate:
            return
    except NotFound:
        pass
    await deployment.forms.save(WebForm(
        name=FORM, fields={name: name for name in ("first_name", "last_name", "phone", "email", "source")},
        required=["last_name", "phone"], rate_limit=rate))


async def _wait(deployment: Any, ip: str | None) -> int | None:
    """Seconds until ``ip`` may book again, when it booked the limit within the last hour; read
    from the web form's submission log, so every process agrees (the log holds the form's
    per-minute limit only)."""
    if ip is None:
        return None
    limit = _settings(deployment)[1]
    since = deployment.clock.now() - HOUR
    booked: list[dt.datetime] = []  # newest first
    before = None
    for _ in range(LOG_PAGES):  # a busy hour's log is a few pages; an attack's is cut off here
        rows = await deployment.forms.submissions(FORM, limit=LOG_PAGE, before_id=before)
        booked += [r["at"] for r in rows if r["ip"] == ip and r["at"] > since and r["outcome"] in ("created", "duplicate")]
        if len(rows) < LOG_PAGE or rows[-1]["at"] <= since:
            break
        before = rows[-1]["id"]
    if len(booked) < limit:
        return None
    return max(1, int((booked[limit - 1] + HOUR - deployment.clock.now()).total_seconds()) + 1)


def _too_many(deployment: Any, retry_after: int) -> Response:
    return _render(deployment, "online_message.html", 429, {"retry-after": str(retry_after)}, title="Too many bookings",
                   message="Too many bookings were made from your address. Please try again later, or call the salon.")


def _contact(data: dict[str, str]) -> dict[str, str]:
    """The web form's fields from the booking form's: the last word of the name is the last name."""
    first, _, last = data.get("name", "").strip().rpartition(" ")
    return {"first_name": first, "last_name": last, "phone": data.get("phone", ""), "email": data.get("email", ""),
            "source": "online", "_gotcha": data.get("_gotcha", "")}


@post("/book", opt=PUBLIC, include_in_schema=False, status_code=200)
async def book_submit(request: Request, deployment: CurrentDeployment) -> Response:
    data = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    services = await _bookable(deployment, SERVICE, active=True)
    staff = await _bookable(deployment, STAFF, active=True)
    service, chosen, start = _int(data.get("service")), _int(data.get("staff")), _slot(data.get("slot"))
    if service not in services or (chosen is not None and chosen not in staff) or start is None:
        return await _book_page(deployment, data, 422, error="Choose a service and a free time.")
    day = start.astimezone(ZoneInfo(deployment.settings.timezone)).date()
    data["day"] = day.isoformat()
    staff_ids = {chosen} if chosen else set(staff)

    async def taken(message: str) -> Response:
        return await _book_page(deployment, data, 409, error=message,
                                alternatives=await _alternatives(deployment, service, chosen, start, staff_ids))

    free = (await _starts(deployment, [service], chosen, day, day, staff_ids)).get(start)
    if not free:
        return await taken("Sorry, this time has just been taken. Please choose another one.")
    await _client_form(deployment)
    ip = request.client.host if request.client else None
    wait = await _wait(deployment, ip)
    if wait is not None:
        return _too_many(deployment, wait)
    try:
        submission = await deployment.forms.submit(FORM, _contact(data), ip=ip)
    except RateLimited as exc:
        return _too_many(deployment, exc.retry_after)
    except ValidationError as exc:
        names = {"first_name": "name", "last_name": "name"}
        return await _book_page(deployment, data, 422, error="Please check the form.",
                                errors={names.get(e.field, e.field): e.message for e in exc.errors})
    if submission.record_id is None:  # a bot filled the honeypot: it is thanked and nothing is booked
        return _render(deployment, "online_message.html", title="Thank you", message="Your request was received.")
    try:
        appointment = await book(deployment, ACTOR, {
            "client": submission.record_id, "staff": free[0], "services": [service], "starts_at": start.isoformat(),
            "notes": data.get("note", "").strip()[:2000] or None, "source": "online", "status": "booked"})
    except ValidationError as exc:  # taken between the look and the booking
        return await taken(f"Sorry, this time is no longer free ({exc.errors[0].message}). Please choose another one.")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    await deployment.records.as_actor(ACTOR).update(APPOINTMENT, appointment["id"], {"online_token": _digest(token)})
    link = _absolute(deployment, request, f"/book/a/{token}")
    mailed = await _mail(deployment, data.get("email", "").strip(), link, appointment, services[service]["name"])
    return _render(deployment, "online_thanks.html", link=link, mailed=mailed, appointment=appointment,
                   services=[services[service]["name"]], staff_name=staff[appointment["staff"]]["name"])


async def _mail(deployment: Any, to: str, link: str, appointment: dict[str, Any], service: str) -> bool:
    """E-mail the manage link when the deployment has an SMTP server; a failure is logged (the
    thank-you page shows the link anyway)."""
    settings = deployment.settings
    if not (to and settings.smtp_host and settings.smtp_from):
        return False
    when = user_format(deployment, None).datetime(appointment["starts_at"], "full")
    text = (f"Your appointment at {settings.name}: {service}, {when}.\n\n"
            f"Confirm, cancel or move it here:\n{link}\n")
    try:
        await asyncio.to_thread(send_mail, settings, to, f"Your appointment at {settings.name}", text)
    except Exception:  # SMTP errors and a refused address alike: the booking stands
        log.exception("the online booking e-mail to %s was not sent", to)
        return False
    return True


# -- the manage link ---------------------------------------------------------------------------------


async def _by_token(deployment: Any, token: str) -> dict[str, Any] | None:
    if len(token) < MIN_TOKEN_LENGTH:
        return None
    found = await deployment.records.list(APPOINTMENT, ListQuery(
        filter={"field": "online_token", "op": "eq", "value": _digest(token)}, limit=1))
    return found.items[0] if found.items else None


def _unknown(deployment: Any) -> Response:
    """A visitor's page (not the API's problem+json) for a mistyped or made-up link."""
    return _render(deployment, "online_message.html", 404, title="Link not found",
                   message="This link does not lead to an appointment. Please check it, or call the salon.")


async def _manage_page(deployment: Any, token: str, appointment: dict[str, Any], status: int = 200,
                       day: Any = None, **context: Any) -> Response:
    cutoff = _settings(deployment)[0]
    now = deployment.clock.now()
    open_ = appointment["status"] in ("booked", "confirmed") and appointment["starts_at"] > now
    changeable = open_ and now < appointment["starts_at"] - cutoff
    services = (await _services_of(deployment, [appointment["id"]])).get(appointment["id"], [])
    staff = await deployment.records.get(STAFF, appointment["staff"])
    picked: dict[str, Any] = {}
    if changeable:  # new times with the same staff member for the same services
        booked = [row["service"] for row in await booked_services(deployment.records, appointment["id"])]
        start_day = appointment["starts_at"].astimezone(ZoneInfo(deployment.settings.timezone)).date()
        picked = await _picker(deployment, booked, staff["id"], _day(deployment, day or start_day.isoformat()),
                               {staff["id"]})
    return _render(deployment, "online_manage.html", status, token=token, appointment=appointment, services=services,
                   staff_name=staff["name"], open=open_, changeable=changeable, cutoff_hours=cutoff / dt.timedelta(hours=1),
                   **picked, **context)


@get("/book/a/{token:str}", opt=PUBLIC, include_in_schema=False)
async def manage_page(token: str, request: Request, deployment: CurrentDeployment) -> Response:
    appointment = await _by_token(deployment, token)
    if appointment is None:
        return _unknown(deployment)
    return await _manage_page(deployment, token, appointment, day=request.query_params.get("day"))


@post("/book/a/{token:str}", opt=PUBLIC, include_in_schema=False, status_code=200)
async def manage_submit(token: str, request: Request, deployment: CurrentDeployment) -> Response:
    appointment = await _by_token(deployment, token)
    if appointment is None:
        return _unknown(deployment)
    form = await request.form()
    action = form.get("action")
    cutoff = _settings(deployment)[0]
    now = deployment.clock.now()
    records = deployment.records.as_actor(ACTOR)
    if appointment["status"] not in ("booked", "confirmed") or appointment["starts_at"] <= now:
        return await _manage_page(deployment, token, appointment, 409, error="This appointment can no longer be changed.")
    if action == "confirm":
        if appointment["status"] == "booked":
            appointment = await records.update(APPOINTMENT, appointment["id"], {"status": "confirmed"},
                                               version=appointment["version"])
        return await _manage_page(deployment, token, appointment, notice="Thank you: your appointment is confirmed.")
    if action not in ("cancel", "reschedule"):
        return await _manage_page(deployment, token, appointment, 422, error="Choose what to do.")
    if now >= appointment["starts_at"] - cutoff:
        return await _manage_page(deployment, token, appointment, 403, error=(
            f"It is less than {cutoff / dt.timedelta(hours=1):g} hours to your appointment: "
            "please call the salon to cancel or move it."))
    if action == "cancel":
        appointment = await records.update(APPOINTMENT, appointment["id"], {
            "status": "cancelled", "cancel_reason": "cancelled online by the client"}, version=appointment["version"])
        return await _manage_page(deployment, token, appointment, notice="Your appointment is cancelled.")
    start = _slot(form.get("slot"))
    if start is None:
        return await _manage_page(deployment, token, appointment, 422, error="Choose a new time.")
    try:
        moved = await move(deployment, ACTOR, appointment["id"], {"version": appointment["version"],
                                                                  "starts_at": start.isoformat()})
    except ValidationError as exc:
        return await _manage_page(deployment, token, appointment, 409, day=form.get("day"),
                                  error=f"This time is not free ({exc.errors[0].message}). Please choose another one.")
    return await _manage_page(deployment, token, moved, notice="Your appointment is moved.")


ONLINE_ROUTES = [book_page, book_submit, manage_page, manage_submit]


def online_ui_items(register: Any) -> None:
    """The public page in the staff's menu, to open or hand out its address."""
    register(UIItem(slot="menu", name="online_booking", label="Online booking", url="/book", order=60))
