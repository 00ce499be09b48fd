"""The impact preview (runbook procedure step 2): it changes nothing, not even a timestamp, and it
agrees with what the cancel then does, for orders of every kind."""
import uuid

import pytest

from conftest import (
    Factory,
    assert_api_error,
    bearer,
    cancel,
    order_state,
    v2_cancel,
    v2_wait_cancel,
)


def rows_of(model, *where):
    from models import db

    return [{c.key: getattr(row, c.key) for c in model.__table__.columns}
            for row in db.session.scalars(db.select(model).where(*where)
                                          .order_by(model.__table__.primary_key.columns[0]))]


def deep_snapshot(app, order_id, user_id):
    """Every column of every row a cancellation could touch, plus counts of what it adds."""
    from models import (
        ApiToken,
        ApprovalRequest,
        AuditEvent,
        CancelJob,
        Cancellation,
        Customer,
        IdempotencyKey,
        LoyaltyEntry,
        Notification,
        Order,
        OrderItem,
        Refund,
        StockLevel,
        db,
    )

    with app.app_context():
        order = db.session.get(Order, order_id)
        store_id, customer_id = order.store_id, order.customer_id
        by_order = lambda model: rows_of(model, model.order_id == order_id)  # noqa: E731
        return {
            "order": rows_of(Order, Order.id == order_id),
            "items": rows_of(OrderItem, OrderItem.order_id == order_id),
            "stock": rows_of(StockLevel, StockLevel.store_id == store_id),
            "customer": rows_of(Customer, Customer.id == customer_id),
            "loyalty": rows_of(LoyaltyEntry, LoyaltyEntry.customer_id == customer_id),
            "cancellations": by_order(Cancellation), "refunds": by_order(Refund),
            "notifications": by_order(Notification), "approvals": by_order(ApprovalRequest),
            "audit": by_order(AuditEvent), "jobs": by_order(CancelJob),
            "keys": rows_of(IdempotencyKey, IdempotencyKey.user_id == user_id),
            # All of the token but when it was last used: using a token is what notes that
            # (for the admins' list of tokens), and the preview is a use.
            "tokens": [{k: v for k, v in row.items() if k != "last_used_at"}
                       for row in rows_of(ApiToken, ApiToken.user_id == user_id)],
        }


# --- Preview changes nothing ------------------------------------------------------------------

@pytest.mark.parametrize("role", ["ops_engineer", "admin"])
def test_preview_changes_nothing(app, client, factory, role):
    store = factory.store()
    stocked, unstocked = factory.product(3000), factory.product(900)
    factory.stock(store, stocked, on_hand=10)
    customer = factory.customer(points=200)
    order = factory.order(store, [(stocked, 2, 3000), (unstocked, 1, 900)],
                          customer_id=customer, status="in_progress", points_earned=20,
                          points_redeemed=50, billing_hold=True, age_days=40)
    user = factory.user(role)
    token = factory.token(user)
    before = deep_snapshot(app, order, user)
    for query in ({}, {"notify_stakeholders": "false"}, {"reason": "operational_request"},
                  {"reason": "customer_requested", "notify_stakeholders": "true"}):
        response = client.get(f"/api/v2/orders/{order}/cancel/preview", query_string=query,
                              headers=bearer(token, **{"X-User-ID": str(user)}))
        assert response.status_code == 200, response.json
    assert deep_snapshot(app, order, user) == before
    # And on an order the preview finds nothing wrong with.
    shop = factory.shop(role=role, points_earned=5, points_redeemed=5)
    before = deep_snapshot(app, shop["order_id"], shop["user_id"])
    for _ in range(3):
        assert client.get(f"/api/v2/orders/{shop['order_id']}/cancel/preview",
                          headers=bearer(shop["token"])).json["outcome"] == "cancel"
    assert deep_snapshot(app, shop["order_id"], shop["user_id"]) == before


def test_preview_rejects_a_bad_query(client, factory):
    shop = factory.shop(role="ops_engineer")
    for query in ({"reason": "nope"}, {"notify_stakeholders": "perhaps"}):
        error = assert_api_error(client.get(
            f"/api/v2/orders/{shop['order_id']}/cancel/preview", query_string=query,
            headers=bearer(shop["token"])), 400, "validation_error")
        assert list(query)[0] in error["message"]


def test_preview_of_an_unknown_order_is_404(client, factory):
    token = factory.token(factory.user("ops_engineer"))
    assert_api_error(client.get("/api/v2/orders/2147483001/cancel/preview",
                                headers=bearer(token)), 404, "not_found")


# --- Preview and cancel agree -----------------------------------------------------------------

# Each kind: how to build the order, and whether the cancel is asked to notify.
KINDS = {
    "paid_multi_item_with_points": dict(lines=[("a", 2, 3000), ("b", 3, 1250)],
                                         points_earned=40, points_redeemed=100),
    "unpaid_without_customer": dict(lines=[("a", 1, 2000)], paid=False, customer=None,
                                    points_earned=10),
    "product_without_stock_row": dict(lines=[("a", 1, 2000), ("unstocked", 2, 700)]),
    "customer_without_email": dict(lines=[("a", 1, 2000)], customer="no-email"),
    "notify_false": dict(lines=[("a", 2, 1000)], notify=False, points_redeemed=15),
    "on_hold_paid": dict(lines=[("a", 1, 4000)], status="on_hold"),
    "partially_cancelled_before": dict(lines=[("a", 3, 2000), ("b", 1, 1250)],
                                       partial=True),
    "in_progress": dict(lines=[("a", 1, 2000)], status="in_progress"),
    "over_approval_threshold": dict(lines=[("a", 2, 30000)]),
    "older_than_30_days": dict(lines=[("a", 1, 2000)], age_days=35),
    "billing_hold": dict(lines=[("a", 1, 2000)], billing_hold=True),
    "in_transit": dict(lines=[("a", 1, 2000)], shipment_status="in_transit"),
    "hold_and_in_transit": dict(lines=[("a", 1, 2000)], billing_hold=True,
                                shipment_status="in_transit"),
    "completed": dict(lines=[("a", 1, 2000)], status="completed"),
    "archived_with_billing_hold": dict(lines=[("a", 1, 2000)], status="archived",
                                        billing_hold=True),
}


def build(app, kind):
    """The order of this kind in a store of its own; returns ids."""
    f = Factory(app)
    spec = dict(KINDS[kind])
    store = f.store()
    products = {}
    for name, _q, price in spec["lines"]:
        products[name] = f.product(price)
        if name != "unstocked":
            f.stock(store, products[name], on_hand=30)
    customer = spec.get("customer", "yes")
    customer_id = None if customer is None else f.customer(
        email=None if customer == "no-email" else "auto", points=300)
    order = f.order(store, [(products[n], q, p) for n, q, p in spec["lines"]],
                    customer_id=customer_id, status=spec.get("status", "pending"),
                    paid=spec.get("paid", True), points_earned=spec.get("points_earned", 0),
                    points_redeemed=spec.get("points_redeemed", 0),
                    billing_hold=spec.get("billing_hold", False),
                    shipment_status=spec.get("shipment_status", "not_shipped"),
                    age_days=spec.get("age_days", 0),
                    reserve=spec.get("status", "pending") not in ("completed", "archived"))
    if spec.get("partial"):
        _cancel_one_unit_earlier(app, order, store, products["a"])
    return {"store": store, "order": order, "customer": customer_id, "products": products,
            "notify": spec.get("notify", True)}


def _cancel_one_unit_earlier(app, order_id, store_id, product_id):
    """As an earlier partial cancellation would have left it: one unit of the first line
    cancelled, returned to stock, refunded."""
    from models import Order, StockLevel, db

    with app.app_context():
        order = db.session.get(Order, order_id)
        item = order.items[0]
        item.cancelled_quantity = 1
        order.refunded_cents = 2200
        order.payment_status = "partially_refunded"
        stock = db.session.scalar(db.select(StockLevel).where(
            StockLevel.store_id == store_id, StockLevel.product_id == product_id))
        stock.reserved -= 1
        db.session.commit()


def effects(app, built):
    """What the cancellation actually did, in the preview's terms."""
    from cancellation.privacy import mask_email
    from models import (
        Cancellation,
        Customer,
        LoyaltyEntry,
        Notification,
        Refund,
        StockLevel,
        db,
        money,
    )

    with app.app_context():
        order_id = built["order"]
        cancellation = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == order_id, Cancellation.kind == "full"))
        if cancellation is None:
            return None
        refunds = db.session.scalars(db.select(Refund).where(
            Refund.cancellation_id == cancellation.id)).all()
        notes = db.session.scalars(db.select(Notification).where(
            Notification.cancellation_id == cancellation.id)).all()
        entries = db.session.scalars(db.select(LoyaltyEntry).where(
            LoyaltyEntry.cancellation_id == cancellation.id)).all()
        reserved = {s.product_id: s.reserved for s in db.session.scalars(
            db.select(StockLevel).where(StockLevel.store_id == built["store"]))}
        points = (db.session.get(Customer, built["customer"]).loyalty_points
                  if built["customer"] else None)
        return {
            "lines": sorted((line.product_id, line.quantity, line.stock_returned)
                            for line in cancellation.items),
            "refund": {"amount": money(sum(r.amount_cents for r in refunds)),
                       "method": refunds[0].method if refunds else None,
                       "will_refund": bool(refunds),
                       "split": [{"tender": r.method, "amount": money(r.amount_cents),
                                  "paid_in": r.payment.tender if r.payment else r.method,
                                  "how": {"cash": "counter", "store_credit": "store_credit"}
                                  .get(r.method, "processor")} for r in refunds]},
            "refund_cents_on_cancellation": money(cancellation.refund_cents),
            "loyalty": {"points_to_restore": sum(e.points for e in entries
                                                 if e.kind == "restored"),
                        "points_to_reverse": -sum(e.points for e in entries
                                                  if e.kind == "reversed")},
            "notifications": [{"channel": n.channel, "template": n.template,
                               "recipient": n.recipient, "masked": mask_email(n.recipient)}
                              for n in notes],
            "inventory_reconciliation": cancellation.flag_inventory_reconciliation,
            "reserved": reserved, "points": points,
        }


def reserved_and_points(app, built):
    from models import Customer, StockLevel, db

    with app.app_context():
        reserved = {s.product_id: s.reserved for s in db.session.scalars(
            db.select(StockLevel).where(StockLevel.store_id == built["store"]))}
        points = (db.session.get(Customer, built["customer"]).loyalty_points
                  if built["customer"] else None)
        return reserved, points


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("actor", ["ops_engineer via v2", "admin via v1"])
def test_preview_agrees_with_the_cancel(app, client, factory, worker, kind, actor):
    role, api = actor.split(" via ")
    built = build(app, kind)
    user = factory.user(role)
    token = factory.token(user)
    order = built["order"]
    preview = client.get(f"/api/v2/orders/{order}/cancel/preview",
                         query_string={"notify_stakeholders": str(built["notify"]).lower(),
                                       "reason": "operational_request"},
                         headers=bearer(factory.token(user))).json
    reserved_before, points_before = reserved_and_points(app, built)
    state_before = order_state(app, order)

    if api == "v2":
        response = v2_cancel(client, order, token, notify_stakeholders=built["notify"])
    else:
        response = cancel(client, order, token, reason="operational_request",
                          notes="Cancelled via OpsGuide", notify_customer=built["notify"])

    if preview["outcome"] == "rejected":
        first = preview["errors"][0]
        assert_api_error(response, first["http_status"], first["code"])
        assert order_state(app, order) == state_before
        return
    if preview["outcome"] == "approval_required":
        assert preview["approval"]["required"] is True
        assert response.status_code == 202, response.json
        if api == "v2":
            assert response.json["status"] == "pending_approval"
        assert response.json["approval_request"]["why"] == preview["approval"]["reasons"]
        after = order_state(app, order)
        assert after["status"] == state_before["status"] and after["cancellations"] == 0
        return

    assert preview["outcome"] == "cancel" and preview["errors"] == []
    assert preview["approval"] == {"required": False, "reasons": []}
    if api == "v2":
        assert response.status_code == 202 and response.json["status"] == "processing"
        assert v2_wait_cancel(client, order, token)["status"] == "completed"
    else:
        assert response.status_code == 200, response.json
    did = effects(app, built)
    # Stock: the lines, their quantities, and whether each could go back on the shelf.
    assert did["lines"] == sorted((line["product_id"], line["quantity"],
                                   line["returns_to_stock"])
                                  for line in preview["stock_to_return"])
    assert sum(q for _p, q, _r in did["lines"]) == preview["units_to_return"]
    for line in preview["stock_to_return"]:
        product = line["product_id"]
        if line["returns_to_stock"]:
            assert reserved_before[product] - did["reserved"][product] == line["quantity"]
        else:
            assert product not in did["reserved"]
    assert did["inventory_reconciliation"] == preview["inventory_reconciliation"]
    # Money.
    assert did["refund"] == preview["refund"]
    assert did["refund_cents_on_cancellation"] == preview["refund"]["amount"]
    # Loyalty.
    assert did["loyalty"] == preview["loyalty"]
    if built["customer"]:
        assert did["points"] - points_before == (preview["loyalty"]["points_to_restore"]
                                                 - preview["loyalty"]["points_to_reverse"])
    # Notifications: the same message to the same (masked for ops) recipient, or none.
    shown = "recipient" if role == "admin" else "masked"
    assert [{"channel": n["channel"], "template": n["template"], "recipient": n[shown]}
            for n in did["notifications"]] == preview["notifications"]


def test_preview_shows_every_problem_at_once(client, factory):
    """The cancel answers the first failed check; the preview lists them all, in order."""
    shop = factory.shop(role="ops_engineer", status="completed", billing_hold=True,
                        shipment_status="in_transit")
    preview = client.get(f"/api/v2/orders/{shop['order_id']}/cancel/preview",
                         headers=bearer(shop["token"])).json
    assert preview["outcome"] == "rejected"
    assert [(e["code"], e["http_status"]) for e in preview["errors"]] == [
        ("invalid_state", 400), ("billing_hold_active", 409), ("shipment_in_transit", 409)]
    assert [b["code"] for b in preview["blockers"]] == ["billing_hold_active",
                                                        "shipment_in_transit"]


def test_preview_for_customer_requested_reason_by_ops(client, factory):
    """The preview takes the reason into account the way the cancel would."""
    shop = factory.shop(role="ops_engineer")
    preview = client.get(f"/api/v2/orders/{shop['order_id']}/cancel/preview",
                         query_string={"reason": "customer_requested"},
                         headers=bearer(shop["token"])).json
    assert preview["outcome"] == "cancel"


def test_preview_after_the_cancel_reports_nothing_left_to_do(app, client, factory, worker):
    """After the cancel the preview reports the new state: nothing left to do, invalid state."""
    shop = factory.shop(role="ops_engineer")
    assert v2_cancel(client, shop["order_id"], shop["token"], key=str(uuid.uuid4())
                     ).status_code == 202
    assert v2_wait_cancel(client, shop["order_id"], shop["token"])["status"] == "completed"
    preview = client.get(f"/api/v2/orders/{shop['order_id']}/cancel/preview",
                         headers=bearer(shop["token"])).json
    assert preview["outcome"] == "rejected"
    assert [e["code"] for e in preview["errors"]] == ["invalid_state"]
    assert preview["stock_to_return"] == [] and preview["refund"]["will_refund"] is False
