"""Invoicing: products and price lists, quotes -> invoices -> payments, credit notes, taxes done
right (Decimal money, EN 16931 rounding), gap-free numbering, PDF with an embedded EN 16931
e-invoice (Factur-X) and UBL 2.1.

The money and tax arithmetic: :mod:`.money`; the documents as data: :mod:`.model`; e-invoices
and their validation: :mod:`.einvoice`, :mod:`.validation`.
"""

from __future__ import annotations

import crmcore
from crmcore import Field, FieldError, FieldType, Permission, ValidationError, hookimpl

from .entities import COMPUTED, ENTITIES, INVOICE, LINE, PAYMENT, QUOTE

PLUGIN = crmcore.PluginInfo(name="invoicing", version="0.1.0",
                            description="Products, quotes, invoices, payments, credit notes, taxes, PDF and EN 16931 e-invoices")

#: Fields of an issued invoice that anyone may still change: who looks after it.
_REASSIGNABLE = frozenset({"owner_id", "team_id"})
#: What the web form or the generic API may change on a draft (the rest moves totals: the
#: document routes recompute them).
_DRAFT_HEADER = frozenset({"deal", "contact", "company", "due_date", "delivery_date", "buyer_reference",
                           "order_reference", "payment_terms", "notes", "valid_until", "issue_date", "quote"})


@hookimpl
def crm_register_entities(register):
    for entity in ENTITIES:
        register(entity)


@hookimpl
def crm_extend_entities(add_field):
    for entity in ("company", "contact"):
        add_field(entity, Field(name="vat_id", type=FieldType.TEXT, indexed=True, label="VAT id",
                                help_text="with its country prefix, e.g. DE136695976 (printed on invoices)"))


@hookimpl
def crm_register_permissions(register):
    register(Permission(name="issue", label="Issue invoices",
                        description="issue, send and cancel invoices, make credit notes",
                        roles=("admin", "sales_manager")))
    register(Permission(name="payments", label="Record payments", description="record payments and apply credit",
                        roles=("admin", "sales_manager")))
    register(Permission(name="settings", label="Invoicing settings", description="the seller's details and numbering",
                        roles=("admin",)))
    register(Permission(name="commissions", label="See commissions", description="sales commissions of every employee",
                        roles=("admin", "sales_manager")))


@hookimpl
def crm_register_routes(register):
    from .editor import EDITOR_ROUTES
    from .pages import PAGES
    from .routes import ROUTES

    for route in [*ROUTES, *PAGES, *EDITOR_ROUTES]:
        register(route)


@hookimpl
async def crm_startup(deployment):
    from .service import STARTUP_TABLES

    for statement in STARTUP_TABLES:
        await deployment.db.execute(statement)


@hookimpl
def crm_before_save(change):
    """Lines, payments and what is computed or issued are written by the service alone."""
    from .service import is_managed

    if is_managed() or change.entity not in (INVOICE, QUOTE, LINE, PAYMENT):
        return
    route = "/api/invoicing/quotes" if change.entity == QUOTE else "/api/invoicing/invoices"
    if change.entity == LINE:
        raise ValidationError([FieldError("invoice", "read_only", "lines are edited with their document: "
                                                                 "PUT /api/invoicing/invoices/{id} or /api/invoicing/quotes/{id}")])
    if change.entity == PAYMENT:
        if change.action == "update" and set(change.values) <= {"notes", "reference", *_REASSIGNABLE}:
            return
        raise ValidationError([FieldError("amount", "read_only", "payments are recorded with POST /api/invoicing/payments")])
    if change.action == "create":
        raise ValidationError([FieldError("lines", "required", f"quotes and invoices are made with POST {route}")])
    before = change.before or {}
    final = change.entity == INVOICE and before.get("status") != "draft"
    if change.action in ("delete", "restore"):
        if final:
            raise ValidationError([FieldError("status", "immutable", f"invoice {before.get('number')} is issued: it is "
                                                                     "never deleted; cancel it with a credit note")])
        return
    changed = sorted(set(change.values) - _REASSIGNABLE)
    if final and changed:
        raise ValidationError([FieldError(changed[0], "immutable", f"invoice {before.get('number')} is issued: it cannot "
                                                                   "be changed; correct it with a credit note")])
    for name in changed:
        if name in COMPUTED or name not in _DRAFT_HEADER:
            raise ValidationError([FieldError(name, "read_only", f"{name} is computed or changes the totals: "
                                                                 f"change the document with PUT {route}/{{id}}")])


@hookimpl
def crm_automation_events(register):
    register("invoice.issued", INVOICE, label="An invoice or credit note was issued")
    register("invoice.paid", INVOICE, label="An invoice was paid in full")
    register("invoice.overdue", INVOICE, label="An invoice fell overdue",
             description="the day after its due date, unpaid: send a reminder, call the client")
    register("quote.accepted", QUOTE, label="A quote was accepted")


@hookimpl
def crm_job_handlers(register):
    async def overdue(deployment, payload):
        from .service import invoicing_of

        await invoicing_of(deployment).mark_overdue(payload["invoice"])

    register("overdue", overdue, max_attempts=5)


@hookimpl
def crm_automation_actions(register):
    from .automation import check_create_invoice, create_invoice

    register("create_invoice", create_invoice, check=check_create_invoice, label="Create an invoice from the deal",
             description="from the deal's accepted quote, else one line for the deal's amount; issued at once with issue: true")


@hookimpl
def crm_document_context(entity, record, actor, deployment):
    if entity not in (INVOICE, QUOTE):
        return None
    from .output import document_context

    return document_context(deployment, entity, record, actor)


@hookimpl
def crm_ui_items(register, deployment):
    from .editor import editor_ui_items
    from .pages import page_ui_items
    from .ui import ui_items

    ui_items(register, deployment)
    editor_ui_items(register)
    page_ui_items(register)


@hookimpl
def crm_timeline_items(entity, record_id, before, limit, actor, deployment):
    from .ui import timeline_items

    return timeline_items(entity, record_id, before, limit, actor, deployment)


@hookimpl
def crm_register_reports(register, deployment):
    from .reports import reports

    reports(register, deployment)


@hookimpl
def crm_register_editions(register):
    from .demo import EDITION

    register(EDITION)
