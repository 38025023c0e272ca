"""The invoicing edition's demo: `crm run-demo DIR --edition invoicing` sets up a deployment with
invoices in every state, each issued one a valid EN 16931 e-invoice."""

from __future__ import annotations

import asyncio
import tomllib

from crmcore import SYSTEM, ListQuery
from crmcore.deployment import Deployment
from plugins.invoicing.einvoice import cii_xml
from plugins.invoicing.service import invoicing_of
from plugins.invoicing.validation import validate

from ..conftest import crm


def test_the_invoicing_edition_demo(tmp_path):
    target = tmp_path / "shop"
    result = crm("run-demo", target, "--edition", "invoicing", "--no-serve")
    assert "8 invoicing_product" in result.output and "invoicing_invoice" in result.output
    config = tomllib.loads((target / "crm.toml").read_text())
    assert config["edition"] == "invoicing" and config["plugins"] == ["invoicing"] and config["currency"] == "EUR"

    async def check() -> None:
        dep = await Deployment.open(target)
        try:
            invoices = (await dep.records.list("invoicing_invoice", ListQuery(limit=100))).items
            statuses = {i["status"] for i in invoices}
            assert {"paid", "partially_paid", "overdue"} <= statuses
            assert any(i["kind"] == "credit_note" for i in invoices)
            issued = [i for i in invoices if i["number"]]
            numbers = sorted(int(i["number"].rsplit("-", 1)[1]) for i in issued if i["kind"] == "invoice")
            assert numbers == list(range(1, len(numbers) + 1))  # gap-free
            service = invoicing_of(dep)
            for invoice in issued[:3]:
                report = validate(cii_xml(await service.invoice_document(invoice["id"], actor=SYSTEM)), "cii")
                assert report.ok, report.fatal
        finally:
            await dep.close()

    asyncio.run(check())
