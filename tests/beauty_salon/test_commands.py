"""``crm salon recompute-metrics``: every client's metrics rebuilt from the command line."""

from __future__ import annotations

from tests.conftest import crm


def test_recompute_metrics_fills_every_clients_figures_once(tmp_path):
    path = tmp_path / "salon"
    crm("init", path, "--region", "DE", "--currency", "EUR", "--timezone", "Europe/Berlin")
    crm("plugins", "enable", "beauty_salon", deployment=path)
    (tmp_path / "clients.csv").write_text("first_name,last_name\nAna,Aksoy\nBora,Bilgin\n")
    crm("import", tmp_path / "clients.csv", "--entity", "contact", deployment=path)
    assert "2 clients updated" in crm("salon", "recompute-metrics", deployment=path).output  # their zeros
    assert "0 clients updated" in crm("salon", "recompute-metrics", deployment=path).output
    listed = crm("export", "contact", "--filter", '{"field": "salon_visits", "op": "eq", "value": 0}',
                 "--fields", "first_name", deployment=path).output
    assert "Ana" in listed and "Bora" in listed
