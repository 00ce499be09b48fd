"""The outbox, delivered by a real Celery worker: success, retries with back-off, manual retry,
the sweep for lost tasks, and never paying or sending twice — even under concurrent cancels."""
import threading
import time
from datetime import timedelta

import pytest

from conftest import assert_api_error, bearer, cancel, wait_for


@pytest.fixture
def failures(app, worker, sandbox):
    """failures(kind, times): the sandbox processor declines the next `times` refunds (-1: all),
    or the mail relay fails that many notices; always switched off after."""
    from cancellation.adapters import set_failures

    wait_outbox_idle(app)  # earlier tests' deliveries must not consume the injected failures

    def inject(kind, times):
        if kind != "refund":
            set_failures(kind, times)
        elif times:
            sandbox.set("decline", times=times)
        else:
            sandbox.reset()

    with app.app_context():
        yield inject
        set_failures("notification", 0)


def wait_outbox_idle(app, timeout=30):
    from models import Notification, Refund, db

    def idle():
        with app.app_context():
            for model in (Refund, Notification):
                busy = db.session.scalar(db.select(db.func.count()).select_from(model).where(
                    (model.status == "pending")
                    | ((model.status == "failed") & model.next_attempt_at.is_not(None))))
                if busy:
                    return False
            return True

    wait_for(idle, timeout=timeout, interval=0.2, message="earlier deliveries to settle")


def get_order(client, token, order_id):
    return client.get(f"/api/v1/orders/{order_id}", headers=bearer(token)).json


def rows(app, model, **where):
    from models import db

    with app.app_context():
        query = db.select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return [dict(r.__dict__) for r in db.session.scalars(query)]


def refund_keys(app, order_id):
    """The idempotency keys of an order's refunds, as the outbox wrote them."""
    from models import Refund, db

    with app.app_context():
        return db.session.scalars(db.select(Refund.idempotency_key).where(
            Refund.order_id == order_id).order_by(Refund.id)).all()


def payouts(sandbox, keys):
    """The sandbox processor's ledger rows paid under `keys`."""
    return [row for key in keys for row in sandbox.refunds(key)]


def audit_actions(app, order_id, prefix):
    from models import AuditEvent, db

    with app.app_context():
        return [(e.action, (e.after or {}).get("attempts")) for e in db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.order_id == order_id,
                                        AuditEvent.action.startswith(prefix))
            .order_by(AuditEvent.seq))]


def test_refund_and_notification_each_delivered_exactly_once(app, client, factory, worker,
                                                             sandbox):
    from models import MailMessage

    shop = factory.shop(role="admin", quantity=2, price_cents=4000)  # 80.00 + 8.00 tax
    response = cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 200, response.json
    cancellation_id = response.json["cancellations"][0]["id"]

    def delivered():
        order = get_order(client, shop["token"], shop["order_id"])
        done = (order["refunds"][0]["status"], order["notifications"][0]["status"]) \
            == ("succeeded", "sent")
        return order if done else None

    order = wait_for(delivered, message="refund and notification delivered")
    keys = refund_keys(app, shop["order_id"])
    paid = payouts(sandbox, keys)
    assert len(paid) == 1 and paid[0]["amount_cents"] == 8800
    assert order["refunds"][0]["gateway_reference"] == paid[0]["id"]
    assert order["refunds"][0]["attempts"] == 1
    mails = rows(app, MailMessage, idempotency_key=f"notify-cancellation-{cancellation_id}")
    assert len(mails) == 1
    assert order["number"] in mails[0]["subject"]
    assert mails[0]["recipient"] == order["customer"]["email"]
    assert "88.00" in mails[0]["body"]
    assert order["flags"] == {"inventory_reconciliation": False, "manual_refund": False,
                              "manual_notification": False}
    time.sleep(1.5)  # a sweep runs every second: it must not deliver again
    assert len(payouts(sandbox, keys)) == 1
    assert len(rows(app, MailMessage,
                    idempotency_key=f"notify-cancellation-{cancellation_id}")) == 1


def test_refund_failing_twice_is_retried_with_backoff_and_succeeds(app, client, factory,
                                                                   failures, sandbox):
    failures("refund", 2)
    shop = factory.shop(role="admin")
    response = cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"

    def settled():
        order = get_order(client, shop["token"], shop["order_id"])
        return order if order["refunds"][0]["status"] == "succeeded" else None

    order = wait_for(settled, message="refund to succeed after retries")
    refund = order["refunds"][0]
    assert refund["attempts"] == 3 and refund["last_error"] is None
    assert order["flags"]["manual_refund"] is False
    assert order["status"] == "cancelled"
    assert audit_actions(app, shop["order_id"], "refund.") == [
        ("refund.failed", 1), ("refund.failed", 2), ("refund.succeeded", 3)]
    assert [row["id"] for row in payouts(sandbox, refund_keys(app, shop["order_id"]))] == [
        refund["gateway_reference"]]


def test_refund_failing_for_good_stops_then_manual_retry_pays_once(app, client, factory,
                                                                   failures, sandbox):
    max_attempts = app.config["DELIVERY_MAX_ATTEMPTS"]
    failures("refund", -1)
    shop = factory.shop(role="store_manager")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200

    def exhausted():
        order = get_order(client, shop["token"], shop["order_id"])
        refund = order["refunds"][0]
        return order if (refund["status"], refund["attempts"]) == ("failed", max_attempts) \
            else None

    order = wait_for(exhausted, message=f"{max_attempts} failed refund attempts")
    assert order["flags"]["manual_refund"] is True
    assert order["status"] == "cancelled"
    assert "declined" in order["refunds"][0]["last_error"]
    assert payouts(sandbox, refund_keys(app, shop["order_id"])) == []
    time.sleep(2.5)  # longer than a sweep interval plus the last back-off: no more attempts
    order = get_order(client, shop["token"], shop["order_id"])
    assert order["refunds"][0]["attempts"] == max_attempts
    assert order["refunds"][0]["status"] == "failed"

    failures("refund", 0)
    response = client.post(f"/api/v1/orders/{shop['order_id']}/refund",
                           headers=bearer(shop["token"]))
    assert response.status_code == 202, response.json

    def paid():
        order = get_order(client, shop["token"], shop["order_id"])
        return order if order["refunds"][0]["status"] == "succeeded" else None

    order = wait_for(paid, message="the manual retry to pay")
    assert order["refunds"][0]["attempts"] == max_attempts + 1
    assert order["flags"]["manual_refund"] is False
    assert [row["id"] for row in payouts(sandbox, refund_keys(app, shop["order_id"]))] == [
        order["refunds"][0]["gateway_reference"]]

    # Once paid, another click changes nothing and pays nothing.
    again = client.post(f"/api/v1/orders/{shop['order_id']}/refund",
                        headers=bearer(shop["token"]))
    assert again.status_code == 202
    time.sleep(0.5)
    order = get_order(client, shop["token"], shop["order_id"])
    assert order["refunds"][0]["attempts"] == max_attempts + 1
    assert len(payouts(sandbox, refund_keys(app, shop["order_id"]))) == 1


def test_notification_failing_for_good_then_manual_resend(app, client, factory, failures):
    from models import MailMessage

    max_attempts = app.config["DELIVERY_MAX_ATTEMPTS"]
    failures("notification", -1)
    shop = factory.shop(role="admin", paid=False)
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200

    def exhausted():
        order = get_order(client, shop["token"], shop["order_id"])
        notice = order["notifications"][0]
        return order if (notice["status"], notice["attempts"]) == ("failed", max_attempts) \
            else None

    order = wait_for(exhausted, message="notification attempts exhausted")
    assert order["flags"]["manual_notification"] is True
    assert order["status"] == "cancelled"
    cancellation_id = order["cancellations"][0]["id"]
    assert rows(app, MailMessage, idempotency_key=f"notify-cancellation-{cancellation_id}") == []

    failures("notification", 0)
    response = client.post("/api/v1/notifications/customer",
                           json={"order_id": shop["order_id"]}, headers=bearer(shop["token"]))
    assert response.status_code == 202, response.json

    def sent():
        order = get_order(client, shop["token"], shop["order_id"])
        return order if order["notifications"][0]["status"] == "sent" else None

    order = wait_for(sent, message="the manual resend")
    assert len(order["notifications"]) == 1  # the failed notice was retried, not duplicated
    assert order["notifications"][0]["attempts"] == max_attempts + 1
    assert order["flags"]["manual_notification"] is False
    assert len(rows(app, MailMessage,
                    idempotency_key=f"notify-cancellation-{cancellation_id}")) == 1


def test_manual_retry_of_an_order_not_cancelled_is_invalid_state(client, factory, worker):
    shop = factory.shop(role="admin")
    response = client.post(f"/api/v1/orders/{shop['order_id']}/refund",
                           headers=bearer(shop["token"]))
    assert_api_error(response, 400, "invalid_state")
    response = client.post("/api/v1/notifications/customer", json={"order_id": shop["order_id"]},
                           headers=bearer(shop["token"]))
    assert_api_error(response, 400, "invalid_state")


def test_lost_tasks_are_delivered_by_the_sweep(app, client, factory, worker, sandbox):
    from models import MailMessage, Notification, Refund, db, utcnow

    shop = factory.shop(role="admin", status="cancelled")
    key = f"lost-{factory._unique()}"
    with app.app_context():
        long_ago = utcnow() - timedelta(minutes=5)
        refund = Refund(order_id=shop["order_id"], amount_cents=1234, method="card",
                        idempotency_key=f"refund-{key}", created_at=long_ago)
        notice = Notification(order_id=shop["order_id"], recipient="lost@example.com",
                              idempotency_key=f"notify-{key}", created_at=long_ago)
        db.session.add_all([refund, notice])
        db.session.commit()  # written, never dispatched: as if the broker lost the task

    def delivered():
        order = get_order(client, shop["token"], shop["order_id"])
        return [r["status"] for r in order["refunds"]] + \
            [n["status"] for n in order["notifications"]] == ["succeeded", "sent"]

    wait_for(delivered, message="the sweep to deliver lost outbox rows")
    paid = sandbox.refunds(f"refund-{key}")
    assert len(paid) == 1 and paid[0]["amount_cents"] == 1234
    assert len(rows(app, MailMessage, idempotency_key=f"notify-{key}")) == 1


def test_the_same_refund_task_dispatched_five_times_pays_once(app, client, factory, worker,
                                                              sandbox):
    from models import Refund, db

    shop = factory.shop(role="admin", status="cancelled")
    key = f"refund-dup-{factory._unique()}"
    with app.app_context():
        refund = Refund(order_id=shop["order_id"], amount_cents=5000, idempotency_key=key)
        db.session.add(refund)
        db.session.commit()
        refund_id = refund.id
        celery = app.extensions["celery"]
        for _ in range(5):
            celery.send_task("cancel_desk.deliver_refund", args=[refund_id])

    wait_for(lambda: rows(app, Refund, id=refund_id)[0]["status"] == "succeeded",
             message="the refund to be paid")
    time.sleep(1.0)  # let the other four deliveries run
    assert len(sandbox.refunds(key)) == 1
    assert rows(app, Refund, id=refund_id)[0]["status"] == "succeeded"


def test_twelve_concurrent_cancels_cancel_once(app, factory, worker, sandbox):
    from cancellation import verify_chain
    from models import (
        AuditEvent,
        Cancellation,
        Customer,
        LoyaltyEntry,
        MailMessage,
        Notification,
        Refund,
        StockLevel,
        db,
    )

    shop = factory.shop(role="admin", quantity=4, points_earned=20, points_redeemed=50)
    tokens = [shop["token"]] * 4 + [factory.token(factory.user("admin")) for _ in range(8)]
    barrier = threading.Barrier(len(tokens))
    results = [None] * len(tokens)

    def attempt(index, token):
        client = app.test_client()
        barrier.wait()
        response = cancel(client, shop["order_id"], token, reason="duplicate_order")
        results[index] = (response.status_code,
                          response.json["error"]["code"] if response.status_code >= 300
                          else response.json["status"])

    threads = [threading.Thread(target=attempt, args=(i, t)) for i, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert all(r is not None for r in results), results

    statuses = sorted(code for code, _ in results)
    assert statuses.count(200) == 1, results
    assert all(code in (400, 409) for code in statuses if code != 200), results
    assert {detail for code, detail in results if code != 200} <= {
        "invalid_state", "concurrent_modification"}, results

    order_id = shop["order_id"]
    with app.app_context():
        def count(model, *where):
            return db.session.scalar(db.select(db.func.count()).select_from(model).where(*where))

        assert count(Cancellation, Cancellation.order_id == order_id) == 1
        assert count(Refund, Refund.order_id == order_id) == 1
        assert count(Notification, Notification.order_id == order_id) == 1
        assert count(LoyaltyEntry, LoyaltyEntry.order_id == order_id) == 2
        assert count(AuditEvent, AuditEvent.order_id == order_id,
                     AuditEvent.action == "order.cancelled") == 1
        stock = db.session.scalar(db.select(StockLevel).where(
            StockLevel.store_id == shop["store_id"], StockLevel.product_id == shop["product_id"]))
        assert (stock.on_hand, stock.reserved) == (50, 0)
        assert db.session.get(Customer, shop["customer_id"]).loyalty_points == 500 + 50 - 20
        cancellation_id = db.session.scalar(db.select(Cancellation.id).where(
            Cancellation.order_id == order_id))
        report = verify_chain()
        assert report.ok, report

    wait_for(lambda: rows(app, Refund, order_id=order_id)[0]["status"] == "succeeded"
             and rows(app, Notification, order_id=order_id)[0]["status"] == "succeeded",
             message="the single refund and notice delivered")
    assert len(payouts(sandbox, refund_keys(app, order_id))) == 1
    assert len(rows(app, MailMessage,
                    idempotency_key=f"notify-cancellation-{cancellation_id}")) == 1


def test_duplicate_dispatches_of_a_due_retry_count_as_one_attempt(app, factory, failures):
    """The back-off task and the sweep may both send the same due retry: one attempt runs."""
    from models import Refund, db, utcnow

    max_attempts = app.config["DELIVERY_MAX_ATTEMPTS"]
    failures("refund", -1)
    shop = factory.shop(role="admin", status="cancelled")
    with app.app_context():
        refund = Refund(order_id=shop["order_id"], amount_cents=700, status="failed",
                        attempts=max_attempts - 1, next_attempt_at=utcnow() - timedelta(seconds=1),
                        idempotency_key=f"refund-due-{factory._unique()}")
        db.session.add(refund)
        db.session.commit()
        refund_id = refund.id
        for _ in range(5):
            app.extensions["celery"].send_task("cancel_desk.deliver_refund", args=[refund_id])

    def last_attempt_failed():
        row = rows(app, Refund, id=refund_id)[0]
        return row["attempts"] >= max_attempts and row["next_attempt_at"] is None \
            and row["status"] == "failed"

    wait_for(last_attempt_failed, message="the last automatic attempt")
    time.sleep(1.5)  # every duplicate (and a sweep) has had its chance by now
    row = rows(app, Refund, id=refund_id)[0]
    assert row["attempts"] == max_attempts and row["status"] == "failed"
