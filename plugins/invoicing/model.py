"""The invoicing plugin's documents as plain data: what the money engine (:mod:`.money`) computes
from, what it computes, and what the e-invoice writers (:mod:`.einvoice`) and the PDF read.

Every amount is a :class:`~decimal.Decimal`; every amount the engine returns is rounded to the
document currency's minor units (EUR 2, JPY 0, KWD 3). Codes are those of EN 16931: tax
categories from UNCL 5305, units from UN/ECE Recommendation 20, document types from UNCL 1001,
countries ISO 3166-1 alpha-2, currencies ISO 4217.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec

#: Tax categories (UNCL 5305, as EN 16931 uses them) and what each means.
TAX_CATEGORIES: dict[str, str] = {
    "S": "standard rate",
    "Z": "zero rated goods",
    "E": "exempt from tax",
    "AE": "reverse charge",
    "K": "intra-community supply (EEA)",
    "G": "export outside the EU",
    "O": "outside the scope of tax",
    "L": "Canary Islands general indirect tax (IGIC)",
    "M": "tax for production, services and importation in Ceuta and Melilla (IPSI)",
}
#: Categories whose rate is always 0.
ZERO_RATE_CATEGORIES = frozenset({"Z", "E", "AE", "K", "G", "O"})
#: Categories that need an exemption reason on the document (EN 16931 BR-E-10, BR-AE-10, ...).
EXEMPT_CATEGORIES = frozenset({"E", "AE", "K", "G", "O"})
#: The exemption reason written when the user gives none.
DEFAULT_EXEMPTION_REASONS: dict[str, str] = {
    "E": "Exempt from tax",
    "AE": "Reverse charge",
    "K": "Intra-community supply",
    "G": "Export outside the EU",
    "O": "Not subject to tax",
}
#: UNCL 1001 type codes.
INVOICE_TYPE_CODE = "380"
CREDIT_NOTE_TYPE_CODE = "381"


class LineInput(msgspec.Struct, kw_only=True):
    """One line as entered. ``unit_price`` is net, or gross (tax included) when the document's
    ``prices_include_tax`` is true. A line discount is a percentage of ``quantity × unit_price``
    or an amount (not both); ``charge_amount`` adds to the line (a surcharge)."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_category: str = "S"
    tax_rate: Decimal = Decimal(0)
    unit: str = "C62"  # UN/ECE rec. 20: "one" (piece); HUR hour, DAY day, KGM kilogram...
    discount_percent: Decimal | None = None
    discount_amount: Decimal | None = None
    charge_amount: Decimal | None = None
    sku: str | None = None
    product_id: int | None = None
    #: The product's category (commission rules are by category).
    category: str | None = None
    note: str | None = None


class AdjustmentInput(msgspec.Struct, kw_only=True):
    """A document-level allowance (discount) or charge (shipping, packing...).

    Either ``amount`` or ``percent`` (of the lines' net total, or of ``base``). With a tax
    category (and rate) it applies to that category; without one, a percentage is split into one
    adjustment per tax category of the lines (each that percent of its category's lines), and an
    amount is only accepted when every line has one category. Amounts are net, or gross when the
    document's prices include tax."""

    charge: bool = False
    reason: str
    amount: Decimal | None = None
    percent: Decimal | None = None
    tax_category: str | None = None
    tax_rate: Decimal | None = None


class DocumentInput(msgspec.Struct, kw_only=True):
    currency: str
    lines: list[LineInput]
    adjustments: list[AdjustmentInput] = []
    prices_include_tax: bool = False
    #: Already paid before this document (EN 16931 BT-113).
    prepaid: Decimal = Decimal(0)


class LineTotals(msgspec.Struct, kw_only=True):
    """A line as computed (EN 16931 BG-25): ``net_amount`` = ``quantity × net_price`` −
    ``allowance`` + ``charge``, rounded to the currency."""

    net_price: Decimal  # BT-146, net of tax; more decimals than the currency when prices were gross
    gross_amount: Decimal  # quantity × unit price as entered, before discounts (rounded)
    allowance: Decimal  # BT-136
    charge: Decimal  # BT-141
    net_amount: Decimal  # BT-131


class AdjustmentTotals(msgspec.Struct, kw_only=True):
    """A document-level allowance or charge as it goes on the invoice (BG-20 / BG-21): always one
    tax category."""

    charge: bool
    reason: str
    amount: Decimal  # net, rounded (BT-92 / BT-99)
    tax_category: str
    tax_rate: Decimal
    percent: Decimal | None = None  # BT-94 / BT-101
    base: Decimal | None = None  # BT-93 / BT-100


class TaxSubtotal(msgspec.Struct, kw_only=True):
    """One row of the tax breakdown (BG-23): tax is computed once per category and rate, from
    the sum of its net amounts (EN 16931), never summed from per-line tax."""

    category: str  # BT-118
    rate: Decimal  # BT-119
    basis: Decimal  # BT-116: lines − allowances + charges of this category
    tax: Decimal  # BT-117 = round(basis × rate / 100)
    exemption_reason: str | None = None  # BT-120


class Totals(msgspec.Struct, kw_only=True):
    """The document totals (BG-22). ``grand_total`` = ``tax_basis_total`` + ``tax_total``;
    ``due`` = ``grand_total`` − ``prepaid`` + ``rounding``."""

    currency: str
    minor_units: int
    lines: list[LineTotals]
    adjustments: list[AdjustmentTotals]
    breakdown: list[TaxSubtotal]
    line_total: Decimal  # BT-106
    allowance_total: Decimal  # BT-107
    charge_total: Decimal  # BT-108
    tax_basis_total: Decimal  # BT-109
    tax_total: Decimal  # BT-110
    grand_total: Decimal  # BT-112
    prepaid: Decimal  # BT-113
    rounding: Decimal  # BT-114
    due: Decimal  # BT-115


class Party(msgspec.Struct, kw_only=True):
    """Seller (BG-4) or buyer (BG-7)."""

    name: str
    vat_id: str | None = None  # BT-31 / BT-48, with its country prefix (DE123456789)
    legal_id: str | None = None  # BT-30 / BT-47: trade register number, SIRET...
    street: str | None = None
    street2: str | None = None
    city: str | None = None
    postcode: str | None = None
    country: str = ""  # ISO 3166-1 alpha-2
    email: str | None = None
    phone: str | None = None
    contact_name: str | None = None


class PaymentInstructions(msgspec.Struct, kw_only=True):
    means_code: str = "58"  # UNCL 4461: 58 SEPA credit transfer, 30 credit transfer, 10 cash...
    iban: str | None = None
    bic: str | None = None
    account_name: str | None = None
    terms: str | None = None  # BT-20, e.g. "Net 30 days"
    remittance: str | None = None  # BT-83: what the payer quotes (usually the invoice number)


class InvoiceDocument(msgspec.Struct, kw_only=True):
    """An issued invoice or credit note, everything the e-invoice and the PDF print."""

    number: str  # BT-1
    type_code: str  # BT-3: 380 invoice, 381 credit note
    issue_date: dt.date  # BT-2
    due_date: dt.date | None = None  # BT-9
    delivery_date: dt.date | None = None  # BT-72
    currency: str  # BT-5
    #: The seller's accounting currency (BT-6) when it differs from ``currency``; the tax total
    #: in it (BT-111) is ``tax_total × exchange_rate``, rounded.
    accounting_currency: str | None = None
    exchange_rate: Decimal | None = None  # accounting currency per unit of ``currency``, fixed at issue
    buyer_reference: str | None = None  # BT-10
    order_reference: str | None = None  # BT-13
    preceding_invoice: str | None = None  # BT-25: the invoice a credit note corrects
    preceding_invoice_date: dt.date | None = None  # BT-26
    note: str | None = None  # BT-22
    seller: Party
    buyer: Party
    payment: PaymentInstructions = msgspec.field(default_factory=PaymentInstructions)
    lines: list[LineInput]
    totals: Totals
