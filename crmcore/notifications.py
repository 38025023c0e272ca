"""In-app notifications, e-mail delivery over SMTP, and task reminders.

``deployment.notifications.notify(user_ids, title, body, link, kind)`` is what reminders and
automation rules use: one row per user in ``crm_notification`` (read with ``GET
/api/notifications``), and, when the deployment has an SMTP server (``smtp_host`` and
``smtp_from`` settings), an e-mail per notification, sent by a durable job (retried on failure).

**Reminders.** An activity whose ``remind_at`` is set and which is not done has a reminder job,
keyed per activity (``reminder:activity:<id>``): setting, moving or clearing ``remind_at``,
marking the activity done, deleting or restoring it reschedules or cancels the job (the core's
``crm_after_commit``). When the job fires, the activity is read again: a done, deleted or
re-timed activity does not remind. Otherwise its assignee (else its owner) gets a notification
(kind ``reminder``), once: the notification carries a unique key, so a retried job or a second
worker never notifies twice. A reminder time already past when it is set fires at the next run
of the job queue. The reminder says when the activity is due in the user's time zone (else
the deployment's).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import smtplib
import ssl
import zoneinfo
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from .auth.permissions import Actor
from .records.errors import FieldError, NotFound, ValidationError

if TYPE_CHECKING:
    from .deployment import Deployment, Settings
    from .records.service import RecordEvent

__all__ = ["NotificationService", "send_mail", "REMINDER_JOB", "EMAIL_JOB", "reminder_key"]

log = logging.getLogger(__name__)
UTC = dt.timezone.utc
REMINDER_JOB = "activity.reminder"
EMAIL_JOB = "notification.email"
MAX_LIMIT = 200
_COLUMNS = '"id", "user_id", "kind", "title", "body", "link", "entity", "record_id", "created_at", "read_at"'


def reminder_key(activity_id: int) -> str:
    return f"reminder:activity:{activity_id}"


def _ts(value: dt.datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def now(deployment: Deployment) -> dt.datetime:
    """The deployment's clock (controllable in tests)."""
    return _aware(deployment.clock.now())


def smtp_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.smtp_from)


def send_mail(settings: Settings, to: str, subject: str, text: str) -> None:
    """Send one plain-text e-mail through the deployment's SMTP server (blocking: run it in a
    thread). Raises ``smtplib.SMTPException`` / ``OSError`` when the server refuses or is down."""
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as server:
        if settings.smtp_starttls:
            server.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            server.login(settings.smtp_user, settings.smtp_password or "")
        server.send_message(message)


def _row(row: tuple) -> dict[str, Any]:
    return {"id": row[0], "user_id": row[1], "kind": row[2], "title": row[3], "body": row[4], "link": row[5],
            "entity": row[6], "record_id": row[7], "created_at": _aware(row[8]), "read_at": _aware(row[9]),
            "read": row[9] is not None}


def _check_text(name: str, value: Any, *, required: bool = False, max_length: int = 10_000) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_length or "\x00" in value:
        raise ValidationError([FieldError(name, "invalid", f"{name} must be text of at most {max_length} characters")])


class NotificationService:
    """``deployment.notifications``."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    @property
    def db(self):
        return self.deployment.db

    # -- writing ---------------------------------------------------------------------------

    async def notify(
        self, user_ids: list[int], title: str, body: str | None = None, link: str | None = None,
        kind: str = "info", *, entity: str | None = None, record_id: int | None = None, key: str | None = None,
    ) -> list[int]:
        """Notify users; returns the ids of the notifications made. ``key`` makes it idempotent:
        a user already notified with that key is not notified again. E-mails follow when SMTP
        is configured."""
        _check_text("title", title, required=True, max_length=500)
        _check_text("body", body)
        _check_text("link", link, max_length=2000)
        _check_text("kind", kind, required=True, max_length=100)
        stamp = _ts(now(self.deployment))
        made: list[int] = []
        for user_id in user_ids:
            if isinstance(user_id, bool) or not isinstance(user_id, int):
                raise ValidationError([FieldError("user_ids", "invalid", "user ids are whole numbers")])
        wanted = list(dict.fromkeys(user_ids))
        if wanted:
            table = self.deployment.records.entity("user").table
            known = {r[0] for r in await self.db.fetch(
                f'SELECT "id" FROM "{table}" WHERE "deleted_at" IS NULL AND "id" IN ({", ".join("?" for _ in wanted)})',
                wanted)}
            unknown = [u for u in wanted if u not in known]
            if unknown:
                raise ValidationError([FieldError("user_ids", "not_found", f"no user with id {unknown[0]}")])
        email = smtp_configured(self.deployment.settings)
        async with self.db.transaction():  # a notification and its e-mail job commit together
            for user_id in wanted:
                row = await self.db.fetchrow(
                    'INSERT INTO crm_notification ("user_id", "kind", "title", "body", "link", "entity", "record_id", '
                    '"created_at", "dedup_key") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) '
                    'ON CONFLICT ("dedup_key") DO NOTHING RETURNING "id"',
                    (user_id, kind, title, body, link, entity, record_id, stamp,
                     f"{key}:user:{user_id}" if key is not None else None))
                if row is not None:
                    made.append(row[0])
                    if email:
                        await self._queue_email(row[0])
        return made

    async def notify_role(self, role: str, title: str, body: str | None = None, link: str | None = None,
                          kind: str = "info", **options: Any) -> list[int]:
        """Notify every active user having ``role``."""
        return await self.notify(await self.users_with_role(role), title, body, link, kind, **options)

    async def users_with_role(self, role: str) -> list[int]:
        table = self.deployment.records.entity("user").table
        rows = await self.db.fetch(
            f'SELECT a."user_id" FROM crm_user_auth a JOIN "{table}" u ON u."id" = a."user_id" '
            'WHERE a."role" = ? AND u."deleted_at" IS NULL AND u."active" = ? ORDER BY a."user_id"', (role, True))
        return [r[0] for r in rows]

    async def _queue_email(self, notification_id: int) -> None:
        await self.deployment.jobs.enqueue(EMAIL_JOB, {"notification_id": notification_id}, key=f"email:notification:{notification_id}")

    async def send_email(self, notification_id: int) -> bool:
        """E-mail one notification to its user (once: ``emailed_at`` is set). False when there
        is nothing to send (no SMTP, no address, already sent). SMTP errors propagate (the job
        retries)."""
        settings = self.deployment.settings
        if not smtp_configured(settings):
            return False
        row = await self.db.fetchrow(f'SELECT {_COLUMNS}, "emailed_at" FROM crm_notification WHERE "id" = ?',
                                     (notification_id,))
        if row is None or row[10] is not None:
            return False
        note = _row(row)
        try:
            user = await self.deployment.auth.user(note["user_id"])
        except NotFound:
            return False
        if not user.get("email") or not user.get("active"):
            return False
        link = note["link"]
        if link and link.startswith("/") and settings.base_url:
            link = settings.base_url + link
        text = "\n\n".join(part for part in (note["body"], link) if part) or note["title"]
        await asyncio.to_thread(send_mail, settings, user["email"], note["title"], text)
        await self.db.execute('UPDATE crm_notification SET "emailed_at" = ? WHERE "id" = ?',
                              (_ts(now(self.deployment)), notification_id))
        return True

    # -- reading (a user's own) --------------------------------------------------------------

    async def list(self, actor: Actor, *, unread: bool = False, limit: int = 50,
                   before_id: int | None = None) -> dict[str, Any]:
        """The actor's notifications, newest first: ``{items, next_cursor, unread}``; page with
        ``before_id`` (the previous page's ``next_cursor``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError([FieldError("limit", "invalid", f"limit must be between 1 and {MAX_LIMIT}")])
        where, params = ['"user_id" = ?'], [actor.user_id]
        if unread:
            where.append('"read_at" IS NULL')
        if before_id is not None:
            where.append('"id" < ?')
            params.append(before_id)
        rows = await self.db.fetch(
            f'SELECT {_COLUMNS} FROM crm_notification WHERE {" AND ".join(where)} ORDER BY "id" DESC LIMIT ?',
            [*params, limit + 1])
        items = [_row(r) for r in rows[:limit]]
        return {"items": items, "next_cursor": str(items[-1]["id"]) if len(rows) > limit else None,
                "unread": await self.unread_count(actor)}

    async def unread_count(self, actor: Actor) -> int:
        return await self.db.fetchval(
            'SELECT count(*) FROM crm_notification WHERE "user_id" = ? AND "read_at" IS NULL', (actor.user_id,))

    async def mark_read(self, actor: Actor, notification_id: int) -> dict[str, Any]:
        """Mark one of the actor's notifications read; NotFound for anyone else's."""
        if isinstance(notification_id, bool) or not isinstance(notification_id, int) or not 0 < notification_id < 2**63:
            raise NotFound("notification", notification_id)
        await self.db.execute(
            'UPDATE crm_notification SET "read_at" = ? WHERE "id" = ? AND "user_id" = ? AND "read_at" IS NULL',
            (_ts(now(self.deployment)), notification_id, actor.user_id))
        row = await self.db.fetchrow(f'SELECT {_COLUMNS} FROM crm_notification WHERE "id" = ? AND "user_id" = ?',
                                     (notification_id, actor.user_id))
        if row is None:
            raise NotFound("notification", notification_id)
        return _row(row)

    async def mark_all_read(self, actor: Actor) -> int:
        """Mark all the actor's notifications read; returns how many were unread."""
        count = await self.unread_count(actor)
        await self.db.execute('UPDATE crm_notification SET "read_at" = ? WHERE "user_id" = ? AND "read_at" IS NULL',
                              (_ts(now(self.deployment)), actor.user_id))
        return count

    # -- reminders ---------------------------------------------------------------------------

    async def schedule_reminders(self, event: RecordEvent) -> None:
        """Keep the reminder jobs of the activities a committed write touched in step."""
        if event.entity != "activity":
            return
        jobs = self.deployment.jobs
        for record_id, record, changes in zip(event.record_ids, event.records, event.changes):
            key = reminder_key(record_id)
            if event.action == "update" and not {"remind_at", "done"} & set(changes):
                continue
            remind_at = _aware(record.get("remind_at"))
            if event.action in ("create", "update", "restore") and remind_at is not None and not record.get("done"):
                # one pending job per key: enqueueing again moves it
                await jobs.enqueue(REMINDER_JOB, {"activity_id": record_id, "remind_at": _ts(remind_at)},
                                   run_at=remind_at, key=key)
            elif event.action != "create":
                await jobs.cancel(key)

    async def _shown(self, when: dt.datetime, user_id: int) -> str:
        """A time as the user reads it: in their time zone, else the deployment's."""
        zone_name = self.deployment.settings.timezone
        try:
            zone_name = (await self.deployment.auth.user(user_id)).get("time_zone") or zone_name
        except NotFound:
            pass
        try:
            zone = zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = zoneinfo.ZoneInfo("UTC")
        return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    async def fire_reminder(self, activity_id: int, remind_at: str | None = None) -> list[int]:
        """A reminder's due: notify the activity's assignee (else its owner), unless the
        activity is done, deleted or was given another reminder time. Returns the notifications
        made (none when it already reminded)."""
        try:
            activity = await self.deployment.records.get("activity", activity_id)
        except NotFound:
            return []
        current = _aware(activity.get("remind_at"))
        if activity.get("done") or current is None:
            return []
        if remind_at is not None and _aware(remind_at) != current:
            return []  # re-timed: the job of the new time reminds
        user_id = activity.get("assignee") or activity.get("owner_id")
        if user_id is None:
            log.warning("activity %s has a reminder but neither an assignee nor an owner", activity_id)
            return []
        due = _aware(activity.get("due_at"))
        body = f"Due {await self._shown(due, user_id)}" if due else None
        if activity.get("body"):
            body = f"{body}\n\n{activity['body']}" if body else activity["body"]
        return await self.notify(
            [user_id], f"Reminder: {activity['subject']}", body, f"/activity/{activity_id}", "reminder",
            entity="activity", record_id=activity_id, key=f"reminder:{activity_id}:{_ts(current)}")


def register_job_handlers(register) -> None:
    """The reminder and e-mail job handlers (the core's ``crm_job_handlers``)."""

    async def reminder(dep: Deployment, payload: dict[str, Any]) -> None:
        await dep.notifications.fire_reminder(payload["activity_id"], payload.get("remind_at"))

    async def email(dep: Deployment, payload: dict[str, Any]) -> None:
        await dep.notifications.send_email(payload["notification_id"])

    register(REMINDER_JOB, reminder, max_attempts=5)
    register(EMAIL_JOB, email, max_attempts=8)
