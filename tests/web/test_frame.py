"""The frame every page shares, in a real browser: login, the dashboard with a plugin's widget
and menu page, notifications, global search, the command palette, Turkish and right-to-left."""

from __future__ import annotations

from .conftest import login, shot


def test_login_lands_on_the_dashboard_with_plugin_widget(page, site):
    page.goto(site.url("/"))
    assert "/login" in page.url
    login(page, site, "admin")
    assert page.url == site.url("/")
    assert page.locator("h1").inner_text().startswith("Hello, Admin")
    assert "Deals you can see: 4" in page.get_by_test_id("sample-widget").inner_text()
    assert page.locator("section[aria-label=Sales] td").first.inner_text() == "Prospecting"
    shot(page, "dashboard")
    page.get_by_role("link", name="Sample page").click()
    assert page.get_by_test_id("sample-page").is_visible()


def test_global_search_and_command_palette(page, site):
    login(page, site, "agent")
    page.fill(".search input", "yılmaz")
    page.press(".search input", "Enter")
    page.wait_for_url("**/search?q=*")
    assert page.get_by_role("link", name="Ayşe Yılmaz").is_visible()
    shot(page, "search")
    page.keyboard.press("Control+k")
    page.fill("#palette-input", "deal")
    page.keyboard.press("Enter")
    page.wait_for_url(site.url("/deal"))


def test_turkish_and_persian_right_to_left(page, site):
    login(page, site, "reader")
    page.click(".menu summary")  # the account menu
    with page.expect_navigation():
        page.select_option("#ui-locale", "tr")
    assert page.locator("html").get_attribute("lang") == "tr"
    assert page.get_by_role("link", name="Gösterge paneli").is_visible()
    shot(page, "dashboard-tr")
    page.click(".menu summary")
    with page.expect_navigation():
        page.select_option("#ui-locale", "fa")
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert page.get_by_role("link", name="پیشخوان").is_visible()
    shot(page, "dashboard-fa")
    page.click(".menu summary")
    with page.expect_navigation():
        page.select_option("#ui-locale", "en")
    assert page.locator("html").get_attribute("dir") == "ltr"
