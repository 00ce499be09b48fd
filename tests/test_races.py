"""State transitions under real concurrency: each one is a compare-and-set that one caller wins.

The competing calls are fired at once — threads, each with its own app context or test client,
released together by a barrier — and the test asserts what a user sees (one 2xx, the others 409
with their code, or the worker's quiet "nothing_to_do") and that every effect happened once:
one run, one retry job, one delivery, one payout, an audit chain that still verifies.
Deliveries (refunds, notices) are in tests/test_races_delivery.py.
"""
import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cancellation import CancelRequest
from models import (
    AuditEvent,
    BulkJob,
    BulkJobItem,
    CancelJob,
    Cancellation,
    IdempotencyKey,
    Order,
    Refund,
    Setting,
    User,
    db,
    utcnow,
)

from conftest import bearer, cancel, v2_headers, wait_for
from helpers import answer, chain_ok, count, in_app, queued_cancels, race

# --- cancel jobs: two workers given the same job -------------------------------------------

def test_two_workers_given_one_cancel_job_run_it_once(app, factory, monkeypatch):
    """A redelivered job reaching a second worker while the first runs it: one claim wins (was
    a race: both read `processing` and both ran the cancel)."""
    from cancellation import jobs

    shop = factory.shop(role="admin")
    with app.app_context():
        job = CancelJob(order_id=shop["order_id"], user_id=shop["user_id"], source="api_v2",
                        payload=CancelRequest(reason="inventory_issues").to_payload())
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    runs = []
    real_cancel = jobs.cancel_order

    def slow_cancel(*args, **kwargs):  # the claim is taken; the cancel itself takes a while
        runs.append(threading.get_ident())
        time.sleep(0.3)
        return real_cancel(*args, **kwargs)

    monkeypatch.setattr(jobs, "cancel_order", slow_cancel)
    results = race(in_app(app, jobs.run_cancel_job, job_id),
                   in_app(app, jobs.run_cancel_job, job_id))

    assert sorted(map(str, results)) == ["completed", "nothing_to_do"], results
    assert len(runs) == 1
    with app.app_context():
        job = db.session.get(CancelJob, job_id)
        assert (job.status, job.attempts) == ("completed", 1)
    assert count(app, Cancellation, Cancellation.order_id == shop["order_id"]) == 1
    assert count(app, AuditEvent, AuditEvent.order_id == shop["order_id"],
                 AuditEvent.action == "order.cancelled") == 1
    chain_ok(app)


def test_a_claimed_job_whose_worker_died_is_taken_over_by_the_sweep(app, factory):
    """The claim is not a dead end: a job still processing long after its claim runs again."""
    from cancellation import jobs

    shop = factory.shop(role="admin")
    long_ago = utcnow() - timedelta(seconds=app.config["OUTBOX_STALE_SECONDS"] + 5)
    with app.app_context():
        job = CancelJob(order_id=shop["order_id"], user_id=shop["user_id"], source="api_v2",
                        payload=CancelRequest(reason="inventory_issues").to_payload(),
                        attempts=1, created_at=long_ago)  # claimed, then its worker died
        db.session.add(job)
        db.session.commit()
        # A live worker of the session runs the same sweep: it may take the job over too, and
        # then one of the two runs it (the other's claim loses), never both.
        ran = jobs.run_cancel_job(job.id)
        assert ran in ("completed", "processing", "nothing_to_do"), ran
        job_id = job.id

    def finished():
        with app.app_context():
            job = db.session.get(CancelJob, job_id)
            return job if job.status == "completed" else None

    job = wait_for(finished, timeout=30, message="the job taken over to complete")
    assert job.attempts >= 2
    assert count(app, Cancellation, Cancellation.order_id == shop["order_id"]) == 1


# --- bulk jobs: "Retry failed" twice at once -----------------------------------------------

def finished_bulk_job(app, factory, shop, failed=2):
    """A finished bulk job of `shop`'s user with `failed` failed orders (and one succeeded)."""
    orders = [factory.order(shop["store_id"], [(shop["product_id"], 1, 1000)])
              for _ in range(failed)]
    with app.app_context():
        now = utcnow()
        job = BulkJob(user_id=shop["user_id"], reason="inventory_issues", total=failed + 1,
                      status="completed_with_errors", succeeded=1, failed=failed,
                      source="api_v1", created_at=now, started_at=now, finished_at=now)
        db.session.add(job)
        db.session.flush()
        db.session.add(BulkJobItem(job_id=job.id, order_id=shop["order_id"], status="succeeded",
                                   attempts=1, finished_at=now))
        for order_id in orders:
            db.session.add(BulkJobItem(job_id=job.id, order_id=order_id, status="failed",
                                       error_code="billing_hold", error_message="held",
                                       attempts=1, finished_at=now))
        db.session.commit()
        return job.id, orders


def retries_of(app, job_id):
    with app.app_context():
        return db.session.scalars(select(BulkJob.id).where(BulkJob.retry_of_id == job_id)).all()


def test_retry_failed_fired_twice_at_once_queues_one_retry(app, factory):
    """Was a race: both clicks read the failures and each submitted a retry job."""
    shop = factory.shop(role="admin")
    job_id, _orders = finished_bulk_job(app, factory, shop)

    def click():
        return answer(app.test_client().post(f"/api/v1/bulk_jobs/{job_id}/retry",
                                             headers=bearer(shop["token"])))

    results = race(click, click)

    assert sorted(results) == [(202, None), (409, "bulk_retry_in_progress")], results
    assert len(retries_of(app, job_id)) == 1
    assert count(app, AuditEvent, AuditEvent.action == "bulk.submitted",
                 AuditEvent.target_id.in_([str(i) for i in retries_of(app, job_id)])) == 1
    chain_ok(app)


def test_panel_retry_button_clicked_in_two_tabs_queues_one_retry(app, auth, factory):
    shop = factory.shop(role="admin")
    job_id, _orders = finished_bulk_job(app, factory, shop)
    tabs = []
    for _ in range(2):
        tab = auth(shop["user_id"], client=app.test_client())
        tabs.append((tab.client, tab.csrf(f"/bulk-jobs/{job_id}")))

    def click(tab, csrf):
        return lambda: tab.post(f"/bulk-jobs/{job_id}/retry", data={"csrf_token": csrf})

    results = race(*(click(tab, csrf) for tab, csrf in tabs))

    assert [r.status_code for r in results] == [302, 302]
    retry_ids = retries_of(app, job_id)
    assert len(retry_ids) == 1
    # One tab lands on the new job; the other stays on this one and is told why.
    assert sorted(r.headers["Location"] for r in results) == sorted(
        [f"/bulk-jobs/{job_id}", f"/bulk-jobs/{retry_ids[0]}"])
    chain_ok(app)


def test_a_retry_once_the_first_retry_has_finished_is_allowed(app, factory, monkeypatch):
    """Only a retry still running refuses another; afterwards the failures may be retried."""
    from cancellation import bulk

    shop = factory.shop(role="admin")
    job_id, _orders = finished_bulk_job(app, factory, shop, failed=1)
    client = app.test_client()
    # The first retry stays running: no worker of the session finishes it in between.
    monkeypatch.setattr(bulk, "dispatch", lambda *args, **kwargs: 0)
    first = client.post(f"/api/v1/bulk_jobs/{job_id}/retry", headers=bearer(shop["token"]))
    assert first.status_code == 202
    busy = client.post(f"/api/v1/bulk_jobs/{job_id}/retry", headers=bearer(shop["token"]))
    assert answer(busy) == (409, "bulk_retry_in_progress")
    assert busy.json["error"]["retry_job_id"] == first.json["job_id"]
    with app.app_context():
        db.session.get(BulkJob, first.json["job_id"]).status = "failed"
        db.session.commit()
    again = client.post(f"/api/v1/bulk_jobs/{job_id}/retry", headers=bearer(shop["token"]))
    assert again.status_code == 202
    assert len(retries_of(app, job_id)) == 2


# --- bulk items: a batch delivered twice at once -------------------------------------------

def running_bulk_job(app, factory, orders=6):
    store_id = factory.store()
    product_id = factory.product(1000)
    factory.stock(store_id, product_id, on_hand=100)
    user_id = factory.user("admin", stores=[store_id])
    order_ids = [factory.order(store_id, [(product_id, 1, 1000)]) for _ in range(orders)]
    with app.app_context():
        now = utcnow()
        # Dispatched just now, as `bulk.dispatch` leaves a job: never dispatched, a live worker's
        # watchdog would take its items at once and race the calls under test.
        job = BulkJob(user_id=user_id, reason="inventory_issues", total=orders,
                      status="running", source="api_v1", created_at=now, started_at=now,
                      dispatched_at=now)
        db.session.add(job)
        db.session.flush()
        items = [BulkJobItem(job_id=job.id, order_id=order_id, status="pending", attempts=0)
                 for order_id in order_ids]
        db.session.add_all(items)
        db.session.commit()
        return job.id, [item.id for item in items], order_ids


def assert_each_cancelled_once(app, job_id, order_ids):
    for order_id in order_ids:
        assert count(app, Cancellation, Cancellation.order_id == order_id) == 1, order_id
        assert count(app, Refund, Refund.order_id == order_id) == 1, order_id
        assert count(app, AuditEvent, AuditEvent.order_id == order_id,
                     AuditEvent.action == "order.cancelled") == 1, order_id
    with app.app_context():
        items = db.session.execute(select(BulkJobItem.status, BulkJobItem.attempts).where(
            BulkJobItem.job_id == job_id)).all()
        assert {tuple(item) for item in items} == {("succeeded", 1)}
        assert db.session.get(BulkJob, job_id).status == "completed"
    assert count(app, AuditEvent, AuditEvent.action == "bulk.finished",
                 AuditEvent.target_id == str(job_id)) == 1
    chain_ok(app)


def test_a_batch_delivered_twice_at_once_cancels_each_order_once(app, factory):
    from cancellation import bulk

    job_id, item_ids, order_ids = running_bulk_job(app, factory)
    results = race(in_app(app, bulk.run_batch, job_id, item_ids),
                   in_app(app, bulk.run_batch, job_id, item_ids))

    assert not [r for r in results if isinstance(r, BaseException)], results
    done = sorted((r["succeeded"], r["skipped"]) for r in results)
    assert done == [(0, len(item_ids)), (len(item_ids), 0)], results
    assert_each_cancelled_once(app, job_id, order_ids)


def test_one_item_cancelled_on_its_own_twice_at_once_is_cancelled_once(app, factory):
    """The one-order-per-transaction path a refused batch falls back to."""
    from cancellation import bulk
    from cancellation.audit import AuditContext

    job_id, item_ids, order_ids = running_bulk_job(app, factory, orders=1)

    def cancel_item():
        with app.app_context():
            job = db.session.get(BulkJob, job_id)
            actor = db.session.get(User, job.user_id)
            outcome, _done = bulk.cancel_item(item_ids[0], actor,
                                              CancelRequest(reason=job.reason),
                                              AuditContext(source="bulk"))
            bulk.finish(job_id)
            return outcome

    assert sorted(race(cancel_item, cancel_item)) == ["skipped", "succeeded"]
    assert_each_cancelled_once(app, job_id, order_ids)


# --- idempotency keys: one key, two requests at once ---------------------------------------

def test_one_idempotency_key_in_two_requests_at_once_runs_once(app, factory):
    shop = factory.shop(role="ops_engineer")
    key = str(uuid.uuid4())
    body = {"reason": "operational_request", "notes": "race", "notify_stakeholders": True}

    def send():
        response = app.test_client().post(
            f"/api/v2/orders/{shop['order_id']}/cancel", json=body,
            headers=v2_headers(shop["token"], key=key))
        return (*answer(response), response.headers.get("Idempotent-Replayed"))

    results = race(send, send)

    ran = [r for r in results if r[0] == 202 and r[2] is None]
    assert len(ran) == 1, results
    other = next(r for r in results if r is not ran[0])
    assert other in ((409, "request_in_progress", None), (202, None, "true")), results
    assert count(app, CancelJob, CancelJob.order_id == shop["order_id"]) == 1


def test_a_key_completed_while_another_request_takes_it_over_is_replayed(app, factory):
    """The takeover of an abandoned key deletes it only if it is still abandoned: a request that
    completed meanwhile keeps its answer (was: deleted, and the cancel ran a second time)."""
    from sqlalchemy import event, update

    shop = factory.shop(role="ops_engineer")
    key = str(uuid.uuid4())
    body = {"reason": "operational_request", "notes": "takeover", "notify_stakeholders": True}
    path = f"/api/v2/orders/{shop['order_id']}/cancel"
    client = app.test_client()
    first = client.post(path, json=body, headers=v2_headers(shop["token"], key=key))
    assert first.status_code == 202
    with app.app_context():  # as if the first request were still running, for long
        db.session.execute(update(IdempotencyKey).where(
            IdempotencyKey.user_id == shop["user_id"], IdempotencyKey.key == key)
            .values(state="in_progress", created_at=utcnow() - timedelta(minutes=10)))
        db.session.commit()
        engine = db.engine
    stored = first.json

    def first_completes(conn, cursor, statement, parameters, context, executemany):
        # The first request finishes between the takeover's read and its delete.
        if statement.lstrip().upper().startswith("DELETE FROM IDEMPOTENCY_KEYS") \
                and not completed:
            completed.append(True)
            with engine.connect() as other:
                other.execute(update(IdempotencyKey).where(
                    IdempotencyKey.user_id == shop["user_id"], IdempotencyKey.key == key)
                    .values(state="completed", response_status=202, response_body=stored))
                other.commit()

    completed = []
    event.listen(engine, "before_cursor_execute", first_completes)
    try:
        again = client.post(path, json=body, headers=v2_headers(shop["token"], key=key))
    finally:
        event.remove(engine, "before_cursor_execute", first_completes)

    assert completed
    assert again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == stored
    assert count(app, CancelJob, CancelJob.order_id == shop["order_id"]) == 1


# --- maintenance release racing itself ------------------------------------------------------

class _Unlocked:
    """Redis with a release lock every caller acquires: the lock expired, or Redis lost it —
    then only the claims keep the release exactly-once."""

    def __init__(self, redis):
        self._redis = redis

    def __getattr__(self, name):
        return getattr(self._redis, name)

    def lock(self, *args, **kwargs):
        return _AlwaysLock()


class _AlwaysLock:
    def acquire(self, blocking=True):
        return True

    def reacquire(self):
        pass

    def release(self):
        pass


@pytest.mark.parametrize("lock", ["redis lock", "no lock"])
def test_two_releasers_at_once_perform_each_queued_cancel_once(app, client, factory,
                                                               maintenance_mode, monkeypatch,
                                                               lock):
    from cancellation import maintenance

    _shop, orders, job_ids = queued_cancels(client, factory, 6)
    with app.app_context():  # off without the message to the workers: we release ourselves
        Setting.put("maintenance_mode", False)
        db.session.commit()
    if lock == "no lock":
        monkeypatch.setitem(app.extensions, "redis", _Unlocked(app.extensions["redis"]))

    results = race(in_app(app, maintenance.release_queued),
                   in_app(app, maintenance.release_queued))

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r["release_cancel_jobs"] for r in results) <= len(job_ids)

    def jobs_done():  # the session's worker (its beat releases too) may hold a few of them
        with app.app_context():
            jobs = db.session.execute(select(CancelJob.status, CancelJob.attempts).where(
                CancelJob.id.in_(job_ids))).all()
        return {tuple(job) for job in jobs} if all(
            status != "processing" for status, _attempts in jobs) else None

    assert wait_for(jobs_done, message="the released jobs") == {("completed", 1)}
    with app.app_context():
        assert set(db.session.scalars(select(Order.status).where(Order.id.in_(orders)))) == {
            "cancelled"}
    for order_id in orders:
        assert count(app, Cancellation, Cancellation.order_id == order_id) == 1
        assert count(app, AuditEvent, AuditEvent.order_id == order_id,
                     AuditEvent.action == "order.cancelled") == 1
    chain_ok(app)


def test_two_releasers_at_once_start_each_queued_bulk_job_once(app, factory, monkeypatch):
    from cancellation import bulk

    job_ids = []
    for _ in range(4):
        job_id, _items, _orders = running_bulk_job(app, factory, orders=1)
        with app.app_context():
            db.session.get(BulkJob, job_id).status = "queued"
            db.session.commit()
        job_ids.append(job_id)
    dispatched = []
    monkeypatch.setattr(bulk, "dispatch", lambda job_id, *args, **kwargs: dispatched.append(
        job_id))

    results = race(in_app(app, bulk.start_queued), in_app(app, bulk.start_queued))

    ours = [job_id for job_id in dispatched if job_id in job_ids]
    assert len(ours) == len(set(ours)), dispatched  # none started twice
    # The session's worker (its watchdog starts queued jobs too) may have started some.
    with app.app_context():
        assert not set(db.session.scalars(select(BulkJob.status).where(
            BulkJob.id.in_(job_ids)))) & {"queued"}
    if not any(isinstance(r, BaseException) for r in results):
        assert sum(results) >= len(ours)


def test_two_admins_switching_maintenance_off_at_once_switch_it_once(app, factory,
                                                                     maintenance_mode):
    """One of them switches it (one audit event, one release handed over); the other finds it
    off already. Was: on SQLite both read 'on' and both recorded the switch."""
    from cancellation import maintenance
    from cancellation.audit import AuditContext

    admins = [factory.user("admin") for _ in range(2)]
    with app.app_context():
        last_seq = db.session.scalar(select(func.max(AuditEvent.seq)))

    def switch_off(admin_id):
        def call():
            with app.app_context():
                return maintenance.switch(db.session.get(User, admin_id), False,
                                          AuditContext(source="test"))
        return call

    results = race(*(switch_off(admin_id) for admin_id in admins))

    assert sorted(results) == [False, True], results
    assert count(app, AuditEvent, AuditEvent.action == "settings.maintenance_mode",
                 AuditEvent.seq > last_seq) == 1
    with app.app_context():
        assert maintenance.is_on(fresh=True) is False
    chain_ok(app)


def test_one_cancel_sent_twice_at_once_in_maintenance_is_queued_once(app, factory,
                                                                     maintenance_mode):
    """A double click (or a client's retry) while maintenance is on: one queued job, and the
    other request is told it is already queued. Was (SQLite): two jobs, the second one bound to
    fail when it ran."""
    shop = factory.shop(role="admin")

    def send():
        response = cancel(app.test_client(), shop["order_id"], shop["token"])
        return response.status_code, response.json.get("job_id"), response.json.get("message")

    results = race(send, send)

    assert [code for code, _job, _message in results] == [202, 202], results
    assert len({job for _code, job, _message in results}) == 1, results
    assert sum("already queued" in message for _code, _job, message in results) == 1, results
    assert count(app, CancelJob, CancelJob.order_id == shop["order_id"]) == 1
    assert count(app, AuditEvent, AuditEvent.order_id == shop["order_id"],
                 AuditEvent.action == "order.cancel_queued") == 1
    chain_ok(app)
