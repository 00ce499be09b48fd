"""gunicorn settings for Cancel Desk: `gunicorn -c gunicorn.conf.py 'app:create_app()'`.

Every value can be set from the environment (or a .env file in the working directory), so the
Procfile, `flask serve` (`make run`), the benchmark and a production machine all start the same
server.
"""
import multiprocessing
import os

from gunicorn import glogging

# Names at the top level of this file are read as settings: "config" is one of gunicorn's.
from config import load_env_files
from config.logging import AccessLogContext, make_handler

load_env_files()  # before anything below reads the environment; the environment wins


def _int(name, default):
    return int(os.environ.get(name) or default)


# Where to listen: GUNICORN_BIND wins ("127.0.0.1:5000", "unix:/run/cancel-desk.sock"), else
# HOST:PORT, else every interface on port 8000 (the proxy in front is the public face).
bind = [os.environ.get("GUNICORN_BIND")
        or f"{os.environ.get('HOST', '0.0.0.0')}:{_int('PORT', 8000)}"]

# Processes x threads: a request is mostly waiting on the database, so each process runs
# several threads. WEB_CONCURRENCY is the name platforms (Heroku, Render, Dokku) set.
workers = _int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8))
threads = _int("GUNICORN_THREADS", 4)
# A worker process that has not reported to the master for this long (its main loop stuck, not
# merely one slow request on one of its threads) is killed and replaced.
timeout = _int("GUNICORN_TIMEOUT", 30)
# On a restart or shutdown, requests in flight get this long to finish.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 25)
# Seconds an idle keep-alive connection stays open (gunicorn's default; a proxy in front
# should close its idle connections to us sooner, or retry on a closed one).
keepalive = _int("GUNICORN_KEEPALIVE", 2)
# Off by default: restart each process after this many requests (with jitter), to bound a slow
# leak should one appear. A restart briefly takes a process out of service.
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 0)

# The app reads X-Forwarded-* itself (werkzeug's ProxyFix, TRUSTED_PROXIES proxies deep);
# gunicorn believes X-Forwarded-Proto only in the same case, so that with TRUSTED_PROXIES=0 no
# client can pass itself off as having come over HTTPS. FORWARDED_ALLOW_IPS narrows it to the
# proxies' addresses.
_trusted_proxies = _int("TRUSTED_PROXIES", 0)
forwarded_allow_ips = (os.environ.get("FORWARDED_ALLOW_IPS")
                       or ("*" if _trusted_proxies > 0 else ""))

# Logs on stderr (errors) and stdout (one line per request), in the app's format (LOG_FORMAT):
# the access line names the request id the app answered with (X-Request-ID).
errorlog = "-"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = ('%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s '
                     'user_agent="%(a)s"')

# Recent gunicorn opens a control socket at one per-user path: a second instance (tests, the
# benchmark, a second checkout) would fight over it, and nothing here uses it.
control_socket_disable = True


class Logger(glogging.Logger):
    """gunicorn's own loggers in the app's format (LOG_FORMAT: JSON in production); a JSON
    access line also carries the request's fields (status, method, path, duration, address)."""

    def setup(self, cfg):
        super().setup(cfg)
        fmt = os.environ.get("LOG_FORMAT") or (
            "json" if os.environ.get("CANCEL_DESK_ENV") == "production" else "text")
        formatter = make_handler(fmt).formatter
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)
        if fmt == "json":
            for handler in self.access_log.handlers:
                handler.addFilter(AccessLogContext())


logger_class = Logger
