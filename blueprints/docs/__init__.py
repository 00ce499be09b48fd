"""API documentation: the OpenAPI document, and a panel page that renders it (no CDN, no JS)."""
from flask import Blueprint, current_app, jsonify, render_template

from blueprints.api_common.openapi import build_document, documented
from blueprints.auth.permissions import requires

bp = Blueprint("docs", __name__)


def openapi_document():
    """Built once per app: the routes and schemas do not change while it runs."""
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = build_document(current_app)
    return current_app.extensions["openapi"]


@bp.get("/api/openapi.json")
@documented("This document (OpenAPI 3.1)", responses={200: "The OpenAPI document"}, errors=(),
            public=True)
def openapi_json():
    return jsonify(openapi_document())


@bp.get("/docs/api")
@requires("view_orders")
def api_docs():
    document = openapi_document()
    tags = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            tags.setdefault(operation["tags"][0], []).append((method.upper(), path, operation))
    return render_template("docs/api.html", document=document, tags=tags,
                           schemas=document["components"]["schemas"])
