"""What the busiest requests cost: the orders list and a single cancel read the database a fixed
number of times however many rows they show, settings included — and still show what is stored."""
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from conftest import bearer, cancel


@contextmanager
def statements(app):
    """The SQL statements run inside the block, in order."""
    from models import db

    seen = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def settings_reads(seen):
    return [s for s in seen if re.search(r"\bFROM settings\b", s)]


@pytest.fixture
def fulfillment_store(app, auth, factory):
    """A store whose fulfillment clerk must ask for approval on in-progress orders: every row of
    the list then needs the approval thresholds."""
    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product, on_hand=1000)
    clerk = factory.user("fulfillment", stores=[store])
    client = app.test_client()
    auth(clerk, client=client)
    return {"store": store, "product": product, "client": client}


def list_page(shop, **args):
    query = "&".join(f"{k}={v}" for k, v in {"store": shop["store"], **args}.items())
    return shop["client"].get(f"/?{query}")


def test_the_orders_list_costs_the_same_queries_for_3_rows_as_for_25(
        app, factory, fulfillment_store):
    shop = fulfillment_store
    for _ in range(3):
        factory.order(shop["store"], [(shop["product"], 1, 1000)], status="in_progress")
    with statements(app) as few:
        page = list_page(shop, status="in_progress")
    assert page.status_code == 200
    assert page.get_data(as_text=True).count('data-testid="request-approval"') == 3

    factory.many_orders(shop["store"], 30, [shop["product"]], status="in_progress")
    with statements(app) as many:
        page = list_page(shop, status="in_progress")
    assert page.get_data(as_text=True).count('data-testid="request-approval"') == 25

    # Nothing is read per row: not the approval thresholds, not the orders' stores or customers.
    assert len(many) == len(few), "\n".join(many)
    assert len(many) <= 15, "\n".join(many)
    assert len(settings_reads(many)) == 1, settings_reads(many)


def test_a_changed_threshold_shows_on_the_next_page_load(app, factory, fulfillment_store,
                                                         setting):
    shop = fulfillment_store
    setting("approval_threshold_cents", 100_000)
    factory.order(shop["store"], [(shop["product"], 1, 60_000)])  # $660.00 with tax
    page = list_page(shop, status="pending").get_data(as_text=True)
    assert 'data-testid="request-approval"' not in page and "Cancel Order" in page

    setting("approval_threshold_cents", 50_000)  # committed by someone else, between requests
    page = list_page(shop, status="pending").get_data(as_text=True)
    assert page.count('data-testid="request-approval"') == 1


def test_a_setting_put_in_a_request_is_what_that_request_reads_next(app):
    from models import Setting, db

    with app.test_request_context():
        before = Setting.get("approval_age_days")
        Setting.put("approval_age_days", before + 7)
        assert Setting.get("approval_age_days") == before + 7
        db.session.rollback()
    with app.test_request_context():
        assert Setting.get("approval_age_days") == before


def test_a_single_cancel_reads_settings_once_and_answers_what_it_committed(app, factory):
    from models import Customer, Order, db

    store = factory.store()
    product = factory.product(2500)
    factory.stock(store, product, on_hand=50)
    customer = factory.customer(points=500)
    order_id = factory.order(store, [(product, 2, 2500)], customer_id=customer,
                             points_earned=50, points_redeemed=200)
    token = factory.token(factory.user("store_manager", stores=[store]))

    with statements(app) as seen:
        response = cancel(factory.app.test_client(), order_id, token)
    assert response.status_code == 200, response.json
    # 44 statements and 6 reads of settings before; 1 read of settings now.
    assert len(settings_reads(seen)) == 1, settings_reads(seen)
    # 31 with the one writer (5 of them create the audit chain's head, the first time only).
    assert len(seen) <= 31, "\n".join(seen)

    body = response.json
    with app.app_context():
        order = db.session.get(Order, order_id)
        assert (body["status"], body["version"]) == ("cancelled", order.version) \
            == ("cancelled", 2)
        assert body["customer"]["loyalty_points"] \
            == db.session.get(Customer, customer).loyalty_points == 500 + 200 - 50
    assert [i["cancelled_quantity"] for i in body["items"]] == [2]
    assert [r["amount"] for r in body["refunds"]] == [body["paid"]]
    assert len(body["notifications"]) == 1
    [cancellation] = body["cancellations"]
    assert (cancellation["points_restored"], cancellation["points_reversed"]) == (200, 50)
    assert [line["quantity"] for line in cancellation["items"]] == [2]

    again = factory.app.test_client().get(f"/api/v1/orders/{order_id}", headers=bearer(token))
    assert {k: v for k, v in again.json.items() if k not in ("refunds", "notifications")} \
        == {k: v for k, v in body.items() if k not in ("refunds", "notifications")}
