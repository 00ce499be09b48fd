"""Health for load balancers and people: /livez (the process), /readyz and /healthz (its parts).

Public answers name the failing part and nothing more; what failed and why goes to the log.
"""
import logging

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from blueprints.api_common import responses as out
from blueprints.api_common.openapi import documented
from models import db

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


class Live(out.Out):
    status: str


def _check(name, probe):
    try:
        return probe()
    except Exception:  # noqa: BLE001 - any failure is a failing part, named in the answer
        log.warning("health check: %s failed", name, exc_info=True)
        return "error"


def _database():
    db.session.execute(text("SELECT 1"))
    db.session.rollback()
    return "ok"


def _redis():
    current_app.extensions["redis"].ping()
    return "ok"


def _worker():
    # limit=1: answer as soon as one worker replies instead of waiting out the timeout.
    replies = current_app.extensions["celery"].control.ping(
        timeout=current_app.config["WORKER_PING_TIMEOUT"], limit=1)
    if not replies:
        log.warning("health check: no worker answered within %ss",
                    current_app.config["WORKER_PING_TIMEOUT"])
    return "ok" if replies else "error: no worker answered"


def _parts():
    parts = {"database": _check("database", _database), "redis": _check("redis", _redis)}
    parts["worker"] = (_check("worker", _worker) if parts["redis"] == "ok"
                       else "error: redis unavailable")
    return parts, all(value == "ok" for value in parts.values())


@bp.get("/livez")
@documented("The process is up (no database or Redis call)", responses={200: Live},
            errors=(), public=True)
def livez():
    """For a load balancer's or supervisor's liveness probe: 200 whenever this process answers.
    A failing database or Redis must not get every web process restarted."""
    return jsonify(status="ok")


@bp.get("/readyz")
@documented("Ready to serve: database, Redis and a worker", responses={200: out.Health,
                                                                      503: out.Health},
            errors=(), public=True)
def readyz():
    """For a load balancer's readiness probe: 503 while the database, Redis or every worker is
    unreachable, naming which (each part is "ok" or starts with "error")."""
    parts, ready = _parts()
    return jsonify(parts), 200 if ready else 503


@bp.get("/healthz")
@documented("Database, Redis and worker health", responses={200: out.Health, 503: out.Health},
            errors=(), public=True)
def healthz():
    parts, healthy = _parts()
    return jsonify(parts), 200 if healthy else 503
