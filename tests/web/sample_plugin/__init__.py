"""A plugin for the browser tests: it uses every UI slot (a record panel, a record action, a menu
item with a whole page of its own, a dashboard widget) and ships a template and a static file
by convention (``templates/``, ``static/``)."""

from litestar import Request, Response, get

from crmcore import UIItem
from crmcore.hookspecs import hookimpl
from crmcore.plugins import PluginInfo

PLUGIN = PluginInfo(name="sample", version="1.0", description="UI slots for the browser tests")


@hookimpl
def crm_ui_items(register):
    register(UIItem(slot="record.panel", entity="contact", name="loyalty", label="Loyalty card",
                    template="sample/panel.html"))
    register(UIItem(slot="record.action", entity="contact", name="greet", label="Send greeting",
                    url="/sample/greet"))
    register(UIItem(slot="menu", name="sample-page", label="Sample page", url="/sample/page"))
    register(UIItem(slot="dashboard.widget", name="sample-widget", label="Sample widget",
                    template="sample/widget.html"))


@get("/sample/page", include_in_schema=False)
async def sample_page(request: Request) -> Response:
    from crmcore.web.render import page

    return await page(request, "sample/page.html")


@hookimpl
def crm_register_routes(register):
    register(sample_page)
