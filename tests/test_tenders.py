"""Refunds the way the customer paid: per tender, never more than each paid; cash waits at the
counter, card and debit go through the sandbox processor over HTTP, store credit on request; and
reinstatement after each kind of refund brings the order back with what it owes."""
from hypothesis import given, settings, strategies as st

from conftest import assert_api_error, bearer, cancel, wait_for
from helpers import count

# --- the arithmetic: cancellation/plan.py allocate ------------------------------------------

payments = st.lists(st.tuples(st.sampled_from(["cash", "debit", "card", "store_credit"]),
                              st.integers(0, 50_000)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(paid=payments, amount=st.integers(0, 250_000))
def test_a_refund_never_gives_back_more_than_a_tender_paid(paid, amount):
    from cancellation.plan import allocate

    rows = [(n + 1, tender, cents) for n, (tender, cents) in enumerate(paid)]
    split = allocate(rows, amount)
    assert all(0 <= split[i] <= cents for i, _tender, cents in rows)
    assert sum(split.values()) == min(amount, sum(cents for *_, cents in rows))
    credit = sum(cents for _, tender, cents in rows if tender == "store_credit")
    # Store credit first: nothing goes to another tender while store credit is left.
    given_to_credit = sum(split[i] for i, tender, _ in rows if tender == "store_credit")
    assert given_to_credit == min(amount, credit)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(paid=payments, parts=st.lists(st.integers(0, 60_000), max_size=4))
def test_partial_refunds_then_the_rest_equal_one_full_refund_per_tender(paid, parts):
    from cancellation.plan import allocate

    left = {n + 1: cents for n, (_tender, cents) in enumerate(paid)}
    tenders = {n + 1: tender for n, (tender, _cents) in enumerate(paid)}
    refunded = dict.fromkeys(left, 0)
    for part in parts:
        split = allocate([(i, tenders[i], left[i]) for i in left], part)
        for i, cents in split.items():
            refunded[i] += cents
            left[i] -= cents
    # The closing cancellation refunds everything refundable.
    split = allocate([(i, tenders[i], left[i]) for i in left], sum(left.values()))
    for i, cents in split.items():
        refunded[i] += cents
    assert refunded == {n + 1: cents for n, (_tender, cents) in enumerate(paid)}


def test_the_documented_order_store_credit_first_then_in_proportion():
    from cancellation.plan import allocate

    rows = [(1, "cash", 3000), (2, "card", 1000), (3, "store_credit", 500)]
    assert allocate(rows, 2500) == {3: 500, 1: 1500, 2: 500}
    assert allocate(rows, 4500) == {1: 3000, 2: 1000, 3: 500}
    assert allocate(rows, 9999) == {1: 3000, 2: 1000, 3: 500}  # never more than paid


# --- through the API, with the worker and the sandbox processor -----------------------------

def shop(factory, tenders, *, customer=True, price=1000, quantity=2, credit=0):
    """A store, a product, a manager with a token and an order of `quantity` x `price` + 10 %
    tax paid by `tenders` [(tender, cents)] (None: split by the caller's numbers)."""
    store_id = factory.store()
    product_id = factory.product(price)
    factory.stock(store_id, product_id, on_hand=50)
    customer_id = factory.customer() if customer else None
    if credit and customer_id:
        from models import Customer, db

        with factory.app.app_context():
            db.session.get(Customer, customer_id).store_credit_cents = credit
            db.session.commit()
    order_id = factory.order(store_id, [(product_id, quantity, price)], customer_id=customer_id,
                             tenders=tenders)
    manager = factory.user("store_manager", stores=[store_id])
    return {"store_id": store_id, "product_id": product_id, "customer_id": customer_id,
            "order_id": order_id, "token": factory.token(manager), "manager": manager,
            "ops": factory.token(factory.user("ops_engineer"))}


def refunds_of(app, order_id):
    from models import Refund, db

    with app.app_context():
        return [(r.method, r.amount_cents, r.status, r.idempotency_key, r.payment_id)
                for r in db.session.scalars(db.select(Refund).where(Refund.order_id == order_id)
                                            .order_by(Refund.id))]


def mail_to(app, customer_id):
    from models import Customer, MailMessage, db

    with app.app_context():
        email = db.session.get(Customer, customer_id).email
        return [m.body for m in db.session.scalars(db.select(MailMessage).where(
            MailMessage.recipient == email).order_by(MailMessage.id))]


def test_a_cash_order_is_refunded_at_the_counter_never_through_the_processor(
        app, client, factory, worker, sandbox):
    s = shop(factory, [("cash", 2200)])
    response = cancel(client, s["order_id"], s["token"])
    assert response.status_code == 200, response.json

    [(tender, cents, status, key, _payment)] = refunds_of(app, s["order_id"])
    assert (tender, cents, status) == ("cash", 2200, "awaiting_payout")
    [refund] = response.json["refunds"]
    assert refund["tender"] == "cash" and refund["status"] == "awaiting_payout"
    # The customer is told where to collect it.
    body = wait_for(lambda: mail_to(app, s["customer_id"]), message="the cancellation notice")[0]
    assert "cash refund of $22.00 is waiting for you at" in body
    assert sandbox.refunds(idempotency_key=key) == []
    # A retry click cannot send cash to the processor either.
    refund_id = response.json["refunds"][0]["id"]
    retried = client.post(f"/api/v1/orders/{s['order_id']}/refund", headers=bearer(s["token"]))
    assert retried.status_code in (200, 202, 400), retried.json
    assert refunds_of(app, s["order_id"])[0][2] == "awaiting_payout"
    assert sandbox.refunds(idempotency_key=key) == [] and refund_id


def test_a_split_tender_order_refunds_each_tender_its_share(app, client, factory, worker,
                                                            sandbox):
    s = shop(factory, [("cash", 1200), ("card", 1000)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200

    def settled():
        rows = refunds_of(app, s["order_id"])
        return rows if all(r[2] != "pending" and r[2] != "processing" for r in rows) else None

    rows = wait_for(settled, message="the card refund to be paid")
    assert sorted((r[0], r[1], r[2]) for r in rows) == [
        ("card", 1000, "succeeded"), ("cash", 1200, "awaiting_payout")]
    card_key = next(r[3] for r in rows if r[0] == "card")
    [payout] = sandbox.refunds(idempotency_key=card_key)
    assert payout["amount_cents"] == 1000
    body = wait_for(lambda: mail_to(app, s["customer_id"]), message="the notice")[0]
    assert "$10.00 is on its way to the card" in body and "cash refund of $12.00" in body


def test_partial_then_full_refunds_each_tender_exactly_what_it_paid(app, client, factory):
    from models import Payment, db

    s = shop(factory, [("cash", 1500), ("debit", 700)], quantity=4, price=500)
    order = client.get(f"/api/v1/orders/{s['order_id']}", headers=bearer(s["token"])).json
    item_id = order["items"][0]["id"]
    response = client.put(f"/api/v1/orders/{s['order_id']}/items",
                           json={"reason": "inventory_issues",
                                 "items": [{"item_id": item_id, "quantity": 1}]},
                           headers=bearer(s["token"]))
    assert response.status_code in (200, 201), response.json
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    with app.app_context():
        paid = {p.tender: (p.amount_cents, p.refunded_cents) for p in db.session.scalars(
            db.select(Payment).where(Payment.order_id == s["order_id"]))}
    assert paid == {"cash": (1500, 1500), "debit": (700, 700)}
    rows = refunds_of(app, s["order_id"])
    assert sum(r[1] for r in rows if r[0] == "cash") == 1500
    assert sum(r[1] for r in rows if r[0] == "debit") == 700


def test_refund_as_store_credit_when_the_customer_agrees(app, client, factory, worker, sandbox):
    from models import Cancellation, Customer, StoreCreditEntry, db

    s = shop(factory, [("card", 2200)])
    refused = cancel(client, s["order_id"], s["token"], store_credit_reason="  ")
    assert_api_error(refused, 400, "validation_error")
    response = cancel(client, s["order_id"], s["token"],
                      store_credit_reason="Customer asked for credit at the counter")
    assert response.status_code == 200, response.json
    [(tender, cents, status, key, _payment)] = refunds_of(app, s["order_id"])
    assert (tender, cents, status) == ("store_credit", 2200, "succeeded")
    assert response.json["customer"]["store_credit"] == "22.00"
    with app.app_context():
        assert db.session.get(Customer, s["customer_id"]).store_credit_cents == 2200
        [entry] = db.session.scalars(db.select(StoreCreditEntry).where(
            StoreCreditEntry.customer_id == s["customer_id"]))
        assert (entry.amount_cents, entry.kind) == (2200, "refund")
        cancellation = db.session.scalar(db.select(Cancellation).where(
            Cancellation.order_id == s["order_id"]))
        assert cancellation.refund_to == "store_credit"
        assert cancellation.refund_to_reason == "Customer asked for credit at the counter"
    assert sandbox.refunds(idempotency_key=key) == []


def test_store_credit_needs_a_customer(app, client, factory):
    s = shop(factory, [("card", 2200)], customer=False)
    response = cancel(client, s["order_id"], s["token"], store_credit_reason="asked")
    assert_api_error(response, 400, "validation_error")
    assert count(app, __import__("models").Refund,
                 __import__("models").Refund.order_id == s["order_id"]) == 0


def test_the_preview_shows_the_refund_per_tender(client, factory):
    s = shop(factory, [("store_credit", 500), ("cash", 1700)])
    preview = client.get(f"/api/v2/orders/{s['order_id']}/cancel/preview",
                         headers=bearer(s["ops"])).json
    assert preview["refund"]["split"] == [
        {"tender": "store_credit", "paid_in": "store_credit", "amount": "5.00",
         "how": "store_credit"},
        {"tender": "cash", "paid_in": "cash", "amount": "17.00", "how": "counter"}]


# --- reinstatement after each kind of refund --------------------------------------------------

def reinstate(client, s, **body):
    import uuid

    return client.post(f"/api/v2/orders/{s['order_id']}/reinstate",
                       json={"reason": "customer changed their mind", **body},
                       headers=bearer(s["ops"], **{"X-Idempotency-Key": str(uuid.uuid4())}))


def eligibility_of(client, s):
    return client.get(f"/api/v2/orders/{s['order_id']}/reinstate/eligibility",
                      headers=bearer(s["ops"])).json


def order_of(client, s):
    return client.get(f"/api/v1/orders/{s['order_id']}", headers=bearer(s["token"])).json


def test_reinstating_before_the_cash_was_handed_over_voids_it(app, client, factory):
    s = shop(factory, [("cash", 2200)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    eligibility = eligibility_of(client, s)
    assert eligibility["eligible"] is True
    assert [m["effect"] for m in eligibility["effects"]["money"]] == ["void"]
    assert eligibility["effects"]["balance_due"] == "0.00"
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    assert response.json["balance_due"] == "0.00" and response.json["payment_status"] == "paid"
    assert refunds_of(app, s["order_id"])[0][2] == "voided"
    order = order_of(client, s)
    assert order["payments"][0]["refunded"] == "0.00" and order["refunded"] == "0.00"


def test_reinstating_after_the_cash_was_paid_out_leaves_a_balance_due(app, client, factory):
    from models import Refund, db

    s = shop(factory, [("cash", 2200)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    with app.app_context():  # handed over at the counter (cancellation/payouts.py's job)
        db.session.execute(db.update(Refund).where(Refund.order_id == s["order_id"])
                           .values(status="succeeded", drawer="Drawer 1",
                                   paid_out_by_id=s["manager"]))
        db.session.commit()
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    assert (response.json["payment_status"], response.json["balance_due"]) == (
        "balance_due", "22.00")
    order = order_of(client, s)
    assert order["status"] == "pending" and order["balance_due"] == "22.00"
    assert refunds_of(app, s["order_id"])[0][2] == "succeeded"
    # Paid again at pickup: the order owes nothing and shows paid.
    from cancellation import payouts
    from cancellation.audit import AuditContext
    from models import User

    with app.app_context():
        payouts.take_balance(s["order_id"], db.session.get(User, s["manager"]), tender="cash",
                             amount_cents=2200, drawer="Drawer 2",
                             context=AuditContext(source="panel"))
    order = order_of(client, s)
    assert (order["balance_due"], order["payment_status"]) == ("0.00", "paid")
    assert [(p["tender"], p["amount"]) for p in order["payments"]] == [
        ("cash", "22.00"), ("cash", "22.00")]


def test_reinstating_takes_store_credit_back_and_bills_what_was_spent(app, client, factory):
    from models import Customer, StoreCreditEntry, db

    s = shop(factory, [("card", 2200)])
    assert cancel(client, s["order_id"], s["token"],
                  store_credit_reason="customer agreed").status_code == 200
    with app.app_context():  # the customer spent 5.00 of the credit meanwhile
        db.session.get(Customer, s["customer_id"]).store_credit_cents -= 500
        db.session.commit()
    eligibility = eligibility_of(client, s)
    [money] = eligibility["effects"]["money"]
    assert (money["effect"], money["store_credit_taken_back"], money["due"]) == (
        "store_credit", "17.00", "5.00")
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    assert response.json["balance_due"] == "5.00"
    with app.app_context():
        assert db.session.get(Customer, s["customer_id"]).store_credit_cents == 0
        kinds = sorted((e.kind, e.amount_cents) for e in db.session.scalars(
            db.select(StoreCreditEntry).where(StoreCreditEntry.customer_id == s["customer_id"])))
        assert kinds == [("refund", 2200), ("reinstatement", -1700)]


def test_the_balance_can_be_paid_from_store_credit_at_reinstatement(app, client, factory,
                                                                    worker):
    from models import Customer, db

    s = shop(factory, [("card", 2200)], credit=5000)

    def refunded():
        return refunds_of(app, s["order_id"])[0][2] == "succeeded"

    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    wait_for(refunded, message="the card refund to be paid by the processor")
    response = reinstate(client, s, use_store_credit=True)
    assert response.status_code == 200, response.json
    assert (response.json["balance_due"], response.json["payment_status"]) == ("0.00", "paid")
    order = order_of(client, s)
    assert [p["tender"] for p in order["payments"]] == ["card", "store_credit"]
    with app.app_context():
        assert db.session.get(Customer, s["customer_id"]).store_credit_cents == 5000 - 2200


def test_an_order_cancelled_piece_by_piece_can_be_reinstated(app, client, factory):
    from models import Order, db

    s = shop(factory, [("cash", 2200)], quantity=2)
    item_id = order_of(client, s)["items"][0]["id"]
    for _ in range(2):
        response = client.put(f"/api/v1/orders/{s['order_id']}/items",
                               json={"reason": "inventory_issues",
                                     "items": [{"item_id": item_id, "quantity": 1}]},
                               headers=bearer(s["token"]))
        assert response.status_code in (200, 201), response.json
    assert order_of(client, s)["status"] == "cancelled"
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    with app.app_context():
        order = db.session.get(Order, s["order_id"])
        # The last cancellation is undone: one unit open again, owing what it is worth.
        assert order.status == "pending" and order.items[0].open_quantity == 1
        assert order.total_cents == 1100 and order.paid_cents - order.refunded_cents == 1100


def test_cancelling_again_clears_the_balance_and_reinstating_again_owes_it(app, client, factory,
                                                                          worker):
    """Reinstated with a balance due, then cancelled again before paying: nothing is refunded
    (the customer holds nothing of ours) and nothing is owed; reinstated once more, it is owed
    again. Never a second payout for the same money."""
    s = shop(factory, [("card", 2200)])
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    wait_for(lambda: refunds_of(app, s["order_id"])[0][2] == "succeeded",
             message="the card refund to be paid")
    assert reinstate(client, s).json["balance_due"] == "22.00"

    again = cancel(client, s["order_id"], s["token"])
    assert again.status_code == 200, again.json
    order = order_of(client, s)
    assert (order["balance_due"], order["payment_status"]) == ("0.00", "refunded")
    assert len(refunds_of(app, s["order_id"])) == 1  # no second refund
    assert again.json["cancellations"][-1]["refund_amount"] == "0.00"

    eligibility = eligibility_of(client, s)
    assert eligibility["effects"]["balance_due"] == "22.00"
    response = reinstate(client, s)
    assert response.status_code == 200, response.json
    assert (response.json["balance_due"], response.json["payment_status"]) == (
        "22.00", "balance_due")


def test_a_partial_cancel_of_an_order_with_a_balance_due_lowers_what_is_owed_first(
        app, client, factory):
    from models import Order, Refund, db

    s = shop(factory, [("cash", 4400)], quantity=4)  # 4 x 10.00 + 10 % tax
    assert cancel(client, s["order_id"], s["token"]).status_code == 200
    with app.app_context():  # the cash was handed over
        db.session.execute(db.update(Refund).where(Refund.order_id == s["order_id"])
                           .values(status="succeeded", drawer="Drawer 1"))
        db.session.commit()
    assert reinstate(client, s).json["balance_due"] == "44.00"
    item_id = order_of(client, s)["items"][0]["id"]
    response = client.put(f"/api/v1/orders/{s['order_id']}/items",
                          json={"reason": "inventory_issues",
                                "items": [{"item_id": item_id, "quantity": 1}]},
                          headers=bearer(s["token"]))
    assert response.status_code == 200, response.json
    with app.app_context():
        order = db.session.get(Order, s["order_id"])
        assert (order.total_cents, order.balance_due_cents) == (3300, 3300)
        assert order.payment_status == "balance_due"
    assert len(refunds_of(app, s["order_id"])) == 1  # nothing refunded: they owed it
