"""Web-form lead capture: forms configured per deployment, a public endpoint per form.

A form (``crm forms add``, ``POST /api/forms``) names its target entity (``contact`` by
default), maps the form's fields to the entity's (``{"tel": "phone"}``; without a mapping a
form field named like an entity field fills it, relations excepted), lists the form fields that are required, the
owner and team new records get, the user they are created as (else the system), and the dedup
fields.

``POST /forms/<name>`` (public; ``application/x-www-form-urlencoded``, ``multipart/form-data``
or JSON) then:

1. refuses an address that sent ``rate_limit`` submissions to this form within a minute (429
   with ``Retry-After``; counted in ``crm_form_submission``, so every process agrees);
2. pretends success and creates nothing when the honeypot field (hidden from people, filled by
   bots) has a value;
3. checks the required fields (422 naming the form's field);
4. looks for a record with the same e-mail address (case-insensitive) or phone number
   (normalised to E.164 with the deployment's region, compared with every phone field of the
   entity): found, it creates no second record but logs a note activity on the existing one;
5. otherwise creates the record through the records service (validation, permissions, audit,
   ``crm_after_commit`` and so automation, like any other create).

The answer is the same for created, duplicate and spam (nobody learns who is a customer), and
every submission is logged with its outcome: created, duplicate, spam, invalid, rate_limited.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from typing import TYPE_CHECKING, Any

import msgspec

from .auth.errors import RateLimited, Unauthenticated
from .auth.permissions import SYSTEM, Actor
from .entities import FieldType
from .fieldvalues import FieldValueError, parse_value
from .records.errors import FieldError, Forbidden, NotFound, ValidationError

if TYPE_CHECKING:
    from .deployment import Deployment

__all__ = ["WebForm", "FormsService", "Submission", "FormUnavailable", "FORM_NAME"]

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
FORM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RATE_WINDOW = dt.timedelta(minutes=1)
MAX_VALUE = 10_000


class FormUnavailable(Exception):
    """The form is configured so that it cannot create records (its user lost the right)."""


class WebForm(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A web form's definition."""

    name: str
    entity: str = "contact"
    #: form field -> entity field; empty: form fields named like entity fields fill them.
    fields: dict[str, str] = {}
    #: Form fields that must have a value.
    required: list[str] = []
    #: Entity fields whose value finds an existing record instead of making a second one
    #: (e-mail and phone fields).
    dedup: list[str] = msgspec.field(default_factory=lambda: ["email", "phone"])
    #: Owner (user id) and team (team id) of new records.
    owner_id: int | None = None
    team_id: int | None = None
    #: The user (id) records are created as (their role applies); unset: the system.
    as_user_id: int | None = None
    #: The hidden field bots fill in.
    honeypot: str | None = "_gotcha"
    #: Submissions per minute from one address.
    rate_limit: int = 10
    #: Where a browser's form post is sent after success (303); unset: a JSON answer.
    redirect_url: str | None = None
    success_message: str = "Thank you, we will be in touch."
    active: bool = True


class Submission(msgspec.Struct, kw_only=True):
    """What a submission did (the submission log's row)."""

    outcome: str  # created | duplicate | spam | invalid | rate_limited
    record_id: int | None = None
    errors: list[FieldError] = []


def _ts(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _now(deployment: Deployment) -> dt.datetime:
    from .notifications import now

    return now(deployment)


class FormsService:
    """``deployment.forms``: form definitions and submissions."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    @property
    def db(self):
        return self.deployment.db

    # -- definitions -------------------------------------------------------------------------

    async def check(self, form: WebForm) -> WebForm:
        """A definition checked against the entity model; ValidationError naming what is wrong."""
        errors: list[FieldError] = []
        if not FORM_NAME.match(form.name):
            errors.append(FieldError("name", "invalid", "a form name is 1-63 lower-case letters, digits, - or _"))
        entity = self.deployment.registry.get(form.entity)
        if entity is None:
            errors.append(FieldError("entity", "unknown", f"unknown entity {form.entity!r}"))
            raise ValidationError(errors)
        names = {f.name for f in entity.visible_fields}
        for source, target in form.fields.items():
            if target not in names:
                errors.append(FieldError(f"fields.{source}", "unknown_field",
                                         f"{entity.name} has no field {target!r}; fields: {', '.join(sorted(names))}"))
        for name in form.dedup:
            field = entity.field(name)
            if field is None or field.type not in (FieldType.EMAIL, FieldType.PHONE):
                errors.append(FieldError("dedup", "invalid", f"{name!r} is not an e-mail or phone field of {entity.name}"))
        if not 1 <= form.rate_limit <= 10_000:
            errors.append(FieldError("rate_limit", "invalid", "rate_limit is 1 to 10000 submissions per minute"))
        if form.redirect_url is not None and not re.match(r"^https?://[^\s]+$", form.redirect_url):
            errors.append(FieldError("redirect_url", "invalid", "redirect_url must be an http(s) URL"))
        for field, user_id in (("owner_id", form.owner_id), ("as_user_id", form.as_user_id)):
            if user_id is not None:
                try:
                    await self.deployment.auth.user(user_id)
                except NotFound:
                    errors.append(FieldError(field, "not_found", f"no user with id {user_id}"))
        if form.team_id is not None and not await self.db.fetchval('SELECT 1 FROM crm_team WHERE "id" = ?', (form.team_id,)):
            errors.append(FieldError("team_id", "not_found", f"no team with id {form.team_id}"))
        if errors:
            raise ValidationError(errors)
        return form

    async def save(self, form: WebForm) -> WebForm:
        """Create or replace a form."""
        form = await self.check(form)
        stamp = _ts(_now(self.deployment))
        await self.db.execute(
            'INSERT INTO crm_form ("name", "definition", "created_at", "updated_at") VALUES (?, ?, ?, ?) '
            'ON CONFLICT ("name") DO UPDATE SET "definition" = excluded."definition", "updated_at" = excluded."updated_at"',
            (form.name, msgspec.json.encode(form).decode(), stamp, stamp))
        return form

    async def get(self, name: str) -> WebForm:
        if not isinstance(name, str) or not FORM_NAME.match(name):
            raise NotFound("form", str(name)[:60])
        definition = await self.db.fetchval('SELECT "definition" FROM crm_form WHERE "name" = ?', (name,))
        if definition is None:
            raise NotFound("form", name)
        return msgspec.json.decode(definition, type=WebForm)

    async def list(self) -> list[WebForm]:
        rows = await self.db.fetch('SELECT "definition" FROM crm_form ORDER BY "name"')
        return [msgspec.json.decode(r[0], type=WebForm) for r in rows]

    async def remove(self, name: str) -> None:
        await self.get(name)
        await self.db.execute('DELETE FROM crm_form WHERE "name" = ?', (name,))

    async def submissions(self, name: str, *, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        """The form's submission log, newest first."""
        params: list[Any] = [name]
        extra = ""
        if before_id is not None:
            extra, params = ' AND "id" < ?', [name, before_id]
        rows = await self.db.fetch(
            'SELECT "id", "form", "at", "ip", "outcome", "entity", "record_id", "errors" FROM crm_form_submission '
            f'WHERE "form" = ?{extra} ORDER BY "id" DESC LIMIT ?', [*params, limit])
        return [{"id": r[0], "form": r[1], "at": dt.datetime.fromisoformat(r[2]), "ip": r[3], "outcome": r[4],
                 "entity": r[5], "record_id": r[6], "errors": msgspec.json.decode(r[7]) if r[7] else []} for r in rows]

    # -- submissions -------------------------------------------------------------------------

    async def _log(self, form: WebForm, ip: str | None, submission: Submission) -> Submission:
        await self.db.execute(
            'INSERT INTO crm_form_submission ("form", "at", "ip", "outcome", "entity", "record_id", "errors") '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (form.name, _ts(_now(self.deployment)), ip, submission.outcome, form.entity, submission.record_id,
             msgspec.json.encode(submission.errors).decode() if submission.errors else None))
        return submission

    async def _rate_limit(self, form: WebForm, ip: str | None) -> None:
        if ip is None:
            return
        current = _now(self.deployment)
        oldest = await self.db.fetchval(
            'SELECT "at" FROM crm_form_submission WHERE "form" = ? AND "ip" = ? AND "at" > ? AND "outcome" <> ? '
            'ORDER BY "at" DESC LIMIT 1 OFFSET ?',
            (form.name, ip, _ts(current - RATE_WINDOW), "rate_limited", form.rate_limit - 1))
        if oldest is not None:
            wait = (dt.datetime.fromisoformat(oldest) + RATE_WINDOW - current).total_seconds()
            retry_after = max(1, math.ceil(wait))
            await self._log(form, ip, Submission(outcome="rate_limited"))
            raise RateLimited(f"too many submissions of this form from your address; try again in {retry_after} seconds",
                              retry_after)

    def _values(self, form: WebForm, data: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """The entity's values from the form's fields, and the errors of required fields."""
        entity = self.deployment.records.entity(form.entity)
        # Without a mapping, relations (ids of other records) are not the public's to set.
        names = {f.name for f in entity.visible_fields if f.type is not FieldType.RELATION}
        mapping = form.fields or {name: name for name in data if name in names}
        errors: list[FieldError] = []
        values: dict[str, Any] = {}
        for source, raw in data.items():
            if isinstance(raw, str) and (len(raw) > MAX_VALUE or "\x00" in raw):
                errors.append(FieldError(source, "invalid", f"at most {MAX_VALUE} characters of text"))
        for source, target in mapping.items():
            raw = data.get(source)
            if isinstance(raw, str):
                raw = raw.strip()
            if raw in (None, ""):
                continue
            values[target] = raw
        for name in form.required:
            raw = data.get(name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                errors.append(FieldError(name, "required", "this field is required"))
        return values, errors

    async def find_duplicate(self, form: WebForm, values: dict[str, Any]) -> int | None:
        """The oldest live record with one of the dedup values (phones normalised, e-mails
        compared case-insensitively), as the system sees it."""
        entity = self.deployment.records.entity(form.entity)
        settings = self.deployment.settings
        conditions: list[str] = []
        params: list[Any] = []
        for name in form.dedup:
            field = entity.field(name)
            raw = values.get(name)
            if field is None or raw in (None, ""):
                continue
            try:
                value = parse_value(field, raw, region=settings.region, currency=settings.currency)
            except FieldValueError:
                continue  # the create names the field
            if field.type is FieldType.PHONE:
                for other in entity.fields:
                    if other.type is FieldType.PHONE:
                        conditions.append(f'"{other.name}" = ?')
                        params.append(value.e164)
            elif field.type is FieldType.EMAIL:
                for other in entity.fields:
                    if other.type is FieldType.EMAIL:
                        conditions.append(f'lower("{other.name}") = ?')
                        params.append(value.lower())
        if not conditions:
            return None
        return await self.db.fetchval(
            f'SELECT "id" FROM "{entity.table}" WHERE "deleted_at" IS NULL AND ({" OR ".join(conditions)}) '
            'ORDER BY "id" LIMIT 1', params)

    async def _actor(self, form: WebForm) -> Actor:
        if form.as_user_id is None:
            return msgspec.structs.replace(SYSTEM, via="webform")
        return await self.deployment.auth.actor_for_user(form.as_user_id, via="webform")

    async def submit(self, name: str, data: dict[str, Any], *, ip: str | None) -> Submission:
        """Handle one submission of form ``name`` (see the module's docstring). NotFound for an
        unknown or inactive form, RateLimited, ValidationError naming the form's fields."""
        form = await self.get(name)
        if not form.active:
            raise NotFound("form", name)
        await self._rate_limit(form, ip)
        if not isinstance(data, dict):
            submission = Submission(outcome="invalid", errors=[FieldError("body", "invalid", "expected form fields")])
            await self._log(form, ip, submission)
            raise ValidationError(submission.errors)
        if form.honeypot and data.get(form.honeypot) not in (None, ""):
            return await self._log(form, ip, Submission(outcome="spam"))
        data = {k: v for k, v in data.items() if k != form.honeypot and not k.startswith("_")}
        values, errors = self._values(form, data)
        if errors:
            await self._log(form, ip, Submission(outcome="invalid", errors=errors))
            raise ValidationError(errors)
        duplicate = await self.find_duplicate(form, values)
        if duplicate is not None:
            await self._note_duplicate(form, duplicate, data)
            return await self._log(form, ip, Submission(outcome="duplicate", record_id=duplicate))
        if form.owner_id is not None:
            values["owner_id"] = form.owner_id
        if form.team_id is not None:
            values["team_id"] = form.team_id
        if form.entity == "contact" and "source" not in values:
            values["source"] = f"web form {form.name}"
        try:
            records = self.deployment.records.as_actor(await self._actor(form))
            record = await records.create(form.entity, values)
        except ValidationError as exc:
            back = {target: source for source, target in (form.fields or {}).items()}
            errors = [FieldError(back.get(e.field, e.field), e.code, e.message) for e in exc.errors]
            await self._log(form, ip, Submission(outcome="invalid", errors=errors))
            raise ValidationError(errors) from None
        except (Forbidden, Unauthenticated) as exc:  # the form's user may not (any longer) create these
            log.error("web form %r cannot create %s records: %s", form.name, form.entity, exc)
            await self._log(form, ip, Submission(outcome="invalid", errors=[FieldError("form", "misconfigured", str(exc))]))
            raise FormUnavailable(f"form {form.name!r} cannot take submissions now; its configuration needs fixing") from None
        return await self._log(form, ip, Submission(outcome="created", record_id=record["id"]))

    async def _note_duplicate(self, form: WebForm, record_id: int, data: dict[str, Any]) -> None:
        """A note on the existing record: who wrote what through which form."""
        existing = await self.deployment.records.get(form.entity, record_id)
        lines = [f"{k}: {v}" for k, v in data.items() if isinstance(v, (str, int, float)) and str(v).strip()]
        note: dict[str, Any] = {
            "kind": "note", "subject": f"Web form {form.name!r} submitted again",
            "body": "\n".join(lines) or None, "owner_id": existing.get("owner_id"),
            "assignee": existing.get("owner_id"),
        }
        if form.entity in ("contact", "company", "deal"):
            note[form.entity] = record_id
        else:
            note["related_entity"], note["related_id"] = form.entity, record_id
        await self.deployment.records.create("activity", note)
