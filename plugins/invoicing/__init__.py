"""Invoicing: products and price lists, quotes -> invoices -> payments, credit notes, taxes done
right (Decimal money, EN 16931 rounding), gap-free numbering, PDF with an embedded EN 16931
e-invoice (Factur-X) and UBL 2.1.

The money and tax arithmetic: :mod:`.money`; the documents as data: :mod:`.model`; e-invoices
and their validation: :mod:`.einvoice`, :mod:`.validation`.
"""

from __future__ import annotations

import crmcore

PLUGIN = crmcore.PluginInfo(name="invoicing", version="0.1.0",
                            description="Products, quotes, invoices, payments, credit notes, taxes, PDF and EN 16931 e-invoices")
