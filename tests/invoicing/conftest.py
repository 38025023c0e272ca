"""Helpers of the invoicing plugin's tests: a deployment with the plugin on and a seller set up,
its API client, and the records an invoice needs."""

from __future__ import annotations

import pytest

SELLER = {"legal_name": "Muster Fenster GmbH", "vat_id": "DE136695976", "country": "DE", "street": "Hauptstr. 1",
          "city": "Berlin", "postcode": "10115", "email": "billing@muster.example", "iban": "DE89370400440532013000",
          "bic": "COBADEFFXXX", "payment_terms_days": 14, "default_tax_category": "S", "default_tax_rate": "19"}


def ok(answer, status: int = 200):
    assert answer.status_code == status, answer.text
    return answer.json()


def problem(answer, status: int = 422) -> dict[str, str]:
    """The field errors of a refused request, by field."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    return {error["field"]: error["message"] for error in body.get("errors", [])}


def amount(money: dict | None) -> str | None:
    return None if money is None else money["amount"]


@pytest.fixture
def billing(crm_client):
    """``make(**settings)``: an admin's client of a deployment with invoicing on, its seller set
    (a German company, EUR, Berlin time), plus ``client.company(...)`` / ``client.product(...)``."""

    def make(seller=None, **settings):
        options = {"currency": "EUR", "timezone": "Europe/Berlin", "region": "DE", "in_process_worker": False, **settings}
        client = crm_client(plugins=["invoicing"], **options)
        client.dep = client.app.state.deployment
        ok(client.put("/api/invoicing/settings", json={**SELLER, **(seller or {})}))

        def company(**values):
            return ok(client.post("/api/company", json={"name": "Client SARL", "country": "FR", "city": "Lyon",
                                                        "street": "1 rue de la Paix", "postal_code": "69001",
                                                        "vat_id": "FR40303265045", **values}), 201)

        def product(**values):
            return ok(client.post("/api/invoicing_product", json={
                "sku": "WIN-1", "name": "Window", "price": {"amount": "100.00", "currency": "EUR"},
                "tax_category": "S", "tax_rate": "19", **values}), 201)

        client.company, client.product = company, product
        return client

    return make
