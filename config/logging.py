"""Logging and error reporting, set up once per process by whichever entry point runs first.

Every record goes through one handler on the root logger, as one JSON object per line
(LOG_FORMAT=json, production's default) or as a line of text (development and tests), with what
is known about where it came from: the request id, the signed-in user and the order of a web
request; the task id and name in a worker. gunicorn's own loggers (its errors and its access
log) get the same handler's formatter from gunicorn.conf.py.
"""
import json
import logging
import sys
from datetime import datetime, timezone

# The LogRecord attributes every record has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CONTEXT = ("request_id", "user_id", "order_id", "task_id", "task_name")
_HANDLER_NAME = "cancel-desk"


def request_context():
    """request_id, user_id and order_id of the web request being served, where known."""
    from flask import g, has_request_context, request

    if not has_request_context():
        return {}
    found = {"request_id": g.get("request_id")}
    # Only a user Flask-Login has already loaded for this request: a log line never queries.
    # Its row id, never get_id(): that is the sign-in's token, a secret.
    user = g.get("_login_user")
    if user is not None and getattr(user, "is_authenticated", False):
        found["user_id"] = getattr(user, "id", None)
    order_id = (request.view_args or {}).get("order_id")
    if order_id is not None:
        found["order_id"] = order_id
    return found


def task_context():
    """task_id and task_name of the Celery task running in this thread, in a worker."""
    if "celery" not in sys.modules:  # the web never needs to import Celery for a log line
        return {}
    from celery import current_task

    task = current_task
    if not task or task.request.id is None:
        return {}
    return {"task_id": task.request.id, "task_name": task.name}


class ContextFilter(logging.Filter):
    """Stamps every record with the context fields (None where unknown); `extra=` wins."""

    def filter(self, record):
        try:
            found = {**task_context(), **request_context()}
        except Exception:  # noqa: BLE001 - a log line must never fail for want of context
            found = {}
        for key in _CONTEXT:
            if getattr(record, key, None) is None:
                setattr(record, key, found.get(key))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, context, then extras."""

    def format(self, record):
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
                                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _CONTEXT and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The same fields on one readable line."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record):
        line = super().format(record)
        context = " ".join(f"{key}={getattr(record, key)}" for key in _CONTEXT
                           if getattr(record, key, None) is not None)
        if not context:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


def make_handler(fmt, stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(fmt="text", level="INFO"):
    """Install the handler on the root logger, once per process (later calls change nothing)."""
    root = logging.getLogger()
    if any(handler.get_name() == _HANDLER_NAME for handler in root.handlers):
        return False
    handler = make_handler(fmt)
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return True


def init_sentry(dsn, environment):
    """Report errors to Sentry, with the Flask and Celery integrations. Optional: called only
    when SENTRY_DSN is set, so sentry-sdk is never imported otherwise."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    if sentry_sdk.get_client().is_active():  # once per process, like the logging
        return
    sentry_sdk.init(dsn=dsn, environment=environment, send_default_pii=False,
                    integrations=[FlaskIntegration(), CeleryIntegration()])


class AccessLogContext(logging.Filter):
    """For gunicorn's access log in JSON (gunicorn.conf.py): gunicorn passes the request's
    fields in the record's args; the request id is the X-Request-ID the app answered with."""

    FIELDS = {"request_id": "{x-request-id}o", "status": "s", "method": "m", "path": "U",
              "duration_ms": "M", "remote_addr": "h"}

    def filter(self, record):
        if isinstance(record.args, dict):
            for field, atom in self.FIELDS.items():
                value = record.args.get(atom)
                if value not in (None, "-") and getattr(record, field, None) is None:
                    setattr(record, field, value)
        return True
