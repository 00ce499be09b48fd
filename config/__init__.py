"""Configuration classes; every value can be set from the environment."""
import os
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


def database_url(value):
    """Normalise a DATABASE_URL to the driver we ship (psycopg 3 for PostgreSQL)."""
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://"):]
    if value.startswith("postgresql://"):
        value = "postgresql+psycopg://" + value[len("postgresql://"):]
    return value


def env_bool(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class Base:
    """Defaults shared by every environment. Read at class creation through from_env()."""

    DEBUG = False
    TESTING = False
    DEMO_MODE = False
    SECRET_KEY = None
    SQLALCHEMY_DATABASE_URI = None
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    REDIS_URL = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SECURE = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    # "Keep me signed in": how long the remember cookie (and the sign-in it points at) lasts.
    REMEMBER_COOKIE_DURATION = timedelta(days=14)
    # A sign-in without "Keep me signed in" ends this long after it began.
    PERMANENT_SESSION_LIFETIME = timedelta(hours=12)
    # Sign-in throttling (cancellation/signin.py): failures on one account from unrecognised
    # devices, from one address, and on one known device, each within LOGIN_LOCKOUT_SECONDS;
    # LOGIN_FREE_ATTEMPTS failures from one address on one account before each further try
    # waits twice as long as the last (up to LOGIN_MAX_DELAY_SECONDS).
    LOGIN_MAX_FAILURES_PER_ACCOUNT = 5
    LOGIN_MAX_FAILURES_PER_IP = 20
    LOGIN_MAX_FAILURES_PER_DEVICE = 10
    LOGIN_FREE_ATTEMPTS = 3
    LOGIN_MAX_DELAY_SECONDS = 900
    LOGIN_LOCKOUT_SECONDS = 900
    # How long a browser stays a known device of the accounts that signed in on it.
    DEVICE_COOKIE_DAYS = 180
    WTF_CSRF_TIME_LIMIT = None
    # The largest request body any route reads, chunked or not (bytes): past it, 413.
    MAX_CONTENT_LENGTH = 1024 * 1024
    FLASK_ADMIN_SWATCH = "default"
    ORDERS_PER_PAGE = 25
    # A partial cancellation of more lines than this runs in a worker (a CancelJob, 202).
    PARTIAL_SYNC_MAX_LINES = 50
    # Outbox delivery: retries with exponential back-off, then manual handling.
    DELIVERY_MAX_ATTEMPTS = 5
    DELIVERY_BACKOFF_SECONDS = 30.0
    # Outbox rows still pending after this long are re-dispatched by the sweep.
    OUTBOX_STALE_SECONDS = 60.0
    OUTBOX_SWEEP_INTERVAL = 30.0
    WORKER_PING_TIMEOUT = 1.5
    IDEMPOTENCY_PURGE_INTERVAL = 3600.0
    # Where staff reach the panel, for links in e-mails (approval requests); empty: relative.
    PUBLIC_BASE_URL = ""
    # API v2 rate limit per user (Flask-Limiter syntax); the runbook says wait 60 s on a 429.
    API_V2_RATE_LIMIT = "120 per minute"
    API_TOKEN_TTL_DAYS = 90
    # Bulk jobs: orders per header task of the chord, the most one job may take, and how long a
    # job may make no progress before the watchdog re-dispatches its pending items.
    BULK_BATCH_SIZE = 100
    BULK_MAX_ORDERS = 20000
    BULK_STALL_SECONDS = 120.0
    BULK_WATCHDOG_INTERVAL = 30.0
    # How many proxies in front of the app set X-Forwarded-For/-Proto/-Host/-Prefix; the client
    # address is taken that many hops back. 0 (no proxy): the headers are ignored, since anyone
    # could send them.
    TRUSTED_PROXIES = 0
    # Strict-Transport-Security value; set in production only (a development server on plain
    # http://127.0.0.1 must not teach the browser to refuse http for that host).
    STRICT_TRANSPORT_SECURITY = None
    # Logs: "json" (one JSON object per line, for a log collector) or "text" (for reading).
    LOG_FORMAT = "text"
    LOG_LEVEL = "INFO"
    # Optional error reporting: errors and tracebacks go to Sentry when a DSN is set.
    SENTRY_DSN = None
    # Celery time limits for one task, in seconds. The longest task is a bulk batch of
    # BULK_BATCH_SIZE orders: about 0.2 s for 100 orders in one transaction and about 7 s when it
    # falls back to one transaction per order (on 2 cores); the limits leave room for a loaded
    # machine and a slow database. Past the soft limit the task's transaction is rolled back
    # (the watchdog and the sweeps re-dispatch what it left pending); the hard one kills it.
    TASK_SOFT_TIME_LIMIT = 300.0
    TASK_TIME_LIMIT = 360.0
    # The payment processor refunds to card and debit go to (cancellation/processor.py): its
    # base URL and shared signing key (`make run` and the tests start a sandbox one and set
    # both), and how long to wait to connect and then for an answer. An answer that does not
    # come in time is looked up by its idempotency key, never paid again.
    PAYMENT_PROCESSOR_URL = None
    PAYMENT_PROCESSOR_KEY = None
    PAYMENT_PROCESSOR_CONNECT_TIMEOUT = 2.0
    PAYMENT_PROCESSOR_TIMEOUT = 5.0

    @classmethod
    def from_env(cls):
        """Return a dict of settings: class defaults overridden by the environment."""
        settings = {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
        if os.environ.get("SECRET_KEY"):
            settings["SECRET_KEY"] = os.environ["SECRET_KEY"]
        if os.environ.get("DATABASE_URL"):
            settings["SQLALCHEMY_DATABASE_URI"] = database_url(os.environ["DATABASE_URL"])
        if os.environ.get("REDIS_URL"):
            settings["REDIS_URL"] = os.environ["REDIS_URL"]
        for key in ("DELIVERY_MAX_ATTEMPTS", "ORDERS_PER_PAGE", "BULK_BATCH_SIZE",
                    "BULK_MAX_ORDERS", "TRUSTED_PROXIES", "API_TOKEN_TTL_DAYS",
                    "LOGIN_MAX_FAILURES_PER_ACCOUNT", "LOGIN_MAX_FAILURES_PER_IP",
                    "LOGIN_MAX_FAILURES_PER_DEVICE", "LOGIN_FREE_ATTEMPTS",
                    "LOGIN_MAX_DELAY_SECONDS", "LOGIN_LOCKOUT_SECONDS", "DEVICE_COOKIE_DAYS"):
            if os.environ.get(key):
                settings[key] = int(os.environ[key])
        for key in ("DELIVERY_BACKOFF_SECONDS", "OUTBOX_STALE_SECONDS", "OUTBOX_SWEEP_INTERVAL",
                    "BULK_STALL_SECONDS", "BULK_WATCHDOG_INTERVAL", "TASK_SOFT_TIME_LIMIT",
                    "TASK_TIME_LIMIT", "PAYMENT_PROCESSOR_CONNECT_TIMEOUT",
                    "PAYMENT_PROCESSOR_TIMEOUT"):
            if os.environ.get(key):
                settings[key] = float(os.environ[key])
        for key in ("PAYMENT_PROCESSOR_URL", "PAYMENT_PROCESSOR_KEY"):
            if os.environ.get(key):
                settings[key] = os.environ[key]
        if os.environ.get("PUBLIC_BASE_URL"):
            settings["PUBLIC_BASE_URL"] = os.environ["PUBLIC_BASE_URL"]
        if os.environ.get("MAX_CONTENT_LENGTH"):
            settings["MAX_CONTENT_LENGTH"] = int(os.environ["MAX_CONTENT_LENGTH"])
        if os.environ.get("API_V2_RATE_LIMIT"):
            settings["API_V2_RATE_LIMIT"] = os.environ["API_V2_RATE_LIMIT"]
        for key in ("LOG_FORMAT", "LOG_LEVEL", "SENTRY_DSN", "STRICT_TRANSPORT_SECURITY"):
            if os.environ.get(key):
                settings[key] = os.environ[key]
        if os.environ.get("REMEMBER_COOKIE_DAYS"):
            settings["REMEMBER_COOKIE_DURATION"] = timedelta(
                days=float(os.environ["REMEMBER_COOKIE_DAYS"]))
        if os.environ.get("SESSION_HOURS"):
            settings["PERMANENT_SESSION_LIFETIME"] = timedelta(
                hours=float(os.environ["SESSION_HOURS"]))
        settings["DEMO_MODE"] = env_bool("DEMO_MODE", settings["DEMO_MODE"])
        return settings


class Development(Base):
    """`make run`: embedded SQLite and Redis, demo data, cookies without the Secure flag."""

    DEBUG = False
    DEMO_MODE = True
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    SQLALCHEMY_DATABASE_URI = f"sqlite:///{INSTANCE / 'cancel-desk.sqlite'}"
    SECRET_KEY = "dev-only-secret-key-change-me"


class Testing(Development):
    TESTING = True
    DELIVERY_BACKOFF_SECONDS = 0.2
    OUTBOX_STALE_SECONDS = 2.0
    OUTBOX_SWEEP_INTERVAL = 1.0
    BULK_BATCH_SIZE = 50
    BULK_STALL_SECONDS = 3.0
    BULK_WATCHDOG_INTERVAL = 1.0
    SECRET_KEY = "testing-secret-key"
    # Short enough that the tests of a lost answer do not wait long for it.
    PAYMENT_PROCESSOR_TIMEOUT = 1.5


class Production(Base):
    STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"
    LOG_FORMAT = "json"

    @classmethod
    def from_env(cls):
        settings = super().from_env()
        if not settings["SECRET_KEY"]:
            raise RuntimeError("SECRET_KEY must be set in production")
        if not settings["SQLALCHEMY_DATABASE_URI"]:
            raise RuntimeError("DATABASE_URL must be set in production")
        if not settings["REDIS_URL"]:
            raise RuntimeError("REDIS_URL must be set in production")
        return settings


CONFIGS = {"development": Development, "testing": Testing, "production": Production}


def load_env_files():
    """Put the variables of a .env file (the nearest one from the working directory up, as the
    `flask` command finds it) into the environment; variables already set win.

    For the entry points that are not the `flask` command, which does this by itself: gunicorn
    (gunicorn.conf.py) and the Celery worker and beat (tasks/worker.py)."""
    from dotenv import find_dotenv, load_dotenv

    path = find_dotenv(".env", usecwd=True)
    if path:
        load_dotenv(path, override=False)


def load(name=None):
    """Settings for the named environment (CANCEL_DESK_ENV, default development)."""
    name = name or os.environ.get("CANCEL_DESK_ENV", "development")
    try:
        config = CONFIGS[name]
    except KeyError:
        raise RuntimeError(
            f"unknown CANCEL_DESK_ENV {name!r}; use one of {sorted(CONFIGS)}") from None
    return config.from_env()
