"""Web UI pages: document templates and configuration bundles (two more settings sections).

- ``/settings/documents`` (``manage_schema``): the document templates, stored and the plugins'
  (read-only); ``/settings/documents/new`` and ``/settings/documents/{name}``: a template's form
  (name, entity type, format, title, the Jinja2 body) saved through ``deployment.documents`` as
  the signed-in user, deleted with a confirmation, and previewed with a record of its entity
  type: rendered as that user reads the record, nothing stored
  (``/settings/documents/{name}/preview``: the HTML in a sandboxed frame, or the PDF).
- ``/settings/bundle`` (all of ``manage_schema``, ``manage_roles`` and ``manage_automation``,
  like ``/api/bundle``): download the configuration as a bundle; upload one to see what applying
  it would change (per section: add, change and its keys, same; what only this deployment has
  is kept), then apply it. The uploaded bundle travels back in the confirm form: nothing is kept
  on the server between the two steps.

Forms post ``_csrf``; refused input re-renders the page with the reasons (422), as the other
settings pages do (:mod:`.settings`, whose helpers these pages use).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post

from ...api._http import _deployment
from ...api.bundles import apply_to_app, check_bundle, check_permissions
from ...bundles import SECTIONS as BUNDLE_SECTIONS, plan
from ...documents import FORMATS, MEDIA_TYPES
from ...records.errors import FieldError, Forbidden, NotFound, ValidationError
from ...records.query import ListQuery
from ..render import record_title
from .settings import N_, _attempt, _done, _entities, _need, _render, _text

__all__ = ["ROUTES"]

#: ``?ok=<code>`` after a change on these pages: the notice shown.
NOTICES = {
    "template_added": N_("Template added."), "template_saved": N_("Template saved."),
    "template_deleted": N_("Template deleted."),
}

#: A bundle's sections as the diff names them.
SECTION_LABELS = {
    "plugins": N_("Plugins"), "custom_fields": N_("Custom fields"), "pipelines": N_("Pipelines"), "teams": N_("Teams"),
    "roles": N_("Roles"), "document_templates": N_("Document templates"), "reports": N_("Saved reports"),
    "rules": N_("Automation rules"), "web_forms": N_("Web forms"),
}

#: A preview is the document, not a page of this site: it runs nothing, loads only inline
#: images and styles, and only this site may frame it.
PREVIEW_HEADERS = {
    "cache-control": "private, no-store", "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
    "x-frame-options": "SAMEORIGIN",
    "content-security-policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; "
                               "frame-ancestors 'self'",
}

#: How many of the latest records the preview offers to pick from.
PICKABLE = 20


async def _page(request: Request, template: str, slug: str, status: int = 200, **context: Any) -> Response:
    """A settings page with the notices of these pages."""
    notice = NOTICES.get(request.query_params.get("ok") or "")
    if notice:
        context.setdefault("notice", notice)
        context.setdefault("notice_subject", (request.query_params.get("what") or "")[:100] or None)
    return await _render(request, template, slug, status, **context)


# -- document templates ---------------------------------------------------------------------------


@get("/settings/documents", include_in_schema=False)
async def documents_page(request: Request) -> Response:
    _need(request, "documents")
    dep = _deployment(request)
    labels = {e.name: e.label for e in dep.registry}
    return await _page(request, "settings/documents.html", "documents", templates=await dep.documents.templates(),
                       entity_labels=labels)


def _template_values(template: dict[str, Any]) -> dict[str, Any]:
    return {k: template.get(k) or "" for k in ("name", "entity", "label", "format", "body")}


def _template_input(form: Any) -> dict[str, Any]:
    """What the form says; the body as typed (its line numbers are what errors name)."""
    body = form.get("body")
    return {"entity": _text(form, "entity"), "label": _text(form, "label"), "format": _text(form, "format"),
            "body": body.replace("\r\n", "\n") if isinstance(body, str) else ""}


async def _pickable(request: Request, entity: str) -> list[dict[str, Any]]:
    """The latest records of ``entity`` the user may read, to preview with: ``{id, title}``."""
    dep = _deployment(request)
    try:
        found = await dep.records.as_actor(request.scope["user"]).list(entity, ListQuery(sort=["-id"], limit=PICKABLE))
    except (Forbidden, NotFound, ValidationError):
        return []
    entity_type = dep.registry.get(entity)
    return [{"id": r["id"], "title": record_title(entity_type, r)} for r in found.items]


async def _fill(request: Request, template: dict[str, Any], raw: str, fmt: str) -> tuple[bytes, str, str]:
    """The template filled with record ``raw`` as the user reads it (nothing stored):
    ``(content, format, filename)``; a ValidationError or NotFound saying why it cannot be."""
    if not raw.isdigit():
        raise ValidationError([FieldError("record_id", "invalid", f"the id of a {template['entity']} record")])
    return await _deployment(request).documents.render(template["name"], template["entity"], int(raw),
                                                       actor=request.scope["user"], format=fmt)


async def _preview_errors(request: Request, template: dict[str, Any], raw: str) -> list[FieldError]:
    """Why record ``raw`` cannot fill the template, if it cannot. The page fills it once to say
    so beside the form; the frame then loads the document from the preview route."""
    try:
        await _fill(request, template, raw, "html")
    except ValidationError as exc:
        return list(exc.errors)
    except (NotFound, Forbidden) as exc:
        return [FieldError("record_id", "not_found", str(exc))]
    return []


async def _template_page(request: Request, template: dict[str, Any] | None, status: int = 200,
                         **context: Any) -> Response:
    """A template's form (``template`` None: a new one), with its preview when a record is picked."""
    context.setdefault("values", _template_values(template) if template else {"format": "pdf"})
    preview_record, preview_errors, pickable = "", [], []
    if template is not None:
        preview_record = (request.query_params.get("record_id") or "").strip()
        if preview_record:
            preview_errors = await _preview_errors(request, template, preview_record)
            status = 422 if preview_errors else status
        pickable = await _pickable(request, template["entity"])
    return await _page(request, "settings/document.html", "documents", status, definition=template,
                       entities=_entities(request), formats=FORMATS, preview_record=preview_record,
                       preview_errors=preview_errors, pickable=pickable, **context)


@get("/settings/documents/new", include_in_schema=False)
async def document_new(request: Request) -> Response:
    _need(request, "documents")
    return await _template_page(request, None)


@post("/settings/documents", include_in_schema=False, status_code=303)
async def document_add(request: Request) -> Response:
    actor = _need(request, "documents")
    form = await request.form()
    data = {"name": _text(form, "name"), **_template_input(form)}
    added, errors = await _attempt(lambda: _deployment(request).documents.create_template(data, actor=actor))
    if errors:
        return await _template_page(request, None, 422, errors=errors, values=data)
    return _done(f"/settings/documents/{quote(added['name'])}", "template_added")


@get("/settings/documents/{name:str}", include_in_schema=False)
async def document_page(request: Request) -> Response:
    _need(request, "documents")
    return await _template_page(request, await _deployment(request).documents.template(request.path_params["name"]))


@post("/settings/documents/{name:str}", include_in_schema=False, status_code=303)
async def document_update(request: Request) -> Response:
    actor = _need(request, "documents")
    documents = _deployment(request).documents
    template = await documents.template(request.path_params["name"])  # NotFound
    changes = _template_input(await request.form())
    changes["label"] = changes["label"] or template["name"]
    _, errors = await _attempt(lambda: documents.update_template(template["name"], changes, actor=actor))
    if errors:
        return await _template_page(request, template, 422, errors=errors, values={**changes, "name": template["name"]})
    return _done(f"/settings/documents/{quote(template['name'])}", "template_saved")


@post("/settings/documents/{name:str}/delete", include_in_schema=False, status_code=303)
async def document_delete(request: Request) -> Response:
    actor = _need(request, "documents")
    name = request.path_params["name"]
    await _deployment(request).documents.delete_template(name, actor=actor)
    return _done("/settings/documents", "template_deleted", what=name)


@get("/settings/documents/{name:str}/preview", include_in_schema=False)
async def document_preview(request: Request) -> Response:
    """The template filled with a record, as the user reads it; nothing stored. A reason it
    cannot be is answered as plain text (422): this is what the preview frame shows."""
    _need(request, "documents")
    template = await _deployment(request).documents.template(request.path_params["name"])  # NotFound
    try:
        content, fmt, filename = await _fill(request, template, request.query_params.get("record_id") or "",
                                             request.query_params.get("format") or "html")
    except ValidationError as exc:
        return _plain("\n".join(f"{e.field}: {e.message}" for e in exc.errors), 422)
    except (NotFound, Forbidden) as exc:
        return _plain(str(exc), 404)
    # The PDF is a download (a sandboxed response is no place for the browser's PDF viewer).
    disposition = "attachment" if fmt == "pdf" else "inline"
    # (litestar adds the charset of a text/* type itself)
    return Response(content=content, media_type=MEDIA_TYPES[fmt].split(";")[0], headers={
        **PREVIEW_HEADERS, "content-disposition": f'{disposition}; filename="{filename}"'})


def _plain(text: str, status: int) -> Response:
    return Response(content=text, status_code=status, media_type="text/plain", headers=PREVIEW_HEADERS)


# -- configuration bundle -------------------------------------------------------------------------


def _bundle_actor(request: Request) -> Any:
    """The actor, when it has every permission a bundle needs (the section's own is one of them)."""
    actor = _need(request, "bundle")
    check_permissions(actor)
    return actor


def _by_section(steps: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(section, its steps)`` in the bundle's order, sections without any left out."""
    return [(section, found) for section in BUNDLE_SECTIONS
            if (found := [s for s in steps if s["section"] == section])]


async def _bundle_page(request: Request, status: int = 200, **context: Any) -> Response:
    return await _page(request, "settings/bundle.html", "bundle", status, section_labels=SECTION_LABELS,
                       by_section=_by_section, **context)


def _parsed(text: str, field: str) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """A bundle read from ``text``: (it, []) or (None, why it is not one)."""
    try:
        return check_bundle(json.loads(text)), []
    except ValueError as exc:
        return None, [FieldError(field, "invalid_json", f"not a bundle: this is not JSON ({exc})")]
    except RecursionError:
        return None, [FieldError(field, "invalid_json", "not a bundle: the JSON is nested too deeply")]
    except ValidationError as exc:
        return None, list(exc.errors)


@get("/settings/bundle", include_in_schema=False)
async def bundle_page(request: Request) -> Response:
    _bundle_actor(request)
    return await _bundle_page(request)


@post("/settings/bundle/plan", include_in_schema=False, status_code=200)
async def bundle_plan(request: Request) -> Response:
    _bundle_actor(request)
    upload = (await request.form()).get("file")
    if upload is None or not hasattr(upload, "read") or not upload.filename:
        return await _bundle_page(request, 422, errors=[FieldError("file", "required", "choose a bundle file (.json)")])
    try:
        text = (await upload.read()).decode("utf-8-sig")
    except UnicodeDecodeError:
        return await _bundle_page(request, 422, errors=[FieldError("file", "invalid", "not a bundle: the file is not "
                                                                                      "UTF-8 text")])
    bundle, errors = _parsed(text, "file")
    if errors:
        return await _bundle_page(request, 422, errors=errors, filename=upload.filename)
    steps = await plan(_deployment(request), bundle)
    return await _bundle_page(request, steps=steps, filename=upload.filename,
                              changes=sum(s["change"] in ("add", "change") for s in steps),
                              bundle_text=json.dumps(bundle, ensure_ascii=False))


@post("/settings/bundle/apply", include_in_schema=False, status_code=200)
async def bundle_apply(request: Request) -> Response:
    _bundle_actor(request)
    form = await request.form()
    bundle, errors = _parsed(form.get("bundle") or "", "bundle")
    applied = None
    if not errors:
        applied, errors = await _attempt(lambda: apply_to_app(request, bundle))
    if errors:
        return await _bundle_page(request, 422, errors=errors)
    return await _bundle_page(request, applied=applied)


ROUTES: list[Any] = [
    documents_page, document_new, document_add, document_page, document_update, document_delete, document_preview,
    bundle_page, bundle_plan, bundle_apply,
]
