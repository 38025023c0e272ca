"""The reports pages: over HTTP (the list, a report's table and chart under the user's scope, the
CSV and XLSX downloads, removing a saved report) and in a real browser (the chart has bars)."""

from __future__ import annotations

import io
import re

from openpyxl import load_workbook

from crmcore.auth import SYSTEM
from crmcore.testing import crm_user

from .conftest import login, shot

PAGE = {"accept": "text/html"}


def test_report_pages_show_the_users_figures_and_download_them(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent")
    for name, owner in (("A", client.crm_user), ("B", agent), ("C", agent)):
        assert client.post("/api/deal", json={"name": name, "amount": {"amount": "10", "currency": "EUR"}},
                           headers=owner.headers).status_code == 201
    assert client.post("/api/reports", json={"name": "by_stage", "label": "Deals by stage", "entity": "deal",
                                             "group_by": ["stage"], "measures": ["count"], "chart": "bar"}).status_code == 201
    listed = client.get("/reports", headers=PAGE)
    assert listed.status_code == 200 and 'href="/reports/by_stage"' in listed.text and 'href="/reports/sales_funnel"' in listed.text

    shown = client.get("/reports/by_stage", headers=PAGE)
    assert shown.status_code == 200
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="report-chart chart-bar"' in shown.text
    assert re.search(r"<title[^>]*>Deals by stage: Count</title>", shown.text)
    assert shown.text.count('class="bar"') == 1 and "<td class=\"num\">3</td>" in shown.text
    assert "Remove report" in shown.text and "<script>" not in shown.text
    mine = client.get("/reports/by_stage", headers={**PAGE, **agent.headers})
    assert "<td class=\"num\">2</td>" in mine.text and "Remove report" not in mine.text

    csv_answer = client.get("/reports/by_stage/export?format=csv", headers=agent.headers)
    assert csv_answer.text.splitlines() == ["stage,count", "prospecting,2"]
    xlsx = client.get("/reports/by_stage/export?format=xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert (sheet["A1"].value, sheet["B1"].value, sheet["A2"].value, sheet["B2"].value) == ("Stage", "Count", "prospecting", 3)

    # a period on a date field narrows the figures, and the downloads follow it
    ids = [d["id"] for d in client.get("/api/deal?sort=id").json()["items"]]
    client.patch(f"/api/deal/{ids[0]}", json={"expected_close": "2026-01-10"})
    client.patch(f"/api/deal/{ids[1]}", json={"expected_close": "2026-02-10"})
    january = client.get("/reports/by_stage?field=expected_close&from=2026-01-01&to=2026-01-31", headers=PAGE)
    assert "<td class=\"num\">1</td>" in january.text and 'value="2026-01-31"' in january.text
    assert "export?format=csv&amp;field=expected_close&amp;from=2026-01-01&amp;to=2026-01-31" in january.text
    assert client.get("/reports/by_stage/export?format=csv&field=expected_close&from=2026-01-01&to=2026-02-28").text.splitlines() == [
        "stage,count", "prospecting,2"]
    assert client.get("/reports/nope", headers=PAGE).status_code == 404
    assert client.post("/reports/by_stage/remove", headers={**PAGE, **agent.headers}).status_code == 403
    assert client.get("/reports/by_stage", headers=PAGE).status_code == 200  # the agent could not remove it
    removed = client.post("/reports/by_stage/remove", headers=PAGE, follow_redirects=False)
    assert removed.status_code == 303 and client.get("/reports/by_stage", headers=PAGE).status_code == 404


def test_a_report_page_draws_its_chart_in_the_browser(page, site):
    async def save(dep):
        await dep.reports.save({"name": "deals_per_stage", "label": "Deals per stage", "entity": "deal",
                                "group_by": ["stage"], "measures": ["count"], "chart": "bar"}, SYSTEM)
    site.run(save)
    login(page, site, "admin", "/reports")
    page.get_by_role("link", name="Deals per stage").click()
    page.wait_for_url("**/reports/deals_per_stage")
    chart = page.locator("svg.report-chart")
    assert chart.get_attribute("role") == "img"
    rows = page.locator("table.report-table tbody tr").count()
    assert rows > 0 and chart.locator("rect.bar").count() == rows
    assert chart.locator("rect.bar").first.bounding_box()["height"] > 0
    assert chart.locator("title").first.text_content().startswith("Deals per stage")
    shot(page, "report")
