"""SPEC §2: what one cancellation does — stock, loyalty, refund, notification, audit, recurring."""
from datetime import timedelta

from conftest import assert_api_error, bearer, cancel, wait_for


def inventory(client, token, store_id):
    rows = client.get(f"/api/v1/inventory?store_id={store_id}", headers=bearer(token)).json
    return {row["product_id"]: row for row in rows["items"]}


def get_order(client, token, order_id):
    response = client.get(f"/api/v1/orders/{order_id}", headers=bearer(token))
    assert response.status_code == 200, response.json
    return response.json


def test_stock_is_conserved_to_the_unit(app, client, factory):
    store_id, other_store = factory.store(), factory.store()
    first, second, untouched = factory.product(1000), factory.product(700), factory.product(300)
    for product_id in (first, second, untouched):
        factory.stock(store_id, product_id, on_hand=40)
        factory.stock(other_store, product_id, on_hand=40)
    customer_id = factory.customer()
    order_id = factory.order(store_id, [(first, 3, 1000), (second, 5, 700)],
                             customer_id=customer_id)
    # Other open orders hold reservations that must stay exactly where they are.
    factory.order(store_id, [(first, 2, 1000), (untouched, 4, 300)], customer_id=customer_id)
    factory.order(other_store, [(first, 6, 1000)], customer_id=customer_id)
    token = factory.token(factory.user("admin"))
    before = inventory(client, token, store_id)
    before_other = inventory(client, token, other_store)
    assert before[first]["reserved"] == 5 and before[second]["reserved"] == 5

    response = cancel(client, order_id, token)

    assert response.status_code == 200, response.json
    after = inventory(client, token, store_id)
    assert after[first]["available"] == before[first]["available"] + 3
    assert after[second]["available"] == before[second]["available"] + 5
    assert after[first]["reserved"] == before[first]["reserved"] - 3
    assert after[second]["reserved"] == before[second]["reserved"] - 5
    for product_id in (first, second, untouched):
        assert after[product_id]["on_hand"] == before[product_id]["on_hand"] == 40
    assert after[untouched] == before[untouched]
    assert inventory(client, token, other_store) == before_other
    items = {item["product_id"]: item for item in response.json["items"]}
    assert items[first]["cancelled_quantity"] == 3 and items[second]["cancelled_quantity"] == 5
    assert response.json["flags"]["inventory_reconciliation"] is False


def test_missing_stock_row_flags_reconciliation_and_is_returned_once(app, client, factory):
    store_id = factory.store()
    stocked, unstocked = factory.product(1000), factory.product(1500)
    factory.stock(store_id, stocked, on_hand=20)
    order_id = factory.order(store_id, [(stocked, 2, 1000), (unstocked, 4, 1500)],
                             customer_id=factory.customer())
    token = factory.token(factory.user("store_manager", stores=[store_id]))

    response = cancel(client, order_id, token)

    assert response.status_code == 200, response.json
    assert response.json["status"] == "cancelled"
    assert response.json["flags"]["inventory_reconciliation"] is True
    lines = {line["product_id"]: line for line in response.json["cancellations"][0]["items"]}
    assert lines[stocked]["stock_returned"] is True
    assert lines[unstocked]["stock_returned"] is False
    stock = inventory(client, token, store_id)
    assert unstocked not in stock
    assert stock[stocked]["reserved"] == 0 and stock[stocked]["available"] == 20

    returned = client.put("/api/v1/inventory/return", json={"order_id": order_id},
                          headers=bearer(token))

    assert returned.status_code == 200, returned.json
    assert returned.json["returned"] == [{"product_id": unstocked, "quantity": 4}]
    stock = inventory(client, token, store_id)
    assert stock[unstocked]["on_hand"] == 4 and stock[unstocked]["available"] == 4
    assert stock[stocked]["on_hand"] == 20  # the line already returned is not returned again
    assert get_order(client, token, order_id)["flags"]["inventory_reconciliation"] is False

    again = client.put("/api/v1/inventory/return", json={"order_id": order_id},
                       headers=bearer(token))
    assert again.status_code == 200
    assert again.json["returned"] == []
    assert inventory(client, token, store_id)[unstocked]["on_hand"] == 4


def test_inventory_return_for_an_order_never_cancelled_is_invalid_state(client, factory):
    shop = factory.shop(role="admin")
    response = client.put("/api/v1/inventory/return", json={"order_id": shop["order_id"]},
                          headers=bearer(shop["token"]))
    assert_api_error(response, 400, "invalid_state")


def test_loyalty_points_restored_and_reversed(app, client, factory):
    shop = factory.shop(role="admin", points_earned=35, points_redeemed=120)

    response = cancel(client, shop["order_id"], shop["token"])

    assert response.status_code == 200, response.json
    assert response.json["customer"]["loyalty_points"] == 500 + 120 - 35
    cancellation = response.json["cancellations"][0]
    assert cancellation["points_restored"] == 120 and cancellation["points_reversed"] == 35
    from models import LoyaltyEntry, db
    with app.app_context():
        entries = db.session.execute(
            db.select(LoyaltyEntry.kind, LoyaltyEntry.points, LoyaltyEntry.customer_id)
            .where(LoyaltyEntry.order_id == shop["order_id"])
            .order_by(LoyaltyEntry.kind)).all()
    assert [tuple(e) for e in entries] == [("restored", 120, shop["customer_id"]),
                                           ("reversed", -35, shop["customer_id"])]


def test_order_without_points_writes_no_loyalty_entries(app, client, factory):
    shop = factory.shop(role="admin")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    from models import LoyaltyEntry, db
    with app.app_context():
        assert db.session.scalars(db.select(LoyaltyEntry).where(
            LoyaltyEntry.order_id == shop["order_id"])).all() == []
    assert get_order(client, shop["token"], shop["order_id"])["customer"]["loyalty_points"] == 500


def test_paid_order_queues_one_refund_of_the_paid_amount(client, factory):
    shop = factory.shop(role="admin", quantity=3, price_cents=1999)  # 59.97 + 10% tax = 65.97
    response = cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 200
    assert [r["amount"] for r in response.json["refunds"]] == ["65.97"]
    # A cancelled order shows what it was placed for, and that all of it was refunded.
    assert (response.json["total"], response.json["refunded"]) == ("65.97", "65.97")
    assert response.json["payment_status"] == "refunded"
    assert response.json["cancellations"][0]["refund_amount"] == "65.97"


def test_unpaid_order_gets_no_refund(app, client, factory):
    shop = factory.shop(role="admin", paid=False)
    response = cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 200
    assert response.json["refunds"] == []
    assert response.json["payment_status"] == "unpaid"
    assert response.json["cancellations"][0]["refund_amount"] == "0.00"
    assert len(response.json["notifications"]) == 1


def test_notify_customer_false_sends_nothing(client, factory):
    shop = factory.shop(role="admin")
    response = cancel(client, shop["order_id"], shop["token"], notify_customer=False)
    assert response.status_code == 200
    assert response.json["notifications"] == []
    assert len(response.json["refunds"]) == 1


def test_customer_without_email_flags_manual_notification(app, client, factory, worker):
    store_id = factory.store()
    product_id = factory.product()
    factory.stock(store_id, product_id)
    order_id = factory.order(store_id, [(product_id, 1, 2500)],
                             customer_id=factory.customer(email=None))
    token = factory.token(factory.user("admin"))

    response = cancel(client, order_id, token)

    assert response.status_code == 200, response.json
    assert response.json["status"] == "cancelled"  # the failure never undoes the cancellation

    def flagged():
        order = get_order(client, token, order_id)
        return order if (order["notifications"][0]["status"] == "failed"
                         and order["flags"]["manual_notification"]) else None

    order = wait_for(flagged, message="the notification to fail and be flagged")
    assert "e-mail" in order["notifications"][0]["last_error"]
    assert order["status"] == "cancelled"
    wait_for(lambda: get_order(client, token, order_id)["refunds"][0]["status"] == "succeeded",
             message="the refund to go out regardless")


def test_audit_event_names_actor_request_id_and_ip(app, client, factory):
    shop = factory.shop(role="admin")
    response = client.put(f"/api/v1/orders/{shop['order_id']}/status",
                          json={"status": "cancelled", "reason": "duplicate_order",
                                "notes": "placed twice"},
                          headers=bearer(shop["token"], **{"X-Request-ID": "req-audit-42"}),
                          environ_overrides={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-audit-42"

    from models import AuditEvent, User, db
    with app.app_context():
        events = db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.order_id == shop["order_id"],  # not the worker's delivery events
            AuditEvent.action.startswith("order."))).all()
        email = db.session.get(User, shop["user_id"]).email
    assert [e.action for e in events] == ["order.cancelled"]
    event = events[0]
    assert event.actor_id == shop["user_id"] and event.actor_label == email
    assert event.request_id == "req-audit-42"
    assert event.ip == "203.0.113.9"
    assert event.before["status"] == "pending" and event.after["status"] == "cancelled"
    assert event.after["reason"] == "duplicate_order" and event.after["notes"] == "placed twice"


def test_customer_requested_requires_contact_and_time(app, client, factory):
    shop = factory.shop(role="customer_service")

    missing = cancel(client, shop["order_id"], shop["token"], reason="customer_requested")
    error = assert_api_error(missing, 400, "validation_error")
    fields = {f["field"] for f in error["fields"]}
    assert {"customer_request.contact", "customer_request.requested_at"} <= fields

    no_time = cancel(client, shop["order_id"], shop["token"], reason="customer_requested",
                     customer_request={"contact": "+1 555 0100"})
    error = assert_api_error(no_time, 400, "validation_error")
    assert any("requested_at" in f["field"] for f in error["fields"])

    future = cancel(client, shop["order_id"], shop["token"], reason="customer_requested",
                    customer_request={"contact": "+1 555 0100",
                                      "requested_at": "2999-01-01T10:00:00Z"})
    assert_api_error(future, 400, "validation_error")

    from models import Order, db
    with app.app_context():
        assert db.session.get(Order, shop["order_id"]).status == "pending"


def test_customer_requested_details_are_stored(app, client, factory):
    shop = factory.shop(role="customer_service")
    response = cancel(client, shop["order_id"], shop["token"], reason="customer_requested",
                      notes="changed her mind",
                      customer_request={"contact": "jane@example.com", "channel": "phone",
                                        "requested_at": "2024-05-01T09:30:00+02:00"})
    assert response.status_code == 200, response.json

    from models import Cancellation, db
    with app.app_context():
        row = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == shop["order_id"]))
        assert row.reason == "customer_requested" and row.notes == "changed her mind"
        assert row.request_contact == "jane@example.com" and row.request_channel == "phone"
        assert row.requested_at.isoformat() == "2024-05-01T07:30:00"  # stored as UTC
        assert row.actor_id == shop["user_id"]


def test_recurring_all_future_cancels_only_later_cancellable_orders_of_the_series(app, client,
                                                                                   factory):
    store_id = factory.store()
    product_id = factory.product(1000)
    factory.stock(store_id, product_id, on_hand=100)
    customer_id = factory.customer()
    series = f"S-{factory._unique()}"

    def order(age_days, status="pending", series_id=series):
        return factory.order(store_id, [(product_id, 1, 1000)], customer_id=customer_id,
                             status=status, age_days=age_days, series_id=series_id)

    earlier = order(9)
    this = order(6)
    later_pending, later_on_hold = order(4), order(2, "on_hold")
    later_completed = order(3, "completed")
    other_series = order(1, series_id=f"S-other-{factory._unique()}")
    token = factory.token(factory.user("store_manager", stores=[store_id]))

    response = cancel(client, this, token, scope="all_future")

    assert response.status_code == 200, response.json
    assert sorted(response.json["also_cancelled"]) == sorted([later_pending, later_on_hold])
    statuses = {oid: get_order(client, token, oid)["status"]
                for oid in (earlier, this, later_pending, later_on_hold, later_completed,
                            other_series)}
    assert statuses == {earlier: "pending", this: "cancelled", later_pending: "cancelled",
                        later_on_hold: "cancelled", later_completed: "completed",
                        other_series: "pending"}
    # stock: 3 units released, the 3 still-open orders keep theirs (earlier, other, completed=0)
    assert inventory(client, token, store_id)[product_id]["reserved"] == 2


def test_recurring_this_instance_cancels_only_this_order(client, factory):
    store_id = factory.store()
    product_id = factory.product(1000)
    factory.stock(store_id, product_id)
    series = f"S-{factory._unique()}"
    this = factory.order(store_id, [(product_id, 1, 1000)], age_days=3, series_id=series)
    later = factory.order(store_id, [(product_id, 1, 1000)], age_days=1, series_id=series)
    token = factory.token(factory.user("admin"))

    response = cancel(client, this, token, scope="this_instance")

    assert response.status_code == 200
    assert "also_cancelled" not in response.json
    assert get_order(client, token, later)["status"] == "pending"


def test_cancelled_at_and_previous_status_are_recorded(app, client, factory):
    shop = factory.shop(role="admin", status="on_hold")
    response = cancel(client, shop["order_id"], shop["token"])
    assert response.status_code == 200
    assert response.json["cancelled_at"].endswith("Z")
    from models import Order, db, utcnow
    with app.app_context():
        order = db.session.get(Order, shop["order_id"])
        assert order.previous_status == "on_hold"
        assert utcnow() - order.cancelled_at < timedelta(minutes=1)


def test_all_future_never_reports_an_order_that_only_got_an_approval_request(app, client,
                                                                             factory):
    store_id = factory.store()
    product_id = factory.product(1000)
    factory.stock(store_id, product_id)
    series = f"S-{factory._unique()}"
    this = factory.order(store_id, [(product_id, 1, 1000)], age_days=3, series_id=series)
    small = factory.order(store_id, [(product_id, 1, 1000)], age_days=2, series_id=series)
    big = factory.order(store_id, [(product_id, 1, 60000)], age_days=1, series_id=series)
    token = factory.token(factory.user("ops_engineer"))  # needs approval above 500.00

    response = cancel(client, this, token, scope="all_future")

    assert response.status_code == 200, response.json
    assert response.json["also_cancelled"] == [small]
    assert get_order(client, token, big)["status"] == "pending"
    assert [a["order_id"] for a in response.json.get("approval_requested", [])] == [big]


def test_concurrent_inventory_returns_put_stock_back_once(app, factory):
    import threading

    store_id = factory.store()
    unstocked = factory.product(1500)
    order_id = factory.order(store_id, [(unstocked, 7, 1500)], customer_id=factory.customer())
    token = factory.token(factory.user("admin"))
    assert cancel(app.test_client(), order_id, token).status_code == 200
    barrier = threading.Barrier(8)
    results = []

    def attempt():
        client = app.test_client()
        barrier.wait()
        response = client.put("/api/v1/inventory/return", json={"order_id": order_id},
                              headers=bearer(token))
        results.append((response.status_code, response.json))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(status < 500 for status, _ in results), results
    returned = [body["returned"] for status, body in results if status == 200]
    assert returned.count([{"product_id": unstocked, "quantity": 7}]) == 1, results
    stock = inventory(app.test_client(), token, store_id)
    assert stock[unstocked]["on_hand"] == 7
