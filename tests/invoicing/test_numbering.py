"""Gap-free numbering under concurrency: drafts issued by parallel requests to two servers of one
database (two connection pools, as two `crm serve` processes would be) get every number of the
series once, in one run with no gap, on SQLite and on PostgreSQL; a refused issue uses none."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx

from crmcore.testing import serve_app

from .conftest import ok

DRAFTS = 16


def test_concurrent_issues_never_share_or_skip_a_number(billing, crm_backend):
    client = billing()
    company = client.company()
    homeless = client.company(name="No Country Ltd", country=None)  # cannot be issued: no country

    def draft(buyer: dict) -> int:
        return ok(client.post("/api/invoicing/invoices", json={"company": buyer["id"], "lines": [
            {"description": "Work", "quantity": 1, "unit_price": "10", "tax_category": "S", "tax_rate": "19"}]}), 201)["id"]

    good = [draft(company) for _ in range(DRAFTS)]
    bad = [draft(homeless) for _ in range(3)]
    path = client.dep.path
    url = crm_backend.database_url if crm_backend.name == "postgres" else f"sqlite:///{path / 'crm.db'}"
    headers = client.crm_user.headers

    async def issue_all(first: str, second: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            # Every good draft once, the first three twice (a double click), the bad ones too,
            # spread over both servers and sent at once.
            targets = [*good, *good[:3], *bad]
            return await asyncio.gather(*[
                http.post(f"{(first, second)[n % 2]}/api/invoicing/invoices/{invoice}/issue")
                for n, invoice in enumerate(targets)])

    with serve_app(path, database_url=url) as one, serve_app(path, database_url=url) as two:
        answers = asyncio.run(issue_all(one.url, two.url))
    assert [a.status_code for a in answers[:DRAFTS]].count(200) + [a.status_code for a in answers[DRAFTS:DRAFTS + 3]].count(200) == DRAFTS
    assert all(a.status_code in (200, 409, 422) for a in answers), [a.text for a in answers if a.status_code >= 500]
    assert all(a.status_code == 422 for a in answers[-3:])
    year = dt.date.today().year
    numbers = sorted(ok(client.get(f"/api/invoicing/invoices/{invoice}"))["number"] for invoice in good)
    assert numbers == [f"INV-{year}-{n:05d}" for n in range(1, DRAFTS + 1)]
    assert all(ok(client.get(f"/api/invoicing/invoices/{invoice}"))["number"] is None for invoice in bad)
    # The next issue continues the series.
    last = draft(company)
    assert ok(client.post(f"/api/invoicing/invoices/{last}/issue"))["number"] == f"INV-{year}-{DRAFTS + 1:05d}"
