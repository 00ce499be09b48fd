"""Money at the counter: cash refunds paid out (once, by whom, from which drawer), the drawer
report and its CSV, and a balance due taken at pickup — in the domain and through the panel,
with the races a busy counter produces (two clerks, one refund; two payments, one balance)."""
import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from cancellation import payouts
from cancellation.audit import AuditContext
from cancellation.errors import CancelDeskError
from models import AuditEvent, Customer, Order, Payment, Refund, StoreCreditEntry, User, db

from conftest import cancel, csrf_from
from helpers import chain_ok, count, race

CONTEXT = AuditContext(source="test")
TOTAL = 5500  # factory.shop's order: 2 × $25.00 + 10% tax


def cash_shop(factory, role="store_manager", tenders=(("cash", TOTAL),), **kw):
    return factory.shop(role=role, tenders=list(tenders), **kw)


def cancelled(client, shop, order_id=None):
    """Cancel the shop's order (or `order_id`) through API v1 as the shop's user; its refunds."""
    order_id = order_id or shop["order_id"]
    response = cancel(client, order_id, shop["token"])
    assert response.status_code == 200, response.get_data(as_text=True)
    return refunds_of(client.application, order_id)


def refunds_of(app, order_id):
    with app.app_context():
        return [(r.id, r.method, r.status, r.amount_cents) for r in db.session.scalars(
            select(Refund).where(Refund.order_id == order_id).order_by(Refund.id))]


def cash_refund_id(client, shop):
    refunds = cancelled(client, shop)
    cash = [r for r in refunds if r[1] == "cash"]
    assert len(cash) == 1 and cash[0][2] == "awaiting_payout", refunds
    return cash[0][0]


def as_user(app, user_id, function, *args, **kwargs):
    with app.app_context():
        return function(*args, db.session.get(User, user_id), **kwargs)


def pay_out(app, refund_id, user_id, drawer="Drawer 1"):
    with app.app_context():
        refund = payouts.pay_out(refund_id, db.session.get(User, user_id), drawer=drawer,
                                 context=CONTEXT)
        return refund.id


def audit_after(app, action, order_id):
    with app.app_context():
        return [e.after for e in db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.order_id == order_id)
            .order_by(AuditEvent.seq))]


def post_form(signed_in, url, data, page="/payouts"):
    token = csrf_from(signed_in.client.get(page))
    return signed_in.client.post(url, data={"csrf_token": token, **data},
                                 follow_redirects=True)


# --- paying out a cash refund ----------------------------------------------------------------

def test_a_cash_refund_is_paid_out_once_by_whom_from_which_drawer_and_audited(
        app, client, auth, factory):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    manager = auth(shop["user_id"], client=app.test_client())

    page = post_form(manager, f"/payouts/{refund_id}/paid-out", {"drawer": "  Drawer 1 "})
    assert page.status_code == 200
    assert "Paid out $55.00 in cash to Customer" in page.get_data(as_text=True)
    with app.app_context():
        refund = db.session.get(Refund, refund_id)
        assert (refund.status, refund.paid_out_by_id, refund.drawer) == (
            "succeeded", shop["user_id"], "Drawer 1")
        assert refund.succeeded_at is not None
        manager_name = db.session.get(User, shop["user_id"]).name
    assert audit_after(app, "refund.paid_out", shop["order_id"]) == [
        {"amount": "55.00", "drawer": "Drawer 1"}]

    # A second confirmation (another tab, a double click) is refused, saying who paid it when.
    again = post_form(manager, f"/payouts/{refund_id}/paid-out", {"drawer": "Drawer 2"})
    text = again.get_data(as_text=True)
    assert "already paid out by " + manager_name in text and "from Drawer 1 at" in text
    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, shop["user_id"], "Drawer 2")
    assert refused.value.status == 409 and refused.value.code == "already_paid_out"
    assert manager_name in refused.value.message
    with app.app_context():
        assert db.session.get(Refund, refund_id).drawer == "Drawer 1"
    assert len(audit_after(app, "refund.paid_out", shop["order_id"])) == 1

    # The order page shows it as paid out.
    detail = manager.client.get(f"/orders/{shop['order_id']}").get_data(as_text=True)
    assert f"Paid out by {manager_name} from Drawer 1" in detail
    chain_ok(app)


def test_two_clerks_confirming_one_payout_at_once_pay_it_once(app, client, factory):
    shop = cash_shop(factory)
    clerk = factory.user("fulfillment", stores=[shop["store_id"]])
    refund_id = cash_refund_id(client, shop)

    results = race(lambda: pay_out(app, refund_id, shop["user_id"], "Drawer 1"),
                   lambda: pay_out(app, refund_id, clerk, "Drawer 2"))
    won = [r for r in results if r == refund_id]
    lost = [r for r in results if isinstance(r, CancelDeskError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].status == 409 and "already paid out by" in lost[0].message
    with app.app_context():
        refund = db.session.get(Refund, refund_id)
        assert refund.status == "succeeded"
        assert (refund.paid_out_by_id, refund.drawer) in {(shop["user_id"], "Drawer 1"),
                                                          (clerk, "Drawer 2")}
    assert len(audit_after(app, "refund.paid_out", shop["order_id"])) == 1
    chain_ok(app)


def test_another_stores_manager_gets_404(app, client, auth, factory):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    other = factory.user("store_manager", stores=[factory.store()])

    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, other)
    assert refused.value.status == 404
    signed_in = auth(other, client=app.test_client())
    token = csrf_from(signed_in.client.get("/payouts"))
    response = signed_in.client.post(f"/payouts/{refund_id}/paid-out",
                                     data={"csrf_token": token, "drawer": "Drawer 1"})
    assert response.status_code == 404
    assert refunds_of(app, shop["order_id"])[0][2] == "awaiting_payout"
    # Nor does it appear on their list.
    assert f'data-refund-id="{refund_id}"' not in signed_in.client.get("/payouts").get_data(
        as_text=True)


def test_a_voided_refund_cannot_be_paid_out(app, client, factory):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    with app.app_context():  # as a reinstatement leaves it
        db.session.execute(update(Refund).where(Refund.id == refund_id).values(status="voided"))
        db.session.commit()
    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, shop["user_id"])
    assert refused.value.status == 409 and "voided" in refused.value.message
    with app.app_context():
        assert db.session.get(Refund, refund_id).paid_out_by_id is None


def test_a_reinstated_cash_order_voids_the_waiting_refund_and_it_cannot_be_paid_out(
        app, client, factory):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    from cancellation.reinstate import reinstate_order

    with app.app_context():
        reinstate_order(shop["order_id"], db.session.get(User, shop["user_id"]),
                        reason="Customer changed their mind", context=CONTEXT)
    assert refunds_of(app, shop["order_id"])[0][2] == "voided"
    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, shop["user_id"])
    assert refused.value.status == 409


@pytest.mark.parametrize("drawer", ["", "   ", "D" * 41, "Drawer\x071", "Drawer\n2"])
def test_the_drawer_is_required_and_a_short_printable_name(app, client, factory, drawer):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, shop["user_id"], drawer)
    assert refused.value.status == 400 and refused.value.code == "validation_error"
    assert refunds_of(app, shop["order_id"])[0][2] == "awaiting_payout"


def test_a_card_refund_is_not_paid_out_at_the_counter(app, client, factory):
    shop = factory.shop(role="store_manager")  # paid by card
    (refund_id, method, _status, _amount), = cancelled(client, shop)
    assert method == "card"
    with pytest.raises(CancelDeskError) as refused:
        pay_out(app, refund_id, shop["user_id"])
    assert refused.value.status == 400


def test_the_payouts_page_lists_cash_refunds_of_cancelled_orders_not_card_ones(
        app, client, auth, factory):
    shop = cash_shop(factory)
    card_order = factory.order(shop["store_id"], [(shop["product_id"], 1, 1000)],
                               customer_id=shop["customer_id"])
    manager = auth(shop["user_id"], client=app.test_client())
    empty = manager.client.get("/payouts").get_data(as_text=True)
    assert 'data-testid="payouts-empty"' in empty

    # The cash order cancelled through the panel's cancel dialog; the card one through the API.
    detail = manager.client.get(f"/orders/{shop['order_id']}")
    with app.app_context():
        version = db.session.get(Order, shop["order_id"]).version
    response = manager.client.post(f"/orders/{shop['order_id']}/cancel", data={
        "csrf_token": csrf_from(detail), "reason": "inventory_issues", "version": version,
        "notify_customer": "y"})
    assert response.status_code == 302, response.get_data(as_text=True)
    cancelled(client, shop, card_order)

    page = manager.client.get("/payouts").get_data(as_text=True)
    (cash_id, *_), = [r for r in refunds_of(app, shop["order_id"]) if r[1] == "cash"]
    (card_id, *_), = refunds_of(app, card_order)
    assert f'data-refund-id="{cash_id}"' in page and "$55.00" in page
    assert f'data-refund-id="{card_id}"' not in page
    assert 'data-testid="payouts-badge">1<' in page
    with app.app_context():
        number = db.session.get(Order, shop["order_id"]).number
        customer = db.session.get(Customer, shop["customer_id"]).name
    assert number in page and customer in page
    # The store filter.
    assert f'data-refund-id="{cash_id}"' in manager.client.get(
        f"/payouts?store={shop['store_id']}").get_data(as_text=True)
    with app.app_context():
        assert payouts.awaiting_count(db.session.get(User, shop["user_id"])) == 1


def test_roles_that_may_and_may_not_pay_out(app, client, auth, factory):
    shop = cash_shop(factory)
    refund_id = cash_refund_id(client, shop)
    ops = auth(role="ops_engineer", client=app.test_client())
    assert ops.client.get("/payouts").status_code == 403
    support = auth(role="customer_service", stores=[shop["store_id"]],
                   client=app.test_client())
    assert f'data-refund-id="{refund_id}"' in support.client.get("/payouts").get_data(
        as_text=True)


# --- the drawer report -----------------------------------------------------------------------

def test_the_drawer_report_totals_per_drawer_and_staff_and_its_csv_is_injection_safe(
        app, client, auth, factory):
    shop = cash_shop(factory)
    clerk = factory.user("fulfillment", stores=[shop["store_id"]])
    with app.app_context():
        db.session.execute(update(Customer).where(Customer.id == shop["customer_id"])
                           .values(name="=HYPERLINK(\"http://evil.example\")"))
        db.session.commit()
    orders = [shop["order_id"]] + [
        factory.order(shop["store_id"], [(shop["product_id"], 1, 1000)],
                      customer_id=shop["customer_id"], tenders=[("cash", 1100)])
        for _ in range(2)]
    ids = []
    for order_id in orders:
        (refund_id, *_), = [r for r in cancelled(client, shop, order_id) if r[1] == "cash"]
        ids.append(refund_id)
    pay_out(app, ids[0], shop["user_id"], "Drawer 1")
    pay_out(app, ids[1], shop["user_id"], "Drawer 1")
    pay_out(app, ids[2], clerk, "+SUM(A1:A2)")

    with app.app_context():  # today, in the store's time: the report's business day
        store_tz = db.session.get(Order, orders[0]).store.timezone
    day = datetime.now(ZoneInfo(store_tz)).date()

    with app.app_context():
        report = payouts.drawer_report(db.session.get(User, shop["user_id"]), shop["store_id"],
                                       day)
        manager_name = db.session.get(User, shop["user_id"]).name
        clerk_name = db.session.get(User, clerk).name
    assert (report.count, report.total_cents) == (3, TOTAL + 2200)
    assert {(t.label, t.count, t.total_cents) for t in report.by_drawer} == {
        ("Drawer 1", 2, TOTAL + 1100), ("+SUM(A1:A2)", 1, 1100)}
    assert {(t.key, t.count, t.total_cents) for t in report.by_staff} == {
        (shop["user_id"], 2, TOTAL + 1100), (clerk, 1, 1100)}

    manager = auth(shop["user_id"], client=app.test_client())
    page = manager.client.get(f"/payouts/report?store={shop['store_id']}&day={day}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "$77.00" in text and manager_name in text and clerk_name in text

    response = manager.client.get(f"/payouts/report.csv?store={shop['store_id']}&day={day}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    payouts_rows = [r for r in rows if r["row"] == "payout"]
    assert len(payouts_rows) == 3
    assert {r["customer"] for r in payouts_rows} == {"'=HYPERLINK(\"http://evil.example\")"}
    assert "'+SUM(A1:A2)" in {r["drawer"] for r in payouts_rows}
    drawer_totals = {r["drawer"]: (r["count"], r["amount"]) for r in rows
                     if r["row"] == "drawer_total"}
    assert drawer_totals == {"Drawer 1": ("2", "66.00"), "'+SUM(A1:A2)": ("1", "11.00")}
    staff_totals = {r["paid_out_by"]: (r["count"], r["amount"]) for r in rows
                    if r["row"] == "staff_total"}
    assert staff_totals == {manager_name: ("2", "66.00"), clerk_name: ("1", "11.00")}
    (day_total,) = [r for r in rows if r["row"] == "day_total"]
    assert (day_total["count"], day_total["amount"]) == ("3", "77.00")

    # Another store's report is not found; another day has nothing.
    other = auth(role="store_manager", stores=[factory.store()], client=app.test_client())
    assert other.client.get(f"/payouts/report?store={shop['store_id']}&day={day}") \
        .status_code == 404
    assert 'data-testid="report-empty"' in manager.client.get(
        f"/payouts/report?store={shop['store_id']}&day=2020-01-01").get_data(as_text=True)


# --- a balance due, taken at pickup ----------------------------------------------------------

def owing(app, factory, due=1000, credit=0, tenders=(("card", TOTAL),)):
    """A shop whose order owes `due` (as a reinstatement after a paid-out refund leaves it),
    its customer holding `credit` of store credit."""
    shop = factory.shop(role="store_manager", tenders=list(tenders))
    with app.app_context():
        order = db.session.get(Order, shop["order_id"])
        order.balance_due_cents = due
        order.customer.store_credit_cents = credit
        db.session.commit()
    return shop


def take(app, shop, user_id=None, **kwargs):
    with app.app_context():
        payment = payouts.take_balance(shop["order_id"],
                                       db.session.get(User, user_id or shop["user_id"]),
                                       context=CONTEXT, **kwargs)
        return payment.id


def money_of(app, order_id):
    with app.app_context():
        order = db.session.get(Order, order_id)
        return order.balance_due_cents, order.paid_cents, [
            (p.tender, p.amount_cents, p.drawer, p.taken_by_id) for p in order.payments]


def test_a_balance_is_paid_in_part_then_in_full(app, factory):
    shop = owing(app, factory, due=1000)
    take(app, shop, tender="cash", amount_cents=400, drawer="Drawer 1")
    assert money_of(app, shop["order_id"])[:2] == (600, TOTAL + 400)
    take(app, shop, tender="card", amount_cents=600)
    due, paid, payments = money_of(app, shop["order_id"])
    assert (due, paid) == (0, TOTAL + 1000)
    assert payments[1:] == [("cash", 400, "Drawer 1", shop["user_id"]),
                            ("card", 600, None, shop["user_id"])]
    assert [e["balance_due"] for e in audit_after(app, "order.balance_paid",
                                                  shop["order_id"])] == ["6.00", "0.00"]
    with pytest.raises(CancelDeskError) as nothing_due:
        take(app, shop, tender="cash", amount_cents=1, drawer="Drawer 1")
    assert nothing_due.value.status == 400
    chain_ok(app)


@pytest.mark.parametrize("amount", [0, -5, 1001])
def test_an_amount_outside_one_cent_to_the_balance_is_refused(app, factory, amount):
    shop = owing(app, factory, due=1000)
    with pytest.raises(CancelDeskError) as refused:
        take(app, shop, tender="card", amount_cents=amount)
    assert refused.value.status == 400
    assert money_of(app, shop["order_id"])[0] == 1000


def test_cash_needs_a_drawer(app, factory):
    shop = owing(app, factory)
    with pytest.raises(CancelDeskError) as refused:
        take(app, shop, tender="cash", amount_cents=100)
    assert refused.value.status == 400


def test_store_credit_pays_only_what_the_customer_has(app, factory):
    shop = owing(app, factory, due=1000, credit=300)
    with pytest.raises(CancelDeskError) as refused:
        take(app, shop, tender="store_credit", amount_cents=500)
    assert refused.value.status == 400 and "$3.00" in refused.value.message
    assert money_of(app, shop["order_id"])[0] == 1000

    take(app, shop, tender="store_credit", amount_cents=300)
    with app.app_context():
        assert db.session.get(Customer, shop["customer_id"]).store_credit_cents == 0
        entries = db.session.scalars(select(StoreCreditEntry).where(
            StoreCreditEntry.order_id == shop["order_id"])).all()
        assert [(e.kind, e.amount_cents, e.actor_id) for e in entries] == [
            ("spent", -300, shop["user_id"])]
    assert money_of(app, shop["order_id"])[0] == 700


def test_two_payments_of_one_balance_at_once_one_wins(app, factory):
    shop = owing(app, factory, due=1000)
    clerk = factory.user("fulfillment", stores=[shop["store_id"]])

    def pay(user_id, drawer):
        return lambda: take(app, shop, user_id, tender="cash", amount_cents=1000,
                            drawer=drawer)

    results = race(pay(shop["user_id"], "Drawer 1"), pay(clerk, "Drawer 2"))
    won = [r for r in results if isinstance(r, int)]
    lost = [r for r in results if isinstance(r, CancelDeskError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].status in (400, 409)
    due, paid, payments = money_of(app, shop["order_id"])
    assert (due, paid) == (0, TOTAL + 1000)
    assert len([p for p in payments if p[0] == "cash"]) == 1
    assert count(app, Payment, Payment.order_id == shop["order_id"]) == 2
    chain_ok(app)


def test_the_panel_takes_a_payment_and_shows_the_balance(app, auth, factory):
    shop = owing(app, factory, due=1000)
    manager = auth(shop["user_id"], client=app.test_client())
    detail = manager.client.get(f"/orders/{shop['order_id']}")
    text = detail.get_data(as_text=True)
    assert "Balance due $10.00" in text and 'data-testid="take-payment-form"' in text
    response = manager.client.post(f"/orders/{shop['order_id']}/take-payment", data={
        "csrf_token": csrf_from(detail), "tender": "cash", "amount": "4.00",
        "drawer": "Drawer 1"}, follow_redirects=True)
    assert "Took $4.00 by cash into Drawer 1" in response.get_data(as_text=True)
    over = manager.client.post(f"/orders/{shop['order_id']}/take-payment", data={
        "csrf_token": csrf_from(detail), "tender": "card", "amount": "7.00"},
        follow_redirects=True)
    assert "No payment taken" in over.get_data(as_text=True)
    assert money_of(app, shop["order_id"])[0] == 600
    assert 'data-testid="payments"' in over.get_data(as_text=True)


def test_the_reinstate_route_flashes_refusals_never_500(app, client, auth, factory, setting):
    shop = factory.shop(role="store_manager")
    manager = auth(shop["user_id"], client=app.test_client())
    detail = manager.client.get(f"/orders/{shop['order_id']}")
    # Not cancelled: a 400 from the domain, flashed.
    response = manager.client.post(f"/orders/{shop['order_id']}/reinstate", data={
        "csrf_token": csrf_from(detail), "reason": "Changed their mind"}, follow_redirects=True)
    assert response.status_code == 200
    assert "was not reinstated" in response.get_data(as_text=True)
    # No reason: refused by the form.
    cancelled(client, shop)
    response = manager.client.post(f"/orders/{shop['order_id']}/reinstate", data={
        "csrf_token": csrf_from(detail), "reason": ""}, follow_redirects=True)
    assert "Say why the order is reinstated." in response.get_data(as_text=True)
    page = manager.client.get(f"/orders/{shop['order_id']}").get_data(as_text=True)
    assert 'data-testid="reinstate-card"' in page and 'data-testid="reinstate-countdown"' in page
    response = manager.client.post(f"/orders/{shop['order_id']}/reinstate", data={
        "csrf_token": csrf_from(detail), "reason": "Customer changed their mind"},
        follow_redirects=True)
    assert "reinstated: it is pending again" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Order, shop["order_id"]).status == "pending"
    # Past the window: the reasons are listed and the button is disabled.
    cancelled(client, shop)
    setting("reinstate_window_hours", 0)
    page = manager.client.get(f"/orders/{shop['order_id']}").get_data(as_text=True)
    assert 'data-testid="reinstate-reasons"' in page and 'data-code="window_passed"' in page
