"""Authentication over HTTP: who a request is made as, CSRF, the login pages, the auth API.

Every route requires credentials except those marked public (``opt={"public": True}``): the
health check, ``/``, the login, logout and password-reset pages and their JSON equivalents.
Credentials are either

- an API token: ``Authorization: Bearer <token>`` (no CSRF token needed: a browser never sends
  it by itself), or
- the session cookie ``crm_session`` set by a login (HttpOnly, Secure, SameSite=Lax). A request
  made with it and an unsafe method (POST, PUT, PATCH, DELETE) must carry the session's CSRF
  token in the ``X-CSRF-Token`` header or the ``_csrf`` form field, else 403.

A wrong, revoked or expired credential is 401 (problem+json) saying which; a read-only token is
refused (403) every unsafe method. The anonymous forms (login, reset) use a double-submit cookie
(``crm_csrf``) against cross-site posts.

**The actor in a route handler** (plugin routes too): the :class:`~crmcore.auth.Actor` the
request is made as is ``request.user`` and ``request.state.actor``, and a handler may take it as
a dependency named ``actor``::

    from litestar import get
    from crmcore.api import CurrentActor, CurrentDeployment

    @get("/api/hello/mine")
    async def mine(actor: CurrentActor, deployment: CurrentDeployment) -> dict:
        records = deployment.records.as_actor(actor)  # reads and writes as the request's user
        page = await records.list("hello_greeting", ListQuery(limit=1, count=True))
        return {"greetings": page.total, "can_call": actor.has("hello.call")}

A public plugin route (a web form for visitors) declares ``opt={"public": True}``; its actor
is ``None`` unless valid credentials came along, so it takes ``actor: OptionalActor``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.response import Redirect
from litestar.response.redirect import ASGIRedirectResponse
from litestar.types import ASGIApp, Receive, Scope, Send

from ..auth.errors import RateLimited, Unauthenticated
from ..auth.permissions import Actor, Role, check_role
from ..records.errors import FieldError, Forbidden, NotFound, ValidationError
from ._http import _body, _convert, _deployment, _int_param, _json
from .problems import ProblemError

__all__ = [
    "AUTH_ROUTES", "AuthMiddleware", "CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "CurrentActor", "Credentials",
    "OptionalActor", "SESSION_COOKIE", "provide_actor",
]

SESSION_COOKIE = "crm_session"
CSRF_COOKIE = "crm_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "_csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC = {"public": True}

#: Annotate a route handler's parameter with it to receive the request's actor.
CurrentActor = NamedDependency[Actor]
#: The same for a public route: ``None`` when the request came without (valid) credentials.
OptionalActor = NamedDependency[Actor | None]


class Credentials(msgspec.Struct, frozen=True):
    """How a request authenticated (``request.auth``): ``via`` is ``session`` or ``token``;
    ``token`` is the session's token (to end it), ``csrf_token`` the session's CSRF token."""

    via: str
    token: str | None = None
    csrf_token: str | None = None


# -- the middleware ---------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _client_ip(connection: ASGIConnection) -> str | None:
    client = connection.scope.get("client")
    return client[0] if client else None


async def _authenticate(connection: ASGIConnection) -> tuple[Actor | None, Credentials | None]:
    """The actor of a request's credentials (``None`` when it has none); Unauthenticated when
    they are wrong. One database query."""
    auth = connection.app.state.deployment.auth
    header = _header(connection.scope, b"authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated('the Authorization header must be "Bearer <API token>"')
        return await auth.token_actor(token, ip=_client_ip(connection)), Credentials("token")
    session = connection.cookies.get(SESSION_COOKIE)
    if session:
        actor, csrf_token = await auth.session_actor(session, ip=_client_ip(connection))
        return actor, Credentials("session", session, csrf_token)
    return None, None


def _same(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())


async def _csrf_given(scope: Scope, receive: Receive) -> str | None:
    """The CSRF token a request carries: the header, else a form's ``_csrf`` field."""
    given = _header(scope, CSRF_HEADER.encode())
    if given:
        return given
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        request: Request = scope["litestar_app"].request_class(scope, receive)  # the form is cached for the handler
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def _wants_html(scope: Scope) -> bool:
    return (scope["type"] == "http" and scope.get("method") in ("GET", "HEAD")
            and not scope["path"].startswith("/api/") and "text/html" in (_header(scope, b"accept") or ""))


class AuthMiddleware(ASGIMiddleware):
    """Authenticates every request (see the module's docstring); refuses what needs credentials
    and has none, a session's unsafe request without its CSRF token, a read-only token's write."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        handler = scope.get("route_handler")
        # OPTIONS (litestar's Allow answer, a CORS preflight) never carries credentials
        public = bool(handler is not None and handler.opt.get("public")) or scope.get("method") == "OPTIONS"
        connection: ASGIConnection = ASGIConnection(scope)
        try:
            actor, credentials = await _authenticate(connection)
        except Unauthenticated:
            if not public and not _wants_html(scope):
                raise
            actor = credentials = None  # a public route goes on anonymously; a page goes to the login
        if not public:
            if actor is None:
                if _wants_html(scope):
                    path = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
                    await ASGIRedirectResponse(path=f"/login?next={quote(path, safe='')}", status_code=303)(
                        scope, receive, send)
                    return
                raise Unauthenticated(
                    "authentication required: send an API token (Authorization: Bearer <token>) or log in")
            if scope.get("method") in UNSAFE_METHODS:
                if actor.read_only:
                    raise Forbidden("this API token is read-only: it may only read")
                if credentials.via == "session" and not _same(await _csrf_given(scope, receive), credentials.csrf_token):
                    raise Forbidden("CSRF token missing or wrong: send the session's csrf_token in the "
                                    "X-CSRF-Token header or the _csrf form field")
        scope["user"] = actor
        scope["auth"] = credentials
        scope.setdefault("state", {})["actor"] = actor
        await next_app(scope, receive, send)


def provide_actor(request: Request) -> Actor | None:
    """The ``actor`` dependency: the request's actor (``None`` on a public route without credentials)."""
    return request.scope.get("user")


# -- helpers of the routes --------------------------------------------------------------------


def _actor(request: Request) -> Actor:
    actor = request.scope.get("user")
    if actor is None:  # only on public routes, which do not call this
        raise Unauthenticated("authentication required")
    return actor


def _credentials(request: Request) -> Credentials | None:
    return request.scope.get("auth")


def _require(actor: Actor, *permissions: str) -> None:
    """Forbidden unless the actor has one of ``permissions``."""
    if not any(actor.has(p) for p in permissions):
        raise Forbidden(f"this needs the {' or '.join(permissions)} permission")


def _json_only(request: Request) -> None:
    """Public JSON routes take only ``application/json``: a cross-site form cannot send it."""
    if request.content_type[0] != "application/json":
        raise ProblemError(415, "Unsupported media type", "send the body as application/json")


def _secure(request: Request) -> bool:
    return _deployment(request).settings.secure_cookies


def _session_cookie(request: Request, token: str, expires_at: dt.datetime) -> Cookie:
    seconds = max(0, int((expires_at - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    return Cookie(key=SESSION_COOKIE, value=token, path="/", max_age=seconds, expires=seconds,
                  secure=_secure(request), httponly=True, samesite="lax")


def _cleared_session(request: Request) -> Cookie:
    return Cookie(key=SESSION_COOKIE, value="", path="/", max_age=0, expires=0, secure=_secure(request),
                  httponly=True, samesite="lax")


def link_base_url(request: Request) -> str | None:
    """Where reset links point without a ``base_url`` setting (which wins): this request's own
    address, but only on a loopback address, since the Host header is the client's to choose."""
    if request.url.hostname in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return str(request.base_url).rstrip("/")
    return None


def safe_next(value: str | None) -> str:
    """A same-site path to go to after login; anything else (another site, a scheme, ``//``,
    backslashes, control characters) becomes ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


# -- HTML pages -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(loader=PackageLoader("crmcore.api", "templates"), autoescape=select_autoescape(default=True),
                       trim_blocks=True, lstrip_blocks=True)


_PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def _form_token(request: Request) -> str:
    """The double-submit token of an anonymous form: the browser's ``crm_csrf`` cookie, or a new one."""
    token = request.cookies.get(CSRF_COOKIE)
    return token if token and 20 <= len(token) <= 100 else secrets.token_urlsafe(32)


def _page(request: Request, template: str, status: int = 200, *, headers: dict[str, str] | None = None,
          cookies: list[Cookie] | None = None, **context: Any) -> Response:
    csrf = context.pop("csrf", None) or _form_token(request)
    dep = _deployment(request)
    html = _templates().get_template(f"auth/{template}").render(
        csrf=csrf, csrf_field=CSRF_FIELD, site=dep.settings.name, **context)
    cookies = list(cookies or [])
    if not any(c.key == CSRF_COOKIE for c in cookies):
        cookies.append(Cookie(key=CSRF_COOKIE, value=csrf, path="/", secure=_secure(request), httponly=True,
                              samesite="strict"))
    return Response(content=html, status_code=status, media_type="text/html; charset=utf-8",
                    headers={**_PAGE_HEADERS, **(headers or {})}, cookies=cookies)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _form_csrf_ok(request: Request, form: dict[str, str]) -> bool:
    return _same(form.get(CSRF_FIELD), request.cookies.get(CSRF_COOKIE))


_EXPIRED_FORM = "This form expired or came from another site. Please try again."


def _retry_text(seconds: int) -> str:
    minutes = (seconds + 59) // 60
    return f"{seconds} seconds" if seconds < 120 else f"{minutes} minutes"


@get("/login", opt=PUBLIC, include_in_schema=False)
async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    credentials = _credentials(request)
    if request.scope.get("user") is not None and credentials and credentials.via == "session":
        return Redirect(next_path, status_code=303)
    notice = "Your password was changed. Sign in with the new one." if request.query_params.get("reset") else None
    return _page(request, "login.html", next=next_path, email="", notice=notice)


@post("/login", opt=PUBLIC, include_in_schema=False, status_code=200)
async def login_submit(request: Request) -> Response:
    form = await _form(request)
    next_path = safe_next(form.get("next"))
    email, password = form.get("email", "").strip(), form.get("password", "")
    again = lambda status, error, **kw: _page(request, "login.html", status, next=next_path, email=email,  # noqa: E731
                                             error=error, **kw)
    if not _form_csrf_ok(request, form):
        return again(403, _EXPIRED_FORM)
    if not email or not password or not _one_line(email) or len(email) > 320:
        return again(422, "Enter your e-mail address and your password.")
    try:
        grant = await _deployment(request).auth.login(
            email, password, ip=_client_ip(request), user_agent=request.headers.get("user-agent"))
    except Unauthenticated as exc:
        return again(401, f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
    except RateLimited as exc:
        return again(429, f"Too many failed attempts. Try again in {_retry_text(exc.retry_after)}.",
                     headers={"retry-after": str(exc.retry_after)})
    except ValidationError as exc:
        return again(422, "; ".join(e.message for e in exc.errors))
    await _end_previous_session(request)
    return Redirect(next_path, status_code=303, cookies=[_session_cookie(request, grant.token, grant.expires_at)],
                    headers={"cache-control": "no-store"})


async def _end_previous_session(request: Request) -> None:
    """A login replaces the browser's session cookie: the session it named ends too."""
    credentials = _credentials(request)
    if request.scope.get("user") is not None and credentials is not None and credentials.via == "session":
        await _deployment(request).auth.logout(credentials.token)


async def _end_session(request: Request, given: str | None) -> bool:
    """End the request's session if its CSRF token is given; False when it is missing or wrong."""
    credentials = _credentials(request)
    if request.scope.get("user") is None or credentials is None or credentials.via != "session":
        return True  # no live session: nothing to end (the cookie is cleared anyway)
    if not _same(given, credentials.csrf_token):
        return False
    await _deployment(request).auth.logout(credentials.token)
    return True


@post("/logout", opt=PUBLIC, include_in_schema=False, status_code=200)
async def logout_page(request: Request) -> Response:
    form = await _form(request)
    if not await _end_session(request, form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)):
        return _page(request, "notice.html", 403, title="Not signed out",
                     message="CSRF token missing or wrong: sign out from the application's own page.")
    # Only a request that brought the session cookie clears it: another site's form post comes
    # without it (SameSite=Lax), and a cookie cleared by such a post would sign the user out.
    cleared = [_cleared_session(request)] if SESSION_COOKIE in request.cookies else []
    return Redirect("/login", status_code=303, cookies=cleared)


@get("/password/reset", opt=PUBLIC, include_in_schema=False)
async def reset_request_page(request: Request) -> Response:
    return _page(request, "reset_request.html", email="")


@post("/password/reset", opt=PUBLIC, include_in_schema=False, status_code=200)
async def reset_request_submit(request: Request) -> Response:
    form = await _form(request)
    email = form.get("email", "").strip()
    if not _form_csrf_ok(request, form):
        return _page(request, "reset_request.html", 403, email=email, error=_EXPIRED_FORM)
    if not email or "@" not in email or not _one_line(email) or len(email) > 320:
        return _page(request, "reset_request.html", 422, email=email, error="Enter the e-mail address you sign in with.")
    try:
        await _deployment(request).auth.request_password_reset(email, ip=_client_ip(request), base_url=link_base_url(request))
    except RateLimited as exc:
        return _page(request, "reset_request.html", 429, email=email, headers={"retry-after": str(exc.retry_after)},
                     error=f"Too many attempts. Try again in {_retry_text(exc.retry_after)}.")
    except ValidationError as exc:
        return _page(request, "reset_request.html", 422, email=email, error="; ".join(e.message for e in exc.errors))
    return _page(request, "notice.html", title="Check your inbox",
                 message=f"If {email} belongs to an account, a link to choose a new password is on its way. "
                         "It works once, within the hour.")


@get("/password/reset/{token:str}", opt=PUBLIC, include_in_schema=False)
async def reset_confirm_page(request: Request) -> Response:
    return _page(request, "reset_confirm.html", token=request.path_params["token"])


@post("/password/reset/{token:str}", opt=PUBLIC, include_in_schema=False, status_code=200)
async def reset_confirm_submit(request: Request) -> Response:
    token = request.path_params["token"]
    form = await _form(request)
    again = lambda status, error, **kw: _page(request, "reset_confirm.html", status, token=token,  # noqa: E731
                                             error=error, **kw)
    if not _form_csrf_ok(request, form):
        return again(403, _EXPIRED_FORM)
    password, repeated = form.get("password", ""), form.get("password2", "")
    if not password:
        return again(422, "Choose a new password.")
    if password != repeated:
        return again(422, "The two passwords differ.")
    try:
        await _deployment(request).auth.reset_password(token, password, ip=_client_ip(request))
    except Unauthenticated:
        return again(400, "This link is unknown, already used or expired.", expired=True)
    except ValidationError as exc:
        return again(422, "; ".join(e.message for e in exc.errors))
    except RateLimited as exc:
        return again(429, f"Too many attempts. Try again in {_retry_text(exc.retry_after)}.",
                     headers={"retry-after": str(exc.retry_after)})
    return Redirect("/login?reset=1", status_code=303, cookies=[_cleared_session(request)])


# -- request and response shapes of the JSON routes (documented in /schema) -------------------

#: One line of text: no control characters (PostgreSQL refuses NUL; none belongs in a name).
_ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
_Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=_ONE_LINE)]
_Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_ONE_LINE)]
_When = Annotated[dt.datetime, msgspec.Meta(tz=True)]


def _one_line(value: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in value)


class AuthLoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: _Email
    password: _Secret


class AuthPasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current: _Secret
    new: _Secret


class AuthPasswordResetRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: _Email


class AuthPasswordResetConfirm(msgspec.Struct, forbid_unknown_fields=True):
    token: _Secret
    password: _Secret


class AuthTokenCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_ONE_LINE)]
    read_only: bool = False
    expires_at: _When | None = None
    #: Another user's token (needs ``manage_tokens``); yours when absent.
    user_id: int | None = None


class AuthUserCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: _Name
    email: _Email
    password: _Secret | None = None
    role: _Name = "agent"
    teams: list[_Name] = []


class AuthUserPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: _Name | msgspec.UnsetType = msgspec.UNSET
    teams: list[_Name] | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET
    password: _Secret | msgspec.UnsetType = msgspec.UNSET


class AuthTeamCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=_ONE_LINE)]


class AuthUser(msgspec.Struct, kw_only=True):
    id: int
    name: str | None
    email: str | None
    active: bool
    #: None: a user record without a login (no role given yet).
    role: str | None
    teams: list[str]
    has_password: bool
    locale: str | None = None
    time_zone: str | None = None


class AuthSession(msgspec.Struct, kw_only=True):
    """A login's answer; the session token itself is only in the ``crm_session`` cookie."""

    user: AuthUser
    csrf_token: str
    expires_at: dt.datetime


class AuthMe(msgspec.Struct, kw_only=True):
    user: AuthUser
    role: str
    grants: list[str]
    teams: list[str]
    via: str
    read_only: bool
    token_id: int | None
    #: The session's CSRF token (send it as X-CSRF-Token); null with an API token.
    csrf_token: str | None


class AuthToken(msgspec.Struct, kw_only=True):
    id: int
    user_id: int
    name: str
    prefix: str
    read_only: bool
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class AuthNewToken(AuthToken, kw_only=True):
    #: The secret, shown this once: send it as ``Authorization: Bearer <token>``.
    token: str


class AuthTeam(msgspec.Struct, kw_only=True):
    id: int
    name: str
    members: list[int]


class AuthLogEntry(msgspec.Struct, kw_only=True):
    id: int
    at: dt.datetime
    event: str
    user_id: int | None
    actor_id: int | None
    email: str | None
    ip: str | None
    detail: dict[str, Any] | None


# -- JSON routes ------------------------------------------------------------------------------


def _auth(request: Request):
    return _deployment(request).auth


def _name_param(request: Request, kind: str) -> str:
    """A role's or team's name from the path; NotFound when it cannot be one."""
    name = request.path_params["name"]
    if not _one_line(name) or len(name) > 200:
        raise NotFound(kind, name.encode("unicode_escape").decode()[:60])
    return name


@post("/api/auth/login", opt=PUBLIC, include_in_schema=False, status_code=200)
async def api_login(request: Request) -> Response:
    _json_only(request)
    data = _convert(await _body(request), AuthLoginRequest)
    auth = _auth(request)
    grant = await auth.login(data.email, data.password, ip=_client_ip(request),
                             user_agent=request.headers.get("user-agent"))
    user = await auth.user(grant.user_id)
    await _end_previous_session(request)
    response = _json({"user": user, "csrf_token": grant.csrf_token, "expires_at": grant.expires_at})
    response.set_cookie(_session_cookie(request, grant.token, grant.expires_at))
    response.headers["cache-control"] = "no-store"
    return response


@post("/api/auth/logout", opt=PUBLIC, include_in_schema=False, status_code=200)
async def api_logout(request: Request) -> Response:
    """End the session of the request's cookie (an API token is revoked with DELETE /api/auth/tokens/{id})."""
    if not await _end_session(request, request.headers.get(CSRF_HEADER)):
        raise Forbidden("CSRF token missing or wrong: send the session's csrf_token in the X-CSRF-Token header")
    return Response(content=None, status_code=204, cookies=[_cleared_session(request)])


@get("/api/auth/me", include_in_schema=False)
async def api_me(request: Request) -> Response:
    actor = _actor(request)
    credentials = _credentials(request)
    user = await _auth(request).user(actor.user_id)
    grants = sorted(p for p in _deployment(request).permissions if actor.has(p))
    return _json({
        "user": user, "role": actor.role.name, "grants": grants, "teams": user.get("teams", []),
        "via": actor.via, "read_only": actor.read_only, "token_id": actor.token_id,
        "csrf_token": credentials.csrf_token if credentials and credentials.via == "session" else None,
    })


@post("/api/auth/password", include_in_schema=False, status_code=204)
async def api_change_password(request: Request) -> None:
    """Change your own password, giving the current one; your other sessions end."""
    data = _convert(await _body(request), AuthPasswordChange)
    credentials = _credentials(request)
    keep = credentials.token if credentials and credentials.via == "session" else None
    try:
        await _auth(request).change_password(_actor(request), data.current, data.new, keep_session=keep)
    except Unauthenticated as exc:  # not the request's credentials: a wrong field
        raise ValidationError([FieldError("current", "wrong", str(exc))]) from None
    except ValidationError as exc:  # the password policy names "password": here it is "new"
        raise ValidationError([FieldError("new" if e.field == "password" else e.field, e.code, e.message)
                               for e in exc.errors]) from None


@post("/api/auth/password-reset", opt=PUBLIC, include_in_schema=False, status_code=202)
async def api_password_reset(request: Request) -> Response:
    _json_only(request)
    data = _convert(await _body(request), AuthPasswordResetRequest)
    await _auth(request).request_password_reset(data.email, ip=_client_ip(request), base_url=link_base_url(request))
    return _json({"detail": "if the address belongs to an account, a one-time reset link is on its way"}, 202)


@post("/api/auth/password-reset/confirm", opt=PUBLIC, include_in_schema=False, status_code=204)
async def api_password_reset_confirm(request: Request) -> None:
    _json_only(request)
    data = _convert(await _body(request), AuthPasswordResetConfirm)
    try:
        await _auth(request).reset_password(data.token, data.password, ip=_client_ip(request))
    except Unauthenticated as exc:
        raise ValidationError([FieldError("token", "invalid", str(exc))]) from None


# -- API tokens --


@get("/api/auth/tokens", include_in_schema=False)
async def api_tokens(request: Request) -> Response:
    """Your tokens; ``user_id=N`` or ``all=true`` another's or everyone's (``manage_tokens``)."""
    actor = _actor(request)
    params = request.query_params
    user_id = _int_param("user_id", params.get("user_id"), actor.user_id)
    everyone = (params.get("all") or "").lower() in ("1", "true", "yes")
    if everyone or user_id != actor.user_id:
        _require(actor, "manage_tokens")
    return _json(await _auth(request).tokens(user_id=None if everyone else user_id))


@post("/api/auth/tokens", include_in_schema=False, status_code=201)
async def api_create_token(request: Request) -> Response:
    actor = _actor(request)
    data = _convert(await _body(request), AuthTokenCreate)
    user_id = actor.user_id if data.user_id is None else data.user_id
    if user_id != actor.user_id:
        _require(actor, "manage_tokens")
    if data.expires_at is not None and data.expires_at <= dt.datetime.now(dt.timezone.utc):
        raise ValidationError([FieldError("expires_at", "invalid", "expires_at must be in the future")])
    new = await _auth(request).create_token(user_id, data.name, read_only=data.read_only, expires_at=data.expires_at,
                                            actor=actor)
    response = _json({**new.info, "token": new.token}, 201)
    response.headers["cache-control"] = "no-store"
    return response


@delete("/api/auth/tokens/{token_id:int}", include_in_schema=False, status_code=204)
async def api_revoke_token(request: Request) -> None:
    """Revoke one of your tokens (anyone's with ``manage_tokens``; to others another's is 404)."""
    await _auth(request).revoke_token(request.path_params["token_id"], actor=_actor(request))


# -- users --


@get("/api/auth/users", include_in_schema=False)
async def api_users(request: Request) -> Response:
    _require(_actor(request), "manage_users")
    return _json(await _auth(request).users())


@post("/api/auth/users", include_in_schema=False, status_code=201)
async def api_create_user(request: Request) -> Response:
    actor = _actor(request)
    _require(actor, "manage_users")
    data = _convert(await _body(request), AuthUserCreate)
    user = await _auth(request).create_user(name=data.name, email=data.email, password=data.password, role=data.role,
                                            teams=data.teams, actor=actor)
    return _json(user, 201)


@get("/api/auth/users/{user_id:int}", include_in_schema=False)
async def api_user(request: Request) -> Response:
    _require(_actor(request), "manage_users")
    return _json(await _auth(request).user(request.path_params["user_id"]))


@patch("/api/auth/users/{user_id:int}", include_in_schema=False)
async def api_update_user(request: Request) -> Response:
    """Change a user's role, teams, active flag or password (each given one)."""
    actor = _actor(request)
    _require(actor, "manage_users")
    user_id = request.path_params["user_id"]
    data = _convert(await _body(request), AuthUserPatch)
    auth = _auth(request)
    await auth.user(user_id)  # 404 before changing anything
    if data.active is False and user_id == actor.user_id:
        raise ValidationError([FieldError("active", "invalid", "you cannot disable yourself")])
    if data.role is not msgspec.UNSET:
        await auth.set_role(user_id, data.role, actor=actor)
    if data.teams is not msgspec.UNSET:
        await auth.set_teams(user_id, data.teams, actor=actor)
    if data.active is not msgspec.UNSET:
        await auth.set_active(user_id, data.active, actor=actor)
    if data.password is not msgspec.UNSET:
        credentials = _credentials(request)
        keep = credentials.token if credentials and credentials.via == "session" else None
        await auth.set_password(user_id, data.password, actor=actor, keep_session=keep)
    return _json(await auth.user(user_id))


# -- roles and teams --


@get("/api/auth/roles", include_in_schema=False)
async def api_roles(request: Request) -> Response:
    _require(_actor(request), "manage_roles", "manage_users")
    return _json(await _auth(request).roles())


@get("/api/auth/roles/{name:str}", include_in_schema=False)
async def api_role(request: Request) -> Response:
    _require(_actor(request), "manage_roles", "manage_users")
    return _json(await _auth(request).role(_name_param(request, "role")))


@put("/api/auth/roles/{name:str}", include_in_schema=False)
async def api_save_role(request: Request) -> Response:
    """Create or replace a role: entity scopes, field rules, grants."""
    actor = _actor(request)
    _require(actor, "manage_roles")
    name = _name_param(request, "role")
    data = await _body(request)
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", "invalid", "expected a JSON object describing the role")])
    data = {k: v for k, v in data.items() if k != "builtin"}
    if data.setdefault("name", name) != name:
        raise ValidationError([FieldError("name", "invalid", f"the body names role {data['name']!r}, the path {name!r}")])
    role: Role = check_role(data)
    return _json(await _auth(request).save_role(role, actor=actor))


@delete("/api/auth/roles/{name:str}", include_in_schema=False, status_code=204)
async def api_delete_role(request: Request) -> None:
    actor = _actor(request)
    _require(actor, "manage_roles")
    await _auth(request).delete_role(_name_param(request, "role"), actor=actor)


@get("/api/auth/teams", include_in_schema=False)
async def api_teams(request: Request) -> Response:
    _require(_actor(request), "manage_roles", "manage_users")
    return _json(await _auth(request).teams())


@post("/api/auth/teams", include_in_schema=False, status_code=201)
async def api_create_team(request: Request) -> Response:
    actor = _actor(request)
    _require(actor, "manage_roles")
    data = _convert(await _body(request), AuthTeamCreate)
    return _json(await _auth(request).create_team(data.name, actor=actor), 201)


@delete("/api/auth/teams/{name:str}", include_in_schema=False, status_code=204)
async def api_delete_team(request: Request) -> None:
    actor = _actor(request)
    _require(actor, "manage_roles")
    await _auth(request).delete_team(_name_param(request, "team"), actor=actor)


# -- the security log --


@get("/api/auth/log", include_in_schema=False)
async def api_log(request: Request) -> Response:
    """The security log, newest first; filters ``event``, ``user_id``, ``before`` (an id), ``limit``."""
    _require(_actor(request), "view_audit_log")
    params = request.query_params
    limit = _int_param("limit", params.get("limit"), 100)
    if not 1 <= limit <= 1000:
        raise ValidationError([FieldError("limit", "invalid", "limit must be between 1 and 1000")])
    if not _one_line(params.get("event") or ""):
        raise ValidationError([FieldError("event", "invalid", "an event name is one word, e.g. login_failed")])
    return _json(await _auth(request).security_log(
        event=params.get("event") or None, user_id=_int_param("user_id", params.get("user_id")),
        before_id=_int_param("before", params.get("before")), limit=limit))


AUTH_ROUTES = [
    login_page, login_submit, logout_page, reset_request_page, reset_request_submit, reset_confirm_page,
    reset_confirm_submit, api_login, api_logout, api_me, api_change_password, api_password_reset,
    api_password_reset_confirm, api_tokens, api_create_token, api_revoke_token, api_users, api_create_user, api_user,
    api_update_user, api_roles, api_role, api_save_role, api_delete_role, api_teams, api_create_team,
    api_delete_team, api_log,
]

#: Schemas of the JSON routes' bodies and answers, for the OpenAPI document.
AUTH_SCHEMA_TYPES = [
    AuthLoginRequest, AuthPasswordChange, AuthPasswordResetRequest, AuthPasswordResetConfirm, AuthTokenCreate,
    AuthUserCreate, AuthUserPatch, AuthTeamCreate, AuthUser, AuthSession, AuthMe, AuthToken, AuthNewToken, AuthTeam,
    AuthLogEntry, Role,
]
