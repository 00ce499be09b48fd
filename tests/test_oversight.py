"""Abuse monitoring (flagged past the limit or far above the store's average, shown, acknowledged
by an admin, never blocking), the compliance report's CSV, and customer-data protection."""
import csv
import io
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conftest import bearer, cancel, csrf_from
from helpers import email_of


def flags_of(app, user_id):
    from models import AbuseFlag, db

    with app.app_context():
        return [(f.id, f.kind, f.count, f.acknowledged_at is not None, f.store_id) for f in
                db.session.scalars(db.select(AbuseFlag).where(AbuseFlag.user_id == user_id)
                                   .order_by(AbuseFlag.id))]


def audit_actions_for(app, action, target_id):
    from models import AuditEvent, db

    with app.app_context():
        return db.session.scalars(db.select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.target_id == str(target_id))).all()


def make_orders(factory, store, product, count):
    return [factory.order(store, [(product, 1, 1000)]) for _ in range(count)]


def test_too_many_cancellations_in_an_hour_raise_a_flag_that_never_blocks(
        app, client, auth, factory, setting):
    setting("abuse_cancels_per_hour", 2)
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product)
    manager = factory.user("store_manager", stores=[store])
    token = factory.token(manager)
    orders = make_orders(factory, store, product, 4)

    for order_id in orders[:2]:
        assert cancel(client, order_id, token, notify_customer=False).status_code == 200
    assert flags_of(app, manager) == []  # at the limit is not past it

    assert cancel(client, orders[2], token, notify_customer=False).status_code == 200
    [(flag_id, kind, count, acknowledged, flag_store)] = flags_of(app, manager)
    assert (kind, count, acknowledged, flag_store) == ("hourly_volume", 3, False, store)
    [event] = audit_actions_for(app, "abuse.flagged", manager)
    assert event.after["count"] == 3 and event.after["kind"] == "hourly_volume"
    assert event.store_id == store

    # The flag blocks nothing: the next cancellation goes through, and the open flag keeps count.
    assert cancel(client, orders[3], token, notify_customer=False).status_code == 200
    assert flags_of(app, manager) == [(flag_id, "hourly_volume", 4, False, store)]
    assert len(audit_actions_for(app, "abuse.flagged", manager)) == 1

    # Shown on the dashboard of the store's manager and of an admin.
    panel = app.test_client()
    auth(manager, client=panel)
    page = panel.get("/dashboard").get_data(as_text=True)
    assert f'data-flag-id="{flag_id}"' in page and "4 cancellations in the last hour" in page
    assert f'data-testid="acknowledge-{flag_id}"' not in page  # managers do not acknowledge
    response = panel.post(f"/dashboard/abuse-flags/{flag_id}/acknowledge",
                          data={"csrf_token": csrf_from(panel.get("/dashboard"))})
    assert response.status_code == 403

    admin = app.test_client()
    auth(role="admin", client=admin)
    page = admin.get("/dashboard")
    assert f'data-testid="acknowledge-{flag_id}"' in page.get_data(as_text=True)
    # Without the CSRF token nothing happens.
    assert admin.post(f"/dashboard/abuse-flags/{flag_id}/acknowledge").status_code == 400
    assert flags_of(app, manager)[0][3] is False
    response = admin.post(f"/dashboard/abuse-flags/{flag_id}/acknowledge",
                          data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "acknowledged" in response.get_data(as_text=True)
    assert flags_of(app, manager)[0][3] is True
    [ack] = audit_actions_for(app, "abuse.acknowledged", flag_id)
    assert ack.actor_id is not None and ack.after["user_id"] == manager
    page = admin.get("/dashboard")
    assert re.search(rf'data-flag-id="{flag_id}"[^>]*data-acknowledged="1"',
                     page.get_data(as_text=True))
    # Twice is harmless.
    response = admin.post(f"/dashboard/abuse-flags/{flag_id}/acknowledge",
                          data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "already acknowledged" in response.get_data(as_text=True)
    assert admin.post("/dashboard/abuse-flags/2147483000/acknowledge",
                      data={"csrf_token": csrf_from(page)}).status_code == 404

    # Other stores' managers do not see it.
    outsider = app.test_client()
    auth(role="store_manager", stores=[factory.store()], client=outsider)
    assert f'data-flag-id="{flag_id}"' not in outsider.get("/dashboard").get_data(as_text=True)


def test_an_admin_is_flagged_too_but_never_blocked(app, client, factory, setting):
    setting("abuse_cancels_per_hour", 1)
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product)
    admin = factory.user("admin")
    token = factory.token(admin)
    for order_id in make_orders(factory, store, product, 3):
        assert cancel(client, order_id, token, notify_customer=False).status_code == 200
    assert [(kind, count) for _, kind, count, *_ in flags_of(app, admin)] == [("hourly_volume", 3)]


def test_far_above_the_store_average_raises_a_flag(app, client, factory, setting):
    setting("abuse_outlier_min_count", 4)
    setting("abuse_outlier_factor", 3)
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product)
    calm = [factory.user("store_manager", stores=[store]) for _ in range(2)]
    busy = factory.user("store_manager", stores=[store])
    for user in calm:
        [order_id] = make_orders(factory, store, product, 1)
        assert cancel(client, order_id, factory.token(user), notify_customer=False) \
            .status_code == 200
    token = factory.token(busy)
    for n, order_id in enumerate(make_orders(factory, store, product, 4), start=1):
        assert cancel(client, order_id, token, notify_customer=False).status_code == 200
        # 3 cancellations are 3x the others' average of 1, not above it; 4 are.
        assert bool(flags_of(app, busy)) is (n >= 4), n
    [(_, kind, count, _, flag_store)] = flags_of(app, busy)
    assert (kind, count, flag_store) == ("store_outlier", 4, store)
    for user in calm:
        assert flags_of(app, user) == []


@pytest.mark.parametrize("probe_rows", [0, 10**9], ids=["all-counted", "counted-to-bound"])
@pytest.mark.parametrize("factor, flagged", [(3, True), (10_000, False)])
def test_the_outlier_check_flags_the_same_however_the_others_are_counted(
        app, client, factory, setting, monkeypatch, probe_rows, factor, flagged):
    """The other staff's cancellations are read only up to the number that rules an outlier out
    (or all of them when that number is large): the same flag either way."""
    from cancellation import oversight

    monkeypatch.setattr(oversight, "OUTLIER_PROBE_ROWS", probe_rows)
    setting("abuse_outlier_min_count", 4)
    setting("abuse_outlier_factor", factor)
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product)
    calm = factory.user("store_manager", stores=[store])
    [order_id] = make_orders(factory, store, product, 1)
    assert cancel(client, order_id, factory.token(calm), notify_customer=False).status_code == 200
    busy = factory.user("store_manager", stores=[store])
    token = factory.token(busy)
    for order_id in make_orders(factory, store, product, 4):
        assert cancel(client, order_id, token, notify_customer=False).status_code == 200
    assert [(kind, count) for _, kind, count, *_ in flags_of(app, busy)] \
        == ([("store_outlier", 4)] if flagged else [])


def test_compliance_report_lists_the_voided_lines_of_a_store_day(app, client, auth, factory):
    from models import Order, Store, db

    store = factory.store()
    with app.app_context():
        db.session.get(Store, store).timezone = "America/Denver"
        db.session.commit()
    flower, vape = factory.product(1500), factory.product(4000)
    factory.stock(store, flower)
    factory.stock(store, vape)
    manager = factory.user("store_manager", stores=[store])
    token = factory.token(manager)
    order_id = factory.order(store, [(flower, 2, 1500), (vape, 1, 4000)])
    kept = factory.order(store, [(flower, 1, 1500)])  # not cancelled: not in the report
    assert cancel(client, order_id, token, reason="regulatory_compliance",
                  notes="Purchase limit exceeded").status_code == 200
    local_day = datetime.now(ZoneInfo("UTC")).astimezone(ZoneInfo("America/Denver")).date()
    with app.app_context():
        number = db.session.get(Order, order_id).number
        kept_number = db.session.get(Order, kept).number

    panel = app.test_client()
    auth(manager, client=panel)
    response = panel.get(f"/audit/compliance.csv?store={store}&date={local_day}")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert f"{local_day}.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 2 and kept_number not in response.get_data(as_text=True)
    by_price = {row["unit_price"]: row for row in rows}
    for price, voided, amount in (("15.00", "2", "30.00"), ("40.00", "1", "40.00")):
        assert by_price[price]["quantity_voided"] == voided, price
        assert by_price[price]["line_amount"] == amount, price
    for row in rows:
        assert row["order_number"] == number
        assert row["reason_code"] == "regulatory_compliance"
        assert row["cancelled_by"] == email_of(app, manager)
        assert row["order_total"] == "77.00" and row["cancellation_refund"] == "77.00"
        assert row["business_date"] == local_day.isoformat()
        assert row["cancelled_at_local"].startswith(local_day.isoformat())
        assert row["stock_returned"] == "yes"

    # Another day: the header only. Another store: not found. No day: a clear 400.
    other_day = panel.get(f"/audit/compliance.csv?store={store}&date=2020-01-01")
    assert other_day.get_data(as_text=True).strip().count("\n") == 0
    assert panel.get(f"/audit/compliance.csv?store={factory.store()}&date={local_day}") \
        .status_code == 404
    assert panel.get(f"/audit/compliance.csv?store={store}").status_code == 400
    # No customer data in it.
    with app.app_context():
        customer_email = db.session.get(Order, order_id).customer
    assert customer_email is None or customer_email.email not in response.get_data(as_text=True)


def test_the_customer_notification_carries_only_order_items_and_amounts(app, client, factory):
    from cancellation.outbox import notification_message
    from models import Customer, Notification, Order, db

    shop = factory.shop(role="store_manager")
    assert cancel(client, shop["order_id"], shop["token"]).status_code == 200
    with app.app_context():
        notification = db.session.scalar(db.select(Notification).where(
            Notification.order_id == shop["order_id"]))
        customer = db.session.get(Customer, shop["customer_id"])
        order = db.session.get(Order, shop["order_id"])
        subject, body = notification_message(notification)
        for secret in (customer.email, customer.phone, customer.name, "loyalty"):
            assert secret not in subject + body
        assert order.number in subject and "$55.00" in body and "2 x" in body


def test_redaction_masks_contact_details_for_roles_without_access():
    from cancellation.oversight import redact

    value = {"request_contact": "+1 (415) 555-0134", "recipient": "amy@example.com",
             "notes": "Spoke to amy@example.com on 415.555.0134 about order T-2024-01-05",
             "nested": [{"email": "bo@example.net"}], "total": "12.50"}
    masked = redact(value, see_contact=False)
    flat = repr(masked)
    assert "amy@example.com" not in flat and "bo@example.net" not in flat
    assert "555-0134" not in flat and "555.0134" not in flat
    assert masked["recipient"] == "a***@example.com"
    assert masked["request_contact"] == "***-***-0134"
    assert "T-2024-01-05" in masked["notes"] and masked["total"] == "12.50"
    assert redact(value, see_contact=True) == value


def test_cancellations_performed_by_approving_count_for_the_approver(
        app, client, factory, setting):
    """Approving performs the cancellation as the approver: it goes through the same
    after-commit step as a direct cancel, so the approver's cancelling is checked too."""
    setting("abuse_cancels_per_hour", 1)
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product)
    clerk = factory.user("fulfillment", stores=[store])
    clerk_token = factory.token(clerk)
    manager = factory.user("store_manager", stores=[store])
    manager_token = factory.token(manager)

    for order_id in [factory.order(store, [(product, 1, 1000)], status="in_progress")
                     for _ in range(2)]:
        asked = client.post(f"/api/v1/orders/{order_id}/approval_request",
                            headers=bearer(clerk_token),
                            json={"justification": "Customer left", "reason":
                                  "operational_issues"})
        assert asked.status_code == 201, asked.json
        approved = client.post(
            f"/api/v1/approval_requests/{asked.json['approval_request']['id']}/approve",
            headers=bearer(manager_token), json={})
        assert approved.status_code == 200, approved.json

    [(_flag_id, kind, count, acknowledged, flag_store)] = flags_of(app, manager)
    assert (kind, count, acknowledged, flag_store) == ("hourly_volume", 2, False, store)
    assert flags_of(app, clerk) == []  # asking is not cancelling
