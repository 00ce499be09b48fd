"""The OpenAPI document, generated from the routes and the pydantic models they use.

A route declares its request and response models with `@documented(...)`; `build_document`
walks the app's URL map, so a route without documentation is noticed (the tests check every
/api/ route has it) and a schema change is a document change.
"""
import re

from pydantic.json_schema import models_json_schema

from blueprints.api_common import responses as out

REF = "#/components/schemas/{model}"
COMMON_ERRORS = {400: "Invalid input or invalid order state", 401: "No or bad bearer token",
                 403: "Not permitted", 404: "Not found (or another store's order)",
                 409: "Blocked: billing hold, shipment in transit, stale version, "
                      "request in progress", 422: "Idempotency key reused with another body",
                 429: "Rate limited; see Retry-After",
                 503: "Maintenance in progress (maintenance_mode): nothing was changed; "
                      "retry when it ends"}


# The server refuses text holding NUL (U+0000) anywhere in a body or query string: no database
# column can store it (api_common._check_text). Every free-text string of a request says so.
NO_NUL = "^[^\\u0000]*$"
NO_NUL_NOTE = ("Text fields must not contain NUL (U+0000): a request with one is refused "
               "(400 validation_error), as the pattern of every free-text field says.")


def _no_nul(schema, components, seen=None):
    """Add the NUL rule to every free-text string of a request schema, following $refs into
    the components (each visited once)."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for item in schema:
            _no_nul(item, components, seen)
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/") and ref not in seen:
        seen.add(ref)
        _no_nul(components.get(ref.rsplit("/", 1)[1]), components, seen)
    if schema.get("type") == "string" and not {"enum", "const", "format", "pattern"} & set(schema):
        schema["pattern"] = NO_NUL
    for value in schema.values():
        if isinstance(value, (dict, list)):
            _no_nul(value, components, seen)


def documented(summary, *, body=None, query=None, responses=None, errors=(400, 401, 403, 404),
               idempotent=False, public=False, description=None):
    """Attach the OpenAPI description of a route to its view function."""

    def decorator(view):
        view.openapi = {"summary": summary, "body": body, "query": query,
                        "responses": responses or {}, "errors": errors,
                        "idempotent": idempotent, "public": public,
                        "description": description or (view.__doc__ or "").strip()}
        return view

    return decorator


def _openapi_path(rule):
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def _query_parameters(model, components):
    schema = model.model_json_schema(ref_template=REF)
    params = []
    for name, prop in schema.get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                       "schema": prop})
    for name, definition in schema.get("$defs", {}).items():
        components.setdefault(name, definition)
    return params


# The load balancers' and monitors' routes, documented beside the API.
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")


def build_document(app):
    operations, models = [], {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") and rule.rule not in HEALTH_PATHS:
            continue
        view = app.view_functions[rule.endpoint]
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operations.append((rule, method, meta))
            for model in [meta["body"], *meta["responses"].values()]:
                if model is not None and not isinstance(model, str):
                    models[model.__name__] = model
    models["ErrorBody"] = out.ErrorBody
    _, definitions = models_json_schema([(m, "validation") for m in models.values()],
                                        ref_template=REF)
    components = dict(definitions.get("$defs", {}))
    paths, request_schemas = {}, set()
    for rule, method, meta in operations:
        operation = {
            "summary": meta["summary"], "operationId": f"{rule.endpoint}_{method.lower()}",
            "tags": [rule.rule.split("/")[2] if rule.rule.startswith("/api/") else "health"],
            "parameters": [{"name": arg, "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0,
                                       "maximum": 2**31 - 1}}
                           for arg in sorted(rule.arguments)],
            "responses": {},
        }
        if meta["description"]:
            operation["description"] = meta["description"]
        if meta["query"] is not None:
            operation["parameters"] += _query_parameters(meta["query"], components)
        if meta["idempotent"]:
            operation["parameters"].append({
                "name": "X-Idempotency-Key", "in": "header", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Same key + same body replays the stored answer; another "
                               "body: 422; while the first runs: 409. Keys expire after 24 h."})
        if not meta["public"]:
            operation["parameters"].append({
                "name": "X-User-ID", "in": "header", "required": False,
                "schema": {"type": "string"},
                "description": "When sent, must be the token's user id (else 403)."})
            operation["security"] = [{"bearer": []}]
        else:
            operation["security"] = []
        if meta["body"] is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(model=meta["body"].__name__)}}}}
        _no_nul([p["schema"] for p in operation["parameters"] if p["in"] == "query"]
                + [operation.get("requestBody", {})], components, request_schemas)
        for status, model in meta["responses"].items():
            if isinstance(model, str):
                operation["responses"][str(status)] = {"description": model}
            else:
                operation["responses"][str(status)] = {
                    "description": model.__doc__.strip().splitlines()[0]
                    if model.__doc__ and model.__module__ == out.__name__ else model.__name__,
                    "content": {"application/json": {
                        "schema": {"$ref": REF.format(model=model.__name__)}}}}
        error_codes = set(meta["errors"]) | ({401} if not meta["public"] else set())
        if meta["idempotent"]:
            error_codes |= {409, 422}
        if rule.rule.startswith("/api/v2/"):
            error_codes.add(429)
        for status in sorted(error_codes):
            operation["responses"].setdefault(str(status), {
                "description": COMMON_ERRORS.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": REF.format(
                    model="ErrorBody")}}}})
        paths.setdefault(_openapi_path(rule.rule), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cancel Desk API", "version": "1.0.0", "description": (
            "Order cancellation for dispensaries. v1: the CMS endpoints. v2: the operators' "
            "runbook (preview, idempotent asynchronous cancel, reinstatement, post-checks). "
            "Errors are JSON: {\"error\": {\"code\", \"message\"}}. " + NO_NUL_NOTE)},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "POST /api/auth/token or `flask tokens create`"}}},
    }
