"""The hook contract: every hook a plugin may implement, one docstring each.

This module and :mod:`crmcore` (the public API) are all a plugin imports. Hooks are called with
keyword arguments only; an implementation may accept any subset of them. Arguments are only ever
added, never renamed. ``register_*`` hooks pass a ``register`` callback so options can grow without
changing the hook.

The smallest plugin::

    import crmcore
    from crmcore import hookimpl

    PLUGIN = crmcore.PluginInfo(name="hello", version="1.0", description="Says hello")

    @hookimpl
    def crm_register_entities(register):
        register(crmcore.EntityType(name="greeting", fields=[
            crmcore.Field(name="text", type=crmcore.FieldType.TEXT, required=True),
        ]))

A plugin may declare hooks of its own for other plugins to implement (telephony's call
providers): a module or class of ``@hookspec`` functions, named by ``HOOKSPECS = ...`` in the
plugin's package. They are added when the plugin is enabled; other plugins implement them with
``@hookimpl`` as usual, and the declaring plugin calls them through ``deployment.pm.hook``.
"""

from __future__ import annotations

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "crm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def crm_register_entities(register, deployment):
    """Declare entity types.

    :param register: ``register(entity_type: EntityType)``; the entity's name and table are
        namespaced with the plugin's name (``call`` in plugin ``telephony`` becomes
        ``telephony_call``). A name another plugin already declared is refused.
    :param deployment: the :class:`crmcore.Deployment` being opened.

    Example::

        @hookimpl
        def crm_register_entities(register):
            register(EntityType(name="call", label="Call", fields=[
                Field(name="number", type=FieldType.PHONE, required=True),
                Field(name="duration", type=FieldType.INTEGER, help_text="seconds"),
            ]))
    """


@hookspec
def crm_extend_entities(add_field, deployment):
    """Add fields to an entity another plugin (or the core) declared.

    Called after every plugin's ``crm_register_entities``.

    :param add_field: ``add_field(entity_name: str, field: Field)``.

    Example::

        @hookimpl
        def crm_extend_entities(add_field):
            add_field("contact", Field(name="loyalty_card", type=FieldType.TEXT, unique=True))
    """


@hookspec
def crm_register_pipelines(register, deployment):
    """Declare sales pipelines and their stages for an entity type.

    The entity needs a ``stage`` field (and a ``pipeline`` field to have more than one pipeline).
    Stage moves are then checked and recorded by the core (see :mod:`crmcore.pipelines`). An
    admin may customise a declared pipeline at run time (stored over the declaration).

    :param register: ``register(pipeline: Pipeline)``.

    Example::

        @hookimpl
        def crm_register_pipelines(register):
            register(Pipeline(name="rent", entity="real_estate_deal", stages=[
                Stage(name="inquiry", probability=10),
                Stage(name="lease_signed", kind="won", probability=100),
                Stage(name="lost", kind="lost"),
            ]))
    """


@hookspec
def crm_register_editions(register):
    """Declare editions: a named set of plugins, settings and demo data (e.g. "Salon CRM").

    :param register: ``register(edition: Edition)``.

    Example::

        @hookimpl
        def crm_register_editions(register):
            register(Edition(name="salon", label="Salon CRM", plugins=["beauty_salon"],
                             settings={"currency": "EUR"}, demo=load_salon_demo))
    """


@hookspec
def crm_register_routes(register, deployment):
    """Add HTTP routes to the REST API or the web app.

    :param register: ``register(handler)`` takes litestar route handlers, controllers or routers.
        Paths should start with ``/api/<plugin>/`` or ``/<plugin>/``. A disabled plugin's routes
        answer 404. Routes require a signed-in user (API token or session) unless declared
        ``opt={"public": True}``. A handler may take ``actor: crmcore.api.CurrentActor`` (the
        request's user; ``OptionalActor`` on a public route) and ``deployment:
        crmcore.api.CurrentDeployment``; it reads and writes through
        ``deployment.records.as_actor(actor)`` so the user's role applies
        (``deployment.records`` alone acts as the system).

    Example::

        from litestar import get
        from crmcore.api import CurrentActor, CurrentDeployment

        @get("/api/hello/count")
        async def count(actor: CurrentActor, deployment: CurrentDeployment) -> dict:
            records = deployment.records.as_actor(actor)
            page = await records.list("hello_greeting", ListQuery(limit=1, count=True))
            return {"greetings": page.total}

        @hookimpl
        def crm_register_routes(register):
            register(count)
    """


@hookspec
def crm_register_commands(cli):
    """Add click commands to the ``crm`` command line.

    :param cli: the root :class:`click.Group`.

    Example::

        @hookimpl
        def crm_register_commands(cli):
            @cli.group()
            def calls():
                "Telephony commands."
    """


@hookspec
def crm_ui_items(register, deployment):
    """Contribute UI items to named slots: ``record.panel`` (a panel on the record pages of
    ``entity``), ``record.action`` (a button there, linking to ``url`` with ``?entity=&id=``),
    ``menu`` (a navigation link to ``url``), ``dashboard.widget`` and ``page.script`` (a script
    at ``url`` every page loads, deferred: live features such as a call's screen-pop). The web
    UI renders them; it never patches another template.

    Templates and static files are found by convention: ``template="telephony/calls_panel.html"``
    is ``templates/calls_panel.html`` in the plugin's package, and its ``static/`` folder is served
    at ``/static/plugins/telephony/``. A panel or widget template is rendered with ``record`` and
    ``entity`` (record panels), ``records`` (the records service as the signed-in user: it may
    call ``records.list("telephony_call", query(filter=..., limit=10))``), ``fmt`` (the user's
    formatting: ``fmt.money``, ``fmt.datetime``...), ``user``, ``actor``, ``item`` and ``_()``;
    autoescaped; a template that fails is logged and shown as a short note. A panel listing
    related records its own way names the core's list it stands in for, ``replaces=
    "telephony_call.contact"`` (or a tuple of them). A whole page is a route
    (``crm_register_routes``) answering ``await crmcore.render_page(request,
    "telephony/page.html", ...)``; link it with a ``menu`` item.
    What a template cannot read with ``records.list`` (a client's balance, metrics computed in
    SQL) comes from the item's ``context``: ``async def context(deployment, actor, record,
    entity)`` returning a dict of names added to the template's; read as ``actor``.

    :param register: ``register(item: UIItem)``.

    Example::

        @hookimpl
        def crm_ui_items(register):
            register(UIItem(slot="record.panel", entity="contact", name="calls", label="Calls",
                            template="telephony/calls_panel.html", replaces="telephony_call.contact"))

            async def minutes(deployment, actor, record, entity):
                return {"minutes": await talk_minutes(deployment, actor, entity, record["id"])}

            register(UIItem(slot="record.panel", entity="contact", name="talk_time", label="Talk time",
                            template="telephony/talk_time.html", context=minutes))
            register(UIItem(slot="menu", name="calls", label="Calls", url="/telephony/calls"))
    """


@hookspec
def crm_before_save(change, deployment):
    """Validate or change a record before it is written, inside the write's transaction.

    Called once per ``records.create/update/delete`` (and once per batch for bulk writes, with
    ``change.batch`` holding every row's values). Raise :class:`crmcore.ValidationError` to refuse
    the write with field errors; change ``change.values`` (or the dicts in ``change.batch``) to
    adjust what is written: what a hook sets is validated like user input. A bulk update also
    gives ``change.befores`` (each row's record as it is). ``change.after_write(callback)`` has
    ``callback(record_ids)`` called in the same transaction once the rows are written (a create's
    new ids included): to write rows of one's own that commit or roll back with the write, as the
    core's stage history does.

    :param change: a :class:`crmcore.Change` (``entity``, ``action``, ``values``, ``before``, ``user``).

    Example::

        @hookimpl
        def crm_before_save(change):
            if change.entity == "deal" and change.values.get("amount") is None:
                raise ValidationError([FieldError("amount", "required", "a deal needs an amount")])
    """


@hookspec
def crm_after_commit(event, deployment):
    """React to a committed write: automation, webhooks, integrations.

    Errors raised here are logged and never undo or fail the write.

    :param event: a :class:`crmcore.RecordEvent`: ``entity``, ``action``, ``record_ids``,
        ``records`` (whole, hidden fields included: hooks are trusted code), ``changes`` (per
        record, ``{field: [old, new]}``) and ``user_id``; ``record_id`` and ``record`` are the
        first of them. A single write gives one record; a bulk write one event per batch
        (:data:`crmcore.records.service.BULK_CHUNK` records). May return an awaitable.

    Example::

        @hookimpl
        def crm_after_commit(event):
            if event.entity == "contact" and event.action == "create":
                print("new contact", event.record_id)
    """


@hookspec
def crm_register_permissions(register, deployment):
    """Declare named permissions beyond record access (an action a plugin guards itself).

    :param register: ``register(permission: Permission)``; the name is prefixed with the
        plugin's name (``call`` in plugin ``telephony`` becomes ``telephony.call``).
        ``permission.roles`` are the built-in roles that have it by default; an admin grants it
        to other roles by listing it in their ``grants``.

    A route checks it with ``actor.has("telephony.call")``, the actor being the request's.

    Example::

        @hookimpl
        def crm_register_permissions(register):
            register(Permission(name="call", label="Place calls",
                                roles=("admin", "sales_manager", "agent")))
    """


@hookspec
def crm_job_handlers(register, deployment):
    """Register handlers of durable jobs (:mod:`crmcore.jobs`): work that runs later or in the
    background, kept in the database (it survives a restart) and retried when it fails.

    :param register: ``register(kind, handler, *, max_attempts=None, on_dead=None)``. ``kind``
        is prefixed with the plugin's name (``call_back`` in plugin ``telephony`` becomes
        ``telephony.call_back``); ``handler`` is ``async def handler(deployment, payload)``. Jobs
        are added with ``await deployment.jobs.enqueue("telephony.call_back", payload,
        run_at=..., key=...)``. A handler that raises is retried with exponential backoff
        (30 s, 1 min, 2 min ... at most an hour apart) up to ``max_attempts`` (default 8); then
        the job is dead (kept, listed by ``crm jobs list --status dead``) and
        ``on_dead(deployment, payload, error)`` runs. A job may run twice when a worker dies
        mid-job, so make handlers harmless to repeat.

    Example::

        @hookimpl
        def crm_job_handlers(register):
            async def call_back(deployment, payload):
                await deployment.records.create("activity", {
                    "kind": "call", "subject": "Call back", "contact": payload["contact"]})

            register("call_back", call_back, max_attempts=3)
    """


@hookspec
def crm_deliver_password_reset(user, link, deployment):
    """Deliver a password-reset link (e-mail, SMS...). Called when a user asks for a reset.

    Without an implementation, nothing is sent: an admin hands out a link made with
    ``crm users reset-link EMAIL``. May return an awaitable.

    :param user: the user's record (``name``, ``email``, ``locale`` ...).
    :param link: the one-time link (valid for an hour).

    Example::

        @hookimpl
        def crm_deliver_password_reset(user, link):
            send_mail(user["email"], "Your password reset", f"Open {link} within the hour.")
    """


@hookspec
def crm_startup(deployment):
    """Run once when a deployment is opened (server, CLI or tests). May return an awaitable.

    Example::

        @hookimpl
        def crm_startup(deployment):
            deployment.settings.setdefault("hello.greeting", "hi")
    """


@hookspec
def crm_timeline_items(entity, record_id, before, limit, actor, deployment):
    """Contribute items to a record's timeline (the client card's history): calls, invoices,
    visits... They are merged with the record's activities and field changes, newest first.

    Called for every page of a timeline the actor may read. Return at most ``limit`` items of
    the record that happened at or before ``before`` (``None``: the first page), newest first,
    as :class:`crmcore.TimelineItem` (or dicts of its fields); the core fills in
    ``source`` (the plugin's name) and drops what the previous page already showed. Only return
    what ``actor`` may see: read through ``deployment.records.as_actor(actor)``. May return an
    awaitable. A plugin that raises is logged and left out; the timeline still answers.

    :param entity: the record's entity type (``contact``, ``deal``, ``real_estate_property``...).
    :param record_id: the record's id.
    :param before: a timezone-aware ``datetime``, or ``None`` for the newest items.
    :param limit: how many items are wanted at most.
    :param actor: the :class:`crmcore.Actor` the timeline is read as.

    Example::

        from crmcore import ListQuery, TimelineItem

        @hookimpl
        def crm_timeline_items(entity, record_id, before, limit, actor, deployment):
            if entity != "contact":
                return []
            conditions = [{"field": "contact", "op": "eq", "value": record_id}]
            if before is not None:
                conditions.append({"field": "created_at", "op": "lte", "value": before.isoformat()})

            async def calls():
                page = await deployment.records.as_actor(actor).list("telephony_call", ListQuery(
                    filter={"and": conditions}, sort=["-created_at"], limit=limit))
                return [TimelineItem(at=call["created_at"], kind="call", id=call["id"],
                                     title=f"Call {call['direction']}", link=f"/api/telephony_call/{call['id']}")
                        for call in page.items]

            return calls()
    """


@hookspec
def crm_document_context(template, entity, record, actor, deployment):
    """Give document templates more to print about a record: an invoice's computed lines and
    tax breakdown, a listing's photos... beside the core's ``record``, ``related``, ``settings``.

    Called when a template of ``entity`` is filled, after the record was read as ``actor``.
    Return a dict of names to add (or None; may be an awaitable). Names the core already gives
    (``record``, ``related``, ``entity``, ``settings``, ``now``, ``user``, ``template``,
    ``range``) are not replaced; a name two plugins give is the first plugin's. The values go
    into the sandbox: plain dicts, lists, strings, numbers, dates. A plugin that raises fails
    the rendering with its error (a document printed without its data would be wrong).

    :param template: the template as listed (``name``, ``entity``, ``label``, ``format``).
    :param entity: the record's entity type name.
    :param record: the record as ``actor`` reads it.
    :param actor: the :class:`crmcore.Actor` the document is made for.

    Example::

        @hookimpl
        def crm_document_context(entity, record, actor, deployment):
            if entity != "invoicing_invoice":
                return None

            async def lines():
                page = await deployment.records.as_actor(actor).list("invoicing_line", ListQuery(
                    filter={"field": "invoice", "op": "eq", "value": record["id"]}, sort=["position"], limit=500))
                return {"lines": page.items}

            return lines()
    """


@hookspec
def crm_automation_actions(register, deployment):
    """Add actions automation rules can take (send a message, make a document...), beside the
    core's create_task, notify, set_field, move_stage, create_record, webhook and generate_document.

    :param register: ``register(name, run, *, check=None, label="", description="")``. ``name``
        is prefixed with the plugin's name (``send_sms`` in plugin ``telephony`` is used in a
        rule as ``{"type": "telephony.send_sms", ...}``).

        ``run(context)`` (may be async) does the action when a rule fires. ``context`` is a
        :class:`crmcore.automation.ActionContext`: ``params`` (the action's keys as stored),
        ``record`` (the record, or None for a schedule rule without an entity), ``entity``,
        ``rule``, ``records`` (the records service acting as the automation user: write
        through it), ``render(text)`` (fills a sandboxed template with ``record``...). It runs
        inside the firing's transaction: raise :class:`crmcore.automation.ActionError` (or any
        exception) to fail the firing, and none of its actions takes effect. Slow work
        (sending, rendering files) belongs in a job (``deployment.jobs.enqueue``), enqueued
        here so that it commits with the rest. What it returns (JSON-able) goes in the firing
        log.

        ``check(params, entity)`` validates the action when a rule is saved (``entity`` is the
        rule's :class:`crmcore.EntityType`, or None): raise ``ValueError`` or a
        ``ValidationError`` naming the key; it may return the params normalised.

    Example::

        from crmcore.automation import ActionError

        @hookimpl
        def crm_automation_actions(register):
            def check(params, entity):
                if not params.get("text"):
                    raise ValueError("text is required")

            async def send_sms(context):
                number = (context.record or {}).get("mobile")
                if not number:
                    raise ActionError("the contact has no mobile number")
                await context.deployment.jobs.enqueue(
                    "telephony.sms", {"to": number, "text": context.render(context.params["text"])})
                return {"to": number}

            register("send_sms", send_sms, check=check, label="Send an SMS")
    """


@hookspec
def crm_register_reports(register, deployment):
    """Declare reports: saved report definitions shipped with the plugin, listed and run beside
    the core's built-in ones (``/api/reports``, ``crm reports``, ``/reports``).

    :param register: ``register(definition: dict, *, make=None)``; the definition takes the keys
        of a saved report (``name``, ``label``, ``description``, ``entity``, ``filter``,
        ``group_by``, ``measures``, ``sort``, ``limit``, ``chart``; see :mod:`crmcore.reports`)
        and is checked as one: after a bad definition the plugin's reports are left out and the
        error, naming the key, is logged; the other reports still work. The name is prefixed
        with the plugin's (``by_city`` in plugin ``estate`` is run as ``estate.by_city``).
        ``make(now)`` (``now`` a UTC datetime) gives the definition again at each run, for
        periods relative to today ("overdue by 1-30 days"); ``definition`` is what is listed.
        A plugin's page runs one with ``await deployment.reports.run(name, actor=actor)`` and
        offers its download with :func:`crmcore.reports.to_csv` or ``to_xlsx``.
    :param deployment: the :class:`crmcore.Deployment` the reports are listed for.

    Example::

        @hookimpl
        def crm_register_reports(register):
            register({
                "name": "deals_by_city", "label": "Deals by city", "entity": "deal",
                "filter": {"field": "stage", "op": "eq", "value": "won"},
                "group_by": ["company"], "measures": [{"op": "count"}, {"op": "sum", "field": "amount"}],
                "chart": "pie",
            })
    """


@hookspec
def crm_automation_events(register, deployment):
    """Declare events automation rules can be triggered by, beside record writes: "a call was
    missed", "an invoice fell due". A rule uses one as ``{"type": "event", "event":
    "telephony.call.missed"}`` (with ``delay`` and ``unless`` like the other event triggers) on
    the event's entity type.

    :param register: ``register(name, entity, *, label="", description="")``; the name is
        prefixed with the plugin's (``call.missed`` in plugin ``telephony`` becomes
        ``telephony.call.missed``). ``entity`` is the entity type whose records the event is about.

    The plugin raises the event with ``await deployment.automation.emit(name, record_ids)``
    inside the transaction that made it true (the rules' work commits with it); rules that need
    no delay then run right after the next committed write, or at once with
    ``await deployment.automation.after_commit()`` once the transaction is over.

    Example::

        @hookimpl
        def crm_automation_events(register):
            register("call.missed", "telephony_call", label="A call was missed")

        async def log_missed_call(deployment, values):
            async with deployment.db.transaction():
                call = await deployment.records.create("telephony_call", values)
                await deployment.automation.emit("telephony.call.missed", [call["id"]])
            await deployment.automation.after_commit()
    """
