"""What every JSON API blueprint shares: token auth, body parsing, errors, the token endpoint."""
from datetime import timedelta

from flask import Blueprint, current_app, g, jsonify, render_template, request
from flask_login import current_user
from pydantic import BaseModel, ValidationError
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from blueprints.api_common import responses as out
from blueprints.api_common.openapi import documented
from blueprints.api_common.schemas import TokenRequest
from blueprints.auth import MESSAGES, api_error, check_credentials
from blueprints.auth.permissions import is_api_request
from cancellation import AuditContext
from cancellation.audit import record
from models import ApiToken, db, isoformat, utcnow

bp = Blueprint("api", __name__, url_prefix="/api")


class BadBody(Exception):
    def __init__(self, message, fields=None):
        super().__init__(message)
        self.message, self.fields = message, fields


@bp.app_errorhandler(BadBody)
def _bad_body(exc):
    return error_response(exc)


@bp.app_errorhandler(RequestEntityTooLarge)
def _body_too_large(exc):
    """413 for a body over MAX_CONTENT_LENGTH, as JSON for the API and as the error page for the
    panel. The body stays unread: the page's own forms (sign out) would otherwise ask for it
    again and fail a second time, inside the error handler — a 500."""
    request.form = ImmutableMultiDict()
    request.files = ImmutableMultiDict()
    if is_api_request():
        return api_error(413, *MESSAGES[413])
    return render_template("errors/error.html", status=413, title=exc.name,
                           message=exc.description), 413


def read_body():
    """The request body, read once. Over MAX_CONTENT_LENGTH it is a 413: Werkzeug refuses a
    Content-Length past it up front, but a chunked body carries none — it reads to the limit
    and stops, and a body cut short there must not be taken for the whole of it."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit:
        raise RequestEntityTooLarge()
    return raw


@bp.after_app_request
def _allow_on_405(response):
    """A 405 names the methods the URL does accept (RFC 9110): the error pages are built
    afresh, without the Allow header routing put on the exception."""
    refused = request.routing_exception
    if response.status_code == 405 and isinstance(refused, MethodNotAllowed) \
            and refused.valid_methods and "Allow" not in response.headers:
        response.headers["Allow"] = ", ".join(refused.valid_methods)
    return response


def error_response(exc):
    """The JSON answer for a bad body or a domain error (also stored by idempotent routes)."""
    if isinstance(exc, BadBody):
        extra = {"fields": exc.fields} if exc.fields else {}
        return api_error(400, "validation_error", exc.message, **extra)
    return api_error(exc.status, exc.code, exc.message, **exc.details)


def parse_json(schema, *, optional=False):
    """Validate the request body against a pydantic schema; any problem is a 400, never a 500.
    A body over MAX_CONTENT_LENGTH (chunked or not) is a 413."""
    raw = read_body()
    if not raw.strip():
        if optional:
            return schema()
        raise BadBody("A JSON body is required.")
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than the JSON parser goes
        raise BadBody("The body is not valid JSON: it is nested too deeply.") from None
    if data is None and raw.strip() != b"null":
        raise BadBody("The body is not valid JSON.")
    if not isinstance(data, dict):
        raise BadBody("The body must be a JSON object.")
    _check_text(data, "The request body")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in error["loc"]) or "body",
                   "message": error["msg"]} for error in exc.errors(include_url=False,
                                                                    include_input=False)]
        raise BadBody("The request body is invalid: " + "; ".join(
            f"{f['field']}: {f['message']}" for f in fields[:5]), fields) from None


def _text_problem(value):
    """Why a string cannot be stored (PostgreSQL refuses NUL; nothing encodes a lone
    surrogate), or None."""
    if "\x00" in value:
        return "must not contain NUL (0x00) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    return None


def _check_text(data, where, path=()):
    """Refuse, as a 400 naming the field, text no database column can hold — before it reaches
    a query (a 500 on PostgreSQL) or a stored job (a task that fails forever)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) \
        if isinstance(data, list) else ()
    for name, value in items:
        field = (*path, str(name))
        for text in (name, value) if isinstance(name, str) else (value,):
            problem = isinstance(text, str) and _text_problem(text)
            if problem:
                label = ".".join(field).encode("utf-8", "backslashreplace").decode() \
                    .replace("\x00", "\\x00")
                raise BadBody(f"{where} is invalid: {label}: {problem}",
                              [{"field": label, "message": problem}])
        if isinstance(value, (dict, list)):
            _check_text(value, where, field)


def parse_query(schema):
    _check_text(request.args.to_dict(flat=False), "The query string")  # every value of a name
    try:
        return schema.model_validate(request.args.to_dict())
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in error["loc"]), "message": error["msg"]}
                  for error in exc.errors(include_url=False, include_input=False)]
        raise BadBody("The query string is invalid: " + "; ".join(
            f"{f['field']}: {f['message']}" for f in fields[:5]), fields) from None


def require_token_user():
    """before_request of API blueprints: a bearer token is required; X-User-ID must match it."""
    if not current_user.is_authenticated:
        return api_error(401, "unauthorized",
                         "Authentication required: send 'Authorization: Bearer <token>'.")
    claimed = request.headers.get("X-User-ID")
    if claimed is not None and claimed.strip() != str(current_user.id):
        return api_error(403, "forbidden", "X-User-ID does not match the token's user.")
    return None


def rate_limit_key():
    """Rate limits count per user when the token is good, else per client address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{request.remote_addr}"


def audit_context(source):
    return AuditContext(request_id=g.get("request_id"), ip=request.remote_addr, source=source)


@bp.route("/auth/token", methods=["POST"])
@documented("Exchange e-mail and password for a bearer token", body=TokenRequest,
            responses={200: out.Token}, errors=(400, 401, 429), public=True)
def issue_token():
    body = parse_json(TokenRequest)
    user, lockout = check_credentials(body.email, body.password, "api")
    if lockout is not None:
        response = api_error(429, "rate_limited", lockout.message)
        response.headers["Retry-After"] = str(lockout.retry_after)
        return response
    if user is None:
        return api_error(401, "invalid_credentials", "E-mail or password is wrong.")
    row, plain = ApiToken.issue(user, name=body.name or "api",
                                expires_at=utcnow() + timedelta(
                                    days=current_app.config["API_TOKEN_TTL_DAYS"]))
    db.session.commit()
    return jsonify({"token": plain, "token_type": "Bearer", "user_id": user.id,
                    "role": user.role, "expires_at": isoformat(row.expires_at)})


@bp.route("/auth/token", methods=["DELETE"])
@documented("Revoke the bearer token this request presents (sign the client out)",
            responses={204: "Revoked: the token no longer authenticates"}, errors=(401, 409))
def revoke_token():
    """204 once revoked; any later use of the token answers 401. Of two revocations at the
    same moment one gets 204 and the other 409 `token_revoked`."""
    scheme, _, plain = request.headers.get("Authorization", "").partition(" ")
    row = ApiToken.find(plain.strip()) if scheme.lower() == "bearer" and plain.strip() else None
    if row is None:
        return api_error(401, "unauthorized", MESSAGES[401][1])
    if not row.revoke():
        db.session.rollback()
        return api_error(409, "token_revoked", "This token was revoked at the same moment.")
    record(row.user, "auth.token_revoked", target_type="api_token", target_id=row.id,
           after={"name": row.name, "prefix": row.prefix, "by": "its holder"},
           context=audit_context("api"))
    db.session.commit()
    return "", 204


__all__ = ["bp", "parse_json", "parse_query", "read_body", "require_token_user", "audit_context",
           "BaseModel", "api_error"]
