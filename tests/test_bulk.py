"""Bulk cancellation through API v1 with a real worker: a chord of batches, each order in its own
transaction; failures recorded per order with their code, nothing else touched."""

from conftest import assert_api_error, bearer, order_state, wait_for, wait_status

FINISHED = ("completed", "completed_with_errors", "failed")


def submit(client, token, order_ids, **body):
    body = {"order_ids": order_ids, "status": "cancelled", "reason": "inventory_issues",
            "notes": "supplier recall", **body}
    return client.post("/api/v1/orders/bulk_update", json=body, headers=bearer(token))


def wait_finished(client, token, job_id, timeout=60):
    return wait_status(client, f"/api/v1/bulk_jobs/{job_id}?per_page=1000", token, FINISHED,
                       timeout=timeout, interval=0.2, message=f"bulk job {job_id} to finish")


def test_mixed_bulk_job_counts_codes_and_leaves_the_rest_alone(app, client, factory, worker,
                                                                 store_with_manager):
    shop = store_with_manager
    store_id, product_id = shop["store_id"], shop["product_id"]
    customer_id = factory.customer(points=100)
    good = [factory.order(store_id, [(product_id, 2, 1500)], customer_id=customer_id,
                          points_earned=10, points_redeemed=5) for _ in range(3)]
    good += factory.many_orders(store_id, 57, [product_id], quantity=1, price_cents=1500)
    other_store = factory.shop()["order_id"]
    on_hold = factory.order(store_id, [(product_id, 1, 1500)], billing_hold=True)
    in_transit = factory.order(store_id, [(product_id, 1, 1500)], shipment_status="in_transit")
    completed = factory.order(store_id, [(product_id, 1, 1500)], status="completed")
    too_old = factory.order(store_id, [(product_id, 1, 1500)], age_days=45)
    missing = 2**31 - 1
    bad = {other_store: "not_found", on_hold: "billing_hold_active",
           in_transit: "shipment_in_transit", completed: "invalid_state",
           too_old: "approval_required", missing: "not_found"}
    before = {order_id: order_state(app, order_id) for order_id in bad if order_id != missing}
    stock_before = order_state(app, good[0])["stock"]

    ids = good[:30] + list(bad) + good[30:] + good[:5]  # duplicates count once
    response = submit(client, shop["token"], ids)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.json["total"] == len(good) + len(bad)
    assert response.json["status_url"] == f"/api/v1/bulk_jobs/{response.json['job_id']}"

    job = wait_finished(client, shop["token"], response.json["job_id"])
    assert job["status"] == "completed_with_errors"
    assert (job["total"], job["succeeded"], job["failed"], job["processed"], job["pending"]) == (
        len(good) + len(bad), len(good), len(bad), len(good) + len(bad), 0)
    assert job["percent"] == 100
    failed = job["items"][:len(bad)]  # failed first
    assert {item["order_id"]: item["error"] for item in failed} == bad
    assert all(item["status"] == "failed" and item["message"] for item in failed)
    assert "approval request" in next(i["message"] for i in failed if i["order_id"] == too_old)
    # Another store's order is a bare id: its number is not revealed.
    assert next(i for i in failed if i["order_id"] == other_store)["order_number"] is None
    assert next(i for i in failed if i["order_id"] == on_hold)["order_number"].startswith("T-")
    assert {item["status"] for item in job["items"][len(bad):]} == {"succeeded"}

    for order_id, state in before.items():  # the failures changed nothing (the store's stock
        after = order_state(app, order_id)    # row moved for the cancelled orders only)
        if order_id == too_old:  # ... except that the approval it needs was asked for
            assert (after["approval_requests"], state["approval_requests"]) == (1, 0)
            after = {**after, "approval_requests": 0, "audit_events": state["audit_events"]}
        assert {**after, "stock": None} == {**state, "stock": None}, order_id
    for order_id in good:
        state = order_state(app, order_id)
        assert state["status"] == "cancelled"
        assert (state["cancellations"], state["refunds"], state["notifications"]) == (1, 1, 1)
    # Stock: exactly the cancelled units came back (3 orders of 2 units, 57 of 1).
    reserved_before = dict((p, r) for p, _h, r in stock_before)[product_id]
    reserved_after = dict((p, r) for p, _h, r in order_state(app, good[0])["stock"])[product_id]
    assert reserved_before - reserved_after == 3 * 2 + 57
    # Loyalty: 3 orders each restored 5 and reversed 10 points.
    with app.app_context():
        from models import Customer, db
        assert db.session.get(Customer, customer_id).loyalty_points == 100 + 3 * (5 - 10)


def test_bulk_refunds_and_notifications_are_delivered_once_each(app, client, factory, worker,
                                                                store_with_manager):
    shop = store_with_manager
    customer_id = factory.customer()
    ids = factory.many_orders(shop["store_id"], 40, [shop["product_id"]],
                              customer_id=customer_id)
    job = wait_finished(client, shop["token"], submit(client, shop["token"], ids).json["job_id"])
    assert job["status"] == "completed"

    from models import MailMessage, Notification, Refund, db

    from helpers import processor_payouts

    def delivered():
        with app.app_context():
            states = db.session.scalars(db.select(Refund.status).where(
                Refund.order_id.in_(ids))).all() + db.session.scalars(db.select(
                    Notification.status).where(Notification.order_id.in_(ids))).all()
            return len(states) == 80 and set(states) == {"succeeded"}

    wait_for(delivered, timeout=60, message="the bulk job's refunds and notices")
    with app.app_context():
        keys = db.session.scalars(db.select(Refund.idempotency_key).where(
            Refund.order_id.in_(ids))).all()
        payouts = len(processor_payouts(app, keys))
        keys = db.session.scalars(db.select(Notification.idempotency_key).where(
            Notification.order_id.in_(ids))).all()
        mails = db.session.scalar(db.select(db.func.count()).select_from(MailMessage)
                                  .where(MailMessage.idempotency_key.in_(keys)))
    assert (payouts, mails) == (40, 40)


def test_retry_failed_runs_a_new_job_over_the_failures(app, client, factory, worker,
                                                       store_with_manager):
    shop = store_with_manager
    fine = factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)])
    held = factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)], billing_hold=True)
    first = wait_finished(client, shop["token"],
                          submit(client, shop["token"], [fine, held]).json["job_id"])
    assert (first["succeeded"], first["failed"]) == (1, 1)

    with app.app_context():
        from models import Order, db
        db.session.get(Order, held).billing_hold = False
        db.session.commit()
    response = client.post(f"/api/v1/bulk_jobs/{first['id']}/retry", headers=bearer(shop["token"]))
    assert response.status_code == 202, response.get_data(as_text=True)
    retry = wait_finished(client, shop["token"], response.json["job_id"])
    assert (retry["status"], retry["total"], retry["retry_of"]) == ("completed", 1, first["id"])
    assert retry["items"][0]["order_id"] == held

    # Nothing failed in the retry: a second retry has nothing to do.
    again = client.post(f"/api/v1/bulk_jobs/{retry['id']}/retry", headers=bearer(shop["token"]))
    assert_api_error(again, 400, "invalid_state")


def test_bulk_requests_are_validated_and_scoped(app, client, factory, store_with_manager):
    shop = store_with_manager
    token = shop["token"]
    order_id = factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)])
    for body in ({"order_ids": []}, {"order_ids": [0]}, {"order_ids": ["1"]},
                 {"order_ids": [2**31]}, {"order_ids": "1,2"}, {"reason": "bogus"},
                 {"status": "pending"}, {"reason": "customer_requested"},
                 {"notes": "x" * 2001}, {"scope": "all_future"}, {"extra": 1}):
        response = submit(client, token, **{"order_ids": [order_id], **body})
        assert_api_error(response, 400, "validation_error")
    for raw in ("", "[]", "{", '{"order_ids": null}'):
        response = client.post("/api/v1/orders/bulk_update", data=raw,
                               content_type="application/json", headers=bearer(token))
        assert_api_error(response, 400, "validation_error")

    clerk = factory.token(factory.user("fulfillment", stores=[shop["store_id"]]))
    assert_api_error(submit(client, clerk, [order_id]), 403)
    assert order_state(app, order_id)["status"] == "pending"

    app.config["BULK_MAX_ORDERS"], limit = 3, app.config["BULK_MAX_ORDERS"]
    try:
        assert_api_error(submit(client, token, [1, 2, 3, 4]), 400, "validation_error")
    finally:
        app.config["BULK_MAX_ORDERS"] = limit

    job_id = submit(client, token, [order_id]).json["job_id"]
    other_manager = factory.token(factory.user("store_manager", stores=[shop["store_id"]]))
    assert_api_error(client.get(f"/api/v1/bulk_jobs/{job_id}", headers=bearer(other_manager)),
                     404, "not_found")
    admin = factory.token(factory.user("admin"))
    assert client.get(f"/api/v1/bulk_jobs/{job_id}", headers=bearer(admin)).status_code == 200
    assert_api_error(client.get("/api/v1/bulk_jobs/999999999", headers=bearer(token)), 404)
    for query in ("per_page=-1", "page=0", "per_page=abc", "per_page=20001"):
        assert_api_error(client.get(f"/api/v1/bulk_jobs/{job_id}?{query}",
                                    headers=bearer(token)), 400, "validation_error")
    counts_only = client.get(f"/api/v1/bulk_jobs/{job_id}?per_page=0", headers=bearer(token))
    assert counts_only.json["items"] == [] and counts_only.json["total"] == 1


def test_bulk_job_in_maintenance_is_queued_until_it_ends(app, client, factory, worker,
                                                         store_with_manager):
    from models import Setting, db

    shop = store_with_manager
    order_id = factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)])
    with app.app_context():
        Setting.put("maintenance_mode", True)
        db.session.commit()
    try:
        response = submit(client, shop["token"], [order_id])
        assert response.status_code == 202 and response.json["status"] == "queued"
        job_id = response.json["job_id"]
        import time
        time.sleep(2)  # the watchdog runs every second; maintenance holds the job
        state = client.get(f"/api/v1/bulk_jobs/{job_id}", headers=bearer(shop["token"])).json
        assert (state["status"], state["pending"]) == ("queued", 1)
        assert order_state(app, order_id)["status"] == "pending"
    finally:
        with app.app_context():
            Setting.put("maintenance_mode", False)
            db.session.commit()
    job = wait_finished(client, shop["token"], job_id)
    assert job["status"] == "completed"
    assert order_state(app, order_id)["status"] == "cancelled"


def _written(app, order_id):
    """The rows a full cancellation wrote for an order, ids and times left out."""
    from models import (
        AuditEvent,
        Cancellation,
        Customer,
        LoyaltyEntry,
        Notification,
        Order,
        Refund,
        db,
    )

    with app.app_context():
        order = db.session.get(Order, order_id)
        full = db.session.scalars(db.select(Cancellation).where(
            Cancellation.order_id == order_id, Cancellation.kind == "full")).one()
        number = order.number
        event = db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.order_id == order_id, AuditEvent.action == "order.cancelled")).one()
        after = {**event.after, "cancellation_id": None, "notification_id": None}
        after["open_items"] = sorted(after["open_items"].values())
        after["items"] = sorted(line["quantity"] for line in after["items"])
        before = {**event.before, "open_items": sorted(event.before["open_items"].values())}
        return {
            "order": (order.status, order.previous_status, order.refunded_cents,
                      order.payment_status, order.version,
                      [(i.quantity, i.cancelled_quantity) for i in order.items]),
            "cancellation": (full.reason, full.notes, full.previous_status, full.refund_cents,
                             full.points_restored, full.points_reversed, full.notify_customer,
                             full.order_version, full.flag_inventory_reconciliation,
                             full.actor_id),
            "lines": sorted((line.product_id, line.quantity, line.stock_returned)
                            for line in full.items),
            "loyalty": sorted((e.points, e.kind, e.note.replace(number, "N"))
                              for e in db.session.scalars(db.select(LoyaltyEntry).where(
                                  LoyaltyEntry.cancellation_id == full.id))),
            "balance": db.session.get(Customer, order.customer_id).loyalty_points,
            "refunds": [(r.amount_cents, r.method, r.idempotency_key == (
                f"refund-cancellation-{full.id}-payment-{r.payment_id}"))
                for r in db.session.scalars(
                    db.select(Refund).where(Refund.cancellation_id == full.id))],
            "notifications": [(n.template, n.recipient == order.customer.email,
                               n.idempotency_key == (
                f"notify-cancellation-{full.id}"), n.id == event.after["notification_id"])
                for n in db.session.scalars(db.select(Notification).where(
                    Notification.cancellation_id == full.id))],
            "audit": (event.actor_id, event.target_id == str(order_id),
                      event.after["cancellation_id"] == full.id, before, after),
        }


def test_a_batch_writes_what_a_single_cancel_writes(app, client, factory, worker,
                                                    store_with_manager):
    """The bulk batch writes its rows set-based (cancellation/batch.py); for the same orders
    they must be exactly the rows a single cancel writes — including an order a partial
    cancellation already settled some points of, and a line with no stock row."""
    shop = store_with_manager
    store_id, stocked = shop["store_id"], shop["product_id"]
    unstocked = factory.product(800)  # no stock row in this store: reconciliation flag

    def twin(partial_first):
        customer_id = factory.customer(points=200)
        order_id = factory.order(store_id, [(stocked, 3, 1500), (unstocked, 1, 800)],
                                 customer_id=customer_id, points_earned=12, points_redeemed=7)
        if partial_first:
            first_item = order_state(app, order_id)["items"][0][0]
            response = client.put(f"/api/v1/orders/{order_id}/items", json={
                "items": [{"item_id": first_item, "quantity": 1}],
                "reason": "inventory_issues"}, headers=bearer(shop["token"]))
            assert response.status_code == 200, response.get_data(as_text=True)
        return order_id

    singles = [twin(False), twin(True)]
    batched = [twin(False), twin(True)]
    for order_id in singles:
        response = client.put(f"/api/v1/orders/{order_id}/status", json={
            "status": "cancelled", "reason": "inventory_issues", "notes": "supplier recall"},
            headers=bearer(shop["token"]))
        assert response.status_code == 200, response.get_data(as_text=True)
    job = wait_finished(client, shop["token"],
                        submit(client, shop["token"], batched).json["job_id"])
    assert (job["status"], job["succeeded"]) == ("completed", 2)

    for single, together in zip(singles, batched, strict=True):
        expected, got = _written(app, single), _written(app, together)
        assert got == expected
    assert _written(app, batched[0])["cancellation"][8] is True  # flagged for reconciliation
    assert _written(app, batched[1])["cancellation"][4:6] != (7, 12)  # the partial settled some


def test_a_new_job_does_not_wait_behind_earlier_deliveries(app, client, factory, worker,
                                                           store_with_manager):
    """Refunds and notices queue on their own, lower-priority queue: a job submitted while a
    big job's thousands of deliveries are still queued runs at once instead of after them."""
    from tasks import DELIVERY_QUEUE

    shop = store_with_manager
    celery, redis = app.extensions["celery"], app.extensions["redis"]
    for _ in range(3000):  # what a big job leaves behind (here: deliveries with nothing to do)
        celery.send_task("cancel_desk.deliver_refund", args=[2**31 - 1])
    try:
        order_id = factory.order(shop["store_id"], [(shop["product_id"], 1, 1500)])
        job = wait_finished(client, shop["token"],
                            submit(client, shop["token"], [order_id]).json["job_id"])
        assert job["status"] == "completed"
        assert redis.llen(DELIVERY_QUEUE) > 0  # it finished while the deliveries still waited
    finally:
        wait_for(lambda: redis.llen(DELIVERY_QUEUE) == 0, timeout=120, interval=0.5,
                 message="the queued deliveries to drain")
