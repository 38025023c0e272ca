"""The OpenAPI document, generated from the live entity registry.

Entity routes are generic (one handler serves every entity type), so their schema is built here
from the entity model: a custom field added a second ago is in ``/schema`` at once. Routes that
plugins register are described by litestar and merged in.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..entities import EntityType, Field, FieldType
from ..records.query import OPERATORS
from .auth import AUTH_SCHEMA_TYPES, CSRF_HEADER, SESSION_COOKIE
from .webhooks import SCHEMA_TYPES as WEBHOOK_SCHEMA_TYPES, openapi_paths as webhook_paths
from .automation import SCHEMA_TYPES as AUTOMATION_SCHEMA_TYPES, openapi_paths as automation_paths
from . import bundles as bundles_api, documents as documents_api, importing as importing_api, reports as reports_api
from .pipelines import PIPELINE_SCHEMAS, pipeline_paths
from .timeline import PUBLIC_OPERATIONS as TIMELINE_PUBLIC, SCHEMA_TYPES as TIMELINE_SCHEMA_TYPES, openapi_paths as timeline_paths

__all__ = ["build_openapi", "PUBLIC_OPERATIONS"]

#: Operations anyone may call, without credentials.
PUBLIC_OPERATIONS = {
    ("/api/health", "get"), ("/api/auth/login", "post"), ("/api/auth/logout", "post"),
    ("/api/auth/password-reset", "post"), ("/api/auth/password-reset/confirm", "post"),
    *TIMELINE_PUBLIC,
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

SECURITY_SCHEMES = {
    "bearerToken": {
        "type": "http", "scheme": "bearer",
        "description": "A personal API token (POST /api/auth/tokens), sent as `Authorization: Bearer <token>`. "
                       "A read-only token may only read.",
    },
    "sessionCookie": {
        "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
        "description": "The session cookie a login sets (POST /api/auth/login). Unsafe methods (POST, PUT, "
                       f"PATCH, DELETE) must also send the session's csrf_token in the `{CSRF_HEADER}` header.",
    },
}

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def field_output_schema(field: Field) -> dict[str, Any]:
    t = field.type
    if t in (FieldType.TEXT, FieldType.LONG_TEXT):
        schema: dict[str, Any] = {"type": "string"}
        if field.max_length:
            schema["maxLength"] = field.max_length
    elif t is FieldType.INTEGER:
        schema = {"type": "integer"}
    elif t is FieldType.RELATION:
        schema = {"type": "integer", "description": f"id of a {field.target}"}
    elif t is FieldType.DECIMAL:
        schema = {"type": "string", "format": "decimal", "examples": ["1234.50"]}
    elif t is FieldType.MONEY:
        schema = {"$ref": "#/components/schemas/Money"}
    elif t is FieldType.BOOLEAN:
        schema = {"type": "boolean"}
    elif t is FieldType.DATE:
        schema = {"type": "string", "format": "date"}
    elif t is FieldType.DATETIME:
        schema = {"type": "string", "format": "date-time"}
    elif t is FieldType.CHOICE:
        schema = {"type": "string", "enum": list(field.choices)}
    elif t is FieldType.MULTI_CHOICE:
        schema = {"type": "array", "items": {"type": "string", "enum": list(field.choices)}}
    elif t is FieldType.TAGS:
        schema = {"type": "array", "items": {"type": "string"}}
    elif t is FieldType.EMAIL:
        schema = {"type": "string", "format": "email"}
    elif t is FieldType.PHONE:
        schema = {"$ref": "#/components/schemas/Phone"}
    else:
        schema = {"type": "string", "format": "uri"}
    if "$ref" in schema:
        schema = {"anyOf": [schema, {"type": "null"}]}
    else:
        schema["type"] = [schema["type"], "null"]
    if field.help_text:
        schema["description"] = field.help_text
    schema["title"] = field.label
    return schema


def field_input_schema(field: Field) -> dict[str, Any]:
    t = field.type
    if t is FieldType.DECIMAL:
        schema: dict[str, Any] = {"anyOf": [{"type": "string", "examples": ["1234.50"]}, {"type": "number"}]}
    elif t is FieldType.MONEY:
        schema = {"anyOf": [{"$ref": "#/components/schemas/Money"}, {"type": "string"}, {"type": "number"}],
                  "description": "an amount (in the deployment's currency) or {amount, currency}"}
    elif t is FieldType.PHONE:
        schema = {"type": "string", "description": "as typed; stored normalised to E.164", "maxLength": 64}
    else:  # as output, without the null (added below)
        schema = field_output_schema(field)
        schema["type"] = schema["type"][0]
    return {"anyOf": [schema, {"type": "null"}], "title": field.label}


def _entity_schemas(entity: EntityType) -> dict[str, Any]:
    fields = entity.visible_fields
    system = {
        "id": {"type": "integer"}, "version": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "deleted_at": {"type": ["string", "null"], "format": "date-time"},
        "owner_id": {"type": ["integer", "null"]}, "created_by": {"type": ["integer", "null"]},
        "updated_by": {"type": ["integer", "null"]},
    }
    record = {
        "type": "object", "title": entity.label,
        "properties": {**system, **{f.name: field_output_schema(f) for f in fields}},
        "required": list(system) + [f.name for f in fields],
    }
    inputs = {f.name: field_input_schema(f) for f in fields}
    inputs["owner_id"] = {"type": "integer", "description": "the user who owns the record"}
    create = {
        "type": "object", "properties": inputs, "additionalProperties": False,
        "required": [f.name for f in fields if f.required and f.default is None],
    }
    patch = {
        "type": "object", "additionalProperties": False,
        "properties": {**inputs, "version": {"type": "integer", "description": "the version you read; a stale one gets 409"}},
    }
    return {"Record": record, "Create": create, "Patch": patch}


def _entity_paths(entity: EntityType) -> dict[str, Any]:
    name = entity.name
    ref = lambda kind: {"$ref": f"#/components/schemas/{_schema_name(entity, kind)}"}  # noqa: E731
    page = {
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": ref("Record")},
                       "next_cursor": {"type": ["string", "null"]}, "total": {"type": ["integer", "null"]}},
    }
    id_param = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    filter_params = []
    for field in entity.visible_fields:
        filter_params.append({
            "name": field.name, "in": "query", "required": False, "schema": {"type": "string"},
            "description": f"filter: {field.label} equals; also {field.name}__<op> with op in {', '.join(OPERATORS)}",
        })
    list_params = [
        {"name": "filter", "in": "query", "schema": {"type": "string"},
         "description": 'JSON filter: {"field","op","value"} or {"and"|"or": [...]} or {"not": {...}} or, for '
                        'related records, {"has": {"entity": "activity", "via": "contact", "filter": {...}}}'},
        {"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "fields, '-' for descending: -amount,name"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "full-text search (prefix match)"},
        {"name": "count", "in": "query", "schema": {"type": "boolean"}, "description": "include the total"},
        {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "comma-separated fields to return"},
        *filter_params,
    ]
    tag = [entity.label_plural]
    bad = {"422": _problem("Invalid input: errors name each field")}
    return {
        f"/api/{name}": {
            "get": {"operationId": f"list_{name}", "tags": tag, "summary": f"List {entity.label_plural}",
                    "parameters": list_params, "responses": {"200": _json(page), **bad}},
            "post": {"operationId": f"create_{name}", "tags": tag, "summary": f"Create a {entity.label}",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Create")}}},
                     "responses": {"201": _json(ref("Record"), "Created"), **bad}},
        },
        f"/api/{name}/bulk": {
            "post": {"operationId": f"bulk_create_{name}", "tags": tag, "summary": f"Create many {entity.label_plural} (all or nothing)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "array", "items": ref("Create"), "maxItems": 10000}}}},
                     "responses": {"201": _json({"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}}}}, "Created"), **bad}},
            "patch": {"operationId": f"bulk_update_{name}", "tags": tag, "summary": f"Update many {entity.label_plural} (all or nothing)",
                      "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "array", "maxItems": 10000, "items": {
                          "allOf": [ref("Patch"), {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}]}}}}},
                      "responses": {"200": _json({"type": "object", "properties": {"updated": {"type": "array", "items": {"type": "integer"}}}}), **bad}},
        },
        f"/api/{name}/export": {
            "get": {"operationId": f"export_{name}", "tags": tag, "summary": f"Export {entity.label_plural} as CSV",
                    "parameters": list_params,
                    "responses": {"200": {"description": "CSV, one row per record", "content": {"text/csv": {"schema": {"type": "string"}}}}, **bad}},
        },
        f"/api/{name}/trash": {
            "get": {"operationId": f"trash_{name}", "tags": tag, "summary": f"Deleted {entity.label_plural}",
                    "parameters": list_params, "responses": {"200": _json(page), **bad}},
        },
        f"/api/{name}/{{record_id}}": {
            "parameters": [id_param],
            "get": {"operationId": f"get_{name}", "tags": tag, "summary": f"Get a {entity.label}",
                    "responses": {"200": _json(ref("Record")), "404": _problem("No such record")}},
            "patch": {"operationId": f"update_{name}", "tags": tag, "summary": f"Update a {entity.label}",
                      "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"},
                                      "description": "the version you read (alternative to 'version' in the body)"}],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Patch")}}},
                      "responses": {"200": _json(ref("Record")), "404": _problem("No such record"),
                                    "409": _problem("Changed by someone else since the version you read"), **bad}},
            "delete": {"operationId": f"delete_{name}", "tags": tag, "summary": f"Move a {entity.label} to the trash",
                       "parameters": [{"name": "version", "in": "query", "schema": {"type": "integer"}}],
                       "responses": {"204": {"description": "Moved to the trash"}, "404": _problem("No such record"),
                                     "409": _problem("Changed by someone else")}},
        },
        f"/api/{name}/{{record_id}}/restore": {
            "parameters": [id_param],
            "post": {"operationId": f"restore_{name}", "tags": tag, "summary": f"Restore a {entity.label} from the trash",
                     "responses": {"200": _json(ref("Record")), "404": _problem("Not in the trash")}},
        },
        f"/api/{name}/{{record_id}}/history": {
            "parameters": [id_param],
            "get": {"operationId": f"history_{name}", "tags": tag, "summary": "Audit history, newest first",
                    "responses": {"200": _json({"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}),
                                  "404": _problem("No such record")}},
        },
    }


def _schema_name(entity: EntityType, kind: str) -> str:
    return "".join(p.capitalize() for p in entity.name.split("_")) + kind


COMMON_SCHEMAS = {
    "Problem": {
        "type": "object", "required": ["title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["field", "code", "message"], "properties": {
                "field": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"}}}},
        },
    },
    "Money": {"type": "object", "required": ["amount", "currency"], "properties": {
        "amount": {"type": "string", "format": "decimal"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}},
    "Phone": {"type": "object", "required": ["e164", "raw"], "properties": {
        "e164": {"type": "string", "pattern": r"^\+[1-9]\d{1,14}$"}, "raw": {"type": "string"}}},
    "AuditEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "action": {"type": "string"}, "user_id": {"type": ["integer", "null"]},
        "at": {"type": "string", "format": "date-time"},
        "changes": {"type": "object", "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2}}}},
}


def _auth_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(AUTH_SCHEMA_TYPES, ref_template="#/components/schemas/{name}")
    return components


def _auth_paths() -> dict[str, Any]:
    """The /api/auth routes: login, sessions, tokens, users, roles, teams, the security log."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    body = lambda name: {"required": True, "content": {"application/json": {"schema": ref(name)}}}  # noqa: E731
    many = lambda name: {"type": "array", "items": ref(name)}  # noqa: E731
    tag, admin = ["auth"], ["auth: administration"]
    bad = {"422": _problem("Invalid input: errors name each field")}
    limited = {"429": {**_problem("Too many failed attempts; the Retry-After header says for how long"),
                       "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}}}
    json_only = {"415": _problem("The body must be application/json")}
    done = lambda what: {"description": what}  # noqa: E731
    cookie = {"Set-Cookie": {"schema": {"type": "string"},
                             "description": f"{SESSION_COOKIE}=...; HttpOnly; Secure; SameSite=Lax; Path=/"}}
    needs = lambda permission: {"403": _problem(f"Needs the {permission} permission")}  # noqa: E731
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/auth/login": {"post": {
            "operationId": "auth_login", "tags": tag, "summary": "Log in: opens a session (cookie) and gives its CSRF token",
            "requestBody": body("AuthLoginRequest"),
            "responses": {"200": {**_json(ref("AuthSession")), "headers": cookie},
                          "401": _problem("Wrong e-mail or password"), **limited, **bad, **json_only}}},
        "/api/auth/logout": {"post": {
            "operationId": "auth_logout", "tags": tag, "summary": "End the session of the cookie sent and clear it",
            "parameters": [{"name": "X-CSRF-Token", "in": "header", "schema": {"type": "string"}}],
            "responses": {"204": done("Logged out"), "403": _problem("CSRF token missing or wrong")}}},
        "/api/auth/me": {"get": {
            "operationId": "auth_me", "tags": tag, "summary": "Who you are: user, role, permissions, teams",
            "responses": {"200": _json(ref("AuthMe"))}}},
        "/api/auth/password": {"post": {
            "operationId": "auth_change_password", "tags": tag,
            "summary": "Change your password (giving the current one); your other sessions end",
            "requestBody": body("AuthPasswordChange"), "responses": {"204": done("Changed"), **limited, **bad}}},
        "/api/auth/password-reset": {"post": {
            "operationId": "auth_password_reset", "tags": tag,
            "summary": "Ask for a one-time reset link (the same answer whether the account exists or not)",
            "requestBody": body("AuthPasswordResetRequest"),
            "responses": {"202": _json({"type": "object", "properties": {"detail": {"type": "string"}}}, "Accepted"),
                          **limited, **bad, **json_only}}},
        "/api/auth/password-reset/confirm": {"post": {
            "operationId": "auth_password_reset_confirm", "tags": tag,
            "summary": "Set a new password with a reset link's token (once); the user's sessions end",
            "requestBody": body("AuthPasswordResetConfirm"),
            "responses": {"204": done("Password set"), **limited, **bad, **json_only}}},
        "/api/auth/tokens": {
            "get": {"operationId": "auth_tokens", "tags": tag, "summary": "Your API tokens (others' with manage_tokens)",
                    "parameters": [
                        {"name": "user_id", "in": "query", "schema": {"type": "integer"}, "description": "another user's (manage_tokens)"},
                        {"name": "all", "in": "query", "schema": {"type": "boolean"}, "description": "everyone's (manage_tokens)"}],
                    "responses": {"200": _json(many("AuthToken")), **needs("manage_tokens"), **bad}},
            "post": {"operationId": "auth_create_token", "tags": tag,
                     "summary": "Create an API token; its secret is in this answer only",
                     "requestBody": body("AuthTokenCreate"),
                     "responses": {"201": _json(ref("AuthNewToken"), "Created"), **needs("manage_tokens"), **bad}}},
        "/api/auth/tokens/{token_id}": {
            "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "delete": {"operationId": "auth_revoke_token", "tags": tag, "summary": "Revoke an API token",
                       "responses": {"204": done("Revoked"), "404": _problem("No such token of yours")}}},
        "/api/auth/users": {
            "get": {"operationId": "auth_users", "tags": admin, "summary": "Users with their roles and teams",
                    "responses": {"200": _json(many("AuthUser")), **needs("manage_users")}},
            "post": {"operationId": "auth_create_user", "tags": admin, "summary": "Add a user",
                     "requestBody": body("AuthUserCreate"),
                     "responses": {"201": _json(ref("AuthUser"), "Created"), **needs("manage_users"), **bad}}},
        "/api/auth/users/{user_id}": {
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"operationId": "auth_user", "tags": admin, "summary": "A user",
                    "responses": {"200": _json(ref("AuthUser")), **needs("manage_users"), "404": _problem("No such user")}},
            "patch": {"operationId": "auth_update_user", "tags": admin,
                      "summary": "Change a user's role, teams, active flag or password",
                      "requestBody": body("AuthUserPatch"),
                      "responses": {"200": _json(ref("AuthUser")), **needs("manage_users"),
                                    "404": _problem("No such user"), **bad}}},
        "/api/auth/roles": {"get": {
            "operationId": "auth_roles", "tags": admin, "summary": "Roles: scopes per entity and action, field rules, grants",
            "responses": {"200": _json(many("Role")), **needs("manage_roles")}}},
        "/api/auth/roles/{name}": {
            "parameters": [name_param],
            "get": {"operationId": "auth_role", "tags": admin, "summary": "A role",
                    "responses": {"200": _json(ref("Role")), **needs("manage_roles"), "404": _problem("No such role")}},
            "put": {"operationId": "auth_save_role", "tags": admin, "summary": "Create or replace a role",
                    "requestBody": body("Role"),
                    "responses": {"200": _json(ref("Role")), **needs("manage_roles"), **bad}},
            "delete": {"operationId": "auth_delete_role", "tags": admin,
                       "summary": "Delete a role (not a built-in one, nor one users have)",
                       "responses": {"204": done("Deleted"), **needs("manage_roles"), "404": _problem("No such role"), **bad}}},
        "/api/auth/teams": {
            "get": {"operationId": "auth_teams", "tags": admin, "summary": "Teams and their members",
                    "responses": {"200": _json(many("AuthTeam")), **needs("manage_roles")}},
            "post": {"operationId": "auth_create_team", "tags": admin, "summary": "Add a team",
                     "requestBody": body("AuthTeamCreate"),
                     "responses": {"201": _json(ref("AuthTeam"), "Created"), **needs("manage_roles"), **bad}}},
        "/api/auth/teams/{name}": {
            "parameters": [name_param],
            "delete": {"operationId": "auth_delete_team", "tags": admin, "summary": "Delete a team",
                       "responses": {"204": done("Deleted"), **needs("manage_roles"), "404": _problem("No such team")}}},
        "/api/auth/log": {"get": {
            "operationId": "auth_log", "tags": admin,
            "summary": "The security log, newest first: logins, failures, permission changes, token use",
            "parameters": [
                {"name": "event", "in": "query", "schema": {"type": "string"}, "description": "e.g. login_failed"},
                {"name": "user_id", "in": "query", "schema": {"type": "integer"}},
                {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "entries older than this id"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
            "responses": {"200": _json(many("AuthLogEntry")), **needs("view_audit_log"), **bad}}},
    }


def _secure(doc: dict[str, Any]) -> None:
    """Every operation needs a token or a session except the public ones (``security: []``)."""
    doc["components"]["securitySchemes"] = SECURITY_SCHEMES
    doc["security"] = [{"bearerToken": []}, {"sessionCookie": []}]
    unauthenticated = _problem("No valid credentials: missing, wrong, revoked or expired token or session")
    for path, item in doc["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            if (path, method) in PUBLIC_OPERATIONS:
                operation["security"] = []
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", unauthenticated)
            if method != "get":
                responses.setdefault("403", _problem("Not allowed: the role, a read-only token, or a missing CSRF token"))


def build_openapi(entities: list[EntityType], base: dict[str, Any] | None = None, *, version: str = "0.1.0") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "crmcore API", "version": version},
        "paths": {},
        "components": {"schemas": dict(COMMON_SCHEMAS)},
    }
    if base:
        doc["paths"].update(base.get("paths", {}))
        doc["components"]["schemas"].update(base.get("components", {}).get("schemas", {}))
    doc["components"]["schemas"].update(_auth_schemas())
    doc["paths"].update(_auth_paths())
    doc["components"]["schemas"].update(msgspec.json.schema_components(
        WEBHOOK_SCHEMA_TYPES, ref_template="#/components/schemas/{name}")[1])
    doc["paths"].update(webhook_paths(_problem))
    doc["components"]["schemas"].update(PIPELINE_SCHEMAS)
    doc["paths"].update(pipeline_paths([e.name for e in entities if e.field("stage") is not None]))
    doc["components"]["schemas"].update(msgspec.json.schema_components(
        TIMELINE_SCHEMA_TYPES, ref_template="#/components/schemas/{name}")[1])
    doc["paths"].update(timeline_paths(_problem, [e.name for e in entities]))
    doc["components"]["schemas"].update(msgspec.json.schema_components(
        AUTOMATION_SCHEMA_TYPES, ref_template="#/components/schemas/{name}")[1])
    doc["paths"].update(automation_paths(_problem))
    for part in (reports_api, documents_api, importing_api, bundles_api):
        if part.SCHEMA_TYPES:
            doc["components"]["schemas"].update(msgspec.json.schema_components(
                part.SCHEMA_TYPES, ref_template="#/components/schemas/{name}")[1])
        doc["paths"].update(part.openapi_paths(_problem))
    for entity in entities:
        for kind, schema in _entity_schemas(entity).items():
            doc["components"]["schemas"][_schema_name(entity, kind)] = schema
        doc["paths"].update(_entity_paths(entity))
    _secure(doc)
    return doc
