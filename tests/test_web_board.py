"""The kanban board's server side over HTTP (no browser): columns, cards, counts and sums under
the user's permissions and filters, paged columns continued through the API with the filter the
page hands its script, the totals the script reads after a move, and the "Move to" form that
works without the script (the browser tests are in tests/web/test_board.py)."""

from __future__ import annotations

import html
import json
import re

import pytest

from crmcore.testing import crm_user

pytestmark = pytest.mark.timeout(120)

PAGE = {"accept": "text/html"}
STAGES = ["prospecting", "qualification", "quote", "negotiation", "won", "lost"]


def columns(text: str) -> dict[str, dict]:
    """Stage -> {ids (card ids in order), count, sums, filter, cursor} from a board page."""
    found = {}
    for part in text.split('<section class="column')[1:]:
        stage = re.search(r'data-stage="([^"]+)"', part).group(1)
        sums = re.search(r"data-amounts>(.*?)</p>", part, re.S)
        cursor = re.search(r'class="secondary more" data-cursor="([^"]+)"', part)
        found[stage] = {
            "ids": [int(i) for i in re.findall(r'<li class="card" data-id="(\d+)"', part.split("</ol>")[0])],
            "count": int(re.search(r'data-count="(\d+)"', part).group(1)),
            "sums": re.sub(r"<[^>]+>", " ", sums.group(1)).split() if sums else None,
            "filter": json.loads(html.unescape(re.search(r'data-filter="([^"]+)"', part).group(1))),
            "cursor": cursor.group(1) if cursor else None,
            "movable": part.count("data-movable"),
        }
    return found


def deal(client, name: str, stage: str = "prospecting", owner: int | None = None, amount: str = "100",
         currency: str = "EUR", **values) -> dict:
    body = {"name": name, "stage": stage, "amount": {"amount": amount, "currency": currency}, **values}
    if owner is not None:
        body["owner_id"] = owner
    answer = client.post("/api/deal", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_columns_cards_counts_and_sums_as_the_user_reads_them(crm_client):
    client = crm_client()
    agent = crm_user(client, role="agent", name="Agnes Agent")
    admin_id = client.crm_user.id
    ours = deal(client, "Ours", "quote", owner=admin_id, amount="1500", expected_close="2030-03-01")
    hers = deal(client, "Hers", "quote", owner=agent.id, amount="250.50")
    lira = deal(client, "Lira deal", "quote", owner=agent.id, amount="999", currency="TRY")
    deal(client, "Early", "prospecting", owner=agent.id)

    answer = client.get("/board/sales", headers=PAGE)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    board = columns(answer.text)
    assert list(board) == STAGES
    assert sorted(board["quote"]["ids"]) == sorted([ours["id"], hers["id"], lira["id"]])
    assert board["quote"]["count"] == 3 and board["prospecting"]["count"] == 1 and board["won"]["count"] == 0
    assert board["quote"]["sums"] == ["€1,750.50", "TRY999.00"]  # per currency, the user's locale
    assert board["quote"]["movable"] == 3  # an admin may move every card
    assert "Agnes Agent" in answer.text and "Mar 1, 2030" in answer.text
    assert 'id="lost-dialog"' in answer.text and "board.js" in answer.text

    totals = client.get("/board/sales/totals").json()
    assert [(s["name"], s["count"]) for s in totals["stages"]] == [(s, board[s]["count"]) for s in STAGES]
    assert next(s for s in totals["stages"] if s["name"] == "quote")["amounts"] == ["€1,750.50", "TRY999.00"]

    # the agent: only their own deals, and only those movable
    mine = columns(client.get("/board/sales", headers={**PAGE, **agent.headers}).text)
    assert sorted(mine["quote"]["ids"]) == sorted([hers["id"], lira["id"]]) and mine["quote"]["count"] == 2
    assert mine["quote"]["movable"] == 2

    # filters: owner, search, any field; counts and sums follow them
    only_mine = columns(client.get("/board/sales?owner=mine", headers=PAGE).text)
    assert only_mine["quote"]["ids"] == [ours["id"]] and only_mine["prospecting"]["count"] == 0
    assert only_mine["quote"]["sums"] == ["€1,500.00"]
    searched = columns(client.get("/board/sales?q=lira", headers=PAGE).text)
    assert searched["quote"]["ids"] == [lira["id"]] and searched["quote"]["count"] == 1
    big = json.dumps({"field": "amount", "op": "gte", "value": 1000})
    filtered = client.get("/board/sales", params={"filter": big}, headers=PAGE)
    assert columns(filtered.text)["quote"]["ids"] == [ours["id"]]
    assert client.get("/board/sales/totals", params={"filter": big, "owner": "mine"}).json()["stages"][2] == {
        "name": "quote", "count": 1, "count_text": "1", "amounts": ["€1,500.00"]}
    bad = client.get("/board/sales", params={"filter": json.dumps({"field": "nope", "op": "eq", "value": 1})}, headers=PAGE)
    assert bad.status_code == 422 and "nope" in bad.text and len(columns(bad.text)["quote"]["ids"]) == 3
    assert "must be a JSON object" in client.get("/board/sales?filter=%7Bnot", headers=PAGE).text

    assert client.get("/board/nope", headers=PAGE).status_code == 404


def test_a_column_pages_and_the_script_continues_it_through_the_api(crm_client):
    client = crm_client()
    rows = [{"name": f"Bulk {n:02}", "stage": "negotiation", "amount": {"amount": "1", "currency": "EUR"}} for n in range(32)]
    assert client.post("/api/deal/bulk", json=rows).status_code in (200, 201)
    board = columns(client.get("/board/sales", headers=PAGE).text)
    first = board["negotiation"]
    assert len(first["ids"]) == 25 and first["count"] == 32 and first["cursor"]
    assert board["prospecting"]["cursor"] is None
    data = json.loads(re.search(r'id="board-data">(.*?)</script>', client.get("/board/sales", headers=PAGE).text).group(1))
    rest = client.get(f"/api/{data['entity']}", params={
        "filter": json.dumps(first["filter"]), "sort": data["sort"], "limit": data["page_size"],
        "cursor": first["cursor"], "fields": data["fields"]}).json()
    assert rest["next_cursor"] is None and len(rest["items"]) == 7
    assert sorted(first["ids"] + [i["id"] for i in rest["items"]]) == sorted(
        i["id"] for i in client.get("/api/deal?stage=negotiation&limit=100").json()["items"])


def test_the_move_form_without_the_script(crm_client):
    client = crm_client()
    moved = deal(client, "Move me")
    answer = client.post("/board/sales/move", data={"id": moved["id"], "version": moved["version"], "stage": "quote",
                                                    "owner": "mine"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/board/sales?owner=mine"
    after = client.get(f"/api/deal/{moved['id']}").json()
    assert after["stage"] == "quote" and after["probability"] == 50
    history = client.get(f"/api/deal/{moved['id']}/stages").json()["history"]
    assert [(e["from_stage"], e["to_stage"], e["user_id"]) for e in history][-1] == ("prospecting", "quote", client.crm_user.id)

    lost = client.post("/board/sales/move", data={"id": moved["id"], "version": after["version"], "stage": "lost"}, headers=PAGE)
    assert lost.status_code == 422 and "lost_reason" in lost.text
    stale = client.post("/board/sales/move", data={"id": moved["id"], "version": 1, "stage": "won"}, headers=PAGE)
    assert stale.status_code == 409 and "changed" in stale.text
    answer = client.post("/board/sales/move", data={"id": moved["id"], "version": after["version"], "stage": "lost",
                                                    "lost_reason": "Too dear"}, follow_redirects=False)
    assert answer.status_code == 303
    assert {k: client.get(f"/api/deal/{moved['id']}").json()[k] for k in ("stage", "lost_reason")} == {
        "stage": "lost", "lost_reason": "Too dear"}

    reader = crm_user(client, role="read_only")
    seen = client.get("/board/sales", headers={**PAGE, **reader.headers})
    assert seen.status_code == 200 and moved["id"] in columns(seen.text)["lost"]["ids"]
    assert 'class="move"' not in seen.text and "draggable" not in seen.text and "lost-dialog" not in seen.text
    refused = client.post("/board/sales/move", data={"id": moved["id"], "version": 4, "stage": "won"},
                          headers={**PAGE, **reader.headers})
    assert refused.status_code == 403
    assert client.get(f"/api/deal/{moved['id']}").json()["stage"] == "lost"
