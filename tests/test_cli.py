"""The `flask` commands: seed-demo on a fresh database (SPEC §7), users, tokens, simulate.

These tests use their own SQLite database (the demo data needs an empty one, and its fixed
store ids 1 and 2 would collide with the shared test database) and their own Redis DB number,
so injected failures never reach the shared worker.
"""
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conftest import SandboxProcessor, bearer

DEMO_USERS = {
    "admin@demo.test": ("admin", set()),
    "manager@demo.test": ("store_manager", {1}),
    "manager2@demo.test": ("store_manager", {2}),
    "fulfillment@demo.test": ("fulfillment", {1}),
    "support@demo.test": ("customer_service", {1}),
    "ops@demo.test": ("ops_engineer", set()),
}
STATUSES = {"pending", "in_progress", "on_hold", "completed", "cancelled", "archived"}
OPEN = ("pending", "in_progress", "on_hold")


@pytest.fixture(scope="module")
def demo_processor(tmp_path_factory):
    """A sandbox processor of this module's own: `simulate failures --kind refund` drives it,
    and the session worker's refunds must not take the declines it injects."""
    running = SandboxProcessor(tmp_path_factory.mktemp("demo-processor")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory, redis_url, demo_processor):
    from celery import current_app as default_celery
    from flask_migrate import upgrade

    from app import create_app

    folder = tmp_path_factory.mktemp("seed")
    own_redis = redis_url.rsplit("/", 1)[0] + "/15"
    previous_celery = default_celery._get_current_object()
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'seed.sqlite'}",
                      "REDIS_URL": own_redis, "PAYMENT_PROCESSOR_URL": demo_processor.url,
                      "PAYMENT_PROCESSOR_KEY": demo_processor.key}, env="testing")
    previous_celery.set_default()  # creating an app made its Celery the process default
    with app.app_context():
        upgrade()
    result = app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "Seeded demo data" in result.output
    yield app
    with app.app_context():
        from models import db
        db.engine.dispose()


@pytest.fixture
def ctx(demo_app):
    with demo_app.app_context():
        yield


def count(model, *where):
    from models import db
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_demo_stores_and_users(ctx):
    from models import Store, User, db

    stores = {s.id: s for s in db.session.scalars(select(Store))}
    assert {i: s.name for i, s in stores.items()} == {1: "Downtown", 2: "Uptown"}
    assert all(s.licence_number and s.timezone == "America/Los_Angeles" for s in stores.values())
    users = {u.email: u for u in db.session.scalars(select(User))}
    assert set(users) == set(DEMO_USERS)
    for email, (role, store_ids) in DEMO_USERS.items():
        assert users[email].role == role
        assert users[email].store_ids == store_ids
        assert users[email].is_active
    assert users["admin@demo.test"].check_password("demo-password")
    assert not users["admin@demo.test"].check_password("wrong-password")


def test_demo_orders_cover_the_cases_worth_trying(ctx):
    from models import Order, db, utcnow

    assert count(Order) >= 3000
    per_store = defaultdict(set)
    for store_id, status in db.session.execute(select(Order.store_id, Order.status).distinct()):
        per_store[store_id].add(status)
    assert per_store == {1: STATUSES, 2: STATUSES}

    assert count(Order, Order.payment_status == "paid") > 1000
    assert count(Order, Order.payment_status == "unpaid", Order.status == "pending") > 0
    assert count(Order, Order.points_earned > 0) > 0
    assert count(Order, Order.points_redeemed > 0) > 0
    for store_id in (1, 2):
        in_store = (Order.store_id == store_id, Order.status.in_(OPEN))
        assert count(Order, *in_store, Order.billing_hold.is_(True)) > 0
        assert count(Order, *in_store, Order.shipment_status == "in_transit") > 0
        assert count(Order, *in_store, Order.placed_at < utcnow() - timedelta(days=31)) > 0
        assert count(Order, *in_store, Order.total_cents > 50000) > 0
    assert count(Order, Order.placed_at < utcnow() - timedelta(days=100)) > 0

    series = Counter(db.session.scalars(select(Order.series_id).where(
        Order.series_id.is_not(None))))
    assert len(series) >= 10 and all(3 <= n <= 6 for n in series.values())
    # A later, still-cancellable instance exists, so "all future" has something to do.
    assert count(Order, Order.series_id.is_not(None), Order.status == "pending") > 0

    numbers = db.session.scalars(select(Order.number)).all()
    assert all(n.startswith(("DT-1", "UP-2")) and len(n) == 9 for n in numbers)
    for order in db.session.scalars(select(Order).limit(200)):
        assert order.total_cents == (order.subtotal_cents - order.discount_cents
                                     + order.tax_cents)
        assert 1 <= len(order.items) <= 5


def test_demo_stock_reserves_exactly_the_open_quantities(ctx):
    from models import Order, OrderItem, Product, StockLevel, db

    open_quantity = defaultdict(int)
    rows = db.session.execute(
        select(Order.store_id, OrderItem.product_id,
               func.sum(OrderItem.quantity - OrderItem.cancelled_quantity))
        .join(OrderItem.order).where(Order.status.in_(OPEN))
        .group_by(Order.store_id, OrderItem.product_id))
    for store_id, product_id, quantity in rows:
        open_quantity[store_id, product_id] = quantity
    stock = db.session.scalars(select(StockLevel)).all()
    assert stock
    for row in stock:
        assert row.reserved == open_quantity[row.store_id, row.product_id], row.to_dict()
        assert row.on_hand > row.reserved
    # A couple of products have no stock row in one store, and open orders hold them: cancelling
    # one raises the inventory-reconciliation flag.
    products = count(Product)
    assert 0 < 2 * products - len(stock) <= 4
    stocked = {(row.store_id, row.product_id) for row in stock}
    unstocked_open = [key for key in open_quantity if key not in stocked]
    assert {store_id for store_id, _product in unstocked_open} == {1, 2}


def test_demo_history_is_consistent(ctx):
    from cancellation.audit import verify_chain
    from models import Cancellation, Customer, LoyaltyEntry, Order, Refund, db

    cancelled = db.session.scalars(select(Order).where(Order.status == "cancelled")).all()
    assert cancelled
    for order in cancelled:
        assert len(order.cancellations) == 1
        cancellation = order.cancellations[0]
        assert cancellation.reason and cancellation.actor_id
        assert all(item.open_quantity == 0 for item in order.items)
        assert cancellation.refund_cents == order.paid_cents == order.refunded_cents
        if cancellation.reason == "customer_requested":
            assert cancellation.request_contact and cancellation.requested_at
    assert count(Cancellation) == len(cancelled)
    # One refund per payment of each paid cancelled order, each exactly what that payment paid.
    from models import Payment

    refunds = db.session.scalars(select(Refund)).all()
    payments = {p.id: p for p in db.session.scalars(select(Payment).where(
        Payment.order_id.in_([order.id for order in cancelled])))}
    assert sorted(r.payment_id for r in refunds) == sorted(payments)
    assert all(r.amount_cents == payments[r.payment_id].amount_cents ==
               payments[r.payment_id].refunded_cents for r in refunds)
    tenders = {r.method for r in refunds}
    assert {"cash", "debit", "card"} <= tenders
    # Card and debit paid by the processor; cash paid out at the counter, but the last day's,
    # which waits there (the payouts queue has work in it).
    assert all(r.status == "succeeded" for r in refunds if r.method != "cash")
    cash = [r for r in refunds if r.method == "cash"]
    assert any(r.status == "succeeded" and r.drawer and r.paid_out_by_id for r in cash)
    assert {r.status for r in cash} <= {"succeeded", "awaiting_payout"}

    earned = count(Order, Order.points_earned > 0)
    assert count(LoyaltyEntry, LoyaltyEntry.kind == "earned") == earned
    assert count(LoyaltyEntry, LoyaltyEntry.kind == "redeemed") == \
        count(Order, Order.points_redeemed > 0)
    ledger = dict(db.session.execute(select(LoyaltyEntry.customer_id, func.sum(
        LoyaltyEntry.points)).group_by(LoyaltyEntry.customer_id)).all())
    for customer in db.session.scalars(select(Customer)):
        assert customer.loyalty_points == ledger.get(customer.id, 0) >= 0
    assert count(Customer) >= 500
    assert count(Customer, Customer.email.is_(None)) > 0

    report = verify_chain()
    assert report.ok and report.checked == len(cancelled)


def test_seed_demo_twice_changes_nothing(demo_app):
    from models import Order, StockLevel, User

    with demo_app.app_context():
        before = (count(Order), count(User), count(StockLevel))
    result = demo_app.test_cli_runner().invoke(args=["seed-demo"])
    assert result.exit_code == 0
    assert "Nothing was changed" in result.output
    with demo_app.app_context():
        assert (count(Order), count(User), count(StockLevel)) == before


def test_users_create_needs_a_password(demo_app):
    from models import User

    runner = demo_app.test_cli_runner()
    args = ["users", "create", "--email", "Night.Shift@demo.test", "--name", "Night Shift",
            "--role", "store_manager", "--store", "2"]
    result = runner.invoke(args=args)  # no stdin: the password prompt aborts
    assert result.exit_code != 0
    with demo_app.app_context():
        assert User.by_email("night.shift@demo.test") is None

    result = runner.invoke(args=args, input="a-long-passphrase\na-long-passphrase\n")
    assert result.exit_code == 0, result.output
    with demo_app.app_context():
        user = User.by_email("night.shift@demo.test")
        assert user.check_password("a-long-passphrase")
        assert user.role == "store_manager" and user.store_ids == {2}

    listed = runner.invoke(args=["users", "list"])
    assert "night.shift@demo.test" in listed.output and "Uptown" in listed.output
    again = runner.invoke(args=args, input="a-long-passphrase\na-long-passphrase\n")
    assert again.exit_code != 0 and "already exists" in again.output


def test_tokens_create_prints_a_working_token(demo_app):
    runner = demo_app.test_cli_runner()
    result = runner.invoke(args=["tokens", "create", "--email", "manager@demo.test",
                                 "--days", "7"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("cd_") and "\n" not in token

    client = demo_app.test_client()
    answer = client.get("/api/v1/orders?per_page=5", headers=bearer(token))
    assert answer.status_code == 200, answer.json
    assert answer.json["total"] > 1000
    assert {order["store_id"] for order in answer.json["items"]} == {1}  # a Downtown manager
    assert client.get("/api/v1/orders", headers=bearer(token + "x")).status_code == 401

    unknown = runner.invoke(args=["tokens", "create", "--email", "nobody@demo.test"])
    assert unknown.exit_code != 0


def test_simulate_failures(demo_app, demo_processor):
    """Refund failures are declines of the sandbox processor; notification failures the mail
    relay's."""
    from cancellation.adapters import failures_left
    from sandbox_processor.control import SandboxControl

    runner = demo_app.test_cli_runner()
    sandbox = SandboxControl(demo_processor.url, demo_processor.key)
    try:
        result = runner.invoke(args=["simulate", "failures", "--kind", "refund", "--times", "3"])
        assert result.exit_code == 0, result.output
        assert "the next 3 call(s) fail" in result.output
        assert sandbox.behaviour() == {"mode": "decline", "times": 3, "delay_s": 3.0}
        with demo_app.app_context():
            assert failures_left("refund") == 3
        runner.invoke(args=["simulate", "failures", "--kind", "refund", "--always"])
        assert sandbox.behaviour()["times"] == -1
        runner.invoke(args=["simulate", "failures", "--kind", "notification", "--always"])
        with demo_app.app_context():
            assert failures_left("notification") == -1
        both = runner.invoke(args=["simulate", "failures", "--kind", "refund", "--always",
                                   "--off"])
        assert both.exit_code != 0
    finally:
        for kind in ("refund", "notification"):
            runner.invoke(args=["simulate", "failures", "--kind", kind, "--off"])
    with demo_app.app_context():
        assert failures_left("refund") == failures_left("notification") == 0
    assert sandbox.behaviour()["mode"] == "normal"


def test_demo_orders_adds_open_orders_with_their_stock_reserved(demo_app):
    """`flask demo-orders`: fresh pending orders to try a bulk cancel of thousands with; the
    stock rows still reserve exactly the open quantities. (Last in this module: it adds rows.)"""
    from models import Order, OrderItem, StockLevel, db

    with demo_app.app_context():
        before = count(Order, Order.store_id == 1, Order.status == "pending")
    result = demo_app.test_cli_runner().invoke(args=["demo-orders", "--store", "1",
                                                     "--count", "50"])
    assert result.exit_code == 0, result.output
    assert "Added 50 pending orders to store 1" in result.output
    with demo_app.app_context():
        assert count(Order, Order.store_id == 1, Order.status == "pending") == before + 50
        open_quantity = dict(db.session.execute(
            select(OrderItem.product_id,
                   func.sum(OrderItem.quantity - OrderItem.cancelled_quantity))
            .join(Order, Order.id == OrderItem.order_id)
            .where(Order.store_id == 1, Order.status.in_(OPEN))
            .group_by(OrderItem.product_id)).all())
        reserved = dict(db.session.execute(select(StockLevel.product_id, StockLevel.reserved)
                                           .where(StockLevel.store_id == 1)).all())
        assert {p: q for p, q in open_quantity.items() if p in reserved} == {
            p: r for p, r in reserved.items() if r or p in open_quantity}
    unknown = demo_app.test_cli_runner().invoke(args=["demo-orders", "--store", "9"])
    assert unknown.exit_code != 0 and "no demo store 9" in unknown.output
