"""The invoicing plugin's reports, run by the core's report engine (one GROUP BY in SQL, scoped to
what the reader may read, with charts and CSV/XLSX exports):

- ``invoicing.revenue_by_month_owner``: net revenue per month of issue and owner, in the
  accounting currency (foreign-currency invoices at their rate of issue): what was invoiced,
  what credit notes took back;
- ``invoicing.outstanding``: what each client still owes on open invoices, and how much of it
  is overdue;
- ``invoicing.aging``: the open balances by how late they are (not yet due, 1-30, 31-60, 61-90,
  more than 90 days past due), per client, as of today in the deployment's time zone;
- ``invoicing.payments_by_month``: money received per month and payment method.

Sales commissions (rules per product category, on paid amounts) are computed per payment line
by :meth:`.service.InvoicingService.commissions` and shown at ``/invoicing/commissions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from .entities import INVOICE, PAYMENT
from .service import OPEN

ISSUED = {"field": "number", "op": "is_null", "value": False}
OPEN_INVOICES = {"and": [{"field": "kind", "op": "eq", "value": "invoice"},
                         {"field": "status", "op": "in", "value": list(OPEN)}]}
#: Aging buckets: (column, label, first day late, last day late); None: open-ended.
BUCKETS = [("not_due", "Not yet due", None, 0), ("late_1_30", "1-30 days", 1, 30), ("late_31_60", "31-60 days", 31, 60),
           ("late_61_90", "61-90 days", 61, 90), ("late_over_90", "Over 90 days", 91, None)]


def reports(register: Any, deployment: Any) -> None:
    register({
        "name": "revenue_by_month_owner", "label": "Invoiced revenue by month and owner", "entity": INVOICE,
        "description": "Net amounts of issued invoices and credit notes per month of issue and owner, in the "
                       "accounting currency (at the rate of issue).",
        "filter": ISSUED, "group_by": [{"field": "issue_date", "bucket": "month"}, "owner_id"],
        "measures": [
            {"op": "sum", "field": "net_total_base", "name": "invoiced", "label": "Invoiced (net)",
             "filter": {"field": "kind", "op": "eq", "value": "invoice"}},
            {"op": "sum", "field": "net_total_base", "name": "credited", "label": "Credited (net)",
             "filter": {"field": "kind", "op": "eq", "value": "credit_note"}},
            {"op": "count", "name": "invoices", "label": "Invoices", "filter": {"field": "kind", "op": "eq", "value": "invoice"}},
        ],
        "sort": ["issue_date_month"], "chart": "bar"})
    register({
        "name": "outstanding", "label": "Outstanding invoices by client", "entity": INVOICE,
        "description": "What each client still owes on issued invoices, and how much of it is overdue.",
        "filter": OPEN_INVOICES, "group_by": ["company", "contact"],
        "measures": [
            {"op": "sum", "field": "balance", "name": "outstanding", "label": "Outstanding"},
            {"op": "sum", "field": "balance", "name": "overdue", "label": "Overdue",
             "filter": {"field": "status", "op": "eq", "value": "overdue"}},
            {"op": "count", "name": "invoices", "label": "Open invoices"},
            {"op": "min", "field": "due_date", "name": "oldest_due", "label": "Oldest due date"},
        ],
        "sort": ["-outstanding"], "chart": "bar"})

    def aging(now: dt.datetime) -> dict[str, Any]:
        today = now.astimezone(ZoneInfo(deployment.settings.timezone)).date()
        return _aging(today)

    register(_aging(dt.date.today()), make=aging)
    register({
        "name": "payments_by_month", "label": "Payments received by month", "entity": PAYMENT,
        "description": "Money received per month and payment method (credit applied from over-payments left out).",
        "filter": {"field": "method", "op": "ne", "value": "credit"},
        "group_by": [{"field": "paid_on", "bucket": "month"}, "method"],
        "measures": [{"op": "sum", "field": "amount", "name": "received", "label": "Received"},
                     {"op": "count", "name": "payments", "label": "Payments"}],
        "sort": ["paid_on_month"], "chart": "bar"})


def _aging(today: dt.date) -> dict[str, Any]:
    """Open balances by days past due as of ``today``: an invoice due on day D is N days late on
    D + N; each bucket is a range of due dates."""
    measures = []
    for name, label, first, last in BUCKETS:
        conditions = []
        if last is not None:  # late at most `last` days: due on or after today - last
            conditions.append({"field": "due_date", "op": "gte", "value": (today - dt.timedelta(days=last)).isoformat()})
        if first is not None:  # late at least `first` days: due on or before today - first
            conditions.append({"field": "due_date", "op": "lte", "value": (today - dt.timedelta(days=first)).isoformat()})
        measures.append({"op": "sum", "field": "balance", "name": name, "label": label, "filter": {"and": conditions}})
    measures.append({"op": "sum", "field": "balance", "name": "outstanding", "label": "Outstanding"})
    return {"name": "aging", "label": "Receivables aging", "entity": INVOICE,
            "description": "Open balances per client by how many days past their due date they are, as of today.",
            "filter": OPEN_INVOICES, "group_by": ["company", "contact"], "measures": measures,
            "sort": ["-outstanding"], "chart": "bar"}
