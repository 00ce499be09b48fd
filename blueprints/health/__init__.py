"""GET /healthz: the database, Redis and at least one live worker."""
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from models import db


from blueprints.api_common import responses as out
from blueprints.api_common.openapi import documented
bp = Blueprint("health", __name__)


def _check(probe):
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - any failure is a failing part, named in the answer
        return f"error: {type(exc).__name__}: {exc}"[:200]


def _database():
    db.session.execute(text("SELECT 1"))
    db.session.rollback()
    return "ok"


def _redis():
    current_app.extensions["redis"].ping()
    return "ok"


def _worker():
    replies = current_app.extensions["celery"].control.ping(
        timeout=current_app.config["WORKER_PING_TIMEOUT"])
    return "ok" if replies else "error: no worker answered"


@bp.get("/healthz")
@documented("Database, Redis and worker health", responses={200: out.Health, 503: out.Health},
            errors=(), public=True)
def healthz():
    parts = {"database": _check(_database), "redis": _check(_redis)}
    parts["worker"] = _check(_worker) if parts["redis"] == "ok" else "error: redis unavailable"
    healthy = all(value == "ok" for value in parts.values())
    return jsonify(parts), 200 if healthy else 503
