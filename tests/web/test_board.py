"""The kanban board of a pipeline, in a real browser: columns with counts and sums, drag and drop
persisted through the records service, the lost reason, keyboard moves, a read-only user, a
stale card (409), filters and paged columns.

The site is shared by the module's tests: every test that moves cards makes its own deals, and
counts are compared before and after rather than against fixed numbers."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from playwright.sync_api import expect

from crmcore.auth import SYSTEM
from crmcore.records.query import ListQuery

from .conftest import login, shot


def make_deal(site, name: str, stage: str = "prospecting", owner: str = "agent", amount: str = "500",
              close: str | None = None) -> int:
    async def go(dep):
        return (await dep.records.create("deal", {"name": name, "stage": stage, "owner_id": site.ids[owner],
                                                  "amount": {"amount": amount, "currency": "EUR"},
                                                  "expected_close": close}))["id"]
    return site.run(go)


def deal(site, deal_id: int) -> dict:
    async def go(dep):
        return await dep.records.get("deal", deal_id)
    return site.run(go)


def stage_moves(site, deal_id: int) -> list[tuple]:
    async def go(dep):
        history = await dep.pipeline_service.stage_history("deal", deal_id)
        return [(e["from_stage"], e["to_stage"], e["user_id"]) for e in history["history"]]
    return site.run(go)


def summary(site, actor=SYSTEM) -> dict[str, dict]:
    async def go(dep):
        return {s["name"]: s for s in (await dep.pipeline_service.summary("sales", actor=actor))["stages"]}
    return site.run(go)


def column(page, stage: str):
    return page.locator(f'.column[data-stage="{stage}"]')


def card(page, deal_id: int):
    return page.locator(f'.card[data-id="{deal_id}"]')


def count(page, stage: str) -> int:
    return int(column(page, stage).locator("[data-count]").get_attribute("data-count"))


def settled(page, deal_id: int) -> None:
    """Wait until the card's move is answered and the totals are read again. The page marks
    the card ``moving`` once the move is asked for (after the lost-reason dialog, if any), so
    first wait for its request to be under way or done."""
    page.wait_for_function(
        """id => { const c = document.querySelector(`.card[data-id="${id}"]`);
                   return c && !c.classList.contains("moving") && (c.classList.contains("moved")
                          || document.querySelector("#board-error:not([hidden])") !== null); }""",
        arg=deal_id)
    page.wait_for_load_state("networkidle")


def test_columns_show_counts_sums_and_cards(page, site):
    login(page, site, "agent", "/board/sales")
    assert page.url == site.url("/board/sales")
    expected = summary(site)
    stages = page.locator(".column").evaluate_all("cols => cols.map(c => c.dataset.stage)")
    assert stages == list(expected)  # one column per stage, in the pipeline's order
    for name, stage in expected.items():
        assert count(page, name) == stage["count"]
        shown = column(page, name).locator("[data-amounts]").inner_text()
        for money in stage["amount"]:
            assert f"{float(money['amount']):,.2f}" in shown  # € 1,000.00 in English
    first = site.ids["deals"][0]
    assert column(page, "prospecting").locator(f'.card[data-id="{first}"]').count() == 1
    title = card(page, first).locator(".card-title")
    assert title.inner_text() == "Deal 1" and title.get_attribute("href") == f"/deal/{first}"
    assert "Agent" in card(page, first).inner_text()
    assert "1,000.00" in card(page, first).locator(".card-amount").inner_text()
    assert card(page, first).get_attribute("draggable") == "true"  # the agent owns it
    shot(page, "kanban")
    title.click()
    page.wait_for_url(site.url(f"/deal/{first}"))


def test_drag_a_deal_across_and_reload_to_see_it_persisted(page, site):
    deal_id = make_deal(site, "Dragged window order", amount="1234.50", close="2030-05-17")
    login(page, site, "admin", "/board/sales")
    assert "May 17, 2030" in card(page, deal_id).locator(".card-close").inner_text()
    before = {s: count(page, s) for s in ("prospecting", "qualification")}
    source = card(page, deal_id)
    assert source.locator("xpath=ancestor::section").get_attribute("data-stage") == "prospecting"
    source.drag_to(column(page, "qualification").locator(".cards"))
    expect(column(page, "qualification").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert count(page, "prospecting") == before["prospecting"] - 1
    assert count(page, "qualification") == before["qualification"] + 1
    sums = {s: column(page, s).locator("[data-amounts]").inner_text() for s in ("prospecting", "qualification")}
    assert page.locator("#board-error").is_hidden()
    saved = deal(site, deal_id)
    assert saved["stage"] == "qualification" and saved["version"] == 2
    assert card(page, deal_id).get_attribute("data-version") == "2"
    assert stage_moves(site, deal_id)[-1] == ("prospecting", "qualification", site.ids["admin"])
    page.reload()
    expect(column(page, "qualification").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    assert count(page, "qualification") == summary(site)["qualification"]["count"]
    # the sums the script read after the move are those the page shows
    assert sums == {s: column(page, s).locator("[data-amounts]").inner_text() for s in ("prospecting", "qualification")}
    # and on again, a second move with the version the first one returned
    card(page, deal_id).drag_to(column(page, "quote").locator(".cards"))
    expect(column(page, "quote").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert deal(site, deal_id)["stage"] == "quote"


def test_moving_to_lost_asks_for_the_reason(page, site):
    deal_id = make_deal(site, "Maybe lost")
    login(page, site, "agent", "/board/sales")
    lost_before = count(page, "lost")
    dialog = page.locator("#lost-dialog")
    card(page, deal_id).drag_to(column(page, "lost").locator(".cards"))
    expect(dialog).to_be_visible()
    assert "Maybe lost" in dialog.inner_text()
    page.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(column(page, "prospecting").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    assert deal(site, deal_id)["stage"] == "prospecting" and count(page, "lost") == lost_before

    card(page, deal_id).drag_to(column(page, "lost").locator(".cards"))
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="Mark as lost").click()  # the reason is required
    expect(dialog).to_be_visible()
    page.fill("#lost-reason", "   ")
    page.get_by_role("button", name="Mark as lost").click()  # blanks are no reason
    expect(dialog).to_be_visible()
    page.fill("#lost-reason", "Chose a cheaper supplier")
    shot(page, "kanban-lost-reason")
    page.get_by_role("button", name="Mark as lost").click()
    expect(dialog).to_be_hidden()
    expect(column(page, "lost").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    saved = deal(site, deal_id)
    assert saved["stage"] == "lost" and saved["lost_reason"] == "Chose a cheaper supplier"
    assert count(page, "lost") == lost_before + 1
    page.reload()
    expect(column(page, "lost").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()


def test_keyboard_moves(page, site):
    deal_id = make_deal(site, "Keyboard deal")
    login(page, site, "agent", "/board/sales")
    target = card(page, deal_id)
    target.focus()
    page.keyboard.press("ArrowRight")
    expect(target).to_have_class(re.compile(r"\bpending\b"))
    assert "Qualification" in page.locator("#board-status").inner_text()
    page.keyboard.press("Escape")  # changed my mind
    expect(target).not_to_have_class(re.compile(r"\bpending\b"))
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(column(page, "quote").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert deal(site, deal_id)["stage"] == "quote"
    assert page.evaluate("document.activeElement.dataset.id") == str(deal_id)  # focus stays on the card
    assert "moved to Quote" in page.locator("#board-status").inner_text()

    # the card's "Move to" list: Tab from the card to it, choose, press the button
    target.focus()
    select = target.locator("select[name=stage]")
    expect(select).to_be_visible()
    assert select.input_value() == "quote"
    select.select_option("won")
    target.get_by_role("button", name="Move").click()
    expect(column(page, "won").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert deal(site, deal_id)["stage"] == "won"
    assert [to for _, to, _ in stage_moves(site, deal_id)] == ["prospecting", "quote", "won"]


def test_a_read_only_user_sees_the_board_without_moving_anything(page, site):
    deal_id = make_deal(site, "Read me only")
    login(page, site, "reader", "/board/sales")
    expect(card(page, deal_id)).to_be_visible()
    assert page.locator(".card[draggable], .card[data-movable], .card form.move, .grip").count() == 0
    assert page.locator("#lost-dialog, #board-help").count() == 0
    assert count(page, "prospecting") == summary(site)["prospecting"]["count"]
    card(page, deal_id).drag_to(column(page, "quote").locator(".cards"))
    page.wait_for_load_state("networkidle")
    expect(column(page, "prospecting").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    card(page, deal_id).locator(".card-title").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_url(site.url(f"/deal/{deal_id}"))  # Enter follows the link; nothing moved
    assert deal(site, deal_id)["stage"] == "prospecting"


def test_a_stale_card_is_refused_and_shows_why(page, site):
    deal_id = make_deal(site, "Edited meanwhile")
    login(page, site, "admin", "/board/sales")
    expect(card(page, deal_id)).to_be_visible()

    async def elsewhere(dep):  # someone else moves it after the page was read
        await dep.records.update("deal", deal_id, {"stage": "negotiation"})
    site.run(elsewhere)
    card(page, deal_id).drag_to(column(page, "quote").locator(".cards"))
    error = page.locator("#board-error")
    expect(error).to_be_visible()
    assert "changed by someone else" in error.inner_text()
    # the card shows where the record is now, with its current version
    expect(column(page, "negotiation").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert deal(site, deal_id)["stage"] == "negotiation"
    assert card(page, deal_id).get_attribute("data-version") == str(deal(site, deal_id)["version"])
    card(page, deal_id).drag_to(column(page, "quote").locator(".cards"))  # now it goes
    expect(column(page, "quote").locator(f'.card[data-id="{deal_id}"]')).to_be_visible()
    settled(page, deal_id)
    assert deal(site, deal_id)["stage"] == "quote"
    expect(error).to_be_hidden()


def test_filters_apply_to_every_column(page, site):
    mine = make_deal(site, "Zebrafish glazing", stage="quote", owner="admin", amount="700")
    theirs = make_deal(site, "Zebrafish doors", stage="prospecting", owner="agent", amount="300")
    login(page, site, "admin", "/board/sales")
    with page.expect_navigation():
        page.select_option("#board-owner", "mine")
    assert "owner=mine" in page.url
    expect(card(page, mine)).to_be_visible()
    assert card(page, theirs).count() == 0
    assert all(o == str(site.ids["admin"]) for o in page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.owner)"))
    with page.expect_navigation():
        page.select_option("#board-owner", "")
    expect(card(page, theirs)).to_be_visible()
    page.fill("#board-q", "zebrafish")
    page.press("#board-q", "Enter")
    page.wait_for_url("**/board/sales?*q=zebrafish*")
    assert sorted(int(i) for i in page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")) == [mine, theirs]
    assert count(page, "quote") == 1 and count(page, "prospecting") == 1 and count(page, "won") == 0
    assert "700.00" in column(page, "quote").locator("[data-amounts]").inner_text()
    # any field through ?filter= (the API's JSON filter language)
    flt = json.dumps({"field": "amount", "op": "gte", "value": 500})
    page.goto(site.url(f"/board/sales?q=zebrafish&filter={quote(flt)}"))
    assert [int(i) for i in page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")] == [mine]
    # a move keeps the filtered totals right
    card(page, mine).drag_to(column(page, "negotiation").locator(".cards"))
    expect(column(page, "negotiation").locator(f'.card[data-id="{mine}"]')).to_be_visible()
    settled(page, mine)
    assert count(page, "quote") == 0 and count(page, "negotiation") == 1
    expect(column(page, "negotiation").locator("[data-amounts]")).to_contain_text("700.00")
    page.goto(site.url("/board/sales?filter=" + quote("{not json")))
    expect(page.locator("#board-error")).to_contain_text("JSON")
    page.goto(site.url("/board/sales?filter=" + quote(json.dumps({"field": "nope", "op": "eq", "value": 1}))))
    expect(page.locator("#board-error")).to_contain_text("nope")
    expect(card(page, site.ids["deals"][0])).to_be_visible()  # the board, without the bad filter


def test_columns_page_with_load_more(page, site):
    rows = [{"name": f"Bulk deal {n:02}", "stage": "won", "owner_id": site.ids["agent" if n < 30 else "reader"],
             "amount": {"amount": "10", "currency": "EUR"}, "expected_close": "2030-01-15"} for n in range(60)]

    async def go(dep):
        await dep.records.bulk_create("deal", rows)
        found = await dep.records.list("deal", ListQuery(filter={"field": "stage", "op": "eq", "value": "won"},
                                                         limit=500))
        return {r["id"] for r in found.items}
    won = site.run(go)
    assert len(won) >= 60
    login(page, site, "admin", "/board/sales")
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/user?" in r.url else None)
    cards = column(page, "won").locator(".card")
    assert cards.count() == 25
    assert count(page, "won") == len(won)
    more = column(page, "won").get_by_role("button", name="Load more")
    more.click()
    expect(cards).to_have_count(50)
    more.click()
    expect(cards).to_have_count(len(won))
    expect(more).to_have_count(0)
    shown = cards.evaluate_all("cs => cs.map(c => Number(c.dataset.id))")
    assert set(shown) == won and len(shown) == len(won)
    loaded = cards.nth(40)
    assert re.match(r"Bulk deal \d\d", loaded.locator(".card-title").inner_text())
    assert "Reader" in loaded.inner_text() and "10.00" in loaded.locator(".card-amount").inner_text()
    assert "Jan 15, 2030" in loaded.locator(".card-close").inner_text()
    assert len(asked) == 1  # the owners the first page did not name, asked for once
    assert loaded.locator(".card-title").get_attribute("href") == f"/deal/{loaded.get_attribute('data-id')}"
    # a loaded card moves like the others
    loaded_id = int(loaded.get_attribute("data-id"))
    loaded.focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    expect(column(page, "negotiation").locator(f'.card[data-id="{loaded_id}"]')).to_be_visible()
    settled(page, loaded_id)
    assert deal(site, loaded_id)["stage"] == "negotiation"
