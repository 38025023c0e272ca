"""A plugin for the browser tests: it uses every UI slot (a record panel, a record action, a menu
item with a whole page of its own, a dashboard widget) and ships a template and a static file
by convention (``templates/``, ``static/``)."""

from litestar import Request, Response, get

from crmcore import ListQuery, UIItem, render_page
from crmcore.hookspecs import hookimpl
from crmcore.plugins import PluginInfo

PLUGIN = PluginInfo(name="sample", version="1.0", description="UI slots for the browser tests")


@hookimpl
def crm_ui_items(register):
    register(UIItem(slot="record.panel", entity="contact", name="loyalty", label="Loyalty card",
                    template="sample/panel.html", context=_loyalty))
    register(UIItem(slot="record.action", entity="contact", name="greet", label="Send greeting",
                    url="/sample/greet"))
    register(UIItem(slot="menu", name="sample-page", label="Sample page", url="/sample/page"))
    register(UIItem(slot="dashboard.widget", name="sample-widget", label="Sample widget",
                    template="sample/widget.html"))


async def _loyalty(deployment, actor, record, entity):
    """The panel's context: what the reader may see of the contact's open deals."""
    deals = await deployment.records.as_actor(actor).list("deal", ListQuery(
        filter={"field": "contact", "op": "eq", "value": record["id"]}, limit=1, count=True))
    return {"points": record["id"] * 10, "deals": deals.total, "entity_name": entity}


@get("/sample/page", include_in_schema=False)
async def sample_page(request: Request) -> Response:
    return await render_page(request, "sample/page.html")


@get("/sample/greet", include_in_schema=False)
async def greet(request: Request) -> Response:
    """The record action: a page naming the record it was asked for."""
    entity, record_id = request.query_params.get("entity"), request.query_params.get("id")
    return await render_page(request, "sample/page.html", greeting=f"Greetings sent for {entity} {record_id}")


@hookimpl
def crm_register_routes(register):
    register(sample_page)
    register(greet)
