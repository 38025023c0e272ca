"""Static files of the web UI: the core's (``/static/core/...``) and each enabled plugin's
``static/`` folder (``/static/plugins/<name>/...``), found by convention like its templates."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException

from ..api._http import _deployment
from ..api.auth import PUBLIC
from .render import HERE, plugin_dirs

__all__ = ["ROUTES"]


def _file(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise NotFoundException(f"no static file {relative!r}")
    return path


@get("/static/{path:path}", opt=PUBLIC, include_in_schema=False)
async def static_file(request: Request) -> Response:
    """A static file, cacheable for a day."""
    kind, _, rest = request.path_params["path"].lstrip("/").partition("/")
    if kind == "core":
        root = HERE / "static"
    elif kind == "plugins":
        name, _, rest = rest.partition("/")
        root = plugin_dirs(_deployment(request), "static").get(name)
        if root is None:
            raise NotFoundException(f"no plugin {name!r} with static files")
    else:
        raise NotFoundException("static files are under /static/core/ and /static/plugins/<name>/")
    file = _file(root, rest)
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type in ("application/javascript", "application/json"):
        media_type += "; charset=utf-8"
    return Response(content=file.read_bytes(), media_type=media_type,
                    headers={"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"})


ROUTES = [static_file]
