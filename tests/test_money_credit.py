"""Attack: reinstating an order whose refund went out as store credit."""
from test_tenders import refunds_of, reinstate, shop

from conftest import cancel
from helpers import money_state


def test_credit_taken_back_on_reinstate_restores_what_the_order_holds(app, client, factory):
    s = shop(factory, [("card", 2200)])
    assert cancel(client, s["order_id"], s["token"],
                  store_credit_reason="customer agreed").status_code == 200
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    o = money_state(app, s["order_id"])
    # The customer's 22.00 credit was taken back in full: the order holds its 22.00 again.
    assert o["status"] == "pending"
    assert o["paid"] - o["refunded"] + o["due"] == o["total"], o
    assert o["payment_status"] == "paid", o


def test_credit_taken_back_then_cancel_again_refunds_the_customer(app, client, factory):
    from models import Customer, db

    s = shop(factory, [("card", 2200)])
    assert cancel(client, s["order_id"], s["token"],
                  store_credit_reason="customer agreed").status_code == 200
    assert reinstate(client, s).status_code == 200
    with app.app_context():
        assert db.session.get(Customer, s["customer_id"]).store_credit_cents == 0
    again = cancel(client, s["order_id"], s["token"])
    assert again.status_code == 200, again.json
    # The customer paid 22.00 and holds nothing of it back: the second cancel must refund 22.00.
    assert sum(r[1] for r in refunds_of(app, s["order_id"]) if r[2] != "voided") - 2200 == 2200
