"""The beauty salon's entity types, as data. Names are namespaced by the core: ``service``
becomes ``beauty_salon_service``, and so on.

- a **service** takes ``duration`` minutes, then ``buffer_after`` minutes to clean up, costs
  ``price``, and needs one free **resource** of ``resource_kind`` (a chair, a room) if set;
- a **staff** member (linked to a user, or not) does the services ``staff_service`` lists for
  them (none listed: every service), within their **working hours** (per weekday, in the salon's
  time zone, with an optional break) except their **time off** (days off, holidays, one-off
  breaks);
- an **appointment** books a client (a contact) with a staff member for one or more services
  (``appointment_service``, in order); its end follows from them. Who may be booked when is
  checked in the one write path, so every entry point obeys it.
"""

from __future__ import annotations

from crmcore import EntityType, Field, FieldType

T = FieldType

SERVICE = "beauty_salon_service"
RESOURCE = "beauty_salon_resource"
STAFF = "beauty_salon_staff"
STAFF_SERVICE = "beauty_salon_staff_service"
HOURS = "beauty_salon_working_hours"
TIME_OFF = "beauty_salon_time_off"
APPOINTMENT = "beauty_salon_appointment"
APPOINTMENT_SERVICE = "beauty_salon_appointment_service"

STATUSES = ("booked", "confirmed", "arrived", "completed", "no_show", "cancelled")
#: Statuses that hold their slot (a cancelled or missed appointment frees it).
HOLDING = ("booked", "confirmed", "arrived", "completed")
SOURCES = ("salon", "online", "phone")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TIME_HELP = "HH:MM, in the salon's time zone"

ENTITIES = [
    EntityType(name="service", label="Service", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, in_list=True),
        Field(name="category", type=T.TEXT, indexed=True, in_list=True, help_text="hair, nails, face..."),
        Field(name="duration", type=T.INTEGER, required=True, in_list=True, help_text="minutes"),
        Field(name="buffer_after", type=T.INTEGER, default=0, help_text="minutes to clean up after it"),
        Field(name="price", type=T.MONEY, required=True, in_list=True),
        Field(name="resource_kind", type=T.TEXT, help_text="the kind of resource it needs (chair, room); empty: none"),
        Field(name="online", type=T.BOOLEAN, default=True, label="Bookable online"),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
        Field(name="description", type=T.LONG_TEXT),
    ]),
    EntityType(name="resource", label="Resource", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, unique=True, in_list=True),
        Field(name="kind", type=T.TEXT, required=True, indexed=True, in_list=True, help_text="chair, room, basin..."),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
    ]),
    EntityType(name="staff", label="Staff member", label_plural="Staff", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, in_list=True),
        Field(name="user", type=T.RELATION, target="user", indexed=True, in_list=True, help_text="their login, if any"),
        Field(name="email", type=T.EMAIL),
        Field(name="phone", type=T.PHONE),
        Field(name="commission_rate", type=T.DECIMAL, default="0", help_text="percent of the services' price"),
        Field(name="color", type=T.TEXT, help_text="on the calendar, e.g. #c0392b"),
        Field(name="online", type=T.BOOLEAN, default=True, label="Bookable online"),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
        Field(name="feed_token", type=T.TEXT, unique=True,
              help_text="the SHA-256 of their calendar feed URL's secret (made on the Calendar feed page)"),
    ]),
    EntityType(name="staff_service", label="Service of a staff member", title_field="service", fields=[
        Field(name="staff", type=T.RELATION, target=STAFF, required=True, indexed=True, in_list=True),
        Field(name="service", type=T.RELATION, target=SERVICE, required=True, indexed=True, in_list=True),
    ]),
    EntityType(name="working_hours", label="Working hours", label_plural="Working hours", title_field="weekday", fields=[
        Field(name="staff", type=T.RELATION, target=STAFF, required=True, indexed=True, in_list=True),
        Field(name="weekday", type=T.CHOICE, choices=list(WEEKDAYS), required=True, in_list=True),
        Field(name="start_time", type=T.TEXT, required=True, in_list=True, help_text=TIME_HELP),
        Field(name="end_time", type=T.TEXT, required=True, in_list=True, help_text=TIME_HELP),
        Field(name="break_start", type=T.TEXT, help_text=TIME_HELP),
        Field(name="break_end", type=T.TEXT, help_text=TIME_HELP),
    ]),
    EntityType(name="time_off", label="Time off", label_plural="Time off", title_field="reason", fields=[
        Field(name="staff", type=T.RELATION, target=STAFF, required=True, indexed=True, in_list=True),
        Field(name="starts_at", type=T.DATETIME, required=True, indexed=True, in_list=True),
        Field(name="ends_at", type=T.DATETIME, required=True, indexed=True, in_list=True),
        Field(name="reason", type=T.TEXT, in_list=True, help_text="day off, holiday, training..."),
    ]),
    EntityType(name="appointment", label="Appointment", title_field="starts_at", fields=[
        Field(name="client", type=T.RELATION, target="contact", required=True, indexed=True, in_list=True),
        Field(name="staff", type=T.RELATION, target=STAFF, required=True, indexed=True, in_list=True),
        Field(name="resource", type=T.RELATION, target=RESOURCE, indexed=True, help_text="given when booked"),
        Field(name="starts_at", type=T.DATETIME, required=True, indexed=True, in_list=True),
        Field(name="ends_at", type=T.DATETIME, indexed=True, in_list=True, help_text="from the services' durations"),
        Field(name="blocked_until", type=T.DATETIME, indexed=True, help_text="the end and the services' buffer"),
        Field(name="status", type=T.CHOICE, choices=list(STATUSES), default="booked", indexed=True, in_list=True),
        Field(name="cancel_reason", type=T.TEXT),
        Field(name="price", type=T.MONEY, in_list=True, help_text="the services' prices"),
        Field(name="paid", type=T.MONEY),
        Field(name="source", type=T.CHOICE, choices=list(SOURCES), default="salon"),
        Field(name="notes", type=T.LONG_TEXT),
        Field(name="online_token", type=T.TEXT, unique=True,
              help_text="the SHA-256 of the secret in the client's link to confirm, cancel or move it"),
    ]),
    EntityType(name="appointment_service", label="Service booked", title_field="service", fields=[
        Field(name="appointment", type=T.RELATION, target=APPOINTMENT, required=True, indexed=True),
        Field(name="service", type=T.RELATION, target=SERVICE, required=True, indexed=True, in_list=True),
        Field(name="position", type=T.INTEGER, required=True),
        Field(name="duration", type=T.INTEGER, required=True, help_text="minutes, as booked"),
        Field(name="buffer_after", type=T.INTEGER, default=0),
        Field(name="price", type=T.MONEY, in_list=True, help_text="as booked"),
    ]),
]
