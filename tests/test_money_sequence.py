"""Attack: reinstate after a paid-out refund, cancel again, reinstate again."""
import pytest

from cancellation import payouts
from cancellation.audit import AuditContext
from cancellation.errors import CancelDeskError
from models import Payment, Refund, User, db
from test_tenders import refunds_of, reinstate, shop

from conftest import cancel
from helpers import money_state

CTX = AuditContext(source="test")


def _pay_out_all(app, order_id, user_id):
    with app.app_context():
        for r in db.session.scalars(db.select(Refund).where(
                Refund.order_id == order_id, Refund.status == "awaiting_payout")).all():
            payouts.pay_out(r.id, db.session.get(User, user_id), drawer="D1", context=CTX)


def _take(app, order_id, user_id, cents, tender="cash"):
    with app.app_context():
        return payouts.take_balance(order_id, db.session.get(User, user_id), tender=tender,
                                    amount_cents=cents, drawer="D1", context=CTX).id


def test_cancel_again_with_balance_unpaid_clears_the_balance(app, client, factory):
    s = shop(factory, [("cash", 2200)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    _pay_out_all(app, s["order_id"], s["manager"])
    assert reinstate(client, s).status_code == 200
    assert money_state(app, s["order_id"])["due"] == 2200
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    o = money_state(app, s["order_id"])
    # Cancelled, nothing was paid again: the customer owes nothing for a cancelled order.
    assert o["status"] == "cancelled" and o["due"] == 0, o
    # and no counter payment may be taken for a cancelled order
    with pytest.raises(CancelDeskError):
        _take(app, s["order_id"], s["manager"], 2200)


def test_reinstate_cancel_reinstate_with_partial_balance_paid(app, client, factory, sandbox):
    s = shop(factory, [("cash", 2200)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    _pay_out_all(app, s["order_id"], s["manager"])
    assert reinstate(client, s).status_code == 200
    _take(app, s["order_id"], s["manager"], 1000)
    o = money_state(app, s["order_id"])
    assert (o["paid"], o["refunded"], o["due"]) == (3200, 2200, 1200)
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    rows = refunds_of(app, s["order_id"])
    second = [r for r in rows if r[2] == "awaiting_payout"]
    assert [r[1] for r in second] == [1000], rows
    keys = [r[3] for r in rows]
    assert len(keys) == len(set(keys)), keys
    o = money_state(app, s["order_id"])
    assert o["due"] == 0, o
    _pay_out_all(app, s["order_id"], s["manager"])
    assert reinstate(client, s).status_code == 200
    o = money_state(app, s["order_id"])
    # Paid 3200, got 3200 back in cash: owes the whole 2200 again.
    assert o["paid"] - o["refunded"] + o["due"] == o["total"] == 2200, o
    assert o["due"] == 2200, o
    with app.app_context():
        for p in db.session.scalars(db.select(Payment).where(Payment.order_id == s["order_id"])):
            assert 0 <= p.refunded_cents <= p.amount_cents


def test_partial_cancel_of_a_reinstated_order_with_a_balance_due(app, client, factory):
    from conftest import bearer

    s = shop(factory, [("cash", 2200)], quantity=2)
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    _pay_out_all(app, s["order_id"], s["manager"])
    assert reinstate(client, s).status_code == 200
    item_id = client.get(f"/api/v1/orders/{s['order_id']}",
                         headers=bearer(s["token"])).json["items"][0]["id"]
    response = client.put(f"/api/v1/orders/{s['order_id']}/items",
                          json={"reason": "inventory_issues",
                                "items": [{"item_id": item_id, "quantity": 1}]},
                          headers=bearer(s["token"]))
    assert response.status_code in (200, 201), response.json
    o = money_state(app, s["order_id"])
    assert o["paid"] - o["refunded"] + o["due"] == o["total"] == 1100, o
