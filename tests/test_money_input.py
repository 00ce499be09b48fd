"""Attack: malformed panel input on the money forms; cross-store access."""
import pytest

from test_payouts import cash_refund_id, money_of, owing

from conftest import csrf_from


@pytest.mark.parametrize("amount", ["Infinity", "sNaN", "1e999999", "NaN", "-Infinity", "0.001"])
def test_take_payment_amount_never_500(app, auth, factory, amount):
    shop = owing(app, factory, due=1000)
    manager = auth(shop["user_id"], client=app.test_client())
    detail = manager.client.get(f"/orders/{shop['order_id']}")
    response = manager.client.post(f"/orders/{shop['order_id']}/take-payment", data={
        "csrf_token": csrf_from(detail), "tender": "card", "amount": amount})
    assert response.status_code in (302, 303), (amount, response.status_code)


@pytest.mark.parametrize("tender", ["", "bitcoin", "store_credit\x00"])
def test_take_payment_tender_never_500(app, auth, factory, tender):
    shop = owing(app, factory, due=1000)
    manager = auth(shop["user_id"], client=app.test_client())
    detail = manager.client.get(f"/orders/{shop['order_id']}")
    response = manager.client.post(f"/orders/{shop['order_id']}/take-payment", data={
        "csrf_token": csrf_from(detail), "tender": tender, "amount": "1.00"})
    assert response.status_code in (302, 303)
    assert money_of(app, shop["order_id"])[0] == 1000


@pytest.mark.parametrize("drawer", ["\x00", "a" * 41, "\u202e1 rewarD", "\t", "=cmd|x"])
def test_paid_out_drawer_never_500(app, client, auth, factory, drawer):
    shop = factory.shop(role="store_manager", tenders=[("cash", 5500)])
    refund_id = cash_refund_id(client, shop)
    manager = auth(shop["user_id"], client=app.test_client())
    page = manager.client.get("/payouts")
    response = manager.client.post(f"/payouts/{refund_id}/paid-out", data={
        "csrf_token": csrf_from(page), "drawer": drawer})
    assert response.status_code in (302, 303), response.status_code


def test_cross_store_take_payment_and_paid_out_and_reinstate_are_404(app, client, auth,
                                                                      factory):
    shop = factory.shop(role="store_manager", tenders=[("cash", 5500)])
    refund_id = cash_refund_id(client, shop)
    other = auth(role="store_manager", stores=[factory.store()], client=app.test_client())
    token = other.csrf("/payouts")
    assert other.client.post(f"/payouts/{refund_id}/paid-out",
                             data={"csrf_token": token, "drawer": "D1"}).status_code == 404
    assert other.client.post(f"/orders/{shop['order_id']}/reinstate",
                             data={"csrf_token": token, "reason": "x"}).status_code == 404
    assert other.client.post(f"/orders/{shop['order_id']}/take-payment",
                             data={"csrf_token": token, "tender": "cash", "amount": "1",
                                   "drawer": "D"}).status_code == 404
