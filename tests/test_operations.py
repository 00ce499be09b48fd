"""Operations: liveness and readiness, JSON logs from gunicorn and the workers, task failures
logged, Celery limits and events, optional Sentry, the process files."""
import gzip
import http.server
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import ROOT, Worker, free_port, login, wait_for
from helpers import email_of


@pytest.fixture
def build_app(app, database_url, redis_url):
    from app import create_app

    def build(**overrides):
        settings = {"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url,
                    "WORKER_PING_TIMEOUT": 0.5, **overrides}
        return create_app(settings, env="testing")

    yield build
    app.extensions["celery"].set_default()  # the session's Celery app stays the default


def _unreachable_database(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'gone.sqlite'}"
    return f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/gone?connect_timeout=2"


# --- health -------------------------------------------------------------------------------------

def test_livez_answers_while_database_and_redis_are_down(build_app, database_url, tmp_path):
    broken = build_app(SQLALCHEMY_DATABASE_URI=_unreachable_database(database_url, tmp_path),
                       REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = broken.test_client().get("/livez")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_names_failing_parts_without_exception_text(build_app, database_url, tmp_path,
                                                           caplog):
    broken = build_app(SQLALCHEMY_DATABASE_URI=_unreachable_database(database_url, tmp_path),
                       REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = broken.test_client()
    with caplog.at_level(logging.WARNING, logger="blueprints.health"):
        for path in ("/readyz", "/healthz"):
            response = client.get(path)
            assert response.status_code == 503
            assert response.json == {"database": "error", "redis": "error",
                                     "worker": "error: redis unavailable"}
    # What failed, and why, is in the log instead.
    logged = {record.getMessage(): record for record in caplog.records}
    assert logged["health check: redis failed"].exc_info[0].__name__ == "ConnectionError"
    assert logged["health check: database failed"].exc_info is not None


def test_readyz_is_ready_with_database_redis_and_a_worker(client, worker):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json == {"database": "ok", "redis": "ok", "worker": "ok"}


def test_health_routes_are_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").json["paths"]
    for path in ("/livez", "/readyz", "/healthz"):
        assert "get" in paths[path], path
    assert set(paths["/readyz"]["get"]["responses"]) >= {"200", "503"}


# --- logs ---------------------------------------------------------------------------------------

def test_log_lines_carry_request_user_and_order(build_app, factory):
    """A JSON line written during a signed-in request names its request, user and order."""
    from config.logging import make_handler

    probe_app = build_app()
    probe_log = logging.getLogger("tests.probe")

    @probe_app.get("/orders/<int:order_id>/log-probe")
    def log_probe(order_id):
        from flask_login import current_user

        assert current_user.is_authenticated  # as every protected view checks first
        probe_log.warning("probing order %s", order_id)
        return "ok"

    stream = io.StringIO()
    handler = make_handler("json", stream)
    probe_log.addHandler(handler)
    try:
        user_id = factory.user("admin")
        client = probe_app.test_client()
        login(client, email_of(probe_app, user_id))
        response = client.get("/orders/4242/log-probe", headers={"X-Request-ID": "probe-req-1"})
        assert response.status_code == 200
    finally:
        probe_log.removeHandler(handler)
    entry = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert entry["message"] == "probing order 4242"
    assert entry["level"] == "WARNING" and entry["logger"] == "tests.probe"
    assert entry["request_id"] == "probe-req-1"
    assert entry["order_id"] == 4242
    assert entry["user_id"] == user_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])


def test_logging_is_configured_once_per_process(database_url, redis_url):
    """Building the app twice (as the flask command and a test can) leaves one handler, and
    the factory no longer calls logging.basicConfig."""
    script = ("import logging, sys\n"
              "from app import create_app, create_worker_app\n"
              "settings = {'SQLALCHEMY_DATABASE_URI': sys.argv[1], 'REDIS_URL': sys.argv[2]}\n"
              "create_app(settings, env='testing'); create_worker_app(settings, env='testing')\n"
              "print([h.get_name() for h in logging.getLogger().handlers])\n"
              "logging.getLogger('probe').warning('hello')\n")
    result = subprocess.run([sys.executable, "-c", script, database_url, redis_url], cwd=ROOT,
                            env=dict(os.environ, LOG_FORMAT="json"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['cancel-desk']"
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello" and line["logger"] == "probe"


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_gunicorn_conf_env_file_and_json_access_log(worker_env, tmp_path):
    """gunicorn started from the repository's gunicorn.conf.py in a folder whose .env sets
    LOG_FORMAT=json: its own lines, the access lines and the app's lines are all JSON; the
    access line and the app's line name the request id."""
    port = free_port()
    (tmp_path / ".env").write_text("LOG_FORMAT=json\nWEB_CONCURRENCY=1\n")
    env = {key: value for key, value in worker_env.items()
           if key not in ("LOG_FORMAT", "WEB_CONCURRENCY")}
    # Redis unreachable: /readyz then logs why (with the request id) and answers 503.
    env.update(HOST="127.0.0.1", PORT=str(port), GUNICORN_THREADS="2",
               REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PYTHONPATH=str(ROOT))
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
             "app:create_app()"], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
    try:
        def live():
            assert server.poll() is None, err.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(live, timeout=60, interval=0.3, message="gunicorn to answer /livez")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz",
                                         headers={"X-Request-ID": "ops-e2e-ready"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=20)
        assert answer.value.code == 503
        body = json.loads(answer.value.read())
        assert body == {"database": "ok", "redis": "error", "worker": "error: redis unavailable"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    lines = _json_lines(out.read_text()) + _json_lines(err.read_text())
    assert any(line["logger"] == "gunicorn.error" and "Starting gunicorn" in line["message"]
               for line in lines), lines
    access = [line for line in lines if line["logger"] == "gunicorn.access"
              and line.get("request_id") == "ops-e2e-ready"]
    assert access and access[0]["status"] == "503" and access[0]["path"] == "/readyz", lines
    app_line = [line for line in lines if line["logger"] == "blueprints.health"
                and line.get("request_id") == "ops-e2e-ready"]
    assert app_line and "ConnectionError" in app_line[0]["exception"], lines
    # Every line on stderr is JSON (no stray text format from a second logging set-up).
    stray = [line for line in err.read_text().splitlines()
             if line.strip() and not line.startswith("{")]
    assert not stray, stray


def test_worker_logs_json_with_task_and_logs_failed_tasks(app, worker_env, tmp_path):
    """A worker on a queue of its own, started in a folder whose .env asks for JSON logs: a task
    that fails is logged by the task_failure handler with its name, id, arguments and
    exception, as JSON with the task's id and name."""
    queue = f"ops-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    # JSON asked for by a .env file in the worker's working directory, as in production.
    (tmp_path / ".env").write_text("LOG_FORMAT=json\n")
    env = {key: value for key, value in worker_env.items() if key != "LOG_FORMAT"}
    env["PYTHONPATH"] = str(ROOT)
    own = Worker(env, tmp_path)
    own.log = open(own.log_path, "ab")
    own.process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", "-Q", queue,
         "--concurrency", "1", "--loglevel", "INFO", "--hostname", f"{queue}@%h"],
        cwd=tmp_path, env=env, stdout=own.log, stderr=subprocess.STDOUT)
    try:
        celery = app.extensions["celery"]
        wait_for(lambda: own.process.poll() is not None or
                 any(name.startswith(queue) for reply in celery.control.ping(timeout=1.0)
                     for name in reply),
                 timeout=60, message="the worker to start")
        assert own.process.poll() is None, own.log_tail()
        # Three arguments to a task that takes one: it fails with a TypeError in the worker.
        sent = celery.send_task("cancel_desk.deliver_refund", args=[101, 202, 303], queue=queue)

        def failure_logged():
            for line in _json_lines(own.log_path.read_text(errors="replace")):
                if line["logger"] == "tasks" and line.get("task_id") == sent.id:
                    return line
            return None

        line = wait_for(failure_logged, timeout=30, message="the task failure to be logged")
    finally:
        own.stop()
    assert line["level"] == "ERROR"
    assert line["task_name"] == "cancel_desk.deliver_refund"
    assert "TypeError" in line["message"] and "101, 202, 303" in line["message"]
    assert "TypeError" in line["exception"]


def test_celery_limits_and_events(app):
    conf = app.extensions["celery"].conf
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert conf.task_soft_time_limit == app.config["TASK_SOFT_TIME_LIMIT"]
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True


# --- Sentry -------------------------------------------------------------------------------------

class _Collector(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, body.decode("utf-8", "replace")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_sentry_reports_errors_when_a_dsn_is_set(database_url, redis_url):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = ("import logging, sys, sentry_sdk\n"
              "from app import create_app\n"
              "create_app({'SQLALCHEMY_DATABASE_URI': sys.argv[1], 'REDIS_URL': sys.argv[2]},"
              " env='testing')\n"
              "names = sorted(sentry_sdk.get_client().integrations)\n"
              "print('flask' in names, 'celery' in names)\n"
              "logging.getLogger('probe').error('sentry probe %s', 42)\n"
              "sentry_sdk.flush(10)\n")
    try:
        dsn = f"http://public@127.0.0.1:{server.server_port}/1"
        result = subprocess.run([sys.executable, "-c", script, database_url, redis_url],
                                cwd=ROOT, env=dict(os.environ, SENTRY_DSN=dsn),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True", "True"]
        assert any("sentry probe 42" in body for _path, body in _Collector.received), \
            _Collector.received
    finally:
        server.shutdown()
        server.server_close()


def test_sentry_is_not_even_imported_without_a_dsn(database_url, redis_url):
    script = ("import sys\nfrom app import create_app, create_worker_app\n"
              "settings = {'SQLALCHEMY_DATABASE_URI': sys.argv[1], 'REDIS_URL': sys.argv[2]}\n"
              "create_worker_app(settings, env='testing')\n"
              "print('sentry_sdk' in sys.modules)\n")
    env = {key: value for key, value in os.environ.items() if key != "SENTRY_DSN"}
    result = subprocess.run([sys.executable, "-c", script, database_url, redis_url], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- process files ------------------------------------------------------------------------------

def test_procfile_names_web_worker_and_one_beat():
    entries = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert "gunicorn -c gunicorn.conf.py 'app:create_app()'" in entries["web"]
    assert "celery -A tasks.worker worker" in entries["worker"]
    assert "-B" not in entries["worker"].split()
    assert "celery -A tasks.worker beat" in entries["beat"]


def test_serve_starts_gunicorn_from_the_conf_file(monkeypatch):
    from commands.serve import gunicorn_argv

    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    argv = gunicorn_argv(5123)
    assert argv[argv.index("-c") + 1] == str(ROOT / "gunicorn.conf.py")
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:5123"
    assert argv[-1] == "app:create_app()"
