"""The invoicing plugin's entity types, as data. Names are namespaced by the core: ``product``
becomes ``invoicing_product``, and so on.

Documents (quotes, invoices, credit notes) keep their lines in ``invoicing_line`` and their
computed totals on the document; both are written only by :mod:`.service` (its routes), which
recomputes the totals on every change, so they can never disagree. An issued invoice or credit
note is never changed again except for what payments and credit notes settle on it.
"""

from __future__ import annotations

from crmcore import EntityType, Field, FieldType

from .model import TAX_CATEGORIES

T = FieldType

PRODUCT = "invoicing_product"
PRICE_LIST = "invoicing_price_list"
PRICE = "invoicing_price"
QUOTE = "invoicing_quote"
INVOICE = "invoicing_invoice"
LINE = "invoicing_line"
PAYMENT = "invoicing_payment"
RATE = "invoicing_exchange_rate"
COMMISSION = "invoicing_commission_rule"

QUOTE_STATUSES = ("draft", "sent", "accepted", "declined", "expired", "invoiced")
INVOICE_STATUSES = ("draft", "issued", "sent", "partially_paid", "paid", "overdue", "cancelled")
KINDS = ("invoice", "credit_note")
PAYMENT_METHODS = ("bank_transfer", "card", "cash", "cheque", "direct_debit", "credit", "other")

#: Fields of a document only the service writes (computed, or settled by issuing and paying).
COMPUTED = frozenset({
    "number", "status", "net_total", "tax_total", "total", "paid", "credited", "balance", "net_total_base",
    "tax_breakdown", "seller", "buyer", "issued_at", "sent_at", "paid_at", "cancelled_at", "exchange_rate",
    "accounting_currency", "invoice", "adjustments", "kind", "corrects",
})


def _client() -> list[Field]:
    return [
        Field(name="deal", type=T.RELATION, target="deal", indexed=True),
        Field(name="contact", type=T.RELATION, target="contact", indexed=True, in_list=True),
        Field(name="company", type=T.RELATION, target="company", indexed=True, in_list=True),
    ]


def _totals() -> list[Field]:
    return [
        Field(name="currency", type=T.TEXT, required=True, help_text="ISO 4217, e.g. EUR"),
        Field(name="prices_include_tax", type=T.BOOLEAN, default=False, label="Prices include tax"),
        Field(name="price_list", type=T.RELATION, target=PRICE_LIST),
        Field(name="adjustments", type=T.LONG_TEXT, help_text="document discounts and charges (JSON)"),
        Field(name="net_total", type=T.MONEY, in_list=True, label="Net"),
        Field(name="tax_total", type=T.MONEY, label="Tax"),
        Field(name="total", type=T.MONEY, in_list=True),
        Field(name="tax_breakdown", type=T.LONG_TEXT, help_text="per tax category and rate (JSON)"),
        Field(name="notes", type=T.LONG_TEXT),
    ]


ENTITIES = [
    EntityType(name="product", label="Product", title_field="name", fields=[
        Field(name="sku", type=T.TEXT, required=True, unique=True, in_list=True, label="SKU"),
        Field(name="name", type=T.TEXT, required=True, in_list=True),
        Field(name="kind", type=T.CHOICE, choices=["product", "service"], default="product", in_list=True),
        Field(name="category", type=T.TEXT, indexed=True, in_list=True,
              help_text="commission rules and reports group products by it"),
        Field(name="unit", type=T.TEXT, default="C62", help_text="UN/ECE rec. 20 code: C62 piece, HUR hour, DAY day, KGM kg"),
        Field(name="price", type=T.MONEY, required=True, in_list=True),
        Field(name="price_includes_tax", type=T.BOOLEAN, default=False),
        Field(name="tax_category", type=T.CHOICE, choices=list(TAX_CATEGORIES), default="S",
              help_text="UNCL 5305: S standard, Z zero, E exempt, AE reverse charge, K intra-EU, G export, O outside scope"),
        Field(name="tax_rate", type=T.DECIMAL, default="0", help_text="percent"),
        Field(name="description", type=T.LONG_TEXT),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
    ]),
    EntityType(name="price_list", label="Price list", title_field="name", fields=[
        Field(name="name", type=T.TEXT, required=True, unique=True, in_list=True),
        Field(name="currency", type=T.TEXT, required=True, in_list=True, help_text="ISO 4217"),
        Field(name="discount_percent", type=T.DECIMAL, help_text="off products the list gives no price for"),
        Field(name="valid_from", type=T.DATE),
        Field(name="valid_until", type=T.DATE),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
    ]),
    EntityType(name="price", label="Price list price", title_field="price_list", fields=[
        Field(name="price_list", type=T.RELATION, target=PRICE_LIST, required=True, indexed=True, in_list=True),
        Field(name="product", type=T.RELATION, target=PRODUCT, required=True, indexed=True, in_list=True),
        Field(name="price", type=T.DECIMAL, in_list=True, help_text="in the list's currency; empty: the product's price"),
        Field(name="discount_percent", type=T.DECIMAL),
        Field(name="min_quantity", type=T.DECIMAL, default="0", help_text="from this quantity on (volume prices)"),
    ]),
    EntityType(name="quote", label="Quote", title_field="number", fields=[
        Field(name="number", type=T.TEXT, unique=True, in_list=True),
        Field(name="status", type=T.CHOICE, choices=list(QUOTE_STATUSES), default="draft", indexed=True, in_list=True),
        *_client(),
        Field(name="issue_date", type=T.DATE, in_list=True),
        Field(name="valid_until", type=T.DATE, in_list=True),
        *_totals(),
        Field(name="invoice", type=T.RELATION, target=INVOICE, help_text="the invoice made from it"),
    ]),
    EntityType(name="invoice", label="Invoice", title_field="number", fields=[
        Field(name="number", type=T.TEXT, unique=True, in_list=True, help_text="given when issued: INV-2026-00042"),
        Field(name="kind", type=T.CHOICE, choices=list(KINDS), default="invoice", indexed=True, in_list=True),
        Field(name="status", type=T.CHOICE, choices=list(INVOICE_STATUSES), default="draft", indexed=True, in_list=True),
        *_client(),
        Field(name="quote", type=T.RELATION, target=QUOTE),
        Field(name="corrects", type=T.RELATION, target=INVOICE, indexed=True, help_text="the invoice a credit note corrects"),
        Field(name="issue_date", type=T.DATE, indexed=True, in_list=True),
        Field(name="due_date", type=T.DATE, indexed=True, in_list=True),
        Field(name="delivery_date", type=T.DATE),
        Field(name="buyer_reference", type=T.TEXT),
        Field(name="order_reference", type=T.TEXT),
        Field(name="payment_terms", type=T.TEXT),
        *_totals(),
        Field(name="paid", type=T.MONEY),
        Field(name="credited", type=T.MONEY, help_text="by credit notes"),
        Field(name="balance", type=T.MONEY, in_list=True, help_text="still to pay (negative: paid too much)"),
        Field(name="exchange_rate", type=T.DECIMAL, help_text="accounting currency per unit, fixed at issue"),
        Field(name="accounting_currency", type=T.TEXT),
        Field(name="net_total_base", type=T.MONEY, label="Net (accounting currency)"),
        Field(name="seller", type=T.LONG_TEXT, help_text="the seller as issued (JSON)"),
        Field(name="buyer", type=T.LONG_TEXT, help_text="the buyer as issued (JSON)"),
        Field(name="issued_at", type=T.DATETIME),
        Field(name="sent_at", type=T.DATETIME),
        Field(name="paid_at", type=T.DATETIME),
        Field(name="cancelled_at", type=T.DATETIME),
    ]),
    EntityType(name="line", label="Document line", title_field="description", fields=[
        Field(name="quote", type=T.RELATION, target=QUOTE, indexed=True),
        Field(name="invoice", type=T.RELATION, target=INVOICE, indexed=True),
        Field(name="position", type=T.INTEGER, required=True),
        Field(name="product", type=T.RELATION, target=PRODUCT, indexed=True),
        Field(name="sku", type=T.TEXT),
        Field(name="category", type=T.TEXT, indexed=True),
        Field(name="description", type=T.TEXT, required=True, in_list=True),
        Field(name="quantity", type=T.DECIMAL, required=True, in_list=True),
        Field(name="unit", type=T.TEXT, default="C62"),
        Field(name="unit_price", type=T.DECIMAL, required=True, in_list=True),
        Field(name="discount_percent", type=T.DECIMAL),
        Field(name="discount_amount", type=T.DECIMAL),
        Field(name="charge_amount", type=T.DECIMAL),
        Field(name="tax_category", type=T.CHOICE, choices=list(TAX_CATEGORIES), required=True),
        Field(name="tax_rate", type=T.DECIMAL, required=True),
        Field(name="net_price", type=T.DECIMAL),
        Field(name="net_amount", type=T.MONEY, in_list=True),
        Field(name="note", type=T.TEXT),
    ]),
    EntityType(name="payment", label="Payment", title_field="reference", fields=[
        Field(name="invoice", type=T.RELATION, target=INVOICE, indexed=True, in_list=True),
        Field(name="contact", type=T.RELATION, target="contact", indexed=True),
        Field(name="company", type=T.RELATION, target="company", indexed=True),
        Field(name="amount", type=T.MONEY, required=True, in_list=True),
        Field(name="paid_on", type=T.DATE, required=True, indexed=True, in_list=True),
        Field(name="method", type=T.CHOICE, choices=list(PAYMENT_METHODS), default="bank_transfer", in_list=True),
        Field(name="reference", type=T.TEXT, in_list=True),
        Field(name="applied", type=T.MONEY, help_text="what settled the invoice"),
        Field(name="unapplied", type=T.MONEY, help_text="paid too much: the client's credit"),
        Field(name="source_payment", type=T.RELATION, target=PAYMENT, help_text="method credit: the payment whose credit it uses"),
        Field(name="notes", type=T.LONG_TEXT),
    ]),
    EntityType(name="exchange_rate", label="Exchange rate", title_field="currency", fields=[
        Field(name="currency", type=T.TEXT, required=True, indexed=True, in_list=True),
        Field(name="rate_date", type=T.DATE, required=True, indexed=True, in_list=True),
        Field(name="rate", type=T.DECIMAL, required=True, in_list=True,
              help_text="units of the accounting currency for one unit of this currency"),
    ]),
    EntityType(name="commission_rule", label="Commission rule", title_field="category", fields=[
        Field(name="user", type=T.RELATION, target="user", indexed=True, in_list=True, help_text="empty: everyone"),
        Field(name="category", type=T.TEXT, in_list=True, help_text="product category; empty: every category"),
        Field(name="rate", type=T.DECIMAL, required=True, in_list=True, help_text="percent of the paid net amount"),
        Field(name="active", type=T.BOOLEAN, default=True, in_list=True),
    ]),
]
