"""Application factories: the web app (create_app) and the Celery worker's app (create_worker_app).

Both are built on one core: configuration, database, Redis and Celery with its tasks. A worker
runs the same domain code but serves no page, and whatever it imports sits in the memory of each
of its processes (the main one and every pool process), so the web-only parts (blueprints,
Flask-Admin, Flask-Limiter, Flask-Migrate with Alembic, Flask-WTF with WTForms) are imported
inside create_app only.
"""
import os
import re
import uuid

import redis
from flask import Flask, g, request
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

import config
from config.logging import configure_logging, init_sentry
from models import db

# What a client may choose as its X-Request-ID: it is echoed in headers, written to the audit
# log and to log lines, and may end up in a spreadsheet; anything else gets a generated id.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# No inline script or style anywhere in our templates (data for scripts travels in
# <script type="application/json"> blocks, which are never executed), so none is allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'self'")
# Flask-Admin's own templates put inline event handlers (onclick="return confirm(...)") and
# inline scripts on its pages: under its prefix, and only there, inline script is allowed
# (admins only; its pages need no inline style: tests/test_browser_csp.py).
ADMIN_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "script-src 'self'", "script-src 'self' 'unsafe-inline'")
ADMIN_PREFIX = "/admin"


def create_app(overrides=None, env=None):
    """The web app. `env` picks the config class; `overrides` (a dict) wins over everything."""
    from flask_migrate import Migrate
    from flask_wtf.csrf import CSRFProtect

    app = _create_core_app(overrides, env)
    Migrate(app, db, directory=str(config.ROOT / "migrations"), render_as_batch=True)
    # One per app, found as app.extensions["csrf"]: its list of exempt blueprints is this app's.
    CSRFProtect(app)

    # Behind N proxies the client's address, scheme and host are in their X-Forwarded-* headers;
    # with none trusted those headers are ignored (anyone could send them).
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies,
                                x_prefix=proxies)

    # Before any route is added: every <int:...> in a URL is a database id.
    app.url_map.converters["int"] = DatabaseId

    from blueprints.auth import init_auth
    init_auth(app)

    from blueprints import register_blueprints
    register_blueprints(app)

    from blueprints.admin import init_admin
    init_admin(app)

    from commands import register as register_commands
    register_commands(app)

    _request_ids(app)
    _security_headers(app)
    _end_reads_with_commit(app)
    return app


def create_worker_app(overrides=None, env=None):
    """The app a Celery worker runs (tasks/worker.py): the core alone, same arguments."""
    return _create_core_app(overrides, env)


def _create_core_app(overrides, env):
    """Config, database, Redis and Celery: what the web and the workers both need."""
    app = Flask(__name__, instance_path=str(config.INSTANCE), instance_relative_config=False)
    app.config.update(config.load(env))
    app.config.update(overrides or {})
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("SECRET_KEY is not set")
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        raise RuntimeError("DATABASE_URL is not set")
    app.config.setdefault("REDIS_URL", None)
    app.config["REDIS_URL"] = app.config["REDIS_URL"] or "redis://127.0.0.1:6379/0"
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        config.INSTANCE.mkdir(parents=True, exist_ok=True)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}
    configure_logging(app.config.get("LOG_FORMAT", "text"), app.config.get("LOG_LEVEL", "INFO"))
    if app.config.get("SENTRY_DSN"):
        init_sentry(app.config["SENTRY_DSN"],
                    environment=env or os.environ.get("CANCEL_DESK_ENV", "development"))

    db.init_app(app)
    app.extensions["redis"] = redis.Redis.from_url(app.config["REDIS_URL"],
                                                   socket_timeout=5, socket_connect_timeout=2)
    with app.app_context():
        _tune_sqlite(db.engine)

    from tasks import celery_init_app
    celery_init_app(app)
    return app


class DatabaseId(IntegerConverter):
    """<int:...>: an id no database integer can hold is simply not found (404), never a 500."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def _tune_sqlite(engine):
    """WAL and a busy timeout let the web workers and Celery share one SQLite file."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _request_ids(app):
    @app.before_request
    def _assign_request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


def _end_reads_with_commit(app):
    """A request whose open transaction only read ends it with COMMIT, not ROLLBACK.

    The two are the same to the data (nothing was written; a read-only COMMIT writes no WAL),
    but psycopg forgets every statement it prepared on a connection when that connection rolls
    back — and each request's session ends in a rollback when its last statements were reads
    (an answer read after the commit) — so without this no statement a request runs is ever
    prepared: PostgreSQL parses and plans each one every time. A transaction that wrote
    anything, or a request that failed, ends as before (rolled back by the session's removal).
    """
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "begin")
    def _began(connection):
        connection.info["cancel_desk.wrote"] = False

    @event.listens_for(engine, "before_cursor_execute")
    def _note_write(connection, _cursor, statement, _parameters, _context, _executemany):
        if not statement.lstrip()[:6].upper() == "SELECT":
            connection.info["cancel_desk.wrote"] = True

    # Registered after Flask-SQLAlchemy's own teardown, so it runs before the session's removal.
    @app.teardown_appcontext
    def _commit_reads(exc):
        if exc is not None or not db.session.registry.has():
            return
        session = db.session()
        if not session.in_transaction():
            return
        expiring = session.expire_on_commit
        try:
            if session.connection().info.get("cancel_desk.wrote", True) is False:
                # Nothing changed: what the session's objects hold stays readable after the
                # context, exactly as after the rollback this replaces.
                session.expire_on_commit = False
                session.commit()
        except Exception:  # noqa: BLE001 - the removal that follows rolls back as before
            app.logger.warning("ending a read-only transaction failed", exc_info=True)
        finally:
            session.expire_on_commit = expiring


def _security_headers(app):
    hsts = app.config.get("STRICT_TRANSPORT_SECURITY")

    @app.after_request
    def _add_security_headers(response):
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        headers.setdefault("Referrer-Policy", "same-origin")
        in_admin = request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/")
        headers.setdefault("Content-Security-Policy",
                           ADMIN_CONTENT_SECURITY_POLICY if in_admin else CONTENT_SECURITY_POLICY)
        # Pages and API answers carry customer data: no browser or proxy keeps a copy. Static
        # assets (every blueprint's "static" endpoint) may be cached.
        if not (request.endpoint or "").endswith("static"):
            headers["Cache-Control"] = "no-store"
        if hsts:
            headers.setdefault("Strict-Transport-Security", hsts)
        return response
