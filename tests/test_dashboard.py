"""The dashboard: it is the landing page, its numbers per reason / store / staff / day match the
cancellations made, it is scoped to the viewer's stores, it is cheap, and it works without
charts."""
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, text

import blueprints.dashboard as dashboard_module

from conftest import cancel, login
from helpers import email_of


def table(page, name):
    """{data-key: count} of one breakdown table."""
    match = re.search(rf'data-testid="table-{name}">(.*?)</table>', page, re.S)
    assert match, f"no table {name}"
    return {key: int(count) for key, count in
            re.findall(r'<tr data-key="([^"]*)" data-count="(\d+)"', match.group(1))}


def chart_data(page):
    match = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>',
                      page, re.S)
    return json.loads(match.group(1))


@pytest.fixture
def store_with_cancellations(app, client, factory):
    """A fresh store, two managers, four cancellations (one of them three days ago)."""
    from models import db, utcnow

    store = factory.store()
    product = factory.product(1000)
    factory.stock(store, product, on_hand=100)
    first = factory.user("store_manager", stores=[store])
    second = factory.user("store_manager", stores=[store])
    tokens = {first: factory.token(first), second: factory.token(second)}
    plan = [(first, "inventory_issues"), (first, "inventory_issues"),
            (first, "duplicate_order"), (second, "payment_problems")]
    orders = []
    for user, reason in plan:
        order_id = factory.order(store, [(product, 2, 1000)])
        response = cancel(client, order_id, tokens[user], reason=reason, notify_customer=False)
        assert response.status_code == 200, response.get_data(as_text=True)
        orders.append(order_id)
    with app.app_context():
        three_days_ago = utcnow() - timedelta(days=3)
        db.session.execute(text("UPDATE cancellations SET created_at = :t WHERE order_id = :o"),
                           {"t": three_days_ago, "o": orders[3]})
        db.session.commit()
        today = utcnow().date()
    return {"store": store, "first": first, "second": second, "orders": orders,
            "today": today, "three_days_ago": three_days_ago.date()}


def test_login_lands_on_the_dashboard(app, client, factory):
    user = factory.user("fulfillment", stores=[factory.store()])
    response = login(client, email_of(app, user))
    assert response.headers["Location"] == "/dashboard"
    page = client.get("/dashboard").get_data(as_text=True)
    assert "<h1 class=\"h4 mb-0\">Dashboard</h1>" in page
    assert 'class="navbar-brand" href="/dashboard"' in page
    assert client.get("/").status_code == 200  # the orders list stays at /


def test_numbers_per_reason_store_staff_and_day(app, auth, factory, store_with_cancellations):
    data = store_with_cancellations
    client = app.test_client()
    auth(data["first"], client=client)  # a manager of only this store

    page = client.get("/dashboard?period=7").get_data(as_text=True)
    assert table(page, "reason") == {"inventory_issues": 2, "duplicate_order": 1,
                                     "payment_problems": 1}
    assert table(page, "store") == {str(data["store"]): 4}
    assert table(page, "staff") == {str(data["first"]): 3, str(data["second"]): 1}
    by_day = table(page, "day")
    assert len(by_day) == 7
    assert by_day[data["today"].isoformat()] == 3
    assert by_day[data["three_days_ago"].isoformat()] == 1
    assert sum(by_day.values()) == 4
    assert re.search(r'data-testid="kpi-cancellations">4<', page)
    # Refunds: each order was 2 x $10.00 + 10% tax.
    assert "$88.00" in page

    charts = chart_data(page)
    assert sum(charts["day"]["counts"]) == 4 and len(charts["day"]["labels"]) == 7
    assert sorted(charts["reason"]["counts"]) == [1, 1, 2]

    today = data["today"].isoformat()
    only_today = client.get(f"/dashboard?period=custom&from={today}&to={today}")
    assert table(only_today.get_data(as_text=True), "reason") == {"inventory_issues": 2,
                                                                  "duplicate_order": 1}
    for period in ("30", "90"):
        assert sum(table(client.get(f"/dashboard?period={period}").get_data(as_text=True),
                         "day").values()) == 4


def test_other_stores_do_not_show(app, auth, factory, store_with_cancellations):
    outsider = factory.user("store_manager", stores=[factory.store()])
    client = app.test_client()
    auth(outsider, client=client)
    page = client.get(f"/dashboard?period=7&store={store_with_cancellations['store']}")
    page = page.get_data(as_text=True)
    assert table(page, "store") == {} and table(page, "reason") == {}
    assert str(store_with_cancellations["first"]) not in table(page, "staff")


def test_pending_approvals_and_the_manual_queue(app, auth, factory, store_with_cancellations):
    from models import ApprovalRequest, db

    data = store_with_cancellations
    product = factory.product()
    with app.app_context():
        for status in ("pending", "escalated", "approved", "rejected"):
            order_id = factory.order(data["store"], [(product, 1, 1000)])
            db.session.add(ApprovalRequest(order_id=order_id, requested_by_id=data["second"],
                                           payload={"reason": "inventory_issues"}, why=[],
                                           order_version=1, status=status))
        db.session.execute(
            text("UPDATE cancellations SET flag_manual_refund = :t WHERE order_id = :o"),
            {"t": True, "o": data["orders"][0]})
        db.session.commit()

    client = app.test_client()
    auth(data["first"], client=client)
    page = client.get("/dashboard").get_data(as_text=True)
    assert re.search(r'data-testid="kpi-pending-approvals">2<', page)
    assert re.search(r'data-testid="kpi-manual">1<', page)
    queue = re.search(r'data-testid="manual-queue">(.*?)</table>', page, re.S).group(1)
    assert f'href="/orders/{data["orders"][0]}"' in queue and "Refund" in queue

    # A manager elsewhere counts none of these.
    other = app.test_client()
    auth(role="store_manager", stores=[factory.store()], client=other)
    page = other.get("/dashboard").get_data(as_text=True)
    assert re.search(r'data-testid="kpi-pending-approvals">0<', page)
    assert re.search(r'data-testid="kpi-manual">0<', page)


def test_the_dashboard_costs_a_fixed_number_of_queries(app, auth, factory,
                                                       store_with_cancellations):
    from models import db

    client = app.test_client()
    auth(role="admin", client=client)
    statements = []

    def count(*_args):
        statements.append(1)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get("/dashboard?period=90").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Aggregates are GROUP BY queries: the count does not grow with the number of cancellations.
    assert len(statements) <= 20, len(statements)


def test_without_the_chart_library_the_tables_remain(app, auth, factory, store_with_cancellations,
                                                    monkeypatch):
    client = app.test_client()
    auth(store_with_cancellations["first"], client=client)
    monkeypatch.setattr(dashboard_module, "charts_available", lambda: False)
    page = client.get("/dashboard?period=7").get_data(as_text=True)
    assert 'data-testid="charts-unavailable"' in page
    assert "<canvas" not in page and "chart.umd.js" not in page
    assert sum(table(page, "reason").values()) == 4

    monkeypatch.setattr(dashboard_module, "charts_available", lambda: True)
    page = client.get("/dashboard?period=7").get_data(as_text=True)
    assert 'data-testid="chart-reason"' in page and "/static/vendor/chart.umd.js" in page


def test_oversight_panels_only_for_roles_that_may_see_them(app, auth, factory):
    store = factory.store()
    for role, sees in (("admin", True), ("store_manager", True), ("ops_engineer", True),
                       ("fulfillment", False), ("customer_service", False)):
        client = app.test_client()
        auth(role=role, stores=[store], client=client)
        page = client.get("/dashboard").get_data(as_text=True)
        assert ('data-testid="abuse-flags"' in page) is sees, role
        assert ('data-testid="compliance-form"' in page) is sees, role
        assert ('href="/audit/"' in page) is sees, role
